//! Input validation: every limit on what a client may send, in one place.
//!
//! Each check names the offending field, so the HTTP layer can answer with a problem that says
//! which field is wrong and why, and nothing reaches a store unvalidated.

use std::collections::BTreeMap;

use super::job::NewJob;
use super::queue::QueueName;
use super::time::Timestamp;

/// A value a client sent is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field, as a path into the request (`priority`, `jobs[3].payload`).
    pub field: String,
    /// Why it is refused, lowercase, without a trailing period.
    pub reason: String,
    /// Refused for its size, not its value (HTTP 413 rather than 422).
    pub too_large: bool,
}

impl Invalid {
    /// A value out of range or of the wrong form.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into(), too_large: false }
    }

    /// A value over a size limit.
    pub fn too_large(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into(), too_large: true }
    }

    /// The same error for a field nested under `prefix` (`jobs[3]`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Size and range limits on requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, progress or result, in bytes of JSON text. Defaults to 256 KiB.
    pub max_payload_bytes: usize,
    /// Most jobs in one batch enqueue or one acknowledgement call. Defaults to 10,000.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_payload_bytes: 256 * 1024, max_batch: 10_000 }
    }
}

/// Largest `|priority|`.
pub const MAX_PRIORITY: i64 = 1_000_000;
/// Longest `delay_ms` (and `retry_in_ms`): one year. (`run_at` may be any time.)
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3_600_000;
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS: u64 = 1_000;
/// Longest per-attempt timeout: one week.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3_600_000;
/// Shortest lease.
pub const MIN_LEASE_MS: u64 = 100;
/// Longest lease: twelve hours, as SQS's visibility timeout.
pub const MAX_LEASE_MS: u64 = 12 * 3_600_000;
/// Longest long-poll of a lease request.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Most jobs one lease request may take.
pub const MAX_LEASE_BATCH: u64 = 1_000;
/// Longest kind, idempotency key, worker id or metadata key.
pub const MAX_NAME_LEN: usize = 256;
/// Most metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 4_096;
/// Longest error message kept per failed attempt; longer ones are cut (keeping the end, where
/// the cause usually is).
pub const MAX_ERROR_LEN: usize = 8_192;

/// A job as a client describes it, before validation.
#[derive(Clone, Debug, Default)]
pub struct JobSpec {
    /// The job type; required, 1–256 characters.
    pub kind: String,
    /// The payload as JSON text; `null` when absent.
    pub payload: Option<String>,
    /// Higher first; defaults to 0.
    pub priority: Option<i64>,
    /// Run after this many milliseconds.
    pub delay_ms: Option<i64>,
    /// Run at this RFC 3339 time.
    pub run_at: Option<String>,
    /// Attempts allowed, overriding the queue.
    pub max_attempts: Option<i64>,
    /// Per-attempt timeout.
    pub timeout_ms: Option<i64>,
    /// Deduplication key.
    pub idempotency_key: Option<String>,
    /// String map.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl JobSpec {
    /// Checks every field and builds the job to insert on `queue`.
    pub fn validate(self, queue: &QueueName, limits: &Limits, now: Timestamp) -> Result<NewJob, Invalid> {
        let kind = name("kind", self.kind)?;
        let payload = self.payload.unwrap_or_else(|| "null".to_owned());
        json_size("payload", &payload, limits)?;
        let priority = match self.priority {
            None => 0,
            Some(p) if p.abs() <= MAX_PRIORITY => p as i32,
            Some(_) => {
                return Err(Invalid::new("priority", format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")));
            }
        };
        let run_at = match (self.delay_ms, self.run_at) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new("run_at", "give delay_ms or run_at, not both"));
            }
            (Some(delay), None) => Some(now.plus_millis(range("delay_ms", delay, 0, MAX_DELAY_MS)?)),
            (None, Some(text)) => {
                let at = Timestamp::parse_rfc3339(&text)
                    .map_err(|e| Invalid::new("run_at", format!("not an RFC 3339 time: {e}")))?;
                // A time in the past means "now"; keep it so FIFO order reflects it.
                Some(at)
            }
            (None, None) => None,
        };
        let max_attempts =
            self.max_attempts.map(|n| range("max_attempts", n, 1, MAX_ATTEMPTS)).transpose()?.map(|n| n as u32);
        let timeout_ms = self.timeout_ms.map(|n| range("timeout_ms", n, 1, MAX_TIMEOUT_MS)).transpose()?;
        let idempotency_key = self.idempotency_key.map(|k| name("idempotency_key", k)).transpose()?;
        let metadata = self.metadata.unwrap_or_default();
        metadata_limits(&metadata)?;
        Ok(NewJob {
            queue: queue.clone(),
            kind,
            payload,
            priority,
            run_at,
            max_attempts,
            timeout_ms,
            idempotency_key,
            metadata,
        })
    }
}

/// A non-empty string of at most [`MAX_NAME_LEN`] characters, without control characters: a
/// kind or key travels into environment variables, headers and log lines, where a NUL byte or
/// a newline cannot go (an exec worker could never run a kind with a NUL in it).
pub fn name(field: &str, value: String) -> Result<String, Invalid> {
    if value.is_empty() {
        Err(Invalid::new(field, "must not be empty"))
    } else if value.chars().count() > MAX_NAME_LEN {
        Err(Invalid::new(field, format!("must be at most {MAX_NAME_LEN} characters")))
    } else if let Some(c) = value.chars().find(|c| c.is_control()) {
        Err(Invalid::new(field, format!("must not contain control characters (found {c:?})")))
    } else {
        Ok(value)
    }
}

