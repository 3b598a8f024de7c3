//! ① and ⑤: a dialog engine creates an auth session (and gets the link), reads its status —
//! optionally long-polling until it settles — and can cancel it.

use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;

use super::admin::{check_scopes, check_webhook_url};
use super::auth::{Caller, bot_id};
use crate::crypto::sha256_hex;
use crate::domain::bot::{Bot, Integration, Mode, host_allowed};
use crate::domain::channel::{ChannelDelivery, ChannelTarget};
use crate::domain::event::{ChannelJob, Event};
use crate::domain::link;
use crate::domain::session::{
    BindingMethod, ExpectedIdentity, OidcSubject, Session, SessionSpec, Status, Verification,
};
use crate::domain::{IntegrationName, Partition, SessionId, Subject, UserId};
use crate::error::ApiError;
use crate::flow::AppState;
use crate::oauth::Provider;
use crate::store::{
    CodeCheck, CreateOutcome, Idempotency, NewSession, OpenQuota, QuotaScope, SideWrite, Transition,
};

const MAX_CONTEXT: usize = 8 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    integration: IntegrationName,
    /// Not `_bot` (the bot-wide grant's name).
    #[schema(value_type = String, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    user_id: UserId,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, min_length = 1, max_length = 256)]
    conversation_id: Option<String>,
    /// Any JSON (opaque to authlink), at most 8 KiB as sent, nested at most 32 deep; echoed in
    /// the session and its events.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    context: Option<Box<RawValue>>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpUrl>)]
    webhook_url: Option<Url>,
    #[serde(default, deserialize_with = "super::contract::integer::option_u32")]
    #[schema(minimum = 60, maximum = 86_400)]
    ttl_seconds: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<super::contract::Scope>>, max_items = 50)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, min_length = 1, max_length = 256)]
    login_hint: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, min_length = 1, max_length = 35)]
    locale: Option<String>,
    /// On one of the bot's `allowed_return_hosts`.
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpUrl>)]
    return_url: Option<Url>,
    #[serde(default)]
    verification: Option<Verification>,
    #[serde(default)]
    expected_identity: Option<ExpectedIdentity>,
    /// `oidc`: the person at the link must first sign in at the bot's identity issuer as
    /// `subject`.
    #[serde(default)]
    binding: Option<BindingMethod>,
    /// With `binding: oidc`: `{iss, sub}` of the user at the bot's identity issuer.
    #[serde(default)]
    subject: Option<OidcSubject>,
    #[serde(default)]
    force: bool,
    /// Deliver the link to a chat channel of the bot (or `{"name": "webchat"}`: the response
    /// carries a ready-to-render message).
    #[serde(default)]
    channel: Option<ChannelTarget>,
}

fn check_text(field: &str, v: &Option<String>, max: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control) => {
            Err(ApiError::Invalid(format!(
                "{field} must be 1-{max} characters without control characters"
            )))
        }
        _ => Ok(()),
    }
}

/// How deep a session's `context` may nest: it is echoed in every event, and JSON parsers
/// (serde_json's included, at 128) refuse documents nested much deeper.
const MAX_CONTEXT_DEPTH: usize = 32;

/// The nesting depth of a JSON text known to be valid (brackets outside strings).
fn json_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in json.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Where the success page sends the person back: http(s), no user info (a URL such as
/// `https://evil.com@chat.example.com` reads as another host to a person), on one of the bot's
/// allowed hosts — or, for the console's own pre-authorize (`console`), a console page here.
/// A daemon served over https sends people only to https pages (a plain-http page could be
/// rewritten on the way, loopback included: that is a local trial, served over http).
fn check_return_url(state: &AppState, bot: &Bot, url: &Url, console: bool) -> Result<(), ApiError> {
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(ApiError::Invalid(
            "return_url must be an http(s) URL".into(),
        ));
    }
    if state.config.is_https() && url.scheme() != "https" {
        return Err(ApiError::Invalid(
            "return_url must be an https URL (authlink is served over https)".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::Invalid(
            "return_url must not contain user info".into(),
        ));
    }
    let ours = console
        && url.origin() == state.config.public_url.origin()
        && url.path().starts_with("/console/");
    let host = url.host_str().unwrap_or_default();
    if !ours && !host_allowed(&bot.allowed_return_hosts, host) {
        return Err(ApiError::Invalid(format!(
            "return_url host {host:?} is not in the bot's allowed_return_hosts"
        )));
    }
    Ok(())
}

/// `binding: oidc` needs a subject at the bot's own identity issuer; a subject alone means
/// nothing.
fn check_binding(
    bot: &Bot,
    binding: Option<BindingMethod>,
    subject: Option<OidcSubject>,
) -> Result<Option<OidcSubject>, ApiError> {
    let subject = match (binding, subject) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(ApiError::Invalid(
                "subject is only used with binding: oidc".into(),
            ));
        }
        (Some(BindingMethod::Oidc), None) => {
            return Err(ApiError::Invalid(
                "binding: oidc needs subject: {iss, sub}".into(),
            ));
        }
        (Some(BindingMethod::Oidc), Some(subject)) => subject,
    };
    let Some(issuer) = &bot.identity_issuer else {
        return Err(ApiError::Invalid(
            "binding: oidc needs the bot's identity_issuer to be configured".into(),
        ));
    };
    if subject.iss != issuer.issuer {
        return Err(ApiError::Invalid(format!(
            "subject.iss must be the bot's identity issuer {:?}",
            issuer.issuer
        )));
    }
    if subject.sub.is_empty() || subject.sub.chars().count() > 255 {
        return Err(ApiError::Invalid(
            "subject.sub must be 1-255 characters".into(),
        ));
    }
    Ok(Some(subject))
}

/// Bot and integration for a runtime call, or 404s.
/// A disabled integration gives out no new sessions, links or tokens.
pub(crate) fn in_service(integration: &Integration) -> Result<(), ApiError> {
    if integration.enabled {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "integration {} is disabled",
            integration.name
        )))
    }
}

