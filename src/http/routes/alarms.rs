//! Alarms: their rules and states; rules set and deleted through the API (admin).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::alarms::{rule_from_body, rule_queue};
use crate::api::{AlarmListResponse, AlarmRuleBody, AlarmView, Problem};
use crate::core::validate::echo;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ProblemCode};
use crate::http::extract::ApiJson;

/// The alarms the caller may see: those on a queue its token allows, and `*` rules with the
/// states of those queues only.
async fn visible(state: &AppState, caller: &Caller) -> Result<Vec<AlarmView>, ApiError> {
    let mut alarms = crate::alarms::views(&*state.store, &state.config.alarms).await?;
    alarms.retain_mut(|a| crate::alarms::visible_queues(a, |q| caller.sees(q)));
    Ok(alarms)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(ProblemCode::AlarmNotFound, format!("no alarm is named {}", echo(name)))
}

fn declared(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.config.alarms.iter().any(|r| r.name == name) {
        return Err(ApiError::new(
            ProblemCode::AlarmDeclared,
            format!("alarm {} is declared in the config file; change it there", echo(name)),
        ));
    }
    Ok(())
}

/// Refuses a caller that may not act on every queue the rule watches (all of them, for `*`).
fn may_change(caller: &Caller, rule: &crate::core::alarm::AlarmRule) -> Result<(), ApiError> {
    match rule_queue(rule) {
        Some(queue) => caller.check_queue(queue),
        None if caller.queues.is_all() => Ok(()),
        None => {
            Err(ApiError::new(ProblemCode::Forbidden, "an alarm on every queue (\"*\") needs a token for every queue"))
        }
    }
}

/// Every alarm: its rule, whether it fires (per queue), its value, since when, its history.
#[utoipa::path(get, path = "/v1/alarms", tag = "alarms", responses((status = 200, body = AlarmListResponse)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<AlarmListResponse>, ApiError> {
    Ok(Json(AlarmListResponse { alarms: visible(&state, &caller).await? }))
}

/// One alarm.
#[utoipa::path(
    get, path = "/v1/alarms/{name}", tag = "alarms",
    params(("name" = String, Path, description = "Alarm name")),
    responses((status = 200, body = AlarmView), (status = 404, body = Problem))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<AlarmView>, ApiError> {
    let found = visible(&state, &caller).await?.into_iter().find(|a| a.name == name);
    Ok(Json(found.ok_or_else(|| not_found(&name))?))
}

/// Set an alarm rule (created, or replaced keeping its state). Rules the config file declares
/// are changed there.
#[utoipa::path(
    put, path = "/v1/alarms/{name}", tag = "alarms",
    params(("name" = String, Path, description = "Alarm name")),
    request_body = AlarmRuleBody,
    responses(
        (status = 200, description = "Replaced", body = AlarmView),
        (status = 201, description = "Created", body = AlarmView),
        (status = 409, description = "Declared in the config file", body = Problem),
        (status = 422, body = Problem),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<AlarmRuleBody>,
) -> Result<(StatusCode, Json<AlarmView>), ApiError> {
    let rule = rule_from_body(&name, &body)?;
    declared(&state, &rule.name)?;
    may_change(&caller, &rule)?;
    let text = serde_json::to_string(&body).map_err(|e| ApiError::new(ProblemCode::InvalidRequest, e.to_string()))?;
    let created = state.store.alarm_rule_put(rule.name.clone(), text, state.clock.now()).await?;
    let view = crate::alarms::views(&*state.store, &state.config.alarms)
        .await?
        .into_iter()
        .find(|a| a.name == rule.name)
        .ok_or_else(|| not_found(&rule.name))?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

/// Delete an alarm set through the API, and its state.
#[utoipa::path(
    delete, path = "/v1/alarms/{name}", tag = "alarms",
    params(("name" = String, Path, description = "Alarm name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem),
        (status = 409, description = "Declared in the config file", body = Problem),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    declared(&state, &name)?;
    let alarms = crate::alarms::views(&*state.store, &state.config.alarms).await?;
    let Some(alarm) = alarms.iter().find(|a| a.name == name) else { return Err(not_found(&name)) };
    let rule = crate::core::alarm::AlarmRule::parse(&alarm.name, &alarm.queue, &alarm.when, None, None, Vec::new())?;
    may_change(&caller, &rule)?;
    if state.store.alarm_delete(name.clone()).await? { Ok(StatusCode::NO_CONTENT) } else { Err(not_found(&name)) }
}
