//! A person clicked a link button in Slack: the Slack app's Interactivity Request URL points
//! here, and the click's `response_url` is the only way to change an ephemeral message later.
//! Signed by Slack with the app's signing secret (checked before anything else); everything
//! that is not a click on one of this channel's own sessions, or whose `response_url` is not
//! Slack's, is acknowledged and ignored.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::RawBody;
use crate::channel::slack::{parse_click, response_url_allowed, verify_request};
use crate::domain::channel::{ChannelConfig, ChannelDelivery, ChannelName, ChannelSettings};
use crate::domain::{BotId, SessionId};
use crate::error::ApiError;
use crate::flow::AppState;

#[utoipa::path(operation_id = "channels_slack_interactions", post, path = "/channels/slack/{bot}/{name}/interactions", tag = "channels", summary = "Slack's Interactivity Request URL for a Slack channel with a signing secret (signed by Slack)", params(("bot" = String, Path), ("name" = String, Path)), responses((status = 200, description = "200: acknowledged"), (status = 401, description = "bad or stale Slack signature"), (status = "4XX", description = "problem+json (RFC 9457)")))]
pub async fn slack(
    State(state): State<AppState>,
    Path((bot, name)): Path<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    let (Ok(bot), Ok(name)) = (BotId::parse(&bot), ChannelName::parse(&name)) else {
        return Err(ApiError::NotFound("channel"));
    };
    let config = state
        .store
        .get_channel(&bot, &name)
        .await?
        .filter(|c| matches!(c.settings, ChannelSettings::Slack { .. }))
        .ok_or(ApiError::NotFound("channel"))?;
    let secret = config
        .signing_secret_sealed
        .as_deref()
        .and_then(|sealed| {
            let aad = ChannelConfig::signing_aad(&bot, &name);
            let plain = state.config.encryption.open(&aad, sealed).ok()?;
            String::from_utf8(plain).ok()
        })
        .ok_or(ApiError::NotFound("channel"))?;
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = state.clock.now().unix_timestamp();
    if !verify_request(
        &secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now,
    ) {
        return Err(ApiError::Unauthorized);
    }
    let Some(click) = parse_click(&body) else {
        return Ok(StatusCode::OK);
    };
    // A reply URL is a capability to post into the conversation, and authlink POSTs to it
    // later: only Slack's own hooks host (or the channel's own API host), over https (or
    // loopback, for a local trial served over http), and not a private address.
    let ChannelSettings::Slack { api_base_url } = &config.settings else {
        return Err(ApiError::NotFound("channel"));
    };
    let url = &click.response_url;
    let url_ok = (url.scheme() == "https"
        || (!state.config.is_https() && crate::config::secure_or_loopback(url)))
        && response_url_allowed(url, api_base_url)
        && !(state.config.webhooks.deny_private_networks
            && crate::webhook::names_private_host(url));
    let Ok(id) = SessionId::parse(&click.session) else {
        return Ok(StatusCode::OK);
    };
    let Some(session) = state.store.get_session(id).await? else {
        return Ok(StatusCode::OK);
    };
    let target = session.spec.channel.as_ref();
    let ours = session.spec.bot == bot
        && target.is_some_and(|t| t.name == name && t.user.as_deref() == Some(click.user.as_str()));
    if !ours || !url_ok {
        tracing::warn!(session_id = %id, "a Slack click that does not belong to this channel's session");
        return Ok(StatusCode::OK);
    }
    if let Some(delivery) = state.store.get_delivery(id).await? {
        let sealed = state.config.encryption.seal(
            &ChannelDelivery::reply_aad(&id),
            click.response_url.as_str().as_bytes(),
        );
        let updated = ChannelDelivery {
            reply_sealed: Some(sealed),
            ..delivery
        };
        state.store.put_delivery(id, &updated).await?;
        tracing::info!(session_id = %id, "Slack click recorded: the ephemeral message can be updated");
    }
    Ok(StatusCode::OK)
}
