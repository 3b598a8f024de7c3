//! What every target shares: fixed keys (so a committed corpus of valid tokens stays valid), a
//! fixed clock, and a way to cut one input into several fields.
#![allow(dead_code)]

use authlink::crypto::{EncryptionKeys, KeyEntry, SigningKeys};
use time::OffsetDateTime;

/// 32 bytes of 0x07, base64: the fuzzing key. Never a real key.
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
/// Another key: a rotated-out one (links it signed still verify).
const OLD_KEY: &str = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";

pub fn signing_keys() -> SigningKeys {
    SigningKeys::new(vec![
        KeyEntry::parse("k1", KEY).unwrap(),
        KeyEntry::parse("k0", OLD_KEY).unwrap(),
    ])
    .unwrap()
}

pub fn encryption_keys() -> EncryptionKeys {
    EncryptionKeys::new(vec![KeyEntry::parse("e1", KEY).unwrap()]).unwrap()
}

/// 2027-01-15T08:00:00Z: the fuzz targets' "now".
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

/// `data` cut at NUL bytes into at most `n` fields (the last takes the rest), as text.
pub fn fields(data: &[u8], n: usize) -> Vec<String> {
    data.splitn(n, |b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Flip bit `bit % 7` (an ASCII byte stays ASCII) of byte `at % len`.
pub fn flip(s: &str, at: u8, bit: u8) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = usize::from(at) % b.len();
    b[i] ^= 1 << (bit % 7);
    String::from_utf8_lossy(&b).into_owned()
}
