//! Pools of workers scaled by [`crate::core::scaling`]'s policy. [`simulate`] replays an
//! arrival trace through the policy in virtual time, beside an oracle and AWS-style target
//! tracking, so a pool's parameters can be tried before any worker runs.

pub mod simulate;
