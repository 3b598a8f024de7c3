//! Resume events (SPEC §3). An event is built together with the status change it reports and
//! written to the outbox in the same atomic store operation. It never carries tokens.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use url::Url;

use super::grant::Identity;
use super::session::{Session, Status};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// `evt_<uuidv7>`; becomes the `webhook-id`, stable across retries.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "crate::clock::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub data: serde_json::Value,
    /// Where the event goes; fixed when the session was created. `None`: no webhook configured
    /// (the event is still recorded for SSE and polling consumers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Url>,
    /// Set for work for a chat channel instead of a webhook: post the session's link, or update
    /// the posted message. Such items share the outbox (durable, leased, retried) but are never
    /// sent to a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelJob>,
}

/// What a channel item of the outbox asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelJob {
    /// Post the link.
    Send,
    /// Change the posted message to show how the session ended.
    Update,
}

impl ChannelJob {
    pub fn kind(self) -> &'static str {
        match self {
            ChannelJob::Send => "auth_link.send",
            ChannelJob::Update => "auth_link.update",
        }
    }
}

impl Event {
    /// The event for `session` having just reached its (final) status.
    pub fn for_session(
        session: &Session,
        identity: Option<&Identity>,
        now: OffsetDateTime,
    ) -> Self {
        let spec = &session.spec;
        let kind = match session.status {
            Status::Completed => "auth_session.completed",
            Status::Failed => "auth_session.failed",
            Status::Expired => "auth_session.expired",
            Status::Cancelled => "auth_session.cancelled",
            Status::AwaitingCode => "auth_session.awaiting_code",
            Status::Pending | Status::InProgress => "auth_session.updated",
        };
        let mut data = json!({
            "session_id": spec.id,
            "bot": spec.bot,
            "integration": spec.integration,
            "user_id": spec.subject,
            "conversation_id": spec.conversation_id,
            "status": session.status,
        });
        if let Some(ctx) = &spec.context {
            // A RawValue holds valid JSON by construction.
            data["context"] = serde_json::from_str(ctx.get()).unwrap_or_default();
        }
        if let Some(err) = &session.error {
            data["error"] = json!(err);
        }
        if let Some(identity) = identity {
            data["identity"] = json!(identity);
        }
        if let Some(binding) = &session.binding {
            data["binding"] = json!(binding);
        }
        Self {
            id: Self::new_id(spec.id.partition()),
            kind: kind.to_owned(),
            timestamp: now,
            data,
            webhook_url: spec.webhook_url.clone(),
            channel: None,
        }
    }

    /// The outbox item that posts `session`'s link to its channel (`job: Send`, written with the
    /// session) or updates the posted message (`job: Update`, written with the status change
    /// that settles it). `None` when the session has no configured channel (or uses web chat,
    /// which the caller renders itself).
    pub fn for_channel(session: &Session, job: ChannelJob, now: OffsetDateTime) -> Option<Self> {
        let spec = &session.spec;
        let target = spec.channel.as_ref().filter(|c| !c.name.is_webchat())?;
        Some(Self {
            id: Self::new_id(spec.id.partition()),
            kind: job.kind().to_owned(),
            timestamp: now,
            data: json!({
                "session_id": spec.id,
                "bot": spec.bot,
                "channel": target.name,
            }),
            webhook_url: None,
            channel: Some(job),
        })
    }

    /// The channel item that updates the posted link message once `settled` (a session that just
    /// reached a final status) ended; `None` for other statuses or sessions without a channel.
    pub fn channel_update(settled: &Session, now: OffsetDateTime) -> Option<Self> {
        if !settled.status.is_final() {
            return None;
        }
        Self::for_channel(settled, ChannelJob::Update, now)
    }

    /// An `auth_link.*` event about a session's delivery, for the bot's webhook.
    pub fn for_delivery(
        session: &Session,
        kind: &str,
        delivery: &super::channel::ChannelDelivery,
        now: OffsetDateTime,
    ) -> Self {
        let spec = &session.spec;
        let mut data = json!({
            "session_id": spec.id,
            "bot": spec.bot,
            "integration": spec.integration,
            "user_id": spec.subject,
            "conversation_id": spec.conversation_id,
            "delivery": delivery.public(),
        });
        if let Some(ctx) = &spec.context {
            data["context"] = serde_json::from_str(ctx.get()).unwrap_or_default();
        }
        Self {
            id: Self::new_id(spec.id.partition()),
            kind: kind.to_owned(),
            timestamp: now,
            data,
            webhook_url: spec.webhook_url.clone(),
            channel: None,
        }
    }

    fn new_id(p: crate::domain::Partition) -> String {
        format!("evt_{:02x}{}", p.index(), super::ids::uuid_v7().simple())
    }

    /// A `connection.*` event about a grant (reauth required, revoked). Goes to the bot's webhook.
    pub fn for_connection(
        grant: &crate::domain::grant::Grant,
        kind: &str,
        reason: Option<&str>,
        webhook_url: Option<Url>,
        now: OffsetDateTime,
    ) -> Self {
        let p = crate::domain::Partition::of(&grant.bot, &grant.integration, &grant.subject);
        let mut data = json!({
            "bot": grant.bot,
            "integration": grant.integration,
            "user_id": grant.subject,
            "identity": grant.identity,
        });
        if let Some(r) = reason {
            data["reason"] = json!(r);
        }
        Self {
            id: Self::new_id(p),
            kind: kind.to_owned(),
            timestamp: now,
            data,
            webhook_url,
            channel: None,
        }
    }

    /// The store partition of an event id (`evt_<pp><uuid>`); `None` for a malformed id.
    pub fn partition_of(id: &str) -> Option<crate::domain::Partition> {
        let hex = id.strip_prefix("evt_")?;
        if hex.len() != 34 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let p = u8::from_str_radix(&hex[..2], 16).ok()?;
        crate::domain::Partition::all().find(|q| q.index() == p)
    }

    /// Whether the outbox has anywhere to take this: a webhook, or a chat channel.
    pub fn has_destination(&self) -> bool {
        self.webhook_url.is_some() || self.channel.is_some()
    }

    pub fn bot(&self) -> Option<crate::domain::BotId> {
        self.data["bot"]
            .as_str()
            .and_then(|b| crate::domain::BotId::parse(b).ok())
    }

    /// The exact body a webhook receiver gets (Standard Webhooks envelope).
    pub fn body(&self) -> String {
        json!({
            "type": self.kind,
            "timestamp": crate::clock::rfc3339::format(self.timestamp),
            "data": self.data,
        })
        .to_string()
    }
}
