//! Soak: a long stream of jobs through the real server with short retention. Memory stays
//! flat and pruning keeps the store from growing with the total. (CI runs 100,000 jobs on the
//! debug build; `docs/RELIABILITY.md` reports a 1,000,000-job run of the release build.)

use serde_json::Value;

use crate::common::TestServer;

/// Runs `wharf bench --only soak` for `jobs` jobs; returns its row.
fn soak(server: &TestServer, jobs: u64) -> Value {
    let (code, out, err) =
        server.cli(&["bench", "--only", "soak", "--soak-jobs", &jobs.to_string(), "--soak-retention", "3s", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("bench JSON");
    assert_eq!(rows[0]["jobs"].as_u64(), Some(jobs));
    eprintln!("{}", rows[0]["extra"]["summary"]);
    rows[0].clone()
}

/// Resident memory in MiB at 25%, 50% and 100% of a soak run.
fn rss(row: &Value) -> Vec<f64> {
    row["extra"]["rss_mib_at_25_50_100"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[tokio::test]
async fn memory_stays_flat_and_pruning_bounds_the_store() {
    let server = TestServer::start_with(&["--prune-interval", "1s"]).await;
    let jobs: u64 = std::env::var("WHARF_SOAK_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    // Two halves: the database file (its log aside, which comes and goes with checkpoints)
    // must end the second about where it ended the first.
    let database = server.data_dir().join("wharf.db");
    let mib = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len() as f64 / 1_048_576.0).unwrap();
    let first = soak(&server, jobs / 2);
    let after_first = mib(&database);
    let second = soak(&server, jobs / 2);
    let after_second = mib(&database);
    eprintln!("database file: {after_first:.1} MiB after {} jobs, {after_second:.1} MiB after {jobs}", jobs / 2);
    assert!(
        after_second <= after_first * 1.25 + 2.0,
        "the store grew with the job count: {after_first:.1} MiB after half the jobs, {after_second:.1} MiB after all"
    );
    let (quarter, end) = (rss(&first)[0], rss(&second)[2]);
    assert!(
        end <= quarter * 1.25 + 16.0,
        "memory grew with the job count: {quarter:.0} MiB at an eighth of the jobs, {end:.0} MiB at the end"
    );
    // Pruning ran during the soak: most finished jobs are gone already.
    let (_, queues) = server.get("/v1/queues").await;
    let kept: u64 =
        queues["queues"].as_array().unwrap().iter().map(|q| q["counts"]["succeeded"].as_u64().unwrap()).sum();
    assert!(kept < jobs / 2, "pruning keeps the store bounded: {kept} of {jobs} finished jobs still stored");
}
