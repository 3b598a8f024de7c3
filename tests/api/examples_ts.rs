//! The TypeScript MCP server example (`examples/mcp-typescript`) against a real authlink, driven
//! by the official MCP TypeScript SDK's own `Client` over stdio (`tests/mcp/client-2025.mjs`,
//! protocol 2025-11-25): a client with URL-mode elicitation is asked to open the session link and
//! is told when it is done; one without gets the link as text; one that declines cancels the
//! session. Needs `npm ci` in both folders (done by `.ci/test`).

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::child::LineChild;
use crate::helpers::{Browser, TestApp, spawn_app};

/// The fake provider's identity (`provider.rs`), as its userinfo endpoint reports it.
const SALESFORCE_USER_ID: &str = "005000000000001AAA";

/// The SDK client (which runs the example server) as a child: events are its stdout lines, a
/// line on its stdin is one `whoami` call. Its server exits with the client's stdin.
struct McpClient(LineChild);

impl McpClient {
    /// `elicitation`: `"url"` declares `{elicitation: {url: {}}}`, else `{elicitation: {form: {}}}`;
    /// `answer`: what the client answers an `elicitation/create`.
    async fn start(app: &TestApp, key: &str, user: &str, elicitation: &str, answer: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, package) in [
            ("tests/mcp", "@modelcontextprotocol/sdk"),
            ("examples/mcp-typescript", "@modelcontextprotocol/sdk"),
            ("examples/mcp-typescript", "tsx"),
        ] {
            assert!(
                root.join(dir).join("node_modules").join(package).is_dir(),
                "{dir}/node_modules/{package} is missing: run `npm ci --prefix {dir}` (.ci/test does)"
            );
        }
        let mut command = Command::new("node");
        command
            .arg("client-2025.mjs")
            .current_dir(root.join("tests/mcp"))
            .env("AUTHLINK_URL", &app.base)
            .env("AUTHLINK_KEY", key)
            .env("AUTHLINK_BOT", "acme")
            .env("AUTHLINK_INTEGRATION", "crm")
            .env("MCP_USER_ID", user)
            .env("ELICITATION", elicitation)
            .env("ELICIT_ANSWER", answer);
        let mut client = Self(LineChild::spawn(command));
        client.expect("ready").await;
        client
    }

    /// The next event, which must be `name`.
    async fn expect(&mut self, name: &str) -> Value {
        let event = self.0.next_json().await;
        assert_eq!(event["event"], name, "{event}; stderr: {}", self.0.stderr());
        event
    }

    /// Ask the client to call the tool.
    async fn call(&mut self) {
        self.0.send("call").await;
    }

    /// Close the client's stdin: it closes the server and exits, cleanly.
    async fn finish(self) {
        self.0.finish().await;
    }
}

/// The pending session authlink hands user `user` right now (the one the server was given: one
/// pending session per user).
async fn pending_session(app: &TestApp, key: &str, user: &str) -> Value {
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            key,
            Some(json!({"user_id": user, "authorize": {}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    r.json::<Value>().await.unwrap()["session"].clone()
}

/// A tool result's text, and whether it is an error.
fn text_of(result: &Value) -> (&str, bool) {
    let text = result["content"][0]["text"].as_str().unwrap();
    (text, result["isError"] == true)
}

/// The tool result carries the fake provider's userinfo (fetched with the user's new token).
fn assert_userinfo(event: &Value) {
    let (text, is_error) = text_of(&event["result"]);
    assert!(!is_error, "{event}");
    let info: Value = serde_json::from_str(text).unwrap();
    assert_eq!(info["user_id"], SALESFORCE_USER_ID, "{info}");
    assert!(info["email"].as_str().is_some_and(|e| e.contains('@')));
}

#[tokio::test]
async fn a_url_mode_client_opens_the_link_hears_it_is_done_and_gets_the_data() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut client = McpClient::start(&app, &key, "u-url", "url", "accept").await;
    client.call().await;
    let elicitation = client.expect("elicitation").await;
    let params = &elicitation["params"];
    let session = pending_session(&app, &key, "u-url").await;
    assert_eq!(params["mode"], "url");
    assert_eq!(params["url"], session["link"]);
    assert_eq!(params["elicitationId"], session["id"]);
    let message = params["message"].as_str().unwrap();
    assert!(
        message.contains("Salesforce") && message.contains("acme assistant"),
        "{message}"
    );

    // The person opens it while the server's retry waits.
    let landing = Browser::new()
        .authorize(params["url"].as_str().unwrap())
        .await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);

    let done = client.expect("elicitation_complete").await;
    assert_eq!(done["params"]["elicitationId"], session["id"]);
    assert_userinfo(&client.expect("result").await);
    let id = session["id"].as_str().unwrap();
    let (_, s) = app.session(&key, "acme", id, None).await;
    assert_eq!(s["status"], "completed");
    client.finish().await;
}

#[tokio::test]
async fn a_client_without_url_mode_gets_the_link_as_text_and_the_data_once_it_is_followed() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut client = McpClient::start(&app, &key, "u-text", "form", "accept").await;
    client.call().await;
    // No elicitation: the tool result itself, with the link.
    let first = client.expect("result").await;
    let (text, is_error) = text_of(&first["result"]);
    assert!(is_error, "{first}");
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap_or_else(|| panic!("no link in {text:?}"));
    let session = pending_session(&app, &key, "u-text").await;
    assert_eq!(link, session["link"]);
    assert!(text.contains("Salesforce"), "{text}");

    let landing = Browser::new().authorize(link).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    // The user asks again.
    client.call().await;
    assert_userinfo(&client.expect("result").await);
    client.finish().await;
}

#[tokio::test]
async fn a_client_that_declines_cancels_the_session_and_nothing_is_stored() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut client = McpClient::start(&app, &key, "u-no", "url", "decline").await;
    client.call().await;
    let elicitation = client.expect("elicitation").await;
    let id = elicitation["params"]["elicitationId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Straight to the result: no completion notification.
    let result = client.expect("result").await;
    let (text, is_error) = text_of(&result["result"]);
    assert!(is_error, "{result}");
    assert!(text.contains("cancelled"), "{text}");
    client.finish().await;

    let (_, s) = app.session(&key, "acme", &id, None).await;
    assert_eq!(s["status"], "cancelled");
    // The link is dead, and the user has no connection.
    let r = Browser::new()
        .post(elicitation["params"]["url"].as_str().unwrap())
        .await;
    assert!(!r.status().is_redirection(), "{}", r.status());
    let r = app
        .call(
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u-no",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.provider.token_requests(), 0);
}
