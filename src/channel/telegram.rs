//! Telegram Bot API: `sendMessage` with an `inline_keyboard` URL button and link previews off;
//! `editMessageText` on settle (which also drops the keyboard). Failures are
//! `{"ok":false,"error_code","description","parameters"?}`; 429 carries
//! `parameters.retry_after`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{
    Channel, ChannelError, LinkMessage, MessageRef, Posted, read_answer, retry_after_header,
};
use crate::domain::channel::ChannelTarget;

pub struct Telegram {
    pub http: crate::outbound::HttpClient,
    /// `https://api.telegram.org`.
    pub api_base_url: Url,
    pub token: SecretString,
}

/// A bot token as BotFather issues it: `<bot id>:<secret>`.
pub fn check_token(token: &str) -> Result<(), String> {
    let ok = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && secret.len() >= 20
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(
            "bot_token must be a Telegram bot token (<bot id>:<secret>, as BotFather gives it)"
                .into(),
        )
    }
}

/// Chats are numeric ids (negative for groups) or `@channelusername`; Telegram refuses URL
/// buttons whose host has no dot (`BUTTON_URL_INVALID`), so links on such a host cannot go there.
pub fn check_target(to: &str, target: &ChannelTarget, link_base: &Url) -> Result<(), String> {
    let numeric = to.strip_prefix('-').unwrap_or(to);
    let username = to.strip_prefix('@').is_some_and(|u| {
        (5..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if !(username || (!numeric.is_empty() && numeric.bytes().all(|b| b.is_ascii_digit()))) {
        return Err(format!(
            "channel.to {to:?} is not a Telegram chat id (a number) or @username"
        ));
    }
    if let Some(t) = &target.thread
        && t.parse::<i64>().is_err()
    {
        return Err(format!(
            "channel.thread {t:?} is not a Telegram message_thread_id (a number)"
        ));
    }
    check_link_host(link_base)
}

/// Telegram's rule for button URLs, checked against the links this daemon makes.
pub fn check_link_host(link_base: &Url) -> Result<(), String> {
    let host = link_base.host_str().unwrap_or_default();
    if host.contains('.') || host.contains(':') {
        return Ok(());
    }
    Err(format!(
        "Telegram refuses button URLs whose host has no dot (BUTTON_URL_INVALID), and this daemon's \
         links are on {host:?} (public_url): use a dotted host name or an IP address"
    ))
}

fn chat_id(to: &str) -> Value {
    to.parse::<i64>().map_or_else(|_| json!(to), |n| json!(n))
}

impl Telegram {
    async fn call(&self, method: &str, body: Value) -> Result<Value, ChannelError> {
        // The token is part of the path (Telegram's scheme); the URL is never logged.
        let url = format!(
            "{}/bot{}/{method}",
            self.api_base_url.as_str().trim_end_matches('/'),
            self.token.expose_secret()
        );
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e.without_url()))?;
        let status = response.status();
        let header_wait = retry_after_header(response.headers());
        let body = read_answer(&self.http, response).await?;
        answer(status, header_wait, &body)
    }
}

/// A Bot API answer: `result` when `ok`, else its `error_code` classified.
pub(crate) fn answer(
    status: reqwest::StatusCode,
    header_wait: Option<Duration>,
    body: &[u8],
) -> Result<Value, ChannelError> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if answer["ok"] == true {
        return Ok(answer["result"].clone());
    }
    let code = answer["error_code"]
        .as_u64()
        .unwrap_or(u64::from(status.as_u16()));
    let description = answer["description"].as_str().unwrap_or("").to_owned();
    if code == 429 {
        let wait = answer["parameters"]["retry_after"]
            .as_u64()
            .map(Duration::from_secs)
            .or(header_wait);
        return Err(ChannelError::retry("429", wait));
    }
    if status.is_server_error() || code >= 500 {
        return Err(ChannelError::retry(code.to_string(), header_wait));
    }
    Err(ChannelError::permanent(code.to_string(), description))
}

#[async_trait]
impl Channel for Telegram {
    async fn send(
        &self,
        to: &ChannelTarget,
        message: &LinkMessage,
        _key: &str,
    ) -> Result<MessageRef, ChannelError> {
        let chat = to.to.as_deref().unwrap_or_default();
        let mut body = json!({
            "chat_id": chat_id(chat),
            "text": message.text,
            "link_preview_options": {"is_disabled": true},
            "reply_markup": {"inline_keyboard": [[{"text": message.label, "url": message.url}]]},
        });
        if let Some(thread) = to.thread.as_deref().and_then(|t| t.parse::<i64>().ok()) {
            body["message_thread_id"] = json!(thread);
        }
        let sent = self.call("sendMessage", body).await?;
        let (Some(id), Some(chat)) = (sent["message_id"].as_i64(), sent["chat"]["id"].as_i64())
        else {
            return Err(ChannelError::retry("unreadable_response", None));
        };
        Ok(format!("{chat}:{id}"))
    }

    async fn update(
        &self,
        _to: &ChannelTarget,
        posted: &Posted<'_>,
        text: &str,
        _key: &str,
    ) -> Result<bool, ChannelError> {
        let message = posted.message_ref;
        let Some((chat, id)) = message
            .split_once(':')
            .and_then(|(c, m)| Some((c.parse::<i64>().ok()?, m.parse::<i64>().ok()?)))
        else {
            return Err(ChannelError::permanent(
                "bad_message_ref",
                "not chat:message_id",
            ));
        };
        let body = json!({
            "chat_id": chat,
            "message_id": id,
            "text": text,
            "link_preview_options": {"is_disabled": true},
        });
        match self.call("editMessageText", body).await {
            Ok(_) => Ok(true),
            // A retried edit that already happened: the message says what it should.
            Err(ChannelError::Permanent { description, .. })
                if description.contains("message is not modified") =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}
