//! ② The link: the interstitial changes nothing; tampered and expired links are rejected before
//! any store access; Continue starts a PKCE attempt with a binding cookie.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Browser, Options, spawn_app, spawn_with};

#[tokio::test]
async fn the_interstitial_changes_nothing_and_names_bot_and_provider() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let link = s["link"].as_str().unwrap();
    let path = link.strip_prefix(&app.base).unwrap();
    assert!(path.len() < 100, "link path is {} characters", path.len());

    let token = path.rsplit('/').next().unwrap();

    let mut unfurler = Browser::new();
    for _ in 0..3 {
        let page = unfurler.land(link).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("acme assistant"));
        assert!(page.body.contains("Salesforce"));
        // The host of the provider's authorize URL (the fake Salesforce is on loopback).
        assert!(
            page.body.contains("You will sign in at 127.0.0.1;"),
            "{}",
            page.body
        );
        assert!(
            !page.body.replace(token, "").contains("crm"),
            "the integration's internal name is not shown: {}",
            page.body
        );
        assert!(page.body.contains("og:title"));
        assert!(page.body.contains("<form method=\"post\""));
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert!(page.headers.get("set-cookie").is_none());
        assert!(
            !page.body.contains("http://") && !page.body.contains("https://"),
            "no external resources"
        );
    }
    let (_, now) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(now["status"], "pending");
    assert_eq!(now["updated_at"], s["updated_at"]);
    assert!(app.provider.last_authorize_query().is_none());
}

#[tokio::test]
async fn continue_redirects_to_the_provider_with_pkce_and_a_binding_cookie() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let mut browser = Browser::new();
    let r = browser.post(s["link"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("authlink-"),
        "plain name over http: {cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/")
    );
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&app.provider.base_url));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["client_id"], crate::helpers::CLIENT_ID);
    assert_eq!(
        q["redirect_uri"],
        format!("{}/oauth/callback/salesforce", app.base)
    );
    assert_eq!(q["scope"], "api refresh_token id");
    let (_, now) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(now["status"], "in_progress");
}

#[tokio::test]
async fn tampered_and_foreign_links_are_rejected_without_the_store() {
    // The store is a Redis that is not running: any store access would answer 503.
    let app = spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    let other = spawn_with(Options {
        backend: Backend::Memory,
        ..Options::default()
    })
    .await;
    let key = other.setup_bot("acme").await;
    let s = other.new_session(&key, "acme", "u1").await;
    let token = s["link"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    let mut browser = Browser::new();
    // Signed with another deployment's key.
    let page = browser.land(&app.url(&format!("/l/{token}"))).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("not valid"));
    // One character changed.
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 3;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let page = browser.land(&other.url(&format!("/l/{tampered}"))).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let r = browser.post(&app.url(&format!("/l/{tampered}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Garbage and oversized.
    for junk in ["x", "a.b.c", &"A".repeat(300)] {
        assert_eq!(
            browser.land(&app.url(&format!("/l/{junk}"))).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn an_expired_link_says_so_before_any_store_access() {
    let app = spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    let id = authlink::domain::SessionId::new(authlink::domain::Partition::all().next().unwrap());
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let token = authlink::domain::link::encode(&app.config.signing, id, past);
    let page = Browser::new().land(&app.url(&format!("/l/{token}"))).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("expired"));
}

#[tokio::test]
async fn a_cancelled_session_link_is_no_longer_valid() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let mut browser = Browser::new();
    let page = browser.land(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("not valid"));
    assert_eq!(
        browser.post(s["link"].as_str().unwrap()).await.status(),
        StatusCode::GONE
    );
    let again = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn pages_are_localized() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .create_session(
            &key,
            "acme",
            serde_json::json!({"integration": "crm", "user_id": "u1", "locale": "de-DE"}),
        )
        .await;
    let s: Value = r.json().await.unwrap();
    let page = Browser::new().land(s["link"].as_str().unwrap()).await;
    assert!(page.body.contains("lang=\"de\""));
    assert!(page.body.contains("Weiter zu Salesforce"));
}

#[tokio::test]
async fn the_interstitial_names_the_display_name_and_the_salesforce_login_host() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    for (settings, host) in [
        (json!({"environment": "sandbox"}), "test.salesforce.com"),
        (
            json!({"environment": "my_domain", "host": "https://acme-corp.my.salesforce.com"}),
            "acme-corp.my.salesforce.com",
        ),
    ] {
        let r = app
            .put_integration(
                "acme",
                "crm",
                json!({"provider": "salesforce", "display_name": "Acme <Sales>", "salesforce": settings}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        for (locale, sign_in) in [
            ("en", format!("You will sign in at {host};")),
            ("de", format!("Sie melden sich bei {host} an")),
        ] {
            let r = app
                .create_session(
                    &key,
                    "acme",
                    json!({"integration": "crm", "user_id": format!("u-{host}-{locale}"), "locale": locale}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let s: Value = r.json().await.unwrap();
            let link = s["link"].as_str().unwrap();
            let token = link.rsplit('/').next().unwrap();
            let page = Browser::new().land(link).await;
            assert_eq!(page.status, StatusCode::OK);
            let body = page.body.replace(token, "");
            assert!(body.contains(&sign_in), "{body}");
            assert!(body.contains("Acme &lt;Sales&gt;"), "escaped: {body}");
            assert!(!body.contains("<Sales>") && !body.contains("crm"), "{body}");
        }
    }
}
