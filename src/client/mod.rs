//! A client of HTTP API v1, over the same public API every user has.
//!
//! The CLI is built on it, and so is `wharf bench`. Errors carry the server's problem, so a
//! caller can match on its `code` (`stale_lease`, `job_not_found`, …).

use std::time::Duration;

pub mod conn;

use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    AckRequest, AckResponse, BatchEnqueueRequest, BatchEnqueueResponse, CancelResponse, EnqueueRequest, JobListQuery,
    JobListResponse, JobSummaryView, JobView, LeaseRequest, LeaseResponse, Problem, QueueListResponse, QueueView,
    RedriveRequest, RedriveResponse,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach the wharf server at {url}: {cause}")]
    Connect {
        /// The server.
        url: String,
        /// Why.
        cause: String,
    },
    /// The server refused the request.
    #[error("{} ({})", problem.detail, problem.code)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's problem.
        problem: Box<Problem>,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {url}: {cause}")]
    Protocol {
        /// The server.
        url: String,
        /// Why.
        cause: String,
    },
}

impl ClientError {
    /// The problem code, when the server refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }
}

/// The innermost cause of `err`: for a failed request, the reason itself ("Connection refused
/// (os error 111)") rather than reqwest's "error sending request for url".
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// One event of a server-sent event stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEvent {
    /// The event name: `snapshot`, `state`, `progress`, `created`.
    pub event: String,
    /// The event id.
    pub id: String,
    /// The JSON data.
    pub data: String,
}

/// A client of one wharf server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The bearer token, for connections opened outside `http`.
    token: Option<std::sync::Arc<str>>,
    /// Extra trusted certificates, likewise.
    ca_file: Option<std::path::PathBuf>,
}

