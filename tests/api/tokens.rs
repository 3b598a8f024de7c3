//! ⑤ Tokens: working access tokens, exactly one refresh across replicas, failure classes,
//! disconnect with revocation at the provider.

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Browser, TestApp, spawn_app};

async fn connected(app: &TestApp, user: &str) -> String {
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", user).await;
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    key
}

pub async fn token(app: &TestApp, key: &str, user: &str, force: bool) -> reqwest::Response {
    app.call(
        Method::POST,
        "/v1/bots/acme/integrations/crm/access-token",
        key,
        Some(json!({"user_id": user, "force_refresh": force})),
    )
    .await
}

/// Make the stored access token look expired (as time would).
pub async fn expire(app: &TestApp, user: &str) {
    let mut g = app
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse(user).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    g.access_expires_at = Some(authlink::clock::now() - time::Duration::minutes(1));
    assert!(app.store.update_grant(&g, None).await.unwrap());
}

#[tokio::test]
async fn a_connected_user_gets_a_working_token_and_others_get_authorization_required() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    let r = token(&app, &key, "u1", false).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert!(
        app.provider
            .access_token_is_active(t["access_token"].as_str().unwrap())
    );
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["instance_url"], app.provider.base_url);
    assert_eq!(t["identity"]["username"], "ada@example.com");
    assert_eq!(
        app.provider.refresh_requests(),
        0,
        "a fresh token is not refreshed"
    );
    let r = token(&app, &key, "nobody", false).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "authorization_required"
    );
    let other = app.setup_bot("other").await;
    assert_eq!(
        token(&app, &other, "u1", false).await.status(),
        StatusCode::NOT_FOUND,
        "cross-bot"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_requests_on_two_replicas_refresh_once() {
    let a = spawn_app().await;
    let b = a.replica().await;
    let key = connected(&a, "u1").await;
    let before: Value = token(&a, &key, "u1", false).await.json().await.unwrap();
    expire(&a, "u1").await;
    let requests = (0..200).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let key = key.clone();
        async move {
            token(app, &key, "u1", false)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let answers = join_all(requests).await;
    assert_eq!(
        a.provider.refresh_requests(),
        1,
        "exactly one refresh at the provider"
    );
    let tokens: std::collections::HashSet<&str> = answers
        .iter()
        .map(|t| t["access_token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 1, "everyone got the same new token");
    let new = *tokens.iter().next().unwrap();
    assert_ne!(new, before["access_token"].as_str().unwrap());
    assert!(a.provider.access_token_is_active(new));
    // Salesforce sent no refresh token: the old one was kept and still works.
    let again: Value = token(&a, &key, "u1", true).await.json().await.unwrap();
    assert_eq!(a.provider.refresh_requests(), 2);
    assert!(
        a.provider
            .access_token_is_active(again["access_token"].as_str().unwrap())
    );
}

#[tokio::test]
async fn invalid_grant_requires_reauthorization_and_a_provider_outage_keeps_the_grant() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    app.provider
        .fail_next_token(500, json!({"error": "server_error"}));
    let r = token(&app, &key, "u1", true).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The first failure backs off for 1–2 s (half to all of `refresh_retry_base_seconds`).
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    assert_eq!(
        token(&app, &key, "u1", false).await.status(),
        StatusCode::OK,
        "grant kept, its unexpired token served"
    );
    let r = token(&app, &key, "u1", true).await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "still backing off"
    );
    assert_eq!(
        app.provider.refresh_requests(),
        1,
        "without asking the provider"
    );
    app.state.clock.advance(std::time::Duration::from_secs(2));

    app.provider.fail_next_token(
        400,
        json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}),
    );
    let r = token(&app, &key, "u1", true).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        token(&app, &key, "u1", false).await.status(),
        StatusCode::NOT_FOUND
    );
    let c: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u1",
            &key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["status"], "reauth_required");
    assert_eq!(c["last_error"], "invalid_grant");
    crate::helpers::until(|| {
        app.receiver
            .delivered()
            .iter()
            .any(|r| r.kind == "connection.reauth_required")
    })
    .await;
    // A new session is offered again (no working grant).
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u1"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn disconnect_revokes_at_the_provider_and_deletes_the_grant() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    let t: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    let access = t["access_token"].as_str().unwrap().to_owned();
    let c: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u1",
            &key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["status"], "active");
    assert!(
        !c.to_string().contains(&access),
        "metadata carries no token"
    );
    let r = app
        .call(
            Method::DELETE,
            "/v1/bots/acme/integrations/crm/connections/u1",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["revoked_at_provider"],
        true
    );
    assert!(
        !app.provider.access_token_is_active(&access),
        "revoked at the provider"
    );
    assert_eq!(app.provider.revocations().len(), 1);
    assert_eq!(
        token(&app, &key, "u1", false).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u1",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    crate::helpers::until(|| {
        app.receiver
            .delivered()
            .iter()
            .any(|r| r.kind == "connection.revoked")
    })
    .await;
}

