#![allow(dead_code)]
//! A fake OAuth 2.0 authorization server that behaves like Salesforce's
//! documented web-server flow (authorization code + PKCE).
//!
//! Why it exists: the identity provider is the one network edge of authlink
//! that tests cannot reach. Black-box tests point authlink at this server
//! (bound to 127.0.0.1, port 0) and drive the whole link → authorize →
//! callback → token → refresh → revoke cycle against it, while inspecting
//! what the provider saw and arming one-shot failures.
//!
//! Documented behaviours it enforces:
//! - `/services/oauth2/authorize` never redirects on a bad request (RFC 6749
//!   §4.1.2.1: bad `client_id` or `redirect_uri` must not redirect); it
//!   answers 400 in plain text. It requires `response_type=code`, `state`
//!   and PKCE with `code_challenge_method=S256` (RFC 7636). On success it
//!   answers `302 Found` to `redirect_uri?code=…&state=…`; the code looks
//!   like a Salesforce one (standard base64 with `+`, `/` and `==`, so the
//!   client must URL-decode it). A denial uses Salesforce's web-server
//!   spelling `error=access-denied`.
//! - `/services/oauth2/token` authenticates the client by HTTP Basic
//!   (RFC 6749 §2.3.1: each half form-urlencoded before base64) or by body
//!   parameters. Codes are single use and consumed on first presentation even
//!   when the exchange fails; `redirect_uri` must match the authorize
//!   request; `code_verifier` must hash (S256) to the challenge. Salesforce
//!   responses carry `instance_url`, `id`, `issued_at` (ms) and `signature`
//!   (base64 HMAC-SHA256 of `id + issued_at` keyed by the client secret),
//!   have no `expires_in`, include a refresh token only when the scope asks
//!   for `refresh_token`/`offline_access`, and do not rotate refresh tokens.
//!   Refusals use Salesforce's `error`/`error_description` pairs.
//! - `/id/{org}/{user}` (Salesforce identity URL) and
//!   `/services/oauth2/userinfo` (OIDC) need an active Bearer access token.
//! - `/services/oauth2/revoke` revokes access or refresh tokens; revoking a
//!   refresh token also revokes the access tokens minted from it.
//! - `/services/oauth2/introspect` (RFC 7662) is client-authenticated and
//!   answers only `{"active":false}` for unknown or revoked tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

/// Which provider the token endpoint imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Salesforce: `instance_url`, `id`, `issued_at`, `signature`, no `expires_in`.
    Salesforce,
    /// A plain RFC 6749 provider: `expires_in: 3600`, always a refresh token.
    Generic,
}

#[derive(Clone, Debug)]
pub struct ProviderOptions {
    pub client_id: String,
    pub client_secret: String,
    pub shape: Shape,
}

/// Handle to a running fake provider. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    inner: Arc<Inner>,
}

/// The scope a Salesforce connected app grants when the request names none.
const DEFAULT_SCOPE: &str = "api id refresh_token";
/// Access tokens and refresh tokens are reported by introspection as
/// expiring this many seconds after issue (Salesforce's default session timeout).
const TOKEN_LIFETIME_SECS: u64 = 7200;

struct Inner {
    base_url: String,
    client_id: String,
    client_secret: String,
    shape: Shape,
    state: Mutex<ProviderState>,
}

#[derive(Clone, Debug)]
struct Identity {
    user_id: String,
    org_id: String,
    username: String,
    email: String,
}

/// What `/authorize` remembers about a code until `/token` consumes it.
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    identity: Identity,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Access,
    Refresh,
}

struct IssuedToken {
    kind: TokenKind,
    identity: Identity,
    scope: String,
    client_id: String,
    issued_secs: u64,
    revoked: bool,
    /// For access tokens: the refresh token they belong to, if any.
    refresh_token: Option<String>,
}

struct ProviderState {
    identity: Identity,
    deny_next: bool,
    fail_next_token: Option<(u16, Value)>,
    instance_url: Option<String>,
    corrupt_signature: bool,
    codes: HashMap<String, PendingCode>,
    tokens: HashMap<String, IssuedToken>,
    token_requests: usize,
    refresh_requests: usize,
    /// `expires_in` of the generic shape's access tokens.
    lifetime_secs: u64,
    revocations: Vec<String>,
    last_authorize_query: Option<HashMap<String, String>>,
}

