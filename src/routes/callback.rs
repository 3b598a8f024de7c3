//! ③ The provider sends the person back here. Order matters:
//! 1. verify the state's signature and expiry — a forged or expired state never touches the store;
//! 2. the callback path must be the app the state was issued for (mix-up defence);
//! 3. the browser must present the binding cookie set when it pressed Continue;
//! 4. take the attempt from the store atomically — of two concurrent callbacks exactly one
//!    proceeds to the code exchange;
//! 5. exchange the code (PKCE), check the response, learn the identity, check it if expected;
//! 6. store the grant, set the status and enqueue the event in one atomic store operation.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tracing::Instrument;

use super::attempt::{CallbackQuery, fail, invalid_page, settled_page, truncate, verified_state};
use super::pages::{Lang, Msg, Page, esc};
use crate::domain::event::Event;
use crate::domain::grant::{Grant, GrantStatus};
use crate::domain::identity;
use crate::domain::session::{
    BindingMethod, BindingOutcome, BindingResult, FailureCode, Session, Status,
};
use crate::domain::state::StateClaims;
use crate::flow::AppState;
use crate::oauth::{ExchangeError, Provider, TokenSet};
use crate::store::{SideWrite, Transition, TransitionError};

#[utoipa::path(operation_id = "callback_callback", get, path = "/oauth/callback/{config}", tag = "browser", summary = "The provider's redirect back", params(("config" = String, Path)), responses((status = 200, description = "200: text/html result page"), (status = "4XX", description = "problem+json (RFC 9457)")))]
pub async fn callback(
    State(state): State<AppState>,
    Path(config_id): Path<String>,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let browser = Lang::pick(None, &headers);
    let Ok(Query(q)) = query else {
        return Page::new(
            StatusCode::BAD_REQUEST,
            browser,
            Msg::InvalidTitle,
            Msg::InvalidBody,
        )
        .into_response();
    };
    let now = state.clock.now();
    let claims = match verified_state(&state, q.state.as_deref(), &config_id, &headers, now) {
        Ok(c) => c,
        Err(page) => return page.into_response(),
    };
    let span = tracing::info_span!("callback", session_id = %claims.sub, config = %config_id);
    finish(&state, claims, q, &headers, now)
        .instrument(span)
        .await
}

