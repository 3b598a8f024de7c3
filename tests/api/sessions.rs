//! ① and ⑤ The sessions API: validation, idempotency, cross-tenant isolation, long-poll, and a
//! store outage answered with 503 and recovered from without a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app, spawn_with, until, until_async};
use crate::servers::{Server, free_port};

async fn problem(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn bad_input_gets_a_clear_problem_and_creates_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let url = app.url("/v1/bots/acme/auth-sessions");
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        ("malformed", app.api.post(&url).header("content-type", "application/json").body("{nope"), StatusCode::BAD_REQUEST),
        ("not json", app.api.post(&url).header("content-type", "text/plain").body("hi"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("unknown field", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "colour": 1})), StatusCode::UNPROCESSABLE_ENTITY),
        ("missing user", app.api.post(&url).json(&json!({"integration": "crm"})), StatusCode::UNPROCESSABLE_ENTITY),
        ("bad user", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "a\u{0}b"})), StatusCode::UNPROCESSABLE_ENTITY),
        ("reserved user", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "_bot"})), StatusCode::UNPROCESSABLE_ENTITY),
        ("ttl", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "ttl_seconds": 5})), StatusCode::UNPROCESSABLE_ENTITY),
        ("big context", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "context": {"x": "y".repeat(9000)}})), StatusCode::UNPROCESSABLE_ENTITY),
        ("return url", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "return_url": "https://evil.example/"})), StatusCode::UNPROCESSABLE_ENTITY),
        // Reads as evil.com to a person; the host is the allowed one.
        ("return url with user info", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "return_url": "https://evil.com@chat.example.com/"})), StatusCode::UNPROCESSABLE_ENTITY),
        ("return url not http", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "return_url": "javascript://chat.example.com/%0aalert(1)"})), StatusCode::UNPROCESSABLE_ENTITY),
        ("return url to the console", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "return_url": app.url("/console/bots/acme")})), StatusCode::UNPROCESSABLE_ENTITY),
        ("webhook url", app.api.post(&url).json(&json!({"integration": "crm", "user_id": "u", "webhook_url": "ftp://x/"})), StatusCode::UNPROCESSABLE_ENTITY),
        ("unknown integration", app.api.post(&url).json(&json!({"integration": "nope", "user_id": "u"})), StatusCode::NOT_FOUND),
        ("oversized", app.api.post(&url).header("content-type", "application/json").body(format!("{{\"user_id\":\"{}\"}}", "x".repeat(70_000))), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (name, req, expected) in cases {
        let r = req.bearer_auth(&key).send().await.unwrap();
        let status = r.status();
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        assert_eq!(status, expected, "{name}: {}", r.text().await.unwrap());
    }
    let r = app
        .api
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({"integration": "crm", "user_id": "u", "ttl_seconds": 5}))
        .send()
        .await
        .unwrap();
    let (_, body) = problem(r).await;
    assert!(body["detail"].as_str().unwrap().contains("ttl_seconds"));
    // Nothing was created.
    assert!(app.redis_dump().iter().all(|(k, _)| !k.contains(":s:")));
}

