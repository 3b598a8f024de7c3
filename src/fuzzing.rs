//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): the crate-private parsers that
//! read attacker-controlled bytes, each reached exactly as the daemon reaches it. Not an API;
//! hidden from the docs. The public parsers (`domain::link`, `domain::state`,
//! `domain::request_state`, `webhook`, `channel::slack::verify_request`, …) are fuzzed directly.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use time::OffsetDateTime;
use url::Url;

use crate::channel::ChannelError;
pub use crate::oauth::TokenSet;
pub use crate::routes::attempt::CallbackQuery;

/// The callback's query (`code`, `state`, `error`, `error_description`) as the `Query`
/// extractor of `routes::callback` reads it from the request URI; `None`: the 400 page.
pub fn callback_query(query: &str) -> Option<CallbackQuery> {
    let uri: Uri = format!("/oauth/callback/x?{query}").parse().ok()?;
    axum::extract::Query::<CallbackQuery>::try_from_uri(&uri)
        .ok()
        .map(|q| q.0)
}

/// A cookie, as the callback reads the binding cookie and the console its session cookie (one
/// reader for both).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    crate::routes::attempt::read_cookie(headers, name)
}

/// The `Idempotency-Key` header as `POST …/auth-sessions` accepts it.
pub fn idempotency_key(value: &HeaderValue) -> Option<&str> {
    crate::routes::sessions::idempotency_key(value).ok()
}

/// `routes::admin::check_url` (provider, issuer and channel URLs) on a daemon served over
/// https (`https`) or plain http.
pub fn check_url(https: bool, url: &Url) -> bool {
    crate::routes::admin::check_url_for(https, "url", url).is_ok()
}

/// `routes::admin::check_webhook_url`'s shape rules (the private-address rule is
/// `webhook::names_private_host`, fuzzed on its own).
pub fn check_webhook_url(url: &Url) -> bool {
    crate::routes::admin::check_webhook_url(url, false).is_ok()
}

/// A token endpoint's JSON answer, read as `oauth::Provider::exchange` reads it.
pub fn token_response(body: &[u8], now: OffsetDateTime) -> Option<TokenSet> {
    let r: crate::oauth::TokenResponseT = serde_json::from_slice(body).ok()?;
    Some(TokenSet::from_response(&r, now))
}

/// The channel adapters' answer parsers (status, `Retry-After` as read, body).
pub fn slack_answer(wait: Option<Duration>, body: &[u8]) -> Result<(), ChannelError> {
    crate::channel::slack::answer("chat.postMessage", wait, body).map(drop)
}
pub fn telegram_answer(
    status: StatusCode,
    wait: Option<Duration>,
    body: &[u8],
) -> Result<(), ChannelError> {
    crate::channel::telegram::answer(status, wait, body).map(drop)
}
pub fn whatsapp_answer(status: StatusCode, body: &[u8]) -> Result<(), ChannelError> {
    crate::channel::whatsapp::answer(status, body).map(drop)
}
pub fn matrix_answer(
    status: StatusCode,
    wait: Option<Duration>,
    body: &[u8],
) -> Result<(), ChannelError> {
    crate::channel::matrix::answer(status, wait, body).map(drop)
}
pub fn teams_connector_answer(
    status: StatusCode,
    wait: Option<Duration>,
    body: &[u8],
) -> Result<(), ChannelError> {
    crate::channel::teams::connector_answer(status, wait, body).map(drop)
}
/// The Bot Framework token endpoint's answer, put into a token cache as the adapter does.
pub fn teams_token_answer(status: StatusCode, body: &[u8]) -> Result<Duration, ChannelError> {
    let (token, lifetime) = crate::channel::teams::token_answer(status, body)?;
    let cache = crate::channel::teams::TokenCache::default();
    let (Ok(bot), Ok(channel)) = (
        crate::domain::BotId::parse("fuzz"),
        crate::domain::channel::ChannelName::parse("teams"),
    ) else {
        return Ok(lifetime);
    };
    let key = cache.key(&bot, &channel, "u", "a", &token);
    cache.put(key, token, lifetime);
    Ok(lifetime)
}

/// A connection's first bytes as `parked` reads them: `Some((length, method, target))` when it
/// would take the request (its head and body, `length` bytes of `bytes`), `None` for hyper.
pub fn parked_request(bytes: &[u8]) -> Option<(usize, String, String)> {
    crate::parked::take(bytes)
}

/// A first request on a connection over the cap, as `parked` decides whether it is a health
/// probe it still answers: `Some((length, method, target))` when it is.
pub fn health_probe(bytes: &[u8]) -> Option<(usize, String, String)> {
    crate::parked::take_probe(bytes)
}

/// Who sent a Continue (`POST /l/{link}`), as the link page judges it by `Sec-Fetch-Site` and
/// `Origin` for the daemon whose origin is `ours`: `"us"`, `"elsewhere"` (refused whatever the
/// form carries) or `"unsure"` (the form token decides).
pub fn continue_requester(ours: &str, headers: &HeaderMap) -> &'static str {
    use crate::routes::link::{Requester, requester_for};
    match requester_for(ours, headers) {
        Requester::Us => "us",
        Requester::Elsewhere => "elsewhere",
        Requester::Unsure => "unsure",
    }
}
