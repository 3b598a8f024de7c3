//! ④ The narrow store contract, and the only code that knows how data is laid out. Two
//! implementations pass one conformance suite (`tests/store.rs`): `redis` for production
//! (any number of replicas) and `memory`, the embedded default for a single process.
//!
//! Every operation that must be atomic is one call here: creating a session (with its idempotency
//! key and the `already_authorized` check), starting an attempt, consuming an attempt, and
//! transitioning a session together with its grant and its outbox event.

pub mod cache;
pub mod lease;
pub mod memory;
pub mod notify;
pub mod redis;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::bot::{ApiKey, AuthProfile, Bot, Integration, WebhookSecret};
use crate::domain::channel::{ChannelConfig, ChannelDelivery, ChannelName};
use crate::domain::console::ConsoleSession;
use crate::domain::event::Event;
use crate::domain::grant::Grant;
use crate::domain::rate::{Quota, Verdict};
use crate::domain::session::{Attempt, BindingResult, Session, SessionError, Status};
use crate::domain::{BotId, IntegrationName, Partition, SessionId, Subject};
pub use lease::{Held, Lease};
pub use notify::Listener;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or timed out. Maps to 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("session not found")]
    NotFound,
    #[error("session has expired")]
    Expired,
    #[error("session is {} and cannot change that way", .0.as_str())]
    Conflict(Status),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `Idempotency-Key` of a create request, scoped to the bot. Its record is reserved for
/// `IDEMPOTENCY_LEASE` while the request runs, then points at the created session for `ttl`; a
/// crashed request frees its key when the lease runs out.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    /// Hash of the request body: the same key with another body is a client error.
    pub fingerprint: String,
    pub ttl: Duration,
}

pub const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(30);

/// How many of a bot's newest sessions the recent-sessions index keeps per partition (so at most
/// `Partition::COUNT` times this per bot). At least the largest page (100): the newest sessions
/// of a bot are always all listed, whichever partitions they are in.
pub const RECENT_SESSIONS_PER_PARTITION: usize = 100;

/// How long a dead letter is kept for listing and replay.
pub const DEAD_LETTER_TTL: Duration = Duration::from_secs(7 * 86_400);

/// An event on its way to a webhook.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event: Event,
    /// Failed attempts so far.
    pub failures: u32,
    pub last_error: Option<String>,
    pub dead: bool,
    /// The claim this worker holds (empty when listed).
    pub claim: String,
}

pub enum DeliveryOutcome<'a> {
    /// 2xx: done, forget it.
    Delivered,
    /// Failed: try again at `at`.
    Retry { at: OffsetDateTime, error: &'a str },
    /// Not attempted (the bot is at its concurrency limit): back in the queue, no failure counted.
    Release { at: OffsetDateTime },
    /// Out of attempts, or the endpoint is gone: a dead letter.
    Dead { error: &'a str },
}

pub struct NewSession<'a> {
    pub session: &'a Session,
    pub idempotency: Option<&'a Idempotency>,
    /// How long the record stays readable after it expires.
    pub retention: Duration,
    /// `Some(provider_config)`: do not create if the subject already has a working grant issued
    /// by that app (the `already_authorized` answer). `None` (`force`): create regardless.
    pub unless_authorized_by: Option<&'a str>,
    /// The session's link goes to a chat channel: its delivery record (`queued`) and the outbox
    /// item that posts it, written in the same atomic step as the session.
    pub delivery: Option<(&'a ChannelDelivery, &'a Event)>,
    /// Refuse the create (`OverQuota`) when the bot or the user already has this many open
    /// sessions; the session holds its place until it settles or expires. `None`: not counted.
    pub quota: Option<OpenQuota>,
}

/// Whose open sessions are at their quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaScope {
    Bot,
    User,
}

#[derive(Debug)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was used before: the earlier session and the earlier body's hash.
    Replayed {
        id: SessionId,
        fingerprint: String,
    },
    /// Another request with this idempotency key is being handled right now.
    InFlight {
        fingerprint: String,
    },
    AlreadyAuthorized(Box<Grant>),
    /// Nothing was created: `scope` has as many open sessions as its quota allows. The first of
    /// them expires at `until` (one may settle sooner).
    OverQuota {
        scope: QuotaScope,
        until: OffsetDateTime,
    },
}

