//! Quotas of open sessions (issue 24, finding 7: one runtime key made 40,000 sessions in five
//! seconds, each kept up to 48 h). Per bot and per user, shared by replicas through the store;
//! over one a create is refused with 429 and `Retry-After`, and a settled session frees its place.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, TestApp, cancel, spawn_with};

async fn app_with(per_bot: u32, per_user: u32, backend: Backend) -> TestApp {
    spawn_with(Options {
        backend,
        limits: Some(authlink::config::LimitSettings {
            pending_sessions_per_bot: per_bot,
            pending_sessions_per_user: per_user,
            ..Default::default()
        }),
        ..Options::default()
    })
    .await
}

async fn create(app: &TestApp, key: &str, bot: &str, user: &str) -> reqwest::Response {
    app.create_session(key, bot, json!({"integration": "crm", "user_id": user}))
        .await
}

/// A 429 problem+json naming the setting, with a `Retry-After` of one second to one minute.
async fn assert_refused(r: reqwest::Response, setting: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["code"], "quota_exceeded");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(setting), "{detail}");
}

async fn a_user_at_the_quota_is_refused_until_a_session_settles(backend: Backend) {
    let app = app_with(1000, 3, backend).await;
    let key = app.setup_bot("acme").await;
    let first = app
        .api
        .post(app.url("/v1/bots/acme/auth-sessions"))
        .bearer_auth(&key)
        .header("idempotency-key", "first")
        .json(&json!({"integration": "crm", "user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            create(&app, &key, "acme", "u1").await.status(),
            StatusCode::CREATED
        );
    }
    assert_refused(
        create(&app, &key, "acme", "u1").await,
        "limits.pending_sessions_per_user",
    )
    .await;
    // A replay of a create that was accepted is not a new session: it is answered as before.
    let replay = app
        .api
        .post(app.url("/v1/bots/acme/auth-sessions"))
        .bearer_auth(&key)
        .header("idempotency-key", "first")
        .json(&json!({"integration": "crm", "user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], first["id"]);
    // Another user of the same bot is not held back.
    assert_eq!(
        create(&app, &key, "acme", "u2").await.status(),
        StatusCode::CREATED
    );
    // A settled session frees its place, and only one.
    cancel(&app, &key, first["id"].as_str().unwrap()).await;
    assert_eq!(
        create(&app, &key, "acme", "u1").await.status(),
        StatusCode::CREATED
    );
    assert_refused(
        create(&app, &key, "acme", "u1").await,
        "limits.pending_sessions_per_user",
    )
    .await;
}

#[tokio::test]
async fn a_user_at_the_quota_is_refused_until_a_session_settles_on_redis() {
    a_user_at_the_quota_is_refused_until_a_session_settles(Backend::Redis).await;
}

#[tokio::test]
async fn a_user_at_the_quota_is_refused_until_a_session_settles_on_memory() {
    a_user_at_the_quota_is_refused_until_a_session_settles(Backend::Memory).await;
}

async fn a_bot_at_the_quota_is_refused_and_other_bots_are_not(backend: Backend) {
    let app = app_with(3, 1000, backend).await;
    let key = app.setup_bot("acme").await;
    let other = app.setup_bot("other").await;
    let mut ids = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let r = create(&app, &key, "acme", user).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_refused(
        create(&app, &key, "acme", "u4").await,
        "limits.pending_sessions_per_bot",
    )
    .await;
    // Nothing of the refused create was kept.
    let list: Value = app
        .call(Method::GET, "/v1/bots/acme/auth-sessions", &key, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(3), "{list}");
    for user in ["u1", "u2", "u3"] {
        assert_eq!(
            create(&app, &other, "other", user).await.status(),
            StatusCode::CREATED
        );
    }
    cancel(&app, &key, &ids[1]).await;
    assert_eq!(
        create(&app, &key, "acme", "u4").await.status(),
        StatusCode::CREATED
    );
    assert_refused(
        create(&app, &key, "acme", "u5").await,
        "limits.pending_sessions_per_bot",
    )
    .await;
}

#[tokio::test]
async fn a_bot_at_the_quota_is_refused_and_other_bots_are_not_on_redis() {
    a_bot_at_the_quota_is_refused_and_other_bots_are_not(Backend::Redis).await;
}

#[tokio::test]
async fn a_bot_at_the_quota_is_refused_and_other_bots_are_not_on_memory() {
    a_bot_at_the_quota_is_refused_and_other_bots_are_not(Backend::Memory).await;
}
