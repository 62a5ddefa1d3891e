//! Alarms: rules on a queue's figures, and the state machine that turns a rule's observations
//! into `firing` and `resolved` transitions.
//!
//! A rule holds when its condition (`figure op number`) is true of the latest observation. It
//! fires once it has held without a break for its `for` duration, and resolves the first time
//! it no longer holds. Each change of state is one [`Transition`]: what a webhook is told.

use std::fmt;
use std::time::Duration;

use super::QueueName;
use super::time::Timestamp;
use super::validate::Invalid;

/// Most webhooks one rule notifies.
pub const MAX_NOTIFY: usize = 10;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest `for`.
pub const MAX_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest `window` of rates: what the server keeps of each queue's recent attempts.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Default `window` of rates.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// A figure of a queue that a rule can watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Figure {
    /// Jobs ready to run.
    Ready,
    /// Jobs waiting for their time (delayed or backing off).
    Scheduled,
    /// Jobs running now.
    Running,
    /// Dead jobs.
    Dead,
    /// Seconds the oldest ready job has waited; 0 with none ready.
    OldestReadyAgeS,
    /// Failed attempts ÷ finished attempts (succeeded or failed) over the rule's window; 0
    /// when none finished.
    FailureRate,
    /// Connected workers that lease from the queue.
    Workers,
}

impl Figure {
    /// Every figure, in the order the docs list them.
    pub const ALL: [Figure; 7] = [
        Figure::Ready,
        Figure::Scheduled,
        Figure::Running,
        Figure::Dead,
        Figure::OldestReadyAgeS,
        Figure::FailureRate,
        Figure::Workers,
    ];

    /// Its name in a condition.
    pub const fn as_str(self) -> &'static str {
        match self {
            Figure::Ready => "ready",
            Figure::Scheduled => "scheduled",
            Figure::Running => "running",
            Figure::Dead => "dead",
            Figure::OldestReadyAgeS => "oldest_ready_age_s",
            Figure::FailureRate => "failure_rate",
            Figure::Workers => "workers",
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    const ALL: [Op; 6] = [Op::Ge, Op::Le, Op::Eq, Op::Ne, Op::Gt, Op::Lt];

    /// How it is written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// `figure op number`, e.g. `dead > 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    /// What is compared.
    pub figure: Figure,
    /// How.
    pub op: Op,
    /// With what.
    pub threshold: f64,
}

impl Condition {
    /// Parses `figure op number`; spaces around the operator are optional.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bad = |why: String| Invalid::new("when", why);
        let text = text.trim();
        let Some((at, op)) = text
            .char_indices()
            .find_map(|(i, _)| Op::ALL.into_iter().find(|op| text[i..].starts_with(op.as_str())).map(|op| (i, op)))
        else {
            return Err(bad(format!(
                "condition {} has no comparison; write `figure op number`, op one of > >= < <= == !=",
                super::validate::echo(text)
            )));
        };
        let name = text[..at].trim();
        let figure = Figure::ALL.into_iter().find(|f| f.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = Figure::ALL.iter().map(|f| f.as_str()).collect();
            bad(format!("unknown figure {}; one of {}", super::validate::echo(name), names.join(", ")))
        })?;
        let number = text[at + op.as_str().len()..].trim();
        let threshold = number
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| bad(format!("threshold {} is not a number", super::validate::echo(number))))?;
        Ok(Condition { figure, op, threshold })
    }

    /// Whether `value` meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.figure.as_str(), self.op.as_str(), self.threshold)
    }
}

/// Which queues a rule watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// One queue.
    Queue(QueueName),
    /// Each queue separately (`"*"`): one state per queue.
    Each,
}

impl Watched {
    /// A queue name, or `*`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text == "*" { Ok(Watched::Each) } else { QueueName::parse(text).map(Watched::Queue) }
    }

    /// Whether it watches `queue`.
    pub fn covers(&self, queue: &QueueName) -> bool {
        match self {
            Watched::Queue(q) => q == queue,
            Watched::Each => true,
        }
    }
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Watched::Queue(q) => q.fmt(f),
            Watched::Each => f.write_str("*"),
        }
    }
}

/// A validated alarm rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmRule {
    /// Its name: 1–128 of `A-Z a-z 0-9 . _ -`, like a queue's.
    pub name: String,
    /// The queue, or each queue.
    pub queue: Watched,
    /// When it holds.
    pub when: Condition,
    /// How long it must hold before it fires.
    pub for_: Duration,
    /// The window of rates.
    pub window: Duration,
    /// Webhook URLs (`http` or `https`), each told of every transition.
    pub notify: Vec<String>,
}

