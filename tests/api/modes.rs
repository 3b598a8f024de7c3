//! Integration modes: users authorize, or an admin pre-authorizes once for the whole bot. A user
//! integration never falls back to the bot grant, and a pre-authorized one never to a user's.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Browser, spawn_app};

async fn token(
    app: &crate::helpers::TestApp,
    key: &str,
    integration: &str,
    user: &str,
) -> reqwest::Response {
    app.call(
        Method::POST,
        &format!("/v1/bots/acme/integrations/{integration}/access-token"),
        key,
        Some(json!({"user_id": user})),
    )
    .await
}

#[tokio::test]
async fn a_pre_authorized_integration_serves_the_bot_grant_to_every_user() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .put_integration(
            "acme",
            "shared",
            json!({"provider": "salesforce", "mode": "pre_authorized"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Users do not sign in to a pre-authorized integration; runtime keys cannot pre-authorize.
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "shared", "user_id": "u1"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/shared/pre-authorize",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/pre-authorize",
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "crm lets users authorize");

    // Nobody has signed in yet.
    assert_eq!(
        token(&app, &key, "shared", "u1").await.status(),
        StatusCode::NOT_FOUND
    );

    // The admin signs in once.
    app.provider.set_identity(
        "005000000000ADMIN",
        "00D000000000001AAA",
        "admin@example.com",
        "admin@example.com",
    );
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/shared/pre-authorize",
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["user_id"], "_bot");
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );

    // Every user of the bot gets the bot grant.
    let a: Value = token(&app, &key, "shared", "u1")
        .await
        .json()
        .await
        .unwrap();
    let b: Value = token(&app, &key, "shared", "someone-else")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["access_token"], b["access_token"]);
    assert_eq!(a["identity"]["username"], "admin@example.com");
    assert!(
        app.provider
            .access_token_is_active(a["access_token"].as_str().unwrap())
    );
    // The user integration does not fall back to it.
    assert_eq!(
        token(&app, &key, "crm", "u1").await.status(),
        StatusCode::NOT_FOUND
    );

    // Re-authorizing replaces the bot grant (and revokes the replaced refresh token).
    app.provider.set_identity(
        "005000000000ADMN2",
        "00D000000000001AAA",
        "admin2@example.com",
        "admin2@example.com",
    );
    let s: Value = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/shared/pre-authorize",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    let c: Value = token(&app, &key, "shared", "u1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["identity"]["username"], "admin2@example.com");
    assert!(
        !app.provider
            .access_token_is_active(a["access_token"].as_str().unwrap())
    );

    // Disconnect works on the bot grant.
    let r = app
        .call(
            Method::DELETE,
            "/v1/bots/acme/integrations/shared/connections/_bot",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        token(&app, &key, "shared", "u1").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_user_grant_does_not_serve_a_pre_authorized_integration() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        token(&app, &key, "crm", "u1").await.status(),
        StatusCode::OK
    );
    // The same integration switched to pre-authorized: u1's grant is not the bot grant.
    let r = app
        .put_integration(
            "acme",
            "crm",
            json!({"provider": "salesforce", "mode": "pre_authorized"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        token(&app, &key, "crm", "u1").await.status(),
        StatusCode::NOT_FOUND
    );
}
