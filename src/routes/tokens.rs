//! ⑤ Tokens for the dialog engine: a working access token (refreshed exactly once across
//! replicas when needed), the connection's metadata (never tokens), and disconnect.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::sessions::bot_and_integration;
use crate::domain::bot::{Integration, Mode};
use crate::domain::event::Event;
use crate::domain::grant::{Grant, Tokens};
use crate::domain::{IntegrationName, Subject, UserId};
use crate::error::ApiError;
use crate::flow::AppState;
use crate::oauth::Provider;
use crate::refresh::{self, TokenError};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    user_id: Option<UserId>,
    #[serde(default)]
    force_refresh: bool,
}

/// Whose grant an integration uses: the user's, or the bot-wide one when pre-authorized. A user
/// integration never falls back to the bot grant and vice versa.
fn subject(integration: &Integration, user: Option<UserId>) -> Result<Subject, ApiError> {
    match integration.mode {
        Mode::PreAuthorized => Ok(Subject::Bot),
        Mode::User => user
            .map(Subject::User)
            .ok_or_else(|| ApiError::Invalid("user_id is required".into())),
    }
}

fn integration_name(s: &str) -> Result<IntegrationName, ApiError> {
    IntegrationName::parse(s).map_err(|_| ApiError::NotFound("integration"))
}

/// The grant of `subject`, usable with the integration's current app, or 404.
/// A connection's path, `/bots/{bot}/integrations/{integration}/connections/{user}`, resolved for
/// `caller`: another bot's path, an unknown integration or a malformed user are all 404.
async fn connection_path(
    state: &AppState,
    caller: &Caller,
    (bot, integration, user): &(String, String, String),
) -> Result<
    (
        std::sync::Arc<crate::domain::bot::Bot>,
        std::sync::Arc<Integration>,
        Subject,
    ),
    ApiError,
> {
    let (bot, integration) =
        bot_and_integration(state, caller, bot, &integration_name(integration)?).await?;
    let subject = Subject::parse(user).map_err(|_| ApiError::NotFound("connection"))?;
    Ok((bot, integration, subject))
}

/// The stored grant of a connection, or 404.
async fn stored_grant(
    state: &AppState,
    integration: &Integration,
    subject: &Subject,
) -> Result<Grant, ApiError> {
    state
        .store
        .get_grant(&integration.bot, &integration.name, subject)
        .await?
        .ok_or(ApiError::NotFound("connection"))
}

async fn working_grant(
    state: &AppState,
    integration: &Integration,
    subject: &Subject,
) -> Result<(Provider, Grant), ApiError> {
    let provider = crate::flow::provider::provider_for(state, integration).await?;
    let grant = state
        .store
        .get_grant(&integration.bot, &integration.name, subject)
        .await?
        .filter(|g| g.is_working(&provider.config_id))
        .ok_or(ApiError::AuthorizationRequired)?;
    Ok((provider, grant))
}

#[utoipa::path(operation_id = "tokens_access_token", post, path = "/v1/bots/{bot}/integrations/{integration}/access-token", tag = "tokens", summary = "A working access token (refreshed exactly once when needed)", params(("bot" = String, Path), ("integration" = String, Path)), request_body = TokenBody, responses((status = 200, description = "200: the token"), (status = "4XX", description = "problem+json (RFC 9457)")), security(("bearer" = [])))]
#[tracing::instrument(name = "access_token", skip_all, fields(bot = %bot, integration = %integration))]
pub async fn access_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, integration)): Path<(String, String)>,
    body: super::JsonBody,
) -> Result<Response, ApiError> {
    let (_, integration) =
        bot_and_integration(&state, &caller, &bot, &integration_name(&integration)?).await?;
    let body: TokenBody = body.parse()?;
    let subject = subject(&integration, body.user_id)?;
    let (provider, grant) = working_grant(&state, &integration, &subject).await?;
    match refresh::access_token(&state, &provider, grant, body.force_refresh).await {
        Ok((grant, tokens)) => Ok(token_response(&grant, &tokens)),
        Err(TokenError::AuthorizationRequired) => Err(ApiError::AuthorizationRequired),
        Err(TokenError::Store(e)) => Err(e.into()),
        Err(TokenError::Unavailable { cause, retry_after }) => {
            let mut resp = ApiError::ProviderUnavailable(cause).into_response();
            // Whole seconds, rounded up: asking again earlier would only be refused again.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            Ok(resp)
        }
    }
}

