//! Exercises the fake Salesforce-shaped provider in `provider.rs`
//! on its own, so that a failing integration test can be told apart from a
//! broken fixture. Read it as the fixture's usage documentation.

use std::collections::HashMap;

use crate::provider::{FakeProvider, ProviderOptions, Shape};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "3MVG9fake.client";
// Characters that must be form-urlencoded inside HTTP Basic credentials.
const CLIENT_SECRET: &str = "s3cr3t+/=:&%";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn pkce() -> (String, String) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// RFC 6749 §2.3.1: each half is form-urlencoded before base64.
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

async fn spawn(shape: Shape) -> FakeProvider {
    FakeProvider::spawn(ProviderOptions {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        shape,
    })
    .await
}

/// Runs `/authorize` and returns the callback URL's query.
async fn authorize(p: &FakeProvider, challenge: &str, scope: &str) -> HashMap<String, String> {
    let resp = http()
        .get(format!("{}/services/oauth2/authorize", p.base_url))
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("state", "st+ate/=1"),
            ("scope", scope),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

async fn post_token(p: &FakeProvider, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = http()
        .post(format!("{}/services/oauth2/token", p.base_url))
        .header("authorization", basic(CLIENT_ID, CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn salesforce_web_server_flow_round_trip() {
    let p = spawn(Shape::Salesforce).await;
    let (verifier, challenge) = pkce();

    let callback = authorize(&p, &challenge, "api refresh_token").await;
    assert_eq!(callback["state"], "st+ate/=1");
    let code = callback["code"].clone();
    assert!(
        code.ends_with('='),
        "Salesforce-like codes end in padding: {code}"
    );
    assert_eq!(p.last_authorize_query().unwrap()["client_id"], CLIENT_ID);

    let (status, tok) = post_token(
        &p,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(p.token_requests(), 1);
    assert!(tok.get("expires_in").is_none());
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["instance_url"], p.base_url.as_str());
    let id = tok["id"].as_str().unwrap();
    assert_eq!(
        id,
        format!("{}/id/00D000000000001AAA/005000000000001AAA", p.base_url)
    );
    let issued_at = tok["issued_at"].as_str().unwrap();
    assert_eq!(issued_at.len(), 13);

    // signature = base64(HMAC-SHA256(client_secret, id + issued_at))
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{id}{issued_at}").as_bytes());
    assert_eq!(
        tok["signature"],
        STANDARD.encode(mac.finalize().into_bytes())
    );

    let access = tok["access_token"].as_str().unwrap().to_owned();
    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("00D000000000001!AR"));
    assert!(p.access_token_is_active(&access));

    // The identity URL answers for the bound user.
    let who: Value = http()
        .get(id)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["user_id"], "005000000000001AAA");
    assert_eq!(who["username"], "ada@example.com");
    let info: Value = http()
        .get(format!("{}/services/oauth2/userinfo", p.base_url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["preferred_username"], "ada@example.com");

    // Codes are single use.
    let (status, err) = post_token(
        &p,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
    assert_eq!(p.token_requests(), 2);

    // Refresh with body credentials; Salesforce does not rotate.
    let resp = http()
        .post(format!("{}/services/oauth2/token", p.base_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let refreshed: Value = resp.json().await.unwrap();
    assert!(refreshed.get("refresh_token").is_none());
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(p.refresh_requests(), 1);

    // Introspection is client-authenticated.
    let intro: Value = http()
        .post(format!("{}/services/oauth2/introspect", p.base_url))
        .header("authorization", basic(CLIENT_ID, CLIENT_SECRET))
        .form(&[("token", access2.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro["active"], true);
    assert_eq!(intro["token_type"], "access_token");

    // Revoking the refresh token revokes every access token minted from it.
    let resp = http()
        .post(format!("{}/services/oauth2/revoke", p.base_url))
        .form(&[("token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(p.revocations(), vec![refresh.clone()]);
    assert!(!p.access_token_is_active(&access));
    assert!(!p.access_token_is_active(&access2));
    let resp = http().get(id).bearer_auth(&access).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, err) = post_token(
        &p,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error_description"], "expired access/refresh token");
}

#[tokio::test]
async fn refusals_and_armed_failures() {
    let p = spawn(Shape::Salesforce).await;
    let (verifier, challenge) = pkce();

    // A bad client_id is answered in place, never redirected.
    let resp = http()
        .get(format!("{}/services/oauth2/authorize", p.base_url))
        .query(&[
            ("response_type", "code"),
            ("client_id", "someone-else"),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());

    p.deny_next_authorization();
    let denied = authorize(&p, &challenge, "api").await;
    assert_eq!(denied["error"], "access-denied");
    assert_eq!(denied["state"], "st+ate/=1");
    assert!(!denied.contains_key("code"));

    // Without refresh_token/offline_access in scope there is no refresh token.
    p.set_identity(
        "005000000000002AAA",
        "00D000000000002AAA",
        "bob@example.com",
        "bob@example.com",
    );
    let code = authorize(&p, &challenge, "api").await["code"].clone();
    let (status, tok) = post_token(
        &p,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(tok.get("refresh_token").is_none());
    assert!(tok["id"].as_str().unwrap().ends_with("/005000000000002AAA"));

    // A wrong verifier fails and still burns the code.
    let code = authorize(&p, &challenge, "api").await["code"].clone();
    let bad = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        (
            "code_verifier",
            "not-the-verifier-not-the-verifier-not-the-v",
        ),
    ];
    let (status, err) = post_token(&p, &bad).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let (_, err) = post_token(&p, &good).await;
    assert_eq!(err["error"], "invalid_grant");

    // Wrong client credentials.
    let resp = http()
        .post(format!("{}/services/oauth2/token", p.base_url))
        .header("authorization", basic(CLIENT_ID, "wrong"))
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // Armed failure, corrupted signature, overridden instance_url.
    p.fail_next_token(503, json!({ "error": "temporarily_unavailable" }));
    let code = authorize(&p, &challenge, "api").await["code"].clone();
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, _) = post_token(&p, &good).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    p.corrupt_signature(true);
    p.set_instance_url(Some("https://acme.my.salesforce.com".into()));
    let (status, tok) = post_token(&p, &good).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an armed failure does not consume the code"
    );
    assert_eq!(tok["instance_url"], "https://acme.my.salesforce.com");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(
        format!(
            "{}{}",
            tok["id"].as_str().unwrap(),
            tok["issued_at"].as_str().unwrap()
        )
        .as_bytes(),
    );
    assert_ne!(
        tok["signature"],
        STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(p.token_requests(), 6);
}

#[tokio::test]
async fn generic_shape_has_expiry_and_always_a_refresh_token() {
    let p = spawn(Shape::Generic).await;
    let (verifier, challenge) = pkce();
    let code = authorize(&p, &challenge, "read").await["code"].clone();
    let (status, tok) = post_token(
        &p,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tok["expires_in"], 3600);
    assert!(tok["refresh_token"].is_string());
    assert!(tok.get("signature").is_none());
    assert!(p.access_token_is_active(tok["access_token"].as_str().unwrap()));
}
