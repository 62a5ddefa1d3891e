//! The metrics catalogue and its Prometheus text rendering.
//!
//! Stores count what they commit in plain per-queue structs (no atomics on the hot path: the
//! embedded store updates them from its one writer thread); `/metrics` takes a snapshot and
//! renders it with `prometheus-client`'s encoder. Every metric wharf exports is in this table:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `wharf_jobs` | gauge | queue, state | jobs in each state now |
//! | `wharf_queue_oldest_ready_age_seconds` | gauge | queue | how long the oldest ready job has waited |
//! | `wharf_queue_paused` | gauge | queue | 1 while the queue is paused |
//! | `wharf_jobs_enqueued_total` | counter | queue | jobs created (idempotent hits excluded) |
//! | `wharf_jobs_started_total` | counter | queue | leases handed out (attempts started) |
//! | `wharf_jobs_succeeded_total` | counter | queue | attempts that succeeded |
//! | `wharf_jobs_failed_total` | counter | queue | attempts that failed, expired leases included |
//! | `wharf_jobs_retried_total` | counter | queue | failed attempts scheduled to run again |
//! | `wharf_jobs_dead_total` | counter | queue | jobs dead-lettered |
//! | `wharf_jobs_canceled_total` | counter | queue | jobs canceled |
//! | `wharf_jobs_released_total` | counter | queue | leases released by workers (not attempts) |
//! | `wharf_leases_expired_total` | counter | queue | leases that ran out |
//! | `wharf_job_wait_seconds` | histogram | queue | ready → leased |
//! | `wharf_job_run_seconds` | histogram | queue | leased → succeeded, failed or released |
//! | `wharf_workers_connected` | gauge | | workers that asked for work in the last minute |
//! | `wharf_store_transactions_total` | counter | | store transactions committed (group commits) |
//! | `wharf_store_operations_total` | counter | | operations applied in those transactions |
//! | `wharf_store_commit_seconds` | histogram | | time to commit one transaction, until it is durable |
//! | `wharf_store_size_bytes` | gauge | | bytes the store's data takes on disk |
//! | `process_resident_memory_bytes` | gauge | | the server's resident memory (Linux) |
//! | `wharf_leader` | gauge | | 1 on the node that runs maintenance of a shared store (always 1 on the embedded store) |
//!
//! Counters start at zero when the server starts, as Prometheus expects.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::core::JobState;
use crate::core::state::{Reason, Transition};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Observations per bucket; the last slot counts those above every bound.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one observation of `ms` milliseconds.
    pub fn observe_ms(&mut self, ms: u64) {
        self.observe_seconds(ms as f64 / 1000.0);
    }

    /// Records one observation of `seconds`.
    pub fn observe_seconds(&mut self, seconds: f64) {
        let slot = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// What was observed since `earlier`, a previous reading of the same histogram (empty
    /// when this one was reset in between).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        if earlier.count > self.count {
            return self.clone();
        }
        let mut out = LatencyHistogram::default();
        for (slot, (now, then)) in out.buckets.iter_mut().zip(self.buckets.iter().zip(&earlier.buckets)) {
            *slot = now.saturating_sub(*then);
        }
        out.sum_seconds = (self.sum_seconds - earlier.sum_seconds).max(0.0);
        out.count = self.count - earlier.count;
        out
    }

    /// The `q` quantile (0–1) in seconds, interpolated within its bucket as Prometheus's
    /// `histogram_quantile` does; `None` with no observation. Above the last bound it is
    /// that bound.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = LATENCY_BUCKETS.get(i) else { return LATENCY_BUCKETS.last().copied() };
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        LATENCY_BUCKETS.last().copied()
    }

    fn encode_buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS.iter().copied().chain([f64::MAX]).zip(self.buckets.iter().copied()).collect()
    }
}

/// Running totals for one queue since the server started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueCounters {
    /// Jobs created.
    pub enqueued: u64,
    /// Attempts started.
    pub started: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed, expired leases included.
    pub failed: u64,
    /// Failed attempts scheduled to run again.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Jobs canceled.
    pub canceled: u64,
    /// Leases released without counting an attempt.
    pub released: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Ready → leased.
    pub wait: LatencyHistogram,
    /// Leased → finished attempt.
    pub run: LatencyHistogram,
}

