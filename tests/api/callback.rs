//! ③ The callback: the full flow on both stores, and every way it must refuse.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Browser, Options, TestApp, on, spawn_app, spawn_with};
use crate::provider::Shape;

/// The webhooks delivered for a session (waits for the first), each verified with the bot's
/// secret by the official Standard Webhooks library.
async fn outbox(app: &TestApp, session_id: &str) -> Vec<crate::receiver::Received> {
    let events = app.receiver.wait_for(session_id, 1).await;
    assert!(
        events.iter().all(|e| e.verified == [true]),
        "signatures verify"
    );
    events
}

pub async fn full_flow(opts: Options) {
    let backend = opts.backend;
    let app = spawn_with(opts).await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "user-42").await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["status"], "pending");
    assert_eq!(s["context"], json!({"node": "n1"}));

    let mut browser = Browser::new();
    assert_eq!(
        browser.land(s["link"].as_str().unwrap()).await.status,
        StatusCode::OK
    );
    let page = browser.authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Salesforce is connected"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("You signed in to Salesforce as ada@example.com."),
        "what was connected and as whom: {}",
        page.body
    );
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(app.provider.token_requests(), 1);

    let (status, done) = app.session(&key, "acme", id, Some(30)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["user_id"], "user-42");
    assert_eq!(done["context"], json!({"node": "n1"}));
    assert!(done.get("link").is_none());

    let events = outbox(&app, id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "auth_session.completed");
    assert_eq!(
        events[0].body["data"]["identity"]["username"],
        "ada@example.com"
    );
    assert_eq!(
        events[0].body["data"]["identity"]["org_id"],
        "00D000000000001AAA"
    );

    let grant = app
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse("user-42").unwrap(),
        )
        .await
        .unwrap()
        .expect("grant stored");
    let aad = authlink::domain::grant::Grant::aad(&grant.bot, &grant.integration, &grant.subject);
    let tokens =
        authlink::domain::grant::Tokens::open(&app.config.encryption, &aad, &grant.sealed_tokens)
            .unwrap();
    let access = secrecy::ExposeSecret::expose_secret(&tokens.access_token).to_owned();
    let refresh =
        secrecy::ExposeSecret::expose_secret(tokens.refresh_token.as_ref().unwrap()).to_owned();
    assert!(app.provider.access_token_is_active(&access));
    assert_eq!(
        grant.instance_url.as_deref(),
        Some(app.provider.base_url.as_str())
    );
    assert_eq!(grant.scopes, vec!["api", "refresh_token", "id"]);
    for e in &events {
        let body = e.body.to_string();
        assert!(
            !body.contains(&access) && !body.contains(&refresh),
            "event carries a token"
        );
    }
    if backend == Backend::Redis {
        let dump = app.redis_dump();
        assert!(
            dump.iter().any(|(k, _)| k.contains(":g:acme:crm:")),
            "grant key exists"
        );
        for (k, v) in dump {
            for secret in [
                access.as_str(),
                refresh.as_str(),
                crate::helpers::CLIENT_SECRET,
            ] {
                assert!(!v.contains(secret), "{k} reveals a secret");
            }
        }
    }

    // The same user again: already authorized, no link.
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "user-42"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["status"], "already_authorized");
    assert!(again.get("link").is_none());
    assert_eq!(again["connection"]["identity"]["email"], "ada@example.com");
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "user-42", "force": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn full_flow_on_redis() {
    full_flow(Options::default()).await;
}

#[tokio::test]
async fn full_flow_on_a_redis_cluster() {
    full_flow(Options {
        redis_cluster_nodes: Some(crate::servers::cluster().urls()),
        ..Options::default()
    })
    .await;
}

#[tokio::test]
async fn full_flow_on_the_memory_store() {
    full_flow(Options {
        backend: Backend::Memory,
        ..Options::default()
    })
    .await;
}

#[tokio::test]
async fn full_flow_with_a_generic_oauth2_provider() {
    let app = spawn_with(Options {
        shape: Shape::Generic,
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let page = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (_, done) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(done["status"], "completed");
    let events = outbox(&app, s["id"].as_str().unwrap()).await;
    assert_eq!(
        events[0].body["data"]["identity"]["email"],
        "ada@example.com"
    );
}

#[tokio::test]
async fn a_replayed_callback_exchanges_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let mut browser = Browser::new();
    let authorize = browser.start(s["link"].as_str().unwrap()).await;
    let callback = browser.sign_in(&authorize).await;
    assert_eq!(browser.land(callback.as_str()).await.status, StatusCode::OK);
    let replay = browser.land(callback.as_str()).await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);
    assert_eq!(app.provider.token_requests(), 1);
    let (_, now) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(now["status"], "completed");
}

