//! The autoscaler's policy: how many workers a pool wants, from what was observed.
//!
//! Pure: the leader observes a pool (its backlog and busy workers), calls [`decide`] with the
//! state the previous decision returned, and hands the answer to the pool's provider.
//!
//! - **Out at once, by the needed step.** The pool wants `ceil(backlog / target)` workers,
//!   within `[min, max]`. When that is more than it has, it asks for all of them in one
//!   decision, without waiting: the backlog (ready plus running jobs) does not depend on how many
//!   workers run, so asking again while new workers start asks for the same number, never more.
//!   A pool at zero goes to one the moment a job arrives.
//! - **In by steps, never below the need.** The pool scales in once it has needed fewer
//!   workers for a whole `scale_out_cooldown` and that long after its last scale-out (workers
//!   just started get time to take work), and at most once per `scale_in_cooldown`. It then
//!   asks for the most it needed during that time, never for fewer workers than are busy, and
//!   keeps one worker until the backlog has been empty for a whole `scale_in_cooldown`: only
//!   then does it reach zero. A steady backlog never makes it flap: it only ever moves towards
//!   the need, at most twice (down to one, then to zero).

use std::time::Duration;

use crate::core::Timestamp;

/// A pool's scaling parameters, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalePolicy {
    min: u32,
    max: u32,
    target_backlog_per_worker: u32,
    scale_out_cooldown: Duration,
    scale_in_cooldown: Duration,
}

/// Parameters that make no pool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScalePolicyError {
    /// `min` above `max`.
    #[error("min ({min}) is above max ({max})")]
    MinAboveMax {
        /// The minimum given.
        min: u32,
        /// The maximum given.
        max: u32,
    },
    /// A pool that may never run a worker.
    #[error("max must be at least 1")]
    NoWorkers,
    /// A target of zero jobs per worker.
    #[error("target_backlog_per_worker must be at least 1")]
    NoTarget,
}

impl ScalePolicy {
    /// The scale-out cooldown when none is given.
    pub const DEFAULT_SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(60);
    /// The scale-in cooldown when none is given.
    pub const DEFAULT_SCALE_IN_COOLDOWN: Duration = Duration::from_secs(300);

    /// A policy, or why these parameters make no pool.
    pub fn new(
        min: u32,
        max: u32,
        target_backlog_per_worker: u32,
        scale_out_cooldown: Duration,
        scale_in_cooldown: Duration,
    ) -> Result<Self, ScalePolicyError> {
        if max == 0 {
            return Err(ScalePolicyError::NoWorkers);
        }
        if min > max {
            return Err(ScalePolicyError::MinAboveMax { min, max });
        }
        if target_backlog_per_worker == 0 {
            return Err(ScalePolicyError::NoTarget);
        }
        Ok(ScalePolicy { min, max, target_backlog_per_worker, scale_out_cooldown, scale_in_cooldown })
    }

    /// The fewest workers.
    pub fn min(&self) -> u32 {
        self.min
    }

    /// The most workers.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Jobs of backlog one worker is meant to carry.
    pub fn target_backlog_per_worker(&self) -> u32 {
        self.target_backlog_per_worker
    }

    /// How long after a scale-out the pool does not scale in, and how long it must need fewer
    /// workers before it does.
    pub fn scale_out_cooldown(&self) -> Duration {
        self.scale_out_cooldown
    }

    /// The least time between two scale-ins, and how long the backlog must be empty before
    /// the pool goes to zero.
    pub fn scale_in_cooldown(&self) -> Duration {
        self.scale_in_cooldown
    }

    /// Workers the backlog needs, within `[min, max]`.
    pub fn needed(&self, backlog: u64) -> u32 {
        let workers = backlog.div_ceil(u64::from(self.target_backlog_per_worker));
        u32::try_from(workers).unwrap_or(u32::MAX).clamp(self.min, self.max)
    }
}

/// A queue's share of a pool's backlog: its running jobs, plus the ready ones that could start
/// now. A paused queue's ready jobs wait for no worker; under a concurrency limit only the
/// free slots count; under a rate limit, only what the rate lets start within a second.
pub fn queue_backlog(ready: u64, running: u64, paused: bool, concurrency: Option<u32>, rate: Option<f64>) -> u64 {
    let mut startable = if paused { 0 } else { ready };
    if let Some(limit) = concurrency {
        startable = startable.min(u64::from(limit).saturating_sub(running));
    }
    if let Some(rate) = rate {
        // Saturating float-to-int: a rate above u64::MAX holds nothing back.
        startable = startable.min(rate.ceil().max(1.0) as u64);
    }
    running.saturating_add(startable)
}

