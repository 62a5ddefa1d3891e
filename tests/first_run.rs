//! What a newcomer meets first: `./scripts/run`, the CLI's output and errors, the workers' logs.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestServer, TestWorker, wait_until, wharf_bin};

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `./scripts/run` started in the background on its own ports and data dir, using the binary
/// under test instead of building one.
struct RunScript {
    child: std::process::Child,
    stdout: std::path::PathBuf,
}

impl RunScript {
    fn start(data: &Path, listen: &str, health: &str, out: &Path) -> Self {
        let stdout = out.to_owned();
        let child = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run"))
            .env("WHARF_BIN", wharf_bin())
            .env("WHARF_DATA_DIR", data)
            .env("WHARF_LISTEN", listen)
            .env("WHARF_HEALTH_ADDR", health)
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start scripts/run");
        RunScript { child, stdout }
    }

    /// Waits (up to 60 s) until the script says wharf is running.
    fn wait_running(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if out.contains("wharf is running") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                let _ = self.child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                panic!("scripts/run exited {status}:\n{out}\n{err}");
            }
            assert!(std::time::Instant::now() < deadline, "scripts/run never said it was running:\n{out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM (as Ctrl-C would stop it) and waits for it to exit.
    fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().ok()?.code()
    }
}

/// `./scripts/run` started twice on one data dir: the second stops at once with a clear
/// message and a non-zero exit, and the first keeps running with its logs intact.
#[tokio::test]
async fn the_run_script_started_twice_fails_the_second_time_and_leaves_the_first_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wharf-data");
    let listen = format!("127.0.0.1:{}", free_port());
    let health = format!("127.0.0.1:{}", free_port());
    let mut first = RunScript::start(&data, &listen, &health, &dir.path().join("first.out"));
    first.wait_running();
    let first_out = std::fs::read_to_string(dir.path().join("first.out")).unwrap();
    assert!(first_out.contains("succeeded"), "the demo job ran:\n{first_out}");
    let serve_log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    assert!(serve_log.contains("wharf serve is listening"), "{serve_log}");
    assert!(!serve_log.contains("\x1b["), "no colour codes in a log file");

    // Same data dir: refused before it touches anything.
    let second = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run"))
        .env("WHARF_BIN", wharf_bin())
        .env("WHARF_DATA_DIR", &data)
        .env("WHARF_LISTEN", &listen)
        .env("WHARF_HEALTH_ADDR", &health)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another ./scripts/run") && err.contains("is using"), "{err}");
    assert!(!String::from_utf8_lossy(&second.stdout).contains("wharf is running"));
    assert_eq!(std::fs::read_to_string(data.join("serve.log")).unwrap(), serve_log, "the first run's log is intact");

    // Another data dir but the same port: its own server fails, and it says so.
    let other = dir.path().join("other-data");
    let third = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run"))
        .env("WHARF_BIN", wharf_bin())
        .env("WHARF_DATA_DIR", &other)
        .env("WHARF_LISTEN", &listen)
        .env("WHARF_HEALTH_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(1), "{err}");
    assert!(err.contains("wharf serve did not start") && err.contains(&format!("cannot listen on {listen}")), "{err}");
    assert!(!other.join("wharf.db").exists(), "a server that cannot bind creates no store");

    // The first is still the one answering, and stops cleanly.
    let health_answer: Value =
        reqwest::get(format!("http://{health}/health")).await.unwrap().json().await.expect("worker health");
    assert_eq!(health_answer["state"], "running");
    let queues: Value = reqwest::get(format!("http://{listen}/v1/queues")).await.unwrap().json().await.unwrap();
    assert_eq!(queues["queues"][0]["counts"]["succeeded"], 1, "{queues}");
    assert_eq!(first.stop(), Some(0));
}

/// Runs a client command with standard output on a pipe whose reader has already gone.
fn run_into_closed_pipe(server: &TestServer, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(wharf_bin())
        .args(args)
        .env("WHARF_SERVER", &server.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    (child.wait().unwrap().code(), err)
}

/// `wharf jobs q | head -0` and friends: the reader goes away, wharf exits quietly with 0.
#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    for args in [vec!["job", id.as_str()], vec!["jobs", "q"], vec!["queues"], vec!["job", &id, "--json"]] {
        let (code, err) = run_into_closed_pipe(&server, &args);
        assert_eq!((code, err.as_str()), (Some(0), ""), "{args:?}");
    }

    // `--follow | head -1`: the next line written after the reader left ends it.
    let mut follow = tokio::process::Command::new(wharf_bin())
        .args(["job", &id, "--follow"])
        .env("WHARF_SERVER", &server.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut first).await.expect("the snapshot line");
    drop(stdout);
    let job = server.lease("q", 1, 0).await.remove(0);
    let out = tokio::time::timeout(Duration::from_secs(20), follow.wait_with_output()).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.as_ref()), (Some(0), ""));
    assert_eq!(job["id"], id.as_str());
}

