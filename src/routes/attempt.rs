//! An attempt, from both ends: what Continue starts (the signed state, the PKCE verifier sealed
//! on the parked attempt, the per-attempt browser-binding cookie, the 303) and what a callback
//! checks before anything else (the state's signature, expiry and target, the cookie), the pages
//! for links that can no longer be used, and failing a session with its event. Shared by the
//! link page, the provider callback and the identity-binding step.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use super::pages::{Lang, Msg, Page, protect};
use crate::crypto::{b64url, ct_eq, random_token, sha256};
use crate::domain::event::Event;
use crate::domain::session::{
    Attempt, BindingMethod, BindingOutcome, BindingResult, FailureCode, Session, SessionError,
    SessionSpec, Status,
};
use crate::domain::state::{StateClaims, StateError};
use crate::flow::AppState;
use crate::store::{SideWrite, Transition, TransitionError};

/// How long one attempt (sign-in at the provider) may take, at most.
const ATTEMPT_TTL: Duration = Duration::minutes(10);

/// The binding cookie's name: per attempt, so two sign-ins in one browser do not collide.
/// `__Host-` (Secure, no Domain, Path=/) whenever the daemon is served over https.
pub fn cookie_name(https: bool, attempt: &str) -> String {
    let short = &attempt[..attempt.len().min(12)];
    if https {
        format!("__Host-authlink-{short}")
    } else {
        format!("authlink-{short}")
    }
}

/// The page for a session that can no longer be started.
pub fn settled_page(status: Status, lang: Lang) -> Page {
    match status {
        Status::Completed | Status::AwaitingCode => {
            Page::new(StatusCode::OK, lang, Msg::AlreadyTitle, Msg::AlreadyBody)
        }
        Status::Expired => Page::new(StatusCode::GONE, lang, Msg::ExpiredTitle, Msg::ExpiredBody),
        Status::Failed => Page::new(StatusCode::GONE, lang, Msg::ErrorTitle, Msg::ErrorBody),
        _ => Page::new(StatusCode::GONE, lang, Msg::InvalidTitle, Msg::InvalidBody),
    }
}

pub fn invalid_page(lang: Lang) -> Page {
    Page::new(
        StatusCode::NOT_FOUND,
        lang,
        Msg::InvalidTitle,
        Msg::InvalidBody,
    )
}

/// The page for a session whose integration no longer uses the app it was created for.
pub fn changed_page(lang: Lang) -> Page {
    Page::new(StatusCode::CONFLICT, lang, Msg::ErrorTitle, Msg::ErrorBody)
}

pub fn unavailable_page(lang: Lang) -> Page {
    Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        Msg::ErrorTitle,
        Msg::ErrorBody,
    )
}

/// Start a sign-in at the session's provider. `bound`: the issuer subject that a binding step
/// matched, kept on the attempt for the provider callback's events.
pub async fn provider_attempt(
    state: &AppState,
    session: &Session,
    lang: Lang,
    bound: Option<String>,
) -> Response {
    let spec = &session.spec;
    let provider = match crate::flow::provider::session_provider(state, spec).await {
        Ok(Some(p)) => p,
        Ok(None) => return changed_page(lang).into_response(),
        Err(_) => return unavailable_page(lang).into_response(),
    };
    let now = state.clock.now();
    let attempt_id = random_token::<16>();
    let binding = random_token::<32>();
    let until = attempt_deadline(spec, now);
    let claims = StateClaims::new(
        spec.id,
        attempt_id.clone(),
        provider.config_id.clone(),
        b64url(&sha256(binding.as_bytes())),
        now,
        until,
    );
    let (authorize_url, verifier) = provider.authorize_url(
        claims.encode(&state.config.signing),
        &spec.scopes,
        spec.login_hint.as_deref(),
    );
    let attempt = Attempt {
        id: attempt_id.clone(),
        session: spec.id,
        verifier: state.config.encryption.seal(
            &format!("attempt|{}|{attempt_id}", spec.id),
            secrecy::ExposeSecret::expose_secret(&verifier).as_bytes(),
        ),
        nonce: None,
        bound,
        created_at: now,
    };
    launch(
        state,
        spec,
        lang,
        &attempt,
        &binding,
        authorize_url.as_str(),
    )
    .await
}

/// When an attempt started now runs out.
pub fn attempt_deadline(spec: &SessionSpec, now: OffsetDateTime) -> OffsetDateTime {
    (now + ATTEMPT_TTL).min(spec.expires_at)
}

