//! Each queue's recent attempts, from the event bus: what an alarm's `failure_rate` and the
//! throughput in queue statistics are computed from.
//!
//! Every node counts (on PostgreSQL every node's bus carries every node's events), so a node
//! that becomes leader has the window already. Counts are kept per second for the longest
//! window a rule may have ([`MAX_WINDOW`]), and only for seconds in which an attempt ended:
//! a queue that finishes attempts every second holds 3,600 small entries at most.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::alarm::MAX_WINDOW;
use crate::core::{JobState, Timestamp};
use crate::events::{EventBus, EventKind, JobEvent};

/// Attempts that ended in one second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Second {
    at_s: i64,
    failed: u32,
    finished: u32,
}

/// Attempts that ended in some span of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Those that succeeded.
    pub succeeded: u64,
    /// Those that failed (retried or not).
    pub failed: u64,
}

/// Recent attempts of every queue.
#[derive(Debug, Default)]
pub struct Rates {
    queues: Mutex<HashMap<Arc<str>, VecDeque<Second>>>,
}

impl Rates {
    /// Counts one event: a failed attempt (its change carries the error) or a success.
    pub fn record(&self, event: &JobEvent) {
        if !ends_an_attempt(event) {
            return;
        }
        let failed = event.error.is_some();
        let at_s = event.at.as_millis().div_euclid(1000);
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let seconds = queues.entry(Arc::clone(&event.queue)).or_default();
        match seconds.back_mut() {
            Some(last) if last.at_s == at_s => {
                last.failed += u32::from(failed);
                last.finished += 1;
            }
            // Events from several nodes can come a little out of time order: count a late
            // one in the latest second rather than reorder.
            Some(last) if last.at_s > at_s => {
                last.failed += u32::from(failed);
                last.finished += 1;
            }
            _ => seconds.push_back(Second { at_s, failed: u32::from(failed), finished: 1 }),
        }
        let oldest = at_s - MAX_WINDOW.as_secs() as i64;
        while seconds.front().is_some_and(|s| s.at_s <= oldest) {
            seconds.pop_front();
        }
    }

    /// Failed attempts ÷ finished attempts of `queue` in the `window` before `now`; 0 when
    /// none finished.
    pub fn failure_rate(&self, queue: &str, window: Duration, now: Timestamp) -> f64 {
        let from = now.as_millis().div_euclid(1000) - window.as_secs().max(1) as i64;
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(seconds) = queues.get(queue) else { return 0.0 };
        let (failed, finished) = seconds
            .iter()
            .rev()
            .take_while(|s| s.at_s > from)
            .fold((0u64, 0u64), |(f, n), s| (f + u64::from(s.failed), n + u64::from(s.finished)));
        if finished == 0 { 0.0 } else { failed as f64 / finished as f64 }
    }

    /// Succeeded and failed attempts of `queue` per `step_s` seconds, for the `steps` steps
    /// that end with the one holding `now`, oldest first.
    pub fn series(&self, queue: &str, step_s: i64, steps: usize, now: Timestamp) -> Vec<Attempts> {
        let step_s = step_s.max(1);
        let last = now.as_millis().div_euclid(1000).div_euclid(step_s);
        let first = last - steps as i64 + 1;
        let mut out = vec![Attempts::default(); steps];
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(seconds) = queues.get(queue) else { return out };
        for s in seconds.iter().rev() {
            let step = s.at_s.div_euclid(step_s);
            if step < first {
                break;
            }
            if let Some(slot) = out.get_mut((step - first) as usize) {
                slot.failed += u64::from(s.failed);
                slot.succeeded += u64::from(s.finished - s.failed);
            }
        }
        out
    }

    /// Forgets queues with nothing in the longest window (deleted or idle ones).
    fn forget_idle(&self, now: Timestamp) {
        let oldest = now.as_millis().div_euclid(1000) - MAX_WINDOW.as_secs() as i64;
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.retain(|_, seconds| seconds.back().is_some_and(|s| s.at_s > oldest));
    }
}