#[tokio::test]
async fn serve_on_a_busy_port_says_which_and_creates_no_store() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(wharf_bin()).args(["serve", "--listen", &addr, "--data-dir"]).arg(&data).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("error: cannot listen on {addr}: Address already in use")), "{err}");
    assert!(!data.exists(), "nothing created before the port was found busy");
}

#[tokio::test]
async fn a_worker_whose_health_port_is_busy_names_it() {
    let server = TestServer::start().await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(wharf_bin())
        .args(["worker", "--server", &server.base, "--queue", "q", "--builtin", "noop", "--health-addr", &addr])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(last.contains("Address already in use"), "{err}");
}

/// A job that ended dead shows its error when followed, and `--help` documents the exit codes.
#[tokio::test]
async fn following_a_dead_job_shows_why_and_the_exit_codes_are_documented() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k", "max_attempts": 1})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    let error = "HL7 parse error at segment OBX";
    server.post(&format!("/v1/jobs/{id}/fail"), json!({"lease_token": job["lease_token"], "error": error})).await;
    let (code, out, _) = server.cli(&["job", &id, "--follow"]);
    assert_eq!(code, 3);
    assert!(out.contains("dead") && out.contains(error), "{out}");

    let (_, help, _) = server.cli(&["--help"]);
    assert!(help.contains("Exit codes") && help.contains("3  `wharf job ID --follow`"), "{help}");
    let (_, help, _) = server.cli(&["job", "--help"]);
    assert!(help.contains("3 when it ended dead or canceled"), "{help}");
}

/// On a terminal, `--follow` draws progress as a bar (percent and stage), not a line per event.
#[tokio::test]
async fn follow_on_a_terminal_draws_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed to give the client a terminal");
    }
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    let token = job["lease_token"].clone();
    server
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_token": token, "progress": {"percent": 40, "stage": "embedding"}}),
        )
        .await;
    // `script` runs the command on a pseudo-terminal and copies what it draws.
    let mut follow = tokio::process::Command::new("script")
        .args(["-qec", &format!("{} job {id} --follow", wharf_bin()), "/dev/null"])
        .env("WHARF_SERVER", &server.base)
        .env("COLUMNS", "100")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let mut screen = Vec::new();
    let drawn = read_until(&mut stdout, &mut screen, "embedding").await;
    assert!(drawn, "the bar of the first progress: {:?}", String::from_utf8_lossy(&screen));
    server.post(&format!("/v1/jobs/{id}/complete"), json!({"lease_token": token})).await;
    read_until(&mut stdout, &mut screen, "\u{0}").await;
    let status = tokio::time::timeout(Duration::from_secs(20), follow.wait()).await.unwrap().unwrap();
    let screen = String::from_utf8_lossy(&screen);
    assert_eq!(status.code(), Some(0), "{screen}");
    assert!(screen.contains(" 40%") && screen.contains("embedding"), "a bar with percent and stage:\n{screen:?}");
    assert!(!screen.contains(r#"progress  {"percent""#), "no raw progress line on a terminal:\n{screen:?}");
    assert!(screen.contains("succeeded"), "{screen:?}");
}

/// Reads into `buf` until it holds `needle` (true) or the stream ends or 20 s pass (false).
async fn read_until(out: &mut (impl tokio::io::AsyncRead + Unpin), buf: &mut Vec<u8>, needle: &str) -> bool {
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if String::from_utf8_lossy(buf).contains(needle) {
                return true;
            }
            match tokio::io::AsyncReadExt::read(out, &mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.unwrap_or(false)
}

#[tokio::test]
async fn follow_says_it_is_reconnecting_and_gives_up_after_its_bound() {
    let mut server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k"})).await;
    let mut follow = tokio::process::Command::new(wharf_bin())
        .args(["job", &id, "--follow", "--reconnect-for", "2s"])
        .env("WHARF_SERVER", &server.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the snapshot line is out, the stream is open: then the server dies.
    let mut stdout = follow.stdout.take().unwrap();
    let mut screen = Vec::new();
    assert!(read_until(&mut stdout, &mut screen, "\n").await, "the snapshot line");
    server.kill9();
    let out = tokio::time::timeout(Duration::from_secs(20), follow.wait_with_output()).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.first().is_some_and(|l| l.contains("reconnecting (for up to 2s)")), "{err}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("error: could not reach the server") && l.contains("was ready")),
        "{err}"
    );
}

/// An `--http` worker whose endpoint is down says why, in the job's error and in its log.
#[tokio::test]
async fn an_http_endpoint_that_is_down_is_reported_as_connection_refused() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://127.0.0.1:{}/jobs", free_port());
    let worker = TestWorker::start(&server, dir.path(), &["--queue", "q", "--http", &down]);
    let id = server.enqueue("q", json!({"kind": "k", "max_attempts": 1})).await;
    let job = server.wait_done(&id).await;
    let error = job["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("cannot reach {down}")) && error.contains("Connection refused"), "{job}");
    // The worker logs the outcome once the server has recorded it: a moment after.
    wait_until("the outcome is logged", || worker.log_text().contains("attempt failed")).await;
    let log = worker.log_text();
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let started = lines.iter().find(|l| l["message"] == "worker started").expect("a start line");
    assert_eq!((started["concurrency"].as_u64(), started["server"].as_str()), (Some(1), Some(server.base.as_str())));
    assert!(lines.iter().any(|l| l["message"] == "connected to the server"), "{log}");
    let failed = lines.iter().find(|l| l["message"] == "attempt failed").expect("an outcome line");
    assert_eq!(failed["level"], "INFO");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("Connection refused")), "{failed}");
}

