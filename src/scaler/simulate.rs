//! A deterministic simulator of one pool, in virtual time.
//!
//! An arrival trace is replayed second by second through a scaling rule and a model of the
//! workers: a started worker takes `startup` to become ready, then runs one job at a time.
//! Two rules are compared beside an oracle:
//!
//! - **wharf**: [`crate::core::scaling::decide`] every second, on the pool's backlog and busy
//!   workers; a scale-in stops workers that are starting or idle, never a busy one.
//! - **target tracking**, as AWS Application Auto Scaling runs it on the metric teams publish
//!   for ECS (backlog per running task, one-minute datapoints): out when three datapoints in a
//!   row are above the target, in when fifteen are below 90 % of it, 60 s / 300 s cooldowns, a
//!   step alarm for zero to one (target tracking alone cannot leave zero), and a scale-in that
//!   stops tasks without knowing which are busy (their jobs start over).
//! - **oracle**: knows every arrival in advance. Jobs start on arrival while fewer than `max`
//!   run (first come, first served); each worker is started exactly `startup` before its first
//!   job and kept through a gap only when the gap is shorter than a restart.

use std::collections::VecDeque;
use std::time::Duration;

use crate::core::Timestamp;
use crate::core::scaling::{Observation, ScalePolicy, ScaleState, decide};

/// Most jobs a trace may hold, so a hostile file cannot exhaust memory.
pub const MAX_TRACE_JOBS: u64 = 2_000_000;
/// Latest second a trace may reach (30 days).
pub const MAX_TRACE_SECONDS: u64 = 30 * 86_400;

/// Jobs arriving together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Second of the arrival, from the start of the trace.
    pub at: u64,
    /// How many jobs.
    pub count: u32,
    /// How long each runs, in seconds.
    pub runs_for: u64,
}

/// A trace of arrivals, in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    arrivals: Vec<Arrival>,
}

/// A trace file that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct TraceError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl Trace {
    /// Reads a trace: one arrival per line, `SECOND COUNT RUNS_FOR` (seconds), `#` comments and
    /// blank lines ignored, seconds in non-decreasing order.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut arrivals = Vec::new();
        let mut total = 0u64;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |reason: String| TraceError { line, reason };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [at, count, runs_for] = fields[..] else {
                return Err(fail(format!("expected SECOND COUNT RUNS_FOR, found {content:?}")));
            };
            let number = |name: &str, text: &str| {
                text.parse::<u64>().map_err(|_| fail(format!("{name} must be a whole number, not {text:?}")))
            };
            let (at, count, runs_for) = (number("SECOND", at)?, number("COUNT", count)?, number("RUNS_FOR", runs_for)?);
            if at > MAX_TRACE_SECONDS || runs_for > MAX_TRACE_SECONDS {
                return Err(fail(format!("times are limited to {MAX_TRACE_SECONDS} s")));
            }
            if arrivals.last().is_some_and(|a: &Arrival| a.at > at) {
                return Err(fail(format!("second {at} comes before the line above")));
            }
            total += count;
            if total > MAX_TRACE_JOBS {
                return Err(fail(format!("a trace holds at most {MAX_TRACE_JOBS} jobs")));
            }
            if count > 0 {
                arrivals.push(Arrival { at, count: count as u32, runs_for: runs_for.max(1) });
            }
        }
        Ok(Trace { arrivals })
    }

    /// The arrivals, in time order.
    pub fn arrivals(&self) -> &[Arrival] {
        &self.arrivals
    }

    fn jobs(&self) -> u64 {
        self.arrivals.iter().map(|a| u64::from(a.count)).sum()
    }
}

/// The pool and its workers.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// The pool's scaling parameters.
    pub policy: ScalePolicy,
    /// From a worker's start until it takes jobs.
    pub startup: Duration,
}

/// Which rule drives the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// wharf's policy.
    Wharf,
    /// AWS-style target tracking on backlog per running task.
    TargetTracking,
}

/// What a run cost and how it served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Jobs run to the end.
    pub jobs: u64,
    /// Seconds of workers alive (starting, idle or busy): what the pool pays for.
    pub worker_seconds: u64,
    /// Most jobs waiting or running at once.
    pub peak_backlog: u64,
    /// 99th percentile of the wait from arrival to start, in seconds.
    pub p99_wait: u64,
    /// From the last arrival until the last job finished, in seconds.
    pub drain: u64,
    /// Busy workers stopped by a scale-in (their jobs start over).
    pub busy_stopped: u64,
    /// Longest time, in seconds, from a job arriving at a pool with no worker to the pool asking
    /// for every worker the backlog needed.
    pub scale_out_delay: u64,
}

