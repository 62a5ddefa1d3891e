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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use futures_util::stream::{self, BoxStream, StreamExt as _};
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiQuery, JobPath};
use super::views;
use crate::api::Problem;
use crate::core::auth::QueuePatterns;
use crate::core::{Job, JobId, QueueName};
use crate::events::{JobEvent, Subscription};

type EventStream = Sse<KeepAliveStream<BoxStream<'static, Result<Event, Infallible>>>>;

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

fn sse(events: BoxStream<'static, Result<Event, Infallible>>) -> EventStream {
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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
    caller: Caller,
    JobPath(id): JobPath,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    // Subscribe before reading the job: every change after the read is after the position.
    let (past, sub) = state.events.subscribe(|e| e.job_id == id);
    let job = state.store.job_get(id).await?;
    caller.check_queue(&job.queue)?;
    let seen = job.version;
    let done = job.state.is_terminal();
    let mut first = VecDeque::new();
    match last_event_id(&headers) {
        Some(last) if last >= job.version => {}
        Some(last) => {
            // Replay from history if it holds every version after `last` (superseded progress
            // included, which is passed over), else a snapshot.
            let missed: Vec<&JobEvent> =
                past.iter().map(|e| &**e).filter(|e| e.version > last && e.version <= seen).collect();
            let complete =
                missed.len() as u64 == seen - last && missed.iter().zip(last + 1..).all(|(e, v)| e.version == v);
            if complete {
                first.extend(missed.iter().filter(|e| !e.superseded).map(|e| change(e, e.version)));
            } else {
                first.push_back(snapshot(job));
            }
        }
        None => first.push_back(snapshot(job)),
    }
    let follow = JobFollow { state, id, sub, pending: first, seen, done };
    Ok(sse(stream::unfold(follow, JobFollow::step).boxed()))
}

/// A job's stream between reads: what to send next, and where on the bus it stands. It reads
/// the bus only when its client has taken what came before, so a client that stops reading
/// holds no events.
struct JobFollow {
    state: AppState,
    id: JobId,
    sub: Subscription,
    pending: VecDeque<Event>,
    seen: u64,
    done: bool,
}

impl JobFollow {
    async fn step(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let id = self.id;
            let next = tokio::select! {
                next = self.sub.next(|e| e.job_id == id) => next,
                () = self.state.shutdown.cancelled() => return None,
            };
            match next {
                Ok(event) if event.version > self.seen => {
                    self.seen = event.version;
                    self.done = event.state.is_terminal();
                    self.pending.push_back(change(&event, event.version));
                }
                Ok(_) => {}
                Err(_lagged) => {
                    // The bus moved on without us: resynchronise from the store.
                    let job = self.state.store.job_get(id).await.ok()?;
                    if job.version > self.seen {
                        self.seen = job.version;
                        self.done = job.state.is_terminal();
                        self.pending.push_back(snapshot(job));
                    }
                }
            }
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
    caller: Caller,
    ApiQuery(query): ApiQuery<AllEventsQuery>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let queue = query
        .queue
        .map(|q| QueueName::parse(&q).map_err(|e| ApiError::invalid_request("queue", e.reason)))
        .transpose()?;
    if let Some(queue) = &queue {
        caller.check_queue(queue)?;
    }
    let sub = match last_event_id(&headers) {
        Some(last) => state.events.subscribe_after(last),
        None => state.events.subscribe(|_| false).1,
    };
    let all = AllFollow { state, queue, patterns: caller.queues, sub };
    Ok(sse(stream::unfold(all, AllFollow::step).boxed()))
}

/// The stream of every job's events between reads: a position on the bus.
struct AllFollow {
    state: AppState,
    queue: Option<QueueName>,
    /// The caller's queues: a token limited to some sees only their events.
    patterns: QueuePatterns,
    sub: Subscription,
}

impl AllFollow {
    async fn step(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        let (queue, patterns) = (&self.queue, &self.patterns);
        let wanted =
            |e: &JobEvent| queue.as_ref().is_none_or(|q| q.as_str() == &*e.queue) && patterns.matches(&e.queue);
        let next = tokio::select! {
            next = self.sub.next(wanted) => next,
            () = self.state.shutdown.cancelled() => return None,
        };
        let event = match next {
            Ok(event) => change(&event, event.seq),
            Err(lagged) => Event::default().event("lagged").data(format!("{{\"missed\":{}}}", lagged.missed)),
        };
        Some((Ok(event), self))
    }
}
