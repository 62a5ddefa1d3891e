//! The HTTP API v1 end to end: the lifecycle of a job and the §2 rules over the wire.

use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test]
async fn a_job_goes_from_enqueue_to_succeeded_with_progress_and_result() {
    let server = TestServer::start().await;
    let resp = server
        .http
        .post(server.url("/v1/queues/pdf/jobs"))
        .header("content-type", "application/json")
        .body(r#"{"kind":"render","payload":{"id":1},"metadata":{"traceparent":"00-a-b-01"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(created["state"], "ready");

    let jobs = server.lease("pdf", 10, 0).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!((job["id"].as_str(), job["attempt"].as_u64()), (Some(id.as_str()), Some(1)));
    assert_eq!(job["payload"], json!({"id": 1}));
    assert_eq!(job["metadata"]["traceparent"], "00-a-b-01");
    let token = job["lease_token"].as_str().unwrap();

    let (status, beat) =
        server.post(&format!("/v1/jobs/{id}/heartbeat"), json!({"lease_token": token, "progress": {"pct": 40}})).await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["cancel_requested"], false);
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).await.1["progress"], json!({"pct": 40}));

    let (status, done) =
        server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": token, "result": {"pages": 3}})).await;
    assert_eq!((status, done["state"].as_str()), (200, Some("succeeded")));
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result"], json!({"pages": 3}));
    assert!(job["finished_at"].is_string());
}

#[tokio::test]
async fn an_idempotent_enqueue_answers_200_with_the_first_job() {
    let server = TestServer::start().await;
    let body = json!({"kind": "sms", "idempotency_key": "twilio-SM123"});
    let (first, a) = server.post("/v1/queues/triage/jobs", body.clone()).await;
    let (second, b) = server.post("/v1/queues/triage/jobs", body).await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(server.get("/v1/queues/triage").await.1["counts"]["ready"], 1);
}