#[derive(Clone, Copy, Debug)]
struct Worker {
    ready_at: u64,
    job: Option<Running>,
}

/// A job on a worker.
#[derive(Clone, Copy, Debug)]
struct Running {
    arrived: u64,
    started: u64,
    runs_for: u64,
}

impl Running {
    fn ends(&self) -> u64 {
        self.started + self.runs_for
    }
}

/// Replays `trace` through `rule`.
pub fn simulate(trace: &Trace, model: &Model, rule: Rule) -> Outcome {
    let policy = &model.policy;
    let startup = model.startup.as_secs();
    let mut arrivals = trace.arrivals().iter().peekable();
    let last_arrival = trace.arrivals().last().map_or(0, |a| a.at);
    let mut waiting: VecDeque<(u64, u64)> = VecDeque::new();
    let mut workers: Vec<Worker> = Vec::new();
    let total = trace.jobs();
    let mut waits: Vec<u64> = Vec::with_capacity(total.min(MAX_TRACE_JOBS) as usize);
    let mut out = Outcome::default();
    let mut state = ScaleState::default();
    let mut tracking = Tracking::default();
    let mut shortfall_since: Option<u64> = None;
    let mut last_finish = 0;
    // Enough to drain anything the trace holds and settle afterwards.
    let horizon = last_arrival + total.saturating_mul(trace_longest(trace)) + 4 * 3_600;
    for t in 0..=horizon {
        for w in &mut workers {
            if let Some(job) = w.job
                && job.ends() <= t
            {
                w.job = None;
                out.jobs += 1;
                waits.push(job.started - job.arrived);
                last_finish = last_finish.max(job.ends());
            }
        }
        while let Some(a) = arrivals.next_if(|a| a.at <= t) {
            waiting.extend(std::iter::repeat_n((a.at, a.runs_for), a.count as usize));
        }
        for w in workers.iter_mut().filter(|w| w.ready_at <= t && w.job.is_none()) {
            let Some((arrived, runs_for)) = waiting.pop_front() else { break };
            w.job = Some(Running { arrived, started: t, runs_for });
        }
        let busy = workers.iter().filter(|w| w.job.is_some()).count() as u32;
        let backlog = waiting.len() as u64 + u64::from(busy);
        out.peak_backlog = out.peak_backlog.max(backlog);
        let desired = match rule {
            Rule::Wharf => {
                let now = Timestamp::from_millis(t.saturating_mul(1_000) as i64);
                let d = decide(policy, state, Observation { backlog, busy }, now);
                state = d.state;
                d.desired
            }
            Rule::TargetTracking => tracking.decide(policy, t, backlog, workers.len() as u32),
        };
        // How long the pool asked for fewer workers than the backlog needed, from a start at zero.
        let needed = policy.needed(backlog);
        match shortfall_since {
            None if desired < needed && workers.is_empty() => shortfall_since = Some(t),
            Some(since) if desired >= needed => {
                out.scale_out_delay = out.scale_out_delay.max(t - since);
                shortfall_since = None;
            }
            _ => {}
        }
        let have = workers.len() as u32;
        if desired > have {
            workers.extend((have..desired).map(|_| Worker { ready_at: t + startup, job: None }));
        } else if desired < have {
            let surplus = (have - desired) as usize;
            match rule {
                Rule::Wharf => stop_idle(&mut workers, surplus, t),
                Rule::TargetTracking => {
                    // A stopped job is delivered again, from the front; its wait counts on.
                    for w in stop_any(&mut workers, surplus, t) {
                        if let Some(job) = w.job {
                            out.busy_stopped += 1;
                            waiting.push_front((job.arrived, job.runs_for));
                        }
                    }
                }
            }
        }
        out.worker_seconds += workers.len() as u64;
        let done = out.jobs == total && t >= last_arrival;
        if done && workers.len() as u32 <= policy.min() {
            break;
        }
    }
    out.p99_wait = percentile(&mut waits, 99);
    out.drain = last_finish.saturating_sub(last_arrival);
    out
}

