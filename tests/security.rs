//! Authentication, roles, and the holes a hostile client found, each closed.
//!
//! The memory tests attack a real server and assert its resident memory stays under a stated
//! bound while a normal client is served.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::{ADMIN_TOKEN, TestServer, http_client, wharf_bin};

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Raises this process's open-files limit, for tests that open thousands of sockets.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Lease tokens carry 128 random bits: knowing a job's id and `started_at` (all public) no
/// longer lets anyone compute its token and complete it in the worker's place.
#[tokio::test]
async fn a_lease_token_cannot_be_computed_from_public_fields() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let leased = server.lease("q", 1, 0).await.remove(0);
    let real = leased["lease_token"].as_str().unwrap().to_owned();
    assert_eq!(real.len(), 39, "a sequence and a 128-bit secret: {real}");
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    // What an attacker can see: the job's start time. Tokens used to be ids of that
    // millisecond; try every one of them, and the real token's public part.
    let started = wharf::core::Timestamp::parse_rfc3339(job["started_at"].as_str().unwrap()).unwrap();
    let floor = wharf::core::JobId::floor_at(started).raw();
    let mut guesses: Vec<String> = (0..500).map(|k| wharf::core::LeaseToken::from_raw(floor + k).to_string()).collect();
    guesses.push(real[..13].to_owned());
    for guess in guesses {
        let (status, problem) =
            server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": guess, "result": "forged"})).await;
        assert_eq!((status, problem["code"].as_str()), (409, Some("stale_lease")), "{guess}: {problem}");
    }
    let (status, _) = server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": real})).await;
    assert_eq!(status, 200, "the worker's own token still works");
    assert_eq!(server.get(&format!("/v1/jobs/{id}")).await.1["result"], Value::Null);
}