#[tokio::test]
async fn an_expired_lease_is_retried_and_its_stale_token_refused() {
    let server = TestServer::start().await;
    let (status, _) =
        server.put("/v1/queues/q", json!({"lease_ms": 200, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    assert_eq!(status, 200);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let first = server.lease("q", 1, 0).await.remove(0);
    // The lease's end comes as a duration too, from the request's receipt, so a worker need
    // not trust its own wall clock: at least the lease, plus however long the lease took.
    let left = first["lease_ms"].as_u64().expect("lease_ms");
    assert!((200..5_200).contains(&left), "{left}");
    // The worker goes silent; the next lease long-polls until the expiry hands the job back.
    let second = server.lease("q", 1, 10_000).await.remove(0);
    assert_eq!(second["id"].as_str(), Some(id.as_str()));
    assert_eq!(second["attempt"], 2, "the expired lease counted as an attempt");
    let (status, problem) = server
        .post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": first["lease_token"], "result": "late"}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(problem["code"], "stale_lease");
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (job["state"].as_str(), job.get("result")),
        (Some("running"), None),
        "the stale completion changed nothing"
    );
    assert_eq!(job["errors"][0]["message"], "lease expired");
}

#[tokio::test]
async fn failures_retry_then_die_and_redrive_brings_them_back() {
    let server = TestServer::start().await;
    server.put("/v1/queues/q", json!({"max_attempts": 2, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    for expected in ["ready", "dead"] {
        let job = server.lease("q", 1, 0).await.remove(0);
        let (status, settled) = server
            .post(&format!("/v1/jobs/{id}/fail"), json!({"lease_token": job["lease_token"], "error": "boom"}))
            .await;
        assert_eq!((status, settled["state"].as_str()), (200, Some(expected)));
    }
    let (_, dead) = server.get("/v1/queues/q/jobs?state=dead").await;
    assert_eq!(dead["jobs"][0]["id"].as_str(), Some(id.as_str()));
    let (status, redriven) = server.post_raw("/v1/queues/q/redrive", "").await;
    assert_eq!((status, redriven["redriven"].as_u64()), (200, Some(1)));
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("ready"), Some(0)));
    assert_eq!(job["errors"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn release_returns_the_job_at_once_without_counting_an_attempt() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    let (status, settled) =
        server.post(&format!("/v1/jobs/{id}/release"), json!({"lease_token": job["lease_token"]})).await;
    assert_eq!((status, settled["state"].as_str()), (200, Some("ready")));
    let again = server.lease("q", 1, 0).await.remove(0);
    assert_eq!((again["id"].as_str(), again["attempt"].as_u64()), (Some(id.as_str()), Some(1)));
}

#[tokio::test]
async fn priority_then_fifo_order_and_delayed_jobs() {
    let server = TestServer::start().await;
    let low = server.enqueue("q", json!({"kind": "low"})).await;
    let high = server.enqueue("q", json!({"kind": "high", "priority": 5})).await;
    let later = server.enqueue("q", json!({"kind": "later", "delay_ms": 3_000})).await;
    let low2 = server.enqueue("q", json!({"kind": "low2"})).await;
    let order: Vec<String> =
        server.lease("q", 10, 0).await.iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(order, vec![high, low, low2]);
    assert_eq!(server.state(&later).await, "scheduled");
    let delayed = server.lease("q", 1, 10_000).await;
    assert_eq!(delayed[0]["id"].as_str(), Some(later.as_str()), "handed out once its time came");
}

#[tokio::test]
async fn cancel_stops_waiting_jobs_at_once_and_running_ones_at_their_heartbeat() {
    let server = TestServer::start().await;
    let waiting = server.enqueue("q", json!({"kind": "k", "delay_ms": 60_000})).await;
    let (status, canceled) = server.post_raw(&format!("/v1/jobs/{waiting}/cancel"), "").await;
    assert_eq!((status, canceled["state"].as_str()), (200, Some("canceled")));
    let running = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    let (_, flagged) = server.post_raw(&format!("/v1/jobs/{running}/cancel"), "").await;
    assert_eq!((flagged["state"].as_str(), flagged["cancel_requested"].as_bool()), (Some("running"), Some(true)));
    let (_, beat) =
        server.post(&format!("/v1/jobs/{running}/heartbeat"), json!({"lease_token": job["lease_token"]})).await;
    assert_eq!(beat["cancel_requested"], true);
    let (_, settled) = server
        .post(&format!("/v1/jobs/{running}/fail"), json!({"lease_token": job["lease_token"], "error": "canceled"}))
        .await;
    assert_eq!(settled["state"], "canceled");
    let (status, problem) = server.post_raw(&format!("/v1/jobs/{running}/cancel"), "").await;
    assert_eq!((status, problem["code"].as_str()), (200, None), "canceling a canceled job is a no-op");
}

#[tokio::test]
async fn pause_holds_jobs_until_resume() {
    let server = TestServer::start().await;
    server.enqueue("q", json!({"kind": "k"})).await;
    let (status, queue) = server.post_raw("/v1/queues/q/pause", "").await;
    assert_eq!((status, queue["policy"]["paused"].as_bool()), (200, Some(true)));
    assert!(server.lease("q", 1, 0).await.is_empty());
    server.post_raw("/v1/queues/q/resume", "").await;
    assert_eq!(server.lease("q", 1, 0).await.len(), 1);
    let (status, problem) = server.post_raw("/v1/queues/nope/pause", "").await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("queue_not_found")));
}

#[tokio::test]
async fn batches_enqueue_in_one_go_and_ack_settles_each_item_alone() {
    let server = TestServer::start().await;
    let jobs: Vec<Value> = (0..50).map(|i| json!({"kind": "k", "payload": i})).collect();
    let (status, batch) = server.post("/v1/queues/q/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!((status, batch["created"].as_u64()), (201, Some(50)));
    let leased = server.lease("q", 50, 0).await;
    assert_eq!(leased.len(), 50);
    let mut complete: Vec<Value> =
        leased[..49].iter().map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]})).collect();
    complete.push(json!({"id": leased[49]["id"], "lease_token": leased[0]["lease_token"]}));
    let (status, acked) = server.post("/v1/ack", json!({"complete": complete})).await;
    assert_eq!(status, 200);
    let items = acked["complete"].as_array().unwrap();
    assert!(items[..49].iter().all(|i| i["state"] == "succeeded"));
    assert_eq!(items[49]["error"]["code"], "stale_lease");
    let (_, queue) = server.get("/v1/queues/q").await;
    assert_eq!((queue["counts"]["succeeded"].as_u64(), queue["counts"]["running"].as_u64()), (Some(49), Some(1)));
}

