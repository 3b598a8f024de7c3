//! ⑤ against a real OpenID provider no one here wrote: panva's `oidc-provider` (tests/oidc),
//! with refresh-token rotation and a short access-token lifetime; its login and consent are
//! driven over plain HTTP. Rotation is unforgiving there: reusing a rotated refresh token revokes
//! the whole grant — so a lost or duplicated refresh shows up as a dead grant.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use std::time::Duration;

use authlink::domain::grant::{Grant, GrantStatus};
use authlink::domain::{BotId, IntegrationName, Subject};

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
        Self::start_with(redirect_uri, access_token_ttl, &[])
    }

    /// `start` with more of the fixture's settings (`ID_TOKEN_TTL`, …) in `env`.
    pub fn start_with(redirect_uri: &str, access_token_ttl: u64, env: &[(&str, &str)]) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("PORT", "0")
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URIS", redirect_uri)
            .env("ACCESS_TOKEN_TTL", access_token_ttl.to_string())
            .envs(env.iter().copied())
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
    // Backing off: the next attempt waits for the retry point, then works.
    a.state.clock.advance(Duration::from_secs(2));
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

fn ids() -> (BotId, IntegrationName, Subject) {
    (
        BotId::parse("acme").unwrap(),
        IntegrationName::parse("crm").unwrap(),
        Subject::parse("u1").unwrap(),
    )
}

async fn grant_of(app: &TestApp) -> Grant {
    let (bot, integration, subject) = ids();
    app.store
        .get_grant(&bot, &integration, &subject)
        .await
        .unwrap()
        .unwrap()
}

async fn access(app: &TestApp, key: &str) -> String {
    let r = token(app, key, "u1", false).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn refreshes(oidc: &OidcProvider) -> u64 {
    oidc.stats().await["refresh_grants"].as_u64().unwrap()
}

/// Tokens of `ttl` seconds with the default 300 s margin (Keycloak's default lifespan is 300 s):
/// right after sign-in they are served unchanged and nobody refreshes them — not the requests,
/// not the background refresher, which runs all along; past two thirds of their life exactly one
/// refresh happens, however requests and the background race for it.
async fn served_unchanged_then_refreshed_exactly_once(ttl: u64) {
    let a = app(ttl, 300, true).await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "dora").await;
    let oidc = a.oidc.clone().unwrap();
    let clock = &a.state.clock;
    clock.freeze();
    let first = access(&a, &key).await;
    for _ in 0..24 {
        assert_eq!(access(&a, &key).await, first);
    }
    assert_eq!(authlink::refresh::sweep(&a.state).await, 0, "nothing due");
    assert_eq!(refreshes(&oidc).await, 0, "no refresh right after sign-in");

    // The background is due up to a tenth of the margin before requests find the token stale.
    let g = grant_of(&a).await;
    let issued = g.access_issued_at.unwrap();
    let stale = g.stale_from(&a.config.refresh).unwrap();
    let two_thirds = time::Duration::milliseconds(ttl as i64 * 2000 / 3);
    assert!((stale - (issued + two_thirds)).abs() <= time::Duration::milliseconds(1));
    let due = g.refresh_at.unwrap();
    assert!(
        due <= stale && stale - due <= two_thirds / 20,
        "{due} vs {stale}"
    );

    // Just before the background's point: still nothing.
    clock.advance(
        ((due - clock.now()) - time::Duration::seconds(1))
            .try_into()
            .unwrap(),
    );
    assert_eq!(access(&a, &key).await, first);
    assert_eq!(authlink::refresh::sweep(&a.state).await, 0);
    assert_eq!(refreshes(&oidc).await, 0);

    // Past the request path's point: ten requests and the background refresher race.
    clock.advance(
        ((stale - clock.now()) + time::Duration::seconds(1))
            .try_into()
            .unwrap(),
    );
    let answers = join_all((0..10).map(|_| access(&a, &key))).await;
    let distinct: std::collections::HashSet<_> = answers.iter().collect();
    assert_eq!(distinct.len(), 1, "everyone got the same new token");
    assert_ne!(answers[0], first);
    assert_eq!(userinfo(&a, &answers[0]).await, StatusCode::OK);
    assert_eq!(authlink::refresh::sweep(&a.state).await, 0, "rescheduled");
    assert_eq!(refreshes(&oidc).await, 1, "exactly one refresh");
    assert_eq!(access(&a, &key).await, answers[0]);
    assert_eq!(oidc.stats().await["refresh_reuse_detected"], 0);
}

#[tokio::test]
async fn two_minute_tokens_are_served_unchanged_then_refreshed_exactly_once() {
    served_unchanged_then_refreshed_exactly_once(120).await;
}

#[tokio::test]
async fn five_minute_tokens_are_served_unchanged_then_refreshed_exactly_once() {
    served_unchanged_then_refreshed_exactly_once(300).await;
}

#[tokio::test]
async fn the_background_refreshes_a_due_grant_without_any_request() {
    let a = app(120, 300, true).await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "carol").await;
    let oidc = a.oidc.clone().unwrap();
    a.state.clock.freeze();
    let first = access(&a, &key).await;
    let due = grant_of(&a).await.refresh_at.unwrap();
    a.state.clock.advance(
        ((due - a.state.clock.now()) + time::Duration::milliseconds(1))
            .try_into()
            .unwrap(),
    );
    crate::helpers::until_async_within(Duration::from_secs(20), || async {
        refreshes(&oidc).await >= 1
    })
    .await;
    crate::helpers::until_async_within(Duration::from_secs(5), || async {
        grant_of(&a).await.refreshed_at.is_some()
    })
    .await;
    let t = access(&a, &key).await;
    assert_ne!(t, first);
    assert_eq!(userinfo(&a, &t).await, StatusCode::OK);
    assert_eq!(refreshes(&oidc).await, 1);
    assert_eq!(oidc.stats().await["refresh_reuse_detected"], 0);
}

