//! Test-only failpoints: switches that break a guarantee on purpose, so the tests can show
//! the fault-injection checker catches the breakage.
//!
//! Compiled only with the `fault-injection` feature (this crate's own tests enable it; release
//! builds never have it) and read from `WHARF_FAILPOINTS`, a comma-separated list:
//!
//! - `skip_fencing`: accept completions, failures and heartbeats with any token of a running
//!   job — the bug fencing exists to prevent. Both checks are off: memory's, and the database's
//!   match on the presented token (the row is matched with the token it holds).
//! - `ack_before_commit`: answer writers before their transaction commits — the bug group
//!   commit must not have.
//! - `slow_commit`: hold every commit for half a second, so a crash can land between an
//!   answer and its commit (harmless alone: answers still wait for the commit).

/// A failpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPoint {
    /// Accept stale lease tokens.
    SkipFencing,
    /// Answer before the commit.
    AckBeforeCommit,
    /// Hold every commit for half a second.
    SlowCommit,
}

impl FailPoint {
    fn name(self) -> &'static str {
        match self {
            FailPoint::SkipFencing => "skip_fencing",
            FailPoint::AckBeforeCommit => "ack_before_commit",
            FailPoint::SlowCommit => "slow_commit",
        }
    }

    /// True when this failpoint is switched on (never without the `fault-injection` feature).
    pub fn active(self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            static ACTIVE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let list = ACTIVE.get_or_init(|| std::env::var("WHARF_FAILPOINTS").unwrap_or_default());
            list.split(',').any(|name| name.trim() == self.name())
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = self.name();
            false
        }
    }
}
