//! Storage faults: a disk that fills up, and database files damaged before a start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::{TestServer, serve_refuses};

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "this test mounts a small tmpfs to fill it up; run the tests as root (as CI does)"
        );
        SmallDisk(path.to_owned())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_keeps_what_was_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("data"), "3m");
    let server = TestServer::start_at(&disk.0).await;
    let payload = "p".repeat(60 * 1024);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..500 {
        let (status, body) =
            server.post("/v1/queues/q/jobs", json!({"kind": "k", "payload": {"i": i, "fill": payload}})).await;
        if status == 201 {
            acknowledged.push((body["id"].as_str().unwrap().to_owned(), i));
        } else {
            refusal = Some((status, body));
            break;
        }
    }
    let (status, problem) = refusal.expect("the disk filled up");
    assert_eq!((status, problem["code"].as_str()), (507, Some("insufficient_storage")), "{problem}");
    assert!(acknowledged.len() > 5, "some jobs fit before the disk was full");
    assert_eq!(server.get("/health").await.0, 200, "the server is still up");
    for (id, i) in &acknowledged {
        let (status, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "acknowledged job {id} survives a full disk");
        assert_eq!(job["payload"]["i"], *i);
    }
    // Space comes back: writes work again, and nothing acknowledged was damaged.
    disk.resize("64m");
    let mut recovered = false;
    for _ in 0..50 {
        let (status, _) = server.post("/v1/queues/q/jobs", json!({"kind": "k", "payload": "after"})).await;
        if status == 201 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "enqueue works again once space is freed");
    let (_, queue) = server.get("/v1/queues/q").await;
    assert_eq!(queue["counts"]["ready"].as_u64(), Some(acknowledged.len() as u64 + 1));
    let job = server.lease("q", 1, 0).await.remove(0);
    let (status, _) = server
        .post(&format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()), json!({"lease_token": job["lease_token"]}))
        .await;
    assert_eq!(status, 200);
}

/// Fills a store with jobs, stops the server cleanly, and returns its data dir.
async fn filled_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start_at(&data).await;
    let jobs: Vec<_> = (0..2_000).map(|i| json!({"kind": "k", "payload": {"i": i, "text": "x".repeat(200)}})).collect();
    let (status, _) = server.post("/v1/queues/q/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, 201);
    assert!(server.terminate(), "clean stop");
    (dir, data)
}

#[tokio::test]
async fn a_truncated_database_is_refused_at_start_with_a_clear_error() {
    let (_dir, data) = filled_store().await;
    let db = data.join("wharf.db");
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 100_000, "the store holds the jobs in its main file after a clean stop");
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(size / 2).unwrap();
    let (code, err) = serve_refuses(&data);
    assert_eq!(code, 1);
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(err.contains("wharf.db") && (err.contains("damaged") || err.contains("not a usable")), "{err}");
}

#[tokio::test]
async fn a_database_with_flipped_bytes_is_refused_at_start() {
    let (_dir, data) = filled_store().await;
    let db = data.join("wharf.db");
    let mut bytes = std::fs::read(&db).unwrap();
    // Scribble over the middle of the file, where table and index pages are.
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let (code, err) = serve_refuses(&data);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("damaged") || err.contains("not a usable"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("wharf.db"), b"this is a spreadsheet, not a job store".repeat(200)).unwrap();
    let (code, err) = serve_refuses(&data);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: ") && err.contains("not a usable wharf database"), "{err}");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let server = TestServer::start().await;
    let (code, err) = serve_refuses(&server.data_dir());
    assert_eq!(code, 1);
    assert!(err.contains("in use by another wharf server"), "{err}");
    assert_eq!(server.get("/health").await.0, 200, "the first one is unharmed");
}
