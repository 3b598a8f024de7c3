//! Tenancy: bots, their API keys, and their integrations (which provider, which mode, which app).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use super::session::Verification;
use super::{BotId, IntegrationName};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Bot {
    pub id: BotId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Url>,
    /// Hosts `return_url` may point to (`example.com` or `*.example.com`).
    #[serde(default)]
    pub allowed_return_hosts: Vec<String>,
    /// When non-empty, webhook URLs must point to one of these hosts.
    #[serde(default)]
    pub allowed_webhook_hosts: Vec<String>,
    /// Endpoints disabled by a `410 Gone`; cleared when the bot is updated (`PUT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_webhooks: Vec<DisabledEndpoint>,
    /// The MCP server's own authorization server: `binding: oidc` sessions sign the browser in
    /// there first, so that the person at the link is the user who asked (SPEC §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_issuer: Option<IdentityIssuer>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// An OpenID issuer and authlink's client there. The secret is write-only: sealed at rest with
/// associated data naming the bot, so a record copied to another bot cannot be opened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdentityIssuer {
    /// Exactly as configured: ID tokens' `iss` and sessions' `subject.iss` must equal it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret_sealed: String,
}

impl IdentityIssuer {
    pub fn secret_aad(bot: &BotId) -> String {
        format!("identity_issuer|{bot}")
    }
}

/// Does `host` match one of `patterns` (exact, or `*.suffix` for strict subdomains)?
pub fn host_allowed(patterns: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    })
}

/// A webhook signing secret (Standard Webhooks `whsec_`), sealed at rest. Every active secret
/// signs every delivery, so a new one can be rolled out before the old one is retired.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WebhookSecret {
    pub id: String,
    pub sealed: String,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A webhook URL that answered `410 Gone`: nothing more is sent to it until the bot is updated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DisabledEndpoint {
    pub url: Url,
    #[serde(with = "crate::clock::rfc3339")]
    pub since: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// Runtime: sessions and tokens of its bot.
    Runtime,
    /// Manages its bot's integrations and profiles as well.
    Admin,
}

/// A bot API key as stored: only the SHA-256 of the key (keys are 256-bit random, so a fast hash
/// is the right one; there is nothing to brute-force).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub bot: BotId,
    pub role: KeyRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub hash: String,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Salesforce,
    Oauth2,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Salesforce => "salesforce",
            ProviderKind::Oauth2 => "oauth2",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each end user authorizes through a link.
    #[default]
    User,
    /// An admin authorizes once; every conversation uses the bot-wide grant.
    PreAuthorized,
}

/// Which OAuth app: the operator's system app for the provider, or a bot's custom profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProfileRef {
    #[default]
    System,
    Custom(String),
}

impl Serialize for ProfileRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProfileRef::System => s.serialize_str("system"),
            ProfileRef::Custom(id) => s.serialize_str(id),
        }
    }
}

impl<'de> Deserialize<'de> for ProfileRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s == "system" {
            ProfileRef::System
        } else {
            ProfileRef::Custom(s)
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SalesforceEnvironment {
    #[default]
    Production,
    Sandbox,
    MyDomain,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSettings {
    #[serde(default)]
    pub environment: SalesforceEnvironment,
    /// For `my_domain`: `https://<name>.my.salesforce.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Url>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Integration {
    pub bot: BotId,
    pub name: IntegrationName,
    pub provider: ProviderKind,
    pub mode: Mode,
    pub profile: ProfileRef,
    /// Requested scopes; `None` uses the app's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ttl_seconds: Option<u32>,
    #[serde(default)]
    pub verification: Verification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce: Option<SalesforceSettings>,
    /// What people are shown ("Salesforce", "Acme CRM"), never the internal name. Records
    /// written before it existed have none: `service_name` supplies the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Off: no new sessions, links or tokens; what is stored (connections) stays.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn enabled_by_default() -> bool {
    true
}

impl Integration {
    /// The service as people call it: the display name, else the provider's name — for the
    /// generic provider (which has no name of its own) the integration's name.
    pub fn service_name(&self) -> String {
        match (&self.display_name, self.provider) {
            (Some(name), _) => name.clone(),
            (None, ProviderKind::Salesforce) => "Salesforce".into(),
            (None, ProviderKind::Oauth2) => self.name.to_string(),
        }
    }
}

#[cfg(test)]
impl Integration {
    /// Bot `acme`'s Salesforce integration `crm`, for unit tests.
    pub(crate) fn example() -> Self {
        let now = OffsetDateTime::UNIX_EPOCH;
        Integration {
            bot: BotId::parse("acme").unwrap(),
            name: IntegrationName::parse("crm").unwrap(),
            provider: ProviderKind::Salesforce,
            mode: Mode::User,
            profile: ProfileRef::System,
            scopes: None,
            link_ttl_seconds: None,
            verification: Verification::None,
            salesforce: None,
            display_name: None,
            enabled: true,
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_name_defaults_to_the_provider_then_the_integration() {
        let mut i = Integration::example();
        assert_eq!(i.service_name(), "Salesforce");
        i.provider = ProviderKind::Oauth2;
        assert_eq!(i.service_name(), "crm");
        i.display_name = Some("Acme CRM".into());
        assert_eq!(i.service_name(), "Acme CRM");
        // A record stored before display names existed still reads.
        let mut old = serde_json::to_value(&i).unwrap();
        old.as_object_mut().unwrap().remove("display_name");
        let old: Integration = serde_json::from_str(&old.to_string()).unwrap();
        assert_eq!(old.display_name, None);
    }

    #[test]
    fn host_patterns_match_exactly_or_strict_subdomains() {
        let p = vec!["chat.example.com".to_string(), "*.corp.test".to_string()];
        assert!(host_allowed(&p, "chat.example.com"));
        assert!(host_allowed(&p, "CHAT.example.com"));
        assert!(host_allowed(&p, "a.corp.test"));
        assert!(!host_allowed(&p, "corp.test"));
        assert!(!host_allowed(&p, "evilcorp.test"));
        assert!(!host_allowed(&p, "example.com"));
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// A bot's own OAuth app ("OAuth – Custom"). The client secret is sealed (AEAD) and never
/// returned by the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuthProfile {
    pub id: String,
    pub bot: BotId,
    pub name: String,
    pub client_id: String,
    pub client_secret_sealed: String,
    pub authorization_url: Url,
    pub token_url: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_url: Option<Url>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_url: Option<Url>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_url: Option<Url>,
    #[serde(default)]
    pub extra_authorize_params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl AuthProfile {
    /// Associated data binding a sealed client secret to its profile.
    pub fn secret_aad(bot: &BotId, id: &str) -> String {
        format!("profile|{bot}|{id}")
    }
}