impl FakeProvider {
    /// Bind 127.0.0.1:0 and serve the provider on the current tokio runtime.
    pub async fn spawn(opts: ProviderOptions) -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let addr = listener.local_addr().expect("fake provider address");
        let base_url = format!("http://{addr}");
        let inner = Arc::new(Inner {
            base_url: base_url.clone(),
            client_id: opts.client_id,
            client_secret: opts.client_secret,
            shape: opts.shape,
            state: Mutex::new(ProviderState {
                identity: Identity {
                    user_id: "005000000000001AAA".into(),
                    org_id: "00D000000000001AAA".into(),
                    username: "ada@example.com".into(),
                    email: "ada@example.com".into(),
                },
                deny_next: false,
                fail_next_token: None,
                instance_url: None,
                corrupt_signature: false,
                codes: HashMap::new(),
                tokens: HashMap::new(),
                token_requests: 0,
                refresh_requests: 0,
                lifetime_secs: 3600,
                revocations: Vec::new(),
                last_authorize_query: None,
            }),
        });
        let app = Router::new()
            .route("/services/oauth2/authorize", get(authorize))
            .route("/services/oauth2/token", post(token))
            .route("/services/oauth2/revoke", post(revoke))
            .route("/services/oauth2/introspect", post(introspect))
            .route("/services/oauth2/userinfo", get(userinfo))
            .route("/id/{org}/{user}", get(identity))
            .with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake provider server");
        });
        FakeProvider { base_url, inner }
    }

    /// The identity that the next `/authorize` completes as.
    pub fn set_identity(&self, user_id: &str, org_id: &str, username: &str, email: &str) {
        self.inner.lock().identity = Identity {
            user_id: user_id.into(),
            org_id: org_id.into(),
            username: username.into(),
            email: email.into(),
        };
    }

    /// The generic shape's access tokens expire this many seconds after issue (default 3600).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.inner.lock().lifetime_secs = secs;
    }

    /// The next valid `/authorize` redirects back with `error=access-denied`.
    pub fn deny_next_authorization(&self) {
        self.inner.lock().deny_next = true;
    }

    /// The next POST to `/token` (any grant) answers `status` with `body`.
    /// The request is still counted; a presented code is not consumed.
    pub fn fail_next_token(&self, status: u16, body: Value) {
        self.inner.lock().fail_next_token = Some((status, body));
    }

    /// Override `instance_url` in token responses (`None` = `base_url`).
    pub fn set_instance_url(&self, url: Option<String>) {
        self.inner.lock().instance_url = url;
    }

    /// Salesforce shape: sign token responses with the wrong key.
    pub fn corrupt_signature(&self, on: bool) {
        self.inner.lock().corrupt_signature = on;
    }

    /// POSTs to `/token` with `grant_type=authorization_code`, failed or not.
    pub fn token_requests(&self) -> usize {
        self.inner.lock().token_requests
    }

    /// POSTs to `/token` with `grant_type=refresh_token`, failed or not.
    pub fn refresh_requests(&self) -> usize {
        self.inner.lock().refresh_requests
    }

    /// Tokens successfully revoked at `/revoke`, in order.
    pub fn revocations(&self) -> Vec<String> {
        self.inner.lock().revocations.clone()
    }

    /// The query string of the most recent `/authorize` request, decoded.
    pub fn last_authorize_query(&self) -> Option<HashMap<String, String>> {
        self.inner.lock().last_authorize_query.clone()
    }

    /// Whether `token` is an access token this provider issued and has not revoked.
    pub fn access_token_is_active(&self, token: &str) -> bool {
        self.inner
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| t.kind == TokenKind::Access && !t.revoked)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ProviderState> {
        // A panicking test must not cascade into every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id_url(&self, who: &Identity) -> String {
        format!("{}/id/{}/{}", self.base_url, who.org_id, who.user_id)
    }

    fn instance_url(&self, st: &ProviderState) -> String {
        st.instance_url
            .clone()
            .unwrap_or_else(|| self.base_url.clone())
    }

    /// RFC 6749 §2.3.1: HTTP Basic with form-urlencoded halves, or body params.
    fn client_is_authenticated(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
        let (id, secret) = match basic_credentials(headers) {
            Some(pair) => pair,
            None => match (form.get("client_id"), form.get("client_secret")) {
                (Some(id), Some(secret)) => (id.clone(), secret.clone()),
                _ => return false,
            },
        };
        id == self.client_id && secret == self.client_secret
    }

    /// Mint an access token (and optionally a refresh token) and build the
    /// token response in this provider's shape.
    fn issue(
        &self,
        st: &mut ProviderState,
        identity: &Identity,
        scope: &str,
        with_refresh: bool,
        from_refresh: Option<String>,
    ) -> Value {
        let now_ms = now_millis();
        let access = match self.shape {
            Shape::Salesforce => {
                let org15: String = identity.org_id.chars().take(15).collect();
                format!("{org15}!AR{}", random_alphanumeric(96))
            }
            Shape::Generic => format!("at_{}", random_alphanumeric(40)),
        };
        let refresh = with_refresh.then(|| match self.shape {
            Shape::Salesforce => format!("5Aep861{}", random_alphanumeric(80)),
            Shape::Generic => format!("rt_{}", random_alphanumeric(40)),
        });
        let record = |kind, refresh_token| IssuedToken {
            kind,
            identity: identity.clone(),
            scope: scope.to_owned(),
            client_id: self.client_id.clone(),
            issued_secs: now_ms / 1000,
            revoked: false,
            refresh_token,
        };
        let parent = refresh.clone().or(from_refresh);
        st.tokens
            .insert(access.clone(), record(TokenKind::Access, parent));
        if let Some(rt) = &refresh {
            st.tokens
                .insert(rt.clone(), record(TokenKind::Refresh, None));
        }

        match self.shape {
            Shape::Salesforce => {
                let id = self.id_url(identity);
                let issued_at = now_ms.to_string();
                let mut key = self.client_secret.clone().into_bytes();
                if st.corrupt_signature {
                    key.extend_from_slice(b"-corrupted");
                }
                let mut body = json!({
                    "access_token": access,
                    "signature": hmac_base64(&key, &format!("{id}{issued_at}")),
                    "scope": scope,
                    "instance_url": self.instance_url(st),
                    "id": id,
                    "token_type": "Bearer",
                    "issued_at": issued_at,
                });
                if let Some(rt) = refresh {
                    body["refresh_token"] = json!(rt);
                }
                body
            }
            Shape::Generic => {
                let mut body = json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": st.lifetime_secs,
                    "scope": scope,
                });
                if let Some(rt) = refresh {
                    body["refresh_token"] = json!(rt);
                }
                body
            }
        }
    }

    /// The identity bound to an active Bearer access token.
    fn bearer_identity(&self, headers: &HeaderMap) -> Option<Identity> {
        let token = bearer_token(headers)?;
        let st = self.lock();
        st.tokens
            .get(token)
            .filter(|t| t.kind == TokenKind::Access && !t.revoked)
            .map(|t| t.identity.clone())
    }
}

