//! ② The link in the chat. `GET` shows an interstitial and changes nothing in the store, so a
//! chat unfurler or a link scanner fetching it has no effect. `POST` (the Continue button) starts
//! an attempt: a fresh PKCE verifier, a signed state, a browser-binding cookie, and a 303 to the
//! provider.
//!
//! Continue is same-origin only. Otherwise a page the victim visits could auto-submit the
//! attacker's own link, and a victim already signed in at the provider would connect their
//! account to the attacker's chat user without ever seeing the interstitial (login CSRF). The
//! browser says where a POST came from (`Sec-Fetch-Site`, else `Origin`); when it says nothing
//! useful (older browsers, privacy tools, a bookmark), the form's token decides: a random value in
//! a cookie the interstitial sets, and its MAC with the session in a hidden field, so only a page
//! this browser got from us can post it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::Duration;

use super::attempt::{
    changed_page, invalid_page, provider_attempt, read_cookie, settled_page, unavailable_page,
};
use super::pages::{Lang, Msg, Page, esc};
use crate::crypto::{b64url, b64url_decode, random_token, sha256};
use crate::domain::SessionId;
use crate::domain::link::{self, LinkError};
use crate::domain::session::{Session, Status};
use crate::flow::AppState;

/// The hidden field of the Continue form that carries the form token.
const FORM_FIELD: &str = "form";
/// MAC domain of the form token (links and states have their own).
const FORM_DOMAIN: &str = "continue-form";
/// How long the interstitial's form cookie lives: a person reads the page and presses Continue
/// well within it; a page left open longer asks for the link again (only in a browser that sends
/// neither `Sec-Fetch-Site` nor our `Origin`).
const FORM_TTL: Duration = Duration::hours(1);

/// Where a Continue came from, as far as the browser tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requester {
    /// A page of ours: `Sec-Fetch-Site: same-origin`, or (without that header) our own `Origin`.
    Us,
    /// Another site (`Sec-Fetch-Site: cross-site`, or an `Origin` that is not ours): refused
    /// whatever the form carries.
    Elsewhere,
    /// The browser does not say (no headers, `Origin: null`), or says something a token must
    /// back: `same-site` (a sibling subdomain is another origin, and may be another tenant's) and
    /// `none` (typed, bookmarked, or opened by another application).
    Unsure,
}

/// Judge a POST by its `Sec-Fetch-Site` and `Origin`, as the console does, but failing closed:
/// a request that says nothing is [`Requester::Unsure`], never ours.
fn requester(state: &AppState, headers: &HeaderMap) -> Requester {
    requester_for(
        &state.config.public_url.origin().ascii_serialization(),
        headers,
    )
}

/// [`requester`] for the daemon whose origin is `ours` (`https://auth.example.com`).
pub(crate) fn requester_for(ours: &str, headers: &HeaderMap) -> Requester {
    // An unreadable header is treated as another site's.
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("?"));
    // `null` names no site: our pages' `Referrer-Policy: no-referrer` makes the browser send it
    // even for our own form. Any other origin must be ours, whatever else the request says.
    if origin.is_some_and(|o| o != "null" && o != ours) {
        return Requester::Elsewhere;
    }
    match headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        Some("same-origin") => Requester::Us,
        Some("cross-site") => Requester::Elsewhere,
        Some(_) => Requester::Unsure,
        None if origin == Some(ours) => Requester::Us,
        None => Requester::Unsure,
    }
}

/// The form cookie's name: per session (two links open in one browser keep their own), and
/// `__Host-` over https so no sibling subdomain can plant a value it knows.
fn form_cookie_name(https: bool, session: SessionId) -> String {
    let digest = b64url(&sha256(session.to_string().as_bytes()));
    let short = &digest[..12];
    if https {
        format!("__Host-authlink-form-{short}")
    } else {
        format!("authlink-form-{short}")
    }
}

/// The form token for `session` in a browser whose form cookie holds `nonce`: `kid.mac`.
fn form_token(state: &AppState, session: SessionId, nonce: &str) -> String {
    let keys = &state.config.signing;
    let key = keys.current();
    let id = session.to_string();
    let tag: [u8; 16] = keys.mac(key, FORM_DOMAIN, &[id.as_bytes(), &[0], nonce.as_bytes()]);
    format!("{}.{}", key.id, b64url(&tag))
}

/// Does the posted form carry the token of this session and this browser's form cookie?
fn form_token_ok(state: &AppState, session: SessionId, headers: &HeaderMap, body: &[u8]) -> bool {
    let https = state.config.is_https();
    let Some(nonce) = read_cookie(headers, &form_cookie_name(https, session)) else {
        return false;
    };
    let Some(token) = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == FORM_FIELD)
        .map(|(_, v)| v)
    else {
        return false;
    };
    let Some((kid, tag)) = token.split_once('.') else {
        return false;
    };
    let Some(tag) = b64url_decode(tag) else {
        return false;
    };
    let id = session.to_string();
    state.config.signing.verify_mac::<16>(
        kid,
        FORM_DOMAIN,
        &[id.as_bytes(), &[0], nonce.as_bytes()],
        &tag,
    )
}

/// The page for a Continue that another site sent: nothing was started.
fn foreign_page(lang: Lang) -> Page {
    Page::new(
        StatusCode::FORBIDDEN,
        lang,
        Msg::ForeignTitle,
        Msg::ForeignBody,
    )
}

