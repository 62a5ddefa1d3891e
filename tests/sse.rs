//! Progress streams: snapshot first, every change after, closed after the end; resumable.

use serde_json::json;

use crate::common::{SseReader, TestServer};

#[tokio::test]
async fn a_job_stream_shows_the_snapshot_then_every_change_then_closes() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "render"})).await;
    let mut stream = SseReader::open(&server, &format!("/v1/jobs/{id}/events"), None).await;
    let snapshot = stream.next().await.unwrap();
    assert_eq!((snapshot.event.as_str(), snapshot.id.as_str()), ("snapshot", "1"));
    assert_eq!(snapshot.data["state"], "ready");
    assert_eq!(snapshot.data["kind"], "render");

    let job = server.lease("q", 1, 0).await.remove(0);
    let token = job["lease_token"].clone();
    let running = stream.next().await.unwrap();
    assert_eq!((running.event.as_str(), running.id.as_str()), ("state", "2"));
    assert_eq!((running.data["state"].as_str(), running.data["attempt"].as_u64()), (Some("running"), Some(1)));

    server.post(&format!("/v1/jobs/{id}/heartbeat"), json!({"lease_token": token, "progress": {"pct": 50}})).await;
    let progress = stream.next().await.unwrap();
    assert_eq!((progress.event.as_str(), progress.id.as_str()), ("progress", "3"));
    assert_eq!(progress.data["progress"], json!({"pct": 50}));

    server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": token, "result": {"url": "s3://x"}})).await;
    let done = stream.next().await.unwrap();
    assert_eq!((done.event.as_str(), done.id.as_str()), ("state", "4"));
    assert_eq!(done.data["state"], "succeeded");
    assert_eq!(done.data["result"], json!({"url": "s3://x"}));
    assert_eq!(stream.next().await, None, "the stream closes after a terminal state");
}

#[tokio::test]
async fn a_client_reconnecting_with_last_event_id_misses_nothing() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    let token = job["lease_token"].clone();
    for pct in [10, 20, 30] {
        server.post(&format!("/v1/jobs/{id}/heartbeat"), json!({"lease_token": token, "progress": pct})).await;
    }
    server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": token})).await;
    // Versions: 1 created, 2 leased, 3–5 progress, 6 succeeded. The client saw up to 3.
    let mut stream = SseReader::open(&server, &format!("/v1/jobs/{id}/events"), Some("3")).await;
    let mut replayed = Vec::new();
    while let Some(event) = stream.next().await {
        replayed.push((event.id, event.event, event.data["progress"].clone(), event.data["state"].clone()));
    }
    assert_eq!(
        replayed,
        vec![
            ("4".to_owned(), "progress".to_owned(), json!(20), json!("running")),
            ("5".to_owned(), "progress".to_owned(), json!(30), json!("running")),
            ("6".to_owned(), "state".to_owned(), json!(null), json!("succeeded")),
        ]
    );
    let mut caught_up = SseReader::open(&server, &format!("/v1/jobs/{id}/events"), Some("6")).await;
    assert_eq!(caught_up.next().await, None, "nothing missed, job finished: closes at once");
    let mut fresh = SseReader::open(&server, &format!("/v1/jobs/{id}/events"), None).await;
    let snapshot = fresh.next().await.unwrap();
    assert_eq!((snapshot.event.as_str(), snapshot.data["state"].as_str()), ("snapshot", Some("succeeded")));
    assert_eq!(fresh.next().await, None);
}

#[tokio::test]
async fn after_a_restart_a_reconnecting_client_gets_a_snapshot() {
    let mut server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    server.post(&format!("/v1/jobs/{id}/heartbeat"), json!({"lease_token": job["lease_token"], "progress": 1})).await;
    server.restart();
    // The event history is gone with the old process; the client still learns the current state.
    let mut stream = SseReader::open(&server, &format!("/v1/jobs/{id}/events"), Some("1")).await;
    let event = stream.next().await.unwrap();
    assert_eq!((event.event.as_str(), event.id.as_str()), ("snapshot", "3"));
    assert_eq!(event.data["progress"], json!(1));
}

#[tokio::test]
async fn unknown_jobs_have_no_stream() {
    let server = TestServer::start().await;
    let (status, problem) = server.get("/v1/jobs/0000000000000/events").await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("job_not_found")));
}

#[tokio::test]
async fn the_all_events_stream_filters_by_queue() {
    let server = TestServer::start().await;
    let mut stream = SseReader::open(&server, "/v1/events?queue=wanted", None).await;
    server.enqueue("other", json!({"kind": "k"})).await;
    let id = server.enqueue("wanted", json!({"kind": "k"})).await;
    let event = stream.next().await.unwrap();
    assert_eq!(event.event, "created");
    assert_eq!((event.data["id"].as_str(), event.data["queue"].as_str()), (Some(id.as_str()), Some("wanted")));
}