#[tokio::test]
async fn concurrent_duplicate_callbacks_exchange_the_code_once() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let mut browser = Browser::new();
    let authorize = browser.start(s["link"].as_str().unwrap()).await;
    let callback = browser.sign_in(&authorize).await;
    let cookie = browser_cookie(&mut browser, &callback).await;
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let req = client
                .get(callback.as_str())
                .header("cookie", cookie.clone());
            tokio::spawn(async move { req.send().await.unwrap().status() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "exactly one callback succeeds");
    assert_eq!(
        app.provider.token_requests(),
        1,
        "exactly one code exchange"
    );
}

/// The cookie header the browser would send to the callback.
async fn browser_cookie(browser: &mut Browser, _callback: &url::Url) -> String {
    browser.cookie_string()
}

#[tokio::test]
async fn a_callback_without_the_binding_cookie_is_refused_and_consumes_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let mut victim = Browser::new();
    let authorize = victim.start(s["link"].as_str().unwrap()).await;
    let callback = victim.sign_in(&authorize).await;
    let mut attacker = Browser::new();
    let page = attacker.land(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("same browser"));
    assert_eq!(app.provider.token_requests(), 0);
    // The right browser still completes.
    assert_eq!(victim.land(callback.as_str()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_and_expired_states_never_touch_the_store() {
    let app = spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    let mut browser = Browser::new();
    let cb = app.url("/oauth/callback/salesforce");
    for q in [
        "?code=x",
        "?code=x&state=garbage",
        "?code=x&state=eyJhbGciOiJIUzI1NiJ9.e30.x",
    ] {
        let page = browser.land(&format!("{cb}{q}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{q}");
    }
    let id = authlink::domain::SessionId::new(authlink::domain::Partition::all().next().unwrap());
    let now = time::OffsetDateTime::now_utc();
    let expired = authlink::domain::state::StateClaims::new(
        id,
        "att".into(),
        "salesforce".into(),
        "bnd".into(),
        now - time::Duration::minutes(20),
        now - time::Duration::minutes(10),
    )
    .encode(&app.config.signing);
    let page = browser.land(&format!("{cb}?code=x&state={expired}")).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("expired"));
    // A valid state on another app's callback path (mix-up).
    let valid = authlink::domain::state::StateClaims::new(
        id,
        "att".into(),
        "salesforce".into(),
        "bnd".into(),
        now,
        now + time::Duration::minutes(5),
    )
    .encode(&app.config.signing);
    let page = browser
        .land(&app.url(&format!("/oauth/callback/oauth2?code=x&state={valid}")))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // And without the binding cookie (still no store access).
    let page = browser.land(&format!("{cb}?code=x&state={valid}")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

async fn failing_flow(
    app: &TestApp,
    key: &str,
) -> (
    crate::helpers::Landing,
    Value,
    Vec<crate::receiver::Received>,
) {
    let s = app.new_session(key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    let page = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    let (_, status) = app.session(key, "acme", id, None).await;
    (page, status, outbox(app, id).await)
}

#[tokio::test]
async fn access_denied_fails_the_session_with_access_denied() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    app.provider.deny_next_authorization();
    let (page, status, events) = failing_flow(&app, &key).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("not granted"));
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["code"], "access_denied");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "auth_session.failed");
    assert_eq!(app.provider.token_requests(), 0);
}

#[tokio::test]
async fn token_endpoint_errors_fail_the_session() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    app.provider.fail_next_token(
        400,
        json!({"error": "invalid_grant", "error_description": "authentication failure"}),
    );
    let (page, status, _) = failing_flow(&app, &key).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_eq!(status["error"]["code"], "exchange_failed");

    app.provider
        .fail_next_token(500, json!({"error": "server_error"}));
    let (_, status, _) = failing_flow(&app, &key).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["code"], "provider_error");
}

#[tokio::test]
async fn a_wrong_salesforce_signature_or_foreign_instance_is_rejected() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    app.provider.corrupt_signature(true);
    let (_, status, _) = failing_flow(&app, &key).await;
    assert_eq!(status["error"]["code"], "provider_error");
    assert!(
        status["error"]["description"]
            .as_str()
            .unwrap()
            .contains("signature")
    );
    app.provider.corrupt_signature(false);

    app.provider
        .set_instance_url(Some("https://evil.example.com".into()));
    let (_, status, _) = failing_flow(&app, &key).await;
    assert_eq!(status["error"]["code"], "provider_error");
    assert!(
        status["error"]["description"]
            .as_str()
            .unwrap()
            .contains("instance_url")
    );
    let grant = app
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse("u1").unwrap(),
        )
        .await
        .unwrap();
    assert!(grant.is_none(), "nothing stored");
}

