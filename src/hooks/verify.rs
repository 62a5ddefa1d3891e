//! Checking a delivery's signature, finding its delivery id, and building the job payload.
//!
//! Everything works on the raw body bytes, before any parsing: a signature covers the bytes
//! as sent, and a parse-and-reserialize round trip would change them.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::Verifier;

/// The headers that carry a signature; never copied into a payload.
const SIGNATURE_HEADERS: [&str; 5] =
    ["x-twilio-signature", "x-hub-signature", "x-hub-signature-256", "stripe-signature", "x-signature-256"];
/// Credentials that may ride along with a delivery; never copied into a payload.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
/// Longest delivery id kept; a longer one is not an id any provider sends.
const MAX_ID_LEN: usize = 256;

const FORM: &str = "application/x-www-form-urlencoded";

/// One webhook request, as the HTTP handler received it.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The URL as the provider addressed it: the hook's `public_url` (plus the request's query
    /// string, if any) or else the URL the server saw.
    pub url: &'a str,
    /// The request's headers, names lowercase.
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
    /// The current time, for Stripe's replay window.
    pub now_unix_secs: i64,
}

impl Delivery<'_> {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
    }

    /// The media type of the body, without parameters such as `; charset=utf-8`.
    pub fn content_type(&self) -> Option<&str> {
        let value = self.header("content-type")?;
        Some(value.split(';').next().unwrap_or(value).trim())
    }

    fn is_form(&self) -> bool {
        self.content_type().is_some_and(|t| t.eq_ignore_ascii_case(FORM))
    }

    fn is_json(&self) -> bool {
        self.content_type().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == "application/json" || t.ends_with("+json")
        })
    }
}

/// Why a delivery was refused. The messages name what was wrong and never the secret or the
/// expected signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signature header is absent.
    #[error("missing signature header {0}")]
    MissingSignature(String),
    /// The signature header cannot be read.
    #[error("malformed {header} header: {problem}")]
    MalformedHeader {
        /// The header.
        header: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The signature is well formed but does not match.
    #[error("signature mismatch")]
    Mismatch,
    /// Stripe: the signed timestamp is too far from now (a replay, or a badly wrong clock).
    #[error("signed timestamp is {skew_secs} s from now, outside the {tolerance_secs} s tolerance")]
    StaleTimestamp {
        /// Distance between the signed timestamp and now.
        skew_secs: u64,
        /// The allowed distance.
        tolerance_secs: u64,
    },
    /// Twilio: the body is not the one whose hash the signed URL carries.
    #[error("body does not match the bodySHA256 in the signed URL")]
    BodyHashMismatch,
    /// Twilio: a body the signature does not cover (neither a form nor hashed in the URL).
    #[error("body is neither a form nor covered by a bodySHA256 URL parameter")]
    UnsignedBody,
}