impl QueueCounters {
    /// Counts one transition of a job of this queue (the latency histograms are observed
    /// apart: they need times the transition does not carry).
    pub fn record(&mut self, t: Transition) {
        match t.reason {
            Reason::Leased => self.started += 1,
            Reason::Completed => self.succeeded += 1,
            Reason::Failed | Reason::LeaseExpired => {
                self.failed += 1;
                if t.reason == Reason::LeaseExpired {
                    self.expired += 1;
                }
                match t.to {
                    JobState::Scheduled | JobState::Ready => self.retried += 1,
                    JobState::Dead => self.dead += 1,
                    _ => {}
                }
            }
            Reason::Released => self.released += 1,
            Reason::Canceled | Reason::Promoted | Reason::Redriven => {}
        }
        // However it got there: canceled at once, or at the end of its attempt.
        if t.to == JobState::Canceled {
            self.canceled += 1;
        }
    }
}

/// What `/metrics` reports about one queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueMetrics {
    /// The queue.
    pub queue: String,
    /// Jobs per state, indexed by [`JobState::index`].
    pub jobs: [u64; 6],
    /// Age of the oldest ready job, in seconds (0 when none is ready).
    pub oldest_ready_age_seconds: f64,
    /// Paused or not.
    pub paused: bool,
    /// Totals since start.
    pub counters: QueueCounters,
}

/// Everything `/metrics` reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Per queue.
    pub queues: Vec<QueueMetrics>,
    /// Workers seen in the last minute.
    pub workers_connected: u64,
    /// The store's own work.
    pub store: StoreMetrics,
}

/// How a store commits, in terms any transactional store has: operations per transaction is
/// the group-commit factor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreMetrics {
    /// Transactions committed.
    pub transactions: u64,
    /// Operations applied in them.
    pub operations: u64,
    /// Time per commit, until the change is durable (a sync to disk included).
    pub commit: LatencyHistogram,
    /// Bytes the store's data takes on disk, whatever files it keeps (the embedded store: its
    /// database and write-ahead log).
    pub size_bytes: u64,
}

