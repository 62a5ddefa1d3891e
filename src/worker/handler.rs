//! What a handler is: something that runs one attempt of a job and says how it went.
//!
//! Three kinds ship with wharf — a program ([`super::exec`]), an HTTP endpoint
//! ([`super::endpoint`]) and Rust functions registered by kind ([`Handlers`]) — and all of them
//! implement [`Handler`]. The runtime gives each attempt a [`JobContext`]: the job, a progress
//! handle, and a cancellation token that fires when the attempt must stop (the job was
//! canceled, its timeout passed, its lease was lost, or the worker is shutting down).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::Json;

/// How an attempt ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded, with an optional result (JSON).
    Done(Option<Json>),
    /// It failed; try again after `after`, or after the queue's backoff when `None`.
    Retry {
        /// What went wrong.
        error: String,
        /// Asked-for delay before the next attempt.
        after: Option<Duration>,
    },
    /// It failed for good: the job is dead at once, whatever attempts are left.
    Fail(String),
}

/// Why the runtime stopped an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Someone canceled the job.
    Canceled,
    /// The attempt ran past its timeout.
    TimedOut,
    /// The lease is gone (it expired, or the server no longer knows it).
    LeaseLost,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
}

/// One attempt of one job, as a handler sees it.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// This attempt, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Its payload, as JSON.
    pub payload: Json,
    /// Its metadata (correlation ids, `traceparent`).
    pub metadata: BTreeMap<String, String>,
    /// How long this attempt may run.
    pub timeout: Option<Duration>,
    /// The lease's token, for handlers that call the API themselves.
    pub lease_token: String,
    /// The server's URL.
    pub server: String,
    pub(super) progress: watch::Sender<Option<Json>>,
    pub(super) cancel: CancellationToken,
    pub(super) stop: Arc<Mutex<Option<StopReason>>>,
}

impl JobContext {
    /// Reports progress: any JSON value; the runtime sends the latest with its next heartbeat,
    /// promptly, and watchers see it on the job's event stream.
    pub fn progress(&self, value: &impl Serialize) {
        if let Ok(text) = serde_json::to_string(value)
            && let Ok(raw) = RawValue::from_string(text)
        {
            self.progress.send_replace(Some(raw));
        }
    }

    /// Reports progress that is already JSON text.
    pub fn progress_raw(&self, value: Json) {
        self.progress.send_replace(Some(value));
    }

    /// Resolves when the attempt must stop; see [`JobContext::stop_reason`] for why.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// True once the attempt must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the attempt must stop, once it must.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The payload as `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }

    pub(super) fn stop_with(&self, reason: StopReason) {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_none() {
            *stop = Some(reason);
        }
        drop(stop);
        self.cancel.cancel();
    }
}

/// Runs attempts of jobs.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. Return promptly once [`JobContext::cancelled`] resolves.
    async fn run(&self, job: JobContext) -> Outcome;
}

/// The error of a Rust handler: retryable unless made [`permanent`](HandlerError::permanent).
///
/// `?` converts any error into a retryable one, so handlers can use `?` freely.
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    permanent: bool,
    retry_after: Option<Duration>,
}

impl HandlerError {
    /// A failure worth retrying, after the queue's backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), permanent: false, retry_after: None }
    }

    /// A failure worth retrying after `after` (a rate limit, say).
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        HandlerError { message: message.into(), permanent: false, retry_after: Some(after) }
    }

    /// A failure that retrying cannot fix: the job is dead at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), permanent: true, retry_after: None }
    }
}

impl<E: std::fmt::Display> From<E> for HandlerError {
    fn from(err: E) -> Self {
        HandlerError::retry(err.to_string())
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type KindFn = Arc<dyn Fn(JobContext) -> BoxFuture + Send + Sync>;

/// Rust handlers registered by job kind, with typed payloads.
///
/// ```no_run
/// # use wharf::worker::{Handlers, HandlerError, JobContext};
/// #[derive(serde::Deserialize)]
/// struct Render { doc: u64 }
///
/// let handlers = Handlers::new().on("render", |job: JobContext, render: Render| async move {
///     job.progress(&serde_json::json!({"pct": 50}));
///     Ok::<_, HandlerError>(serde_json::json!({"doc": render.doc, "pages": 3}))
/// });
/// ```
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<String, KindFn>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").field("kinds", &self.by_kind.keys().collect::<Vec<_>>()).finish()
    }
}

impl Handlers {
    /// No handlers yet.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// Handles jobs of `kind` with `f`, given the job and its payload decoded as `P`. A payload
    /// that does not decode fails the job for good. The result `R` is stored as JSON.
    pub fn on<P, R, F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let run: KindFn = Arc::new(move |job: JobContext| {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let payload: P = match job.payload() {
                    Ok(payload) => payload,
                    Err(err) => return Outcome::Fail(format!("the payload does not fit kind {:?}: {err}", job.kind)),
                };
                match f(job, payload).await {
                    Ok(result) => match serde_json::to_string(&result).map(RawValue::from_string) {
                        Ok(Ok(raw)) => Outcome::Done(Some(raw)),
                        Ok(Err(err)) | Err(err) => Outcome::Fail(format!("the result is not JSON: {err}")),
                    },
                    Err(err) if err.permanent => Outcome::Fail(err.message),
                    Err(err) => Outcome::Retry { error: err.message, after: err.retry_after },
                }
            })
        });
        self.by_kind.insert(kind.to_owned(), run);
        self
    }

    /// The kinds handled.
    pub fn kinds(&self) -> Vec<&str> {
        self.by_kind.keys().map(String::as_str).collect()
    }
}

#[async_trait]
impl Handler for Handlers {
    async fn run(&self, job: JobContext) -> Outcome {
        match self.by_kind.get(&job.kind) {
            Some(run) => run(job).await,
            None => {
                Outcome::Retry { error: format!("this worker has no handler for kind {:?}", job.kind), after: None }
            }
        }
    }
}

/// Succeeds at once, for benchmarks of the runtime itself (`wharf worker --builtin noop`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _job: JobContext) -> Outcome {
        Outcome::Done(None)
    }
}
