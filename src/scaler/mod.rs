//! Pools of workers sized by [`crate::core::scaling`]'s policy.
//!
//! [`autoscaler`] runs on every node and acts on the leader's only: each second it observes
//! each pool (backlog of its queues, busy workers), decides, and has the pool's [`Provider`]
//! start or stop workers. A pool's state (desired count, cooldown clocks, last decision) lives
//! in the store, so a new leader goes on where the last stopped and every node shows the same
//! pools. [`simulate`] replays an arrival trace through the policy in virtual time, beside an
//! oracle and AWS-style target tracking, so a pool's parameters can be tried before any
//! worker runs.

pub mod autoscaler;
pub mod config;
#[cfg(feature = "ecs")]
pub mod ecs;
pub mod kubernetes;
pub mod process;
pub mod simulate;

use crate::store::WorkerInfo;

/// What a provider runs after applying a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Workers running or starting, not counting those draining.
    pub actual: u32,
    /// Workers asked to stop, finishing their jobs.
    pub draining: u32,
}

/// Starts and stops a pool's workers.
#[async_trait::async_trait]
pub trait Provider: Send + std::fmt::Debug {
    /// Moves the pool toward `desired` workers. A scale-in takes only idle workers: `workers`
    /// is the store's list, with each worker's running jobs.
    async fn apply(&mut self, desired: u32, workers: &[WorkerInfo]) -> anyhow::Result<Fleet>;

    /// Whether `worker` is one of this pool's (counted busy or idle for it).
    fn owns(&self, worker: &WorkerInfo) -> bool;

    /// This node stopped leading: hand the pool over (workers this node started itself are
    /// drained; a service or Deployment stays as it is, for the next leader).
    async fn release(&mut self);

    /// The server is stopping: as [`Provider::release`], waiting for local workers to finish.
    async fn stop(&mut self) {
        self.release().await;
    }
}
