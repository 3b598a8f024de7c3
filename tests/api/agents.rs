//! AI agents (MCP servers) on both protocol revisions: one token call answers with the token, or
//! with a pending session (one per user, however often the agent retries) and the exact MCP
//! payloads — the 2025-11-25 `elicitation/create` params and `-32042` error, the 2026-07-28
//! `input_required` result with a sealed `requestState`, a plain tool result — and the retry
//! waits for the person, ending at once when they decline, the link expires, or the client
//! cancels. Forged, expired and foreign request states are refused and change nothing.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Browser, TestApp, spawn_app};

const CAPABLE: &str = r#"{"elicitation": {"form": {}, "url": {}}}"#;

async fn token_call(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            key,
            Some(body),
        )
        .await;
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn authorize(protocol: &str) -> Value {
    json!({"mcp": {"protocol_version": protocol, "capabilities": serde_json::from_str::<Value>(CAPABLE).unwrap()}})
}

/// An agent's first call for `user`: the 404 with the offer.
async fn offered(app: &TestApp, key: &str, user: &str, protocol: &str) -> Value {
    let (status, body) = token_call(
        app,
        key,
        json!({"user_id": user, "authorize": authorize(protocol), "tool_call": "sha256:call-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "authorization_required");
    body
}

#[tokio::test]
async fn without_a_grant_the_agent_gets_one_pending_session_and_the_payloads_of_both_revisions() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    // A plain call (no `authorize`) stays the plain 404.
    let (status, plain) = token_call(&app, &key, json!({"user_id": "u1"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(plain["code"], "authorization_required");
    assert!(plain.get("session").is_none());

    let body = offered(&app, &key, "u1", "2025-11-25").await;
    let session = &body["session"];
    let id = session["id"].as_str().unwrap();
    let link = session["link"].as_str().unwrap();
    assert_eq!(session["status"], "pending");
    let mcp = &body["mcp"];
    assert_eq!(mcp["use"], "elicitation_2025");
    let params = &mcp["elicitation_2025"];
    assert_eq!(params["mode"], "url");
    assert_eq!(params["url"], link);
    assert_eq!(params["elicitationId"], id);
    let message = params["message"].as_str().unwrap();
    assert!(
        message.contains("Salesforce") && message.contains("acme assistant"),
        "{message}"
    );
    assert_eq!(mcp["error_2025"]["code"], -32042);
    assert_eq!(mcp["error_2025"]["data"]["elicitations"][0], *params);
    let input = &mcp["input_required_2026"];
    assert_eq!(input["resultType"], "input_required");
    assert_eq!(
        input["inputRequests"]["authlink"]["method"],
        "elicitation/create"
    );
    assert_eq!(input["inputRequests"]["authlink"]["params"]["url"], link);
    assert!(
        input["inputRequests"]["authlink"]["params"]
            .get("elicitationId")
            .is_none()
    );
    assert!(input["requestState"].as_str().unwrap().starts_with("rs1."));
    let text = mcp["tool_result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(link));

    // Asking again (any revision) reuses the pending session; the recommendation follows the
    // client: 2026-07-28 → input_required, no URL mode → the text fallback.
    let again = offered(&app, &key, "u1", "2026-07-28").await;
    assert_eq!(again["session"]["id"], id);
    assert_eq!(again["mcp"]["use"], "input_required_2026");
    let (_, formless) = token_call(
        &app,
        &key,
        json!({"user_id": "u1", "authorize": {"mcp": {"protocol_version": "2025-11-25", "capabilities": {"elicitation": {}}}}}),
    )
    .await;
    assert_eq!(formless["session"]["id"], id);
    assert_eq!(formless["mcp"]["use"], "tool_result");
    // German for a German user.
    let (_, de) = token_call(
        &app,
        &key,
        json!({"user_id": "u-de", "authorize": {"locale": "de", "ttl_seconds": 120}}),
    )
    .await;
    let message = de["mcp"]["elicitation_2025"]["message"].as_str().unwrap();
    assert!(message.contains("bittet Sie"), "{message}");
    // Bad session fields are the create call's errors.
    let (status, bad) = token_call(
        &app,
        &key,
        json!({"user_id": "u2", "authorize": {"ttl_seconds": 5}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, _) = token_call(
        &app,
        &key,
        json!({"user_id": "u2", "authorize": {"colour": "red"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn many_concurrent_retries_for_one_user_share_one_session() {
    let app = spawn_app().await;
    let b = app.replica().await;
    let key = app.setup_bot("acme").await;
    let answers = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &app } else { &b };
        let key = key.clone();
        async move { offered(app, &key, "same-user", "2026-07-28").await }
    }))
    .await;
    let ids: std::collections::HashSet<&str> = answers
        .iter()
        .map(|a| a["session"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one session for 20 concurrent calls: {ids:?}");
}

#[tokio::test]
async fn a_waiting_retry_answers_with_the_token_the_moment_the_person_finishes() {
    let app = spawn_app().await;
    let b = app.replica().await;
    let key = app.setup_bot("acme").await;
    let offer = offered(&app, &key, "u1", "2026-07-28").await;
    let state = offer["mcp"]["input_required_2026"]["requestState"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = offer["session"]["link"].as_str().unwrap().to_owned();
    // The retry (on the other replica) waits; the person signs in meanwhile.
    let retry = {
        let (b, key, state) = (&b, key.clone(), state.clone());
        async move {
            let r = token_call(
                b,
                &key,
                json!({"user_id": "u1", "request_state": state, "tool_call": "sha256:call-1",
                       "wait": 30, "input_response": {"action": "accept"}}),
            )
            .await;
            (r, std::time::Instant::now())
        }
    };
    let person = async {
        let landing = Browser::new().authorize(&link).await;
        assert_eq!(landing.status, StatusCode::OK);
        std::time::Instant::now()
    };
    let (((status, body), answered), completed) = futures_util::join!(retry, person);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["identity"]["user_id"], "005000000000001AAA");
    eprintln!(
        "callback answered → waiting retry answered: {:?}",
        answered.saturating_duration_since(completed)
    );
    // The 2025 way: the session id, and no wait needed now.
    let (status, _) = token_call(
        &app,
        &key,
        json!({"user_id": "u1", "session_id": offer["session"]["id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_retry_ends_at_once_when_the_person_declines_the_link_expires_or_the_client_cancels() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    // Declined at the provider.
    let offer = offered(&app, &key, "denier", "2025-11-25").await;
    app.provider.deny_next_authorization();
    let mut browser = Browser::new();
    let authorize = browser
        .start(offer["session"]["link"].as_str().unwrap())
        .await;
    let callback = browser.sign_in(&authorize).await;
    browser.land(callback.as_str()).await;
    let (status, body) = token_call(
        &app,
        &key,
        json!({"user_id": "denier", "session_id": offer["session"]["id"], "wait": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["code"], "authorization_denied");
    assert_eq!(body["reason"], "denied");
    assert_eq!(body["mcp"]["tool_result"]["isError"], true);

    // The client declined the elicitation: the session is cancelled.
    let offer = offered(&app, &key, "decliner", "2026-07-28").await;
    let state = offer["mcp"]["input_required_2026"]["requestState"].clone();
    let (status, body) = token_call(
        &app,
        &key,
        json!({"user_id": "decliner", "request_state": state, "tool_call": "sha256:call-1",
               "input_response": {"action": "decline"}, "wait": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["code"], "authorization_cancelled");
    let id = offer["session"]["id"].as_str().unwrap();
    let (_, s) = app.session(&key, "acme", id, None).await;
    assert_eq!(s["status"], "cancelled");
    // A new call after that opens a new session.
    let fresh = offered(&app, &key, "decliner", "2026-07-28").await;
    assert_ne!(fresh["session"]["id"], id);

    // The link expired (the clock moves past it): at once, not after the wait.
    let offer = offered(&app, &key, "late", "2025-11-25").await;
    app.state.clock.advance(Duration::from_secs(901));
    let (status, body) = token_call(
        &app,
        &key,
        json!({"user_id": "late", "session_id": offer["session"]["id"], "wait": 50}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["code"], "authorization_expired");
}

#[tokio::test]
async fn forged_expired_and_foreign_request_states_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let other_key = app.setup_bot("other").await;
    let offer = offered(&app, &key, "u1", "2026-07-28").await;
    let id = offer["session"]["id"].as_str().unwrap();
    let state = offer["mcp"]["input_required_2026"]["requestState"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = |body: Value| {
        let (app, key) = (&app, key.clone());
        async move {
            let (status, answer) = token_call(app, &key, body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            answer["detail"].as_str().unwrap().to_owned()
        }
    };
    let mut tampered = state.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(
        refused(json!({"user_id": "u1", "request_state": tampered, "tool_call": "sha256:call-1"}))
            .await
            .contains("not valid")
    );
    assert!(
        refused(json!({"user_id": "u2", "request_state": state, "tool_call": "sha256:call-1"}))
            .await
            .contains("another user")
    );
    assert!(
        refused(json!({"user_id": "u1", "request_state": state, "tool_call": "sha256:call-2"}))
            .await
            .contains("another tool call")
    );
    assert!(
        refused(json!({"user_id": "u1", "request_state": "not-a-state"}))
            .await
            .contains("not valid")
    );
    // Another bot (with its own key and an integration of the same name) cannot use it.
    let (status, answer) = app
        .call(
            Method::POST,
            "/v1/bots/other/integrations/crm/access-token",
            &other_key,
            Some(json!({"user_id": "u1", "request_state": state, "tool_call": "sha256:call-1"})),
        )
        .await
        .json::<Value>()
        .await
        .map(|v| (v["status"].as_u64().unwrap(), v))
        .unwrap();
    assert_eq!(status, 422, "{answer}");
    // Nothing changed: the session still waits for the person.
    let (_, s) = app.session(&key, "acme", id, None).await;
    assert_eq!(s["status"], "pending");
    // Expired with its session.
    app.state.clock.advance(Duration::from_secs(901));
    assert!(
        refused(json!({"user_id": "u1", "request_state": state, "tool_call": "sha256:call-1"}))
            .await
            .contains("expired")
    );
    let (status, _) = token_call(
        &app,
        &key,
        json!({"user_id": "u1", "wait": 51, "session_id": id}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "wait is capped below the clients' timeout"
    );
}

/// A measurement aid, not a test: what an authorization answer adds to a token call without a
/// grant (sequential calls, one in-process replica, Redis): the plain 404, the offer of a
/// session already pending, and the offer of a new one. `cargo test --release --test api --
/// --ignored measure_agent_offer --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_agent_offer() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let n = 1000;
    let run = async |name: &str, body: &dyn Fn(usize) -> Value| {
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let started = std::time::Instant::now();
            let (status, _) = token_call(&app, &key, body(i)).await;
            times.push(started.elapsed());
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        times.sort();
        eprintln!(
            "{name}: p50 {:?}, p99 {:?} ({n} calls)",
            times[n / 2],
            times[n * 99 / 100]
        );
    };
    run("plain 404", &|_| json!({"user_id": "m-plain"})).await;
    run(
        "offer, session reused",
        &|_| json!({"user_id": "m-same", "authorize": {}}),
    )
    .await;
    run(
        "offer, new session",
        &|i| json!({"user_id": format!("m-{i}"), "authorize": {}}),
    )
    .await;
}
