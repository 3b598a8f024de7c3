//! A webhook receiver on loopback, as a dialog engine would run it: every delivery is verified with
//! the official Standard Webhooks library (crates.io `standardwebhooks`), and recorded. Its answers
//! can be scripted (500s, 410, `Retry-After`, slowness).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub kind: String,
    pub body: Value,
    /// Verified with each of the receiver's secrets, in order.
    pub verified: Vec<bool>,
    /// What the receiver answered.
    pub answered: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    secrets: Vec<String>,
    script: VecDeque<u16>,
    fallback: Option<u16>,
    delay: Duration,
    log: Vec<Received>,
    /// Requests that arrived, answered or not yet.
    started: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn spawn() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }
    /// Secrets to verify with (the bot's `whsec_…`).
    pub fn trust(&self, secret: &str) {
        self.lock().secrets.push(secret.to_owned());
    }
    /// Answer these statuses to the next deliveries, then 200 (or the fallback).
    pub fn answer(&self, statuses: &[u16]) {
        self.lock().script.extend(statuses);
    }
    pub fn always(&self, status: Option<u16>) {
        self.lock().fallback = status;
    }
    pub fn slow(&self, delay: Duration) {
        self.lock().delay = delay;
    }
    /// Requests that have arrived so far, including those still being answered.
    pub fn started(&self) -> usize {
        self.lock().started
    }
    pub fn log(&self) -> Vec<Received> {
        self.lock().log.clone()
    }
    /// Deliveries answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.log()
            .into_iter()
            .filter(|r| r.answered < 300)
            .collect()
    }
    /// Deliveries of one session's events (answered 2xx).
    pub fn for_session(&self, session_id: &str) -> Vec<Received> {
        self.delivered()
            .into_iter()
            .filter(|r| r.body["data"]["session_id"] == session_id)
            .collect()
    }
    /// Wait until `n` events of `session_id` have been delivered; return them.
    pub async fn wait_for(&self, session_id: &str, n: usize) -> Vec<Received> {
        crate::helpers::until(|| self.for_session(session_id).len() >= n).await;
        self.for_session(session_id)
    }
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (secrets, delay) = {
        let mut i = inner.lock().unwrap();
        i.started += 1;
        (i.secrets.clone(), i.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let verified = secrets
        .iter()
        .map(|s| {
            standardwebhooks::Webhook::new(s)
                .unwrap()
                .verify(&body, &headers)
                .is_ok()
        })
        .collect();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut i = inner.lock().unwrap();
    let answered = i.script.pop_front().or(i.fallback).unwrap_or(200);
    i.log.push(Received {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        kind: parsed["type"].as_str().unwrap_or("").to_owned(),
        body: parsed,
        verified,
        answered,
        at: std::time::Instant::now(),
    });
    StatusCode::from_u16(answered).unwrap()
}