#[tokio::test]
async fn the_cli_reads_a_payload_from_standard_input_with_a_dash() {
    let server = TestServer::start().await;
    for dash in ["-", "@-"] {
        let mut child = Command::new(wharf_bin())
            .args(["enqueue", "q", "k", "--payload", dash, "--json"])
            .env("WHARF_SERVER", &server.base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), br#"{"doc": 7}"#).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (_, full) = server.get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap())).await;
        assert_eq!(full["payload"], json!({"doc": 7}), "--payload {dash}");
    }
}

#[tokio::test]
async fn queue_policy_pause_and_resume_from_the_command_line() {
    let server = TestServer::start().await;
    let (code, out, err) =
        server.cli(&["queue", "set", "pdf", "--max-attempts", "5", "--lease", "2m", "--concurrency", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max attempts 5") && out.contains("lease        2m"), "{out}");
    let (_, queue) = server.get("/v1/queues/pdf").await;
    assert_eq!(
        (&queue["policy"]["max_attempts"], &queue["policy"]["lease_ms"], &queue["policy"]["concurrency"]),
        (&json!(5), &json!(120_000), &json!(3))
    );
    let (code, _, _) = server.cli(&["queue", "set", "pdf", "--concurrency", "none"]);
    assert_eq!(code, 0);
    assert_eq!(server.get("/v1/queues/pdf").await.1["policy"]["concurrency"], Value::Null);
    let (code, _, err) = server.cli(&["queue", "set", "pdf", "--rate", "fast"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: --rate: \"fast\" is not a number or none"), "{err}");

    let (_, out, _) = server.cli(&["queue", "pause", "pdf"]);
    assert_eq!(out.trim(), "paused pdf");
    let (_, out, _) = server.cli(&["enqueue", "pdf", "render"]);
    assert!(out.contains("(ready, but the queue is paused: `wharf queue resume pdf` starts it)"), "{out}");
    let (_, out, _) = server.cli(&["queue", "show", "pdf"]);
    assert!(out.starts_with("queue        pdf (paused)") && out.contains("1 ready"), "{out}");
    let (_, out, _) = server.cli(&["queue", "resume", "pdf"]);
    assert_eq!(out.trim(), "resumed pdf");
    let (_, out, _) = server.cli(&["enqueue", "pdf", "render"]);
    assert!(out.trim_end().ends_with("(ready)"), "{out}");
}

/// Tables fit the data, not the longest error; ages read as ages.
#[tokio::test]
async fn job_and_queue_tables_read_well() {
    let server = TestServer::start().await;
    let id = server.enqueue("q", json!({"kind": "k", "max_attempts": 2})).await;
    let job = server.lease("q", 1, 0).await.remove(0);
    let long_error = "x".repeat(150);
    server
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"lease_token": job["lease_token"], "error": long_error, "retry_in_ms": 0}),
        )
        .await;
    server.enqueue("q", json!({"kind": "k"})).await;
    let (_, out, _) = server.cli(&["job", &id]);
    assert!(!out.starts_with('\n'), "no blank first line: {out:?}");
    let id_line = out.lines().next().unwrap_or_default();
    assert_eq!(id_line, format!("id        {id}"), "rows are not padded to the longest: {out}");
    assert!(out.contains(&long_error), "{out}");

    let (_, out, _) = server.cli(&["queues"]);
    let header = out.lines().next().unwrap_or_default();
    let row = out.lines().find(|l| l.trim_start().starts_with("q ")).unwrap_or_default();
    let age = row.split_whitespace().last().unwrap_or_default();
    assert!(header.trim_end().ends_with("OLDEST READY"), "{out}");
    assert!(age.ends_with('s') && age.trim_end_matches('s').parse::<u64>().is_ok(), "an age like 3s: {out}");
}
