//! What a run recorded.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of the server (of one node, with several), then a restart on the same data.
    ServerCrash,
    /// `kill -9` of a worker (a new one replaces it).
    WorkerKill,
    /// SIGSTOP of a worker for longer than the lease, then SIGCONT: a stale worker.
    WorkerPause,
    /// SIGTERM of a worker: it drains and releases (a new one replaces it).
    WorkerTerm,
    /// PostgreSQL restarted as after a crash (`pg_ctl restart -m immediate`): every node loses
    /// its connections at once.
    DatabaseRestart,
}

/// One injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When it started (ms since the epoch).
    pub at_ms: i64,
    /// When it ended (the restart, the SIGCONT, the exit).
    pub until_ms: i64,
    /// The worker it hit.
    pub worker_pid: Option<u32>,
}

/// One enqueue as its producer saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Enqueue {
    /// The idempotency key (unique per logical job).
    pub key: String,
    /// The job id, when an answer acknowledged it.
    pub id: Option<String>,
    /// Requests sent for this key (retries of unknown outcomes reuse the key).
    pub tries: u32,
    /// Ids of every acknowledgement for this key (all must be equal).
    pub acked_ids: Vec<String>,
}

/// One execution of a handler, from the handlers' log.
#[derive(Clone, Debug, Serialize)]
pub struct Execution {
    /// The job.
    pub job: String,
    /// `WHARF_ATTEMPT`.
    pub attempt: u32,
    /// `WHARF_LEASE_TOKEN`.
    pub token: String,
    /// The worker's pid.
    pub worker_pid: u32,
    /// Start (ms).
    pub start_ms: i64,
    /// End (ms), if the handler got that far.
    pub end_ms: Option<i64>,
}

/// What a worker logged about an outcome it reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reported {
    /// The server acknowledged the completion (`succeeded`).
    Completed,
    /// The server acknowledged the release (SIGTERM drain).
    Released,
    /// The worker sent a release but did not hear the answer in time (it stopped waiting): the
    /// server may have applied it.
    ReleaseUnanswered,
}

/// A worker's acknowledged report.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerReport {
    /// The job.
    pub job: String,
    /// What was acknowledged.
    pub what: Reported,
    /// When (ms).
    pub at_ms: i64,
    /// The worker's pid.
    pub worker_pid: u32,
}

/// A job as the server holds it at the end.
#[derive(Clone, Debug, Serialize)]
pub struct FinalJob {
    /// Its state.
    pub state: String,
    /// Its attempt count.
    pub attempt: u32,
    /// Its result.
    pub result: Value,
    /// `(attempt, message)` per failed attempt.
    pub errors: Vec<(u32, String)>,
    /// When it finished (ms).
    pub finished_ms: Option<i64>,
}

/// Everything recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Enqueues by key.
    pub enqueues: Vec<Enqueue>,
    /// Handler executions.
    pub executions: Vec<Execution>,
    /// Acknowledged reports from the workers' logs.
    pub reports: Vec<WorkerReport>,
    /// Faults.
    pub faults: Vec<Fault>,
    /// Final state of every job the producers saw acknowledged, by id.
    pub jobs: HashMap<String, FinalJob>,
    /// Every job on the server's queue at the end: `(id, idempotency_key)`.
    pub listed: Vec<(String, Option<String>)>,
    /// The queue's lease.
    pub lease_ms: u64,
    /// From the end of the last fault until every job was finished.
    pub drain_ms: Option<i64>,
}

/// Parses an RFC 3339 UTC timestamp into ms since the epoch.
pub fn parse_ms(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

/// Reads the handlers' execution log.
pub fn read_executions(path: &Path) -> anyhow::Result<Vec<Execution>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_lease: HashMap<(String, String), Execution> = HashMap::new();
    let mut order = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kind, job, attempt, token, _pid, ppid, ms] = fields[..] else { continue };
        let (Ok(attempt), Ok(ppid), Ok(ms)) = (attempt.parse(), ppid.parse(), ms.parse()) else { continue };
        let key = (job.to_owned(), token.to_owned());
        match kind {
            "start" => {
                order.push(key.clone());
                by_lease.insert(
                    key,
                    Execution {
                        job: job.to_owned(),
                        attempt,
                        token: token.to_owned(),
                        worker_pid: ppid,
                        start_ms: ms,
                        end_ms: None,
                    },
                );
            }
            "end" => {
                if let Some(e) = by_lease.get_mut(&key) {
                    e.end_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
    Ok(order.into_iter().filter_map(|k| by_lease.remove(&k)).collect())
}

/// Reads a worker's JSON log for the outcomes the server acknowledged, and the releases it may
/// have applied unheard: the structured fields of each attempt's line (`outcome`, `recorded`,
/// the span's `job_id`), never its message.
pub fn read_reports(path: &Path, worker_pid: u32) -> Vec<WorkerReport> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut reports = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let what = match (v["outcome"].as_str(), v["recorded"].as_bool()) {
            (Some("completed"), Some(true)) => Reported::Completed,
            (Some("released"), Some(true)) => Reported::Released,
            (Some("released"), Some(false)) => Reported::ReleaseUnanswered,
            _ => continue,
        };
        let (Some(job), Some(at_ms)) = (v["span"]["job_id"].as_str(), v["timestamp"].as_str().and_then(parse_ms))
        else {
            continue;
        };
        reports.push(WorkerReport { job: job.to_owned(), what, at_ms, worker_pid });
    }
    reports
}