pub(crate) async fn bot_and_integration(
    state: &AppState,
    caller: &Caller,
    bot: &str,
    integration: &IntegrationName,
) -> Result<(std::sync::Arc<Bot>, std::sync::Arc<Integration>), ApiError> {
    let bot = bot_id(bot)?;
    caller.runtime(&bot)?;
    let b = super::existing_bot(state, &bot).await?;
    let i = state
        .store
        .get_integration(&bot, integration)
        .await?
        .ok_or(ApiError::NotFound("integration"))?;
    Ok((b, i))
}

#[utoipa::path(operation_id = "sessions_create", post, path = "/v1/bots/{bot}/auth-sessions", tag = "sessions", summary = "Create an auth session and its link", params(super::contract::BotPath), request_body = CreateBody, responses((status = 201, description = "the session with its link"), (status = 200, description = "already_authorized: the user has a working connection"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "disabled or pre-authorized integration, its app is missing, or an Idempotency-Key in flight"), (status = 429, description = "the bot or the user has as many open sessions as its quota allows (limits.pending_sessions_per_bot / _per_user); Retry-After"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
#[tracing::instrument(name = "create_session", skip_all, fields(bot = bot.as_str(), integration = tracing::field::Empty, session_id = tracing::field::Empty))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
    idempotency_key: IdempotencyKey,
    body: super::JsonBody,
) -> Result<Response, ApiError> {
    caller.runtime(&bot_id(&bot)?)?;
    let req: CreateBody = body.parse()?;
    let force = req.force;
    let (bot, _, session) = new_session(&state, &caller, &bot, req).await?;
    let now = session.updated_at;
    let idempotency = idempotency(idempotency_key, &body.bytes, state.config.idempotency_ttl)?;
    let (outcome, queued) = store_session(&state, &session, idempotency.as_ref(), force).await?;
    match outcome {
        CreateOutcome::Created => {
            let webchat = webchat_message(&state, &session, &bot.name, now);
            let view = SessionView {
                delivery: queued.as_ref(),
                webchat: webchat.as_ref(),
                ..view_of(&state, &session, now, true)
            };
            Ok((StatusCode::CREATED, super::json_response(&view)).into_response())
        }
        CreateOutcome::InFlight { fingerprint } => {
            if idempotency.is_some_and(|i| i.fingerprint == fingerprint) {
                Err(ApiError::Conflict(
                    "a request with this Idempotency-Key is still being processed; retry shortly"
                        .into(),
                ))
            } else {
                Err(ApiError::Invalid(
                    "Idempotency-Key was already used with a different request body".into(),
                ))
            }
        }
        CreateOutcome::Replayed { id, fingerprint } => {
            let same = idempotency.is_some_and(|i| i.fingerprint == fingerprint);
            if !same {
                return Err(ApiError::Invalid(
                    "Idempotency-Key was already used with a different request body".into(),
                ));
            }
            let prior = state
                .store
                .get_session(id)
                .await?
                .ok_or(ApiError::NotFound("auth session"))?;
            let delivery = delivery_of(&state, &prior).await?;
            let webchat = webchat_message(&state, &prior, &bot.name, now);
            let view = SessionView {
                delivery: delivery.as_ref(),
                webchat: webchat.as_ref(),
                ..view_of(&state, &prior, now, true)
            };
            Ok((StatusCode::CREATED, super::json_response(&view)).into_response())
        }
        // `store_session` answers it as an error.
        CreateOutcome::OverQuota { scope, until } => Err(over_quota(&state, scope, until, now)),
        CreateOutcome::AlreadyAuthorized(grant) => Ok((
            StatusCode::OK,
            Json(json!({
                "status": "already_authorized",
                "integration": session.spec.integration,
                "user_id": session.spec.subject,
                "conversation_id": session.spec.conversation_id,
                "connection": {
                    "identity": grant.identity,
                    "scopes": grant.scopes,
                    "created_at": fmt_time(grant.created_at),
                },
            })),
        )
            .into_response()),
    }
}

/// A session as a create request describes it, every field checked; not stored yet.
pub(crate) async fn new_session(
    state: &AppState,
    caller: &Caller,
    bot: &str,
    req: CreateBody,
) -> Result<(std::sync::Arc<Bot>, std::sync::Arc<Integration>, Session), ApiError> {
    let (bot, integration) = bot_and_integration(state, caller, bot, &req.integration).await?;
    in_service(&integration)?;
    if integration.mode != Mode::User {
        return Err(ApiError::Conflict(
            "this integration is pre-authorized by an admin; users do not sign in".into(),
        ));
    }
    check_text("conversation_id", &req.conversation_id, 256)?;
    check_text("login_hint", &req.login_hint, 256)?;
    check_text("locale", &req.locale, 35)?;
    if req
        .context
        .as_ref()
        .is_some_and(|c| c.get().len() > MAX_CONTEXT)
    {
        return Err(ApiError::Invalid(format!(
            "context must be at most {MAX_CONTEXT} bytes of JSON"
        )));
    }
    if req
        .context
        .as_ref()
        .is_some_and(|c| json_depth(c.get()) > MAX_CONTEXT_DEPTH)
    {
        return Err(ApiError::Invalid(format!(
            "context must not be nested deeper than {MAX_CONTEXT_DEPTH} levels"
        )));
    }
    if let Some(scopes) = &req.scopes {
        check_scopes(scopes)?;
    }
    let webhook_url = req.webhook_url.or_else(|| bot.webhook_url.clone());
    if let Some(url) = &webhook_url {
        check_webhook_url(url, state.config.webhooks.deny_private_networks)?;
        let host = url.host_str().unwrap_or_default();
        if !bot.allowed_webhook_hosts.is_empty() && !host_allowed(&bot.allowed_webhook_hosts, host)
        {
            return Err(ApiError::Invalid(format!(
                "webhook_url host {host} is not allowed for this bot"
            )));
        }
    }
    if let Some(url) = &req.return_url {
        check_return_url(state, &bot, url, false)?;
    }
    let verification = req.verification.unwrap_or(integration.verification);
    if req
        .expected_identity
        .as_ref()
        .is_some_and(|e| e.email.is_none() && e.username.is_none() && e.user_id.is_none())
    {
        return Err(ApiError::Invalid(
            "expected_identity needs email, username or user_id".into(),
        ));
    }
    let binding = check_binding(&bot, req.binding, req.subject)?;
    let ttl = req
        .ttl_seconds
        .or(integration.link_ttl_seconds)
        .map_or(state.config.default_ttl, |s| Duration::from_secs(s.into()));
    if !(60..=86_400).contains(&ttl.as_secs()) {
        return Err(ApiError::Invalid("ttl_seconds must be 60-86400".into()));
    }
    let provider_config = Provider::config_id(&state.config, &integration)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    if let Some(target) = &req.channel {
        check_channel(state, &bot.id, target).await?;
    }

    let now = state.clock.now();
    let subject = Subject::User(req.user_id);
    let id = SessionId::new(Partition::of(&bot.id, &integration.name, &subject));
    tracing::Span::current()
        .record("integration", integration.name.as_str())
        .record("session_id", tracing::field::display(id));
    let session = Session {
        spec: SessionSpec {
            id,
            bot: bot.id.clone(),
            integration: integration.name.clone(),
            subject,
            conversation_id: req.conversation_id,
            context: req.context,
            webhook_url,
            scopes: req.scopes.unwrap_or_default(),
            login_hint: req.login_hint,
            locale: req.locale,
            return_url: req.return_url,
            verification,
            expected_identity: req.expected_identity,
            binding,
            provider_config: provider_config.clone(),
            service: Some(integration.service_name()),
            channel: req.channel,
            created_at: now,
            expires_at: now + ttl,
        },
        status: Status::Pending,
        error: None,
        binding: None,
        updated_at: now,
    };
    Ok((bot, integration, session))
}

