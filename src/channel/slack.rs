//! Slack Web API: `chat.postMessage` (or `chat.postEphemeral` for one user) with a Block Kit URL
//! button and unfurling off; `chat.update` on settle (ephemerals cannot be updated). Errors come
//! as HTTP 200 `{"ok":false,"error":…}`; rate limits as HTTP 429 with `Retry-After`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{
    Channel, ChannelError, LinkMessage, MessageRef, Posted, read_answer, retry_after_header,
};
use crate::domain::channel::ChannelTarget;

pub struct Slack {
    pub http: crate::outbound::HttpClient,
    /// `https://slack.com/api`.
    pub api_base_url: Url,
    pub token: SecretString,
}

/// Slack ids: channels `C…`/`G…`/`D…`, users `U…`/`W…`; threads are message timestamps.
pub fn check_target(to: &str, target: &ChannelTarget) -> Result<(), String> {
    let id = |s: &str| {
        s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    if !id(to) {
        return Err(format!(
            "channel.to {to:?} is not a Slack channel id (like C0123ABCD)"
        ));
    }
    if let Some(user) = &target.user
        && !id(user)
    {
        return Err(format!(
            "channel.user {user:?} is not a Slack user id (like U0123ABCD)"
        ));
    }
    if let Some(ts) = &target.thread
        && !ts.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && (a.to_owned() + b).bytes().all(|b| b.is_ascii_digit())
        })
    {
        return Err(format!(
            "channel.thread {ts:?} is not a Slack message ts (like 1503435956.000247)"
        ));
    }
    Ok(())
}

/// Where Slack's `response_url`s live (`https://hooks.slack.com/actions/…`, CHANNELS.md §1.3).
pub const RESPONSE_URL_ORIGIN: &str = "https://hooks.slack.com";

/// Whether a click's `response_url` may be kept and later POSTed to: on Slack's own
/// `hooks.slack.com`, or on the host (scheme, host, port) of the channel's own API base URL —
/// which already gets the bot token, and is how a test or a private deployment points Slack at
/// another server — without credentials in it. The click is signed with the app's signing
/// secret, which the bot's admin holds, so its `response_url` is not trusted as Slack's word.
/// Private addresses are refused by the caller's rules (`webhooks.deny_private_networks` when
/// the URL is recorded, and the outbound client's resolver when it is called).
pub fn response_url_allowed(url: &Url, api_base_url: &Url) -> bool {
    let slack = Url::parse(RESPONSE_URL_ORIGIN).map(|u| u.origin()).ok();
    let origin = url.origin();
    url.username().is_empty()
        && url.password().is_none()
        && (slack.as_ref() == Some(&origin) || origin == api_base_url.origin())
}

/// mrkdwn control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Codes that mean "try again"; every other error is permanent (credentials, scopes, addressing
/// and payload errors do not fix themselves).
fn transient(code: &str) -> bool {
    matches!(
        code,
        "ratelimited"
            | "rate_limited"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "internal_error"
    )
}

impl Slack {
    async fn call(&self, method: &str, body: Value) -> Result<Value, ChannelError> {
        let url = format!(
            "{}/{method}",
            self.api_base_url.as_str().trim_end_matches('/')
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(self.token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e))?;
        let status = response.status();
        let retry_after = retry_after_header(response.headers());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ChannelError::retry("ratelimited", retry_after));
        }
        if status.is_server_error() {
            return Err(ChannelError::retry(status.as_str(), retry_after));
        }
        // Unreadable (empty) → `unreadable_response`, retried.
        let body = read_answer(&self.http, response).await?;
        answer(method, retry_after, &body)
    }
}

/// A Web API answer (HTTP 2xx-4xx): `ok`, or the `error` code classified.
pub(crate) fn answer(
    method: &str,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Value, ChannelError> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|_| ChannelError::retry("unreadable_response", None))?;
    if answer["ok"] == true {
        return Ok(answer);
    }
    let code = answer["error"]
        .as_str()
        .unwrap_or("unknown_error")
        .to_owned();
    if transient(&code) {
        return Err(ChannelError::retry(code, retry_after));
    }
    Err(ChannelError::permanent(
        code.clone(),
        format!("Slack {method} answered {code}"),
    ))
}