/// The oracle's run of `trace`: see the module's documentation.
pub fn oracle(trace: &Trace, model: &Model) -> Outcome {
    let startup = model.startup.as_secs();
    let slots = model.policy.max() as usize;
    // Per slot: when it frees, and the jobs it ran as (start, end).
    let mut runs: Vec<Vec<(u64, u64)>> = vec![Vec::new(); slots];
    let mut free_at = vec![0u64; slots];
    let mut waits = Vec::with_capacity(trace.jobs() as usize);
    let mut ends_and_arrivals: Vec<(u64, i64)> = Vec::new();
    let mut out = Outcome { jobs: trace.jobs(), ..Outcome::default() };
    for a in trace.arrivals() {
        for _ in 0..a.count {
            // A slot free at the arrival (the one freed last, to keep gaps short), else the
            // first to free.
            let slot = (0..slots)
                .filter(|&s| free_at[s] <= a.at)
                .max_by_key(|&s| free_at[s])
                .unwrap_or_else(|| (0..slots).min_by_key(|&s| free_at[s]).unwrap_or(0));
            let start = a.at.max(free_at[slot]);
            let end = start + a.runs_for;
            free_at[slot] = end;
            runs[slot].push((start, end));
            waits.push(start - a.at);
            ends_and_arrivals.push((a.at, 1));
            ends_and_arrivals.push((end, -1));
        }
    }
    for jobs in &runs {
        let mut previous_end: Option<u64> = None;
        for &(start, end) in jobs {
            out.worker_seconds += match previous_end {
                Some(prev) if start - prev <= startup => start - prev,
                _ => startup,
            } + (end - start);
            previous_end = Some(end);
        }
    }
    ends_and_arrivals.sort_by_key(|&(at, change)| (at, change));
    let mut backlog = 0i64;
    for (_, change) in ends_and_arrivals {
        backlog += change;
        out.peak_backlog = out.peak_backlog.max(backlog.max(0) as u64);
    }
    let last_arrival = trace.arrivals().last().map_or(0, |a| a.at);
    let last_end = runs.iter().flatten().map(|&(_, end)| end).max().unwrap_or(0);
    out.drain = last_end.saturating_sub(last_arrival);
    out.p99_wait = percentile(&mut waits, 99);
    out
}

fn trace_longest(trace: &Trace) -> u64 {
    trace.arrivals().iter().map(|a| a.runs_for).max().unwrap_or(1)
}

/// Stops up to `n` workers that hold no job, those still starting first.
fn stop_idle(workers: &mut Vec<Worker>, n: usize, t: u64) {
    let mut left = n;
    for starting_only in [true, false] {
        workers.retain(|w| {
            let stop = left > 0 && w.job.is_none() && (!starting_only || w.ready_at > t);
            if stop {
                left -= 1;
            }
            !stop
        });
    }
}

/// Stops `n` workers chosen without regard to what they run (deterministically spread over
/// the fleet); returns them.
fn stop_any(workers: &mut Vec<Worker>, n: usize, t: u64) -> Vec<Worker> {
    let mut stopped = Vec::with_capacity(n);
    for k in 0..n {
        if workers.is_empty() {
            break;
        }
        let at = ((t as usize).wrapping_mul(7919).wrapping_add(k * 104_729)) % workers.len();
        stopped.push(workers.swap_remove(at));
    }
    stopped
}

fn percentile(values: &mut [u64], p: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[((values.len() * p).div_ceil(100)).saturating_sub(1).min(values.len() - 1)]
}

/// AWS-style target tracking's memory: one-minute datapoints and its alarms.
#[derive(Debug, Default)]
struct Tracking {
    desired: u32,
    sum: f64,
    samples: u32,
    any_backlog: bool,
    above: u32,
    below: u32,
    scaled_out_at: Option<u64>,
    scaled_in_at: Option<u64>,
}

