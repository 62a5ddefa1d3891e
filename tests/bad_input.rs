//! Bad input gets a problem+json 4xx naming the field and the cause, and changes no state.

use serde_json::{Value, json};

use crate::common::TestServer;

struct Case {
    method: &'static str,
    path: String,
    body: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    method: &'static str,
    path: impl Into<String>,
    body: impl Into<Option<String>>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case { method, path: path.into(), body: body.into(), status, code, field }
}

fn b(text: &str) -> Option<String> {
    Some(text.to_owned())
}

/// Everything observable about the server's state.
async fn snapshot(server: &TestServer, ids: &[&str]) -> Value {
    let (_, mut queues) = server.get("/v1/queues").await;
    // `recent` counts attempts per minute: it moves with the clock, not with requests.
    for queue in queues["queues"].as_array_mut().into_iter().flatten() {
        queue.as_object_mut().map(|q| q.remove("recent"));
    }
    let mut jobs = Vec::new();
    for id in ids {
        jobs.push(server.get(&format!("/v1/jobs/{id}")).await.1);
    }
    json!({"queues": queues, "jobs": jobs})
}

#[tokio::test]
async fn every_bad_request_is_a_problem_naming_the_field_and_changes_nothing() {
    let server = TestServer::start_with(&["--max-payload-bytes", "1024"]).await;
    let ready = server.enqueue("q", json!({"kind": "k"})).await;
    let running = server.enqueue("q", json!({"kind": "k"})).await;
    let leased = server.lease("q", 1, 0).await.remove(0);
    assert_eq!(leased["id"].as_str(), Some(ready.as_str()));
    let (ready, running) = (running, ready);
    let token = leased["lease_token"].as_str().unwrap().to_owned();
    let done = server.enqueue("done", json!({"kind": "k"})).await;
    let done_job = server.lease("done", 1, 0).await.remove(0);
    server.post(&format!("/v1/jobs/{done}/complete"), json!({"lease_token": done_job["lease_token"]})).await;

    let jobs = "/v1/queues/q/jobs";
    let big_payload = format!(r#"{{"kind":"k","payload":"{}"}}"#, "x".repeat(2_000));
    let huge_body = format!(r#"{{"kind":"k","payload":"{}"}}"#, "x".repeat(4 * 1024 * 1024));
    let other_token = "0000000000001";
    let cases = vec![
        case("POST", jobs, b(r#"{"kind":"#), 400, "malformed_json", None),
        case("POST", jobs, b("kind=render"), 400, "malformed_json", None),
        case("POST", jobs, b(""), 400, "malformed_json", None),
        case("POST", jobs, b(r#"{"kind":"k"} {"kind":"k"}"#), 400, "malformed_json", None),
        case("POST", jobs, b(r#"[1,2]"#), 400, "invalid_request", None),
        case("POST", jobs, b(r#"{"kind":5}"#), 400, "invalid_request", Some("kind")),
        case("POST", jobs, b(r#"{"kind":"k","priority":"high"}"#), 400, "invalid_request", Some("priority")),
        case("POST", jobs, b(r#"{"kind":"k","priorty":1}"#), 400, "invalid_request", Some("priorty")),
        case("POST", jobs, b(r#"{"payload":{}}"#), 400, "invalid_request", Some("kind")),
        case(
            "POST",
            jobs,
            b(r#"{"kind":"k","priority":99999999999999999999}"#),
            400,
            "invalid_request",
            Some("priority"),
        ),
        case("POST", jobs, b(r#"{"kind":"k","delay_ms":1.5}"#), 400, "invalid_request", Some("delay_ms")),
        case("POST", jobs, b(r#"{"kind":"k","metadata":{"a":1}}"#), 400, "invalid_request", Some("metadata.a")),
        case("POST", jobs, b(r#"{"kind":""}"#), 422, "invalid_value", Some("kind")),
        case("POST", jobs, b(r#"{"kind":"k","priority":2000000}"#), 422, "invalid_value", Some("priority")),
        case("POST", jobs, b(r#"{"kind":"k","delay_ms":-5}"#), 422, "invalid_value", Some("delay_ms")),
        case("POST", jobs, b(r#"{"kind":"k","max_attempts":0}"#), 422, "invalid_value", Some("max_attempts")),
        case("POST", jobs, b(r#"{"kind":"k","timeout_ms":-1}"#), 422, "invalid_value", Some("timeout_ms")),
        case("POST", jobs, b(r#"{"kind":"k","run_at":"tomorrow"}"#), 422, "invalid_value", Some("run_at")),
        case(
            "POST",
            jobs,
            b(r#"{"kind":"k","delay_ms":1,"run_at":"2030-01-01T00:00:00Z"}"#),
            422,
            "invalid_value",
            Some("run_at"),
        ),
        case("POST", jobs, Some(big_payload), 413, "payload_too_large", Some("payload")),
        case("POST", jobs, Some(huge_body), 413, "body_too_large", None),
        case("POST", "/v1/queues/bad%20name/jobs", b(r#"{"kind":"k"}"#), 400, "invalid_queue_name", Some("queue")),
        case(
            "POST",
            format!("/v1/queues/{}/jobs", "q".repeat(129)),
            b(r#"{"kind":"k"}"#),
            400,
            "invalid_queue_name",
            Some("queue"),
        ),
        case(
            "POST",
            "/v1/queues/q/jobs/batch",
            b(r#"{"jobs":[{"kind":"k"},{"kind":"k","priority":"x"}]}"#),
            400,
            "invalid_request",
            Some("jobs[1].priority"),
        ),
        case(
            "POST",
            "/v1/queues/q/jobs/batch",
            b(r#"{"jobs":[{"kind":"k"},{"kind":"k","max_attempts":0}]}"#),
            422,
            "invalid_value",
            Some("jobs[1].max_attempts"),
        ),
        case("GET", "/v1/jobs/0000000000000", None, 404, "job_not_found", None),
        case("GET", "/v1/jobs/not-an-id", None, 404, "job_not_found", None),
        case("GET", "/v1/queues/q/jobs?state=bogus", None, 400, "invalid_request", Some("state")),
        case("GET", "/v1/queues/q/jobs?limit=0", None, 422, "invalid_value", Some("limit")),
        case("GET", "/v1/queues/q/jobs?limit=abc", None, 400, "invalid_request", None),
        case("GET", "/v1/queues/q/jobs?cursor=zz", None, 400, "invalid_request", Some("cursor")),
        case("GET", "/v1/queues/q/jobs?color=red", None, 400, "invalid_request", None),
        case("GET", "/v1/queues/nope/jobs", None, 404, "queue_not_found", None),
        case("GET", "/v1/queues/nope", None, 404, "queue_not_found", None),
        case(
            "POST",
            format!("/v1/jobs/{running}/complete"),
            b(r#"{"lease_token":"zz"}"#),
            400,
            "invalid_request",
            Some("lease_token"),
        ),
        case(
            "POST",
            format!("/v1/jobs/{running}/complete"),
            Some(format!(r#"{{"lease_token":"{other_token}"}}"#)),
            409,
            "stale_lease",
            Some("lease_token"),
        ),
        case(
            "POST",
            format!("/v1/jobs/{running}/complete"),
            Some(format!(r#"{{"lease_token":"{token}","result":"{}"}}"#, "r".repeat(2_000))),
            413,
            "payload_too_large",
            Some("result"),
        ),
        case(
            "POST",
            format!("/v1/jobs/{running}/fail"),
            Some(format!(r#"{{"lease_token":"{token}"}}"#)),
            400,
            "invalid_request",
            Some("error"),
        ),
        case(
            "POST",
            format!("/v1/jobs/{running}/fail"),
            Some(format!(r#"{{"lease_token":"{token}","error":"e","retry_in_ms":-1}}"#)),
            422,
            "invalid_value",
            Some("retry_in_ms"),
        ),
        case(
            "POST",
            format!("/v1/jobs/{running}/heartbeat"),
            Some(format!(r#"{{"lease_token":"{token}","extend_ms":1}}"#)),
            422,
            "invalid_value",
            Some("extend_ms"),
        ),
        case(
            "POST",
            format!("/v1/jobs/{ready}/release"),
            Some(format!(r#"{{"lease_token":"{token}"}}"#)),
            409,
            "stale_lease",
            Some("lease_token"),
        ),
        case("POST", format!("/v1/jobs/{done}/cancel"), None, 409, "illegal_transition", None),
        case("POST", "/v1/jobs/0000000000000/cancel", None, 404, "job_not_found", None),
        case("POST", "/v1/lease", b(r#"{"worker_id":"w","queues":[]}"#), 422, "invalid_value", Some("queues")),
        case("POST", "/v1/lease", b(r#"{"worker_id":"w","queues":["q"],"max":0}"#), 422, "invalid_value", Some("max")),
        case(
            "POST",
            "/v1/lease",
            b(r#"{"worker_id":"w","queues":["q"],"wait_ms":999999}"#),
            422,
            "invalid_value",
            Some("wait_ms"),
        ),
        case(
            "POST",
            "/v1/lease",
            b(r#"{"worker_id":"w","queues":["bad name"]}"#),
            400,
            "invalid_request",
            Some("queues[0]"),
        ),
        case("POST", "/v1/lease", b(r#"{"queues":["q"]}"#), 400, "invalid_request", Some("worker_id")),
        case(
            "POST",
            "/v1/ack",
            Some(format!(
                r#"{{"complete":[{{"id":"{running}","lease_token":"{token}"}},{{"id":"nope","lease_token":"{token}"}}]}}"#
            )),
            400,
            "invalid_request",
            Some("complete[1].id"),
        ),
        case("PUT", "/v1/queues/q", b(r#"{"lease_ms":5}"#), 422, "invalid_value", Some("lease_ms")),
        case("PUT", "/v1/queues/q", b(r#"{"max_attempts":-1}"#), 422, "invalid_value", Some("max_attempts")),
        case("PUT", "/v1/queues/q", b(r#"{"concurrency":0}"#), 422, "invalid_value", Some("concurrency")),
        case("PUT", "/v1/queues/q", b(r#"{"paused":"yes"}"#), 400, "invalid_request", Some("paused")),
        case("PUT", "/v1/queues/q", b(r#"{"bogus":1}"#), 400, "invalid_request", Some("bogus")),
        case(
            "POST",
            "/v1/queues/q/redrive",
            Some(format!(r#"{{"ids":["{ready}"]}}"#)),
            409,
            "illegal_transition",
            None,
        ),
        case("POST", "/v1/queues/q/redrive", b(r#"{"ids":["nope"]}"#), 400, "invalid_request", Some("ids[0]")),
        case("GET", "/v2/nothing", None, 404, "not_found", None),
        case("DELETE", format!("/v1/jobs/{ready}"), None, 405, "method_not_allowed", None),
    ];

    let ids = [ready.as_str(), running.as_str(), done.as_str()];
    let before = snapshot(&server, &ids).await;
    for c in cases {
        let mut req = server.http.request(c.method.parse().unwrap(), server.url(&c.path));
        if let Some(body) = c.body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let problem: Value = resp.json().await.unwrap_or(Value::Null);
        let label = format!("{} {}", c.method, if c.path.len() > 60 { &c.path[..60] } else { &c.path });
        assert_eq!(status, c.status, "{label}: {problem}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{label}");
        assert_eq!(problem["code"], c.code, "{label}: {problem}");
        assert_eq!(problem["type"], format!("urn:wharf:problem:{}", c.code), "{label}");
        assert_eq!(problem["status"], c.status, "{label}");
        assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()), "{label}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{label}: {problem}");
        assert_eq!(problem["field"].as_str(), c.field, "{label}: {problem}");
        if let Some(field) = c.field {
            let leaf = field.rsplit(['.', '[']).next().unwrap_or(field).trim_end_matches(']');
            let named = detail.contains(leaf) || detail.contains(&leaf.replace('_', " "));
            assert!(named, "{label}: detail {detail:?} should name {field}");
        }
        assert_eq!(snapshot(&server, &ids).await, before, "{label} changed state");
    }
    // The server still works after all that.
    assert_eq!(server.get("/health").await.0, 200);
    let (status, _) = server.post(&format!("/v1/jobs/{running}/complete"), json!({"lease_token": token})).await;
    assert_eq!(status, 200);
}
