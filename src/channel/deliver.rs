//! A session's link is delivered — and later its message updated — by the outbox worker handing
//! each channel item here. Sending: the link message goes to the session's channel; the outcome
//! (`sent` with the channel's message id, or `failed` with the channel's error code) is recorded
//! on the session and announced to the bot's webhook (`auth_link.delivered` /
//! `auth_link.delivery_failed`) in one store step that also retires the item. A failed delivery
//! does not fail the session. Updating: once the session settled, the posted message is changed
//! to say how it ended. Retries follow the channel's own rate-limit signal, else a short
//! schedule, for as long as the session lives.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;

use super::message::{LinkMessage, settled_text};
use super::{Channel, ChannelError};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::SessionId;
use crate::domain::attempt::Attempt;
use crate::domain::channel::{
    ChannelConfig, ChannelDelivery, ChannelSettings, DeliveryError, DeliveryStatus,
};
use crate::domain::event::{ChannelJob, Event};
use crate::domain::session::{Session, Status};
use crate::store::{Delivery, Store, StoreError};

/// Waits between attempts when the channel gave no signal of its own; after the last one the
/// delivery fails with the channel's last error.
const SCHEDULE: [Duration; 8] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
];
/// How long an update waits for its link message to be sent first.
const AWAIT_SEND: Duration = Duration::from_millis(500);

pub struct ChannelSender {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    clock: Clock,
    http: crate::outbound::HttpClient,
    /// Bot Framework tokens, per channel and credential, cached until shortly before they
    /// expire.
    teams_tokens: super::teams::TokenCache,
}

