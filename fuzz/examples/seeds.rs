//! Writes the seed corpus (`fuzz/corpus/<target>/`): valid inputs made by the daemon's own
//! encoders with the fuzzing keys, plus hand-picked edge cases. Run from `fuzz/`:
//! `cargo run --example seeds`. The files are committed; rerun only when a format changes.

use std::fs;
use std::path::Path;

use authlink::domain::request_state::RequestState;
use authlink::domain::state::StateClaims;
use authlink::domain::{BotId, IntegrationName, Partition, SessionId, Subject, link};
use time::Duration;

#[path = "../fuzz_targets/common.rs"]
mod common;

fn write(target: &str, name: &str, data: impl AsRef<[u8]>) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

fn main() {
    let keys = common::signing_keys();
    let now = common::now();
    let id = SessionId::new(Partition::all().nth(3).unwrap());

    // link: a live link, an expired one, and the raw-bytes form the round trip reads.
    write(
        "link",
        "valid",
        link::encode(&keys, id, now + Duration::minutes(15)),
    );
    write(
        "link",
        "expired",
        link::encode(&keys, id, now - Duration::minutes(1)),
    );
    let mut raw = id.to_bytes().to_vec();
    raw.extend_from_slice(&((now.unix_timestamp() + 900) as u32).to_be_bytes());
    raw.extend_from_slice(&[7, 3]);
    write("link", "roundtrip", raw);

    // state: a live state, an expired one, and the fields form.
    let claims = |ttl| {
        StateClaims::new(
            id,
            "Qm9vdHN0cmFwcGluZw".into(),
            "salesforce".into(),
            "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sN-tqFVE".into(),
            now,
            now + ttl,
        )
    };
    write(
        "state",
        "valid",
        claims(Duration::minutes(10)).encode(&keys),
    );
    write(
        "state",
        "expired",
        claims(Duration::minutes(-1)).encode(&keys),
    );
    let mut raw = id.to_bytes().to_vec();
    raw.extend_from_slice(&[11, 2, 40]);
    raw.extend_from_slice(b"attempt\0salesforce\0bnd");
    write("state", "fields", raw);

    // request_state: sealed for another bot (opens nowhere here), and the fields form.
    let (bot, crm) = (
        BotId::parse("other").unwrap(),
        IntegrationName::parse("crm").unwrap(),
    );
    let alice = Subject::parse("alice").unwrap();
    let rs = RequestState {
        subject: alice.clone(),
        session: SessionId::new(Partition::of(&bot, &crm, &alice)),
        tool_call: "sha256:3f1a".into(),
        expires_at: now + Duration::minutes(10),
    };
    write(
        "request_state",
        "other_bot",
        rs.seal(&common::encryption_keys(), &bot, &crm),
    );
    write("request_state", "fields", b"\x05\x02\x40alice\0sha256:3f1a");
    write("request_state", "prefix_only", "rs1.e1.");

    // callback: what providers send back.
    let state = claims(Duration::minutes(10)).encode(&keys);
    write("callback", "code", format!("code=aPrx4sg1n&state={state}"));
    write(
        "callback",
        "error",
        "error=access_denied&error_description=end-user+denied+authorization&state=x",
    );
    write(
        "callback",
        "salesforce",
        "code=aPrxYXyxzkuBzbiFDkTbUw%3D%3D&state=eyJ0&sfdc_community_url=x",
    );
    write("callback", "fields", b"c0de\0st4te\0\0");

    // cookies
    write(
        "cookies",
        "browser",
        "_ga=GA1.1.1; __Host-authlink-console=Z2qEh3S1; authlink-Qm9vdHN0cmFw=5ZpOw_3t",
    );
    write("cookies", "two_headers", "a=b\nauthlink-console=abc; c=d");

    // idempotency
    write("idempotency", "turn", "turn-17");
    write(
        "idempotency",
        "uuid",
        "8e0f2c35-6b7b-4a0a-9d0a-4f3b7f1f0b1e",
    );

    // webhook_url: URLs and a host pattern after a NUL.
    for (name, s) in [
        ("https", "https://hooks.example.com/authlink\0*.example.com"),
        (
            "userinfo",
            "https://evil.com@chat.example.com/\0chat.example.com",
        ),
        ("loopback", "http://127.0.0.1:9000/hook\0localhost"),
        ("mapped", "http://[::ffff:10.0.0.1]/\0*.internal"),
        ("metadata", "http://169.254.169.254/latest/meta-data/\0x"),
        ("localhost", "http://a.localhost./x\0*.localhost"),
        ("idn", "https://xn--80ak6aa92e.com/\0*.COM"),
    ] {
        write("webhook_url", name, s);
    }

    // channel_responses: 2 bytes status, 1 byte mode, then body (first line doubles as
    // Retry-After).
    let channel = |status: u16, mode: u8, body: &str| {
        let mut v = (status - 100).to_be_bytes().to_vec();
        v.push(mode);
        v.extend_from_slice(body.as_bytes());
        v
    };
    for (name, status, body) in [
        ("slack_ok", 200, r#"{"ok":true,"ts":"1.2","channel":"C1"}"#),
        ("slack_error", 200, r#"{"ok":false,"error":"ratelimited"}"#),
        (
            "telegram_429",
            429,
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests","parameters":{"retry_after":35}}"#,
        ),
        (
            "whatsapp_131056",
            400,
            r#"{"error":{"code":131056,"message":"pair rate limit"}}"#,
        ),
        (
            "matrix_limit",
            429,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":2000}"#,
        ),
        (
            "teams_token",
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0"}"#,
        ),
        (
            "teams_error",
            412,
            r#"{"error":{"code":"PreconditionFailed","message":"busy"}}"#,
        ),
        ("retry_after", 503, "120\n"),
        (
            "slack_click",
            200,
            "payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U1%22%7D%2C%22response_url%22%3A%22https%3A%2F%2Fhooks.slack.com%2Fx%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22authlink_open%22%2C%22value%22%3A%22s%22%7D%5D%7D",
        ),
        (
            "slack_signed",
            200,
            "secret\x001800000000\x00v0=a1b2\x00token=x&payload=%7B%7D",
        ),
    ] {
        write("channel_responses", name, channel(status, 0, body));
    }

    // oauth_responses
    write(
        "oauth_responses",
        "generic",
        r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"refresh_token":"rt","scope":"openid email"}"#,
    );
    write(
        "oauth_responses",
        "salesforce",
        r#"{"access_token":"00D!AR8","token_type":"Bearer","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D5g/0055g","issued_at":"1800000000000","signature":"c2lnbmF0dXJl","scope":"api refresh_token id"}"#,
    );
    write(
        "oauth_responses",
        "lookalike",
        r#"{"access_token":"a","token_type":"bearer","instance_url":"https://salesforce.com.evil.net","id":"https://evil.net/?x=.salesforce.com","issued_at":"1","signature":""}"#,
    );
}