/// Verify the link (before any store access), then load its live session.
async fn open(state: &AppState, token: &str, headers: &HeaderMap) -> Result<Session, Page> {
    let now = state.clock.now();
    let browser = Lang::pick(None, headers);
    let id = match link::decode(&state.config.signing, token, now) {
        Ok(id) => id,
        Err(LinkError::Expired) => {
            return Err(Page::new(
                StatusCode::GONE,
                browser,
                Msg::ExpiredTitle,
                Msg::ExpiredBody,
            ));
        }
        Err(LinkError::Invalid) => return Err(invalid_page(browser)),
    };
    let session = match state.store.get_session(id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(invalid_page(browser)),
        Err(_) => return Err(unavailable_page(browser)),
    };
    let lang = Lang::pick(session.spec.locale.as_deref(), headers);
    let status = session.status_at(now);
    if status.is_final() || status == Status::AwaitingCode {
        return Err(settled_page(status, lang));
    }
    Ok(session)
}

#[utoipa::path(operation_id = "link_interstitial", get, path = "/l/{link}", tag = "browser", summary = "The link: an interstitial page that changes nothing", params(("link" = String, Path)), responses((status = 200, description = "200: text/html"), (status = "4XX", description = "problem+json (RFC 9457)")))]
pub async fn interstitial(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let session = match open(&state, &token, &headers).await {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    let lang = Lang::pick(session.spec.locale.as_deref(), &headers);
    let bot = match state.store.get_bot(&session.spec.bot).await {
        Ok(Some(b)) => b,
        Ok(None) => return invalid_page(lang).into_response(),
        Err(_) => return unavailable_page(lang).into_response(),
    };
    // Where Continue will send the person: the same app, hence the same authorize URL.
    let provider = match crate::flow::provider::session_provider(&state, &session.spec).await {
        Ok(Some(p)) => p,
        Ok(None) => return changed_page(lang).into_response(),
        Err(_) => return unavailable_page(lang).into_response(),
    };
    let service = session.spec.provider_name();
    let host = provider.sign_in_host().unwrap_or(&service).to_owned();
    let mut page = Page::new(StatusCode::OK, lang, Msg::ConnectTitle, Msg::ConnectBody);
    page.vars = vec![
        ("bot", bot.name.clone()),
        ("provider", service),
        ("host", host),
    ];
    // A bound session signs in at the bot's identity issuer first.
    let issuer = session
        .spec
        .binding
        .as_ref()
        .and_then(|b| url::Url::parse(&b.iss).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    if let Some(issuer) = issuer {
        page.vars.push(("issuer", issuer));
        page.extra_html = format!("<p>{}</p>\n", esc(&page.t(Msg::BindingFirst)));
    }
    page.og = true;
    // The form cookie: kept if this browser has one for the session (a reload, a second tab),
    // else a fresh random value. Nothing is stored on our side.
    let https = state.config.is_https();
    let cookie_name = form_cookie_name(https, session.spec.id);
    let nonce = read_cookie(&headers, &cookie_name)
        .filter(|v| v.len() == 43 && b64url_decode(v).is_some())
        .map_or_else(random_token::<32>, str::to_owned);
    // A relative action: the form posts back to this very link.
    page.extra_html += &format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"{FORM_FIELD}\" value=\"{}\"><button type=\"submit\">{}</button></form>\n",
        esc(&token),
        esc(&form_token(&state, session.spec.id, &nonce)),
        esc(&page.t(Msg::Continue))
    );
    let mut resp = page.into_response();
    // Strict: the cookie only ever comes back with a request from our own pages.
    let cookie = format!(
        "{cookie_name}={nonce}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        FORM_TTL.whole_seconds(),
        if https { "; Secure" } else { "" }
    );
    if let Ok(c) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

#[utoipa::path(operation_id = "link_start", post, path = "/l/{link}", tag = "browser", summary = "Continue: start a sign-in (PKCE, signed state, binding cookie); same-origin only", params(("link" = String, Path)), responses((status = 303, description = "303 to the provider"), (status = 403, description = "text/html: the POST came from another site (Sec-Fetch-Site, Origin, or no valid form token); nothing started"), (status = "4XX", description = "problem+json (RFC 9457)")))]
#[tracing::instrument(name = "start_attempt", skip_all, fields(session_id = tracing::field::Empty, bot = tracing::field::Empty, integration = tracing::field::Empty))]
pub async fn start(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match open(&state, &token, &headers).await {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    tracing::Span::current()
        .record("session_id", tracing::field::display(session.spec.id))
        .record("bot", tracing::field::display(&session.spec.bot))
        .record(
            "integration",
            tracing::field::display(&session.spec.integration),
        );
    let lang = Lang::pick(session.spec.locale.as_deref(), &headers);
    let from = requester(&state, &headers);
    let allowed = match from {
        Requester::Us => true,
        Requester::Unsure => form_token_ok(&state, session.spec.id, &headers, &body),
        Requester::Elsewhere => false,
    };
    if !allowed {
        tracing::warn!(session_id = %session.spec.id, requester = ?from, "Continue from another site refused");
        return foreign_page(lang).into_response();
    }
    if session.spec.binding.is_some() {
        // The person proves first who they are at the MCP server's own issuer (SPEC §9); the
        // binding callback goes on to the provider.
        return super::binding::begin(&state, &session, lang).await;
    }
    provider_attempt(&state, &session, lang, None).await
}
