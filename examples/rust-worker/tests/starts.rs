//! The example tells its user what it is doing from the first second: the line it logs on
//! start names the server, queues and concurrency, and an unreachable server is reported.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_worker_logs_its_start_and_an_unreachable_server() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = format!("http://{closed}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-rust-worker"))
        .env("WHARF_SERVER", &server)
        .env("WHARF_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("cannot reach the server")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let log = lines.join("\n");
    let started = lines.iter().find(|l| l.contains("worker started")).unwrap_or_else(|| panic!("{log}"));
    assert!(started.contains(&server) && started.contains("labs") && started.contains("concurrency=4"), "{log}");
    assert!(lines.iter().any(|l| l.contains("cannot reach the server")), "{log}");
    assert!(!log.contains("\x1b["), "no colour codes when not on a terminal: {log}");
    assert!(status.success(), "SIGTERM stops it cleanly: {status}\n{log}");
}
