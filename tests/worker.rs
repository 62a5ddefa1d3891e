//! `wharf worker` end to end: real server, real worker processes, real handler programs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{SseReader, TestServer, TestWorker, alive, script, wait_until};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[tokio::test]
async fn python_and_shell_handlers_succeed_with_progress_seen_over_sse_and_results() {
    let server = TestServer::start().await;
    let dir = dir();
    script(
        dir.path(),
        "handler.py",
        r#"import json, os, subprocess, sys
job = json.load(sys.stdin)
subprocess.run(["wharf", "progress", "50", "--stage", "embedding"], check=True)
print("python handled", job["doc"], "attempt", os.environ["WHARF_ATTEMPT"])
subprocess.run(["wharf", "result", json.dumps({"doc": job["doc"], "queue": os.environ["WHARF_QUEUE"]})], check=True)
"#,
    );
    script(
        dir.path(),
        "handler.sh",
        "#!/bin/sh\nset -e\npayload=$(cat)\nwharf progress --json '{\"step\":\"shell\"}'\necho \"shell handled $payload\"\nwharf result \"{\\\"kind\\\":\\\"$WHARF_KIND\\\"}\"\n",
    );
    let _py = TestWorker::start(&server, dir.path(), &["--queue", "py", "--exec", "python3 handler.py"]);
    let _sh = TestWorker::start(&server, dir.path(), &["--queue", "sh", "--exec", "./handler.sh"]);
    let py = server.enqueue("py", json!({"kind": "render", "payload": {"doc": 42}})).await;
    let sh = server.enqueue("sh", json!({"kind": "report", "payload": {"x": 1}})).await;
    for id in [&py, &sh] {
        let job = server.wait_done(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    assert_eq!(server.get(&format!("/v1/jobs/{py}")).await.1["result"], json!({"doc": 42, "queue": "py"}));
    assert_eq!(server.get(&format!("/v1/jobs/{sh}")).await.1["result"], json!({"kind": "report"}));
    // The streams, replayed from after creation, show the progress the handlers reported.
    for (id, expected) in [(&py, json!({"percent": 50.0, "stage": "embedding"})), (&sh, json!({"step": "shell"}))] {
        let mut stream = SseReader::open(&server, &format!("/v1/jobs/{id}/events"), Some("1")).await;
        let mut progress = Vec::new();
        while let Some(event) = stream.next().await {
            if event.event == "progress" {
                progress.push(event.data["progress"].clone());
            }
        }
        assert_eq!(progress, vec![expected], "job {id}");
    }
}

#[tokio::test]
async fn a_failing_handler_retries_then_dies_with_its_stderr_as_the_error() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"max_attempts": 2, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    script(dir.path(), "fail.sh", "#!/bin/sh\necho \"cannot parse HL7 segment $WHARF_ATTEMPT\" >&2\nexit 3\n");
    let _worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./fail.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.wait_done(&id).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(2)));
    let errors: Vec<&str> = job["errors"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(errors, vec!["exit code 3: cannot parse HL7 segment 1", "exit code 3: cannot parse HL7 segment 2"]);
    // Exit 100 fails for good at the first attempt.
    script(dir.path(), "permanent.sh", "#!/bin/sh\necho 'invalid document' >&2\nexit 100\n");
    let _permanent = TestWorker::start(&server, dir.path(), &["--queue", "p", "--exec", "./permanent.sh"]);
    let id = server.enqueue("p", json!({"kind": "k"})).await;
    let job = server.wait_done(&id).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(1)));
    assert_eq!(job["errors"][0]["message"], "exit code 100: invalid document");
}

/// Runs jobs through a handler that records start and end times; returns the intervals.
async fn intervals(concurrency: &str) -> Vec<(u128, u128)> {
    let server = TestServer::start().await;
    let dir = dir();
    script(
        dir.path(),
        "timed.sh",
        "#!/bin/sh\nstart=$(date +%s%N)\nsleep 0.1\necho \"$start $(date +%s%N)\" >> times.txt\n",
    );
    let _worker =
        TestWorker::start(&server, dir.path(), &["--queue", "q", "--concurrency", concurrency, "--exec", "./timed.sh"]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(server.enqueue("q", json!({"kind": "k"})).await);
    }
    for id in &ids {
        assert_eq!(server.wait_done(id).await["state"], "succeeded");
    }
    let text = std::fs::read_to_string(dir.path().join("times.txt")).unwrap();
    let mut spans: Vec<(u128, u128)> = text
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace().map(|n| n.parse::<u128>().unwrap());
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    spans.sort();
    spans
}

