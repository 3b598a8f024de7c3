//! The delivery worker every replica runs: claim due deliveries from each partition (leased, and
//! the lease renewed while a delivery runs, so a killed replica's claims return to the queue
//! within one short lease), POST them signed, and record the outcome —
//! delivered, retry with backoff and jitter (honouring `Retry-After`), or dead letter. A `410 Gone`
//! disables the endpoint for its bot. The same loop sweeps expired sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{PublicOnlyResolver, names_private_host, sign};
use crate::clock::Clock;
use crate::config::{Config, WebhookConfig};
use crate::domain::BotId;
use crate::domain::Partition;
use crate::domain::bot::DisabledEndpoint;
use crate::store::{Delivery, DeliveryOutcome, Held, Lease, Store};

pub struct Dispatcher {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    clock: Clock,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    /// Deliveries in flight per bot on this replica.
    per_bot: Mutex<HashMap<BotId, usize>>,
}

/// The HTTP client for webhooks: no redirects, bounded time, and (in production) a resolver that
/// refuses private addresses.
pub fn http_client(w: &WebhookConfig) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(w.request_timeout)
        .connect_timeout(w.request_timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("authlink-webhooks/", env!("CARGO_PKG_VERSION")));
    if w.deny_private_networks {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    builder
        .build()
        .expect("static reqwest configuration is valid")
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Clock) -> Arc<Self> {
        let w = &config.webhooks;
        Arc::new(Self {
            http: http_client(w),
            slots: Arc::new(Semaphore::new(w.concurrency)),
            per_bot: Mutex::new(HashMap::new()),
            store,
            config,
            clock,
        })
    }

    /// Run until `cancel`: then stop claiming, let in-flight deliveries finish (each is bounded
    /// by the request timeout), and return.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let wake = self.store.outbox_signal();
        let w = self.config.webhooks.clone();
        let mut last_sweep = Instant::now() - w.poll_interval;
        while !cancel.is_cancelled() {
            let now = self.clock.now();
            let mut busy = false;
            if last_sweep.elapsed() >= w.poll_interval {
                last_sweep = Instant::now();
                for p in Partition::all() {
                    let sweep = crate::expiry::sweep(
                        &*self.store,
                        &self.clock,
                        p,
                        now,
                        w.visibility_timeout,
                    );
                    match sweep.await {
                        Ok(n) => busy |= n > 0,
                        Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                    }
                }
            }
            for p in Partition::all() {
                let free = self.slots.available_permits();
                if free == 0 {
                    busy = true;
                    break;
                }
                match self
                    .store
                    .claim_deliveries(p, now, w.visibility_timeout, free.min(50))
                    .await
                {
                    Ok(batch) => {
                        busy |= !batch.is_empty();
                        for d in batch {
                            let lease = Lease::taken(
                                p,
                                Held::Deliveries(vec![d.event.id.clone()]),
                                now,
                                w.visibility_timeout,
                            );
                            self.start(&tracker, d, lease).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim deliveries");
                        break;
                    }
                }
            }
            if busy {
                // More may be due right away; but give in-flight work a slot to finish if full.
                if self.slots.available_permits() == 0 {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = self.slots.acquire() => {}
                    }
                }
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(w.poll_interval) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn start(self: &Arc<Self>, tracker: &TaskTracker, d: Delivery, lease: Lease) {
        let Some(bot) = d.event.bot() else {
            let _ = self
                .store
                .finish_delivery(
                    &d,
                    DeliveryOutcome::Dead {
                        error: "event without a bot",
                    },
                    self.clock.now(),
                )
                .await;
            return;
        };
        let limit = self.config.webhooks.per_bot_concurrency;
        let admitted = {
            let mut per_bot = self.per_bot.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_bot.entry(bot.clone()).or_default();
            (*n < limit).then(|| *n += 1).is_some()
        };
        if !admitted {
            // This bot's endpoint is busy; others go first. Back in the queue, no failure counted.
            let now = self.clock.now();
            let at = now + time::Duration::milliseconds(250);
            let _ = self
                .store
                .finish_delivery(&d, DeliveryOutcome::Release { at }, now)
                .await;
            return;
        }
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let me = self.clone();
        let span = tracing::info_span!("webhook", event_id = %d.event.id, session_id = %d.event.data["session_id"].as_str().unwrap_or(""), bot = %bot);
        tracker.spawn(
            async move {
                let len = me.config.webhooks.visibility_timeout;
                lease
                    .hold(&*me.store, &me.clock, len, me.deliver(&bot, d))
                    .await;
                drop(permit);
                let mut per_bot = me.per_bot.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = per_bot.get_mut(&bot) {
                    *n -= 1;
                    if *n == 0 {
                        per_bot.remove(&bot);
                    }
                }
            }
            .instrument(span),
        );
    }

    async fn deliver(&self, bot_id: &BotId, d: Delivery) {
        let started = Instant::now();
        let outcome = self.attempt(bot_id, &d).await;
        let now = self.clock.now();
        let (label, store_outcome, error) = match &outcome {
            Attempt::Delivered => ("delivered", DeliveryOutcome::Delivered, None),
            Attempt::Failed {
                error,
                retry_after,
                gone,
            } => {
                if *gone {
                    self.disable(bot_id, &d, now).await;
                }
                match (!*gone)
                    .then(|| self.next_attempt(d.failures + 1, *retry_after, now))
                    .flatten()
                {
                    Some(at) => ("retry", DeliveryOutcome::Retry { at, error }, Some(error)),
                    None => ("dead", DeliveryOutcome::Dead { error }, Some(error)),
                }
            }
        };
        metrics::counter!("authlink_webhook_deliveries_total", "outcome" => label, "status_class" => outcome.status_class()).increment(1);
        metrics::histogram!("authlink_webhook_request_seconds")
            .record(started.elapsed().as_secs_f64());
        if label == "delivered" {
            let age = (now - d.event.timestamp).as_seconds_f64().max(0.0);
            metrics::histogram!("authlink_webhook_delivery_latency_seconds").record(age);
        }
        if label == "dead" {
            metrics::counter!("authlink_webhook_dead_letters_total").increment(1);
        }
        match error {
            Some(e) => {
                tracing::warn!(attempt = d.failures + 1, outcome = label, error = %e, "webhook delivery failed")
            }
            None => tracing::info!(attempt = d.failures + 1, "webhook delivered"),
        }
        if let Err(e) = self.store.finish_delivery(&d, store_outcome, now).await {
            // The lease will run out and the delivery will be retried: at least once, not lost.
            tracing::warn!(error = %e, "cannot record webhook outcome");
        }
    }

    /// When to try again after `failures` failed attempts, or `None`: out of attempts.
    fn next_attempt(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let schedule = &self.config.webhooks.retry_schedule;
        let base = *schedule.get(failures as usize - 1)?;
        let jittered = base.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        let delay = retry_after
            .map_or(jittered, |r| r.max(jittered))
            .min(Duration::from_secs(86_400));
        Some(now + delay)
    }

    async fn attempt(&self, bot_id: &BotId, d: &Delivery) -> Attempt {
        let Some(url) = d.event.webhook_url.clone() else {
            return Attempt::Delivered;
        };
        let failed = |error: String| Attempt::Failed {
            error,
            retry_after: None,
            gone: false,
        };
        let bot = match self.store.get_bot(bot_id).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Attempt::Failed {
                    error: "the bot was deleted".into(),
                    retry_after: None,
                    gone: true,
                };
            }
            Err(e) => return failed(format!("store: {e}")),
        };
        if bot.disabled_webhooks.iter().any(|e| e.url == url) {
            return Attempt::Failed {
                error: "endpoint disabled after 410 Gone; update the bot to re-enable it".into(),
                retry_after: None,
                gone: true,
            };
        }
        if self.config.webhooks.deny_private_networks && names_private_host(&url) {
            return failed("webhook URL points to a private address".into());
        }
        let secrets = match self.store.webhook_secrets(bot_id).await {
            Ok(s) => s,
            Err(e) => return failed(format!("store: {e}")),
        };
        let body = d.event.body();
        let ts = self.clock.now().unix_timestamp();
        let signatures: Vec<String> = secrets
            .iter()
            .filter_map(|s| {
                let aad = format!("whsec|{bot_id}|{}", s.id);
                let secret = self.config.encryption.open(&aad, &s.sealed).ok()?;
                let secret = secrecy::SecretString::from(String::from_utf8(secret).ok()?);
                sign(secret.expose_secret(), &d.event.id, ts, &body)
            })
            .collect();
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
                Attempt::Failed {
                    error: format!("endpoint answered {status}"),
                    retry_after,
                    gone: status == reqwest::StatusCode::GONE,
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

enum Attempt {
    Delivered,
    Failed {
        error: String,
        retry_after: Option<Duration>,
        /// 410 Gone (or the bot is gone): no retries.
        gone: bool,
    },
}

impl Attempt {
    fn status_class(&self) -> &'static str {
        match self {
            Attempt::Delivered => "2xx",
            Attempt::Failed { error, .. } if error.starts_with("endpoint answered 4") => "4xx",
            Attempt::Failed { error, .. } if error.starts_with("endpoint answered 5") => "5xx",
            Attempt::Failed { error, .. } if error.starts_with("endpoint answered") => "other",
            Attempt::Failed { .. } => "error",
        }
    }
}