// ---------------------------------------------------------------- handlers

async fn authorize(
    State(p): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = p.lock();
    st.last_authorize_query = Some(q.clone());

    let bad = |msg: &str| (StatusCode::BAD_REQUEST, msg.to_owned()).into_response();
    if q.get("response_type").map(String::as_str) != Some("code") {
        return bad("unsupported_response_type: response_type must be code");
    }
    if q.get("client_id") != Some(&p.client_id) {
        return bad("invalid_client_id: client identifier invalid");
    }
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return bad("redirect_uri_mismatch: redirect_uri is required");
    };
    let Ok(mut location) = Url::parse(redirect_uri) else {
        return bad("redirect_uri_mismatch: redirect_uri must be an absolute URL");
    };
    if location.fragment().is_some() {
        return bad("redirect_uri_mismatch: redirect_uri must not contain a fragment");
    }
    let Some(state) = q.get("state").filter(|s| !s.is_empty()) else {
        return bad("invalid_request: state is required");
    };
    let Some(challenge) = q.get("code_challenge").filter(|s| !s.is_empty()) else {
        return bad("invalid_request: code_challenge is required");
    };
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return bad("invalid_request: code_challenge_method must be S256");
    }

    if std::mem::take(&mut st.deny_next) {
        location
            .query_pairs_mut()
            .append_pair("error", "access-denied")
            .append_pair("error_description", "end-user denied authorization")
            .append_pair("state", state);
    } else {
        // Salesforce codes are standard base64 ending in `==` (`aPrx…==`); 25 bytes
        // always pad with `==`, and `+`, `/`, `=` all need URL-encoding.
        let code = STANDARD.encode(rand::thread_rng().r#gen::<[u8; 25]>());
        let scope = q
            .get("scope")
            .cloned()
            .unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
        let pending = PendingCode {
            client_id: p.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            code_challenge: challenge.clone(),
            scope,
            identity: st.identity.clone(),
        };
        st.codes.insert(code.clone(), pending);
        location
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

async fn token(State(p): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let form = match parse_form(&headers, &body) {
        Ok(form) => form,
        Err(why) => return oauth_error(400, "invalid_request", why),
    };
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let mut st = p.lock();
    match grant_type.as_str() {
        "authorization_code" => st.token_requests += 1,
        "refresh_token" => st.refresh_requests += 1,
        _ => {}
    }
    if let Some((status, body)) = st.fail_next_token.take() {
        return json_response(status, body);
    }
    if !p.client_is_authenticated(&headers, &form) {
        return oauth_error(401, "invalid_client", "invalid client credentials");
    }

    match grant_type.as_str() {
        "authorization_code" => {
            let invalid_grant = || oauth_error(400, "invalid_grant", "authentication failure");
            // Single use: the code is gone from here on, whatever happens next.
            let Some(pending) = form.get("code").and_then(|c| st.codes.remove(c)) else {
                return invalid_grant();
            };
            if pending.client_id != p.client_id {
                return invalid_grant();
            }
            if form.get("redirect_uri") != Some(&pending.redirect_uri) {
                return oauth_error(
                    400,
                    "redirect_uri_mismatch",
                    "redirect_uri must match configuration",
                );
            }
            let Some(verifier) = form.get("code_verifier") else {
                return invalid_grant();
            };
            if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != pending.code_challenge
            {
                return oauth_error(400, "invalid_request", "invalid code verifier");
            }
            let with_refresh = match p.shape {
                Shape::Salesforce => pending
                    .scope
                    .split_whitespace()
                    .any(|s| s == "refresh_token" || s == "offline_access"),
                Shape::Generic => true,
            };
            let body = p.issue(
                &mut st,
                &pending.identity,
                &pending.scope,
                with_refresh,
                None,
            );
            json_response(200, body)
        }
        "refresh_token" => {
            let Some(rt) = form.get("refresh_token") else {
                return oauth_error(400, "invalid_grant", "expired access/refresh token");
            };
            let found = st
                .tokens
                .get(rt)
                .filter(|t| {
                    t.kind == TokenKind::Refresh && !t.revoked && t.client_id == p.client_id
                })
                .map(|t| (t.identity.clone(), t.scope.clone()));
            let Some((identity, scope)) = found else {
                return oauth_error(400, "invalid_grant", "expired access/refresh token");
            };
            // Salesforce's default: no rotation, so no refresh_token in the response.
            let body = p.issue(&mut st, &identity, &scope, false, Some(rt.clone()));
            json_response(200, body)
        }
        _ => oauth_error(400, "unsupported_grant_type", "grant type not supported"),
    }
}

async fn revoke(State(p): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let form = match parse_form(&headers, &body) {
        Ok(form) => form,
        Err(why) => return oauth_error(400, "invalid_request", why),
    };
    let Some(token) = form.get("token") else {
        return oauth_error(400, "invalid_request", "token parameter is required");
    };
    let mut st = p.lock();
    let Some(record) = st.tokens.get_mut(token) else {
        return json_response(400, json!({ "error": "invalid_token" }));
    };
    record.revoked = true;
    if record.kind == TokenKind::Refresh {
        for t in st.tokens.values_mut() {
            if t.refresh_token.as_deref() == Some(token.as_str()) {
                t.revoked = true;
            }
        }
    }
    st.revocations.push(token.clone());
    StatusCode::OK.into_response()
}

async fn introspect(State(p): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let form = match parse_form(&headers, &body) {
        Ok(form) => form,
        Err(why) => return oauth_error(400, "invalid_request", why),
    };
    if !p.client_is_authenticated(&headers, &form) {
        return oauth_error(401, "invalid_client", "invalid client credentials");
    }
    let Some(token) = form.get("token") else {
        return oauth_error(400, "invalid_request", "token parameter is required");
    };
    let st = p.lock();
    let Some(t) = st.tokens.get(token).filter(|t| !t.revoked) else {
        return json_response(200, json!({ "active": false }));
    };
    let token_type = match t.kind {
        TokenKind::Access => "access_token",
        TokenKind::Refresh => "refresh_token",
    };
    json_response(
        200,
        json!({
            "active": true,
            "scope": t.scope,
            "client_id": t.client_id,
            "username": t.identity.username,
            "sub": p.id_url(&t.identity),
            "token_type": token_type,
            "iat": t.issued_secs,
            "exp": t.issued_secs + TOKEN_LIFETIME_SECS,
        }),
    )
}

async fn identity(
    State(p): State<Arc<Inner>>,
    Path((org, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(who) = p.bearer_identity(&headers) else {
        return bad_oauth_token();
    };
    if who.org_id != org || who.user_id != user {
        return oauth_error(403, "Bad_Id", "identity URL does not match the token");
    }
    let instance = p.instance_url(&p.lock());
    let (first, last) = names(&who);
    json_response(
        200,
        json!({
            "id": p.id_url(&who),
            "asserted_user": true,
            "user_id": who.user_id,
            "organization_id": who.org_id,
            "username": who.username,
            "nick_name": who.username.split('@').next().unwrap_or_default(),
            "display_name": format!("{first} {last}"),
            "email": who.email,
            "email_verified": true,
            "first_name": first,
            "last_name": last,
            "active": true,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
            // Salesforce really sends the literal `{version}` placeholder.
            "urls": { "rest": format!("{instance}/services/data/v{{version}}/") },
        }),
    )
}

async fn userinfo(State(p): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let Some(who) = p.bearer_identity(&headers) else {
        return bad_oauth_token();
    };
    let (first, last) = names(&who);
    json_response(
        200,
        json!({
            "sub": p.id_url(&who),
            "user_id": who.user_id,
            "organization_id": who.org_id,
            "preferred_username": who.username,
            "email": who.email,
            "email_verified": true,
            "name": format!("{first} {last}"),
        }),
    )
}

// ----------------------------------------------------------------- helpers

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({ "error": error, "error_description": description }),
    )
}

fn bad_oauth_token() -> Response {
    oauth_error(403, "Bad_OAuth_Token", "Bad_OAuth_Token")
}

/// Decode an `application/x-www-form-urlencoded` body; repeated parameters
/// are refused (RFC 6749 §3.2). The error is an `invalid_request` description.
fn parse_form(headers: &HeaderMap, body: &str) -> Result<HashMap<String, String>, &'static str> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err("body must be application/x-www-form-urlencoded");
    }
    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err("repeated parameter");
        }
    }
    Ok(form)
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(component: &str) -> String {
    url::form_urlencoded::parse(format!("v={component}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn hmac_base64(key: &[u8], message: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn now_millis() -> u64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Names derived from the e-mail's local part: `ada@…` → ("Ada", "Example").
fn names(who: &Identity) -> (String, String) {
    let local = who.email.split('@').next().unwrap_or_default();
    let mut chars = local.chars();
    let first = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => "User".to_owned(),
    };
    (first, "Example".to_owned())
}
