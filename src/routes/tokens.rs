//! ⑤ Tokens for the dialog engine: a working access token (refreshed exactly once across
//! replicas when needed), the connection's metadata (never tokens), and disconnect.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::paging::PageQuery;
use super::sessions::bot_and_integration;
use crate::domain::bot::{Bot, Integration, Mode};
use crate::domain::event::Event;
use crate::domain::grant::{Grant, Tokens};
use crate::domain::request_state::RequestState;
use crate::domain::session::{OidcSubject, Session, Status};
use crate::domain::{IntegrationName, SessionId, Subject, UserId};
use crate::error::ApiError;
use crate::flow::AppState;
use crate::flow::agent::McpClient;
use crate::refresh::{self, TokenError};
use crate::store::CreateOutcome;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    user_id: Option<UserId>,
    #[serde(default)]
    force_refresh: bool,
    /// Without a usable grant, answer with a pending session for this user (reused while it
    /// is pending) and the MCP payloads to return: the session fields of a create request
    /// (`scopes`, `locale`, `channel`, `ttl_seconds`, …) and `mcp: {protocol_version,
    /// capabilities?}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    authorize: Option<serde_json::Map<String, serde_json::Value>>,
    /// An MCP 2026-07-28 retry: the `requestState` of the `input_required` result, as sent back.
    #[serde(default)]
    request_state: Option<String>,
    /// An MCP 2025-11-25 retry: the session (= `elicitationId`) the client was asked about.
    #[serde(default)]
    session_id: Option<String>,
    /// With a retry: hold up to this many seconds (≤ 50, and at most the deployment's
    /// `sessions.max_wait_seconds`) for the person to finish.
    #[serde(default, deserialize_with = "super::contract::integer::option_u32")]
    #[schema(minimum = 0, maximum = 50)]
    wait: Option<u32>,
    /// The caller's digest of the tool call; a `request_state` only serves the same call.
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, max_length = 256)]
    tool_call: Option<String>,
    /// What the MCP client answered the elicitation: `decline` or `cancel` cancel the session.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    input_response: Option<InputResponse>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputResponse {
    action: ElicitAction,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ElicitAction {
    Accept,
    Decline,
    Cancel,
}

/// Below the MCP clients' 60 s request timeout.
const MAX_AGENT_WAIT: u32 = 50;

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

/// The grant of `subject` that the integration's app issued, if it is active; a missing app is
/// a 409 (checked before the grant, which a misconfigured integration could never use).
async fn working_grant(
    state: &AppState,
    integration: &Integration,
    subject: &Subject,
) -> Result<std::sync::Arc<Grant>, ApiError> {
    let app = crate::flow::provider::app_id(state, integration).await?;
    state
        .store
        .get_grant_shared(&integration.bot, &integration.name, subject)
        .await?
        .filter(|g| g.is_working(&app))
        .ok_or(ApiError::AuthorizationRequired)
}

/// A token error as the API answers it (the 503 carries the `Retry-After` of the backoff).
fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::AuthorizationRequired => ApiError::AuthorizationRequired,
        TokenError::Misconfigured(why) => ApiError::Conflict(why),
        TokenError::Store(e) => e.into(),
        TokenError::Unavailable { cause, .. } => ApiError::ProviderUnavailable(cause),
    }
}

#[utoipa::path(operation_id = "tokens_access_token", post, path = "/v1/bots/{bot}/integrations/{integration}/access-token", tag = "tokens", summary = "A working access token (refreshed exactly once when needed)", params(super::contract::IntegrationPath), request_body = TokenBody, responses((status = 200, description = "the token"), (status = 404, description = "no such bot or integration; or authorization_required (with session and mcp members for agents)"), (status = 409, description = "disabled integration, its app is missing, or the user has just connected"), (status = 410, description = "the retried session ended (with session and mcp members)"), (status = 400, description = "malformed JSON, or wait over 50"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
#[tracing::instrument(name = "access_token", skip_all, fields(bot = bot.as_str(), integration = integration.as_str()))]
pub async fn access_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, integration)): Path<(String, String)>,
    body: super::JsonBody,
) -> Result<Response, ApiError> {
    // The steps around an agent's wait are boxed: while a retry waits (up to 50 s, thousands
    // at once) this future holds the checked request and a session id, not the token path's
    // state.
    let (request, retry) = Box::pin(checked(&state, &caller, &bot, &integration, body)).await?;
    let retried = match retry {
        Retry::None => None,
        Retry::Settled(session) => Some(session),
        Retry::Wait(id, wait) => {
            let slot = super::sessions::wait_slot(&state, &caller, &bot)?;
            let session = super::sessions::wait_until_settled(&state, id, wait).await?;
            drop(slot);
            Some(session)
        }
    };
    Box::pin(answer(&state, &caller, request, retried)).await
}

