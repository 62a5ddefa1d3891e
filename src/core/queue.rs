//! Queues: names and per-queue policy.

use std::fmt;

use super::backoff::Backoff;
use super::validate::{Invalid, MAX_ATTEMPTS, MAX_LEASE_MS, MIN_LEASE_MS};

/// A queue name: 1–128 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueName(String);

impl QueueName {
    /// Longest name.
    pub const MAX_LEN: usize = 128;

    /// Validates a queue name.
    pub fn parse(name: &str) -> Result<Self, Invalid> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(Invalid::new(
                "queue",
                format!("queue name {} must be 1 to {} characters", super::validate::echo(name), Self::MAX_LEN),
            ));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(Invalid::new(
                "queue",
                format!(
                    "queue name {} has {bad:?}; a queue name is letters, digits, '.', '_' and '-'",
                    super::validate::echo(name)
                ),
            ));
        }
        Ok(QueueName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a queue treats its jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuePolicy {
    /// How long a lease lasts unless extended by a heartbeat. Defaults to 30 s.
    pub lease_ms: u64,
    /// Attempts before a job is dead, unless the job overrides it. Defaults to 3.
    pub max_attempts: u32,
    /// Delay between attempts. Defaults to exponential from 1 s, factor 2, cap 1 h, full jitter.
    pub backoff: Backoff,
    /// How long finished jobs are kept (and idempotency keys honoured). Defaults to 7 days.
    pub retention_ms: u64,
    /// Most jobs running at once across all workers. Defaults to no limit (`None`).
    pub concurrency: Option<u32>,
    /// Most jobs started per second. Defaults to no limit (`None`).
    pub rate: Option<f64>,
    /// Hands out no jobs while set; enqueue still works. Defaults to false.
    pub paused: bool,
    /// Most jobs waiting (ready or scheduled): an enqueue that would pass it is refused, so a
    /// flood of producers cannot fill the disk faster than workers drain it. Retries and
    /// redrives still go through. Defaults to no limit (`None`).
    pub max_ready: Option<u64>,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            lease_ms: 30_000,
            max_attempts: 3,
            backoff: Backoff::default(),
            retention_ms: 7 * 24 * 3_600_000,
            concurrency: None,
            rate: None,
            paused: false,
            max_ready: None,
        }
    }
}

/// A change to a queue's policy: each field present replaces the current value; for the
/// optional limits, `Some(None)` removes the limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueuePolicyPatch {
    /// New lease duration.
    pub lease_ms: Option<i64>,
    /// New attempt limit.
    pub max_attempts: Option<i64>,
    /// New backoff base.
    pub backoff_base_ms: Option<i64>,
    /// New backoff factor.
    pub backoff_factor: Option<f64>,
    /// New backoff cap.
    pub backoff_cap_ms: Option<i64>,
    /// New retention.
    pub retention_ms: Option<i64>,
    /// New concurrency limit, or none.
    pub concurrency: Option<Option<i64>>,
    /// New rate limit, or none.
    pub rate: Option<Option<f64>>,
    /// Pause or resume.
    pub paused: Option<bool>,
    /// New limit of waiting jobs, or none.
    pub max_ready: Option<Option<i64>>,
}

/// Longest retention: ten years.
const MAX_RETENTION_MS: u64 = 10 * 365 * 24 * 3_600_000;
/// Shortest retention: one second.
const MIN_RETENTION_MS: u64 = 1_000;
/// Longest backoff delay: one week.
const MAX_BACKOFF_MS: u64 = 7 * 24 * 3_600_000;

impl QueuePolicy {
    /// This policy with `patch` applied, or the first field that is out of range.
    pub fn apply(&self, patch: &QueuePolicyPatch) -> Result<QueuePolicy, Invalid> {
        use super::validate::range;
        let mut next = self.clone();
        if let Some(v) = patch.lease_ms {
            next.lease_ms = range("lease_ms", v, MIN_LEASE_MS, MAX_LEASE_MS)?;
        }
        if let Some(v) = patch.max_attempts {
            next.max_attempts = range("max_attempts", v, 1, MAX_ATTEMPTS)? as u32;
        }
        if let Some(v) = patch.backoff_base_ms {
            next.backoff.base_ms = range("backoff_base_ms", v, 0, MAX_BACKOFF_MS)?;
        }
        if let Some(v) = patch.backoff_factor {
            if !(1.0..=10.0).contains(&v) {
                return Err(Invalid::new("backoff_factor", "must be between 1 and 10"));
            }
            next.backoff.factor = v;
        }
        if let Some(v) = patch.backoff_cap_ms {
            next.backoff.cap_ms = range("backoff_cap_ms", v, 0, MAX_BACKOFF_MS)?;
        }
        if let Some(v) = patch.retention_ms {
            next.retention_ms = range("retention_ms", v, MIN_RETENTION_MS, MAX_RETENTION_MS)?;
        }
        if let Some(v) = patch.concurrency {
            next.concurrency = v.map(|n| range("concurrency", n, 1, 1_000_000)).transpose()?.map(|n| n as u32);
        }
        if let Some(v) = patch.rate {
            next.rate = match v {
                Some(r) if r.is_finite() && r > 0.0 && r <= 1_000_000.0 => Some(r),
                Some(_) => return Err(Invalid::new("rate", "must be above 0 and at most 1000000 jobs per second")),
                None => None,
            };
        }
        if let Some(v) = patch.paused {
            next.paused = v;
        }
        if let Some(v) = patch.max_ready {
            next.max_ready = v.map(|n| range("max_ready", n, 1, 1_000_000_000)).transpose()?;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_contract() {
        for ok in ["pdf", "a", "Lab.results_v2-eu", &"q".repeat(128)] {
            assert!(QueueName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "slash/y", "ünïcode", &"q".repeat(129)] {
            let err = QueueName::parse(bad).unwrap_err();
            assert_eq!(err.field, "queue");
        }
    }

    #[test]
    fn patch_changes_only_what_it_names() {
        let base = QueuePolicy::default();
        let patch = QueuePolicyPatch { max_attempts: Some(5), concurrency: Some(Some(2)), ..Default::default() };
        let next = base.apply(&patch).unwrap();
        assert_eq!(next.max_attempts, 5);
        assert_eq!(next.concurrency, Some(2));
        assert_eq!(next.lease_ms, base.lease_ms);
        let cleared = next.apply(&QueuePolicyPatch { concurrency: Some(None), ..Default::default() }).unwrap();
        assert_eq!(cleared.concurrency, None);
    }

    #[test]
    fn patch_refuses_out_of_range_values() {
        let base = QueuePolicy::default();
        let cases = [
            (QueuePolicyPatch { lease_ms: Some(5), ..Default::default() }, "lease_ms"),
            (QueuePolicyPatch { max_attempts: Some(-1), ..Default::default() }, "max_attempts"),
            (QueuePolicyPatch { backoff_factor: Some(f64::NAN), ..Default::default() }, "backoff_factor"),
            (QueuePolicyPatch { rate: Some(Some(0.0)), ..Default::default() }, "rate"),
            (QueuePolicyPatch { concurrency: Some(Some(0)), ..Default::default() }, "concurrency"),
        ];
        for (patch, field) in cases {
            assert_eq!(base.apply(&patch).unwrap_err().field, field);
        }
    }
}
