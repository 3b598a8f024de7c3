//! The outbox worker every replica runs. The outbox holds what must leave the daemon after a
//! state change — webhook events, and chat-channel items (post a link, update the message) —
//! written in the same atomic store step as the change. The worker claims due items from each
//! partition (leased, the lease renewed while an item is worked on, so a killed replica's items
//! return to the queue within one short lease), hands each to its edge (`webhook::send` or
//! `channel::deliver`), and records the outcome: done, retry with backoff and jitter (honouring
//! the other side's `Retry-After`), or dead letter. It knows leases and retries, never a wire
//! format. The same loop sweeps expired sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::channel::deliver::ChannelSender;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::BotId;
use crate::domain::Partition;
use crate::domain::attempt::Attempt;
use crate::store::{Delivery, DeliveryOutcome, Held, Lease, Store};
use crate::webhook::send::WebhookSender;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    clock: Clock,
    webhooks: WebhookSender,
    channels: ChannelSender,
    slots: Arc<Semaphore>,
    /// Items in flight per bot on this replica.
    per_bot: Mutex<HashMap<BotId, usize>>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Clock) -> Arc<Self> {
        let w = &config.webhooks;
        Arc::new(Self {
            webhooks: WebhookSender::new(store.clone(), config.clone(), clock.clone()),
            channels: ChannelSender::new(store.clone(), config.clone(), clock.clone()),
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
        let span = tracing::info_span!("outbox", event_id = %d.event.id, session_id = %d.event.data["session_id"].as_str().unwrap_or(""), bot = %bot);
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
        let to_channel = d.event.channel.is_some();
        let outcome = if to_channel {
            self.channels.attempt(&d).await
        } else {
            self.webhooks.attempt(bot_id, &d).await
        };
        let now = self.clock.now();
        let (label, store_outcome, error) = match &outcome {
            Attempt::Delivered => ("delivered", DeliveryOutcome::Delivered, None),
            Attempt::Failed {
                error,
                retry_after,
                permanent,
            } => match (!*permanent)
                .then(|| match to_channel {
                    // The channel edge decided the wait (its own signal or schedule).
                    true => Some(now + retry_after.unwrap_or(Duration::from_secs(1))),
                    false => self.next_attempt(d.failures + 1, *retry_after, now),
                })
                .flatten()
            {
                Some(at) => ("retry", DeliveryOutcome::Retry { at, error }, Some(error)),
                None => ("dead", DeliveryOutcome::Dead { error }, Some(error)),
            },
        };
        if !to_channel {
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
        }
        if let Err(e) = self.store.finish_delivery(&d, store_outcome, now).await {
            // The lease will run out and the item will be retried: at least once, not lost.
            tracing::warn!(error = %e, "cannot record an outbox outcome");
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
}
