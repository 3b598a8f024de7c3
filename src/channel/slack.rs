//! Slack Web API: `chat.postMessage` (or `chat.postEphemeral` for one user) with a Block Kit URL
//! button and unfurling off; `chat.update` on settle (ephemerals cannot be updated). Errors come
//! as HTTP 200 `{"ok":false,"error":…}`; rate limits as HTTP 429 with `Retry-After`.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{Channel, ChannelError, LinkMessage, MessageRef, retry_after_header};
use crate::domain::channel::ChannelTarget;

pub struct Slack {
    pub http: reqwest::Client,
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
        let answer: Value = response
            .json()
            .await
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
        message: &MessageRef,
        text: &str,
        _key: &str,
    ) -> Result<bool, ChannelError> {
        // Ephemerals can only be changed through an interaction's response_url.
        if message.starts_with("ephemeral:") {
            return Ok(false);
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
