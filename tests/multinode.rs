//! Many `wharf serve` nodes on one PostgreSQL: any node serves any call, they agree on every
//! job and event, and the death of any node (the leader included) loses nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{SseReader, TestServer, TestWorker};

async fn nodes(n: usize) -> (String, Vec<TestServer>) {
    let url = wharf_testkit::postgres::server().fresh_database().await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(TestServer::start_with(&["--database-url", &url]).await);
    }
    (url, nodes)
}

/// The node that leads, waiting (up to 15 s) until exactly one of `nodes` does.
async fn leader(nodes: &[&TestServer]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut leading = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let metrics = node.http.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
            if metrics.lines().any(|l| l == "wharf_leader 1") {
                leading.push(i);
            }
        }
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(Instant::now() < deadline, "leaders: {leading:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_nodes_serve_one_queue_and_agree() {
    let (_, nodes) = nodes(3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Events enqueued on A stream from B; a job enqueued on A is followed on C.
    let mut all = SseReader::open(b, "/v1/events?queue=work", None).await;
    let watched = a.enqueue("work", json!({"kind": "k"})).await;
    let mut follow = SseReader::open(c, &format!("/v1/jobs/{watched}/events"), None).await;
    assert_eq!(follow.next().await.unwrap().event, "snapshot");
    let created = all.next().await.unwrap();
    assert_eq!((created.event.as_str(), created.data["id"].as_str()), ("created", Some(watched.as_str())));
    let mut ids = vec![watched.clone()];
    for i in 0..59 {
        ids.push(nodes[i % 3].enqueue("work", json!({"kind": "k", "payload": {"i": i}})).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let _workers = [
        TestWorker::start(a, dir.path(), &["--queue", "work", "--builtin", "noop", "--concurrency", "4"]),
        TestWorker::start(c, dir.path(), &["--queue", "work", "--builtin", "noop", "--concurrency", "4"]),
    ];
    for id in &ids {
        let job = nodes[2].wait_done(id).await;
        assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    }
    let mut seen = Vec::new();
    while let Some(event) = follow.next().await {
        seen.push(event.data["state"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(seen.last().map(String::as_str), Some("succeeded"), "{seen:?}");
    // Every node counts the same jobs.
    for node in &nodes {
        let (_, queue) = node.get("/v1/queues/work").await;
        assert_eq!(queue["counts"]["succeeded"], 60, "{queue}");
    }
    // Every node lists the workers of every node.
    let (_, workers) = b.get("/v1/workers").await;
    assert_eq!(workers["workers"].as_array().map(Vec::len), Some(2), "{workers}");
}

#[tokio::test]
async fn a_client_moving_between_nodes_resumes_its_event_stream_without_a_gap() {
    let (_, nodes) = nodes(2).await;
    let (a, c) = (&nodes[0], &nodes[1]);
    let mut on_a = SseReader::open(a, "/v1/events?queue=q", None).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(a.enqueue("q", json!({"kind": "k"})).await);
    }
    let mut last = String::new();
    for id in &ids[..2] {
        let event = on_a.next().await.unwrap();
        assert_eq!(event.data["id"].as_str(), Some(id.as_str()));
        last = event.id;
    }
    drop(on_a);
    // The same event ids on every node: C replays exactly what A had not yet delivered.
    let mut on_c = SseReader::open(c, "/v1/events?queue=q", Some(&last)).await;
    for id in &ids[2..] {
        let event = on_c.next().await.unwrap();
        assert_eq!((event.event.as_str(), event.data["id"].as_str()), ("created", Some(id.as_str())));
    }
}

#[tokio::test]
async fn a_stale_token_from_one_node_is_refused_on_another() {
    let (_, nodes) = nodes(2).await;
    let (a, c) = (&nodes[0], &nodes[1]);
    let id = a.enqueue("q", json!({"kind": "k"})).await;
    let (_, answer) = a.post("/v1/lease", json!({"worker_id": "w1", "queues": ["q"], "max": 1, "lease_ms": 300})).await;
    let stale = answer["jobs"][0]["lease_token"].as_str().unwrap().to_owned();
    // The lease runs out; whichever node leads reaps it; C leases the job again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let fresh = loop {
        let (_, answer) = c.post("/v1/lease", json!({"worker_id": "w2", "queues": ["q"], "wait_ms": 1000})).await;
        if let Some(job) = answer["jobs"].as_array().and_then(|j| j.first()) {
            break job["lease_token"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the expired lease was never reaped");
    };
    let (status, problem) = c.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": stale})).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("stale_lease")), "{problem}");
    let (status, _) = a.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": fresh})).await;
    assert_eq!(status, 200, "the current lease completes from any node");
}

#[tokio::test]
async fn killing_the_leader_moves_maintenance_and_killing_any_node_loses_nothing() {
    let (_, mut nodes) = nodes(3).await;
    let first = leader(&nodes.iter().collect::<Vec<_>>()).await;
    // Acknowledged on the leader, then it dies.
    let mut acked = Vec::new();
    for i in 0..30 {
        acked.push(nodes[first].enqueue("q", json!({"kind": "k", "payload": i})).await);
    }
    let (_, answer) = nodes[(first + 1) % 3]
        .post("/v1/lease", json!({"worker_id": "w", "queues": ["q"], "max": 1, "lease_ms": 500}))
        .await;
    let abandoned = answer["jobs"][0]["id"].as_str().unwrap().to_owned();
    let delayed = nodes[(first + 1) % 3].enqueue("later", json!({"kind": "k", "delay_ms": 1500})).await;
    nodes[first].kill9();
    let survivors: Vec<&TestServer> = nodes.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, n)| n).collect();
    let next = leader(&survivors).await;
    let node = survivors[next];
    for id in &acked {
        assert_ne!(node.get(&format!("/v1/jobs/{id}")).await.0, 404, "acknowledged job {id} is there");
    }
    // The new leader reaps the abandoned lease and promotes the delayed job, within seconds.
    let reaped = node.wait_state(&abandoned, "ready").await;
    assert_eq!(reaped["errors"][0]["message"], "lease expired", "{reaped}");
    node.wait_state(&delayed, "ready").await;
    // Any other node dying loses nothing it acknowledged either.
    let other = nodes.iter().position(|n| n.pid() != 0 && n.pid() != survivors[next].pid()).unwrap();
    let mut more = Vec::new();
    for _ in 0..20 {
        more.push(nodes[other].enqueue("q", json!({"kind": "k"})).await);
    }
    nodes[other].kill9();
    let last = nodes.iter().find(|n| n.pid() != 0).unwrap();
    for id in more {
        let (status, job): (u16, Value) = last.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
    }
}

#[tokio::test]
async fn nodes_reach_postgresql_over_verified_tls() {
    let pki = crate::common::pki::Pki::new();
    let leaf = pki.leaf(1, "postgres");
    let pg = tokio::task::spawn_blocking(move || {
        wharf_testkit::postgres::PgServer::start_with_tls(&leaf.cert_pem, &leaf.key_pem)
    })
    .await
    .unwrap()
    .expect("a PostgreSQL serving TLS");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let url = format!("postgres://wharf@localhost:{}/postgres?sslmode=require", pg.port);

    // A certificate nobody vouches for: refused at start, with the cause on one line.
    let refused = tokio::process::Command::new(crate::common::wharf_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .output();
    let refused = tokio::time::timeout(Duration::from_secs(30), refused).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("certificate"), "the cause names the certificate: {stderr}");

    // With the CA: the node serves, and every connection it holds is encrypted.
    let ca = ca.to_str().unwrap();
    let node = TestServer::start_with(&["--database-url", &url, "--database-ca-file", ca]).await;
    let id = node.enqueue("tls", json!({"kind": "k"})).await;
    let (status, job) = node.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!((status, job["state"].as_str()), (200, Some("ready")), "{job}");
    let (client, connection) =
        tokio_postgres::connect(&format!("postgres://wharf@127.0.0.1:{}/postgres", pg.port), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 3, "the pool, the event listener and the leader's lock: {encrypted} encrypted");
    assert_eq!(plain, 0, "no plain connection from the node");
}
