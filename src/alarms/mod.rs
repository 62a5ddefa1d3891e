//! Alarms: rules on each queue's figures, evaluated each second on the leader, whose
//! transitions go to webhooks.
//!
//! Rules come from the config file (`[[alarm]]`) and from `PUT /v1/alarms/{name}` (kept in
//! the store, so every node has them). The leader observes every rule each [`TICK`], applies
//! [`crate::core::alarm::observe`], and stores each alarm's state: per queue firing or not
//! and since when, the transitions not yet delivered, recent history. Every node shows alarms
//! and exports their metrics from that stored state, so `GET /v1/alarms` and `/metrics` agree
//! on any node.
//!
//! Delivery: a transition is written to the alarm's state before it is sent, and removed once
//! each webhook answered 2xx, so a receiver that is down gets it later (see [`webhook`]), and
//! a server restart or a new leader goes on with what is left. A leader that dies between a
//! webhook's answer and writing it down would send that one again; each body carries an `id`
//! that is the same on every retry, so a receiver can drop the repeat.
//!
//! Caveats: `failure_rate` counts what this node's event bus saw (every node's events, on
//! PostgreSQL); counts missed in a lag, or before the node started, are not in it. Values
//! that are all that changed are stored at most every [`VALUE_EVERY`], so a shown value may
//! be that old.

pub mod webhook;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::{AlarmNotification, AlarmQueueView, AlarmRuleBody, AlarmTransitionView, AlarmView};
use crate::core::alarm::{AlarmRule, AlarmState, AlarmStatus, Figure, Transition, Watched, observe};
use crate::core::validate::Invalid;
use crate::core::{Clock, JobState, QueueName, Timestamp};
use crate::stats::rates::Rates;
use crate::store::{QueueInfo, Store, StoreResult, WorkerInfo};

/// How often the leader evaluates every rule.
pub const TICK: Duration = Duration::from_secs(1);
/// A value that is all that changed is stored at most this often.
pub const VALUE_EVERY: Duration = Duration::from_secs(5);
/// Transitions kept in an alarm's history.
const HISTORY: usize = 20;
/// Undelivered transitions kept per alarm; past it the oldest is dropped (and logged).
const MAX_UNDELIVERED: usize = 100;

/// A rule from `PUT /v1/alarms/{name}` as written.
pub fn rule_from_body(name: &str, body: &AlarmRuleBody) -> Result<AlarmRule, Invalid> {
    AlarmRule::parse(name, &body.queue, &body.when, body.for_.as_deref(), body.window.as_deref(), body.notify.clone())
}

/// Most rules the config file may declare.
pub const MAX_DECLARED: usize = 1_000;

/// An `[[alarm]]` table as written: a name and the fields of `PUT /v1/alarms/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmFile {
    name: String,
    queue: String,
    when: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    notify: Vec<String>,
}

/// The config file's `[[alarm]]` tables, validated; an error names the alarm and the problem.
pub fn load_all(tables: Vec<toml::Table>) -> anyhow::Result<Vec<AlarmRule>> {
    if tables.len() > MAX_DECLARED {
        anyhow::bail!("{} alarms declared in the config file; at most {MAX_DECLARED}", tables.len());
    }
    let mut rules: Vec<AlarmRule> = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let label = table.get("name").and_then(|n| n.as_str()).map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let file: AlarmFile = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("alarm {label}: {}", e.message()))?;
        let rule = AlarmRule::parse(
            &file.name,
            &file.queue,
            &file.when,
            file.for_.as_deref(),
            file.window.as_deref(),
            file.notify,
        )
        .map_err(|e| anyhow::anyhow!("alarm {label}: {}: {}", e.field, e.reason))?;
        if rules.iter().any(|r| r.name == rule.name) {
            anyhow::bail!("alarm {label}: defined more than once; alarm names must be unique");
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The config file.
    Config,
    /// `PUT /v1/alarms/{name}`.
    Api,
}

/// One queue's state, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct QueueStored {
    firing: bool,
    since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holding_since: Option<i64>,
    value: f64,
}

impl QueueStored {
    fn state(&self) -> AlarmState {
        AlarmState {
            status: if self.firing { AlarmStatus::Firing } else { AlarmStatus::Ok },
            since: Timestamp::from_millis(self.since),
            holding_since: self.holding_since.map(Timestamp::from_millis),
            value: self.value,
        }
    }

