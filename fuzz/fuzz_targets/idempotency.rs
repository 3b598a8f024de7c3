//! The `Idempotency-Key` header of `POST /v1/bots/{bot}/auth-sessions`. Invariants: no panic; a
//! key is accepted exactly when it is 1-255 visible ASCII characters (tab allowed, as HTTP
//! allows it), and it is kept byte for byte.
#![no_main]

use authlink::fuzzing::idempotency_key;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // What hyper would hand over: header values never hold CR, LF or NUL.
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let visible = data
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    let expected =
        (visible && (1..=255).contains(&data.len())).then(|| std::str::from_utf8(data).unwrap());
    assert_eq!(idempotency_key(&value), expected);
});
