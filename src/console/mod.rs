//! The settings console (`/console`, SPEC §10): server-rendered pages for operators and bot
//! admins. An edge like the API routes, and a client of them: every action calls the same
//! handler the API does (same checks, same store path), as the signed-in caller, and shows the
//! API's error next to the field it concerns.
//!
//! Sign-in trades a key for a random session id in a `__Host-` cookie (HttpOnly,
//! SameSite=Strict, one hour); the store keeps the session under the id's SHA-256 and the key
//! is never kept in the browser. Every form carries the session's CSRF token, and a cross-site
//! POST (by `Sec-Fetch-Site` or `Origin`) changes nothing.

mod bots;
mod html;
mod integrations;
mod text;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;
use time::Duration;

use crate::crypto::{ct_eq, random_token, sha256_hex};
use crate::domain::bot::KeyRole;
use crate::domain::console::{ConsoleActor, ConsoleSession};
use crate::domain::lang::Lang;
use crate::error::ApiError;
use crate::flow::AppState;
use crate::routes::auth::Caller;
use crate::routes::pages::esc;
use html::{Frame, input, notice, token};
use text::T;

/// How long a console sign-in lasts.
const SESSION_TTL: Duration = Duration::hours(1);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/console.js", get(script))
        .route("/console/sign-in", post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/bots", get(bots::list).post(bots::create))
        .route("/console/bots/{bot}", get(bots::show).post(bots::update))
        .route("/console/bots/{bot}/keys", post(bots::create_key))
        .route(
            "/console/bots/{bot}/keys/{id}/revoke",
            post(bots::revoke_key),
        )
        .route("/console/bots/{bot}/secrets", post(bots::create_secret))
        .route(
            "/console/bots/{bot}/secrets/{id}/retire",
            post(bots::retire_secret),
        )
        .route(
            "/console/bots/{bot}/channels/{name}/delete",
            post(bots::delete_channel),
        )
        .route(
            "/console/bots/{bot}/dead-letters/{id}/replay",
            post(bots::replay),
        )
        .route(
            "/console/bots/{bot}/integrations",
            post(integrations::create),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}",
            get(integrations::show).post(integrations::update),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/profiles",
            post(integrations::create_profile),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/authorize",
            post(integrations::authorize),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/links",
            post(integrations::link),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/enable",
            post(integrations::enable),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/disable",
            post(integrations::disable),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/connections/{user}/test",
            post(integrations::test),
        )
        .route(
            "/console/bots/{bot}/integrations/{name}/connections/{user}/disconnect",
            post(integrations::disconnect),
        )
}

fn cookie_name(state: &AppState) -> &'static str {
    if state.config.is_https() {
        "__Host-authlink-console"
    } else {
        "authlink-console"
    }
}

pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::pick(None, headers)
}

/// A signed-in console request: the caller the API handlers are called as.
pub struct Signed {
    pub caller: Caller,
    pub csrf: String,
    pub lang: Lang,
    /// The operator's home (`/console/bots`), or the admin's one bot.
    pub home: String,
}

impl Signed {
    fn frame(&self) -> Frame<'_> {
        Frame {
            lang: self.lang,
            csrf: Some(&self.csrf),
            home: Some(&self.home),
        }
    }

    /// A form's token must be this session's; else nothing is done and this is the answer.
    fn refused(&self, form: &Form) -> Option<Response> {
        match form.get("csrf") {
            Some(t) if ct_eq(t, &self.csrf) => None,
            _ => Some(refused(self.lang)),
        }
    }
}

fn refused(lang: Lang) -> Response {
    let f = Frame {
        lang,
        csrf: None,
        home: None,
    };
    f.page(
        StatusCode::FORBIDDEN,
        f.t(T::Console),
        &notice(f.t(T::Refused), false),
    )
}

