//! What arrives in paths, queries and headers: job ids, lease tokens, queue names, durations,
//! timestamps and states parse or refuse, never panic; what parses prints back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::core::{JobId, JobState, LeaseToken, QueueName, Timestamp};

fuzz_target!(|text: &str| {
    if let Ok(id) = text.parse::<JobId>() {
        assert_eq!(id.to_string().parse::<JobId>().ok(), Some(id), "a job id round-trips");
    }
    if let Ok(token) = text.parse::<LeaseToken>() {
        assert_eq!(token.to_string().parse::<LeaseToken>().ok(), Some(token), "a lease token round-trips");
    }
    if let Ok(name) = QueueName::parse(text) {
        assert_eq!(name.as_str(), text, "a queue name is taken as given");
    }
    let _ = wharf::core::time::parse_duration(text);
    let _ = Timestamp::parse_rfc3339(text);
    let _ = text.parse::<JobState>();
});
