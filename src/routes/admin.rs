//! Tenancy administration: bots and their keys (operator), integrations (operator or the bot's
//! admin key).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::auth::{Caller, bot_id};
use super::paging::{self, PageQuery};
use crate::crypto::{random_token, sha256_hex};
use crate::domain::IntegrationName;
use crate::domain::bot::{
    ApiKey, Bot, IdentityIssuer, Integration, KeyRole, Mode, ProfileRef, ProviderKind,
    SalesforceEnvironment, SalesforceSettings,
};
use crate::domain::session::Verification;
use crate::error::ApiError;
use crate::flow::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpUrl>)]
    webhook_url: Option<Url>,
    #[serde(default)]
    #[schema(value_type = Vec<super::contract::HostName>, max_items = 100)]
    allowed_return_hosts: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<super::contract::HostName>, max_items = 100)]
    allowed_webhook_hosts: Vec<String>,
    /// The MCP server's own authorization server, for `binding: oidc` sessions. Shown back with
    /// `client_secret_set` instead of the secret; `null` or absent removes it.
    #[serde(default)]
    identity_issuer: Option<IssuerBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerBody {
    /// https (or loopback http for a local trial); compared exactly with ID tokens' `iss`.
    #[schema(value_type = super::contract::HttpsUrl)]
    issuer: String,
    #[schema(min_length = 1, max_length = 512)]
    client_id: String,
    /// Required the first time; absent on update keeps the stored one, unless the issuer moves
    /// to another host (scheme, host, port): then it is required again.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    client_secret: Option<String>,
}

/// The bot as the API shows it: the issuer's secret is never returned.
fn bot_view(b: &Bot) -> Value {
    let mut v = json!(b);
    if let Some(i) = &b.identity_issuer {
        v["identity_issuer"] = json!({
            "issuer": i.issuer,
            "client_id": i.client_id,
            "client_secret_set": !i.client_secret_sealed.is_empty(),
        });
    }
    v
}

fn identity_issuer(
    state: &AppState,
    bot: &crate::domain::BotId,
    body: Option<IssuerBody>,
    existing: Option<&Bot>,
) -> Result<Option<IdentityIssuer>, ApiError> {
    let Some(b) = body else {
        return Ok(None);
    };
    let url = Url::parse(&b.issuer)
        .map_err(|e| ApiError::Invalid(format!("identity_issuer.issuer: {e}")))?;
    check_url(state, "identity_issuer.issuer", &url)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::Invalid(
            "identity_issuer.issuer must not have a query or fragment".into(),
        ));
    }
    if b.client_id.is_empty() || b.client_id.chars().count() > 512 {
        return Err(ApiError::Invalid(
            "identity_issuer.client_id must be 1-512 characters".into(),
        ));
    }
    // The issuer's discovery names the token endpoint the client secret goes to.
    let stored = existing
        .and_then(|e| e.identity_issuer.as_ref())
        .and_then(|i| Url::parse(&i.issuer).ok());
    if stored.is_some() {
        check_destinations(
            "identity_issuer.client_secret",
            b.client_secret.is_some(),
            stored.as_ref(),
            [("identity_issuer.issuer", &url)],
        )?;
    }
    let client_secret_sealed = match (
        b.client_secret,
        existing.and_then(|e| e.identity_issuer.as_ref()),
    ) {
        (Some(s), _) if s.is_empty() || s.chars().count() > 1024 => {
            return Err(ApiError::Invalid(
                "identity_issuer.client_secret must be 1-1024 characters".into(),
            ));
        }
        (Some(s), _) => state
            .config
            .encryption
            .seal(&IdentityIssuer::secret_aad(bot), s.as_bytes()),
        (None, Some(old)) => old.client_secret_sealed.clone(),
        (None, None) => {
            return Err(ApiError::Invalid(
                "identity_issuer.client_secret is required".into(),
            ));
        }
    };
    // Whoever sets an issuer may just have fixed its configuration: this replica looks again.
    state.issuers.forget(&b.issuer);
    Ok(Some(IdentityIssuer {
        issuer: b.issuer,
        client_id: b.client_id,
        client_secret_sealed,
    }))
}