#[tokio::test]
async fn salesforce_expiry_is_learned_by_introspection_or_assumed() {
    let assumed = spawn_app().await;
    let key = connected(&assumed, "u1").await;
    let c: Value = assumed
        .call(
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u1",
            &key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let created = time::OffsetDateTime::parse(
        c["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        c["access_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        (expires - created).whole_minutes(),
        120,
        "no expires_in: the 2-hour session is assumed"
    );

    let app = crate::helpers::spawn_with(crate::helpers::Options {
        salesforce_introspect: true,
        ..Default::default()
    })
    .await;
    let key = connected(&app, "u1").await;
    let t: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    let introspected: Value = reqwest::Client::new()
        .post(format!(
            "{}/services/oauth2/introspect",
            app.provider.base_url
        ))
        .basic_auth(
            crate::helpers::CLIENT_ID,
            Some(crate::helpers::CLIENT_SECRET),
        )
        .form(&[("token", t["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let exp = introspected["exp"].as_i64().unwrap();
    let learned = time::OffsetDateTime::parse(
        t["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(learned.unix_timestamp(), exp, "expiry from introspection");

    // The learned lifetime follows the one margin rule: a 2-hour token is served unchanged until
    // 5 minutes before it ends, then refreshed once.
    let clock = &app.state.clock;
    clock.freeze();
    let until_stale = learned - time::Duration::seconds(300) - clock.now();
    clock.advance(
        (until_stale - time::Duration::seconds(1))
            .try_into()
            .unwrap(),
    );
    let same: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    assert_eq!(same["access_token"], t["access_token"]);
    assert_eq!(app.provider.refresh_requests(), 0);
    clock.advance(std::time::Duration::from_secs(2));
    let new: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    assert_ne!(new["access_token"], t["access_token"]);
    assert_eq!(app.provider.refresh_requests(), 1);
}

#[tokio::test]
async fn a_refresh_with_a_bad_salesforce_signature_is_not_stored() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    let before: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    app.provider.corrupt_signature(true);
    let r = token(&app, &key, "u1", true).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.provider.corrupt_signature(false);
    let after: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    assert_eq!(
        after["access_token"], before["access_token"],
        "the unverified tokens were not stored"
    );
}

#[tokio::test]
async fn a_stale_view_after_another_replicas_rotation_does_not_kill_the_grant() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    let ids = (
        authlink::domain::BotId::parse("acme").unwrap(),
        authlink::domain::IntegrationName::parse("crm").unwrap(),
        authlink::domain::Subject::parse("u1").unwrap(),
    );
    let stale = app
        .store
        .get_grant(&ids.0, &ids.1, &ids.2)
        .await
        .unwrap()
        .unwrap();
    // Another replica refreshes in the meantime (a fenced write moves the generation on)…
    assert!(app.store.update_grant(&stale, None).await.unwrap());
    assert!(
        !app.store.update_grant(&stale, None).await.unwrap(),
        "a stale writer is fenced out"
    );
    // …and the provider would now refuse the old refresh token.
    app.provider
        .fail_next_token(400, json!({"error": "invalid_grant"}));
    let state = app.state.clone();
    let integration = app
        .store
        .get_integration(&ids.0, &ids.1)
        .await
        .unwrap()
        .unwrap();
    let (grant, _) = authlink::refresh::access_token(&state, &integration, stale.into(), true)
        .await
        .unwrap();
    assert_eq!(grant.status, authlink::domain::grant::GrantStatus::Active);
    assert_eq!(
        app.provider.refresh_requests(),
        0,
        "the newer generation was used, the provider not called"
    );
    assert_eq!(
        token(&app, &key, "u1", false).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn authorizing_again_revokes_the_replaced_refresh_token() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    let first: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    let s = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "force": true}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.provider.revocations().len(),
        1,
        "the old refresh token was revoked"
    );
    assert!(
        !app.provider
            .access_token_is_active(first["access_token"].as_str().unwrap())
    );
    let second: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    assert!(
        app.provider
            .access_token_is_active(second["access_token"].as_str().unwrap())
    );
}

#[tokio::test]
async fn check_makes_a_live_identity_call() {
    let app = spawn_app().await;
    let key = connected(&app, "u1").await;
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/connections/u1/check",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["ok"], true);
    assert_eq!(c["identity"]["email"], "ada@example.com");
    assert_eq!(c["identity"]["org_id"], "00D000000000001AAA");
    // The token dies at the provider (revoked elsewhere): the check says so.
    let t: Value = token(&app, &key, "u1", false).await.json().await.unwrap();
    let revoked = reqwest::Client::new()
        .post(format!("{}/services/oauth2/revoke", app.provider.base_url))
        .form(&[("token", t["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let c: Value = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/connections/u1/check",
            &key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["ok"], false);
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/connections/nobody/check",
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
