//! Tables for people, JSON for scripts.

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, ContentArrangement, Table};
use serde::Serialize;

/// A borderless table with a header row.
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(headers.iter().map(Cell::new));
    table
}

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A timestamp shortened for a table: the date is dropped when it is today (UTC).
pub fn when(rfc3339: &str) -> String {
    let today = crate::core::Timestamp::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
    )
    .to_rfc3339();
    match (rfc3339.get(..10), today.get(..10), rfc3339.get(11..19)) {
        (Some(day), Some(now), Some(time)) if day == now => time.to_owned(),
        (Some(day), _, Some(time)) => format!("{day} {time}"),
        _ => rfc3339.to_owned(),
    }
}

/// Text cut to `max` characters with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ⏎ ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let kept: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}
