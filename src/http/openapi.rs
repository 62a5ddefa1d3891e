//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations on the handlers and
//! the `ToSchema` derives on the wire types, so it cannot drift from the code.

use utoipa::OpenApi;

use super::routes::{alarms, hooks, jobs, ops, pools, queues, tokens, work};
use super::sse;

#[derive(OpenApi)]
#[openapi(
    info(title = "wharf", description = "Background jobs over HTTP: enqueue, lease, progress, results."),
    paths(
        jobs::enqueue, jobs::enqueue_batch, jobs::get, jobs::list, jobs::cancel,
        sse::job_events, sse::all_events,
        queues::list, queues::get, queues::put, queues::delete, queues::pause, queues::resume, queues::redrive, queues::stats,
        work::lease, work::workers, work::drain, work::leave, work::heartbeat, work::complete, work::fail, work::release,
        work::ack,
        pools::list, pools::get, pools::metrics,
        alarms::list, alarms::get, alarms::put, alarms::delete,
        ops::health, ops::ready, ops::metrics, ops::openapi,
        tokens::create, tokens::list, tokens::revoke, tokens::whoami,
        hooks::receive,
    ),
    tags(
        (name = "jobs", description = "Enqueue and follow jobs"),
        (name = "queues", description = "Queue policy, counts and dead letters"),
        (name = "workers", description = "The protocol workers speak"),
        (name = "pools", description = "Autoscaled worker pools"),
        (name = "alarms", description = "Alarm rules on queue figures, and their webhooks"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "hooks", description = "Webhook ingress, signed by the provider"),
    )
)]
struct ApiDoc;

/// The pattern of a job id or lease token: 13 characters of Crockford base32, at most 63 bits.
const ID_PATTERN: &str = "^[0-7][0-9a-hjkmnp-tv-zA-HJKMNP-TV-Z]{12}$";
/// The pattern of a queue name.
const QUEUE_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";
/// The pattern of a kind, key or worker id: no control characters.
const NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// The whole document, as served: the annotations, plus what holds for every operation —
/// problems are `application/problem+json`, any status not listed answers a problem
/// (`default`), and `{queue}` and `{id}` follow their patterns.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    refine_schemas(&mut doc);
    let problem_ref = serde_json::json!({"$ref": "#/components/schemas/Problem"});
    let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) else { return doc };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else { continue };
            // Unique and stable: handlers in different modules share names (`get`).
            operation.insert("operationId".into(), operation_id(method, path).into());
            if let Some(responses) = operation.get_mut("responses").and_then(serde_json::Value::as_object_mut) {
                for response in responses.values_mut() {
                    let Some(content) = response.get_mut("content").and_then(serde_json::Value::as_object_mut) else {
                        continue;
                    };
                    if content.get("application/json").and_then(|c| c.get("schema")) == Some(&problem_ref)
                        && let Some(media) = content.remove("application/json")
                    {
                        content.insert("application/problem+json".into(), media);
                    }
                }
                responses.insert(
                    "default".into(),
                    serde_json::json!({
                        "description": "A problem (RFC 9457): see docs/problems.md",
                        "content": {"application/problem+json": {"schema": problem_ref}},
                    }),
                );
            }
            for parameter in
                operation.get_mut("parameters").and_then(serde_json::Value::as_array_mut).into_iter().flatten()
            {
                let pattern = match parameter.get("name").and_then(serde_json::Value::as_str) {
                    // Alarm and hook names are spelled like queue names.
                    Some("queue" | "name") => QUEUE_PATTERN,
                    Some("id") => ID_PATTERN,
                    _ => continue,
                };
                parameter["schema"] = serde_json::json!({"type": "string", "pattern": pattern});
            }
            if path.ends_with("/redrive")
                && let Some(body) = operation.get_mut("requestBody")
            {
                // No body means every dead job of the queue.
                body["required"] = serde_json::Value::Bool(false);
            }
        }
    }
    add_links(&mut doc);
    add_security(&mut doc);
    doc
}