/// Write a new session (and, for a channel, the outbox item that posts its link, in the same
/// step). `force`: even if the user already has a working grant.
pub(crate) async fn store_session(
    state: &AppState,
    session: &Session,
    idempotency: Option<&Idempotency>,
    force: bool,
) -> Result<(CreateOutcome, Option<ChannelDelivery>), ApiError> {
    let now = session.updated_at;
    let spec = &session.spec;
    // A channel's link is posted by the outbox: its item is written with the session.
    let send = Event::for_channel(session, ChannelJob::Send, now);
    let queued = send
        .as_ref()
        .and(spec.channel.as_ref())
        .map(|t| ChannelDelivery::queued(t.name.clone()));
    let outcome = state
        .store
        .create_session(NewSession {
            session,
            idempotency,
            retention: state.config.retention,
            unless_authorized_by: (!force).then_some(spec.provider_config.as_str()),
            delivery: queued.as_ref().zip(send.as_ref()),
            quota: Some(open_quota(state)),
        })
        .await?;
    if let CreateOutcome::OverQuota { scope, until } = outcome {
        return Err(over_quota(state, scope, until, now));
    }
    if let CreateOutcome::Created = outcome {
        tracing::info!(session_id = %spec.id, bot = %spec.bot, integration = %spec.integration, "auth session created");
        // The series' handle, looked up once (a lookup builds and hashes its labels).
        static CREATED: std::sync::LazyLock<metrics::Counter> = std::sync::LazyLock::new(
            || metrics::counter!("authlink_session_transitions_total", "status" => "pending", "code" => ""),
        );
        CREATED.increment(1);
    }
    Ok((outcome, queued))
}

/// The quotas of open sessions a create is held to.
fn open_quota(state: &AppState) -> OpenQuota {
    let l = &state.config.limits;
    OpenQuota {
        per_bot: l.pending_sessions_per_bot,
        per_user: l.pending_sessions_per_user,
    }
}

/// The answer to a create over a quota of open sessions. `Retry-After` is when the first open
/// session expires, but at most a minute: any of them may complete or be cancelled sooner.
fn over_quota(
    state: &AppState,
    scope: QuotaScope,
    until: OffsetDateTime,
    now: OffsetDateTime,
) -> ApiError {
    let l = &state.config.limits;
    let (whose, quota, setting) = match scope {
        QuotaScope::Bot => ("the bot", l.pending_sessions_per_bot, "per_bot"),
        QuotaScope::User => ("this user", l.pending_sessions_per_user, "per_user"),
    };
    let wait = (until - now).whole_seconds().clamp(1, 60) as u64;
    // Counted, and logged only at debug: a flood would otherwise write a line per refusal.
    metrics::counter!("authlink_session_quota_refusals_total", "scope" => match scope {
        QuotaScope::Bot => "bot",
        QuotaScope::User => "user",
    })
    .increment(1);
    tracing::debug!(
        ?scope,
        quota,
        "auth session refused: open-session quota reached"
    );
    ApiError::OverQuota {
        detail: format!(
            "{whose} already has {quota} open auth sessions, the most allowed \
             (limits.pending_sessions_{setting}); retry when one completes, is cancelled or expires"
        ),
        retry_after: wait,
    }
}

/// The `Idempotency-Key` header as sent; `idempotency` checks it.
pub struct IdempotencyKey(Option<HeaderValue>);

impl IdempotencyKey {
    /// A request without one (the console creating a link).
    pub fn none() -> Self {
        Self(None)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get("idempotency-key").cloned()))
    }
}

fn idempotency(
    key: IdempotencyKey,
    body: &[u8],
    ttl: Duration,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = key.0 else {
        return Ok(None);
    };
    Ok(Some(Idempotency {
        key: idempotency_key(&value)?.to_owned(),
        fingerprint: sha256_hex(body),
        ttl,
    }))
}

/// The `Idempotency-Key` header's value as a key: 1-255 visible characters.
pub(crate) fn idempotency_key(value: &HeaderValue) -> Result<&str, ApiError> {
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1-255 visible characters".into())
        })
}

pub fn fmt_time(t: OffsetDateTime) -> String {
    crate::clock::rfc3339::format(t)
}

