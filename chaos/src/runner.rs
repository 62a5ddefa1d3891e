//! One run: set up, load, nemesis, drain, collect.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::cluster::{HANDLER, Server, Storage, Worker, now_ms};
use wharf_testkit::postgres::PgServer;

use crate::history::{Enqueue, Fault, FaultKind, FinalJob, History, parse_ms, read_executions, read_reports};

/// What the servers store their jobs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One server on the embedded store.
    Embedded,
    /// Several servers (nodes) on one PostgreSQL database, on a throwaway PostgreSQL server
    /// this run starts itself.
    Postgres {
        /// How many nodes.
        nodes: usize,
    },
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// What the servers store their jobs in.
    pub backend: Backend,
    /// The `wharf` binary.
    pub wharf: PathBuf,
    /// A scratch directory: data, logs, the execution log.
    pub dir: PathBuf,
    /// How long faults are injected.
    pub duration: Duration,
    /// Concurrent producers.
    pub producers: usize,
    /// Worker processes.
    pub workers: usize,
    /// `--concurrency` of each worker.
    pub concurrency: usize,
    /// The queue's lease.
    pub lease_ms: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Environment for the server (failpoints).
    pub server_env: Vec<(String, String)>,
    /// Kinds of faults to inject, taken in turns.
    pub faults: Vec<FaultKind>,
    /// Pause between faults.
    pub gap: (Duration, Duration),
}

impl Config {
    /// Defaults for a run of `duration` with `wharf` in `dir`.
    pub fn new(wharf: PathBuf, dir: PathBuf, duration: Duration) -> Self {
        Config {
            backend: Backend::Embedded,
            wharf,
            dir,
            duration,
            producers: 3,
            workers: 3,
            concurrency: 8,
            lease_ms: 1_500,
            seed: fastrand::u64(..),
            server_env: Vec::new(),
            faults: vec![FaultKind::ServerCrash, FaultKind::WorkerKill, FaultKind::WorkerPause, FaultKind::WorkerTerm],
            gap: (Duration::from_millis(300), Duration::from_millis(1_200)),
        }
    }

    /// The same on `nodes` servers sharing one PostgreSQL database, with PostgreSQL itself
    /// restarted among the faults.
    pub fn postgres(mut self, nodes: usize) -> Self {
        self.backend = Backend::Postgres { nodes: nodes.max(1) };
        if !self.faults.contains(&FaultKind::DatabaseRestart) {
            self.faults.push(FaultKind::DatabaseRestart);
        }
        self
    }
}

const QUEUE: &str = "chaos";

