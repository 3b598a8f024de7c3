//! Custom authorization profiles ("OAuth – Custom") in both modes, against a provider of their
//! own with their own client credentials — the system app would be refused there.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Browser, TestApp, spawn_app};
use crate::provider::{FakeProvider, ProviderOptions, Shape};

const CUSTOM_ID: &str = "custom-client-77";
const CUSTOM_SECRET: &str = "custom-secret-9f8e7d";

async fn custom_provider() -> FakeProvider {
    FakeProvider::spawn(ProviderOptions {
        client_id: CUSTOM_ID.into(),
        client_secret: CUSTOM_SECRET.into(),
        shape: Shape::Generic,
    })
    .await
}

fn profile_body(p: &FakeProvider, secret: Option<&str>) -> Value {
    let mut body = json!({
        "name": "Acme's own app",
        "type": "oauth2",
        "client_id": CUSTOM_ID,
        "authorization_url": format!("{}/services/oauth2/authorize", p.base_url),
        "token_url": format!("{}/services/oauth2/token", p.base_url),
        "userinfo_url": format!("{}/services/oauth2/userinfo", p.base_url),
        "revoke_url": format!("{}/services/oauth2/revoke", p.base_url),
        "scopes": ["openid", "email"],
        "extra_authorize_params": {"prompt": "consent"},
        "client_auth": "body",
    });
    if let Some(s) = secret {
        body["client_secret"] = json!(s);
    }
    body
}

