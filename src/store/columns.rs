//! Column encodings both stores share: job metadata and attempt errors as JSON text.

use std::collections::BTreeMap;

use crate::core::{AttemptError, Timestamp};

pub(crate) fn metadata_to(metadata: &BTreeMap<String, String>) -> Option<String> {
    if metadata.is_empty() { None } else { serde_json::to_string(metadata).ok() }
}

pub(crate) fn metadata_from(text: Option<String>) -> BTreeMap<String, String> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// The `errors` column: a JSON array of `{at, attempt, message}`, one per failed attempt.
pub(crate) fn errors_from(text: Option<String>) -> Vec<AttemptError> {
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