/// A web page on another site cannot drive the API: a form-typed or text body is refused, and
/// a cross-site write is refused whatever its type; preflights are answered only for the
/// configured origins.
#[tokio::test]
async fn cross_site_requests_are_refused() {
    let server = TestServer::start_with(&["--cors-origin", "https://dash.example.com"]).await;
    server.enqueue("q", json!({"kind": "k"})).await;
    let http = reqwest::Client::new();
    let text = http
        .post(server.url("/v1/queues/q/jobs"))
        .header("content-type", "text/plain")
        .body(r#"{"kind":"k"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let form = http.post(server.url("/v1/queues/q/jobs")).form(&[("kind", "k")]).send().await.unwrap();
    assert_eq!(form.status(), 415);
    let pause =
        http.post(server.url("/v1/queues/q/pause")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(pause.status(), 403);
    let problem: Value = pause.json().await.unwrap();
    assert_eq!(problem["code"], "origin_not_allowed");
    let (_, queue) = server.get("/v1/queues/q").await;
    assert_eq!((queue["policy"]["paused"].as_bool(), queue["counts"]["ready"].as_u64()), (Some(false), Some(1)));

    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, server.url("/v1/queues/q/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, authorization")
            .send()
    };
    let allowed = preflight("https://dash.example.com").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://dash.example.com");
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
    let read = http.get(server.url("/v1/queues/q")).header("origin", "https://dash.example.com").send().await.unwrap();
    assert_eq!(read.headers()["access-control-allow-origin"], "https://dash.example.com");
}

/// Resident memory of `server` in MiB.
fn rss_mib(server: &TestServer) -> f64 {
    server.rss_kib() as f64 / 1024.0
}

/// Four workers flooding 250 KB progress: the event buffer holds bytes, not a count of events,
/// and repeated large progress of one job keeps only the latest, so memory stays flat.
#[tokio::test]
async fn a_flood_of_large_progress_keeps_memory_flat() {
    let server = TestServer::start().await;
    for _ in 0..4 {
        server.enqueue("q", json!({"kind": "k"})).await;
    }
    let leases = server.lease("q", 4, 0).await;
    let baseline = rss_mib(&server);
    let blob = "x".repeat(250_000);
    let mut tasks = Vec::new();
    for job in leases {
        let (http, url, token, blob) = (
            server.http.clone(),
            server.url(&format!("/v1/jobs/{}/heartbeat", job["id"].as_str().unwrap())),
            job["lease_token"].clone(),
            blob.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let body = json!({"lease_token": token, "progress": {"step": i, "blob": blob}});
                let status = http.post(&url).json(&body).send().await.unwrap().status();
                assert_eq!(status, 200);
            }
        }));
    }
    let mut peak = baseline;
    while !tasks.iter().all(|t| t.is_finished()) {
        peak = peak.max(rss_mib(&server));
        assert_eq!(server.get("/health").await.0, 200, "served during the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    peak = peak.max(rss_mib(&server));
    // 200 MB of progress went through; the old count-bounded ring kept all of it.
    assert!(peak - baseline < 120.0, "server grew from {baseline:.0} to {peak:.0} MiB");
}

/// Thousands of connections that declare a large body and send a few bytes cost a few bytes
/// each: memory follows what arrives, not what is announced.
#[tokio::test]
async fn announced_but_unsent_bodies_reserve_no_memory() {
    raise_file_limit();
    let server = TestServer::start().await;
    let baseline = rss_mib(&server);
    let mut sockets = Vec::new();
    for _ in 0..2_000 {
        let mut s = TcpStream::connect(addr(&server)).await.unwrap();
        let head = "POST /v1/queues/q/jobs HTTP/1.1\r\nHost: wharf\r\nContent-Type: application/json\r\n\
                    Content-Length: 589000\r\n\r\n{\"kind\":\"k\",\"payload\":\"xxxxxxxx";
        s.write_all(head.as_bytes()).await.unwrap();
        sockets.push(s);
    }
    // Every request is parked in its body read; a normal client is still served.
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    assert_eq!(server.state(&id).await, "ready");
    let grown = rss_mib(&server) - baseline;
    assert!(grown < 150.0, "2,000 announced bodies of 589 KB grew the server by {grown:.0} MiB");
    drop(sockets);
}

/// Connections that send nothing are closed after the header timeout, and at the connection
/// cap they make room for new clients: `/health` answers throughout.
#[tokio::test]
async fn idle_connections_are_closed_and_make_room() {
    raise_file_limit();
    let server = TestServer::start_with(&["--header-read-timeout", "1s", "--max-connections", "200"]).await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(addr(&server)).await.unwrap());
        if idle.len() % 100 == 0 {
            // A new client finds room even with the cap reached by idle connections.
            let fresh = http_client(None);
            let status = fresh.get(server.url("/health")).send().await.unwrap().status();
            assert_eq!(status, 200);
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    assert!(fds < 200 + 64, "the server holds {fds} descriptors with a cap of 200 connections");
    // Each idle connection ends, closed by the server, within the timeout (plus slack).
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut socket in idle {
        let mut buf = [0u8; 256];
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, socket.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(_) | Err(_))), "an idle connection stayed open");
    }
    assert_eq!(server.get("/health").await.0, 200);
}

/// Queues are capped, an empty one can be deleted, and `/metrics` stays as small as the cap.
#[tokio::test]
async fn queues_are_capped_and_empty_ones_can_be_deleted() {
    let server = TestServer::start_with(&["--max-queues", "3"]).await;
    for q in ["q1", "q2", "q3"] {
        assert_eq!(server.put(&format!("/v1/queues/{q}"), json!({})).await.0, 200);
    }
    let (status, problem) = server.put("/v1/queues/q4", json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("queue_limit_reached")), "{problem}");
    let (status, problem) = server.post("/v1/queues/q5/jobs", json!({"kind": "k"})).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("queue_limit_reached")), "{problem}");
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let mut labels: Vec<&str> = metrics.lines().filter_map(|l| l.split("queue=\"").nth(1)?.split('"').next()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels, ["q1", "q2", "q3"]);

    let resp = server.http.delete(server.url("/v1/queues/q3")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(server.get("/v1/queues/q3").await.0, 404);
    let id = server.enqueue("q4", json!({"kind": "k"})).await;
    let resp = server.http.delete(server.url("/v1/queues/q4")).send().await.unwrap();
    assert_eq!(resp.status(), 409, "a queue with a ready job stays");
    assert_eq!(server.state(&id).await, "ready");
    let (code, out, err) = server.cli(&["queue", "delete", "q2"]);
    assert_eq!((code, out.trim()), (0, "deleted q2"), "{err}");
}

