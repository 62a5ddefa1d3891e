//! The store conformance suite: every rule of the semantics contract, as one test each, run
//! against every [`Store`] implementation through [`store_conformance_suite!`].
//!
//! Each test gets a fresh store and a [`ManualClock`]; time moves only when a test advances it
//! and calls [`Store::maintain`], so lease expiry and backoff are tested without sleeping.

use std::sync::Arc;
use std::time::Duration;

use crate::core::Clock as _;
use crate::core::time::ManualClock;
use crate::core::{JobId, JobState, LeaseToken, NewJob, QueueName, QueuePolicyPatch, Timestamp};
use crate::events::{EventBus, EventKind};
use crate::store::{
    DeadRedriveParams, JobAckParams, JobCompleteParams, JobFailParams, JobLeaseParams, JobListParams, JobReleaseParams,
    LeaseHeartbeatParams, LeasedJob, PoolRecord, Store, StoreError, WorkerPresence,
};

/// The clock's start in every test: 2026-01-01T00:00:00Z.
pub const START: Timestamp = Timestamp::from_millis(1_767_225_600_000);

/// Reopens a store on the same data with the given clock and bus.
pub type Reopen =
    Box<dyn Fn(&ManualClock, Arc<EventBus>) -> futures_util::future::BoxFuture<'static, Arc<dyn Store>> + Send + Sync>;

/// What a test gets: a store, its clock, its event bus, and a way to reopen it.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Its clock.
    pub clock: ManualClock,
    /// Its event bus.
    pub events: Arc<EventBus>,
    /// Closes the store and opens it again on the same data.
    pub reopen: Reopen,
    /// Keeps the backend's files alive for the test.
    pub _guard: Box<dyn std::any::Any + Send + Sync>,
}

/// Expands to one `#[tokio::test]` per conformance test, for a backend built by `$make`
/// (an `async fn() -> Harness`).
macro_rules! store_conformance_suite {
    ($make:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let harness = $make().await;
                crate::store::conformance::$test(&harness).await;
                harness.store.close().await;
            }
        )*
    };
    ($make:path) => {
        store_conformance_suite!($make;
            enqueue_then_get_returns_the_job,
            idempotent_enqueue_returns_the_first_job,
            lease_order_is_priority_then_fifo,
            a_lease_takes_the_best_across_queues_within_its_bytes,
            a_lease_from_limited_queues_takes_the_best_within_its_bytes,
            a_job_is_leased_to_one_worker_at_a_time,
            stale_tokens_are_refused_and_change_nothing,
            a_token_with_the_wrong_secret_is_refused_and_changes_nothing,
            lease_expiry_counts_an_attempt,
            release_does_not_count_an_attempt,
            retries_follow_the_backoff_bounds,
            dead_after_max_attempts,
            non_retryable_failure_is_dead_at_once,
            redrive_resets_attempts,
            redrive_with_a_live_job_changes_nothing,
            delayed_jobs_wait_for_their_time,
            cancel_of_a_waiting_job_is_immediate,
            cancel_of_a_running_job_reaches_the_worker,
            cancel_of_a_finished_job_is_refused,
            paused_queues_hand_out_nothing,
            concurrency_limits_running_jobs,
            heartbeats_extend_the_lease_and_record_progress,
            long_poll_answers_when_a_job_arrives,
            long_poll_times_out_empty,
            ack_items_stand_alone,
            listing_is_newest_first_with_cursors,
            prune_deletes_only_finished_jobs_past_retention,
            events_follow_each_committed_change,
            reopen_keeps_jobs_leases_and_queues,
            metrics_count_what_happened,
            workers_are_listed_with_their_running_jobs,
            a_worker_asked_to_drain_gets_no_more_jobs,
            a_parked_lease_of_a_worker_asked_to_drain_ends_at_once,
            a_worker_that_leaves_is_gone_at_once,
            backlog_counts_ready_and_running_jobs_with_the_policy,
            pool_state_is_kept_by_name,
            alarm_rules_and_states_are_kept_apart,
            the_oldest_ready_job_is_found_across_priorities,
        );
    };
}
pub(crate) use store_conformance_suite;

fn q(name: &str) -> QueueName {
    QueueName::parse(name).expect("test queue names are valid")
}

/// A listing of `queue`: every state, no filter, ten from the newest.
fn listing(queue: &str) -> JobListParams {
    JobListParams {
        queue: q(queue),
        state: None,
        kind: None,
        error: None,
        from: None,
        scan: None,
        limit: 10,
        cursor: None,
    }
}

pub(crate) fn job(queue: &str, kind: &str) -> NewJob {
    NewJob {
        queue: q(queue),
        kind: kind.to_owned(),
        payload: r#"{"n":1}"#.to_owned(),
        priority: 0,
        run_at: None,
        max_attempts: None,
        timeout_ms: None,
        idempotency_key: None,
        metadata: Default::default(),
    }
}

async fn enqueue(h: &Harness, new: NewJob) -> JobId {
    h.store.job_insert(new).await.expect("enqueue").job.id
}

/// A lease of up to `max` jobs from `queue` by worker `w1`, answered at once.
pub(crate) fn lease_params(queue: &str, max: u32) -> JobLeaseParams {
    JobLeaseParams {
        worker_id: "w1".into(),
        presence: Default::default(),
        queues: vec![q(queue)],
        max,
        wait: Duration::ZERO,
        lease_ms: None,
        max_bytes: usize::MAX,
    }
}

async fn lease(h: &Harness, queue: &str, max: u32) -> Vec<LeasedJob> {
    h.store.job_lease(lease_params(queue, max)).await.expect("lease")
}

async fn lease_one(h: &Harness, queue: &str) -> LeasedJob {
    let mut jobs = lease(h, queue, 1).await;
    assert_eq!(jobs.len(), 1, "expected one job from {queue}");
    jobs.remove(0)
}

async fn state(h: &Harness, id: JobId) -> JobState {
    h.store.job_get(id).await.expect("get").state
}

async fn advance(h: &Harness, by: Duration) {
    h.clock.advance(by);
    h.store.maintain().await.expect("maintain");
}

