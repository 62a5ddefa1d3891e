//! Server-sent event streams: one job's progress, or every job's events.
//!
//! # A job's stream
//!
//! The first event is a `snapshot` of the job; then every committed change follows as a
//! `state` or `progress` event, and the stream closes after a terminal state. Each event's id
//! is the job's version, which every change bumps, so a client reconnecting with
//! `Last-Event-ID: n` is replayed exactly the changes after `n` from the bus's recent history.
//! If that history no longer holds them all (or the client lagged behind), it gets a fresh
//! `snapshot` instead: it may miss intermediate progress values, never the current state.
//!
//! Streams end when the server shuts down; clients reconnect with their last id.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, JobPath};
use super::views;
use crate::api::Problem;
use crate::core::{Job, JobId, QueueName};
use crate::events::JobEvent;

type EventStream = Sse<KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>;

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers.get("last-event-id")?.to_str().ok()?.trim().parse().ok()
}

fn snapshot(job: Job) -> Event {
    let version = job.version;
    let data = serde_json::to_string(&views::job(job)).unwrap_or_default();
    Event::default().id(version.to_string()).event("snapshot").data(data)
}

fn change(event: &JobEvent, id: u64) -> Event {
    let data = serde_json::to_string(&views::event(event)).unwrap_or_default();
    Event::default().id(id.to_string()).event(event.kind.as_str()).data(data)
}

fn stream(rx: mpsc::Receiver<Result<Event, Infallible>>) -> EventStream {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One job's live progress: a snapshot, then every change, until it finishes.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(
        ("id" = String, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "text/event-stream of snapshot, state and progress events", content_type = "text/event-stream"),
        (status = 404, body = Problem),
    )
)]
pub async fn job_events(
    State(state): State<AppState>,
    JobPath(id): JobPath,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    // Subscribe before reading the job: every change after the read arrives on `live`.
    let (past, live) = state.events.subscribe(|e| e.job_id == id);
    let job = state.store.job_get(id).await?;
    let (tx, rx) = mpsc::channel(64);
    let resume = last_event_id(&headers);
    tokio::spawn(follow_job(state, id, job, resume, past, live, tx));
    Ok(stream(rx))
}

async fn follow_job(
    state: AppState,
    id: JobId,
    job: Job,
    resume: Option<u64>,
    past: Vec<Arc<JobEvent>>,
    mut live: broadcast::Receiver<Arc<JobEvent>>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut seen = job.version;
    let mut done = job.state.is_terminal();
    match resume {
        Some(last) if last >= job.version => {}
        Some(last) => {
            // Replay from history if it holds every version after `last`, else a snapshot.
            let missed: Vec<&Arc<JobEvent>> = past.iter().filter(|e| e.version > last && e.version <= seen).collect();
            let complete =
                missed.len() as u64 == seen - last && missed.iter().zip(last + 1..).all(|(e, v)| e.version == v);
            if complete {
                for event in missed {
                    if tx.send(Ok(change(event, event.version))).await.is_err() {
                        return;
                    }
                }
            } else if tx.send(Ok(snapshot(job))).await.is_err() {
                return;
            }
        }
        None => {
            if tx.send(Ok(snapshot(job))).await.is_err() {
                return;
            }
        }
    }
    while !done {
        let next = tokio::select! {
            next = live.recv() => next,
            () = state.shutdown.cancelled() => return,
            () = tx.closed() => return,
        };
        match next {
            Ok(event) if event.job_id == id && event.version > seen => {
                seen = event.version;
                done = event.state.is_terminal();
                if tx.send(Ok(change(&event, event.version))).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow to keep up: resynchronise from the store.
                let Ok(job) = state.store.job_get(id).await else { return };
                if job.version > seen {
                    seen = job.version;
                    done = job.state.is_terminal();
                    if tx.send(Ok(snapshot(job))).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllEventsQuery {
    /// Only this queue's events.
    queue: Option<String>,
}

/// Every job's events, for dashboards; event ids are positions on the server's event bus, and
/// `Last-Event-ID` replays what the bus still holds after it.
#[utoipa::path(
    get, path = "/v1/events", tag = "jobs",
    params(AllEventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of created, state and progress events", content_type = "text/event-stream"))
)]
pub async fn all_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AllEventsQuery>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let queue = query
        .queue
        .map(|q| QueueName::parse(&q).map_err(|e| ApiError::invalid_request("queue", e.reason)))
        .transpose()?;
    let resume = last_event_id(&headers);
    let wanted = move |e: &JobEvent| queue.as_ref().is_none_or(|q| q.as_str() == &*e.queue);
    let keep = {
        let wanted = wanted.clone();
        move |e: &JobEvent| resume.is_some_and(|last| e.seq > last) && wanted(e)
    };
    let (past, mut live) = state.events.subscribe(keep);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for event in past {
            if tx.send(Ok(change(&event, event.seq))).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                () = state.shutdown.cancelled() => return,
                () = tx.closed() => return,
            };
            match next {
                Ok(event) if wanted(&event) => {
                    if tx.send(Ok(change(&event, event.seq))).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let note = Event::default().event("lagged").data(format!("{{\"missed\":{missed}}}"));
                    if tx.send(Ok(note)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(stream(rx))
}