/// The API view of a session (no secrets, no attempt data). A borrowed, typed struct: the
/// response is serialized straight from the session, without an intermediate JSON tree.
/// The `Session` of the OpenAPI document is derived from it ([`session_schema`]).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct SessionView<'a> {
    #[schema(value_type = String, pattern = "^0[0-9a-f]{33}$")]
    id: SessionId,
    status: Status,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    integration: &'a IntegrationName,
    /// The user id, or `_bot` for a pre-authorization (the bot-wide grant).
    #[schema(value_type = String, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    user_id: &'a Subject,
    #[schema(value_type = Option<String>, required)]
    conversation_id: &'a Option<String>,
    /// As given on creation: any JSON, or null.
    #[schema(value_type = Option<Object>, required)]
    context: &'a Option<Box<RawValue>>,
    #[serde(with = "crate::clock::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
    #[serde(with = "crate::clock::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
    /// Why a failed (or cancelled) session ended: `{code, description}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    error: Option<&'a crate::domain::session::SessionError>,
    /// `binding: oidc` sessions: the issuer subject the person at the link must be and, once
    /// the binding step has run, its `result` (`matched` / `mismatch`) and the `sub` it found.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    binding: Option<serde_json::Value>,
    /// The link to give the person (on creation, while the session is not settled).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uri)]
    link: Option<String>,
    /// How far the delivery of the link to a chat channel got.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    delivery: Option<&'a ChannelDelivery>,
    /// On creation with `channel: {"name": "webchat"}`: the message to render.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    webchat: Option<&'a serde_json::Value>,
}

/// The session view's schema for the OpenAPI document, as JSON: `context` is what the creator
/// gave (any JSON: it is opaque), and no other field may appear.
pub(crate) fn session_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(<SessionView<'_> as utoipa::PartialSchema>::schema())
        .unwrap_or_default();
    // Every field is listed: nothing else (no attempt data, no secret) is in the view.
    schema["additionalProperties"] = false.into();
    if let Some(context) = schema.pointer_mut("/properties/context") {
        *context = serde_json::json!({"description": "as given on creation: any JSON, or null"});
    }
    schema
}

fn view_of<'a>(
    state: &AppState,
    s: &'a Session,
    now: OffsetDateTime,
    with_link: bool,
) -> SessionView<'a> {
    let spec = &s.spec;
    let status = s.status_at(now);
    SessionView {
        id: spec.id,
        status,
        integration: &spec.integration,
        user_id: &spec.subject,
        conversation_id: &spec.conversation_id,
        context: &spec.context,
        created_at: spec.created_at,
        updated_at: s.updated_at,
        expires_at: spec.expires_at,
        error: s.error.as_ref(),
        binding: spec.binding.as_ref().map(|subject| {
            let mut b = serde_json::json!({"method": "oidc", "subject": subject});
            if let Some(found) = &s.binding {
                b["result"] = serde_json::json!(found.result);
                b["sub"] = serde_json::json!(found.sub);
            }
            b
        }),
        link: (with_link && !status.is_final()).then(|| link_url(state, spec.id, spec.expires_at)),
        delivery: None,
        webchat: None,
    }
}

/// The response body for a session, with its channel delivery's state if it has one.
pub async fn respond(
    state: &AppState,
    s: &Session,
    now: OffsetDateTime,
    with_link: bool,
) -> Result<Response, ApiError> {
    let delivery = delivery_of(state, s).await?;
    Ok(super::json_response(&SessionView {
        delivery: delivery.as_ref(),
        ..view_of(state, s, now, with_link)
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentQuery {
    limit: Option<u32>,
    status: Option<String>,
}

#[utoipa::path(operation_id = "sessions_list", get, path = "/v1/bots/{bot}/auth-sessions", tag = "sessions", summary = "The bot's most recent sessions, newest first", params(super::contract::BotPath, ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1-100, default 20"), ("status" = Option<crate::domain::session::Status>, Query, description = "only sessions with this status")), responses((status = 200, description = "{sessions}, newest first"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
/// The newest sessions of the bot (among the newest `RECENT_SESSIONS_PER_PARTITION` of each
/// store partition — so always the newest 100 — and only while their records are kept).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
    query: Result<Query<RecentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let bot = bot_id(&bot)?;
    caller.runtime(&bot)?;
    let q = super::paging::query(query)?;
    let limit = super::paging::limit(q.limit, 20, 100)?;
    let status = q
        .status
        .map(|s| {
            Status::parse(&s)
                .ok_or_else(|| ApiError::Invalid(format!("status {s:?} is not a session status")))
        })
        .transpose()?;
    super::existing_bot(&state, &bot).await?;
    let now = state.clock.now();
    let keep = move |s: &Session| status.is_none_or(|st| s.status_at(now) == st);
    let sessions = state.store.recent_sessions(&bot, limit, &keep).await?;
    let deliveries =
        futures_util::future::try_join_all(sessions.iter().map(|s| delivery_of(&state, s))).await?;
    let views: Vec<SessionView> = sessions
        .iter()
        .zip(&deliveries)
        .map(|(s, d)| SessionView {
            delivery: d.as_ref(),
            ..view_of(&state, s, now, false)
        })
        .collect();
    #[derive(serde::Serialize)]
    struct List<'a> {
        sessions: Vec<SessionView<'a>>,
    }
    Ok(super::json_response(&List { sessions: views }))
}

/// The session's channel delivery (no store access for sessions without one).
async fn delivery_of(state: &AppState, s: &Session) -> Result<Option<ChannelDelivery>, ApiError> {
    match &s.spec.channel {
        Some(t) if !t.name.is_webchat() => Ok(state
            .store
            .get_delivery(s.spec.id)
            .await?
            .map(|d| d.public())),
        _ => Ok(None),
    }
}

/// A channel on session creation: configured for this bot, and the address fits it.
async fn check_channel(
    state: &AppState,
    bot: &crate::domain::BotId,
    target: &ChannelTarget,
) -> Result<(), ApiError> {
    if target.name.is_webchat() {
        if target.to.is_some() || target.thread.is_some() || target.user.is_some() {
            return Err(ApiError::Invalid(
                "channel webchat takes no to, thread or user: the response carries the message"
                    .into(),
            ));
        }
        return Ok(());
    }
    let config = state
        .store
        .get_channel(bot, &target.name)
        .await?
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "channel {} is not configured for this bot (PUT /v1/bots/{bot}/channels/{})",
                target.name, target.name
            ))
        })?;
    crate::channel::check_target(&config, target, &state.config.public_url)
        .map_err(ApiError::Invalid)
}

