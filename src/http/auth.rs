//! Authentication and authorization of every call, and per-token rate limits.
//!
//! With no admin token configured, authentication is off: every caller may do everything
//! (the server then listens only on loopback unless told `--insecure-no-auth`). With one,
//! every route but `/health`, `/ready` and webhook ingress needs `Authorization: Bearer
//! TOKEN`: a missing or unknown token is 401, a token whose role or queue patterns do not
//! allow the call is 403 (see [`crate::core::auth`] for the roles).
//!
//! [`requirement`] is the one table of which [`Action`] each route is, and how its queue is
//! found: from the path (checked here), or by the handler once it knows it (a job's queue,
//! the queues of a lease request, the lines of a listing), through the [`Caller`] this layer
//! hands it. A route missing from the table is refused, so a new endpoint cannot slip through
//! unguarded; a test walks the OpenAPI document to keep the table whole.
//!
//! Tokens live in the store (hashed) and in memory here, so checking one costs a hash and a
//! map lookup; creating or revoking one updates both at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ProblemCode};
use crate::core::QueueName;
use crate::core::auth::{Action, QueuePatterns, Role, token_hash, token_id, token_matches};
use crate::store::TokenRecord;

/// How a route's queue is checked against the caller's patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The route acts on no queue in particular (workers list, metrics: filtered by the
    /// handler where they show queues).
    Global,
    /// The `{queue}` of the path.
    PathQueue,
    /// The handler checks the queue once it knows it: a job's, a lease request's, a listing's.
    Handler,
    /// The lease token in the body is the credential for its job: it was only handed to a
    /// caller allowed that job's queue.
    LeaseToken,
    /// Only an admin without queue patterns (tokens).
    Unrestricted,
}

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// What the call does.
    pub action: Action,
    /// How its queue is checked.
    pub scope: Scope,
    /// Its handler charges the caller's rate limit one per job (a batch), instead of this
    /// layer charging one per request.
    pub per_job: bool,
}

/// Routes that need no token: probes, webhook ingress, and the dashboard's page and assets
/// (static; everything they show comes through the API with the user's token).
pub const PUBLIC_ROUTES: [&str; 5] = ["/health", "/ready", "/v1/hooks/{name}", "/", "/assets/{file}"];

/// What the route `method path` (its template, as in the OpenAPI document) needs; `None` for
/// a route this table does not know, which is refused.
pub fn requirement(method: &Method, path: &str) -> Option<Requirement> {
    use Action::*;
    use Scope::*;
    let need = |action, scope| Some(Requirement { action, scope, per_job: false });
    let read = *method == Method::GET || *method == Method::HEAD;
    match (path, read) {
        ("/v1/queues/{queue}/jobs" | "/v1/queues/{queue}" | "/v1/queues/{queue}/stats", true) => need(Read, PathQueue),
        ("/v1/queues/{queue}/jobs", false) if *method == Method::POST => need(Enqueue, PathQueue),
        ("/v1/queues/{queue}/jobs/batch", false) if *method == Method::POST => {
            Some(Requirement { action: Enqueue, scope: PathQueue, per_job: true })
        }
        ("/v1/jobs/{id}" | "/v1/jobs/{id}/events", true) => need(Read, Handler),
        ("/v1/jobs/{id}/cancel", false) => need(Cancel, Handler),
        ("/v1/queues" | "/v1/workers" | "/v1/events" | "/metrics", true) => need(Read, Handler),
        ("/v1/openapi.json" | "/v1/whoami", true) => need(Read, Global),
        ("/v1/queues/{queue}", false) if matches!(*method, Method::PUT | Method::DELETE) => need(Manage, PathQueue),
        ("/v1/queues/{queue}/pause" | "/v1/queues/{queue}/resume" | "/v1/queues/{queue}/redrive", false) => {
            need(Manage, PathQueue)
        }
        ("/v1/lease", false) => need(Work, Handler),
        (
            "/v1/jobs/{id}/heartbeat"
            | "/v1/jobs/{id}/complete"
            | "/v1/jobs/{id}/fail"
            | "/v1/jobs/{id}/release"
            | "/v1/ack",
            false,
        ) => need(Work, LeaseToken),
        // A worker drains itself on SIGTERM and leaves when it stops; the handler checks that
        // the caller may work the worker's queues.
        ("/v1/workers/{id}/drain", false) => need(Work, Handler),
        ("/v1/workers/{id}", false) if *method == Method::DELETE => need(Work, Handler),
        ("/v1/pools" | "/v1/pools/{pool}" | "/v1/pools/{pool}/metrics", true) => need(Read, Handler),
        ("/v1/alarms" | "/v1/alarms/{name}", true) => need(Read, Handler),
        // The handler checks the rule's queue (every queue, for `*`).
        ("/v1/alarms/{name}", false) if matches!(*method, Method::PUT | Method::DELETE) => need(Manage, Handler),
        ("/v1/tokens", _) | ("/v1/tokens/{id}", false) => need(Tokens, Unrestricted),
        _ => None,
    }
}

