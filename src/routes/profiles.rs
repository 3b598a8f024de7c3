//! Custom authorization profiles ("OAuth – Custom"): a bot's own OAuth app. The client secret is
//! write-only — sealed at rest, never returned, replaced only by an explicit update, and needed
//! again when an update moves a URL to another host (the secret, and users' refresh tokens, would
//! follow it there: `admin::check_destinations`). Each profile has its own callback URL (mix-up
//! defence), shown so it can be registered at the provider.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::admin::{check_scopes, check_url};
use super::auth::{Caller, bot_id};
use crate::clock;
use crate::crypto::random_token;
use crate::domain::bot::{AuthProfile, ClientAuth, ProfileRef};
use crate::error::ApiError;
use crate::flow::AppState;
use crate::oauth::callback_url;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    #[serde(rename = "type", default)]
    #[schema(pattern = "^oauth2$")]
    kind: Option<String>,
    #[schema(min_length = 1, max_length = 512)]
    client_id: String,
    /// Required on create; on update, absent keeps the stored secret — unless a URL moves to a
    /// host (scheme, host, port) the profile does not use yet: then it is required again.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    client_secret: Option<String>,
    #[schema(value_type = super::contract::HttpsUrl)]
    authorization_url: Url,
    #[schema(value_type = super::contract::HttpsUrl)]
    token_url: Url,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpsUrl>)]
    refresh_token_url: Option<Url>,
    #[serde(default)]
    #[schema(value_type = Vec<super::contract::Scope>, max_items = 50)]
    scopes: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpsUrl>)]
    revoke_url: Option<Url>,
    #[serde(default)]
    #[schema(value_type = Option<super::contract::HttpsUrl>)]
    userinfo_url: Option<Url>,
    #[serde(default)]
    /// At most 20, none of the protocol's own parameters (`response_type`, `state`, …).
    extra_authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    client_auth: ClientAuth,
}

fn validate(state: &AppState, b: &ProfileBody) -> Result<(), ApiError> {
    if b.kind.as_deref().is_some_and(|k| k != "oauth2") {
        return Err(ApiError::Invalid("type must be oauth2".into()));
    }
    super::admin::check_name(&b.name)?;
    if b.client_id.is_empty() || b.client_id.chars().count() > 512 {
        return Err(ApiError::Invalid(
            "client_id must be 1-512 characters".into(),
        ));
    }
    if b.client_secret
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.chars().count() > 1024)
    {
        return Err(ApiError::Invalid(
            "client_secret must be 1-1024 characters".into(),
        ));
    }
    check_url(state, "authorization_url", &b.authorization_url)?;
    check_url(state, "token_url", &b.token_url)?;
    for (field, url) in [
        ("refresh_token_url", &b.refresh_token_url),
        ("revoke_url", &b.revoke_url),
        ("userinfo_url", &b.userinfo_url),
    ] {
        if let Some(u) = url {
            check_url(state, field, u)?;
        }
    }
    check_scopes(&b.scopes)?;
    if b.extra_authorize_params.len() > 20
        || b.extra_authorize_params
            .keys()
            .any(|k| super::contract::RESERVED_PARAMS.contains(&k.as_str()) || k.is_empty())
    {
        return Err(ApiError::Invalid(
            "extra_authorize_params: at most 20, and not the protocol's own parameters".into(),
        ));
    }
    Ok(())
}

fn view(state: &AppState, p: &AuthProfile) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "type": "oauth2",
        "client_id": p.client_id,
        "client_secret_set": !p.client_secret_sealed.is_empty(),
        "authorization_url": p.authorization_url,
        "token_url": p.token_url,
        "refresh_token_url": p.refresh_token_url.as_ref().unwrap_or(&p.token_url),
        "scopes": p.scopes,
        "revoke_url": p.revoke_url,
        "userinfo_url": p.userinfo_url,
        "extra_authorize_params": p.extra_authorize_params,
        "client_auth": p.client_auth,
        "callback_url": callback_url(&state.config.public_url, &p.id),
        "created_at": clock::rfc3339::format(p.created_at),
        "updated_at": clock::rfc3339::format(p.updated_at),
    })
}

fn build(
    state: &AppState,
    bot: &crate::domain::BotId,
    id: String,
    b: ProfileBody,
    sealed: Option<String>,
    created_at: Option<time::OffsetDateTime>,
) -> Result<AuthProfile, ApiError> {
    let now = state.clock.now();
    let client_secret_sealed = match (b.client_secret, sealed) {
        (Some(secret), _) => state
            .config
            .encryption
            .seal(&AuthProfile::secret_aad(bot, &id), secret.as_bytes()),
        (None, Some(old)) => old,
        (None, None) => return Err(ApiError::Invalid("client_secret is required".into())),
    };
    Ok(AuthProfile {
        id,
        bot: bot.clone(),
        name: b.name.trim().to_owned(),
        client_id: b.client_id,
        client_secret_sealed,
        authorization_url: b.authorization_url,
        token_url: b.token_url,
        refresh_token_url: b.refresh_token_url,
        scopes: b.scopes,
        revoke_url: b.revoke_url,
        userinfo_url: b.userinfo_url,
        extra_authorize_params: b.extra_authorize_params,
        client_auth: b.client_auth,
        created_at: created_at.unwrap_or(now),
        updated_at: now,
    })
}

