//! Webhook ingress and TLS, end to end.
//!
//! Webhooks: a real server started with a TOML config of `[[hook]]` tables and an admin token;
//! deliveries signed here the way each provider signs them, sent without a bearer token. What a
//! user relies on: a good signature becomes exactly one job per delivery (a provider's retry
//! lands once), a bad one becomes nothing, and no secret (admin token, minted token, webhook
//! secret) ever shows in the server's log, its API answers or its database.
//!
//! TLS: a private CA and a `localhost` certificate made here; the CLI, a worker and the bench
//! talk to the server over https with `--ca-file`, and a certificate renewed on disk is served
//! to new connections after SIGHUP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::pki::{Leaf, Pki};
use crate::common::{ADMIN_TOKEN, TestServer, TestWorker, http_client, wharf_bin};

// ---- webhook configuration and signing ----

const TWILIO_AUTH_TOKEN: &str = "tw-auth-7d1e93c04b5a28f6e0c1a9";
const GITHUB_SECRET: &str = "gh-hook-secret-5b8e2a9f1c7d3e60";
const STRIPE_SECRET: &str = "whsec_3f9a1c6e8b2d7f4a0e5c9b18";
const ACME_SECRET: &str = "acme-shared-9c4e1b7a2f6d0e83";
/// Every webhook secret the server is given.
const HOOK_SECRETS: [&str; 4] = [TWILIO_AUTH_TOKEN, GITHUB_SECRET, STRIPE_SECRET, ACME_SECRET];

/// The URL Twilio calls (a proxy in front of the server forwards it).
const TWILIO_PUBLIC_URL: &str = "https://api.example.com/v1/hooks/twilio";

