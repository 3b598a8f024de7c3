//! A bot's chat channels (admin): where authlink may post the bot's links. Settings are checked
//! per type when they are written, so a delivery does not fail later for a reason known now;
//! the secret (bot token, app secret, access token) is write-only — sealed at rest with the
//! channel's name as associated data, never returned, replaced only when sent again. It follows
//! its destination: an update that moves one of the URLs it is sent to onto another host must
//! send it again (`admin::check_destinations`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::auth::{Caller, bot_id};
use crate::domain::BotId;
use crate::domain::channel::{ChannelConfig, ChannelName, ChannelSettings, WhatsappTemplate};
use crate::error::ApiError;
use crate::flow::AppState;

/// `PUT /v1/bots/{bot}/channels/{name}`: the type and its settings; the secret field is
/// required on creation, when the type changes, and when a URL it is sent to moves to another
/// host (scheme, host, port); it is kept when omitted otherwise.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelBody {
    Slack {
        /// `xoxb-…` (write-only).
        #[serde(default)]
        #[schema(pattern = "^xox[^\\u0000-\\u001f\\u007f-\\u009f]{0,509}$")]
        bot_token: Option<String>,
        /// The app's signing secret (write-only): with it, point the Slack app's Interactivity
        /// Request URL at `/channels/slack/{bot}/{name}/interactions`, and ephemeral link
        /// messages are updated too (through the click's `response_url`).
        #[serde(default)]
        #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$")]
        signing_secret: Option<String>,
        #[serde(default)]
        #[schema(value_type = Option<super::contract::HttpsUrl>)]
        api_base_url: Option<Url>,
    },
    Teams {
        /// The bot's Microsoft App ID.
        #[schema(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
        app_id: String,
        /// The app's client secret (write-only).
        #[serde(default)]
        #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,1024}$")]
        app_secret: Option<String>,
        /// A single-tenant app's tenant; omit for a multi-tenant app.
        #[serde(default)]
        #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
        tenant_id: Option<String>,
        #[serde(default)]
        #[schema(value_type = Option<super::contract::HttpsUrl>)]
        service_url: Option<Url>,
        #[serde(default)]
        #[schema(value_type = Option<super::contract::HttpsUrl>)]
        login_base_url: Option<Url>,
    },
    Telegram {
        /// `<bot id>:<secret>` from BotFather (write-only).
        #[serde(default)]
        #[schema(pattern = "^[0-9]{1,20}:[A-Za-z0-9_-]{20,200}$")]
        bot_token: Option<String>,
        #[serde(default)]
        #[schema(value_type = Option<super::contract::HttpsUrl>)]
        api_base_url: Option<Url>,
    },
    Whatsapp {
        /// A Cloud API system-user token (write-only).
        #[serde(default)]
        #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,2048}$")]
        access_token: Option<String>,
        #[schema(pattern = "^[0-9]{1,32}$")]
        phone_number_id: String,
        /// The approved template with a URL button, for recipients outside the 24-hour window.
        #[serde(default)]
        template: Option<WhatsappTemplate>,
        #[serde(default)]
        #[schema(value_type = Option<super::contract::HttpsUrl>)]
        api_base_url: Option<Url>,
    },
    Matrix {
        #[schema(value_type = super::contract::HttpsUrl)]
        homeserver_url: Url,
        /// The bot user's access token (write-only).
        #[serde(default)]
        #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,2048}$")]
        access_token: Option<String>,
    },
    Webhook {
        /// The channel gateway that receives signed `auth_link.issued` events.
        #[schema(value_type = super::contract::HttpsUrl)]
        url: Url,
    },
}

fn default_url(s: &str) -> Url {
    Url::parse(s).expect("static default URLs parse")
}

fn check_secret(field: &str, secret: &Option<String>, max: usize) -> Result<(), ApiError> {
    match secret {
        Some(s) if s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control) => {
            Err(ApiError::Invalid(format!(
                "{field} must be 1-{max} characters"
            )))
        }
        _ => Ok(()),
    }
}

