//! The Python example MCP server (examples/mcp-python) under a real MCP client nobody here wrote:
//! the official Python SDK's own `Client` (tests/mcp/client_2026.py), at protocol 2026-07-28
//! over stdio, run from the venv `.ci/test` installs (tests/mcp/.venv). The client opens the
//! URL it is asked to (it reports it on stdout; the test plays the person with `Browser`) and its
//! built-in multi-round-trip driver retries with the requestState: the server's retry call to
//! authlink waits until the person finished, so one round is enough. Also: a client without URL
//! mode gets the link as text, and a client that declines ends the session.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::child::LineChild;
use crate::helpers::{Browser, TestApp, spawn_app, until};

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/.venv/bin/python");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client_2026.py");
/// The fake provider's one user.
const SALESFORCE_USER: &str = "005000000000001AAA";

/// One run of the SDK client (which spawns the example server as its own child; the server
/// exits when its stdin, the client's pipe, closes).
struct SdkClient(LineChild);

impl SdkClient {
    /// `answer`: what the client answers URL elicitations (`accept`, `decline`, `cancel`), or
    /// `none` to declare no elicitation at all. `calls`: how often it calls `whoami`.
    fn start(app: &TestApp, key: &str, user: &str, answer: &str, calls: u32) -> Self {
        assert!(
            Path::new(PYTHON).exists(),
            "no MCP SDK venv at {PYTHON}: run .ci/test, or python3 -m venv tests/mcp/.venv && \
             tests/mcp/.venv/bin/pip install -r examples/mcp-python/requirements.txt"
        );
        let mut command = Command::new(PYTHON);
        command
            .arg(CLIENT)
            .args(["--answer", answer, "--calls", &calls.to_string()])
            .env("AUTHLINK_URL", &app.base)
            .env("AUTHLINK_KEY", key)
            .env("AUTHLINK_BOT", "acme")
            .env("AUTHLINK_INTEGRATION", "crm")
            .env("MCP_USER_ID", user);
        Self(LineChild::spawn(command))
    }

    /// The next line the client prints: one JSON object with one key, `field`.
    async fn next(&mut self, field: &str) -> Value {
        let mut v = self.0.next_json().await;
        assert!(
            v.get(field).is_some(),
            "expected {field}, got {v}\n{}",
            self.0.stderr()
        );
        v[field].take()
    }

    /// Let the client make its next call.
    async fn go_on(&mut self) {
        self.0.send("").await;
    }

    /// Wait for the client to exit, asserting success.
    async fn exit(self) {
        self.0.finish().await;
    }
}

/// The text of a tool result's first content block.
fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap()
}

async fn session(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, s) = app.session(key, "acme", id, None).await;
    assert_eq!(status, StatusCode::OK);
    s
}

#[tokio::test]
async fn the_sdk_client_opens_the_url_and_its_one_retry_returns_the_users_data() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut client = SdkClient::start(&app, &key, "u-py", "accept", 1);
    assert_eq!(client.next("protocol_version").await, "2026-07-28");
    let params = client.next("elicitation").await;
    assert_eq!(params["mode"], "url");
    assert!(params.get("elicitationId").is_none(), "{params}");
    let message = params["message"].as_str().unwrap();
    assert!(
        message.contains("Salesforce") && message.contains("acme assistant"),
        "{message}"
    );
    let url = params["url"].as_str().unwrap();
    // The URL is the user's pending session's link (one per user: asking again names it).
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            &key,
            Some(json!({"user_id": "u-py", "authorize": {}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let pending = r.json::<Value>().await.unwrap()["session"].clone();
    assert_eq!(pending["link"], url);

    // The client accepted and retried; the server's retry waits while the person signs in.
    let landing = Browser::new().authorize(url).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    // The next line is the result: no second elicitation, the one retry got the token.
    let result = client.next("result").await;
    assert!(result.get("isError").is_none_or(|e| e == false), "{result}");
    assert_eq!(result["structuredContent"]["user_id"], SALESFORCE_USER);
    let userinfo: Value = serde_json::from_str(text(&result)).unwrap();
    assert_eq!(userinfo["user_id"], SALESFORCE_USER);
    assert!(userinfo["email"].as_str().is_some_and(|e| e.contains('@')));
    client.exit().await;
    let s = session(&app, &key, pending["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "completed");
}

#[tokio::test]
async fn a_client_without_url_mode_gets_the_link_as_text_and_the_data_once_connected() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut client = SdkClient::start(&app, &key, "u-text", "none", 2);
    assert_eq!(client.next("protocol_version").await, "2026-07-28");
    // No elicitation (it declared none): the link in a tool result.
    let first = client.next("result").await;
    assert_eq!(first["isError"], true, "{first}");
    let link = text(&first)
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}/l/", app.base)))
        .unwrap_or_else(|| panic!("no link in {first}"))
        .to_owned();
    assert!(text(&first).contains("Salesforce"), "{first}");
    let landing = Browser::new().authorize(&link).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    // Asked again, the tool has the token.
    client.go_on().await;
    let second = client.next("result").await;
    assert!(second.get("isError").is_none_or(|e| e == false), "{second}");
    assert_eq!(second["structuredContent"]["user_id"], SALESFORCE_USER);
    client.exit().await;
}

#[tokio::test]
async fn a_client_that_declines_ends_the_session_cancelled_and_nothing_is_stored() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut client = SdkClient::start(&app, &key, "u-no", "decline", 1);
    assert_eq!(client.next("protocol_version").await, "2026-07-28");
    let params = client.next("elicitation").await;
    let url = params["url"].as_str().unwrap().to_owned();
    // The declined answer, forwarded, cancels the session: the result says so at once.
    let result = client.next("result").await;
    assert_eq!(result["isError"], true, "{result}");
    assert!(text(&result).contains("cancelled"), "{result}");
    client.exit().await;
    // The session is cancelled (its event names it), its link is no longer valid.
    let cancelled = || {
        app.receiver
            .delivered()
            .into_iter()
            .find(|e| e.kind == "auth_session.cancelled" && e.body["data"]["user_id"] == "u-no")
    };
    until(|| cancelled().is_some()).await;
    let event = cancelled().unwrap();
    let s = session(
        &app,
        &key,
        event.body["data"]["session_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(s["status"], "cancelled");
    let page = Browser::new().land(&url).await;
    assert_eq!(page.status, StatusCode::GONE);
    // Nothing stored: no connection for the user.
    let r = app
        .call(
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u-no",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