/// What one counted try at a verification code found (`Store::check_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code is right, and the try was within the allowed number.
    Right,
    /// The code is wrong; this many tries are left (0: this was the last one).
    Wrong { left: u32 },
    /// Every allowed try was used before this one: nothing was compared.
    Exhausted,
    /// An earlier try had the right code: nothing was compared (and the tries before the
    /// maximum cannot fail a session that is being completed).
    Confirmed,
    /// The grant waits for no code (gone, active, or issued without one): nothing was counted.
    NoCode,
}

/// How many sessions may be open at once (pending, in progress or awaiting a code, and not
/// expired), per bot and per (bot, user). Checked and reserved in the step that creates one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenQuota {
    pub per_bot: u32,
    pub per_user: u32,
}

/// What a transition writes besides the new status, all in the same atomic step.
pub enum SideWrite<'a> {
    None,
    /// Park an attempt (status → in_progress) until `expires`.
    Attempt(&'a Attempt, OffsetDateTime),
    /// Store the grant (status → completed / awaiting_code).
    Grant(&'a Grant),
}

pub struct Transition<'a> {
    pub id: SessionId,
    pub to: Status,
    pub error: Option<&'a SessionError>,
    /// What the binding step found, recorded with the new status (each transition states it).
    pub binding: Option<&'a BindingResult>,
    pub write: SideWrite<'a>,
    /// Queued for delivery in the same atomic step (if it has a webhook URL).
    pub event: Option<&'a Event>,
    /// Also queued in that step: the channel item that updates the posted link message.
    pub channel_event: Option<&'a Event>,
    pub now: OffsetDateTime,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Is the store reachable? (`/readyz`)
    async fn ping(&self) -> Result<(), StoreError>;

    async fn put_bot(&self, bot: &Bot) -> Result<(), StoreError>;
    /// Bots, keys and integrations are read on every API call and shared, not copied.
    async fn get_bot(&self, id: &BotId) -> Result<Option<Arc<Bot>>, StoreError>;
    /// Deletes the bot with its keys and integrations. Grants expire with their own TTL.
    async fn delete_bot(&self, id: &BotId) -> Result<bool, StoreError>;
    /// Bots sorted by id, those after `after` (exclusive), at most `limit`.
    async fn list_bots(&self, after: Option<&BotId>, limit: usize) -> Result<Vec<Bot>, StoreError>;

    async fn put_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn find_api_key(&self, hash: &str) -> Result<Option<Arc<ApiKey>>, StoreError>;
    async fn list_api_keys(&self, bot: &BotId) -> Result<Vec<ApiKey>, StoreError>;
    async fn delete_api_key(&self, bot: &BotId, id: &str) -> Result<bool, StoreError>;

    async fn put_integration(&self, integration: &Integration) -> Result<(), StoreError>;
    async fn get_integration(
        &self,
        bot: &BotId,
        name: &IntegrationName,
    ) -> Result<Option<Arc<Integration>>, StoreError>;
    async fn delete_integration(
        &self,
        bot: &BotId,
        name: &IntegrationName,
    ) -> Result<bool, StoreError>;

    /// A bot's integrations, sorted by name.
    async fn list_integrations(&self, bot: &BotId) -> Result<Vec<Integration>, StoreError>;

    async fn put_profile(&self, profile: &AuthProfile) -> Result<(), StoreError>;
    async fn get_profile(&self, bot: &BotId, id: &str) -> Result<Option<AuthProfile>, StoreError>;
    async fn list_profiles(&self, bot: &BotId) -> Result<Vec<AuthProfile>, StoreError>;
    async fn delete_profile(&self, bot: &BotId, id: &str) -> Result<bool, StoreError>;

    async fn create_session(&self, new: NewSession<'_>) -> Result<CreateOutcome, StoreError>;
    async fn get_session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;
    /// A bot's most recent sessions, newest first (by creation, then id): up to `limit` of those
    /// `keep` accepts, among the newest `RECENT_SESSIONS_PER_PARTITION` of each partition.
    /// Sessions whose record is gone are not listed.
    async fn recent_sessions(
        &self,
        bot: &BotId,
        limit: usize,
        keep: &(dyn for<'s> Fn(&'s Session) -> bool + Send + Sync),
    ) -> Result<Vec<Session>, StoreError>;
    /// Change the status if the current one allows it (`Status::sources_of`) and the session has
    /// not expired (expiring it is always allowed), with the side write and the event.
    /// Implementations provide `apply_transition`; this wrapper counts what happened.
    async fn transition(&self, t: Transition<'_>) -> Result<Session, TransitionError> {
        let (to, code) = (t.to, t.error.map(|e| e.code.as_str()));
        let result = self.apply_transition(t).await;
        if result.is_ok() {
            metrics::counter!(
                "authlink_session_transitions_total",
                "status" => to.as_str(),
                "code" => code.unwrap_or(""),
            )
            .increment(1);
        }
        result
    }
    /// The store's own atomic step behind `transition`.
    async fn apply_transition(&self, t: Transition<'_>) -> Result<Session, TransitionError>;
    /// Remove and return an attempt; `None` if it never existed, expired, or was taken already.
    async fn take_attempt(
        &self,
        session: SessionId,
        attempt: &str,
    ) -> Result<Option<Attempt>, StoreError>;

    /// Count one try at the verification code that `session`'s grant (bot, integration,
    /// subject) waits for and, only if it is within `max`, compare `digest`
    /// (`PendingCode::hash` of the typed code) with the grant's, in one atomic step: concurrent
    /// tries cannot be compared before they are counted, so at most `max` codes are ever
    /// compared. The count lives until `until` (the session's end).
    async fn check_code(
        &self,
        grant: (&BotId, &IntegrationName, &Subject),
        session: SessionId,
        digest: &str,
        max: u32,
        until: OffsetDateTime,
    ) -> Result<CodeCheck, StoreError>;

    async fn get_grant(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<Option<Grant>, StoreError>;

    /// `get_grant`, shared: the token path reads its grant on every call, and a store that keeps
    /// the records it read last hands out the same one while it is unchanged.
    async fn get_grant_shared(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<Option<std::sync::Arc<Grant>>, StoreError> {
        Ok(self
            .get_grant(bot, integration, subject)
            .await?
            .map(std::sync::Arc::new))
    }

    /// The grants of (bot, integration) sorted by subject (`Subject::as_str`, bytewise), those
    /// after `after` (exclusive), at most `limit`. Deleted grants are never listed.
    async fn list_grants(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        after: Option<&Subject>,
        limit: usize,
    ) -> Result<Vec<Grant>, StoreError>;

    /// Write `grant` only if the stored generation still equals `grant.generation` (fencing: a
    /// writer whose view is stale is refused); the stored generation then moves on by one. `event`
    /// is queued in the same step. `Ok(false)`: stale, nothing written.
    async fn update_grant(&self, grant: &Grant, event: Option<&Event>) -> Result<bool, StoreError>;
    /// Delete a grant (disconnect), queuing `event` in the same step.
    async fn delete_grant(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        event: Option<&Event>,
    ) -> Result<bool, StoreError>;
    /// Grants whose `refresh_at` has passed, each leased like deliveries (the proactive refresher).
    async fn claim_refreshes(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<(BotId, IntegrationName, Subject)>, StoreError>;
    /// The grant's refresh lock: taken if free (for `ttl`), renewed and released only by `owner`.
    async fn lock_grant(
        &self,
        grant: &Grant,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn renew_grant_lock(
        &self,
        grant: &Grant,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn unlock_grant(&self, grant: &Grant, owner: &str) -> Result<(), StoreError>;

    /// Take up to `max` deliveries that are due, each leased until `now + lease`: a worker that
    /// dies holding one loses it to any replica once the lease runs out.
    async fn claim_deliveries(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Record how a claimed delivery went. A stale claim (the lease ran out and another worker
    /// took over) changes nothing, except that a success is always recorded.
    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        outcome: DeliveryOutcome<'_>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// A bot's queued (or, with `dead`, dead-lettered) deliveries, oldest first.
    async fn list_deliveries(
        &self,
        bot: &BotId,
        dead: bool,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Put a dead letter of `bot` back in the queue, due now, with a fresh attempt count.
    async fn replay_delivery(
        &self,
        bot: &BotId,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deliveries waiting in the queue, all partitions (a gauge).
    async fn backlog(&self) -> Result<u64, StoreError>;

    /// Sessions whose deadline passed and that are not settled yet, each leased like deliveries.
    async fn claim_expiries(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<SessionId>, StoreError>;
    /// Drop a session from the expiry index (it vanished, or is settled).
    async fn forget_deadline(&self, id: SessionId) -> Result<(), StoreError>;

    /// Extend `lease` to `until` for the members it still holds: those no other worker has
    /// taken over and that were not finished meanwhile (delivered, rescheduled, refreshed,
    /// settled). Returns how many were extended; 0 means the lease holds nothing any more.
    async fn renew_lease(&self, lease: &Lease, until: OffsetDateTime) -> Result<usize, StoreError>;
    /// Take a grant out of the proactive refresher's index (its integration or app is gone, so
    /// it can never be refreshed in the background).
    async fn forget_refresh(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<(), StoreError>;

    /// One pending session per user and integration for agents (whose retries must not open a
    /// session each): record `id` as the pending session of (bot, integration, subject, slot)
    /// until `until`, unless one is recorded already — then that one is returned and nothing
    /// changes. `slot` tells apart the sessions one user may need at once (empty, or the digest
    /// of the identity-issuer subject a bound session is for).
    async fn claim_pending(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
        id: SessionId,
        until: OffsetDateTime,
    ) -> Result<Option<SessionId>, StoreError>;
    /// Forget `id` as the pending session (only if it still is the recorded one).
    async fn release_pending(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
        id: SessionId,
    ) -> Result<(), StoreError>;

    /// A session's channel delivery record (`None`: the session has none, or is gone).
    async fn get_delivery(&self, id: SessionId) -> Result<Option<ChannelDelivery>, StoreError>;
    /// Replace a session's delivery record if it has one (keeping its lifetime); `false`: none.
    async fn put_delivery(
        &self,
        id: SessionId,
        state: &ChannelDelivery,
    ) -> Result<bool, StoreError>;
    /// A channel item of the outbox is done (sent, updated, or failed for good): record the
    /// session's delivery state, queue `event` (`auth_link.delivered` / `.delivery_failed`) and
    /// remove the item, in one atomic step. Always applied, like a delivered webhook.
    async fn record_delivery(
        &self,
        item: &Delivery,
        session: SessionId,
        state: &ChannelDelivery,
        event: Option<&Event>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    async fn put_channel(&self, channel: &ChannelConfig) -> Result<(), StoreError>;
    async fn get_channel(
        &self,
        bot: &BotId,
        name: &ChannelName,
    ) -> Result<Option<ChannelConfig>, StoreError>;
    async fn list_channels(&self, bot: &BotId) -> Result<Vec<ChannelConfig>, StoreError>;
    async fn delete_channel(&self, bot: &BotId, name: &ChannelName) -> Result<bool, StoreError>;

    async fn put_webhook_secret(
        &self,
        bot: &BotId,
        secret: &WebhookSecret,
    ) -> Result<(), StoreError>;
    async fn webhook_secrets(&self, bot: &BotId) -> Result<Vec<WebhookSecret>, StoreError>;
    async fn delete_webhook_secret(&self, bot: &BotId, id: &str) -> Result<bool, StoreError>;

    /// Notified whenever an event may have been queued (on any replica): wakes the dispatcher.
    fn outbox_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// Wakes when the session changes, on any replica. Create it *before* reading the session.
    fn listen(&self, id: SessionId) -> Listener;

    /// How many requests of this process are parked on sessions (long-polls, event streams).
    fn waiting(&self) -> usize;

    /// A console sign-in, under the SHA-256 of its cookie's id, until it expires.
    async fn put_console_session(
        &self,
        id_hash: &str,
        session: &ConsoleSession,
    ) -> Result<(), StoreError>;
    async fn get_console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    async fn delete_console_session(&self, id_hash: &str) -> Result<(), StoreError>;

    /// One rate-limit step for `key` (GCRA, `domain::rate`) at `now`, atomic across replicas:
    /// `want` permits if they all fit, else one, else none.
    async fn rate_limit(
        &self,
        key: &str,
        quota: Quota,
        now: OffsetDateTime,
        want: u32,
    ) -> Result<Verdict, StoreError>;
}

/// Session record lifetime in the store: until it expires, plus the retention period.
pub(crate) fn record_ttl(session: &Session, now: OffsetDateTime, retention: Duration) -> Duration {
    let live = (session.spec.expires_at - now)
        .try_into()
        .unwrap_or(Duration::ZERO);
    live + retention
}
