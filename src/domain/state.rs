//! The OAuth `state` parameter: a signed JWT (HS256, key id in the header) naming the session,
//! the attempt, the app it was issued for, and the hash of the browser-binding cookie. The callback
//! verifies it before touching the store; a forged or expired state never reaches Redis.

use jsonwebtoken::{Algorithm, Header, Validation, decode_header};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::SessionId;
use crate::crypto::SigningKeys;

const ISSUER: &str = "authlink";
const AUDIENCE: &str = "authlink/state";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateClaims {
    pub iss: String,
    pub aud: String,
    /// The session.
    pub sub: SessionId,
    /// The attempt (single-use record in the store).
    pub att: String,
    /// The app (callback path) the attempt was sent to: mix-up defence.
    pub cfg: String,
    /// base64url(SHA-256(binding cookie value)).
    pub bnd: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state is malformed or its signature does not match")]
    Invalid,
    #[error("state has expired")]
    Expired,
}

impl StateClaims {
    pub fn new(
        sub: SessionId,
        att: String,
        cfg: String,
        bnd: String,
        now: OffsetDateTime,
        exp: OffsetDateTime,
    ) -> Self {
        Self {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub,
            att,
            cfg,
            bnd,
            iat: now.unix_timestamp(),
            exp: exp.unix_timestamp(),
        }
    }

    pub fn encode(&self, keys: &SigningKeys) -> String {
        let (kid, key) = keys.jwt_encoding_key();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, self, &key).expect("HS256 over plain claims cannot fail")
    }

    pub fn decode(
        keys: &SigningKeys,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Self, StateError> {
        if token.len() > 2048 {
            return Err(StateError::Invalid);
        }
        let header = decode_header(token).map_err(|_| StateError::Invalid)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| keys.jwt_decoding_key(kid))
            .ok_or(StateError::Invalid)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked below against our clock, so that "expired" is told apart from
        // "forged" and tests control time.
        v.validate_exp = false;
        let claims = jsonwebtoken::decode::<StateClaims>(token, &key, &v)
            .map_err(|_| StateError::Invalid)?
            .claims;
        if now.unix_timestamp() >= claims.exp {
            return Err(StateError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::keys;
    use crate::domain::Partition;
    use time::Duration;

    fn claims(now: OffsetDateTime) -> StateClaims {
        let id = SessionId::new(Partition::all().next().unwrap());
        StateClaims::new(
            id,
            "att".into(),
            "salesforce".into(),
            "bnd".into(),
            now,
            now + Duration::minutes(10),
        )
    }

    #[test]
    fn state_verifies_until_expiry_and_with_rotated_keys() {
        let now = OffsetDateTime::now_utc();
        let ks = keys(&["new", "old"]);
        let old = SigningKeys::new(vec![ks[1].clone()]).unwrap();
        let both = SigningKeys::new(ks).unwrap();
        let c = claims(now);
        let token = c.encode(&old);
        assert_eq!(StateClaims::decode(&both, &token, now), Ok(c));
        assert_eq!(
            StateClaims::decode(&both, &token, now + Duration::minutes(11)),
            Err(StateError::Expired)
        );
    }

    #[test]
    fn forged_states_are_invalid() {
        let now = OffsetDateTime::now_utc();
        let mine = SigningKeys::new(keys(&["k"])).unwrap();
        let theirs = SigningKeys::new(keys(&["k"])).unwrap();
        let token = claims(now).encode(&theirs);
        assert_eq!(
            StateClaims::decode(&mine, &token, now),
            Err(StateError::Invalid)
        );
        assert_eq!(
            StateClaims::decode(&mine, "garbage", now),
            Err(StateError::Invalid)
        );
        let mut parts: Vec<String> = claims(now)
            .encode(&mine)
            .split('.')
            .map(String::from)
            .collect();
        parts[1] = crate::crypto::b64url(
            br#"{"iss":"authlink","aud":"authlink/state","sub":"x","exp":9999999999}"#,
        );
        assert_eq!(
            StateClaims::decode(&mine, &parts.join("."), now),
            Err(StateError::Invalid)
        );
    }
}
