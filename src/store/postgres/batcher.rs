//! Group commit for single enqueues: the plain ones waiting at one moment share a transaction.
//!
//! A transaction per enqueue spends a commit (and its fsync) and a handful of round trips on
//! each job; under load, most of a node's enqueues are plain (no idempotency key, a queue this
//! node knows, no waiting limit), and nothing stops them sharing one. A flusher takes every
//! enqueue waiting and writes them, with their events, in one statement that commits by
//! itself: one round trip to the database for the lot. While it commits, the next lot
//! gathers; when the node is idle, a lone enqueue goes at once.
//!
//! An answer still means the job is committed. If the statement fails, every enqueue in it
//! gets the error (nothing of it was written). A job whose queue was deleted meanwhile comes
//! back unwritten, and its caller takes the full path, which creates the queue.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Changes, Shared, compose, db_error, sql};
use crate::core::state;
use crate::core::{JobId, NewJob, Timestamp};
use crate::store::{Inserted, StoreError, StoreResult};

/// One enqueue waiting for a transaction; `None` sends its caller the full path.
#[derive(Debug)]
pub(super) struct Pending {
    pub job: NewJob,
    pub reply: oneshot::Sender<StoreResult<Option<Inserted>>>,
}

/// Statements that may be in flight at once. One: the enqueues that arrive while it commits
/// gather for the next, so under load each statement carries many jobs, and the database's
/// cost per statement (planning, executor start, commit) is shared by more of them. Measured
/// with 32 enqueues in flight, one flusher took 40 % more per second than four.
const FLUSHERS: usize = 1;
/// Most enqueues in one transaction.
const MOST: usize = 1_000;
/// About what one `created` event takes as text.
pub(super) const EVENT_BYTES: usize = 160;

pub(super) fn start(shared: Arc<Shared>, closed: CancellationToken) -> mpsc::UnboundedSender<Pending> {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..FLUSHERS {
        let (shared, rx, closed) = (Arc::clone(&shared), Arc::clone(&rx), closed.clone());
        tokio::spawn(async move {
            loop {
                let batch = {
                    let mut rx = rx.lock().await;
                    let first = tokio::select! {
                        first = rx.recv() => first,
                        () = closed.cancelled() => return,
                    };
                    let Some(first) = first else { return };
                    let mut batch = vec![first];
                    while batch.len() < MOST
                        && let Ok(more) = rx.try_recv()
                    {
                        batch.push(more);
                    }
                    batch
                };
                flush(&shared, batch).await;
            }
        });
    }
    tx
}

async fn flush(shared: &Shared, batch: Vec<Pending>) {
    // An id collision (see `PgStore::insert`) is retried with new numbers.
    let mut outcome = Err(StoreError::Busy);
    for _ in 0..3 {
        match insert(shared, &batch).await {
            Ok(Some(created)) => {
                outcome = Ok(created);
                break;
            }
            Ok(None) => continue,
            Err(err) => {
                outcome = Err(err);
                break;
            }
        }
    }
    match outcome {
        Ok(created) => {
            for (pending, inserted) in batch.into_iter().zip(created) {
                let _ = pending.reply.send(Ok(inserted));
            }
        }
        Err(err) => {
            for pending in batch {
                let _ = pending.reply.send(Err(err.clone()));
            }
        }
    }
}

/// One transaction for `batch`; `None` if an id collided.
async fn insert(shared: &Shared, batch: &[Pending]) -> StoreResult<Option<Vec<Option<Inserted>>>> {
    let client = shared.pool.get().await.map_err(super::pool_error)?;
    let now = shared.now();
    let numbers = shared.unique_numbers(&client, batch.len()).await?;
    let ids: Vec<i64> = numbers.iter().map(|&n| compose(now, n)).collect();
    let jobs: Vec<&NewJob> = batch.iter().map(|p| &p.job).collect();
    let run_ats: Vec<i64> = jobs.iter().map(|j| j.run_at.unwrap_or(now).as_millis()).collect();
    let states: Vec<&str> =
        run_ats.iter().map(|&at| state::waiting_state(Timestamp::from_millis(at), now).as_str()).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let max_attempts: Vec<Option<i32>> = jobs.iter().map(|j| j.max_attempts.map(|n| n as i32)).collect();
    let timeouts: Vec<Option<i64>> = jobs.iter().map(|j| j.timeout_ms.map(|ms| ms as i64)).collect();
    let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
    let metadata: Vec<Option<String>> = jobs.iter().map(|j| crate::store::columns::metadata_to(&j.metadata)).collect();
    // One statement outside a transaction block: it commits by itself, jobs and events alike.
    let statement = client.prepare_cached(sql::JOBS_INSERT_PLAIN_WITH_EVENTS).await.map_err(|e| db_error(&e))?;
    let inserted = client
        .query_one(
            &statement,
            &[
                &ids,
                &queues,
                &kinds,
                &states,
                &priorities,
                &run_ats,
                &max_attempts,
                &timeouts,
                &payloads,
                &metadata,
                &now.as_millis(),
            ],
        )
        .await;
    let (created, seq): (std::collections::HashSet<i64>, Option<i64>) = match inserted {
        Ok(row) => (row.get::<_, Option<Vec<i64>>>(0).unwrap_or_default().into_iter().collect(), row.get(1)),
        Err(err) if err.as_db_error().is_some_and(|e| e.constraint() == Some("jobs_pkey")) => return Ok(None),
        Err(err) => return Err(db_error(&err)),
    };
    let mut changes = Changes::default();
    let mut out = Vec::with_capacity(batch.len());
    for (i, job) in jobs.iter().enumerate() {
        if !created.contains(&ids[i]) {
            out.push(None);
            continue;
        }
        // The same event the statement stored, for this node's own listener.
        let (event, inserted) = super::fresh_job(JobId::from_raw(ids[i]), job, Timestamp::from_millis(run_ats[i]), now);
        changes.events.push(event);
        changes.count(job.queue.as_str(), |c, n| c.enqueued += n, 1);
        out.push(Some(inserted));
    }
    // As the statement orders them.
    changes.events.sort_by_key(|event| event.job);
    let bytes = changes.events.len() * EVENT_BYTES;
    shared.committed(seq.map(|seq| (seq, changes.events, bytes)), changes.counted);
    Ok(Some(out))
}
