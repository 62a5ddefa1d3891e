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
    /// The path exists, but not with this method.
    MethodNotAllowed => (405, "method_not_allowed", "Method not allowed"),
    /// The lease token is not the job's current one.
    StaleLease => (409, "stale_lease", "Stale lease token"),
    /// The job's state does not allow the operation.
    IllegalTransition => (409, "illegal_transition", "Illegal state transition"),
    /// Too many requests are waiting for the store; retry shortly.
    Overloaded => (503, "overloaded", "Server overloaded"),
    /// The store cannot serve requests now.
    Unavailable => (503, "unavailable", "Service unavailable"),
    /// The disk is full; nothing was written.
    InsufficientStorage => (507, "insufficient_storage", "Insufficient storage"),
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
}

impl ApiError {
    /// A problem of kind `code`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), field: None }
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
            StoreError::Invalid(invalid) => invalid.into(),
            StoreError::Busy => ApiError::new(ProblemCode::Overloaded, err.to_string()),
            StoreError::Full => ApiError::new(ProblemCode::InsufficientStorage, err.to_string()),
            StoreError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "store unavailable");
                ApiError::new(ProblemCode::Unavailable, "the store is unavailable; nothing was changed; retry later")
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
    fn invalid_values_map_to_422_and_sizes_to_413() {
        let e: ApiError = Invalid::new("priority", "too high").into();
        assert_eq!((e.code.status().as_u16(), e.field.as_deref()), (422, Some("priority")));
        let e: ApiError = Invalid::too_large("payload", "too big").into();
        assert_eq!(e.code.status().as_u16(), 413);
    }
}