/// The ready-to-render message for a `webchat` session: `{text, button: {label, url}}`.
fn webchat_message(
    state: &AppState,
    s: &Session,
    bot_name: &str,
    now: OffsetDateTime,
) -> Option<serde_json::Value> {
    let target = s.spec.channel.as_ref().filter(|t| t.name.is_webchat())?;
    if s.status_at(now).is_final() {
        return None;
    }
    let m = crate::channel::LinkMessage::new(
        s,
        bot_name,
        link_url(state, s.spec.id, s.spec.expires_at),
    );
    Some(json!({
        "channel": target.name,
        "text": m.text,
        "button": {"label": m.label, "url": m.url},
    }))
}

/// `{public_url}/l/{token}`, built in one buffer.
pub fn link_url(state: &AppState, id: SessionId, expires_at: OffsetDateTime) -> String {
    link::url(
        &state.config.public_url,
        &state.config.signing,
        id,
        expires_at,
    )
}

#[derive(Deserialize)]
pub struct StatusQuery {
    wait: Option<u32>,
}

/// Load a session of `bot`, or 404 (also for another bot's session).
async fn load(state: &AppState, caller: &Caller, bot: &str, id: &str) -> Result<Session, ApiError> {
    let bot = bot_id(bot)?;
    caller.runtime(&bot)?;
    let id = SessionId::parse(id).map_err(|_| ApiError::NotFound("auth session"))?;
    match state.store.get_session(id).await? {
        Some(s) if s.spec.bot == bot => Ok(s),
        _ => Err(ApiError::NotFound("auth session")),
    }
}

pub(crate) async fn settle_expiry(
    state: &AppState,
    s: Session,
    now: OffsetDateTime,
) -> Result<Session, ApiError> {
    Ok(crate::expiry::settle(&*state.store, s, now).await?)
}

#[utoipa::path(operation_id = "sessions_status", get, path = "/v1/bots/{bot}/auth-sessions/{id}", tag = "sessions", summary = "Session status; ?wait=N long-polls until it settles", params(super::contract::SessionPath, ("wait" = Option<u32>, Query, minimum = 0, description = "long-poll: hold up to this many seconds until the session settles (at most the configured sessions.max_wait_seconds)")), responses((status = 200, description = "the session"), (status = 400, description = "wait is not a number of seconds up to the configured maximum"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
#[tracing::instrument(name = "session_status", skip_all, fields(bot = %bot, session_id = %id))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).into());
    if wait > state.config.max_wait {
        return Err(ApiError::BadRequest(format!(
            "wait must be at most {} seconds",
            state.config.max_wait.as_secs()
        )));
    }
    // The steps around the wait are boxed, and sessions are passed boxed: a parked long-poll's
    // future holds the session id, not the 768-byte session (with thousands parked at once).
    let id = match Box::pin(open(&state, &caller, &bot, &id, wait)).await? {
        Opened::Answered(response) => return Ok(response),
        Opened::Open(id) => id,
    };
    // Held for the wait only; given back however it ends (this future dropped included).
    let slot = wait_slot(&state, &caller, &bot)?;
    let session = wait_until_settled(&state, id, wait).await?;
    drop(slot);
    Box::pin(async move { respond(&state, &session, state.clock.now(), false).await }).await
}

/// A place among the requests `caller` and `bot` have waiting (`[limits]`), or 429.
pub(crate) fn wait_slot(
    state: &AppState,
    caller: &Caller,
    bot: &str,
) -> Result<crate::bounds::WaitSlot, ApiError> {
    let key = match caller {
        Caller::Operator => "operator",
        Caller::Bot(k) => k.id.as_str(),
    };
    state.waits.enter(key, bot)
}

/// A status request's first step: answered at once, or a session to wait for.
enum Opened {
    Answered(Response),
    Open(SessionId),
}

/// Load the session; answer with it unless it is still open and the caller asked to `wait`.
async fn open(
    state: &AppState,
    caller: &Caller,
    bot: &str,
    id: &str,
    wait: Duration,
) -> Result<Opened, ApiError> {
    let session = load(state, caller, bot, id).await?;
    let now = state.clock.now();
    let session = settle_expiry(state, session, now).await?;
    if worth_waiting(state, &session, now, wait) {
        return Ok(Opened::Open(session.spec.id));
    }
    Ok(Opened::Answered(
        respond(state, &session, now, false).await?,
    ))
}

/// Pending or in progress: a waiting caller waits on.
pub(crate) fn still_open(session: &Session, now: OffsetDateTime) -> bool {
    matches!(session.status_at(now), Status::Pending | Status::InProgress)
}

/// A caller that asked to `wait` on `session` (its expiry settled) parks: the session is still
/// open and the daemon is not stopping.
pub(crate) fn worth_waiting(
    state: &AppState,
    session: &Session,
    now: OffsetDateTime,
    wait: Duration,
) -> bool {
    !wait.is_zero() && still_open(session, now) && !state.shutdown.is_cancelled()
}

/// Session `id` as it stands (its expiry recorded when due), or 404; boxed, so that a waiting
/// caller's future has no room for a session.
pub(crate) async fn current(
    state: &AppState,
    id: SessionId,
    now: OffsetDateTime,
) -> Result<Box<Session>, ApiError> {
    let session = state
        .store
        .get_session(id)
        .await?
        .ok_or(ApiError::NotFound("auth session"))?;
    Ok(Box::new(settle_expiry(state, session, now).await?))
}