/// A bot's or a profile's name: 1-200 characters (JSON Schema counts characters, so do we), not
/// all spaces, no control characters (it is shown on pages and in messages).
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "name must be 1-200 characters, without control characters".into(),
        ));
    }
    Ok(())
}

fn check_hosts(field: &str, hosts: &[String]) -> Result<(), ApiError> {
    let ok = |h: &str| {
        let h = h.strip_prefix("*.").unwrap_or(h);
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    match hosts.iter().find(|h| !ok(h)) {
        Some(bad) => Err(ApiError::Invalid(format!(
            "{field}: {bad:?} is not a host name (use example.com or *.example.com)"
        ))),
        None if hosts.len() > 100 => Err(ApiError::Invalid(format!("{field}: at most 100 hosts"))),
        None => Ok(()),
    }
}

/// A URL the daemon will call (a provider, an issuer, a chat API): https — plain http only for
/// loopback hosts in a local trial — no credentials in it, and (with
/// `webhooks.deny_private_networks`, on by default over https) no private or loopback host.
pub(crate) fn check_url(state: &AppState, field: &str, url: &Url) -> Result<(), ApiError> {
    check_url_for(state.config.is_https(), field, url)?;
    if state.config.webhooks.deny_private_networks && crate::webhook::names_private_host(url) {
        return Err(ApiError::Invalid(format!(
            "{field} must not point to a private or loopback address"
        )));
    }
    Ok(())
}

/// `check_url`'s shape rules for a daemon served over https (`https`) or plain http.
pub(crate) fn check_url_for(https: bool, field: &str, url: &Url) -> Result<(), ApiError> {
    // https outside local mode (a daemon served over plain http is a local trial).
    let ok = if https {
        url.scheme() == "https"
    } else {
        crate::config::secure_or_loopback(url) || url.scheme() == "https"
    };
    if !ok || url.host().is_none() {
        return Err(ApiError::Invalid(format!("{field} must be an https URL")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::Invalid(format!(
            "{field} must not contain credentials"
        )));
    }
    Ok(())
}

/// Secrets follow their destination: a stored secret (client secret, channel token) — and, for a
/// profile, its users' refresh tokens — goes only to hosts (scheme, host and port) that were set
/// by someone who sent that secret. An update without the secret may move a URL's path on a host
/// the record already uses, but not to another host: that needs `secret_field` again, in the same
/// update. Inductively, every host in a record was approved together with its secret, so an
/// admin who only holds a key cannot repoint a secret they never saw at a server of their own.
pub(crate) fn check_destinations<'a>(
    secret_field: &str,
    secret_sent: bool,
    stored: impl IntoIterator<Item = &'a Url>,
    updated: impl IntoIterator<Item = (&'a str, &'a Url)>,
) -> Result<(), ApiError> {
    if secret_sent {
        return Ok(());
    }
    let known: Vec<url::Origin> = stored.into_iter().map(Url::origin).collect();
    for (field, url) in updated {
        let origin = url.origin();
        if !known.contains(&origin) {
            return Err(ApiError::Invalid(format!(
                "{field} points to another host ({}) than the stored settings: send {secret_field} again in the same update",
                origin.ascii_serialization()
            )));
        }
    }
    Ok(())
}

/// Where webhooks may go, the one rule for a bot's and a session's `webhook_url`: http(s), no
/// credentials, and with `deny_private` (`webhooks.deny_private_networks`, on by default over
/// https) no private or loopback host as written. A name that resolves to such an address is
/// refused at delivery time, by the resolver (`webhook::PublicOnlyResolver`).
pub fn check_webhook_url(url: &Url, deny_private: bool) -> Result<(), ApiError> {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ApiError::Invalid(
            "webhook_url must be an http(s) URL".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::Invalid(
            "webhook_url must not contain credentials".into(),
        ));
    }
    if deny_private && crate::webhook::names_private_host(url) {
        return Err(ApiError::Invalid(
            "webhook_url must not point to a private or loopback address".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(operation_id = "admin_put_bot", put, path = "/v1/bots/{bot}", tag = "bots", summary = "Create or update a bot (operator)", params(super::contract::NewBotPath), request_body = BotBody, responses((status = 200, description = "updated: the bot"), (status = 201, description = "created: the bot"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn put_bot(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
    body: super::JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Creating a bot: a malformed id is a validation error, not a 404.
    let id = crate::domain::BotId::parse(&bot).map_err(|e| ApiError::Invalid(e.to_string()))?;
    caller.operator(&id)?;
    let body: BotBody = body.parse()?;
    check_name(&body.name)?;
    if let Some(url) = &body.webhook_url {
        check_webhook_url(url, state.config.webhooks.deny_private_networks)?;
    }
    check_hosts("allowed_return_hosts", &body.allowed_return_hosts)?;
    check_hosts("allowed_webhook_hosts", &body.allowed_webhook_hosts)?;
    let now = state.clock.now();
    let existing = state.store.get_bot(&id).await?;
    let identity_issuer = identity_issuer(&state, &id, body.identity_issuer, existing.as_deref())?;
    let bot = Bot {
        id,
        name: body.name.trim().to_owned(),
        webhook_url: body.webhook_url,
        allowed_return_hosts: body.allowed_return_hosts,
        allowed_webhook_hosts: body.allowed_webhook_hosts,
        // Updating the bot is how an operator re-enables endpoints disabled by a 410.
        disabled_webhooks: Vec::new(),
        identity_issuer,
        created_at: existing.as_ref().map_or(now, |b| b.created_at),
        updated_at: now,
    };
    state.store.put_bot(&bot).await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(bot_view(&bot))))
}

#[utoipa::path(operation_id = "admin_get_bot", get, path = "/v1/bots/{bot}", tag = "bots", summary = "Read a bot", params(super::contract::BotPath), responses((status = 200, description = "the bot"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn get_bot(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = bot_id(&bot)?;
    caller.runtime(&id)?;
    state
        .store
        .get_bot(&id)
        .await?
        .map(|b| Json(bot_view(&b)))
        .ok_or(ApiError::NotFound("bot"))
}

#[utoipa::path(operation_id = "admin_list_bots", get, path = "/v1/bots", tag = "bots", summary = "List the bots, sorted by id (operator)", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1-200, default 50"), ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]+$", description = "next_cursor of the previous page")), responses((status = 200, description = "{bots, next_cursor}"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn list_bots(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let page = paging::query(query)?.page(50, 200)?;
    let after = page.after(|a| crate::domain::BotId::parse(a).ok())?;
    let bots = state
        .store
        .list_bots(after.as_ref(), page.limit + 1)
        .await?;
    let (bots, next) = page.finish(bots, |b| b.id.as_str());
    Ok(Json(json!({
        "bots": bots.iter().map(bot_view).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[utoipa::path(operation_id = "admin_delete_bot", delete, path = "/v1/bots/{bot}", tag = "bots", summary = "Delete a bot with its keys and integrations (operator)", params(super::contract::NewBotPath), responses((status = 204, description = "deleted"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn delete_bot(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = bot_id(&bot)?;
    caller.operator(&id)?;
    super::deleted(state.store.delete_bot(&id).await?, "bot")
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    #[serde(default)]
    role: Option<KeyRole>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::Text>, max_length = 200)]
    name: Option<String>,
}

#[utoipa::path(operation_id = "admin_create_api_key", post, path = "/v1/bots/{bot}/api-keys", tag = "keys", summary = "Create a bot key, shown once (operator)", params(super::contract::BotPath), request_body(content = Option<KeyBody>, description = "optional: an empty body creates a runtime key"), responses((status = 201, description = "the key, shown once"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 413, description = "body over the limit"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
    super::RawBody(body): super::RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = bot_id(&bot)?;
    caller.operator(&id)?;
    super::existing_bot(&state, &id).await?;
    // The body is optional: an empty POST (or `null`) creates a runtime key.
    let body: KeyBody = if body.is_empty() {
        KeyBody::default()
    } else {
        super::contract::json_object::<Option<KeyBody>>(&body)?.unwrap_or_default()
    };
    if body
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        return Err(ApiError::Invalid(
            "name must be at most 200 characters, without control characters".into(),
        ));
    }
    let secret = format!("alk_{}", random_token::<32>());
    let key = ApiKey {
        id: format!("key_{}", random_token::<9>()),
        bot: id,
        role: body.role.unwrap_or(KeyRole::Runtime),
        name: body.name,
        hash: sha256_hex(secret.as_bytes()),
        created_at: state.clock.now(),
    };
    state.store.put_api_key(&key).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": key.id,
            "bot": key.bot,
            "role": key.role,
            "name": key.name,
            "created_at": crate::clock::rfc3339::format(key.created_at),
            "key": secret,
            "note": "the key is shown once; store it now",
        })),
    ))
}

fn key_view(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "bot": k.bot,
        "role": k.role,
        "name": k.name,
        "created_at": crate::clock::rfc3339::format(k.created_at),
    })
}

#[utoipa::path(operation_id = "admin_list_api_keys", get, path = "/v1/bots/{bot}/api-keys", tag = "keys", summary = "List a bot's keys, without secrets (admin)", params(super::contract::BotPath), responses((status = 200, description = "{keys}, without secrets"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = bot_id(&bot)?;
    caller.admin(&id)?;
    // A deleted (or never created) bot has no list, not an empty one.
    super::existing_bot(&state, &id).await?;
    let keys = state.store.list_api_keys(&id).await?;
    Ok(Json(
        json!({"keys": keys.iter().map(key_view).collect::<Vec<_>>() }),
    ))
}

