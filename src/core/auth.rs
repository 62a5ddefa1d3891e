//! Who may do what: roles, queue patterns, and the API tokens that carry them.
//!
//! # Overview
//!
//! Every call is one [`Action`]. A token has one [`Role`], which allows a set of actions, and
//! optionally [`QueuePatterns`], which limit the queues it may act on (`pdf*`):
//!
//! ```text
//!   reader    read: every GET, event streams, /metrics (not tokens)
//!   producer  reader + enqueue, cancel
//!   worker    reader + lease, heartbeat, complete, fail, release, ack
//!   admin     everything: queue policy, pause, redrive, delete, tokens
//! ```
//!
//! Managing tokens needs an admin token without queue patterns: an admin limited to `pdf*`
//! could otherwise mint itself an unlimited one.
//!
//! # Tokens
//!
//! A minted token reads `wharf_<id>_<secret>`: the id (12 base32 characters) names it in
//! listings and logs and finds it in the store; the secret is 256 random bits. Only the
//! SHA-256 of the whole token is stored, and a presented token is checked by hashing it and
//! comparing in constant time. (A slow password hash adds nothing for 256 random bits.) The
//! token itself is shown once, when it is created.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::validate::Invalid;

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads everything but tokens.
    Reader,
    /// Reads, enqueues and cancels.
    Producer,
    /// Reads, and runs jobs: lease, heartbeat, complete, fail, release, ack.
    Worker,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, least to most.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Producer, Role::Worker, Role::Admin];

    /// The role's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    /// True when the role allows `action`.
    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::Enqueue | Action::Cancel => matches!(self, Role::Producer | Role::Admin),
            Action::Work => matches!(self, Role::Worker | Role::Admin),
            Action::Manage | Action::Tokens => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| Invalid::new("role", "must be reader, producer, worker or admin"))
    }
}

/// What a call does, as far as permissions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Any read: jobs, queues, workers, event streams, metrics, the OpenAPI document.
    Read,
    /// Enqueue jobs.
    Enqueue,
    /// Cancel a job.
    Cancel,
    /// Lease jobs and report on them.
    Work,
    /// Change queues: policy, pause, resume, redrive, delete.
    Manage,
    /// Create, list and revoke tokens.
    Tokens,
}

impl Action {
    /// Every action, in the order the roles add them.
    pub const ALL: [Action; 6] =
        [Action::Read, Action::Enqueue, Action::Cancel, Action::Work, Action::Manage, Action::Tokens];

    /// The action's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Enqueue => "enqueue",
            Action::Cancel => "cancel",
            Action::Work => "work",
            Action::Manage => "manage",
            Action::Tokens => "tokens",
        }
    }
}

/// The queues a token may act on: names with `*` matching any run of characters. No pattern
/// means every queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePatterns(Vec<String>);

/// Most patterns a token may carry.
pub const MAX_PATTERNS: usize = 32;

impl QueuePatterns {
    /// Every queue.
    pub fn all() -> Self {
        QueuePatterns(Vec::new())
    }

    /// Patterns from their list; each is 1–128 characters of queue-name characters and `*`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Invalid> {
        if patterns.len() > MAX_PATTERNS {
            return Err(Invalid::new("queues", format!("must have at most {MAX_PATTERNS} patterns")));
        }
        let mut out = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            let valid = !pattern.is_empty()
                && pattern.len() <= 128
                && pattern.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'));
            if !valid {
                return Err(Invalid::new(
                    "queues",
                    format!(
                        "pattern {} must be 1 to 128 characters of letters, digits, '.', '_', '-' and '*'",
                        super::validate::echo(pattern)
                    ),
                ));
            }
            if pattern == "*" {
                return Ok(QueuePatterns::all());
            }
            out.push(pattern.to_owned());
        }
        Ok(QueuePatterns(out))
    }

    /// True when any queue is allowed.
    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, as given.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// True when `queue` is allowed.
    pub fn matches(&self, queue: &str) -> bool {
        self.is_all() || self.0.iter().any(|p| glob(p.as_bytes(), queue.as_bytes()))
    }
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The classic two-pointer match with backtracking to the last star: linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A secret: a token or a signing key.
///
/// Its `Debug` hides the value and it has neither `Display` nor `Serialize`, so printing a
/// configuration that holds one cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The bytes, for a MAC.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The text, to send it where it belongs.
    pub fn expose_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The prefix of every minted token.
