//! The job state machine: which transitions exist and what each event leads to.
//!
//! ```text
//!  scheduled ──due──▶ ready ──lease──▶ running ──complete──▶ succeeded
//!      ▲                ▲                 │ ├──fail/expire, attempts left──▶ scheduled (or ready)
//!      │                └────release──────┘ ├──fail/expire, none left or not retryable──▶ dead
//!      └─────────────────────────────────── └──cancel requested, then fail/release/expire──▶ canceled
//!  scheduled|ready ──cancel──▶ canceled          dead ──redrive──▶ ready
//! ```
//!
//! Stores call these functions to decide, and write what they decide as a [`Transition`]: the
//! states, what happens to the attempt count, and why. A transition can only be built along an
//! edge of the lifecycle ([`Transition::new`] refuses any other, in release builds too), and
//! stores apply the attempt change it names rather than doing their own arithmetic.

use super::backoff::Backoff;
use super::job::JobState;
use super::time::Timestamp;

/// True if the lifecycle has an edge from `from` to `to`.
pub fn allowed(from: JobState, to: JobState) -> bool {
    use JobState::*;
    matches!(
        (from, to),
        (Scheduled, Ready)
            | (Scheduled, Canceled)
            | (Ready, Running)
            | (Ready, Canceled)
            | (Running, Succeeded)
            | (Running, Scheduled)
            | (Running, Ready)
            | (Running, Dead)
            | (Running, Canceled)
            | (Dead, Ready)
    )
}

/// What a transition does to a job's attempt count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptChange {
    /// Unchanged.
    Keep,
    /// One more: a lease starts an attempt.
    Next,
    /// One less: a released lease gives its attempt back.
    GiveBack,
    /// Back to zero: a redriven job starts over.
    Reset,
}

/// Why a job changed state: for metrics, logs and events, never compared as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A worker leased it.
    Leased,
    /// Its worker reported success.
    Completed,
    /// Its worker reported a failure.
    Failed,
    /// Its lease ran out.
    LeaseExpired,
    /// Its worker gave the lease back (shutdown).
    Released,
    /// Someone canceled it.
    Canceled,
    /// Its time came.
    Promoted,
    /// It was sent back from the dead-letter queue.
    Redriven,
}

/// The error message recorded for an attempt whose lease ran out.
pub const LEASE_EXPIRED_MESSAGE: &str = "lease expired";

/// One change of a job's state, decided here and applied by a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state it leaves.
    pub from: JobState,
    /// The state it enters.
    pub to: JobState,
    /// What becomes of the attempt count.
    pub attempt: AttemptChange,
    /// Why.
    pub reason: Reason,
}

/// A transition the lifecycle does not have: a bug in whoever asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no transition from {from} to {to} ({reason:?})")]
pub struct NoSuchTransition {
    /// The state it would leave.
    pub from: JobState,
    /// The state it would enter.
    pub to: JobState,
    /// Why it was asked for.
    pub reason: Reason,
}

impl Transition {
    /// A transition along an edge of the lifecycle; any other is refused.
    pub fn new(from: JobState, to: JobState, attempt: AttemptChange, reason: Reason) -> Result<Self, NoSuchTransition> {
        if allowed(from, to) {
            Ok(Transition { from, to, attempt, reason })
        } else {
            Err(NoSuchTransition { from, to, reason })
        }
    }

    /// The attempt count after this transition, from the count before.
    pub fn attempt_after(self, before: u32) -> u32 {
        match self.attempt {
            AttemptChange::Keep => before,
            AttemptChange::Next => before + 1,
            AttemptChange::GiveBack => before.saturating_sub(1),
            AttemptChange::Reset => 0,
        }
    }

    /// Whether the job is finished after it.
    pub fn finishes(self) -> bool {
        self.to.is_terminal()
    }
}

/// A ready job taken by a worker.
pub fn lease() -> Transition {
    Transition { from: JobState::Ready, to: JobState::Running, attempt: AttemptChange::Next, reason: Reason::Leased }
}

/// A running job whose worker reported success.
pub fn complete() -> Transition {
    Transition {
        from: JobState::Running,
        to: JobState::Succeeded,
        attempt: AttemptChange::Keep,
        reason: Reason::Completed,
    }
}