/// Bearer tokens: every operation needs one when the server has an admin token, but health,
/// readiness and webhook ingress (signed by the provider instead).
fn add_security(doc: &mut serde_json::Value) {
    doc["components"]["securitySchemes"] = serde_json::json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "A token from POST /v1/tokens, or the admin token"}
    });
    doc["security"] = serde_json::json!([{"bearer": []}]);
    for path in super::auth::PUBLIC_ROUTES {
        if let Some(item) = doc["paths"].get_mut(path).and_then(serde_json::Value::as_object_mut) {
            for operation in item.values_mut() {
                operation["security"] = serde_json::json!([]);
            }
        }
    }
}

/// `get /v1/jobs/{id}` → `get_v1_jobs_id`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path.split(['/', '{', '}', '.']).filter(|w| !w.is_empty()).collect();
    format!("{method}_{}", words.join("_"))
}

/// What the annotations cannot say: values inside maps and lists, and fields that exclude
/// each other.
fn refine_schemas(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    let enqueue = &mut schemas["EnqueueRequest"];
    enqueue["not"] = serde_json::json!({"required": ["delay_ms", "run_at"]});
    enqueue["properties"]["metadata"]["maxProperties"] = 64.into();
    enqueue["properties"]["metadata"]["propertyNames"] =
        serde_json::json!({"minLength": 1, "maxLength": 256, "pattern": NAME_PATTERN});
    enqueue["properties"]["metadata"]["additionalProperties"] =
        serde_json::json!({"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"});
    for field in ["kind", "idempotency_key"] {
        enqueue["properties"][field]["pattern"] = NAME_PATTERN.into();
    }
    for field in ["worker_id", "host"] {
        schemas["LeaseRequest"]["properties"][field]["pattern"] = NAME_PATTERN.into();
    }
    schemas["LeaseRequest"]["properties"]["queues"]["items"] =
        serde_json::json!({"type": "string", "pattern": QUEUE_PATTERN});
    schemas["RedriveRequest"]["properties"]["ids"]["items"] =
        serde_json::json!({"type": "string", "pattern": ID_PATTERN});
    let token = &mut schemas["TokenCreateRequest"]["properties"];
    token["role"] = serde_json::json!({"type": "string", "enum": ["reader", "producer", "worker", "admin"]});
    token["queues"]["items"] = serde_json::json!({"type": "string", "pattern": "^[A-Za-z0-9._*-]{1,128}$"});
    token["queues"]["maxItems"] = 32.into();
    token["name"]["minLength"] = 1.into();
    token["name"]["maxLength"] = 256.into();
    token["name"]["pattern"] = NAME_PATTERN.into();
    // The forms an alarm rule's fields take (the server accepts more duration spellings).
    let alarm = &mut schemas["AlarmRuleBody"]["properties"];
    alarm["queue"]["pattern"] = "^(\\*|[A-Za-z0-9._-]{1,128})$".into();
    alarm["when"]["pattern"] = "^ ?(ready|scheduled|running|dead|oldest_ready_age_s|failure_rate|workers) ?(>=|<=|==|!=|>|<) ?-?[0-9]{1,12}(\\.[0-9]{1,12})? ?$".into();
    alarm["for"]["pattern"] = "^([0-9]{1,4}(ms|s|m)|[0-9]{1,2}h)$".into();
    alarm["window"]["pattern"] = "^([1-9][0-9]{0,2}(ms|s)|[1-9]m|[1-5][0-9]m|60m|1h)$".into();
    alarm["notify"]["maxItems"] = 10.into();
    alarm["notify"]["items"] = serde_json::json!({"type": "string", "pattern": "^https?://[!-~]{1,2000}$"});
    for request in ["AckComplete", "AckFail"] {
        schemas[request]["properties"]["id"]["pattern"] = ID_PATTERN.into();
    }
}

/// Links from an enqueue to the job it created, so clients (and schema-driven testers) can
/// follow real ids.
fn add_links(doc: &mut serde_json::Value) {
    let job = |method: &str, path: &str| serde_json::json!({"operationId": operation_id(method, path), "parameters": {"id": "$response.body#/id"}});
    let links = serde_json::json!({
        "GetJob": job("get", "/v1/jobs/{id}"),
        "CancelJob": job("post", "/v1/jobs/{id}/cancel"),
        "FollowJob": job("get", "/v1/jobs/{id}/events"),
    });
    for status in ["200", "201"] {
        let response = &mut doc["paths"]["/v1/queues/{queue}/jobs"]["post"]["responses"][status];
        if response.is_object() {
            response["links"] = links.clone();
        }
    }
}
