//! A grant: the tokens one subject obtained for one integration, plus what we learned about who
//! signed in. Tokens exist in memory as `SecretString` and at rest only sealed (AEAD), bound to the
//! grant's own record by the associated data.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{BotId, IntegrationName, Subject};
use crate::crypto::{EncryptionKeys, OpenError};

/// Who signed in at the provider. Never contains secrets; safe for webhooks and the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The provider's stable user id (Salesforce user id, OIDC `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The secret part of a grant.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub token_type: String,
}

/// The plaintext shape inside the seal; exists only for the duration of seal/open.
#[derive(Serialize, Deserialize)]
struct TokensPlain {
    at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt: Option<String>,
    tt: String,
}

impl Tokens {
    pub fn seal(&self, keys: &EncryptionKeys, aad: &str) -> String {
        let plain = TokensPlain {
            at: self.access_token.expose_secret().to_owned(),
            rt: self
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            tt: self.token_type.clone(),
        };
        let json = serde_json::to_vec(&plain).expect("plain structs serialize");
        keys.seal(aad, &json)
    }

    pub fn open(keys: &EncryptionKeys, aad: &str, sealed: &str) -> Result<Self, OpenError> {
        let json = keys.open(aad, sealed)?;
        let plain: TokensPlain = serde_json::from_slice(&json).map_err(|_| OpenError)?;
        Ok(Self {
            access_token: plain.at.into(),
            refresh_token: plain.rt.map(Into::into),
            token_type: plain.tt,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Active,
    ReauthRequired,
    /// Issued, but unusable until the person's verification code is confirmed.
    AwaitingCode,
}

/// The code a person must type into the conversation before the grant is usable: its hash
/// (bound to the session) and the wrong tries so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCode {
    pub hash: String,
    pub failures: u32,
}

impl PendingCode {
    pub const MAX_FAILURES: u32 = 5;

    pub fn hash(session: &str, code: &str) -> String {
        crate::crypto::sha256_hex(format!("code|{session}|{code}").as_bytes())
    }
}

/// A grant as stored. `sealed_tokens` is the only field with secrets, and it is ciphertext.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grant {
    pub bot: BotId,
    pub integration: IntegrationName,
    pub subject: Subject,
    /// The app (provider configuration) that issued the tokens. A grant is only ever used with the
    /// app that issued it: changing an integration's profile makes old grants unusable.
    pub provider_config: String,
    pub status: GrantStatus,
    pub identity: Identity,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    #[serde(default, with = "crate::clock::rfc3339::option")]
    pub access_expires_at: Option<OffsetDateTime>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "crate::clock::rfc3339::option")]
    pub refreshed_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the background refresher should renew this grant (`None`: never — no refresh token,
    /// no known expiry, or not active). Indexed by the store.
    #[serde(default, with = "crate::clock::rfc3339::option")]
    pub refresh_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_code: Option<PendingCode>,
    /// Fencing generation: bumped by every token write; a write carrying a stale generation is
    /// refused by the store.
    pub generation: u64,
    pub sealed_tokens: String,
}

impl Grant {
    /// Associated data for the seal: the record the tokens belong to.
    pub fn aad(bot: &BotId, integration: &IntegrationName, subject: &Subject) -> String {
        format!("grant|{bot}|{integration}|{}", subject.as_str())
    }

    /// When to refresh ahead of expiry: `margin` before it, minus up to 10% of the margin at
    /// random so that grants created together do not all refresh in the same second.
    pub fn schedule_refresh(&mut self, refreshable: bool, margin: std::time::Duration) {
        use rand::Rng;
        let margin = time::Duration::try_from(margin).unwrap_or(time::Duration::ZERO);
        let jitter = margin * rand::thread_rng().gen_range(0.0..0.1);
        self.refresh_at = match (self.status, refreshable, self.access_expires_at) {
            (GrantStatus::Active, true, Some(exp)) => Some(exp - margin - jitter),
            _ => None,
        };
    }

    /// Usable for the access-token API and for `already_authorized`.
    pub fn is_working(&self, provider_config: &str) -> bool {
        self.status == GrantStatus::Active && self.provider_config == provider_config
    }
}
