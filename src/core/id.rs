//! Time-sortable identifiers for jobs, and lease tokens from the same sequence.
//!
//! An id is a positive 63-bit integer: 44 bits of milliseconds since 2024-01-01 UTC, then a
//! 19-bit sequence within the millisecond. Ids from one [`IdGenerator`] strictly increase, so
//! they sort by creation time, serve as the store's primary key (no second index), and bound
//! time-range scans (`JobId::floor_at`). On the wire an id is 13 characters of lowercase
//! Crockford base32, e.g. `0ksd3n2a4q8c0`: fixed width, so text order is time order.

use std::fmt;
use std::str::FromStr;

use super::time::Timestamp;

/// Milliseconds from the Unix epoch to the id epoch, 2024-01-01T00:00:00Z.
const ID_EPOCH_MS: i64 = 1_704_067_200_000;
/// Bits of the per-millisecond sequence.
const SEQ_BITS: u32 = 19;
/// The low bits of an id: its sequence within the millisecond.
pub const SEQ_MASK: i64 = (1 << SEQ_BITS) - 1;
/// Crockford's base32 alphabet, lowercase: no `i`, `l`, `o` or `u` to misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters in the text form: 13 × 5 bits covers 63 bits.
const TEXT_LEN: usize = 13;

fn encode(value: i64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    debug_assert!(value >= 0);
    let mut buf = [0u8; TEXT_LEN];
    let mut v = value as u64;
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    // The alphabet is ASCII, so the buffer is valid UTF-8.
    f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
}

fn decode(text: &str) -> Option<i64> {
    if text.len() != TEXT_LEN {
        return None;
    }
    let mut v: u64 = 0;
    for byte in text.bytes() {
        let digit = match byte.to_ascii_lowercase() {
            b @ b'0'..=b'9' => b - b'0',
            b => ALPHABET.iter().position(|&a| a == b)? as u8,
        };
        if v >> 59 != 0 {
            return None; // more than 64 bits
        }
        v = (v << 5) | u64::from(digit);
    }
    // 13 characters hold 65 bits; the top two must be clear for a positive i64.
    i64::try_from(v).ok()
}

/// The identity of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(i64);

impl JobId {
    /// Wraps a raw id read back from a store.
    pub const fn from_raw(raw: i64) -> Self {
        JobId(raw)
    }

    /// The raw integer, as stored.
    pub const fn raw(self) -> i64 {
        self.0
    }

    /// The smallest id that could have been generated at `at`: every job created before `at`
    /// has a smaller id, which bounds scans by creation time. Times before the ids' epoch give
    /// the smallest id, times past their range the largest.
    pub fn floor_at(at: Timestamp) -> Self {
        let ms = at.as_millis().saturating_sub(ID_EPOCH_MS).clamp(0, i64::MAX >> SEQ_BITS);
        JobId(ms << SEQ_BITS)
    }

    /// The millisecond this id was generated in (or later, under a burst of more than 2^19 ids
    /// in one millisecond).
    pub fn created_at(self) -> Timestamp {
        Timestamp::from_millis((self.0 >> SEQ_BITS) + ID_EPOCH_MS)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        encode(self.0, f)
    }
}

/// The text was not a well-formed id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid id (13 characters of base32)")]
pub struct MalformedId(pub String);

impl FromStr for JobId {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(JobId).ok_or_else(|| MalformedId(s.to_owned()))
    }
}

/// The fencing token of one lease: a sequence number and a secret.
///
/// The **sequence** comes from the same generator as job ids, so the tokens of one job strictly
/// increase across its leases and no two leases share one, even across restarts: it is the
/// fencing order. The **secret** is 128 random bits drawn for each lease, so a token cannot be
/// computed from anything public (a job's id and `started_at` give away its sequence). A
/// completion, failure, heartbeat or release is accepted only with the job's current token,
/// secret included.
///
/// On the wire a token is 39 characters: the sequence in 13 base32 characters, then the
/// secret in 26. A token stored before secrets existed has secret 0 and prints as its 13
/// characters alone.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken {
    seq: i64,
    secret: u128,
}

impl LeaseToken {
    /// A token without a secret (as stored before secrets existed): for reading old rows.
    pub const fn from_raw(seq: i64) -> Self {
        LeaseToken { seq, secret: 0 }
    }

    /// A token from its sequence and secret.
    pub const fn from_parts(seq: i64, secret: u128) -> Self {
        LeaseToken { seq, secret }
    }

    /// The sequence number, as stored: the fencing order.
    pub const fn raw(self) -> i64 {
        self.seq
    }

    /// The secret, 0 for a token from before secrets.
    pub const fn secret(self) -> u128 {
        self.secret
    }
}

impl fmt::Debug for LeaseToken {
    // The secret is a credential: it never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseToken({}, …)", self.seq)
    }
}