/// Park `attempt` (status → in_progress) and send the browser to `location` with the attempt's
/// binding cookie.
pub async fn launch(
    state: &AppState,
    spec: &SessionSpec,
    lang: Lang,
    attempt: &Attempt,
    binding: &str,
    location: &str,
) -> Response {
    let now = attempt.created_at;
    let until = attempt_deadline(spec, now);
    // A provider attempt of a bound session: the binding step matched.
    let bound = attempt.bound.clone().map(|sub| BindingResult {
        method: BindingMethod::Oidc,
        result: BindingOutcome::Matched,
        sub,
    });
    let result = state
        .store
        .transition(Transition {
            id: spec.id,
            to: Status::InProgress,
            error: None,
            binding: bound.as_ref(),
            write: SideWrite::Attempt(attempt, until),
            event: None,
            channel_event: None,
            now,
        })
        .await;
    match result {
        Ok(_) => {}
        Err(TransitionError::Conflict(s)) => return settled_page(s, lang).into_response(),
        Err(TransitionError::Expired) => {
            return settled_page(Status::Expired, lang).into_response();
        }
        Err(TransitionError::NotFound) => return invalid_page(lang).into_response(),
        Err(TransitionError::Store(_)) => return unavailable_page(lang).into_response(),
    }
    tracing::info!(session_id = %spec.id, bot = %spec.bot, integration = %spec.integration, binding_step = attempt.nonce.is_some(), "attempt started");

    let https = state.config.is_https();
    let max_age = (until - now).whole_seconds().max(1);
    let cookie = format!(
        "{}={binding}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        cookie_name(https, &attempt.id),
        if https { "; Secure" } else { "" }
    );
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    protect(h);
    if let (Ok(loc), Ok(c)) = (
        HeaderValue::from_str(location),
        HeaderValue::from_str(&cookie),
    ) {
        h.insert(header::LOCATION, loc);
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl CallbackQuery {
    pub fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The code, or the error the other side answered with instead.
    pub fn into_code(self) -> Result<String, String> {
        match (self.code, self.error) {
            (_, Some(e)) => Err(truncate(self.error_description.as_deref().unwrap_or(&e))),
            (Some(code), None) => Ok(code),
            (None, None) => Err("no code".into()),
        }
    }
}

/// Steps 1–3, before any store access: the state's signature and expiry, the callback it was
/// issued for (`cfg`), and the browser's binding cookie.
pub fn verified_state(
    state: &AppState,
    token: Option<&str>,
    cfg: &str,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<StateClaims, Page> {
    let browser = Lang::pick(None, headers);
    let invalid = || {
        Page::new(
            StatusCode::BAD_REQUEST,
            browser,
            Msg::InvalidTitle,
            Msg::InvalidBody,
        )
    };
    // 1. Signature and expiry, no store access.
    let claims = match token.map(|s| StateClaims::decode(&state.config.signing, s, now)) {
        Some(Ok(c)) => c,
        Some(Err(StateError::Expired)) => {
            return Err(Page::new(
                StatusCode::GONE,
                browser,
                Msg::ExpiredTitle,
                Msg::ExpiredBody,
            ));
        }
        Some(Err(StateError::Invalid)) | None => {
            tracing::warn!("callback with a missing or forged state");
            return Err(invalid());
        }
    };
    // 2. Mix-up defence.
    if claims.cfg != cfg {
        tracing::warn!(session_id = %claims.sub, "state presented on another callback");
        return Err(invalid());
    }
    // 3. Browser binding.
    let cookie = read_cookie(headers, &cookie_name(state.config.is_https(), &claims.att));
    if !cookie.is_some_and(|c| ct_eq(&b64url(&sha256(c.as_bytes())), &claims.bnd)) {
        tracing::warn!(session_id = %claims.sub, "callback without the binding cookie");
        return Err(Page::new(
            StatusCode::FORBIDDEN,
            browser,
            Msg::BrowserTitle,
            Msg::BrowserBody,
        ));
    }
    Ok(claims)
}

pub fn truncate(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Fail `session` with `code` (its event, reporting `binding` if the session was bound, written
/// in the same step) and show `page`.
pub async fn fail(
    state: &AppState,
    session: &Session,
    binding: Option<&BindingResult>,
    code: FailureCode,
    description: &str,
    now: OffsetDateTime,
    page: Page,
) -> Response {
    let error = SessionError {
        code,
        description: description.to_owned(),
    };
    let mut failed = session.clone();
    failed.status = Status::Failed;
    failed.error = Some(error.clone());
    failed.binding = binding.cloned();
    let event = Event::for_session(&failed, None, now);
    let channel_event = Event::channel_update(&failed, now);
    let result = state
        .store
        .transition(Transition {
            id: session.spec.id,
            to: Status::Failed,
            error: Some(&error),
            binding,
            write: SideWrite::None,
            event: Some(&event),
            channel_event: channel_event.as_ref(),
            now,
        })
        .await;
    match result {
        Ok(_) => {
            tracing::info!(session_id = %session.spec.id, code = code.as_str(), "auth session failed");
            page.into_response()
        }
        Err(TransitionError::Conflict(s)) => settled_page(s, page.lang).into_response(),
        Err(TransitionError::Expired) => settled_page(Status::Expired, page.lang).into_response(),
        Err(_) => page.into_response(),
    }
}

pub(crate) fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
