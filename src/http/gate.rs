//! The front door: what a request must be before any handler sees it.
//!
//! - **A body is JSON, uncompressed.** A request with a body must say `Content-Type:
//!   application/json` (or `application/…+json`); anything else is 415 `unsupported_media_type`.
//!   This is also what stops a web page on another site from driving the API: a browser sends
//!   a cross-site POST without asking only for the form and text types, which are refused here.
//!   A `Content-Encoding` other than `identity` is refused the same way, rather than parsed as
//!   if it were plain. Webhook ingress (`/v1/hooks/…`) takes the provider's own types.
//! - **Cross-site writes are refused.** A browser names the page's origin in `Origin`; a
//!   request that could change something (any method but GET, HEAD and OPTIONS) from an origin
//!   that is neither this server nor one of the configured CORS origins is 403
//!   `origin_not_allowed`. Clients that are not browsers send no `Origin`.
//! - **CORS** is off unless origins are configured (`--cors-origin`): then their preflights
//!   are answered and their responses carry `Access-Control-Allow-Origin`. Nobody else's are.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ProblemCode};
use crate::core::validate::echo;

/// Path prefix of webhook ingress, whose bodies are whatever the provider sends.
pub const HOOKS_PREFIX: &str = "/v1/hooks/";

/// Screens every request; see the module documentation.
pub async fn screen(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let allowed_origin = origin.as_deref().filter(|o| state.config.cors_origins.iter().any(|c| c == o));
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return match allowed_origin {
            Some(origin) => preflight(origin),
            None => ApiError::new(
                ProblemCode::OriginNotAllowed,
                format!("cross-origin requests from {} are not allowed", echo(origin.as_deref().unwrap_or(""))),
            )
            .into_response(),
        };
    }
    if let Err(refusal) = check(&req, origin.as_deref(), allowed_origin.is_some()) {
        return refusal.into_response();
    }
    let mut response = next.run(req).await;
    if let Some(origin) = allowed_origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn check(req: &Request, origin: Option<&str>, origin_allowed: bool) -> Result<(), ApiError> {
    let headers = req.headers();
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (false, Some(origin), false) = (safe, origin, origin_allowed)
        && !same_origin(origin, headers)
    {
        return Err(ApiError::new(
            ProblemCode::OriginNotAllowed,
            format!("cross-site request refused: origin {} is not allowed (see --cors-origin)", echo(origin)),
        ));
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        let encoding = String::from_utf8_lossy(encoding.as_bytes());
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            format!("Content-Encoding {} is not supported; send the body uncompressed", echo(&encoding)),
        ));
    }
    if has_body(headers) && !req.uri().path().starts_with(HOOKS_PREFIX) && !is_json(headers) {
        let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            match given {
                Some(given) => format!("Content-Type {} is not JSON; send application/json", echo(&given)),
                None => "a request body needs Content-Type: application/json".to_owned(),
            },
        ));
    }
    Ok(())
}

/// True when the request carries a body (a declared non-zero length, or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
}

/// `application/json` or `application/<anything>+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// True when `origin` (`scheme://host[:port]`) is the host the request was sent to: the
/// server's own pages.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

fn preflight(origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if let Ok(origin) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn json_types_are_recognised() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])));
        assert!(is_json(&headers(&[("content-type", "application/merge-patch+json")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[("content-type", "application/x-www-form-urlencoded")])));
        assert!(!is_json(&headers(&[])));
    }

    #[test]
    fn bodies_are_seen_by_length_or_chunking() {
        assert!(has_body(&headers(&[("content-length", "2")])));
        assert!(has_body(&headers(&[("transfer-encoding", "chunked")])));
        assert!(!has_body(&headers(&[("content-length", "0")])));
        assert!(!has_body(&headers(&[])));
    }

    #[test]
    fn the_servers_own_origin_is_same_origin() {
        let h = headers(&[("host", "127.0.0.1:7070")]);
        assert!(same_origin("http://127.0.0.1:7070", &h));
        assert!(!same_origin("https://evil.example", &h));
        assert!(!same_origin("null", &h));
    }
}
