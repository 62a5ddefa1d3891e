//! The one error type of the HTTP layer and its one body: RFC 9457 problem JSON.
//!
//! Every refusal names a [`ProblemCode`] from the table below: its HTTP status, a stable
//! snake_case `code` clients match on, and a title. The `detail` says what went wrong this
//! time; `field` names the request field at fault. Internal causes (an SQLite message, say) are
//! logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::Problem;
use crate::core::Invalid;
use crate::store::StoreError;

macro_rules! problem_codes {
    ($($(#[$doc:meta])* $name:ident => ($status:literal, $code:literal, $title:literal),)*) => {
        /// Every kind of problem the API answers with.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ProblemCode {
            $($(#[$doc])* $name,)*
        }

        impl ProblemCode {
            /// Every code, for the documentation test.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$name,)*];

            /// The HTTP status.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemCode::$name => StatusCode::from_u16($status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),)*
                }
            }

            /// The stable snake_case name.
            pub const fn code(self) -> &'static str {
                match self { $(ProblemCode::$name => $code,)* }
            }

            /// The title.
            pub const fn title(self) -> &'static str {
                match self { $(ProblemCode::$name => $title,)* }
            }
        }
    };
}

problem_codes! {
    /// The body is not JSON, or not one JSON value.
    MalformedJson => (400, "malformed_json", "Malformed JSON"),
    /// A field is missing, unknown or of the wrong type, or a path or query parameter is malformed.
    InvalidRequest => (400, "invalid_request", "Invalid request"),
    /// The queue name in the path is not 1–128 characters of `A-Z a-z 0-9 . _ -`.
    InvalidQueueName => (400, "invalid_queue_name", "Invalid queue name"),
    /// A field is well-formed but out of range.
    InvalidValue => (422, "invalid_value", "Invalid value"),
    /// The client took too long to send its request body.
    RequestTimeout => (408, "request_timeout", "Request timeout"),
    /// A payload, progress or result is over the size limit.
    PayloadTooLarge => (413, "payload_too_large", "Payload too large"),
    /// The request body is over the size limit.
    BodyTooLarge => (413, "body_too_large", "Request body too large"),
    /// No job has this id.
    JobNotFound => (404, "job_not_found", "Job not found"),
    /// No queue has this name.
    QueueNotFound => (404, "queue_not_found", "Queue not found"),
    /// No such path.
    NotFound => (404, "not_found", "Not found"),
    /// The request body is not JSON, or is compressed.
    UnsupportedMediaType => (415, "unsupported_media_type", "Unsupported media type"),
    /// No token, or an unknown one, on a server that needs one.
    Unauthorized => (401, "unauthorized", "Unauthorized"),
    /// The token's role or queues do not allow the call.
    Forbidden => (403, "forbidden", "Forbidden"),
    /// The webhook delivery's signature is missing or does not verify.
    InvalidSignature => (401, "invalid_signature", "Invalid signature"),
    /// No webhook has this name.
    HookNotFound => (404, "hook_not_found", "Hook not found"),
    /// No token has this id.
    TokenNotFound => (404, "token_not_found", "Token not found"),
    /// No worker with this id asked for work within the last minute.
    WorkerNotFound => (404, "worker_not_found", "Worker not found"),
    /// No pool has this name.
    PoolNotFound => (404, "pool_not_found", "Pool not found"),
    /// No alarm has this name.
    AlarmNotFound => (404, "alarm_not_found", "Alarm not found"),
    /// The alarm is declared in the config file, which the API does not change.
    AlarmDeclared => (409, "alarm_declared", "Alarm declared in the config file"),
    /// Tokens cannot be managed while authentication is off.
    AuthOff => (409, "auth_off", "Authentication is off"),
    /// A cross-site request from an origin that is not allowed.
    OriginNotAllowed => (403, "origin_not_allowed", "Origin not allowed"),
    /// The path exists, but not with this method.
    MethodNotAllowed => (405, "method_not_allowed", "Method not allowed"),
    /// The lease token is not the job's current one.
    StaleLease => (409, "stale_lease", "Stale lease token"),
    /// The job's state does not allow the operation.
    IllegalTransition => (409, "illegal_transition", "Illegal state transition"),
    /// The idempotency key is held by a job with another kind or payload.
    IdempotencyConflict => (409, "idempotency_conflict", "Idempotency key reused"),
    /// The queue holds jobs that are waiting, running or dead, so it cannot be deleted.
    QueueNotEmpty => (409, "queue_not_empty", "Queue not empty"),
    /// The server keeps no more queues.
    QueueLimit => (422, "queue_limit_reached", "Queue limit reached"),
    /// The queue holds its most waiting jobs.
    QueueFull => (429, "queue_full", "Queue full"),
    /// The token sent more requests than its rate limit allows.
    RateLimited => (429, "rate_limited", "Too many requests"),
    /// Too many requests are waiting for the store; retry shortly.
    Overloaded => (503, "overloaded", "Server overloaded"),
    /// The store cannot serve requests now.
    Unavailable => (503, "unavailable", "Service unavailable"),
    /// The disk is full; nothing was written.
    InsufficientStorage => (507, "insufficient_storage", "Insufficient storage"),
    /// The server found its own records inconsistent; nothing was written.
    Internal => (500, "internal", "Internal error"),
}