async fn create_profile(app: &TestApp, p: &FakeProvider) -> Value {
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/auth-profiles",
            &app.operator_key,
            Some(profile_body(p, Some(CUSTOM_SECRET))),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn token(app: &TestApp, key: &str, integration: &str, user: &str) -> reqwest::Response {
    app.call(
        Method::POST,
        &format!("/v1/bots/acme/integrations/{integration}/access-token"),
        key,
        Some(json!({"user_id": user})),
    )
    .await
}

#[tokio::test]
async fn custom_profiles_work_in_both_modes_with_their_own_app() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let custom = custom_provider().await;
    let profile = create_profile(&app, &custom).await;
    let id = profile["id"].as_str().unwrap();
    assert_eq!(
        profile["callback_url"],
        format!("{}/oauth/callback/{id}", app.base)
    );
    assert_eq!(profile["client_secret_set"], true);
    assert_eq!(
        profile["refresh_token_url"], profile["token_url"],
        "defaults to the token URL"
    );

    // Users authorize, with the custom app.
    let r = app
        .put_integration(
            "acme",
            "own",
            json!({"provider": "oauth2", "mode": "user", "profile": id}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s = app
        .create_session(&key, "acme", json!({"integration": "own", "user_id": "u1"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let mut browser = Browser::new();
    let authorize = browser.start(s["link"].as_str().unwrap()).await;
    assert!(authorize.as_str().starts_with(&custom.base_url));
    let callback = browser.sign_in(&authorize).await;
    assert!(
        callback.path().ends_with(id),
        "the profile's own callback path"
    );
    assert_eq!(
        custom.last_authorize_query().unwrap()["prompt"],
        "consent",
        "extra parameters sent"
    );
    assert_eq!(browser.land(callback.as_str()).await.status, StatusCode::OK);
    let t: Value = token(&app, &key, "own", "u1").await.json().await.unwrap();
    assert!(custom.access_token_is_active(t["access_token"].as_str().unwrap()));
    assert_eq!(
        app.provider.token_requests(),
        0,
        "the system app was not used"
    );

    // Pre-authorized, with the same custom app.
    let r = app
        .put_integration(
            "acme",
            "own-shared",
            json!({"provider": "oauth2", "mode": "pre_authorized", "profile": id}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/own-shared/pre-authorize",
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
    let shared: Value = token(&app, &key, "own-shared", "anyone")
        .await
        .json()
        .await
        .unwrap();
    assert!(custom.access_token_is_active(shared["access_token"].as_str().unwrap()));
    assert_ne!(
        shared["access_token"], t["access_token"],
        "the bot grant is not u1's"
    );

    // A state issued for the custom app is refused on the system app's callback path.
    let s = app
        .create_session(&key, "acme", json!({"integration": "own", "user_id": "u2"}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let mut browser = Browser::new();
    let authorize = browser.start(s["link"].as_str().unwrap()).await;
    let callback = browser.sign_in(&authorize).await;
    let mut wrong = callback.clone();
    wrong.set_path("/oauth/callback/salesforce");
    assert_eq!(
        browser.land(wrong.as_str()).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_client_secret_is_write_only_and_never_leaks() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let custom = custom_provider().await;
    let profile = create_profile(&app, &custom).await;
    let id = profile["id"].as_str().unwrap();
    // An update without a secret keeps it: the flow still works.
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/bots/acme/auth-profiles/{id}"),
            &app.operator_key,
            Some(profile_body(&custom, None)),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.put_integration("acme", "own", json!({"provider": "oauth2", "profile": id}))
        .await;
    let s = app
        .create_session(&key, "acme", json!({"integration": "own", "user_id": "u1"}))
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

    let mut seen = String::new();
    for path in [
        format!("/v1/bots/acme/auth-profiles/{id}"),
        "/v1/bots/acme/auth-profiles".into(),
        "/v1/bots/acme/integrations/own".into(),
    ] {
        seen.push_str(
            &app.call(Method::GET, &path, &app.operator_key, None)
                .await
                .text()
                .await
                .unwrap(),
        );
    }
    assert!(
        !seen.contains(CUSTOM_SECRET),
        "an API response shows the secret"
    );
    assert!(
        app.redis_dump()
            .iter()
            .all(|(_, v)| !v.contains(CUSTOM_SECRET)),
        "Redis holds it in clear"
    );
    assert!(
        !crate::helpers::logs().contains(CUSTOM_SECRET),
        "a log line shows it"
    );

    // In use: deleting is refused and says by whom; once unused it goes.
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/bots/acme/auth-profiles/{id}"),
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("own"));
    let r = app
        .put_integration(
            "acme",
            "own",
            json!({"provider": "salesforce", "profile": "system"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The grant u1 got from the custom app is not served for the system app.
    assert_eq!(
        token(&app, &key, "own", "u1").await.status(),
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/bots/acme/auth-profiles/{id}"),
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn profiles_are_validated_and_only_the_bots_admins_manage_them() {
    let app = spawn_app().await;
    let runtime = app.setup_bot("acme").await;
    app.setup_bot("other").await;
    let custom = custom_provider().await;
    let r = app
        .call(
            Method::POST,
            "/v1/bots/other/api-keys",
            &app.operator_key,
            Some(json!({"role": "admin"})),
        )
        .await;
    let other_admin = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/api-keys",
            &app.operator_key,
            Some(json!({"role": "admin"})),
        )
        .await;
    let acme_admin = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let body = profile_body(&custom, Some(CUSTOM_SECRET));
    assert_eq!(
        app.call(
            Method::POST,
            "/v1/bots/acme/auth-profiles",
            &runtime,
            Some(body.clone())
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(
            Method::POST,
            "/v1/bots/acme/auth-profiles",
            &other_admin,
            Some(body.clone())
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/auth-profiles",
            &acme_admin,
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/bots/acme/auth-profiles/{id}"),
            &other_admin,
            None
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/bots/acme/auth-profiles/{id}"),
            &runtime,
            None
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );

    for (field, value) in [
        ("token_url", json!("https://user:pw@example.com/token")),
        ("authorization_url", json!("ftp://example.com/auth")),
        ("type", json!("saml")),
        (
            "extra_authorize_params",
            json!({"redirect_uri": "https://evil.example"}),
        ),
        ("scopes", json!(["a b"])),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let r = app
            .call(
                Method::POST,
                "/v1/bots/acme/auth-profiles",
                &acme_admin,
                Some(bad),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
    }
    let mut no_secret = body.clone();
    no_secret.as_object_mut().unwrap().remove("client_secret");
    assert_eq!(
        app.call(
            Method::POST,
            "/v1/bots/acme/auth-profiles",
            &acme_admin,
            Some(no_secret)
        )
        .await
        .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let r = app
        .put_integration(
            "acme",
            "own",
            json!({"provider": "oauth2", "profile": "prof_missing"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// Issue 24, item 7: the client secret goes to the token, refresh and revoke URLs, and users'
/// refresh tokens with it. An update that moves any of the profile's URLs to another host
/// (scheme, host, port) without sending `client_secret` again is refused with a 422 naming the
/// field, and changes nothing: the next refresh still goes to the old host. A path change on the
/// same host keeps the secret; with the secret, the move is made.
#[tokio::test]
async fn a_profiles_urls_move_to_another_host_only_with_its_secret() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let custom = custom_provider().await;
    // Someone else's server: it must see neither the client secret nor a refresh token.
    let elsewhere = custom_provider().await;
    let profile = create_profile(&app, &custom).await;
    let id = profile["id"].as_str().unwrap();
    let path = format!("/v1/bots/acme/auth-profiles/{id}");
    let r = app
        .put_integration(
            "acme",
            "own",
            json!({"provider": "oauth2", "mode": "user", "profile": id}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s = app
        .create_session(&key, "acme", json!({"integration": "own", "user_id": "u1"}))
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
    let refresh = || async {
        app.call(
            Method::POST,
            "/v1/bots/acme/integrations/own/access-token",
            &key,
            Some(json!({"user_id": "u1", "force_refresh": true})),
        )
        .await
        .status()
    };
    let put = |body: Value| {
        let (app, path) = (&app, &path);
        async move {
            app.call(Method::PUT, path, &app.operator_key, Some(body))
                .await
        }
    };

    let moved = |field: &str, secret: Option<&str>| {
        let mut body = profile_body(&custom, secret);
        body[field] = json!(format!("{}/services/oauth2/{field}", elsewhere.base_url));
        body
    };
    for field in [
        "authorization_url",
        "token_url",
        "refresh_token_url",
        "revoke_url",
        "userinfo_url",
    ] {
        let r = put(moved(field, None)).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{field}"
        );
        let detail = r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            detail.contains(field) && detail.contains("client_secret"),
            "{detail}"
        );
    }
    // Another port on the same host is another host too.
    let mut port = profile_body(&custom, None);
    port["token_url"] = json!(format!("{}/services/oauth2/token", elsewhere.base_url));
    assert!(elsewhere.base_url.starts_with("http://127.0.0.1:"));
    assert_eq!(put(port).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing changed: the record is as it was, and the refresh still goes to the old host.
    let stored: Value = app
        .call(Method::GET, &path, &app.operator_key, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored, profile);
    assert_eq!(refresh().await, StatusCode::OK);
    assert_eq!(custom.refresh_requests(), 1);
    assert_eq!(
        (elsewhere.token_requests(), elsewhere.refresh_requests()),
        (0, 0)
    );

    // A new path on a host the profile already uses keeps the secret.
    let mut same_host = profile_body(&custom, None);
    same_host["revoke_url"] = json!(format!("{}/services/oauth2/revoke-v2", custom.base_url));
    same_host["refresh_token_url"] = json!(format!("{}/services/oauth2/token", custom.base_url));
    let r = put(same_host).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.json::<Value>().await.unwrap()["revoke_url"]
            .as_str()
            .unwrap()
            .ends_with("/revoke-v2")
    );

    // With the secret, the profile moves, and the next refresh goes to the new host.
    let r = put(profile_body(&elsewhere, Some(CUSTOM_SECRET))).await;
    assert_eq!(r.status(), StatusCode::OK);
    refresh().await;
    assert_eq!(elsewhere.refresh_requests(), 1);
}