/// Checks that `d` was signed by the provider `verifier` describes.
pub fn verify(verifier: &Verifier, d: &Delivery) -> Result<(), Refusal> {
    match verifier {
        Verifier::GitHub { secret } => {
            let header = "x-hub-signature-256";
            let value = signature_header(d, header)?;
            let hex = value.strip_prefix("sha256=").ok_or_else(|| malformed(header, "expected sha256=<hex>"))?;
            let signature = hex_decode(hex).ok_or_else(|| malformed(header, "not hex"))?;
            check(mac_sha256(secret.expose(), &[d.body]), &signature)
        }
        Verifier::HmacSha256 { secret, header, .. } => {
            let value = signature_header(d, header)?;
            let hex = value.strip_prefix("sha256=").unwrap_or(value);
            let signature = hex_decode(hex).ok_or_else(|| malformed(header, "not hex"))?;
            check(mac_sha256(secret.expose(), &[d.body]), &signature)
        }
        Verifier::Stripe { secret, tolerance } => {
            let header = "stripe-signature";
            let value = signature_header(d, header)?;
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for item in value.split(',') {
                match item.trim().split_once('=') {
                    Some(("t", t)) => timestamp = Some(t),
                    // Several v1 entries while a secret is being rolled; any one may match.
                    // An undecodable one cannot match, so it is skipped as Stripe's libraries do.
                    Some(("v1", hex)) => signatures.extend(hex_decode(hex)),
                    // v0 and future schemes are not ours to check.
                    _ => {}
                }
            }
            let t = timestamp.ok_or_else(|| malformed(header, "no timestamp"))?;
            let signed_at: i64 = t.parse().map_err(|_| malformed(header, "timestamp is not a number"))?;
            if signatures.is_empty() {
                return Err(malformed(header, "no v1 signature"));
            }
            // The timestamp as sent, not as reformatted: the signature covers these bytes.
            let expected = mac_sha256(secret.expose(), &[t.as_bytes(), b".", d.body]);
            if !signatures.iter().any(|s| expected.clone().verify_slice(s).is_ok()) {
                return Err(Refusal::Mismatch);
            }
            // Checked after the signature, which is what makes the timestamp trustworthy.
            let skew_secs = d.now_unix_secs.abs_diff(signed_at);
            if skew_secs > tolerance.as_secs() {
                return Err(Refusal::StaleTimestamp { skew_secs, tolerance_secs: tolerance.as_secs() });
            }
            Ok(())
        }
        Verifier::Twilio { auth_token } => verify_twilio(auth_token.expose(), d),
    }
}

/// Twilio signs the URL it called followed by the form fields; a JSON body is covered instead
/// by a `bodySHA256` query parameter, which the signed URL carries.
fn verify_twilio(token: &[u8], d: &Delivery) -> Result<(), Refusal> {
    let header = "x-twilio-signature";
    let value = signature_header(d, header)?;
    let signature = BASE64.decode(value).map_err(|_| malformed(header, "not base64"))?;
    let body_hash = query_param(d.url, "bodySHA256");
    let params = if body_hash.is_some() {
        Vec::new()
    } else if d.is_form() {
        sorted_params(d.body)
    } else if d.body.is_empty() {
        Vec::new()
    } else {
        return Err(Refusal::UnsignedBody);
    };
    let signed = |url: &str| {
        let mut mac = mac::<Hmac<Sha1>>(token);
        mac.update(url.as_bytes());
        for (name, value) in &params {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        mac.verify_slice(&signature).is_ok()
    };
    if !url_variants(d.url).iter().any(|url| signed(url)) {
        return Err(Refusal::Mismatch);
    }
    if let Some(hex) = body_hash {
        let matches = hex_decode(&hex).is_some_and(|claimed| bool::from(Sha256::digest(d.body).ct_eq(&claimed)));
        if !matches {
            return Err(Refusal::BodyHashMismatch);
        }
    }
    Ok(())
}

/// Form fields sorted by name, then value, without duplicate pairs, as Twilio's SDKs sign them.
fn sorted_params(body: &[u8]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(body).map(|(n, v)| (n.into_owned(), v.into_owned())).collect();
    params.sort();
    params.dedup();
    params
}

/// The URL as given, then with its port removed or, when it has none, with the scheme's default
/// port added: Twilio's SDKs accept either, since a proxy may add or drop the port.
fn url_variants(url: &str) -> Vec<Cow<'_, str>> {
    let mut variants = vec![Cow::Borrowed(url)];
    let Some((scheme, rest)) = url.split_once("://") else { return variants };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return variants,
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    // A ':' inside an IPv6 literal ("[::1]") is not a port separator.
    let port_colon =
        authority[host_start..].rfind(':').map(|i| host_start + i).filter(|&i| !authority[i..].contains(']'));
    variants.push(Cow::Owned(match port_colon {
        Some(colon) => format!("{scheme}://{}{tail}", &authority[..colon]),
        None => format!("{scheme}://{authority}:{default_port}{tail}"),
    }));
    variants
}

/// The first value of query parameter `name` in `url`, decoded.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
}

