//! The properties a history must have, each checked with its counterexample.
//!
//! 1. **Acknowledged enqueues survive**: every job a producer saw acknowledged exists at the
//!    end and has finished (`succeeded`: the handler always succeeds eventually).
//! 2. **Acknowledged completions stand, once**: every completion a worker saw acknowledged is
//!    the job's final state, and no job had two completions acknowledged. The workers' records
//!    of acknowledged completions must exist: finished jobs with none recorded is a failure. (A stale worker may
//!    still *start* a lease it received before its pause; delivery is at least once. Its
//!    outcome must not count, which is property 3.)
//! 3. **Fencing**: the completion the server kept came from the job's latest lease (latest by
//!    attempt, then by start), and its attempt is the job's last.
//! 4. **Every redelivery is explained**: when a job ran again, the earlier lease expired (the
//!    server recorded `lease expired` for that attempt), or was given back (the attempt number
//!    did not grow: a release the worker saw acknowledged, a release that worker sent but
//!    stopped waiting for the answer to, or a lease lost with a server crash), or its worker was
//!    killed.
//! 5. **Idempotency**: every acknowledgement of a key named the same job, and the server holds
//!    at most one job per key.
//! 6. **Released jobs run again at once**: a job released by a draining worker started again
//!    sooner than a lease timeout, unless a server crashed (or the database restarted) in
//!    between: no job starts while the server is down, nor until the workers, backing off,
//!    reconnect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::history::{Execution, FaultKind, History, Reported};

/// One property that failed, with what shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Which property.
    pub property: &'static str,
    /// The job (or key) concerned.
    pub subject: String,
    /// The counterexample.
    pub detail: String,
}

/// The figures of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// Jobs acknowledged to producers.
    pub jobs: usize,
    /// Handler executions.
    pub executions: usize,
    /// Executions beyond the first per job, by cause.
    pub redeliveries: BTreeMap<&'static str, usize>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// From the end of the last fault until every job was finished.
    pub drain_ms: Option<i64>,
    /// Enqueue requests retried after an unknown outcome.
    pub enqueue_retries: u32,
}

/// The outcome of a check.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Every property that failed; empty when the history is valid.
    pub violations: Vec<Violation>,
    /// What the run did.
    pub figures: Figures,
}

impl Verdict {
    /// True when every property held.
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fig = &self.figures;
        writeln!(
            f,
            "jobs acknowledged: {}   executions: {}   enqueue retries: {}",
            fig.jobs, fig.executions, fig.enqueue_retries
        )?;
        writeln!(f, "faults: {:?}", fig.faults)?;
        writeln!(f, "redeliveries: {:?}", fig.redeliveries)?;
        match fig.drain_ms {
            Some(ms) => writeln!(f, "drained {ms} ms after the last fault")?,
            None => writeln!(f, "did NOT drain")?,
        }
        if self.valid() {
            write!(f, "verdict: VALID — every property held")
        } else {
            writeln!(f, "verdict: INVALID — {} violation(s):", self.violations.len())?;
            for v in self.violations.iter().take(20) {
                writeln!(f, "  [{}] {}: {}", v.property, v.subject, v.detail)?;
            }
            Ok(())
        }
    }
}

/// How long after the next lease started a release's acknowledgement may be logged.
const RELEASE_LOG_SLACK_MS: i64 = 5_000;