impl ChannelSender {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Clock) -> Self {
        Self {
            http: crate::webhook::send::http_client(&config),
            teams_tokens: super::teams::TokenCache::default(),
            store,
            config,
            clock,
        }
    }

    /// One attempt at a channel item of the outbox.
    pub async fn attempt(&self, item: &Delivery) -> Attempt {
        match self.try_attempt(item).await {
            Ok(attempt) => attempt,
            // The store is down: the item stays queued and is tried again.
            Err(e) => Attempt::Failed {
                error: format!("store: {e}"),
                retry_after: None,
                permanent: false,
            },
        }
    }

    async fn try_attempt(&self, item: &Delivery) -> Result<Attempt, StoreError> {
        let session = match item.event.data["session_id"]
            .as_str()
            .and_then(|s| SessionId::parse(s).ok())
        {
            Some(id) => self.store.get_session(id).await?,
            None => None,
        };
        // The session is gone (or the item malformed): nothing left to deliver.
        let Some(session) = session else {
            return Ok(Attempt::Delivered);
        };
        match item.event.channel {
            Some(ChannelJob::Send) => self.send(item, &session).await,
            Some(ChannelJob::Update) => self.update(item, &session).await,
            None => Ok(Attempt::Delivered),
        }
    }

    async fn send(&self, item: &Delivery, session: &Session) -> Result<Attempt, StoreError> {
        let spec = &session.spec;
        let Some(target) = spec.channel.as_ref() else {
            return Ok(Attempt::Delivered);
        };
        let now = self.clock.now();
        if session.status_at(now).is_final() {
            let error = DeliveryError {
                code: "session_ended".into(),
                description: format!(
                    "the session was {} before its link could be delivered{}",
                    session.status_at(now).as_str(),
                    item.last_error
                        .as_deref()
                        .map(|e| format!(" (last attempt: {e})"))
                        .unwrap_or_default()
                ),
            };
            return self.failed(item, session, "unknown", error, now).await;
        }
        let (kind, channel) = match self.open(session).await? {
            Ok(opened) => opened,
            Err(error) => return self.failed(item, session, "unknown", error, now).await,
        };
        let bot_name = match self.store.get_bot(&spec.bot).await? {
            Some(bot) => bot.name.clone(),
            None => return Ok(Attempt::Delivered),
        };
        let url = crate::domain::link::url(
            &self.config.public_url,
            &self.config.signing,
            spec.id,
            spec.expires_at,
        );
        let message = LinkMessage::new(session, &bot_name, url);
        let key = format!("authlink-{}-send", spec.id);
        let started = std::time::Instant::now();
        let result = channel.send(target, &message, &key).await;
        metrics::histogram!("authlink_channel_request_seconds", "type" => kind)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(message_ref) => {
                let state = ChannelDelivery {
                    status: DeliveryStatus::Sent,
                    message_ref: Some(message_ref),
                    ..ChannelDelivery::queued(target.name.clone())
                };
                let event = Event::for_delivery(session, "auth_link.delivered", &state, now);
                self.store
                    .record_delivery(item, spec.id, &state, Some(&event), now)
                    .await?;
                metrics::counter!("authlink_channel_deliveries_total", "type" => kind, "action" => "send", "outcome" => "sent").increment(1);
                tracing::info!(session_id = %spec.id, channel = %target.name, attempt = item.failures + 1, "auth link delivered");
                Ok(Attempt::Delivered)
            }
            Err(ChannelError::Permanent { code, description }) => {
                let error = DeliveryError { code, description };
                self.failed(item, session, kind, error, now).await
            }
            Err(ChannelError::Retry { code, retry_after }) => {
                metrics::counter!("authlink_channel_deliveries_total", "type" => kind, "action" => "send", "outcome" => "retry").increment(1);
                self.again(item, session, kind, code, retry_after, now)
                    .await
            }
        }
    }

    /// The delivery failed for good: recorded and announced; the session goes on.
    async fn failed(
        &self,
        item: &Delivery,
        session: &Session,
        kind: &'static str,
        error: DeliveryError,
        now: OffsetDateTime,
    ) -> Result<Attempt, StoreError> {
        let spec = &session.spec;
        let Some(target) = spec.channel.as_ref() else {
            return Ok(Attempt::Delivered);
        };
        tracing::warn!(session_id = %spec.id, channel = %target.name, code = %error.code, "auth link delivery failed");
        metrics::counter!("authlink_channel_deliveries_total", "type" => kind, "action" => "send", "outcome" => "failed").increment(1);
        let state = ChannelDelivery {
            status: DeliveryStatus::Failed,
            error: Some(error),
            ..ChannelDelivery::queued(target.name.clone())
        };
        let event = Event::for_delivery(session, "auth_link.delivery_failed", &state, now);
        self.store
            .record_delivery(item, spec.id, &state, Some(&event), now)
            .await?;
        Ok(Attempt::Delivered)
    }

    /// A transient failure: try again after the channel's signal or the schedule — unless the
    /// schedule is used up, then the delivery fails with the channel's last code.
    async fn again(
        &self,
        item: &Delivery,
        session: &Session,
        kind: &'static str,
        code: String,
        retry_after: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<Attempt, StoreError> {
        let Some(wait) = SCHEDULE.get(item.failures as usize) else {
            let error = DeliveryError {
                description: format!("still failing after {} attempts", item.failures + 1),
                code,
            };
            return self.failed(item, session, kind, error, now).await;
        };
        tracing::info!(session_id = %session.spec.id, code = %code, attempt = item.failures + 1, "channel delivery will be retried");
        Ok(Attempt::Failed {
            error: code,
            retry_after: Some(retry_after.unwrap_or(*wait)),
            permanent: false,
        })
    }

    async fn update(&self, item: &Delivery, session: &Session) -> Result<Attempt, StoreError> {
        let spec = &session.spec;
        let (Some(target), Some(state)) = (
            spec.channel.as_ref(),
            self.store.get_delivery(spec.id).await?,
        ) else {
            return Ok(Attempt::Delivered);
        };
        let now = self.clock.now();
        let message_ref = match (state.status, &state.message_ref) {
            (DeliveryStatus::Sent, Some(r)) => r.clone(),
            (DeliveryStatus::Queued, _) if (item.failures as usize) < 100 => {
                // The link is still on its way: update it once it has been posted.
                return Ok(Attempt::Failed {
                    error: "the link message is not posted yet".into(),
                    retry_after: Some(AWAIT_SEND),
                    permanent: false,
                });
            }
            _ => return Ok(Attempt::Delivered),
        };
        let (kind, channel) = match self.open(session).await? {
            Ok(opened) => opened,
            Err(_) => return Ok(Attempt::Delivered),
        };
        let identity = match session.status {
            Status::Completed => self
                .store
                .get_grant(&spec.bot, &spec.integration, &spec.subject)
                .await?
                .map(|g| g.identity),
            _ => None,
        };
        let text = settled_text(session, identity.as_ref());
        let key = format!("authlink-{}-update", spec.id);
        let reply_url = state.reply_sealed.as_deref().and_then(|sealed| {
            let aad = ChannelDelivery::reply_aad(&spec.id);
            let plain = self.config.encryption.open(&aad, sealed).ok()?;
            String::from_utf8(plain).ok().map(SecretString::from)
        });
        let posted = super::Posted {
            message_ref: &message_ref,
            reply_url,
        };
        match channel.update(target, &posted, &text, &key).await {
            Ok(changed) => {
                let state = ChannelDelivery {
                    updated: changed,
                    ..state
                };
                self.store
                    .record_delivery(item, spec.id, &state, None, now)
                    .await?;
                metrics::counter!("authlink_channel_deliveries_total", "type" => kind, "action" => "update", "outcome" => if changed { "sent" } else { "unsupported" }).increment(1);
                Ok(Attempt::Delivered)
            }
            Err(ChannelError::Permanent { code, .. }) => {
                tracing::warn!(session_id = %spec.id, channel = %target.name, %code, "the link message could not be updated");
                metrics::counter!("authlink_channel_deliveries_total", "type" => kind, "action" => "update", "outcome" => "failed").increment(1);
                Ok(Attempt::Delivered)
            }
            Err(ChannelError::Retry { code, retry_after }) => {
                match SCHEDULE.get(item.failures as usize) {
                    Some(wait) => Ok(Attempt::Failed {
                        error: code,
                        retry_after: Some(retry_after.unwrap_or(*wait)),
                        permanent: false,
                    }),
                    None => Ok(Attempt::Delivered),
                }
            }
        }
    }

    /// The session's channel, ready to post; or why it cannot be used.
    async fn open(
        &self,
        session: &Session,
    ) -> Result<Result<(&'static str, Box<dyn Channel + '_>), DeliveryError>, StoreError> {
        let spec = &session.spec;
        let Some(target) = spec.channel.as_ref() else {
            return Ok(Err(DeliveryError {
                code: "channel_not_configured".into(),
                description: "the session has no channel".into(),
            }));
        };
        let Some(config) = self.store.get_channel(&spec.bot, &target.name).await? else {
            return Ok(Err(DeliveryError {
                code: "channel_not_configured".into(),
                description: format!("the bot has no channel named {}", target.name),
            }));
        };
        let secret = match &config.secret_sealed {
            Some(sealed) => {
                let aad = ChannelConfig::secret_aad(&config.bot, &config.name);
                match self.config.encryption.open(&aad, sealed) {
                    Ok(plain) => match String::from_utf8(plain) {
                        Ok(s) => Some(SecretString::from(s)),
                        Err(_) => None,
                    },
                    Err(_) => None,
                }
            }
            None => None,
        };
        let needs_secret = !matches!(config.settings, ChannelSettings::Webhook { .. });
        let Some(secret) = secret.or_else(|| (!needs_secret).then(|| SecretString::from("")))
        else {
            return Ok(Err(DeliveryError {
                code: "secret_unreadable".into(),
                description: "the channel's secret cannot be opened with the configured keys"
                    .into(),
            }));
        };
        let kind = config.settings.kind().as_str();
        Ok(Ok((kind, self.adapter(config, secret, session))))
    }

    fn adapter(
        &self,
        config: ChannelConfig,
        secret: SecretString,
        session: &Session,
    ) -> Box<dyn Channel + '_> {
        let http = self.http.clone();
        match config.settings {
            ChannelSettings::Slack { api_base_url } => Box::new(super::slack::Slack {
                http,
                api_base_url,
                token: secret,
            }),
            ChannelSettings::Telegram { api_base_url } => Box::new(super::telegram::Telegram {
                http,
                api_base_url,
                token: secret,
            }),
            ChannelSettings::Matrix { homeserver_url } => Box::new(super::matrix::Matrix {
                http,
                homeserver_url,
                token: secret,
            }),
            ChannelSettings::Whatsapp {
                phone_number_id,
                template,
                api_base_url,
            } => Box::new(super::whatsapp::Whatsapp {
                http,
                api_base_url,
                phone_number_id,
                template,
                token: secret,
            }),
            ChannelSettings::Teams {
                app_id,
                tenant_id,
                service_url,
                login_base_url,
            } => Box::new(super::teams::Teams {
                http,
                bot: config.bot,
                channel: config.name,
                app_id,
                tenant_id,
                service_url,
                login_base_url,
                secret,
                tokens: &self.teams_tokens,
            }),
            ChannelSettings::Webhook { url } => Box::new(super::webhook::Gateway {
                http,
                url,
                bot: config.bot,
                session: session.clone(),
                store: &*self.store,
                config: &self.config,
                clock: &self.clock,
            }),
        }
    }
}