/// A token request, parsed and checked: what its answer needs.
struct TokenRequest {
    bot: std::sync::Arc<Bot>,
    integration: std::sync::Arc<Integration>,
    body: TokenBody,
    tool_call: String,
    subject: Subject,
}

/// An agent's retry: none, its session as it stands, or a wait for it to settle. (The session
/// is boxed: this value is held beside a parked wait.)
enum Retry {
    None,
    Settled(Box<Session>),
    Wait(SessionId, std::time::Duration),
}

/// Check the caller, the integration and the body; for an agent's retry, the session it is
/// about (cancelled first when the person declined).
async fn checked(
    state: &AppState,
    caller: &Caller,
    bot: &str,
    integration: &str,
    body: super::JsonBody,
) -> Result<(TokenRequest, Retry), ApiError> {
    let (bot_record, integration) =
        bot_and_integration(state, caller, bot, &integration_name(integration)?).await?;
    super::sessions::in_service(&integration)?;
    let parsed: TokenBody = body.parse()?;
    // The raw bytes share the connection's read buffer: not kept while the request waits.
    drop(body);
    let body = parsed;
    if body.wait.is_some_and(|w| w > MAX_AGENT_WAIT) {
        return Err(ApiError::BadRequest(format!(
            "wait must be at most {MAX_AGENT_WAIT} seconds (below MCP clients' 60 s timeout)"
        )));
    }
    let tool_call = body.tool_call.clone().unwrap_or_default();
    if tool_call.chars().count() > 256 || tool_call.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "tool_call must be at most 256 characters".into(),
        ));
    }
    let subject = subject(&integration, body.user_id.clone())?;
    // An agent's retry: the session it is about, once the person finished (or `wait` passed).
    let retry = match retried_session(state, &integration, &subject, &body, &tool_call).await? {
        None => Retry::None,
        Some(session) => {
            let now = state.clock.now();
            match body.input_response.as_ref().map(|r| r.action) {
                Some(ElicitAction::Decline | ElicitAction::Cancel)
                    if !session.status_at(now).is_final() =>
                {
                    let cancelled =
                        Box::pin(super::sessions::cancel_session(state, session, now)).await?;
                    Retry::Settled(Box::new(cancelled))
                }
                // Held no longer than the deployment's long-poll limit, which the request
                // deadline is sized for (a longer hold would be cut off as a 503).
                _ => {
                    let wait = std::time::Duration::from_secs(body.wait.unwrap_or(0).into())
                        .min(state.config.max_wait);
                    let session = super::sessions::settle_expiry(state, session, now).await?;
                    if super::sessions::worth_waiting(state, &session, now, wait) {
                        Retry::Wait(session.spec.id, wait)
                    } else {
                        Retry::Settled(Box::new(session))
                    }
                }
            }
        }
    };
    let request = TokenRequest {
        bot: bot_record,
        integration,
        body,
        tool_call,
        subject,
    };
    Ok((request, retry))
}

/// The answer: a retried session that ended, a working token, or (for agents) the offer of a
/// session to sign in with.
async fn answer(
    state: &AppState,
    caller: &Caller,
    request: TokenRequest,
    retried: Option<Box<Session>>,
) -> Result<Response, ApiError> {
    let TokenRequest {
        bot: bot_record,
        integration,
        body,
        tool_call,
        subject,
    } = request;
    if let Some(session) = &retried {
        let status = session.status_at(state.clock.now());
        if let Some(end) = crate::flow::agent::terminal(session, status) {
            return Ok(ended(session, status, end));
        }
    }
    let agent = body.authorize.is_some() || retried.is_some();
    let working = match working_grant(state, &integration, &subject).await {
        Err(ApiError::AuthorizationRequired) if agent => {
            let user = body
                .user_id
                .ok_or_else(|| ApiError::Invalid("user_id is required".into()))?;
            let fields = body.authorize.unwrap_or_default();
            // Boxed: the plain token request, by far the most common, carries none of its state.
            return Box::pin(offer(
                state,
                caller,
                &bot_record,
                &integration,
                (&subject, user),
                fields,
                retried.map(|s| *s),
                &tool_call,
            ))
            .await;
        }
        other => other?,
    };
    match refresh::access_token(state, &integration, working, body.force_refresh).await {
        Ok((grant, tokens)) => Ok(token_response(&grant, &tokens)),
        Err(TokenError::Unavailable { cause, retry_after }) => {
            let mut resp = ApiError::ProviderUnavailable(cause).into_response();
            // Whole seconds, rounded up: asking again earlier would only be refused again.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            Ok(resp)
        }
        Err(e) => Err(token_error(e)),
    }
}

