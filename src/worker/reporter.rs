//! Sends attempt outcomes to the server in batches, retrying until it answers.
//!
//! Completions and failures from all running jobs go through one channel; the reporter sends
//! whatever has gathered as one `POST /v1/ack` (one durable transaction on the server), so a
//! busy worker pays one round trip for many jobs. Releases go one by one (they are rare: only
//! at shutdown). A network error is retried with backoff until the server answers or the
//! report's lease has run out (the server would refuse it then, and hand the job out again); a
//! refusal of one item (its lease is gone) is logged and dropped, since the job belongs to
//! someone else by then.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::{AckComplete, AckFail, AckRequest, Json};
use crate::client::{Client, ClientError};
use crate::core::JobState;
use crate::core::backoff::Backoff;

/// One outcome to report.
#[derive(Debug)]
pub(super) enum Report {
    Complete { id: String, lease_token: String, result: Option<Json> },
    Fail { id: String, lease_token: String, error: String, retryable: bool, retry_in_ms: Option<u64> },
    Release { id: String, lease_token: String },
}

impl Report {
    fn id(&self) -> &str {
        match self {
            Report::Complete { id, .. } | Report::Fail { id, .. } | Report::Release { id, .. } => id,
        }
    }

    /// What it says became of the attempt.
    pub(super) fn kind(&self) -> ReportKind {
        match self {
            Report::Complete { .. } => ReportKind::Completed,
            Report::Fail { retryable: false, .. } => ReportKind::FailedForGood,
            Report::Fail { .. } => ReportKind::Failed,
            Report::Release { .. } => ReportKind::Released,
        }
    }
}

/// What became of an attempt, as its report says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReportKind {
    /// The handler succeeded.
    Completed,
    /// It failed, and the job is not to be retried.
    FailedForGood,
    /// It failed, and may be retried.
    Failed,
    /// The worker gave the lease back.
    Released,
}

impl ReportKind {
    /// As the attempt's log line reads: `attempt <kind>`.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            ReportKind::Completed => "completed",
            ReportKind::FailedForGood => "failed for good",
            ReportKind::Failed => "failed",
            ReportKind::Released => "released",
        }
    }

    /// The `outcome` field of the attempt's log line, for programs that read the log.
    pub(super) const fn code(self) -> &'static str {
        match self {
            ReportKind::Completed => "completed",
            ReportKind::FailedForGood => "failed_for_good",
            ReportKind::Failed => "failed",
            ReportKind::Released => "released",
        }
    }
}

impl std::fmt::Display for ReportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server refused a report.
#[derive(Clone, Debug)]
pub(super) struct Refusal {
    /// The problem code, when the server answered with one.
    pub(super) code: Option<String>,
    /// What it said.
    pub(super) detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code})", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl From<&str> for Refusal {
    fn from(detail: &str) -> Self {
        Refusal { code: None, detail: detail.to_owned() }
    }
}

/// What became of a report: the job's new state, or why the server refused it.
pub(super) type Receipt = Result<JobState, Refusal>;

/// The job's state as the server answered it; a name this worker does not know is as unusable
/// an answer as none.
fn settled_state(state: &str) -> Receipt {
    state.parse::<JobState>().map_err(|unknown| Refusal::from(&*format!("the server answered {unknown}")))
}

/// Most outcomes in one acknowledgement.
const MAX_BATCH: usize = 256;

/// Pauses between tries to reach a server that does not answer: up to 100 ms doubling to 5 s,
/// with full jitter, so a fleet of workers does not come back in lockstep.
pub(super) const RECONNECT: Backoff = Backoff { base_ms: 100, factor: 2.0, cap_ms: 5_000 };

/// A report waiting to be sent: what, until when it is worth sending (its lease's end), and
/// where its receipt goes.
type Queued = (Report, Instant, oneshot::Sender<Receipt>);

/// A handle to the reporter task.
#[derive(Clone, Debug)]
pub(super) struct Reporter {
    tx: mpsc::Sender<Queued>,
    /// When a stopping worker stops retrying unreachable servers, whatever the leases say.
    give_up_by: Arc<watch::Sender<Option<Instant>>>,
}

impl Reporter {
    /// Starts the task; it ends when every handle is dropped and its queue is empty.
    pub(super) fn start(
        client: Client,
        on_contact: impl Fn(bool) + Send + Sync + 'static,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let (give_up_by, stopping) = watch::channel(None);
        let task = tokio::spawn(run(client, rx, on_contact, stopping));
        (Reporter { tx, give_up_by: Arc::new(give_up_by) }, task)
    }