/// Backpressure: a token over its rate gets 429 with `Retry-After` (a batch costs its jobs),
/// and a queue at its `max_ready` refuses enqueues until workers drain it.
#[tokio::test]
async fn rate_limits_and_full_queues_answer_429_with_retry_after() {
    let server = TestServer::start_secured(&["--token-rate-limit", "5"]).await;
    let (status, created) = server.post("/v1/tokens", json!({"role": "producer", "name": "api"})).await;
    assert_eq!(status, 201, "{created}");
    let producer = http_client(created["token"].as_str());
    // A full bucket pays for a whole batch, which leaves it in debt for the next calls.
    let batch = json!({"jobs": (0..20).map(|_| json!({"kind": "k"})).collect::<Vec<_>>()});
    let resp = producer.post(server.url("/v1/queues/q/jobs/batch")).json(&batch).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let resp = producer.post(server.url("/v1/queues/q/jobs")).json(&json!({"kind": "k"})).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(after >= 3, "20 jobs at 5/s: a few seconds of debt, got {after}");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    // Another token has its own bucket.
    assert_eq!(server.post("/v1/queues/q/jobs", json!({"kind": "k"})).await.0, 201);

    let (code, _, err) = server.cli(&["queue", "set", "full", "--max-ready", "2"]);
    assert_eq!(code, 0, "{err}");
    for _ in 0..2 {
        server.enqueue("full", json!({"kind": "k"})).await;
    }
    let resp = server.http.post(server.url("/v1/queues/full/jobs")).json(&json!({"kind": "k"})).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "queue_full");
    server.lease("full", 1, 0).await;
    server.enqueue("full", json!({"kind": "k"})).await;
}

/// A worker asking for many jobs of large payloads gets fewer: an answer is bounded by bytes.
#[tokio::test]
async fn a_lease_answer_is_bounded_by_bytes() {
    let server = TestServer::start().await;
    let payload = "p".repeat(200_000);
    let jobs: Vec<Value> = (0..100).map(|_| json!({"kind": "k", "payload": payload})).collect();
    let (status, _) = server.post("/v1/queues/big/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, 201);
    let mut total = 0;
    let mut calls = 0;
    while total < 100 {
        let resp = server
            .http
            .post(server.url("/v1/lease"))
            .json(&json!({"worker_id": "w", "queues": ["big"], "max": 1000}))
            .send()
            .await
            .unwrap();
        let body = resp.bytes().await.unwrap();
        assert!(body.len() < 17 * 1024 * 1024, "an answer of {} bytes", body.len());
        let got = serde_json::from_slice::<Value>(&body).unwrap()["jobs"].as_array().map_or(0, Vec::len);
        assert!(got > 0 && got < 100, "{got} jobs in one answer");
        total += got;
        calls += 1;
    }
    assert!(calls >= 2);
}

/// Readers of an event stream that stop reading are cut off once their socket stays full, so
/// they hold nothing; they reconnect with `Last-Event-ID`.
#[tokio::test]
async fn stalled_event_stream_readers_are_disconnected() {
    let server = TestServer::start_with(&["--write-stall-timeout", "1s"]).await;
    // The server's open sockets (its store's files come and go independently).
    let open_files = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid())).map_or(0, |dir| {
            dir.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
    };
    let before = open_files();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        // A small receive window, as a reader that stopped reading soon has: the kernel would
        // otherwise buffer tens of megabytes on its behalf.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr(&server).parse().unwrap()).await.unwrap();
        s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: wharf\r\n\r\n").await.unwrap();
        stalled.push(s);
    }
    // Every stream is open once it has sent its headers.
    for s in &mut stalled {
        let mut head = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await.unwrap().unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));
    }
    let baseline = rss_mib(&server);
    // 80,000 `created` events, about 20 MB of stream per reader: more than the sockets hold.
    let batch = json!({"jobs": (0..10_000).map(|_| json!({"kind": "k"})).collect::<Vec<_>>()});
    let producer = http_client(None);
    for _ in 0..8 {
        let resp = producer.post(server.url("/v1/queues/q/jobs/batch")).json(&batch).send().await.unwrap();
        assert_eq!(resp.status(), 201);
    }
    // Its keep-alive connection would count among the server's sockets.
    drop(producer);
    let grown = rss_mib(&server) - baseline;
    assert!(grown < 100.0, "20 stalled readers grew the server by {grown:.0} MiB");
    // The server closes the stalled connections on its own (it may take a while on a loaded
    // machine: each stream first writes until its socket is full)...
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_files() > before {
        assert!(Instant::now() < deadline, "{} descriptors still open, {before} before the readers", open_files());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and draining each reaches its end.
    for mut socket in stalled {
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(drained.is_ok(), "a stalled reader was never disconnected");
    }
    assert_eq!(server.get("/health").await.0, 200);
}

