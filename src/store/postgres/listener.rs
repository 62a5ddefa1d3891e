//! The event listener: one connection per node on channel `wharf_events`.
//!
//! Each notification names a committed row of `wharf.events`. The listener reads those rows
//! in notification order (one global order, the same on every node), numbers their events
//! `seq << 16 | index`, and publishes them on this node's bus; events that make work ready
//! wake the long polls waiting here. When the connection drops it reconnects with backoff and
//! reads what it missed by `seq`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::connect::{Connector, describe};
use tokio_util::sync::CancellationToken;

use super::{EVENT_BITS, StoredEvent, sql};
use crate::core::JobState;
use crate::events::EventBus;

/// Bytes of events rows this node keeps for its own listener.
const OWN_ROWS_BYTES: usize = 16 << 20;

/// Events rows this node committed, kept until its listener reaches their notification, so it
/// need not read its own rows back from the database. Bounded by bytes: a row that had to make
/// room is read back like another node's.
#[derive(Debug, Default)]
pub(super) struct OwnRows {
    rows: Mutex<Kept>,
}

/// Rows by `seq` with the bytes each takes, and their total.
type Kept = (BTreeMap<i64, (Vec<StoredEvent>, usize)>, usize);

impl OwnRows {
    /// Keeps a committed row (`bytes`: about what its text takes), before it is announced.
    pub(super) fn keep(&self, seq: i64, events: Vec<StoredEvent>, bytes: usize) {
        let mut guard = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let (rows, total) = &mut *guard;
        *total += bytes;
        rows.insert(seq, (events, bytes));
        while *total > OWN_ROWS_BYTES
            && let Some((_, (_, freed))) = rows.pop_first()
        {
            *total -= freed;
        }
    }

    fn take(&self, seq: i64) -> Option<Vec<StoredEvent>> {
        let mut guard = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let (rows, total) = &mut *guard;
        let (events, bytes) = rows.remove(&seq)?;
        *total -= bytes;
        Some(events)
    }
}

/// Connects once (so a bad URL fails `open`), then listens until `closed`.
pub(super) async fn start(
    pg: Connector,
    own: Arc<OwnRows>,
    events: Arc<EventBus>,
    ready: watch::Sender<u64>,
    closed: CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let (client, notes) = connect(&pg).await?;
    let last: i64 = client.query_one(sql::EVENTS_LAST, &[]).await?.get(0);
    tokio::spawn(run(pg, own, Some((client, notes)), last, events, ready, closed));
    Ok(())
}

type Notes = mpsc::UnboundedReceiver<String>;

/// A listening connection and the stream of its notifications' payloads.
async fn connect(pg: &Connector) -> Result<(tokio_postgres::Client, Notes), tokio_postgres::Error> {
    let (client, mut connection) = pg.connect().await?;
    let (tx, notes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if tx.send(note.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The connection is gone: dropping `tx` tells the reader.
                Err(_) => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {}", sql::EVENTS_CHANNEL)).await?;
    Ok((client, notes))
}

async fn run(
    pg: Connector,
    own: Arc<OwnRows>,
    mut connected: Option<(tokio_postgres::Client, Notes)>,
    mut last: i64,
    events: Arc<EventBus>,
    ready: watch::Sender<u64>,
    closed: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let (client, mut notes) = match connected.take() {
            Some(c) => c,
            None => {
                let attempt = tokio::select! {
                    attempt = connect(&pg) => attempt,
                    () = closed.cancelled() => return,
                };
                match attempt {
                    Ok((client, notes)) => {
                        // Read what was committed while we were away.
                        if let Ok(rows) = client.query(sql::EVENTS_AFTER, &[&last]).await {
                            let caught = rows.iter().map(|r| (r.get(0), parse(r.get(0), r.get(1)))).collect();
                            last = publish(&events, &ready, caught, last);
                        }
                        tracing::info!("event listener reconnected");
                        backoff = Duration::from_millis(100);
                        (client, notes)
                    }
                    Err(err) => {
                        tracing::warn!(error = %describe(&err), retry_in_ms = backoff.as_millis() as u64, "event listener cannot connect");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = closed.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        loop {
            let first = tokio::select! {
                note = notes.recv() => note,
                () = closed.cancelled() => return,
            };
            let Some(first) = first else {
                tracing::warn!("event listener lost its connection; reconnecting");
                break;
            };
            // Everything already waiting goes in one read, in notification order; a
            // notification lists the rows of one node's recent commits.
            let mut seqs: Vec<i64> = parse_seqs(&first);
            while seqs.len() < 2_000
                && let Ok(more) = notes.try_recv()
            {
                seqs.extend(parse_seqs(&more));
            }
            // This node's own rows are at hand; only the others' are read.
            let mut by_seq: std::collections::HashMap<i64, Vec<StoredEvent>> =
                seqs.iter().filter_map(|&seq| own.take(seq).map(|events| (seq, events))).collect();
            let missing: Vec<i64> = seqs.iter().copied().filter(|seq| !by_seq.contains_key(seq)).collect();
            if !missing.is_empty() {
                match client.query(sql::EVENTS_BY_SEQ, &[&missing]).await {
                    Ok(rows) => {
                        by_seq.extend(rows.iter().map(|r| (r.get::<_, i64>(0), parse(r.get(0), r.get(1)))));
                    }
                    Err(err) => {
                        tracing::warn!(error = %describe(&err), "event listener cannot read events; reconnecting");
                        break;
                    }
                }
            }
            let ordered = seqs.iter().filter_map(|seq| by_seq.remove(seq).map(|events| (*seq, events))).collect();
            last = publish(&events, &ready, ordered, last);
        }
        drop(client);
    }
}

/// The `seq`s a notification lists, comma-separated.
fn parse_seqs(payload: &str) -> Vec<i64> {
    payload.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

/// The events of a row read from the database (none if it cannot be read, which is logged).
fn parse(seq: i64, text: &str) -> Vec<StoredEvent> {
    StoredEvent::parse_row(text).unwrap_or_else(|error| {
        tracing::error!(seq, %error, "unreadable events row; skipped");
        Vec::new()
    })
}

/// Publishes rows of events in the order given; returns the highest `seq` seen.
fn publish(events: &EventBus, ready: &watch::Sender<u64>, rows: Vec<(i64, Vec<StoredEvent>)>, mut last: i64) -> i64 {
    let mut woke = false;
    let mut batch = Vec::new();
    for (seq, stored) in rows {
        last = last.max(seq);
        for (i, event) in stored.into_iter().enumerate() {
            let number = ((seq.max(0) as u64) << EVENT_BITS) | i as u64;
            if let Some(event) = event.into_event(number) {
                woke |= event.state == JobState::Ready;
                batch.push(event);
            }
        }
    }
    events.publish_numbered(batch);
    if woke {
        ready.send_modify(|generation| *generation += 1);
    }
    last
}