#[tokio::test]
async fn concurrency_one_never_runs_two_jobs_at_once() {
    let spans = intervals("1").await;
    assert_eq!(spans.len(), 6);
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlap: {pair:?}");
    }
    // The same measurement does see overlap when it is allowed.
    let spans = intervals("3").await;
    assert!(spans.windows(2).any(|p| p[1].0 < p[0].1), "concurrency 3 ran jobs together: {spans:?}");
}

#[tokio::test]
async fn a_timed_out_handler_and_its_whole_process_group_are_killed() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"max_attempts": 1})).await;
    // The handler starts a child in its group, and ignores SIGTERM itself.
    script(
        dir.path(),
        "stuck.sh",
        "#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho $! > child.pid\necho $$ > shell.pid\nwait\n",
    );
    let _worker =
        TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./stuck.sh", "--kill-grace", "300ms"]);
    let id = server.enqueue("q", json!({"kind": "k", "timeout_ms": 500})).await;
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "dead");
    let message = job["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("timed out after 500ms"), "{message}");
    for file in ["child.pid", "shell.pid"] {
        let pid: u32 = std::fs::read_to_string(dir.path().join(file)).unwrap().trim().parse().unwrap();
        assert!(!alive(pid), "{file} ({pid}) survived the timeout");
    }
}

#[tokio::test]
async fn a_job_of_a_killed_worker_is_leased_again_after_its_lease_and_completes() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 1000, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    // The first attempt hangs; later ones succeed.
    script(
        dir.path(),
        "once.sh",
        "#!/bin/sh\nif [ \"$WHARF_ATTEMPT\" = 1 ]; then echo $$ > hung.pid; exec sleep 300; fi\nwharf result '\"second time lucky\"'\n",
    );
    // `exec` makes the script the worker's direct child, which the kernel kills with the worker.
    let mut first = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "exec ./once.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    server.wait_state(&id, "running").await;
    while !dir.path().join("hung.pid").exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill9();
    let hung: u32 = std::fs::read_to_string(dir.path().join("hung.pid")).unwrap().trim().parse().unwrap();
    let _second = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./once.sh"]);
    let job = server.wait_done(&id).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(2)));
    assert_eq!(job["errors"][0]["message"], "lease expired");
    assert_eq!(job["result"], "second time lucky");
    assert!(!alive(hung), "the dead worker's handler was killed with it");
}

#[tokio::test]
async fn sigterm_lets_jobs_finish_within_the_grace_then_releases_the_rest_at_once() {
    let server = TestServer::start().await;
    let dir = dir();
    // A lease of a minute: any job that waited for its lease to run out would show.
    server.put("/v1/queues/q", json!({"lease_ms": 60_000})).await;
    script(
        dir.path(),
        "work.sh",
        "#!/bin/sh\nif [ -e quick ]; then exit 0; fi\ncase \"$(cat)\" in *short*) sleep 0.5 ;; *) sleep 300 ;; esac\n",
    );
    let mut worker = TestWorker::start(
        &server,
        dir.path(),
        &["--queue", "q", "--concurrency", "3", "--grace", "2s", "--exec", "./work.sh"],
    );
    let short = server.enqueue("q", json!({"kind": "k", "payload": "short"})).await;
    let long1 = server.enqueue("q", json!({"kind": "k", "payload": "long"})).await;
    let long2 = server.enqueue("q", json!({"kind": "k", "payload": "long"})).await;
    for id in [&short, &long1, &long2] {
        server.wait_state(id, "running").await;
    }
    let queued = server.enqueue("q", json!({"kind": "k", "payload": "short"})).await;
    let signaled = Instant::now();
    worker.signal("TERM");
    let code = worker.wait_exit(Duration::from_secs(10));
    let took = signaled.elapsed();
    assert_eq!(code, Some(0), "clean exit");
    assert!(took <= Duration::from_secs(3), "exited within the grace period plus a second: {took:?}");
    assert_eq!(server.state(&short).await, "succeeded", "a job that finished within the grace completed");
    for id in [&long1, &long2] {
        let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            (job["state"].as_str(), job["attempt"].as_u64()),
            (Some("ready"), Some(0)),
            "released, attempt not counted"
        );
    }
    assert_eq!(server.state(&queued).await, "ready", "nothing new was leased after SIGTERM");
    // Another worker takes them at once, not after the minute-long lease.
    std::fs::write(dir.path().join("quick"), "").unwrap();
    let picked = Instant::now();
    let _next = TestWorker::start(&server, dir.path(), &["--queue", "q", "--concurrency", "3", "--exec", "./work.sh"]);
    for id in [&long1, &long2, &queued] {
        assert_eq!(server.wait_done(id).await["state"], "succeeded");
    }
    assert!(picked.elapsed() < Duration::from_secs(30), "no job waited for its lease to expire");
}