/// Not signed in (or the session ended): the sign-in page.
pub struct SignInFirst(Lang);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        sign_in_page(self.0, StatusCode::UNAUTHORIZED, Some(T::Expired))
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let lang = lang_of(&parts.headers);
        // A state-changing request from another site is refused before anything is read.
        if parts.method != axum::http::Method::GET && cross_site(state, &parts.headers) {
            return Err(refused(lang));
        }
        let Some(id) = cookie_value(&parts.headers, cookie_name(state)) else {
            return Err(SignInFirst(lang).into_response());
        };
        let session = state
            .store
            .get_console_session(&sha256_hex(id.as_bytes()))
            .await
            .map_err(|_| unavailable(lang))?
            .filter(|s| s.expires_at > state.clock.now())
            .ok_or_else(|| SignInFirst(lang).into_response())?;
        let (caller, home) = match &session.actor {
            ConsoleActor::Operator { key }
                if state.config.operator_key_sha256.starts_with(key.as_str()) =>
            {
                (Caller::Operator, "/console/bots".to_owned())
            }
            ConsoleActor::Operator { .. } => return Err(SignInFirst(lang).into_response()),
            ConsoleActor::Admin { bot, key_hash } => {
                // The key is looked up on every request: revoking it ends the session.
                let key = state
                    .store
                    .find_api_key(key_hash)
                    .await
                    .map_err(|_| unavailable(lang))?
                    .filter(|k| &k.bot == bot && k.role == KeyRole::Admin)
                    .ok_or_else(|| SignInFirst(lang).into_response())?;
                (Caller::Bot(key), format!("/console/bots/{bot}"))
            }
        };
        Ok(Signed {
            caller,
            csrf: session.csrf,
            lang,
            home,
        })
    }
}

/// `Sec-Fetch-Site: cross-site` / `same-site`, or an `Origin` that is not ours.
fn cross_site(state: &AppState, headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return true;
    }
    let ours = state.config.public_url.origin().ascii_serialization();
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o != ours)
}

fn unavailable(lang: Lang) -> Response {
    let f = Frame {
        lang,
        csrf: None,
        home: None,
    };
    f.page(
        StatusCode::SERVICE_UNAVAILABLE,
        f.t(T::Console),
        &notice(f.t(T::Unavailable), false),
    )
}

fn sign_in_page(lang: Lang, status: StatusCode, message: Option<T>) -> Response {
    let f = Frame {
        lang,
        csrf: None,
        home: None,
    };
    let (msg, field_error) = match message {
        Some(T::BadKey) => (String::new(), Some(f.t(T::BadKey))),
        Some(m) => (notice(f.t(m), m == T::SignedOut), None),
        None => (String::new(), None),
    };
    let body = format!(
        "{msg}<p>{help}</p><form method=\"post\" action=\"/console/sign-in\">{key}\
<button type=\"submit\">{sign_in}</button></form>",
        help = esc(f.t(T::SignInHelp)),
        key = input(f.t(T::Key), "key", "", "password", field_error),
        sign_in = esc(f.t(T::SignIn)),
    );
    f.page(status, f.t(T::SignIn), &body)
}

async fn home(State(state): State<AppState>, parts: Parts) -> Response {
    let mut parts = parts;
    match Signed::from_request_parts(&mut parts, &state).await {
        Ok(s) => Redirect::to(&s.home).into_response(),
        Err(_) => {
            let signed_out = parts.uri.query() == Some("signed-out");
            sign_in_page(
                lang_of(&parts.headers),
                StatusCode::OK,
                signed_out.then_some(T::SignedOut),
            )
        }
    }
}

