//! Matrix Client-Server API v3: an `m.notice` with an HTML link (Matrix has no buttons), sent
//! with `PUT …/send/m.room.message/{txnId}` where the txnId is derived from the session, so a
//! retry after a lost answer is recognised by the homeserver and not posted twice; on settle an
//! `m.replace` edit. Errors are `{"errcode","error"}`; rate limits 429 `M_LIMIT_EXCEEDED` with
//! `Retry-After` and/or `retry_after_ms`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{
    Channel, ChannelError, LinkMessage, MessageRef, Posted, read_answer, retry_after_header,
};
use crate::domain::channel::ChannelTarget;

pub struct Matrix {
    pub http: crate::outbound::HttpClient,
    pub homeserver_url: Url,
    pub token: SecretString,
}

/// Rooms by id (`!opaque:server`, or `!opaque` from room version 12 on; aliases cannot be sent
/// to); thread roots are event ids.
pub fn check_target(to: &str, target: &ChannelTarget) -> Result<(), String> {
    if !(to.len() > 1 && to.starts_with('!')) || to.contains(['/', '?', '#']) {
        return Err(format!(
            "channel.to {to:?} is not a Matrix room id (like !abc123:example.org)"
        ));
    }
    if let Some(t) = &target.thread
        && !t.starts_with('$')
    {
        return Err(format!(
            "channel.thread {t:?} is not a Matrix event id (like $abc123)"
        ));
    }
    Ok(())
}

/// Text and attribute values in `formatted_body`.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Matrix {
    /// `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}`, path segments encoded.
    async fn put_message(
        &self,
        room: &str,
        txn: &str,
        content: Value,
    ) -> Result<Value, ChannelError> {
        let mut url = self.homeserver_url.clone();
        url.path_segments_mut()
            .map_err(|_| ChannelError::permanent("bad_homeserver_url", "cannot carry a path"))?
            .pop_if_empty()
            .extend([
                "_matrix",
                "client",
                "v3",
                "rooms",
                room,
                "send",
                "m.room.message",
                txn,
            ]);
        let response = self
            .http
            .put(url)
            .bearer_auth(self.token.expose_secret())
            .json(&content)
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e))?;
        let status = response.status();
        let header_wait = retry_after_header(response.headers());
        let body = read_answer(&self.http, response).await?;
        answer(status, header_wait, &body)
    }
}

/// A Client-Server API answer: the body on 2xx, else its `errcode` classified.
pub(crate) fn answer(
    status: reqwest::StatusCode,
    header_wait: Option<Duration>,
    body: &[u8],
) -> Result<Value, ChannelError> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    let code = answer["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || code == "M_LIMIT_EXCEEDED" {
        // The header first (the spec's current signal), then the deprecated field.
        let wait =
            header_wait.or_else(|| answer["retry_after_ms"].as_u64().map(Duration::from_millis));
        return Err(ChannelError::retry(code, wait));
    }
    if status.is_server_error() {
        return Err(ChannelError::retry(code, header_wait));
    }
    let description = answer["error"].as_str().unwrap_or("").to_owned();
    Err(ChannelError::permanent(code, description))
}

#[async_trait]
impl Channel for Matrix {
    async fn send(
        &self,
        to: &ChannelTarget,
        message: &LinkMessage,
        key: &str,
    ) -> Result<MessageRef, ChannelError> {
        let room = to.to.as_deref().unwrap_or_default();
        let mut content = json!({
            "msgtype": "m.notice",
            "body": format!("{} {}: {}", message.text, message.label, message.url),
            "format": "org.matrix.custom.html",
            "formatted_body": format!(
                "{} <a href=\"{}\">{}</a>",
                html_escape(&message.text),
                html_escape(&message.url),
                html_escape(&message.label)
            ),
        });
        if let Some(root) = &to.thread {
            content["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root});
        }
        let answer = self.put_message(room, key, content).await?;
        answer["event_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ChannelError::retry("unreadable_response", None))
    }

    async fn update(
        &self,
        to: &ChannelTarget,
        posted: &Posted<'_>,
        text: &str,
        key: &str,
    ) -> Result<bool, ChannelError> {
        let message = posted.message_ref;
        let room = to.to.as_deref().unwrap_or_default();
        let content = json!({
            "msgtype": "m.notice",
            "body": format!("* {text}"),
            "m.new_content": {"msgtype": "m.notice", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": message},
        });
        self.put_message(room, key, content).await?;
        Ok(true)
    }
}