impl AlarmRule {
    /// Validates a rule's parts as written (the config file and `PUT /v1/alarms/{name}`).
    pub fn parse(
        name: &str,
        queue: &str,
        when: &str,
        for_: Option<&str>,
        window: Option<&str>,
        notify: Vec<String>,
    ) -> Result<Self, Invalid> {
        let name = QueueName::parse(name)
            .map_err(|e| Invalid::new("name", e.reason.replace("queue name", "alarm name")))?
            .as_str()
            .to_owned();
        let duration = |field: &'static str, text: Option<&str>, default: Duration, max: Duration| match text {
            None => Ok(default),
            Some(text) => super::time::parse_duration(text).map_err(|e| Invalid::new(field, e)).and_then(|d| {
                if d > max {
                    Err(Invalid::new(field, format!("{field} must be at most {}", humantime::format_duration(max))))
                } else {
                    Ok(d)
                }
            }),
        };
        let for_ = duration("for", for_, Duration::ZERO, MAX_FOR)?;
        let window = duration("window", window, DEFAULT_WINDOW, MAX_WINDOW)?;
        if window.is_zero() {
            return Err(Invalid::new("window", "window must be longer than zero"));
        }
        if notify.len() > MAX_NOTIFY {
            return Err(Invalid::new("notify", format!("at most {MAX_NOTIFY} webhooks per alarm")));
        }
        for url in &notify {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > MAX_URL_LEN || url.chars().any(char::is_whitespace) {
                return Err(Invalid::new(
                    "notify",
                    format!(
                        "webhook {} must be an http or https URL of at most {MAX_URL_LEN} bytes",
                        super::validate::echo(url)
                    ),
                ));
            }
        }
        Ok(AlarmRule { name, queue: Watched::parse(queue)?, when: Condition::parse(when)?, for_, window, notify })
    }
}

/// Whether a rule (for one queue) is firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmStatus {
    /// Not firing.
    Ok,
    /// Firing.
    Firing,
}

impl AlarmStatus {
    /// `ok` or `firing`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlarmStatus::Ok => "ok",
            AlarmStatus::Firing => "firing",
        }
    }
}

/// A rule's state for one queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlarmState {
    /// Firing or not.
    pub status: AlarmStatus,
    /// When it entered `status` (when first observed, for a rule never firing).
    pub since: Timestamp,
    /// Since when the condition has held without a break, while not yet firing.
    pub holding_since: Option<Timestamp>,
    /// The latest observed value.
    pub value: f64,
}

impl AlarmState {
    /// The state of a rule first observed at `now`.
    pub fn new(now: Timestamp) -> Self {
        AlarmState { status: AlarmStatus::Ok, since: now, holding_since: None, value: 0.0 }
    }
}

/// A change of state: what a webhook is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It began firing.
    Fired,
    /// It stopped firing.
    Resolved,
}

impl Transition {
    /// `firing` or `resolved`, as a webhook body says.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transition::Fired => "firing",
            Transition::Resolved => "resolved",
        }
    }
}