fn token_like(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.is_empty()
        || v.len() > max
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::Invalid(format!(
            "{field} must be 1-{max} characters of letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// What a channel body asks to store: the settings, and the secrets sent with them.
struct Settled {
    settings: ChannelSettings,
    secret: Option<String>,
    signing_secret: Option<String>,
}

/// The settings to store and the secrets sent with them (if any), checked.
fn settle(state: &AppState, body: ChannelBody) -> Result<Settled, ApiError> {
    let url = |field: &str, v: Option<Url>, default: &str| -> Result<Url, ApiError> {
        let u = v.unwrap_or_else(|| default_url(default));
        super::admin::check_url(state, field, &u)?;
        Ok(u)
    };
    let mut signing_secret = None;
    let (settings, secret) = match body {
        ChannelBody::Slack {
            bot_token,
            signing_secret: signing,
            api_base_url,
        } => {
            check_secret("bot_token", &bot_token, 512)?;
            check_secret("signing_secret", &signing, 256)?;
            signing_secret = signing;
            if bot_token.as_deref().is_some_and(|t| !t.starts_with("xox")) {
                return Err(ApiError::Invalid(
                    "bot_token must be a Slack token (xoxb-…)".into(),
                ));
            }
            let api_base_url = url("api_base_url", api_base_url, "https://slack.com/api")?;
            (ChannelSettings::Slack { api_base_url }, bot_token)
        }
        ChannelBody::Teams {
            app_id,
            app_secret,
            tenant_id,
            service_url,
            login_base_url,
        } => {
            token_like("app_id", &app_id, 128)?;
            if let Some(t) = &tenant_id {
                token_like("tenant_id", t, 64)?;
            }
            check_secret("app_secret", &app_secret, 1024)?;
            let service_url = url(
                "service_url",
                service_url,
                "https://smba.trafficmanager.net/teams/",
            )?;
            let login_base_url = url(
                "login_base_url",
                login_base_url,
                "https://login.microsoftonline.com",
            )?;
            (
                ChannelSettings::Teams {
                    app_id,
                    tenant_id,
                    service_url,
                    login_base_url,
                },
                app_secret,
            )
        }
        ChannelBody::Telegram {
            bot_token,
            api_base_url,
        } => {
            if let Some(t) = &bot_token {
                crate::channel::telegram::check_token(t).map_err(ApiError::Invalid)?;
            }
            // Known now, not at the first delivery: Telegram would refuse every link button.
            crate::channel::telegram::check_link_host(&state.config.public_url)
                .map_err(ApiError::Invalid)?;
            let api_base_url = url("api_base_url", api_base_url, "https://api.telegram.org")?;
            (ChannelSettings::Telegram { api_base_url }, bot_token)
        }
        ChannelBody::Whatsapp {
            access_token,
            phone_number_id,
            template,
            api_base_url,
        } => {
            check_secret("access_token", &access_token, 2048)?;
            if phone_number_id.is_empty()
                || phone_number_id.len() > 32
                || !phone_number_id.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(ApiError::Invalid(
                    "phone_number_id must be the Cloud API's numeric phone number id".into(),
                ));
            }
            if let Some(t) = &template {
                if t.name.is_empty()
                    || t.name.len() > 512
                    || !t
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(ApiError::Invalid(
                        "template.name must be a WhatsApp template name (a-z, 0-9, _)".into(),
                    ));
                }
                if !(2..=15).contains(&t.language.len())
                    || !t
                        .language
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'_')
                {
                    return Err(ApiError::Invalid(
                        "template.language must be a language code like en_US".into(),
                    ));
                }
            }
            let api_base_url = url(
                "api_base_url",
                api_base_url,
                "https://graph.facebook.com/v23.0",
            )?;
            (
                ChannelSettings::Whatsapp {
                    phone_number_id,
                    template,
                    api_base_url,
                },
                access_token,
            )
        }
        ChannelBody::Matrix {
            homeserver_url,
            access_token,
        } => {
            check_secret("access_token", &access_token, 2048)?;
            super::admin::check_url(state, "homeserver_url", &homeserver_url)?;
            (ChannelSettings::Matrix { homeserver_url }, access_token)
        }
        ChannelBody::Webhook { url: gateway } => {
            super::admin::check_url(state, "url", &gateway)?;
            (ChannelSettings::Webhook { url: gateway }, None)
        }
    };
    Ok(Settled {
        settings,
        secret,
        signing_secret,
    })
}

fn view(state: &AppState, c: &ChannelConfig) -> Value {
    let mut v = serde_json::to_value(&c.settings).unwrap_or_default();
    v["name"] = json!(c.name);
    if !matches!(c.settings, ChannelSettings::Webhook { .. }) {
        v["secret_set"] = json!(c.secret_sealed.is_some());
    }
    if let ChannelSettings::Slack { .. } = c.settings {
        v["signing_secret_set"] = json!(c.signing_secret_sealed.is_some());
        let base = state.config.public_url.as_str().trim_end_matches('/');
        v["interactions_url"] = json!(format!(
            "{base}/channels/slack/{}/{}/interactions",
            c.bot, c.name
        ));
    }
    v["created_at"] = json!(crate::clock::rfc3339::format(c.created_at));
    v["updated_at"] = json!(crate::clock::rfc3339::format(c.updated_at));
    v
}

