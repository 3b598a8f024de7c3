//! Who sent a Continue (`POST /l/{link}`): the same-origin rule that stops login CSRF
//! (`routes::link::requester_for`), over any `Origin` and `Sec-Fetch-Site` headers, repeated or
//! not, readable or not. Invariants: no panic; a request that names another site in its
//! (first) `Origin` or says `Sec-Fetch-Site: cross-site` is never ours; a request is ours only
//! when the browser said so (`same-origin`) or, saying nothing of the fetch, sent our origin.
#![no_main]

use authlink::fuzzing::continue_requester;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const OURS: &str = "https://auth.example.com";

fuzz_target!(|data: &[u8]| {
    // Lines `o:<value>` and `s:<value>` become Origin and Sec-Fetch-Site headers, in order; a
    // few well-known values are more likely than random bytes to be hit.
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let (name, value) = match line {
            [b'o', b':', v @ ..] => ("origin", v),
            [b's', b':', v @ ..] => ("sec-fetch-site", v),
            [b'O', n] => (
                "origin",
                pick(
                    *n,
                    &[
                        OURS,
                        "null",
                        "https://auth.example.com:8443",
                        "https://evil.example",
                        "http://auth.example.com",
                    ],
                ),
            ),
            [b'S', n] => (
                "sec-fetch-site",
                pick(
                    *n,
                    &[
                        "same-origin",
                        "same-site",
                        "cross-site",
                        "none",
                        "Same-Origin",
                    ],
                ),
            ),
            _ => continue,
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let verdict = continue_requester(OURS, &headers);
    let origin = headers.get("origin").map(HeaderValue::as_bytes);
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if origin.is_some_and(|o| o != b"null" && o != OURS.as_bytes()) {
        assert_eq!(verdict, "elsewhere", "{headers:?}");
    }
    if site == Some(b"cross-site") {
        assert_eq!(verdict, "elsewhere", "{headers:?}");
    }
    if verdict == "us" {
        assert!(
            site == Some(b"same-origin") || (site.is_none() && origin == Some(OURS.as_bytes())),
            "{headers:?}"
        );
    }
});

fn pick(n: u8, values: &[&'static str]) -> &'static [u8] {
    values[usize::from(n) % values.len()].as_bytes()
}