/// The session a retry names — by its sealed `request_state` (2026-07-28) or its id (2025-11-25)
/// — if it belongs to this bot, integration and user; a forged, expired or foreign state is
/// refused and changes nothing.
async fn retried_session(
    state: &AppState,
    integration: &Integration,
    subject: &Subject,
    body: &TokenBody,
    tool_call: &str,
) -> Result<Option<Session>, ApiError> {
    let id = match (&body.request_state, &body.session_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Invalid(
                "request_state and session_id are alternatives: send one".into(),
            ));
        }
        (Some(token), None) => {
            let rs = RequestState::open(
                &state.config.encryption,
                token,
                &integration.bot,
                &integration.name,
                subject,
                tool_call,
                state.clock.now(),
            )
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
            rs.session
        }
        (None, Some(id)) => SessionId::parse(id).map_err(|_| ApiError::NotFound("auth session"))?,
        (None, None) => return Ok(None),
    };
    match state.store.get_session(id).await? {
        Some(s)
            if s.spec.bot == integration.bot
                && s.spec.integration == integration.name
                && &s.spec.subject == subject =>
        {
            Ok(Some(s))
        }
        _ => Err(ApiError::NotFound("auth session")),
    }
}

/// No usable grant: the pending session for this user (the one a retry named, the one already
/// pending, or a new one) and everything an MCP server returns to its client.
#[allow(clippy::too_many_arguments)]
async fn offer(
    state: &AppState,
    caller: &Caller,
    bot: &Bot,
    integration: &Integration,
    (subject, user): (&Subject, UserId),
    mut fields: serde_json::Map<String, serde_json::Value>,
    retried: Option<Session>,
    tool_call: &str,
) -> Result<Response, ApiError> {
    let client: McpClient = match fields.remove("mcp") {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ApiError::Invalid(format!("authorize.mcp: {e}")))?,
        None => McpClient::default(),
    };
    let session = match retried.filter(|s| !s.status_at(state.clock.now()).is_final()) {
        Some(s) => s,
        None => {
            match pending_session(state, caller, bot, integration, subject, user, fields).await? {
                Some(s) => s,
                // A grant appeared meanwhile (the person just finished): the caller asks again.
                None => {
                    return Err(ApiError::Conflict(
                        "the user has just connected; ask again".into(),
                    ));
                }
            }
        }
    };
    let spec = &session.spec;
    let link = super::sessions::link_url(state, spec.id, spec.expires_at);
    let message = crate::channel::LinkMessage::new(&session, &bot.name, link.clone()).text;
    let request_state = RequestState {
        subject: subject.clone(),
        session: spec.id,
        tool_call: tool_call.to_owned(),
        expires_at: spec.expires_at,
    }
    .seal(
        &state.config.encryption,
        &integration.bot,
        &integration.name,
    );
    let mut ext = serde_json::Map::new();
    ext.insert(
        "session".into(),
        json!({
            "id": spec.id,
            "status": session.status_at(state.clock.now()),
            "link": link,
            "expires_at": crate::clock::rfc3339::format(spec.expires_at),
        }),
    );
    ext.insert(
        "mcp".into(),
        crate::flow::agent::offer(&client, &session, &message, &link, &request_state),
    );
    Ok(crate::error::problem(
        StatusCode::NOT_FOUND,
        "authorization_required",
        "the user has no usable connection yet: show them the link (or return the mcp payload)",
        ext,
    ))
}