/// Most characters of a client's input echoed back in an error message.
pub const MAX_ECHO_LEN: usize = 64;

/// `text` as an error message shows it: quoted, and cut to [`MAX_ECHO_LEN`] characters, so a
/// 64 KB id does not come back in the answer.
pub fn echo(text: &str) -> String {
    if text.chars().count() <= MAX_ECHO_LEN {
        format!("{text:?}")
    } else {
        let kept: String = text.chars().take(MAX_ECHO_LEN).collect();
        format!("{kept:?}… ({} bytes)", text.len())
    }
}

/// An integer within `[min, max]`.
pub fn range(field: &str, value: i64, min: u64, max: u64) -> Result<u64, Invalid> {
    match u64::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Invalid::new(field, format!("must be between {min} and {max}"))),
    }
}

/// JSON text within the payload size limit.
pub fn json_size(field: &str, text: &str, limits: &Limits) -> Result<(), Invalid> {
    if text.len() > limits.max_payload_bytes {
        Err(Invalid::too_large(
            field,
            format!("is {} bytes, over the limit of {} bytes", text.len(), limits.max_payload_bytes),
        ))
    } else {
        Ok(())
    }
}

fn metadata_limits(metadata: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Invalid::new("metadata", format!("must have at most {MAX_METADATA_ENTRIES} entries")));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > MAX_NAME_LEN || key.chars().any(char::is_control) {
            return Err(Invalid::new(
                "metadata",
                format!("key {} must be 1 to {MAX_NAME_LEN} characters, none of them control characters", echo(key)),
            ));
        }
        // Values become environment variables of exec handlers (TRACEPARENT), which cannot hold NUL.
        if value.contains('\0') {
            return Err(Invalid::new(format!("metadata.{key}"), "must not contain a NUL character"));
        }
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(Invalid::new(
                format!("metadata.{key}"),
                format!("must be at most {MAX_METADATA_VALUE_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// Cuts an error message to [`MAX_ERROR_LEN`] bytes, keeping its end.
pub fn truncate_error(message: String) -> String {
    if message.len() <= MAX_ERROR_LEN {
        return message;
    }
    let mut start = message.len() - MAX_ERROR_LEN;
    while !message.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &message[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueName {
        QueueName::parse("pdf").unwrap()
    }

    fn spec() -> JobSpec {
        JobSpec { kind: "render".into(), ..JobSpec::default() }
    }

    fn check(spec: JobSpec) -> Result<NewJob, Invalid> {
        spec.validate(&queue(), &Limits::default(), Timestamp::from_millis(1_800_000_000_000))
    }

    #[test]
    fn defaults_fill_in() {
        let job = check(spec()).unwrap();
        assert_eq!(job.payload, "null");
        assert_eq!(job.priority, 0);
        assert_eq!(job.run_at, None);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(JobSpec, &str)> = vec![
            (JobSpec { kind: String::new(), ..spec() }, "kind"),
            (JobSpec { priority: Some(MAX_PRIORITY + 1), ..spec() }, "priority"),
            (JobSpec { delay_ms: Some(-1), ..spec() }, "delay_ms"),
            (JobSpec { delay_ms: Some(1), run_at: Some("2026-01-01T00:00:00Z".into()), ..spec() }, "run_at"),
            (JobSpec { run_at: Some("tomorrow".into()), ..spec() }, "run_at"),
            (JobSpec { max_attempts: Some(0), ..spec() }, "max_attempts"),
            (JobSpec { timeout_ms: Some(i64::MAX), ..spec() }, "timeout_ms"),
            (JobSpec { idempotency_key: Some(String::new()), ..spec() }, "idempotency_key"),
            (JobSpec { kind: "render\0".into(), ..spec() }, "kind"),
            (JobSpec { idempotency_key: Some("a\nb".into()), ..spec() }, "idempotency_key"),
        ];
        for (spec, field) in cases {
            let err = check(spec).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(!err.too_large);
        }
    }

    #[test]
    fn oversized_payload_is_too_large() {
        let big = format!("\"{}\"", "x".repeat(256 * 1024));
        let err = check(JobSpec { payload: Some(big), ..spec() }).unwrap_err();
        assert_eq!(err.field, "payload");
        assert!(err.too_large);
    }

    #[test]
    fn echoes_are_cut() {
        assert_eq!(echo("abc"), "\"abc\"");
        let long = echo(&"x".repeat(65_536));
        assert!(long.len() < 100 && long.ends_with("(65536 bytes)"), "{long}");
    }

    #[test]
    fn long_errors_keep_their_end() {
        let msg = format!("{}the cause", "x".repeat(MAX_ERROR_LEN * 2));
        let cut = truncate_error(msg);
        assert!(cut.ends_with("the cause"));
        assert!(cut.len() <= MAX_ERROR_LEN + '…'.len_utf8());
    }
}