/// The delivery's id, for deduplicating a provider's retries; `None` when it has none.
pub fn delivery_id(verifier: &Verifier, d: &Delivery) -> Option<String> {
    let id = match verifier {
        Verifier::GitHub { .. } => d.header("x-github-delivery").map(str::to_owned),
        Verifier::HmacSha256 { id_header, .. } => id_header.as_deref().and_then(|h| d.header(h)).map(str::to_owned),
        Verifier::Stripe { .. } => {
            // Retries resend the same event, so its id is the key.
            #[derive(serde::Deserialize)]
            struct Event {
                id: String,
            }
            serde_json::from_slice::<Event>(d.body).ok().map(|e| e.id)
        }
        Verifier::Twilio { .. } => match d.header("i-twilio-idempotency-token") {
            Some(token) => Some(token.to_owned()),
            None if d.is_form() => twilio_sid(d.body),
            None => None,
        },
    };
    id.filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
}

/// The message or call SID, with its status when present: status callbacks reuse the SID, and
/// each status is a distinct delivery.
fn twilio_sid(body: &[u8]) -> Option<String> {
    let field = |name: &str| form_urlencoded::parse(body).find(|(n, _)| n == name).map(|(_, v)| v.into_owned());
    let (sid, status) = match field("MessageSid") {
        Some(sid) => (sid, field("MessageStatus")),
        None => (field("CallSid")?, field("CallStatus")),
    };
    Some(match status {
        Some(status) => format!("{sid}:{status}"),
        None => sid,
    })
}

/// The job payload: `{"body": …, "headers": {…}}`, without signatures or credentials.
///
/// A JSON body becomes its value, a form body an object of field to string (a repeated field to
/// an array of strings), anything else a string (invalid UTF-8 replaced).
pub fn payload(verifier: &Verifier, d: &Delivery) -> Value {
    let json: Option<Value> = if d.is_json() { serde_json::from_slice(d.body).ok() } else { None };
    let body = match json {
        Some(value) => value,
        None if d.is_form() => form_object(d.body),
        None => Value::String(String::from_utf8_lossy(d.body).into_owned()),
    };
    let configured = match verifier {
        Verifier::HmacSha256 { header, .. } => Some(header.as_str()),
        _ => None,
    };
    let mut headers = Map::new();
    for (name, value) in d.headers {
        let name = name.to_ascii_lowercase();
        let secret = SIGNATURE_HEADERS.contains(&name.as_str())
            || CREDENTIAL_HEADERS.contains(&name.as_str())
            || configured == Some(name.as_str());
        if secret {
            continue;
        }
        // A repeated header is one comma-separated list (RFC 9110 §5.3).
        match headers.get_mut(&name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name, Value::String(value.clone()));
            }
        }
    }
    serde_json::json!({ "body": body, "headers": headers })
}

fn form_object(body: &[u8]) -> Value {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(name.as_ref()) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                fields.insert(name.into_owned(), value);
            }
        }
    }
    Value::Object(fields)
}

fn signature_header<'a>(d: &'a Delivery, header: &str) -> Result<&'a str, Refusal> {
    d.header(header).ok_or_else(|| Refusal::MissingSignature(header.to_owned()))
}

fn malformed(header: &str, problem: &'static str) -> Refusal {
    Refusal::MalformedHeader { header: header.to_owned(), problem }
}

/// A MAC keyed with `key`. HMAC takes a key of any length, so this cannot fail.
fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
    <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// HMAC-SHA256 of the concatenated `parts`, ready to verify.
