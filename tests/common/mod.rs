//! Shared helpers: a real `wharf serve` process on a temporary data dir and a free port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub mod pki;

/// The `wharf` binary under test.
pub fn wharf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wharf")
}

/// A running `wharf serve`.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    dir: tempfile::TempDir,
    data: Option<PathBuf>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// A plain HTTP client (sending the admin token, on a server that has one).
    pub http: reqwest::Client,
    /// The admin token, on a server started with one.
    pub admin_token: Option<String>,
}

/// The admin token of servers started by [`TestServer::start_secured`].
pub const ADMIN_TOKEN: &str = "test-admin-token-2f7c9a41d8e3b605";

/// A client that sends `token` (if any) with every request.
pub fn http_client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build().expect("client")
}

impl TestServer {
    /// Starts a server on a fresh data dir.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `serve` flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_full(None, extra, &[]).await
    }

    /// Starts a server that needs tokens: [`ADMIN_TOKEN`] is its admin token, and `http` sends it.
    pub async fn start_secured(extra: &[&str]) -> Self {
        Self::start_full(None, extra, &[("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)]).await
    }

    /// Starts a server with extra flags and environment variables, on `data` or a fresh dir.
    pub async fn start_full(data: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let data_dir = data.map_or_else(|| dir.path().join("data"), Path::to_owned);
        let (child, base) = try_spawn(&data_dir, "127.0.0.1:0", &extra, &env)
            .unwrap_or_else(|err| panic!("server did not start: {err}"));
        let admin_token = env.iter().find(|(k, _)| k == "WHARF_ADMIN_TOKEN").map(|(_, v)| v.clone());
        let http = http_client(admin_token.as_deref());
        TestServer { child: Some(child), base, dir, data: data.map(Path::to_owned), extra, env, http, admin_token }
    }

    /// Starts a server whose data dir is `data`.
    pub async fn start_at(data: &Path) -> Self {
        Self::start_full(Some(data), &[], &[]).await
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the server with SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts the server again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill9();
        let listen = self.base.trim_start_matches("http://").to_owned();
        // The port was just freed; retry briefly in case the kernel has not released it yet.
        for attempt in 0..50 {
            match try_spawn(&self.data_dir(), &listen, &self.extra, &self.env) {
                Ok((child, base)) => {
                    self.child = Some(child);
                    self.base = base;
                    // Pooled connections went down with the old process.
                    self.http = http_client(self.admin_token.as_deref());
                    return;
                }
                Err(err) if attempt < 49 => {
                    let _ = err;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("server did not restart: {err}"),
            }
        }
    }

    /// POSTs JSON; returns the status and the body as JSON (or null).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self.http.post(self.url(path)).json(&body).send().await.expect("request");
        decode(resp).await
    }

    /// POSTs raw bytes with no content type.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self.http.post(self.url(path)).body(body).send().await.expect("request");
        decode(resp).await
    }

    /// PUTs JSON.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self.http.put(self.url(path)).json(&body).send().await.expect("request");
        decode(resp).await
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(path)).send().await.expect("request");
        decode(resp).await
    }

    /// Enqueues a job; returns its id.
    pub async fn enqueue(&self, queue: &str, body: Value) -> String {
        let (status, job) = self.post(&format!("/v1/queues/{queue}/jobs"), body).await;
        assert_eq!(status, 201, "enqueue: {job}");
        job["id"].as_str().expect("id").to_owned()
    }

    /// Leases up to `max` jobs from `queue`, waiting up to `wait_ms`.
    pub async fn lease(&self, queue: &str, max: u64, wait_ms: u64) -> Vec<Value> {
        let (status, body) = self
            .post("/v1/lease", json!({"worker_id": "test-worker", "queues": [queue], "max": max, "wait_ms": wait_ms}))
            .await;
        assert_eq!(status, 200, "lease: {body}");
        body["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// A job's state.
    pub async fn state(&self, id: &str) -> String {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "get {id}: {job}");
        job["state"].as_str().unwrap_or_default().to_owned()
    }

    /// Runs a client command of the binary against this server (with the admin token, if it
    /// has one); returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = Command::new(wharf_bin());
        command.args(args).env("WHARF_SERVER", &self.base);
        if let Some(token) = &self.admin_token {
            command.env("WHARF_TOKEN", token);
        }
        let out = command.output().expect("run wharf");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn decode(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Starts `wharf serve` and waits for its "listening" log line, which carries the address.
fn try_spawn(
    data_dir: &Path,
    listen: &str,
    extra: &[String],
    env: &[(String, String)],
) -> Result<(Child, String), String> {
    let mut command = Command::new(wharf_bin());
    command.args(["serve", "--listen", listen, "--log-format", "json"]);
    // A server on PostgreSQL has no data dir.
    if !extra.iter().any(|a| a == "--database-url") {
        command.arg("--data-dir").arg(data_dir);
    }
    let mut child = command
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WHARF_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(addr) = v.get("address").and_then(Value::as_str)
                {
                    let _ = tx.send(Ok(addr.to_owned()));
                    sent = true;
                    continue;
                }
                if line.contains("error") {
                    let _ = tx.send(Err(line.clone()));
                }
            }
            if std::env::var_os("WHARF_TEST_LOGS").is_some() {
                eprintln!("[server] {line}");
            }
        }
        if !sent {
            let _ = tx.send(Err("server exited before listening".into()));
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(addr)) => Ok((child, addr)),
        Ok(Err(line)) => {
            let _ = child.kill();
            Err(line)
        }
        Err(_) => {
            let _ = child.kill();
            Err("timed out waiting for the server to listen".into())
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    /// `id:`.
    pub id: String,
    /// `event:`.
    pub event: String,
    /// `data:` as JSON.
    pub data: Value,
}

/// Reads events from a `text/event-stream` response, one at a time.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Opens `path` on `server`, optionally resuming after `last_event_id`.
    pub async fn open(server: &TestServer, path: &str, last_event_id: Option<&str>) -> Self {
        let mut req = server.http.get(server.url(path));
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last);
        }
        let resp = req.send().await.expect("stream");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader { resp, buf: String::new() }
    }

    /// The next event, or `None` once the server closes the stream. Fails after 10 s.
    pub async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(10), self.next_inner()).await.expect("an event or the end within 10 s")
    }

    pub async fn next_inner(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(Sse { id, event, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

/// A running `wharf worker`.
pub struct TestWorker {
    child: Option<Child>,
    /// Where its log goes.
    pub log: PathBuf,
}

impl TestWorker {
    /// Starts `wharf worker --server <server> <args…>`, logging to a file in `dir`.
    pub fn start(server: &TestServer, dir: &Path, args: &[&str]) -> Self {
        Self::start_env(server, dir, args, &[])
    }

    /// As [`TestWorker::start`], with extra environment variables.
    pub fn start_env(server: &TestServer, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("worker-{}.log", fastrand::u32(..)));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(wharf_bin())
            .args(["worker", "--server", &server.base, "--log-format", "json", "--poll-wait", "2s"])
            .args(args)
            .current_dir(dir)
            .envs(server.admin_token.as_ref().map(|token| ("WHARF_TOKEN", token)))
            .env("WHARF_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start worker");
        TestWorker { child: Some(child), log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status();
    }

    /// Waits up to `limit` for the process to exit; returns its exit code, if it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl TestServer {
    /// Waits (up to 30 s) until `GET /v1/workers` lists at least `n` workers: their long
    /// polls have reached the store.
    pub async fn wait_workers(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, list) = self.get("/v1/workers").await;
            let seen = list["workers"].as_array().map_or(0, Vec::len);
            if seen >= n {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "only {seen} of {n} workers ever asked for work");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 60 s) until job `id` reaches a terminal state, following its event stream;
    /// returns the job.
    pub async fn wait_done(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if matches!(job["state"].as_str(), Some("succeeded" | "dead" | "canceled")) {
                return job;
            }
            assert!(std::time::Instant::now() < deadline, "job {id} did not finish: {job}");
            let version = job["version"].as_u64().unwrap_or(0).to_string();
            // Returns at the next change (or at once if the stream already ended).
            let mut stream = SseReader::open(self, &format!("/v1/jobs/{id}/events"), Some(&version)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.next_inner()).await;
        }
    }

    /// Waits (up to 30 s) until job `id` is in `state`.
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            if job["state"] == state {
                return job;
            }
            assert!(std::time::Instant::now() < deadline, "job {id} never became {state}: {job}");
            let version = job["version"].as_u64().unwrap_or(0).to_string();
            let mut stream = SseReader::open(self, &format!("/v1/jobs/{id}/events"), Some(&version)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.next_inner()).await;
        }
    }
}

/// Writes `wharf.toml` in `dir` declaring one pool on the queue `name` (one worker per job,
/// cooldowns shortened to 1 s / 2 s) whose provider is `provider`, an inline TOML table;
/// returns its path.
pub fn pool_config(dir: &Path, name: &str, min: u32, max: u32, provider: &str) -> PathBuf {
    let text = format!(
        "[[pool]]\nname = \"{name}\"\nqueues = [\"{name}\"]\nmin = {min}\nmax = {max}\n\
         target_backlog_per_worker = 1\nscale_out_cooldown = \"1s\"\nscale_in_cooldown = \"2s\"\n\
         provider = {provider}\n"
    );
    let path = dir.join("wharf.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Writes an executable script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// True while a process with this id exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Runs `wharf serve` on `data` expecting it to refuse to start; returns (exit code, stderr).
pub fn serve_refuses(data: &Path) -> (i32, String) {
    let mut child = Command::new(wharf_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wharf serve");
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read as _;
            let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            return (status.code().unwrap_or(-1), err);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("wharf serve started on data it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 30 s) until `condition` holds, checking every 20 ms.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
