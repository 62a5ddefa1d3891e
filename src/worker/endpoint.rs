//! POSTs each attempt to an HTTP endpoint: `wharf worker --http http://127.0.0.1:8000/jobs`.
//!
//! The sidecar pattern of Elastic Beanstalk's worker tier: an existing web app becomes a worker
//! without a queue client.
//!
//! - The request body is the job's payload (JSON); headers carry `X-Wharf-Job-Id`,
//!   `X-Wharf-Queue`, `X-Wharf-Kind`, `X-Wharf-Attempt`, `X-Wharf-Lease-Token` and the job's
//!   `traceparent`.
//! - 2xx: success; a JSON body is the result (any other body is stored as a JSON string).
//! - 400, 410 or 422: the job fails for good (the payload cannot be processed).
//! - 429 or 503 with `Retry-After: <seconds>`: retried after that delay.
//! - Anything else, a connection error, or the job's timeout: the attempt failed and is retried.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::handler::{Handler, JobContext, Outcome};

/// Statuses that fail a job for good.
pub const PERMANENT_STATUSES: [u16; 3] = [400, 410, 422];
/// Largest response body read.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The HTTP endpoint handler.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: String,
    http: reqwest::Client,
}

impl Endpoint {
    /// A handler posting to `url`.
    pub fn new(url: &str) -> Result<Self, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--http {url:?}: the URL must start with http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Endpoint { url: url.to_owned(), http })
    }
}

#[async_trait]
impl Handler for Endpoint {
    async fn run(&self, job: JobContext) -> Outcome {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-wharf-job-id", &job.id)
            .header("x-wharf-queue", &job.queue)
            .header("x-wharf-kind", &job.kind)
            .header("x-wharf-attempt", job.attempt.to_string())
            .header("x-wharf-lease-token", &job.lease_token)
            .body(job.payload.get().to_owned());
        if let Some(traceparent) = job.metadata.get("traceparent") {
            request = request.header("traceparent", traceparent);
        }
        let response = tokio::select! {
            response = request.send() => response,
            // Dropping the request closes the connection: the endpoint sees the client gone.
            () = job.cancelled() => return Outcome::Retry { error: "stopped".into(), after: None },
        };
        let response = match response {
            Ok(response) => response,
            // reqwest's own message ("error sending request for url") hides the cause; the
            // innermost error says it ("Connection refused", "dns error", "timed out").
            Err(err) => {
                let cause = crate::client::root_cause(&err);
                return Outcome::Retry { error: format!("cannot reach {}: {cause}", self.url), after: None };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = tokio::select! {
            body = read_limited(response) => body,
            () = job.cancelled() => return Outcome::Retry { error: "stopped".into(), after: None },
        };
        let body = match body {
            Ok(body) => body,
            Err(err) => return Outcome::Retry { error: format!("HTTP {status}, unreadable body: {err}"), after: None },
        };
        let text = String::from_utf8_lossy(&body).into_owned();
        match status {
            200..=299 => {
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    Outcome::Done(None)
                } else {
                    let raw = RawValue::from_string(trimmed.to_owned())
                        .or_else(|_| RawValue::from_string(serde_json::to_string(trimmed).unwrap_or_default()));
                    match raw {
                        Ok(raw) => Outcome::Done(Some(raw)),
                        Err(err) => Outcome::Fail(format!("unusable response body: {err}")),
                    }
                }
            }
            s if PERMANENT_STATUSES.contains(&s) => Outcome::Fail(describe(status, &text)),
            429 | 503 => Outcome::Retry { error: describe(status, &text), after: retry_after },
            _ => Outcome::Retry { error: describe(status, &text), after: None },
        }
    }
}

fn describe(status: u16, body: &str) -> String {
    let body = body.trim();
    let tail: String = body.chars().rev().take(2_000).collect::<Vec<_>>().into_iter().rev().collect();
    if tail.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {tail}") }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("over {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