fn token_response(grant: &Grant, tokens: &Tokens) -> Response {
    let mut resp = Json(json!({
        "access_token": refresh::expose(tokens),
        "token_type": tokens.token_type,
        "expires_at": grant.access_expires_at.map(crate::clock::rfc3339::format),
        "instance_url": grant.instance_url,
        "scopes": grant.scopes,
        "identity": grant.identity,
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[utoipa::path(operation_id = "tokens_connection", get, path = "/v1/bots/{bot}/integrations/{integration}/connections/{user}", tag = "tokens", summary = "Connection metadata, never tokens", params(("bot" = String, Path), ("integration" = String, Path), ("user" = String, Path)), responses((status = 200, description = "200: the connection"), (status = "4XX", description = "problem+json (RFC 9457)")), security(("bearer" = [])))]
pub async fn connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, integration, subject) = connection_path(&state, &caller, &path).await?;
    let grant = stored_grant(&state, &integration, &subject).await?;
    Ok(Json(json!({
        "user_id": grant.subject,
        "status": grant.status,
        "identity": grant.identity,
        "scopes": grant.scopes,
        "instance_url": grant.instance_url,
        "created_at": crate::clock::rfc3339::format(grant.created_at),
        "refreshed_at": grant.refreshed_at.map(crate::clock::rfc3339::format),
        "access_expires_at": grant.access_expires_at.map(crate::clock::rfc3339::format),
        "last_error": grant.last_error,
    })))
}

#[utoipa::path(operation_id = "tokens_disconnect", delete, path = "/v1/bots/{bot}/integrations/{integration}/connections/{user}", tag = "tokens", summary = "Disconnect: revoke at the provider and delete", params(("bot" = String, Path), ("integration" = String, Path), ("user" = String, Path)), responses((status = 200, description = "200: revoked"), (status = "4XX", description = "problem+json (RFC 9457)")), security(("bearer" = [])))]
/// Disconnect: revoke at the provider (best effort — a provider that fails to revoke does not
/// keep the grant alive here), delete the grant, emit `connection.revoked`.
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (bot, integration, subject) = connection_path(&state, &caller, &path).await?;
    let grant = stored_grant(&state, &integration, &subject).await?;
    let aad = Grant::aad(&grant.bot, &grant.integration, &grant.subject);
    let mut revoked = false;
    if let (Ok(provider), Ok(tokens)) = (
        crate::flow::provider::provider_for(&state, &integration).await,
        Tokens::open(&state.config.encryption, &aad, &grant.sealed_tokens),
    ) {
        let result = match &tokens.refresh_token {
            Some(rt) => provider.revoke(&state.http, rt, true).await,
            None => {
                provider
                    .revoke(&state.http, &tokens.access_token, false)
                    .await
            }
        };
        match result {
            Ok(r) => revoked = r,
            Err(e) => {
                tracing::warn!(error = %e, "revocation at the provider failed; deleting the grant anyway")
            }
        }
    }
    let event = Event::for_connection(
        &grant,
        "connection.revoked",
        None,
        bot.webhook_url.clone(),
        state.clock.now(),
    );
    state
        .store
        .delete_grant(&grant.bot, &grant.integration, &grant.subject, Some(&event))
        .await?;
    Ok(Json(
        json!({"user_id": grant.subject, "status": "revoked", "revoked_at_provider": revoked}),
    ))
}

#[utoipa::path(operation_id = "tokens_check", post, path = "/v1/bots/{bot}/integrations/{integration}/connections/{user}/check", tag = "tokens", summary = "Live identity call with the stored token", params(("bot" = String, Path), ("integration" = String, Path), ("user" = String, Path)), responses((status = 200, description = "200: the result"), (status = "4XX", description = "problem+json (RFC 9457)")), security(("bearer" = [])))]
/// The "Test" button: get a working token (refreshing if needed) and make a live identity call.
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, integration, subject) = connection_path(&state, &caller, &path).await?;
    let (provider, grant) = working_grant(&state, &integration, &subject).await?;
    let (_, tokens) = match refresh::access_token(&state, &provider, grant, false).await {
        Ok(t) => t,
        Err(TokenError::AuthorizationRequired) => return Err(ApiError::AuthorizationRequired),
        Err(TokenError::Store(e)) => return Err(e.into()),
        Err(TokenError::Unavailable { cause, .. }) => {
            return Err(ApiError::ProviderUnavailable(cause));
        }
    };
    let checked_at = crate::clock::rfc3339::format(state.clock.now());
    match provider.check(&state.http, &tokens.access_token).await {
        None => Err(ApiError::Conflict(
            "the app has no identity (userinfo) endpoint to test with".into(),
        )),
        Some(Ok(identity)) => Ok(Json(
            json!({"ok": true, "identity": identity, "checked_at": checked_at}),
        )),
        Some(Err(e)) => Ok(Json(
            json!({"ok": false, "error": e.to_string(), "checked_at": checked_at}),
        )),
    }
}
