//! The auth session: what the dialog engine asked for, and a status machine whose transitions
//! are explicit — a status can only change along the edges `Status::can_become` allows.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use super::{BotId, IntegrationName, SessionId, Subject};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InProgress,
    AwaitingCode,
    Completed,
    Failed,
    Expired,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::InProgress,
        Status::AwaitingCode,
        Status::Completed,
        Status::Failed,
        Status::Expired,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::AwaitingCode => "awaiting_code",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "in_progress" => Status::InProgress,
            "awaiting_code" => Status::AwaitingCode,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "expired" => Status::Expired,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Expired | Status::Cancelled
        )
    }
    /// The statuses a session may be in for a transition to `to`.
    pub fn sources_of(to: Status) -> &'static [Status] {
        use Status::*;
        match to {
            Pending => &[],
            // A second attempt (the person pressed Continue again) is allowed.
            InProgress => &[Pending, InProgress],
            AwaitingCode => &[InProgress],
            Completed => &[InProgress, AwaitingCode],
            Failed => &[Pending, InProgress, AwaitingCode],
            Expired | Cancelled => &[Pending, InProgress, AwaitingCode],
        }
    }
    pub fn can_become(self, to: Status) -> bool {
        Status::sources_of(to).contains(&self)
    }
}

/// Why a session failed (or was stopped); `code` is stable and machine-readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionError {
    pub code: FailureCode,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    AccessDenied,
    ProviderError,
    ExchangeFailed,
    IdentityMismatch,
    VerificationFailed,
    StateInvalid,
}

impl FailureCode {
    pub const ALL: [FailureCode; 6] = [
        FailureCode::AccessDenied,
        FailureCode::ProviderError,
        FailureCode::ExchangeFailed,
        FailureCode::IdentityMismatch,
        FailureCode::VerificationFailed,
        FailureCode::StateInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::AccessDenied => "access_denied",
            FailureCode::ProviderError => "provider_error",
            FailureCode::ExchangeFailed => "exchange_failed",
            FailureCode::IdentityMismatch => "identity_mismatch",
            FailureCode::VerificationFailed => "verification_failed",
            FailureCode::StateInvalid => "state_invalid",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    #[default]
    None,
    Code,
}

/// Who the person is expected to be (SPEC §6). Compared with the provider's identity after the
/// exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// How a session makes sure the person at the link is the user who asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BindingMethod {
    /// Sign the browser in at the bot's identity issuer and compare the subject.
    Oidc,
}

/// The user at the bot's identity issuer whom a `binding: oidc` session belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcSubject {
    pub iss: String,
    pub sub: String,
}

impl OidcSubject {
    /// A fixed-length name for this subject in store keys (issuers and subjects are free text).
    pub fn digest(&self) -> String {
        crate::crypto::sha256_hex(format!("{}\n{}", self.iss, self.sub).as_bytes())
    }
}

/// What the binding step found: recorded on the session and reported in its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingResult {
    pub method: BindingMethod,
    pub result: BindingOutcome,
    /// The subject that signed in at the issuer.
    pub sub: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingOutcome {
    Matched,
    Mismatch,
}

/// What the dialog engine asked for; fixed when the session is created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionSpec {
    pub id: SessionId,
    pub bot: BotId,
    pub integration: IntegrationName,
    pub subject: Subject,
    pub conversation_id: Option<String>,
    /// The caller's JSON, kept as sent (validated, never re-parsed): echoed in the API and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<serde_json::value::RawValue>>,
    /// Fixed at creation (the session's own, else the bot's at that moment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Url>,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<Url>,
    #[serde(default)]
    pub verification: Verification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_identity: Option<ExpectedIdentity>,
    /// `binding: oidc`: the link page signs the browser in at the bot's identity issuer first and
    /// goes on to the provider only for this subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<OidcSubject>,
    /// The provider configuration (callback path) this session's attempts use.
    pub provider_config: String,
    /// The service's name as people see it, taken from the integration when the session was
    /// created, so the link message, the pages and the settled message all say the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Where authlink posts the link (and later updates the message), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<super::channel::ChannelTarget>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl SessionSpec {
    /// The service the person signs in at, as people call it. Sessions stored before `service`
    /// existed fall back to what was shown then.
    pub fn provider_name(&self) -> String {
        match (&self.service, self.provider_config.as_str()) {
            (Some(name), _) => name.clone(),
            (None, "salesforce") => "Salesforce".into(),
            (None, _) => self.integration.to_string(),
        }
    }
}

/// A session as stored: the spec plus its mutable part.
#[derive(Clone, Debug)]
pub struct Session {
    pub spec: SessionSpec,
    pub status: Status,
    pub error: Option<SessionError>,
    /// Bound sessions, once the binding step has run: whom it found at the identity issuer.
    pub binding: Option<BindingResult>,
    pub updated_at: OffsetDateTime,
}

impl Session {
    /// The status a reader should see at `now`: a live session past its deadline is expired even
    /// before the expiry sweeper has recorded it.
    pub fn status_at(&self, now: OffsetDateTime) -> Status {
        if !self.status.is_final() && now >= self.spec.expires_at {
            Status::Expired
        } else {
            self.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::*;

    #[test]
    fn final_statuses_never_change() {
        for from in [Completed, Failed, Expired, Cancelled] {
            for to in [
                Pending,
                InProgress,
                AwaitingCode,
                Completed,
                Failed,
                Expired,
                Cancelled,
            ] {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn the_flow_edges_exist() {
        assert!(Pending.can_become(InProgress));
        assert!(InProgress.can_become(InProgress));
        assert!(InProgress.can_become(Completed));
        assert!(InProgress.can_become(AwaitingCode));
        assert!(AwaitingCode.can_become(Completed));
        assert!(
            !Pending.can_become(Completed),
            "no completion without an attempt"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            Pending,
            InProgress,
            AwaitingCode,
            Completed,
            Failed,
            Expired,
            Cancelled,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

/// One press of "Continue": the PKCE verifier (sealed) waiting for the callback. Single-use: the
/// callback takes it from the store atomically, and any failed check destroys it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub id: String,
    pub session: SessionId,
    /// PKCE verifier, sealed with the encryption keys.
    pub verifier: String,
    /// Set for a sign-in at the bot's identity issuer (binding step): the ID token's expected
    /// `nonce`. Such an attempt is only ever taken by the binding callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Set for a provider attempt of a bound session: the issuer subject that matched, carried
    /// to the provider callback for its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
}
