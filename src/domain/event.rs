//! Resume events (SPEC §3). An event is built together with the status change it reports and
//! written to the outbox in the same atomic store operation. It never carries tokens.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

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
        Self {
            id: format!(
                "evt_{:02x}{}",
                spec.id.partition().index(),
                Uuid::now_v7().simple()
            ),
            kind: kind.to_owned(),
            timestamp: now,
            data,
            webhook_url: spec.webhook_url.clone(),
        }
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
            id: format!("evt_{:02x}{}", p.index(), Uuid::now_v7().simple()),
            kind: kind.to_owned(),
            timestamp: now,
            data,
            webhook_url,
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