async fn script() -> Response {
    let mut r = html::respond(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        html::SCRIPT.to_owned(),
    );
    // Static and tiny: cacheable, unlike the pages.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let lang = lang_of(&headers);
    if cross_site(&state, &headers) {
        return refused(lang);
    }
    let form = Form::parse(&body);
    let key = form.get("key").unwrap_or("").trim();
    if key.is_empty() || key.len() > 256 {
        return sign_in_page(lang, StatusCode::UNAUTHORIZED, Some(T::BadKey));
    }
    let hash = sha256_hex(key.as_bytes());
    let actor = if ct_eq(&hash, &state.config.operator_key_sha256) {
        ConsoleActor::Operator {
            key: hash[..16].to_owned(),
        }
    } else {
        match state.store.find_api_key(&hash).await {
            Ok(Some(k)) if k.role == KeyRole::Admin => ConsoleActor::Admin {
                bot: k.bot.clone(),
                key_hash: hash,
            },
            Ok(_) => {
                tracing::info!("console sign-in refused");
                return sign_in_page(lang, StatusCode::UNAUTHORIZED, Some(T::BadKey));
            }
            Err(_) => return unavailable(lang),
        }
    };
    let id = random_token::<32>();
    let session = ConsoleSession {
        actor,
        csrf: random_token::<32>(),
        expires_at: state.clock.now() + SESSION_TTL,
    };
    if state
        .store
        .put_console_session(&sha256_hex(id.as_bytes()), &session)
        .await
        .is_err()
    {
        return unavailable(lang);
    }
    tracing::info!("console signed in");
    let cookie = format!(
        "{}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        cookie_name(&state),
        SESSION_TTL.whole_seconds(),
        if state.config.is_https() {
            "; Secure"
        } else {
            ""
        }
    );
    let mut r = Redirect::to("/console").into_response();
    if let Ok(c) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let lang = lang_of(&headers);
    let form = Form::parse(&body);
    let Some(id) = cookie_value(&headers, cookie_name(&state)) else {
        return Redirect::to("/console?signed-out").into_response();
    };
    let id_hash = sha256_hex(id.as_bytes());
    // Only this session's own form may end it.
    match state.store.get_console_session(&id_hash).await {
        Ok(Some(s)) if form.get("csrf").is_some_and(|t| ct_eq(t, &s.csrf)) => {}
        Ok(None) => return Redirect::to("/console?signed-out").into_response(),
        Ok(Some(_)) => return refused(lang),
        Err(_) => return unavailable(lang),
    }
    if state.store.delete_console_session(&id_hash).await.is_err() {
        return unavailable(lang);
    }
    let mut r = Redirect::to("/console?signed-out").into_response();
    let clear = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        cookie_name(&state),
        if state.config.is_https() {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(c) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// An `application/x-www-form-urlencoded` body, fields in order (a name may repeat).
pub struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's text, trimmed; empty when absent.
    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_owned()
    }

    /// A field's text, or JSON null when empty.
    fn opt(&self, name: &str) -> Value {
        match self.text(name) {
            s if s.is_empty() => Value::Null,
            s => Value::String(s),
        }
    }

    /// A space- or comma-separated list.
    fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// What an API handler answered, as the console uses it.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The problem's `detail` (an API error), for the page.
    pub fn detail(&self) -> String {
        self.body["detail"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned()
    }

    /// The field the API's error names (its messages start with the field, as in
    /// "webhook_url must be …" or "unknown field `x`"), if it is one of `fields`.
    pub fn field<'a>(&self, fields: &[&'a str]) -> Option<&'a str> {
        let detail = self.detail();
        fields.iter().copied().find(|f| {
            detail.starts_with(f)
                || detail.contains(&format!("`{f}`"))
                || detail.contains(&format!(" {f} "))
        })
    }
}

/// Run an API handler's answer into an `Answer` (its JSON, or its problem+json).
pub async fn answer<R: IntoResponse>(result: Result<R, ApiError>) -> Answer {
    let resp = result.into_response();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 4 << 20)
        .await
        .unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A JSON body for an API handler, as the API would receive it.
pub fn json_body(v: &Value) -> crate::routes::JsonBody {
    crate::routes::JsonBody::json(serde_json::to_vec(v).unwrap_or_default().into())
}

/// After a change: back to `to`, with a notice the page shows (`?done=…`).
pub fn done(to: &str, what: &str) -> Response {
    Redirect::to(&format!("{to}?done={what}")).into_response()
}

/// The notice for `?done=…`.
pub fn done_notice(f: &Frame<'_>, query: Option<&str>) -> String {
    let what = query.and_then(|q| q.strip_prefix("done="));
    let t = match what {
        Some("saved") => T::Saved,
        Some("revoked") => T::Revoked,
        Some("retired") => T::Retired,
        Some("deleted") => T::Deleted,
        Some("replayed") => T::Replayed,
        Some("disconnected") => T::Disconnected,
        _ => return String::new(),
    };
    notice(f.t(t), true)
}

/// A page for an answer that is not the form's business (not found, unavailable…).
pub fn failed(s: &Signed, a: &Answer) -> Response {
    let f = s.frame();
    let text = match a.status {
        StatusCode::NOT_FOUND => f.t(T::NotFound).to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => f.t(T::Unavailable).to_owned(),
        _ => a.detail(),
    };
    f.page(
        if a.status.is_success() {
            StatusCode::OK
        } else {
            a.status
        },
        f.t(T::Console),
        &format!(
            "{}<p><a href=\"{}\">{}</a></p>",
            notice(&text, false),
            esc(&s.home),
            esc(f.t(T::Console))
        ),
    )
}

/// The hidden CSRF field of `s`'s forms.
fn csrf_field(s: &Signed) -> String {
    token(&s.csrf)
}
