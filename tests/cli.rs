//! The command line against a real server: tables for people, JSON for scripts, one-line errors.

use serde_json::{Value, json};

use crate::common::{TestServer, wharf_bin};

#[tokio::test]
async fn enqueue_and_inspect_from_the_command_line() {
    let server = TestServer::start().await;
    let (code, out, err) = server.cli(&[
        "enqueue",
        "pdf",
        "render",
        "--payload",
        r#"{"id":7}"#,
        "--priority",
        "3",
        "--meta",
        "tenant=acme",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!((job["state"].as_str(), job["priority"].as_i64()), (Some("ready"), Some(3)));

    let (code, out, _) = server.cli(&["enqueue", "pdf", "render", "--delay", "5m"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("enqueued ") && out.contains("(scheduled)"), "{out}");

    let (_, out, _) = server.cli(&["jobs", "pdf"]);
    assert!(out.contains(&id) && out.contains("render") && out.contains("ready"), "{out}");
    let (_, out, _) = server.cli(&["jobs", "pdf", "--state", "scheduled", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1));

    let (_, out, _) = server.cli(&["queues"]);
    let row = out.lines().find(|l| l.trim_start().starts_with("pdf")).unwrap_or_default();
    assert_eq!(row.split_whitespace().take(3).collect::<Vec<_>>(), vec!["pdf", "1", "1"], "{out}");

    let (code, out, _) = server.cli(&["job", &id]);
    assert_eq!(code, 0);
    assert!(out.contains(r#"{"id":7}"#) && out.contains("render"), "{out}");
    let (_, out, _) = server.cli(&["job", &id, "--json"]);
    let full: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(full["metadata"], json!({"tenant": "acme"}));

    let (code, out, _) = server.cli(&["enqueue", "pdf", "render", "--key", "k1"]);
    assert_eq!(code, 0);
    let (_, again, _) = server.cli(&["enqueue", "pdf", "render", "--key", "k1"]);
    assert!(out.starts_with("enqueued") && again.starts_with("already enqueued"), "{again}");
}

#[tokio::test]
async fn dead_jobs_are_listed_and_redriven() {
    let server = TestServer::start().await;
    let id = server.enqueue("lab", json!({"kind": "process_pending_labs", "max_attempts": 1})).await;
    let job = server.lease("lab", 1, 0).await.remove(0);
    server
        .post(&format!("/v1/jobs/{id}/fail"), json!({"lease_token": job["lease_token"], "error": "HL7 parse error"}))
        .await;
    let (code, out, _) = server.cli(&["dead", "lab"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("HL7 parse error"), "{out}");
    let (code, out, _) = server.cli(&["redrive", "lab"]);
    assert_eq!(code, 0);
    assert!(out.contains("redrove 1 dead job"), "{out}");
    assert_eq!(server.state(&id).await, "ready");
    let (_, out, _) = server.cli(&["dead", "lab"]);
    assert!(out.contains("no dead jobs"), "{out}");
}

#[tokio::test]
async fn cancel_pause_and_resume() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let (_, out, _) = server.cli(&["pause", "q"]);
    assert_eq!(out.trim(), "paused q");
    assert!(server.lease("q", 1, 0).await.is_empty());
    let (_, out, _) = server.cli(&["resume", "q"]);
    assert_eq!(out.trim(), "resumed q");
    let (code, out, _) = server.cli(&["cancel", &id]);
    assert_eq!((code, out.trim().to_owned()), (0, format!("canceled {id}")));
}

#[tokio::test]
async fn follow_streams_until_the_job_finishes_and_exits_by_outcome() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let follow = tokio::process::Command::new(wharf_bin())
        .args(["job", &id, "--follow"])
        .env("WHARF_SERVER", &server.base)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let job = server.lease("q", 1, 0).await.remove(0);
    let token = job["lease_token"].clone();
    server
        .post(&format!("/v1/jobs/{id}/heartbeat"), json!({"lease_token": token, "progress": {"stage": "embedding"}}))
        .await;
    server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": token, "result": "done"})).await;
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(20), follow.wait_with_output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("succeeded") && text.contains(r#""done""#), "{text}");

    let dead = server.enqueue("q", json!({"kind": "k", "max_attempts": 1})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    server.post(&format!("/v1/jobs/{dead}/fail"), json!({"lease_token": job["lease_token"], "error": "no"})).await;
    let (code, out, _) = server.cli(&["job", &dead, "--follow"]);
    assert_eq!(code, 3, "a job that ended dead exits 3: {out}");
}

#[tokio::test]
async fn errors_are_one_line_with_the_cause() {
    let server = TestServer::start().await;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["enqueue", "q", "k", "--payload", "{bad"], "--payload is not valid JSON"),
        (vec!["enqueue", "q", "k", "--delay", "5 parsecs"], "--delay"),
        (vec!["enqueue", "bad name", "k"], "invalid_queue_name"),
        (vec!["enqueue", "q", "k", "--priority", "9999999"], "priority"),
        (vec!["job", "0000000000000"], "not found"),
        (vec!["jobs", "q", "--state", "bogus"], "unknown state"),
        (vec!["redrive", "nope"], "queue_not_found"),
    ];
    for (args, expected) in cases {
        let (code, out, err) = server.cli(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(server.get("/v1/queues").await.1["queues"].as_array().map(Vec::len), Some(0), "nothing was created");
    let out =
        std::process::Command::new(wharf_bin()).args(["queues", "--server", "http://127.0.0.1:1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.starts_with("error: cannot reach the wharf server at http://127.0.0.1:1"), "{err}");
}

/// Every default measurement of `wharf bench`, at a small size: each runs to the end and
/// reports the jobs it was asked for, and the jobs really went through the server.
#[tokio::test]
async fn bench_runs_every_measurement_and_its_jobs_reach_the_server() {
    let server = TestServer::start().await;
    let (code, out, err) = server.cli(&[
        "bench",
        "--json",
        "--jobs",
        "300",
        "--batch",
        "100",
        "--batch-jobs",
        "1000",
        "--e2e-jobs",
        "1000",
        "--pickup-jobs",
        "20",
        "--pickup-rate",
        "200",
        "--worker-jobs",
        "200",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("bench JSON");
    let measured: Vec<&str> = rows.iter().map(|r| r["measure"].as_str().unwrap_or("")).collect();
    for name in ["floor", "enqueue", "batch", "e2e", "pickup", "workers"] {
        assert!(measured.contains(&name), "{name} measured: {measured:?}");
    }
    let floor = rows.iter().find(|r| r["measure"] == "floor").unwrap()["jobs_per_second"].as_f64().unwrap();
    for row in &rows {
        assert!(row["jobs"].as_u64() > Some(0) && row["jobs_per_second"].as_f64() > Some(0.0), "{row}");
        assert!(row["p50_ms"].as_f64() <= row["p99_ms"].as_f64(), "{row}");
        // Every throughput is also given against the floor's.
        if row["measure"] != "pickup" {
            let of_floor = row["of_floor"].as_f64().unwrap();
            assert!((of_floor - row["jobs_per_second"].as_f64().unwrap() / floor).abs() < 1e-9, "{row}");
        }
    }
    // Pickup comes with the round trip of a lone request at the same rate, its floor.
    let settings: Vec<&str> =
        rows.iter().filter(|r| r["measure"] == "pickup").filter_map(|r| r["setting"].as_str()).collect();
    assert!(settings.iter().any(|s| s.ends_with("GET /health sent → answered")), "{settings:?}");
    let jobs_of = |name: &str| rows.iter().find(|r| r["measure"] == name).and_then(|r| r["jobs"].as_u64());
    assert_eq!(jobs_of("enqueue"), Some(300));
    assert_eq!(jobs_of("batch"), Some(1000));
    assert_eq!(jobs_of("e2e"), Some(1000));
    // Everything enqueued was created on the server, and everything run finished there.
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let enqueued: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("wharf_jobs_enqueued_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(enqueued >= 300.0 + 1000.0 + 1000.0 + 20.0 + 200.0, "jobs created: {enqueued}");
}

/// `wharf bench --only watched` runs end to end twice without and twice with an overview's
/// reader connected, and that reader gets the events of the jobs it watched.
#[tokio::test]
async fn bench_watched_compares_end_to_end_with_and_without_an_open_overview() {
    let server = TestServer::start().await;
    let (code, out, err) = server.cli(&["bench", "--json", "--only", "watched", "--e2e-jobs", "500"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("bench JSON");
    let settings: Vec<&str> = rows.iter().map(|r| r["setting"].as_str().unwrap()).collect();
    assert_eq!(settings.len(), 4, "{settings:?}");
    for (row, watched) in rows.iter().zip([false, true, false, true]) {
        assert_eq!(row["measure"], "watched");
        assert_eq!(row["jobs"].as_u64(), Some(500), "{row}");
        assert_eq!(row["setting"].as_str().unwrap().starts_with("overview open"), watched, "{row}");
    }
    let summary = rows[3]["extra"]["summary"].as_str().unwrap();
    // Each watched run's 500 jobs were leased and succeeded: two events each at least.
    let events: u64 = summary.split("; ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!(events >= 2 * 2 * 500, "{summary}");
}

/// `wharf bench --only large` times leases before and after filling one queue, and leaves no
/// job of it waiting: every job it enqueued has finished.
#[tokio::test]
async fn bench_large_fills_one_queue_times_leases_and_runs_every_job() {
    let server = TestServer::start().await;
    let (code, out, err) = server.cli(&[
        "bench",
        "--json",
        "--only",
        "large",
        "--large-finished",
        "3000",
        "--large-ready",
        "700",
        "--large-samples",
        "50",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("bench JSON");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row["measure"], "large");
        assert_eq!(row["jobs"].as_u64(), Some(50), "{row}");
        assert!(row["p50_ms"].as_f64() > Some(0.0) && row["p50_ms"].as_f64() <= row["p99_ms"].as_f64(), "{row}");
    }
    assert!(rows[1]["extra"]["p50_ratio"].as_f64() > Some(0.0), "{}", rows[1]);
    let (_, queues) = server.get("/v1/queues").await;
    let queue = queues["queues"].as_array().unwrap().iter().find(|q| q["name"].as_str().unwrap().ends_with("-large"));
    let counts = &queue.expect("the bench queue")["counts"];
    assert_eq!(counts["ready"], 0, "{counts}");
    assert_eq!(counts["succeeded"].as_u64(), Some(50 + 3000 + 700), "{counts}");
}

/// `wharf scale simulate` on each sample trace, with the default cooldowns (60 s / 300 s): every
/// job runs, wharf asks for the workers a burst needs at once, never stops a busy one and pays
/// within 20 % of the oracle's worker-seconds; a bad trace is one line naming its line.
#[test]
fn scale_simulate_replays_the_sample_traces() {
    let traces = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/traces");
    for (name, max) in [("steady", "20"), ("burst", "20"), ("diurnal", "40"), ("idle-then-burst", "20")] {
        let trace = traces.join(format!("{name}.txt"));
        let out = std::process::Command::new(wharf_bin())
            .args(["scale", "simulate", "--json", "--target", "1", "--max", max])
            .arg("--trace")
            .arg(&trace)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let row = |rule: &str| rows.iter().find(|r| r["rule"] == rule).unwrap_or_else(|| panic!("{name}: no {rule}"));
        let (wharf, oracle) = (row("wharf"), row("oracle"));
        assert_eq!(wharf["jobs"], oracle["jobs"], "{name}: every job ran");
        assert_eq!(wharf["scale_out_delay"], 0, "{name}");
        assert_eq!(wharf["busy_stopped"], 0, "{name}");
        let ratio = wharf["of_oracle"].as_f64().unwrap();
        assert!((1.0..1.2).contains(&ratio), "{name}: worker-seconds {ratio}× the oracle's");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "0 1 10\n5 lots 10\n").unwrap();
    let out =
        std::process::Command::new(wharf_bin()).args(["scale", "simulate", "--trace"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 2") && err.contains("COUNT"), "{err}");
}
