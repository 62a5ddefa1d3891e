//! Alarms end to end: rules from the config file and the API fire after their `for`, resolve,
//! and send exactly one POST per transition to a local webhook receiver, which is retried
//! with backoff while it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::TestServer;

/// What the receiver got: when, and the JSON body.
type Received = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A webhook receiver on a free port: records every POST, answers 503 to the first
/// `fail_first` and 200 to the rest.
async fn receiver(fail_first: usize) -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let seen = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook/{*rest}",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = Arc::clone(&seen);
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((Instant::now(), body));
                if seen.len() <= fail_first {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

fn bodies(got: &Received) -> Vec<Value> {
    got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
}

/// Waits (up to 30 s) until the receiver holds `n` POSTs.
async fn wait_posts(got: &Received, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = bodies(got);
        if now.len() >= n {
            return now;
        }
        assert!(Instant::now() < deadline, "expected {n} webhook POSTs, got {}: {now:#?}", now.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 30 s) until `GET /v1/alarms/{name}` shows `state`; returns the view.
async fn wait_alarm(server: &TestServer, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, view) = server.get(&format!("/v1/alarms/{name}")).await;
        assert_eq!(status, 200, "{view}");
        if view["state"] == state {
            return view;
        }
        assert!(Instant::now() < deadline, "alarm {name} never became {state}: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn lease_one(server: &TestServer, queue: &str) -> Value {
    let jobs = server.lease(queue, 1, 1_000).await;
    assert_eq!(jobs.len(), 1, "a job of {queue} to lease");
    jobs[0].clone()
}

async fn finish(server: &TestServer, job: &Value, ok: bool) {
    let id = job["id"].as_str().unwrap();
    let (path, body) = if ok {
        (format!("/v1/jobs/{id}/complete"), json!({"lease_token": job["lease_token"]}))
    } else {
        (format!("/v1/jobs/{id}/fail"), json!({"lease_token": job["lease_token"], "error": "boom"}))
    };
    let (status, answer) = server.post(&path, body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn each_kind_of_rule_fires_after_its_duration_resolves_and_posts_once_per_transition() {
    let (addr, got) = receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("http://{addr}/hook/T000/B000/secret");
    let rule = |name: &str, queue: &str, when: &str, extra: &str| {
        format!(
            "[[alarm]]\nname = \"{name}\"\nqueue = \"{queue}\"\nwhen = \"{when}\"\n{extra}notify = [\"{hook}\"]\n\n"
        )
    };
    let text = [
        rule("depth", "depth", "ready > 2", "for = \"1s\"\n"),
        rule("dead", "dlq", "dead > 0", ""),
        rule("flaky", "flaky", "failure_rate >= 0.5", "window = \"10m\"\n"),
        rule("no-workers", "nowork", "workers == 0", "for = \"1s\"\n"),
        rule("old", "old", "oldest_ready_age_s > 2", ""),
    ]
    .concat();
    let started = Instant::now();
    let server = TestServer::start_with(&["--config", config(dir.path(), &text).to_str().unwrap()]).await;

    // No worker leases from `nowork`: it fires once the condition held for its second.
    let first = wait_posts(&got, 1).await;
    assert_eq!((first[0]["alarm"].as_str(), first[0]["state"].as_str()), (Some("no-workers"), Some("firing")));
    assert!(got.lock().unwrap()[0].0 - started >= Duration::from_secs(1), "fired before its `for`");
    lease_one_or_none(&server, "nowork").await;
    wait_alarm(&server, "no-workers", "ok").await;

    // Depth: three ready jobs for a second.
    let enqueued = Instant::now();
    for _ in 0..3 {
        server.enqueue("depth", json!({"kind": "k"})).await;
    }
    let view = wait_alarm(&server, "depth", "firing").await;
    assert!(enqueued.elapsed() >= Duration::from_secs(1), "depth fired before its `for`: {view}");
    assert_eq!(view["value"], 3.0);
    // `/metrics` shows what `GET /v1/alarms` shows.
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wharf_alarm_firing{alarm=\"depth\",queue=\"depth\"} 1"), "{metrics}");
    assert!(metrics.contains("wharf_alarm_value{alarm=\"depth\",queue=\"depth\"} 3"), "{metrics}");
    assert!(metrics.contains("wharf_alarm_firing{alarm=\"no-workers\",queue=\"nowork\"} 0"), "{metrics}");
    let (_, all) = server.get("/v1/alarms").await;
    let firing: Vec<&str> = all["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(firing, ["depth"]);
    for _ in 0..3 {
        finish(&server, &lease_one(&server, "depth").await, true).await;
    }
    wait_alarm(&server, "depth", "ok").await;

    // Dead: a job out of attempts; redriven and run, the queue holds no dead job again.
    let id = server.enqueue("dlq", json!({"kind": "k", "max_attempts": 1})).await;
    finish(&server, &lease_one(&server, "dlq").await, false).await;
    wait_alarm(&server, "dead", "firing").await;
    let (status, _) = server.post("/v1/queues/dlq/redrive", json!({"ids": [id]})).await;
    assert_eq!(status, 200);
    finish(&server, &lease_one(&server, "dlq").await, true).await;
    wait_alarm(&server, "dead", "ok").await;

    // Failure rate: one failed and one succeeded attempt (0.5), then three successes (0.2).
    for _ in 0..5 {
        server.enqueue("flaky", json!({"kind": "k", "max_attempts": 1})).await;
    }
    finish(&server, &lease_one(&server, "flaky").await, false).await;
    finish(&server, &lease_one(&server, "flaky").await, true).await;
    wait_alarm(&server, "flaky", "firing").await;
    for _ in 0..3 {
        finish(&server, &lease_one(&server, "flaky").await, true).await;
    }
    let view = wait_alarm(&server, "flaky", "ok").await;
    assert_eq!(view["value"], 0.2);

    // Oldest ready age: a job waits over two seconds.
    server.enqueue("old", json!({"kind": "k"})).await;
    wait_alarm(&server, "old", "firing").await;
    finish(&server, &lease_one(&server, "old").await, true).await;
    wait_alarm(&server, "old", "ok").await;

    // Ten transitions, then one more as a fence: anything sent twice would have come by then.
    wait_posts(&got, 10).await;
    for _ in 0..3 {
        server.enqueue("depth", json!({"kind": "k"})).await;
    }
    let posts = wait_posts(&got, 11).await;
    let seen: Vec<(&str, &str)> =
        posts.iter().map(|p| (p["alarm"].as_str().unwrap(), p["state"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("no-workers", "firing"),
            ("no-workers", "resolved"),
            ("depth", "firing"),
            ("depth", "resolved"),
            ("dead", "firing"),
            ("dead", "resolved"),
            ("flaky", "firing"),
            ("flaky", "resolved"),
            ("old", "firing"),
            ("old", "resolved"),
            ("depth", "firing"),
        ]
    );
    let mut ids: Vec<&str> = posts.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 11, "one POST per transition: {posts:#?}");
    // The body is a Slack incoming-webhook message too, and carries the rule's figures.
    let depth = &posts[2];
    assert_eq!(
        (depth["queue"].as_str(), depth["value"].as_f64(), depth["threshold"].as_f64()),
        (Some("depth"), Some(3.0), Some(2.0))
    );
    assert!(depth["text"].as_str().unwrap().starts_with("[FIRING] depth on queue depth"), "{depth}");
    // The webhook's secret path is never shown. (A transition is posted before the leader
    // stores it, so the view may lag the post by a tick.)
    let view = wait_alarm(&server, "depth", "firing").await;
    assert_eq!(view["notify"], json!([format!("http://{addr}/…")]));
    assert_eq!(view["history"][0]["state"], "firing");
    assert_eq!(view["history"][1]["state"], "resolved");
}

/// A worker of its own asks `queue` for work once (an empty answer is fine): it is then
/// listed on that queue (the shared test worker moves on to other queues).
async fn lease_one_or_none(server: &TestServer, queue: &str) {
    let request = json!({"worker_id": format!("{queue}-worker"), "queues": [queue], "max": 1, "wait_ms": 0});
    let (status, body) = server.post("/v1/lease", request).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_growing_delays_until_it_accepts() {
    let (addr, got) = receiver(3).await;
    let server = TestServer::start().await;
    let rule = json!({"queue": "q", "when": "dead > 0", "notify": [format!("http://{addr}/hook/x")]});
    let (status, view) = server.put("/v1/alarms/q-dead", rule).await;
    assert_eq!(status, 201, "{view}");
    let id = server.enqueue("q", json!({"kind": "k", "max_attempts": 1})).await;
    finish(&server, &lease_one(&server, "q").await, false).await;
    assert_eq!(server.state(&id).await, "dead");
    let view = wait_alarm(&server, "q-dead", "firing").await;
    assert_eq!(view["source"], "api");
    // Three refusals, then delivery: four tries of the same transition.
    let posts = wait_posts(&got, 4).await;
    assert!(posts.iter().all(|p| p["id"] == posts[0]["id"] && p["state"] == "firing"), "{posts:#?}");
    let times: Vec<Instant> = got.lock().unwrap().iter().map(|(at, _)| *at).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, least) in gaps.iter().zip([1, 2, 4]) {
        assert!(*gap >= Duration::from_millis(least * 1000 - 100), "retries back off: {gaps:?}");
    }
    // Delivered: nothing left to send.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = server.get("/v1/alarms/q-dead").await;
        if view["undelivered"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bodies(&got).len(), 4);
}

#[tokio::test]
async fn alarm_rules_are_validated_and_config_rules_are_not_changed_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[alarm]]\nname = \"declared\"\nqueue = \"*\"\nwhen = \"ready > 100\"\n";
    let server = TestServer::start_with(&["--config", config(dir.path(), text).to_str().unwrap()]).await;
    let rule = json!({"queue": "pdf", "when": "failure_rate > 0.1", "for": "2m", "window": "10m"});
    assert_eq!(server.put("/v1/alarms/pdf-failing", rule.clone()).await.0, 201);
    let (status, view) = server.put("/v1/alarms/pdf-failing", json!({"queue": "pdf", "when": "dead > 0"})).await;
    assert_eq!((status, view["when"].as_str(), view["for_ms"].as_u64()), (200, Some("dead > 0"), Some(0)), "{view}");
    for (body, field) in [
        (json!({"queue": "pdf", "when": "dead >"}), "when"),
        (json!({"queue": "pdf", "when": "deads > 1"}), "when"),
        (json!({"queue": "p d f", "when": "dead > 1"}), "queue"),
        (json!({"queue": "pdf", "when": "dead > 1", "for": "soon"}), "for"),
        (json!({"queue": "pdf", "when": "dead > 1", "notify": ["file:///etc/passwd"]}), "notify"),
    ] {
        let (status, problem) = server.put("/v1/alarms/bad", body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(problem["detail"].as_str().unwrap_or_default().contains(field), "{problem}");
    }
    let (status, problem) = server.put("/v1/alarms/x", json!({"queue": "pdf", "when": "dead > 1", "extra": 1})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(server.get("/v1/alarms/bad").await.0, 404, "nothing invalid was kept");
    let (status, problem) = server.put("/v1/alarms/declared", json!({"queue": "pdf", "when": "dead > 0"})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("alarm_declared")), "{problem}");
    let delete = |name: &str| server.http.delete(server.url(&format!("/v1/alarms/{name}"))).send();
    assert_eq!(delete("declared").await.unwrap().status(), 409);
    assert_eq!(delete("pdf-failing").await.unwrap().status(), 204);
    assert_eq!(delete("pdf-failing").await.unwrap().status(), 404);
    // The command line lists them.
    let (code, out, err) = server.cli(&["alarms"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("declared") && out.contains("ready > 100"), "{out}");
}

#[tokio::test]
async fn on_many_nodes_the_leader_alone_notifies_and_every_node_shows_the_same_state() {
    let (addr, got) = receiver(0).await;
    let url = wharf_testkit::postgres::server().fresh_database().await;
    let a = TestServer::start_with(&["--database-url", &url]).await;
    let b = TestServer::start_with(&["--database-url", &url]).await;
    let rule = json!({"queue": "*", "when": "ready >= 2", "notify": [format!("http://{addr}/hook/x")]});
    assert_eq!(a.put("/v1/alarms/backlog", rule).await.0, 201);
    b.enqueue("one", json!({"kind": "k"})).await;
    b.enqueue("one", json!({"kind": "k"})).await;
    // Node B shows what the leader, whichever it is, decided.
    let view = wait_alarm(&b, "backlog", "firing").await;
    let queues: Vec<(&str, &str)> = view["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["queue"].as_str().unwrap(), q["state"].as_str().unwrap()))
        .collect();
    assert_eq!(queues, [("one", "firing")]);
    for _ in 0..2 {
        finish(&a, &lease_one(&a, "one").await, true).await;
    }
    wait_alarm(&a, "backlog", "ok").await;
    wait_alarm(&b, "backlog", "ok").await;
    // A fence, as above: a transition of another queue, after which a repeat would show.
    a.enqueue("two", json!({"kind": "k"})).await;
    a.enqueue("two", json!({"kind": "k"})).await;
    let posts = wait_posts(&got, 3).await;
    let seen: Vec<(&str, &str)> =
        posts.iter().map(|p| (p["queue"].as_str().unwrap(), p["state"].as_str().unwrap())).collect();
    assert_eq!(seen, [("one", "firing"), ("one", "resolved"), ("two", "firing")]);
}