#[utoipa::path(operation_id = "admin_delete_api_key", delete, path = "/v1/bots/{bot}/api-keys/{key}", tag = "keys", summary = "Revoke a key (admin)", params(super::contract::KeyPath), responses((status = 204, description = "revoked"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn delete_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = bot_id(&bot)?;
    caller.admin(&id)?;
    super::deleted(state.store.delete_api_key(&id, &key).await?, "api key")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationBody {
    provider: ProviderKind,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    #[schema(value_type = String, example = "system")]
    profile: ProfileRef,
    #[serde(default)]
    #[schema(value_type = Option<Vec<super::contract::Scope>>, max_items = 50)]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::contract::integer::option_u32")]
    #[schema(minimum = 60, maximum = 86_400)]
    link_ttl_seconds: Option<u32>,
    #[serde(default)]
    verification: Verification,
    #[serde(default)]
    salesforce: Option<SalesforceSettings>,
    /// What people see on the link page and in messages (1-100 characters, trimmed). Default:
    /// the provider's name ("Salesforce"); for `oauth2`, the integration's name.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^\\s*[^\\s\\u0000-\\u001f\\u007f-\\u009f]"
    )]
    display_name: Option<String>,
    /// `false`: no new sessions, links or tokens (connections are kept). Absent: unchanged
    /// (`true` for a new integration).
    #[serde(default)]
    enabled: Option<bool>,
}

