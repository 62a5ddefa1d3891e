//! Webhook ingress, the pure part: `[[hook]]` configuration, signature verification, delivery
//! ids and the job payload built from a delivery.
//!
//! # Overview
//!
//! `POST /v1/hooks/{name}` takes deliveries from Twilio, GitHub, Stripe or any sender that signs
//! with a shared HMAC-SHA256 secret. The provider's signature is the credential: a delivery whose
//! signature does not verify never becomes a job. This module owns the [`Hook`] definitions
//! (read from the config file at startup), [`verify()`], [`delivery_id`] (the key that makes a
//! provider's retries land once) and [`payload`] (what the job carries). The HTTP handler around
//! it reads the body as raw bytes, calls these in that order, and enqueues.
//!
//! # State
//!
//! None here. A [`Hook`] is built once when the config loads and never changes; secrets are read
//! then (from an environment variable or a file) and live only in [`Secret`], whose `Debug`
//! prints `Secret([redacted])` and which has no `Display` or `Serialize`, so a secret cannot
//! reach a log line or an API answer by accident. Which deliveries were already seen is the
//! store's business, keyed by hook name and delivery id.
//!
//! # Failure handling
//!
//! A bad `[[hook]]` table stops the server at startup with one line naming the hook and the
//! problem ([`HookConfigError`]): a webhook that silently refuses everything is worse than a
//! server that does not start. A delivery that does not verify gets a [`Refusal`], which says
//! what was wrong (no header, a malformed one, a mismatch, a stale timestamp) but never the
//! expected signature or the secret. All signature comparisons are constant time.
//!
//! # Why these rules
//!
//! Each provider signs differently and the details matter: GitHub and Stripe sign the raw body,
//! Twilio signs the URL it called plus the form fields, so a proxy that rewrites the URL breaks
//! it (hence `public_url`). Stripe adds a timestamp and so a replay window; the others have
//! none, and deduplication by delivery id is their only replay defence.

pub mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::QueueName;
use crate::core::time::parse_duration;
use crate::core::validate;

pub use verify::{Delivery, Refusal, delivery_id, payload, verify};

/// The generic verifier's signature header unless configured.
pub const DEFAULT_HMAC_HEADER: &str = "x-signature-256";
/// How far a Stripe timestamp may be from now, as in Stripe's own libraries.
pub const DEFAULT_STRIPE_TOLERANCE: Duration = Duration::from_secs(300);

/// A `[[hook]]` table of the config file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookFile {
    /// `name = "twilio"`: the `{name}` in `/v1/hooks/{name}`; the same rule as queue names.
    pub name: String,
    /// `queue = "triage"`: where the jobs go.
    pub queue: String,
    /// `kind = "whatsapp_message"`: the jobs' kind.
    pub kind: String,
    /// `verify = { kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN" }`.
    pub verify: VerifyFile,
    /// `public_url = "https://api.example.com/v1/hooks/twilio"`: the URL the provider signs.
    /// Required for Twilio.
    pub public_url: Option<String>,
}

/// The `verify` table of a `[[hook]]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// `twilio`, `github`, `stripe` or `hmac-sha256`.
    pub kind: String,
    /// The environment variable holding the secret (give this or `secret_file`).
    pub secret_env: Option<String>,
    /// A file holding the secret; a trailing newline is ignored.
    pub secret_file: Option<PathBuf>,
    /// `hmac-sha256` only: the signature header. Defaults to `x-signature-256`.
    pub header: Option<String>,
    /// `hmac-sha256` only: a header carrying a delivery id, for deduplication. Defaults to none.
    pub id_header: Option<String>,
    /// `stripe` only: how old (or new) a signature's timestamp may be. Defaults to `300s`.
    pub tolerance: Option<String>,
}

pub use crate::core::auth::Secret;

/// How a hook checks that a delivery came from its provider.
#[derive(Clone, Debug)]
pub enum Verifier {
    /// `X-Twilio-Signature`: base64 HMAC-SHA1 of the URL and the sorted form fields.
    Twilio {
        /// The account's auth token.
        auth_token: Secret,
    },
    /// `X-Hub-Signature-256`: `sha256=` and hex HMAC-SHA256 of the body.
    GitHub {
        /// The webhook's secret.
        secret: Secret,
    },
    /// `Stripe-Signature`: a timestamp and hex HMAC-SHA256 of `"{t}." + body`.
    Stripe {
        /// The endpoint's signing secret, `whsec_…`, used as is.
        secret: Secret,
        /// How far the signed timestamp may be from now.
        tolerance: Duration,
    },
    /// A configured header holding hex HMAC-SHA256 of the body, with or without `sha256=`.
    HmacSha256 {
        /// The shared secret.
        secret: Secret,
        /// The signature header, lowercase.
        header: String,
        /// A header carrying a delivery id, lowercase.
        id_header: Option<String>,
    },
}