#[tokio::test]
async fn a_second_signal_stops_running_jobs_at_once_and_still_releases_them() {
    let server = TestServer::start().await;
    let dir = dir();
    script(dir.path(), "long.sh", "#!/bin/sh\nexec sleep 300\n");
    let mut worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--grace", "60s", "--exec", "./long.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    server.wait_state(&id, "running").await;
    worker.signal("TERM");
    wait_until("the worker is draining", || worker.log_text().contains("draining")).await;
    let signaled = Instant::now();
    worker.signal("INT");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(signaled.elapsed() < Duration::from_secs(3), "did not wait out the 60 s grace");
    assert_eq!(server.state(&id).await, "ready");
}

#[tokio::test]
async fn workers_reconnect_after_a_server_restart_and_the_queue_drains() {
    let mut server = TestServer::start().await;
    let dir = dir();
    script(dir.path(), "ok.sh", "#!/bin/sh\nexit 0\n");
    let worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--concurrency", "4", "--exec", "./ok.sh"]);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(server.enqueue("q", json!({"kind": "k"})).await);
    }
    // A real outage: the worker notices it and backs off, then finds the server again.
    server.kill9();
    wait_until("the worker noticed the outage", || worker.log_text().contains("cannot reach the server")).await;
    server.restart();
    for _ in 0..10 {
        ids.push(server.enqueue("q", json!({"kind": "k"})).await);
    }
    for id in &ids {
        assert_eq!(server.wait_done(id).await["state"], "succeeded", "job {id}");
    }
}

#[tokio::test]
async fn misbehaving_handlers_get_clear_errors_and_the_worker_carries_on() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"max_attempts": 2, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "x".repeat(1024 * 1024))).unwrap();
    script(
        dir.path(),
        "bad.sh",
        r#"#!/bin/sh
case "$(cat)" in
  *garbage*) head -c 200000 /dev/urandom; printf 'no newline at the end' ;;
  *huge*) wharf result @big.json ;;
  *forks*) sleep 300 & echo $! > forked.pid; (sleep 300 &); echo "left children behind" ;;
  *stderr*) head -c 100000 /dev/zero | tr '\0' 'e' >&2; echo " the real cause" >&2; exit 1 ;;
esac
"#,
    );
    let mut worker = TestWorker::start(
        &server,
        dir.path(),
        &["--queue", "q", "--concurrency", "2", "--exec", "./bad.sh", "--health-addr", "127.0.0.1:0"],
    );
    let garbage = server.enqueue("q", json!({"kind": "k", "payload": "garbage"})).await;
    let huge = server.enqueue("q", json!({"kind": "k", "payload": "huge"})).await;
    let forks = server.enqueue("q", json!({"kind": "k", "payload": "forks"})).await;
    let stderr = server.enqueue("q", json!({"kind": "k", "payload": "stderr"})).await;
    assert_eq!(server.wait_done(&garbage).await["state"], "succeeded", "garbage on stdout is only logged");
    let job = server.wait_done(&huge).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(1)), "failed for good: {job}");
    let message = job["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the result could not be stored") && message.contains("limit"),
        "{message}\n{job}\n{}",
        worker.log_text()
    );
    assert_eq!(server.wait_done(&forks).await["state"], "succeeded");
    let forked: u32 = std::fs::read_to_string(dir.path().join("forked.pid")).unwrap().trim().parse().unwrap();
    assert!(!alive(forked), "children left behind are killed with the handler's group");
    let job = server.wait_done(&stderr).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(2)), "exit 1 retries: {job}");
    let message = job["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("exit code 1: ") && message.ends_with("the real cause"),
        "the tail of stderr: {}",
        &message[..80.min(message.len())]
    );
    assert!(message.len() < 10_000, "error messages are bounded");
    assert!(worker.wait_exit(Duration::from_millis(10)).is_none(), "the worker is still running");
    let ok = server.enqueue("q", json!({"kind": "k", "payload": "fine"})).await;
    assert_eq!(server.wait_done(&ok).await["state"], "succeeded");
    let log = worker.log_text();
    assert!(
        log.lines().any(|l| l.contains("no newline at the end") && l.contains(&garbage)),
        "stdout lines carry the job id"
    );
}