#[tokio::test]
async fn listing_pages_newest_first() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(server.enqueue("q", json!({"kind": "k"})).await);
    }
    let (_, page) = server.get("/v1/queues/q/jobs?limit=3").await;
    let first: Vec<&str> = page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(first, vec![ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = server.get(&format!("/v1/queues/q/jobs?limit=3&cursor={cursor}")).await;
    let rest: Vec<&str> = page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(rest, vec![ids[1].as_str(), ids[0].as_str()]);
    assert!(page.get("next_cursor").is_none());
}

#[tokio::test]
async fn listing_filters_by_error_text_and_creation_time() {
    let server = TestServer::start().await;
    let ids_of = |page: &Value| -> Vec<String> {
        page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
    };
    let old = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
    // A time after the first job's creation and before the next ones'.
    let (_, job) = server.get(&format!("/v1/jobs/{old}")).await;
    let created = job["created_at"].as_str().unwrap().to_owned();
    let split = loop {
        let now = now_rfc3339();
        if now > created {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    let timeout = server.enqueue("mail", json!({"kind": "send", "max_attempts": 1})).await;
    let fine = server.enqueue("mail", json!({"kind": "send"})).await;
    for (id, error) in [(&old, "SMTP timeout"), (&timeout, "smtp Timeout after 30s")] {
        let jobs = server.lease("mail", 1, 0).await;
        assert_eq!(jobs[0]["id"], id.as_str());
        let fail = json!({"lease_token": jobs[0]["lease_token"], "error": error});
        assert_eq!(server.post(&format!("/v1/jobs/{id}/fail"), fail).await.0, 200);
    }
    let (status, page) = server.get("/v1/queues/mail/jobs?error=TIMEOUT").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids_of(&page), [timeout.clone(), old.clone()], "case-insensitive, newest first");
    let (_, page) = server.get(&format!("/v1/queues/mail/jobs?error=timeout&created_after={split}")).await;
    assert_eq!(ids_of(&page), [timeout.as_str()]);
    let (_, page) = server.get(&format!("/v1/queues/mail/jobs?created_before={split}")).await;
    assert_eq!(ids_of(&page), [old.as_str()]);
    let (_, page) = server.get("/v1/queues/mail/jobs?error=bounced").await;
    assert!(ids_of(&page).is_empty(), "{page}");
    let (_, page) = server.get("/v1/queues/mail/jobs?state=ready").await;
    assert_eq!(ids_of(&page), [fine]);
    // Bad bounds are refused, naming the field.
    let (status, problem) = server.get("/v1/queues/mail/jobs?created_after=yesterday").await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("created_after")), "{problem}");
    let (status, problem) = server.get(&format!("/v1/queues/mail/jobs?error={}", "x".repeat(257))).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("error")), "{problem}");
}

/// Now, in RFC 3339 with milliseconds, as the server writes times.
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    format!("{:.3}", jiff::Timestamp::from_millisecond(ms).unwrap())
}

