//! Each queue's recent figures over the last hour, for `GET /v1/queues/{queue}/stats` and the
//! dashboard's charts: attempts per step from [`rates`] (every node's, read off the event
//! bus), and wait and run-time percentiles read every [`STEP`] from the store's latency
//! histograms, the ones `/metrics` exports.
//!
//! On PostgreSQL the histograms are the answering node's own (the attempts it handed out and
//! finished), as in its `/metrics`; the attempt counts are of every node.

pub mod rates;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::{Clock, Timestamp};
use crate::metrics::{LatencyHistogram, QueueCounters};
use crate::store::Store;
use rates::{Attempts, Rates};

/// The time one point of a queue's statistics covers.
pub const STEP: Duration = Duration::from_secs(10);
/// Points kept per queue: one hour's.
pub const KEPT: usize = 360;

const STEP_MS: i64 = STEP.as_millis() as i64;

/// Percentiles of the latencies observed in one step, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantiles {
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
}

impl Quantiles {
    fn of(h: &LatencyHistogram) -> Option<Quantiles> {
        Some(Quantiles {
            p50: h.quantile_seconds(0.5)?,
            p95: h.quantile_seconds(0.95)?,
            p99: h.quantile_seconds(0.99)?,
        })
    }
}

/// One step of a queue's statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// When the step starts.
    pub at: Timestamp,
    /// Attempts that ended in it.
    pub attempts: Attempts,
    /// Ready → leased, of the jobs leased in it.
    pub wait: Option<Quantiles>,
    /// Leased → end of attempt, of the attempts that ended in it.
    pub run: Option<Quantiles>,
}

/// Latency points of one queue, with the histograms as last read.
#[derive(Debug)]
struct QueueLatency {
    wait: LatencyHistogram,
    run: LatencyHistogram,
    /// Steps with an observation, oldest first: (step number, wait, run).
    points: VecDeque<(i64, Option<Quantiles>, Option<Quantiles>)>,
}

/// Every queue's recent figures.
#[derive(Debug, Default)]
pub struct Stats {
    /// Attempts per second, from the event bus.
    pub rates: Arc<Rates>,
    latencies: Mutex<HashMap<String, QueueLatency>>,
}

impl Stats {
    /// Statistics that count attempts in `rates`.
    pub fn new(rates: Arc<Rates>) -> Stats {
        Stats { rates, latencies: Mutex::default() }
    }

    /// Reads every queue's histograms at `now`: the percentiles of what was observed since
    /// the previous reading make the point of the step that just ended. The histograms start
    /// empty with the server, so a queue's first reading is all it has seen.
    pub fn sample(&self, queues: &[(String, QueueCounters)], now: Timestamp) {
        let step = now.as_millis().div_euclid(STEP_MS) - 1;
        let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        for (queue, counters) in queues {
            let entry = latencies.entry(queue.clone()).or_insert_with(|| QueueLatency {
                wait: LatencyHistogram::default(),
                run: LatencyHistogram::default(),
                points: VecDeque::new(),
            });
            let wait = Quantiles::of(&counters.wait.since(&entry.wait));
            let run = Quantiles::of(&counters.run.since(&entry.run));
            entry.wait.clone_from(&counters.wait);
            entry.run.clone_from(&counters.run);
            if wait.is_some() || run.is_some() {
                entry.points.push_back((step, wait, run));
            }
            while entry.points.front().is_some_and(|&(s, ..)| step - s >= KEPT as i64) {
                entry.points.pop_front();
            }
        }
        // A deleted queue's figures go with it.
        if latencies.len() > queues.len() {
            let names: std::collections::HashSet<&str> = queues.iter().map(|(queue, _)| queue.as_str()).collect();
            latencies.retain(|name, _| names.contains(name.as_str()));
        }
    }

    /// The steps of the last hour in which `queue` had any activity, oldest first.
    pub fn points(&self, queue: &str, now: Timestamp) -> Vec<Point> {
        let last = now.as_millis().div_euclid(STEP_MS);
        let first = last - KEPT as i64 + 1;
        let attempts = self.rates.series(queue, STEP.as_secs() as i64, KEPT, now);
        let mut points: Vec<Point> = attempts
            .into_iter()
            .enumerate()
            .map(|(i, attempts)| Point {
                at: Timestamp::from_millis((first + i as i64) * STEP_MS),
                attempts,
                wait: None,
                run: None,
            })
            .collect();
        let latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = latencies.get(queue) {
            for &(step, wait, run) in &entry.points {
                if let Some(point) = usize::try_from(step - first).ok().and_then(|i| points.get_mut(i)) {
                    point.wait = wait;
                    point.run = run;
                }
            }
        }
        points.retain(|p| p.attempts != Attempts::default() || p.wait.is_some() || p.run.is_some());
        points
    }
}

/// Reads the store's histograms into `stats` at every [`STEP`] boundary until `shutdown`.
pub async fn sample(store: Arc<dyn Store>, stats: Arc<Stats>, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    loop {
        let into_step = clock.now().as_millis().rem_euclid(STEP_MS);
        let until_next = Duration::from_millis((STEP_MS - into_step) as u64 + 5);
        tokio::select! {
            () = tokio::time::sleep(until_next) => {}
            () = shutdown.cancelled() => return,
        }
        match store.queue_counters().await {
            Ok(counters) => stats.sample(&counters, clock.now()),
            // The next step tries again; its point covers both.
            Err(err) => tracing::debug!(error = %err, "queue statistics: cannot read the store's figures"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn reading(queue: &str, waits_ms: &[u64], runs_ms: &[u64]) -> (String, QueueCounters) {
        let mut counters = QueueCounters::default();
        for &ms in waits_ms {
            counters.wait.observe_ms(ms);
        }
        for &ms in runs_ms {
            counters.run.observe_ms(ms);
        }
        (queue.to_owned(), counters)
    }

    #[test]
    fn each_reading_gives_the_percentiles_of_the_step_that_just_ended() {
        let stats = Stats::default();
        let at = |s: i64| Timestamp::from_millis(s * 1000 + 5);
        stats.sample(&[reading("q", &[3], &[])], at(1_000));
        assert_eq!(stats.points("q", at(1_000)).len(), 1, "all seen before the first reading");
        assert_eq!(stats.points("q", at(1_000))[0].at, Timestamp::from_millis(990_000));
        // In [1000, 1010): two more waits; nothing ran.
        stats.sample(&[reading("q", &[3, 3, 3], &[])], at(1_010));
        // In [1010, 1020): nothing at all. In [1020, 1030): one run of 40 ms.
        stats.sample(&[reading("q", &[3, 3, 3], &[])], at(1_020));
        stats.sample(&[reading("q", &[3, 3, 3], &[40])], at(1_030));
        let points = stats.points("q", at(1_030));
        assert_eq!(points.len(), 3, "{points:?}");
        let points = &points[1..];
        assert_eq!(points[0].at, Timestamp::from_millis(1_000_000));
        let wait = points[0].wait.unwrap();
        assert!(wait.p50 > 0.0025 && wait.p50 <= 0.005, "{wait:?}");
        assert_eq!(points[0].run, None);
        assert_eq!(points[1].at, Timestamp::from_millis(1_020_000));
        assert_eq!(points[1].wait, None);
        assert!(points[1].run.is_some_and(|r| r.p99 > 0.025 && r.p99 <= 0.05));
        // An hour later the points are gone; a deleted queue's figures at once.
        assert!(stats.points("q", at(1_030 + 3_600)).is_empty());
        stats.sample(&[], at(1_040));
        assert!(stats.points("q", at(1_040)).is_empty());
    }
}
