//! Tables for people, JSON for scripts.
//!
//! Everything goes through [`outln!`](crate::outln), which returns the write's error instead of
//! panicking as `println!` does: `wharf job ID | head -1` closes the pipe under us, and `main`
//! ends quietly on that error, as other Unix tools do.

use std::io::IsTerminal as _;

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, ContentArrangement, Table};
use serde::Serialize;

/// `println!` that returns an `io::Result` instead of panicking on a closed pipe.
#[macro_export]
#[doc(hidden)]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// True when standard output is a terminal (a person is reading, not a script).
pub fn is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The terminal's width in columns, when standard output is one.
pub fn terminal_width() -> Option<usize> {
    if !is_terminal() {
        return None;
    }
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
}

/// A borderless table with a header row; on a terminal its columns shrink (and wrap) to fit.
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    let arrangement = match terminal_width() {
        Some(width) => {
            table.set_width(u16::try_from(width).unwrap_or(u16::MAX));
            ContentArrangement::Dynamic
        }
        None => ContentArrangement::Disabled,
    };
    table.load_preset(NOTHING).set_content_arrangement(arrangement);
    table.set_header(headers.iter().map(Cell::new));
    table
}

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A timestamp shortened for a table: the date is dropped when it is today (UTC).
pub fn when(rfc3339: &str) -> String {
    let today = crate::core::Timestamp::from_millis(now_millis()).to_rfc3339();
    match (rfc3339.get(..10), today.get(..10), rfc3339.get(11..19)) {
        (Some(day), Some(now), Some(time)) if day == now => time.to_owned(),
        (Some(day), _, Some(time)) => format!("{day} {time}"),
        _ => rfc3339.to_owned(),
    }
}

/// How long ago `rfc3339` was, the way people read an age: `45s`, `3m12s`, `2h05m`, `3d4h`.
pub fn age(rfc3339: &str) -> String {
    match crate::core::Timestamp::parse_rfc3339(rfc3339) {
        Ok(at) => short_duration(crate::core::Timestamp::from_millis(now_millis()).millis_since(at) / 1000),
        Err(_) => rfc3339.to_owned(),
    }
}

/// Seconds as `45s`, `3m12s`, `2h05m` or `3d4h`: two units at most.
pub fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3_600..86_400 => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3_600),
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

/// True when `err` (or any error under it) is a write to a pipe whose reader has gone.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_two_units_at_most() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(59), "59s");
        assert_eq!(short_duration(192), "3m12s");
        assert_eq!(short_duration(3_600 * 2 + 5 * 60 + 9), "2h05m");
        assert_eq!(short_duration(86_400 * 3 + 3_600 * 4 + 1), "3d4h");
    }

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::new(io).context("printing the table");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