async fn set_policy(h: &Harness, queue: &str, patch: QueuePolicyPatch) {
    h.store.queue_upsert(q(queue), patch).await.expect("policy");
}

async fn fail(h: &Harness, leased: &LeasedJob, retryable: bool) -> crate::store::Settled {
    h.store
        .job_fail(JobFailParams {
            id: leased.id,
            lease_token: leased.lease_token,
            error: "boom".into(),
            retryable,
            retry_in_ms: None,
        })
        .await
        .expect("fail")
}

pub async fn enqueue_then_get_returns_the_job(h: &Harness) {
    let mut new = job("pdf", "render");
    new.metadata.insert("traceparent".into(), "00-abc-def-01".into());
    new.timeout_ms = Some(5_000);
    let inserted = h.store.job_insert(new).await.unwrap();
    assert!(inserted.created);
    assert_eq!(inserted.job.state, JobState::Ready);
    let got = h.store.job_get(inserted.job.id).await.unwrap();
    assert_eq!(got.kind, "render");
    assert_eq!(got.payload, r#"{"n":1}"#);
    assert_eq!(got.metadata.get("traceparent").map(String::as_str), Some("00-abc-def-01"));
    assert_eq!(got.timeout_ms, Some(5_000));
    assert_eq!(got.max_attempts, 3, "the queue's default");
    assert_eq!(got.attempt, 0);
    assert_eq!(got.created_at, START);
    let unknown = JobId::from_raw(inserted.job.id.raw() + 1);
    assert_eq!(h.store.job_get(unknown).await, Err(StoreError::JobNotFound(unknown)));
}

pub async fn idempotent_enqueue_returns_the_first_job(h: &Harness) {
    let mut first = job("pdf", "render");
    first.idempotency_key = Some("order-42".into());
    let a = h.store.job_insert(first.clone()).await.unwrap();
    let b = h.store.job_insert(first.clone()).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.job.id, b.job.id);
    // The same key for another payload or kind is a mistake, not a repeat: refused, naming
    // the job that holds the key, and nothing is created.
    let mut other_payload = first.clone();
    other_payload.payload = r#"{"different":true}"#.into();
    let mut other_kind = first.clone();
    other_kind.kind = "thumbnail".into();
    for conflicting in [other_payload.clone(), other_kind] {
        assert_eq!(
            h.store.job_insert(conflicting).await,
            Err(StoreError::IdempotencyConflict { existing: a.job.id, key: "order-42".into() })
        );
    }
    let refused = h.store.job_insert_batch(vec![job("pdf", "fresh"), other_payload]).await;
    assert!(matches!(refused, Err(StoreError::IdempotencyConflict { .. })), "{refused:?}");
    assert_eq!(
        h.store.queue_get(q("pdf")).await.unwrap().counts[JobState::Ready.index()],
        1,
        "the batch wrote nothing"
    );
    // The same key in a batch, and on another queue.
    let batch = h.store.job_insert_batch(vec![first.clone(), first.clone()]).await.unwrap();
    assert!(batch.iter().all(|i| !i.created && i.job.id == a.job.id));
    let mut other_queue = first;
    other_queue.queue = q("other");
    assert!(h.store.job_insert(other_queue).await.unwrap().created, "keys are per queue");
    let info = h.store.queue_get(q("pdf")).await.unwrap();
    assert_eq!(info.counts[JobState::Ready.index()], 1, "nothing else was created");
    assert_eq!(h.store.job_get(a.job.id).await.unwrap().payload, r#"{"n":1}"#);
}

pub async fn lease_order_is_priority_then_fifo(h: &Harness) {
    let low_old = enqueue(h, job("q", "a")).await;
    h.clock.advance(Duration::from_millis(1));
    let mut high = job("q", "b");
    high.priority = 10;
    let high = enqueue(h, high).await;
    h.clock.advance(Duration::from_millis(1));
    let low_new = enqueue(h, job("q", "c")).await;
    let mut negative = job("q", "d");
    negative.priority = -5;
    let negative = enqueue(h, negative).await;
    let order: Vec<JobId> = lease(h, "q", 10).await.iter().map(|j| j.id).collect();
    assert_eq!(order, vec![high, low_old, low_new, negative]);
}

pub async fn a_lease_takes_the_best_across_queues_within_its_bytes(h: &Harness) {
    lease_the_best_within_bytes(h).await;
}

/// The same with a concurrency limit on each queue (a store may lease limited queues another way).
pub async fn a_lease_from_limited_queues_takes_the_best_within_its_bytes(h: &Harness) {
    for queue in ["a", "b"] {
        set_policy(h, queue, QueuePolicyPatch { concurrency: Some(Some(100)), ..Default::default() }).await;
    }
    lease_the_best_within_bytes(h).await;
}

async fn lease_the_best_within_bytes(h: &Harness) {
    let mut big = job("a", "big");
    big.payload = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1_000));
    let big = enqueue(h, big).await;
    h.clock.advance(Duration::from_millis(1));
    let mut urgent = job("b", "urgent");
    urgent.priority = 5;
    let urgent = enqueue(h, urgent).await;
    let small = enqueue(h, job("b", "small")).await;
    let lease_ms = 7_000;
    let ask = |max_bytes| JobLeaseParams {
        queues: vec![q("a"), q("b")],
        max_bytes,
        lease_ms: Some(lease_ms),
        ..lease_params("a", 10)
    };
    let mut taken = Vec::new();
    // Best first across the queues; the job whose payload reaches the bound is the last one
    // (`{"n":1}` is 7 bytes), and the first always goes, however large.
    for max_bytes in [7, 8, usize::MAX] {
        let jobs = h.store.job_lease(ask(max_bytes)).await.expect("lease");
        assert!(jobs.iter().all(|j| j.attempt == 1 && j.lease_expires_at == h.clock.now().plus_millis(lease_ms)));
        taken.push(jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    }
    assert_eq!(taken, vec![vec![urgent], vec![big], vec![small]]);
}