/// Characters of a token's secret: 26 × 5 bits covers 128 bits.
const SECRET_LEN: usize = 26;

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        encode(self.seq, f)?;
        if self.secret != 0 {
            let mut buf = [0u8; SECRET_LEN];
            let mut v = self.secret;
            for slot in buf.iter_mut().rev() {
                *slot = ALPHABET[(v & 31) as usize];
                v >>= 5;
            }
            f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl FromStr for LeaseToken {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || MalformedId(s.chars().take(64).collect());
        let (seq, secret) = match s.len() {
            TEXT_LEN => (s, None),
            n if n == TEXT_LEN + SECRET_LEN && s.is_ascii() => (&s[..TEXT_LEN], Some(&s[TEXT_LEN..])),
            _ => return Err(malformed()),
        };
        let seq = decode(seq).ok_or_else(malformed)?;
        let secret = match secret {
            None => 0,
            Some(text) => {
                let mut v: u128 = 0;
                for byte in text.bytes() {
                    let digit = ALPHABET.iter().position(|&a| a == byte.to_ascii_lowercase()).ok_or_else(malformed)?;
                    if v >> 123 != 0 {
                        return Err(malformed()); // more than 128 bits
                    }
                    v = (v << 5) | digit as u128;
                }
                // A zero secret is the mark of a token without one; it is never drawn.
                if v == 0 {
                    return Err(malformed());
                }
                v
            }
        };
        Ok(LeaseToken { seq, secret })
    }
}

/// Hands out strictly increasing, time-sortable ids.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    last: i64,
}

impl IdGenerator {
    /// A generator whose next id is greater than `last` (the largest id or token already stored),
    /// so a clock that moved backwards across a restart cannot repeat an id.
    pub fn resume_after(last: i64) -> Self {
        IdGenerator { last }
    }

    /// The largest id or token handed out so far.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The next raw id at time `now`.
    pub fn next_raw(&mut self, now: Timestamp) -> i64 {
        let candidate = JobId::floor_at(now).0;
        let id = if candidate > self.last { candidate } else { self.last + 1 };
        debug_assert!(id > self.last);
        self.last = id;
        id
    }

    /// The next job id.
    pub fn job_id(&mut self, now: Timestamp) -> JobId {
        JobId(self.next_raw(now))
    }

    /// The next lease token, with `secret` (128 random bits, never 0).
    pub fn lease_token(&mut self, now: Timestamp, secret: u128) -> LeaseToken {
        debug_assert!(secret != 0, "a zero secret marks a token without one");
        LeaseToken { seq: self.next_raw(now), secret }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_increase_within_one_millisecond_and_across_a_clock_step_back() {
        let mut ids = IdGenerator::resume_after(0);
        let t = Timestamp::from_millis(1_800_000_000_000);
        let a = ids.job_id(t);
        let b = ids.job_id(t);
        let c = ids.job_id(Timestamp::from_millis(1_700_000_000_000));
        assert!(a < b && b < c);
        assert_eq!(a.created_at(), t);
    }

    #[test]
    fn text_form_is_fixed_width_and_case_insensitive() {
        let id = JobId::from_raw(123_456_789_012);
        let text = id.to_string();
        assert_eq!(text.len(), 13);
        assert_eq!(text.to_uppercase().parse::<JobId>(), Ok(id));
        assert!("short".parse::<JobId>().is_err());
        assert!("zzzzzzzzzzzzz".parse::<JobId>().is_err(), "65-bit value must not parse");
        assert!("0000000000i00".parse::<JobId>().is_err(), "i is not in the alphabet");
    }

    #[test]
    fn lease_tokens_carry_their_secret_on_the_wire() {
        let token = LeaseToken::from_parts(123_456_789, u128::MAX - 7);
        let text = token.to_string();
        assert_eq!(text.len(), 39);
        assert_eq!(text.parse::<LeaseToken>(), Ok(token));
        assert_eq!(text.to_uppercase().parse::<LeaseToken>(), Ok(token));
        // The sequence alone is not the token.
        assert_ne!(text[..13].parse::<LeaseToken>(), Ok(token));
        assert!(format!("{}{}", &text[..13], "0".repeat(26)).parse::<LeaseToken>().is_err(), "zero secret");
        assert!(format!("{}{}", &text[..13], "z".repeat(26)).parse::<LeaseToken>().is_err(), "over 128 bits");
        assert!(!format!("{token:?}").contains(&text[13..]), "Debug hides the secret");
    }

    proptest! {
        #[test]
        fn lease_tokens_round_trip(seq in 0i64..i64::MAX, secret in 1u128..) {
            let token = LeaseToken::from_parts(seq, secret);
            prop_assert_eq!(token.to_string().parse::<LeaseToken>(), Ok(token));
        }

        #[test]
        fn text_round_trips_and_preserves_order(a in 0i64..i64::MAX, b in 0i64..i64::MAX) {
            let (ja, jb) = (JobId::from_raw(a), JobId::from_raw(b));
            prop_assert_eq!(ja.to_string().parse::<JobId>(), Ok(ja));
            prop_assert_eq!(a.cmp(&b), ja.to_string().cmp(&jb.to_string()));
        }

        #[test]
        fn floor_at_never_overflows_and_never_goes_back(ms in i64::MIN..i64::MAX) {
            let (floor, next) = (JobId::floor_at(Timestamp::from_millis(ms)), JobId::floor_at(Timestamp::from_millis(ms + 1)));
            prop_assert!(floor.raw() >= 0 && floor <= next);
        }

        #[test]
        fn floor_at_bounds_every_id_generated_later(start in 1_704_067_200_000i64..4_000_000_000_000, later in 0u64..1_000_000) {
            let mut ids = IdGenerator::resume_after(0);
            let at = Timestamp::from_millis(start);
            let id = ids.job_id(at.plus_millis(later));
            prop_assert!(JobId::floor_at(at) <= id);
        }
    }
}
