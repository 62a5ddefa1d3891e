//! Leases and fencing.
//!
//! # Overview
//!
//! A running job is held by exactly one lease: a [`LeaseToken`] and an expiry time. The worker
//! keeps the lease alive with heartbeats; if it stops (crash, pause, partition) the lease expires,
//! the attempt counts as failed, and the job is retried under a new lease with a new token.
//!
//! # State model
//!
//! ```text
//!   ready ──lease(token t1)──▶ running[t1] ──heartbeat(t1)──▶ running[t1] (expiry pushed back)
//!                                  │
//!                 lease expires ───┴──▶ scheduled/ready ──lease(token t2)──▶ running[t2]
//! ```
//!
//! # Failure handling
//!
//! A worker that was paused past its lease wakes up holding `t1` while the job runs under `t2`
//! (or has finished). Every call it makes with `t1` — complete, fail, heartbeat, release — is
//! refused by [`check_fence`] and changes nothing: that is the fencing rule. Its work may have
//! been done twice (delivery is at least once); it is never recorded twice.

use super::id::LeaseToken;
use super::job::JobState;
use super::time::Timestamp;

/// The presented token does not hold the job's current lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stale lease token: the job is {state} under another lease or none")]
pub struct StaleLease {
    /// The job's state now.
    pub state: JobState,
}

/// Accepts `presented` only if the job is running under exactly that token.
pub fn check_fence(state: JobState, current: Option<LeaseToken>, presented: LeaseToken) -> Result<(), StaleLease> {
    if state == JobState::Running && current == Some(presented) { Ok(()) } else { Err(StaleLease { state }) }
}

/// When a lease taken or extended at `now` for `lease_ms` expires.
pub fn expires_at(now: Timestamp, lease_ms: u64) -> Timestamp {
    now.plus_millis(lease_ms)
}

/// True once a lease expiring at `expires_at` has run out at `now`.
pub fn is_expired(expires_at: Timestamp, now: Timestamp) -> bool {
    now >= expires_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_token_of_a_running_job_passes() {
        let t1 = LeaseToken::from_raw(1);
        let t2 = LeaseToken::from_raw(2);
        assert!(check_fence(JobState::Running, Some(t2), t2).is_ok());
        assert_eq!(check_fence(JobState::Running, Some(t2), t1), Err(StaleLease { state: JobState::Running }));
        assert!(check_fence(JobState::Succeeded, None, t2).is_err());
        assert!(check_fence(JobState::Scheduled, None, t1).is_err());
    }

    #[test]
    fn a_lease_expires_at_its_deadline() {
        let now = Timestamp::from_millis(10_000);
        let exp = expires_at(now, 500);
        assert!(!is_expired(exp, Timestamp::from_millis(10_499)));
        assert!(is_expired(exp, Timestamp::from_millis(10_500)));
    }
}
