//! A channel gateway of the bot's own: the link message as a signed `auth_link.issued` event
//! (Standard Webhooks, the bot's webhook secrets), and `auth_link.updated` when the session
//! settles. The `webhook-id` is derived from the session, so a retry is recognisable.

use async_trait::async_trait;
use serde_json::json;
use url::Url;

use super::{Channel, ChannelError, LinkMessage, MessageRef, Posted, retry_after_header};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::BotId;
use crate::domain::channel::ChannelTarget;
use crate::domain::session::Session;
use crate::store::Store;

pub struct Gateway<'a> {
    pub http: crate::outbound::HttpClient,
    pub url: Url,
    pub bot: BotId,
    pub session: Session,
    pub store: &'a dyn Store,
    pub config: &'a Config,
    pub clock: &'a Clock,
}

impl Gateway<'_> {
    async fn post(
        &self,
        id: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), ChannelError> {
        let now = self.clock.now();
        let body = json!({
            "type": kind,
            "timestamp": crate::clock::rfc3339::format(now),
            "data": data,
        })
        .to_string();
        let ts = now.unix_timestamp();
        let signatures =
            crate::webhook::send::signatures(self.store, self.config, &self.bot, id, ts, &body)
                .await
                .map_err(|_| ChannelError::retry("store_unavailable", None))?;
        if signatures.is_empty() {
            return Err(ChannelError::permanent(
                "no_webhook_secret",
                "the bot has no webhook secret: POST /v1/bots/{bot}/webhook-secrets",
            ));
        }
        let response = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(body)
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let wait = retry_after_header(response.headers());
        match status.as_u16() {
            408 | 425 | 429 | 500..=599 => Err(ChannelError::retry(status.as_str(), wait)),
            _ => Err(ChannelError::permanent(
                status.as_str(),
                format!("the channel gateway answered {status}"),
            )),
        }
    }

    fn about(&self) -> serde_json::Value {
        let spec = &self.session.spec;
        json!({
            "session_id": spec.id,
            "bot": spec.bot,
            "integration": spec.integration,
            "user_id": spec.subject,
            "conversation_id": spec.conversation_id,
            "channel": spec.channel,
        })
    }
}

#[async_trait]
impl Channel for Gateway<'_> {
    async fn send(
        &self,
        _to: &ChannelTarget,
        message: &LinkMessage,
        key: &str,
    ) -> Result<MessageRef, ChannelError> {
        let mut data = self.about();
        data["message"] = json!({
            "text": message.text,
            "button": {"label": message.label, "url": message.url},
        });
        data["expires_at"] = json!(crate::clock::rfc3339::format(self.session.spec.expires_at));
        self.post(key, "auth_link.issued", data).await?;
        Ok(key.to_owned())
    }

    async fn update(
        &self,
        _to: &ChannelTarget,
        posted: &Posted<'_>,
        text: &str,
        key: &str,
    ) -> Result<bool, ChannelError> {
        let message = posted.message_ref;
        let mut data = self.about();
        data["message_ref"] = json!(message);
        data["status"] = json!(self.session.status);
        data["text"] = json!(text);
        self.post(key, "auth_link.updated", data).await?;
        Ok(true)
    }
}
