//! Reading rows back into core types.

use std::collections::BTreeMap;

use rusqlite::Row;

use crate::core::{AttemptError, Job, JobId, JobState, LeaseToken, QueueName, Timestamp};
use crate::store::JobSummary;

/// A column held a value the schema does not allow: only reachable through a corrupt file or
/// another program writing to it.
fn corrupt(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.to_owned().into())
}

pub(super) fn state(row: &Row<'_>, column: usize) -> rusqlite::Result<JobState> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| corrupt(column, "unknown job state"))
}

pub(super) fn queue_name(row: &Row<'_>, column: usize) -> rusqlite::Result<QueueName> {
    let text: String = row.get(column)?;
    QueueName::parse(&text).map_err(|_| corrupt(column, "invalid queue name"))
}

fn ts(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    row.get(column).map(Timestamp::from_millis)
}

fn opt_ts(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(column)?.map(Timestamp::from_millis))
}

fn opt_u32(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<u32>> {
    Ok(row.get::<_, Option<i64>>(column)?.map(|v| v.clamp(0, i64::from(u32::MAX)) as u32))
}

pub(super) fn metadata_from(text: Option<String>) -> BTreeMap<String, String> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

pub(super) fn metadata_to(metadata: &BTreeMap<String, String>) -> Option<String> {
    if metadata.is_empty() { None } else { serde_json::to_string(metadata).ok() }
}

fn errors_from(text: Option<String>) -> Vec<AttemptError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        at: i64,
        attempt: u32,
        message: String,
    }
    let entries: Vec<Entry> = text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    entries
        .into_iter()
        .map(|e| AttemptError { at: Timestamp::from_millis(e.at), attempt: e.attempt, message: e.message })
        .collect()
}

/// A row of `summary_columns!()`.
pub(super) fn summary(row: &Row<'_>) -> rusqlite::Result<JobSummary> {
    Ok(JobSummary {
        id: JobId::from_raw(row.get(0)?),
        queue: queue_name(row, 1)?,
        kind: row.get(2)?,
        state: state(row, 3)?,
        priority: row.get(4)?,
        run_at: ts(row, 5)?,
        attempt: row.get(6)?,
        max_attempts: opt_u32(row, 7)?,
        idempotency_key: row.get(8)?,
        created_at: ts(row, 9)?,
        finished_at: opt_ts(row, 10)?,
    })
}

/// A row of `JOB_GET`; `max_attempts` resolves a missing override with the queue's policy.
pub(super) fn job(row: &Row<'_>, queue_max_attempts: impl Fn(&QueueName) -> u32) -> rusqlite::Result<Job> {
    let queue = queue_name(row, 1)?;
    let max_attempts = opt_u32(row, 8)?.unwrap_or_else(|| queue_max_attempts(&queue));
    Ok(Job {
        id: JobId::from_raw(row.get(0)?),
        queue,
        kind: row.get(2)?,
        payload: row.get(3)?,
        priority: row.get(4)?,
        state: state(row, 5)?,
        run_at: ts(row, 6)?,
        attempt: row.get(7)?,
        max_attempts,
        timeout_ms: row.get::<_, Option<i64>>(9)?.map(|v| v.max(0) as u64),
        idempotency_key: row.get(10)?,
        metadata: metadata_from(row.get(11)?),
        progress: row.get(12)?,
        result: row.get(13)?,
        errors: errors_from(row.get(14)?),
        cancel_requested: row.get(15)?,
        lease_token: row.get::<_, Option<i64>>(16)?.map(LeaseToken::from_raw),
        lease_expires_at: opt_ts(row, 17)?,
        worker_id: row.get(18)?,
        created_at: ts(row, 19)?,
        started_at: opt_ts(row, 20)?,
        finished_at: opt_ts(row, 21)?,
        version: row.get::<_, i64>(22)?.max(0) as u64,
    })
}