/// What the leader saw of a pool at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Jobs for the pool's workers: ready to start now (not paused, not held back by a rate
    /// or concurrency limit) plus running.
    pub backlog: u64,
    /// Workers holding a job.
    pub busy: u32,
}

/// What a pool's decisions remember; a new pool starts from `ScaleState::default()` (no
/// workers asked for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleState {
    /// Workers the pool asks for.
    pub desired: u32,
    /// When it last scaled out.
    pub scaled_out_at: Option<Timestamp>,
    /// When it last scaled in.
    pub scaled_in_at: Option<Timestamp>,
    /// Since when it has needed fewer workers than it asks for, and the most it needed since.
    pub surplus: Option<(Timestamp, u32)>,
    /// Since when its backlog has been empty.
    pub empty_since: Option<Timestamp>,
}

/// Why a decision asks for what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleReason {
    /// The pool had no worker and a job arrived.
    FirstJob,
    /// The backlog needs more workers.
    Backlog,
    /// The pool had fewer workers than its minimum.
    Minimum,
    /// The pool needed fewer workers for long enough.
    Surplus,
    /// The pool needs what it has.
    Steady,
    /// The pool needs fewer workers, but not yet for long enough (or it scaled lately).
    Cooldown,
    /// The pool would scale in, but its workers are busy.
    Busy,
}

impl ScaleReason {
    /// The reason as shown in the API, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::FirstJob => "first_job",
            ScaleReason::Backlog => "backlog",
            ScaleReason::Minimum => "minimum",
            ScaleReason::Surplus => "surplus",
            ScaleReason::Steady => "steady",
            ScaleReason::Cooldown => "cooldown",
            ScaleReason::Busy => "busy",
        }
    }
}

/// One decision: what to ask for, why, and the state for the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Workers to ask the provider for.
    pub desired: u32,
    /// Workers the backlog needs, within `[min, max]`.
    pub needed: u32,
    /// Why.
    pub reason: ScaleReason,
    /// To pass to the next decision.
    pub state: ScaleState,
}

