//! Autoscaled pools with the `process` provider: `wharf serve` starts and stops real `wharf
//! worker` processes as the backlog rises and falls.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestServer, alive, script, wharf_bin};

/// A config file declaring one process pool on `queue` whose workers run `handler`.
fn process_pool(dir: &Path, queue: &str, min: u32, max: u32, handler: &Path) -> std::path::PathBuf {
    let command = json!([wharf_bin(), "worker", "--queue", queue, "--poll-wait", "5s", "--exec", handler]);
    crate::common::pool_config(dir, queue, min, max, &format!("{{ kind = \"process\", command = {command} }}"))
}

async fn pool(server: &TestServer, name: &str) -> Value {
    let (status, pool) = server.get(&format!("/v1/pools/{name}")).await;
    assert_eq!(status, 200, "{pool}");
    pool
}

/// Polls the pool (every 50 ms, up to 60 s) until `done` holds; returns every view seen.
async fn watch_pool(server: &TestServer, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let view = pool(server, name).await;
        let finished = done(&view);
        seen.push(view);
        if finished {
            return seen;
        }
        assert!(Instant::now() < deadline, "the pool never reached {what}: {}", seen.last().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pids_of_pool_workers(workers: &Value, pool: &str) -> Vec<u32> {
    workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["id"].as_str().is_some_and(|id| id.starts_with(&format!("{pool}-"))))
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect()
}

#[tokio::test]
async fn a_burst_scales_a_pool_from_zero_to_max_and_back_without_interrupting_a_job() {
    let dir = tempfile::tempdir().unwrap();
    // Each start of a job leaves a line: a job started twice would show twice.
    let starts = dir.path().join("starts");
    let handler = script(
        dir.path(),
        "job.sh",
        &format!("#!/bin/sh\necho \"$WHARF_JOB_ID\" >> {}\nsleep \"$(cat)\"\n", starts.display()),
    );
    let config = process_pool(dir.path(), "burst", 0, 3, &handler);
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]).await;
    let idle = pool(&server, "burst").await;
    assert_eq!(
        (idle["desired"].as_u64(), idle["actual"].as_u64(), idle["provider"].as_str()),
        (Some(0), Some(0), Some("process"))
    );

    // A burst of short jobs and one long one, which is still running when the pool scales in.
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(server.enqueue("burst", json!({"kind": "short", "payload": 0.3})).await);
    }
    let long = server.enqueue("burst", json!({"kind": "long", "payload": 7, "priority": -1})).await;
    ids.push(long.clone());

    let out = watch_pool(&server, "burst", "max", |p| p["actual"] == 3).await;
    assert_eq!(out.last().unwrap()["desired"], 3, "out to max in one step");
    let change = &out.last().unwrap()["last_change"];
    assert_eq!((change["from"].as_u64(), change["reason"].as_str()), (Some(0), Some("first_job")), "{change}");

    // Once the short jobs are done, the pool keeps the busy worker and lets the idle ones go.
    let inward = watch_pool(&server, "burst", "one worker", |p| p["desired"] == 1 && p["actual"] == 1).await;
    assert_eq!(server.get(&format!("/v1/jobs/{long}")).await.1["state"], "running", "scaled in around a busy worker");
    assert_eq!(inward.last().unwrap()["busy"], 1);
    // Then to zero after the cooldown, and the workers leave the list as they stop.
    watch_pool(&server, "burst", "zero", |p| p["desired"] == 0 && p["actual"] == 0 && p["draining"] == 0).await;
    for id in &ids {
        let job = server.wait_done(id).await;
        assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    }
    let started = std::fs::read_to_string(&starts).unwrap();
    let mut lines: Vec<&str> = started.lines().collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!((started.lines().count(), lines.len()), (13, 13), "every job started once: {started}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = server.get("/v1/workers").await.1;
        if workers["workers"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "stopped workers leave the list: {workers}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every decision was logged with its inputs, and the metrics show the pool.
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wharf_pool_desired_workers{pool=\"burst\"} 0"), "{metrics}");
    let (status, keda) = server.get("/v1/pools/burst/metrics").await;
    assert_eq!((status, keda["backlog"].as_u64(), keda["pool"].as_str()), (200, Some(0), Some("burst")));
}