pub async fn a_job_is_leased_to_one_worker_at_a_time(h: &Harness) {
    for _ in 0..5 {
        enqueue(h, job("q", "k")).await;
    }
    let a = lease(h, "q", 3).await;
    let b = lease(h, "q", 3).await;
    assert_eq!((a.len(), b.len()), (3, 2));
    let mut ids: Vec<JobId> = a.iter().chain(&b).map(|j| j.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no job handed out twice");
    assert!(lease(h, "q", 1).await.is_empty());
    assert!(a.iter().all(|j| j.attempt == 1 && j.lease_expires_at == START.plus_millis(30_000)));
}

pub async fn stale_tokens_are_refused_and_change_nothing(h: &Harness) {
    set_policy(
        h,
        "q",
        QueuePolicyPatch {
            lease_ms: Some(1_000),
            backoff_base_ms: Some(0),
            backoff_cap_ms: Some(0),
            ..Default::default()
        },
    )
    .await;
    let id = enqueue(h, job("q", "k")).await;
    let first = lease_one(h, "q").await;
    advance(h, Duration::from_millis(1_000)).await;
    let second = lease_one(h, "q").await;
    assert_eq!(second.id, id);
    assert!(second.lease_token > first.lease_token, "tokens increase across leases");
    let before = h.store.job_get(id).await.unwrap();
    let stale = |state| StoreError::StaleLease { id, state };
    let complete =
        h.store.job_complete(JobCompleteParams { id, lease_token: first.lease_token, result: Some("1".into()) }).await;
    assert_eq!(complete, Err(stale(JobState::Running)));
    let beat = h
        .store
        .lease_heartbeat(LeaseHeartbeatParams {
            id,
            lease_token: first.lease_token,
            extend_ms: None,
            progress: Some("{}".into()),
        })
        .await;
    assert_eq!(beat, Err(stale(JobState::Running)));
    assert_eq!(
        h.store.job_release(JobReleaseParams { id, lease_token: first.lease_token }).await,
        Err(stale(JobState::Running))
    );
    let failed = h
        .store
        .job_fail(JobFailParams {
            id,
            lease_token: first.lease_token,
            error: "x".into(),
            retryable: false,
            retry_in_ms: None,
        })
        .await;
    assert_eq!(failed, Err(stale(JobState::Running)));
    assert_eq!(h.store.job_get(id).await.unwrap(), before, "nothing changed");
    // The current token still works, and after completion even it is stale.
    h.store.job_complete(JobCompleteParams { id, lease_token: second.lease_token, result: None }).await.unwrap();
    let late = h.store.job_complete(JobCompleteParams { id, lease_token: second.lease_token, result: None }).await;
    assert_eq!(late, Err(stale(JobState::Succeeded)));
    let unknown = JobId::from_raw(id.raw() + 1);
    let missing =
        h.store.job_complete(JobCompleteParams { id: unknown, lease_token: second.lease_token, result: None }).await;
    assert_eq!(missing, Err(StoreError::JobNotFound(unknown)));
}

pub async fn a_token_with_the_wrong_secret_is_refused_and_changes_nothing(h: &Harness) {
    let id = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    let token = leased.lease_token;
    assert_ne!(token.secret(), 0, "leases carry a secret");
    // The lease's own sequence number, with another secret or none: whoever can read or guess
    // the sequence still cannot act on the job.
    let forged = [LeaseToken::from_parts(token.raw(), token.secret() ^ 1), LeaseToken::from_raw(token.raw())];
    let before = h.store.job_get(id).await.unwrap();
    let stale = StoreError::StaleLease { id, state: JobState::Running };
    for wrong in forged {
        let complete = h.store.job_complete(JobCompleteParams { id, lease_token: wrong, result: None }).await;
        assert_eq!(complete, Err(stale.clone()));
        let failed = h
            .store
            .job_fail(JobFailParams { id, lease_token: wrong, error: "x".into(), retryable: false, retry_in_ms: None })
            .await;
        assert_eq!(failed, Err(stale.clone()));
        let beat = h
            .store
            .lease_heartbeat(LeaseHeartbeatParams {
                id,
                lease_token: wrong,
                extend_ms: Some(60_000),
                progress: Some("{}".into()),
            })
            .await;
        assert_eq!(beat, Err(stale.clone()));
        let released = h.store.job_release(JobReleaseParams { id, lease_token: wrong }).await;
        assert_eq!(released, Err(stale.clone()));
        let acked = h
            .store
            .job_ack(JobAckParams {
                complete: vec![JobCompleteParams { id, lease_token: wrong, result: None }],
                fail: Vec::new(),
            })
            .await
            .unwrap();
        assert_eq!(acked.complete, vec![Err(stale.clone())]);
    }
    assert_eq!(h.store.job_get(id).await.unwrap(), before, "nothing changed");
    let settled = h.store.job_complete(JobCompleteParams { id, lease_token: token, result: None }).await.unwrap();
    assert_eq!(settled.state, JobState::Succeeded, "the lease's own token still works");
}

pub async fn lease_expiry_counts_an_attempt(h: &Harness) {
    set_policy(
        h,
        "q",
        QueuePolicyPatch {
            lease_ms: Some(1_000),
            max_attempts: Some(2),
            backoff_base_ms: Some(0),
            backoff_cap_ms: Some(0),
            ..Default::default()
        },
    )
    .await;
    let id = enqueue(h, job("q", "k")).await;
    lease_one(h, "q").await;
    advance(h, Duration::from_millis(999)).await;
    assert_eq!(state(h, id).await, JobState::Running, "not before the deadline");
    advance(h, Duration::from_millis(1)).await;
    let after = h.store.job_get(id).await.unwrap();
    assert_eq!(after.state, JobState::Ready);
    assert_eq!(after.attempt, 1);
    assert_eq!(after.errors.len(), 1);
    assert_eq!(after.errors[0].message, "lease expired");
    let again = lease_one(h, "q").await;
    assert_eq!(again.attempt, 2);
    advance(h, Duration::from_millis(1_000)).await;
    assert_eq!(state(h, id).await, JobState::Dead, "the second expiry used the last attempt");
}

pub async fn release_does_not_count_an_attempt(h: &Harness) {
    let id = enqueue(h, job("q", "k")).await;
    let other = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    assert_eq!((leased.id, leased.attempt), (id, 1));
    let settled = h.store.job_release(JobReleaseParams { id, lease_token: leased.lease_token }).await.unwrap();
    assert_eq!(settled.state, JobState::Ready);
    let job = h.store.job_get(id).await.unwrap();
    assert_eq!((job.state, job.attempt, job.errors.len()), (JobState::Ready, 0, 0));
    let again = lease_one(h, "q").await;
    assert_eq!((again.id, again.attempt), (id, 1), "released job keeps its place in line");
    assert_ne!(again.id, other);
}

pub async fn retries_follow_the_backoff_bounds(h: &Harness) {
    set_policy(
        h,
        "q",
        QueuePolicyPatch {
            max_attempts: Some(10),
            backoff_base_ms: Some(1_000),
            backoff_factor: Some(2.0),
            backoff_cap_ms: Some(5_000),
            ..Default::default()
        },
    )
    .await;
    let id = enqueue(h, job("q", "k")).await;
    for attempt in 1..=4u32 {
        let leased = lease_one(h, "q").await;
        assert_eq!(leased.attempt, attempt);
        let now = h.clock.now();
        let settled = fail(h, &leased, true).await;
        let ceiling = (1_000u64 << (attempt - 1)).min(5_000);
        let run_at = settled.run_at.expect("retry time");
        assert!(
            run_at >= now && run_at <= now.plus_millis(ceiling),
            "attempt {attempt}: {run_at} not in [{now}, +{ceiling}ms]"
        );
        let expected = if run_at > now { JobState::Scheduled } else { JobState::Ready };
        assert_eq!(state(h, id).await, expected);
        advance(h, Duration::from_millis(ceiling)).await;
        assert_eq!(state(h, id).await, JobState::Ready);
    }
    // A worker-chosen delay overrides the backoff.
    let leased = lease_one(h, "q").await;
    let now = h.clock.now();
    let settled = h
        .store
        .job_fail(JobFailParams {
            id,
            lease_token: leased.lease_token,
            error: "rate limited".into(),
            retryable: true,
            retry_in_ms: Some(60_000),
        })
        .await
        .unwrap();
    assert_eq!(settled.run_at, Some(now.plus_millis(60_000)));
}

pub async fn dead_after_max_attempts(h: &Harness) {
    set_policy(h, "q", QueuePolicyPatch { backoff_base_ms: Some(0), backoff_cap_ms: Some(0), ..Default::default() })
        .await;
    let id = enqueue(h, job("q", "k")).await;
    for attempt in 1..=3 {
        let leased = lease_one(h, "q").await;
        let settled = fail(h, &leased, true).await;
        let expected = if attempt < 3 { JobState::Ready } else { JobState::Dead };
        assert_eq!(settled.state, expected, "after attempt {attempt}");
    }
    let dead = h.store.job_get(id).await.unwrap();
    assert_eq!((dead.attempt, dead.errors.len()), (3, 3));
    assert!(dead.finished_at.is_some());
    assert!(lease(h, "q", 1).await.is_empty());
    let page = h.store.job_list(JobListParams { state: Some(JobState::Dead), ..listing("q") }).await.unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    // Found by the text of its errors, whatever the case; not by text they lack.
    let by_error = |text: &str| {
        h.store.job_list(JobListParams { state: Some(JobState::Dead), error: Some(text.into()), ..listing("q") })
    };
    assert_eq!(by_error("BOO").await.unwrap().jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert!(by_error("smtp").await.unwrap().jobs.is_empty());
    // A job's own limit overrides the queue's.
    let mut once = job("q", "once");
    once.max_attempts = Some(1);
    enqueue(h, once).await;
    let leased = lease_one(h, "q").await;
    assert_eq!(leased.max_attempts, 1);
    assert_eq!(fail(h, &leased, true).await.state, JobState::Dead);
}

pub async fn non_retryable_failure_is_dead_at_once(h: &Harness) {
    let id = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    assert_eq!(fail(h, &leased, false).await.state, JobState::Dead);
    assert_eq!(h.store.job_get(id).await.unwrap().attempt, 1);
}

pub async fn redrive_resets_attempts(h: &Harness) {
    let a = enqueue(h, job("q", "k")).await;
    let b = enqueue(h, job("q", "k")).await;
    for _ in 0..2 {
        let leased = lease_one(h, "q").await;
        fail(h, &leased, false).await;
    }
    let moved = h.store.dead_redrive(DeadRedriveParams { queue: q("q"), ids: Some(vec![b]) }).await.unwrap();
    assert_eq!(moved, vec![b]);
    assert_eq!(state(h, a).await, JobState::Dead);
    let job = h.store.job_get(b).await.unwrap();
    assert_eq!((job.state, job.attempt, job.finished_at), (JobState::Ready, 0, None));
    assert_eq!(job.errors.len(), 1, "the history of failures is kept");
    assert_eq!(lease_one(h, "q").await.attempt, 1);
    let all = h.store.dead_redrive(DeadRedriveParams { queue: q("q"), ids: None }).await.unwrap();
    assert_eq!(all, vec![a]);
    assert_eq!(h.store.queue_get(q("q")).await.unwrap().counts[JobState::Dead.index()], 0);
}

pub async fn redrive_with_a_live_job_changes_nothing(h: &Harness) {
    let dead = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    fail(h, &leased, false).await;
    let ready = enqueue(h, job("q", "k")).await;
    let refused = h.store.dead_redrive(DeadRedriveParams { queue: q("q"), ids: Some(vec![dead, ready]) }).await;
    assert!(matches!(refused, Err(StoreError::Illegal { id, .. }) if id == ready));
    assert_eq!(state(h, dead).await, JobState::Dead, "nothing was redriven");
    let elsewhere = enqueue(h, job("other", "k")).await;
    let refused = h.store.dead_redrive(DeadRedriveParams { queue: q("q"), ids: Some(vec![elsewhere]) }).await;
    assert_eq!(refused, Err(StoreError::JobNotFound(elsewhere)));
    let unknown = h.store.dead_redrive(DeadRedriveParams { queue: q("nope"), ids: None }).await;
    assert_eq!(unknown, Err(StoreError::QueueNotFound(q("nope"))));
}

pub async fn delayed_jobs_wait_for_their_time(h: &Harness) {
    let mut delayed = job("q", "k");
    delayed.run_at = Some(START.plus_millis(5_000));
    let inserted = h.store.job_insert(delayed).await.unwrap();
    assert_eq!(inserted.job.state, JobState::Scheduled);
    assert!(lease(h, "q", 1).await.is_empty());
    advance(h, Duration::from_millis(4_999)).await;
    assert!(lease(h, "q", 1).await.is_empty());
    advance(h, Duration::from_millis(1)).await;
    assert_eq!(lease_one(h, "q").await.id, inserted.job.id);
    // A time in the past is ready at once.
    let mut past = job("q", "k");
    past.run_at = Some(START);
    assert_eq!(h.store.job_insert(past).await.unwrap().job.state, JobState::Ready);
}

pub async fn cancel_of_a_waiting_job_is_immediate(h: &Harness) {
    let ready = enqueue(h, job("q", "k")).await;
    let mut later = job("q", "k");
    later.run_at = Some(START.plus_millis(10_000));
    let scheduled = enqueue(h, later).await;
    for id in [ready, scheduled] {
        let canceled = h.store.job_cancel(id).await.unwrap();
        assert_eq!((canceled.state, canceled.cancel_requested), (JobState::Canceled, false));
    }
    advance(h, Duration::from_millis(10_000)).await;
    assert!(lease(h, "q", 5).await.is_empty(), "canceled jobs are never handed out");
    assert_eq!(h.store.job_cancel(ready).await.unwrap().state, JobState::Canceled, "cancel is idempotent");
}

pub async fn cancel_of_a_running_job_reaches_the_worker(h: &Harness) {
    let id = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    let canceled = h.store.job_cancel(id).await.unwrap();
    assert_eq!((canceled.state, canceled.cancel_requested), (JobState::Running, true));
    let beat = h
        .store
        .lease_heartbeat(LeaseHeartbeatParams { id, lease_token: leased.lease_token, extend_ms: None, progress: None })
        .await
        .unwrap();
    assert!(beat.cancel_requested);
    // The worker stops the handler and reports; the job ends canceled, not retried.
    assert_eq!(fail(h, &leased, true).await.state, JobState::Canceled);
    // A released canceled job ends canceled too.
    let id2 = enqueue(h, job("q", "k")).await;
    let leased2 = lease_one(h, "q").await;
    h.store.job_cancel(id2).await.unwrap();
    let released = h.store.job_release(JobReleaseParams { id: id2, lease_token: leased2.lease_token }).await.unwrap();
    assert_eq!(released.state, JobState::Canceled);
}

pub async fn cancel_of_a_finished_job_is_refused(h: &Harness) {
    let id = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    h.store.job_complete(JobCompleteParams { id, lease_token: leased.lease_token, result: None }).await.unwrap();
    assert!(matches!(h.store.job_cancel(id).await, Err(StoreError::Illegal { .. })));
    assert_eq!(state(h, id).await, JobState::Succeeded);
}

pub async fn paused_queues_hand_out_nothing(h: &Harness) {
    enqueue(h, job("q", "k")).await;
    set_policy(h, "q", QueuePolicyPatch { paused: Some(true), ..Default::default() }).await;
    enqueue(h, job("q", "k")).await;
    assert!(lease(h, "q", 5).await.is_empty());
    set_policy(h, "q", QueuePolicyPatch { paused: Some(false), ..Default::default() }).await;
    assert_eq!(lease(h, "q", 5).await.len(), 2);
}

pub async fn concurrency_limits_running_jobs(h: &Harness) {
    set_policy(h, "q", QueuePolicyPatch { concurrency: Some(Some(2)), ..Default::default() }).await;
    for _ in 0..4 {
        enqueue(h, job("q", "k")).await;
    }
    let first = lease(h, "q", 4).await;
    assert_eq!(first.len(), 2);
    assert!(lease(h, "q", 4).await.is_empty());
    h.store
        .job_complete(JobCompleteParams { id: first[0].id, lease_token: first[0].lease_token, result: None })
        .await
        .unwrap();
    assert_eq!(lease(h, "q", 4).await.len(), 1);
}

pub async fn heartbeats_extend_the_lease_and_record_progress(h: &Harness) {
    set_policy(h, "q", QueuePolicyPatch { lease_ms: Some(1_000), ..Default::default() }).await;
    let id = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    for step in 1..=3 {
        advance(h, Duration::from_millis(800)).await;
        let progress = format!(r#"{{"step":{step}}}"#);
        let beat = h
            .store
            .lease_heartbeat(LeaseHeartbeatParams {
                id,
                lease_token: leased.lease_token,
                extend_ms: None,
                progress: Some(progress),
            })
            .await
            .unwrap();
        assert_eq!(beat.lease_expires_at, h.clock.now().plus_millis(1_000));
        assert!(!beat.cancel_requested);
    }
    advance(h, Duration::from_millis(800)).await;
    let job = h.store.job_get(id).await.unwrap();
    assert_eq!(job.state, JobState::Running, "kept alive past its first deadline");
    assert_eq!(job.progress.as_deref(), Some(r#"{"step":3}"#));
    let beat = h
        .store
        .lease_heartbeat(LeaseHeartbeatParams {
            id,
            lease_token: leased.lease_token,
            extend_ms: Some(60_000),
            progress: None,
        })
        .await
        .unwrap();
    assert_eq!(beat.lease_expires_at, h.clock.now().plus_millis(60_000));
    assert_eq!(
        h.store.job_get(id).await.unwrap().progress.as_deref(),
        Some(r#"{"step":3}"#),
        "no progress keeps the last"
    );
}

pub async fn long_poll_answers_when_a_job_arrives(h: &Harness) {
    let store = Arc::clone(&h.store);
    let waiting = tokio::spawn(async move {
        let mut params = lease_params("q", 1);
        params.wait = Duration::from_secs(30);
        store.job_lease(params).await
    });
    // Only enqueue once the lease is parked: its worker shows up in the metrics.
    for _ in 0..1_000 {
        if h.store.metrics().await.unwrap().workers_connected == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let id = enqueue(h, job("q", "k")).await;
    let leased = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered before its wait")
        .unwrap()
        .unwrap();
    assert_eq!(leased.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
}

pub async fn long_poll_times_out_empty(h: &Harness) {
    let mut params = lease_params("q", 1);
    params.wait = Duration::from_millis(50);
    let started = std::time::Instant::now();
    let jobs = h.store.job_lease(params).await.unwrap();
    assert!(jobs.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(50), "waited its full wait");
}

pub async fn ack_items_stand_alone(h: &Harness) {
    let a = enqueue(h, job("q", "k")).await;
    let b = enqueue(h, job("q", "k")).await;
    let c = enqueue(h, job("q", "k")).await;
    let leased = lease(h, "q", 3).await;
    let token = |id| leased.iter().find(|j| j.id == id).unwrap().lease_token;
    let wrong = leased.iter().find(|j| j.id == a).unwrap().lease_token;
    let acked = h
        .store
        .job_ack(JobAckParams {
            complete: vec![
                JobCompleteParams { id: a, lease_token: token(a), result: Some("true".into()) },
                JobCompleteParams { id: b, lease_token: wrong, result: None },
            ],
            fail: vec![JobFailParams {
                id: c,
                lease_token: token(c),
                error: "e".into(),
                retryable: false,
                retry_in_ms: None,
            }],
        })
        .await
        .unwrap();
    assert_eq!(acked.complete[0].as_ref().map(|s| s.state), Ok(JobState::Succeeded));
    assert_eq!(acked.complete[1], Err(StoreError::StaleLease { id: b, state: JobState::Running }));
    assert_eq!(acked.fail[0].as_ref().map(|s| s.state), Ok(JobState::Dead));
    assert_eq!(state(h, b).await, JobState::Running);
    assert_eq!(h.store.job_get(a).await.unwrap().result.as_deref(), Some("true"));
}

pub async fn listing_is_newest_first_with_cursors(h: &Harness) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(enqueue(h, job("q", if i % 2 == 0 { "even" } else { "odd" })).await);
    }
    let leased = lease_one(h, "q").await;
    assert_eq!(leased.id, ids[0]);
    let page = |cursor, limit| h.store.job_list(JobListParams { limit, cursor, ..listing("q") });
    let first = page(None, 2).await.unwrap();
    assert_eq!(first.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    let second = page(first.next_cursor, 2).await.unwrap();
    assert_eq!(second.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    let last = page(second.next_cursor, 2).await.unwrap();
    assert_eq!(last.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]], "across states");
    assert_eq!(last.next_cursor, None);
    let odd = h
        .store
        .job_list(JobListParams { state: Some(JobState::Ready), kind: Some("odd".into()), ..listing("q") })
        .await
        .unwrap();
    assert_eq!(odd.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[3], ids[1]]);
    // A lower bound (what a creation-time range becomes), with the upper one a cursor.
    let range =
        h.store.job_list(JobListParams { from: Some(ids[1]), cursor: Some(ids[4]), ..listing("q") }).await.unwrap();
    assert_eq!(range.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[3], ids[2], ids[1]]);
    // A bounded scan: two ready jobs examined per call, so a rare kind is found a page at a
    // time, each page ending where its scan did.
    let scanned = |cursor| {
        h.store.job_list(JobListParams {
            state: Some(JobState::Ready),
            kind: Some("odd".into()),
            scan: Some(2),
            cursor,
            ..listing("q")
        })
    };
    let first = scanned(None).await.unwrap();
    assert_eq!((first.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), first.next_cursor), (vec![ids[3]], Some(ids[3])));
    let second = scanned(first.next_cursor).await.unwrap();
    assert_eq!(
        (second.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), second.next_cursor),
        (vec![ids[1]], Some(ids[1]))
    );
    let last = scanned(second.next_cursor).await.unwrap();
    assert_eq!((last.jobs.len(), last.next_cursor), (0, None), "ids[0] is running, not ready");
    let missing = h.store.job_list(listing("nope")).await;
    assert_eq!(missing, Err(StoreError::QueueNotFound(q("nope"))));
}

pub async fn prune_deletes_only_finished_jobs_past_retention(h: &Harness) {
    set_policy(h, "q", QueuePolicyPatch { retention_ms: Some(60_000), ..Default::default() }).await;
    let done = enqueue(h, job("q", "k")).await;
    let waiting = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    h.store.job_complete(JobCompleteParams { id: done, lease_token: leased.lease_token, result: None }).await.unwrap();
    advance(h, Duration::from_millis(59_999)).await;
    assert_eq!(h.store.jobs_prune(100).await.unwrap(), 0, "not yet past retention");
    advance(h, Duration::from_millis(2)).await;
    assert_eq!(h.store.jobs_prune(100).await.unwrap(), 1);
    assert_eq!(h.store.job_get(done).await, Err(StoreError::JobNotFound(done)));
    assert_eq!(state(h, waiting).await, JobState::Ready, "unfinished jobs are kept");
    assert_eq!(h.store.queue_get(q("q")).await.unwrap().counts[JobState::Succeeded.index()], 0);
}

pub async fn events_follow_each_committed_change(h: &Harness) {
    let (_, mut live) = h.events.subscribe(|_| false);
    let id = enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    h.store
        .lease_heartbeat(LeaseHeartbeatParams {
            id,
            lease_token: leased.lease_token,
            extend_ms: None,
            progress: Some("40".into()),
        })
        .await
        .unwrap();
    h.store
        .job_complete(JobCompleteParams { id, lease_token: leased.lease_token, result: Some(r#""ok""#.into()) })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = live.next(|_| true).await.unwrap();
        assert_eq!(e.job_id, id);
        seen.push((e.kind, e.state, e.version, e.data.clone()));
    }
    assert_eq!(
        seen,
        vec![
            (EventKind::Created, JobState::Ready, 1, None),
            (EventKind::State, JobState::Running, 2, None),
            (EventKind::Progress, JobState::Running, 3, Some("40".into())),
            (EventKind::State, JobState::Succeeded, 4, Some(r#""ok""#.into())),
        ]
    );
    assert_eq!(h.store.job_get(id).await.unwrap().version, 4, "event ids are the job's versions");
    // A job enqueued to a queue the store already knows (a shorter path on some stores).
    let second = enqueue(h, job("q", "k")).await;
    let e = live.next(|_| true).await.unwrap();
    assert_eq!((e.job_id, e.kind, e.state, e.version), (second, EventKind::Created, JobState::Ready, 1));
}

pub async fn reopen_keeps_jobs_leases_and_queues(h: &Harness) {
    set_policy(h, "q", QueuePolicyPatch { max_attempts: Some(7), lease_ms: Some(1_000), ..Default::default() }).await;
    let ready = enqueue(h, job("q", "k")).await;
    let running = enqueue(h, job("q", "k")).await;
    let mut later = job("q", "k");
    later.run_at = Some(START.plus_millis(5_000));
    let scheduled = enqueue(h, later).await;
    let leased = lease_one(h, "q").await;
    assert_eq!(leased.id, ready);
    h.store.close().await;
    let store = (h.reopen)(&h.clock, Arc::clone(&h.events)).await;
    assert_eq!(store.queue_get(q("q")).await.unwrap().policy.max_attempts, 7);
    assert_eq!(store.job_get(running).await.unwrap().state, JobState::Ready);
    // The lease survived: its token still completes the job, and a fresh id is never reused.
    let settled = store
        .job_complete(JobCompleteParams { id: ready, lease_token: leased.lease_token, result: None })
        .await
        .unwrap();
    assert_eq!(settled.state, JobState::Succeeded);
    let fresh = store.job_insert(job("q", "k")).await.unwrap().job.id;
    assert!(fresh > scheduled);
    h.clock.advance(Duration::from_millis(5_000));
    store.maintain().await.unwrap();
    let mut leased =
        store.job_lease(lease_params("q", 10)).await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>();
    leased.sort();
    assert_eq!(leased, vec![running, scheduled, fresh]);
    store.close().await;
}

pub async fn metrics_count_what_happened(h: &Harness) {
    let a = enqueue(h, job("q", "k")).await;
    enqueue(h, job("q", "k")).await;
    let leased = lease_one(h, "q").await;
    assert_eq!(leased.id, a);
    fail(h, &leased, false).await;
    let snapshot = h.store.metrics().await.unwrap();
    let m = snapshot.queues.iter().find(|m| m.queue == "q").unwrap();
    assert_eq!((m.counters.enqueued, m.counters.started, m.counters.failed, m.counters.dead), (2, 1, 1, 1));
    assert_eq!(m.jobs[JobState::Ready.index()], 1);
    assert_eq!(m.jobs[JobState::Dead.index()], 1);
    assert_eq!(m.counters.wait.count, 1);
    assert_eq!(snapshot.workers_connected, 1);
    assert!(snapshot.store.size_bytes > 0, "the store's size on disk is reported");
}

pub async fn workers_are_listed_with_their_running_jobs(h: &Harness) {
    enqueue(h, job("q", "k")).await;
    enqueue(h, job("q", "k")).await;
    let mut params = lease_params("q", 1);
    params.worker_id = "pdf-1".into();
    params.presence = WorkerPresence {
        host: Some("ip-10-0-0-7".into()),
        pid: Some(4242),
        task_arn: Some("arn:aws:ecs:us-east-1:123456789012:task/workers/0a1b2c".into()),
        pod: Some("pdf-worker-7d9f-x2x4q".into()),
        capacity: Some(4),
    };
    h.store.job_lease(params.clone()).await.unwrap();
    let first = params.presence.clone();
    params.worker_id = "pdf-2".into();
    params.presence = WorkerPresence::default();
    params.queues = vec![q("q"), q("other")];
    h.store.job_lease(params).await.unwrap();
    h.store.job_lease(params_for("pdf-2", &["q", "other"])).await.unwrap();
    let workers = h.store.worker_list().await.unwrap();
    let summary: Vec<(String, WorkerPresence, usize, u64, bool)> =
        workers.iter().map(|w| (w.id.clone(), w.presence.clone(), w.queues.len(), w.running, w.draining)).collect();
    assert_eq!(
        summary,
        vec![("pdf-1".into(), first, 1, 1, false), ("pdf-2".into(), WorkerPresence::default(), 2, 1, false)]
    );
    advance(h, Duration::from_millis(crate::store::WORKER_TTL_MS + 1)).await;
    // pdf-1's lease (30 s) expired long ago, and neither worker asked again: both are gone.
    assert!(h.store.worker_list().await.unwrap().is_empty());
}

pub async fn a_worker_asked_to_drain_gets_no_more_jobs(h: &Harness) {
    enqueue(h, job("q", "k")).await;
    enqueue(h, job("q", "k")).await;
    let held = h.store.job_lease(params_for("w1", &["q"])).await.unwrap();
    assert_eq!(held.len(), 1);
    h.store.worker_drain("w1".into(), false).await.unwrap();
    let refused = h.store.job_lease(params_for("w1", &["q"])).await;
    assert!(matches!(refused, Err(StoreError::WorkerDraining(ref id)) if id == "w1"), "{refused:?}");
    let listed = h.store.worker_list().await.unwrap();
    let w1 = listed.iter().find(|w| w.id == "w1").expect("still listed while it finishes its job");
    assert_eq!((w1.draining, w1.running), (true, 1));
    // The job it holds is still its to finish; the other goes to another worker.
    let done = JobCompleteParams { id: held[0].id, lease_token: held[0].lease_token, result: None };
    h.store.job_complete(done).await.unwrap();
    assert_eq!(h.store.job_lease(params_for("w2", &["q"])).await.unwrap().len(), 1);
    // An unknown worker is refused and not remembered, unless the caller says it just started.
    let ghost = h.store.worker_drain("ghost".into(), false).await;
    assert!(matches!(ghost, Err(StoreError::WorkerNotFound(_))), "{ghost:?}");
    assert!(!h.store.worker_list().await.unwrap().iter().any(|w| w.id == "ghost"));
    h.store.worker_drain("starting".into(), true).await.unwrap();
    let refused = h.store.job_lease(params_for("starting", &["q"])).await;
    assert!(matches!(refused, Err(StoreError::WorkerDraining(_))), "{refused:?}");
}

pub async fn a_parked_lease_of_a_worker_asked_to_drain_ends_at_once(h: &Harness) {
    let store = Arc::clone(&h.store);
    let mut params = params_for("w1", &["q"]);
    params.wait = Duration::from_secs(30);
    let parked = tokio::spawn(async move { store.job_lease(params).await });
    // Registered by its own request or by the drain, whichever comes first.
    h.store.worker_drain("w1".into(), true).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("the parked request ends long before its 30 s wait")
        .unwrap();
    assert!(matches!(answer, Err(StoreError::WorkerDraining(_))), "{answer:?}");
}

pub async fn a_worker_that_leaves_is_gone_at_once(h: &Harness) {
    h.store.job_lease(params_for("w1", &["q"])).await.unwrap();
    h.store.job_lease(params_for("w2", &["q"])).await.unwrap();
    assert!(h.store.worker_leave("w1".into()).await.unwrap());
    let ids: Vec<String> = h.store.worker_list().await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(ids, vec!["w2".to_owned()]);
    assert!(!h.store.worker_leave("w1".into()).await.unwrap(), "a second leave finds nothing");
    // A worker that comes back under its id is a new one, not draining.
    assert!(h.store.job_lease(params_for("w1", &["q"])).await.is_ok());
}

pub async fn backlog_counts_ready_and_running_jobs_with_the_policy(h: &Harness) {
    for _ in 0..3 {
        enqueue(h, job("a", "k")).await;
    }
    enqueue(h, job("b", "k")).await;
    enqueue(h, job("other", "k")).await;
    h.store.job_lease(params_for("w", &["a"])).await.unwrap();
    let patch = QueuePolicyPatch { paused: Some(true), concurrency: Some(Some(2)), ..Default::default() };
    h.store.queue_upsert(q("b"), patch).await.unwrap();
    let mut backlog = h.store.queue_backlog(vec![q("a"), q("b"), q("missing")]).await.unwrap();
    backlog.sort_by(|x, y| x.queue.as_str().cmp(y.queue.as_str()));
    let seen: Vec<(&str, u64, u64, bool, Option<u32>)> =
        backlog.iter().map(|b| (b.queue.as_str(), b.ready, b.running, b.policy.paused, b.policy.concurrency)).collect();
    assert_eq!(seen, vec![("a", 2, 1, false, None), ("b", 1, 0, true, Some(2))]);
}

pub async fn pool_state_is_kept_by_name(h: &Harness) {
    let at = Timestamp::from_millis(1_700_000_000_000);
    for (name, state) in [("pdf", "{\"v\":1}"), ("video", "{\"v\":2}"), ("pdf", "{\"v\":3}")] {
        let record = PoolRecord { name: name.into(), state: state.into(), updated_at: at };
        h.store.pool_put(record).await.unwrap();
    }
    let kept: Vec<(String, String)> =
        h.store.pool_list().await.unwrap().into_iter().map(|r| (r.name, r.state)).collect();
    assert_eq!(kept, vec![("pdf".into(), "{\"v\":3}".into()), ("video".into(), "{\"v\":2}".into())]);
}

pub async fn alarm_rules_and_states_are_kept_apart(h: &Harness) {
    let at = Timestamp::from_millis(1_700_000_000_000);
    let later = Timestamp::from_millis(1_700_000_001_000);
    assert!(h.store.alarm_rule_put("api".into(), "{\"r\":1}".into(), at).await.unwrap(), "a new rule");
    h.store.alarm_state_put("api".into(), "{\"s\":1}".into(), at).await.unwrap();
    // A rule the config file declares has a state and no stored rule.
    h.store.alarm_state_put("declared".into(), "{\"s\":2}".into(), at).await.unwrap();
    // Replacing a rule keeps its state; writing a state keeps the rule.
    assert!(!h.store.alarm_rule_put("api".into(), "{\"r\":2}".into(), later).await.unwrap(), "a replaced rule");
    h.store.alarm_state_put("api".into(), "{\"s\":3}".into(), later).await.unwrap();
    let rows = |list: Vec<crate::store::AlarmRecord>| -> Vec<(String, Option<String>, Option<String>)> {
        list.into_iter().map(|r| (r.name, r.rule, r.state)).collect()
    };
    assert_eq!(
        rows(h.store.alarm_list().await.unwrap()),
        vec![
            ("api".into(), Some("{\"r\":2}".into()), Some("{\"s\":3}".into())),
            ("declared".into(), None, Some("{\"s\":2}".into())),
        ]
    );
    assert!(h.store.alarm_delete("api".into()).await.unwrap());
    assert!(!h.store.alarm_delete("api".into()).await.unwrap(), "deleting twice finds nothing");
    assert_eq!(rows(h.store.alarm_list().await.unwrap()), vec![("declared".into(), None, Some("{\"s\":2}".into()))]);
}

fn params_for(worker: &str, queues: &[&str]) -> JobLeaseParams {
    JobLeaseParams {
        worker_id: worker.into(),
        presence: Default::default(),
        queues: queues.iter().map(|name| q(name)).collect(),
        max: 1,
        wait: Duration::ZERO,
        lease_ms: None,
        max_bytes: usize::MAX,
    }
}

pub async fn the_oldest_ready_job_is_found_across_priorities(h: &Harness) {
    let oldest = async || h.store.queue_get(q("q")).await.unwrap().oldest_ready_at;
    enqueue(h, job("q", "k")).await;
    let first = oldest().await.expect("a ready job");
    advance(h, Duration::from_secs(5)).await;
    for priority in [7, -3, 2] {
        enqueue(h, NewJob { priority, ..job("q", "k") }).await;
    }
    // The priority-0 job comes third in lease order, yet it has waited longest.
    assert_eq!(oldest().await, Some(first));
    let taken: Vec<i32> = lease(h, "q", 3).await.iter().map(|j| j.priority).collect();
    assert_eq!(taken, vec![7, 2, 0]);
    assert_eq!(oldest().await.map(|at| at.millis_since(first)), Some(5_000), "the priority -3 job is left");
    lease(h, "q", 1).await;
    assert_eq!(oldest().await, None, "nothing is ready");
}
