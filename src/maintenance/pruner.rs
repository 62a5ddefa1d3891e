//! Deletes finished jobs once they are older than their queue's retention.
//!
//! Caveats: an idempotency key is honoured only while its job exists, so pruning ends the
//! deduplication window; that is what "within the retention window" means.
//!
//! Options: the interval (`--prune-interval`, defaults to 60 s). Each pass deletes in chunks
//! of [`CHUNK`] so no single transaction holds up enqueues for long.
//!
//! Metrics: the store's `wharf_jobs{state=…}` gauges drop as jobs are pruned.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Leadership, Store};

/// Jobs deleted per transaction.
pub const CHUNK: u32 = 5_000;

/// Runs until `shutdown`, pruning every `interval`.
pub async fn run(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // On a shared store, only the leader prunes.
        if store.leadership() == Leadership::Shared && !store.leader_try().await.unwrap_or(false) {
            continue;
        }
        let mut total = 0;
        loop {
            match store.jobs_prune(CHUNK).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(CHUNK) || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pruning failed; will retry");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(pruned = total, "pruned finished jobs past retention");
        }
    }
}