/// Checks a history.
pub fn check(history: &History) -> Verdict {
    let mut violations = Vec::new();
    let mut bad = |property: &'static str, subject: &str, detail: String| {
        violations.push(Violation { property, subject: subject.to_owned(), detail });
    };
    let mut runs: HashMap<&str, Vec<&Execution>> = HashMap::new();
    for e in &history.executions {
        runs.entry(e.job.as_str()).or_default().push(e);
    }
    // In lease order. A new lease after an expiry has a higher attempt number; one after a
    // release or a lost lease has the same number and starts after the earlier run started.
    // (Start times alone can disagree: a paused worker may start an expired lease late.
    // Tokens are opaque: with several nodes they need not grow.)
    for list in runs.values_mut() {
        list.sort_by(|a, b| (a.attempt, a.start_ms, &a.token).cmp(&(b.attempt, b.start_ms, &b.token)));
    }

    // 1. Acknowledged enqueues survive and finish once.
    for enqueue in &history.enqueues {
        let Some(id) = &enqueue.id else { continue };
        match history.jobs.get(id) {
            None => bad(
                "acknowledged-enqueue-survives",
                id,
                format!("key {} was acknowledged but the job is gone", enqueue.key),
            ),
            Some(job) if job.state == "missing" => bad(
                "acknowledged-enqueue-survives",
                id,
                format!("key {} was acknowledged but the server does not know the job", enqueue.key),
            ),
            Some(job) if job.state != "succeeded" => bad(
                "acknowledged-enqueue-survives",
                id,
                format!("ended {} (attempt {}), errors {:?}", job.state, job.attempt, job.errors),
            ),
            Some(_) => {}
        }
    }

    // 2. Acknowledged completions stand, once.
    let mut completions: HashMap<&str, Vec<i64>> = HashMap::new();
    for report in history.reports.iter().filter(|r| r.what == Reported::Completed) {
        completions.entry(report.job.as_str()).or_default().push(report.at_ms);
        if let Some(job) = history.jobs.get(&report.job)
            && job.state != "succeeded"
        {
            bad(
                "acknowledged-completion-stands",
                &report.job,
                format!("completion acknowledged at {} but the job ended {}", report.at_ms, job.state),
            );
        }
    }
    // The workers' logs must show the completions: a history without them proves nothing.
    let finished = history.jobs.values().filter(|j| j.state == "succeeded").count();
    if finished > 0 && completions.is_empty() {
        bad(
            "acknowledged-completion-stands",
            "workers",
            format!("{finished} jobs succeeded but no worker log records an acknowledged completion"),
        );
    }
    for (job, times) in completions {
        if times.len() > 1 {
            bad("finishes-once", job, format!("{} completions were acknowledged, at {times:?}", times.len()));
        }
    }

    // 3. Fencing: the kept completion came from the latest lease.
    for (id, job) in &history.jobs {
        if job.state != "succeeded" {
            continue;
        }
        let (Some(token), Some(attempt)) = (job.result["token"].as_str(), job.result["attempt"].as_u64()) else {
            bad("fencing", id, format!("result {} does not name its lease", job.result));
            continue;
        };
        let latest = runs.get(id.as_str()).and_then(|l| l.last()).map(|e| e.token.as_str());
        if let Some(latest) = latest
            && token != latest
        {
            bad(
                "fencing",
                id,
                format!("kept the completion of token {token} (attempt {attempt}) though a later lease {latest} ran"),
            );
        }
        if attempt as u32 != job.attempt {
            bad(
                "fencing",
                id,
                format!("kept the completion of attempt {attempt} but the job is at attempt {}", job.attempt),
            );
        }
    }

    // 4. Every redelivery explained; 6. released jobs run again at once.
    let mut redeliveries: BTreeMap<&'static str, usize> = BTreeMap::new();
    let kills: Vec<(u32, i64)> = history
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::WorkerKill)
        .filter_map(|f| f.worker_pid.map(|p| (p, f.at_ms)))
        .collect();
    let crashes: Vec<(i64, i64)> =
        history.faults.iter().filter(|f| f.kind == FaultKind::ServerCrash).map(|f| (f.at_ms, f.until_ms)).collect();
    let releases: Vec<(&str, i64)> =
        history.reports.iter().filter(|r| r.what == Reported::Released).map(|r| (r.job.as_str(), r.at_ms)).collect();
    // A release whose answer the stopping worker stopped waiting for: the server may have
    // applied it, so it can explain a redelivery of the same attempt by that worker's job (and
    // nothing else).
    let unanswered: Vec<(&str, u32, i64)> = history
        .reports
        .iter()
        .filter(|r| r.what == Reported::ReleaseUnanswered)
        .map(|r| (r.job.as_str(), r.worker_pid, r.at_ms))
        .collect();
    for (id, list) in &runs {
        let expired: HashSet<u32> = history
            .jobs
            .get(*id)
            .map(|j| j.errors.iter().filter(|(_, m)| m == "lease expired").map(|(a, _)| *a).collect())
            .unwrap_or_default();
        for pair in list.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            // A release is logged when the worker hears the answer, which can come a little
            // after the next lease started.
            let released = releases
                .iter()
                .any(|&(job, at)| job == *id && at >= first.start_ms && at <= next.start_ms + RELEASE_LOG_SLACK_MS);
            let cause = if next.attempt == first.attempt {
                if crashes.iter().any(|&(at, _)| at >= first.start_ms && at <= next.start_ms) {
                    Some("lease lost in a server crash")
                } else if released {
                    Some("released")
                } else if unanswered.iter().any(|&(job, pid, at)| {
                    job == *id
                        && pid == first.worker_pid
                        && at >= first.start_ms
                        && at <= next.start_ms + RELEASE_LOG_SLACK_MS
                }) {
                    Some("released, answer unheard")
                } else {
                    None
                }
            } else if kills
                .iter()
                .any(|&(pid, at)| pid == first.worker_pid && at >= first.start_ms && at <= next.start_ms)
            {
                Some("worker killed")
            } else if expired.contains(&first.attempt) {
                Some("lease expired")
            } else {
                None
            };
            let cause = cause.unwrap_or_else(|| {
                let errors = history.jobs.get(*id).map(|j| j.errors.clone()).unwrap_or_default();
                bad(
                    "redelivery-explained",
                    id,
                    format!(
                        "attempt {} (token {}, worker {}, ran {}..{:?}) was followed by attempt {} with no expiry, acknowledged release, crash or kill; errors {errors:?}",
                        first.attempt, first.token, first.worker_pid, first.start_ms, first.end_ms, next.attempt
                    ),
                );
                "unexplained"
            });
            *redeliveries.entry(cause).or_default() += 1;
        }
    }
    // An outage counts when it began before the next run and ended after the release; a
    // release is logged when the worker hears its answer, which may be a little late.
    let outages: Vec<(i64, i64)> = history
        .faults
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::ServerCrash | FaultKind::DatabaseRestart))
        .map(|f| (f.at_ms, f.until_ms))
        .collect();
    let outage_between =
        |from: i64, to: i64| outages.iter().any(|&(began, ended)| ended + RELEASE_LOG_SLACK_MS >= from && began <= to);
    for (job, at) in &releases {
        let next = runs.get(job).and_then(|l| l.iter().find(|e| e.start_ms >= *at));
        match next {
            Some(e) if (e.start_ms - at) as u64 >= history.lease_ms && !outage_between(*at, e.start_ms) => bad(
                "released-runs-again-at-once",
                job,
                format!(
                    "released at {at} but ran again only at {} ({} ms, lease {} ms)",
                    e.start_ms,
                    e.start_ms - at,
                    history.lease_ms
                ),
            ),
            Some(_) => {}
            None => {
                if history.jobs.get(*job).is_some_and(|j| j.state != "succeeded") {
                    bad("released-runs-again-at-once", job, format!("released at {at} and never ran again"));
                }
            }
        }
    }

    // 5. Idempotency.
    for enqueue in &history.enqueues {
        let ids: HashSet<&String> = enqueue.acked_ids.iter().collect();
        if ids.len() > 1 {
            bad("idempotency", &enqueue.key, format!("acknowledged as different jobs: {ids:?}"));
        }
    }
    let mut per_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, key) in &history.listed {
        if let Some(key) = key {
            per_key.entry(key.as_str()).or_default().push(id.as_str());
        }
    }
    for (key, ids) in per_key {
        if ids.len() > 1 {
            bad("idempotency", key, format!("the server holds {} jobs for this key: {ids:?}", ids.len()));
        }
    }

    if history.drain_ms.is_none() {
        bad("drains", "queue", "jobs were still unfinished two minutes after the last fault".into());
    }

    let mut faults = BTreeMap::new();
    for f in &history.faults {
        *faults.entry(format!("{:?}", f.kind)).or_default() += 1;
    }
    let figures = Figures {
        jobs: history.enqueues.iter().filter(|e| e.id.is_some()).count(),
        executions: history.executions.len(),
        redeliveries,
        faults,
        drain_ms: history.drain_ms,
        enqueue_retries: history.enqueues.iter().map(|e| e.tries.saturating_sub(1)).sum(),
    };
    Verdict { violations, figures }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Enqueue, Execution, Fault, FinalJob, Reported, WorkerReport};

    /// One job, run twice under the same attempt number by two workers, kept from the second.
    fn ran_twice_at_attempt_one() -> History {
        let run = |token: &str, worker_pid, start_ms| Execution {
            job: "j".into(),
            attempt: 1,
            token: token.into(),
            worker_pid,
            start_ms,
            end_ms: Some(start_ms + 50),
        };
        History {
            enqueues: vec![Enqueue { key: "k".into(), id: Some("j".into()), tries: 1, acked_ids: vec!["j".into()] }],
            executions: vec![run("t1", 10, 1_000), run("t2", 11, 1_200)],
            reports: vec![WorkerReport { job: "j".into(), what: Reported::Completed, at_ms: 1_300, worker_pid: 11 }],
            jobs: HashMap::from([(
                "j".into(),
                FinalJob {
                    state: "succeeded".into(),
                    attempt: 1,
                    result: serde_json::json!({"attempt": 1, "token": "t2"}),
                    errors: Vec::new(),
                    finished_ms: Some(1_300),
                },
            )]),
            listed: vec![("j".into(), Some("k".into()))],
            lease_ms: 30_000,
            drain_ms: Some(0),
            ..History::default()
        }
    }

    #[test]
    fn a_second_run_of_one_attempt_needs_a_release_or_a_crash() {
        let history = ran_twice_at_attempt_one();
        let verdict = check(&history);
        let unexplained = verdict.violations.iter().find(|v| v.property == "redelivery-explained");
        assert!(unexplained.is_some(), "a job handed out twice without a cause must be caught: {verdict}");

        let mut released = ran_twice_at_attempt_one();
        released.reports.push(WorkerReport { job: "j".into(), what: Reported::Released, at_ms: 1_150, worker_pid: 10 });
        assert!(check(&released).valid(), "{}", check(&released));

        let mut unrecorded = ran_twice_at_attempt_one();
        unrecorded.reports.push(WorkerReport {
            job: "j".into(),
            what: Reported::Released,
            at_ms: 1_150,
            worker_pid: 10,
        });
        unrecorded.reports.retain(|r| r.what != Reported::Completed);
        let verdict = check(&unrecorded);
        assert!(
            verdict.violations.iter().any(|v| v.subject == "workers"),
            "no recorded completion at all must fail the check: {verdict}"
        );

        // A release the stopping worker sent but heard no answer to explains its own job's
        // redelivery; another worker's does not.
        let unanswered =
            |worker_pid| WorkerReport { job: "j".into(), what: Reported::ReleaseUnanswered, at_ms: 1_150, worker_pid };
        let mut sent = ran_twice_at_attempt_one();
        sent.reports.push(unanswered(10));
        assert!(check(&sent).valid(), "{}", check(&sent));
        let mut elsewhere = ran_twice_at_attempt_one();
        elsewhere.reports.push(unanswered(12));
        assert!(check(&elsewhere).violations.iter().any(|v| v.property == "redelivery-explained"));

        let mut crashed = ran_twice_at_attempt_one();
        crashed.faults.push(Fault { kind: FaultKind::ServerCrash, at_ms: 1_100, until_ms: 1_150, worker_pid: None });
        assert!(check(&crashed).valid(), "{}", check(&crashed));
    }

    #[test]
    fn a_released_job_must_run_again_within_a_lease_unless_the_server_was_down_meanwhile() {
        // Released at 1,150 by the first worker, run again at 31,200: a whole lease later.
        let late = || {
            let mut history = ran_twice_at_attempt_one();
            history.executions[1].start_ms = 31_200;
            history.reports[0].at_ms = 31_300;
            history.jobs.get_mut("j").expect("job").finished_ms = Some(31_300);
            history.reports.push(WorkerReport {
                job: "j".into(),
                what: Reported::Released,
                at_ms: 1_150,
                worker_pid: 10,
            });
            history
        };
        let verdict = check(&late());
        assert!(verdict.violations.iter().any(|v| v.property == "released-runs-again-at-once"), "{verdict}");

        // The server crashed after the release: nothing started until it was back.
        let mut crashed = late();
        crashed.faults.push(Fault { kind: FaultKind::ServerCrash, at_ms: 2_000, until_ms: 2_500, worker_pid: None });
        assert!(check(&crashed).valid(), "{}", check(&crashed));

        // A crash long before the release does not excuse it.
        let mut earlier = late();
        earlier.executions[0].start_ms = -10_000;
        earlier.faults.push(Fault { kind: FaultKind::ServerCrash, at_ms: -9_000, until_ms: -8_500, worker_pid: None });
        let verdict = check(&earlier);
        assert!(verdict.violations.iter().any(|v| v.property == "released-runs-again-at-once"), "{verdict}");
    }

    #[test]
    fn lease_order_comes_from_attempts_and_starts_not_token_text() {
        // With several nodes a later lease's token may sort first: "t0" ran after "t9".
        let mut history = ran_twice_at_attempt_one();
        history.executions[0].token = "t9".into();
        history.executions[1].token = "t0".into();
        history.jobs.get_mut("j").expect("job").result = serde_json::json!({"attempt": 1, "token": "t0"});
        history.reports.push(WorkerReport { job: "j".into(), what: Reported::Released, at_ms: 1_150, worker_pid: 10 });
        assert!(check(&history).valid(), "{}", check(&history));

        // Keeping the earlier lease's completion is a fencing failure, whatever the text says.
        history.jobs.get_mut("j").expect("job").result = serde_json::json!({"attempt": 1, "token": "t9"});
        let verdict = check(&history);
        assert!(verdict.violations.iter().any(|v| v.property == "fencing"), "{verdict}");
    }
}