/// A display name as given: trimmed, 1-100 characters, no control characters.
fn check_display_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let length = name.chars().count();
    if !(1..=100).contains(&length) || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "display_name must be 1-100 characters, without control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

pub fn check_scopes(scopes: &[String]) -> Result<(), ApiError> {
    let ok = |s: &String| {
        !s.is_empty()
            && s.len() <= 200
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    };
    if scopes.len() > 50 || !scopes.iter().all(ok) {
        return Err(ApiError::Invalid(
            "scopes must be at most 50 printable tokens without spaces".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(operation_id = "admin_put_integration", put, path = "/v1/bots/{bot}/integrations/{integration}", tag = "integrations", summary = "Configure an integration: provider, mode, app (admin)", params(super::contract::NewIntegrationPath), request_body = IntegrationBody, responses((status = 200, description = "updated: the integration"), (status = 201, description = "created: the integration"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn put_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, name)): Path<(String, String)>,
    body: super::JsonBody,
) -> Result<(StatusCode, Json<Integration>), ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let body: IntegrationBody = body.parse()?;
    let name = IntegrationName::parse(&name).map_err(|e| ApiError::Invalid(e.to_string()))?;
    super::existing_bot(&state, &bot).await?;
    if let Some(scopes) = &body.scopes {
        check_scopes(scopes)?;
    }
    if let Some(ttl) = body.link_ttl_seconds
        && !(60..=86_400).contains(&ttl)
    {
        return Err(ApiError::Invalid(
            "link_ttl_seconds must be 60-86400".into(),
        ));
    }
    if let Some(sf) = &body.salesforce {
        if body.provider != ProviderKind::Salesforce {
            return Err(ApiError::Invalid(
                "salesforce settings need provider salesforce".into(),
            ));
        }
        match (&sf.environment, &sf.host) {
            (SalesforceEnvironment::MyDomain, Some(h))
                if crate::oauth::salesforce::is_my_domain(h) => {}
            (SalesforceEnvironment::MyDomain, _) => {
                return Err(ApiError::Invalid(
                    "salesforce.host must be https://<name>.my.salesforce.com for my_domain".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(ApiError::Invalid(
                    "salesforce.host is only used with environment my_domain".into(),
                ));
            }
            _ => {}
        }
    }
    let display_name = body
        .display_name
        .as_deref()
        .map(check_display_name)
        .transpose()?;
    let now = state.clock.now();
    let existing = state.store.get_integration(&bot, &name).await?;
    let mut integration = Integration {
        bot,
        name,
        provider: body.provider,
        mode: body.mode,
        profile: body.profile,
        scopes: body.scopes,
        link_ttl_seconds: body.link_ttl_seconds,
        verification: body.verification,
        salesforce: body.salesforce,
        display_name,
        enabled: body
            .enabled
            .unwrap_or_else(|| existing.as_ref().is_none_or(|i| i.enabled)),
        created_at: existing.as_ref().map_or(now, |i| i.created_at),
        updated_at: now,
    };
    // Stored as shown: absent means the default, written down.
    integration.display_name = Some(integration.service_name());
    // The app must exist now, not fail later in the middle of someone's sign-in.
    crate::flow::provider::provider_for(&state, &integration)
        .await
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    state.store.put_integration(&integration).await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(integration)))
}

#[utoipa::path(operation_id = "admin_get_integration", get, path = "/v1/bots/{bot}/integrations/{integration}", tag = "integrations", summary = "Read an integration, with the callback URL to register", params(super::contract::IntegrationPath), responses((status = 200, description = "the integration, with its callback_url"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn get_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.runtime(&bot)?;
    let name = IntegrationName::parse(&name).map_err(|_| ApiError::NotFound("integration"))?;
    let integration = state
        .store
        .get_integration(&bot, &name)
        .await?
        .ok_or(ApiError::NotFound("integration"))?;
    Ok(Json(integration_view(&state, &integration).await))
}

/// An integration as the API shows it: with the name people see and the callback URL to
/// register at its app (when the app is configured).
async fn integration_view(state: &AppState, integration: &Integration) -> Value {
    let mut view = json!(integration);
    view["display_name"] = json!(integration.service_name());
    if let Ok(p) = crate::flow::provider::provider_for(state, integration).await {
        view["callback_url"] = json!(p.redirect_uri);
    }
    view
}

#[utoipa::path(operation_id = "admin_list_integrations", get, path = "/v1/bots/{bot}/integrations", tag = "integrations", summary = "List a bot's integrations, sorted by name (admin)", params(super::contract::BotPath), responses((status = 200, description = "{integrations}"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    super::existing_bot(&state, &bot).await?;
    let integrations = state.store.list_integrations(&bot).await?;
    let views =
        futures_util::future::join_all(integrations.iter().map(|i| integration_view(&state, i)))
            .await;
    Ok(Json(json!({ "integrations": views })))
}

#[utoipa::path(operation_id = "admin_delete_integration", delete, path = "/v1/bots/{bot}/integrations/{integration}", tag = "integrations", summary = "Delete an integration (admin)", params(super::contract::NewIntegrationPath), responses((status = 204, description = "deleted"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn delete_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let name = IntegrationName::parse(&name).map_err(|_| ApiError::NotFound("integration"))?;
    super::deleted(
        state.store.delete_integration(&bot, &name).await?,
        "integration",
    )
}

