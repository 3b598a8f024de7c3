//! Same-user binding (`binding: oidc`, SPEC §9): a second real oidc-provider plays the MCP
//! server's own authorization server; the fake Salesforce is the provider behind it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use authlink::domain::{BotId, IntegrationName, Subject};

use crate::helpers::{Browser, TestApp, spawn_app};
use crate::oidc::{CLIENT_ID, CLIENT_SECRET, OidcProvider};

/// An app whose bot `acme` names a fresh oidc-provider as its identity issuer.
async fn bound_app() -> (TestApp, OidcProvider, String) {
    bound_app_with(&[]).await
}

/// `bound_app` with more settings for the issuer (`tests/oidc/README.md`).
async fn bound_app_with(env: &[(&str, &str)]) -> (TestApp, OidcProvider, String) {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let issuer = OidcProvider::start_with(&format!("{}/oauth/binding/acme", app.base), 60, env);
    let r = put_issuer(
        &app,
        json!({"issuer": issuer.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    (app, issuer, key)
}

async fn put_issuer(app: &TestApp, identity_issuer: Value) -> reqwest::Response {
    app.call(
        Method::PUT,
        "/v1/bots/acme",
        &app.operator_key,
        Some(json!({
            "name": "acme assistant",
            "webhook_url": app.receiver.url,
            "identity_issuer": identity_issuer,
        })),
    )
    .await
}

async fn bound_session(app: &TestApp, key: &str, issuer: &OidcProvider, sub: &str) -> Value {
    let r = app
        .create_session(
            key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "binding": "oidc",
                   "subject": {"iss": issuer.issuer, "sub": sub}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

/// Continue, then sign in at the issuer as `account`: the binding callback URL it sends back.
async fn sign_in_at_issuer(browser: &mut Browser, link: &str, account: &str) -> Url {
    let authorize = browser.start(link).await;
    let interaction = browser.redirect(authorize.as_str()).await;
    let resume = browser
        .redirect(&format!("{interaction}?login={account}"))
        .await;
    browser.redirect(resume.as_str()).await
}

async fn grant_stored(app: &TestApp) -> bool {
    app.store
        .get_grant(
            &BotId::parse("acme").unwrap(),
            &IntegrationName::parse("crm").unwrap(),
            &Subject::parse("u1").unwrap(),
        )
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn the_user_who_asked_completes_and_the_event_says_matched() {
    let (app, issuer, key) = bound_app().await;
    let s = bound_session(&app, &key, &issuer, "alice").await;
    let mut browser = Browser::new();
    // The interstitial names the issuer's host, where the person signs in first.
    let page = browser.land(s["link"].as_str().unwrap()).await;
    let issuer_host = url::Url::parse(&issuer.issuer).unwrap();
    let first = format!(
        "First you confirm who you are at {}.",
        issuer_host.host_str().unwrap()
    );
    assert!(page.body.contains(&first), "{}", page.body);
    let back = sign_in_at_issuer(&mut browser, s["link"].as_str().unwrap(), "alice").await;
    assert!(back.path().starts_with("/oauth/binding/acme"), "{back}");
    let provider = browser.redirect(back.as_str()).await;
    assert!(
        provider.as_str().starts_with(&app.provider.base_url),
        "{provider}"
    );
    let id = s["id"].as_str().unwrap();
    let matched = json!({"method": "oidc", "subject": {"iss": issuer.issuer, "sub": "alice"},
                         "result": "matched", "sub": "alice"});
    // Recorded on the session while the person is at the provider, and kept on completion.
    let (_, view) = app.session(&key, "acme", id, None).await;
    assert_eq!(
        (&view["status"], &view["binding"]),
        (&json!("in_progress"), &matched)
    );
    let callback = browser.sign_in(&provider).await;
    let page = browser.land(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(grant_stored(&app).await);
    let (_, view) = app.session(&key, "acme", id, None).await;
    assert_eq!(
        (&view["status"], &view["binding"]),
        (&json!("completed"), &matched)
    );
    let events = app.receiver.wait_for(s["id"].as_str().unwrap(), 1).await;
    assert_eq!(events[0].kind, "auth_session.completed");
    assert_eq!(
        events[0].body["data"]["binding"],
        json!({"method": "oidc", "result": "matched", "sub": "alice"})
    );
}

#[tokio::test]
async fn another_person_fails_with_identity_mismatch_before_the_provider() {
    let (app, issuer, key) = bound_app().await;
    let s = bound_session(&app, &key, &issuer, "alice").await;
    let id = s["id"].as_str().unwrap();
    let mut browser = Browser::new();
    let back = sign_in_at_issuer(&mut browser, s["link"].as_str().unwrap(), "mallory").await;
    let page = browser.land(back.as_str()).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    let (_, view) = app.session(&key, "acme", id, None).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["error"]["code"], "identity_mismatch");
    assert_eq!(
        view["binding"],
        json!({"method": "oidc", "subject": {"iss": issuer.issuer, "sub": "alice"},
               "result": "mismatch", "sub": "mallory"})
    );
    let events = app.receiver.wait_for(id, 1).await;
    assert_eq!(events[0].kind, "auth_session.failed");
    assert_eq!(
        events[0].body["data"]["binding"],
        json!({"method": "oidc", "result": "mismatch", "sub": "mallory"})
    );
    assert!(!grant_stored(&app).await);
    assert!(app.provider.last_authorize_query().is_none());
    assert_eq!(app.provider.token_requests(), 0);
}

#[tokio::test]
async fn issuer_configuration_is_validated_and_its_secret_never_shown() {
    let (app, issuer, key) = bound_app().await;
    let r = app
        .call(Method::GET, "/v1/bots/acme", &app.operator_key, None)
        .await;
    let text = r.text().await.unwrap();
    assert!(!text.contains(CLIENT_SECRET));
    let bot: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        bot["identity_issuer"],
        json!({"issuer": issuer.issuer, "client_id": CLIENT_ID, "client_secret_set": true})
    );
    // Omitting the secret on update keeps it.
    let r = put_issuer(
        &app,
        json!({"issuer": issuer.issuer, "client_id": CLIENT_ID}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["identity_issuer"]["client_secret_set"],
        true
    );
    assert!(
        app.redis_dump()
            .iter()
            .all(|(_, v)| !v.contains(CLIENT_SECRET))
    );

    for bad in [
        json!({"issuer": "ftp://issuer.example.com", "client_id": "c", "client_secret": "s"}),
        json!({"issuer": "not a url", "client_id": "c", "client_secret": "s"}),
        json!({"issuer": "https://issuer.example.com", "client_id": "", "client_secret": "s"}),
        json!({"issuer": "https://issuer.example.com", "client_id": "c", "client_secret": ""}),
        json!({"issuer": "https://issuer.example.com", "client_id": "c", "extra": 1}),
    ] {
        let r = put_issuer(&app, bad.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    for body in [
        json!({"integration": "crm", "user_id": "u1", "binding": "oidc"}),
        json!({"integration": "crm", "user_id": "u1", "subject": {"iss": issuer.issuer, "sub": "a"}}),
        json!({"integration": "crm", "user_id": "u1", "binding": "oidc",
               "subject": {"iss": "https://elsewhere.example.com", "sub": "a"}}),
    ] {
        let r = app.create_session(&key, "acme", body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    // Without an issuer on the bot, binding cannot be asked for.
    assert_eq!(put_issuer(&app, Value::Null).await.status(), StatusCode::OK);
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "binding": "oidc",
                   "subject": {"iss": issuer.issuer, "sub": "a"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn forged_and_replayed_binding_callbacks_change_nothing() {
    let (app, issuer, key) = bound_app().await;
    let s = bound_session(&app, &key, &issuer, "alice").await;
    let id = s["id"].as_str().unwrap();
    let mut browser = Browser::new();
    let back = sign_in_at_issuer(&mut browser, s["link"].as_str().unwrap(), "alice").await;

    // A forged state, and the real one on another bot's binding callback.
    let mut forged = back.clone();
    forged.set_query(Some("code=x&state=forged"));
    assert_eq!(
        browser.land(forged.as_str()).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut elsewhere = back.clone();
    elsewhere.set_path("/oauth/binding/other");
    assert_eq!(
        browser.land(elsewhere.as_str()).await.status,
        StatusCode::BAD_REQUEST
    );
    // Without the browser's binding cookie.
    assert_eq!(
        Browser::new().land(back.as_str()).await.status,
        StatusCode::FORBIDDEN
    );

    // The real one goes on once; its replay finds no attempt.
    let provider = browser.redirect(back.as_str()).await;
    assert!(provider.as_str().starts_with(&app.provider.base_url));
    let replay = browser.land(back.as_str()).await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);
    let (_, view) = app.session(&key, "acme", id, None).await;
    assert_eq!(view["status"], "in_progress");
    assert!(!grant_stored(&app).await);
}

/// An agent's token call for `user`, bound to `sub` at the issuer: the 404 with the offer.
async fn bound_offer(
    app: &TestApp,
    key: &str,
    issuer: &OidcProvider,
    user: &str,
    sub: &str,
) -> Value {
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            key,
            Some(json!({"user_id": user, "tool_call": "sha256:call-1",
                        "authorize": {"binding": "oidc", "subject": {"iss": issuer.issuer, "sub": sub},
                                      "mcp": {"protocol_version": "2025-11-25"}}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "authorization_required", "{body}");
    body
}

#[tokio::test]
async fn an_agent_gets_one_bound_session_per_issuer_subject_and_the_right_person_completes_it() {
    let (app, issuer, key) = bound_app().await;
    let first = bound_offer(&app, &key, &issuer, "u1", "alice").await;
    let id = first["session"]["id"].as_str().unwrap().to_owned();
    // Retries for the same person reuse it; the same user id bound to someone else at the
    // issuer does not get alice's link.
    let again = bound_offer(&app, &key, &issuer, "u1", "alice").await;
    assert_eq!(again["session"]["id"], id.as_str());
    let other = bound_offer(&app, &key, &issuer, "u1", "bob").await;
    assert_ne!(other["session"]["id"], id.as_str());
    let (_, view) = app.session(&key, "acme", &id, None).await;
    assert_eq!(
        view["binding"],
        json!({"method": "oidc", "subject": {"iss": issuer.issuer, "sub": "alice"}})
    );

    // Bob opens alice's link: it fails before the provider, and alice's retry ends at once.
    let link = first["session"]["link"].as_str().unwrap();
    let mut bob = Browser::new();
    let back = sign_in_at_issuer(&mut bob, link, "bob").await;
    assert_eq!(
        bob.land(back.as_str()).await.status,
        StatusCode::BAD_GATEWAY
    );
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            &key,
            Some(json!({"user_id": "u1", "session_id": id, "wait": 50})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "identity_mismatch"
    );
    assert!(!grant_stored(&app).await);
    assert_eq!(app.provider.token_requests(), 0);

    // Bob's own session, opened by bob, completes; the waiting retry gets the token.
    let bobs = other["session"]["id"].as_str().unwrap();
    let mut browser = Browser::new();
    let back = sign_in_at_issuer(
        &mut browser,
        other["session"]["link"].as_str().unwrap(),
        "bob",
    )
    .await;
    let provider = browser.redirect(back.as_str()).await;
    let callback = browser.sign_in(&provider).await;
    assert_eq!(browser.land(callback.as_str()).await.status, StatusCode::OK);
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            &key,
            Some(json!({"user_id": "u1", "session_id": bobs, "wait": 50})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, view) = app.session(&key, "acme", bobs, None).await;
    assert_eq!(view["binding"]["result"], "matched");
}

#[tokio::test]
async fn the_issuer_documents_are_fetched_once_and_again_after_they_age() {
    // ID tokens that outlive the clock's jumps below.
    let (app, issuer, key) = bound_app_with(&[("ID_TOKEN_TTL", "86400")]).await;
    let sign_in = |user: &'static str, sub: &'static str| {
        let (app, issuer, key) = (&app, &issuer, &key);
        async move {
            let r = app
                .create_session(
                    key,
                    "acme",
                    json!({"integration": "crm", "user_id": user, "binding": "oidc",
                           "subject": {"iss": issuer.issuer, "sub": sub}}),
                )
                .await;
            let s: Value = r.json().await.unwrap();
            let mut browser = Browser::new();
            let back = sign_in_at_issuer(&mut browser, s["link"].as_str().unwrap(), sub).await;
            let provider = browser.redirect(back.as_str()).await;
            assert!(provider.as_str().starts_with(&app.provider.base_url));
        }
    };
    let fetched = || async {
        let s = issuer.stats().await;
        (
            s["discovery_requests"].as_u64().unwrap(),
            s["jwks_requests"].as_u64().unwrap(),
        )
    };
    sign_in("u1", "alice").await;
    sign_in("u2", "bob").await;
    assert_eq!(fetched().await, (1, 1), "two sign-ins, one fetch of each");
    // Past the JWKS's lifetime only the JWKS is fetched again, past the discovery's both.
    app.state
        .clock
        .advance(std::time::Duration::from_secs(11 * 60));
    sign_in("u3", "carol").await;
    assert_eq!(fetched().await, (1, 2));
    app.state
        .clock
        .advance(std::time::Duration::from_secs(3600));
    sign_in("u4", "dave").await;
    assert_eq!(fetched().await, (2, 3));
}

/// Issue 24, item 7: the issuer's client secret goes to the token endpoint its discovery names.
/// Moving the issuer to another host (scheme, host, port) without the secret in the same update
/// is a 422 naming the field, and changes nothing; a path on the same host keeps the secret.
#[tokio::test]
async fn the_issuer_moves_to_another_host_only_with_its_secret() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    let issuer = |url: &str, secret: Option<&str>| {
        let mut body = json!({"issuer": url, "client_id": "c"});
        if let Some(s) = secret {
            body["client_secret"] = json!(s);
        }
        body
    };
    let r = put_issuer(&app, issuer("https://issuer.example.com/a", Some("s3cret"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let before: Value = r.json().await.unwrap();
    for elsewhere in [
        "https://evil.example.com/a",
        "https://issuer.example.com:8443/a",
    ] {
        let r = put_issuer(&app, issuer(elsewhere, None)).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{elsewhere}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let detail = r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            detail.contains("identity_issuer.issuer")
                && detail.contains("identity_issuer.client_secret"),
            "{detail}"
        );
    }
    let r = app
        .call(Method::GET, "/v1/bots/acme", &app.operator_key, None)
        .await;
    let now: Value = r.json().await.unwrap();
    assert_eq!(now["identity_issuer"], before["identity_issuer"]);
    assert_eq!(now["updated_at"], before["updated_at"]);
    let r = put_issuer(&app, issuer("https://issuer.example.com/b", None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = put_issuer(&app, issuer("https://evil.example.com/a", Some("other"))).await;
    assert_eq!(r.status(), StatusCode::OK);
}