/// One pending session per user and integration (and issuer subject, for bound ones), so that an agent's retries never open one
/// each: the recorded one while it is live, else a new one (recorded first, then written).
/// `None`: the user turned out to be connected already.
async fn pending_session(
    state: &AppState,
    caller: &Caller,
    bot: &Bot,
    integration: &Integration,
    subject: &Subject,
    user: UserId,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<Option<Session>, ApiError> {
    if fields.contains_key("integration") || fields.contains_key("user_id") {
        return Err(ApiError::Invalid(
            "authorize takes the session's fields; integration and user_id come from the call"
                .into(),
        ));
    }
    let mut fields = fields;
    fields.insert("integration".into(), json!(integration.name));
    fields.insert("user_id".into(), json!(user.as_str()));
    // Text, not a Value: a create body keeps `context` as raw JSON.
    let text = serde_json::Value::Object(fields).to_string();
    for _ in 0..3 {
        let req: super::sessions::CreateBody = serde_json::from_str(&text)
            .map_err(|e| ApiError::Invalid(format!("authorize: {e}")))?;
        let (_, _, session) =
            super::sessions::new_session(state, caller, bot.id.as_str(), req).await?;
        let spec = &session.spec;
        // A bound session is for one person at the issuer: another needs a session of its own.
        let slot = spec
            .binding
            .as_ref()
            .map(OidcSubject::digest)
            .unwrap_or_default();
        let claimed = state
            .store
            .claim_pending(
                &bot.id,
                &integration.name,
                subject,
                &slot,
                spec.id,
                spec.expires_at,
            )
            .await?;
        let Some(existing) = claimed else {
            let stored = super::sessions::store_session(state, &session, None, false).await;
            // Not created (already authorized, or over a quota of open sessions): not pending.
            if matches!(
                stored,
                Ok((CreateOutcome::AlreadyAuthorized(_), _)) | Err(ApiError::OverQuota { .. })
            ) {
                state
                    .store
                    .release_pending(&bot.id, &integration.name, subject, &slot, spec.id)
                    .await?;
            }
            if let CreateOutcome::AlreadyAuthorized(_) = stored?.0 {
                return Ok(None);
            }
            return Ok(Some(session));
        };
        match state.store.get_session(existing).await? {
            Some(s) if !s.status_at(state.clock.now()).is_final() => return Ok(Some(s)),
            // Settled, expired or never written (a crash between the two writes): replace it.
            _ => {
                state
                    .store
                    .release_pending(&bot.id, &integration.name, subject, &slot, existing)
                    .await?
            }
        }
    }
    Err(ApiError::Unavailable)
}

/// A retry whose session settled without a usable grant: a typed answer, at once.
fn ended(
    session: &Session,
    status: Status,
    (code, reason, text): (&str, &str, String),
) -> Response {
    let mut ext = serde_json::Map::new();
    ext.insert("reason".into(), json!(reason));
    ext.insert(
        "session".into(),
        json!({"id": session.spec.id, "status": status, "error": session.error}),
    );
    ext.insert(
        "mcp".into(),
        json!({"tool_result": {"content": [{"type": "text", "text": text}], "isError": true}}),
    );
    crate::error::problem(StatusCode::GONE, code, &text, ext)
}

/// The token answer. The most frequent response of all, so its JSON is written by hand (serde_json
/// escapes byte by byte; `crate::json` copies clean runs whole); a test holds it to what serde
/// writes for the same fields.
#[cfg_attr(test, derive(serde::Serialize))]
struct TokenView<'a> {
    access_token: &'a str,
    expires_at: Option<String>,
    identity: &'a crate::domain::grant::Identity,
    instance_url: Option<&'a str>,
    scopes: &'a [String],
    token_type: &'a str,
}

impl TokenView<'_> {
    fn json(&self) -> Vec<u8> {
        use crate::json::string;
        let nullable = |buf: &mut String, v: Option<&str>| match v {
            Some(v) => string(buf, v),
            None => buf.push_str("null"),
        };
        // Room for the identity, URL and scopes as Salesforce sends them: one allocation.
        let mut buf = String::with_capacity(512 + self.access_token.len());
        buf.push_str("{\"access_token\":");
        string(&mut buf, self.access_token);
        buf.push_str(",\"expires_at\":");
        nullable(&mut buf, self.expires_at.as_deref());
        buf.push_str(",\"identity\":{");
        let id = self.identity;
        let mut first = true;
        for (name, value) in [
            ("\"user_id\":", &id.user_id),
            ("\"org_id\":", &id.org_id),
            ("\"username\":", &id.username),
            ("\"email\":", &id.email),
            ("\"display_name\":", &id.display_name),
        ] {
            // As serde skips them: absent, not null.
            let Some(value) = value else { continue };
            if !std::mem::take(&mut first) {
                buf.push(',');
            }
            buf.push_str(name);
            string(&mut buf, value);
        }
        buf.push_str("},\"instance_url\":");
        nullable(&mut buf, self.instance_url);
        buf.push_str(",\"scopes\":[");
        for (i, scope) in self.scopes.iter().enumerate() {
            if i > 0 {
                buf.push(',');
            }
            string(&mut buf, scope);
        }
        buf.push_str("],\"token_type\":");
        string(&mut buf, self.token_type);
        buf.push('}');
        buf.into_bytes()
    }
}

fn token_response(grant: &Grant, tokens: &Tokens) -> Response {
    let view = TokenView {
        access_token: refresh::expose(tokens),
        expires_at: grant.access_expires_at.map(crate::clock::rfc3339::format),
        identity: &grant.identity,
        instance_url: grant.instance_url.as_deref(),
        scopes: &grant.scopes,
        token_type: &tokens.token_type,
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        view.json(),
    )
        .into_response()
}