/// How many workers the pool should have now.
pub fn decide(policy: &ScalePolicy, state: ScaleState, seen: Observation, now: Timestamp) -> Decision {
    let needed = policy.needed(seen.backlog);
    let current = state.desired;
    let empty_since = if seen.backlog == 0 { state.empty_since.or(Some(now)) } else { None };
    let state = ScaleState { empty_since, ..state };
    let decision = |desired, reason, state| Decision { desired, needed, reason, state };
    if needed > current {
        let reason = if current == 0 && seen.backlog > 0 {
            ScaleReason::FirstJob
        } else if seen.backlog.div_ceil(u64::from(policy.target_backlog_per_worker)) > u64::from(current) {
            ScaleReason::Backlog
        } else {
            ScaleReason::Minimum
        };
        let state = ScaleState { desired: needed, scaled_out_at: Some(now), surplus: None, ..state };
        return decision(needed, reason, state);
    }
    if needed == current {
        return decision(current, ScaleReason::Steady, ScaleState { surplus: None, ..state });
    }
    // A surplus: remember since when, and the most needed since then.
    let (since, peak) = match state.surplus {
        Some((since, peak)) => (since, peak.max(needed)),
        None => (now, needed),
    };
    let state = ScaleState { surplus: Some((since, peak)), ..state };
    let waited = |at: Option<Timestamp>, cooldown: Duration| {
        at.is_none_or(|at| u128::from(now.millis_since(at)) >= cooldown.as_millis())
    };
    // Workers started by the last scale-out have had their time, the surplus has lasted as
    // long, and the last scale-in is a cooldown ago.
    let may = waited(Some(since), policy.scale_out_cooldown)
        && waited(state.scaled_out_at, policy.scale_out_cooldown)
        && waited(state.scaled_in_at, policy.scale_in_cooldown);
    if !may {
        return decision(current, ScaleReason::Cooldown, state);
    }
    // The last worker stays until the backlog has been empty for the whole scale-in cooldown.
    let floor = u32::from(empty_since.is_none() || !waited(empty_since, policy.scale_in_cooldown));
    let busy = seen.busy.min(policy.max);
    let target = peak.max(busy).max(policy.min).max(floor);
    if target >= current {
        let reason = if busy >= current { ScaleReason::Busy } else { ScaleReason::Cooldown };
        return decision(current, reason, state);
    }
    let state = ScaleState { desired: target, scaled_in_at: Some(now), surplus: None, ..state };
    decision(target, ScaleReason::Surplus, state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_queue_backlog_leaves_out_what_waits_for_no_worker() {
        use super::queue_backlog;
        assert_eq!(queue_backlog(10, 2, false, None, None), 12, "unlimited: all of it");
        assert_eq!(queue_backlog(10, 2, true, None, None), 2, "paused: only what still runs");
        assert_eq!(queue_backlog(10, 2, false, Some(3), None), 3, "one free slot of three");
        assert_eq!(queue_backlog(10, 5, false, Some(3), None), 5, "over the limit (lowered): no slot");
        assert_eq!(queue_backlog(10, 0, false, None, Some(2.5)), 3, "what starts within a second");
        assert_eq!(queue_backlog(10, 0, false, None, Some(0.01)), 1, "a slow rate still starts one");
    }

    use proptest::prelude::*;

    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_767_225_600_000);

    fn policy(min: u32, max: u32) -> ScalePolicy {
        ScalePolicy::new(min, max, 5, Duration::from_secs(60), Duration::from_secs(300)).unwrap()
    }

    fn seen(backlog: u64, busy: u32) -> Observation {
        Observation { backlog, busy }
    }

    /// Runs decisions once a second over `observations`, returning each.
    fn run(policy: &ScalePolicy, start: ScaleState, observations: &[Observation]) -> Vec<Decision> {
        let mut state = start;
        let mut out = Vec::with_capacity(observations.len());
        for (i, &o) in observations.iter().enumerate() {
            let d = decide(policy, state, o, T0.plus_millis(i as u64 * 1_000));
            state = d.state;
            out.push(d);
        }
        out
    }

    #[test]
    fn parameters_that_make_no_pool_are_refused() {
        let cooldown = Duration::from_secs(1);
        assert_eq!(
            ScalePolicy::new(3, 2, 5, cooldown, cooldown),
            Err(ScalePolicyError::MinAboveMax { min: 3, max: 2 })
        );
        assert_eq!(ScalePolicy::new(0, 0, 5, cooldown, cooldown), Err(ScalePolicyError::NoWorkers));
        assert_eq!(ScalePolicy::new(0, 2, 0, cooldown, cooldown), Err(ScalePolicyError::NoTarget));
    }

    #[test]
    fn the_first_job_starts_a_worker_at_once_and_a_burst_gets_every_worker_it_needs() {
        let p = policy(0, 10);
        let first = decide(&p, ScaleState::default(), seen(1, 0), T0);
        assert_eq!((first.desired, first.reason), (1, ScaleReason::FirstJob));
        // One second later 38 jobs wait: 8 workers in one step, not one at a time.
        let burst = decide(&p, first.state, seen(38, 1), T0.plus_millis(1_000));
        assert_eq!((burst.desired, burst.reason), (8, ScaleReason::Backlog));
        let capped = decide(&p, burst.state, seen(1_000, 8), T0.plus_millis(2_000));
        assert_eq!(capped.desired, 10);
    }

    #[test]
    fn an_idle_pool_keeps_one_worker_until_the_backlog_was_empty_for_the_cooldown() {
        let p = policy(0, 4);
        let mut observations = vec![seen(20, 4); 10];
        observations.extend(vec![seen(0, 0); 400]);
        let decisions = run(&p, ScaleState::default(), &observations);
        // The backlog emptied at second 10: after the scale-out cooldown (60 s) the pool keeps
        // one worker; it reaches zero once the backlog was empty for the scale-in cooldown
        // (300 s) and its last scale-in is that long ago (370).
        assert!(decisions[10..70].iter().all(|d| d.desired == 4 && d.reason == ScaleReason::Cooldown));
        assert_eq!((decisions[70].desired, decisions[70].reason), (1, ScaleReason::Surplus));
        let zero_at = decisions.iter().position(|d| d.desired == 0).expect("reaches zero");
        assert_eq!(zero_at, 370);
        assert_eq!(decisions[zero_at].reason, ScaleReason::Surplus);
        assert!(decisions[70..zero_at].iter().all(|d| d.desired == 1));
    }

    #[test]
    fn busy_workers_hold_off_a_scale_in() {
        let p = policy(0, 4);
        let state = ScaleState { desired: 4, ..ScaleState::default() };
        // No backlog is reported, but three workers still hold jobs (e.g. counted elsewhere).
        let decisions = run(&p, state, &vec![seen(0, 3); 302]);
        let last = decisions.last().unwrap();
        assert_eq!(last.desired, 3);
        assert!(decisions.iter().all(|d| d.desired >= 3));
    }

    #[test]
    fn reasons_have_stable_names() {
        let all = [
            ScaleReason::FirstJob,
            ScaleReason::Backlog,
            ScaleReason::Minimum,
            ScaleReason::Surplus,
            ScaleReason::Steady,
            ScaleReason::Cooldown,
            ScaleReason::Busy,
        ];
        let names: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }

    fn any_policy() -> impl Strategy<Value = ScalePolicy> {
        (0u32..5, 1u32..20, 1u32..10, 0u64..120, 0u64..600).prop_filter_map("min <= max", |(min, max, t, o, i)| {
            ScalePolicy::new(min, max, t, Duration::from_secs(o), Duration::from_secs(i)).ok()
        })
    }

    fn any_observations() -> impl Strategy<Value = Vec<Observation>> {
        prop::collection::vec((0u64..200, 0u32..25).prop_map(|(backlog, busy)| seen(backlog, busy)), 1..400)
    }

    proptest! {
        #[test]
        fn the_pool_stays_within_min_and_max(p in any_policy(), obs in any_observations(), start in 0u32..30) {
            let start = ScaleState { desired: start.clamp(p.min(), p.max()), ..ScaleState::default() };
            for d in run(&p, start, &obs) {
                prop_assert!(p.min() <= d.desired && d.desired <= p.max());
            }
        }

        #[test]
        fn it_never_scales_in_during_a_cooldown_nor_below_the_need_or_the_busy(
            p in any_policy(), obs in any_observations()
        ) {
            let decisions = run(&p, ScaleState::default(), &obs);
            let (mut last_out, mut last_in): (Option<u64>, Option<u64>) = (None, None);
            let mut previous = 0;
            for (second, (d, o)) in decisions.iter().zip(&obs).enumerate() {
                let second = second as u64;
                if d.desired < previous {
                    prop_assert!(d.desired >= d.needed, "below the need");
                    prop_assert!(d.desired >= o.busy.min(p.max()), "below the busy workers");
                    if let Some(at) = last_in {
                        prop_assert!(second - at >= p.scale_in_cooldown().as_secs());
                    }
                    if let Some(at) = last_out {
                        prop_assert!(second - at >= p.scale_out_cooldown().as_secs());
                    }
                    // The need was below what the pool had for the whole scale-out cooldown.
                    let window = p.scale_out_cooldown().as_secs().min(second) as usize;
                    let from = second as usize - window;
                    prop_assert!(decisions[from..second as usize].iter().all(|e| e.needed < previous));
                    // Zero only after an empty backlog for the whole scale-in cooldown.
                    if d.desired == 0 {
                        let window = p.scale_in_cooldown().as_secs() as usize;
                        prop_assert!(second as usize >= window, "zero before a whole cooldown");
                        prop_assert!(obs[second as usize - window..=second as usize].iter().all(|o| o.backlog == 0));
                    }
                    last_in = Some(second);
                }
                if d.desired > previous {
                    last_out = Some(second);
                }
                previous = d.desired;
            }
        }

        #[test]
        fn it_scales_out_at_once_to_what_the_backlog_needs(p in any_policy(), obs in any_observations()) {
            for d in run(&p, ScaleState::default(), &obs) {
                prop_assert!(d.desired >= d.needed, "a decision never leaves the need unmet");
            }
        }

        #[test]
        fn a_steady_backlog_moves_the_pool_only_towards_the_need(
            p in any_policy(), backlog in 0u64..200, start in 0u32..30, seconds in 1usize..2_000
        ) {
            let start = ScaleState { desired: start.clamp(p.min(), p.max()), ..ScaleState::default() };
            let decisions = run(&p, start, &vec![seen(backlog, 0); seconds]);
            let need = p.needed(backlog);
            let mut changes = 0;
            let mut previous = start.desired;
            for d in &decisions {
                if d.desired != previous {
                    changes += 1;
                    // No flapping: every change brings the pool closer to the need.
                    prop_assert!(d.desired.abs_diff(need) < previous.abs_diff(need), "{previous} -> {}", d.desired);
                }
                previous = d.desired;
            }
            // Down to the need in one step, or to one worker and then to zero.
            prop_assert!(changes <= 2, "{changes} changes on a steady backlog");
            let settle = p.scale_out_cooldown().as_secs() + p.scale_in_cooldown().as_secs() + 1;
            if seconds as u64 > settle {
                prop_assert_eq!(previous, need, "it settles on the need");
            }
        }

        #[test]
        fn a_job_arriving_at_an_empty_pool_starts_a_worker_at_once(p in any_policy(), backlog in 1u64..1_000) {
            let d = decide(&p, ScaleState::default(), seen(backlog, 0), T0);
            prop_assert!(d.desired >= 1);
            prop_assert_eq!(d.desired, p.needed(backlog));
        }
    }
}