async fn finish(
    state: &AppState,
    claims: StateClaims,
    q: CallbackQuery,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Response {
    let browser = Lang::pick(None, headers);
    let unavailable = || {
        Page::new(
            StatusCode::SERVICE_UNAVAILABLE,
            browser,
            Msg::ErrorTitle,
            Msg::ErrorBody,
        )
        .into_response()
    };
    // 4. Single use: exactly one callback gets the attempt.
    let attempt = match state.store.take_attempt(claims.sub, &claims.att).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            tracing::warn!(session_id = %claims.sub, "callback for an attempt that was used or expired");
            return invalid_page(browser).into_response();
        }
        Err(_) => return unavailable(),
    };
    let session = match state.store.get_session(claims.sub).await {
        Ok(Some(s)) => s,
        Ok(None) => return invalid_page(browser).into_response(),
        Err(_) => return unavailable(),
    };
    let lang = Lang::pick(session.spec.locale.as_deref(), headers);
    // An attempt of the binding step belongs to the binding callback; a bound session reaches
    // the provider only through a binding step that matched.
    if attempt.nonce.is_some() || (session.spec.binding.is_some() && attempt.bound.is_none()) {
        tracing::warn!(session_id = %claims.sub, "provider callback for an attempt that did not pass the binding step");
        return invalid_page(lang).into_response();
    }
    let binding = attempt.bound.clone().map(|sub| BindingResult {
        method: BindingMethod::Oidc,
        result: BindingOutcome::Matched,
        sub,
    });
    let binding = binding.as_ref();

    if let Some(error) = q.error.as_deref() {
        let (code, page) = if matches!(error, "access_denied" | "access-denied") {
            (
                FailureCode::AccessDenied,
                Page::new(StatusCode::OK, lang, Msg::DeniedTitle, Msg::DeniedBody),
            )
        } else {
            (
                FailureCode::ProviderError,
                Page::new(
                    StatusCode::BAD_GATEWAY,
                    lang,
                    Msg::ErrorTitle,
                    Msg::ErrorBody,
                ),
            )
        };
        let description = q.error_description.as_deref().unwrap_or(error);
        return fail(
            state,
            &session,
            binding,
            code,
            &truncate(description),
            now,
            page,
        )
        .await;
    }
    let Some(code) = q.code else {
        let page = Page::new(
            StatusCode::BAD_GATEWAY,
            lang,
            Msg::ErrorTitle,
            Msg::ErrorBody,
        );
        return fail(
            state,
            &session,
            binding,
            FailureCode::ProviderError,
            "callback without code",
            now,
            page,
        )
        .await;
    };
    let provider = match state
        .store
        .get_integration(&session.spec.bot, &session.spec.integration)
        .await
    {
        Ok(Some(i)) => crate::flow::provider::provider_for(state, &i)
            .await
            .ok()
            .filter(|p| p.config_id == claims.cfg),
        Ok(None) => None,
        Err(_) => return unavailable(),
    };
    let error_page = Page::new(
        StatusCode::BAD_GATEWAY,
        lang,
        Msg::ErrorTitle,
        Msg::ErrorBody,
    );
    let Some(provider) = provider else {
        return fail(
            state,
            &session,
            binding,
            FailureCode::StateInvalid,
            "the integration changed its app during sign-in",
            now,
            error_page,
        )
        .await;
    };
    let aad = format!("attempt|{}|{}", session.spec.id, attempt.id);
    let Ok(verifier) = state.config.encryption.open(&aad, &attempt.verifier) else {
        return fail(
            state,
            &session,
            binding,
            FailureCode::StateInvalid,
            "attempt record cannot be opened",
            now,
            error_page,
        )
        .await;
    };
    let verifier = String::from_utf8_lossy(&verifier).into_owned().into();

    // 5. Exchange and check.
    let started = std::time::Instant::now();
    let set = match provider.exchange(&state.http, code, verifier, now).await {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(session_id = %session.spec.id, error = %e, "code exchange failed");
            let code = match e {
                ExchangeError::Rejected { .. } => FailureCode::ExchangeFailed,
                ExchangeError::Unavailable(_) | ExchangeError::Untrusted(_) => {
                    FailureCode::ProviderError
                }
            };
            return fail(
                state,
                &session,
                binding,
                code,
                &truncate(&e.to_string()),
                now,
                error_page,
            )
            .await;
        }
    };
    tracing::info!(session_id = %session.spec.id, elapsed_ms = started.elapsed().as_millis() as u64, "code exchanged");
    if let Some(expected) = &session.spec.expected_identity
        && !identity::matches(expected, &set.identity)
    {
        revoke_all(state, &provider, &set).await;
        tracing::warn!(session_id = %session.spec.id, "signed-in identity does not match the expected one");
        return fail(
            state,
            &session,
            binding,
            FailureCode::IdentityMismatch,
            "the account that signed in is not the expected one",
            now,
            error_page,
        )
        .await;
    }

    // 6. Grant + status + event, atomically.
    let spec = &session.spec;
    let mut grant = Grant {
        bot: spec.bot.clone(),
        integration: spec.integration.clone(),
        subject: spec.subject.clone(),
        provider_config: provider.config_id.clone(),
        status: GrantStatus::Active,
        identity: set.identity.clone(),
        scopes: if set.scopes.is_empty() {
            requested_scopes(&provider, &session)
        } else {
            set.scopes.clone()
        },
        instance_url: set.instance_url.clone(),
        access_expires_at: set.access_expires_at,
        access_issued_at: Some(now),
        created_at: now,
        refreshed_at: None,
        last_error: None,
        refresh_at: None,
        refresh_failures: 0,
        pending_code: None,
        generation: 1,
        sealed_tokens: set.tokens.seal(
            &state.config.encryption,
            &Grant::aad(&spec.bot, &spec.integration, &spec.subject),
        ),
    };
    grant.schedule_refresh(set.tokens.refresh_token.is_some(), &state.config.refresh);
    // `verification: code`: the grant waits, unusable, for the code the person reads here and
    // types into the conversation.
    let verification_code =
        (spec.verification == crate::domain::session::Verification::Code).then(|| {
            use rand::Rng;
            format!("{:06}", rand::thread_rng().gen_range(0..1_000_000))
        });
    if let Some(code) = &verification_code {
        grant.status = GrantStatus::AwaitingCode;
        grant.refresh_at = None;
        grant.pending_code = Some(crate::domain::grant::PendingCode {
            hash: crate::domain::grant::PendingCode::hash(&spec.id.to_string(), code),
            failures: 0,
        });
    }
    let target = if verification_code.is_some() {
        Status::AwaitingCode
    } else {
        Status::Completed
    };
    // A grant this one replaces: its refresh token is revoked once the new grant is stored, so
    // tokens do not pile up at the provider (Salesforce caps refresh tokens per user and app).
    let replaced = state
        .store
        .get_grant(&spec.bot, &spec.integration, &spec.subject)
        .await
        .ok()
        .flatten();
    let mut completed = session.clone();
    completed.status = target;
    completed.error = None;
    completed.binding = binding.cloned();
    let event = Event::for_session(&completed, Some(&grant.identity), now);
    let channel_event = Event::channel_update(&completed, now);
    let result = state
        .store
        .transition(Transition {
            id: spec.id,
            to: target,
            error: None,
            binding,
            write: SideWrite::Grant(&grant),
            event: Some(&event),
            channel_event: channel_event.as_ref(),
            now,
        })
        .await;
    match result {
        Ok(_) => {
            tracing::info!(session_id = %spec.id, bot = %spec.bot, integration = %spec.integration, "auth session completed");
            if let Some(old) = replaced {
                revoke_replaced(state, &provider, &old, &set).await;
            }
            success_page(
                lang,
                &session,
                &grant.identity,
                verification_code.as_deref(),
            )
            .into_response()
        }
        Err(e) => {
            // Cancelled or expired while the person was at the provider: nothing is stored, and
            // the fresh tokens are not left alive at the provider either.
            revoke_all(state, &provider, &set).await;
            match e {
                TransitionError::Conflict(s) => settled_page(s, lang).into_response(),
                TransitionError::Expired => settled_page(Status::Expired, lang).into_response(),
                TransitionError::NotFound => invalid_page(lang).into_response(),
                TransitionError::Store(_) => unavailable(),
            }
        }
    }
}