    /// Stops retrying at `at`: reports still going through land, but none waits for a server
    /// that cannot be reached past it.
    pub(super) fn give_up_by(&self, at: Instant) {
        self.give_up_by.send_replace(Some(at));
    }

    /// Queues a report; resolves once the server has answered it, or once `lease_until` has
    /// passed without the server being reachable.
    pub(super) async fn send(&self, report: Report, lease_until: Instant) -> Receipt {
        let (done, receipt) = oneshot::channel();
        if self.tx.send((report, lease_until, done)).await.is_err() {
            return Err("the reporter has stopped".into());
        }
        receipt.await.unwrap_or_else(|_| Err("the reporter stopped before the server answered".into()))
    }
}

async fn run(
    client: Client,
    mut rx: mpsc::Receiver<Queued>,
    on_contact: impl Fn(bool) + Send + Sync,
    stopping: watch::Receiver<Option<Instant>>,
) {
    let stopping = Some(&stopping);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (releases, acks): (Vec<_>, Vec<_>) =
            batch.drain(..).partition(|(r, _, _)| matches!(r, Report::Release { .. }));
        for (report, lease_until, done) in releases {
            let receipt = retry(&on_contact, Some(lease_until), stopping, || single(&client, &report))
                .await
                .and_then(|state| settled_state(&state));
            log_refusal(report.id(), &receipt);
            let _ = done.send(receipt);
        }
        if acks.is_empty() {
            continue;
        }
        let request = ack_request(acks.iter().map(|(r, _, _)| r));
        // Worth sending while any of its leases lasts; the server refuses the expired items.
        let give_up_at = acks.iter().map(|(_, until, _)| *until).max();
        match retry(&on_contact, give_up_at, stopping, || client.ack(&request)).await {
            Ok(answer) => {
                // `ack_request` puts completions first, then failures, each in arrival order.
                let (completes, fails): (Vec<_>, Vec<_>) =
                    acks.into_iter().partition(|(r, _, _)| matches!(r, Report::Complete { .. }));
                for ((report, _, done), item) in
                    completes.into_iter().zip(answer.complete.iter().map(Some).chain(std::iter::repeat(None)))
                {
                    let receipt = item_receipt(item);
                    log_refusal(report.id(), &receipt);
                    let _ = done.send(receipt);
                }
                for ((report, _, done), item) in
                    fails.into_iter().zip(answer.fail.iter().map(Some).chain(std::iter::repeat(None)))
                {
                    let receipt = item_receipt(item);
                    log_refusal(report.id(), &receipt);
                    let _ = done.send(receipt);
                }
            }
            Err(refusal) if acks.len() == 1 || refusal.code.is_none() => {
                // One item, or nothing reached the server before the leases ran out.
                for (report, _, done) in acks {
                    let receipt = Err(refusal.clone());
                    log_refusal(report.id(), &receipt);
                    let _ = done.send(receipt);
                }
            }
            Err(refusal) => {
                // One bad item (a result over the size limit, say) refuses the whole request:
                // send each alone so the others still land.
                tracing::debug!(reason = %refusal, "batched acknowledgement refused; sending items one by one");
                for (report, lease_until, done) in acks {
                    let receipt = retry(&on_contact, Some(lease_until), stopping, || single(&client, &report))
                        .await
                        .and_then(|state| settled_state(&state));
                    log_refusal(report.id(), &receipt);
                    let _ = done.send(receipt);
                }
            }
        }
    }
}

fn item_receipt(item: Option<&crate::api::AckItemResult>) -> Receipt {
    match item {
        Some(item) => match (&item.state, &item.error) {
            (Some(state), _) => settled_state(state),
            (None, Some(problem)) => Err(Refusal { code: Some(problem.code.clone()), detail: problem.detail.clone() }),
            (None, None) => Err("the server answered neither a state nor an error".into()),
        },
        None => Err("the server's answer is missing this item".into()),
    }
}

fn log_refusal(id: &str, receipt: &Receipt) {
    if let Err(why) = receipt {
        tracing::warn!(job_id = %id, reason = %why, "outcome not recorded; the job is no longer this worker's");
    }
}

