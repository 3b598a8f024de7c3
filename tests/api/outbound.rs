//! Answers from other servers are read with a cap (`http.max_response_body_bytes`, 1 MiB by
//! default): a tenant-set URL — a custom profile's token endpoint, a chat channel's API base, a
//! bot's identity issuer — that streams an endless body fails the step it answers, stores
//! nothing, and the daemon stops reading near the cap instead of holding the body in memory.
//!
//! The bound asserted is on bytes, not time: what the hostile server managed to hand to its
//! connection before the daemon went away.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use authlink::domain::{BotId, IntegrationName, Subject};

use crate::helpers::{Browser, TestApp, logs, spawn_app, until_async_within};
use crate::provider::{FakeProvider, ProviderOptions, Shape};

/// The daemon's default cap.
const CAP: usize = 1 << 20;
/// How much a flood sends: `None` never stops. (A finite 64 MiB, `Some(64 << 20)`, ran against
/// the code before the cap: it read all of it, and these tests failed.)
const FLOOD_BYTES: Option<usize> = None;

/// A hostile server: every request gets `200 application/json` and a body that starts like a
/// JSON object and never ends, sent as fast as the reader takes it (no `Content-Length`, so the
/// reader cannot tell in advance). It counts what it handed to the connection; when the reader
/// goes away, hyper fails the write and drops the body, which ends the count.
struct Flood {
    url: String,
    sent: Arc<AtomicUsize>,
    /// How many bodies have ended (sent out, or dropped because the reader left).
    ended: watch::Receiver<usize>,
}

