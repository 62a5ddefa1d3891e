//! API tokens: create (shown once), list, revoke (admin only, without queue patterns); and
//! who the presented token is (any token).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::{Problem, TokenCreateRequest, TokenCreated, TokenListResponse, TokenView, WhoAmIResponse};
use crate::core::auth::{Action, QueuePatterns, Role, mint_token, token_hash};
use crate::core::validate;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ProblemCode};
use crate::http::extract::ApiJson;
use crate::store::TokenRecord;

fn view(token: &TokenRecord) -> TokenView {
    TokenView {
        id: token.id.clone(),
        name: token.name.clone(),
        role: token.role.as_str().to_owned(),
        queues: (!token.queues.is_all()).then(|| token.queues.as_slice().to_vec()),
        rate: token.rate,
        created_at: token.created_at.to_rfc3339(),
    }
}

fn auth_on(state: &AppState) -> Result<(), ApiError> {
    if state.auth.enabled() {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemCode::AuthOff,
            "authentication is off: start the server with an admin token (WHARF_ADMIN_TOKEN or --admin-token-file) to use tokens",
        ))
    }
}

/// Create a token. The answer is the only time the token is shown: only its hash is kept.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = TokenCreateRequest,
    responses(
        (status = 201, body = TokenCreated),
        (status = 400, body = Problem),
        (status = 409, description = "Authentication is off", body = Problem),
        (status = 422, body = Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenCreateRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    auth_on(&state)?;
    let role: Role = req.role.parse()?;
    let queues = QueuePatterns::parse(req.queues.as_deref().unwrap_or_default())?;
    let name = req.name.map(|n| validate::name("name", n)).transpose()?;
    if let Some(rate) = req.rate
        && !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0)
    {
        return Err(validate::Invalid::new("rate", "must be above 0 and at most 1000000 requests per second").into());
    }
    let mut random = [0u8; 40];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut random)
        .map_err(|_| ApiError::new(ProblemCode::Unavailable, "the system's random source failed; try again"))?;
    let (token, id) = mint_token(&random);
    let record =
        TokenRecord { id, name, role, queues, rate: req.rate, hash: token_hash(&token), created_at: state.clock.now() };
    state.store.token_insert(record.clone()).await?;
    tracing::info!(token_id = %record.id, role = %record.role, "token created");
    let created = TokenCreated { token, view: view(&record) };
    state.auth.add(record);
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every token: ids, names, roles and queues, never the tokens themselves.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = TokenListResponse)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<TokenListResponse>, ApiError> {
    let tokens = state.store.token_list().await?;
    Ok(Json(TokenListResponse { tokens: tokens.iter().map(view).collect() }))
}

/// Revoke a token: refused from the next request on.
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = Problem))
)]
pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if !state.store.token_delete(id.clone()).await? {
        return Err(ApiError::new(ProblemCode::TokenNotFound, format!("no token has id {}", validate::echo(&id))));
    }
    state.auth.remove(&id);
    tracing::info!(token_id = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Who the presented token is and what it may do.
#[utoipa::path(get, path = "/v1/whoami", tag = "tokens", responses((status = 200, body = WhoAmIResponse)))]
pub async fn whoami(caller: Caller) -> Json<WhoAmIResponse> {
    let unrestricted = caller.queues.is_all();
    let may = Action::ALL
        .into_iter()
        // Tokens are managed only by an admin whose token sees every queue.
        .filter(|&a| caller.role.allows(a) && (a != Action::Tokens || unrestricted))
        .map(|a| a.as_str().to_owned())
        .collect();
    Json(WhoAmIResponse {
        id: caller.id.to_string(),
        role: caller.role.as_str().to_owned(),
        queues: (!unrestricted).then(|| caller.queues.as_slice().to_vec()),
        may,
    })
}