/// A refused request.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The kind of problem.
    pub code: ProblemCode,
    /// What went wrong, for the client.
    pub detail: String,
    /// The field at fault.
    pub field: Option<String>,
    /// The job the problem is about.
    pub job_id: Option<String>,
    /// For a rate limit: seconds until a retry would pass.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// A problem of kind `code`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), field: None, job_id: None, retry_after_secs: None }
    }

    /// The same problem, blaming `field`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A malformed request field; the detail reads `field: reason`.
    pub fn invalid_request(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError::new(ProblemCode::InvalidRequest, format!("{field}: {reason}")).field(field)
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:wharf:problem:{}", self.code.code()),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.code().to_owned(),
            field: self.field.clone(),
            job_id: self.job_id.clone(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        let code = if invalid.too_large { ProblemCode::PayloadTooLarge } else { ProblemCode::InvalidValue };
        let field = invalid.field.clone();
        ApiError::new(code, invalid.to_string()).field(field)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::JobNotFound(_) => ApiError::new(ProblemCode::JobNotFound, err.to_string()),
            StoreError::QueueNotFound(_) => ApiError::new(ProblemCode::QueueNotFound, err.to_string()),
            StoreError::StaleLease { .. } => {
                ApiError::new(ProblemCode::StaleLease, err.to_string()).field("lease_token")
            }
            StoreError::Illegal { .. } => ApiError::new(ProblemCode::IllegalTransition, err.to_string()),
            StoreError::IdempotencyConflict { existing, .. } => {
                let mut problem =
                    ApiError::new(ProblemCode::IdempotencyConflict, err.to_string()).field("idempotency_key");
                problem.job_id = Some(existing.to_string());
                problem
            }
            StoreError::Invalid(invalid) => invalid.into(),
            StoreError::QueueNotEmpty { .. } => ApiError::new(ProblemCode::QueueNotEmpty, err.to_string()),
            StoreError::QueueLimit { .. } => ApiError::new(ProblemCode::QueueLimit, err.to_string()),
            StoreError::QueueFull { .. } => ApiError::new(ProblemCode::QueueFull, err.to_string()),
            StoreError::WorkerNotFound(_) => ApiError::new(ProblemCode::WorkerNotFound, err.to_string()),
            // Lease requests answer a draining worker with `drain: true`; nothing else asks.
            StoreError::WorkerDraining(_) => ApiError::new(ProblemCode::IllegalTransition, err.to_string()),
            StoreError::Busy => ApiError::new(ProblemCode::Overloaded, err.to_string()),
            StoreError::Full => ApiError::new(ProblemCode::InsufficientStorage, err.to_string()),
            StoreError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "store unavailable");
                ApiError::new(ProblemCode::Unavailable, "the store is unavailable; nothing was changed; retry later")
            }
            StoreError::Inconsistent(cause) => {
                tracing::error!(cause = %cause, "store inconsistency");
                ApiError::new(ProblemCode::Internal, "the server found its records inconsistent; nothing was changed")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code.code(), detail = %self.detail, "request failed");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.code == ProblemCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Every answer that says "not now" says when to try again.
        match self.code {
            ProblemCode::Overloaded | ProblemCode::Unavailable | ProblemCode::QueueFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProblemCode::InsufficientStorage => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            ProblemCode::RateLimited => {
                let after = self.retry_after_secs.unwrap_or(1).max(1).to_string();
                if let Ok(value) = HeaderValue::from_str(&after) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_docs_list_each_one() {
        let docs = include_str!("../../docs/problems.md");
        let mut seen = std::collections::HashSet::new();
        for code in ProblemCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert!(docs.contains(&format!("`{}`", code.code())), "docs/problems.md lacks {}", code.code());
        }
    }

    #[test]
    fn every_not_now_answer_says_when_to_retry() {
        for (code, after) in [
            (ProblemCode::InsufficientStorage, "30"),
            (ProblemCode::Overloaded, "1"),
            (ProblemCode::Unavailable, "1"),
            (ProblemCode::QueueFull, "1"),
        ] {
            let response = ApiError::new(code, "not now").into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], after, "{code:?}");
        }
        let mut limited = ApiError::new(ProblemCode::RateLimited, "slow down");
        limited.retry_after_secs = Some(7);
        assert_eq!(limited.into_response().headers()[header::RETRY_AFTER], "7");
        let full: ApiError = StoreError::Full.into();
        assert_eq!(full.into_response().status(), StatusCode::INSUFFICIENT_STORAGE);
    }

    #[test]
    fn an_inconsistent_store_is_an_internal_error_that_keeps_its_cause() {
        let e: ApiError = StoreError::Inconsistent("job 0ksd3n2a4q8c0: lease changed 0 rows".into()).into();
        assert_eq!((e.code, e.code.status().as_u16(), e.code.code()), (ProblemCode::Internal, 500, "internal"));
        assert!(!e.detail.contains("0ksd3n2a4q8c0"), "the cause is logged, not sent: {}", e.detail);
    }

    #[test]
    fn invalid_values_map_to_422_and_sizes_to_413() {
        let e: ApiError = Invalid::new("priority", "too high").into();
        assert_eq!((e.code.status().as_u16(), e.field.as_deref()), (422, Some("priority")));
        let e: ApiError = Invalid::too_large("payload", "too big").into();
        assert_eq!(e.code.status().as_u16(), 413);
    }
}