impl Verifier {
    /// The `verify.kind` that configures this verifier.
    pub fn kind(&self) -> &'static str {
        match self {
            Verifier::Twilio { .. } => "twilio",
            Verifier::GitHub { .. } => "github",
            Verifier::Stripe { .. } => "stripe",
            Verifier::HmacSha256 { .. } => "hmac-sha256",
        }
    }
}

/// A webhook endpoint, checked and ready.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The `{name}` in `/v1/hooks/{name}`.
    pub name: String,
    /// Where its jobs go.
    pub queue: QueueName,
    /// Its jobs' kind.
    pub kind: String,
    /// How its deliveries are checked.
    pub verifier: Verifier,
    /// The URL the provider signs, if configured (always for Twilio).
    pub public_url: Option<String>,
}

/// A `[[hook]]` table that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hook {hook}: {problem}")]
pub struct HookConfigError {
    /// The hook's name as written.
    pub hook: String,
    /// What is wrong, lowercase.
    pub problem: String,
}

impl HookFile {
    /// Checks the table and reads its secret. `env` looks up environment variables (injected so
    /// tests need not touch the process environment).
    pub fn load(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Hook, HookConfigError> {
        let hook = self.name.clone();
        self.build(env).map_err(|problem| HookConfigError { hook, problem })
    }

    fn build(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Hook, String> {
        // The name is a URL path segment; the queue-name rule keeps it one without escaping.
        if QueueName::parse(&self.name).is_err() {
            return Err(format!(
                "name must be 1 to {} characters of letters, digits, '.', '_' and '-'",
                QueueName::MAX_LEN
            ));
        }
        let queue = QueueName::parse(&self.queue).map_err(|e| e.reason)?;
        let kind = validate::name("kind", self.kind).map_err(|e| format!("kind {}", e.reason))?;
        let v = self.verify;
        let verifier_kind = v.kind.as_str();
        if !matches!(verifier_kind, "twilio" | "github" | "stripe" | "hmac-sha256") {
            return Err(format!(
                "unknown verify kind {verifier_kind:?}; expected twilio, github, stripe or hmac-sha256"
            ));
        }
        // An option the kind ignores is a typo or a misunderstanding; say so rather than ignore it.
        for (option, given, applies_to) in [
            ("header", v.header.is_some(), "hmac-sha256"),
            ("id_header", v.id_header.is_some(), "hmac-sha256"),
            ("tolerance", v.tolerance.is_some(), "stripe"),
        ] {
            if given && verifier_kind != applies_to {
                return Err(format!("verify.{option} applies only to verify kind {applies_to}"));
            }
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!("public_url {url:?} must start with https:// or http://"));
        }
        if verifier_kind == "twilio" && self.public_url.is_none() {
            // Twilio signs the URL it called; behind a proxy the server sees another one.
            return Err("verify kind twilio needs public_url (the URL twilio calls and signs)".to_owned());
        }
        let secret = read_secret(&v, env)?;
        let verifier = match verifier_kind {
            "twilio" => Verifier::Twilio { auth_token: secret },
            "github" => Verifier::GitHub { secret },
            "stripe" => {
                let tolerance = match &v.tolerance {
                    Some(text) => parse_duration(text).map_err(|e| format!("verify.tolerance: {e}"))?,
                    None => DEFAULT_STRIPE_TOLERANCE,
                };
                Verifier::Stripe { secret, tolerance }
            }
            _ => Verifier::HmacSha256 {
                secret,
                header: header_name("header", v.header.as_deref().unwrap_or(DEFAULT_HMAC_HEADER))?,
                id_header: v.id_header.as_deref().map(|h| header_name("id_header", h)).transpose()?,
            },
        };
        Ok(Hook { name: self.name, queue, kind, verifier, public_url: self.public_url })
    }
}

/// Reads the secret from exactly one of `secret_env` and `secret_file`.
fn read_secret(v: &VerifyFile, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
    match (&v.secret_env, &v.secret_file) {
        (Some(var), None) => {
            let value = env(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
            if value.is_empty() {
                return Err(format!("environment variable {var} is empty"));
            }
            Ok(Secret::new(value))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
            // Editors and `echo` end files with a newline that is not part of the secret.
            let value = text.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(format!("secret file {} is empty", path.display()));
            }
            Ok(Secret::new(value.to_owned()))
        }
        (Some(_), Some(_)) => Err("give verify.secret_env or verify.secret_file, not both".to_owned()),
        (None, None) => Err("verify needs secret_env or secret_file".to_owned()),
    }
}

/// A header name as configured, lowercased to match how deliveries carry them.
fn header_name(option: &str, name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
        return Err(format!("verify.{option} {name:?} is not a header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Loads every `[[hook]]` table, refusing two hooks with one name.
pub fn load_all(files: Vec<HookFile>, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Hook>, HookConfigError> {
    let mut seen = HashSet::new();
    files
        .into_iter()
        .map(|file| {
            if !seen.insert(file.name.clone()) {
                let problem = "defined more than once; hook names must be unique".to_owned();
                return Err(HookConfigError { hook: file.name, problem });
            }
            file.load(env)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[derive(Deserialize)]
    struct Config {
        hook: Vec<HookFile>,
    }

    fn files(toml_text: &str) -> Vec<HookFile> {
        toml::from_str::<Config>(toml_text).expect("valid TOML").hook
    }

    fn env(var: &str) -> Option<String> {
        match var {
            "TWILIO_AUTH_TOKEN" => Some("tw-token-s3cr3t".to_owned()),
            "GITHUB_SECRET" => Some("gh-s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn load_one(toml_text: &str) -> Result<Hook, HookConfigError> {
        let mut files = files(toml_text);
        assert_eq!(files.len(), 1);
        files.remove(0).load(&env)
    }

    fn error(toml_text: &str) -> String {
        load_one(toml_text).expect_err("refused").to_string()
    }

    const TWILIO: &str = r#"
        [[hook]]
        name = "twilio"
        queue = "triage"
        kind = "whatsapp_message"
        verify = { kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN" }
        public_url = "https://api.example.com/v1/hooks/twilio"
    "#;

    #[test]
    fn loads_a_hook_and_debug_hides_the_secret() {
        let hook = load_one(TWILIO).expect("valid hook");
        assert_eq!(hook.name, "twilio");
        assert_eq!(hook.queue.as_str(), "triage");
        assert_eq!(hook.kind, "whatsapp_message");
        assert_eq!(hook.public_url.as_deref(), Some("https://api.example.com/v1/hooks/twilio"));
        let Verifier::Twilio { auth_token } = &hook.verifier else { panic!("twilio verifier") };
        assert_eq!(auth_token.expose(), b"tw-token-s3cr3t");
        let debug = format!("{hook:?} {:?}", hook.verifier);
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("Secret([redacted])"), "{debug}");
    }

    #[test]
    fn defaults_and_options_per_kind() {
        let hooks = load_all(
            files(
                r#"
                [[hook]]
                name = "stripe"
                queue = "billing"
                kind = "stripe_event"
                verify = { kind = "stripe", secret_env = "GITHUB_SECRET" }

                [[hook]]
                name = "stripe-slow"
                queue = "billing"
                kind = "stripe_event"
                verify = { kind = "stripe", secret_env = "GITHUB_SECRET", tolerance = "10m" }

                [[hook]]
                name = "generic"
                queue = "q"
                kind = "k"
                verify = { kind = "hmac-sha256", secret_env = "GITHUB_SECRET", header = "X-My-Sig", id_header = "Webhook-Id" }

                [[hook]]
                name = "generic-default"
                queue = "q"
                kind = "k"
                verify = { kind = "hmac-sha256", secret_env = "GITHUB_SECRET" }
                "#,
            ),
            &env,
        )
        .expect("valid hooks");
        assert!(
            matches!(&hooks[0].verifier, Verifier::Stripe { tolerance, .. } if *tolerance == Duration::from_secs(300))
        );
        assert!(
            matches!(&hooks[1].verifier, Verifier::Stripe { tolerance, .. } if *tolerance == Duration::from_secs(600))
        );
        let Verifier::HmacSha256 { header, id_header, .. } = &hooks[2].verifier else { panic!("hmac verifier") };
        assert_eq!((header.as_str(), id_header.as_deref()), ("x-my-sig", Some("webhook-id")));
        let Verifier::HmacSha256 { header, id_header, .. } = &hooks[3].verifier else { panic!("hmac verifier") };
        assert_eq!((header.as_str(), id_header.as_deref()), (DEFAULT_HMAC_HEADER, None));
    }

    #[test]
    fn secret_file_is_read_without_its_trailing_newline() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "file-s3cr3t").expect("write");
        let text = format!(
            "[[hook]]\nname = \"gh\"\nqueue = \"q\"\nkind = \"push\"\nverify = {{ kind = \"github\", secret_file = {:?} }}\n",
            file.path().display().to_string()
        );
        let hook = load_one(&text).expect("valid hook");
        let Verifier::GitHub { secret } = &hook.verifier else { panic!("github verifier") };
        assert_eq!(secret.expose(), b"file-s3cr3t");

        let empty = tempfile::NamedTempFile::new().expect("temp file");
        let text = text.replace(&file.path().display().to_string(), &empty.path().display().to_string());
        let message = error(&text);
        assert!(message.starts_with("hook gh: secret file ") && message.ends_with(" is empty"), "{message}");
    }

    fn with_verify(verify: &str) -> String {
        TWILIO.replace(r#"{ kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN" }"#, verify)
    }

    #[test]
    fn config_errors_name_the_hook_and_the_problem() {
        let cases = [
            (
                with_verify(r#"{ kind = "twilio", secret_env = "NOPE" }"#),
                "hook twilio: environment variable NOPE is not set",
            ),
            (
                with_verify(r#"{ kind = "twilio", secret_env = "EMPTY" }"#),
                "hook twilio: environment variable EMPTY is empty",
            ),
            (
                with_verify(r#"{ kind = "twillio", secret_env = "TWILIO_AUTH_TOKEN" }"#),
                "hook twilio: unknown verify kind \"twillio\"; expected twilio, github, stripe or hmac-sha256",
            ),
            (
                with_verify(r#"{ kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN", secret_file = "/x" }"#),
                "hook twilio: give verify.secret_env or verify.secret_file, not both",
            ),
            (with_verify(r#"{ kind = "twilio" }"#), "hook twilio: verify needs secret_env or secret_file"),
            (
                with_verify(r#"{ kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN", tolerance = "1s" }"#),
                "hook twilio: verify.tolerance applies only to verify kind stripe",
            ),
            (
                TWILIO.replace("public_url = \"https://api.example.com/v1/hooks/twilio\"", ""),
                "hook twilio: verify kind twilio needs public_url (the URL twilio calls and signs)",
            ),
            (
                TWILIO.replace("https://api.example.com", "api.example.com"),
                "hook twilio: public_url \"api.example.com/v1/hooks/twilio\" must start with https:// or http://",
            ),
            (
                TWILIO.replace("name = \"twilio\"", "name = \"twi lio\""),
                "hook twi lio: name must be 1 to 128 characters of letters, digits, '.', '_' and '-'",
            ),
            (
                TWILIO.replace("queue = \"triage\"", "queue = \"\""),
                "hook twilio: queue name \"\" must be 1 to 128 characters",
            ),
            (TWILIO.replace("kind = \"whatsapp_message\"", "kind = \"\""), "hook twilio: kind must not be empty"),
        ];
        for (text, expected) in cases {
            assert_eq!(error(&text), expected);
        }
    }

    #[test]
    fn stripe_tolerance_must_parse() {
        let message = error(
            r#"
            [[hook]]
            name = "stripe"
            queue = "q"
            kind = "k"
            verify = { kind = "stripe", secret_env = "GITHUB_SECRET", tolerance = "soon" }
            "#,
        );
        assert!(message.starts_with("hook stripe: verify.tolerance: invalid duration \"soon\""), "{message}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = format!("{TWILIO}\n{TWILIO}");
        let refused = load_all(files(&text), &env).expect_err("duplicate");
        assert_eq!(refused.to_string(), "hook twilio: defined more than once; hook names must be unique");
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        let text = TWILIO.replace("kind = \"whatsapp_message\"", "kind = \"m\"\nqeueu = \"x\"");
        assert!(toml::from_str::<Config>(&text).is_err());
        let text = with_verify(r#"{ kind = "twilio", secret_env = "TWILIO_AUTH_TOKEN", secret = "inline" }"#);
        assert!(toml::from_str::<Config>(&text).is_err());
    }
}