    fn from_state(s: &AlarmState) -> Self {
        QueueStored {
            firing: s.status == AlarmStatus::Firing,
            since: s.since.as_millis(),
            holding_since: s.holding_since.map(Timestamp::as_millis),
            value: s.value,
        }
    }
}

/// A transition waiting for its webhooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Undelivered {
    body: AlarmNotification,
    /// The webhooks that have not accepted it yet.
    to: Vec<String>,
    /// Sends tried so far.
    attempts: u32,
    /// When to try next.
    next_at: i64,
    /// When it happened.
    at: i64,
}

/// A transition in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Past {
    at: i64,
    queue: String,
    firing: bool,
    value: f64,
}

/// An alarm's state, as stored (JSON in the store's `state`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    queues: BTreeMap<String, QueueStored>,
    #[serde(default)]
    undelivered: VecDeque<Undelivered>,
    #[serde(default)]
    history: VecDeque<Past>,
    /// Transitions so far: the number in each notification's `id`.
    #[serde(default)]
    transitions: u64,
}

/// Every alarm: its rule, where it comes from, and its stored state.
struct Alarm {
    rule: AlarmRule,
    source: Source,
    stored: Stored,
}

/// The rules the config file declares, then those set through the API, with their states.
/// A stored rule that no longer parses (written by a newer version) is skipped, with a log.
async fn alarms(store: &dyn Store, declared: &[AlarmRule]) -> StoreResult<Vec<Alarm>> {
    let rows = store.alarm_list().await?;
    let mut states: HashMap<String, Stored> = HashMap::new();
    let mut out: Vec<Alarm> = Vec::new();
    for row in rows {
        if let Some(text) = &row.state {
            match serde_json::from_str::<Stored>(text) {
                Ok(stored) => {
                    states.insert(row.name.clone(), stored);
                }
                Err(err) => {
                    tracing::warn!(alarm = %row.name, error = %err, "unreadable stored alarm state; starting afresh")
                }
            }
        }
        let Some(text) = row.rule else { continue };
        if declared.iter().any(|r| r.name == row.name) {
            continue;
        }
        let rule = serde_json::from_str::<AlarmRuleBody>(&text)
            .map_err(|e| e.to_string())
            .and_then(|body| rule_from_body(&row.name, &body).map_err(|e| e.reason));
        match rule {
            Ok(rule) => out.push(Alarm { rule, source: Source::Api, stored: Stored::default() }),
            Err(err) => tracing::warn!(alarm = %row.name, error = %err, "unreadable stored alarm rule; skipped"),
        }
    }
    out.extend(declared.iter().map(|rule| Alarm {
        rule: rule.clone(),
        source: Source::Config,
        stored: Stored::default(),
    }));
    for alarm in &mut out {
        alarm.stored = states.remove(&alarm.rule.name).unwrap_or_default();
    }
    out.sort_by(|a, b| a.rule.name.cmp(&b.rule.name));
    Ok(out)
}

impl Alarm {
    fn view(&self) -> AlarmView {
        let rfc = |ms: i64| Timestamp::from_millis(ms).to_rfc3339();
        let queues: Vec<AlarmQueueView> = self
            .stored
            .queues
            .iter()
            .map(|(queue, q)| AlarmQueueView {
                queue: queue.clone(),
                state: if q.firing { "firing" } else { "ok" }.to_owned(),
                value: q.value,
                since: rfc(q.since),
            })
            .collect();
        let firing = self.stored.queues.values().filter(|q| q.firing);
        let since = match firing.clone().map(|q| q.since).min() {
            Some(first) => Some(first),
            None => self.stored.queues.values().map(|q| q.since).max(),
        };
        AlarmView {
            name: self.rule.name.clone(),
            source: match self.source {
                Source::Config => "config",
                Source::Api => "api",
            }
            .to_owned(),
            queue: self.rule.queue.to_string(),
            when: self.rule.when.to_string(),
            for_ms: self.rule.for_.as_millis() as u64,
            window_ms: self.rule.window.as_millis() as u64,
            notify: self.rule.notify.iter().map(|u| webhook::redact(u)).collect(),
            state: if firing.count() > 0 { "firing" } else { "ok" }.to_owned(),
            value: self.stored.queues.values().map(|q| q.value).fold(0.0, f64::max),
            since: since.map(rfc),
            queues,
            history: self
                .stored
                .history
                .iter()
                .rev()
                .map(|p| AlarmTransitionView {
                    at: rfc(p.at),
                    queue: p.queue.clone(),
                    state: if p.firing { "firing" } else { "resolved" }.to_owned(),
                    value: p.value,
                })
                .collect(),
            undelivered: self.stored.undelivered.len() as u32,
        }
    }
}