/// Hold until session `id` leaves `pending`/`in_progress` (woken by a change on any replica, or
/// by its expiry), `wait` passes, or the daemon stops; the session as it then stands. While
/// parked this holds only the id, the deadline and the wake-up registration, and it reads the
/// session again after every wake-up.
pub(crate) async fn wait_until_settled(
    state: &AppState,
    id: SessionId,
    wait: Duration,
) -> Result<Box<Session>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let listener = state.store.listen(id);
    loop {
        // Registered before the read: a change made after the read wakes the nap below.
        let changed = listener.next_change();
        let now = state.clock.now();
        // Boxed: reading and settling the session is most of this future's size, and none of
        // it is needed while parked.
        let session = Box::pin(current(state, id, now)).await?;
        if !still_open(&session, now)
            || tokio::time::Instant::now() >= deadline
            || state.shutdown.is_cancelled()
        {
            return Ok(session);
        }
        // Wake on a change (any replica; after a lost subscription everybody is woken to
        // re-read), at the deadline, or at the session's own expiry.
        let until_expiry = (session.spec.expires_at - now)
            .try_into()
            .unwrap_or(Duration::ZERO);
        drop(session);
        let nap =
            (deadline - tokio::time::Instant::now()).min(until_expiry + Duration::from_millis(5));
        tokio::select! {
            _ = tokio::time::timeout(nap, changed) => {}
            // Stopping: answer now with the current status (the caller polls again elsewhere).
            _ = state.shutdown.cancelled() => {}
        }
    }
}

#[utoipa::path(operation_id = "sessions_cancel", delete, path = "/v1/bots/{bot}/auth-sessions/{id}", tag = "sessions", summary = "Cancel a session", params(super::contract::SessionPath), responses((status = 200, description = "the cancelled session"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "already settled")), security(("bearer" = [])))]
#[tracing::instrument(name = "cancel_session", skip_all, fields(bot = %bot, session_id = %id))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = load(&state, &caller, &bot, &id).await?;
    let now = state.clock.now();
    let updated = cancel_session(&state, session, now).await?;
    respond(&state, &updated, now, false).await
}

/// Cancel a session that has not settled (with its event, and the update of a posted link
/// message, in the same step).
pub(crate) async fn cancel_session(
    state: &AppState,
    session: Session,
    now: OffsetDateTime,
) -> Result<Session, ApiError> {
    let session = settle_expiry(state, session, now).await?;
    if session.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "the auth session is already {}",
            session.status.as_str()
        )));
    }
    let mut cancelled = session.clone();
    cancelled.status = Status::Cancelled;
    let event = Event::for_session(&cancelled, None, now);
    let channel_event = Event::channel_update(&cancelled, now);
    let updated = state
        .store
        .transition(Transition {
            id: session.spec.id,
            to: Status::Cancelled,
            error: None,
            binding: None,
            write: SideWrite::None,
            event: Some(&event),
            channel_event: channel_event.as_ref(),
            now,
        })
        .await?;
    tracing::info!(session_id = %updated.spec.id, "auth session cancelled");
    Ok(updated)
}

#[utoipa::path(operation_id = "sessions_events", get, path = "/v1/bots/{bot}/auth-sessions/{id}/events", tag = "sessions", summary = "Server-sent events of status changes, until settled", params(super::contract::SessionPath), responses((status = 200, description = "text/event-stream of status events"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
/// Server-sent events for engines that cannot receive webhooks: one `status` event now, one per
/// change (on any replica), and the stream ends once the session is settled — or after
/// `limits.event_stream_max_seconds` (the first event's `retry:` tells the client to reconnect).
/// Comment lines keep idle connections alive through proxies.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{KeepAlive, Sse};
    let session = load(&state, &caller, &bot, &id).await?;
    // Held by the stream: given back when it ends or its connection goes.
    let slot = wait_slot(&state, &caller, &bot)?;
    let listener = state.store.listen(session.spec.id);
    struct Cursor {
        state: AppState,
        listener: crate::store::Listener,
        id: SessionId,
        last: Option<Status>,
        done: bool,
        /// The stream's end at the latest (`limits.event_stream_max_seconds`).
        until: tokio::time::Instant,
        _slot: crate::bounds::WaitSlot,
    }
    let lifetime = Duration::from_secs(state.config.limits.event_stream_max_seconds.into());
    let cursor = Cursor {
        id: session.spec.id,
        state,
        listener,
        last: None,
        done: false,
        until: tokio::time::Instant::now() + lifetime,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        if c.done || tokio::time::Instant::now() >= c.until {
            return None;
        }
        loop {
            let changed = c.listener.next_change();
            let now = c.state.clock.now();
            let first = c.last.is_none();
            // Boxed: reading the session and rendering its event is most of this future's
            // size, and a parked stream needs none of it.
            let next = Box::pin(next_event(&c.state, c.id, &mut c.last, now)).await;
            let until_expiry = match next {
                Next::Event(mut event, done) => {
                    drop(changed);
                    c.done = done;
                    if first {
                        // How soon to reconnect when the stream ends before the session
                        // settles (at its maximum lifetime, or a replica stopping).
                        event = event.retry(RECONNECT_AFTER);
                    }
                    return Some((Ok::<_, std::convert::Infallible>(event), c));
                }
                Next::Unchanged { until_expiry } => until_expiry,
            };
            let shutdown = c.state.shutdown.clone();
            let nap = (until_expiry + Duration::from_millis(5)).min(
                c.until
                    .saturating_duration_since(tokio::time::Instant::now()),
            );
            tokio::select! {
                _ = tokio::time::timeout(nap, changed) => {}
                // Stopping: end the stream; the client reconnects to another replica.
                _ = shutdown.cancelled() => return None,
            }
            if tokio::time::Instant::now() >= c.until {
                // Its lifetime is over: end cleanly; the client reconnects and is sent the
                // current status first.
                return None;
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The SSE `retry:` hint of an event stream's first event: reconnect one second after the
/// stream ends early.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What an event stream does after reading its session: send an event (and end the stream when
/// it is the last), or nap until the next change or the session's expiry.
enum Next {
    Event(axum::response::sse::Event, bool),
    Unchanged { until_expiry: Duration },
}

/// The event for session `id` if its status differs from `last` (then noted there); a session
/// that is gone gets an error event, the last.
async fn next_event(
    state: &AppState,
    id: SessionId,
    last: &mut Option<Status>,
    now: OffsetDateTime,
) -> Next {
    use axum::response::sse::Event as SseEvent;
    let session = match state.store.get_session(id).await {
        Ok(Some(s)) => crate::expiry::settle(&*state.store, s, now).await.ok(),
        _ => None,
    };
    let Some(session) = session else {
        let gone = SseEvent::default()
            .event("error")
            .data("{\"code\":\"not_found\"}");
        return Next::Event(gone, true);
    };
    let status = session.status_at(now);
    if *last == Some(status) {
        let until_expiry = (session.spec.expires_at - now)
            .try_into()
            .unwrap_or(Duration::ZERO);
        return Next::Unchanged { until_expiry };
    }
    *last = Some(status);
    let delivery = delivery_of(state, &session).await.ok().flatten();
    let data = serde_json::to_string(&SessionView {
        delivery: delivery.as_ref(),
        ..view_of(state, &session, now, false)
    })
    .unwrap_or_default();
    Next::Event(
        SseEvent::default().event("status").data(data),
        status.is_final(),
    )
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreAuthorizeBody {
    #[serde(default, deserialize_with = "super::contract::integer::option_u32")]
    #[schema(minimum = 60, maximum = 86_400)]
    ttl_seconds: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, min_length = 1, max_length = 35)]
    locale: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, min_length = 1, max_length = 256)]
    login_hint: Option<String>,
    /// On one of the bot's `allowed_return_hosts`, or a console page of this daemon.
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpUrl>)]
    return_url: Option<Url>,
}

