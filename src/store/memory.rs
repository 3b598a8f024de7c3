//! The embedded store: everything in one process's memory, nothing persisted. The default when no
//! Redis is configured, for local runs and single-process trials. Semantics match the Redis store
//! (same conformance suite); TTLs are enforced on read.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::lease::lease_end;
use super::notify::{Hub, Listener};
use super::{
    CodeCheck, CreateOutcome, DEAD_LETTER_TTL, Delivery, DeliveryOutcome, Held, Lease, NewSession,
    OpenQuota, QuotaScope, RECENT_SESSIONS_PER_PARTITION, SideWrite, Store, StoreError, Transition,
    TransitionError, record_ttl,
};
use crate::clock;
use crate::domain::bot::{ApiKey, AuthProfile, Bot, Integration, WebhookSecret};
use crate::domain::channel::{ChannelConfig, ChannelDelivery, ChannelName};
use crate::domain::console::ConsoleSession;
use crate::domain::event::Event;
use crate::domain::grant::Grant;
use crate::domain::rate::{Quota, Verdict};
use crate::domain::session::{Attempt, Session, Status};
use crate::domain::{BotId, IntegrationName, Partition, SessionId, Subject};

type GrantKey = (BotId, IntegrationName, Subject);

/// A value with a deadline (`None`: no deadline).
struct Timed<T> {
    value: T,
    until: Option<OffsetDateTime>,
}

impl<T> Timed<T> {
    fn new(value: T, ttl: Option<Duration>, now: OffsetDateTime) -> Self {
        Self {
            value,
            until: ttl.map(|t| now + t),
        }
    }
    fn live(&self, now: OffsetDateTime) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

struct Queued {
    delivery: Delivery,
    due: Option<OffsetDateTime>,
    dead_since: Option<OffsetDateTime>,
}

#[derive(Default)]
struct Data {
    bots: HashMap<BotId, Bot>,
    keys: HashMap<String, ApiKey>,
    integrations: HashMap<(BotId, IntegrationName), Integration>,
    sessions: HashMap<SessionId, Timed<Session>>,
    attempts: HashMap<(SessionId, String), Timed<Attempt>>,
    grants: HashMap<GrantKey, Grant>,
    /// Idempotency key → the session it created and the request's fingerprint. (The memory
    /// store completes a create under one lock, so it never needs an in-flight reservation.)
    idempotency: HashMap<(BotId, String), Timed<(SessionId, String)>>,
    /// Deliveries by event id, with their due time (`None`: dead since `dead_since`).
    deliveries: HashMap<String, Queued>,
    /// Live sessions' deadlines (pushed to a lease's end when claimed by the sweeper).
    deadlines: HashMap<SessionId, OffsetDateTime>,
    webhook_secrets: HashMap<BotId, Vec<WebhookSecret>>,
    profiles: HashMap<(BotId, String), AuthProfile>,
    channels: HashMap<(BotId, ChannelName), ChannelConfig>,
    /// Agents' pending session per user and integration, until it expires.
    pending: HashMap<(GrantKey, String), (SessionId, OffsetDateTime)>,
    /// Sessions' channel delivery records, living as long as their session.
    delivery_states: HashMap<SessionId, Timed<ChannelDelivery>>,
    /// Proactive-refresh leases: grant → leased until.
    refresh_leases: HashMap<GrantKey, OffsetDateTime>,
    /// Refresh locks: grant → (owner, until).
    locks: HashMap<GrantKey, (String, OffsetDateTime)>,
    /// Console sign-ins by the SHA-256 of their cookie's id.
    console: HashMap<String, ConsoleSession>,
    /// Rate limits: key → arrival time µs (GCRA).
    rates: HashMap<String, u64>,
    /// Counted tries at a session's verification code (`None`: one had the right code), living
    /// as long as the session.
    code_tries: HashMap<SessionId, Timed<Option<u32>>>,
    /// Open sessions counted against the per-bot quota, by expiry (the expired ones are
    /// dropped from the front when a create looks).
    open_per_bot: HashMap<BotId, Open>,
    /// … and against the per-user quota.
    open_per_user: HashMap<(BotId, Subject), Open>,
    writes: u64,
}

/// The open sessions counted against one quota: (expiry, id), soonest first.
type Open = BTreeSet<(OffsetDateTime, SessionId)>;

/// Drop the entries of `open` that expired by `now`; how many are left.
fn prune(open: &mut Open, now: OffsetDateTime) -> usize {
    while open.first().is_some_and(|(until, _)| *until <= now) {
        open.pop_first();
    }
    open.len()
}

impl Data {
    /// Refuse a create when the bot or the user is at its quota of open sessions, else count
    /// the session against both.
    fn reserve_open(
        &mut self,
        s: &Session,
        quota: OpenQuota,
        now: OffsetDateTime,
    ) -> Option<CreateOutcome> {
        let spec = &s.spec;
        let user = self
            .open_per_user
            .entry((spec.bot.clone(), spec.subject.clone()))
            .or_default();
        let over = |open: &Open, scope| CreateOutcome::OverQuota {
            scope,
            until: open.first().map_or(now, |(until, _)| *until),
        };
        if prune(user, now) >= quota.per_user as usize {
            return Some(over(user, QuotaScope::User));
        }
        let bot = self.open_per_bot.entry(spec.bot.clone()).or_default();
        if prune(bot, now) >= quota.per_bot as usize {
            return Some(over(bot, QuotaScope::Bot));
        }
        bot.insert((spec.expires_at, spec.id));
        if let Some(user) = self
            .open_per_user
            .get_mut(&(spec.bot.clone(), spec.subject.clone()))
        {
            user.insert((spec.expires_at, spec.id));
        }
        None
    }

