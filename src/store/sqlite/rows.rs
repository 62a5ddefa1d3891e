//! Reading rows back into core types.

use rusqlite::Row;

use crate::core::{Job, JobId, JobState, LeaseToken, QueueName, Timestamp};
use crate::store::JobSummary;
pub(super) use crate::store::columns::{errors_from, metadata_from, metadata_to};

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

/// The lease token in columns `seq` and `secret` (a 16-byte big-endian blob, or NULL for a
/// token from before secrets).
pub(super) fn lease_token(row: &Row<'_>, seq: usize, secret: usize) -> rusqlite::Result<Option<LeaseToken>> {
    let Some(raw) = row.get::<_, Option<i64>>(seq)? else { return Ok(None) };
    let secret = match row.get::<_, Option<Vec<u8>>>(secret)? {
        None => 0,
        Some(bytes) => u128::from_be_bytes(bytes.try_into().map_err(|_| corrupt(secret, "lease secret"))?),
    };
    Ok(Some(LeaseToken::from_parts(raw, secret)))
}

/// A lease secret as stored.
pub(super) fn secret_bytes(token: LeaseToken) -> Option<[u8; 16]> {
    (token.secret() != 0).then(|| token.secret().to_be_bytes())
}

/// A token from `TOKEN_ALL`'s columns.
pub(super) fn token(row: &Row<'_>) -> rusqlite::Result<crate::store::TokenRecord> {
    let role: String = row.get(2)?;
    let queues: Option<String> = row.get(3)?;
    let patterns: Vec<String> = match queues {
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt(3, "token queues"))?,
        None => Vec::new(),
    };
    let hash: Vec<u8> = row.get(5)?;
    Ok(crate::store::TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: role.parse().map_err(|_| corrupt(2, "token role"))?,
        queues: crate::core::auth::QueuePatterns::parse(&patterns).map_err(|_| corrupt(3, "token queues"))?,
        rate: row.get(4)?,
        hash: hash.try_into().map_err(|_| corrupt(5, "token hash"))?,
        created_at: ts(row, 6)?,
    })
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
        lease_token: lease_token(row, 16, 23)?,
        lease_expires_at: opt_ts(row, 17)?,
        worker_id: row.get(18)?,
        created_at: ts(row, 19)?,
        started_at: opt_ts(row, 20)?,
        finished_at: opt_ts(row, 21)?,
        version: row.get::<_, i64>(22)?.max(0) as u64,
    })
}