/// Every alarm as the API shows it, by name.
pub async fn views(store: &dyn Store, declared: &[AlarmRule]) -> StoreResult<Vec<AlarmView>> {
    Ok(alarms(store, declared).await?.iter().map(Alarm::view).collect())
}

/// What the rules look at, read once per tick.
struct Figures {
    queues: Vec<QueueInfo>,
    workers: Vec<WorkerInfo>,
}

impl Figures {
    fn value(&self, rule: &AlarmRule, queue: &str, rates: &Rates, now: Timestamp) -> f64 {
        let info = self.queues.iter().find(|q| q.name.as_str() == queue);
        let count = |state: JobState| info.map_or(0, |q| q.counts[state.index()]) as f64;
        match rule.when.figure {
            Figure::Ready => count(JobState::Ready),
            Figure::Scheduled => count(JobState::Scheduled),
            Figure::Running => count(JobState::Running),
            Figure::Dead => count(JobState::Dead),
            Figure::OldestReadyAgeS => {
                info.and_then(|q| q.oldest_ready_at).map_or(0.0, |at| now.millis_since(at) as f64 / 1000.0)
            }
            Figure::FailureRate => rates.failure_rate(queue, rule.window, now),
            Figure::Workers => {
                self.workers.iter().filter(|w| w.queues.iter().any(|q| q.as_str() == queue)).count() as f64
            }
        }
    }

    /// The queues a rule watches now: its queue, or every queue.
    fn watched(&self, rule: &AlarmRule) -> Vec<String> {
        match &rule.queue {
            Watched::Queue(q) => vec![q.to_string()],
            Watched::Each => self.queues.iter().map(|q| q.name.to_string()).collect(),
        }
    }
}

/// Applies one observation of every watched queue to an alarm; records each transition.
fn evaluate(alarm: &mut Alarm, figures: &Figures, rates: &Rates, now: Timestamp) {
    let watched = figures.watched(&alarm.rule);
    let stored = &mut alarm.stored;
    // A queue no longer there (deleted, for `*`) resolves if it fired, and is forgotten.
    let gone: Vec<String> = stored.queues.keys().filter(|q| !watched.contains(q)).cloned().collect();
    let mut changes: Vec<(String, Transition, f64)> = Vec::new();
    for queue in gone {
        if let Some(q) = stored.queues.remove(&queue)
            && q.firing
        {
            changes.push((queue, Transition::Resolved, 0.0));
        }
    }
    for queue in watched {
        let value = figures.value(&alarm.rule, &queue, rates, now);
        let mut state = stored.queues.get(&queue).map_or_else(|| AlarmState::new(now), QueueStored::state);
        if let Some(transition) = observe(&mut state, &alarm.rule.when, alarm.rule.for_, value, now) {
            changes.push((queue.clone(), transition, value));
        }
        stored.queues.insert(queue, QueueStored::from_state(&state));
    }
    for (queue, transition, value) in changes {
        stored.transitions += 1;
        let rule = &alarm.rule;
        tracing::info!(
            alarm = %rule.name, queue = %queue, state = transition.as_str(), value, when = %rule.when,
            "alarm {}", transition.as_str()
        );
        stored.history.push_back(Past {
            at: now.as_millis(),
            queue: queue.clone(),
            firing: transition == Transition::Fired,
            value,
        });
        while stored.history.len() > HISTORY {
            stored.history.pop_front();
        }
        if rule.notify.is_empty() {
            continue;
        }
        let text = format!(
            "[{}] {} on queue {queue}: {} is {value} ({})",
            transition.as_str().to_uppercase(),
            rule.name,
            rule.when.figure.as_str(),
            rule.when
        );
        let body = AlarmNotification {
            alarm: rule.name.clone(),
            state: transition.as_str().to_owned(),
            queue,
            value,
            threshold: rule.when.threshold,
            at: now.to_rfc3339(),
            text,
            id: format!("{}-{}", rule.name, stored.transitions),
        };
        stored.undelivered.push_back(Undelivered {
            body,
            to: rule.notify.clone(),
            attempts: 0,
            next_at: now.as_millis(),
            at: now.as_millis(),
        });
        if stored.undelivered.len() > MAX_UNDELIVERED
            && let Some(dropped) = stored.undelivered.pop_front()
        {
            tracing::error!(alarm = %rule.name, id = %dropped.body.id, "too many undelivered transitions; dropped the oldest");
        }
    }
}