    /// A settled session gives its places back.
    fn release_open(&mut self, s: &Session) {
        let spec = &s.spec;
        let entry = (spec.expires_at, spec.id);
        if let Some(open) = self.open_per_bot.get_mut(&spec.bot) {
            open.remove(&entry);
            if open.is_empty() {
                self.open_per_bot.remove(&spec.bot);
            }
        }
        let user = (spec.bot.clone(), spec.subject.clone());
        if let Some(open) = self.open_per_user.get_mut(&user) {
            open.remove(&entry);
            if open.is_empty() {
                self.open_per_user.remove(&user);
            }
        }
    }
}

impl Data {
    /// Queue `event` for delivery (if it has somewhere to go), due `now`.
    fn queue(&mut self, e: &Event, now: OffsetDateTime) {
        if !e.has_destination() {
            return;
        }
        self.deliveries.insert(
            e.id.clone(),
            Queued {
                delivery: Delivery {
                    event: e.clone(),
                    failures: 0,
                    last_error: None,
                    dead: false,
                    claim: String::new(),
                },
                due: Some(now),
                dead_since: None,
            },
        );
    }

    /// Drop dead entries now and then, so an idle process does not keep expired data forever.
    fn sweep(&mut self, now: OffsetDateTime) {
        self.writes += 1;
        if self.writes % 1024 == 0 {
            self.sessions.retain(|_, v| v.live(now));
            self.attempts.retain(|_, v| v.live(now));
            self.idempotency.retain(|_, v| v.live(now));
            self.delivery_states.retain(|_, v| v.live(now));
            self.code_tries.retain(|_, v| v.live(now));
            self.open_per_bot.retain(|_, open| prune(open, now) > 0);
            self.open_per_user.retain(|_, open| prune(open, now) > 0);
        }
    }
}

#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    hub: Arc<Hub>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave a half-written record (each operation
        // completes its writes without awaiting), so the data is still consistent.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_bot(&self, bot: &Bot) -> Result<(), StoreError> {
        self.data().bots.insert(bot.id.clone(), bot.clone());
        Ok(())
    }

    async fn get_bot(&self, id: &BotId) -> Result<Option<Arc<Bot>>, StoreError> {
        Ok(self.data().bots.get(id).cloned().map(Arc::new))
    }

    async fn delete_bot(&self, id: &BotId) -> Result<bool, StoreError> {
        let mut d = self.data();
        d.keys.retain(|_, k| &k.bot != id);
        d.webhook_secrets.remove(id);
        d.profiles.retain(|(b, _), _| b != id);
        d.channels.retain(|(b, _), _| b != id);
        d.integrations.retain(|(b, _), _| b != id);
        Ok(d.bots.remove(id).is_some())
    }

    async fn list_bots(&self, after: Option<&BotId>, limit: usize) -> Result<Vec<Bot>, StoreError> {
        let mut bots: Vec<Bot> = self
            .data()
            .bots
            .values()
            .filter(|b| after.is_none_or(|a| &b.id > a))
            .cloned()
            .collect();
        bots.sort_by(|a, b| a.id.cmp(&b.id));
        bots.truncate(limit);
        Ok(bots)
    }

    async fn put_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.data().keys.insert(key.hash.clone(), key.clone());
        Ok(())
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<Arc<ApiKey>>, StoreError> {
        Ok(self.data().keys.get(hash).cloned().map(Arc::new))
    }

    async fn list_api_keys(&self, bot: &BotId) -> Result<Vec<ApiKey>, StoreError> {
        let mut keys: Vec<ApiKey> = self
            .data()
            .keys
            .values()
            .filter(|k| &k.bot == bot)
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn delete_api_key(&self, bot: &BotId, id: &str) -> Result<bool, StoreError> {
        let mut d = self.data();
        let before = d.keys.len();
        d.keys.retain(|_, k| !(&k.bot == bot && k.id == id));
        Ok(d.keys.len() != before)
    }

    async fn put_integration(&self, integration: &Integration) -> Result<(), StoreError> {
        self.data().integrations.insert(
            (integration.bot.clone(), integration.name.clone()),
            integration.clone(),
        );
        Ok(())
    }

    async fn get_integration(
        &self,
        bot: &BotId,
        name: &IntegrationName,
    ) -> Result<Option<Arc<Integration>>, StoreError> {
        Ok(self
            .data()
            .integrations
            .get(&(bot.clone(), name.clone()))
            .cloned()
            .map(Arc::new))
    }

    async fn delete_integration(
        &self,
        bot: &BotId,
        name: &IntegrationName,
    ) -> Result<bool, StoreError> {
        Ok(self
            .data()
            .integrations
            .remove(&(bot.clone(), name.clone()))
            .is_some())
    }

    async fn list_integrations(&self, bot: &BotId) -> Result<Vec<Integration>, StoreError> {
        let mut out: Vec<Integration> = self
            .data()
            .integrations
            .iter()
            .filter(|((b, _), _)| b == bot)
            .map(|(_, i)| i.clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn put_profile(&self, profile: &AuthProfile) -> Result<(), StoreError> {
        self.data()
            .profiles
            .insert((profile.bot.clone(), profile.id.clone()), profile.clone());
        Ok(())
    }

    async fn get_profile(&self, bot: &BotId, id: &str) -> Result<Option<AuthProfile>, StoreError> {
        Ok(self
            .data()
            .profiles
            .get(&(bot.clone(), id.to_owned()))
            .cloned())
    }

    async fn list_profiles(&self, bot: &BotId) -> Result<Vec<AuthProfile>, StoreError> {
        let mut out: Vec<AuthProfile> = self
            .data()
            .profiles
            .values()
            .filter(|p| &p.bot == bot)
            .cloned()
            .collect();
        out.sort_by_key(|p| p.created_at);
        Ok(out)
    }

    async fn delete_profile(&self, bot: &BotId, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .data()
            .profiles
            .remove(&(bot.clone(), id.to_owned()))
            .is_some())
    }

    async fn create_session(&self, new: NewSession<'_>) -> Result<CreateOutcome, StoreError> {
        let session = new.session;
        let spec = &session.spec;
        let now = session.updated_at;
        let mut d = self.data();
        d.sweep(now);
        let idem_key = new.idempotency.map(|i| (spec.bot.clone(), i.key.clone()));
        if let Some(k) = &idem_key
            && let Some(t) = d.idempotency.get(k).filter(|t| t.live(now))
        {
            let (id, fingerprint) = t.value.clone();
            return Ok(CreateOutcome::Replayed { id, fingerprint });
        }
        if let Some(config) = new.unless_authorized_by {
            let gk = (
                spec.bot.clone(),
                spec.integration.clone(),
                spec.subject.clone(),
            );
            if let Some(g) = d.grants.get(&gk).filter(|g| g.is_working(config)) {
                return Ok(CreateOutcome::AlreadyAuthorized(Box::new(g.clone())));
            }
        }
        if let Some(quota) = new.quota
            && let Some(refused) = d.reserve_open(session, quota, now)
        {
            return Ok(refused);
        }
        let ttl = record_ttl(session, now, new.retention);
        d.sessions
            .insert(spec.id, Timed::new(session.clone(), Some(ttl), now));
        d.deadlines.insert(spec.id, spec.expires_at);
        if let Some((state, job)) = new.delivery {
            d.delivery_states
                .insert(spec.id, Timed::new(state.clone(), Some(ttl), now));
            d.queue(job, now);
            self.hub.outbox.notify_one();
        }
        if let (Some(k), Some(i)) = (idem_key, new.idempotency) {
            // Only a created session is remembered: an `already authorized` answer is not.
            d.idempotency.insert(
                k,
                Timed::new((spec.id, i.fingerprint.clone()), Some(i.ttl), now),
            );
        }
        Ok(CreateOutcome::Created)
    }

    async fn get_session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let now = clock::now();
        Ok(self
            .data()
            .sessions
            .get(&id)
            .filter(|t| t.live(now))
            .map(|t| t.value.clone()))
    }

    async fn recent_sessions(
        &self,
        bot: &BotId,
        limit: usize,
        keep: &(dyn for<'s> Fn(&'s Session) -> bool + Send + Sync),
    ) -> Result<Vec<Session>, StoreError> {
        let now = clock::now();
        let d = self.data();
        // Ordered as the Redis index is: creation in ms, then id.
        let order = |s: &Session| (clock::unix_ms(s.spec.created_at), s.spec.id.to_string());
        let mut mine: Vec<&Session> = d
            .sessions
            .values()
            .filter(|t| t.live(now) && &t.value.spec.bot == bot)
            .map(|t| &t.value)
            .collect();
        mine.sort_by_key(|s| std::cmp::Reverse(order(s)));
        // The index keeps the newest of each partition only.
        let mut per_partition = [0usize; Partition::COUNT as usize];
        let mut out = Vec::new();
        for s in mine {
            let seen = &mut per_partition[usize::from(s.spec.id.partition().index())];
            *seen += 1;
            if *seen <= RECENT_SESSIONS_PER_PARTITION && keep(s) {
                out.push(s.clone());
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn apply_transition(&self, t: Transition<'_>) -> Result<Session, TransitionError> {
        let updated = {
            let mut d = self.data();
            d.sweep(t.now);
            let entry = d
                .sessions
                .get_mut(&t.id)
                .filter(|e| e.live(t.now))
                .ok_or(TransitionError::NotFound)?;
            let s = &mut entry.value;
            if !s.status.can_become(t.to) {
                return Err(TransitionError::Conflict(s.status));
            }
            if t.to != Status::Expired && t.now >= s.spec.expires_at {
                return Err(TransitionError::Expired);
            }
            s.status = t.to;
            s.error = t.error.cloned();
            s.binding = t.binding.cloned();
            s.updated_at = t.now;
            let updated = s.clone();
            match t.write {
                SideWrite::None => {}
                SideWrite::Attempt(a, until) => {
                    let ttl = (until - t.now).try_into().unwrap_or(Duration::ZERO);
                    d.attempts.insert(
                        (t.id, a.id.clone()),
                        Timed::new(a.clone(), Some(ttl), t.now),
                    );
                }
                SideWrite::Grant(g) => {
                    let key = (g.bot.clone(), g.integration.clone(), g.subject.clone());
                    let generation = d.grants.get(&key).map_or(0, |old| old.generation) + 1;
                    d.refresh_leases.remove(&key);
                    d.grants.insert(
                        key,
                        Grant {
                            generation,
                            ..g.clone()
                        },
                    );
                }
            }
            if t.to.is_final() {
                d.deadlines.remove(&t.id);
                d.release_open(&updated);
            }
            for e in [t.event, t.channel_event].into_iter().flatten() {
                d.queue(e, t.now);
            }
            updated
        };
        self.hub.notify(t.id);
        Ok(updated)
    }

    async fn take_attempt(
        &self,
        session: SessionId,
        attempt: &str,
    ) -> Result<Option<Attempt>, StoreError> {
        let now = clock::now();
        Ok(self
            .data()
            .attempts
            .remove(&(session, attempt.to_owned()))
            .filter(|t| t.live(now))
            .map(|t| t.value))
    }

    async fn check_code(
        &self,
        (bot, integration, subject): (&BotId, &IntegrationName, &Subject),
        session: SessionId,
        digest: &str,
        max: u32,
        until: OffsetDateTime,
    ) -> Result<CodeCheck, StoreError> {
        let now = clock::now();
        let mut d = self.data();
        let key = (bot.clone(), integration.clone(), subject.clone());
        let Some(expected) = d
            .grants
            .get(&key)
            .filter(|g| g.status == crate::domain::grant::GrantStatus::AwaitingCode)
            .and_then(|g| g.pending_code.as_ref())
            .map(|p| p.hash.clone())
        else {
            return Ok(CodeCheck::NoCode);
        };
        // Counted under the same lock as the comparison: no try is compared uncounted.
        let ttl = (until - now).try_into().unwrap_or(Duration::ZERO);
        let tries = d
            .code_tries
            .entry(session)
            .and_modify(|t| {
                if !t.live(now) {
                    *t = Timed::new(Some(0), Some(ttl), now);
                }
            })
            .or_insert_with(|| Timed::new(Some(0), Some(ttl), now));
        let Some(n) = tries.value else {
            return Ok(CodeCheck::Confirmed);
        };
        if n >= max {
            return Ok(CodeCheck::Exhausted);
        }
        if crate::crypto::ct_eq(digest, &expected) {
            tries.value = None;
            return Ok(CodeCheck::Right);
        }
        tries.value = Some(n + 1);
        Ok(CodeCheck::Wrong { left: max - n - 1 })
    }

    async fn get_grant(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<Option<Grant>, StoreError> {
        Ok(self
            .data()
            .grants
            .get(&(bot.clone(), integration.clone(), subject.clone()))
            .cloned())
    }

    async fn list_grants(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        after: Option<&Subject>,
        limit: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        let mut out: Vec<Grant> = self
            .data()
            .grants
            .iter()
            .filter(|((b, i, s), _)| {
                b == bot && i == integration && after.is_none_or(|a| s.as_str() > a.as_str())
            })
            .map(|(_, g)| g.clone())
            .collect();
        out.sort_by(|a, b| a.subject.as_str().cmp(b.subject.as_str()));
        out.truncate(limit);
        Ok(out)
    }

    async fn update_grant(&self, grant: &Grant, event: Option<&Event>) -> Result<bool, StoreError> {
        let now = clock::now();
        let mut d = self.data();
        let key = (
            grant.bot.clone(),
            grant.integration.clone(),
            grant.subject.clone(),
        );
        match d.grants.get(&key) {
            Some(old) if old.generation == grant.generation => {}
            _ => return Ok(false),
        }
        // A new schedule ends any refresh lease (as the index's new score does in Redis).
        d.refresh_leases.remove(&key);
        d.grants.insert(
            key,
            Grant {
                generation: grant.generation + 1,
                ..grant.clone()
            },
        );
        if let Some(e) = event {
            d.queue(e, now);
        }
        Ok(true)
    }

    async fn delete_grant(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        let mut d = self.data();
        let key = (bot.clone(), integration.clone(), subject.clone());
        d.refresh_leases.remove(&key);
        let removed = d.grants.remove(&key).is_some();
        if removed && let Some(e) = event {
            d.queue(e, now);
        }
        Ok(removed)
    }

    async fn claim_refreshes(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<(BotId, IntegrationName, Subject)>, StoreError> {
        let mut d = self.data();
        let due: Vec<GrantKey> = d
            .grants
            .iter()
            .filter(|(k, g)| {
                Partition::of(&k.0, &k.1, &k.2) == partition
                    && g.refresh_at.is_some_and(|t| t <= now)
            })
            .map(|(k, _)| k.clone())
            .filter(|k| d.refresh_leases.get(k).is_none_or(|until| *until <= now))
            .take(max)
            .collect();
        for k in &due {
            d.refresh_leases.insert(k.clone(), lease_end(now, lease));
        }
        Ok(due)
    }

    async fn lock_grant(
        &self,
        grant: &Grant,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        let mut d = self.data();
        let key = (
            grant.bot.clone(),
            grant.integration.clone(),
            grant.subject.clone(),
        );
        if d.locks.get(&key).is_some_and(|(_, until)| now < *until) {
            return Ok(false);
        }
        d.locks.insert(key, (owner.to_owned(), now + ttl));
        Ok(true)
    }

    async fn renew_grant_lock(
        &self,
        grant: &Grant,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        let mut d = self.data();
        let key = (
            grant.bot.clone(),
            grant.integration.clone(),
            grant.subject.clone(),
        );
        match d.locks.get_mut(&key) {
            Some((o, until)) if o == owner && now < *until => {
                *until = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unlock_grant(&self, grant: &Grant, owner: &str) -> Result<(), StoreError> {
        let mut d = self.data();
        let key = (
            grant.bot.clone(),
            grant.integration.clone(),
            grant.subject.clone(),
        );
        if d.locks.get(&key).is_some_and(|(o, _)| o == owner) {
            d.locks.remove(&key);
        }
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let claim = crate::crypto::random_token::<12>();
        let mut d = self.data();
        let mut due: Vec<(OffsetDateTime, String)> = d
            .deliveries
            .iter()
            .filter(|(id, q)| {
                q.due.is_some_and(|t| t <= now) && Event::partition_of(id) == Some(partition)
            })
            .map(|(id, q)| (q.due.unwrap_or(now), id.clone()))
            .collect();
        due.sort();
        due.truncate(max);
        Ok(due
            .into_iter()
            .filter_map(|(_, id)| {
                let q = d.deliveries.get_mut(&id)?;
                q.due = Some(lease_end(now, lease));
                q.delivery.claim = claim.clone();
                Some(q.delivery.clone())
            })
            .collect())
    }

    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        outcome: DeliveryOutcome<'_>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut d = self.data();
        if matches!(outcome, DeliveryOutcome::Delivered) {
            d.deliveries.remove(&delivery.event.id);
            return Ok(());
        }
        let Some(q) = d.deliveries.get_mut(&delivery.event.id) else {
            return Ok(());
        };
        if q.delivery.claim != delivery.claim {
            return Ok(());
        }
        q.delivery.claim.clear();
        match outcome {
            DeliveryOutcome::Delivered => {}
            DeliveryOutcome::Release { at } => q.due = Some(at),
            DeliveryOutcome::Retry { at, error } => {
                q.delivery.failures += 1;
                q.delivery.last_error = Some(error.to_owned());
                q.due = Some(at);
            }
            DeliveryOutcome::Dead { error } => {
                q.delivery.failures += 1;
                q.delivery.last_error = Some(error.to_owned());
                q.delivery.dead = true;
                q.due = None;
                q.dead_since = Some(now);
            }
        }
        Ok(())
    }

    async fn list_deliveries(
        &self,
        bot: &BotId,
        dead: bool,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let now = clock::now();
        let d = self.data();
        let mut out: Vec<Delivery> = d
            .deliveries
            .values()
            .filter(|q| q.delivery.dead == dead && q.delivery.event.bot().as_ref() == Some(bot))
            .filter(|q| q.dead_since.is_none_or(|t| now < t + DEAD_LETTER_TTL))
            .map(|q| Delivery {
                claim: String::new(),
                ..q.delivery.clone()
            })
            .collect();
        out.sort_by_key(|d| d.event.timestamp);
        out.truncate(limit);
        Ok(out)
    }

    async fn replay_delivery(
        &self,
        bot: &BotId,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut d = self.data();
        let Some(q) = d.deliveries.get_mut(event_id) else {
            return Ok(false);
        };
        if !q.delivery.dead || q.delivery.event.bot().as_ref() != Some(bot) {
            return Ok(false);
        }
        q.delivery.dead = false;
        q.delivery.failures = 0;
        q.delivery.last_error = None;
        q.dead_since = None;
        q.due = Some(now);
        drop(d);
        self.hub.outbox.notify_one();
        Ok(true)
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        Ok(self
            .data()
            .deliveries
            .values()
            .filter(|q| q.due.is_some())
            .count() as u64)
    }

    async fn claim_expiries(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut d = self.data();
        let mut due: Vec<(OffsetDateTime, SessionId)> = d
            .deadlines
            .iter()
            .filter(|(id, t)| **t <= now && id.partition() == partition)
            .map(|(id, t)| (*t, *id))
            .collect();
        due.sort_by_key(|(t, _)| *t);
        due.truncate(max);
        for (_, id) in &due {
            d.deadlines.insert(*id, lease_end(now, lease));
        }
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    async fn forget_deadline(&self, id: SessionId) -> Result<(), StoreError> {
        self.data().deadlines.remove(&id);
        Ok(())
    }

    async fn renew_lease(&self, lease: &Lease, until: OffsetDateTime) -> Result<usize, StoreError> {
        let mut d = self.data();
        let held = Some(lease.until);
        let mut n = 0;
        let mut renew = |at: Option<&mut OffsetDateTime>| {
            if let Some(at) = at.filter(|at| Some(**at) == held) {
                *at = until;
                n += 1;
            }
        };
        match &lease.held {
            Held::Deliveries(ids) => {
                for id in ids {
                    renew(d.deliveries.get_mut(id).and_then(|q| q.due.as_mut()));
                }
            }
            Held::Refreshes(grants) => {
                for k in grants {
                    renew(d.refresh_leases.get_mut(k));
                }
            }
            Held::Expiries(ids) => {
                for id in ids {
                    renew(d.deadlines.get_mut(id));
                }
            }
        }
        Ok(n)
    }

    async fn forget_refresh(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<(), StoreError> {
        let mut d = self.data();
        let key = (bot.clone(), integration.clone(), subject.clone());
        d.refresh_leases.remove(&key);
        if let Some(g) = d.grants.get_mut(&key) {
            g.refresh_at = None;
        }
        Ok(())
    }

    async fn get_delivery(&self, id: SessionId) -> Result<Option<ChannelDelivery>, StoreError> {
        let now = clock::now();
        Ok(self
            .data()
            .delivery_states
            .get(&id)
            .filter(|t| t.live(now))
            .map(|t| t.value.clone()))
    }

    async fn claim_pending(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
        id: SessionId,
        until: OffsetDateTime,
    ) -> Result<Option<SessionId>, StoreError> {
        let now = clock::now();
        let mut d = self.data();
        let key = (
            (bot.clone(), integration.clone(), subject.clone()),
            slot.to_owned(),
        );
        if let Some((existing, live_until)) = d.pending.get(&key)
            && now < *live_until
        {
            return Ok(Some(*existing));
        }
        d.pending.insert(key, (id, until));
        Ok(None)
    }

    async fn release_pending(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
        id: SessionId,
    ) -> Result<(), StoreError> {
        let mut d = self.data();
        let key = (
            (bot.clone(), integration.clone(), subject.clone()),
            slot.to_owned(),
        );
        if d.pending
            .get(&key)
            .is_some_and(|(existing, _)| *existing == id)
        {
            d.pending.remove(&key);
        }
        Ok(())
    }

    async fn put_delivery(
        &self,
        id: SessionId,
        state: &ChannelDelivery,
    ) -> Result<bool, StoreError> {
        let mut d = self.data();
        match d.delivery_states.get_mut(&id) {
            Some(t) => {
                t.value = state.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn record_delivery(
        &self,
        item: &Delivery,
        session: SessionId,
        state: &ChannelDelivery,
        event: Option<&Event>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut d = self.data();
        if let Some(t) = d.delivery_states.get_mut(&session) {
            t.value = state.clone();
        }
        d.deliveries.remove(&item.event.id);
        if let Some(e) = event {
            d.queue(e, now);
            self.hub.outbox.notify_one();
        }
        Ok(())
    }

    async fn put_channel(&self, channel: &ChannelConfig) -> Result<(), StoreError> {
        self.data()
            .channels
            .insert((channel.bot.clone(), channel.name.clone()), channel.clone());
        Ok(())
    }

    async fn get_channel(
        &self,
        bot: &BotId,
        name: &ChannelName,
    ) -> Result<Option<ChannelConfig>, StoreError> {
        Ok(self
            .data()
            .channels
            .get(&(bot.clone(), name.clone()))
            .cloned())
    }

    async fn list_channels(&self, bot: &BotId) -> Result<Vec<ChannelConfig>, StoreError> {
        let mut channels: Vec<ChannelConfig> = self
            .data()
            .channels
            .values()
            .filter(|c| &c.bot == bot)
            .cloned()
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(channels)
    }

    async fn delete_channel(&self, bot: &BotId, name: &ChannelName) -> Result<bool, StoreError> {
        Ok(self
            .data()
            .channels
            .remove(&(bot.clone(), name.clone()))
            .is_some())
    }

    async fn put_webhook_secret(
        &self,
        bot: &BotId,
        secret: &WebhookSecret,
    ) -> Result<(), StoreError> {
        self.data()
            .webhook_secrets
            .entry(bot.clone())
            .or_default()
            .push(secret.clone());
        Ok(())
    }

    async fn webhook_secrets(&self, bot: &BotId) -> Result<Vec<WebhookSecret>, StoreError> {
        Ok(self
            .data()
            .webhook_secrets
            .get(bot)
            .cloned()
            .unwrap_or_default())
    }

    async fn delete_webhook_secret(&self, bot: &BotId, id: &str) -> Result<bool, StoreError> {
        let mut d = self.data();
        let Some(list) = d.webhook_secrets.get_mut(bot) else {
            return Ok(false);
        };
        let before = list.len();
        list.retain(|s| s.id != id);
        Ok(list.len() != before)
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.hub.outbox.clone()
    }

    fn listen(&self, id: SessionId) -> Listener {
        self.hub.listen(id)
    }

    fn waiting(&self) -> usize {
        self.hub.waiting()
    }

    async fn put_console_session(
        &self,
        id_hash: &str,
        session: &ConsoleSession,
    ) -> Result<(), StoreError> {
        let now = clock::now();
        let mut d = self.data();
        d.console.retain(|_, s| s.expires_at > now);
        d.console.insert(id_hash.to_owned(), session.clone());
        Ok(())
    }

    async fn get_console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let now = clock::now();
        Ok(self
            .data()
            .console
            .get(id_hash)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn delete_console_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.data().console.remove(id_hash);
        Ok(())
    }

    async fn rate_limit(
        &self,
        key: &str,
        quota: Quota,
        now: OffsetDateTime,
        want: u32,
    ) -> Result<Verdict, StoreError> {
        let now_us = (now.unix_timestamp_nanos() / 1_000).max(0) as u64;
        let mut d = self.data();
        if d.rates.len() > 100_000 {
            // Whole again (arrival time passed): the same as absent.
            d.rates.retain(|_, tat| *tat > now_us);
        }
        let (verdict, tat) =
            crate::domain::rate::step(quota, d.rates.get(key).copied(), now_us, want);
        if verdict.allowed {
            d.rates.insert(key.to_owned(), tat);
        }
        Ok(verdict)
    }
}
