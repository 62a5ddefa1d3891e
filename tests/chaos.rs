//! The fault-injection harness against the real binaries: a short run with every kind of fault
//! must check out, on the embedded store and on three nodes sharing a PostgreSQL that is itself
//! restarted; builds with fencing switched off or answers sent before the commit must not.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::wharf_bin;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A run of `WHARF_CHAOS_SECONDS` (30 by default) of faults, seeded from `WHARF_TEST_SEED`
/// when set; the verdict must be valid and the run must have done real work.
async fn run_and_check(postgres_nodes: Option<usize>, min_faults: usize) {
    let dir = scratch();
    let seconds = std::env::var("WHARF_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut config =
        wharf_chaos::Config::new(PathBuf::from(wharf_bin()), dir.path().to_owned(), Duration::from_secs(seconds));
    if let Some(nodes) = postgres_nodes {
        config = config.postgres(nodes);
    }
    if let Some(seed) = std::env::var("WHARF_TEST_SEED").ok().and_then(|s| s.parse().ok()) {
        config.seed = seed;
    }
    eprintln!("chaos seed {} (rerun with WHARF_TEST_SEED={})", config.seed, config.seed);
    let history = wharf_chaos::run(&config).await.expect("the run completes");
    let verdict = wharf_chaos::check(&history);
    eprintln!("{verdict}");
    assert!(verdict.valid(), "seed {}: {verdict}", config.seed);
    for kind in &config.faults {
        let kind = format!("{kind:?}");
        assert!(
            verdict.figures.faults.get(&kind).copied().unwrap_or(0) >= min_faults,
            "several {kind} faults: {:?}",
            verdict.figures.faults
        );
    }
    assert!(verdict.figures.jobs > 200, "the load did real work: {} jobs", verdict.figures.jobs);
    assert!(verdict.figures.redeliveries.values().sum::<usize>() > 0, "faults caused redeliveries");
    let completions = history.reports.iter().filter(|r| r.what == wharf_chaos::history::Reported::Completed).count();
    assert!(completions > 200, "the workers' logs recorded the acknowledged completions: {completions}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_every_kind_of_fault_keeps_every_guarantee() {
    run_and_check(None, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_postgresql_keep_every_guarantee_through_node_and_database_restarts() {
    run_and_check(Some(3), 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checker_catches_a_server_that_skips_fencing() {
    // The real server refuses the stale worker's completion.
    let dir = scratch();
    let history = wharf_chaos::stale_worker(wharf_bin().as_ref(), dir.path(), Vec::new()).await.expect("scenario");
    let verdict = wharf_chaos::check(&history);
    assert!(verdict.valid(), "{verdict}");
    assert_eq!(history.executions.len(), 2, "both workers ran the job");

    // The same scenario against a server with fencing switched off (a test-only failpoint).
    let dir = scratch();
    let broken = vec![("WHARF_FAILPOINTS".to_owned(), "skip_fencing".to_owned())];
    let history = wharf_chaos::stale_worker(wharf_bin().as_ref(), dir.path(), broken).await.expect("scenario");
    let verdict = wharf_chaos::check(&history);
    assert!(!verdict.valid(), "the checker must reject a server without fencing");
    let fencing = verdict.violations.iter().find(|v| v.property == "fencing").expect("a fencing counterexample");
    assert!(fencing.detail.contains("though a later lease"), "{}", fencing.detail);
    eprintln!("counterexample found, as it should be: {verdict}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checker_catches_a_server_that_answers_before_it_commits() {
    // Commits held for half a second; the server is killed the moment the answers are in.
    let slow = vec![("WHARF_FAILPOINTS".to_owned(), "slow_commit".to_owned())];
    let dir = scratch();
    let history = wharf_chaos::crash_after_acknowledgements(wharf_bin().as_ref(), dir.path(), slow).await.expect("run");
    let verdict = wharf_chaos::check(&history);
    assert!(verdict.valid(), "answers wait for the commit, so the crash loses nothing: {verdict}");
    assert_eq!(history.jobs.values().filter(|j| j.state == "succeeded").count(), 10);

    // The same with answers sent before the commit (a test-only failpoint).
    let broken = vec![("WHARF_FAILPOINTS".to_owned(), "slow_commit,ack_before_commit".to_owned())];
    let dir = scratch();
    let history =
        wharf_chaos::crash_after_acknowledgements(wharf_bin().as_ref(), dir.path(), broken).await.expect("run");
    let verdict = wharf_chaos::check(&history);
    assert!(!verdict.valid(), "the checker must reject a server that answers before committing");
    let lost = verdict
        .violations
        .iter()
        .find(|v| v.property == "acknowledged-enqueue-survives")
        .expect("a lost-enqueue counterexample");
    assert!(lost.detail.contains("does not know the job"), "{}", lost.detail);
    eprintln!("counterexample found, as it should be: {verdict}");
}
