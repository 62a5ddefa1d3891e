//! Soak: a long stream of jobs through the real server with short retention. Memory stays
//! flat and pruning keeps the store from growing with the total. (CI runs 100,000 jobs on the
//! debug build; `docs/RELIABILITY.md` reports a 1,000,000-job run of the release build.)

use serde_json::Value;

use crate::common::TestServer;

#[tokio::test]
async fn memory_stays_flat_and_pruning_bounds_the_store() {
    let server = TestServer::start_with(&["--prune-interval", "1s"]).await;
    let jobs: u64 = std::env::var("WHARF_SOAK_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let (code, out, err) =
        server.cli(&["bench", "--only", "soak", "--soak-jobs", &jobs.to_string(), "--soak-retention", "3s", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("bench JSON");
    let soak = &rows[0];
    assert_eq!(soak["jobs"].as_u64(), Some(jobs));
    let extra = &soak["extra"];
    eprintln!("{}", extra["summary"]);
    let rss = extra["rss_mib_at_25_50_100"].as_array().unwrap();
    let (quarter, end) = (rss[0].as_f64().unwrap(), rss[2].as_f64().unwrap());
    assert!(
        end <= quarter * 1.25 + 16.0,
        "memory grew with the job count: {quarter:.0} MiB at 25%, {end:.0} MiB at the end"
    );
    // Pruning ran during the soak: most finished jobs are gone already.
    let (_, queues) = server.get("/v1/queues").await;
    let kept: u64 =
        queues["queues"].as_array().unwrap().iter().map(|q| q["counts"]["succeeded"].as_u64().unwrap()).sum();
    assert!(kept < jobs / 2, "pruning keeps the store bounded: {kept} of {jobs} finished jobs still stored");
    let (peak, end_store) = (extra["peak_store_mib"].as_f64().unwrap(), extra["end_store_mib"].as_f64().unwrap());
    assert!(end_store <= peak, "the store stopped growing: peak {peak:.0} MiB, end {end_store:.0} MiB");
}