#[tokio::test]
async fn a_canceled_running_job_is_stopped_and_ends_canceled() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 600})).await;
    script(dir.path(), "long.sh", "#!/bin/sh\necho $$ > long.pid\nexec sleep 300\n");
    let _worker =
        TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./long.sh", "--kill-grace", "200ms"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    server.wait_state(&id, "running").await;
    server.post_raw(&format!("/v1/jobs/{id}/cancel"), "").await;
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "canceled");
    let pid: u32 = std::fs::read_to_string(dir.path().join("long.pid")).unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "the handler was stopped");
}

#[tokio::test]
async fn the_health_endpoint_and_the_workers_list_show_a_running_worker() {
    let server = TestServer::start().await;
    let dir = dir();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    script(dir.path(), "slow.sh", "#!/bin/sh\nexec sleep 300\n");
    let addr = format!("127.0.0.1:{port}");
    let _worker = TestWorker::start(
        &server,
        dir.path(),
        &[
            "--queue",
            "q",
            "--concurrency",
            "2",
            "--worker-id",
            "pdf-worker-1",
            "--exec",
            "./slow.sh",
            "--health-addr",
            &addr,
        ],
    );
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    server.wait_state(&id, "running").await;
    // The worker counts the attempt once its task starts, a moment after the server leased it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health: Value = loop {
        if let Ok(resp) = reqwest::get(format!("http://{addr}/health")).await {
            let health: Value = resp.json().await.unwrap();
            if health["running_jobs"] == 1 || Instant::now() > deadline {
                break health;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health["state"], "running");
    assert_eq!((health["running_jobs"].as_u64(), health["concurrency"].as_u64()), (Some(1), Some(2)));
    assert!(health["last_contact_ms"].as_u64().is_some());
    let (_, list) = server.get("/v1/workers").await;
    let worker = &list["workers"][0];
    assert_eq!((worker["id"].as_str(), worker["running"].as_u64()), (Some("pdf-worker-1"), Some(1)));
    assert_eq!(worker["queues"], json!(["q"]));
    let (_, out, _) = server.cli(&["workers"]);
    assert!(out.contains("pdf-worker-1"), "{out}");
}

#[tokio::test]
async fn an_http_endpoint_handler_maps_statuses_to_outcomes() {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let calls = Arc::new(AtomicUsize::new(0));
    let app = {
        let calls = Arc::clone(&calls);
        axum::Router::new().route(
            "/jobs",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let calls = Arc::clone(&calls);
                async move {
                    let kind = headers["x-wharf-kind"].to_str().unwrap().to_owned();
                    let attempt = headers["x-wharf-attempt"].to_str().unwrap().to_owned();
                    match kind.as_str() {
                        "ok" => (StatusCode::OK, HeaderMap::new(), format!(r#"{{"echo":{body},"attempt":{attempt}}}"#)),
                        "bad" => (StatusCode::UNPROCESSABLE_ENTITY, HeaderMap::new(), "bad payload".to_owned()),
                        "gone" => (StatusCode::GONE, HeaderMap::new(), "no such document".to_owned()),
                        // The first attempt outlasts the job's timeout; the second answers.
                        "slow" if attempt == "1" => {
                            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                            (StatusCode::OK, HeaderMap::new(), "too late".to_owned())
                        }
                        "slow" => (StatusCode::OK, HeaderMap::new(), "in time".to_owned()),
                        _ if calls.fetch_add(1, Ordering::SeqCst) == 0 => {
                            let mut headers = HeaderMap::new();
                            headers.insert("retry-after", "0".parse().unwrap());
                            (StatusCode::SERVICE_UNAVAILABLE, headers, "warming up".to_owned())
                        }
                        _ => (StatusCode::OK, HeaderMap::new(), "plain text".to_owned()),
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jobs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = TestServer::start().await;
    let dir = dir();
    let _worker = TestWorker::start(&server, dir.path(), &["--queue", "web", "--concurrency", "5", "--http", &url]);
    let ok = server.enqueue("web", json!({"kind": "ok", "payload": {"n": 1}})).await;
    let bad = server.enqueue("web", json!({"kind": "bad"})).await;
    let flaky = server.enqueue("web", json!({"kind": "flaky"})).await;
    let gone = server.enqueue("web", json!({"kind": "gone"})).await;
    let slow = server.enqueue("web", json!({"kind": "slow", "timeout_ms": 300})).await;
    let job = server.wait_done(&ok).await;
    assert_eq!((job["state"].as_str(), &job["result"]), (Some("succeeded"), &json!({"echo": {"n": 1}, "attempt": 1})));
    let job = server.wait_done(&bad).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(1)));
    assert_eq!(job["errors"][0]["message"], "HTTP 422: bad payload");
    let job = server.wait_done(&flaky).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(2)));
    assert_eq!(job["errors"][0]["message"], "HTTP 503: warming up");
    assert_eq!(job["result"], "plain text");
    let job = server.wait_done(&gone).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(1)), "410 fails for good");
    let job = server.wait_done(&slow).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(2)), "{job}");
    assert!(job["errors"][0]["message"].as_str().unwrap().starts_with("timed out after 300ms"), "{job}");
    assert_eq!(job["result"], "in time");
}

