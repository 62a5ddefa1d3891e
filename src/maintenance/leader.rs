//! The leader of a store that many nodes share: one node at a time promotes due jobs and
//! expires leases that ran out.
//!
//! Caveats: during a failover both the old and the new leader may run a pass at once; the
//! store's row locks make every promotion and expiry happen once regardless. Due jobs become
//! ready within [`INTERVAL`] of their time (the embedded store is exact).
//!
//! Options: none. The leader lock is the store's (an advisory lock on PostgreSQL); a node that
//! dies loses it with its connection, and another takes it on its next tick.
//!
//! Metrics: expiries count in `wharf_leases_expired_total` on the node that ran them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a node tries to lead, and the leader maintains.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// Runs until `shutdown`.
pub async fn run(store: Arc<dyn Store>, leading: Arc<AtomicBool>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match store.leader_try().await {
            Ok(true) => {
                if !leading.swap(true, Ordering::Relaxed) {
                    tracing::info!("leading: this node runs maintenance");
                }
                if let Err(err) = store.maintain().await {
                    tracing::warn!(error = %err, "maintenance failed; will retry");
                }
            }
            Ok(false) => {
                if leading.swap(false, Ordering::Relaxed) {
                    tracing::info!("no longer leading");
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot reach the leader lock"),
        }
    }
}
