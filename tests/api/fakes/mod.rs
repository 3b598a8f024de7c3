// The adapters that will use these fakes land later; until then parts of the API are unused.
#![allow(dead_code)]
//! Loopback fakes of the chat APIs authlink posts authorization links to: Slack Web API, Microsoft
//! Teams (Bot Framework Connector and its Entra token endpoint), Telegram Bot API and WhatsApp
//! Cloud API.
//!
//! They exist only because tests cannot reach the real services. Each one is held to the
//! documented behaviour of its API (the team's channel reference, `CHANNELS.md` §1–4 and the
//! fake-server checklist in §8): it checks authentication and the exact request shapes, rejects
//! what the real API rejects in the real error shape, answers with the real success bodies and
//! rate-limit signals, records every request for assertions, and can be armed with one-shot
//! failures. Each file carries self-tests that pin those behaviours; read them as the usage
//! documentation of the fake.
//!
//! Every fake binds 127.0.0.1:0, serves from a tokio task on the current runtime and is cheap to
//! clone (all clones share one state).

pub mod slack;
pub mod teams;
pub mod telegram;
pub mod whatsapp;

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, HeaderName, header};
use rand::Rng;
use rand::distributions::Alphanumeric;

/// Bind 127.0.0.1:0, serve `app` in a tokio task and return `http://127.0.0.1:PORT`.
async fn serve(app: Router, what: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind fake {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("fake {what} address: {e}"));
    let what = what.to_owned();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .unwrap_or_else(|e| panic!("fake {what} server: {e}"));
    });
    format!("http://{addr}")
}

/// A panicking test must not poison the fake for every later request.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn header_value(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = header_value(headers, header::AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The media type of `Content-Type`, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = header_value(headers, header::CONTENT_TYPE)?;
    let media = value.split(';').next().unwrap_or_default();
    Some(media.trim().to_ascii_lowercase())
}

fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}