#[tokio::test]
async fn a_pool_worker_that_dies_is_replaced_and_a_stopping_server_stops_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(dir.path(), "job.sh", "#!/bin/sh\ncat > /dev/null\n");
    let config = process_pool(dir.path(), "steady", 1, 1, &handler);
    let mut server = TestServer::start_with(&["--config", config.to_str().unwrap()]).await;
    server.wait_workers(1).await;
    let first = pids_of_pool_workers(&server.get("/v1/workers").await.1, "steady");
    assert_eq!(first.len(), 1, "min 1 starts one worker");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let pids = pids_of_pool_workers(&server.get("/v1/workers").await.1, "steady");
        if let Some(&pid) = pids.iter().find(|&&p| p != first[0] && alive(p)) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the dead worker was never replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = server.enqueue("steady", json!({"kind": "k"})).await;
    assert_eq!(server.wait_done(&id).await["state"], "succeeded", "the replacement works");
    assert!(server.terminate(), "the server stops cleanly");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(second) {
        assert!(Instant::now() < deadline, "a stopped server leaves no worker process behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_pool_on_three_nodes_is_scaled_by_the_leader_alone() {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(dir.path(), "job.sh", "#!/bin/sh\ncat > /dev/null\n");
    let config = process_pool(dir.path(), "shared", 2, 2, &handler);
    let url = wharf_testkit::postgres::server().fresh_database().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(TestServer::start_with(&["--database-url", &url, "--config", config.to_str().unwrap()]).await);
    }
    let pool_workers = |workers: &Value| -> Vec<String> {
        let mut ids: Vec<String> = workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "running")
            .filter_map(|w| w["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let fleet = loop {
        let running = pool_workers(&nodes[0].get("/v1/workers").await.1);
        if running.len() >= 2 {
            break running;
        }
        assert!(Instant::now() < deadline, "the fleet never started: {running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(fleet.len(), 2, "one fleet of min 2, not one per node: {fleet:?}");
    // Every node shows the leader's view of the pool.
    for node in &nodes {
        assert_eq!(pool(node, "shared").await["actual"], 2);
    }
    // The worker ids name the node that started them: all the same one, the leader.
    let starter = |id: &str| id.rsplit_once('-').map(|(node, _)| node.to_owned());
    assert_eq!(starter(&fleet[0]), starter(&fleet[1]));
    let leader = {
        let mut leader = None;
        for (i, node) in nodes.iter().enumerate() {
            let metrics = node.http.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
            if metrics.lines().any(|l| l == "wharf_leader 1") {
                leader = Some(i);
            }
        }
        leader.expect("one node leads")
    };
    nodes[leader].kill9();
    let survivor = &nodes[(leader + 1) % 3];
    // The new leader starts a fleet of its own (the old one drains with its server) and never
    // runs two: it goes on from the stored desired count.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = pool_workers(&survivor.get("/v1/workers").await.1);
        let fresh: Vec<&String> = running.iter().filter(|id| starter(id) != starter(&fleet[0])).collect();
        assert!(fresh.len() <= 2, "at most one new fleet: {running:?}");
        if fresh.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the new leader never took the pool over: {running:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = survivor.enqueue("shared", json!({"kind": "k"})).await;
    assert_eq!(survivor.wait_done(&id).await["state"], "succeeded");
}

#[tokio::test]
async fn a_worker_asked_to_drain_finishes_its_job_exits_and_leaves_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(dir.path(), "job.sh", "#!/bin/sh\nsleep \"$(cat)\"\n");
    let server = TestServer::start().await;
    let mut worker = crate::common::TestWorker::start(
        &server,
        dir.path(),
        &["--queue", "q", "--worker-id", "w-drain", "--concurrency", "2", "--exec", handler.to_str().unwrap()],
    );
    server.wait_workers(1).await;
    let id = server.enqueue("q", json!({"kind": "k", "payload": 1.5})).await;
    server.wait_state(&id, "running").await;
    let (code, out, err) = server.cli(&["workers", "drain", "w-drain"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("w-drain"), "{out}");
    let (_, out, _) = server.cli(&["workers"]);
    assert!(out.contains("draining"), "the list shows it draining: {out}");
    // A job enqueued now is not its: it leases nothing new.
    let later = server.enqueue("q", json!({"kind": "k", "payload": 0})).await;
    assert_eq!(worker.wait_exit(Duration::from_secs(30)), Some(0), "it exits once its job is done");
    let job = server.get(&format!("/v1/jobs/{id}")).await.1;
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    assert_eq!(server.get(&format!("/v1/jobs/{later}")).await.1["state"], "ready");
    let (_, workers) = server.get("/v1/workers").await;
    assert_eq!(workers["workers"], json!([]), "a stopped worker leaves the list at once");
    // Draining a worker nobody knows is a clear error.
    let (code, _, err) = server.cli(&["workers", "drain", "nobody"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("worker_not_found") || err.contains("not found"), "{err}");
}

#[tokio::test]
async fn a_pool_command_that_is_not_a_wharf_worker_is_stopped_with_sigterm_on_scale_in() {
    let dir = tempfile::tempdir().unwrap();
    // Asks for no work; exits on SIGTERM, leaving a mark.
    let stopped = dir.path().join("stopped");
    let program = script(
        dir.path(),
        "other.sh",
        &format!("#!/bin/sh\ntrap 'touch {}; exit 0' TERM\nwhile :; do sleep 0.1; done\n", stopped.display()),
    );
    let provider = json!({"kind": "process", "command": [program]});
    let provider = format!("{{ kind = \"process\", command = {} }}", provider["command"]);
    let config = crate::common::pool_config(dir.path(), "other", 0, 1, &provider);
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]).await;
    let id = server.enqueue("other", json!({"kind": "k"})).await;
    watch_pool(&server, "other", "one process", |p| p["actual"] == 1).await;
    assert_eq!(server.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await.0, 200);
    watch_pool(&server, "other", "none left", |p| p["actual"] == 0 && p["draining"] == 0).await;
    assert!(stopped.exists(), "the program got SIGTERM");
}