/// Best-effort revocation of tokens we will not keep.
async fn revoke_all(state: &AppState, provider: &Provider, set: &TokenSet) {
    let result = match &set.tokens.refresh_token {
        Some(rt) => provider.revoke(&state.http, rt, true).await,
        None => {
            provider
                .revoke(&state.http, &set.tokens.access_token, false)
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not revoke discarded tokens");
    }
}

/// Revoke the refresh token of a grant that a new authorization replaced (unless the provider
/// handed out the same one again).
async fn revoke_replaced(state: &AppState, provider: &Provider, old: &Grant, new: &TokenSet) {
    let aad = Grant::aad(&old.bot, &old.integration, &old.subject);
    let Ok(tokens) =
        crate::domain::grant::Tokens::open(&state.config.encryption, &aad, &old.sealed_tokens)
    else {
        return;
    };
    let Some(old_rt) = tokens.refresh_token else {
        return;
    };
    let same = new.tokens.refresh_token.as_ref().is_some_and(|rt| {
        crate::crypto::ct_eq(
            secrecy::ExposeSecret::expose_secret(rt),
            secrecy::ExposeSecret::expose_secret(&old_rt),
        )
    });
    if !same && let Err(e) = provider.revoke(&state.http, &old_rt, true).await {
        tracing::warn!(error = %e, "could not revoke the replaced grant's refresh token");
    }
}

fn requested_scopes(provider: &Provider, session: &Session) -> Vec<String> {
    if session.spec.scopes.is_empty() {
        provider.app.scopes.clone()
    } else {
        session.spec.scopes.clone()
    }
}

/// What was connected and as whom (or, with `verification: code`, the code to type).
fn success_page(
    lang: Lang,
    session: &Session,
    identity: &crate::domain::grant::Identity,
    code: Option<&str>,
) -> Page {
    let mut page = match code {
        Some(_) => Page::new(StatusCode::OK, lang, Msg::CodeTitle, Msg::CodeBody),
        None => Page::new(StatusCode::OK, lang, Msg::SuccessTitle, Msg::SuccessBody),
    };
    page.vars.push(("provider", session.spec.provider_name()));
    if let Some(code) = code {
        page.extra_html.push_str(&format!(
            "<p class=\"code\" aria-label=\"verification code\"><strong>{}</strong></p>\n",
            esc(code)
        ));
    } else if let Some(who) = identity.shown() {
        page.vars.push(("who", who.to_owned()));
        page.extra_html += &format!("<p>{}</p>\n", esc(&page.t(Msg::SuccessAs)));
    }
    if let Some(url) = &session.spec.return_url {
        page.extra_html += &format!(
            "<p><a class=\"button\" href=\"{}\" rel=\"noreferrer\">{}</a></p>\n",
            esc(url.as_str()),
            esc(&page.t(Msg::BackToConversation))
        );
    }
    page
}
