//! ② The link in the chat. `GET` shows an interstitial and changes nothing, so a chat unfurler or
//! a link scanner fetching it has no effect. `POST` (the Continue button) starts an attempt:
//! a fresh PKCE verifier, a signed state, a browser-binding cookie, and a 303 to the provider.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::attempt::{
    changed_page, invalid_page, provider_attempt, settled_page, unavailable_page,
};
use super::pages::{Lang, Msg, Page, esc};
use crate::domain::link::{self, LinkError};
use crate::domain::session::{Session, Status};
use crate::flow::AppState;

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
    // A relative action: the form posts back to this very link.
    page.extra_html += &format!(
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
