//! The demo provider itself: a small OAuth 2.0 authorization server (RFC 6749) with one client
//! and one user. `GET` on the authorize endpoint only shows the "Sign in as demo user" page
//! (previews change nothing); the button POSTs to the same URL, which issues a code. Codes are
//! single-use and live a minute; PKCE S256 is required (RFC 7636); the token endpoint checks the
//! client's credentials (Basic or in the body) and also refreshes. Everything lives in this
//! process's memory, like the embedded store the demo runs with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, RawForm, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use url::Url;

use crate::clock::Clock;
use crate::crypto::{b64url, ct_eq, random_token, sha256};

pub const AUTHORIZE: &str = "/demo/oauth/authorize";
pub const TOKEN: &str = "/demo/oauth/token";
pub const USERINFO: &str = "/demo/userinfo";

const CODE_TTL: Duration = Duration::minutes(1);
const ACCESS_TTL: Duration = Duration::hours(1);

/// The one client: authlink's demo profile.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    pub secret: SecretString,
    /// The profile's callback URL, known once the profile exists.
    pub redirect_uri: Option<String>,
}

/// An issued code, waiting for its one exchange.
struct Code {
    challenge: String,
    scope: String,
    expires: OffsetDateTime,
}

#[derive(Default)]
struct Issued {
    codes: HashMap<String, Code>,
    /// Access token → expiry.
    access: HashMap<String, OffsetDateTime>,
    /// Refresh token → scope.
    refresh: HashMap<String, String>,
}

#[derive(Clone)]
struct Demo(Arc<Inner>);

struct Inner {
    client: Client,
    clock: Clock,
    issued: Mutex<Issued>,
}

pub fn router(client: Client, clock: Clock) -> Router {
    let demo = Demo(Arc::new(Inner {
        client,
        clock,
        issued: Mutex::default(),
    }));
    Router::new()
        .route(AUTHORIZE, get(sign_in_page).post(sign_in))
        .route(TOKEN, axum::routing::post(token))
        .route(USERINFO, get(userinfo))
        .with_state(demo)
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// Why an authorize request is refused: told to the browser when the client or its redirect
/// URI is wrong (RFC 6749 §4.1.2.1: never redirect then), else sent back to the client.
enum Refusal {
    Page(&'static str),
    Redirect(Url),
}

impl Demo {
    fn issued(&self) -> std::sync::MutexGuard<'_, Issued> {
        self.0
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The redirect URI of a well-formed request; errors as RFC 6749 §4.1.2.1 wants them.
    fn check(&self, q: &AuthorizeQuery) -> Result<Url, Refusal> {
        let client = &self.0.client;
        if q.client_id.as_deref() != Some(client.id.as_str()) {
            return Err(Refusal::Page(
                "This sign-in request names an unknown client.",
            ));
        }
        let Some(redirect) = q
            .redirect_uri
            .as_deref()
            .filter(|r| client.redirect_uri.as_deref() == Some(*r))
            .and_then(|r| Url::parse(r).ok())
        else {
            return Err(Refusal::Page(
                "This sign-in request's redirect URI is not registered.",
            ));
        };
        let refuse = |error: &str, description: &str| {
            let mut back = redirect.clone();
            back.query_pairs_mut()
                .append_pair("error", error)
                .append_pair("error_description", description);
            if let Some(state) = &q.state {
                back.query_pairs_mut().append_pair("state", state);
            }
            Refusal::Redirect(back)
        };
        if q.response_type.as_deref() != Some("code") {
            return Err(refuse(
                "unsupported_response_type",
                "only response_type=code",
            ));
        }
        let challenge_ok = q
            .code_challenge
            .as_deref()
            .is_some_and(|c| c.len() == 43 && crate::crypto::b64url_decode(c).is_some());
        if q.code_challenge_method.as_deref() != Some("S256") || !challenge_ok {
            return Err(refuse(
                "invalid_request",
                "PKCE is required: code_challenge with code_challenge_method=S256",
            ));
        }
        Ok(redirect)
    }
}

fn refused(r: Refusal) -> Response {
    match r {
        Refusal::Page(why) => page(StatusCode::BAD_REQUEST, why, ""),
        Refusal::Redirect(url) => Redirect::to(url.as_str()).into_response(),
    }
}

/// `GET`: the page only. Its form has no action, so it posts to this very URL, query included.
async fn sign_in_page(State(demo): State<Demo>, Query(q): Query<AuthorizeQuery>) -> Response {
    match demo.check(&q) {
        Ok(_) => page(
            StatusCode::OK,
            "This is authlink's built-in demo provider, not a real service: anyone can sign in \
             here as the demo user. It runs only when authlink runs without configuration.",
            "<form method=\"post\"><button type=\"submit\">Sign in as demo user</button></form>\n",
        ),
        Err(r) => refused(r),
    }
}

/// `POST`: the demo user signed in; a code goes back to the client.
async fn sign_in(State(demo): State<Demo>, Query(q): Query<AuthorizeQuery>) -> Response {
    let mut back = match demo.check(&q) {
        Ok(url) => url,
        Err(r) => return refused(r),
    };
    let code = random_token::<32>();
    let now = demo.0.clock.now();
    {
        let mut issued = demo.issued();
        issued.codes.retain(|_, c| c.expires > now);
        issued.codes.insert(
            code.clone(),
            Code {
                challenge: q.code_challenge.unwrap_or_default(),
                scope: q.scope.unwrap_or_default(),
                expires: now + CODE_TTL,
            },
        );
    }
    back.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = &q.state {
        back.query_pairs_mut().append_pair("state", state);
    }
    Redirect::to(back.as_str()).into_response()
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"demo\""),
        );
    }
    r
}

