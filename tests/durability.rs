//! Durability: `kill -9` of the server at random moments under load loses nothing it
//! acknowledged. Every enqueue answered 2xx is present after restart, and every completion
//! answered 2xx is still `succeeded`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestServer;

#[derive(Default)]
struct History {
    enqueued: HashSet<String>,
    completed: HashSet<String>,
}

/// Producers and consumers against `base` until they fail (the server died).
async fn load(base: String, history: Arc<Mutex<History>>, round: u64) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let (http, base, history) = (http.clone(), base.clone(), Arc::clone(&history));
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"kind": "k", "payload": {"round": round, "producer": p, "i": i}});
                let resp = http.post(format!("{base}/v1/queues/d/jobs")).json(&body).send().await;
                let Ok(resp) = resp else { return };
                if resp.status() != 201 {
                    return;
                }
                let Ok(job) = resp.json::<Value>().await else { return };
                history.lock().unwrap().enqueued.insert(job["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    for c in 0..2u64 {
        let (http, base, history) = (http.clone(), base.clone(), Arc::clone(&history));
        tasks.push(tokio::spawn(async move {
            loop {
                let body = json!({"worker_id": format!("c{c}"), "queues": ["d"], "max": 10, "wait_ms": 100});
                let Ok(resp) = http.post(format!("{base}/v1/lease")).json(&body).send().await else { return };
                let Ok(leased) = resp.json::<Value>().await else { return };
                for job in leased["jobs"].as_array().cloned().unwrap_or_default() {
                    let id = job["id"].as_str().unwrap().to_owned();
                    let body = json!({"lease_token": job["lease_token"], "result": "ok"});
                    let Ok(resp) = http.post(format!("{base}/v1/jobs/{id}/complete")).json(&body).send().await else {
                        return;
                    };
                    if resp.status() == 200 {
                        history.lock().unwrap().completed.insert(id);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let seed = std::env::var("WHARF_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("durability seed {seed} (rerun with WHARF_TEST_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut server = TestServer::start().await;
    let history = Arc::new(Mutex::new(History::default()));
    for round in 0..6 {
        let load = tokio::spawn(load(server.base.clone(), Arc::clone(&history), round));
        tokio::time::sleep(Duration::from_millis(rng.u64(50..400))).await;
        server.kill9();
        load.await.unwrap();
        server.restart();
    }
    let history = Arc::try_unwrap(history).ok().unwrap().into_inner().unwrap();
    assert!(history.enqueued.len() > 100, "the load did real work: {} enqueues", history.enqueued.len());
    assert!(!history.completed.is_empty(), "the load completed jobs");
    for id in &history.enqueued {
        let (status, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "acknowledged enqueue {id} is missing after kill -9 (seed {seed})");
        if history.completed.contains(id) {
            assert_eq!(job["state"], "succeeded", "acknowledged completion of {id} was lost (seed {seed})");
            assert_eq!(job["result"], "ok");
        }
    }
    let (_, queue) = server.get("/v1/queues/d").await;
    let counts = &queue["counts"];
    let total: u64 = ["scheduled", "ready", "running", "succeeded", "dead", "canceled"]
        .iter()
        .map(|s| counts[*s].as_u64().unwrap())
        .sum();
    assert!(total >= history.enqueued.len() as u64, "counts after restart cover every acknowledged job");
}
