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

impl Identity {
    /// How to name the account to its owner: the username, else the email, else the name.
    pub fn shown(&self) -> Option<&str> {
        self.username
            .as_deref()
            .or(self.email.as_deref())
            .or(self.display_name.as_deref())
    }
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

/// The tokens of the grants this replica served last, opened: a token request for an unchanged
/// grant gets them without AES-GCM, base64 and JSON again. An entry is found only by the
/// identical sealed text under the identical associated data, so it is exactly what opening
/// would give; a grant that is refreshed, re-bound or tampered with is opened (and checked)
/// anew. The plaintext is held in this process's memory, which holds the keys that open every
/// grant anyway, for at most `MAX` grants; it is zeroized when dropped (`SecretString`).
#[derive(Default)]
pub struct OpenedTokens(std::sync::Mutex<foldhash::HashMap<String, (String, Tokens)>>);

impl OpenedTokens {
    const MAX: usize = 1_000;

    pub fn open(
        &self,
        keys: &EncryptionKeys,
        aad: &str,
        sealed: &str,
    ) -> Result<Tokens, OpenError> {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bound, tokens)) = lock().get(sealed)
            && bound == aad
        {
            return Ok(tokens.clone());
        }
        let tokens = Tokens::open(keys, aad, sealed)?;
        let mut map = lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(sealed.to_owned(), (aad.to_owned(), tokens.clone()));
        Ok(tokens)
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
/// (bound to the session). Tries are counted by the store (`Store::check_code`), next to the
/// grant and in the same step that compares them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCode {
    pub hash: String,
    /// Always 0: kept so that replicas from before `check_code` can read the record during a
    /// rolling upgrade (they counted here).
    pub failures: u32,
}

