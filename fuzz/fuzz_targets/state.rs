//! The OAuth `state` JWT (`domain::state::StateClaims::decode`), verified by the callback before
//! any store access. Invariants: no panic; a state that verifies is byte for byte what the daemon
//! issues for its claims; claims the daemon signs verify back to themselves until they expire;
//! a flipped bit never verifies; a token with our key but another issuer or audience does not
//! verify either.
#![no_main]

use authlink::crypto::{KeyEntry, SigningKeys};
use authlink::domain::state::{StateClaims, StateError};
use authlink::domain::{Partition, SessionId};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::signing_keys();
    let now = common::now();

    if let Ok(token) = std::str::from_utf8(data)
        && let Ok(claims) = StateClaims::decode(&keys, token, now)
    {
        assert!(claims.exp > now.unix_timestamp());
        // Verified with the current key: exactly what `encode` writes.
        let current = SigningKeys::new(vec![keys.current().clone()]).unwrap();
        if StateClaims::decode(&current, token, now).is_ok() {
            assert_eq!(claims.encode(&current), token);
        }
    }

    if data.len() < 20 {
        return;
    }
    let mut bytes: [u8; 17] = data[..17].try_into().unwrap();
    bytes[0] %= Partition::COUNT;
    let Some(sub) = SessionId::from_bytes(&bytes) else {
        return;
    };
    let (at, bit, mode) = (data[17], data[18], data[19]);
    let f = common::fields(&data[20..], 3);
    let field = |i: usize| {
        f.get(i)
            .map(|s| s.chars().take(64).collect())
            .unwrap_or_default()
    };
    let ttl = time::Duration::seconds(i64::from(mode % 64) - 8);
    let mut claims = StateClaims::new(sub, field(0), field(1), field(2), now, now + ttl);
    let token = claims.encode(&keys);
    let expected = if ttl.is_positive() {
        Ok(claims.clone())
    } else {
        Err(StateError::Expired)
    };
    assert_eq!(StateClaims::decode(&keys, &token, now), expected);
    let tampered = common::flip(&token, at, bit);
    assert_eq!(
        StateClaims::decode(&keys, &tampered, now),
        Err(StateError::Invalid),
        "{tampered}"
    );
    // A key we do not know: refused.
    let theirs = SigningKeys::new(vec![
        KeyEntry::parse("k1", &KeyEntry::generate().1).unwrap(),
    ])
    .unwrap();
    assert_eq!(
        StateClaims::decode(&keys, &claims.encode(&theirs), now),
        Err(StateError::Invalid)
    );
    // Signed by us, but not a state (another issuer or audience): refused.
    match mode % 3 {
        0 => claims.iss = field(1),
        1 => claims.aud = field(2),
        _ => return,
    }
    claims.exp = now.unix_timestamp() + 60;
    if claims.iss != "authlink" || claims.aud != "authlink/state" {
        assert_eq!(
            StateClaims::decode(&keys, &claims.encode(&keys), now),
            Err(StateError::Invalid)
        );
    }
});
