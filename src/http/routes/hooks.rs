//! Webhook ingress: `POST /v1/hooks/{name}` turns a provider's signed delivery into a job.
//!
//! No bearer token: the provider's signature is the credential ([`crate::hooks`] checks it).
//! A bad or missing signature is 401 and enqueues nothing. A good one enqueues one job whose
//! payload holds the parsed body and the provider's headers, and is answered at once; a
//! provider's retry of the same delivery (same delivery id) enqueues nothing new and gets the
//! first job's id.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{HookAccepted, Problem};
use crate::core::validate::{JobSpec, echo};
use crate::hooks::{Delivery, Verifier, delivery_id, payload, verify};
use crate::http::AppState;
use crate::http::error::{ApiError, ProblemCode};
use crate::store::StoreError;

/// Receive a delivery for hook `name`.
#[utoipa::path(
    post, path = "/v1/hooks/{name}", tag = "hooks",
    params(("name" = String, Path, description = "The hook's name, as configured")),
    request_body(content = String, description = "The provider's delivery, as it sends it (form fields or JSON)", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 201, description = "Verified and enqueued", body = HookAccepted),
        (status = 200, description = "A repeat of a delivery already enqueued", body = HookAccepted),
        (status = 401, description = "Missing or bad signature; nothing enqueued", body = Problem),
        (status = 404, description = "No hook has this name", body = Problem),
        (status = 413, body = Problem),
    )
)]
pub async fn receive(State(state): State<AppState>, Path(name): Path<String>, req: Request) -> Response {
    match accept(state, name, req).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn accept(state: AppState, name: String, req: Request) -> Result<Response, ApiError> {
    let Some(hook) = state.config.hooks.iter().find(|h| h.name == name) else {
        return Err(ApiError::new(ProblemCode::HookNotFound, format!("no hook is named {}", echo(&name))));
    };
    let query = req.uri().query().map(str::to_owned);
    let path = req.uri().path().to_owned();
    let headers: Vec<(String, String)> =
        req.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect();
    // The URL the provider signed: the configured public one (a proxy in front changes what
    // this server sees), else the one this request was sent to.
    let url = match &hook.public_url {
        Some(public) => match &query {
            Some(q) if !public.contains('?') => format!("{public}?{q}"),
            _ => public.clone(),
        },
        None => {
            let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
            let scheme = if state.config.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{host}{path}{}", query.as_deref().map(|q| format!("?{q}")).unwrap_or_default())
        }
    };
    let limit = state.config.limits.max_payload_bytes;
    let body: Bytes = crate::http::extract::read_body_in_time(req, limit, &state).await?;
    let now_unix_secs = state.clock.now().as_millis() / 1000;
    let delivery = Delivery { url: &url, headers: &headers, body: &body, now_unix_secs };
    if let Err(refusal) = verify(&hook.verifier, &delivery) {
        tracing::warn!(hook = %hook.name, reason = %refusal, "webhook delivery refused");
        return Err(ApiError::new(ProblemCode::InvalidSignature, format!("hook {}: {refusal}", hook.name)));
    }
    let key = delivery_id(&hook.verifier, &delivery).map(|id| idempotency_key(&hook.name, &id));
    let spec = JobSpec {
        kind: hook.kind.clone(),
        payload: Some(payload(&hook.verifier, &delivery).to_string()),
        idempotency_key: key.clone(),
        ..JobSpec::default()
    };
    let job = spec.validate(&hook.queue, &state.config.limits, state.clock.now())?;
    let (id, created) = match state.store.job_insert(job).await {
        Ok(inserted) => (inserted.job.id, inserted.created),
        // A retry whose headers changed (a new timestamp, say): still the same delivery.
        Err(StoreError::IdempotencyConflict { existing, .. }) => (existing, false),
        Err(err) => return Err(err.into()),
    };
    tracing::info!(hook = %hook.name, job_id = %id, queue = %hook.queue, repeat = !created, "webhook delivery accepted");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    // The job's id in a header too, for senders whose answer body is not JSON.
    let mut headers = HeaderMap::new();
    if let Ok(value) = header::HeaderValue::from_str(&id.to_string()) {
        headers.insert("x-wharf-job-id", value);
    }
    if matches!(hook.verifier, Verifier::Twilio { .. }) {
        // Twilio reads the answer as TwiML: an empty response does nothing.
        let twiml = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/xml"));
        return Ok((status, headers, twiml).into_response());
    }
    Ok((status, headers, axum::Json(HookAccepted { id: id.to_string(), repeat: !created })).into_response())
}

/// The idempotency key of a delivery: readable when it fits, hashed when it would not.
fn idempotency_key(hook: &str, delivery: &str) -> String {
    let key = format!("hook:{hook}:{delivery}");
    if key.chars().count() <= crate::core::validate::MAX_NAME_LEN && !key.chars().any(char::is_control) {
        return key;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{hook}\n{delivery}").as_bytes());
    format!("hook:{hook}:sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
