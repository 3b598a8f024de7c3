//! ② before ③ for `binding: oidc` sessions (SPEC §9, the phishing rule): Continue first signs the
//! browser in at the bot's identity issuer (the MCP server's own authorization server: code +
//! PKCE + nonce + signed state), and only the user the session names goes on to the provider. A
//! different person fails the session with `identity_mismatch` before any provider is contacted.

use anyhow::{Context, anyhow, bail};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;
use url::Url;

use super::attempt::{
    CallbackQuery, attempt_deadline, fail, invalid_page, launch, provider_attempt,
    unavailable_page, verified_state,
};
use super::pages::{Lang, Msg, Page};
use crate::crypto::{b64url, ct_eq, random_token, sha256};
use crate::domain::BotId;
use crate::domain::bot::IdentityIssuer;
use crate::domain::session::{
    Attempt, BindingMethod, BindingOutcome, BindingResult, FailureCode, Session,
};
use crate::domain::state::StateClaims;
use crate::flow::AppState;
use crate::oauth::issuer::Discovery;

/// The `cfg` of a binding step's state: only the binding callback of that bot accepts it.
fn state_cfg(bot: &BotId) -> String {
    format!("binding:{bot}")
}

fn redirect_uri(state: &AppState, bot: &BotId) -> Url {
    let mut url = state.config.public_url.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/oauth/binding/{bot}"));
    url
}

fn verifier_aad(attempt: &Attempt) -> String {
    format!("binding|{}|{}", attempt.session, attempt.id)
}

/// Send `req` and read a JSON answer (up to the cap); `what` names the step for the operator.
async fn fetch_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<T> {
    let response = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("{what}: request"))?;
    // The cause in the message itself: the callers log this error with `%`, which shows only
    // the outermost context.
    state
        .http
        .json(response)
        .await
        .map_err(|e| anyhow!("{what}: {e}"))
}

/// The issuer's discovery document: cached, else fetched and checked.
async fn discover(state: &AppState, issuer: &str) -> anyhow::Result<Arc<Discovery>> {
    let now = state.clock.now();
    if let Some(d) = state.issuers.discovery(issuer, now) {
        return Ok(d);
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let d: Discovery =
        fetch_json(state, state.http.get(&url), &format!("discovery at {url}")).await?;
    // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
    if d.issuer != issuer {
        bail!("discovery names issuer {:?}, not {issuer:?}", d.issuer);
    }
    for url in [&d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri] {
        super::admin::check_url(state, "issuer endpoint", url)
            .map_err(|_| anyhow!("issuer endpoint {url} is not trusted"))?;
    }
    Ok(state.issuers.keep_discovery(issuer, d, now))
}

/// The issuer's JWKS with the key `kid` names: cached, else fetched.
async fn jwks(state: &AppState, url: &Url, kid: Option<&str>) -> anyhow::Result<Arc<JwkSet>> {
    let now = state.clock.now();
    if let Some(set) = state.issuers.jwks(url, kid, now) {
        return Ok(set);
    }
    let set: JwkSet = fetch_json(state, state.http.get(url.clone()), "the issuer's JWKS").await?;
    Ok(state.issuers.keep_jwks(url, set, now))
}

async fn issuer_of(state: &AppState, bot: &BotId) -> anyhow::Result<IdentityIssuer> {
    state
        .store
        .get_bot(bot)
        .await?
        .and_then(|b| b.identity_issuer.clone())
        .context("the bot has no identity issuer")
}

fn error_page(lang: Lang) -> Page {
    Page::new(
        StatusCode::BAD_GATEWAY,
        lang,
        Msg::ErrorTitle,
        Msg::ErrorBody,
    )
}

/// Continue on a bound session: park a binding attempt and send the browser to the issuer.
pub(super) async fn begin(state: &AppState, session: &Session, lang: Lang) -> Response {
    let spec = &session.spec;
    let discovery = match issuer_of(state, &spec.bot).await {
        Ok(issuer) => discover(state, &issuer.issuer).await.map(|d| (issuer, d)),
        Err(e) => Err(e),
    };
    let (issuer, discovery) = match discovery {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(session_id = %spec.id, error = %e, "identity issuer unavailable");
            return error_page(lang).into_response();
        }
    };
    let now = state.clock.now();
    let attempt_id = random_token::<16>();
    let binding = random_token::<32>();
    let verifier = random_token::<32>();
    let nonce = random_token::<16>();
    let claims = StateClaims::new(
        spec.id,
        attempt_id.clone(),
        state_cfg(&spec.bot),
        b64url(&sha256(binding.as_bytes())),
        now,
        attempt_deadline(spec, now),
    );
    let mut url = discovery.authorization_endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &issuer.client_id)
        .append_pair("redirect_uri", redirect_uri(state, &spec.bot).as_str())
        .append_pair("scope", "openid")
        .append_pair("state", &claims.encode(&state.config.signing))
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &b64url(&sha256(verifier.as_bytes())))
        .append_pair("code_challenge_method", "S256");
    let mut attempt = Attempt {
        id: attempt_id,
        session: spec.id,
        verifier: String::new(),
        nonce: Some(nonce),
        bound: None,
        created_at: now,
    };
    attempt.verifier = state
        .config
        .encryption
        .seal(&verifier_aad(&attempt), verifier.as_bytes());
    launch(state, spec, lang, &attempt, &binding, url.as_str()).await
}