fn channel_name(s: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(s).map_err(|_| ApiError::NotFound("channel"))
}

async fn bot_exists(state: &AppState, bot: &BotId) -> Result<(), ApiError> {
    state
        .store
        .get_bot(bot)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound("bot"))
}

#[utoipa::path(operation_id = "channels_put", put, path = "/v1/bots/{bot}/channels/{name}", tag = "channels", summary = "Create or update a chat channel; its secret is write-only (admin)", params(super::contract::ChannelPath), request_body = ChannelBody, responses((status = 200, description = "updated: the channel"), (status = 201, description = "created: the channel"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource"), (status = 400, description = "malformed request (unreadable body, bad JSON or query)"), (status = 413, description = "body over the limit"), (status = 415, description = "not application/json"), (status = 422, description = "validation failed (the detail names the field)")), security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, name)): Path<(String, String)>,
    body: super::JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let name = ChannelName::parse(&name).map_err(|e| ApiError::Invalid(e.to_string()))?;
    if name.is_webchat() {
        return Err(ApiError::Invalid(
            "webchat is built in and needs no configuration".into(),
        ));
    }
    let body: ChannelBody = body.parse()?;
    bot_exists(&state, &bot).await?;
    let Settled {
        settings,
        secret,
        signing_secret,
    } = settle(&state, body)?;
    let existing = state.store.get_channel(&bot, &name).await?;
    let aad = ChannelConfig::secret_aad(&bot, &name);
    let same_type = existing
        .as_ref()
        .is_some_and(|e| e.settings.kind() == settings.kind());
    if let Some(old) = existing.as_ref().filter(|_| same_type) {
        super::admin::check_destinations(
            settings.secret_field(),
            secret.is_some(),
            old.settings
                .secret_destinations()
                .into_iter()
                .map(|(_, u)| u),
            settings.secret_destinations(),
        )?;
    }
    let secret_sealed = match (secret, &existing) {
        (Some(s), _) => Some(state.config.encryption.seal(&aad, s.as_bytes())),
        (None, _) if matches!(settings, ChannelSettings::Webhook { .. }) => None,
        (None, Some(old)) if same_type => old.secret_sealed.clone(),
        (None, _) => {
            return Err(ApiError::Invalid(format!(
                "{} is required for a new {} channel",
                settings.secret_field(),
                settings.kind().as_str()
            )));
        }
    };
    let signing_secret_sealed = match (signing_secret, &existing) {
        (Some(s), _) => Some(
            state
                .config
                .encryption
                .seal(&ChannelConfig::signing_aad(&bot, &name), s.as_bytes()),
        ),
        (None, Some(old)) if same_type => old.signing_secret_sealed.clone(),
        (None, _) => None,
    };
    let now = state.clock.now();
    let channel = ChannelConfig {
        bot,
        name,
        settings,
        secret_sealed,
        signing_secret_sealed,
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
    };
    state.store.put_channel(&channel).await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view(&state, &channel))))
}

#[utoipa::path(operation_id = "channels_get", get, path = "/v1/bots/{bot}/channels/{name}", tag = "channels", summary = "Read a chat channel, without its secret (admin)", params(super::contract::ChannelPath), responses((status = 200, description = "the channel, without its secret"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let name = channel_name(&name)?;
    let c = state
        .store
        .get_channel(&bot, &name)
        .await?
        .ok_or(ApiError::NotFound("channel"))?;
    Ok(Json(view(&state, &c)))
}

#[utoipa::path(operation_id = "channels_delete", delete, path = "/v1/bots/{bot}/channels/{name}", tag = "channels", summary = "Delete a chat channel (admin)", params(super::contract::ChannelPath), responses((status = 204, description = "deleted"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((bot, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    let name = channel_name(&name)?;
    super::deleted(state.store.delete_channel(&bot, &name).await?, "channel")
}

#[utoipa::path(operation_id = "channels_list", get, path = "/v1/bots/{bot}/channels", tag = "channels", summary = "List chat channels (admin)", params(super::contract::BotPath), responses((status = 200, description = "{channels}"), (status = 403, description = "this key may not do that (a bot key where the operator or an admin key is needed)"), (status = 404, description = "no such bot (or another bot's), or no such resource")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let bot = bot_id(&bot)?;
    caller.admin(&bot)?;
    // A deleted (or never created) bot has no list, not an empty one.
    super::existing_bot(&state, &bot).await?;
    let channels = state.store.list_channels(&bot).await?;
    Ok(Json(
        json!({"channels": channels.iter().map(|c| view(&state, c)).collect::<Vec<_>>()}),
    ))
}