#[tokio::test]
async fn queue_figures_count_attempts_and_give_latency_percentiles() {
    let server = TestServer::start().await;
    for outcome in ["complete", "complete", "fail"] {
        let id = server.enqueue("pdf", json!({"kind": "render", "max_attempts": 1})).await;
        let job = server.lease("pdf", 1, 0).await.remove(0);
        let body = json!({"lease_token": job["lease_token"], "error": "boom"});
        let body = if outcome == "complete" { json!({"lease_token": job["lease_token"]}) } else { body };
        assert_eq!(server.post(&format!("/v1/jobs/{id}/{outcome}"), body).await.0, 200);
    }
    // The minute's attempts, in the queue's view at once.
    let recent = |queue: &Value| {
        let r = &queue["recent"];
        let sum = |k: &str| r[k].as_array().map_or(0, |v| v.iter().map(|n| n.as_u64().unwrap()).sum::<u64>());
        (sum("succeeded"), sum("failed"), r["succeeded"].as_array().map_or(0, Vec::len))
    };
    let mut seen = (0, 0, 0);
    for _ in 0..250 {
        seen = recent(&server.get("/v1/queues/pdf").await.1);
        if seen.0 + seen.1 == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, (2, 1, 15), "two succeeded and one failed, over 15 minutes");
    let (_, list) = server.get("/v1/queues").await;
    assert_eq!(recent(&list["queues"][0]), (2, 1, 15));
    // Percentiles come with the next 10-second reading of the latency histograms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let stats = loop {
        let (status, stats) = server.get("/v1/queues/pdf/stats").await;
        assert_eq!(status, 200, "{stats}");
        if stats["points"].as_array().unwrap().iter().any(|p| p.get("run_ms").is_some()) {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "no latency point: {stats}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let points = stats["points"].as_array().unwrap();
    assert_eq!(stats["step_ms"], 10_000);
    let attempts: u64 = points.iter().map(|p| p["succeeded"].as_u64().unwrap() + p["failed"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 3, "{stats}");
    let run = points.iter().find_map(|p| p.get("run_ms")).unwrap();
    let (p50, p99) = (run["p50"].as_f64().unwrap(), run["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{run}");
    assert_eq!(server.get("/v1/queues/nope/stats").await.0, 404);
}

#[tokio::test]
async fn whoami_tells_a_token_what_it_may_do() {
    let server = TestServer::start_secured(&[]).await;
    let (status, me) = server.get("/v1/whoami").await;
    assert_eq!(status, 200);
    assert_eq!(
        me,
        json!({"id": "admin", "role": "admin", "may": ["read", "enqueue", "cancel", "work", "manage", "tokens"]})
    );
    let (_, created) = server.post("/v1/tokens", json!({"role": "producer", "queues": ["pdf*"]})).await;
    let producer = created["token"].as_str().unwrap();
    let answer = server.http.get(server.url("/v1/whoami")).bearer_auth(producer).send().await.unwrap();
    let me: Value = answer.json().await.unwrap();
    assert_eq!(me["role"], "producer");
    assert_eq!(me["queues"], json!(["pdf*"]));
    assert_eq!(me["may"], json!(["read", "enqueue", "cancel"]));
    let anonymous = server.http.get(server.url("/v1/whoami")).bearer_auth("wharf_nope_nope").send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn health_ready_metrics_and_openapi_describe_the_server() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/health").await, (200, json!({"status": "ok"})));
    assert_eq!(server.get("/ready").await.0, 200);
    let id = server.enqueue("pdf", json!({"kind": "render"})).await;
    let job = server.lease("pdf", 1, 0).await.remove(0);
    server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": job["lease_token"]})).await;
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "wharf_jobs{queue=\"pdf\",state=\"succeeded\"} 1",
        "wharf_jobs_enqueued_total{queue=\"pdf\"} 1",
        "wharf_jobs_succeeded_total{queue=\"pdf\"} 1",
        "wharf_job_wait_seconds_count{queue=\"pdf\"} 1",
        "wharf_job_run_seconds_count{queue=\"pdf\"} 1",
        "wharf_workers_connected 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?}:\n{metrics}");
    }
    let (status, doc) = server.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/queues/{queue}/jobs",
        "/v1/queues/{queue}/jobs/batch",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/events",
        "/v1/jobs/{id}/cancel",
        "/v1/queues",
        "/v1/queues/{queue}",
        "/v1/queues/{queue}/pause",
        "/v1/queues/{queue}/resume",
        "/v1/queues/{queue}/redrive",
        "/v1/lease",
        "/v1/jobs/{id}/heartbeat",
        "/v1/jobs/{id}/complete",
        "/v1/jobs/{id}/fail",
        "/v1/jobs/{id}/release",
        "/v1/ack",
        "/v1/events",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
}

#[tokio::test]
async fn a_long_poll_answers_the_moment_a_job_arrives() {
    let server = TestServer::start().await;
    let waiting = {
        let (http, url) = (server.http.clone(), server.url("/v1/lease"));
        tokio::spawn(async move {
            let body = json!({"worker_id": "w", "queues": ["q"], "wait_ms": 30_000});
            http.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    // The lease is parked once the server lists its worker.
    server.wait_workers(1).await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let answer = waiting.await.unwrap();
    assert_eq!(answer["jobs"][0]["id"].as_str(), Some(id.as_str()));
    // Handed out in the same store transaction that created it: no polling interval between.
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["started_at"], job["created_at"], "leased the moment it was created: {job}");
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_with_a_long_poll_parked() {
    let mut server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let parked = {
        let (http, url) = (server.http.clone(), server.url("/v1/lease"));
        tokio::spawn(async move {
            let body = json!({"worker_id": "w", "queues": ["empty"], "wait_ms": 60_000});
            http.post(url).json(&body).send().await.map(|r| r.status().as_u16())
        })
    };
    server.wait_workers(1).await;
    let started = std::time::Instant::now();
    assert!(server.terminate(), "exit status 0 after SIGTERM");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "did not wait out the 60 s long poll");
    assert_eq!(parked.await.unwrap().ok(), Some(200), "the parked lease was answered (empty)");
    server.restart();
    assert_eq!(server.state(&id).await, "ready");
}