#[tokio::test]
async fn a_returned_url_in_the_allowed_hosts_is_accepted() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u", "return_url": "https://chat.example.com/c/1"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Served over https, authlink sends people back only to https pages: an http `return_url` is a
/// 422 naming the field, even on an allowed host or loopback (a local trial runs over http, where
/// http stays accepted).
#[tokio::test]
async fn an_http_return_url_is_refused_when_authlink_is_served_over_https() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let https = app
        .replica_with(|c| c.public_url = url::Url::parse("https://authlink.example.com").unwrap())
        .await;
    let r = https
        .call(
            reqwest::Method::PUT,
            "/v1/bots/acme",
            &app.operator_key,
            Some(
                json!({"name": "acme assistant", "webhook_url": app.receiver.url,
                "allowed_return_hosts": ["chat.example.com", "localhost", "127.0.0.1"]}),
            ),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for (i, url) in [
        "http://chat.example.com/c/1",
        "http://localhost:3000/c/1",
        "http://127.0.0.1/c/1",
    ]
    .into_iter()
    .enumerate()
    {
        let user = format!("u{i}");
        let r = https
            .create_session(
                &key,
                "acme",
                json!({"integration": "crm", "user_id": user, "return_url": url}),
            )
            .await;
        let (status, body) = problem(r).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert!(
            body["detail"].as_str().unwrap().contains("return_url"),
            "{body}"
        );
        // A local trial (served over http) accepts it.
        let r = app
            .create_session(
                &key,
                "acme",
                json!({"integration": "crm", "user_id": user, "return_url": url}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{url}");
    }
    let r = https
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u", "return_url": "https://chat.example.com/c/1"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_session_and_refuses_another_body() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let body = json!({"integration": "crm", "user_id": "u1"});
    let send = |b: Value| {
        app.api
            .post(app.url("/v1/bots/acme/auth-sessions"))
            .bearer_auth(&key)
            .header("idempotency-key", "req-1")
            .json(&b)
            .send()
    };
    let first: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["link"], second["link"]);
    let other = send(json!({"integration": "crm", "user_id": "u2"}))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.redis_dump()
            .iter()
            .filter(|(k, _)| k.contains(":s:"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_key_of_another_bot_sees_nothing() {
    let app = spawn_app().await;
    let acme = app.setup_bot("acme").await;
    let other = app.setup_bot("other").await;
    let s = app.new_session(&acme, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/v1/bots/acme/auth-sessions/{id}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/bots/acme/auth-sessions/{id}"),
        ),
        (reqwest::Method::GET, "/v1/bots/acme".to_string()),
        (
            reqwest::Method::GET,
            "/v1/bots/acme/integrations/crm".to_string(),
        ),
    ] {
        let r = app.call(method.clone(), &path, &other, None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let r = app
        .create_session(
            &other,
            "acme",
            json!({"integration": "crm", "user_id": "u"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The other bot's own path does not reach acme's session either.
    let r = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/bots/other/auth-sessions/{id}"),
            &other,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, still) = app.session(&acme, "acme", id, None).await;
    assert_eq!(still["status"], "pending");
    // No key, a wrong key.
    assert_eq!(
        app.api
            .get(app.url("/v1/bots/acme"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .call(reqwest::Method::GET, "/v1/bots/acme", "alk_forged", None)
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn long_poll_returns_at_its_deadline_with_the_current_status() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let (status, body) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), Some(1))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "pending");
    let r = app
        .call(
            reqwest::Method::GET,
            &format!(
                "/v1/bots/acme/auth-sessions/{}?wait=61",
                s["id"].as_str().unwrap()
            ),
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .call(
            reqwest::Method::GET,
            "/v1/bots/acme/auth-sessions/not-an-id",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_long_poll_wakes_when_the_session_is_cancelled() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap().to_owned();
    let waiter = {
        let (api, url, key) = (
            app.api.clone(),
            app.url(&format!("/v1/bots/acme/auth-sessions/{id}?wait=60")),
            key.clone(),
        );
        tokio::spawn(async move {
            api.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    until(|| app.store.waiting() == 1).await;
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(waiter.await.unwrap()["status"], "cancelled");
}

#[tokio::test]
async fn a_store_outage_is_a_fast_503_and_recovers_without_restart() {
    let port = free_port();
    let redis = Server::start(port);
    let app = spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    assert_eq!(app.status_of("/readyz").await, StatusCode::OK);

    drop(redis);
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u2"}))
        .await;
    let (status, body) = problem(r).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "store_unavailable");
    assert_eq!(
        app.status_of("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.status_of("/healthz").await, StatusCode::OK);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"authlink_store_errors_total{kind="unavailable"}"#),
        "{metrics}"
    );

    // Back on the same port (empty: this Redis keeps nothing), the daemon reconnects by itself.
    let _redis = Server::start(port);
    until_async(|| async { app.status_of("/readyz").await == StatusCode::OK }).await;
    // The old data is gone with that Redis; new writes work again.
    app.put_bot("acme").await;
    let r = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/bots/acme/auth-sessions/{}", s["id"].as_str().unwrap()),
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