/// A running job whose attempt failed (`reason` says how: a report or an expired lease), with
/// `after` decided by [`after_failure`].
pub fn fail(after: AfterFailure, now: Timestamp, reason: Reason) -> Transition {
    Transition { from: JobState::Running, to: after.state(now), attempt: AttemptChange::Keep, reason }
}

/// A running job whose worker gave its lease back.
pub fn release(cancel_requested: bool) -> Transition {
    Transition {
        from: JobState::Running,
        to: after_release(cancel_requested),
        attempt: AttemptChange::GiveBack,
        reason: Reason::Released,
    }
}

/// A waiting job whose time came.
pub fn promote() -> Transition {
    Transition {
        from: JobState::Scheduled,
        to: JobState::Ready,
        attempt: AttemptChange::Keep,
        reason: Reason::Promoted,
    }
}

/// A waiting job canceled at once; `from` is its state (scheduled or ready).
pub fn cancel_now(from: JobState) -> Result<Transition, NoSuchTransition> {
    match from {
        JobState::Scheduled | JobState::Ready => {
            Transition::new(from, JobState::Canceled, AttemptChange::Keep, Reason::Canceled)
        }
        // A running job is canceled through its attempt's end, not at once.
        _ => Err(NoSuchTransition { from, to: JobState::Canceled, reason: Reason::Canceled }),
    }
}

/// A dead job sent back to ready with its attempts reset; refused for any other state.
pub fn redrive_now(from: JobState) -> Result<Transition, IllegalTransition> {
    redrive(from)?;
    Ok(Transition { from, to: JobState::Ready, attempt: AttemptChange::Reset, reason: Reason::Redriven })
}

/// An action that the job's state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a job that is {state}")]
pub struct IllegalTransition {
    /// What was asked: `cancel`, `redrive`.
    pub action: &'static str,
    /// The job's state.
    pub state: JobState,
}

/// The state of a job waiting to run at `run_at`: ready if that time has come.
pub fn waiting_state(run_at: Timestamp, now: Timestamp) -> JobState {
    if run_at <= now { JobState::Ready } else { JobState::Scheduled }
}

/// The facts about an attempt that failed (by the worker's report or by lease expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// False when the handler said the failure is permanent.
    pub retryable: bool,
    /// A cancel was requested while it ran.
    pub cancel_requested: bool,
    /// The worker asked for this delay instead of the backoff.
    pub retry_in_ms: Option<u64>,
}

/// What becomes of a job after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at `run_at`.
    Retry {
        /// When the next attempt may start.
        run_at: Timestamp,
    },
    /// No attempts left, or not retryable: dead-lettered.
    Dead,
    /// It was asked to stop: canceled, not retried.
    Canceled,
}

impl AfterFailure {
    /// The state this outcome puts the job in at `now`.
    pub fn state(self, now: Timestamp) -> JobState {
        match self {
            AfterFailure::Retry { run_at } => waiting_state(run_at, now),
            AfterFailure::Dead => JobState::Dead,
            AfterFailure::Canceled => JobState::Canceled,
        }
    }
}

/// Decides the fate of a failed attempt.
pub fn after_failure(f: FailedAttempt, backoff: &Backoff, now: Timestamp, rng: &mut fastrand::Rng) -> AfterFailure {
    if f.cancel_requested {
        AfterFailure::Canceled
    } else if !f.retryable || f.attempt >= f.max_attempts {
        AfterFailure::Dead
    } else {
        let delay = f.retry_in_ms.unwrap_or_else(|| backoff.delay_ms(f.attempt, rng));
        AfterFailure::Retry { run_at: now.plus_millis(delay) }
    }
}

/// What a cancel does to a job in `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelEffect {
    /// Not running: canceled at once.
    CanceledNow,
    /// Running: flagged; the worker learns it on its next heartbeat.
    Requested,
    /// Already canceled (or already flagged): nothing changes.
    Unchanged,
}

/// Decides a cancel request.
pub fn cancel(state: JobState, cancel_requested: bool) -> Result<CancelEffect, IllegalTransition> {
    match state {
        JobState::Scheduled | JobState::Ready => Ok(CancelEffect::CanceledNow),
        JobState::Running if cancel_requested => Ok(CancelEffect::Unchanged),
        JobState::Running => Ok(CancelEffect::Requested),
        JobState::Canceled => Ok(CancelEffect::Unchanged),
        JobState::Succeeded | JobState::Dead => Err(IllegalTransition { action: "cancel", state }),
    }
}

