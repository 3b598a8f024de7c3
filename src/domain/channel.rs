//! Chat channels a bot's links are delivered to: their configuration (secrets sealed, like client
//! secrets), where in the channel a session's link goes, and how far its delivery got.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use super::BotId;
use super::ids::InvalidId;

/// A channel's name within its bot: the same small alphabet as integration names. `webchat` is
/// reserved for the built-in web chat, which needs no configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ChannelName(String);

impl ChannelName {
    pub const WEBCHAT: &'static str = "webchat";

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        super::IntegrationName::parse(s).map_err(|e| InvalidId {
            what: "channel name",
            reason: e.reason,
        })?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_webchat(&self) -> bool {
        self.0 == Self::WEBCHAT
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Slack,
    Teams,
    Telegram,
    Whatsapp,
    Matrix,
    Webhook,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 6] = [
        ChannelKind::Slack,
        ChannelKind::Teams,
        ChannelKind::Telegram,
        ChannelKind::Whatsapp,
        ChannelKind::Matrix,
        ChannelKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Matrix => "matrix",
            ChannelKind::Webhook => "webhook",
        }
    }
}

/// The approved WhatsApp template sent outside the 24-hour customer-service window: its URL
/// button's dynamic suffix is the link's token (the template's base URL is the daemon's `/l/`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhatsappTemplate {
    #[schema(pattern = "^[a-z0-9_]{1,512}$")]
    pub name: String,
    /// A language code like `en_US`.
    #[schema(pattern = "^[A-Za-z_]{2,15}$")]
    pub language: String,
}

/// The non-secret settings of each channel type. API base URLs are settings so that a private
/// deployment (or a test) can point them elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelSettings {
    Slack {
        api_base_url: Url,
    },
    Teams {
        app_id: String,
        /// `None`: a multi-tenant app (tokens from `botframework.com`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant_id: Option<String>,
        service_url: Url,
        login_base_url: Url,
    },
    Telegram {
        api_base_url: Url,
    },
    Whatsapp {
        phone_number_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<WhatsappTemplate>,
        api_base_url: Url,
    },
    Matrix {
        homeserver_url: Url,
    },
    Webhook {
        url: Url,
    },
}

impl ChannelSettings {
    /// The URLs the channel's secret is sent to (the webhook gateway gets signed events, not a
    /// secret), with their field names.
    pub fn secret_destinations(&self) -> Vec<(&'static str, &Url)> {
        match self {
            ChannelSettings::Slack { api_base_url }
            | ChannelSettings::Telegram { api_base_url }
            | ChannelSettings::Whatsapp { api_base_url, .. } => {
                vec![("api_base_url", api_base_url)]
            }
            ChannelSettings::Teams {
                service_url,
                login_base_url,
                ..
            } => vec![
                ("service_url", service_url),
                ("login_base_url", login_base_url),
            ],
            ChannelSettings::Matrix { homeserver_url } => vec![("homeserver_url", homeserver_url)],
            ChannelSettings::Webhook { .. } => Vec::new(),
        }
    }

    /// The write-only field that carries the channel's secret in the API.
    pub fn secret_field(&self) -> &'static str {
        match self {
            ChannelSettings::Slack { .. } | ChannelSettings::Telegram { .. } => "bot_token",
            ChannelSettings::Teams { .. } => "app_secret",
            ChannelSettings::Whatsapp { .. } | ChannelSettings::Matrix { .. } => "access_token",
            ChannelSettings::Webhook { .. } => "",
        }
    }

    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelSettings::Slack { .. } => ChannelKind::Slack,
            ChannelSettings::Teams { .. } => ChannelKind::Teams,
            ChannelSettings::Telegram { .. } => ChannelKind::Telegram,
            ChannelSettings::Whatsapp { .. } => ChannelKind::Whatsapp,
            ChannelSettings::Matrix { .. } => ChannelKind::Matrix,
            ChannelSettings::Webhook { .. } => ChannelKind::Webhook,
        }
    }
}

/// A configured channel as stored. `secret_sealed` (bot token, app secret or access token) is
/// ciphertext bound to this record by [`ChannelConfig::secret_aad`]; the API never returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelConfig {
    pub bot: BotId,
    pub name: ChannelName,
    pub settings: ChannelSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sealed: Option<String>,
    /// Slack: the app's signing secret, sealed, for verifying the clicks Slack sends back
    /// (bound by [`ChannelConfig::signing_aad`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_sealed: Option<String>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ChannelConfig {
    pub fn secret_aad(bot: &BotId, name: &ChannelName) -> String {
        format!("channel|{bot}|{name}")
    }
    pub fn signing_aad(bot: &BotId, name: &ChannelName) -> String {
        format!("channel-signing|{bot}|{name}")
    }
}

/// Where in a channel a session's link goes (`channel` on session creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelTarget {
    /// A channel configured for the bot, or `webchat`.
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: ChannelName,
    /// Slack channel, Teams conversation, Telegram chat, WhatsApp number, Matrix room (not for
    /// `webchat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$")]
    pub to: Option<String>,
    /// Reply in a thread: Slack `thread_ts`, Telegram `message_thread_id`, Teams activity id,
    /// Matrix thread root event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$")]
    pub thread: Option<String>,
    /// Slack only: show the message to this user alone (ephemeral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$")]
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Sent,
    Failed,
}

/// Why a delivery failed: the channel's own error code, and what it means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryError {
    pub code: String,
    pub description: String,
}

/// How far the delivery of a session's link got (`delivery` in the session's status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDelivery {
    pub channel: ChannelName,
    pub status: DeliveryStatus,
    /// The channel's id of the posted message (Slack `channel:ts`, Telegram `chat:message_id`,
    /// Teams activity id, WhatsApp `wamid`, Matrix event id), used to update it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// The message was changed to show how the session ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub updated: bool,
    /// Slack ephemerals: the `response_url` of the person's click (the only way to change an
    /// ephemeral message), sealed. Kept in the store, never shown ([`ChannelDelivery::public`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_sealed: Option<String>,
}

impl ChannelDelivery {
    pub fn queued(channel: ChannelName) -> Self {
        Self {
            channel,
            status: DeliveryStatus::Queued,
            message_ref: None,
            error: None,
            updated: false,
            reply_sealed: None,
        }
    }

    /// What the API and webhooks show: the state without the sealed reply URL.
    pub fn public(&self) -> Self {
        Self {
            reply_sealed: None,
            ..self.clone()
        }
    }

    /// Associated data binding a sealed reply URL to its session.
    pub fn reply_aad(session: &super::SessionId) -> String {
        format!("reply|{session}")
    }
}
