//! Sending alarm transitions to webhooks.
//!
//! One POST per transition and webhook, with a JSON body whose `text` makes it a valid Slack
//! or Mattermost incoming-webhook message. A 2xx answer is delivery; anything else (an error
//! status, a refused connection, no answer within [`TIMEOUT`]) is retried with exponential
//! backoff up to [`MAX_DELAY`] apart, for [`GIVE_UP_AFTER`]. Redirects are not followed.

use std::time::Duration;

use crate::api::AlarmNotification;

/// How long a webhook may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry's delay; each next one doubles.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between retries.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// A transition still undelivered after this long is dropped (and logged).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before retry number `attempts` (1 for the first retry).
pub fn retry_delay(attempts: u32) -> Duration {
    FIRST_DELAY.saturating_mul(1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX)).min(MAX_DELAY)
}

/// The HTTP client webhooks are sent with.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Sends one notification to one webhook; the error says why it was not delivered.
pub async fn send(http: &reqwest::Client, url: &str, body: &AlarmNotification) -> Result<(), String> {
    match http.post(url).json(body).send().await {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) => Err(format!("answered {}", answer.status())),
        Err(err) if err.is_timeout() => Err(format!("no answer within {}", humantime::format_duration(TIMEOUT))),
        Err(err) => Err(format!("cannot reach it: {err}")),
    }
}

/// `url` as shown to API callers: scheme and host only (the path of a Slack webhook is its
/// secret).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "…".to_owned() };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the authority are secret too.
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if rest.len() > host.len() { format!("{scheme}://{host}/…") } else { format!("{scheme}://{host}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let delays: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(200), MAX_DELAY);
    }

    #[test]
    fn urls_show_scheme_and_host_only() {
        assert_eq!(redact("https://hooks.slack.com/services/T0/B0/XXX"), "https://hooks.slack.com/…");
        assert_eq!(redact("http://user:pw@127.0.0.1:9000/x?y"), "http://127.0.0.1:9000/…");
        assert_eq!(redact("http://h.example"), "http://h.example");
        assert_eq!(redact("nonsense"), "…");
    }
}