/// How often the bus is read: attempts are counted per second, so waking for every event (a
/// cost on every request) buys nothing.
const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// Counts every attempt that ends on `bus` into `rates` until `shutdown`.
pub async fn follow(
    bus: Arc<EventBus>,
    rates: Arc<Rates>,
    clock: Arc<dyn crate::core::Clock>,
    shutdown: CancellationToken,
) {
    let (_, mut subscription) = bus.subscribe(|_| false);
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    let mut tidy = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = drain.tick() => loop {
                match subscription.try_next(ends_an_attempt) {
                    Ok(Some(event)) => rates.record(&event),
                    Ok(None) => break,
                    // A lag loses some counts: the rate is an estimate over what was seen.
                    Err(_) => {}
                }
            },
            _ = tidy.tick() => rates.forget_idle(clock.now()),
            () = shutdown.cancelled() => return,
        }
    }
}

/// A success, or a failure (its change carries the error).
fn ends_an_attempt(event: &JobEvent) -> bool {
    event.kind == EventKind::State && (event.error.is_some() || event.state == JobState::Succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::JobId;

    fn ended(queue: &str, at_ms: i64, failed: bool) -> JobEvent {
        JobEvent {
            seq: 0,
            job_id: JobId::from_raw(1),
            queue: Arc::from(queue),
            version: 2,
            kind: EventKind::State,
            state: if failed { JobState::Scheduled } else { JobState::Succeeded },
            attempt: 1,
            at: Timestamp::from_millis(at_ms),
            data: None,
            error: failed.then(|| "boom".to_owned()),
            run_at: None,
            superseded: false,
        }
    }

    #[test]
    fn the_failure_rate_counts_failed_over_finished_attempts_in_the_window() {
        let rates = Rates::default();
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(rates.failure_rate("q", Duration::from_secs(60), now), 0.0, "nothing finished");
        // Long ago: outside a 60 s window.
        rates.record(&ended("q", 800_000, true));
        for at in [950_000, 990_000, 999_000] {
            rates.record(&ended("q", at, false));
        }
        rates.record(&ended("q", 999_500, true));
        rates.record(&ended("other", 999_500, true));
        assert_eq!(rates.failure_rate("q", Duration::from_secs(60), now), 0.25);
        assert_eq!(rates.failure_rate("q", Duration::from_secs(300), now), 0.4);
        // Progress, a new lease or a cancel is not an attempt that ended.
        let mut progress = ended("q", 999_900, false);
        progress.kind = EventKind::Progress;
        rates.record(&progress);
        let mut canceled = ended("q", 999_900, false);
        canceled.state = JobState::Canceled;
        rates.record(&canceled);
        assert_eq!(rates.failure_rate("q", Duration::from_secs(60), now), 0.25);
    }

    #[test]
    fn a_series_buckets_attempts_by_step_oldest_first() {
        let rates = Rates::default();
        let now = Timestamp::from_millis(600_500);
        for (at, failed) in [(541_000, false), (581_000, true), (590_000, false), (600_100, false), (600_400, true)] {
            rates.record(&ended("q", at, failed));
        }
        let series = rates.series("q", 10, 6, now);
        let pairs: Vec<_> = series.iter().map(|a| (a.succeeded, a.failed)).collect();
        // Steps [550, 560) … [600, 610): the attempt at 541 s is before the first.
        assert_eq!(pairs, [(0, 0), (0, 0), (0, 0), (0, 1), (1, 0), (1, 1)]);
        assert_eq!(rates.series("other", 10, 3, now), vec![Attempts::default(); 3]);
    }

    #[test]
    fn idle_queues_are_forgotten() {
        let rates = Rates::default();
        rates.record(&ended("q", 1_000, true));
        rates.forget_idle(Timestamp::from_millis(1_000 + MAX_WINDOW.as_millis() as i64 + 2_000));
        assert!(rates.queues.lock().unwrap().is_empty());
    }
}
