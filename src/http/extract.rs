//! Extractors that refuse bad input with a problem naming the field, never a plain-text 400.
//!
//! Bodies reach them only as `application/json`: the [gate](super::gate) refuses other types.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::{ApiError, ProblemCode};
use crate::core::validate::echo;
use crate::core::{JobId, QueueName};

/// How large a request body may be.
pub trait BodyLimit {
    /// The limit for this body given the server's configuration: by default room for one
    /// payload-sized value plus the other fields.
    fn body_limit(state: &AppState) -> usize {
        state.config.limits.max_payload_bytes * 2 + 64 * 1024
    }
}

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned + BodyLimit,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body_in_time(req, T::body_limit(state), state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(ProblemCode::MalformedJson, "the request body is empty; expected a JSON object"));
        }
        parse(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out entirely (`POST …/redrive` with no body means "all").
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T> FromRequest<AppState> for OptionalJson<T>
where
    T: DeserializeOwned + BodyLimit + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body_in_time(req, T::body_limit(state), state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// Most bytes read and thrown away after a body goes over its limit, so that a client that
/// does not wait for `100 Continue` can finish sending and read the 413 instead of a reset.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

/// Most bytes reserved for a body before it arrives.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;

/// Reads the body within the server's body read timeout: a client that trickles its body
/// (slowloris on the body) gets a 408 instead of holding the request open.
pub(crate) async fn read_body_in_time(
    req: Request,
    limit: usize,
    state: &AppState,
) -> Result<axum::body::Bytes, ApiError> {
    let timeout = state.config.body_read_timeout;
    tokio::time::timeout(timeout, read_body(req, limit)).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            ProblemCode::RequestTimeout,
            format!("the request body did not arrive within {}", humantime::format_duration(timeout)),
        ))
    })
}

async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let too_large =
        || ApiError::new(ProblemCode::BodyTooLarge, format!("the request body is over the limit of {limit} bytes"));
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let expects_continue = req.headers().contains_key(axum::http::header::EXPECT);
    if declared.is_some_and(|n| n > limit) && (expects_continue || declared.is_some_and(|n| n > DRAIN_MAX)) {
        // Refuse before the body is sent (or when it is too big to be worth draining).
        return Err(too_large());
    }
    let mut body = req.into_body();
    // Memory follows the bytes that arrive, not the length a client declares: thousands of
    // connections declaring large bodies and sending a few bytes must cost a few bytes each.
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit).min(INITIAL_BODY_CAPACITY));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            ApiError::new(ProblemCode::InvalidRequest, format!("could not read the request body: {err}"))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total <= limit {
            bytes.extend_from_slice(&data);
        } else if total > DRAIN_MAX {
            break;
        }
    }
    if total > limit { Err(too_large()) } else { Ok(axum::body::Bytes::from(bytes)) }
}

/// Parses a JSON object, reporting the path of the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would accept an array for a struct; every body of this API is an object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() =>
        {
            return Err(ApiError::new(ProblemCode::InvalidRequest, "the request body must be a JSON object"));
        }
        _ => {}
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let field = if path == "." { quoted_field(&message).unwrap_or_default() } else { path };
                let detail = if field.is_empty() { message } else { format!("{field}: {message}") };
                let err = ApiError::new(ProblemCode::InvalidRequest, detail);
                if field.is_empty() { err } else { err.field(field) }
            }
            _ => ApiError::new(ProblemCode::MalformedJson, format!("the request body is not valid JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::new(ProblemCode::MalformedJson, format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The field named in serde's "missing field `x`" and "unknown field `x`" messages.
fn quoted_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// Query parameters of type `T`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::new(ProblemCode::InvalidRequest, rejection.body_text()))
    }
}

async fn path_segment(parts: &mut Parts, state: &AppState, name: &str) -> Result<String, ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::new(ProblemCode::InvalidRequest, rejection.body_text()))?;
    params
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
        .ok_or_else(|| ApiError::new(ProblemCode::InvalidRequest, format!("missing path parameter {name}")))
}

/// The `{queue}` path segment, validated.
#[derive(Debug)]
pub struct QueuePath(pub QueueName);

impl FromRequestParts<AppState> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let raw = path_segment(parts, state, "queue").await?;
        QueueName::parse(&raw)
            .map(QueuePath)
            .map_err(|invalid| ApiError::new(ProblemCode::InvalidQueueName, invalid.reason).field("queue"))
    }
}

/// The `{id}` path segment: a job id. A malformed id names no job, so it is a 404.
#[derive(Debug)]
pub struct JobPath(pub JobId);