#[utoipa::path(operation_id = "sessions_pre_authorize", post, path = "/v1/bots/{bot}/integrations/{integration}/pre-authorize", tag = "integrations", summary = "A sign-in link for the bot-wide grant (admin)", params(super::contract::IntegrationPath), request_body(content = Option<PreAuthorizeBody>, description = "optional: an empty body takes the defaults"), responses((status = 201, description = "the session with its link"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "disabled, not pre_authorized, or its app is missing"), (status = 413, description = "body over the limit"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
/// "Pre-authorize the integration": a link for an admin, whose sign-in stores the bot-wide grant
/// that every conversation of the bot then uses. Signing in again replaces it.
#[tracing::instrument(name = "pre_authorize", skip_all, fields(bot = %bot, integration = %integration, session_id = tracing::field::Empty))]
pub async fn pre_authorize(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, integration)): Path<(String, String)>,
    super::RawBody(body): super::RawBody,
) -> Result<Response, ApiError> {
    caller.admin(&bot_id(&bot)?)?;
    // Optional: an empty body (or `null`) takes the defaults.
    let req: PreAuthorizeBody = if body.is_empty() {
        PreAuthorizeBody::default()
    } else {
        super::contract::json_object::<Option<PreAuthorizeBody>>(&body)?.unwrap_or_default()
    };
    let name =
        IntegrationName::parse(&integration).map_err(|_| ApiError::NotFound("integration"))?;
    let (bot, integration) = bot_and_integration(&state, &caller, &bot, &name).await?;
    in_service(&integration)?;
    if integration.mode != Mode::PreAuthorized {
        return Err(ApiError::Conflict(
            "this integration lets each user authorize; set mode pre_authorized to pre-authorize it".into(),
        ));
    }
    check_text("locale", &req.locale, 35)?;
    check_text("login_hint", &req.login_hint, 256)?;
    if let Some(url) = &req.return_url {
        check_return_url(&state, &bot, url, true)?;
    }
    let ttl = req
        .ttl_seconds
        .or(integration.link_ttl_seconds)
        .map_or(state.config.default_ttl, |s| Duration::from_secs(s.into()));
    if !(60..=86_400).contains(&ttl.as_secs()) {
        return Err(ApiError::Invalid("ttl_seconds must be 60-86400".into()));
    }
    let provider_config = Provider::config_id(&state.config, &integration)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let now = state.clock.now();
    let admin_session_id = SessionId::new(Partition::of(&bot.id, &integration.name, &Subject::Bot));
    tracing::Span::current().record("session_id", tracing::field::display(admin_session_id));
    let session = Session {
        spec: SessionSpec {
            id: admin_session_id,
            bot: bot.id.clone(),
            integration: integration.name.clone(),
            subject: Subject::Bot,
            conversation_id: None,
            context: None,
            webhook_url: bot.webhook_url.clone(),
            scopes: Vec::new(),
            login_hint: req.login_hint,
            locale: req.locale,
            return_url: req.return_url,
            verification: Verification::None,
            expected_identity: None,
            binding: None,
            provider_config,
            service: Some(integration.service_name()),
            channel: None,
            created_at: now,
            expires_at: now + ttl,
        },
        status: Status::Pending,
        error: None,
        binding: None,
        updated_at: now,
    };
    let outcome = state
        .store
        .create_session(NewSession {
            session: &session,
            idempotency: None,
            retention: state.config.retention,
            unless_authorized_by: None,
            delivery: None,
            quota: Some(open_quota(&state)),
        })
        .await?;
    if let CreateOutcome::OverQuota { scope, until } = outcome {
        return Err(over_quota(&state, scope, until, now));
    }
    tracing::info!(session_id = %session.spec.id, bot = %bot.id, integration = %integration.name, "pre-authorization link issued");
    Ok((
        StatusCode::CREATED,
        respond(&state, &session, now, true).await?,
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The six digits the person was shown (surrounding spaces are ignored).
    #[schema(min_length = 1, max_length = 64)]
    code: String,
}

#[utoipa::path(operation_id = "sessions_verify", post, path = "/v1/bots/{bot}/auth-sessions/{id}/verify", tag = "sessions", summary = "Confirm the verification code the person typed", params(super::contract::SessionPath), request_body = VerifyBody, responses((status = 200, description = "the completed session"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "not awaiting a code"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
/// `verification: code`: the dialog engine posts the code the person typed into the chat. The
/// right code makes the grant usable and completes the session (one atomic store step); five
/// wrong ones fail it and the grant is revoked and dropped. Codes expire with the session.
#[tracing::instrument(name = "verify_code", skip_all, fields(bot = %bot, session_id = %id))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
    body: super::JsonBody,
) -> Result<Response, ApiError> {
    use crate::domain::grant::{GrantStatus, PendingCode};
    let session = load(&state, &caller, &bot, &id).await?;
    let body: VerifyBody = body.parse()?;
    let now = state.clock.now();
    let session = settle_expiry(&state, session, now).await?;
    if session.status != Status::AwaitingCode {
        return Err(ApiError::Conflict(format!(
            "the auth session is {}, not awaiting a code",
            session.status.as_str()
        )));
    }
    let spec = &session.spec;
    // Counted before it is compared, in one store step: a flood of concurrent tries gets no more
    // comparisons than the allowed number. A malformed code is a wrong one (and counts).
    let check = state
        .store
        .check_code(
            (&spec.bot, &spec.integration, &spec.subject),
            spec.id,
            &PendingCode::hash(&spec.id.to_string(), body.code.trim()),
            PendingCode::MAX_FAILURES,
            spec.expires_at,
        )
        .await?;
    match check {
        CodeCheck::NoCode => Err(ApiError::Conflict(
            "no grant is waiting for this code".into(),
        )),
        CodeCheck::Confirmed => Err(ApiError::Conflict(
            "the code was confirmed already; the auth session is completing".into(),
        )),
        CodeCheck::Wrong { left } if left > 0 => Err(ApiError::Invalid(format!(
            "wrong code; {left} attempt(s) left"
        ))),
        CodeCheck::Wrong { .. } => {
            fail_verification(&state, &session, now).await?;
            Err(ApiError::Invalid(
                "wrong code; too many wrong codes, the auth session has failed".into(),
            ))
        }
        CodeCheck::Exhausted => {
            // Normally the try that used the last attempt failed the session already; this
            // finishes the job if that request died on the way.
            fail_verification(&state, &session, now).await?;
            Err(ApiError::Conflict(
                "no verification attempts are left; the auth session has failed".into(),
            ))
        }
        CodeCheck::Right => {
            let grant = state
                .store
                .get_grant(&spec.bot, &spec.integration, &spec.subject)
                .await?
                .filter(|g| g.status == GrantStatus::AwaitingCode)
                .ok_or_else(|| ApiError::Conflict("no grant is waiting for this code".into()))?;
            let aad =
                crate::domain::grant::Grant::aad(&grant.bot, &grant.integration, &grant.subject);
            let refreshable = crate::domain::grant::Tokens::open(
                &state.config.encryption,
                &aad,
                &grant.sealed_tokens,
            )
            .is_ok_and(|t| t.refresh_token.is_some());
            let mut active = crate::domain::grant::Grant {
                status: GrantStatus::Active,
                pending_code: None,
                ..grant
            };
            active.schedule_refresh(refreshable, &state.config.refresh);
            let mut completed = session.clone();
            completed.status = Status::Completed;
            let event = Event::for_session(&completed, Some(&active.identity), now);
            let channel_event = Event::channel_update(&completed, now);
            let updated = state
                .store
                .transition(Transition {
                    id: spec.id,
                    to: Status::Completed,
                    error: None,
                    binding: None,
                    write: SideWrite::Grant(&active),
                    event: Some(&event),
                    channel_event: channel_event.as_ref(),
                    now,
                })
                .await?;
            tracing::info!(session_id = %spec.id, "verification code confirmed");
            respond(&state, &updated, now, false).await
        }
    }
}

/// Out of verification tries: the session fails `verification_failed`, and the tokens someone
/// obtained through it are not kept, here or at the provider. Only the request whose transition
/// fails the session does the rest (a session another request settled first is left alone).
async fn fail_verification(
    state: &AppState,
    session: &Session,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    use crate::domain::grant::GrantStatus;
    let spec = &session.spec;
    let grant = state
        .store
        .get_grant(&spec.bot, &spec.integration, &spec.subject)
        .await?
        .filter(|g| g.status == GrantStatus::AwaitingCode);
    let error = crate::domain::session::SessionError {
        code: crate::domain::session::FailureCode::VerificationFailed,
        description: "too many wrong verification codes".into(),
    };
    let mut failed = session.clone();
    failed.status = Status::Failed;
    failed.error = Some(error.clone());
    let event = Event::for_session(&failed, None, now);
    let channel_event = Event::channel_update(&failed, now);
    match state
        .store
        .transition(Transition {
            id: spec.id,
            to: Status::Failed,
            error: Some(&error),
            binding: None,
            write: SideWrite::None,
            event: Some(&event),
            channel_event: channel_event.as_ref(),
            now,
        })
        .await
    {
        Ok(_) => {}
        Err(crate::store::TransitionError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::warn!(session_id = %spec.id, "verification failed: too many wrong codes");
    let Some(grant) = grant else {
        return Ok(());
    };
    if let Ok(provider) = crate::flow::provider::provider_for(
        state,
        &*state
            .store
            .get_integration(&spec.bot, &spec.integration)
            .await?
            .ok_or(ApiError::NotFound("integration"))?,
    )
    .await
    {
        let aad = crate::domain::grant::Grant::aad(&grant.bot, &grant.integration, &grant.subject);
        if let Ok(tokens) =
            crate::domain::grant::Tokens::open(&state.config.encryption, &aad, &grant.sealed_tokens)
        {
            let token = tokens
                .refresh_token
                .as_ref()
                .unwrap_or(&tokens.access_token);
            if let Err(e) = provider
                .revoke(&state.http, token, tokens.refresh_token.is_some())
                .await
            {
                tracing::warn!(error = %e, "could not revoke the unverified tokens");
            }
        }
    }
    state
        .store
        .delete_grant(&spec.bot, &spec.integration, &spec.subject, None)
        .await?;
    Ok(())
}