/// Runs the cluster under the nemesis and returns what happened.
pub async fn run(config: &Config) -> anyhow::Result<History> {
    let dir = &config.dir;
    write_handler(dir)?;
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut servers = Vec::new();
    // A PostgreSQL of the run's own: restarting it must not disturb anything else.
    let mut postgres = None;
    match config.backend {
        Backend::Embedded => servers.push(Server::start(&config.wharf, dir, config.server_env.clone()).await?),
        Backend::Postgres { nodes } => {
            let pg = tokio::task::spawn_blocking(PgServer::start)
                .await?
                .map_err(|why| anyhow::anyhow!("cannot start PostgreSQL: {why}"))?;
            let pg = Arc::new(pg);
            let database = pg.fresh_database().await;
            postgres = Some(pg);
            for n in 0..nodes {
                let storage = Storage::Postgres(database.clone());
                let env = config.server_env.clone();
                servers.push(Server::start_on(&config.wharf, dir, &format!("node-{n}"), storage, env).await?);
            }
        }
    }
    // Producers and workers are spread over the nodes; the final state is read from the last.
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let base_of = |i: usize| bases[i % bases.len()].clone();
    let last = bases[bases.len() - 1].clone();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let policy =
        json!({"lease_ms": config.lease_ms, "max_attempts": 1000, "backoff_base_ms": 50, "backoff_cap_ms": 500});
    http.put(format!("{}/v1/queues/{QUEUE}", bases[0])).json(&policy).send().await?.error_for_status()?;

    let mut spawned = 0;
    let mut workers = Vec::new();
    let mut worker_logs = Vec::new();
    for i in 0..config.workers {
        let w = Worker::start(&config.wharf, dir, &base_of(i), QUEUE, config.concurrency, spawned, &[])?;
        worker_logs.push((w.log.clone(), w.pid));
        workers.push(w);
        spawned += 1;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let enqueues: Arc<Mutex<Vec<Enqueue>>> = Arc::default();
    let mut producers = Vec::new();
    for p in 0..config.producers {
        let (http, base, stop, enqueues) = (http.clone(), base_of(p), Arc::clone(&stop), Arc::clone(&enqueues));
        let seed = rng.u64(..);
        producers.push(tokio::spawn(produce(p, http, base, stop, enqueues, seed)));
    }

    // The nemesis: one fault at a time, kinds in turns, random targets and timing.
    let mut faults = Vec::new();
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < config.duration && !config.faults.is_empty() {
        tokio::time::sleep(random_between(&mut rng, config.gap)).await;
        let kind = config.faults[turn % config.faults.len()];
        turn += 1;
        let at_ms = now_ms();
        let fault = match kind {
            FaultKind::ServerCrash => {
                let n = rng.usize(..servers.len());
                servers[n].crash_and_restart(Duration::from_millis(rng.u64(0..500))).await?;
                Fault { kind, at_ms, until_ms: now_ms(), worker_pid: None }
            }
            FaultKind::DatabaseRestart => {
                if let Some(pg) = postgres.clone() {
                    tokio::task::spawn_blocking(move || pg.restart_immediate())
                        .await?
                        .map_err(|why| anyhow::anyhow!("cannot restart PostgreSQL: {why}"))?;
                }
                Fault { kind, at_ms, until_ms: now_ms(), worker_pid: None }
            }
            FaultKind::WorkerKill => {
                let i = rng.usize(..workers.len());
                let pid = workers[i].pid;
                workers[i].kill9().await;
                let w = Worker::start(&config.wharf, dir, &base_of(i), QUEUE, config.concurrency, spawned, &[])?;
                spawned += 1;
                worker_logs.push((w.log.clone(), w.pid));
                workers[i] = w;
                Fault { kind, at_ms, until_ms: now_ms(), worker_pid: Some(pid) }
            }
            FaultKind::WorkerPause => {
                let i = rng.usize(..workers.len());
                workers[i].signal(Signal::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(config.lease_ms + rng.u64(300..1_000))).await;
                workers[i].signal(Signal::SIGCONT);
                Fault { kind, at_ms, until_ms: now_ms(), worker_pid: Some(workers[i].pid) }
            }
            FaultKind::WorkerTerm => {
                let i = rng.usize(..workers.len());
                let pid = workers[i].pid;
                workers[i].signal(Signal::SIGTERM);
                let _ = workers[i].wait(Duration::from_secs(10)).await;
                let w = Worker::start(&config.wharf, dir, &base_of(i), QUEUE, config.concurrency, spawned, &[])?;
                spawned += 1;
                worker_logs.push((w.log.clone(), w.pid));
                workers[i] = w;
                Fault { kind, at_ms, until_ms: now_ms(), worker_pid: Some(pid) }
            }
        };
        faults.push(fault);
    }
    stop.store(true, Ordering::Release);
    for p in producers {
        p.await.context("a producer panicked")?;
    }

    // Drain: every job finished, then the final state.
    let last_fault = faults.last().map_or_else(now_ms, |f| f.until_ms);
    let drained = drain(&http, &bases[0], Duration::from_secs(120)).await?;
    let drain_ms = drained.then(|| now_ms() - last_fault);
    let enqueues = std::mem::take(&mut *enqueues.lock().unwrap_or_else(|p| p.into_inner()));
    let jobs = final_jobs(&http, &last, &enqueues).await?;
    let listed = list_all(&http, &last).await?;

    for w in &workers {
        w.signal(Signal::SIGTERM);
    }
    for w in &mut workers {
        if w.wait(Duration::from_secs(10)).await.is_none() {
            w.kill9().await;
        }
    }
    for server in &mut servers {
        server.stop().await;
    }
    drop(postgres);

    let executions = read_executions(&dir.join("executions.log"))?;
    let reports = worker_logs.iter().flat_map(|(log, pid)| read_reports(log, *pid)).collect();
    Ok(History { enqueues, executions, reports, faults, jobs, listed, lease_ms: config.lease_ms, drain_ms })
}

fn random_between(rng: &mut fastrand::Rng, (low, high): (Duration, Duration)) -> Duration {
    let (low, high) = (low.as_millis() as u64, high.as_millis() as u64);
    Duration::from_millis(if high > low { rng.u64(low..high) } else { low })
}

/// A producer: enqueues jobs with unique idempotency keys; an unknown outcome (an error or no
/// answer) is retried with the same key until acknowledged, so each key is one logical job.
async fn produce(
    p: usize,
    http: reqwest::Client,
    base: String,
    stop: Arc<AtomicBool>,
    enqueues: Arc<Mutex<Vec<Enqueue>>>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let key = format!("p{p}-{i}");
        let mut record = Enqueue { key: key.clone(), id: None, tries: 0, acked_ids: Vec::new() };
        let body = json!({"kind": "chaos", "payload": {"key": key}, "idempotency_key": key});
        while record.id.is_none() && !stop.load(Ordering::Acquire) {
            record.tries += 1;
            let answer = http.post(format!("{base}/v1/queues/{QUEUE}/jobs")).json(&body).send().await;
            if let Ok(resp) = answer
                && resp.status().is_success()
                && let Ok(job) = resp.json::<Value>().await
                && let Some(id) = job["id"].as_str()
            {
                record.acked_ids.push(id.to_owned());
                record.id = Some(id.to_owned());
                // Now and then, repeat an acknowledged enqueue: it must return the same job.
                if rng.u8(..10) == 0
                    && let Ok(again) = http.post(format!("{base}/v1/queues/{QUEUE}/jobs")).json(&body).send().await
                    && again.status().is_success()
                    && let Ok(job) = again.json::<Value>().await
                    && let Some(id) = job["id"].as_str()
                {
                    record.acked_ids.push(id.to_owned());
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(20..100))).await;
        }
        enqueues.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        tokio::time::sleep(Duration::from_millis(rng.u64(20..80))).await;
    }
}