/// Applies one observation of `value` at `now` to a rule's state; answers the transition it
/// makes, if any. Firing needs the condition to have held for `for_` without a break;
/// resolving happens at the first observation where it no longer holds.
pub fn observe(
    state: &mut AlarmState,
    when: &Condition,
    for_: Duration,
    value: f64,
    now: Timestamp,
) -> Option<Transition> {
    state.value = value;
    let holds = when.holds(value);
    match state.status {
        AlarmStatus::Ok if holds => {
            let start = *state.holding_since.get_or_insert(now);
            if now.millis_since(start) >= for_.as_millis() as u64 {
                state.status = AlarmStatus::Firing;
                state.since = now;
                state.holding_since = None;
                return Some(Transition::Fired);
            }
            None
        }
        AlarmStatus::Ok => {
            state.holding_since = None;
            None
        }
        AlarmStatus::Firing if holds => None,
        AlarmStatus::Firing => {
            state.status = AlarmStatus::Ok;
            state.since = now;
            Some(Transition::Resolved)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn conditions_parse_with_or_without_spaces_and_refuse_what_is_not_one() {
        let c = Condition::parse("dead > 0").unwrap();
        assert_eq!((c.figure, c.op, c.threshold), (Figure::Dead, Op::Gt, 0.0));
        let c = Condition::parse("failure_rate>=0.25").unwrap();
        assert_eq!((c.figure, c.op, c.threshold), (Figure::FailureRate, Op::Ge, 0.25));
        let c = Condition::parse(" workers == 0 ").unwrap();
        assert_eq!((c.figure, c.op), (Figure::Workers, Op::Eq));
        assert_eq!(Condition::parse("ready <= 10").unwrap().op, Op::Le);
        assert_eq!(Condition::parse("ready != 10").unwrap().op, Op::Ne);
        for bad in ["dead", "dead > ", "deads > 1", "> 1", "dead > one", "dead > NaN", "dead > inf", ""] {
            let err = Condition::parse(bad).expect_err(bad);
            assert_eq!(err.field, "when", "{bad}");
        }
        assert!(Condition::parse("deads > 1").unwrap_err().reason.contains("oldest_ready_age_s"));
    }

    #[test]
    fn rules_validate_every_field() {
        let rule =
            AlarmRule::parse("pdf-dead", "pdf", "dead > 0", Some("30s"), None, vec!["https://h.example/x".into()])
                .unwrap();
        assert_eq!(rule.queue, Watched::Queue(QueueName::parse("pdf").unwrap()));
        assert_eq!((rule.for_, rule.window), (Duration::from_secs(30), DEFAULT_WINDOW));
        assert_eq!(AlarmRule::parse("a", "*", "ready > 1", None, None, vec![]).unwrap().queue, Watched::Each);
        let field = |r: Result<AlarmRule, Invalid>| r.unwrap_err().field;
        assert_eq!(field(AlarmRule::parse("a b", "q", "dead > 0", None, None, vec![])), "name");
        assert_eq!(field(AlarmRule::parse("a", "q q", "dead > 0", None, None, vec![])), "queue");
        assert_eq!(field(AlarmRule::parse("a", "q", "dead > 0", Some("soon"), None, vec![])), "for");
        assert_eq!(field(AlarmRule::parse("a", "q", "dead > 0", None, Some("0s"), vec![])), "window");
        assert_eq!(field(AlarmRule::parse("a", "q", "dead > 0", None, Some("2h"), vec![])), "window");
        assert_eq!(field(AlarmRule::parse("a", "q", "dead > 0", None, None, vec!["ftp://x".into()])), "notify");
        assert_eq!(field(AlarmRule::parse("a", "q", "dead > 0", None, None, vec!["http://x".into(); 11])), "notify");
    }

    #[test]
    fn a_rule_fires_once_it_held_for_its_duration_without_a_break() {
        let when = Condition::parse("ready > 5").unwrap();
        let for_ = Duration::from_secs(10);
        let mut s = AlarmState::new(at(0));
        assert_eq!(observe(&mut s, &when, for_, 6.0, at(0)), None);
        assert_eq!(observe(&mut s, &when, for_, 7.0, at(9)), None);
        // A break starts the wait over.
        assert_eq!(observe(&mut s, &when, for_, 5.0, at(10)), None);
        assert_eq!(observe(&mut s, &when, for_, 6.0, at(11)), None);
        assert_eq!(observe(&mut s, &when, for_, 6.0, at(20)), None);
        assert_eq!(observe(&mut s, &when, for_, 6.0, at(21)), Some(Transition::Fired));
        assert_eq!((s.status, s.since, s.value), (AlarmStatus::Firing, at(21), 6.0));
        // Firing stays quiet while it holds, and resolves at the first observation it does not.
        assert_eq!(observe(&mut s, &when, for_, 9.0, at(30)), None);
        assert_eq!(observe(&mut s, &when, for_, 1.0, at(31)), Some(Transition::Resolved));
        assert_eq!((s.status, s.since), (AlarmStatus::Ok, at(31)));
        assert_eq!(observe(&mut s, &when, for_, 1.0, at(32)), None);
    }

    #[test]
    fn a_rule_without_a_duration_fires_on_the_first_observation_that_holds() {
        let when = Condition::parse("dead > 0").unwrap();
        let mut s = AlarmState::new(at(0));
        assert_eq!(observe(&mut s, &when, Duration::ZERO, 0.0, at(1)), None);
        assert_eq!(observe(&mut s, &when, Duration::ZERO, 1.0, at(2)), Some(Transition::Fired));
    }
}
