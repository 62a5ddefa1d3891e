//! The handlers, one file per resource. Each is thin: extract and validate, call the store,
//! convert the answer.

pub(super) mod alarms;
pub(super) mod hooks;
pub(super) mod jobs;
pub(super) mod ops;
pub(super) mod pools;
pub(super) mod queues;
pub(super) mod tokens;
pub(super) mod work;

use super::AppState;
use super::extract::BodyLimit;
use crate::api::{
    AckRequest, AlarmRuleBody, BatchEnqueueRequest, CompleteRequest, EnqueueRequest, FailRequest, HeartbeatRequest,
    LeaseRequest, QueuePolicyRequest, RedriveRequest, ReleaseRequest, TokenCreateRequest,
};

impl BodyLimit for EnqueueRequest {}
impl BodyLimit for HeartbeatRequest {}
impl BodyLimit for CompleteRequest {}
impl BodyLimit for FailRequest {}
impl BodyLimit for ReleaseRequest {}
impl BodyLimit for LeaseRequest {}
impl BodyLimit for QueuePolicyRequest {}
impl BodyLimit for TokenCreateRequest {}
impl BodyLimit for AlarmRuleBody {}

impl BodyLimit for BatchEnqueueRequest {
    fn body_limit(state: &AppState) -> usize {
        state.config.max_batch_body_bytes
    }
}

impl BodyLimit for AckRequest {
    fn body_limit(state: &AppState) -> usize {
        state.config.max_batch_body_bytes
    }
}

impl BodyLimit for RedriveRequest {
    fn body_limit(state: &AppState) -> usize {
        state.config.max_batch_body_bytes
    }
}