/// The client's credentials, from HTTP Basic (RFC 6749 §2.3.1) or the form body.
fn client_authenticated(demo: &Demo, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match &basic {
        Some(pair) => match pair.split_once(':') {
            Some((id, secret)) => (id, secret),
            None => return false,
        },
        None => match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => (id.as_str(), secret.as_str()),
            _ => return false,
        },
    };
    let client = &demo.0.client;
    id == client.id && ct_eq(secret, client.secret.expose_secret())
}

async fn token(State(demo): State<Demo>, headers: HeaderMap, RawForm(body): RawForm) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !client_authenticated(&demo, &headers, &form) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let field = |k: &str| form.get(k).map(String::as_str);
    let now = demo.0.clock.now();
    let scope = match field("grant_type") {
        Some("authorization_code") => {
            // Taken out first: a code is used once, whatever the outcome.
            let code = field("code").and_then(|c| demo.issued().codes.remove(c));
            let Some(code) = code.filter(|c| c.expires > now) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown, used or expired code",
                );
            };
            if field("redirect_uri") != demo.0.client.redirect_uri.as_deref() {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "redirect_uri differs from the authorization request's",
                );
            }
            let Some(verifier) = field("code_verifier") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code_verifier is required",
                );
            };
            if !ct_eq(&b64url(&sha256(verifier.as_bytes())), &code.challenge) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code_verifier does not match the code_challenge",
                );
            }
            code.scope
        }
        Some("refresh_token") => {
            // Rotated: the old refresh token is spent.
            let scope = field("refresh_token").and_then(|t| demo.issued().refresh.remove(t));
            let Some(scope) = scope else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown refresh token",
                );
            };
            scope
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "authorization_code or refresh_token",
            );
        }
    };
    let access = random_token::<32>();
    let refresh = random_token::<32>();
    {
        let mut issued = demo.issued();
        issued.access.retain(|_, until| *until > now);
        issued.access.insert(access.clone(), now + ACCESS_TTL);
        issued.refresh.insert(refresh.clone(), scope.clone());
    }
    let mut r = axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL.whole_seconds(),
        "refresh_token": refresh,
        "scope": scope,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn userinfo(State(demo): State<Demo>, headers: HeaderMap) -> Response {
    let now = demo.0.clock.now();
    let valid = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| demo.issued().access.get(t).is_some_and(|u| *u > now));
    if !valid {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "unknown or expired access token",
        );
    }
    axum::Json(json!({
        "sub": "demo-user",
        "preferred_username": "demo",
        "email": "demo@example.com",
        "name": "Demo User",
    }))
    .into_response()
}

