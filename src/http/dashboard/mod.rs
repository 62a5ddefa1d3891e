//! The dashboard at `/`: one page and its script and style, embedded in the binary. The page
//! calls only the public API (with the token the user signs in with, kept in the browser's
//! session storage), so it can show and do nothing a token could not through the API.
//!
//! Every answer carries a Content-Security-Policy that allows this origin alone: no inline
//! script or style, no other host, no framing.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ProblemCode};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The policy of every dashboard answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Assets change with the binary: revalidate rather than run a stale script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// Its script and style.
pub async fn assets(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        "app.css" => Ok(asset(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::new(ProblemCode::NotFound, "no such asset")),
    }
}

/// Bytes of every asset together, uncompressed.
pub fn total_bytes() -> usize {
    INDEX.len() + SCRIPT.len() + STYLE.len()
}
