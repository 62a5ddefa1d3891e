//! `wharf bench`: measures a running server over its public API.
//!
//! Measurements, each on its own fresh queue so runs do not mix:
//! - **floor**: the same client as the enqueue against `GET /health`, `--in-flight` at once:
//!   this machine's HTTP path with no work behind it; every throughput is also printed as a
//!   fraction of it;
//! - **enqueue**: one job per request, `--in-flight` requests at once;
//! - **batch**: `--batch` jobs per request;
//! - **e2e**: pre-enqueued no-op jobs leased `--lease-batch` at a time by `--workers` loops and
//!   acknowledged with one `/v1/ack` per lease;
//! - **pickup**: at `--pickup-rate` jobs per second with a worker long-polling, the time from
//!   a job becoming ready (its enqueue acknowledged, so durable) to the worker holding it; and,
//!   on a second line, from sending the enqueue (adding its round trip and commit).
//!
//! - **large** (on request): one-job leases timed in a nearly empty queue, then in the same
//!   queue once it holds `--large-finished` finished and `--large-ready` ready jobs.
//!
//! - **workers**: pre-enqueued jobs run by `--worker-procs` real `wharf worker` processes, once
//!   with the built-in Rust no-op handler and once with `--exec true` (a process per job).
//!
//! - **watched** (on request): end to end without and with what an open dashboard overview
//!   asks of the server (a reader of `/v1/events` and the overview's reads every second),
//!   twice each, alternating, so the cost of watching is a ratio from one window.
//!
//! Every job is acknowledged durably, as configured on the server; nothing is skipped. The
//! bench queues keep their jobs for one minute, then the server prunes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::value::RawValue;

use super::ClientArgs;
use super::output;
use crate::api::{
    AckComplete, AckRequest, AckResponse, BatchEnqueueRequest, BatchEnqueueResponse, EnqueueRequest, LeaseRequest,
    LeaseResponse, QueuePolicyRequest,
};
use crate::client::Client;
use crate::client::conn::Connection;

/// A measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// The same client against `GET /health`: what this machine's HTTP path allows, the
    /// yardstick every other figure is also given against.
    Floor,
    /// One job per request.
    Enqueue,
    /// Batches of jobs per request.
    Batch,
    /// Lease, run (no-op) and acknowledge pre-enqueued jobs.
    E2e,
    /// Ready-to-leased latency at a low rate.
    Pickup,
    /// End to end through real `wharf worker` processes (a Rust no-op and `--exec true`).
    Workers,
    /// A long stream of jobs with short retention: throughput, server memory and store size
    /// over time (not in the default set).
    Soak,
    /// Lease latency in a queue holding many finished and ready jobs, beside the same queue
    /// nearly empty (not in the default set).
    Large,
    /// End to end without and with an open dashboard overview (not in the default set).
    Watched,
}

/// `wharf bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Which measurements to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "floor,enqueue,batch,e2e,pickup,workers")]
    pub only: Vec<Measure>,
    /// Jobs for the one-per-request enqueue (and requests for the floor).
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Requests in flight for the one-per-request enqueue.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Jobs per batch request.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Jobs for the batched enqueue.
    #[arg(long, default_value_t = 100_000)]
    pub batch_jobs: u64,
    /// Jobs for the end-to-end run.
    #[arg(long, default_value_t = 100_000)]
    pub e2e_jobs: u64,
    /// Lease-and-acknowledge loops in the end-to-end run.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs per lease in the end-to-end run.
    #[arg(long, default_value_t = 100)]
    pub lease_batch: i64,
    /// Jobs per second in the pickup run.
    #[arg(long, default_value_t = 100)]
    pub pickup_rate: u64,
    /// Jobs in the pickup run.
    #[arg(long, default_value_t = 1_000)]
    pub pickup_jobs: u64,
    /// Jobs through the Rust no-op workers (a tenth of these through `--exec true`).
    #[arg(long, default_value_t = 20_000)]
    pub worker_jobs: u64,
    /// `wharf worker` processes in the workers run.
    #[arg(long, default_value_t = 2)]
    pub worker_procs: usize,
    /// `--concurrency` of each worker process.
    #[arg(long, default_value_t = 64)]
    pub worker_concurrency: usize,
    /// Jobs through the soak run.
    #[arg(long, default_value_t = 1_000_000)]
    pub soak_jobs: u64,
    /// Retention of the soak queue, so pruning keeps the store bounded.
    #[arg(long, default_value = "10s")]
    pub soak_retention: String,
    /// Finished jobs the large queue holds.
    #[arg(long, default_value_t = 1_000_000)]
    pub large_finished: u64,
    /// Ready jobs the large queue holds.
    #[arg(long, default_value_t = 100_000)]
    pub large_ready: u64,
    /// Leases timed in each state of the large queue.
    #[arg(long, default_value_t = 2_000)]
    pub large_samples: u64,
}