/// The demo provider's page: labelled as the demo on every view, no scripts, no external loads.
fn page(status: StatusCode, text: &str, form: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"robots\" content=\"noindex\">\n<title>Demo provider</title>\n<style>{CSS}</style>\n</head>\n\
<body>\n<main>\n<p class=\"label\">DEMO</p>\n<h1>Demo provider</h1>\n<p>{text}</p>\n{form}</main>\n</body>\n</html>\n"
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

const CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#fff8e1;color:#1b1f24}\
main{max-width:28rem;margin:12vh auto;padding:2rem;background:#fff;border:3px dashed #b26a00;border-radius:12px}\
.label{display:inline-block;margin:0;padding:.1rem .6rem;background:#b26a00;color:#fff;font-weight:700;border-radius:4px}\
button{font:inherit;padding:.7rem 1.2rem;border:0;border-radius:8px;background:#0b5cd5;color:#fff;cursor:pointer}\
button:focus{outline:3px solid #f5a623;outline-offset:2px}";

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    const REDIRECT: &str = "http://127.0.0.1:8080/oauth/callback/prof_1";

    fn demo() -> (Router, Clock) {
        let clock = Clock::default();
        clock.freeze();
        let client = Client {
            id: "demo_client".into(),
            secret: "s3cret".to_string().into(),
            redirect_uri: Some(REDIRECT.into()),
        };
        (router(client, clock.clone()), clock)
    }

    /// An authorize URL for `verifier`'s S256 challenge (or `challenge` given as is).
    fn authorize(extra: &[(&str, &str)]) -> String {
        let mut url = Url::parse("http://d/demo/oauth/authorize").unwrap();
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("response_type", "code"),
            ("client_id", "demo_client"),
            ("redirect_uri", REDIRECT),
            ("state", "st"),
        ]
        .iter()
        .chain(extra)
        {
            q.append_pair(k, v);
        }
        drop(q);
        format!("{}?{}", url.path(), url.query().unwrap())
    }

    fn s256(verifier: &str) -> String {
        b64url(&sha256(verifier.as_bytes()))
    }

    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let r = app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn location(headers: &HeaderMap) -> HashMap<String, String> {
        let url = Url::parse(headers[header::LOCATION].to_str().unwrap()).unwrap();
        url.query_pairs().into_owned().collect()
    }

    /// Sign in with `verifier`'s challenge: the code.
    async fn code(app: &Router, verifier: &str) -> String {
        let challenge = s256(verifier);
        let uri = authorize(&[
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let req = Request::post(uri).body(Body::empty()).unwrap();
        let (status, headers, _) = send(app, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let q = location(&headers);
        assert_eq!(q["state"], "st");
        q["code"].clone()
    }

    async fn token(app: &Router, auth: Option<&str>, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req =
            Request::post(TOKEN).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            let basic = base64::engine::general_purpose::STANDARD.encode(a);
            req = req.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let (status, _, body) = send(app, req.body(Body::from(body)).unwrap()).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    fn exchange<'a>(code: &'a str, verifier: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ];
        form.extend(verifier.map(|v| ("code_verifier", v)));
        form
    }

    const GOOD: Option<&str> = Some("demo_client:s3cret");
    const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123";

    #[tokio::test]
    async fn the_sign_in_page_changes_nothing_and_pkce_s256_is_required() {
        let (app, _) = demo();
        let challenge = s256(VERIFIER);
        let good = authorize(&[
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let (status, headers, body) =
            send(&app, Request::get(&good).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("DEMO") && body.contains("Sign in as demo user"));
        assert!(body.contains("<form method=\"post\">"), "posts to itself");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(headers.get(header::LOCATION).is_none(), "no code on GET");

        for extra in [
            vec![("code_challenge", challenge.as_str())],
            vec![
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "plain"),
            ],
            vec![("code_challenge_method", "S256")],
        ] {
            let req = Request::post(authorize(&extra))
                .body(Body::empty())
                .unwrap();
            let (status, headers, _) = send(&app, req).await;
            assert_eq!(status, StatusCode::SEE_OTHER);
            let q = location(&headers);
            assert_eq!(
                (q["error"].as_str(), q["state"].as_str()),
                ("invalid_request", "st")
            );
            assert!(!q.contains_key("code"));
        }
        // A request for another client or redirect URI is refused without redirecting.
        let foreign = good.replace("demo_client", "other");
        let (status, headers, _) =
            send(&app, Request::post(foreign).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(headers.get(header::LOCATION).is_none());
    }

    #[tokio::test]
    async fn codes_need_the_client_and_the_verifier_and_work_once() {
        let (app, clock) = demo();
        let c = code(&app, VERIFIER).await;
        for auth in [None, Some("demo_client:wrong"), Some("other:s3cret")] {
            let (status, e) = token(&app, auth, &exchange(&c, Some(VERIFIER))).await;
            assert_eq!(
                (status, e["error"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("invalid_client"))
            );
        }
        let (status, e) = token(&app, GOOD, &exchange(&c, None)).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        let (_, e) = token(&app, GOOD, &exchange(&c, Some(VERIFIER))).await;
        assert_eq!(
            e["error"], "invalid_grant",
            "a code is spent by any attempt"
        );

        let c = code(&app, VERIFIER).await;
        let (_, e) = token(
            &app,
            GOOD,
            &exchange(&c, Some("another-verifier-of-forty-three-characters-0123")),
        )
        .await;
        assert_eq!(e["error"], "invalid_grant");

        let c = code(&app, VERIFIER).await;
        clock.advance(std::time::Duration::from_secs(61));
        let (_, e) = token(&app, GOOD, &exchange(&c, Some(VERIFIER))).await;
        assert_eq!(e["error"], "invalid_grant", "expired");

        // In the body instead of Basic.
        let c = code(&app, VERIFIER).await;
        let mut form = exchange(&c, Some(VERIFIER));
        form.extend([("client_id", "demo_client"), ("client_secret", "s3cret")]);
        let (status, t) = token(&app, None, &form).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(t["token_type"], "Bearer");
    }

    #[tokio::test]
    async fn tokens_open_userinfo_and_refresh_tokens_rotate() {
        let (app, _) = demo();
        let c = code(&app, VERIFIER).await;
        let (status, t) = token(&app, GOOD, &exchange(&c, Some(VERIFIER))).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        let info = |access: String| {
            Request::get(USERINFO)
                .header(header::AUTHORIZATION, format!("Bearer {access}"))
                .body(Body::empty())
                .unwrap()
        };
        let (status, _, body) = send(&app, info(t["access_token"].as_str().unwrap().into())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["preferred_username"],
            "demo"
        );
        let (status, _, _) = send(&app, info("forged".into())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let rt = t["refresh_token"].as_str().unwrap();
        let refresh = [("grant_type", "refresh_token"), ("refresh_token", rt)];
        let (status, fresh) = token(&app, GOOD, &refresh).await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(fresh["access_token"], t["access_token"]);
        let (status, e) = token(&app, GOOD, &refresh).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant"))
        );
    }
}