#[tokio::test]
async fn an_identity_mismatch_revokes_and_stores_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u1", "expected_identity": {"email": "bob@example.com"}}))
        .await;
    let s: Value = r.json().await.unwrap();
    let page = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    let (_, status) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(status["error"]["code"], "identity_mismatch");
    assert_eq!(
        app.provider.revocations().len(),
        1,
        "the fresh tokens were revoked"
    );
    let stored = app
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse("u1").unwrap(),
        )
        .await
        .unwrap();
    assert!(stored.is_none(), "nothing stored");

    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u2", "expected_identity": {"email": "ADA@example.com"}}))
        .await;
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
}

/// The flow across two replicas: the link issued by A is followed at B, the provider returns to
/// A, a long-poll on B wakes, the webhook arrives once although both deliver, and an expired
/// token asked for at both at once is refreshed once. `b_config` may set up B once the session
/// exists.
pub async fn long_poll_wakes_on_a_callback_at_another_replica(
    a: TestApp,
    b_config: impl FnOnce(&str, &mut authlink::config::Config),
) {
    let key = a.setup_bot("acme").await;
    let s = a.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap().to_owned();
    let b = a.replica_with(|c| b_config(&id, c)).await;
    let mut browser = Browser::new();
    // The link is issued by A and followed at B; the callback comes back to A (the public URL).
    let link = on(
        &b.base,
        &url::Url::parse(s["link"].as_str().unwrap()).unwrap(),
    );
    let authorize = browser.start(&link).await;
    let callback = browser.sign_in(&authorize).await;

    let waiter = {
        let (base, api, key, id) = (b.base.clone(), b.api.clone(), key.clone(), id.clone());
        tokio::spawn(async move {
            api.get(format!("{base}/v1/bots/acme/auth-sessions/{id}?wait=60"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The callback must land only once the waiter is parked on B.
    crate::helpers::until(|| b.store.waiting() == 1).await;
    let page = browser.land(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let woke = waiter.await.unwrap();
    assert_eq!(woke["status"], "completed");
    // Both replicas run delivery workers; the event arrives once. Once the queue is empty no
    // replica holds a claim on it either, so no second delivery can follow.
    let first = a.receiver.wait_for(&id, 1).await;
    crate::helpers::until_async(|| async { a.store.backlog().await.unwrap() == 0 }).await;
    let all = a.receiver.for_session(&id);
    assert_eq!(all.len(), 1, "delivered once: {all:?}");
    assert_eq!(all[0].id, first[0].id);

    // The token expires; both replicas are asked for it at once: one refresh at the provider.
    crate::tokens::expire(&a, "u1").await;
    let asks =
        (0..20).map(|i| crate::tokens::token(if i % 2 == 0 { &a } else { &b }, &key, "u1", false));
    let mut tokens = std::collections::HashSet::new();
    for r in futures_util::future::join_all(asks).await {
        assert_eq!(r.status(), StatusCode::OK);
        tokens.insert(r.json::<Value>().await.unwrap()["access_token"].to_string());
    }
    assert_eq!(a.provider.refresh_requests(), 1, "refreshed once");
    assert_eq!(tokens.len(), 1, "everyone got the refreshed token");
}

#[tokio::test]
async fn long_poll_on_one_replica_wakes_on_a_callback_at_another() {
    long_poll_wakes_on_a_callback_at_another_replica(spawn_app().await, |_, _| {}).await;
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let link = s["link"].as_str().unwrap().to_owned();
    let mut browser = Browser::new();
    let authorize = browser.start(&link).await;
    let callback = browser.sign_in(&authorize).await;
    let cookie = browser.cookie_string();
    assert_eq!(browser.land(callback.as_str()).await.status, StatusCode::OK);
    let q: std::collections::HashMap<_, _> = callback.query_pairs().into_owned().collect();

    let grant = app
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse("u1").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let aad = authlink::domain::grant::Grant::aad(&grant.bot, &grant.integration, &grant.subject);
    let tokens =
        authlink::domain::grant::Tokens::open(&app.config.encryption, &aad, &grant.sealed_tokens)
            .unwrap();

    let logs = crate::helpers::logs();
    let id = s["id"].as_str().unwrap();
    assert!(logs.contains(id), "the capture works");
    let token_in_link = link.rsplit('/').next().unwrap().to_owned();
    let secrets = [
        (
            "access token",
            secrecy::ExposeSecret::expose_secret(&tokens.access_token).to_owned(),
        ),
        (
            "refresh token",
            secrecy::ExposeSecret::expose_secret(tokens.refresh_token.as_ref().unwrap()).to_owned(),
        ),
        ("client secret", crate::helpers::CLIENT_SECRET.to_owned()),
        ("operator key", app.operator_key.clone()),
        ("bot key", key.clone()),
        ("authorization code", q["code"].clone()),
        ("state", q["state"].clone()),
        ("link token", token_in_link),
        (
            "binding cookie",
            cookie.split_once('=').unwrap().1.to_owned(),
        ),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "the logs contain the {what}");
    }
}