#[utoipa::path(operation_id = "admin_create_webhook_secret", post, path = "/v1/bots/{bot}/webhook-secrets", tag = "webhooks", summary = "Create a webhook signing secret, shown once (admin)", params(super::contract::BotPath), responses((status = 201, description = "the secret, shown once"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "at most 5 secrets")), security(("bearer" = [])))]
/// A new webhook signing secret (shown once). All of a bot's secrets sign every delivery, so a
/// rotation is: create the new one, deploy it at the receiver, delete the old one.
pub async fn create_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    super::existing_bot(&state, &bot).await?;
    if state.store.webhook_secrets(&bot).await?.len() >= 5 {
        return Err(ApiError::Conflict(
            "at most 5 webhook secrets; delete an old one first".into(),
        ));
    }
    let id = format!("whs_{}", random_token::<9>());
    let secret = crate::webhook::new_secret();
    let record = crate::domain::bot::WebhookSecret {
        sealed: state
            .config
            .encryption
            .seal(&format!("whsec|{bot}|{id}"), secret.as_bytes()),
        id,
        created_at: state.clock.now(),
    };
    state.store.put_webhook_secret(&bot, &record).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "secret": secret,
            "created_at": crate::clock::rfc3339::format(record.created_at),
            "note": "the secret is shown once; every active secret signs every delivery",
        })),
    ))
}

