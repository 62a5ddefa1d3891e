//! The autoscaling loop: observe, decide, apply, record — each second, for each pool, on the
//! leader.
//!
//! Caveats: during a failover both the old and the new leader may run a tick; each applies the
//! same decision, and providers set counts (never add to them), so nothing doubles. A pool's
//! backlog counts the jobs of its queues, so two pools sharing a queue both see all of it.
//!
//! Options: the pools (`[[pool]]` in the config file). Metrics: `wharf_pool_desired_workers`
//! and `wharf_pool_actual_workers`, from the stored state on every node. Logs: every decision
//! with its inputs (backlog, busy, actual, needed, reason): at info when it changes `desired`,
//! at debug when it holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Provider;
use super::config::{PoolConfig, ProviderConfig};
use super::process::{ProcessEnv, Processes};
use crate::api::{PoolDecisionView, PoolView};
use crate::core::scaling::{Observation, ScaleReason, ScaleState, decide, queue_backlog};
use crate::core::{Clock, Timestamp};
use crate::store::{PoolRecord, Store, WorkerInfo};

/// How often each pool is looked at.
pub const TICK: Duration = Duration::from_secs(1);

/// A stored state older than this, of a pool no node declares any more, is not shown.
const FORGET_AFTER_MS: u64 = 60_000;

/// A pool as the store keeps it: what the API shows, and what the next decision needs.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    view: PoolView,
    state: StoredState,
}

/// [`ScaleState`] in milliseconds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredState {
    desired: u32,
    scaled_out_at: Option<i64>,
    scaled_in_at: Option<i64>,
    surplus: Option<(i64, u32)>,
    #[serde(default)]
    empty_since: Option<i64>,
}

impl From<ScaleState> for StoredState {
    fn from(s: ScaleState) -> Self {
        StoredState {
            desired: s.desired,
            scaled_out_at: s.scaled_out_at.map(Timestamp::as_millis),
            scaled_in_at: s.scaled_in_at.map(Timestamp::as_millis),
            surplus: s.surplus.map(|(at, peak)| (at.as_millis(), peak)),
            empty_since: s.empty_since.map(Timestamp::as_millis),
        }
    }
}

impl From<&StoredState> for ScaleState {
    fn from(s: &StoredState) -> Self {
        ScaleState {
            desired: s.desired,
            scaled_out_at: s.scaled_out_at.map(Timestamp::from_millis),
            scaled_in_at: s.scaled_in_at.map(Timestamp::from_millis),
            surplus: s.surplus.map(|(at, peak)| (Timestamp::from_millis(at), peak)),
            empty_since: s.empty_since.map(Timestamp::from_millis),
        }
    }
}

/// A pool's view before the leader first looked at it.
pub fn initial_view(pool: &PoolConfig) -> PoolView {
    let policy = &pool.policy;
    PoolView {
        name: pool.name.clone(),
        provider: pool.provider.kind().to_owned(),
        queues: pool.queues.iter().map(ToString::to_string).collect(),
        min: policy.min(),
        max: policy.max(),
        target_backlog_per_worker: policy.target_backlog_per_worker(),
        scale_out_cooldown_ms: policy.scale_out_cooldown().as_millis() as u64,
        scale_in_cooldown_ms: policy.scale_in_cooldown().as_millis() as u64,
        backlog: 0,
        desired: 0,
        actual: 0,
        busy: 0,
        idle: 0,
        draining: 0,
        reason: ScaleReason::Steady.as_str().to_owned(),
        last_change: None,
        error: None,
        updated_at: None,
    }
}

