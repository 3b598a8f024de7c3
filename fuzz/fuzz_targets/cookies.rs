//! The cookies read before authentication: the per-attempt binding cookie (checked by the
//! callback) and the console session cookie, through their one reader
//! (`routes::attempt::read_cookie`). Invariants: no panic; a value read is the
//! value of exactly the named cookie (never of a cookie whose name only starts or ends like it),
//! contains no `;`, and a cookie written among others is read back unchanged.
#![no_main]

use authlink::fuzzing::cookie;
use authlink::routes::attempt::cookie_name;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = cookie(headers, name);
    if let Some(v) = value {
        assert!(!v.contains(';'));
        let pair = format!("{name}={v}");
        assert!(
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .any(|h| h.split(';').any(|p| p.trim() == pair)),
            "{pair:?}"
        );
    }
    value
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, v);
        }
    }
    let attempt: String = String::from_utf8_lossy(data)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    for name in [
        "authlink-console",
        "__Host-authlink-console",
        &cookie_name(true, &attempt),
        &cookie_name(false, &attempt),
    ] {
        read(&headers, name);
    }

    // Written among decoys, read back.
    let f = common::fields(data, 2);
    let name = cookie_name(f[0].len() % 2 == 0, &attempt);
    let value: String = f
        .get(1)
        .map(|v| {
            v.chars()
                .filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\'))
                .collect()
        })
        .unwrap_or_default();
    let cookie = format!("x{name}=evil; {name}x=evil; a=b; {name}={value}; {name}=later");
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, HeaderValue::from_static("z=1"));
    headers.append(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
    assert_eq!(read(&headers, &name), Some(value.as_str()));
    if name != "authlink-console" {
        assert_eq!(read(&headers, "authlink-console"), None);
    }
});