#[utoipa::path(operation_id = "admin_list_webhook_secrets", get, path = "/v1/bots/{bot}/webhook-secrets", tag = "webhooks", summary = "List webhook secrets, without secrets (admin)", params(super::contract::BotPath), responses((status = 200, description = "{secrets}, without secrets"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn list_webhook_secrets(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    super::existing_bot(&state, &bot).await?;
    let secrets = state.store.webhook_secrets(&bot).await?;
    Ok(Json(json!({
        "secrets": secrets.iter().map(|s| json!({"id": s.id, "created_at": crate::clock::rfc3339::format(s.created_at)})).collect::<Vec<_>>()
    })))
}

#[utoipa::path(operation_id = "admin_delete_webhook_secret", delete, path = "/v1/bots/{bot}/webhook-secrets/{id}", tag = "webhooks", summary = "Retire a webhook secret (admin)", params(super::contract::IdPath), responses((status = 204, description = "retired"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn delete_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    super::deleted(
        state.store.delete_webhook_secret(&bot, &id).await?,
        "webhook secret",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    state: Option<super::contract::DeliveryState>,
}

#[utoipa::path(operation_id = "admin_list_deliveries", get, path = "/v1/bots/{bot}/webhook-deliveries", tag = "webhooks", summary = "Dead letters (?state=dead) or queued deliveries (?state=pending) (admin)", params(super::contract::BotPath, ("state" = Option<super::contract::DeliveryState>, Query, description = "dead (default) or pending")), responses((status = 200, description = "{deliveries}"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    // An unknown parameter or state is a 400 problem (not axum's plain-text rejection).
    let q = query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    super::existing_bot(&state, &bot).await?;
    let dead = q.state != Some(super::contract::DeliveryState::Pending);
    let list = state.store.list_deliveries(&bot, dead, 500).await?;
    Ok(Json(json!({
        "deliveries": list.iter().map(|d| json!({
            "id": d.event.id,
            "type": d.event.kind,
            "session_id": d.event.data["session_id"],
            "url": d.event.webhook_url,
            "state": if d.dead { "dead" } else { "pending" },
            "attempts": d.failures,
            "last_error": d.last_error,
            "created_at": crate::clock::rfc3339::format(d.event.timestamp),
        })).collect::<Vec<_>>()
    })))
}

#[utoipa::path(operation_id = "admin_replay_delivery", post, path = "/v1/bots/{bot}/webhook-deliveries/{id}/replay", tag = "webhooks", summary = "Send a dead letter again (admin)", params(super::contract::IdPath), responses((status = 202, description = "queued again"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn replay_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    if state
        .store
        .replay_delivery(&bot, &id, state.clock.now())
        .await?
    {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::NotFound("dead letter"))
    }
}