/// Sends the due transitions of an alarm, all webhooks at once; keeps what was not accepted.
async fn deliver(alarm: &mut Alarm, http: &reqwest::Client, now: Timestamp) {
    let name = alarm.rule.name.clone();
    let due: Vec<usize> = (0..alarm.stored.undelivered.len())
        .filter(|&i| alarm.stored.undelivered[i].next_at <= now.as_millis())
        .collect();
    if due.is_empty() {
        return;
    }
    let sends = due.iter().flat_map(|&i| {
        let item = &alarm.stored.undelivered[i];
        item.to.iter().map(move |url| async move { (i, url.clone(), webhook::send(http, url, &item.body).await) })
    });
    let results = futures_util::future::join_all(sends).await;
    for (i, url, result) in results {
        let item = &mut alarm.stored.undelivered[i];
        match result {
            Ok(()) => {
                tracing::info!(alarm = %name, id = %item.body.id, webhook = %webhook::redact(&url), "alarm transition delivered");
                item.to.retain(|u| *u != url);
            }
            Err(why) => tracing::warn!(
                alarm = %name, id = %item.body.id, webhook = %webhook::redact(&url), attempt = item.attempts + 1,
                "alarm webhook failed: {why}; will retry"
            ),
        }
    }
    for &i in &due {
        let item = &mut alarm.stored.undelivered[i];
        item.attempts += 1;
        item.next_at = now.as_millis() + webhook::retry_delay(item.attempts).as_millis() as i64;
    }
    let give_up = now.as_millis() - webhook::GIVE_UP_AFTER.as_millis() as i64;
    alarm.stored.undelivered.retain(|item| {
        if item.to.is_empty() {
            return false;
        }
        if item.at < give_up {
            tracing::error!(alarm = %name, id = %item.body.id, "alarm webhook failed for a day; giving up on this transition");
            return false;
        }
        true
    });
}

/// Evaluates every alarm each [`TICK`] while this node leads, until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    declared: Arc<Vec<AlarmRule>>,
    rates: Arc<Rates>,
    clock: Arc<dyn Clock>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let http = webhook::client();
    // What was last stored of each alarm, and when: unchanged states are not written again.
    let mut written: HashMap<String, (Stored, Timestamp)> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if !leading.load(Ordering::Relaxed) {
            written.clear();
            continue;
        }
        if let Err(err) = pass(&*store, &declared, &rates, &*clock, &http, &mut written).await {
            tracing::warn!(error = %err, "cannot evaluate alarms; will retry");
        }
    }
}

async fn pass(
    store: &dyn Store,
    declared: &[AlarmRule],
    rates: &Rates,
    clock: &dyn Clock,
    http: &reqwest::Client,
    written: &mut HashMap<String, (Stored, Timestamp)>,
) -> StoreResult<()> {
    let mut all = alarms(store, declared).await?;
    if all.is_empty() {
        return Ok(());
    }
    let figures = Figures { queues: store.queue_list().await?, workers: store.worker_list().await? };
    let now = clock.now();
    for alarm in &mut all {
        evaluate(alarm, &figures, rates, now);
    }
    // Every alarm's webhooks at once: a slow receiver delays the next tick by its timeout at
    // most, not once per alarm.
    futures_util::future::join_all(all.iter_mut().map(|alarm| deliver(alarm, http, now))).await;
    for alarm in &mut all {
        let name = &alarm.rule.name;
        let due = match written.get(name) {
            None => true,
            Some((last, at)) => {
                let mut values_aside = last.clone();
                for (queue, q) in &mut values_aside.queues {
                    if let Some(now_q) = alarm.stored.queues.get(queue) {
                        q.value = now_q.value;
                    }
                }
                values_aside != alarm.stored
                    || (last != &alarm.stored && now.millis_since(*at) >= VALUE_EVERY.as_millis() as u64)
            }
        };
        if due {
            let text = serde_json::to_string(&alarm.stored).unwrap_or_default();
            store.alarm_state_put(name.clone(), text, now).await?;
            written.insert(name.clone(), (alarm.stored.clone(), now));
        }
    }
    Ok(())
}

