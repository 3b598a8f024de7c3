//! What the binding step knows of a bot's identity issuer: its discovery document and its JWKS,
//! kept for a while so that a sign-in does not cost two extra round trips to the issuer. A key
//! the cached JWKS does not have (the issuer rotated) is looked up again, but at most once per
//! `JWKS_REFETCH_FLOOR`, so forged `kid`s cannot make authlink hammer the issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};
use url::Url;

/// The parts of an issuer's discovery document the binding step uses.
#[derive(Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
}

/// How long a discovery document is used before it is fetched again.
pub const DISCOVERY_TTL: Duration = Duration::hours(1);
/// How long a JWKS is used before it is fetched again.
pub const JWKS_TTL: Duration = Duration::minutes(10);
/// A JWKS younger than this is not fetched again for an unknown key.
pub const JWKS_REFETCH_FLOOR: Duration = Duration::seconds(30);

struct Entry<T> {
    value: Arc<T>,
    fetched_at: OffsetDateTime,
}

/// Per-replica cache, keyed by issuer and by JWKS URL; one entry per configured issuer.
#[derive(Default)]
pub struct IssuerCache {
    discovery: Mutex<HashMap<String, Entry<Discovery>>>,
    jwks: Mutex<HashMap<Url, Entry<JwkSet>>>,
}

fn fresh<K: std::hash::Hash + Eq, T>(
    map: &Mutex<HashMap<K, Entry<T>>>,
    key: &K,
    now: OffsetDateTime,
    max_age: Duration,
) -> Option<Arc<T>> {
    let map = map.lock().expect("issuer cache lock");
    let e = map.get(key)?;
    (now - e.fetched_at < max_age && e.fetched_at <= now).then(|| e.value.clone())
}

fn keep<K: std::hash::Hash + Eq, T>(
    map: &Mutex<HashMap<K, Entry<T>>>,
    key: K,
    value: T,
    now: OffsetDateTime,
) -> Arc<T> {
    let value = Arc::new(value);
    map.lock().expect("issuer cache lock").insert(
        key,
        Entry {
            value: value.clone(),
            fetched_at: now,
        },
    );
    value
}

impl IssuerCache {
    pub fn discovery(&self, issuer: &str, now: OffsetDateTime) -> Option<Arc<Discovery>> {
        fresh(&self.discovery, &issuer.to_owned(), now, DISCOVERY_TTL)
    }

    pub fn keep_discovery(
        &self,
        issuer: &str,
        d: Discovery,
        now: OffsetDateTime,
    ) -> Arc<Discovery> {
        keep(&self.discovery, issuer.to_owned(), d, now)
    }

    /// The cached JWKS at `url` if it is fresh and has the key `kid` names; `None` means fetch
    /// it. A fresh JWKS without that key counts as fresh (no refetch) while it is younger than
    /// the refetch floor.
    pub fn jwks(&self, url: &Url, kid: Option<&str>, now: OffsetDateTime) -> Option<Arc<JwkSet>> {
        let set = fresh(&self.jwks, url, now, JWKS_TTL)?;
        match kid {
            Some(kid) if set.find(kid).is_none() => fresh(&self.jwks, url, now, JWKS_REFETCH_FLOOR),
            _ => Some(set),
        }
    }

    pub fn keep_jwks(&self, url: &Url, set: JwkSet, now: OffsetDateTime) -> Arc<JwkSet> {
        keep(&self.jwks, url.clone(), set, now)
    }

    /// Forget what is known of `issuer` (its configuration changed).
    pub fn forget(&self, issuer: &str) {
        let gone = self
            .discovery
            .lock()
            .expect("issuer cache lock")
            .remove(issuer);
        if let Some(d) = gone {
            self.jwks
                .lock()
                .expect("issuer cache lock")
                .remove(&d.value.jwks_uri);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Discovery {
        let u = |p: &str| Url::parse(&format!("https://id.example.com/{p}")).unwrap();
        Discovery {
            issuer: "https://id.example.com".into(),
            authorization_endpoint: u("auth"),
            token_endpoint: u("token"),
            jwks_uri: u("jwks"),
        }
    }

    fn jwks(kid: &str) -> JwkSet {
        serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": "AQAB", "e": "AQAB"
        }]}))
        .unwrap()
    }

    #[test]
    fn discovery_is_kept_for_its_ttl() {
        let c = IssuerCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let iss = "https://id.example.com";
        assert!(c.discovery(iss, t0).is_none());
        c.keep_discovery(iss, discovery(), t0);
        assert!(
            c.discovery(iss, t0 + DISCOVERY_TTL - Duration::SECOND)
                .is_some()
        );
        assert!(c.discovery(iss, t0 + DISCOVERY_TTL).is_none());
        c.forget(iss);
        assert!(c.discovery(iss, t0).is_none());
    }

    #[test]
    fn an_unknown_key_is_looked_up_again_but_not_more_than_once_per_floor() {
        let c = IssuerCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let url = discovery().jwks_uri;
        c.keep_jwks(&url, jwks("k1"), t0);
        let later = t0 + JWKS_REFETCH_FLOOR;
        assert!(
            c.jwks(&url, Some("k1"), later).is_some(),
            "known key: cached"
        );
        assert!(c.jwks(&url, None, later).is_some());
        assert!(
            c.jwks(&url, Some("k2"), t0 + Duration::SECOND).is_some(),
            "within the floor: no refetch"
        );
        assert!(c.jwks(&url, Some("k2"), later).is_none(), "refetch");
        assert!(c.jwks(&url, Some("k1"), t0 + JWKS_TTL).is_none(), "expired");
    }
}