impl Slack {
    /// Replace an ephemeral message through its `response_url` (no token: the URL is the
    /// capability; it lives 30 minutes).
    async fn reply(&self, url: &SecretString, text: &str) -> Result<bool, ChannelError> {
        // Checked again here: a URL recorded before the check existed, or before the channel's
        // API base URL moved, is not called.
        let allowed = Url::parse(url.expose_secret())
            .is_ok_and(|u| response_url_allowed(&u, &self.api_base_url));
        if !allowed {
            return Err(ChannelError::permanent(
                "response_url_refused",
                "the click's response_url is not on Slack's hooks host",
            ));
        }
        let response = self
            .http
            .post(url.expose_secret())
            .json(&json!({
                "replace_original": true,
                "text": text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escape(text)}}],
            }))
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e.without_url()))?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => Ok(true),
            429 | 500..=599 => Err(ChannelError::retry(
                status.as_str(),
                retry_after_header(response.headers()),
            )),
            // Expired (after 30 minutes) or used up: the message stays as it is.
            _ => Err(ChannelError::permanent(
                "response_url_refused",
                format!("Slack answered {status}"),
            )),
        }
    }
}

#[async_trait]
impl Channel for Slack {
    async fn send(
        &self,
        to: &ChannelTarget,
        message: &LinkMessage,
        _key: &str,
    ) -> Result<MessageRef, ChannelError> {
        let channel = to.to.as_deref().unwrap_or_default();
        let mut body = json!({
            "channel": channel,
            // The notification fallback: no URL in it (Slack fetches URLs in text).
            "text": message.text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": escape(&message.text)}},
                {"type": "actions", "block_id": "authlink", "elements": [{
                    "type": "button",
                    "action_id": "authlink_open",
                    "style": "primary",
                    "text": {"type": "plain_text", "text": message.label_within(75)},
                    "url": message.url,
                    "value": message.session,
                }]},
            ],
        });
        if let Some(ts) = &to.thread {
            body["thread_ts"] = json!(ts);
        }
        if let Some(user) = &to.user {
            body["user"] = json!(user);
            let answer = self.call("chat.postEphemeral", body).await?;
            let ts = answer["message_ts"].as_str().unwrap_or_default();
            return Ok(format!("ephemeral:{channel}:{ts}"));
        }
        body["unfurl_links"] = json!(false);
        body["unfurl_media"] = json!(false);
        let answer = self.call("chat.postMessage", body).await?;
        let (Some(ch), Some(ts)) = (answer["channel"].as_str(), answer["ts"].as_str()) else {
            return Err(ChannelError::retry("unreadable_response", None));
        };
        Ok(format!("{ch}:{ts}"))
    }

    async fn update(
        &self,
        _to: &ChannelTarget,
        posted: &Posted<'_>,
        text: &str,
        _key: &str,
    ) -> Result<bool, ChannelError> {
        let message = posted.message_ref;
        if message.starts_with("ephemeral:") {
            // Ephemerals can only be changed through the response_url of the person's click.
            return match &posted.reply_url {
                Some(url) => self.reply(url, text).await,
                None => Ok(false),
            };
        }
        let Some((channel, ts)) = message.split_once(':') else {
            return Err(ChannelError::permanent("bad_message_ref", "not channel:ts"));
        };
        self.call(
            "chat.update",
            json!({
                "channel": channel,
                "ts": ts,
                "text": text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escape(text)}}],
            }),
        )
        .await?;
        Ok(true)
    }
}

/// A person's click on a link button, as Slack reports it to the app's Interactivity Request
/// URL: which session's button, who clicked, and the `response_url` that can replace the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Click {
    pub session: String,
    pub user: String,
    pub response_url: Url,
}

