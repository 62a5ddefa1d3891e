//! Fault injection for wharf, in the spirit of Jepsen: run the real server and real workers
//! under a nemesis, record what every client saw, and check the history against the
//! guarantees of `docs/RELIABILITY.md`.
//!
//! # Layout
//!
//! - [`cluster`]: the processes — one `wharf serve` (or several nodes on one PostgreSQL),
//!   several `wharf worker`s whose handler records every execution — and how to kill, pause,
//!   stop and restart them.
//! - [`run`](run()): producers enqueue with idempotency keys and retry unknown outcomes, the
//!   nemesis injects faults, then everything drains and the final state is read.
//! - [`history`]: what was recorded, parsed from the producers, the handlers' execution log and
//!   the workers' logs.
//! - [`checker`]: the properties, each with its counterexample when it fails.

pub mod checker;
pub mod cluster;
pub mod history;
mod runner;

pub use checker::{Verdict, check};
pub use history::History;
pub use runner::{Backend, Config, crash_after_acknowledgements, run, stale_worker};