impl FromRequestParts<AppState> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let raw = path_segment(parts, state, "id").await?;
        raw.parse().map(JobPath).map_err(|_| {
            ApiError::new(
                ProblemCode::JobNotFound,
                format!("job {} not found: not a job id (13 characters of base32)", echo(&raw)),
            )
        })
    }
}

/// Parses a job id from a request field.
pub fn job_id(field: &str, raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_request(field, format!("{} is not a job id", echo(raw))))
}

/// Parses a lease token from a request field.
pub fn lease_token(field: &str, raw: &str) -> Result<crate::core::LeaseToken, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_request(field, format!("{} is not a lease token", echo(raw))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EnqueueRequest;

    #[test]
    fn type_errors_name_the_field() {
        let err = parse::<EnqueueRequest>(br#"{"kind":"k","priority":"high"}"#).unwrap_err();
        assert_eq!(err.code, ProblemCode::InvalidRequest);
        assert_eq!(err.field.as_deref(), Some("priority"));
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let err = parse::<EnqueueRequest>(br#"{"kind":"k","priorty":1}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("priorty"));
        let err = parse::<EnqueueRequest>(br#"{"payload":{}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("kind"));
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_malformed() {
        assert_eq!(parse::<EnqueueRequest>(b"{\"kind\":").unwrap_err().code, ProblemCode::MalformedJson);
        assert_eq!(parse::<EnqueueRequest>(b"kind=render").unwrap_err().code, ProblemCode::MalformedJson);
        assert_eq!(parse::<EnqueueRequest>(br#"{"kind":"k"} {}"#).unwrap_err().code, ProblemCode::MalformedJson);
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::super::parse;
        use crate::api::{AckRequest, BatchEnqueueRequest, EnqueueRequest, LeaseRequest, QueuePolicyRequest};
        use crate::http::error::ProblemCode;

        /// Bytes that are often almost JSON: fragments of real requests, spliced and mutated.
        fn almost_json() -> impl Strategy<Value = Vec<u8>> {
            let pieces = prop::sample::select(vec![
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"kind\"",
                "\"payload\"",
                "\"priority\"",
                "\"jobs\"",
                "\"lease_token\"",
                "\"queues\"",
                "\"max\"",
                "\"delay_ms\"",
                "\"concurrency\"",
                "null",
                "true",
                "1",
                "-1",
                "1.5",
                "1e400",
                "99999999999999999999",
                "\"x\"",
                "\"\\u0000\"",
                "\"\\ud800\"",
                " ",
                "\u{feff}",
            ]);
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..256),
                prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat().into_bytes()),
            ]
        }

        fn check<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
            if let Err(err) = parse::<T>(bytes) {
                // Every refusal is a client error with a message, never a panic or a 5xx.
                assert!(err.code.status().is_client_error(), "{err:?}");
                assert!(!err.detail.is_empty());
                assert!(matches!(err.code, ProblemCode::MalformedJson | ProblemCode::InvalidRequest));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn request_bodies_decode_or_refuse_cleanly(bytes in almost_json()) {
                check::<EnqueueRequest>(&bytes);
                check::<BatchEnqueueRequest>(&bytes);
                check::<LeaseRequest>(&bytes);
                check::<AckRequest>(&bytes);
                check::<QueuePolicyRequest>(&bytes);
            }

            #[test]
            fn identifiers_and_names_parse_or_refuse_cleanly(text in ".{0,40}") {
                let _ = text.parse::<crate::core::JobId>();
                let _ = text.parse::<crate::core::LeaseToken>();
                let _ = crate::core::QueueName::parse(&text);
                let _ = crate::core::time::parse_duration(&text);
                let _ = crate::core::Timestamp::parse_rfc3339(&text);
                let _ = text.parse::<crate::core::JobState>();
            }

            #[test]
            fn any_numbers_validate_or_refuse_cleanly(
                priority: Option<i64>, delay: Option<i64>, attempts: Option<i64>, timeout: Option<i64>, now: i64,
            ) {
                let spec = crate::core::validate::JobSpec {
                    kind: "k".into(),
                    priority,
                    delay_ms: delay,
                    max_attempts: attempts,
                    timeout_ms: timeout,
                    ..Default::default()
                };
                let queue = crate::core::QueueName::parse("q").unwrap();
                let _ = spec.validate(&queue, &crate::core::Limits::default(), crate::core::Timestamp::from_millis(now));
            }
        }
    }

    #[test]
    fn raw_payloads_survive_path_tracking() {
        let req = parse::<EnqueueRequest>(br#"{"kind":"k","payload":{"a":[1,2,{"b":null}]}}"#).unwrap();
        assert_eq!(req.payload.unwrap().get(), r#"{"a":[1,2,{"b":null}]}"#);
    }
}