fn mac_sha256(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = mac::<Hmac<Sha256>>(key);
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Compares in constant time (`verify_slice`).
fn check(mac: Hmac<Sha256>, signature: &[u8]) -> Result<(), Refusal> {
    mac.verify_slice(signature).map_err(|_| Refusal::Mismatch)
}

/// Hex to bytes, either case; `None` for anything else.
fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes().chunks_exact(2).map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hooks::Secret;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn delivery<'a>(url: &'a str, headers: &'a [(String, String)], body: &'a [u8]) -> Delivery<'a> {
        Delivery { url, headers, body, now_unix_secs: 0 }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // ---- GitHub ----

    fn github(secret: &str) -> Verifier {
        Verifier::GitHub { secret: Secret::new(secret) }
    }

    fn github_check(secret: &str, body: &[u8], signature: &str) -> Result<(), Refusal> {
        let h = headers(&[("x-hub-signature-256", signature)]);
        verify(&github(secret), &delivery("https://example.com/v1/hooks/gh", &h, body))
    }

    const GITHUB_DOCS_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_published_vectors() {
        assert_eq!(github_check("It's a Secret to Everybody", b"Hello, World!", GITHUB_DOCS_SIG), Ok(()));
        let octokit = "sha256=4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3";
        assert_eq!(github_check("mysecret", br#"{"foo":"bar"}"#, octokit), Ok(()));
    }

    #[test]
    fn github_refuses_a_flipped_bit_a_wrong_secret_and_bad_headers() {
        let mut body = b"Hello, World!".to_vec();
        body[0] ^= 1;
        assert_eq!(github_check("It's a Secret to Everybody", &body, GITHUB_DOCS_SIG), Err(Refusal::Mismatch));
        assert_eq!(
            github_check("It's a secret to everybody", b"Hello, World!", GITHUB_DOCS_SIG),
            Err(Refusal::Mismatch)
        );
        let bare = GITHUB_DOCS_SIG.trim_start_matches("sha256=");
        assert!(matches!(
            github_check("It's a Secret to Everybody", b"Hello, World!", bare),
            Err(Refusal::MalformedHeader { .. })
        ));
        assert!(matches!(
            github_check("It's a Secret to Everybody", b"Hello, World!", "sha256=zz"),
            Err(Refusal::MalformedHeader { .. })
        ));
        let none = headers(&[("content-type", "application/json")]);
        let refused = verify(&github("s"), &delivery("https://example.com/", &none, b"{}"));
        assert_eq!(refused, Err(Refusal::MissingSignature("x-hub-signature-256".into())));
        assert_eq!(refused.unwrap_err().to_string(), "missing signature header x-hub-signature-256");
    }

    // ---- Twilio ----

    const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const TWILIO_PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ];

    fn twilio() -> Verifier {
        Verifier::Twilio { auth_token: Secret::new("12345") }
    }

    fn form(params: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
    }

    fn twilio_check(url: &str, params: &[(&str, &str)], signature: &str) -> Result<(), Refusal> {
        let h = headers(&[("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", signature)]);
        let body = form(params);
        verify(&twilio(), &delivery(url, &h, body.as_bytes()))
    }

    #[test]
    fn twilio_form_vectors() {
        assert!(form(&TWILIO_PARAMS).contains("From=%2B14158675309"));
        assert_eq!(twilio_check(TWILIO_URL, &TWILIO_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Ok(()));
        let snippet = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ];
        assert_eq!(twilio_check(TWILIO_URL, &snippet, "GvWf1cFY/Q7PnoempGyD5oXAezc="), Ok(()));
        let repeated =
            [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")];
        assert_eq!(twilio_check(TWILIO_URL, &repeated, "IK+Dwps556ElfBT0I3Rgjkr1wJU="), Ok(()));
    }

    #[test]
    fn twilio_refuses_changed_params_and_bad_headers() {
        let mut changed = TWILIO_PARAMS;
        changed[1].1 = "1235";
        assert_eq!(twilio_check(TWILIO_URL, &changed, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Err(Refusal::Mismatch));
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert_eq!(twilio_check(other_url, &TWILIO_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Err(Refusal::Mismatch));
        assert!(matches!(
            twilio_check(TWILIO_URL, &TWILIO_PARAMS, "not base64!"),
            Err(Refusal::MalformedHeader { .. })
        ));
        let none = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let refused = verify(&twilio(), &delivery(TWILIO_URL, &none, b"a=b"));
        assert_eq!(refused, Err(Refusal::MissingSignature("x-twilio-signature".into())));
    }

    #[test]
    fn twilio_port_variants() {
        // Signed without the port; addressed with one.
        let with_port = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(twilio_check(with_port, &TWILIO_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Ok(()));
        // Signed with a non-default port kept.
        let http_port = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(twilio_check(http_port, &TWILIO_PARAMS, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="), Ok(()));
        // Signed with the default port added; addressed without it.
        assert_eq!(twilio_check(TWILIO_URL, &TWILIO_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w="), Ok(()));
        let http = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(twilio_check(http, &TWILIO_PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4="), Ok(()));
        // And the reverse: addressed with the default port, signed without it.
        let with_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(twilio_check(with_443, &TWILIO_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="), Ok(()));
    }

    #[test]
    fn url_variants_strip_or_add_the_port() {
        let strs = |url| url_variants(url).into_iter().map(Cow::into_owned).collect::<Vec<_>>();
        assert_eq!(strs("https://a.com/x?y=1"), ["https://a.com/x?y=1", "https://a.com:443/x?y=1"]);
        assert_eq!(strs("http://u:p@a.com:8080?q"), ["http://u:p@a.com:8080?q", "http://u:p@a.com?q"]);
        assert_eq!(strs("http://[::1]/x"), ["http://[::1]/x", "http://[::1]:80/x"]);
        assert_eq!(strs("http://[::1]:99"), ["http://[::1]:99", "http://[::1]"]);
        assert_eq!(strs("ftp://a.com/x"), ["ftp://a.com/x"]);
    }

    const TWILIO_JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const TWILIO_JSON_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    fn twilio_json(body: &str) -> Result<(), Refusal> {
        let url = format!("{TWILIO_URL}&bodySHA256={TWILIO_JSON_HASH}");
        let h =
            headers(&[("content-type", "application/json"), ("x-twilio-signature", "a9nBmqA0ju/hNViExpshrM61xv4=")]);
        verify(&twilio(), &delivery(&url, &h, body.as_bytes()))
    }

    #[test]
    fn twilio_json_body_is_covered_by_its_hash() {
        assert_eq!(hex(&Sha256::digest(TWILIO_JSON_BODY)), TWILIO_JSON_HASH);
        assert_eq!(twilio_json(TWILIO_JSON_BODY), Ok(()));
        let tampered = TWILIO_JSON_BODY.replace("true", "false");
        assert_eq!(twilio_json(&tampered), Err(Refusal::BodyHashMismatch));
    }

    #[test]
    fn twilio_refuses_a_body_its_signature_does_not_cover() {
        let h =
            headers(&[("content-type", "application/json"), ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")]);
        let refused = verify(&twilio(), &delivery(TWILIO_URL, &h, b"{}"));
        assert_eq!(refused, Err(Refusal::UnsignedBody));
    }

    // ---- Stripe ----

    /// stripe-dotnet's `event_test_signature.json`, byte for byte (484 bytes, trailing LF).
    const STRIPE_BODY: &str = r#"{
  "id": "evt_123",
  "object": "event",
  "account": "acct_123",
  "api_version": "2017-05-25",
  "created": 1533204620,
  "data": {
    "object": {
      "id": "cus_123",
      "object": "customer",
      "created": 123456789,
      "email": "test@stripe.com",
      "livemode": false,
      "metadata": {}
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_123",
    "idempotency_key": "idempotency-key-123"
  },
  "type": "customer.created"
}
"#;
    const STRIPE_T: i64 = 1533204620;
    const STRIPE_V1: &str = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";

    fn stripe() -> Verifier {
        Verifier::Stripe { secret: Secret::new("webhook_secret"), tolerance: Duration::from_secs(300) }
    }

    fn stripe_check(header: &str, now: i64) -> Result<(), Refusal> {
        let h = headers(&[("content-type", "application/json; charset=utf-8"), ("stripe-signature", header)]);
        let d = Delivery {
            now_unix_secs: now,
            ..delivery("https://example.com/v1/hooks/stripe", &h, STRIPE_BODY.as_bytes())
        };
        verify(&stripe(), &d)
    }

    #[test]
    fn stripe_published_vector_within_tolerance() {
        assert_eq!(STRIPE_BODY.len(), 484);
        let header = format!("t={STRIPE_T},v1={STRIPE_V1}");
        assert_eq!(stripe_check(&header, STRIPE_T + 100), Ok(()));
        assert_eq!(
            stripe_check(&header, STRIPE_T + 400),
            Err(Refusal::StaleTimestamp { skew_secs: 400, tolerance_secs: 300 })
        );
        assert_eq!(
            stripe_check(&header, STRIPE_T - 400),
            Err(Refusal::StaleTimestamp { skew_secs: 400, tolerance_secs: 300 })
        );
    }

    #[test]
    fn stripe_accepts_any_matching_v1() {
        let wrong = "a".repeat(64);
        let v0 = "63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
        let header = format!("t={STRIPE_T}, v1={wrong}, v1={STRIPE_V1}, v0={v0}");
        assert_eq!(stripe_check(&header, STRIPE_T + 100), Ok(()));
        assert_eq!(stripe_check(&format!("t={STRIPE_T},v1={wrong}"), STRIPE_T), Err(Refusal::Mismatch));
        // The timestamp is signed: changing it breaks the signature.
        assert_eq!(stripe_check(&format!("t={},v1={STRIPE_V1}", STRIPE_T + 1), STRIPE_T), Err(Refusal::Mismatch));
    }

    #[test]
    fn stripe_refuses_malformed_headers() {
        for header in [format!("v1={STRIPE_V1}"), "t=soon,v1=00".to_owned(), format!("t={STRIPE_T},v0=00")] {
            assert!(matches!(stripe_check(&header, STRIPE_T), Err(Refusal::MalformedHeader { .. })), "{header}");
        }
    }

    #[test]
    fn stripe_delivery_id_is_the_event_id() {
        let h = headers(&[]);
        assert_eq!(delivery_id(&stripe(), &delivery("", &h, STRIPE_BODY.as_bytes())).as_deref(), Some("evt_123"));
        assert_eq!(delivery_id(&stripe(), &delivery("", &h, b"{\"id\": 7}")), None);
        assert_eq!(delivery_id(&stripe(), &delivery("", &h, b"not json")), None);
    }

    // ---- generic HMAC-SHA256 ----

    fn generic(header: &str, id_header: Option<&str>) -> Verifier {
        Verifier::HmacSha256 {
            secret: Secret::new("generic-secret"),
            header: header.to_owned(),
            id_header: id_header.map(str::to_owned),
        }
    }

    #[test]
    fn hmac_sha256_round_trip_with_and_without_prefix() {
        let body = br#"{"event":"ping"}"#;
        let signature = hex(&mac_sha256(b"generic-secret", &[body]).finalize().into_bytes());
        for value in [format!("sha256={signature}"), signature.clone(), signature.to_uppercase()] {
            let h = headers(&[("x-signature-256", value.as_str())]);
            assert_eq!(verify(&generic("x-signature-256", None), &delivery("", &h, body)), Ok(()), "{value}");
        }
        let h = headers(&[("x-custom-sig", signature.as_str())]);
        assert_eq!(verify(&generic("x-custom-sig", None), &delivery("", &h, body)), Ok(()));
        assert_eq!(verify(&generic("x-custom-sig", None), &delivery("", &h, b"{}")), Err(Refusal::Mismatch));
        assert_eq!(
            verify(&generic("x-signature-256", None), &delivery("", &h, body)),
            Err(Refusal::MissingSignature("x-signature-256".into()))
        );
    }

    // ---- delivery ids ----

    #[test]
    fn delivery_ids_per_provider() {
        let id = |v: &Verifier, pairs: &[(&str, &str)], body: &str| {
            let h = headers(pairs);
            delivery_id(v, &delivery("", &h, body.as_bytes()))
        };
        let form_type = ("content-type", FORM);
        let token = ("i-twilio-idempotency-token", "tok-1");
        assert_eq!(id(&twilio(), &[form_type, token], "MessageSid=SM1").as_deref(), Some("tok-1"));
        assert_eq!(id(&twilio(), &[form_type], "MessageSid=SM1&Body=hi").as_deref(), Some("SM1"));
        let status = "MessageSid=SM1&MessageStatus=delivered";
        assert_eq!(id(&twilio(), &[form_type], status).as_deref(), Some("SM1:delivered"));
        let call = "CallSid=CA1&CallStatus=completed";
        assert_eq!(id(&twilio(), &[form_type], call).as_deref(), Some("CA1:completed"));
        assert_eq!(id(&twilio(), &[form_type], "Body=hi"), None);
        assert_eq!(id(&twilio(), &[], "MessageSid=SM1"), None, "only a form body has fields");

        let guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        assert_eq!(id(&github("s"), &[("x-github-delivery", guid)], "{}").as_deref(), Some(guid));
        assert_eq!(id(&github("s"), &[], "{}"), None);

        assert_eq!(id(&generic("x-sig", Some("webhook-id")), &[("webhook-id", "msg_1")], "").as_deref(), Some("msg_1"));
        assert_eq!(id(&generic("x-sig", Some("webhook-id")), &[], ""), None);
        assert_eq!(id(&generic("x-sig", None), &[("webhook-id", "msg_1")], ""), None);

        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(id(&github("s"), &[("x-github-delivery", long.as_str())], ""), None);
        assert_eq!(id(&github("s"), &[("x-github-delivery", &long[1..])], "").map(|i| i.len()), Some(MAX_ID_LEN));
        assert_eq!(id(&github("s"), &[("x-github-delivery", "")], ""), None);
    }

    // ---- payload ----

    #[test]
    fn payload_of_a_form_drops_signatures_and_credentials() {
        let h = headers(&[
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", "session=1"),
            ("x-hub-signature-256", "sha256=00"),
            ("stripe-signature", "t=1,v1=00"),
            ("x-signature-256", "00"),
            ("x-forwarded-for", "203.0.113.7"),
            ("accept", "text/plain"),
            ("accept", "*/*"),
        ]);
        let body = form(&[("Body", "hi there"), ("MediaUrl", "a"), ("MediaUrl", "b"), ("From", "+1415")]);
        let value = payload(&twilio(), &delivery(TWILIO_URL, &h, body.as_bytes()));
        assert_eq!(
            value,
            serde_json::json!({
                "body": { "Body": "hi there", "MediaUrl": ["a", "b"], "From": "+1415" },
                "headers": {
                    "content-type": "application/x-www-form-urlencoded; charset=utf-8",
                    "x-forwarded-for": "203.0.113.7",
                    "accept": "text/plain, */*",
                },
            })
        );
    }

    #[test]
    fn payload_of_json_and_of_anything_else() {
        let h = headers(&[("content-type", "application/json"), ("x-my-sig", "00"), ("x-github-event", "push")]);
        let value = payload(&generic("x-my-sig", None), &delivery("", &h, br#"{"a":[1,2]}"#));
        assert_eq!(
            value,
            serde_json::json!({ "body": { "a": [1, 2] }, "headers": {
            "content-type": "application/json", "x-github-event": "push" } })
        );

        let h = headers(&[("content-type", "text/plain")]);
        assert_eq!(payload(&github("s"), &delivery("", &h, b"caf\xc3\xa9 \xff"))["body"], "café \u{fffd}");
        // Declared JSON that does not parse is kept as text rather than lost.
        let h = headers(&[("content-type", "application/json")]);
        assert_eq!(payload(&github("s"), &delivery("", &h, b"{oops"))["body"], "{oops");
    }
}
