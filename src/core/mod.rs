//! The domain core: jobs, queues, leases, backoff, the state machine, and who may do what.
//!
//! Everything here is pure: no I/O, no clock reads except through [`time::Clock`], no
//! randomness except through an injected generator. Stores, the HTTP layer and the CLI build on
//! these types; this module imports none of them.
//!
//! Core types are not `Serialize`: the wire format lives in [`crate::api`], so the JSON shape can
//! change without touching the rules.

pub mod alarm;
pub mod auth;
pub mod backoff;
pub mod id;
pub mod job;
pub mod lease;
pub mod queue;
pub mod scaling;
pub mod state;
pub mod time;
pub mod validate;

pub use backoff::Backoff;
pub use id::{IdGenerator, JobId, LeaseToken};
pub use job::{AttemptError, Job, JobState, NewJob};
pub use queue::{QueueName, QueuePolicy, QueuePolicyPatch};
pub use time::{Clock, Timestamp};
pub use validate::{Invalid, Limits};