impl PendingCode {
    /// Tries allowed at one code: the fifth wrong one fails the session.
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
    /// When the current access token was obtained (its lifetime is `access_expires_at` minus
    /// this). Older records lack it: then `refreshed_at`, else `created_at`.
    #[serde(default, with = "crate::clock::rfc3339::option")]
    pub access_issued_at: Option<OffsetDateTime>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "crate::clock::rfc3339::option")]
    pub refreshed_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the background refresher should renew this grant (`None`: never — no refresh token,
    /// no known expiry, or not active); after failed refreshes, when the next attempt is allowed.
    /// Indexed by the store.
    #[serde(default, with = "crate::clock::rfc3339::option")]
    pub refresh_at: Option<OffsetDateTime>,
    /// Refreshes that failed in a row for a transient reason (network, 5xx, rate limit); each one
    /// doubles the wait before the next attempt. Reset by a successful refresh.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refresh_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_code: Option<PendingCode>,
    /// Fencing generation: bumped by every token write; a write carrying a stale generation is
    /// refused by the store.
    pub generation: u64,
    pub sealed_tokens: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// When tokens are refreshed: `margin` before expiry (capped by the token's own lifetime, see
/// [`Grant::refresh_margin`]), and after a transient failure not again before an exponentially
/// growing, jittered delay (`retry_base`, doubling per failure, at most `retry_max`).
#[derive(Clone, Copy, Debug)]
pub struct RefreshPolicy {
    pub margin: std::time::Duration,
    pub retry_base: std::time::Duration,
    pub retry_max: std::time::Duration,
}

impl RefreshPolicy {
    /// The margin is at most this fraction (1/n) of the token's lifetime.
    pub const LIFETIME_SHARE: i32 = 3;

    /// The wait after `failures` (≥ 1) failed refreshes in a row: `retry_base · 2^(failures-1)`,
    /// capped at `retry_max`, then drawn from its upper half (jitter, so grants that failed
    /// together do not retry together).
    pub fn retry_delay(&self, failures: u32) -> std::time::Duration {
        use rand::Rng;
        let doubling = 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        let full = self
            .retry_base
            .mul_f64(doubling)
            .min(self.retry_max)
            .max(std::time::Duration::from_millis(1));
        full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }
}

impl Grant {
    /// Associated data for the seal: the record the tokens belong to.
    pub fn aad(bot: &BotId, integration: &IntegrationName, subject: &Subject) -> String {
        let parts = [bot.as_str(), integration.as_str(), subject.as_str()];
        let mut aad = String::with_capacity(8 + parts.iter().map(|p| p.len()).sum::<usize>());
        aad.push_str("grant");
        for part in parts {
            aad.push('|');
            aad.push_str(part);
        }
        aad
    }

    /// When the current access token was obtained.
    fn issued_at(&self) -> OffsetDateTime {
        self.access_issued_at
            .or(self.refreshed_at)
            .unwrap_or(self.created_at)
    }

    /// How long before expiry the token counts as stale: the configured margin, but at most a
    /// third of the token's lifetime as issued — so a 2 s, 120 s or 300 s token is served
    /// unchanged for two thirds of its life, and a 2 h token until 5 minutes before it ends.
    pub fn refresh_margin(&self, policy: &RefreshPolicy) -> time::Duration {
        let configured = time::Duration::try_from(policy.margin).unwrap_or(time::Duration::ZERO);
        let Some(exp) = self.access_expires_at else {
            return configured;
        };
        let lifetime = (exp - self.issued_at()).max(time::Duration::ZERO);
        configured.min(lifetime / RefreshPolicy::LIFETIME_SHARE)
    }

    /// From when requests refresh the token (`None`: unknown lifetime — only on `force_refresh`,
    /// i.e. after the API said 401).
    pub fn stale_from(&self, policy: &RefreshPolicy) -> Option<OffsetDateTime> {
        self.access_expires_at
            .map(|exp| exp - self.refresh_margin(policy))
    }

    /// Usable without a refresh.
    pub fn is_fresh(&self, now: OffsetDateTime, policy: &RefreshPolicy) -> bool {
        self.stale_from(policy).is_none_or(|t| now < t)
    }

    /// The access token is past its expiry (as far as we know it).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.access_expires_at.is_some_and(|exp| now >= exp)
    }

    /// After failed refreshes: when the next attempt is allowed, if that is still ahead.
    pub fn backing_off(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.refresh_at
            .filter(|at| self.refresh_failures > 0 && now < *at)
    }

    /// After a successful refresh (or a new grant): the background refresher renews the token a
    /// little ahead of the point requests would — by up to a tenth of the margin, at random, so
    /// that grants issued together do not all refresh in the same second.
    pub fn schedule_refresh(&mut self, refreshable: bool, policy: &RefreshPolicy) {
        use rand::Rng;
        self.refresh_failures = 0;
        let jitter = self.refresh_margin(policy) * rand::thread_rng().gen_range(0.0..0.1);
        self.refresh_at = match (self.status, refreshable, self.stale_from(policy)) {
            (GrantStatus::Active, true, Some(stale)) => Some(stale - jitter),
            _ => None,
        };
    }

    /// After a refresh that failed for a transient reason: no attempt (background or request)
    /// before `policy.retry_delay(failures)` has passed.
    pub fn schedule_retry(&mut self, now: OffsetDateTime, policy: &RefreshPolicy) {
        self.refresh_failures = self.refresh_failures.saturating_add(1);
        let delay = policy.retry_delay(self.refresh_failures);
        self.refresh_at = Some(now + time::Duration::try_from(delay).unwrap_or_default());
    }

    /// Usable for the access-token API and for `already_authorized`.
    pub fn is_working(&self, provider_config: &str) -> bool {
        self.status == GrantStatus::Active && self.provider_config == provider_config
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;

    const POLICY: RefreshPolicy = RefreshPolicy {
        margin: Duration::from_secs(300),
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(300),
    };

    fn issued(lifetime: Option<time::Duration>) -> Grant {
        let t0 = datetime!(2026-12-01 08:00 UTC);
        Grant {
            bot: BotId::parse("acme").unwrap(),
            integration: IntegrationName::parse("crm").unwrap(),
            subject: Subject::parse("u1").unwrap(),
            provider_config: "oauth2".into(),
            status: GrantStatus::Active,
            identity: Identity::default(),
            scopes: vec![],
            instance_url: None,
            access_expires_at: lifetime.map(|l| t0 + l),
            access_issued_at: Some(t0),
            created_at: t0 - time::Duration::days(3),
            refreshed_at: None,
            last_error: None,
            refresh_at: None,
            refresh_failures: 0,
            pending_code: None,
            generation: 1,
            sealed_tokens: String::new(),
        }
    }

    #[test]
    fn opened_tokens_are_reused_only_for_the_identical_seal_and_binding() {
        let keys = EncryptionKeys::new(crate::crypto::tests::keys(&["k1"])).unwrap();
        let tokens = Tokens {
            access_token: "at-1".to_owned().into(),
            refresh_token: Some("rt-1".to_owned().into()),
            token_type: "Bearer".into(),
        };
        let (aad, other) = ("grant|acme|crm|u1", "grant|acme|crm|u2");
        let sealed = tokens.seal(&keys, aad);
        let memo = OpenedTokens::default();
        for _ in 0..2 {
            let opened = memo.open(&keys, aad, &sealed).unwrap();
            assert_eq!(opened.access_token.expose_secret(), "at-1");
            assert_eq!(opened.refresh_token.unwrap().expose_secret(), "rt-1");
            // Remembered for `aad`, still refused under another binding.
            assert!(memo.open(&keys, other, &sealed).is_err());
        }
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(memo.open(&keys, aad, &tampered).is_err());
        let other_keys = EncryptionKeys::new(crate::crypto::tests::keys(&["k1"])).unwrap();
        let resealed = tokens.seal(&other_keys, aad);
        assert!(
            memo.open(&keys, aad, &resealed).is_err(),
            "a key we do not hold"
        );
    }

    #[test]
    fn the_margin_is_the_configured_one_capped_at_a_third_of_the_lifetime() {
        use time::Duration as D;
        for (lifetime, stale_after) in [
            (D::seconds(2), D::milliseconds(1334)),
            (D::seconds(120), D::seconds(80)),
            (D::seconds(300), D::seconds(200)),
            (D::seconds(900), D::seconds(600)),
            (D::hours(2), D::seconds(6900)),
        ] {
            let g = issued(Some(lifetime));
            let t0 = g.access_issued_at.unwrap();
            let stale = g.stale_from(&POLICY).unwrap();
            assert!(
                (stale - (t0 + stale_after)).abs() <= D::milliseconds(1),
                "{lifetime}: stale at {stale}, wanted {}",
                t0 + stale_after
            );
            assert!(g.is_fresh(stale - D::milliseconds(10), &POLICY));
            assert!(!g.is_fresh(stale, &POLICY));
            assert!(!g.is_expired(stale));
        }
        let unknown = issued(None);
        assert!(unknown.is_fresh(datetime!(2030-01-01 0:00 UTC), &POLICY));
        assert_eq!(unknown.stale_from(&POLICY), None);
    }

    #[test]
    fn records_without_an_issue_time_use_the_last_refresh_then_the_creation() {
        let mut g = issued(Some(time::Duration::seconds(120)));
        let t0 = g.access_issued_at.take().unwrap();
        // Signed in three days before this token was issued: the lifetime looks long, so the
        // whole margin applies (only records written before `access_issued_at` existed).
        assert_eq!(g.refresh_margin(&POLICY), time::Duration::seconds(300));
        g.refreshed_at = Some(t0);
        assert_eq!(g.refresh_margin(&POLICY), time::Duration::seconds(40));
    }

    #[test]
    fn the_background_runs_a_little_ahead_of_requests_and_never_for_dead_grants() {
        for _ in 0..100 {
            let mut g = issued(Some(time::Duration::seconds(120)));
            g.schedule_refresh(true, &POLICY);
            let stale = g.stale_from(&POLICY).unwrap();
            let at = g.refresh_at.unwrap();
            assert!(
                at <= stale && stale - at <= time::Duration::seconds(4),
                "{at}"
            );
        }
        let mut g = issued(Some(time::Duration::seconds(120)));
        g.schedule_refresh(false, &POLICY);
        assert_eq!(g.refresh_at, None, "no refresh token");
        let mut g = issued(None);
        g.schedule_refresh(true, &POLICY);
        assert_eq!(g.refresh_at, None, "unknown lifetime");
        let mut g = issued(Some(time::Duration::seconds(120)));
        g.status = GrantStatus::ReauthRequired;
        g.schedule_refresh(true, &POLICY);
        assert_eq!(g.refresh_at, None, "not active");
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_the_cap_and_success_resets() {
        let now = datetime!(2026-12-01 09:00 UTC);
        let mut g = issued(Some(time::Duration::seconds(120)));
        let mut waits = Vec::new();
        for _ in 0..12 {
            g.schedule_retry(now, &POLICY);
            let at = g.refresh_at.unwrap();
            assert_eq!(g.backing_off(now), Some(at));
            assert_eq!(g.backing_off(at), None, "due again at the retry point");
            waits.push((at - now).as_seconds_f64());
        }
        let full = [
            2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0, 300.0,
        ];
        for (i, (wait, full)) in waits.iter().zip(full).enumerate() {
            assert!(
                *wait >= full / 2.0 - 0.001 && *wait <= full + 0.001,
                "failure {}: waited {wait} s, wanted {}..{full}",
                i + 1,
                full / 2.0
            );
        }
        assert_eq!(g.refresh_failures, 12);
        g.schedule_refresh(true, &POLICY);
        assert_eq!(g.refresh_failures, 0);
        assert_eq!(g.backing_off(now), None);
    }
}