/// Counts a body as ended when the stream holding it is dropped.
struct Ended(Arc<watch::Sender<usize>>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl Flood {
    async fn spawn() -> Flood {
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, ended) = watch::channel(0);
        let tx = Arc::new(tx);
        let counter = sent.clone();
        let app = Router::new().fallback(move || {
            let (sent, guard) = (counter.clone(), Ended(tx.clone()));
            async move { flood(sent, guard) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Flood { url, sent, ended }
    }

    /// Once the first body has ended: how many bytes were handed to the connections.
    async fn sent_when_ended(&mut self) -> usize {
        // A limit only so that a broken test fails instead of hanging.
        tokio::time::timeout(Duration::from_secs(60), self.ended.wait_for(|n| *n >= 1))
            .await
            .expect("the reader never went away")
            .unwrap();
        self.sent.load(Ordering::SeqCst)
    }
}

fn flood(sent: Arc<AtomicUsize>, guard: Ended) -> Response {
    let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
    let body = futures_util::stream::unfold((guard, 0usize), move |(guard, n)| {
        let (sent, chunk) = (sent.clone(), chunk.clone());
        async move {
            if FLOOD_BYTES.is_some_and(|limit| n >= limit) {
                return None;
            }
            let piece = if n == 0 {
                Bytes::from_static(b"{\"access_token\":\"")
            } else {
                chunk
            };
            sent.fetch_add(piece.len(), Ordering::SeqCst);
            let len = piece.len();
            Some((Ok::<_, Infallible>(piece), (guard, n + len)))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap()
}

/// What may be in flight between the flood and the daemon when the daemon stops reading: the
/// kernel's largest socket buffers on both ends (Linux grows them up to `tcp_rmem`/`tcp_wmem`'s
/// maximum) plus the HTTP stacks' own buffers (generously 1 MiB). More than the cap plus this
/// means the daemon kept reading past the cap.
fn bound() -> usize {
    let max = |path: &str, fallback: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(fallback)
    };
    CAP + max("/proc/sys/net/ipv4/tcp_rmem", 6 << 20)
        + max("/proc/sys/net/ipv4/tcp_wmem", 4 << 20)
        + (1 << 20)
}

const CUSTOM_ID: &str = "flooded-client";
const CUSTOM_SECRET: &str = "flooded-secret-4d2c";

#[tokio::test]
async fn a_token_endpoint_that_never_stops_fails_the_exchange_near_the_cap() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    // The person signs in at a real (fake) authorization server; the profile's token URL is the
    // tenant's flood.
    let provider = FakeProvider::spawn(ProviderOptions {
        client_id: CUSTOM_ID.into(),
        client_secret: CUSTOM_SECRET.into(),
        shape: Shape::Generic,
    })
    .await;
    let mut flood = Flood::spawn().await;
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/auth-profiles",
            &app.operator_key,
            Some(json!({
                "name": "Flooding app",
                "type": "oauth2",
                "client_id": CUSTOM_ID,
                "client_secret": CUSTOM_SECRET,
                "authorization_url": format!("{}/services/oauth2/authorize", provider.base_url),
                "token_url": format!("{}/token", flood.url),
                "scopes": ["openid"],
            })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let profile: Value = r.json().await.unwrap();
    let r = app
        .put_integration(
            "acme",
            "flooded",
            json!({"provider": "oauth2", "mode": "user", "profile": profile["id"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "flooded", "user_id": "u1"}),
        )
        .await
        .json()
        .await
        .unwrap();

    let page = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    let (_, view) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["error"]["code"], "provider_error");
    let description = view["error"]["description"].as_str().unwrap();
    assert!(description.contains("exceeded 1 MiB"), "{description}");
    let grant = app
        .store
        .get_grant(
            &BotId::parse("acme").unwrap(),
            &IntegrationName::parse("flooded").unwrap(),
            &Subject::parse("u1").unwrap(),
        )
        .await
        .unwrap();
    assert!(grant.is_none(), "nothing stored");
    let sent = flood.sent_when_ended().await;
    assert!(
        sent <= bound(),
        "the daemon read on: {sent} bytes sent, at most {} expected",
        bound()
    );
}

async fn delivery(app: &TestApp, key: &str, id: &str) -> Value {
    app.session(key, "acme", id, None).await.1["delivery"].clone()
}

const TELEGRAM_TOKEN: &str = "123456789:AAHfloodedTelegramToken_xyz";

#[tokio::test]
async fn a_channel_api_that_never_stops_fails_the_delivery_permanently_near_the_cap() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut flood = Flood::spawn().await;
    let r = app
        .call(
            Method::PUT,
            "/v1/bots/acme/channels/tg",
            &app.operator_key,
            Some(
                json!({"type": "telegram", "bot_token": TELEGRAM_TOKEN, "api_base_url": flood.url}),
            ),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "channel": {"name": "tg", "to": "424242"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until_async_within(Duration::from_secs(30), || async {
        delivery(&app, &key, &id).await["status"] != "queued"
    })
    .await;
    let d = delivery(&app, &key, &id).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["error"]["code"], "response_too_large", "{d}");
    let sent = flood.sent_when_ended().await;
    assert!(
        sent <= bound(),
        "the daemon read on: {sent} bytes sent, at most {} expected",
        bound()
    );
    assert_eq!(*flood.ended.borrow(), 1, "a permanent failure: one attempt");
}

#[tokio::test]
async fn an_identity_issuer_whose_discovery_never_stops_is_unavailable_near_the_cap() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut flood = Flood::spawn().await;
    let r = app
        .call(
            Method::PUT,
            "/v1/bots/acme",
            &app.operator_key,
            Some(json!({
                "name": "acme assistant",
                "webhook_url": app.receiver.url,
                "identity_issuer": {"issuer": flood.url, "client_id": "c", "client_secret": "s"},
            })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "binding": "oidc",
                   "subject": {"iss": flood.url, "sub": "alice"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = r.json().await.unwrap();

    let page = Browser::new().post(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status(), StatusCode::BAD_GATEWAY);
    let sent = flood.sent_when_ended().await;
    assert!(
        sent <= bound(),
        "the daemon read on: {sent} bytes sent, at most {} expected",
        bound()
    );
    let discovery = format!("{}/.well-known/openid-configuration", flood.url);
    assert!(
        logs()
            .lines()
            .any(|l| l.contains(&discovery) && l.contains("exceeded 1 MiB")),
        "the operator is told why"
    );
    let (_, view) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(view["status"], "pending", "nothing changed");
}