fn ack_request<'a>(reports: impl Iterator<Item = &'a Report>) -> AckRequest {
    let mut request = AckRequest::default();
    for report in reports {
        match report {
            Report::Complete { id, lease_token, result } => request.complete.push(AckComplete {
                id: id.clone(),
                lease_token: lease_token.clone(),
                result: result.clone(),
            }),
            Report::Fail { id, lease_token, error, retryable, retry_in_ms } => request.fail.push(AckFail {
                id: id.clone(),
                lease_token: lease_token.clone(),
                error: error.clone(),
                retryable: Some(*retryable),
                retry_in_ms: retry_in_ms.map(|ms| ms as i64),
            }),
            Report::Release { .. } => {}
        }
    }
    request
}

/// Sends one report on its own endpoint; the job's state as the server answered it.
async fn single(client: &Client, report: &Report) -> Result<String, ClientError> {
    let settled = match report {
        Report::Complete { id, lease_token, result } => {
            let request = crate::api::CompleteRequest { lease_token: lease_token.clone(), result: result.clone() };
            client.complete(id, &request).await?
        }
        Report::Fail { id, lease_token, error, retryable, retry_in_ms } => {
            let request = crate::api::FailRequest {
                lease_token: lease_token.clone(),
                error: error.clone(),
                retryable: Some(*retryable),
                retry_in_ms: retry_in_ms.map(|ms| ms as i64),
            };
            client.fail(id, &request).await?
        }
        Report::Release { id, lease_token } => client.release(id, lease_token).await?,
    };
    Ok(settled.state)
}

/// Calls `op` until the server answers: network errors and 5xx are retried with backoff
/// ([`RECONNECT`]) until `give_up_at` or the time `stopping` names,
/// whichever comes first; any other answer, including a refusal, is final. Giving up is a
/// refusal without a problem code.
pub(super) async fn retry<T, Fut>(
    on_contact: &(impl Fn(bool) + ?Sized),
    give_up_at: Option<Instant>,
    stopping: Option<&watch::Receiver<Option<Instant>>>,
    mut op: impl FnMut() -> Fut,
) -> Result<T, Refusal>
where
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut rng = fastrand::Rng::new();
    let mut tries = 0u32;
    loop {
        match op().await {
            Ok(value) => {
                on_contact(true);
                return Ok(value);
            }
            Err(ClientError::Api { status, problem }) if status < 500 => {
                on_contact(true);
                return Err(Refusal { code: Some(problem.code), detail: problem.detail });
            }
            Err(err) => {
                on_contact(false);
                tries = tries.saturating_add(1);
                let pause = Duration::from_millis(RECONNECT.delay_ms(tries, &mut rng));
                let stop_at = stopping.and_then(|s| *s.borrow());
                let until = match (give_up_at, stop_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if until.is_some_and(|at| Instant::now() + pause >= at) {
                    tracing::warn!(error = %err, "cannot reach the server, and time is up; giving up");
                    return Err(Refusal::from(
                        "the server could not be reached in time; it will hand the job out again when the lease runs out",
                    ));
                }
                tracing::warn!(error = %err, retry_in_ms = pause.as_millis() as u64, "cannot reach the server; retrying");
                match stopping {
                    // A worker that starts stopping mid-pause rechecks its deadline at once.
                    Some(stopping) => {
                        let mut stopping = stopping.clone();
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            _ = stopping.changed() => {}
                        }
                    }
                    None => tokio::time::sleep(pause).await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_report_reads_as_its_log_line() {
        let (id, lease_token) = (String::from("j"), String::from("t"));
        let fail = |retryable| Report::Fail {
            id: id.clone(),
            lease_token: lease_token.clone(),
            error: "e".into(),
            retryable,
            retry_in_ms: None,
        };
        let reports = [
            Report::Complete { id: id.clone(), lease_token: lease_token.clone(), result: None },
            fail(false),
            fail(true),
            Report::Release { id: id.clone(), lease_token: lease_token.clone() },
        ];
        let lines: Vec<String> = reports.iter().map(|r| format!("attempt {}", r.kind())).collect();
        assert_eq!(lines, ["attempt completed", "attempt failed for good", "attempt failed", "attempt released"]);
    }

    #[test]
    fn the_servers_state_is_read_as_a_job_state() {
        assert_eq!(settled_state("ready").ok(), Some(JobState::Ready));
        assert_eq!(settled_state("dead").ok().map(|s| s.to_string()), Some("dead".into()), "logged as it came");
        let unknown = settled_state("exploded").unwrap_err();
        assert!(unknown.code.is_none() && unknown.detail.contains("exploded"), "{unknown}");
    }
}