/// Who is calling, once authenticated: handed to handlers that check queues themselves.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `admin`, a token's id, or `anonymous` when authentication is off.
    pub id: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// Which queues.
    pub queues: QueuePatterns,
}

impl Caller {
    /// The caller when authentication is off: allowed everything.
    fn anonymous() -> Self {
        Caller { id: Arc::from("anonymous"), role: Role::Admin, queues: QueuePatterns::all() }
    }

    /// True when the caller may act on `queue`.
    pub fn sees(&self, queue: &str) -> bool {
        self.queues.matches(queue)
    }

    /// Refuses with 403 unless the caller may act on `queue`.
    pub fn check_queue(&self, queue: &QueueName) -> Result<(), ApiError> {
        if self.sees(queue.as_str()) {
            Ok(())
        } else {
            Err(ApiError::new(
                ProblemCode::Forbidden,
                format!("this token may not act on queue {queue} (its queues: {})", self.queues.as_slice().join(", ")),
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Put there by `guard`, which every route passes; failing closed if it ever is not.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a route was reached without authentication");
            ApiError::new(ProblemCode::Forbidden, "this route has no access rule")
        })
    }
}

/// The server's tokens and rate limits.
#[derive(Debug)]
pub struct Auth {
    /// SHA-256 of the admin token; `None` turns authentication off.
    admin: Option<[u8; 32]>,
    /// Minted tokens by id.
    tokens: RwLock<HashMap<String, TokenRecord>>,
    /// Requests per second for tokens that set none; `None` for no limit.
    default_rate: Option<f64>,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl Auth {
    /// Authentication off: everyone may do everything (loopback only, or `--insecure-no-auth`).
    pub fn off() -> Self {
        Auth::new(None, Vec::new(), None)
    }

    /// Authentication with `admin_token`, the stored `tokens` and a default rate limit.
    pub fn new(admin_token: Option<&str>, tokens: Vec<TokenRecord>, default_rate: Option<f64>) -> Self {
        Auth {
            admin: admin_token.map(token_hash),
            tokens: RwLock::new(tokens.into_iter().map(|t| (t.id.clone(), t)).collect()),
            default_rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// True when calls need a token.
    pub fn enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// Starts honouring a newly stored token.
    pub fn add(&self, token: TokenRecord) {
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(token.id.clone(), token);
    }

    /// Stops honouring a token at once.
    pub fn remove(&self, id: &str) {
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Who sends this `Authorization` header (its raw bytes), and the rate they may send at.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<(Caller, Option<f64>), ApiError> {
        let Some(admin) = &self.admin else { return Ok((Caller::anonymous(), self.default_rate)) };
        let unauthorized = |detail: &str| ApiError::new(ProblemCode::Unauthorized, detail);
        let header = header.ok_or_else(|| unauthorized("this server needs a token: Authorization: Bearer TOKEN"))?;
        let presented = std::str::from_utf8(header)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 512)
            .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer TOKEN\""))?;
        if let Some(id) = token_id(presented) {
            let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
            if let Some(token) = tokens.get(id)
                && token_matches(presented, &token.hash)
            {
                let caller = Caller { id: Arc::from(id), role: token.role, queues: token.queues.clone() };
                return Ok((caller, token.rate.or(self.default_rate)));
            }
        } else if token_matches(presented, admin) {
            return Ok((Caller { id: Arc::from("admin"), role: Role::Admin, queues: QueuePatterns::all() }, None));
        }
        Err(unauthorized("unknown or revoked token"))
    }

    /// Takes `cost` from the caller's bucket; on refusal, the seconds until it would pass.
    pub fn charge(&self, caller: &Caller, rate: Option<f64>, cost: f64) -> Result<(), u64> {
        let Some(rate) = rate else { return Ok(()) };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(Arc::clone(&caller.id)).or_insert(Bucket { tokens: rate.max(1.0), at: now });
        // A bucket holds one second of requests (at least one), refilled continuously.
        let burst = rate.max(1.0);
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= cost.min(burst) {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(((cost.min(burst) - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The rate a caller was given, for handlers that charge per job (a batch).
#[derive(Clone, Copy, Debug)]
pub struct CallerRate(pub Option<f64>);

/// Authenticates and authorizes every routed request; see the module documentation.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(path) = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()) else {
        return next.run(req).await;
    };
    if PUBLIC_ROUTES.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let Some(need) = requirement(req.method(), &path) else {
        tracing::error!(method = %req.method(), path, "no access rule for this route; refused");
        return ApiError::new(ProblemCode::Forbidden, "this route has no access rule").into_response();
    };
    let (caller, rate) =
        match state.auth.authenticate(req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
            Ok(found) => found,
            Err(refusal) => return refusal.into_response(),
        };
    if !caller.role.allows(need.action) {
        return ApiError::new(
            ProblemCode::Forbidden,
            format!("a {} token may not do this ({})", caller.role, action_name(need.action)),
        )
        .into_response();
    }
    let queue_ok = match need.scope {
        Scope::PathQueue => {
            let (mut parts, body) = req.into_parts();
            let queue = RawPathParams::from_request_parts(&mut parts, &state)
                .await
                .ok()
                .and_then(|params| params.iter().find(|(k, _)| *k == "queue").map(|(_, v)| v.to_owned()));
            req = Request::from_parts(parts, body);
            // A malformed name is the handler's to refuse (400); it names no queue to guard.
            queue.is_none_or(|q| QueueName::parse(&q).is_err() || caller.sees(&q))
        }
        Scope::Unrestricted => caller.queues.is_all(),
        Scope::Global | Scope::Handler | Scope::LeaseToken => true,
    };
    if !queue_ok {
        return ApiError::new(ProblemCode::Forbidden, "this token may not act on this queue").into_response();
    }
    if !need.per_job
        && let Err(after) = state.auth.charge(&caller, rate, 1.0)
    {
        let mut limited = ApiError::new(
            ProblemCode::RateLimited,
            format!("this token is over its rate limit of {}/s; retry in {after}s", rate.unwrap_or_default()),
        );
        limited.retry_after_secs = Some(after);
        return limited.into_response();
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(CallerRate(rate));
    let mut response = next.run(req).await;
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Enqueue => "enqueue",
        Action::Cancel => "cancel jobs",
        Action::Work => "run jobs",
        Action::Manage => "manage queues",
        Action::Tokens => "manage tokens",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, queues: &[&str], rate: Option<f64>) -> (String, TokenRecord) {
        let (secret, id) = crate::core::auth::mint_token(&[3; 40]);
        let record = TokenRecord {
            id,
            name: None,
            role,
            queues: QueuePatterns::parse(queues).unwrap(),
            rate,
            hash: token_hash(&secret),
            created_at: crate::core::Timestamp::EPOCH,
        };
        (secret, record)
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn tokens_authenticate_by_hash_and_revocation_is_immediate() {
        let (secret, record) = token(Role::Producer, &["pdf*"], None);
        let auth = Auth::new(Some("the-admin-token-0123456789"), vec![record.clone()], None);
        let (caller, _) = auth.authenticate(Some(bearer(&secret).as_bytes())).unwrap();
        assert_eq!((caller.role, caller.sees("pdf-1"), caller.sees("labs")), (Role::Producer, true, false));
        let (admin, _) = auth.authenticate(Some(bearer("the-admin-token-0123456789").as_bytes())).unwrap();
        assert_eq!(admin.role, Role::Admin);
        for bad in [None, Some(bearer("nope")), Some(HeaderValue::from_static("Basic abc"))] {
            let err = auth.authenticate(bad.as_ref().map(HeaderValue::as_bytes)).unwrap_err();
            assert_eq!(err.code, ProblemCode::Unauthorized);
        }
        auth.remove(&record.id);
        assert!(auth.authenticate(Some(bearer(&secret).as_bytes())).is_err());
    }

    #[test]
    fn rate_limits_refuse_with_the_wait() {
        let auth = Auth::off();
        let caller = Caller::anonymous();
        for _ in 0..5 {
            auth.charge(&caller, Some(5.0), 1.0).unwrap();
        }
        assert_eq!(auth.charge(&caller, Some(5.0), 1.0), Err(1));
        assert_eq!(auth.charge(&caller, None, 1.0), Ok(()));
    }
}