#[tokio::test]
async fn rust_handlers_run_by_kind_with_typed_payloads() {
    use wharf::worker::{HandlerError, Handlers, JobContext, Shutdown, Worker, WorkerConfig};

    #[derive(serde::Deserialize)]
    struct Render {
        doc: u64,
    }

    let server = TestServer::start().await;
    server.put("/v1/queues/rust", json!({"max_attempts": 2, "lease_ms": 600})).await;
    let handlers = Handlers::new()
        .on("render", |job: JobContext, render: Render| async move {
            job.progress(&json!({"stage": "rendering"}));
            if job.attempt == 1 && render.doc == 7 {
                return Err(HandlerError::retry_after("printer jammed", Duration::from_millis(10)));
            }
            Ok::<_, HandlerError>(json!({"doc": render.doc, "pages": 3}))
        })
        .on("refuse", |_job: JobContext, _: Value| async move { Err::<(), _>(HandlerError::permanent("not today")) })
        // Works until told to stop: the cancellation token fires on the heartbeat after a cancel.
        .on("wait", |job: JobContext, _: Value| async move {
            job.cancelled().await;
            Err::<(), _>(HandlerError::retry("stopped on request"))
        });
    let mut config = WorkerConfig::new(&server.base, vec!["rust".into()]);
    config.concurrency = 4;
    config.poll_wait = Duration::from_secs(1);
    let shutdown = Shutdown::default();
    let worker = tokio::spawn(Worker::new(config, handlers).unwrap().run(shutdown.clone()));
    let ok = server.enqueue("rust", json!({"kind": "render", "payload": {"doc": 1}})).await;
    let retried = server.enqueue("rust", json!({"kind": "render", "payload": {"doc": 7}})).await;
    let mismatched = server.enqueue("rust", json!({"kind": "render", "payload": {"doc": "one"}})).await;
    let refused = server.enqueue("rust", json!({"kind": "refuse"})).await;
    let unknown = server.enqueue("rust", json!({"kind": "nobody"})).await;
    let waiting = server.enqueue("rust", json!({"kind": "wait"})).await;
    let job = server.wait_done(&ok).await;
    assert_eq!((job["state"].as_str(), &job["result"]), (Some("succeeded"), &json!({"doc": 1, "pages": 3})));
    assert_eq!(job["progress"], json!({"stage": "rendering"}));
    let job = server.wait_done(&retried).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(2)));
    assert_eq!(job["errors"][0]["message"], "printer jammed");
    let job = server.wait_done(&mismatched).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("dead"), Some(1)));
    assert!(job["errors"][0]["message"].as_str().unwrap().starts_with("the payload does not fit kind \"render\""));
    assert_eq!(server.wait_done(&refused).await["errors"][0]["message"], "not today");
    let job = server.wait_done(&unknown).await;
    assert_eq!(job["errors"][0]["message"], "this worker has no handler for kind \"nobody\"");
    server.wait_state(&waiting, "running").await;
    let (status, _) = server.post_raw(&format!("/v1/jobs/{waiting}/cancel"), "").await;
    assert_eq!(status, 200);
    let job = server.wait_done(&waiting).await;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("canceled"), Some(1)), "{job}");
    shutdown.drain.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker).await.unwrap().unwrap().unwrap();
}

