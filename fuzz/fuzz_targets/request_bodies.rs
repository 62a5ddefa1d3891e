//! Request bodies: any bytes, decoded as each request type the API takes. Every outcome is a
//! value or a client error that names its cause; never a panic. A decoded enqueue is validated
//! too, as the server would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::api::{
    AckRequest, BatchEnqueueRequest, CompleteRequest, EnqueueRequest, FailRequest, HeartbeatRequest, LeaseRequest,
    QueuePolicyRequest, RedriveRequest, ReleaseRequest,
};
use wharf::core::{Limits, QueueName, Timestamp};
use wharf::http::extract::parse;

fn refused_cleanly<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match parse::<T>(bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            assert!(err.code.status().is_client_error(), "{err:?}");
            assert!(!err.detail.is_empty(), "a refusal says why");
            None
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let queue = QueueName::parse("fuzz").expect("a valid queue name");
    let now = Timestamp::from_millis(1_795_000_000_000);
    if let Some(req) = refused_cleanly::<EnqueueRequest>(bytes) {
        let _ = wharf::http::views::spec(req).validate(&queue, &Limits::default(), now);
    }
    if let Some(batch) = refused_cleanly::<BatchEnqueueRequest>(bytes) {
        for req in batch.jobs {
            let _ = wharf::http::views::spec(req).validate(&queue, &Limits::default(), now);
        }
    }
    refused_cleanly::<LeaseRequest>(bytes);
    refused_cleanly::<AckRequest>(bytes);
    refused_cleanly::<QueuePolicyRequest>(bytes);
    refused_cleanly::<HeartbeatRequest>(bytes);
    refused_cleanly::<CompleteRequest>(bytes);
    refused_cleanly::<FailRequest>(bytes);
    refused_cleanly::<ReleaseRequest>(bytes);
    refused_cleanly::<RedriveRequest>(bytes);
});