/// Waits until the queue has nothing left to run; false on timeout.
async fn drain(http: &reqwest::Client, base: &str, limit: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(resp) = http.get(format!("{base}/v1/queues/{QUEUE}")).send().await {
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                // An unknown queue holds no jobs (a broken server may have lost it whole).
                return Ok(true);
            }
            if let Ok(queue) = resp.json::<Value>().await {
                let c = &queue["counts"];
                let pending =
                    ["scheduled", "ready", "running"].iter().map(|s| c[*s].as_u64().unwrap_or(1)).sum::<u64>();
                if pending == 0 {
                    return Ok(true);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// The final state of every acknowledged job, by id.
async fn final_jobs(
    http: &reqwest::Client,
    base: &str,
    enqueues: &[Enqueue],
) -> anyhow::Result<HashMap<String, FinalJob>> {
    let mut jobs = HashMap::new();
    for id in enqueues.iter().filter_map(|e| e.id.as_ref()) {
        let job: Value = http.get(format!("{base}/v1/jobs/{id}")).send().await?.json().await?;
        jobs.insert(id.clone(), final_job(&job));
    }
    Ok(jobs)
}

fn final_job(job: &Value) -> FinalJob {
    FinalJob {
        state: job["state"].as_str().unwrap_or("missing").to_owned(),
        attempt: job["attempt"].as_u64().unwrap_or(0) as u32,
        result: job["result"].clone(),
        errors: job["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        (e["attempt"].as_u64().unwrap_or(0) as u32, e["message"].as_str().unwrap_or("").to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
        finished_ms: job["finished_at"].as_str().and_then(parse_ms),
    }
}

async fn list_all(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/queues/{QUEUE}/jobs?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http.get(url).send().await?.json().await?;
        for job in page["jobs"].as_array().into_iter().flatten() {
            out.push((job["id"].as_str().unwrap_or("").to_owned(), job["idempotency_key"].as_str().map(str::to_owned)));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(out),
        }
    }
}

/// A stale worker, step by step: worker A takes a job and is paused (SIGSTOP) until its lease
/// expires; worker B takes the job again; A resumes and reports its completion while B is still
/// working. A correct server refuses A's report (its token is stale) and keeps B's; a server
/// without fencing keeps A's, which the checker's fencing property catches.
pub async fn stale_worker(
    wharf: &std::path::Path,
    dir: &std::path::Path,
    server_env: Vec<(String, String)>,
) -> anyhow::Result<History> {
    write_handler(dir)?;
    let lease_ms = 1_000;
    let mut server = Server::start(wharf, dir, server_env).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let policy = json!({"lease_ms": lease_ms, "max_attempts": 10, "backoff_base_ms": 0, "backoff_cap_ms": 0});
    http.put(format!("{}/v1/queues/{QUEUE}", server.base)).json(&policy).send().await?.error_for_status()?;
    let answer: Value = http
        .post(format!("{}/v1/queues/{QUEUE}/jobs", server.base))
        .json(&json!({"kind": "chaos", "idempotency_key": "stale"}))
        .send()
        .await?
        .json()
        .await?;
    let id = answer["id"].as_str().context("no job id")?.to_owned();
    let executions = dir.join("executions.log");
    let mut a = Worker::start(wharf, dir, &server.base, QUEUE, 1, 0, &[("CHAOS_SLEEP", "2")])?;
    wait_for(|| read_executions(&executions).map(|e| !e.is_empty()).unwrap_or(false)).await?;
    let paused_at = now_ms();
    a.signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(lease_ms + 300)).await;
    let mut b = Worker::start(wharf, dir, &server.base, QUEUE, 1, 1, &[("CHAOS_SLEEP", "3")])?;
    wait_for(|| read_executions(&executions).map(|e| e.len() >= 2).unwrap_or(false)).await?;
    a.signal(Signal::SIGCONT);
    let resumed_at = now_ms();
    drain(&http, &server.base, Duration::from_secs(30)).await?;
    let job: Value = http.get(format!("{}/v1/jobs/{id}", server.base)).send().await?.json().await?;
    let listed = list_all(&http, &server.base).await?;
    for w in [&a, &b] {
        w.signal(Signal::SIGTERM);
    }
    let _ = a.wait(Duration::from_secs(10)).await;
    let _ = b.wait(Duration::from_secs(10)).await;
    server.stop().await;
    let reports = read_reports(&a.log, a.pid).into_iter().chain(read_reports(&b.log, b.pid)).collect();
    Ok(History {
        enqueues: vec![Enqueue { key: "stale".into(), id: Some(id.clone()), tries: 1, acked_ids: vec![id.clone()] }],
        executions: read_executions(&executions)?,
        reports,
        faults: vec![Fault {
            kind: FaultKind::WorkerPause,
            at_ms: paused_at,
            until_ms: resumed_at,
            worker_pid: Some(a.pid),
        }],
        jobs: HashMap::from([(id, final_job(&job))]),
        listed,
        lease_ms,
        drain_ms: Some(0),
    })
}

/// A crash right after acknowledgements: producers enqueue a burst of jobs, the server is
/// `kill -9`ed the moment the last answer arrives and restarted, and a worker drains the queue.
/// Run it with `slow_commit`, which holds each commit for half a second: a correct server
/// answers only after its commit, so every acknowledged job survives; with `ack_before_commit`
/// as well, the answers beat the commit, the crash loses the jobs, and the checker's
/// `acknowledged-enqueue-survives` property catches it.
pub async fn crash_after_acknowledgements(
    wharf: &std::path::Path,
    dir: &std::path::Path,
    server_env: Vec<(String, String)>,
) -> anyhow::Result<History> {
    write_handler(dir)?;
    let mut server = Server::start(wharf, dir, server_env).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (http, base) = (http.clone(), server.base.clone());
        sends.spawn(async move {
            let key = format!("burst-{i}");
            let body = json!({"kind": "chaos", "idempotency_key": key});
            let answer: Value =
                http.post(format!("{base}/v1/queues/{QUEUE}/jobs")).json(&body).send().await?.json().await?;
            let id = answer["id"].as_str().context("no job id")?.to_owned();
            anyhow::Ok(Enqueue { key, id: Some(id.clone()), tries: 1, acked_ids: vec![id] })
        });
    }
    let mut enqueues = Vec::new();
    while let Some(sent) = sends.join_next().await {
        enqueues.push(sent.context("a producer panicked")??);
    }
    let crashed_at = now_ms();
    // The restart runs without failpoints: the crash has done whatever damage it could.
    server.crash_and_restart_with(Vec::new()).await?;
    let fault = Fault { kind: FaultKind::ServerCrash, at_ms: crashed_at, until_ms: now_ms(), worker_pid: None };
    let executions = dir.join("executions.log");
    let mut worker = Worker::start(wharf, dir, &server.base, QUEUE, 4, 0, &[("CHAOS_SLEEP", "0")])?;
    let drained = drain(&http, &server.base, Duration::from_secs(60)).await?;
    let jobs = final_jobs(&http, &server.base, &enqueues).await?;
    let listed = list_all(&http, &server.base).await?;
    worker.signal(Signal::SIGTERM);
    let _ = worker.wait(Duration::from_secs(10)).await;
    server.stop().await;
    Ok(History {
        enqueues,
        executions: read_executions(&executions).unwrap_or_default(),
        reports: read_reports(&worker.log, worker.pid),
        faults: vec![fault],
        jobs,
        listed,
        lease_ms: 30_000,
        drain_ms: drained.then_some(0),
    })
}

/// Creates `dir` with the recording handler in it.
fn write_handler(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    let handler = dir.join("handler.sh");
    std::fs::write(&handler, HANDLER)?;
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

async fn wait_for(mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        anyhow::ensure!(Instant::now() < deadline, "the scenario stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
