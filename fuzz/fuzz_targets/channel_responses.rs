//! What chat channels answer (Slack, Telegram, WhatsApp, Matrix, Teams and its token endpoint)
//! and what Slack sends us (signed interaction requests): the adapters' parsers, which classify
//! every answer once for the outbox worker. Invariants: no panic; a retry waits at most a day
//! and its time can be computed (`now + wait`, as the worker does); only a 2xx is a success where
//! the API says so; a token's lifetime fits the cache; a Slack request verifies exactly when it
//! carries the signature of its timestamp and body.
#![no_main]

use std::time::Duration;

use authlink::channel::slack::{parse_click, verify_request};
use authlink::channel::{ChannelError, retry_after_header};
use authlink::fuzzing as f;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const DAY: Duration = Duration::from_secs(86_400);

fn classified(result: Result<(), ChannelError>, status: StatusCode, success_is_2xx: bool) {
    match result {
        Ok(()) => assert!(!success_is_2xx || status.is_success()),
        Err(ChannelError::Retry { retry_after, .. }) => {
            if let Some(wait) = retry_after {
                assert!(wait <= DAY, "a retry {wait:?} away");
                let _ = common::now() + wait;
            }
        }
        Err(ChannelError::Permanent { .. }) => {}
    }
}

fn slack_signature(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = StatusCode::from_u16(100 + u16::from_be_bytes([data[0], data[1]]) % 500).unwrap();
    let body = &data[3..];
    // `Retry-After` as the adapters read it, from a header value made of the body's first line.
    let line = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    let wait = HeaderValue::from_bytes(line).ok().and_then(|v| {
        headers.insert(http::header::RETRY_AFTER, v);
        retry_after_header(&headers)
    });
    if let Some(w) = wait {
        assert!(w <= DAY);
    }
    let wait = if data[2] % 2 == 0 { wait } else { None };

    classified(f::slack_answer(wait, body), status, false);
    classified(f::telegram_answer(status, wait, body), status, false);
    classified(f::whatsapp_answer(status, body), status, true);
    classified(f::matrix_answer(status, wait, body), status, true);
    classified(f::teams_connector_answer(status, wait, body), status, true);
    match f::teams_token_answer(status, body) {
        Ok(_) => assert!(status.is_success()),
        Err(e) => classified(Err(e), status, true),
    }

    // Slack's interaction requests: signature, age and payload.
    let _ = parse_click(body);
    let parts = common::fields(body, 4);
    let [secret, ts, sig, rest] = [0, 1, 2, 3].map(|i| parts.get(i).cloned().unwrap_or_default());
    let now = common::now().unix_timestamp();
    let _ = verify_request(&secret, &ts, &sig, rest.as_bytes(), now);
    let ts = (now + i64::from(data[2]) - 128).to_string();
    let good = slack_signature(&secret, &ts, rest.as_bytes());
    let fresh = (i64::from(data[2]) - 128).abs() <= 300;
    assert_eq!(
        verify_request(&secret, &ts, &good, rest.as_bytes(), now),
        fresh
    );
    let mut other = rest.clone().into_bytes();
    other.push(b'x');
    assert!(!verify_request(&secret, &ts, &good, &other, now));
});