/// Writes the config file (four hooks, one of them reading its secret from a file) into `dir`.
fn write_hook_config(dir: &Path) -> PathBuf {
    let secret_file = dir.join("github-secret");
    std::fs::write(&secret_file, format!("{GITHUB_SECRET}\n")).unwrap();
    let config = format!(
        r#"
[[hook]]
name = "twilio"
queue = "inbound-sms"
kind = "whatsapp_message"
verify = {{ kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN" }}
public_url = "{TWILIO_PUBLIC_URL}"

[[hook]]
name = "github"
queue = "repo-events"
kind = "github_push"
verify = {{ kind = "github", secret_file = {secret_file:?} }}

[[hook]]
name = "stripe"
queue = "billing"
kind = "stripe_event"
verify = {{ kind = "stripe", secret_env = "STRIPE_WEBHOOK_SECRET" }}

[[hook]]
name = "acme"
queue = "acme-events"
kind = "acme_event"

[hook.verify]
kind = "hmac-sha256"
secret_env = "ACME_HOOK_SECRET"
header = "X-Acme-Signature"
id_header = "X-Acme-Delivery"
"#,
        secret_file = secret_file.display().to_string(),
    );
    let path = dir.join("wharf.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The environment the hooks read their secrets from, plus the admin token.
fn hook_env() -> [(&'static str, &'static str); 4] {
    [
        ("WHARF_ADMIN_TOKEN", ADMIN_TOKEN),
        ("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("ACME_HOOK_SECRET", ACME_SECRET),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1 of the URL followed by every form field's
/// name and value, sorted by name.
fn twilio_signature(auth_token: &str, url: &str, fields: &[(&str, &str)]) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut mac = <Hmac<sha1::Sha1> as hmac::digest::KeyInit>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `application/x-www-form-urlencoded`, every byte but the unreserved ones escaped.
fn form_encode(fields: &[(&str, &str)]) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields.iter().map(|(n, v)| format!("{}={}", escape(n), escape(v))).collect::<Vec<_>>().join("&")
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An answer: status, content type, body text, and the body as JSON (or null).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    text: String,
    json: Value,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, content_type, text, json }
}

/// Sends webhook deliveries the way each provider does: no bearer token, the provider's
/// signature headers only.
struct Sender {
    http: reqwest::Client,
    base: String,
}

impl Sender {
    fn new(base: &str) -> Self {
        Sender { http: http_client(None), base: base.to_owned() }
    }

    async fn post(&self, hook: &str, content_type: &str, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut req = self.http.post(format!("{}/v1/hooks/{hook}", self.base)).header("content-type", content_type);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        answer(req.body(body).send().await.expect("hook request")).await
    }

    /// A Twilio form delivery, signed with `auth_token` over `signed_url`.
    async fn twilio(&self, fields: &[(&str, &str)], idempotency: &str, auth_token: &str, signed_url: &str) -> Answer {
        let headers = [
            ("x-twilio-signature", twilio_signature(auth_token, signed_url, fields)),
            ("i-twilio-idempotency-token", idempotency.to_owned()),
            ("user-agent", "TwilioProxy/1.1".to_owned()),
        ];
        self.post("twilio", "application/x-www-form-urlencoded", &headers, form_encode(fields).into_bytes()).await
    }

    /// A GitHub delivery: `X-Hub-Signature-256` over the body.
    async fn github(&self, body: &[u8], delivery: &str, secret: &str) -> Answer {
        let headers = [
            ("x-hub-signature-256", format!("sha256={}", hex(&hmac_sha256(secret, &[body])))),
            ("x-github-delivery", delivery.to_owned()),
            ("x-github-event", "push".to_owned()),
        ];
        self.post("github", "application/json", &headers, body.to_vec()).await
    }

    /// A Stripe delivery signed at `t`.
    async fn stripe(&self, body: &[u8], t: i64, secret: &str) -> Answer {
        let t = t.to_string();
        let signature = hex(&hmac_sha256(secret, &[t.as_bytes(), b".", body]));
        let headers = [("stripe-signature", format!("t={t},v1={signature}"))];
        self.post("stripe", "application/json; charset=utf-8", &headers, body.to_vec()).await
    }

    /// A generic HMAC-SHA256 delivery; `secret` `None` sends no signature header.
    async fn acme(&self, body: &[u8], delivery: &str, secret: Option<&str>) -> Answer {
        let mut headers = vec![("x-acme-delivery", delivery.to_owned())];
        if let Some(secret) = secret {
            headers.push(("x-acme-signature", hex(&hmac_sha256(secret, &[body]))));
        }
        self.post("acme", "application/json", &headers, body.to_vec()).await
    }
}

/// The ids of a queue's jobs, newest first (none for a queue that does not exist yet).
async fn queue_job_ids(server: &TestServer, queue: &str) -> Vec<String> {
    let (status, page) = server.get(&format!("/v1/queues/{queue}/jobs")).await;
    if status == 404 && page["code"] == "queue_not_found" {
        return Vec::new();
    }
    assert_eq!(status, 200, "list {queue}: {page}");
    page["jobs"].as_array().expect("jobs").iter().map(|j| j["id"].as_str().expect("id").to_owned()).collect()
}

/// A queue's ready count (0 for a queue that does not exist yet).
async fn ready_count(server: &TestServer, queue: &str) -> u64 {
    let (status, list) = server.get("/v1/queues").await;
    assert_eq!(status, 200, "{list}");
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == queue)
        .map_or(0, |q| q["counts"]["ready"].as_u64().expect("ready count"))
}

async fn job(server: &TestServer, id: &str) -> Value {
    let (status, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "job {id}: {job}");
    job
}

#[tokio::test]
async fn signed_webhook_deliveries_become_one_job_each_without_a_bearer_token_and_bad_ones_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_hook_config(dir.path());
    let server = TestServer::start_full(None, &["--config", config.to_str().unwrap()], &hook_env()).await;
    let hooks = Sender::new(&server.base);

    // Everything but webhooks needs a token on this server.
    let anonymous = answer(hooks.http.get(server.url("/v1/queues")).send().await.unwrap()).await;
    assert_eq!((anonymous.status, anonymous.json["code"].as_str()), (401, Some("unauthorized")), "{anonymous:?}");

    // ---- Twilio: form fields, signed over the public URL a proxy forwards from ----
    let fields = [
        ("MessageSid", "SM5f1c2a9e0b7d4c3a8e6f1b2d9c0a7e41"),
        ("AccountSid", "AC0b7d4c3a8e6f1b2d9c0a7e415f1c2a9e"),
        ("From", "whatsapp:+14155550100"),
        ("To", "whatsapp:+14155550199"),
        ("Body", "Hello wharf & friends: 50% off? ¡sí!"),
        ("NumMedia", "0"),
    ];
    let idempotency = "9a3c1e7f-twilio-delivery-1";

    // A wrong auth token, and the right one over the URL the server itself saw: both refused.
    let wrong = hooks.twilio(&fields, idempotency, "not-the-auth-token", TWILIO_PUBLIC_URL).await;
    assert_eq!((wrong.status, wrong.json["code"].as_str()), (401, Some("invalid_signature")), "{wrong:?}");
    let seen_url = server.url("/v1/hooks/twilio");
    let unproxied = hooks.twilio(&fields, idempotency, TWILIO_AUTH_TOKEN, &seen_url).await;
    assert_eq!((unproxied.status, unproxied.json["code"].as_str()), (401, Some("invalid_signature")), "{unproxied:?}");
    assert_eq!(queue_job_ids(&server, "inbound-sms").await, Vec::<String>::new(), "refused deliveries enqueue nothing");

    let first = hooks.twilio(&fields, idempotency, TWILIO_AUTH_TOKEN, TWILIO_PUBLIC_URL).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(first.content_type.starts_with("text/xml"), "Twilio reads TwiML: {first:?}");
    assert!(first.text.starts_with("<?xml") && first.text.contains("<Response"), "{first:?}");
    let ids = queue_job_ids(&server, "inbound-sms").await;
    assert_eq!(ids.len(), 1, "one delivery, one job: {ids:?}");
    let twilio_job = job(&server, &ids[0]).await;
    assert_eq!(
        (twilio_job["queue"].as_str(), twilio_job["kind"].as_str()),
        (Some("inbound-sms"), Some("whatsapp_message"))
    );
    let expected_body: serde_json::Map<String, Value> =
        fields.iter().map(|(n, v)| (n.to_string(), Value::String(v.to_string()))).collect();
    assert_eq!(twilio_job["payload"]["body"], Value::Object(expected_body), "{twilio_job}");
    let headers = &twilio_job["payload"]["headers"];
    assert_eq!(headers["i-twilio-idempotency-token"], idempotency, "{headers}");
    assert_eq!(headers["user-agent"], "TwilioProxy/1.1", "{headers}");
    assert!(headers.get("x-twilio-signature").is_none(), "the signature is not kept: {headers}");

    // Twilio retries: same delivery, same job, nothing new.
    let again = hooks.twilio(&fields, idempotency, TWILIO_AUTH_TOKEN, TWILIO_PUBLIC_URL).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert!(again.content_type.starts_with("text/xml"), "{again:?}");
    assert_eq!(queue_job_ids(&server, "inbound-sms").await, ids);
    assert_eq!(ready_count(&server, "inbound-sms").await, 1);
    // A wrong signature after the good one: still one job.
    let forged = hooks.twilio(&fields, "another-delivery", "not-the-auth-token", TWILIO_PUBLIC_URL).await;
    assert_eq!(forged.status, 401, "{forged:?}");
    assert_eq!(ready_count(&server, "inbound-sms").await, 1);

    // ---- GitHub: JSON body, X-Hub-Signature-256, deduplicated by X-GitHub-Delivery ----
    let push = br#"{"ref":"refs/heads/main","after":"6113728f27ae82c7","repository":{"full_name":"acme/app"}}"#;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let tampered = hooks.github(push, delivery, "not-the-github-secret").await;
    assert_eq!((tampered.status, tampered.json["code"].as_str()), (401, Some("invalid_signature")), "{tampered:?}");
    let created = hooks.github(push, delivery, GITHUB_SECRET).await;
    assert_eq!((created.status, &created.json["repeat"]), (201, &json!(false)), "{created:?}");
    let github_id = created.json["id"].as_str().expect("job id").to_owned();
    let github_job = job(&server, &github_id).await;
    assert_eq!((github_job["queue"].as_str(), github_job["kind"].as_str()), (Some("repo-events"), Some("github_push")));
    assert_eq!(github_job["payload"]["body"], serde_json::from_slice::<Value>(push).unwrap());
    assert_eq!(github_job["payload"]["headers"]["x-github-event"], "push");
    assert_eq!(github_job["payload"]["headers"]["x-github-delivery"], delivery);
    assert!(github_job["payload"]["headers"].get("x-hub-signature-256").is_none(), "{github_job}");
    let redelivered = hooks.github(push, delivery, GITHUB_SECRET).await;
    assert_eq!((redelivered.status, &redelivered.json), (200, &json!({"id": github_id, "repeat": true})));
    assert_eq!(ready_count(&server, "repo-events").await, 1);

    // ---- Stripe: signed timestamp; the event id deduplicates; old signatures are refused ----
    let event = br#"{"id":"evt_1Q2w3E4r5T6y7U8i","type":"payment_intent.succeeded","data":{"object":{"amount":2000}}}"#;
    let created = hooks.stripe(event, now_unix() - 5, STRIPE_SECRET).await;
    assert_eq!((created.status, &created.json["repeat"]), (201, &json!(false)), "{created:?}");
    let stripe_id = created.json["id"].as_str().expect("job id").to_owned();
    assert_eq!(job(&server, &stripe_id).await["payload"]["body"], serde_json::from_slice::<Value>(event).unwrap());
    // Stripe's retry carries a new timestamp and so a new signature: still the same event.
    let retried = hooks.stripe(event, now_unix(), STRIPE_SECRET).await;
    assert_eq!((retried.status, &retried.json), (200, &json!({"id": stripe_id, "repeat": true})));
    // A captured delivery replayed ten minutes later: refused, though its signature is genuine.
    let other = br#"{"id":"evt_9Z8y7X6w5V4u3T2s","type":"invoice.paid","data":{"object":{"amount":500}}}"#;
    let replayed = hooks.stripe(other, now_unix() - 600, STRIPE_SECRET).await;
    assert_eq!((replayed.status, replayed.json["code"].as_str()), (401, Some("invalid_signature")), "{replayed:?}");
    assert_eq!(ready_count(&server, "billing").await, 1, "the replay enqueued nothing");
    // The same event signed now is accepted: it was the timestamp that was refused.
    let fresh = hooks.stripe(other, now_unix(), STRIPE_SECRET).await;
    assert_eq!(fresh.status, 201, "{fresh:?}");
    assert_eq!(ready_count(&server, "billing").await, 2);

    // ---- generic HMAC-SHA256 with its own header names ----
    let body = br#"{"event":"order.shipped","order":1234}"#;
    let missing = hooks.acme(body, "acme-1", None).await;
    assert_eq!((missing.status, missing.json["code"].as_str()), (401, Some("invalid_signature")), "{missing:?}");
    let created = hooks.acme(body, "acme-1", Some(ACME_SECRET)).await;
    assert_eq!(created.status, 201, "{created:?}");
    let acme_id = created.json["id"].as_str().expect("job id").to_owned();
    let acme_job = job(&server, &acme_id).await;
    assert_eq!((acme_job["queue"].as_str(), acme_job["kind"].as_str()), (Some("acme-events"), Some("acme_event")));
    assert_eq!(acme_job["payload"]["headers"]["x-acme-delivery"], "acme-1");
    assert!(acme_job["payload"]["headers"].get("x-acme-signature").is_none(), "{acme_job}");
    let repeated = hooks.acme(body, "acme-1", Some(ACME_SECRET)).await;
    assert_eq!((repeated.status, &repeated.json), (200, &json!({"id": acme_id, "repeat": true})));
    assert_eq!(ready_count(&server, "acme-events").await, 1);

    // ---- a hook nobody configured ----
    let nobody = hooks.post("gitlab", "application/json", &[], b"{}".to_vec()).await;
    assert_eq!((nobody.status, nobody.json["code"].as_str()), (404, Some("hook_not_found")), "{nobody:?}");
}

// ---- secrets ----

/// `wharf serve` logging at debug level, in JSON, to a file this test reads afterwards.
struct LoggedServer {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl LoggedServer {
    async fn start(data: &Path, log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(wharf_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .env("WHARF_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start wharf serve");
        let mut server = LoggedServer { child: Some(child), base: String::new(), log: log.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = server.log_text();
            let address = text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find_map(|v| v.get("address").and_then(Value::as_str).map(str::to_owned));
            if let Some(address) = address {
                server.base = address;
                return server;
            }
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                panic!("wharf serve exited {status} before listening:\n{text}");
            }
            assert!(Instant::now() < deadline, "wharf serve did not listen within 30 s:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (up to 30 s) for the process to exit; returns whether it exited 0.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wharf serve did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `method path` with `token` (if any) and an optional JSON body.
async fn call(base: &str, token: Option<&str>, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
    let mut req = http_client(token).request(method, format!("{base}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    answer(req.send().await.expect("request")).await
}

/// Fails naming the secret (by label, not value) when `text` contains any of `secrets`.
fn assert_no_secret(where_: &str, bytes: &[u8], secrets: &[(String, String)]) {
    for (label, secret) in secrets {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{label} appears in {where_}");
    }
}

#[tokio::test]
async fn tokens_and_webhook_secrets_never_reach_the_log_the_api_or_the_database_in_clear() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let config = write_hook_config(dir.path());
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let mut server = LoggedServer::start(&data, &log, &["--config", config.to_str().unwrap()], &hook_env()).await;
    let base = server.base.clone();
    let admin = Some(ADMIN_TOKEN);

    // Mint a reader, a producer limited to orders*, a worker, and one to revoke.
    let mut minted = Vec::new();
    for (name, role, queues) in [
        ("dashboard", "reader", None),
        ("shop", "producer", Some(json!(["orders*"]))),
        ("runner", "worker", None),
        ("leaked-laptop", "reader", None),
    ] {
        let mut body = json!({"role": role, "name": name});
        if let Some(queues) = queues {
            body["queues"] = queues;
        }
        let created = call(&base, admin, Method::POST, "/v1/tokens", Some(body)).await;
        assert_eq!(created.status, 201, "{created:?}");
        let token = created.json["token"].as_str().expect("token").to_owned();
        let id = created.json["id"].as_str().expect("id").to_owned();
        let secret = token.strip_prefix(&format!("wharf_{id}_")).expect("wharf_<id>_<secret>").to_owned();
        assert!(secret.len() >= 32, "a secret part worth the name: {secret:?}");
        minted.push((id, token, secret));
    }
    let [(_, reader, _), (_, producer, _), (_, worker, _), (revoked_id, revoked, _)] = &minted[..] else {
        unreachable!()
    };

    // Use them, within and beyond what they allow.
    let enqueued =
        call(&base, Some(producer), Method::POST, "/v1/queues/orders/jobs", Some(json!({"kind": "ship"}))).await;
    assert_eq!(enqueued.status, 201, "{enqueued:?}");
    let order_id = enqueued.json["id"].as_str().expect("id").to_owned();
    let elsewhere =
        call(&base, Some(producer), Method::POST, "/v1/queues/payroll/jobs", Some(json!({"kind": "pay"}))).await;
    assert_eq!(elsewhere.status, 403, "{elsewhere:?}");
    assert_eq!(call(&base, Some(reader), Method::GET, &format!("/v1/jobs/{order_id}"), None).await.status, 200);
    let lease = json!({"worker_id": "runner-1", "queues": ["orders"], "max": 1, "wait_ms": 5000});
    let leased = call(&base, Some(worker), Method::POST, "/v1/lease", Some(lease)).await;
    assert_eq!(leased.status, 200, "{leased:?}");
    let lease_token = leased.json["jobs"][0]["lease_token"].as_str().expect("a leased job").to_owned();
    let done = call(
        &base,
        Some(worker),
        Method::POST,
        &format!("/v1/jobs/{order_id}/complete"),
        Some(json!({"lease_token": lease_token, "result": {"shipped": true}})),
    )
    .await;
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(call(&base, Some(revoked), Method::GET, "/v1/queues", None).await.status, 200);
    let revoke = call(&base, admin, Method::DELETE, &format!("/v1/tokens/{revoked_id}"), None).await;
    assert_eq!(revoke.status, 204, "{revoke:?}");

    // Bad tokens: a revoked one, a real id with a wrong secret, a made-up one.
    let (reader_id, _, reader_secret) = &minted[0];
    let wrong_secret = format!("wharf_{reader_id}_{}", reader_secret.chars().rev().collect::<String>());
    let made_up = "made-up-token-0f3b9c2e7a18d4c6";
    for bad in [revoked.as_str(), wrong_secret.as_str(), made_up] {
        let refused = call(&base, Some(bad), Method::GET, "/v1/queues", None).await;
        assert_eq!((refused.status, refused.json["code"].as_str()), (401, Some("unauthorized")), "{refused:?}");
    }

    // Webhook deliveries, good and bad, one carrying credentials of its own.
    let hooks = Sender::new(&base);
    let fields = [("MessageSid", "SMa1b2c3d4e5f60718293a4b5c6d7e8f90"), ("Body", "secret-free text")];
    let twilio = hooks
        .post(
            "twilio",
            "application/x-www-form-urlencoded",
            &[
                ("x-twilio-signature", twilio_signature(TWILIO_AUTH_TOKEN, TWILIO_PUBLIC_URL, &fields)),
                ("authorization", format!("Bearer {ADMIN_TOKEN}")),
                ("cookie", format!("session={reader}")),
            ],
            form_encode(&fields).into_bytes(),
        )
        .await;
    assert_eq!(twilio.status, 201, "{twilio:?}");
    let push = br#"{"ref":"refs/heads/main"}"#;
    assert_eq!(hooks.github(push, "gh-delivery-1", GITHUB_SECRET).await.status, 201);
    assert_eq!(hooks.github(push, "gh-delivery-2", "a-wrong-secret").await.status, 401);
    let stripe = hooks.stripe(br#"{"id":"evt_secrets_1","type":"charge.succeeded"}"#, now_unix(), STRIPE_SECRET).await;
    assert_eq!(stripe.status, 201, "{stripe:?}");
    let stale = hooks.stripe(br#"{"id":"evt_secrets_2"}"#, now_unix() - 3600, STRIPE_SECRET).await;
    assert_eq!(stale.status, 401, "{stale:?}");
    let acme = hooks.acme(br#"{"n":1}"#, "acme-secrets-1", Some(ACME_SECRET)).await;
    assert_eq!(acme.status, 201, "{acme:?}");
    assert_eq!(hooks.acme(br#"{"n":2}"#, "acme-secrets-2", None).await.status, 401);

    let mut secrets = vec![("the admin token".to_owned(), ADMIN_TOKEN.to_owned())];
    for (label, secret) in ["the Twilio auth token", "the GitHub secret", "the Stripe secret", "the HMAC secret"]
        .into_iter()
        .zip(HOOK_SECRETS)
    {
        secrets.push((label.to_owned(), secret.to_owned()));
    }
    for (id, token, secret) in &minted {
        secrets.push((format!("minted token {id}"), token.clone()));
        secrets.push((format!("the secret part of token {id}"), secret.clone()));
    }
    secrets.push(("a presented token with a wrong secret".to_owned(), wrong_secret.clone()));
    secrets.push(("a presented made-up token".to_owned(), made_up.to_owned()));

    // What the API shows.
    let list = call(&base, admin, Method::GET, "/v1/tokens", None).await;
    assert_eq!(list.status, 200, "{list:?}");
    let mut listed: Vec<&str> =
        list.json["tokens"].as_array().expect("tokens").iter().filter_map(|t| t["id"].as_str()).collect();
    listed.sort_unstable();
    let mut live: Vec<&str> = minted[..3].iter().map(|(id, _, _)| id.as_str()).collect();
    live.sort_unstable();
    assert_eq!(listed, live, "the live tokens, by id: {list:?}");
    assert_no_secret("GET /v1/tokens", list.text.as_bytes(), &secrets);
    for path in ["/metrics", "/v1/openapi.json", "/v1/queues"] {
        let shown = call(&base, admin, Method::GET, path, None).await;
        assert_eq!(shown.status, 200, "{path}: {shown:?}");
        assert_no_secret(path, shown.text.as_bytes(), &secrets);
    }
    let twilio_jobs = call(&base, admin, Method::GET, "/v1/queues/inbound-sms/jobs", None).await;
    let twilio_job_id = twilio_jobs.json["jobs"][0]["id"].as_str().expect("the Twilio job").to_owned();
    for id in [&twilio_job_id, stripe.json["id"].as_str().unwrap(), acme.json["id"].as_str().unwrap()] {
        let shown = call(&base, admin, Method::GET, &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(shown.status, 200, "{shown:?}");
        assert_no_secret(&format!("hook job {id}"), shown.text.as_bytes(), &secrets);
        for header in ["authorization", "cookie", "x-twilio-signature", "stripe-signature", "x-acme-signature"] {
            assert!(shown.json["payload"]["headers"].get(header).is_none(), "{header} kept in {}", shown.text);
        }
    }

    // The whole log, once the server has stopped.
    assert!(server.stop(), "wharf serve stops cleanly on SIGTERM");
    let log_text = server.log_text();
    for expected in
        ["wharf serve is listening", "token created", "webhook delivery accepted", "webhook delivery refused"]
    {
        assert!(log_text.contains(expected), "the log was captured ({expected:?} missing):\n{log_text}");
    }
    assert!(log_text.contains("\"level\":\"DEBUG\""), "debug lines are in the log");
    assert_no_secret("the server's log", log_text.as_bytes(), &secrets);

    // The database keeps hashes only.
    let db = rusqlite::Connection::open_with_flags(data.join("wharf.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the store read-only");
    let mut rows: Vec<(String, Vec<u8>)> = db
        .prepare("SELECT id, hash FROM tokens")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    assert_eq!(rows.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), live, "the revoked token is gone");
    for (id, hash) in &rows {
        assert_eq!(hash.len(), 32, "token {id} is stored as a 32-byte hash");
        // As documented: the SHA-256 of the whole token, which cannot be turned back into it.
        let (_, token, _) = minted.iter().find(|(m, _, _)| m == id).unwrap();
        assert_eq!(hash[..], <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes())[..], "token {id}'s hash");
    }
    drop(db);
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("wharf.db") {
            continue;
        }
        files += 1;
        assert_no_secret(&name, &std::fs::read(&path).unwrap(), &secrets);
    }
    assert!(files >= 1, "the store's files were read");
}

// ---- TLS ----

/// ca.pem, cert.pem and key.pem in `dir`, the server's certificate being `leaf`.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    fn write(dir: &Path, pki: &Pki, leaf: &Leaf) -> Self {
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.ca, pki.ca_pem()).unwrap();
        files.install(leaf);
        files
    }

    /// Overwrites the server's certificate and key, as a renewal does.
    fn install(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&self.key, &leaf.key_pem).unwrap();
    }

    fn serve_flags(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
        vec!["--tls-cert".into(), path(&self.cert), "--tls-key".into(), path(&self.key)]
    }
}

/// The port of an `https://127.0.0.1:PORT` address.
fn https_port(address: &str) -> u16 {
    let port = address.strip_prefix("https://127.0.0.1:").unwrap_or_else(|| panic!("an https address: {address}"));
    port.parse().expect("port")
}

/// A reqwest client trusting `ca` and sending `token`.
fn tls_client(ca: &Path, token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Runs the `wharf` CLI with the admin token and nothing else from the environment's WHARF_*
/// settings; returns (exit code, stdout, stderr).
fn wharf(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(wharf_bin())
        .args(args)
        .env_remove("WHARF_SERVER")
        .env_remove("WHARF_CA_FILE")
        .env("WHARF_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run wharf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The certificate a new TLS connection to `localhost:port` is shown, verified against `ca`.
async fn served_certificate(port: u16, ca: &Path) -> Result<Vec<u8>, String> {
    let connector = wharf::tls::connector(Some(ca)).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let certs = stream.get_ref().1.peer_certificates().ok_or("no peer certificate")?;
    Ok(certs[0].to_vec())
}

#[tokio::test]
async fn over_https_with_a_private_ca_the_cli_a_worker_and_the_bench_work_and_others_refuse_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let files = TlsFiles::write(dir.path(), &pki, &pki.leaf(1001, "wharf server"));
    let flags = files.serve_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = TestServer::start_full(None, &flags, &[("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let port = https_port(&server.base);
    // Clients name the host the certificate is for; the helpers then speak https with the CA.
    server.base = format!("https://localhost:{port}");
    server.http = tls_client(&files.ca, Some(ADMIN_TOKEN));
    let base = server.base.clone();
    let ca = files.ca.to_str().unwrap();

    // (a) The CLI trusts the private CA only when told to.
    let (code, out, err) = wharf(&["queues", "--server", &base, "--ca-file", ca, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap()["queues"].is_array(), "{out}");
    let (code, out, err) = wharf(&["queues", "--server", &base]);
    assert_eq!(code, 1, "an untrusted certificate fails the command: {out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.to_lowercase().contains("certificate"), "the line says why: {err}");

    // (b) Enqueue over https, and a worker trusting the CA runs the job.
    let (code, out, err) =
        wharf(&["enqueue", "tls-jobs", "ship", "--payload", r#"{"n":1}"#, "-q", "--server", &base, "--ca-file", ca]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_owned();
    assert_eq!(server.state(&id).await, "ready");
    let worker = TestWorker::start(&server, dir.path(), &["--ca-file", ca, "--queue", "tls-jobs", "--builtin", "noop"]);
    let finished = server.wait_done(&id).await;
    assert_eq!(finished["state"], "succeeded", "{finished}\n{}", worker.log_text());

    // (c) The bench measures over https too.
    let (code, out, err) =
        wharf(&["bench", "--server", &base, "--ca-file", ca, "--only", "enqueue", "--jobs", "50", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench JSON: {e}: {out}"));
    assert_eq!((rows[0]["measure"].as_str(), rows[0]["jobs"].as_u64()), (Some("enqueue"), Some(50)), "{rows}");
    let (_, queues) = server.get("/v1/queues").await;
    let bench = queues["queues"].as_array().unwrap().iter().find(|q| q["name"].as_str().unwrap().starts_with("bench-"));
    assert_eq!(bench.map(|q| q["counts"]["ready"].as_u64()), Some(Some(50)), "the bench's jobs landed: {queues}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_sighup_a_broken_one_is_not_and_cleartext_gets_no_http() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let first = pki.leaf(2001, "wharf server, first");
    let files = TlsFiles::write(dir.path(), &pki, &first);
    let flags = files.serve_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = LoggedServer::start(&dir.path().join("data"), &dir.path().join("serve.log"), &flags, &[]).await;
    let port = https_port(&server.base);
    let pid = server.child.as_ref().unwrap().id();
    let client = tls_client(&files.ca, None);
    let health = format!("https://localhost:{port}/health");
    assert_eq!(client.get(&health).send().await.expect("https").status(), 200);
    assert_eq!(served_certificate(port, &files.ca).await.unwrap(), first.der);

    // Cleartext HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(!got.starts_with(b"HTTP/"), "cleartext got an HTTP answer: {}", String::from_utf8_lossy(&got));
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{got:?}");

    // Renew: a new certificate and key over the old files, then SIGHUP.
    let second = pki.leaf(2002, "wharf server, renewed");
    assert_ne!(second.der, first.der);
    files.install(&second);
    let hangup = |pid: u32| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP)
            .expect("SIGHUP");
    };
    hangup(pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = served_certificate(port, &files.ca).await;
        if served.as_ref() == Ok(&second.der) {
            break;
        }
        assert!(crate::common::alive(pid), "the server died on SIGHUP:\n{}", server.log_text());
        assert!(Instant::now() < deadline, "still serving the old certificate 30 s after SIGHUP: {served:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = tls_client(&files.ca, None);
    assert_eq!(fresh.get(&health).send().await.expect("https after renewal").status(), 200);

    // A botched renewal (a certificate whose key was not written) keeps the certificate in use.
    let third = pki.leaf(2003, "wharf server, half-written");
    std::fs::write(&files.cert, &third.cert_pem).unwrap();
    let refusals = |log: &str| log.lines().filter(|l| l.contains("not reloaded")).count();
    let before = refusals(&server.log_text());
    hangup(pid);
    crate::common::wait_until("the server reports the failed reload", || refusals(&server.log_text()) > before).await;
    assert!(crate::common::alive(pid), "{}", server.log_text());
    assert_eq!(served_certificate(port, &files.ca).await.unwrap(), second.der, "the renewed certificate stays");
    assert_eq!(tls_client(&files.ca, None).get(&health).send().await.expect("https").status(), 200);
}
