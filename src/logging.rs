//! Log output for `wharf serve`, `wharf worker` and programs built on the worker library.
//!
//! Lines go to standard error through `tracing`. `WHARF_LOG` (or `RUST_LOG`) filters them, e.g.
//! `WHARF_LOG=wharf=debug`; the default is `info`. Colours are used only when standard error is
//! a terminal and `NO_COLOR` is unset, so log files hold plain text.

use std::io::IsTerminal as _;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One compact line per event, for people.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is not pretty or json")),
        }
    }
}

/// Installs the log subscriber for the whole process. A second call changes nothing.
///
/// A program that runs a [`Worker`](crate::worker::Worker) calls this first (or installs its own
/// `tracing` subscriber) to see the worker's lines: started, connected, one per job outcome.
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("WHARF_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