/// The state after a worker releases its lease (shutdown): ready again without counting the
/// attempt, or canceled if a cancel was requested meanwhile.
pub fn after_release(cancel_requested: bool) -> JobState {
    if cancel_requested { JobState::Canceled } else { JobState::Ready }
}

/// Checks that a job in `state` can be redriven.
pub fn redrive(state: JobState) -> Result<(), IllegalTransition> {
    if state == JobState::Dead { Ok(()) } else { Err(IllegalTransition { action: "redrive", state }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn failed(attempt: u32, max_attempts: u32) -> FailedAttempt {
        FailedAttempt { attempt, max_attempts, retryable: true, cancel_requested: false, retry_in_ms: None }
    }

    #[test]
    fn retries_until_the_last_attempt_then_dies() {
        let mut rng = fastrand::Rng::with_seed(1);
        let b = Backoff::default();
        assert!(matches!(after_failure(failed(1, 3), &b, NOW, &mut rng), AfterFailure::Retry { .. }));
        assert!(matches!(after_failure(failed(2, 3), &b, NOW, &mut rng), AfterFailure::Retry { .. }));
        assert_eq!(after_failure(failed(3, 3), &b, NOW, &mut rng), AfterFailure::Dead);
    }

    #[test]
    fn permanent_failures_and_cancels_do_not_retry() {
        let mut rng = fastrand::Rng::with_seed(1);
        let b = Backoff::default();
        let permanent = FailedAttempt { retryable: false, ..failed(1, 3) };
        assert_eq!(after_failure(permanent, &b, NOW, &mut rng), AfterFailure::Dead);
        let canceled = FailedAttempt { cancel_requested: true, ..failed(1, 3) };
        assert_eq!(after_failure(canceled, &b, NOW, &mut rng), AfterFailure::Canceled);
    }

    #[test]
    fn retry_in_overrides_the_backoff() {
        let mut rng = fastrand::Rng::with_seed(1);
        let f = FailedAttempt { retry_in_ms: Some(5_000), ..failed(1, 3) };
        let after = after_failure(f, &Backoff::default(), NOW, &mut rng);
        assert_eq!(after, AfterFailure::Retry { run_at: NOW.plus_millis(5_000) });
        assert_eq!(after.state(NOW), JobState::Scheduled);
        let now_retry = FailedAttempt { retry_in_ms: Some(0), ..failed(1, 3) };
        assert_eq!(after_failure(now_retry, &Backoff::default(), NOW, &mut rng).state(NOW), JobState::Ready);
    }

    #[test]
    fn transitions_exist_only_along_the_lifecycle() {
        use JobState::*;
        for from in JobState::ALL {
            for to in JobState::ALL {
                let built = Transition::new(from, to, AttemptChange::Keep, Reason::Failed);
                assert_eq!(built.is_ok(), allowed(from, to), "{from} -> {to}");
            }
        }
        for t in [lease(), complete(), release(false), release(true), promote()] {
            assert!(allowed(t.from, t.to), "{t:?}");
        }
        assert_eq!(lease().attempt_after(2), 3);
        assert_eq!(release(false).attempt_after(3), 2);
        assert_eq!(redrive_now(Dead).unwrap().attempt_after(3), 0);
        assert!(redrive_now(Ready).is_err());
        assert!(cancel_now(Running).is_err() && cancel_now(Ready).is_ok());
        let expired = fail(AfterFailure::Dead, NOW, Reason::LeaseExpired);
        assert_eq!((expired.from, expired.to, expired.attempt_after(3)), (Running, Dead, 3));
    }

    #[test]
    fn cancel_depends_on_the_state() {
        assert_eq!(cancel(JobState::Ready, false), Ok(CancelEffect::CanceledNow));
        assert_eq!(cancel(JobState::Scheduled, false), Ok(CancelEffect::CanceledNow));
        assert_eq!(cancel(JobState::Running, false), Ok(CancelEffect::Requested));
        assert_eq!(cancel(JobState::Running, true), Ok(CancelEffect::Unchanged));
        assert_eq!(cancel(JobState::Canceled, false), Ok(CancelEffect::Unchanged));
        assert!(cancel(JobState::Succeeded, false).is_err());
        assert!(cancel(JobState::Dead, false).is_err());
    }

    #[derive(Clone, Copy, Debug)]
    enum Event {
        Tick(u16),
        Lease,
        Complete,
        Fail { retryable: bool },
        Expire,
        Release,
        Cancel,
        Redrive,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            any::<u16>().prop_map(Event::Tick),
            Just(Event::Lease),
            Just(Event::Complete),
            any::<bool>().prop_map(|retryable| Event::Fail { retryable }),
            Just(Event::Expire),
            Just(Event::Release),
            Just(Event::Cancel),
            Just(Event::Redrive),
        ]
    }

    /// A job driven only through the decision functions, as a store drives it.
    #[derive(Debug)]
    struct Model {
        state: JobState,
        run_at: Timestamp,
        attempt: u32,
        max_attempts: u32,
        cancel_requested: bool,
    }

    impl Model {
        fn apply(&mut self, event: Event, now: &mut Timestamp, rng: &mut fastrand::Rng) {
            let b = Backoff { base_ms: 10, factor: 2.0, cap_ms: 1_000 };
            let before = self.state;
            match event {
                Event::Tick(ms) => {
                    *now = now.plus_millis(u64::from(ms));
                    if self.state == JobState::Scheduled {
                        self.state = waiting_state(self.run_at, *now);
                    }
                }
                Event::Lease if self.state == JobState::Ready => {
                    self.attempt += 1;
                    self.state = JobState::Running;
                }
                Event::Complete if self.state == JobState::Running => self.state = JobState::Succeeded,
                Event::Fail { retryable } if self.state == JobState::Running => {
                    self.fail(retryable, &b, *now, rng);
                }
                Event::Expire if self.state == JobState::Running => self.fail(true, &b, *now, rng),
                Event::Release if self.state == JobState::Running => {
                    self.attempt -= 1;
                    self.state = after_release(self.cancel_requested);
                }
                Event::Cancel => match cancel(self.state, self.cancel_requested) {
                    Ok(CancelEffect::CanceledNow) => self.state = JobState::Canceled,
                    Ok(CancelEffect::Requested) => self.cancel_requested = true,
                    Ok(CancelEffect::Unchanged) | Err(_) => {}
                },
                Event::Redrive if redrive(self.state).is_ok() => {
                    self.state = JobState::Ready;
                    self.attempt = 0;
                }
                _ => {}
            }
            if before != self.state {
                assert!(allowed(before, self.state), "{before} -> {}", self.state);
                if self.state != JobState::Running {
                    self.cancel_requested = self.cancel_requested && !self.state.is_terminal();
                }
            }
        }

        fn fail(&mut self, retryable: bool, b: &Backoff, now: Timestamp, rng: &mut fastrand::Rng) {
            let f = FailedAttempt {
                attempt: self.attempt,
                max_attempts: self.max_attempts,
                retryable,
                cancel_requested: self.cancel_requested,
                retry_in_ms: None,
            };
            let after = after_failure(f, b, now, rng);
            if let AfterFailure::Retry { run_at } = after {
                self.run_at = run_at;
            }
            self.state = after.state(now);
        }
    }

    proptest! {
        #[test]
        fn any_event_sequence_follows_the_lifecycle(events in prop::collection::vec(event(), 0..200), max_attempts in 1u32..5, seed: u64) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut now = NOW;
            let mut job = Model { state: JobState::Ready, run_at: now, attempt: 0, max_attempts, cancel_requested: false };
            for e in events {
                let before = job.state;
                job.apply(e, &mut now, &mut rng);
                prop_assert!(job.attempt <= job.max_attempts, "attempts never exceed the limit");
                if before.is_terminal() && before != job.state {
                    prop_assert!(before == JobState::Dead && job.state == JobState::Ready, "only redrive leaves a terminal state");
                }
                if job.state == JobState::Dead && before != JobState::Dead {
                    let permanent = matches!(e, Event::Fail { retryable: false });
                    prop_assert!(job.attempt == job.max_attempts || permanent, "dead only when out of attempts or permanent");
                }
            }
        }
    }
}
