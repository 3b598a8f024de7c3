//! The link token `/l/{kid}.{payload}.{tag}` (`domain::link::decode`), read before any store
//! access. Invariants: no panic; a token that verifies is byte for byte the one the daemon issues
//! for its session and expiry; every link made for a session id opens that session until it
//! expires; a flipped bit never verifies.
#![no_main]

use authlink::domain::link::{self, LinkError};
use authlink::domain::{Partition, SessionId};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::signing_keys();
    let now = common::now();

    if let Ok(token) = std::str::from_utf8(data)
        && let Ok(id) = link::decode(&keys, token, now)
    {
        let payload = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let exp = u32::from_be_bytes(payload[17..21].try_into().unwrap());
        assert!(i64::from(exp) > now.unix_timestamp());
        let exp = OffsetDateTime::from_unix_timestamp(exp.into()).unwrap();
        // Signed with the current key: what `encode` writes. (The old key's links verify too.)
        if token.starts_with("k1.") {
            assert_eq!(link::encode(&keys, id, exp), token);
        }
    }

    if data.len() >= 23 {
        let mut bytes: [u8; 17] = data[..17].try_into().unwrap();
        bytes[0] %= Partition::COUNT;
        let Some(id) = SessionId::from_bytes(&bytes) else {
            return;
        };
        let exp = u32::from_be_bytes(data[17..21].try_into().unwrap());
        let exp = OffsetDateTime::from_unix_timestamp(exp.into()).unwrap();
        let token = link::encode(&keys, id, exp);
        let expected = if exp > now {
            Ok(id)
        } else {
            Err(LinkError::Expired)
        };
        assert_eq!(link::decode(&keys, &token, now), expected);
        let tampered = common::flip(&token, data[21], data[22]);
        assert_eq!(
            link::decode(&keys, &tampered, now),
            Err(LinkError::Invalid),
            "{tampered}"
        );
    }
});
