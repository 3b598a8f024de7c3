//! The link a person receives in the chat: `/l/{kid}.{payload}.{tag}`. The payload is the session
//! id and the link's expiry; the tag is a truncated HMAC. A tampered or expired link is rejected
//! here, before any store access. About 55 characters after the host.

use time::OffsetDateTime;

use super::SessionId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::{SigningKeys, b64url_decode};

const DOMAIN: &str = "authlink/link/v1";
const TAG_LEN: usize = 16;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed or its signature does not match")]
    Invalid,
    #[error("the link has expired")]
    Expired,
}

pub fn encode(keys: &SigningKeys, id: SessionId, expires_at: OffsetDateTime) -> String {
    let mut token = String::new();
    encode_into(keys, id, expires_at, &mut token);
    token
}

/// `{public_url}/l/{token}`, built in one buffer.
pub fn url(
    public_url: &url::Url,
    keys: &SigningKeys,
    id: SessionId,
    expires_at: OffsetDateTime,
) -> String {
    let base = public_url.as_str().trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + 64);
    url.push_str(base);
    url.push_str("/l/");
    encode_into(keys, id, expires_at, &mut url);
    url
}

/// `encode`, appended to `out` (the link URL is built in one buffer).
pub fn encode_into(
    keys: &SigningKeys,
    id: SessionId,
    expires_at: OffsetDateTime,
    out: &mut String,
) {
    let key = keys.current();
    let payload = payload(id, expires_at);
    let tag: [u8; TAG_LEN] = keys.mac(key, DOMAIN, &[key.id.as_bytes(), &payload]);
    out.push_str(&key.id);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, out);
}

/// Verify a link token; returns the session it opens.
pub fn decode(
    keys: &SigningKeys,
    token: &str,
    now: OffsetDateTime,
) -> Result<SessionId, LinkError> {
    if token.len() > 128 {
        return Err(LinkError::Invalid);
    }
    let mut parts = token.split('.');
    let (Some(kid), Some(p), Some(t), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LinkError::Invalid);
    };
    let payload = b64url_decode(p).ok_or(LinkError::Invalid)?;
    let tag = b64url_decode(t).ok_or(LinkError::Invalid)?;
    if payload.len() != 21
        || !keys.verify_mac::<TAG_LEN>(kid, DOMAIN, &[kid.as_bytes(), &payload], &tag)
    {
        return Err(LinkError::Invalid);
    }
    let id = SessionId::from_bytes(&payload[..17]).ok_or(LinkError::Invalid)?;
    let exp = u32::from_be_bytes(payload[17..21].try_into().map_err(|_| LinkError::Invalid)?);
    if now.unix_timestamp() >= i64::from(exp) {
        return Err(LinkError::Expired);
    }
    Ok(id)
}

fn payload(id: SessionId, expires_at: OffsetDateTime) -> Vec<u8> {
    let exp = u32::try_from(expires_at.unix_timestamp()).unwrap_or(u32::MAX);
    let mut p = id.to_bytes().to_vec();
    p.extend_from_slice(&exp.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::keys;
    use crate::domain::Partition;
    use time::Duration;

    fn setup() -> (SigningKeys, SessionId, OffsetDateTime) {
        let keys = SigningKeys::new(keys(&["k1"])).unwrap();
        let id = SessionId::new(Partition::all().nth(5).unwrap());
        (keys, id, OffsetDateTime::now_utc())
    }

    #[test]
    fn a_link_opens_its_session_until_it_expires() {
        let (keys, id, now) = setup();
        let link = encode(&keys, id, now + Duration::minutes(15));
        assert!(link.len() < 70, "{} chars", link.len());
        assert_eq!(decode(&keys, &link, now), Ok(id));
        assert_eq!(
            decode(&keys, &link, now + Duration::minutes(16)),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn any_changed_character_is_rejected() {
        let (keys, id, now) = setup();
        let link = encode(&keys, id, now + Duration::minutes(15));
        for i in 0..link.len() {
            let mut bytes = link.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != link {
                assert_eq!(
                    decode(&keys, &tampered, now),
                    Err(LinkError::Invalid),
                    "at {i}"
                );
            }
        }
        let other = SigningKeys::new(crate::crypto::tests::keys(&["k1"])).unwrap();
        assert_eq!(decode(&other, &link, now), Err(LinkError::Invalid));
    }
}