/// See: issue #4. After a pause, one worker can hold a stale lease and a fresh lease of the
/// same job at once; the stale attempt ending must not unregister the fresh one, whose
/// `wharf result` would then fail.
#[tokio::test]
async fn issue_4_two_leases_of_one_job_on_one_worker_keep_their_own_results() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 1000, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    script(dir.path(), "slow.sh", "#!/bin/sh\nsleep 1.5\nwharf result \"\\\"$WHARF_ATTEMPT\\\"\"\n");
    let worker =
        TestWorker::start(&server, dir.path(), &["--queue", "q", "--concurrency", "2", "--exec", "exec ./slow.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    server.wait_state(&id, "running").await;
    worker.signal("STOP");
    // The lease runs out while the worker sleeps; when it wakes, its stale attempt is still
    // running and it leases the job afresh.
    server.wait_state(&id, "ready").await;
    worker.signal("CONT");
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["attempt"].as_u64() >= Some(2), "the job was leased again after the pause: {job}");
    assert_eq!(job["result"], job["attempt"].to_string(), "the result is the kept attempt's own: {job}");
    let errors: Vec<&str> = job["errors"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(errors.iter().all(|e| *e == "lease expired"), "no attempt failed for want of its registration: {errors:?}");
}

/// See: issue #4. A worker that was paused while a lease answer waited in its socket must not
/// start that attempt once the lease has run out: the job has been handed out again.
#[tokio::test]
async fn issue_4_a_worker_resumed_after_its_lease_ran_out_does_not_start_it() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 500, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    script(dir.path(), "record.sh", "#!/bin/sh\necho \"$WHARF_ATTEMPT\" >> attempts.txt\n");
    let worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "exec ./record.sh"]);
    // The worker is long-polling; pause it, and give its parked request a job.
    server.wait_workers(1).await;
    worker.signal("STOP");
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    server.wait_state(&id, "running").await;
    // The lease runs out while the worker sleeps: the job is ready again, its attempt spent.
    let expired = server.wait_state(&id, "ready").await;
    assert_eq!(expired["errors"][0]["message"], "lease expired");
    worker.signal("CONT");
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "succeeded");
    let attempts = std::fs::read_to_string(dir.path().join("attempts.txt")).unwrap();
    assert_eq!(attempts.trim(), job["attempt"].to_string(), "only the live lease ran; the stale one was skipped");
}

/// Waits (up to 30 s) until `condition` holds.
#[tokio::test]
async fn heartbeats_keep_a_job_that_outlasts_its_lease() {
    let server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 600})).await;
    script(dir.path(), "slow.sh", "#!/bin/sh\nsleep 2\n");
    let _worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./slow.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 1, "ran once, though it took over three leases: {job}");
    assert_eq!(job["errors"], json!([]), "{job}");
}

#[tokio::test]
async fn a_completion_made_while_the_server_is_away_lands_when_it_returns() {
    let mut server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 60_000})).await;
    script(dir.path(), "gated.sh", "#!/bin/sh\ntouch started\nwhile [ ! -e go ]; do sleep 0.02; done\n");
    let worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./gated.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    wait_until("the handler started", || dir.path().join("started").exists()).await;
    server.kill9();
    std::fs::write(dir.path().join("go"), "").unwrap();
    wait_until("the worker tried to report", || worker.log_text().contains("cannot reach the server")).await;
    server.restart();
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 1, "the completion landed; the job was not handed out again: {job}");
    assert_eq!(job["errors"], json!([]), "{job}");
}

#[tokio::test]
async fn sigterm_while_the_server_is_away_exits_within_the_grace_and_loses_nothing() {
    let mut server = TestServer::start().await;
    let dir = dir();
    server.put("/v1/queues/q", json!({"lease_ms": 3_000, "backoff_base_ms": 0, "backoff_cap_ms": 0})).await;
    script(dir.path(), "long.sh", "#!/bin/sh\ntouch started\nif [ \"$WHARF_ATTEMPT\" = 1 ]; then sleep 60; fi\n");
    let mut worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--grace", "1s", "--exec", "./long.sh"]);
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    wait_until("the handler started", || dir.path().join("started").exists()).await;
    server.kill9();
    let signaled = Instant::now();
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)), Some(0), "a clean exit");
    let took = signaled.elapsed();
    assert!(took <= Duration::from_secs(3), "exited within the grace period plus a second: {took:?}");
    assert!(worker.log_text().contains("could not release every lease in time"), "it says what it left");
    // The lease it could not release runs out on the server, and the job runs again.
    server.restart();
    let _next = TestWorker::start(&server, dir.path(), &["--queue", "q", "--exec", "./long.sh"]);
    let job = server.wait_done(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["errors"][0]["message"], "lease expired", "{job}");
}
