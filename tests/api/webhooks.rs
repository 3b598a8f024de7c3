//! Resuming the dialog: signed, durable webhook delivery; retries, 410, dead letters and replay;
//! one `expired` event per session across replicas; server-sent events; URL safety.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Browser, Options, TestApp, spawn_app, spawn_with, until, until_async};

#[tokio::test]
async fn a_completed_session_is_delivered_signed_and_without_tokens() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    // A second active secret (rotation): every delivery carries both signatures.
    app.webhook_secret("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(
        Browser::new()
            .authorize(s["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    let events = app.receiver.wait_for(id, 1).await;
    let e = &events[0];
    assert_eq!(
        e.verified,
        vec![true, true],
        "each secret verifies on its own"
    );
    assert!(e.id.starts_with("evt_"));
    assert_eq!(e.kind, "auth_session.completed");
    let data = &e.body["data"];
    assert_eq!(data["bot"], "acme");
    assert_eq!(data["integration"], "crm");
    assert_eq!(data["user_id"], "u1");
    assert_eq!(data["conversation_id"], "conv-1");
    assert_eq!(data["context"], json!({"node": "n1"}));
    assert_eq!(data["status"], "completed");
    assert_eq!(data["identity"]["user_id"], "005000000000001AAA");
    let body = e.body.to_string();
    for forbidden in ["access_token", "refresh_token", "00D000000000001!"] {
        assert!(!body.contains(forbidden), "{forbidden} in the webhook");
    }
}

/// A delivery that takes longer than the lease is not taken over while its worker lives: the
/// lease is renewed (every third of it) until the endpoint answers, so neither replica sends it
/// a second time.
#[tokio::test]
async fn a_slow_delivery_keeps_its_lease_and_is_sent_once_across_replicas() {
    let a = spawn_with(Options {
        lease_seconds: 1,
        ..Options::default()
    })
    .await;
    let _b = a.replica().await;
    let key = a.setup_bot("acme").await;
    a.receiver.slow(Duration::from_millis(3500));
    let s = a.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    crate::helpers::cancel(&a, &key, id).await;
    let events = a.receiver.wait_for(id, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        a.receiver.started(),
        1,
        "nobody else started the delivery while it ran for 3.5 leases"
    );
    until_async(|| async { a.store.backlog().await.unwrap() == 0 }).await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_again_with_the_same_id() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    app.receiver.answer(&[500, 503, 500]);
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    crate::helpers::cancel(&app, &key, id).await;
    let delivered = app.receiver.wait_for(id, 1).await;
    assert_eq!(delivered[0].kind, "auth_session.cancelled");
    let attempts: Vec<_> = app
        .receiver
        .log()
        .into_iter()
        .filter(|r| r.body["data"]["session_id"] == id)
        .collect();
    assert_eq!(attempts.len(), 4, "three failures, then success");
    assert!(
        attempts.iter().all(|a| a.id == delivered[0].id),
        "webhook-id is stable across retries"
    );
    assert!(attempts.iter().all(|a| a.verified == [true]));
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_never_2xx_becomes_a_replayable_dead_letter() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;

    // Never 2xx: 1 attempt + 3 retries, then a dead letter with the last error.
    app.receiver.always(Some(500));
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    crate::helpers::cancel(&app, &key, id).await;
    let dead = until_dead(&app, 1).await;
    assert_eq!(dead[0]["session_id"], id);
    assert_eq!(dead[0]["attempts"], 4);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(app.receiver.log().len(), 4);
    // Replay once the receiver is fixed.
    app.receiver.always(None);
    let event_id = dead[0]["id"].as_str().unwrap();
    let r = app
        .call(
            Method::POST,
            &format!("/v1/bots/acme/webhook-deliveries/{event_id}/replay"),
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let delivered = app.receiver.wait_for(id, 1).await;
    assert_eq!(delivered[0].id, event_id);
    assert!(until_dead(&app, 0).await.is_empty());
    let r = app
        .call(
            Method::POST,
            &format!("/v1/bots/acme/webhook-deliveries/{event_id}/replay"),
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "not a dead letter any more"
    );

    // 410 Gone: dead at once, and the endpoint is disabled for the bot.
    app.receiver.answer(&[410]);
    let s2 = app.new_session(&key, "acme", "u2").await;
    crate::helpers::cancel(&app, &key, s2["id"].as_str().unwrap()).await;
    until_dead(&app, 1).await;
    let bot: Value = app
        .call(Method::GET, "/v1/bots/acme", &app.operator_key, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bot["disabled_webhooks"][0]["url"], app.receiver.url);
    let before = app.receiver.log().len();
    let s3 = app.new_session(&key, "acme", "u3").await;
    crate::helpers::cancel(&app, &key, s3["id"].as_str().unwrap()).await;
    let dead = until_dead(&app, 2).await;
    assert!(
        dead.iter()
            .any(|d| d["last_error"].as_str().unwrap().contains("disabled"))
    );
    assert_eq!(
        app.receiver.log().len(),
        before,
        "nothing sent to a disabled endpoint"
    );
    // Updating the bot re-enables it.
    app.put_bot("acme").await;
    let s4 = app.new_session(&key, "acme", "u4").await;
    crate::helpers::cancel(&app, &key, s4["id"].as_str().unwrap()).await;
    app.receiver.wait_for(s4["id"].as_str().unwrap(), 1).await;
}

/// Wait until the bot has exactly `n` dead letters; return them.
async fn until_dead(app: &TestApp, n: usize) -> Vec<Value> {
    let dead = || async {
        let r = app
            .call(
                Method::GET,
                "/v1/bots/acme/webhook-deliveries?state=dead",
                &app.operator_key,
                None,
            )
            .await;
        r.json::<Value>().await.unwrap()["deliveries"]
            .as_array()
            .unwrap()
            .clone()
    };
    until_async(|| async { dead().await.len() == n }).await;
    dead().await
}

#[tokio::test]
async fn every_expired_session_yields_one_expired_event_across_replicas() {
    let a = spawn_app().await;
    let b = a.replica().await;
    let key = a.setup_bot("acme").await;
    let _ = key;
    // 200 sessions that expire in a second (the API's minimum TTL is a minute, so they are
    // written through the store, as the API would).
    let now = authlink::clock::now();
    let mut ids = HashSet::new();
    for i in 0..200 {
        let s = crate::store::session_for(
            &format!("user-{i}"),
            now,
            time::Duration::seconds(1),
            Some(a.receiver.url.parse().unwrap()),
        );
        ids.insert(s.spec.id.to_string());
        let r = a
            .store
            .create_session(authlink::store::NewSession {
                session: &s,
                idempotency: None,
                retention: Duration::from_secs(60),
                unless_authorized_by: None,
                delivery: None,
                quota: None,
            })
            .await
            .unwrap();
        assert!(matches!(r, authlink::store::CreateOutcome::Created));
    }
    until(|| {
        a.receiver
            .delivered()
            .iter()
            .filter(|r| r.kind == "auth_session.expired")
            .count()
            >= 200
    })
    .await;
    let expired: Vec<_> = a
        .receiver
        .delivered()
        .into_iter()
        .filter(|r| r.kind == "auth_session.expired")
        .collect();
    let mut per_session: HashMap<String, HashSet<String>> = HashMap::new();
    for e in &expired {
        per_session
            .entry(e.body["data"]["session_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(e.id.clone());
    }
    assert_eq!(per_session.len(), 200);
    assert!(per_session.keys().all(|k| ids.contains(k)));
    assert!(
        per_session.values().all(|ids| ids.len() == 1),
        "one event per session"
    );
    drop(b);
}

#[tokio::test]
async fn server_sent_events_follow_the_session_until_it_settles() {
    let a = spawn_app().await;
    let b = a.replica().await;
    let key = a.setup_bot("acme").await;
    let s = a.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut stream = a
        .api
        .get(a.url(&format!("/v1/bots/acme/auth-sessions/{id}/events")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("pending") {
        text.push_str(&String::from_utf8_lossy(
            &stream.chunk().await.unwrap().unwrap(),
        ));
    }
    // The change happens on the other replica.
    let r = b
        .call(
            Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let statuses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .map(|s| {
            if s == "pending" {
                "pending"
            } else if s == "cancelled" {
                "cancelled"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(statuses, vec!["pending", "cancelled"], "{text}");
    assert!(text.contains("event: status"));
}

#[tokio::test]
async fn webhook_urls_are_checked_when_the_session_is_created() {
    let app = spawn_with(Options {
        deny_private_networks: true,
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://localhost/x",
        "http://[::1]/x",
    ] {
        let r = app
            .create_session(
                &key,
                "acme",
                json!({"integration": "crm", "user_id": "u", "webhook_url": url}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
    }
    // The bot's allow-list, when set, is enforced too.
    let r = app
        .call(
            Method::PUT,
            "/v1/bots/acme",
            &app.operator_key,
            Some(json!({"name": "acme", "allowed_webhook_hosts": ["hooks.example.com"]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.create_session(&key, "acme", json!({"integration": "crm", "user_id": "u", "webhook_url": "https://evil.example.net/x"})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.create_session(&key, "acme", json!({"integration": "crm", "user_id": "u", "webhook_url": "https://hooks.example.com/x"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// A bot's `webhook_url` follows the same rule as a session's, when the bot is saved: a daemon
/// that denies private networks refuses a private or loopback one with a 422 naming the field,
/// and keeps the bot as it was (before, every later session create failed instead).
#[tokio::test]
async fn a_bots_webhook_url_is_checked_when_the_bot_is_saved() {
    let app = spawn_with(Options {
        deny_private_networks: true,
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    let saved = json!({"name": "acme assistant", "webhook_url": "https://hooks.example.com/x"});
    let r = app
        .call(Method::PUT, "/v1/bots/acme", &app.operator_key, Some(saved))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let before = app.redis_dump();
    for url in [
        "http://127.0.0.1:9/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/x",
        "https://[::1]/x",
        "https://[fec0::1]/x",
        "https://[2001::a9fe:a9fe]/x",
        "https://[::ffff:192.168.0.1]/x",
    ] {
        for bot in ["acme", "newbot"] {
            let r = app
                .call(
                    Method::PUT,
                    &format!("/v1/bots/{bot}"),
                    &app.operator_key,
                    Some(json!({"name": "acme assistant", "webhook_url": url})),
                )
                .await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bot} {url}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let problem: Value = r.json().await.unwrap();
            assert!(
                problem["detail"].as_str().unwrap().contains("webhook_url"),
                "{problem}"
            );
        }
    }
    assert_eq!(app.redis_dump(), before, "nothing changed");
    // Sessions of the bot are still made.
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A daemon that allows private networks (a local trial) keeps accepting loopback.
    let local = spawn_app().await;
    assert_eq!(local.put_bot("acme").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn webhook_secrets_are_shown_once_and_managed_by_admins_only() {
    let app = spawn_app().await;
    let runtime = app.setup_bot("acme").await;
    let created = app.webhook_secret("acme").await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let list: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/webhook-secrets",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["secrets"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(secret));
    assert!(
        app.redis_dump()
            .iter()
            .all(|(_, v)| !v.contains(secret.trim_start_matches("whsec_"))),
        "sealed at rest"
    );
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/webhook-secrets",
            &runtime,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/bots/acme/webhook-secrets/{id}"),
            &app.operator_key,
            None
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/bots/acme/webhook-secrets/{id}"),
            &app.operator_key,
            None
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn metrics_count_deliveries() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    crate::helpers::cancel(&app, &key, s["id"].as_str().unwrap()).await;
    app.receiver.wait_for(s["id"].as_str().unwrap(), 1).await;
    let text = app.metrics().await;
    assert!(text.contains("authlink_webhook_deliveries_total"), "{text}");
}

#[tokio::test]
async fn a_stuck_endpoint_does_not_hold_up_other_bots() {
    // 4 deliveries in flight per replica, at most 2 per bot.
    let app = spawn_with(Options {
        webhook_concurrency: (4, 2),
        ..Options::default()
    })
    .await;
    let stuck_key = app.setup_bot("acme").await;
    app.receiver.slow(Duration::from_secs(3600));
    let other = crate::receiver::Receiver::spawn().await;
    let r = app
        .call(
            Method::PUT,
            "/v1/bots/other",
            &app.operator_key,
            Some(json!({"name": "other", "webhook_url": other.url})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let secret: Value = app
        .call(
            Method::POST,
            "/v1/bots/other/webhook-secrets",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    other.trust(secret["secret"].as_str().unwrap());
    app.put_integration("other", "crm", json!({"provider": "salesforce"}))
        .await;
    let other_key = app.new_key("other").await;

    // Ten events for the stuck endpoint first: more than all the replica's slots.
    for i in 0..10 {
        let s = app.new_session(&stuck_key, "acme", &format!("u{i}")).await;
        crate::helpers::cancel(&app, &stuck_key, s["id"].as_str().unwrap()).await;
    }
    let s = app.new_session(&other_key, "other", "u1").await;
    let id = s["id"].as_str().unwrap();
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/bots/other/auth-sessions/{id}"),
            &other_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let delivered = other.wait_for(id, 1).await;
    assert_eq!(delivered[0].verified, vec![true]);
    assert!(
        app.receiver.delivered().is_empty(),
        "the stuck endpoint has answered nothing"
    );
}