/// Input nothing can use is refused: control characters in a kind, a reused idempotency key
/// with another payload, compressed bodies; and a huge id is not echoed back whole.
#[tokio::test]
async fn unusable_input_is_refused_clearly() {
    let server = TestServer::start().await;
    let (status, problem) = server.post("/v1/queues/q/jobs", json!({"kind": "render\u{0}"})).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("kind")), "{problem}");

    let first = server.enqueue("q", json!({"kind": "k", "idempotency_key": "order-1", "payload": {"a": 1}})).await;
    let (status, again) =
        server.post("/v1/queues/q/jobs", json!({"kind": "k", "idempotency_key": "order-1", "payload": {"a": 1}})).await;
    assert_eq!((status, again["id"].as_str()), (200, Some(first.as_str())));
    let (status, problem) =
        server.post("/v1/queues/q/jobs", json!({"kind": "k", "idempotency_key": "order-1", "payload": {"a": 2}})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("idempotency_conflict")), "{problem}");
    assert_eq!(problem["job_id"].as_str(), Some(first.as_str()));

    let long = "a".repeat(16_384);
    let (status, problem) = server.get(&format!("/v1/jobs/{long}")).await;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().len() < 200, "{}", problem["detail"]);

    let gzip = server
        .http
        .post(server.url("/v1/queues/q/jobs"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.status(), 415);
    assert_eq!(server.get("/v1/queues/q").await.1["counts"]["ready"], 1, "nothing else was enqueued");
}

/// What each role may do, by the test's own reading of the documentation: one entry per
/// operation of the OpenAPI document.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Public,
    Read,
    Enqueue,
    Cancel,
    Work,
    Manage,
    /// Managing tokens: an admin without queue patterns.
    Tokens,
}

/// Whether the operation's queue is the token's business.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Queued {
    No,
    Yes,
}

fn expectation(method: &str, path: &str) -> Option<(Need, Queued)> {
    use Need::*;
    use Queued::*;
    Some(match (method, path) {
        ("get", "/health" | "/ready") | ("post", "/v1/hooks/{name}") => (Public, No),
        ("get", "/v1/openapi.json" | "/v1/whoami" | "/metrics" | "/v1/queues" | "/v1/workers" | "/v1/events") => {
            (Read, No)
        }
        (
            "get",
            "/v1/queues/{queue}"
            | "/v1/queues/{queue}/jobs"
            | "/v1/queues/{queue}/stats"
            | "/v1/jobs/{id}"
            | "/v1/jobs/{id}/events",
        ) => (Read, Yes),
        ("post", "/v1/queues/{queue}/jobs" | "/v1/queues/{queue}/jobs/batch") => (Enqueue, Yes),
        ("post", "/v1/jobs/{id}/cancel") => (Cancel, Yes),
        ("post", "/v1/lease") => (Work, Yes),
        (
            "post",
            "/v1/jobs/{id}/heartbeat" | "/v1/jobs/{id}/complete" | "/v1/jobs/{id}/fail" | "/v1/jobs/{id}/release",
        )
        | ("post", "/v1/ack") => (Work, No),
        ("put" | "delete", "/v1/queues/{queue}")
        | ("post", "/v1/queues/{queue}/pause" | "/v1/queues/{queue}/resume" | "/v1/queues/{queue}/redrive") => {
            (Manage, Yes)
        }
        ("get", "/v1/pools" | "/v1/pools/{pool}" | "/v1/pools/{pool}/metrics") => (Read, No),
        ("get", "/v1/alarms" | "/v1/alarms/{name}") => (Read, No),
        // The rule's queue is in the body; a delete of an unknown alarm is 404 for any admin.
        ("put", "/v1/alarms/{name}") => (Manage, Yes),
        ("delete", "/v1/alarms/{name}") => (Manage, No),
        ("post", "/v1/workers/{id}/drain") | ("delete", "/v1/workers/{id}") => (Work, No),
        ("get" | "post", "/v1/tokens") | ("delete", "/v1/tokens/{id}") => (Tokens, No),
        _ => return None,
    })
}