#[utoipa::path(operation_id = "tokens_connection", get, path = "/v1/bots/{bot}/integrations/{integration}/connections/{user}", tag = "tokens", summary = "Connection metadata, never tokens", params(super::contract::ConnectionPath), responses((status = 200, description = "the connection, never tokens"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, integration, subject) = connection_path(&state, &caller, &path).await?;
    let grant = stored_grant(&state, &integration, &subject).await?;
    Ok(Json(connection_view(&grant)))
}

/// A connection as the API shows it — one place for the single view and the list, never tokens.
fn connection_view(grant: &Grant) -> serde_json::Value {
    json!({
        "user_id": grant.subject,
        "status": grant.status,
        "identity": grant.identity,
        "scopes": grant.scopes,
        "instance_url": grant.instance_url,
        "created_at": crate::clock::rfc3339::format(grant.created_at),
        "refreshed_at": grant.refreshed_at.map(crate::clock::rfc3339::format),
        "access_expires_at": grant.access_expires_at.map(crate::clock::rfc3339::format),
        "last_error": grant.last_error,
    })
}

#[utoipa::path(operation_id = "tokens_list_connections", get, path = "/v1/bots/{bot}/integrations/{integration}/connections", tag = "tokens", summary = "Who is connected: the integration's connections sorted by user id, never tokens (admin)", params(super::contract::IntegrationPath, ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1-200, default 50"), ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]+$", description = "next_cursor of the previous page")), responses((status = 200, description = "{connections, next_cursor}"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, integration)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.admin(&super::auth::bot_id(&bot)?)?;
    let (_, integration) =
        bot_and_integration(&state, &caller, &bot, &integration_name(&integration)?).await?;
    let page = super::paging::query(query)?.page(50, 200)?;
    let after = page.after(|a| Subject::parse(a).ok())?;
    let grants = state
        .store
        .list_grants(
            &integration.bot,
            &integration.name,
            after.as_ref(),
            page.limit + 1,
        )
        .await?;
    let (grants, next) = page.finish(grants, |g| g.subject.as_str());
    Ok(Json(json!({
        "connections": grants.iter().map(connection_view).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[utoipa::path(operation_id = "tokens_disconnect", delete, path = "/v1/bots/{bot}/integrations/{integration}/connections/{user}", tag = "tokens", summary = "Disconnect: revoke at the provider and delete", params(super::contract::ConnectionPath), responses((status = 200, description = "revoked"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
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

#[utoipa::path(operation_id = "tokens_check", post, path = "/v1/bots/{bot}/integrations/{integration}/connections/{user}/check", tag = "tokens", summary = "Live identity call with the stored token", params(super::contract::ConnectionPath), responses((status = 200, description = "the result of the identity call"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "the app has no identity endpoint, or its app is missing")), security(("bearer" = [])))]
/// The "Test" button: get a working token (refreshing if needed) and make a live identity call.
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, integration, subject) = connection_path(&state, &caller, &path).await?;
    let grant = working_grant(&state, &integration, &subject).await?;
    let (_, tokens) = refresh::access_token(&state, &integration, grant, false)
        .await
        .map_err(token_error)?;
    let provider = crate::flow::provider::provider_for(&state, &integration).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::grant::Identity;

    #[test]
    fn the_token_answer_is_what_serde_writes() {
        let full = Identity {
            user_id: Some("005\u{1}x".into()),
            org_id: Some("00D".into()),
            username: Some("ada@example.com".into()),
            email: Some("a\"da\\@example.com".into()),
            display_name: Some("Ada Lövelace\n".into()),
        };
        let partial = Identity {
            email: Some("ada@example.com".into()),
            ..Identity::default()
        };
        let scopes = ["api".to_owned(), "refresh_token".to_owned()];
        for (identity, scopes, expires_at, instance_url) in [
            (
                &full,
                &scopes[..],
                Some("2026-12-01T08:00:00Z".to_owned()),
                Some("https://x.my.salesforce.com"),
            ),
            (&partial, &scopes[..1], None, None),
            (
                &Identity::default(),
                &[][..],
                None,
                Some("https://ü.example"),
            ),
        ] {
            let view = TokenView {
                access_token: "00D!AQ\u{7f}\t.tok",
                expires_at,
                identity,
                instance_url,
                scopes,
                token_type: "Bearer",
            };
            assert_eq!(
                String::from_utf8(view.json()).unwrap(),
                serde_json::to_string(&view).unwrap()
            );
        }
    }
}
