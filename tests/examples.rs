//! The examples run end to end, as the README tells a reader to run them.

use crate::common::{TestServer, wharf_bin};

async fn run_example(server: &TestServer, script: &str, out_dir: &std::path::Path) -> (bool, String, String) {
    let bin_dir = std::path::Path::new(wharf_bin()).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("bash")
            .arg(&script)
            .env("PATH", path)
            .env("WHARF_SERVER", &server.base)
            .env("REPORTS_DIR", out_dir)
            .env("RESULTS_DIR", out_dir)
            .env("WORKER_LOG", out_dir.join("worker.log"))
            .output(),
    )
    .await
    .expect("the example finishes within a minute")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_triage_example_renders_a_report_per_conversation() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run_example(&server, "examples/triage-report/run.sh", dir.path()).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("succeeded") && out.contains("urgency: urgent"), "{out}");
    let pdf = std::fs::read(dir.path().join("c-1002.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4") && pdf.ends_with(b"%%EOF\n"));
    let (_, queue) = server.get("/v1/queues/triage").await;
    assert_eq!(queue["counts"]["succeeded"], 2);
}

#[tokio::test]
async fn the_lab_example_runs_the_stat_lab_first_and_dead_letters_the_malformed_one() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run_example(&server, "examples/lab-results/run.sh", dir.path()).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("malformed lab went to the dead-letter queue"), "{out}");
    let stat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("L-STAT.json")).unwrap()).unwrap();
    assert_eq!((stat["flagged"].as_u64(), stat["priority_job"].as_str()), (Some(1), Some("process_stat_lab")));
    let (_, page) = server.get("/v1/queues/labs/jobs?state=succeeded").await;
    let jobs = page["jobs"].as_array().unwrap();
    let stat_job = jobs.iter().find(|j| j["kind"] == "process_stat_lab").unwrap();
    let first_routine =
        jobs.iter().filter(|j| j["kind"] == "process_pending_labs").map(|j| j["id"].as_str().unwrap()).min().unwrap();
    let started = |id: &str| {
        let server = &server;
        let id = id.to_owned();
        async move { server.get(&format!("/v1/jobs/{id}")).await.1["started_at"].as_str().unwrap().to_owned() }
    };
    assert!(
        started(stat_job["id"].as_str().unwrap()).await <= started(first_routine).await,
        "the priority-10 lab ran first"
    );
}