fn role_allows(role: &str, need: Need) -> bool {
    match need {
        Need::Public | Need::Read => true,
        Need::Enqueue | Need::Cancel => matches!(role, "producer" | "admin"),
        Need::Work => matches!(role, "worker" | "admin"),
        Need::Manage | Need::Tokens => role == "admin",
    }
}

/// Every operation of the OpenAPI document × every role (limited to `alpha*`) × a queue in
/// and out of its patterns, plus no token and an unknown one: each answers as documented. An
/// operation the table does not know fails the test, so a new endpoint needs a rule.
#[tokio::test]
async fn every_endpoint_answers_each_role_as_documented() {
    let server = TestServer::start_secured(&[]).await;
    let inside = server.enqueue("alpha-1", json!({"kind": "k"})).await;
    let outside = server.enqueue("beta", json!({"kind": "k"})).await;
    let mut tokens = BTreeMap::new();
    for role in ["reader", "producer", "worker", "admin"] {
        let (status, created) = server.post("/v1/tokens", json!({"role": role, "queues": ["alpha*"]})).await;
        assert_eq!(status, 201, "{created}");
        tokens.insert(role, created["token"].as_str().unwrap().to_owned());
    }
    let (_, doc) = server.get("/v1/openapi.json").await;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let (need, queued) = expectation(method, path)
                .unwrap_or_else(|| panic!("{method} {path} has no access rule in this test: add one"));
            for side in ["in", "out"] {
                let (queue, job) = if side == "in" { ("alpha-1", &inside) } else { ("beta", &outside) };
                let concrete = path
                    .replace("{queue}", queue)
                    .replace("{name}", "nohook")
                    .replace("{pool}", "nopool")
                    .replace("{id}", if path.starts_with("/v1/tokens") { "nosuchtoken0" } else { job });
                let body = body_for(method, path, queue);
                let send = |token: Option<&str>| {
                    let client = http_client(token);
                    let mut req = client.request(method.to_uppercase().parse().unwrap(), server.url(&concrete));
                    if let Some(body) = &body {
                        req = req.json(body);
                    }
                    req.timeout(Duration::from_secs(10)).send()
                };
                let status = |resp: reqwest::Response| resp.status().as_u16();
                let anonymous = status(send(None).await.unwrap());
                let forged = status(send(Some("wharf_0000000000aa_forged")).await.unwrap());
                if need == Need::Public {
                    assert!(anonymous != 401 && anonymous != 403, "{method} {path} is public: {anonymous}");
                } else {
                    assert_eq!((anonymous, forged), (401, 401), "{method} {concrete} without a valid token");
                }
                for (role, token) in &tokens {
                    let got = status(send(Some(token)).await.unwrap());
                    let allowed =
                        role_allows(role, need) && !(side == "out" && queued == Queued::Yes) && need != Need::Tokens;
                    if allowed {
                        assert!(got != 401 && got != 403, "{role} {side}: {method} {concrete} answered {got}");
                    } else {
                        assert_eq!(got, 403, "{role} {side}: {method} {concrete}");
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * 25, "{checked} operation checks");
    // The unlimited admin may manage tokens.
    assert_eq!(server.get("/v1/tokens").await.0, 200);
}

/// A body that gets an operation past parsing, so what answers is its access rule.
fn body_for(method: &str, path: &str, queue: &str) -> Option<Value> {
    let stale = "0000000000001";
    Some(match (method, path) {
        ("post", "/v1/queues/{queue}/jobs") => json!({"kind": "k"}),
        ("post", "/v1/queues/{queue}/jobs/batch") => json!({"jobs": [{"kind": "k"}]}),
        ("post", "/v1/lease") => json!({"worker_id": "w", "queues": [queue], "wait_ms": 0, "max": 1}),
        ("post", "/v1/jobs/{id}/heartbeat" | "/v1/jobs/{id}/complete" | "/v1/jobs/{id}/release") => {
            json!({"lease_token": stale})
        }
        ("post", "/v1/jobs/{id}/fail") => json!({"lease_token": stale, "error": "x"}),
        ("post", "/v1/ack") => json!({"complete": [], "fail": []}),
        ("put", "/v1/queues/{queue}") => json!({}),
        ("post", "/v1/tokens") => json!({"role": "reader"}),
        ("put", "/v1/alarms/{name}") => json!({"queue": queue, "when": "dead > 0"}),
        ("post", "/v1/hooks/{name}") => json!({}),
        _ => return None,
    })
}

/// The token lifecycle from the command line: create (shown once), use within its queues,
/// list without secrets, revoke with immediate effect.
#[tokio::test]
async fn tokens_are_created_used_listed_and_revoked_from_the_command_line() {
    let server = TestServer::start_secured(&[]).await;
    let (code, out, err) =
        server.cli(&["token", "create", "--role", "producer", "--queues", "pdf*", "--name", "api", "--json"]);
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let (token, id) = (created["token"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    let as_producer = |args: &[&str]| {
        let out = Command::new(wharf_bin())
            .args(args)
            .env("WHARF_SERVER", &server.base)
            .env("WHARF_TOKEN", &token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = as_producer(&["enqueue", "pdf-render", "k"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = as_producer(&["enqueue", "labs", "k"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = as_producer(&["pause", "pdf-render"]);
    assert_eq!(code, Some(1), "a producer does not manage queues: {err}");

    let (_, listed, _) = server.cli(&["token", "list", "--json"]);
    assert!(listed.contains(&id) && !listed.contains(&token), "{listed}");
    let (code, out, _) = server.cli(&["token", "revoke", &id]);
    assert_eq!((code, out.trim()), (0, format!("revoked {id}").as_str()));
    let (code, _, err) = as_producer(&["queues"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unauthorized"), "revoked at once: {err}");
}

/// Without a token configured, wharf listens only on loopback unless told otherwise.
#[tokio::test]
async fn listening_on_a_public_address_without_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut refused = Command::new(wharf_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("WHARF_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = refused.kill();
            panic!("wharf serve started on a public address without a token");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = refused.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert_eq!(status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("WHARF_ADMIN_TOKEN") && last.contains("--insecure-no-auth"), "{err}");
    assert!(!dir.path().join("data").exists(), "refused before anything was created");

    let mut child = Command::new(wharf_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure-no-auth", "--log-format", "json", "--data-dir"])
        .arg(dir.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let started = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains("wharf serve is listening") {
                return true;
            }
        }
        false
    });
    let listening = started.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "--insecure-no-auth serves");
}

/// With tokens on, the server's own admin token manages everything and `/health` stays open.
#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let server = TestServer::start_secured(&[]).await;
    let anonymous = http_client(None);
    for path in ["/health", "/ready"] {
        assert_eq!(anonymous.get(server.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let resp = anonymous.get(server.url("/v1/queues")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let admin = http_client(Some(ADMIN_TOKEN));
    assert_eq!(admin.get(server.url("/v1/queues")).send().await.unwrap().status(), 200);
}