/// One line of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// What was measured.
    pub measure: Measure,
    /// How, in words.
    pub setting: String,
    /// Jobs.
    pub jobs: u64,
    /// Wall time.
    pub seconds: f64,
    /// Jobs per second.
    pub jobs_per_second: f64,
    /// Median latency (per request, or pickup), in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Jobs per second as a fraction of the floor's requests per second, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of_floor: Option<f64>,
    /// Further figures of the measurement (the soak's memory and store size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant bounds are valid")
}

fn bar(len: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

fn row(measure: Measure, setting: String, jobs: u64, elapsed: Duration, hist: &Histogram<u64>) -> BenchRow {
    let seconds = elapsed.as_secs_f64();
    BenchRow {
        measure,
        setting,
        jobs,
        seconds,
        jobs_per_second: if seconds > 0.0 { jobs as f64 / seconds } else { 0.0 },
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        of_floor: None,
        extra: None,
    }
}

fn payload(seq: u64) -> Box<RawValue> {
    RawValue::from_string(format!("{{\"seq\":{seq}}}")).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

async fn prepare_queue(client: &Client, queue: &str) -> anyhow::Result<()> {
    let policy = QueuePolicyRequest { retention_ms: Some(60_000), ..QueuePolicyRequest::default() };
    client.queue_put(queue, &policy).await.with_context(|| format!("cannot create bench queue {queue}"))?;
    Ok(())
}

/// Runs the selected measurements and prints the summary.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let quiet = args.client.json;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if !quiet {
        println!("wharf bench against {} ({cores} cores here)", client.base());
    }
    let mut rows = Vec::new();
    for measure in &args.only {
        let queue = format!("bench-{stamp}-{}", format!("{measure:?}").to_lowercase());
        if *measure != Measure::Floor {
            prepare_queue(&client, &queue).await?;
        }
        match measure {
            Measure::Floor => rows.push(floor(&client, &args, quiet).await?),
            Measure::Enqueue => rows.push(enqueue(&client, &queue, &args, quiet).await?),
            Measure::Batch => rows.push(batch(&client, &queue, &args, quiet).await?),
            Measure::E2e => rows.push(e2e(&client, &queue, &args, quiet).await?),
            Measure::Pickup => rows.extend(pickup(&client, &queue, &args, quiet).await?),
            Measure::Workers => rows.extend(workers(&client, &queue, &args, quiet).await?),
            Measure::Soak => rows.push(soak(&client, &queue, &args, quiet).await?),
            Measure::Large => rows.extend(large(&client, &queue, &args, quiet).await?),
            Measure::Watched => rows.extend(watched(&client, &queue, &args, quiet).await?),
        }
    }
    // Every throughput also as a fraction of the floor's, a figure that carries across machines.
    if let Some(floor) = rows.iter().find(|r| r.measure == Measure::Floor).map(|r| r.jobs_per_second)
        && floor > 0.0
    {
        // Pickup and large time single jobs at a set pace: their jobs per second is no throughput.
        for r in rows.iter_mut().filter(|r| !matches!(r.measure, Measure::Pickup | Measure::Large)) {
            r.of_floor = Some(r.jobs_per_second / floor);
        }
    }
    if quiet {
        output::json(&rows)?;
        return Ok(());
    }
    let mut t = output::table(&["MEASUREMENT", "SETTING", "JOBS", "SECONDS", "JOBS/S", "OF FLOOR", "P50", "P99"]);
    for r in &rows {
        t.add_row(vec![
            format!("{:?}", r.measure).to_lowercase(),
            r.setting.clone(),
            r.jobs.to_string(),
            format!("{:.2}", r.seconds),
            format!("{:.0}", r.jobs_per_second),
            r.of_floor.map_or_else(|| "-".into(), |f| format!("{:.0} %", f * 100.0)),
            if r.p50_ms.is_nan() { "-".into() } else { format!("{:.2} ms", r.p50_ms) },
            if r.p99_ms.is_nan() { "-".into() } else { format!("{:.2} ms", r.p99_ms) },
        ]);
    }
    println!("{t}");
    for r in rows.iter().filter_map(|r| r.extra.as_ref()) {
        if let Some(summary) = r["summary"].as_str() {
            println!("{summary}");
        }
    }
    Ok(())
}