/// Slack's request signing: `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of
/// `v0:{X-Slack-Request-Timestamp}:{body}` with the app's signing secret; requests older (or
/// newer) than five minutes are refused, so a captured one cannot be replayed later.
pub fn verify_request(
    signing_secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_unix: i64,
) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if now_unix.abs_diff(ts) > 300 {
        return false;
    }
    let Some(given) = signature
        .strip_prefix("v0=")
        .and_then(|h| (h.len() == 64 && h.is_ascii()).then_some(h))
        .and_then(|h| {
            (0..32)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
    else {
        return false;
    };
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(signing_secret.as_bytes())
    else {
        return false;
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The click on an authlink button in a `block_actions` payload (form field `payload`), if the
/// request is one.
pub fn parse_click(form_body: &[u8]) -> Option<Click> {
    let payload = url::form_urlencoded::parse(form_body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())?;
    let payload: Value = serde_json::from_str(&payload).ok()?;
    if payload["type"] != "block_actions" {
        return None;
    }
    let action = payload["actions"]
        .as_array()?
        .iter()
        .find(|a| a["action_id"] == "authlink_open")?;
    Some(Click {
        session: action["value"].as_str()?.to_owned(),
        user: payload["user"]["id"].as_str()?.to_owned(),
        response_url: payload["response_url"].as_str()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, ts: &str, body: &str) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:{body}").as_bytes());
        format!("v0={}", crate::crypto::hex(&mac.finalize().into_bytes()))
    }

    #[test]
    fn requests_are_verified_by_signature_and_age() {
        // Slack's documented example.
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert!(verify_request(
            secret,
            "1531420618",
            sig,
            body.as_bytes(),
            1531420618
        ));
        assert!(
            !verify_request(secret, "1531420618", sig, body.as_bytes(), 1531420618 + 301),
            "too old"
        );
        assert!(!verify_request(
            "other",
            "1531420618",
            sig,
            body.as_bytes(),
            1531420618
        ));
        assert!(
            !verify_request(secret, "1531420619", sig, body.as_bytes(), 1531420618),
            "timestamp is signed"
        );
        assert!(!verify_request(
            secret,
            "1531420618",
            "v0=zz",
            body.as_bytes(),
            1531420618
        ));
        let mine = sign("s", "100", "payload=x");
        assert!(verify_request("s", "100", &mine, b"payload=x", 100));
    }

    /// Found while writing the `channel_responses` fuzz target (overflow checks on; the input
    /// is in its corpus): a timestamp far from now overflowed the age check, and a 64-byte
    /// signature with a multi-byte character was cut inside the character. Both are refused.
    #[test]
    fn extreme_timestamps_and_non_ascii_signatures_are_refused() {
        let now = 1_800_000_000;
        for ts in [i64::MIN.to_string(), i64::MAX.to_string()] {
            let sig = sign("s", &ts, "b");
            assert!(!verify_request("s", &ts, &sig, b"b", now), "{ts}");
        }
        let odd = format!("v0=a\u{e9}{}", "0".repeat(61));
        assert_eq!(odd.len(), 67);
        assert!(!verify_request("s", "1800000000", &odd, b"b", now));
    }

    /// Issue 24, finding 10: a click's `response_url` is kept (and later POSTed to) only on
    /// Slack's hooks host or the channel's own API host.
    #[test]
    fn response_urls_are_only_slacks() {
        let slack = Url::parse("https://slack.com/api").unwrap();
        let fake = Url::parse("http://127.0.0.1:4000/api").unwrap();
        let allowed = |u: &str, base: &Url| response_url_allowed(&Url::parse(u).unwrap(), base);
        assert!(allowed(
            "https://hooks.slack.com/actions/T1/397700885554/96rGlfmibIGlgcZRskXaIFfN",
            &slack
        ));
        assert!(allowed(
            "https://HOOKS.slack.com:443/actions/T1/1/x",
            &slack
        ));
        assert!(allowed("http://127.0.0.1:4000/actions/x", &fake));
        for refused in [
            "https://evil.example/actions/x",
            "https://hooks.slack.com.evil.example/actions/x",
            "https://evilhooks.slack.com/actions/x",
            "http://hooks.slack.com/actions/x",
            "https://hooks.slack.com:8443/actions/x",
            "https://u:p@hooks.slack.com/actions/x",
            "http://127.0.0.1:4001/actions/x",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(!allowed(refused, &slack), "{refused}");
            assert!(!allowed(refused, &fake), "{refused}");
        }
    }
}
