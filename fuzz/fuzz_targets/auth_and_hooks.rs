//! What an unauthenticated client controls: the `Authorization` header, and every byte of a
//! webhook delivery (URL, headers, body). Each is checked or refused, never a panic; a made-up
//! token never authenticates, and a delivery signed with another secret never verifies.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wharf::core::auth::{QueuePatterns, Role, Secret, mint_token, token_hash};
use wharf::hooks::{Delivery, Verifier, delivery_id, payload, verify};
use wharf::http::auth::Auth;
use wharf::store::TokenRecord;

fuzz_target!(|data: &[u8]| {
    // Authorization: a minted token and an admin token exist; the input is neither.
    let (minted, id) = mint_token(&[9; 40]);
    let record = TokenRecord {
        id,
        name: None,
        role: Role::Worker,
        queues: QueuePatterns::parse(&["pdf*"]).unwrap_or_default(),
        rate: None,
        hash: token_hash(&minted),
        created_at: wharf::core::Timestamp::EPOCH,
    };
    let auth = Auth::new(Some("fuzz-admin-token-0123456789"), vec![record], None);
    if let Ok((caller, _)) = auth.authenticate(Some(data)) {
        let text = String::from_utf8_lossy(data);
        assert!(text.contains(minted.as_str()) || text.contains("fuzz-admin-token-0123456789"), "{caller:?}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wharf::core::auth::token_id(text);
        let patterns: Vec<&str> = text.split(',').collect();
        if let Ok(patterns) = QueuePatterns::parse(&patterns) {
            let _ = patterns.matches(text);
        }
    }

    // A delivery: the first line is the URL, then `name: value` header lines up to a blank
    // line, then the body.
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let url = lines.next().unwrap_or("");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let delivery = Delivery { url, headers: &headers, body: body.as_bytes(), now_unix_secs: 1_700_000_000 };
    let secret = || Secret::new("fuzz-secret-that-no-input-knows");
    let verifiers = [
        Verifier::Twilio { auth_token: secret() },
        Verifier::GitHub { secret: secret() },
        Verifier::Stripe { secret: secret(), tolerance: Duration::from_secs(300) },
        Verifier::HmacSha256 { secret: secret(), header: "x-signature-256".into(), id_header: Some("x-id".into()) },
    ];
    for verifier in &verifiers {
        assert!(verify(verifier, &delivery).is_err(), "a delivery verified without the secret");
        if let Some(id) = delivery_id(verifier, &delivery) {
            assert!(!id.is_empty() && id.len() <= 256);
        }
        let _ = payload(verifier, &delivery);
    }
});