/// One small request of a closed-loop measurement.
#[derive(Clone)]
enum Call {
    /// A one-job enqueue to this path.
    Enqueue(String),
    /// `GET /health`: the same client and HTTP path with no work behind it.
    Health,
}

impl Call {
    async fn send(&self, conn: &mut Connection, seq: u64) -> anyhow::Result<()> {
        // The body is written directly and the answer only checked for its status: the client
        // should spend its share of the two cores on load, not on itself.
        let ((status, answer), expected) = match self {
            Call::Enqueue(path) => {
                let body = bytes::Bytes::from(format!(r#"{{"kind":"noop","payload":{{"seq":{seq}}}}}"#));
                (conn.post_bytes(path, body).await?, hyper::StatusCode::CREATED)
            }
            Call::Health => (conn.get_bytes("/health").await?, hyper::StatusCode::OK),
        };
        if status != expected {
            anyhow::bail!("answered {status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }
}

/// `total` calls, `in_flight` at a time, each sender on its own keep-alive connection.
async fn closed_loop(
    client: &Client,
    call: Call,
    total: u64,
    in_flight: usize,
    progress: &ProgressBar,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (client, call, next, progress) = (client.clone(), call.clone(), Arc::clone(&next), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let mut hist = histogram();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    return Ok::<_, anyhow::Error>(hist);
                }
                let sent = Instant::now();
                call.send(&mut conn, seq).await?;
                let _ = hist.record(sent.elapsed().as_micros() as u64);
                progress.inc(1);
            }
        }));
    }
    let mut hist = histogram();
    for task in tasks {
        hist.add(task.await??).ok();
    }
    Ok((hist, start.elapsed()))
}

async fn floor(client: &Client, args: &BenchArgs, quiet: bool) -> anyhow::Result<BenchRow> {
    let progress = bar(args.jobs, "floor", quiet);
    let (hist, elapsed) = closed_loop(client, Call::Health, args.jobs, args.in_flight, &progress).await?;
    progress.finish_and_clear();
    Ok(row(Measure::Floor, format!("GET /health, {} in flight", args.in_flight), args.jobs, elapsed, &hist))
}

async fn enqueue(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<BenchRow> {
    let progress = bar(args.jobs, "enqueue", quiet);
    let call = Call::Enqueue(format!("/v1/queues/{queue}/jobs"));
    let (hist, elapsed) = closed_loop(client, call, args.jobs, args.in_flight, &progress).await?;
    progress.finish_and_clear();
    Ok(row(Measure::Enqueue, format!("1 per request, {} in flight", args.in_flight), args.jobs, elapsed, &hist))
}

async fn enqueue_batches(
    client: &Client,
    queue: &str,
    jobs: u64,
    batch: usize,
    in_flight: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Histogram<u64>> {
    let batch = batch.max(1) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (client, path, next, progress) =
            (client.clone(), format!("/v1/queues/{queue}/jobs/batch"), Arc::clone(&next), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let mut hist = histogram();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= jobs {
                    return Ok::<_, anyhow::Error>(hist);
                }
                let last = (first + batch).min(jobs);
                let req = BatchEnqueueRequest {
                    jobs: (first..last)
                        .map(|seq| EnqueueRequest {
                            kind: "noop".into(),
                            payload: Some(payload(seq)),
                            ..EnqueueRequest::default()
                        })
                        .collect(),
                };
                let sent = Instant::now();
                let _: BatchEnqueueResponse = conn.post(&path, &req).await?;
                let _ = hist.record(sent.elapsed().as_micros() as u64);
                progress.inc(last - first);
            }
        }));
    }
    let mut hist = histogram();
    for task in tasks {
        hist.add(task.await??).ok();
    }
    Ok(hist)
}