pub const TOKEN_PREFIX: &str = "wharf_";
/// Characters of a token id.
pub const TOKEN_ID_LEN: usize = 12;
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new token, from 40 random bytes (7.5 of them make the id, 32 the secret).
pub fn mint_token(random: &[u8; 40]) -> (String, String) {
    use base64::Engine as _;
    let mut bits = u64::from_be_bytes(random[..8].try_into().unwrap_or_default());
    let mut id = String::with_capacity(TOKEN_ID_LEN);
    for _ in 0..TOKEN_ID_LEN {
        id.push(char::from(ALPHABET[(bits & 31) as usize]));
        bits >>= 5;
    }
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[8..]);
    (format!("{TOKEN_PREFIX}{id}_{secret}"), id)
}

/// The id of a minted token (`wharf_<id>_<secret>`), if `token` has that shape.
pub fn token_id(token: &str) -> Option<&str> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    (id.len() == TOKEN_ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b)) && !secret.is_empty()).then_some(id)
}

/// What is stored of a token: the SHA-256 of the whole token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// True when `token` hashes to `hash`, compared in constant time.
pub fn token_matches(token: &str, hash: &[u8; 32]) -> bool {
    token_hash(token).ct_eq(hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roles_allow_what_the_table_says() {
        use Action::*;
        let table = [
            (Role::Reader, [true, false, false, false, false, false]),
            (Role::Producer, [true, true, true, false, false, false]),
            (Role::Worker, [true, false, false, true, false, false]),
            (Role::Admin, [true, true, true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (action, expected) in [Read, Enqueue, Cancel, Work, Manage, Tokens].into_iter().zip(allowed) {
                assert_eq!(role.allows(action), expected, "{role} {action:?}");
            }
        }
    }

    #[test]
    fn patterns_match_with_stars() {
        let p = QueuePatterns::parse(&["pdf*", "labs", "*-eu"]).unwrap();
        for yes in ["pdf", "pdf-render", "labs", "video-eu"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in ["lab", "labs2", "xpdf", "video-us"] {
            assert!(!p.matches(no), "{no}");
        }
        assert!(QueuePatterns::parse(&["*"]).unwrap().is_all());
        assert!(QueuePatterns::parse(&["a/b"]).is_err());
        assert!(QueuePatterns::parse(&[""]).is_err());
    }

    #[test]
    fn minted_tokens_have_an_id_and_check_against_their_hash() {
        let (token, id) = mint_token(&[7; 40]);
        assert_eq!(token_id(&token), Some(id.as_str()));
        assert!(token.len() > 50, "{token}");
        let hash = token_hash(&token);
        assert!(token_matches(&token, &hash));
        assert!(!token_matches(&format!("{token}x"), &hash));
        assert_eq!(token_id("wharf_short_x"), None);
        assert_eq!(token_id("not-a-wharf-token"), None);
    }

    proptest! {
        #[test]
        fn a_star_pattern_matches_every_name_with_its_prefix(prefix in "[a-z]{0,8}", rest in "[a-z0-9._-]{0,20}") {
            let p = QueuePatterns::parse(&[format!("{prefix}*")]).unwrap();
            let name = format!("{prefix}{rest}");
            prop_assert!(p.matches(&name));
        }

        #[test]
        fn an_exact_pattern_matches_only_itself(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
            let p = QueuePatterns::parse(std::slice::from_ref(&a)).unwrap();
            prop_assert_eq!(p.matches(&b), a == b);
        }
    }
}
