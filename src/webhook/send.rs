//! One webhook delivery attempt: the event signed with every active secret of its bot (Standard
//! Webhooks v1) and POSTed, no redirects followed; `410 Gone` disables the endpoint for the bot.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::{PublicOnlyResolver, names_private_host, sign};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::BotId;
use crate::domain::attempt::Attempt;
use crate::domain::bot::DisabledEndpoint;
use crate::outbound::HttpClient;
use crate::store::{Delivery, Store, StoreError};

/// The HTTP client for webhooks and chat channels: no redirects, bounded time, answers read up
/// to the cap, and (in production) a resolver that refuses private addresses.
pub fn http_client(config: &Config) -> HttpClient {
    let w = &config.webhooks;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(w.request_timeout)
        .connect_timeout(w.request_timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("authlink-webhooks/", env!("CARGO_PKG_VERSION")));
    if w.deny_private_networks {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    let client = builder
        .build()
        .expect("static reqwest configuration is valid");
    HttpClient::new(client, config.max_response_body)
}

/// `webhook-signature`'s entries for `body`: one per active secret of `bot`.
pub async fn signatures(
    store: &dyn Store,
    config: &Config,
    bot_id: &BotId,
    id: &str,
    ts: i64,
    body: &str,
) -> Result<Vec<String>, StoreError> {
    let secrets = store.webhook_secrets(bot_id).await?;
    Ok(secrets
        .iter()
        .filter_map(|s| {
            let aad = format!("whsec|{bot_id}|{}", s.id);
            let secret = config.encryption.open(&aad, &s.sealed).ok()?;
            let secret = secrecy::SecretString::from(String::from_utf8(secret).ok()?);
            sign(secret.expose_secret(), id, ts, body)
        })
        .collect())
}

pub struct WebhookSender {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    clock: Clock,
    http: HttpClient,
}

impl WebhookSender {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Clock) -> Self {
        Self {
            http: http_client(&config),
            store,
            config,
            clock,
        }
    }

    pub async fn attempt(&self, bot_id: &BotId, d: &Delivery) -> Attempt {
        let Some(url) = d.event.webhook_url.clone() else {
            return Attempt::Delivered;
        };
        let failed = |error: String| Attempt::Failed {
            error,
            retry_after: None,
            permanent: false,
        };
        let bot = match self.store.get_bot(bot_id).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Attempt::Failed {
                    error: "the bot was deleted".into(),
                    retry_after: None,
                    permanent: true,
                };
            }
            Err(e) => return failed(format!("store: {e}")),
        };
        if bot.disabled_webhooks.iter().any(|e| e.url == url) {
            return Attempt::Failed {
                error: "endpoint disabled after 410 Gone; update the bot to re-enable it".into(),
                retry_after: None,
                permanent: true,
            };
        }
        if self.config.webhooks.deny_private_networks && names_private_host(&url) {
            return failed("webhook URL points to a private address".into());
        }
        let body = d.event.body();
        let ts = self.clock.now().unix_timestamp();
        let signatures =
            match signatures(&*self.store, &self.config, bot_id, &d.event.id, ts, &body).await {
                Ok(s) => s,
                Err(e) => return failed(format!("store: {e}")),
            };
        if signatures.is_empty() {
            return failed(
                "the bot has no webhook secret: POST /v1/bots/{bot}/webhook-secrets".into(),
            );
        }
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) => {
                let status = r.status();
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let gone = status == reqwest::StatusCode::GONE;
                if gone {
                    self.disable(bot_id, d, self.clock.now()).await;
                }
                Attempt::Failed {
                    error: format!("endpoint answered {status}"),
                    retry_after,
                    permanent: gone,
                }
            }
            Err(e) => failed(format!("request failed: {}", e.without_url())),
        }
    }

    /// Remember that the endpoint answered 410; nothing more is sent there until the bot is
    /// updated.
    async fn disable(&self, bot_id: &BotId, d: &Delivery, now: OffsetDateTime) {
        let Some(url) = d.event.webhook_url.clone() else {
            return;
        };
        if let Ok(Some(bot)) = self.store.get_bot(bot_id).await
            && !bot.disabled_webhooks.iter().any(|e| e.url == url)
        {
            tracing::warn!(%url, "webhook endpoint answered 410 Gone; disabled for this bot");
            let mut bot = std::sync::Arc::unwrap_or_clone(bot);
            bot.disabled_webhooks
                .push(DisabledEndpoint { url, since: now });
            if let Err(e) = self.store.put_bot(&bot).await {
                tracing::warn!(error = %e, "cannot record the disabled endpoint");
            }
        }
    }
}
