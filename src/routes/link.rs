//! ② The link in the chat. `GET` shows an interstitial and changes nothing, so a chat unfurler or
//! a link scanner fetching it has no effect. `POST` (the Continue button) starts an attempt:
//! a fresh PKCE verifier, a signed state, a browser-binding cookie, and a 303 to the provider.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::{Duration, OffsetDateTime};

use super::pages::{Lang, Msg, Page, esc, protect};
use crate::crypto::{b64url, random_token, sha256};
use crate::domain::link::{self, LinkError};
use crate::domain::session::{Attempt, Session, SessionSpec, Status};
use crate::domain::state::StateClaims;
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

fn provider_name(s: &Session) -> String {
    s.spec.provider_name()
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

pub(super) fn unavailable_page(lang: Lang) -> Page {
    Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        Msg::ErrorTitle,
        Msg::ErrorBody,
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
    let bot_name = match state.store.get_bot(&session.spec.bot).await {
        Ok(Some(b)) => b.name.clone(),
        Ok(None) => return invalid_page(Lang::pick(None, &headers)).into_response(),
        Err(_) => return unavailable_page(Lang::pick(None, &headers)).into_response(),
    };
    let lang = Lang::pick(session.spec.locale.as_deref(), &headers);
    let mut page = Page::new(StatusCode::OK, lang, Msg::ConnectTitle, Msg::ConnectBody);
    page.vars = vec![("bot", bot_name), ("provider", provider_name(&session))];
    page.og = true;
    // A relative action: the form posts back to this very link.
    page.extra_html = format!(
        "<form method=\"post\" action=\"{}\"><button type=\"submit\">{}</button></form>\n",
        esc(&token),
        esc(&page.t(Msg::Continue))
    );
    page.into_response()
}

#[utoipa::path(operation_id = "link_start", post, path = "/l/{link}", tag = "browser", summary = "Continue: start a sign-in (PKCE, signed state, binding cookie)", params(("link" = String, Path)), responses((status = 303, description = "303 to the provider"), (status = "4XX", description = "problem+json (RFC 9457)")))]
#[tracing::instrument(name = "start_attempt", skip_all, fields(session_id = tracing::field::Empty, bot = tracing::field::Empty, integration = tracing::field::Empty))]
pub async fn start(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
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
    if session.spec.binding.is_some() {
        // The person proves first who they are at the MCP server's own issuer (SPEC §9); the
        // binding callback goes on to the provider.
        return super::binding::begin(&state, &session, lang).await;
    }
    provider_attempt(&state, &session, lang, None).await
}

/// Start a sign-in at the session's provider. `bound`: the issuer subject that a binding step
/// matched, kept on the attempt for the provider callback's events.
pub(super) async fn provider_attempt(
    state: &AppState,
    session: &Session,
    lang: Lang,
    bound: Option<String>,
) -> Response {
    let spec = &session.spec;
    let provider = match state
        .store
        .get_integration(&spec.bot, &spec.integration)
        .await
    {
        Ok(Some(i)) => crate::flow::provider::provider_for(state, &i).await.ok(),
        Ok(None) => None,
        Err(_) => return unavailable_page(lang).into_response(),
    };
    // The integration must still use the app the session was created for.
    let Some(provider) = provider.filter(|p| p.config_id == spec.provider_config) else {
        return Page::new(StatusCode::CONFLICT, lang, Msg::ErrorTitle, Msg::ErrorBody)
            .into_response();
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
pub(super) fn attempt_deadline(spec: &SessionSpec, now: OffsetDateTime) -> OffsetDateTime {
    (now + ATTEMPT_TTL).min(spec.expires_at)
}

/// Park `attempt` (status → in_progress) and send the browser to `location` with the attempt's
/// binding cookie.
pub(super) async fn launch(
    state: &AppState,
    spec: &SessionSpec,
    lang: Lang,
    attempt: &Attempt,
    binding: &str,
    location: &str,
) -> Response {
    let now = attempt.created_at;
    let until = attempt_deadline(spec, now);
    let result = state
        .store
        .transition(Transition {
            id: spec.id,
            to: Status::InProgress,
            error: None,
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