#[utoipa::path(operation_id = "binding_callback", get, path = "/oauth/binding/{bot}", tag = "browser", summary = "The identity issuer's redirect back (binding: oidc), then on to the provider", params(("bot" = String, Path)), responses((status = 303, description = "303 to the provider"), (status = "4XX", description = "text/html error page")))]
pub async fn callback(
    State(state): State<AppState>,
    Path(bot): Path<String>,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let browser = Lang::pick(None, &headers);
    let (Ok(Query(q)), Ok(bot)) = (query, BotId::parse(&bot)) else {
        return invalid_page(browser).into_response();
    };
    let now = state.clock.now();
    let claims = match verified_state(&state, q.state(), &state_cfg(&bot), &headers, now) {
        Ok(c) => c,
        Err(page) => return page.into_response(),
    };
    // Single use: exactly one callback gets the attempt, and only a binding step's attempt.
    let attempt = match state.store.take_attempt(claims.sub, &claims.att).await {
        Ok(Some(a)) if a.nonce.is_some() => a,
        Ok(_) => {
            tracing::warn!(session_id = %claims.sub, "binding callback for an attempt that was used, expired or is not a binding step");
            return invalid_page(browser).into_response();
        }
        Err(_) => return unavailable_page(browser).into_response(),
    };
    let session = match state.store.get_session(claims.sub).await {
        Ok(Some(s)) if s.spec.binding.is_some() => s,
        Ok(_) => return invalid_page(browser).into_response(),
        Err(_) => return unavailable_page(browser).into_response(),
    };
    let lang = Lang::pick(session.spec.locale.as_deref(), &headers);
    // Anything wrong with the sign-in itself stores nothing: the attempt is gone, the session
    // waits for another Continue.
    let sub = match signed_in_subject(&state, &session, &attempt, q).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(session_id = %session.spec.id, error = %e, "binding sign-in failed");
            return error_page(lang).into_response();
        }
    };
    let expected = session.spec.binding.as_ref().map(|b| b.sub.as_str());
    if expected != Some(sub.as_str()) {
        tracing::warn!(session_id = %session.spec.id, "the person at the link is not the user who asked");
        let result = BindingResult {
            method: BindingMethod::Oidc,
            result: BindingOutcome::Mismatch,
            sub,
        };
        return fail(
            &state,
            &session,
            Some(&result),
            FailureCode::IdentityMismatch,
            "the person who opened the link is not the user who asked",
            now,
            error_page(lang),
        )
        .await;
    }
    provider_attempt(&state, &session, lang, Some(sub)).await
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: String,
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    nonce: Option<String>,
}

/// Exchange the code at the issuer and verify the ID token: RS256 against the issuer's JWKS,
/// `iss`, `aud`, `exp` and this attempt's `nonce`. The verified `sub`.
async fn signed_in_subject(
    state: &AppState,
    session: &Session,
    attempt: &Attempt,
    q: CallbackQuery,
) -> anyhow::Result<String> {
    let code = q
        .into_code()
        .map_err(|e| anyhow!("the issuer answered {e}"))?;
    let issuer = issuer_of(state, &session.spec.bot).await?;
    if session.spec.binding.as_ref().map(|b| &b.iss) != Some(&issuer.issuer) {
        bail!("the bot's identity issuer changed during sign-in");
    }
    let secret = state
        .config
        .encryption
        .open(
            &IdentityIssuer::secret_aad(&session.spec.bot),
            &issuer.client_secret_sealed,
        )
        .map_err(|_| anyhow!("the issuer's client secret cannot be opened"))?;
    let secret = SecretString::from(String::from_utf8_lossy(&secret).into_owned());
    let verifier = state
        .config
        .encryption
        .open(&verifier_aad(attempt), &attempt.verifier)
        .map_err(|_| anyhow!("attempt record cannot be opened"))?;
    let discovery = discover(state, &issuer.issuer).await?;
    let form_encode =
        |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    // client_secret_basic: RFC 6749 §2.3.1 form-encodes both parts before Basic.
    let exchange = state
        .http
        .post(discovery.token_endpoint.clone())
        .basic_auth(
            form_encode(&issuer.client_id),
            Some(form_encode(secret.expose_secret())),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            (
                "redirect_uri",
                redirect_uri(state, &session.spec.bot).as_str(),
            ),
            ("code_verifier", &String::from_utf8_lossy(&verifier)),
        ]);
    let token: TokenResponse =
        fetch_json(state, exchange, "code exchange at the identity issuer").await?;

    let header = jsonwebtoken::decode_header(&token.id_token).context("ID token header")?;
    if header.alg != Algorithm::RS256 {
        bail!("ID token is signed with {:?}, not RS256", header.alg);
    }
    let jwks = jwks(state, &discovery.jwks_uri, header.kid.as_deref()).await?;
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .context("no JWKS key for the ID token")?;
    let key = DecodingKey::from_jwk(jwk).context("JWKS key")?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[&issuer.issuer]);
    v.set_audience(&[&issuer.client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Expiry against the daemon's clock below (time is a parameter).
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<IdClaims>(&token.id_token, &key, &v)
        .context("ID token verification")?
        .claims;
    if state.clock.now().unix_timestamp() >= claims.exp {
        bail!("ID token has expired");
    }
    let expected = attempt.nonce.as_deref().unwrap_or_default();
    if !claims.nonce.as_deref().is_some_and(|n| ct_eq(n, expected)) {
        bail!("ID token nonce does not match the attempt");
    }
    Ok(claims.sub)
}