impl Tracking {
    fn decide(&mut self, policy: &ScalePolicy, t: u64, backlog: u64, running: u32) -> u32 {
        if self.desired < policy.min() {
            self.desired = policy.min();
        }
        // The published metric: backlog per running task (the backlog alone at zero tasks).
        self.sum += backlog as f64 / f64::from(running.max(1));
        self.samples += 1;
        self.any_backlog |= backlog > 0;
        if !(t + 1).is_multiple_of(60) {
            return self.desired;
        }
        let metric = self.sum / f64::from(self.samples.max(1));
        let any_backlog = self.any_backlog;
        (self.sum, self.samples, self.any_backlog) = (0.0, 0, false);
        let target = f64::from(policy.target_backlog_per_worker());
        let since = |at: Option<u64>| at.map_or(u64::MAX, |at| t - at);
        if self.desired == 0 {
            // The step alarm: one datapoint with a backlog starts one task.
            if any_backlog {
                self.desired = 1.min(policy.max());
                self.scaled_out_at = Some(t);
            }
            return self.desired;
        }
        self.above = if metric > target { self.above + 1 } else { 0 };
        self.below = if metric < 0.9 * target { self.below + 1 } else { 0 };
        let proposed = (f64::from(self.desired) * metric / target).ceil().min(f64::from(u32::MAX)) as u32;
        let proposed = proposed.clamp(policy.min(), policy.max());
        if self.above >= 3 && proposed > self.desired && since(self.scaled_out_at) >= 60 {
            self.desired = proposed;
            self.scaled_out_at = Some(t);
            self.above = 0;
        } else if self.below >= 15
            && proposed < self.desired
            && since(self.scaled_in_at) >= 300
            && since(self.scaled_out_at) >= 60
        {
            self.desired = proposed;
            self.scaled_in_at = Some(t);
            self.below = 0;
        }
        self.desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(min: u32, max: u32, target: u32, startup: u64) -> Model {
        let policy = ScalePolicy::new(min, max, target, Duration::from_secs(60), Duration::from_secs(300)).unwrap();
        Model { policy, startup: Duration::from_secs(startup) }
    }

    #[test]
    fn a_trace_reads_its_lines_and_refuses_bad_ones_with_their_number() {
        let trace = Trace::parse("# a burst\n0 10 30\n\n60 1 5 # one more\n").unwrap();
        assert_eq!(
            trace.arrivals(),
            &[Arrival { at: 0, count: 10, runs_for: 30 }, Arrival { at: 60, count: 1, runs_for: 5 }]
        );
        assert_eq!(Trace::parse("0 1\n").unwrap_err().line, 1);
        assert_eq!(Trace::parse("0 1 1\nx 1 1\n").unwrap_err().line, 2);
        assert_eq!(Trace::parse("5 1 1\n4 1 1\n").unwrap_err().line, 2);
        assert!(Trace::parse(&format!("0 {} 1\n", MAX_TRACE_JOBS + 1)).is_err());
        assert!(Trace::parse(&format!("{} 1 1\n", MAX_TRACE_SECONDS + 1)).is_err());
    }

    #[test]
    fn a_burst_at_an_idle_pool_gets_its_workers_at_once_and_no_busy_one_is_stopped() {
        let trace = Trace::parse("100 40 20\n").unwrap();
        let m = model(0, 8, 5, 10);
        let out = simulate(&trace, &m, Rule::Wharf);
        assert_eq!(out.jobs, 40);
        assert_eq!(out.scale_out_delay, 0);
        assert_eq!(out.busy_stopped, 0);
        // 8 workers ready at 110 run 5 rounds of 20 s: the last ends at 210.
        assert_eq!(out.drain, 110);
        assert_eq!(out.peak_backlog, 40);
    }

    #[test]
    fn the_same_trace_gives_the_same_outcome() {
        let trace = Trace::parse("0 3 30\n10 50 12\n400 7 3\n").unwrap();
        let m = model(0, 6, 2, 15);
        for rule in [Rule::Wharf, Rule::TargetTracking] {
            assert_eq!(simulate(&trace, &m, rule), simulate(&trace, &m, rule));
        }
    }

    #[test]
    fn target_tracking_waits_for_its_alarms_and_may_stop_busy_tasks() {
        let trace = Trace::parse("0 400 30\n").unwrap();
        let m = model(0, 10, 5, 10);
        let tracking = simulate(&trace, &m, Rule::TargetTracking);
        let wharf = simulate(&trace, &m, Rule::Wharf);
        assert_eq!(tracking.jobs, 400);
        // The step alarm starts one task after a minute; three more datapoints before more.
        assert!(tracking.scale_out_delay >= 59 + 180, "{tracking:?}");
        assert!(wharf.drain < tracking.drain);
    }

    #[test]
    fn the_oracle_pays_for_work_and_start_ups_only() {
        let trace = Trace::parse("0 2 10\n100 2 10\n").unwrap();
        let out = oracle(&trace, &model(0, 4, 1, 5));
        // Two workers, each started twice (the gap of 90 s is longer than a start-up of 5 s).
        assert_eq!(out.worker_seconds, 2 * 2 * (5 + 10));
        assert_eq!((out.p99_wait, out.peak_backlog, out.drain), (0, 2, 10));
        let out = oracle(&trace, &model(0, 1, 1, 5));
        assert_eq!(out.p99_wait, 10);
    }
}