async fn batch(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<BenchRow> {
    let progress = bar(args.batch_jobs, "batch", quiet);
    let start = Instant::now();
    let hist = enqueue_batches(client, queue, args.batch_jobs, args.batch, 4, &progress).await?;
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    Ok(row(Measure::Batch, format!("{} per request, 4 in flight", args.batch), args.batch_jobs, elapsed, &hist))
}

/// A lease request of up to `max` jobs from `queue`, waiting at most 100 ms.
fn noop_lease(worker_id: String, queue: String, max: i64) -> LeaseRequest {
    LeaseRequest {
        worker_id,
        queues: vec![queue],
        max: Some(max),
        wait_ms: Some(100),
        lease_ms: None,
        ..Default::default()
    }
}

/// One round of a no-op worker: lease, then acknowledge every job leased as done in one
/// `/v1/ack`. Returns how many completions the server took, or `None` when nothing was leased.
async fn lease_and_ack(conn: &mut Connection, lease: &LeaseRequest) -> anyhow::Result<Option<u64>> {
    let jobs = conn.post::<_, LeaseResponse>("/v1/lease", lease).await?.jobs;
    if jobs.is_empty() {
        return Ok(None);
    }
    let ack = AckRequest {
        complete: jobs
            .into_iter()
            .map(|j| AckComplete { id: j.id, lease_token: j.lease_token, result: None })
            .collect(),
        fail: Vec::new(),
    };
    let acked: AckResponse = conn.post("/v1/ack", &ack).await?;
    Ok(Some(acked.complete.iter().filter(|item| item.state.is_some()).count() as u64))
}

async fn e2e(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<BenchRow> {
    let loading = bar(args.e2e_jobs, "load", quiet);
    enqueue_batches(client, queue, args.e2e_jobs, 1_000, 4, &loading).await?;
    loading.finish_and_clear();
    let total = args.e2e_jobs;
    let done = Arc::new(AtomicU64::new(0));
    let progress = bar(total, "e2e", quiet);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.workers.max(1) {
        let (client, queue, done, progress) = (client.clone(), queue.to_owned(), Arc::clone(&done), progress.clone());
        let max = args.lease_batch;
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let mut hist = histogram();
            let lease = noop_lease(format!("bench-{w}"), queue, max);
            while done.load(Ordering::Relaxed) < total {
                let sent = Instant::now();
                let Some(n) = lease_and_ack(&mut conn, &lease).await? else { continue };
                let _ = hist.record(sent.elapsed().as_micros() as u64);
                done.fetch_add(n, Ordering::Relaxed);
                progress.inc(n);
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut hist = histogram();
    for task in tasks {
        hist.add(task.await??).ok();
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    let setting = format!("{} workers, lease {} + 1 ack per round", args.workers, args.lease_batch);
    Ok(row(Measure::E2e, setting, done.load(Ordering::Relaxed), elapsed, &hist))
}

/// Microseconds since `origin`, plus one so that zero means "not yet".
fn stamp(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64 + 1
}

fn stamps(n: u64) -> Arc<Vec<AtomicU64>> {
    Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// Three rows: ready → leased (the job became ready when its enqueue was acknowledged, i.e.
/// committed), enqueue sent → leased (which adds the enqueue's own round trip and commit), and
/// `GET /health` at the same rate: the round trip of a request that finds the machine idle,
/// the floor under the second figure (on a VM, much above the back-to-back floor's).
async fn pickup(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<Vec<BenchRow>> {
    let total = args.pickup_jobs;
    let origin = Instant::now();
    let (sent, acked, leased) = (stamps(total), stamps(total), stamps(total));
    let received = Arc::new(AtomicU64::new(0));
    let progress = bar(total, "pickup", quiet);
    let mut consumers = Vec::new();
    for w in 0..2 {
        let (client, queue, leased, received, progress) =
            (client.clone(), queue.to_owned(), Arc::clone(&leased), Arc::clone(&received), progress.clone());
        consumers.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let lease = LeaseRequest {
                worker_id: format!("bench-pickup-{w}"),
                queues: vec![queue],
                max: Some(1),
                wait_ms: Some(500),
                lease_ms: None,
                ..Default::default()
            };
            while received.load(Ordering::Relaxed) < total {
                let jobs = conn.post::<_, LeaseResponse>("/v1/lease", &lease).await?.jobs;
                let now = stamp(origin);
                let mut ack = AckRequest::default();
                for job in jobs {
                    let seq = serde_json::from_str::<serde_json::Value>(job.payload.get())
                        .ok()
                        .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
                        .unwrap_or(u64::MAX);
                    if let Some(slot) = leased.get(seq as usize) {
                        slot.store(now, Ordering::Release);
                    }
                    ack.complete.push(AckComplete { id: job.id, lease_token: job.lease_token, result: None });
                    received.fetch_add(1, Ordering::Relaxed);
                    progress.inc(1);
                }
                if !ack.complete.is_empty() {
                    let _: AckResponse = conn.post("/v1/ack", &ack).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / args.pickup_rate.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut producers = Vec::new();
    for seq in 0..total {
        tick.tick().await;
        let (client, queue, sent, acked) = (client.clone(), queue.to_owned(), Arc::clone(&sent), Arc::clone(&acked));
        producers.push(tokio::spawn(async move {
            let job = EnqueueRequest { kind: "noop".into(), payload: Some(payload(seq)), ..EnqueueRequest::default() };
            sent[seq as usize].store(stamp(origin), Ordering::Release);
            client.enqueue(&queue, &job).await?;
            acked[seq as usize].store(stamp(origin), Ordering::Release);
            Ok::<_, anyhow::Error>(())
        }));
    }
    for p in producers {
        p.await??;
    }
    for c in consumers {
        c.await??;
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    let (mut from_ready, mut from_send) = (histogram(), histogram());
    for seq in 0..total as usize {
        let at = leased[seq].load(Ordering::Acquire);
        // A worker may hold the job before the producer has read its answer: both leave the
        // server after the same commit. That counts as no wait (1 µs).
        let _ = from_ready.record(at.saturating_sub(acked[seq].load(Ordering::Acquire)).max(1));
        let _ = from_send.record(at.saturating_sub(sent[seq].load(Ordering::Acquire)).max(1));
    }
    Ok(vec![
        row(
            Measure::Pickup,
            format!("{} jobs/s; ready (enqueue acknowledged) → leased", args.pickup_rate),
            total,
            elapsed,
            &from_ready,
        ),
        row(Measure::Pickup, format!("{} jobs/s; enqueue sent → leased", args.pickup_rate), total, elapsed, &from_send),
        paced_floor(client, interval, total.min(500)).await?,
    ])
}

/// `calls` requests of `GET /health`, one each `interval` on one connection.
async fn paced_floor(client: &Client, interval: Duration, calls: u64) -> anyhow::Result<BenchRow> {
    let mut conn = client.connect().await?;
    let mut tick = tokio::time::interval(interval);
    let mut hist = histogram();
    let start = Instant::now();
    for seq in 0..calls {
        tick.tick().await;
        let sent = Instant::now();
        Call::Health.send(&mut conn, seq).await?;
        let _ = hist.record((sent.elapsed().as_micros() as u64).max(1));
    }
    let rate = 1.0 / interval.as_secs_f64();
    Ok(row(Measure::Pickup, format!("{rate:.0} calls/s; GET /health sent → answered"), calls, start.elapsed(), &hist))
}

/// Runs pre-enqueued jobs through real `wharf worker` processes until all have succeeded.
async fn workers(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<Vec<BenchRow>> {
    let exe = std::env::current_exe().context("cannot find the wharf binary to start workers")?;
    let runs: [(&str, &[&str], u64); 2] = [
        ("rust no-op", &["--builtin", "noop"], args.worker_jobs),
        ("exec true", &["--exec", "true"], (args.worker_jobs / 10).max(1)),
    ];
    let mut rows = Vec::new();
    for (label, handler, jobs) in runs {
        let queue = format!("{queue}-{}", label.replace(' ', "-"));
        prepare_queue(client, &queue).await?;
        let loading = bar(jobs, "load", quiet);
        enqueue_batches(client, &queue, jobs, 1_000, 4, &loading).await?;
        loading.finish_and_clear();
        let progress = bar(jobs, label, quiet);
        let start = Instant::now();
        let mut procs = Vec::new();
        for _ in 0..args.worker_procs.max(1) {
            let child = tokio::process::Command::new(&exe)
                .args(["worker", "--server", client.base(), "--queue", &queue, "--log-format", "json"])
                .args(["--concurrency", &args.worker_concurrency.to_string(), "--poll-wait", "1s"])
                .args(handler)
                .env("WHARF_LOG", "warn")
                .envs(args.client.token.as_ref().map(|token| ("WHARF_TOKEN", token)))
                .envs(args.client.ca_file.as_ref().map(|file| ("WHARF_CA_FILE", file)))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            procs.push(child);
        }
        let done = loop {
            let counts = client.queues().await?.queues.into_iter().find(|q| q.name == queue).map(|q| q.counts);
            let finished = counts.map_or(0, |c| c.succeeded + c.dead);
            progress.set_position(finished);
            if finished >= jobs {
                break finished;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elapsed = start.elapsed();
        progress.finish_and_clear();
        for child in &mut procs {
            if let Some(pid) = child.id() {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
        for mut child in procs {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        let seconds = elapsed.as_secs_f64();
        rows.push(BenchRow {
            measure: Measure::Workers,
            setting: format!("{} x wharf worker --concurrency {}, {label}", args.worker_procs, args.worker_concurrency),
            jobs: done,
            seconds,
            jobs_per_second: done as f64 / seconds.max(f64::EPSILON),
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            of_floor: None,
            extra: None,
        });
    }
    Ok(rows)
}

/// A value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Enqueues `--soak-jobs` in batches while four loops lease and acknowledge them, keeping the
/// backlog under 50,000; samples the server's memory and store size every second.
async fn soak(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<BenchRow> {
    let retention = crate::core::time::parse_duration(&args.soak_retention)
        .map_err(|e| anyhow::anyhow!("--soak-retention: {e}"))?;
    let policy =
        QueuePolicyRequest { retention_ms: Some(retention.as_millis() as i64), ..QueuePolicyRequest::default() };
    client.queue_put(queue, &policy).await?;
    let total = args.soak_jobs;
    let (enqueued, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let progress = bar(total, "soak", quiet);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (client, path, enqueued, done) =
            (client.clone(), format!("/v1/queues/{queue}/jobs/batch"), Arc::clone(&enqueued), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            loop {
                while enqueued.load(Ordering::Relaxed).saturating_sub(done.load(Ordering::Relaxed)) > 50_000 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let first = enqueued.fetch_add(1_000, Ordering::Relaxed);
                if first >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let jobs = (first..(first + 1_000).min(total))
                    .map(|seq| EnqueueRequest {
                        kind: "noop".into(),
                        payload: Some(payload(seq)),
                        ..EnqueueRequest::default()
                    })
                    .collect();
                let _: BatchEnqueueResponse = conn.post(&path, &BatchEnqueueRequest { jobs }).await?;
            }
        }));
    }
    for w in 0..4 {
        let (client, queue, done, progress) = (client.clone(), queue.to_owned(), Arc::clone(&done), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let lease = noop_lease(format!("soak-{w}"), queue, 100);
            while done.load(Ordering::Relaxed) < total {
                let Some(n) = lease_and_ack(&mut conn, &lease).await? else { continue };
                done.fetch_add(n, Ordering::Relaxed);
                progress.inc(n);
            }
            Ok(())
        }));
    }
    // Samples: (seconds since start, jobs done, resident MiB, store MiB).
    let mut samples: Vec<(f64, u64, f64, f64)> = Vec::new();
    let sample = async || -> Option<(f64, f64)> {
        let text = client.text("/metrics").await.ok()?;
        Some((
            metric(&text, "process_resident_memory_bytes")? / 1_048_576.0,
            metric(&text, "wharf_store_size_bytes")? / 1_048_576.0,
        ))
    };
    while done.load(Ordering::Relaxed) < total && !tasks.iter().all(|t| t.is_finished()) {
        if let Some((rss, store)) = sample().await {
            samples.push((start.elapsed().as_secs_f64(), done.load(Ordering::Relaxed), rss, store));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    if let Some((rss, store)) = sample().await {
        samples.push((elapsed.as_secs_f64(), total, rss, store));
    }
    let peak_rss = samples.iter().map(|s| s.2).fold(0.0, f64::max);
    let peak_store = samples.iter().map(|s| s.3).fold(0.0, f64::max);
    let at = |fraction: f64| samples.iter().find(|s| s.1 as f64 >= fraction * total as f64).map_or(f64::NAN, |s| s.2);
    let end_store = samples.last().map_or(f64::NAN, |s| s.3);
    let summary = format!(
        "soak: server RSS {:.0} MiB at 25% of the jobs, {:.0} MiB at 50%, {:.0} MiB at the end, peak {peak_rss:.0} MiB; \
         store peak {peak_store:.0} MiB, {end_store:.0} MiB at the end (retention {})",
        at(0.25),
        at(0.5),
        at(1.0),
        args.soak_retention
    );
    let seconds = elapsed.as_secs_f64();
    Ok(BenchRow {
        measure: Measure::Soak,
        setting: format!("{total} jobs, batches of 1,000, 4 lease+ack loops, retention {}", args.soak_retention),
        jobs: total,
        seconds,
        jobs_per_second: total as f64 / seconds.max(f64::EPSILON),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        of_floor: None,
        extra: Some(serde_json::json!({
            "summary": summary,
            "peak_rss_mib": peak_rss,
            "rss_mib_at_25_50_100": [at(0.25), at(0.5), at(1.0)],
            "peak_store_mib": peak_store,
            "end_store_mib": end_store,
            "samples": samples,
        })),
    })
}

/// Runs lease-and-acknowledge loops until `total` jobs of `queue` are done.
async fn drain(client: &Client, queue: &str, total: u64, progress: &ProgressBar) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (client, queue, done, progress) = (client.clone(), queue.to_owned(), Arc::clone(&done), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            let lease = noop_lease(format!("bench-drain-{w}"), queue, 500);
            while done.load(Ordering::Relaxed) < total {
                // An empty lease means another loop took the last jobs.
                let Some(n) = lease_and_ack(&mut conn, &lease).await? else { break };
                done.fetch_add(n, Ordering::Relaxed);
                progress.inc(n);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Times `samples` one-job leases, one at a time, each acknowledged before the next.
async fn timed_leases(client: &Client, queue: &str, samples: u64) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let mut conn = client.connect().await?;
    let lease = LeaseRequest {
        worker_id: "bench-large".into(),
        queues: vec![queue.to_owned()],
        max: Some(1),
        wait_ms: Some(0),
        lease_ms: None,
        ..Default::default()
    };
    let mut hist = histogram();
    let start = Instant::now();
    for _ in 0..samples {
        let sent = Instant::now();
        let jobs = conn.post::<_, LeaseResponse>("/v1/lease", &lease).await?.jobs;
        let _ = hist.record(sent.elapsed().as_micros() as u64);
        let complete: Vec<_> =
            jobs.into_iter().map(|j| AckComplete { id: j.id, lease_token: j.lease_token, result: None }).collect();
        anyhow::ensure!(!complete.is_empty(), "the large queue ran out of ready jobs");
        let _: AckResponse = conn.post("/v1/ack", &AckRequest { complete, fail: Vec::new() }).await?;
    }
    Ok((hist, start.elapsed()))
}

/// One-job lease latency in a nearly empty queue, then in the same queue holding
/// `--large-finished` finished and `--large-ready` ready jobs. The queue keeps its finished
/// jobs for an hour (so they are there while it is measured); its ready jobs are run at the end.
async fn large(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<Vec<BenchRow>> {
    let policy = QueuePolicyRequest { retention_ms: Some(3_600_000), ..QueuePolicyRequest::default() };
    client.queue_put(queue, &policy).await?;
    let samples = args.large_samples.max(1);
    let loading = bar(samples, "load", quiet);
    enqueue_batches(client, queue, samples, 1_000, 1, &loading).await?;
    loading.finish_and_clear();
    let (empty, empty_time) = timed_leases(client, queue, samples).await?;

    let finished = args.large_finished;
    let filling = bar(finished, "finished", quiet);
    enqueue_batches(client, queue, finished, 1_000, 4, &filling).await?;
    filling.set_position(0);
    drain(client, queue, finished, &filling).await?;
    filling.finish_and_clear();
    let ready = args.large_ready.max(samples);
    let loading = bar(ready, "ready", quiet);
    enqueue_batches(client, queue, ready, 1_000, 4, &loading).await?;
    loading.finish_and_clear();
    let (full, full_time) = timed_leases(client, queue, samples).await?;
    let cleanup = bar(ready - samples, "cleanup", quiet);
    drain(client, queue, ready - samples, &cleanup).await?;
    cleanup.finish_and_clear();

    let empty_row = row(Measure::Large, "lease 1, queue nearly empty".into(), samples, empty_time, &empty);
    let mut full_row =
        row(Measure::Large, format!("lease 1, {finished} finished + {ready} ready"), samples, full_time, &full);
    let ratio = |q: f64| full.value_at_quantile(q) as f64 / empty.value_at_quantile(q).max(1) as f64;
    full_row.extra = Some(serde_json::json!({
        "summary": format!(
            "large: lease latency with {finished} finished and {ready} ready jobs is {:.2}x the nearly empty queue's at p50, {:.2}x at p99",
            ratio(0.5),
            ratio(0.99)
        ),
        "p50_ratio": ratio(0.5),
        "p99_ratio": ratio(0.99),
    }));
    Ok(vec![empty_row, full_row])
}

/// What an open dashboard overview asks of the server until `stop`: every event of
/// `/v1/events` read, and the queues, workers and pools read every second. Returns the events
/// read.
async fn overview_load(client: Client, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<u64> {
    use futures_util::StreamExt as _;
    let events = client.all_events().await?;
    tokio::pin!(events);
    let mut read = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = events.next() => match next {
                Some(event) => {
                    event?;
                    read += 1;
                }
                None => anyhow::bail!("the event stream ended"),
            },
            _ = tick.tick() => {
                let (queues, workers, pools) = tokio::join!(client.queues(), client.workers(), client.pools());
                queues?;
                workers?;
                pools?;
            }
            () = stop.cancelled() => return Ok(read),
        }
    }
}

async fn watched(client: &Client, queue: &str, args: &BenchArgs, quiet: bool) -> anyhow::Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let (mut plain, mut watched) = (Vec::new(), Vec::new());
    let mut events = 0;
    for round in 0..2 {
        for watch in [false, true] {
            let queue = format!("{queue}-{round}-{}", if watch { "watched" } else { "plain" });
            prepare_queue(client, &queue).await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let watcher = watch.then(|| tokio::spawn(overview_load(client.clone(), stop.clone())));
            let mut row = e2e(client, &queue, args, quiet).await?;
            stop.cancel();
            if let Some(watcher) = watcher {
                events += watcher.await??;
            }
            row.measure = Measure::Watched;
            row.setting = format!("{}, {}", if watch { "overview open" } else { "nobody watching" }, row.setting);
            if watch { &mut watched } else { &mut plain }.push(row.jobs_per_second);
            rows.push(row);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (without, with) = (mean(&plain), mean(&watched));
    let summary = format!(
        "an open overview cost {:.1} % of end-to-end throughput ({without:.0}/s without, {with:.0}/s with; {events} events read)",
        (1.0 - with / without.max(1.0)) * 100.0
    );
    if let Some(last) = rows.last_mut() {
        last.extra = Some(serde_json::json!({ "summary": summary }));
    }
    Ok(rows)
}