#[utoipa::path(operation_id = "profiles_create", post, path = "/v1/bots/{bot}/auth-profiles", tag = "profiles", summary = "Create a custom OAuth app; the secret is write-only (admin)", params(super::contract::BotPath), request_body = ProfileBody, responses((status = 201, description = "the profile with its callback URL"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
    body: super::JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let body: ProfileBody = body.parse()?;
    super::existing_bot(&state, &bot).await?;
    validate(&state, &body)?;
    let profile = build(
        &state,
        &bot,
        format!("prof_{}", random_token::<9>().replace(['-', '_'], "x")),
        body,
        None,
        None,
    )?;
    state.store.put_profile(&profile).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &profile))))
}

#[utoipa::path(operation_id = "profiles_list", get, path = "/v1/bots/{bot}/auth-profiles", tag = "profiles", summary = "List custom apps (admin)", params(super::contract::BotPath), responses((status = 200, description = "{profiles}"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    // A deleted (or never created) bot has no list, not an empty one.
    super::existing_bot(&state, &bot).await?;
    let profiles = state.store.list_profiles(&bot).await?;
    Ok(Json(
        json!({"profiles": profiles.iter().map(|p| view(&state, p)).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(operation_id = "profiles_get", get, path = "/v1/bots/{bot}/auth-profiles/{id}", tag = "profiles", summary = "Read a custom app (admin)", params(super::contract::IdPath), responses((status = 200, description = "the profile"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let p = state
        .store
        .get_profile(&bot, &id)
        .await?
        .ok_or(ApiError::NotFound("authorization profile"))?;
    Ok(Json(view(&state, &p)))
}

#[utoipa::path(operation_id = "profiles_update", put, path = "/v1/bots/{bot}/auth-profiles/{id}", tag = "profiles", summary = "Update a custom app; omit client_secret to keep it (admin)", params(super::contract::IdPath), request_body = ProfileBody, responses((status = 200, description = "the profile"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
    body: super::JsonBody,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let old = state
        .store
        .get_profile(&bot, &id)
        .await?
        .ok_or(ApiError::NotFound("authorization profile"))?;
    let body: ProfileBody = body.parse()?;
    validate(&state, &body)?;
    // The client secret goes to the token, refresh and revoke URLs, users' refresh tokens to the
    // refresh and revoke URLs, their access tokens to the userinfo URL.
    let stored = [&old.authorization_url, &old.token_url]
        .into_iter()
        .chain(old.refresh_token_url.as_ref())
        .chain(old.revoke_url.as_ref())
        .chain(old.userinfo_url.as_ref());
    let updated = [
        ("authorization_url", &body.authorization_url),
        ("token_url", &body.token_url),
    ]
    .into_iter()
    .chain(
        body.refresh_token_url
            .as_ref()
            .map(|u| ("refresh_token_url", u)),
    )
    .chain(body.revoke_url.as_ref().map(|u| ("revoke_url", u)))
    .chain(body.userinfo_url.as_ref().map(|u| ("userinfo_url", u)));
    super::admin::check_destinations(
        "client_secret",
        body.client_secret.is_some(),
        stored,
        updated,
    )?;
    let profile = build(
        &state,
        &bot,
        id,
        body,
        Some(old.client_secret_sealed),
        Some(old.created_at),
    )?;
    state.store.put_profile(&profile).await?;
    Ok(Json(view(&state, &profile)))
}

#[utoipa::path(operation_id = "profiles_delete", delete, path = "/v1/bots/{bot}/auth-profiles/{id}", tag = "profiles", summary = "Delete an unused custom app (admin)", params(super::contract::IdPath), responses((status = 204, description = "deleted"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 409, description = "an integration uses it")), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let using: Vec<String> = state
        .store
        .list_integrations(&bot)
        .await?
        .into_iter()
        .filter(|i| i.profile == ProfileRef::Custom(id.clone()))
        .map(|i| i.name.to_string())
        .collect();
    if !using.is_empty() {
        return Err(ApiError::Conflict(format!(
            "the profile is used by integration(s) {}; change them first",
            using.join(", ")
        )));
    }
    super::deleted(
        state.store.delete_profile(&bot, &id).await?,
        "authorization profile",
    )
}
