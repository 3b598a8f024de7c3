//! ⑤ against a real OpenID provider no one here wrote: panva's `oidc-provider` (tests/oidc),
//! with refresh-token rotation and a short access-token lifetime; its login and consent are
//! driven over plain HTTP. Rotation is unforgiving there: reusing a rotated refresh token revokes
//! the whole grant — so a lost or duplicated refresh shows up as a dead grant.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Browser, OidcOptions, Options, TestApp, spawn_with};

pub const CLIENT_ID: &str = "authlink-test";
pub const CLIENT_SECRET: &str = "authlink-test-secret";

pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl OidcProvider {
    /// Start `tests/oidc/server.mjs` (needs `npm ci --prefix tests/oidc`, done by `.ci/test`).
    pub fn start(redirect_uri: &str, access_token_ttl: u64) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("PORT", "0")
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URIS", redirect_uri)
            .env("ACCESS_TOKEN_TTL", access_token_ttl.to_string())
            // Piped: the provider exits when this handle closes, even if the test dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs tests/oidc/server.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let issuer = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| {
                panic!("oidc-provider did not start: {line:?} (run npm ci --prefix tests/oidc)")
            })
            .to_owned();
        Self { child, issuer }
    }

    pub async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__stats", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// RFC 7662 at the provider: is this token still active?
    pub async fn active(&self, token: &str) -> bool {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["active"] == true
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn app(ttl: u64, margin: u64, proactive: bool) -> TestApp {
    spawn_with(Options {
        oidc: Some(OidcOptions {
            access_token_ttl: ttl,
            refresh_margin: margin,
            proactive_refresh: proactive,
        }),
        ..Options::default()
    })
    .await
}

/// The whole sign-in at oidc-provider: authorize → interaction (login + consent as `account`)
/// → resume → callback.
async fn sign_in(app: &TestApp, key: &str, user: &str, account: &str) {
    let s = app.new_session(key, "acme", user).await;
    let mut browser = Browser::new();
    let authorize = browser.start(s["link"].as_str().unwrap()).await;
    let interaction = browser.redirect(authorize.as_str()).await;
    let resume = browser
        .redirect(&format!("{interaction}?login={account}"))
        .await;
    let callback = browser.redirect(resume.as_str()).await;
    let page = browser.land(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

async fn token(app: &TestApp, key: &str, user: &str, force: bool) -> reqwest::Response {
    app.call(
        Method::POST,
        "/v1/bots/acme/integrations/crm/access-token",
        key,
        Some(json!({"user_id": user, "force_refresh": force})),
    )
    .await
}

async fn userinfo(app: &TestApp, access_token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/me", app.oidc.as_ref().unwrap().issuer))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn rotation_survives_two_hundred_concurrent_requests_on_two_replicas() {
    let a = app(60, 10, false).await;
    let b = a.replica().await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "alice").await;
    let oidc = a.oidc.clone().unwrap();
    let first: Value = token(&a, &key, "u1", false).await.json().await.unwrap();
    assert_eq!(first["identity"]["email"], "alice@example.com");
    assert_eq!(
        userinfo(&a, first["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    assert_eq!(oidc.stats().await["refresh_grants"], 0);

    // The access token expires; 200 requests race for it on two replicas.
    let mut g = a
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse("u1").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    g.access_expires_at = Some(authlink::clock::now() - time::Duration::seconds(1));
    assert!(a.store.update_grant(&g, None).await.unwrap());
    let answers = join_all((0..200).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let key = key.clone();
        async move {
            let r = token(app, &key, "u1", false).await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    }))
    .await;
    assert_eq!(
        oidc.stats().await["refresh_grants"],
        1,
        "exactly one refresh at the provider"
    );
    let distinct: std::collections::HashSet<_> = answers.iter().collect();
    assert_eq!(distinct.len(), 1, "all 200 got the same new token");
    assert_ne!(answers[0], first["access_token"].as_str().unwrap());
    assert_eq!(userinfo(&a, &answers[0]).await, StatusCode::OK);

    // The rotated refresh token was stored: the next refresh works (reusing the old one would
    // have made oidc-provider revoke the whole grant).
    let again: Value = token(&b, &key, "u1", true).await.json().await.unwrap();
    assert_eq!(
        userinfo(&a, again["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    let stats = oidc.stats().await;
    assert_eq!(stats["refresh_grants"], 2);
    assert_eq!(stats["refresh_reuse_detected"], 0);
}

#[tokio::test]
async fn a_provider_outage_keeps_the_grant_and_disconnect_revokes_it() {
    let a = app(60, 10, false).await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "bob").await;
    let oidc = a.oidc.clone().unwrap();
    reqwest::get(format!("{}/__fail_next_token?status=500", oidc.issuer))
        .await
        .unwrap();
    let r = token(&a, &key, "u1", true).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let t: Value = token(&a, &key, "u1", true).await.json().await.unwrap();
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert!(oidc.active(&access).await);

    let r = a
        .call(
            Method::DELETE,
            "/v1/bots/acme/integrations/crm/connections/u1",
            &key,
            None,
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["revoked_at_provider"],
        true
    );
    assert!(
        !oidc.active(&access).await,
        "the provider says the grant is gone"
    );
    assert_eq!(
        token(&a, &key, "u1", false).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn grants_are_refreshed_in_the_background_before_they_expire() {
    // Tokens live 60 s and are due 58 s before expiry: the background refresher renews at once.
    let a = app(60, 58, true).await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "carol").await;
    let oidc = a.oidc.clone().unwrap();
    crate::helpers::until_async_within(std::time::Duration::from_secs(20), || async {
        oidc.stats().await["refresh_grants"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let t: Value = token(&a, &key, "u1", false).await.json().await.unwrap();
    assert_eq!(
        userinfo(&a, t["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    assert_eq!(oidc.stats().await["refresh_reuse_detected"], 0);
}