#[tokio::test]
async fn concurrent_requests_on_an_expired_two_second_grant_refresh_once() {
    let a = app(2, 300, false).await;
    let b = a.replica().await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "erin").await;
    let oidc = a.oidc.clone().unwrap();
    a.state.clock.freeze();
    let first = access(&a, &key).await;
    assert_eq!(
        access(&b, &key).await,
        first,
        "fresh for two thirds of its 2 s"
    );
    a.state.clock.advance(Duration::from_secs(3)); // both replicas: one clock
    let answers = join_all((0..50).map(|i| access(if i % 2 == 0 { &a } else { &b }, &key))).await;
    let distinct: std::collections::HashSet<_> = answers.iter().collect();
    assert_eq!(distinct.len(), 1, "one new token for all 50");
    assert_ne!(answers[0], first);
    assert_eq!(refreshes(&oidc).await, 1, "one refresh");
    assert_eq!(userinfo(&a, &answers[0]).await, StatusCode::OK);
}

/// The proactive refresher over a compressed hour (one sweep per 2 s of clock time) for one grant
/// of 120 s tokens: it refreshes once per ~78 s (two thirds of the lifetime, minus the jitter),
/// not on every sweep.
#[tokio::test]
async fn a_grant_of_two_minute_tokens_is_refreshed_once_per_eighty_seconds_over_an_hour() {
    let a = app(120, 300, false).await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "frank").await;
    let oidc = a.oidc.clone().unwrap();
    a.state.clock.freeze();
    let mut claimed = 0;
    for _ in 0..1800 {
        a.state.clock.advance(Duration::from_secs(2));
        claimed += authlink::refresh::sweep(&a.state).await;
    }
    let n = refreshes(&oidc).await;
    eprintln!("refreshes over a compressed hour of 120 s tokens: {n} (1800 sweeps)");
    assert_eq!(
        claimed as u64, n,
        "claimed only when due, and each claim refreshed"
    );
    // Between refreshes: 80 s minus up to 4 s of jitter, plus up to 2 s until the next sweep.
    assert!((3600 / 82..=3600 / 76).contains(&n), "{n} refreshes");
    assert_eq!(oidc.stats().await["refresh_reuse_detected"], 0);
    assert_eq!(userinfo(&a, &access(&a, &key).await).await, StatusCode::OK);
}

/// A provider answering 500 to every refresh, for a compressed hour: the grant backs off
/// (2 s doubling to 300 s, jittered), so the provider sees a few dozen attempts, not one per
/// sweep; meanwhile the unexpired token is served, and once it has expired callers get 503 with
/// `Retry-After`. When the provider recovers, the next attempt works and the backoff resets.
#[tokio::test]
async fn a_failing_provider_sees_backed_off_refreshes_not_one_per_sweep() {
    let a = app(120, 300, false).await;
    let key = a.setup_bot("acme").await;
    sign_in(&a, &key, "u1", "gina").await;
    let oidc = a.oidc.clone().unwrap();
    let clock = &a.state.clock;
    clock.freeze();
    let first = access(&a, &key).await;
    reqwest::get(format!(
        "{}/__fail_next_token?status=500&count=100000",
        oidc.issuer
    ))
    .await
    .unwrap();
    let expires = grant_of(&a).await.access_expires_at.unwrap();
    for step in 0..1800 {
        clock.advance(Duration::from_secs(2));
        authlink::refresh::sweep(&a.state).await;
        if step % 15 == 0 {
            let r = token(&a, &key, "u1", false).await;
            if clock.now() < expires {
                assert_eq!(r.status(), StatusCode::OK);
                let t: Value = r.json().await.unwrap();
                assert_eq!(
                    t["access_token"],
                    first.as_str(),
                    "the working token is served"
                );
            } else {
                assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=300).contains(&retry), "Retry-After: {retry}");
            }
        }
    }
    let attempts = oidc.stats().await["injected_failures"].as_u64().unwrap();
    eprintln!(
        "refresh attempts over a compressed hour of 500s: {attempts} (1800 sweeps, 120 requests)"
    );
    // Waits of 1–2, 2–4, … 128–256 s, then 150–300 s: 16 to 30 attempts in an hour.
    assert!((14..=32).contains(&attempts), "{attempts} attempts");
    let g = grant_of(&a).await;
    assert_eq!(
        g.status,
        GrantStatus::Active,
        "a provider outage keeps the grant"
    );
    assert_eq!(g.refresh_failures as u64, attempts);

    // The provider recovers: the next attempt (at the retry point) works, and the backoff resets.
    reqwest::get(format!("{}/__fail_next_token?count=0", oidc.issuer))
        .await
        .unwrap();
    clock.advance(
        ((g.refresh_at.unwrap() - clock.now()) + time::Duration::milliseconds(1))
            .try_into()
            .unwrap(),
    );
    assert_eq!(authlink::refresh::sweep(&a.state).await, 1);
    let g = grant_of(&a).await;
    assert_eq!(g.refresh_failures, 0);
    assert_eq!(refreshes(&oidc).await, 1);
    assert_eq!(userinfo(&a, &access(&a, &key).await).await, StatusCode::OK);
}