/// Renders a snapshot in the Prometheus text format.
pub fn render(snapshot: MetricsSnapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// `rendered` with the `wharf_leader` gauge added before its end.
pub fn with_leader(mut rendered: String, leading: bool) -> String {
    let gauge = format!(
        "# HELP wharf_leader 1 on the node that runs maintenance.\n# TYPE wharf_leader gauge\nwharf_leader {}\n",
        u8::from(leading)
    );
    match rendered.rfind("# EOF") {
        Some(end) => rendered.insert_str(end, &gauge),
        None => rendered.push_str(&gauge),
    }
    rendered
}

/// `rendered` with each autoscaled pool's gauges added before its end.
pub fn with_pools(mut rendered: String, pools: &[crate::api::PoolView]) -> String {
    use std::fmt::Write as _;
    if pools.is_empty() {
        return rendered;
    }
    let mut gauges = String::new();
    type Family = (&'static str, &'static str, fn(&crate::api::PoolView) -> u64);
    let families: [Family; 4] = [
        ("wharf_pool_desired_workers", "Workers the pool asks for.", |p| u64::from(p.desired)),
        ("wharf_pool_actual_workers", "Workers the pool's provider runs, not counting those draining.", |p| {
            u64::from(p.actual)
        }),
        ("wharf_pool_busy_workers", "Workers on the pool's queues holding a job.", |p| u64::from(p.busy)),
        ("wharf_pool_backlog", "Ready-to-start plus running jobs of the pool's queues.", |p| p.backlog),
    ];
    for (name, help, value) in families {
        // Pool names are `A-Z a-z 0-9 . _ -`: nothing to escape in a label.
        let _ = writeln!(gauges, "# HELP {name} {help}\n# TYPE {name} gauge");
        for pool in pools {
            let _ = writeln!(gauges, "{name}{{pool=\"{}\"}} {}", pool.name, value(pool));
        }
    }
    match rendered.rfind("# EOF") {
        Some(end) => rendered.insert_str(end, &gauges),
        None => rendered.push_str(&gauges),
    }
    rendered
}

/// `rendered` with each alarm's state per queue added before its end: `wharf_alarm_firing`
/// (1 or 0) and `wharf_alarm_value`.
pub fn with_alarms(mut rendered: String, alarms: &[crate::api::AlarmView]) -> String {
    use std::fmt::Write as _;
    if alarms.is_empty() {
        return rendered;
    }
    let mut gauges = String::new();
    let _ = writeln!(
        gauges,
        "# HELP wharf_alarm_firing Whether the alarm fires for the queue (1) or not (0).\n# TYPE wharf_alarm_firing gauge"
    );
    // Alarm and queue names are `A-Z a-z 0-9 . _ -`: nothing to escape in a label.
    for alarm in alarms {
        for q in &alarm.queues {
            let firing = u8::from(q.state == "firing");
            let _ = writeln!(gauges, "wharf_alarm_firing{{alarm=\"{}\",queue=\"{}\"}} {firing}", alarm.name, q.queue);
        }
    }
    let _ = writeln!(
        gauges,
        "# HELP wharf_alarm_value The figure the alarm watches, as last evaluated.\n# TYPE wharf_alarm_value gauge"
    );
    for alarm in alarms {
        for q in &alarm.queues {
            let _ = writeln!(gauges, "wharf_alarm_value{{alarm=\"{}\",queue=\"{}\"}} {}", alarm.name, q.queue, q.value);
        }
    }
    match rendered.rfind("# EOF") {
        Some(end) => rendered.insert_str(end, &gauges),
        None => rendered.push_str(&gauges),
    }
    rendered
}

#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

type Labels<'a> = [(&'static str, &'a str)];

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[QueueMetrics],
    value: impl Fn(&QueueCounters) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for q in rows {
        let labels: &Labels = &[("queue", &q.queue)];
        ConstCounter::new(value(&q.counters)).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[QueueMetrics],
    value: impl Fn(&QueueCounters) -> &LatencyHistogram,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for q in rows {
        let labels: &Labels = &[("queue", &q.queue)];
        let h = value(&q.counters);
        metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum_seconds,
            h.count,
            &h.encode_buckets(),
            None,
        )?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = &self.0.queues;
        {
            let mut metric = encoder.encode_descriptor("wharf_jobs", "Jobs in each state", None, MetricType::Gauge)?;
            for q in rows {
                for state in JobState::ALL {
                    let labels: &Labels = &[("queue", &q.queue), ("state", state.as_str())];
                    ConstGauge::new(q.jobs[state.index()] as i64).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "wharf_queue_oldest_ready_age_seconds",
                "How long the oldest ready job has waited",
                None,
                MetricType::Gauge,
            )?;
            for q in rows {
                let labels: &Labels = &[("queue", &q.queue)];
                ConstGauge::new(q.oldest_ready_age_seconds).encode(metric.encode_family(&labels)?)?;
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "wharf_queue_paused",
                "1 while the queue is paused",
                None,
                MetricType::Gauge,
            )?;
            for q in rows {
                let labels: &Labels = &[("queue", &q.queue)];
                ConstGauge::new(i64::from(q.paused)).encode(metric.encode_family(&labels)?)?;
            }
        }
        counter(&mut encoder, "wharf_jobs_enqueued", "Jobs created", rows, |c| c.enqueued)?;
        counter(&mut encoder, "wharf_jobs_started", "Attempts started", rows, |c| c.started)?;
        counter(&mut encoder, "wharf_jobs_succeeded", "Attempts that succeeded", rows, |c| c.succeeded)?;
        counter(&mut encoder, "wharf_jobs_failed", "Attempts that failed, expired leases included", rows, |c| {
            c.failed
        })?;
        counter(&mut encoder, "wharf_jobs_retried", "Failed attempts scheduled again", rows, |c| c.retried)?;
        counter(&mut encoder, "wharf_jobs_dead", "Jobs dead-lettered", rows, |c| c.dead)?;
        counter(&mut encoder, "wharf_jobs_canceled", "Jobs canceled", rows, |c| c.canceled)?;
        counter(&mut encoder, "wharf_jobs_released", "Leases released by workers", rows, |c| c.released)?;
        counter(&mut encoder, "wharf_leases_expired", "Leases that ran out", rows, |c| c.expired)?;
        histogram(&mut encoder, "wharf_job_wait_seconds", "Time from ready to leased", rows, |c| &c.wait)?;
        histogram(&mut encoder, "wharf_job_run_seconds", "Time from leased to the end of the attempt", rows, |c| {
            &c.run
        })?;
        let metric = encoder.encode_descriptor(
            "wharf_workers_connected",
            "Workers that asked for work in the last minute",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.workers_connected as i64).encode(metric)?;
        let store = &self.0.store;
        let metric = encoder.encode_descriptor(
            "wharf_store_transactions",
            "Store transactions committed (group commits)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(store.transactions).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "wharf_store_operations",
            "Operations applied in committed transactions",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(store.operations).encode(metric)?;
        let mut metric = encoder.encode_descriptor(
            "wharf_store_commit_seconds",
            "Time to commit one transaction, until it is durable",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(
            store.commit.sum_seconds,
            store.commit.count,
            &store.commit.encode_buckets(),
            None,
        )?;
        let metric = encoder.encode_descriptor(
            "wharf_store_size_bytes",
            "Bytes the store's data takes on disk",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(store.size_bytes as i64).encode(metric)?;
        if let Some(rss) = resident_memory_bytes() {
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the server",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(rss as i64).encode(metric)?;
        }
        Ok(())
    }
}

/// This process's resident memory, from `/proc/self/status` (Linux; `None` elsewhere).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets_of_what_was_observed_since() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_seconds(0.5), None);
        // Ten observations between 5 and 10 ms, one near a minute.
        for _ in 0..10 {
            h.observe_ms(8);
        }
        let earlier = h.clone();
        h.observe_ms(59_000);
        for _ in 0..9 {
            h.observe_ms(20);
        }
        let recent = h.since(&earlier);
        assert_eq!(recent.count, 10);
        // Nine in (10, 25] ms: the median is 10 + 15 × 5/9 ms.
        let p50 = recent.quantile_seconds(0.5).unwrap();
        assert!((p50 - (0.010 + 0.015 * 5.0 / 9.0)).abs() < 1e-9, "{p50}");
        // The slowest is in (30, 60] s.
        assert_eq!(recent.quantile_seconds(1.0), Some(60.0));
        assert_eq!(recent.since(&h).count, 10, "a reset between readings starts again");
        let mut huge = LatencyHistogram::default();
        huge.observe_seconds(7_200.0);
        assert_eq!(huge.quantile_seconds(0.99), Some(3_600.0), "above the last bound");
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = LatencyHistogram::default();
        h.observe_ms(0);
        h.observe_ms(1);
        h.observe_ms(7_200_000);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[2], 1, "1 ms lands in the 0.001 s bucket");
        assert_eq!(h.buckets[LATENCY_BUCKETS.len()], 1, "two hours is above every bound");
        assert_eq!(h.count, 3);
    }

    #[test]
    fn rendering_has_every_catalogued_metric() {
        let mut q = QueueMetrics { queue: "pdf".into(), ..Default::default() };
        q.jobs[JobState::Ready.index()] = 7;
        q.counters.enqueued = 9;
        q.counters.wait.observe_ms(3);
        let text = render(MetricsSnapshot { queues: vec![q], workers_connected: 2, store: StoreMetrics::default() });
        for line in [
            "wharf_jobs{queue=\"pdf\",state=\"ready\"} 7",
            "wharf_jobs_enqueued_total{queue=\"pdf\"} 9",
            "wharf_job_wait_seconds_count{queue=\"pdf\"} 1",
            "wharf_job_wait_seconds_bucket{le=\"0.005\",queue=\"pdf\"} 1",
            "wharf_workers_connected 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