/// How a client authenticates and whom it trusts.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// The bearer token, when the server needs one.
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (private PKI).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::with_token(base, None)
    }

    /// A client that sends `token` as its bearer token with every request.
    pub fn with_token(base: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::with_options(base, &ClientOptions { token: token.map(str::to_owned), ca_file: None })
    }

    /// A client with a token and extra trusted certificates.
    pub fn with_options(base: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let token = options.token.as_deref();
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Connect {
                url: base,
                cause: "the server URL must start with http:// or https://".into(),
            });
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Connect {
                    url: base.clone(),
                    cause: "the token has characters a header cannot hold".into(),
                }
            })?;
            // Kept out of debug output and logs.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .default_headers(headers)
            .use_rustls_tls();
        if let Some(path) = &options.ca_file {
            let fail = |cause: String| ClientError::Connect { url: base.clone(), cause };
            let pem =
                std::fs::read(path).map_err(|e| fail(format!("cannot read the CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| fail(format!("the CA file {} holds no usable certificate: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(fail(format!("the CA file {} holds no certificate", path.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Connect { url: base.clone(), cause: e.to_string() })?;
        Ok(Client { http, base, token: token.map(std::sync::Arc::from), ca_file: options.ca_file.clone() })
    }

    /// A single keep-alive connection to the same server, with the same token (for load loops).
    pub async fn connect(&self) -> Result<conn::Connection, ClientError> {
        conn::Connection::open(&self.base, self.token.as_deref(), self.ca_file.as_deref()).await
    }

    /// A text answer (`/metrics`).
    pub async fn text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.http.get(self.url(path)).send().await.map_err(|e| self.connect_error(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(e))?;
        if !status.is_success() {
            return Err(self.refusal(status, &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, T), ClientError> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        self.send(req).await
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<(StatusCode, T), ClientError> {
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(e))?;
        if !status.is_success() {
            return Err(self.refusal(status, &bytes));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol { url: self.base.clone(), cause: e.to_string() })?;
        Ok((status, value))
    }

    /// The error for a refused request: the server's problem, or what it said instead.
    fn refusal(&self, status: StatusCode, bytes: &[u8]) -> ClientError {
        match serde_json::from_slice::<Problem>(bytes) {
            Ok(problem) => ClientError::Api { status: status.as_u16(), problem: Box::new(problem) },
            Err(_) => ClientError::Protocol {
                url: self.base.clone(),
                cause: format!("HTTP {status}: {}", String::from_utf8_lossy(bytes).trim()),
            },
        }
    }

    fn connect_error(&self, err: reqwest::Error) -> ClientError {
        ClientError::Connect { url: self.base.clone(), cause: root_cause(&err) }
    }

    /// Enqueues one job; the flag is false for an idempotent hit.
    pub async fn enqueue(&self, queue: &str, job: &EnqueueRequest) -> Result<(JobSummaryView, bool), ClientError> {
        let (status, view) = self.call(Method::POST, &format!("/v1/queues/{queue}/jobs"), Some(job)).await?;
        Ok((view, status == StatusCode::CREATED))
    }

    /// Enqueues many jobs in one transaction.
    pub async fn enqueue_batch(
        &self,
        queue: &str,
        jobs: &BatchEnqueueRequest,
    ) -> Result<BatchEnqueueResponse, ClientError> {
        Ok(self.call(Method::POST, &format!("/v1/queues/{queue}/jobs/batch"), Some(jobs)).await?.1)
    }

    /// One job, whole.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/jobs/{id}"), None).await?.1)
    }

    /// A page of a queue's jobs.
    pub async fn jobs(&self, queue: &str, query: &JobListQuery) -> Result<JobListResponse, ClientError> {
        let req = self.http.get(self.url(&format!("/v1/queues/{queue}/jobs"))).query(query);
        Ok(self.send(req).await?.1)
    }

    /// Every queue.
    pub async fn queues(&self) -> Result<QueueListResponse, ClientError> {
        Ok(self.call::<(), _>(Method::GET, "/v1/queues", None).await?.1)
    }

    /// One queue, with its counts and policy.
    pub async fn queue(&self, queue: &str) -> Result<QueueView, ClientError> {
        Ok(self.call::<(), _>(Method::GET, &format!("/v1/queues/{queue}"), None).await?.1)
    }

    /// Creates a queue or changes its policy.
    pub async fn queue_put(
        &self,
        queue: &str,
        policy: &crate::api::QueuePolicyRequest,
    ) -> Result<QueueView, ClientError> {
        Ok(self.call(Method::PUT, &format!("/v1/queues/{queue}"), Some(policy)).await?.1)
    }

    /// Creates a token; the answer holds the token, shown this once.
    pub async fn token_create(
        &self,
        req: &crate::api::TokenCreateRequest,
    ) -> Result<crate::api::TokenCreated, ClientError> {
        Ok(self.call(Method::POST, "/v1/tokens", Some(req)).await?.1)
    }

    /// Every token (without the tokens themselves).
    pub async fn token_list(&self) -> Result<crate::api::TokenListResponse, ClientError> {
        Ok(self.call::<(), _>(Method::GET, "/v1/tokens", None).await?.1)
    }

    /// Revokes a token.
    pub async fn token_revoke(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/tokens/{id}")).await
    }

    /// A DELETE answered 204.
    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let resp = self.http.delete(self.url(path)).send().await.map_err(|e| self.connect_error(e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.connect_error(e))?;
        Err(self.refusal(status, &bytes))
    }

    /// Deletes a queue that holds no waiting, running or dead job.
    pub async fn queue_delete(&self, queue: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/queues/{queue}")).await
    }

    /// Pauses or resumes a queue.
    pub async fn queue_pause(&self, queue: &str, paused: bool) -> Result<QueueView, ClientError> {
        let action = if paused { "pause" } else { "resume" };
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/queues/{queue}/{action}"), None).await?.1)
    }

    /// Sends dead jobs back to ready.
    pub async fn redrive(&self, queue: &str, ids: Option<Vec<String>>) -> Result<RedriveResponse, ClientError> {
        let body = RedriveRequest { ids };
        Ok(self.call(Method::POST, &format!("/v1/queues/{queue}/redrive"), Some(&body)).await?.1)
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<CancelResponse, ClientError> {
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/jobs/{id}/cancel"), None).await?.1)
    }

    /// Workers seen in the last minute.
    pub async fn workers(&self) -> Result<crate::api::WorkerListResponse, ClientError> {
        Ok(self.call::<(), _>(Method::GET, "/v1/workers", None).await?.1)
    }

    /// Every autoscaled pool.
    pub async fn pools(&self) -> Result<crate::api::PoolListResponse, ClientError> {
        Ok(self.call::<(), _>(Method::GET, "/v1/pools", None).await?.1)
    }

    /// Every alarm with its state.
    pub async fn alarms(&self) -> Result<crate::api::AlarmListResponse, ClientError> {
        Ok(self.call::<(), _>(Method::GET, "/v1/alarms", None).await?.1)
    }

    /// Asks a worker to drain: it leases nothing new and stops once its jobs are done.
    pub async fn worker_drain(&self, id: &str) -> Result<crate::api::WorkerView, ClientError> {
        Ok(self.call::<(), _>(Method::POST, &format!("/v1/workers/{}/drain", path_segment(id)), None).await?.1)
    }

    /// Says a worker stopped: it leaves the list of workers at once.
    pub async fn worker_leave(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/workers/{}", path_segment(id))).await
    }

    /// Asks for work.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseResponse, ClientError> {
        Ok(self.call(Method::POST, "/v1/lease", Some(req)).await?.1)
    }

    /// Extends a lease and reports progress.
    pub async fn heartbeat(
        &self,
        id: &str,
        req: &crate::api::HeartbeatRequest,
    ) -> Result<crate::api::HeartbeatResponse, ClientError> {
        Ok(self.call(Method::POST, &format!("/v1/jobs/{id}/heartbeat"), Some(req)).await?.1)
    }

    /// Records a successful attempt.
    pub async fn complete(
        &self,
        id: &str,
        req: &crate::api::CompleteRequest,
    ) -> Result<crate::api::SettledView, ClientError> {
        Ok(self.call(Method::POST, &format!("/v1/jobs/{id}/complete"), Some(req)).await?.1)
    }

    /// Records a failed attempt.
    pub async fn fail(&self, id: &str, req: &crate::api::FailRequest) -> Result<crate::api::SettledView, ClientError> {
        Ok(self.call(Method::POST, &format!("/v1/jobs/{id}/fail"), Some(req)).await?.1)
    }

    /// Gives a lease back: the job is ready again at once.
    pub async fn release(&self, id: &str, lease_token: &str) -> Result<crate::api::SettledView, ClientError> {
        let body = crate::api::ReleaseRequest { lease_token: lease_token.to_owned() };
        Ok(self.call(Method::POST, &format!("/v1/jobs/{id}/release"), Some(&body)).await?.1)
    }

    /// Acknowledges many jobs at once.
    pub async fn ack(&self, req: &AckRequest) -> Result<AckResponse, ClientError> {
        Ok(self.call(Method::POST, "/v1/ack", Some(req)).await?.1)
    }

    /// A job's progress stream, resuming after `last_event_id` if given.
    pub async fn job_events(
        &self,
        id: &str,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ClientError>> + use<>, ClientError> {
        self.event_stream(&format!("/v1/jobs/{}/events", path_segment(id)), last_event_id).await
    }

    /// Every job event of every queue the token sees, from now on.
    pub async fn all_events(
        &self,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ClientError>> + use<>, ClientError> {
        self.event_stream("/v1/events", None).await
    }

    async fn event_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ClientError>> + use<>, ClientError> {
        use eventsource_stream::Eventsource as _;
        let mut req = self.http.get(self.url(path));
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last);
        }
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(|e| self.connect_error(e))?;
            return Err(match serde_json::from_slice::<Problem>(&bytes) {
                Ok(problem) => ClientError::Api { status: status.as_u16(), problem: Box::new(problem) },
                Err(_) => ClientError::Protocol { url: self.base.clone(), cause: format!("HTTP {status}") },
            });
        }
        let url = self.base.clone();
        Ok(resp.bytes_stream().eventsource().map(move |item| {
            item.map(|e| StreamEvent { event: e.event, id: e.id, data: e.data })
                .map_err(|e| ClientError::Connect { url: url.clone(), cause: e.to_string() })
        }))
    }
}

/// `text` as one path segment: every byte but the unreserved ones (RFC 3986) percent-encoded.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
