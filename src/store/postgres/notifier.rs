//! Tells every node which rows of `wharf.events` were committed, after the commits.
//!
//! A transaction that itself calls NOTIFY holds PostgreSQL's notification lock until it has
//! committed, fsync included, so every notifying transaction of the cluster would wait for the
//! one before: no group commit, and a few hundred commits a second. Instead each node sends
//! the `seq`s of its committed rows from a connection of its own, many per notification, with
//! `synchronous_commit` off (a notification needs no durability: a node that misses one reads
//! by `seq` when it reconnects). Every node receives notifications in one global order, so
//! they all still see the same events in the same order.

use std::time::Duration;

use super::connect::{Connector, describe};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sql;

/// Most `seq`s in one notification (its payload is at most 8,000 bytes).
const PER_NOTIFICATION: usize = 400;

/// Sends committed `seq`s given on the returned channel until `closed`.
pub(super) fn start(pg: Connector, closed: CancellationToken) -> mpsc::UnboundedSender<i64> {
    let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
    tokio::spawn(async move {
        let mut client: Option<tokio_postgres::Client> = None;
        let mut pending: Vec<i64> = Vec::new();
        loop {
            if pending.is_empty() {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    () = closed.cancelled() => return,
                };
                let Some(seq) = next else { return };
                pending.push(seq);
            }
            while pending.len() < PER_NOTIFICATION
                && let Ok(seq) = rx.try_recv()
            {
                pending.push(seq);
            }
            if client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                client = connect(&pg).await;
                if client.is_none() {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        () = closed.cancelled() => return,
                    }
                }
            }
            let Some(c) = client.as_ref() else { continue };
            let payload = pending.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            match c.execute(sql::EVENTS_NOTIFY, &[&payload]).await {
                Ok(_) => pending.clear(),
                Err(err) => {
                    tracing::warn!(error = %describe(&err), "cannot notify other nodes of events; retrying");
                    client = None;
                }
            }
        }
    });
    tx
}

async fn connect(pg: &Connector) -> Option<tokio_postgres::Client> {
    let (client, connection) = pg.connect().await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.batch_execute("SET synchronous_commit TO off").await.ok()?;
    Some(client)
}
