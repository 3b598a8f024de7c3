//! The MCP `requestState` a client hands back on its retry (`domain::request_state`), sealed
//! with AES-256-GCM. Invariants: no panic on any text; nothing but what the daemon sealed opens
//! (a sealed state opens to itself for its bot, integration, subject and tool call until it
//! expires); a flipped bit never opens; another bot or integration never opens it.
#![no_main]

use authlink::domain::request_state::{RequestState, RequestStateError};
use authlink::domain::{BotId, IntegrationName, Partition, SessionId, Subject};
use libfuzzer_sys::fuzz_target;
use time::Duration;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let keys = common::encryption_keys();
    let now = common::now();
    let bot = BotId::parse("acme").unwrap();
    let other_bot = BotId::parse("evil").unwrap();
    let crm = IntegrationName::parse("crm").unwrap();
    let alice = Subject::parse("alice").unwrap();

    if let Ok(token) = std::str::from_utf8(data) {
        // No committed input is sealed (the nonce is random): nothing opens.
        let opened = RequestState::open(&keys, token, &bot, &crm, &alice, "", now);
        assert!(
            !matches!(opened, Ok(_)),
            "a request state the daemon did not seal opened"
        );
    }

    if data.len() < 3 {
        return;
    }
    let (at, bit, ttl) = (data[0], data[1], data[2]);
    let f = common::fields(&data[3..], 2);
    let Ok(subject) = Subject::parse(&f[0]) else {
        return;
    };
    let tool_call = f.get(1).cloned().unwrap_or_default();
    let state = RequestState {
        subject: subject.clone(),
        session: SessionId::new(Partition::of(&bot, &crm, &subject)),
        tool_call: tool_call.clone(),
        expires_at: now + Duration::seconds(i64::from(ttl) - 16),
    };
    let token = state.seal(&keys, &bot, &crm);
    let expected = if state.expires_at > now {
        Ok(state.clone())
    } else {
        Err(RequestStateError::Expired)
    };
    let open =
        |t: &str, b: &BotId| RequestState::open(&keys, t, b, &crm, &subject, &tool_call, now);
    assert_eq!(open(&token, &bot), expected);
    assert_eq!(open(&token, &other_bot), Err(RequestStateError::Invalid));
    let tampered = common::flip(&token, at, bit);
    assert_eq!(
        open(&tampered, &bot),
        Err(RequestStateError::Invalid),
        "{tampered}"
    );
});