/// Every pool as the API shows it: the ones this node declares (as last stored, or not yet
/// looked at), and those another node's leader stored lately.
pub async fn views(
    store: &dyn Store,
    declared: &[PoolConfig],
    now: Timestamp,
) -> crate::store::StoreResult<Vec<PoolView>> {
    let mut views: Vec<PoolView> = declared.iter().map(initial_view).collect();
    for record in store.pool_list().await? {
        let Ok(stored) = serde_json::from_str::<Stored>(&record.state) else { continue };
        match views.iter_mut().find(|v| v.name == record.name) {
            Some(view) => *view = stored.view,
            None if now.millis_since(record.updated_at) < FORGET_AFTER_MS => views.push(stored.view),
            None => {}
        }
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(views)
}

/// A pool and its provider on this node.
struct Pool {
    config: PoolConfig,
    provider: Box<dyn Provider>,
    /// Loaded from the store when this node starts leading; `None` while it does not.
    state: Option<ScaleState>,
    view: PoolView,
}

/// Builds each pool's provider; refuses a provider this build cannot run.
pub async fn providers(
    pools: &[PoolConfig],
    env: &ProcessEnv,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Vec<Box<dyn Provider>>> {
    let mut providers: Vec<Box<dyn Provider>> = Vec::with_capacity(pools.len());
    for pool in pools {
        providers.push(provider(pool, env, store).await?);
    }
    Ok(providers)
}

/// The provider of one pool.
async fn provider(pool: &PoolConfig, env: &ProcessEnv, store: &Arc<dyn Store>) -> anyhow::Result<Box<dyn Provider>> {
    match &pool.provider {
        ProviderConfig::Process { command } => {
            Ok(Box::new(Processes::new(&pool.name, command.clone(), env.clone(), Arc::clone(store))))
        }
        ProviderConfig::Kubernetes { namespace, deployment } => {
            let deployment = super::kubernetes::Deployment::in_cluster(namespace.as_deref(), deployment)
                .map_err(|e| anyhow::anyhow!("pool {}: the kubernetes provider: {e:#}", pool.name))?;
            Ok(Box::new(deployment))
        }
        #[cfg(feature = "ecs")]
        ProviderConfig::Ecs { cluster, service, region } => {
            Ok(Box::new(super::ecs::Service::connect(cluster, service, region.as_deref()).await))
        }
        #[cfg(not(feature = "ecs"))]
        ProviderConfig::Ecs { .. } => anyhow::bail!(
            "pool {}: the ecs provider is not part of this build of wharf (build it with --features ecs)",
            pool.name
        ),
    }
}

/// Runs until `shutdown`, then stops the pools' local workers (waiting for their jobs).
pub async fn run(
    store: Arc<dyn Store>,
    pools: Vec<(PoolConfig, Box<dyn Provider>)>,
    clock: Arc<dyn Clock>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut pools: Vec<Pool> = pools
        .into_iter()
        .map(|(config, provider)| Pool { view: initial_view(&config), config, provider, state: None })
        .collect();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        if !leading.load(Ordering::Relaxed) {
            for pool in pools.iter_mut().filter(|p| p.state.is_some()) {
                tracing::info!(pool = %pool.config.name, "no longer leading: handing the pool over");
                pool.state = None;
                pool.provider.release().await;
            }
            continue;
        }
        // One look at the workers serves every pool.
        let workers = match store.worker_list().await {
            Ok(workers) => workers,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the workers; no scaling this second");
                continue;
            }
        };
        for pool in &mut pools {
            if let Err(err) = tick_pool(&*store, pool, &workers, clock.now()).await {
                tracing::warn!(pool = %pool.config.name, error = %err, "cannot scale the pool this second");
            }
        }
    }
    for pool in &mut pools {
        pool.provider.stop().await;
    }
}

/// One look at one pool.
async fn tick_pool(store: &dyn Store, pool: &mut Pool, workers: &[WorkerInfo], now: Timestamp) -> anyhow::Result<()> {
    let state = match pool.state {
        Some(state) => state,
        None => {
            // Leading anew: go on from what the last leader stored.
            let stored = store
                .pool_list()
                .await?
                .into_iter()
                .find(|r| r.name == pool.config.name)
                .and_then(|r| serde_json::from_str::<Stored>(&r.state).ok());
            if let Some(stored) = &stored {
                pool.view.last_change = stored.view.last_change.clone();
            }
            let state = stored.map(|s| ScaleState::from(&s.state)).unwrap_or_default();
            tracing::info!(pool = %pool.config.name, desired = state.desired, "leading: scaling the pool");
            state
        }
    };
    let backlog: u64 = store
        .queue_backlog(pool.config.queues.clone())
        .await?
        .iter()
        .map(|q| queue_backlog(q.ready, q.running, q.policy.paused, q.policy.concurrency, q.policy.rate))
        .sum();
    let ours = |w: &&WorkerInfo| pool.provider.owns(w) || w.queues.iter().any(|q| pool.config.queues.contains(q));
    let (mut busy, mut idle) = (0u32, 0u32);
    for worker in workers.iter().filter(ours).filter(|w| !w.draining) {
        if worker.running > 0 { busy += 1 } else { idle += 1 }
    }
    let decision = decide(&pool.config.policy, state, Observation { backlog, busy }, now);
    if decision.desired == state.desired {
        tracing::debug!(
            pool = %pool.config.name, desired = decision.desired, needed = decision.needed,
            reason = decision.reason.as_str(), backlog, busy, actual = pool.view.actual, "holding"
        );
    } else {
        tracing::info!(
            pool = %pool.config.name, from = state.desired, desired = decision.desired, needed = decision.needed,
            reason = decision.reason.as_str(), backlog, busy, actual = pool.view.actual, "scaling"
        );
        pool.view.last_change = Some(PoolDecisionView {
            at: now.to_rfc3339(),
            from: state.desired,
            desired: decision.desired,
            needed: decision.needed,
            reason: decision.reason.as_str().to_owned(),
            backlog,
            busy,
        });
    }
    pool.state = Some(decision.state);
    let applied = pool.provider.apply(decision.desired, workers).await;
    let view = &mut pool.view;
    view.backlog = backlog;
    view.desired = decision.desired;
    view.busy = busy;
    view.idle = idle;
    view.reason = decision.reason.as_str().to_owned();
    match applied {
        Ok(fleet) => {
            view.actual = fleet.actual;
            view.draining = fleet.draining;
            view.error = None;
        }
        Err(err) => {
            if view.error.is_none() {
                tracing::warn!(pool = %pool.config.name, error = %err, "the provider failed; retrying each second");
            }
            view.error = Some(format!("{err:#}"));
        }
    }
    view.updated_at = Some(now.to_rfc3339());
    let stored = Stored { view: view.clone(), state: decision.state.into() };
    let state = serde_json::to_string(&stored)?;
    store.pool_put(PoolRecord { name: pool.config.name.clone(), state, updated_at: now }).await?;
    Ok(())
}