/// Whether `caller_sees` allows the alarm: its queue, or for `*` any queue the caller sees.
pub fn visible_queues(view: &mut AlarmView, sees: impl Fn(&str) -> bool) -> bool {
    if view.queue == "*" {
        view.queues.retain(|q| sees(&q.queue));
        view.history.retain(|p| sees(&p.queue));
        true
    } else {
        sees(&view.queue)
    }
}

/// A rule's queue, for a check of who may change it: `None` for `*`.
pub fn rule_queue(rule: &AlarmRule) -> Option<&QueueName> {
    match &rule.queue {
        Watched::Queue(q) => Some(q),
        Watched::Each => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::QueuePolicy;

    fn queue(name: &str, ready: u64) -> QueueInfo {
        let mut counts = [0; 6];
        counts[JobState::Ready.index()] = ready;
        QueueInfo {
            name: QueueName::parse(name).unwrap(),
            policy: QueuePolicy::default(),
            counts,
            oldest_ready_at: None,
        }
    }

    fn alarm(queue: &str, when: &str, notify: &[&str]) -> Alarm {
        let rule =
            AlarmRule::parse("a", queue, when, None, None, notify.iter().map(|s| s.to_string()).collect()).unwrap();
        Alarm { rule, source: Source::Config, stored: Stored::default() }
    }

    #[test]
    fn each_queue_fires_and_resolves_on_its_own_and_a_deleted_one_resolves() {
        let rates = Rates::default();
        let mut a = alarm("*", "ready > 2", &["http://h/x"]);
        let at = |s: i64| Timestamp::from_millis(s * 1000);
        let figures = |x: u64, y: u64| Figures { queues: vec![queue("x", x), queue("y", y)], workers: vec![] };
        evaluate(&mut a, &figures(5, 1), &rates, at(1));
        assert_eq!(a.view().state, "firing");
        assert_eq!(a.view().queues.iter().map(|q| q.state.as_str()).collect::<Vec<_>>(), vec!["firing", "ok"]);
        evaluate(&mut a, &figures(5, 9), &rates, at(2));
        evaluate(&mut a, &Figures { queues: vec![queue("y", 0)], workers: vec![] }, &rates, at(3));
        let sent: Vec<(String, String, String)> = a
            .stored
            .undelivered
            .iter()
            .map(|u| (u.body.queue.clone(), u.body.state.clone(), u.body.id.clone()))
            .collect();
        assert_eq!(
            sent,
            vec![
                ("x".into(), "firing".into(), "a-1".into()),
                ("y".into(), "firing".into(), "a-2".into()),
                ("x".into(), "resolved".into(), "a-3".into()),
                ("y".into(), "resolved".into(), "a-4".into()),
            ]
        );
        assert_eq!(a.view().state, "ok");
        assert_eq!(a.view().history.len(), 4);
        assert!(
            a.stored.undelivered[0].body.text.contains("[FIRING] a on queue x: ready is 5"),
            "{:?}",
            a.stored.undelivered[0]
        );
    }

    #[test]
    fn a_rule_without_webhooks_keeps_history_and_sends_nothing() {
        let rates = Rates::default();
        let mut a = alarm("x", "ready > 2", &[]);
        evaluate(&mut a, &Figures { queues: vec![queue("x", 5)], workers: vec![] }, &rates, Timestamp::from_millis(1));
        assert_eq!((a.view().state.as_str(), a.stored.history.len(), a.stored.undelivered.len()), ("firing", 1, 0));
    }
}
