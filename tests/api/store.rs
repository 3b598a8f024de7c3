//! ④ The store contract, one suite run against both implementations: Redis (a unique key prefix;
//! one server, and a 3-master Cluster) and the embedded memory store.

use std::sync::Arc;
use std::time::Duration;

use authlink::clock::Clock;
use authlink::config::RedisTopology;
use authlink::domain::bot::{ApiKey, Bot, Integration, KeyRole, Mode, ProfileRef, ProviderKind};
use authlink::domain::event::Event;
use authlink::domain::grant::{Grant, GrantStatus, Identity, PendingCode};
use authlink::domain::session::{
    Attempt, FailureCode, Session, SessionError, SessionSpec, Status, Verification,
};
use authlink::domain::{BotId, IntegrationName, Partition, SessionId, Subject};
use authlink::store::memory::MemoryStore;
use authlink::store::redis::RedisStore;
use authlink::store::{
    CodeCheck, CreateOutcome, DeliveryOutcome, Held, Idempotency, Lease, NewSession, OpenQuota,
    QuotaScope, SideWrite, Store, Transition, TransitionError,
};
use time::OffsetDateTime;

use crate::helpers::redis_url;

struct Fixture {
    store: Arc<dyn Store>,
    prefix: String,
    /// The Redis servers to remove this fixture's keys from.
    nodes: Vec<String>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for node in &self.nodes {
            crate::helpers::delete_prefix(node, &self.prefix);
        }
    }
}

fn on_redis(topology: RedisTopology, nodes: Vec<String>) -> Fixture {
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    Fixture {
        store: Arc::new(RedisStore::open(&topology, &prefix).unwrap()),
        prefix,
        nodes,
    }
}

fn redis() -> Fixture {
    on_redis(RedisTopology::Single(redis_url()), vec![redis_url()])
}

/// The test binary's shared Cluster (every multi-key step must stay in one slot there).
fn cluster() -> Fixture {
    let nodes = crate::servers::cluster().urls();
    on_redis(RedisTopology::Cluster(nodes.clone()), nodes)
}

fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        prefix: String::new(),
        nodes: Vec::new(),
    }
}

/// Run one contract test against both stores (Redis as one server and as a Cluster).
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_redis() {
                super::$name(&*super::redis().store).await;
            }
            #[tokio::test]
            async fn on_cluster() {
                super::$name(&*super::cluster().store).await;
            }
            #[tokio::test]
            async fn on_memory() {
                super::$name(&*super::memory().store).await;
            }
        }
    };
}

fn bot() -> BotId {
    BotId::parse("acme").unwrap()
}
fn integration() -> IntegrationName {
    IntegrationName::parse("crm").unwrap()
}

fn session(user: &str, now: OffsetDateTime) -> Session {
    session_for(
        user,
        now,
        time::Duration::minutes(15),
        Some("http://127.0.0.1:9/hook".parse().unwrap()),
    )
}

/// A pending session of the test bot, as the API would create it.
pub fn session_for(
    user: &str,
    now: OffsetDateTime,
    ttl: time::Duration,
    webhook_url: Option<url::Url>,
) -> Session {
    let subject = Subject::parse(user).unwrap();
    let id = SessionId::new(Partition::of(&bot(), &integration(), &subject));
    Session {
        spec: SessionSpec {
            id,
            bot: bot(),
            integration: integration(),
            subject,
            conversation_id: Some("c".into()),
            context: Some(
                serde_json::value::RawValue::from_string(
                    r#"{"n": 1, "list": [], "obj": {}}"#.into(),
                )
                .unwrap(),
            ),
            webhook_url,
            scopes: vec![],
            login_hint: None,
            locale: None,
            return_url: None,
            verification: Verification::None,
            expected_identity: None,
            binding: None,
            provider_config: "salesforce".into(),
            service: None,
            channel: None,
            created_at: now,
            expires_at: now + ttl,
        },
        status: Status::Pending,
        error: None,
        binding: None,
        updated_at: now,
    }
}

/// Events waiting for delivery for the test bot.
async fn queued(store: &dyn Store) -> Vec<Event> {
    store
        .list_deliveries(&bot(), false, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect()
}

fn now() -> OffsetDateTime {
    authlink::clock::now()
}

async fn create(store: &dyn Store, s: &Session) -> CreateOutcome {
    store
        .create_session(NewSession {
            session: s,
            idempotency: None,
            retention: Duration::from_secs(60),
            unless_authorized_by: Some("salesforce"),
            delivery: None,
            quota: None,
        })
        .await
        .unwrap()
}

fn grant(s: &Session, now: OffsetDateTime) -> Grant {
    Grant {
        bot: s.spec.bot.clone(),
        integration: s.spec.integration.clone(),
        subject: s.spec.subject.clone(),
        provider_config: "salesforce".into(),
        status: GrantStatus::Active,
        identity: Identity {
            user_id: Some("005".into()),
            ..Default::default()
        },
        scopes: vec!["api".into()],
        instance_url: None,
        access_expires_at: None,
        access_issued_at: None,
        created_at: now,
        refreshed_at: None,
        last_error: None,
        refresh_at: None,
        refresh_failures: 0,
        pending_code: None,
        generation: 1,
        sealed_tokens: "k.sealed".into(),
    }
}

fn attempt(s: &Session, id: &str, now: OffsetDateTime) -> Attempt {
    Attempt {
        id: id.into(),
        session: s.spec.id,
        verifier: "k.v".into(),
        nonce: None,
        bound: None,
        created_at: now,
    }
}

async fn move_to(
    store: &dyn Store,
    s: &Session,
    to: Status,
    write: SideWrite<'_>,
    event: Option<&Event>,
    now: OffsetDateTime,
) -> Result<Session, TransitionError> {
    store
        .transition(Transition {
            id: s.spec.id,
            to,
            error: None,
            binding: None,
            write,
            channel_event: None,
            event,
            now,
        })
        .await
}

async fn sessions_round_trip(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    assert!(matches!(create(store, &s).await, CreateOutcome::Created));
    let back = store.get_session(s.spec.id).await.unwrap().unwrap();
    assert_eq!(back.status, Status::Pending);
    assert_eq!(
        back.spec.context.as_deref().map(|c| c.get()),
        Some(r#"{"n": 1, "list": [], "obj": {}}"#),
        "opaque JSON survives byte for byte"
    );
    assert_eq!(back.spec.expires_at, s.spec.expires_at);
    assert!(
        store
            .get_session(SessionId::new(s.spec.id.partition()))
            .await
            .unwrap()
            .is_none()
    );
}
contract!(sessions_round_trip);

async fn idempotency_replays_the_first_session(store: &dyn Store) {
    let now = now();
    let idem = Idempotency {
        key: "k1".into(),
        fingerprint: "f1".into(),
        ttl: Duration::from_secs(60),
    };
    let first = session("u1", now);
    let new = |s| NewSession {
        session: s,
        idempotency: Some(&idem),
        retention: Duration::from_secs(60),
        unless_authorized_by: None,
        delivery: None,
        quota: None,
    };
    assert!(matches!(
        store.create_session(new(&first)).await.unwrap(),
        CreateOutcome::Created
    ));
    let second = session("u1", now);
    match store.create_session(new(&second)).await.unwrap() {
        CreateOutcome::Replayed { id, fingerprint } => {
            assert_eq!(id, first.spec.id);
            assert_eq!(fingerprint, "f1");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        store.get_session(second.spec.id).await.unwrap().is_none(),
        "nothing new created"
    );
}
contract!(idempotency_replays_the_first_session);

async fn transitions_follow_the_status_machine(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let err = move_to(store, &s, Status::Completed, SideWrite::None, None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, TransitionError::Conflict(Status::Pending)));
    let a = attempt(&s, "a1", now);
    let moved = move_to(
        store,
        &s,
        Status::InProgress,
        SideWrite::Attempt(&a, now + time::Duration::minutes(5)),
        None,
        now,
    )
    .await
    .unwrap();
    assert_eq!(moved.status, Status::InProgress);
    let error = SessionError {
        code: FailureCode::AccessDenied,
        description: "no".into(),
    };
    let failed = store
        .transition(Transition {
            id: s.spec.id,
            to: Status::Failed,
            error: Some(&error),
            binding: None,
            write: SideWrite::None,
            channel_event: None,
            event: None,
            now,
        })
        .await
        .unwrap();
    assert_eq!(failed.error, Some(error));
    for to in [
        Status::InProgress,
        Status::Completed,
        Status::Cancelled,
        Status::Expired,
    ] {
        let err = move_to(store, &s, to, SideWrite::None, None, now)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransitionError::Conflict(Status::Failed)),
            "{to:?}"
        );
    }
    let ghost = session("u2", now);
    assert!(matches!(
        move_to(store, &ghost, Status::Cancelled, SideWrite::None, None, now).await,
        Err(TransitionError::NotFound)
    ));
}
contract!(transitions_follow_the_status_machine);

async fn a_session_past_its_deadline_can_only_expire(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let later = s.spec.expires_at + time::Duration::seconds(1);
    let a = attempt(&s, "a1", later);
    let err = move_to(
        store,
        &s,
        Status::InProgress,
        SideWrite::Attempt(&a, later + time::Duration::minutes(1)),
        None,
        later,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransitionError::Expired));
    let mut expired = s.clone();
    expired.status = Status::Expired;
    let event = Event::for_session(&expired, None, later);
    move_to(
        store,
        &s,
        Status::Expired,
        SideWrite::None,
        Some(&event),
        later,
    )
    .await
    .unwrap();
    // Exactly one expiry is recorded, whoever tries second.
    assert!(matches!(
        move_to(
            store,
            &s,
            Status::Expired,
            SideWrite::None,
            Some(&event),
            later
        )
        .await,
        Err(TransitionError::Conflict(Status::Expired))
    ));
    let events = queued(store).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "auth_session.expired")
            .count(),
        1
    );
}
contract!(a_session_past_its_deadline_can_only_expire);

async fn an_attempt_is_taken_exactly_once(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let a = attempt(&s, "a1", now);
    move_to(
        store,
        &s,
        Status::InProgress,
        SideWrite::Attempt(&a, now + time::Duration::minutes(5)),
        None,
        now,
    )
    .await
    .unwrap();
    let takes =
        futures_util::future::join_all((0..20).map(|_| store.take_attempt(s.spec.id, "a1"))).await;
    let taken: Vec<_> = takes.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].verifier, "k.v");
    assert!(store.take_attempt(s.spec.id, "a1").await.unwrap().is_none());
    assert!(
        store
            .take_attempt(s.spec.id, "never")
            .await
            .unwrap()
            .is_none()
    );
}
contract!(an_attempt_is_taken_exactly_once);

async fn completion_writes_grant_status_and_event_together(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let a = attempt(&s, "a1", now);
    move_to(
        store,
        &s,
        Status::InProgress,
        SideWrite::Attempt(&a, now + time::Duration::minutes(5)),
        None,
        now,
    )
    .await
    .unwrap();
    let g = grant(&s, now);
    let mut done = s.clone();
    done.status = Status::Completed;
    let event = Event::for_session(&done, Some(&g.identity), now);
    let updated = move_to(
        store,
        &s,
        Status::Completed,
        SideWrite::Grant(&g),
        Some(&event),
        now,
    )
    .await
    .unwrap();
    assert_eq!(updated.status, Status::Completed);
    let stored = store
        .get_grant(&bot(), &integration(), &s.spec.subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.identity, g.identity);
    assert_eq!(queued(store).await, vec![event]);
    // A failed completion writes neither grant nor event.
    let other = session("u2", now);
    create(store, &other).await;
    let g2 = grant(&other, now);
    assert!(
        move_to(
            store,
            &other,
            Status::Completed,
            SideWrite::Grant(&g2),
            Some(&Event::for_session(&other, None, now)),
            now
        )
        .await
        .is_err()
    );
    assert!(
        store
            .get_grant(&bot(), &integration(), &other.spec.subject)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        queued(store)
            .await
            .iter()
            .filter(|e| e.data["session_id"] == other.spec.id.to_string())
            .count(),
        0
    );
    // A working grant answers the next create with `already authorized`.
    let again = session("u1", now);
    assert!(matches!(
        create(store, &again).await,
        CreateOutcome::AlreadyAuthorized(_)
    ));
    // …and leaves nothing behind: no session, and no deadline that would later expire it.
    assert!(store.get_session(again.spec.id).await.unwrap().is_none());
    let after_deadline = again.spec.expires_at + Duration::from_secs(1);
    let due = store
        .claim_expiries(
            again.spec.id.partition(),
            after_deadline,
            Duration::from_secs(30),
            100,
        )
        .await
        .unwrap();
    assert!(!due.contains(&again.spec.id), "{due:?}");
    let force = NewSession {
        session: &again,
        idempotency: None,
        retention: Duration::from_secs(60),
        unless_authorized_by: None,
        delivery: None,
        quota: None,
    };
    assert!(matches!(
        store.create_session(force).await.unwrap(),
        CreateOutcome::Created
    ));
    // A grant from another app does not count.
    let third = session("u1", now);
    let other_app = NewSession {
        session: &third,
        idempotency: None,
        retention: Duration::from_secs(60),
        unless_authorized_by: Some("oauth2"),
        delivery: None,
        quota: None,
    };
    assert!(matches!(
        store.create_session(other_app).await.unwrap(),
        CreateOutcome::Created
    ));
}
contract!(completion_writes_grant_status_and_event_together);

async fn listeners_wake_on_transitions(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let listener = store.listen(s.spec.id);
    assert_eq!(store.waiting(), 1);
    let changed = listener.next_change();
    move_to(store, &s, Status::Cancelled, SideWrite::None, None, now)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), changed)
        .await
        .expect("woken by the change");
    drop(listener);
    assert_eq!(store.waiting(), 0);
}
contract!(listeners_wake_on_transitions);

async fn tenancy_records_round_trip(store: &dyn Store) {
    let now = now();
    let b = a_bot("acme", now);
    store.put_bot(&b).await.unwrap();
    assert_eq!(
        store.get_bot(&bot()).await.unwrap(),
        Some(std::sync::Arc::new(b))
    );
    let key = ApiKey {
        id: "key_1".into(),
        bot: bot(),
        role: KeyRole::Runtime,
        name: None,
        hash: format!("{:064}", 7),
        created_at: now,
    };
    store.put_api_key(&key).await.unwrap();
    assert_eq!(
        store.find_api_key(&key.hash).await.unwrap(),
        Some(std::sync::Arc::new(key.clone()))
    );
    assert_eq!(
        store.list_api_keys(&bot()).await.unwrap(),
        vec![key.clone()]
    );
    let i = Integration {
        bot: bot(),
        name: integration(),
        provider: ProviderKind::Salesforce,
        mode: Mode::User,
        profile: ProfileRef::System,
        scopes: None,
        link_ttl_seconds: None,
        verification: Verification::None,
        salesforce: None,
        display_name: Some("Acme CRM".into()),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    store.put_integration(&i).await.unwrap();
    assert_eq!(
        store.get_integration(&bot(), &integration()).await.unwrap(),
        Some(std::sync::Arc::new(i))
    );
    assert!(store.delete_bot(&bot()).await.unwrap());
    assert!(
        store.find_api_key(&key.hash).await.unwrap().is_none(),
        "keys go with the bot"
    );
    assert!(
        store
            .get_integration(&bot(), &integration())
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.delete_bot(&bot()).await.unwrap());
}
contract!(tenancy_records_round_trip);

async fn deliveries_are_leased_retried_and_dead_lettered(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let mut cancelled = s.clone();
    cancelled.status = Status::Cancelled;
    let event = Event::for_session(&cancelled, None, now);
    move_to(
        store,
        &s,
        Status::Cancelled,
        SideWrite::None,
        Some(&event),
        now,
    )
    .await
    .unwrap();
    let p = s.spec.id.partition();
    let lease = Duration::from_secs(30);

    let claimed = store.claim_deliveries(p, now, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, event);
    assert!(
        store
            .claim_deliveries(p, now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    // The lease runs out (a worker died): another worker gets it, the first one's claim is stale.
    let later = now + time::Duration::seconds(31);
    let reclaimed = store.claim_deliveries(p, later, lease, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    store
        .finish_delivery(
            &claimed[0],
            DeliveryOutcome::Retry {
                at: later,
                error: "stale",
            },
            later,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(p, later, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "stale claim changed nothing"
    );
    // A failure schedules the retry.
    let retry_at = later + time::Duration::seconds(5);
    store
        .finish_delivery(
            &reclaimed[0],
            DeliveryOutcome::Retry {
                at: retry_at,
                error: "500",
            },
            later,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(p, later, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries(p, retry_at, lease, 10)
        .await
        .unwrap();
    assert_eq!(again[0].failures, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("500"));
    store
        .finish_delivery(&again[0], DeliveryOutcome::Dead { error: "gone" }, retry_at)
        .await
        .unwrap();
    let dead = store.list_deliveries(&bot(), true, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].failures, 2);
    assert!(
        store
            .list_deliveries(&bot(), false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Replay: only the owning bot, then it is due again with a fresh count.
    assert!(
        !store
            .replay_delivery(&BotId::parse("other").unwrap(), &event.id, retry_at)
            .await
            .unwrap()
    );
    assert!(
        store
            .replay_delivery(&bot(), &event.id, retry_at)
            .await
            .unwrap()
    );
    let replayed = store
        .claim_deliveries(p, retry_at, lease, 10)
        .await
        .unwrap();
    assert_eq!(replayed[0].failures, 0);
    store
        .finish_delivery(&replayed[0], DeliveryOutcome::Delivered, retry_at)
        .await
        .unwrap();
    assert!(
        store
            .list_deliveries(&bot(), false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_deliveries(&bot(), true, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.backlog().await.unwrap(), 0);
}
contract!(deliveries_are_leased_retried_and_dead_lettered);

async fn expired_sessions_are_claimed_once_per_lease(store: &dyn Store) {
    let now = now();
    let s = session("u1", now);
    create(store, &s).await;
    let p = s.spec.id.partition();
    let lease = Duration::from_secs(30);
    assert!(
        store
            .claim_expiries(p, now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let later = s.spec.expires_at + time::Duration::seconds(1);
    assert_eq!(
        store.claim_expiries(p, later, lease, 10).await.unwrap(),
        vec![s.spec.id]
    );
    assert!(
        store
            .claim_expiries(p, later, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    let n = authlink::expiry::sweep(
        store,
        &Clock::default(),
        p,
        later + time::Duration::seconds(31),
        lease,
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        store.get_session(s.spec.id).await.unwrap().unwrap().status,
        Status::Expired
    );
    assert_eq!(
        queued(store)
            .await
            .iter()
            .filter(|e| e.kind == "auth_session.expired")
            .count(),
        1
    );
    assert_nothing_claimable(store, p, later + time::Duration::seconds(99), "settled").await;
}
contract!(expired_sessions_are_claimed_once_per_lease);

/// A worker renews what it holds, so nobody else can claim it while it works; a renewal finds
/// nothing once the work is finished (delivered, refreshed, settled) or was taken over after the
/// lease ran out — for each of the three leased queues.
async fn leases_are_renewed_while_held_and_end_with_the_work(store: &dyn Store) {
    let now = now();
    let len = Duration::from_secs(30);
    let at = |s: i64| now + time::Duration::seconds(s);

    // A delivery.
    let s = session("u1", now);
    create(store, &s).await;
    let mut cancelled = s.clone();
    cancelled.status = Status::Cancelled;
    let event = Event::for_session(&cancelled, None, now);
    move_to(
        store,
        &s,
        Status::Cancelled,
        SideWrite::None,
        Some(&event),
        now,
    )
    .await
    .unwrap();
    let p = s.spec.id.partition();
    let claimed = store.claim_deliveries(p, now, len, 10).await.unwrap();
    let mut lease = Lease::taken(p, Held::Deliveries(vec![event.id.clone()]), now, len);
    let renewed_to = authlink::store::lease::lease_end(at(20), len);
    assert_eq!(store.renew_lease(&lease, renewed_to).await.unwrap(), 1);
    lease.until = renewed_to;
    assert!(
        store
            .claim_deliveries(p, at(31), len, 10)
            .await
            .unwrap()
            .is_empty(),
        "renewed: still held after the first lease's end"
    );
    // The holder stalls past the renewed lease: another worker takes over, the old lease is gone.
    let taken_over = store.claim_deliveries(p, at(51), len, 10).await.unwrap();
    assert_eq!(taken_over.len(), 1);
    assert_eq!(store.renew_lease(&lease, at(60)).await.unwrap(), 0);
    let mut theirs = Lease::taken(p, Held::Deliveries(vec![event.id.clone()]), at(51), len);
    assert_eq!(store.renew_lease(&theirs, at(70)).await.unwrap(), 1);
    theirs.until = at(70);
    store
        .finish_delivery(&taken_over[0], DeliveryOutcome::Delivered, at(52))
        .await
        .unwrap();
    assert_eq!(
        store.renew_lease(&theirs, at(80)).await.unwrap(),
        0,
        "delivered"
    );
    drop(claimed);

    // A due refresh.
    let s = session("u2", now);
    create(store, &s).await;
    let mut g = grant(&s, now);
    g.refresh_at = Some(now);
    complete(store, &s, &g, now).await;
    let p = s.spec.id.partition();
    let due = store.claim_refreshes(p, now, len, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let lease = Lease::taken(p, Held::Refreshes(due), now, len);
    assert_eq!(store.renew_lease(&lease, at(60)).await.unwrap(), 1);
    let lease = Lease {
        until: at(60),
        ..lease
    };
    assert!(
        store
            .claim_refreshes(p, at(31), len, 10)
            .await
            .unwrap()
            .is_empty(),
        "renewed"
    );
    // Refreshed: the grant's new schedule replaces the lease.
    let mut stored = store
        .get_grant(&bot(), &integration(), &s.spec.subject)
        .await
        .unwrap()
        .unwrap();
    stored.refresh_at = Some(at(3600));
    assert!(store.update_grant(&stored, None).await.unwrap());
    assert_eq!(
        store.renew_lease(&lease, at(90)).await.unwrap(),
        0,
        "refreshed"
    );
    assert!(
        store
            .claim_refreshes(p, at(61), len, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A grant that can never be refreshed in the background leaves the index.
    assert_eq!(
        store
            .claim_refreshes(p, at(3600), len, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    store
        .forget_refresh(&bot(), &integration(), &s.spec.subject)
        .await
        .unwrap();
    assert!(
        store
            .claim_refreshes(p, at(9999), len, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A due expiry.
    let s = session("u3", now);
    create(store, &s).await;
    let p = s.spec.id.partition();
    let later = s.spec.expires_at + time::Duration::seconds(1);
    let due = store.claim_expiries(p, later, len, 10).await.unwrap();
    assert_eq!(due, vec![s.spec.id]);
    let lease = Lease::taken(p, Held::Expiries(due), later, len);
    let renewed_to = later + time::Duration::seconds(60);
    assert_eq!(store.renew_lease(&lease, renewed_to).await.unwrap(), 1);
    assert_nothing_claimable(store, p, later + time::Duration::seconds(31), "renewed").await;
    store.forget_deadline(s.spec.id).await.unwrap();
    let lease = Lease {
        until: renewed_to,
        ..lease
    };
    assert_eq!(
        store.renew_lease(&lease, renewed_to).await.unwrap(),
        0,
        "settled"
    );
}
contract!(leases_are_renewed_while_held_and_end_with_the_work);

/// A session whose link goes to a chat channel: its delivery record and the item that posts it
/// are written with it; recording the outcome replaces the record, queues the follow-up event
/// and retires the item in one step; the settling transition queues the update item with the
/// webhook event.
async fn channel_items_are_written_with_the_session_and_recorded_when_done(store: &dyn Store) {
    use authlink::domain::channel::{ChannelDelivery, ChannelName, ChannelTarget, DeliveryStatus};
    use authlink::domain::event::ChannelJob;
    let now = now();
    let mut s = session("chan", now);
    let name = ChannelName::parse("slack").unwrap();
    s.spec.channel = Some(ChannelTarget {
        name: name.clone(),
        to: Some("C1".into()),
        thread: None,
        user: None,
    });
    let fresh = ChannelDelivery::queued(name.clone());
    let send = Event::for_channel(&s, ChannelJob::Send, now).unwrap();
    let outcome = store
        .create_session(NewSession {
            session: &s,
            idempotency: None,
            retention: Duration::from_secs(60),
            unless_authorized_by: Some("salesforce"),
            delivery: Some((&fresh, &send)),
            quota: None,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, CreateOutcome::Created));
    assert_eq!(store.get_delivery(s.spec.id).await.unwrap(), Some(fresh));
    let p = s.spec.id.partition();
    let items = store
        .claim_deliveries(p, now, Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].event.channel, Some(ChannelJob::Send));
    assert_eq!(items[0].event.webhook_url, None, "never sent to a webhook");

    let sent = ChannelDelivery {
        status: DeliveryStatus::Sent,
        message_ref: Some("C1:1.2".into()),
        ..ChannelDelivery::queued(name.clone())
    };
    let delivered = Event::for_delivery(&s, "auth_link.delivered", &sent, now);
    store
        .record_delivery(&items[0], s.spec.id, &sent, Some(&delivered), now)
        .await
        .unwrap();
    assert_eq!(store.get_delivery(s.spec.id).await.unwrap(), Some(sent));
    let later = now + time::Duration::seconds(60);
    let next = store
        .claim_deliveries(p, later, Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1, "the item is gone, the event queued");
    assert_eq!(next[0].event, delivered);
    store
        .finish_delivery(&next[0], DeliveryOutcome::Delivered, later)
        .await
        .unwrap();

    // Settling queues the webhook event and the update item together.
    let mut cancelled = s.clone();
    cancelled.status = Status::Cancelled;
    let event = Event::for_session(&cancelled, None, now);
    let update = Event::channel_update(&cancelled, now).unwrap();
    store
        .transition(Transition {
            id: s.spec.id,
            to: Status::Cancelled,
            error: None,
            binding: None,
            write: SideWrite::None,
            event: Some(&event),
            channel_event: Some(&update),
            now,
        })
        .await
        .unwrap();
    let kinds: Vec<String> = queued(store).await.into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&"auth_session.cancelled".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"auth_link.update".to_owned()), "{kinds:?}");

    // A session taken back (already authorized) leaves no item and no record behind.
    let mut other = session("chan2", now);
    other.spec.channel = s.spec.channel.clone();
    let g = grant(&other, now);
    let seed = session("chan2", now);
    create(store, &seed).await;
    let a = attempt(&seed, "a1", now);
    move_to(
        store,
        &seed,
        Status::InProgress,
        SideWrite::Attempt(&a, now + time::Duration::minutes(5)),
        None,
        now,
    )
    .await
    .unwrap();
    move_to(
        store,
        &seed,
        Status::Completed,
        SideWrite::Grant(&g),
        None,
        now,
    )
    .await
    .unwrap();
    let before = queued(store).await.len();
    let send2 = Event::for_channel(&other, ChannelJob::Send, now).unwrap();
    let queued2 = ChannelDelivery::queued(name);
    let outcome = store
        .create_session(NewSession {
            session: &other,
            idempotency: None,
            retention: Duration::from_secs(60),
            unless_authorized_by: Some("salesforce"),
            delivery: Some((&queued2, &send2)),
            quota: None,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, CreateOutcome::AlreadyAuthorized(_)));
    assert_eq!(store.get_delivery(other.spec.id).await.unwrap(), None);
    assert_eq!(queued(store).await.len(), before, "no link is posted");
}
contract!(channel_items_are_written_with_the_session_and_recorded_when_done);

fn a_bot(id: &str, now: OffsetDateTime) -> Bot {
    Bot {
        id: BotId::parse(id).unwrap(),
        name: format!("{id} assistant"),
        webhook_url: None,
        allowed_return_hosts: vec![],
        allowed_webhook_hosts: vec![],
        disabled_webhooks: vec![],
        identity_issuer: None,
        created_at: now,
        updated_at: now,
    }
}

async fn bot_ids(store: &dyn Store, after: Option<&str>, limit: usize) -> Vec<String> {
    let after = after.map(|a| BotId::parse(a).unwrap());
    store
        .list_bots(after.as_ref(), limit)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id.to_string())
        .collect()
}

async fn bots_are_listed_by_id_in_pages(store: &dyn Store) {
    let now = now();
    for id in ["gamma", "acme", "beta-2", "beta"] {
        store.put_bot(&a_bot(id, now)).await.unwrap();
    }
    // Written again: still listed once.
    store.put_bot(&a_bot("acme", now)).await.unwrap();
    assert_eq!(
        bot_ids(store, None, 10).await,
        ["acme", "beta", "beta-2", "gamma"]
    );
    assert_eq!(bot_ids(store, None, 2).await, ["acme", "beta"]);
    assert_eq!(bot_ids(store, Some("beta"), 2).await, ["beta-2", "gamma"]);
    assert_eq!(bot_ids(store, Some("gamma"), 2).await, Vec::<String>::new());
    assert!(
        store
            .delete_bot(&BotId::parse("beta").unwrap())
            .await
            .unwrap()
    );
    assert_eq!(bot_ids(store, None, 10).await, ["acme", "beta-2", "gamma"]);
}
contract!(bots_are_listed_by_id_in_pages);

/// A session of `user` awaiting the code `code`, its grant written as a callback writes it.
async fn awaiting_code(store: &dyn Store, user: &str, code: &str, now: OffsetDateTime) -> Session {
    let s = session(user, now);
    create(store, &s).await;
    let a = attempt(&s, "a1", now);
    let until = now + time::Duration::minutes(5);
    move_to(
        store,
        &s,
        Status::InProgress,
        SideWrite::Attempt(&a, until),
        None,
        now,
    )
    .await
    .unwrap();
    let g = Grant {
        status: GrantStatus::AwaitingCode,
        pending_code: Some(PendingCode {
            hash: PendingCode::hash(&s.spec.id.to_string(), code),
            failures: 0,
        }),
        ..grant(&s, now)
    };
    move_to(
        store,
        &s,
        Status::AwaitingCode,
        SideWrite::Grant(&g),
        None,
        now,
    )
    .await
    .unwrap();
    s
}

async fn try_code(store: &dyn Store, s: &Session, code: &str) -> CodeCheck {
    let spec = &s.spec;
    store
        .check_code(
            (&spec.bot, &spec.integration, &spec.subject),
            spec.id,
            &PendingCode::hash(&spec.id.to_string(), code),
            PendingCode::MAX_FAILURES,
            spec.expires_at,
        )
        .await
        .unwrap()
}

/// Issue 24, finding 6: tries at a verification code are counted in the step that compares
/// them, so a burst of concurrent tries gets exactly the allowed number of comparisons.
async fn code_tries_are_counted_in_the_step_that_compares_them(store: &dyn Store) {
    let now = now();
    let none = session("nobody", now);
    create(store, &none).await;
    assert_eq!(try_code(store, &none, "123456").await, CodeCheck::NoCode);

    let s = awaiting_code(store, "u1", "123456", now).await;
    let tries =
        futures_util::future::join_all((0..60).map(|_| try_code(store, &s, "000000"))).await;
    let mut left: Vec<u32> = tries
        .iter()
        .filter_map(|t| match t {
            CodeCheck::Wrong { left } => Some(*left),
            _ => None,
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, [0, 1, 2, 3, 4], "{tries:?}");
    assert_eq!(
        tries.iter().filter(|t| **t == CodeCheck::Exhausted).count(),
        55,
        "{tries:?}"
    );
    assert_eq!(
        try_code(store, &s, "123456").await,
        CodeCheck::Exhausted,
        "the right code after the last try is not compared"
    );

    let s = awaiting_code(store, "u2", "654321", now).await;
    assert_eq!(
        try_code(store, &s, "000000").await,
        CodeCheck::Wrong { left: 4 }
    );
    assert_eq!(try_code(store, &s, "654321").await, CodeCheck::Right);
    assert_eq!(
        try_code(store, &s, "000000").await,
        CodeCheck::Confirmed,
        "after the right code no try is compared or can fail the session"
    );
}
contract!(code_tries_are_counted_in_the_step_that_compares_them);

async fn create_within(
    store: &dyn Store,
    s: &Session,
    quota: OpenQuota,
    unless_authorized: bool,
) -> CreateOutcome {
    store
        .create_session(NewSession {
            session: s,
            idempotency: None,
            retention: Duration::from_secs(60),
            unless_authorized_by: unless_authorized.then_some("salesforce"),
            delivery: None,
            quota: Some(quota),
        })
        .await
        .unwrap()
}

fn refused(outcome: &CreateOutcome) -> Option<(QuotaScope, OffsetDateTime)> {
    match outcome {
        CreateOutcome::OverQuota { scope, until } => Some((*scope, *until)),
        _ => None,
    }
}

/// Issue 24, finding 7: open sessions are held to a quota per bot and per user; a settled or
/// expired session frees its place, a refused or already-authorized create takes none.
async fn open_sessions_are_held_to_their_quotas(store: &dyn Store) {
    let quota = OpenQuota {
        per_bot: 3,
        per_user: 2,
    };
    let now = now();
    let ms = |t: OffsetDateTime| authlink::clock::unix_ms(t);
    let a = session("u1", now);
    let b = session("u1", now + time::Duration::seconds(1));
    assert!(matches!(
        create_within(store, &a, quota, true).await,
        CreateOutcome::Created
    ));
    assert!(matches!(
        create_within(store, &b, quota, true).await,
        CreateOutcome::Created
    ));
    let c = session("u1", now + time::Duration::seconds(2));
    let (scope, until) = refused(&create_within(store, &c, quota, true).await).unwrap();
    assert_eq!(scope, QuotaScope::User);
    assert_eq!(
        ms(until),
        ms(a.spec.expires_at),
        "the first open session's end"
    );
    assert!(
        store.get_session(c.spec.id).await.unwrap().is_none(),
        "nothing written"
    );

    let d = session("u2", now);
    assert!(matches!(
        create_within(store, &d, quota, true).await,
        CreateOutcome::Created
    ));
    let e = session("u3", now);
    let (scope, _) = refused(&create_within(store, &e, quota, true).await).unwrap();
    assert_eq!(scope, QuotaScope::Bot);

    // A settled session gives its places back, to the user and to the bot.
    move_to(store, &a, Status::Cancelled, SideWrite::None, None, now)
        .await
        .unwrap();
    assert!(matches!(
        create_within(store, &c, quota, true).await,
        CreateOutcome::Created
    ));
    let (scope, _) = refused(&create_within(store, &e, quota, true).await).unwrap();
    assert_eq!(scope, QuotaScope::Bot);

    // A user who is connected already takes no place (`already_authorized`).
    let other = OpenQuota {
        per_bot: 1000,
        per_user: 1,
    };
    let g = connect(store, "u9", now).await;
    for _ in 0..3 {
        let s = session("u9", now);
        let outcome = create_within(store, &s, other, true).await;
        assert!(
            matches!(outcome, CreateOutcome::AlreadyAuthorized(ref found) if found.subject == g.subject),
            "{outcome:?}"
        );
    }
    assert!(matches!(
        create_within(store, &session("u9", now), other, false).await,
        CreateOutcome::Created
    ));

    // Expired sessions hold no place, settled or not.
    let later = now + time::Duration::minutes(16);
    let f = session("u1", later);
    assert!(matches!(
        create_within(store, &f, quota, true).await,
        CreateOutcome::Created
    ));
    let g = session("u4", later);
    assert!(matches!(
        create_within(store, &g, quota, true).await,
        CreateOutcome::Created
    ));
}
contract!(open_sessions_are_held_to_their_quotas);

/// A completed session for `user` of the test bot: its grant, written the way a callback writes
/// it (in the session's transition).
async fn connect(store: &dyn Store, user: &str, now: OffsetDateTime) -> Grant {
    let s = session(user, now);
    create(store, &s).await;
    let g = grant(&s, now);
    complete(store, &s, &g, now).await;
    g
}

/// Take the pending session `s` through an attempt to completed, writing `g`.
async fn complete(store: &dyn Store, s: &Session, g: &Grant, now: OffsetDateTime) {
    let a = attempt(s, "a1", now);
    let until = now + time::Duration::minutes(5);
    move_to(
        store,
        s,
        Status::InProgress,
        SideWrite::Attempt(&a, until),
        None,
        now,
    )
    .await
    .unwrap();
    move_to(store, s, Status::Completed, SideWrite::Grant(g), None, now)
        .await
        .unwrap();
}

async fn subjects(store: &dyn Store, after: Option<&str>, limit: usize) -> Vec<String> {
    let after = after.map(|a| Subject::parse(a).unwrap());
    store
        .list_grants(&bot(), &integration(), after.as_ref(), limit)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.subject.as_str().to_owned())
        .collect()
}

async fn grants_are_listed_by_subject_in_pages_and_deleted_ones_never(store: &dyn Store) {
    let now = now();
    let mut users: Vec<String> = (0..25).map(|i| format!("user-{i:02}")).collect();
    for u in users.iter().rev() {
        connect(store, u, now).await;
    }
    // Pages of 7, across every partition the users fall in: each user once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = subjects(store, after.as_deref(), 7).await;
        assert!(page.len() <= 7);
        seen.extend(page.iter().cloned());
        match page.last() {
            Some(last) if page.len() == 7 => after = Some(last.clone()),
            _ => break,
        }
    }
    assert_eq!(seen, users);
    // A refreshed grant stays listed once; a deleted one is gone from every page.
    let mut g = store
        .get_grant(&bot(), &integration(), &Subject::parse("user-03").unwrap())
        .await
        .unwrap()
        .unwrap();
    g.last_error = Some("refresh failed: 503".into());
    assert!(store.update_grant(&g, None).await.unwrap());
    assert!(
        store
            .delete_grant(
                &bot(),
                &integration(),
                &Subject::parse("user-04").unwrap(),
                None
            )
            .await
            .unwrap()
    );
    users.retain(|u| u != "user-04");
    assert_eq!(subjects(store, None, 100).await, users);
    assert_eq!(
        subjects(store, Some("user-02"), 2).await,
        ["user-03", "user-05"]
    );
    let listed = store
        .list_grants(&bot(), &integration(), None, 100)
        .await
        .unwrap();
    let refreshed = listed
        .iter()
        .find(|g| g.subject.as_str() == "user-03")
        .unwrap();
    assert_eq!(refreshed.last_error.as_deref(), Some("refresh failed: 503"));
    // Another integration of the bot has none.
    assert!(
        store
            .list_grants(&bot(), &IntegrationName::parse("erp").unwrap(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
contract!(grants_are_listed_by_subject_in_pages_and_deleted_ones_never);

/// A pending session of `bot` for `user`, created `at`.
fn session_of(bot: &str, user: &str, at: OffsetDateTime) -> Session {
    let mut s = session(user, at);
    s.spec.bot = BotId::parse(bot).unwrap();
    s.spec.id = SessionId::new(Partition::of(&s.spec.bot, &integration(), &s.spec.subject));
    s
}

async fn recent_ids(
    store: &dyn Store,
    limit: usize,
    keep: impl Fn(&Session) -> bool + Send + Sync,
) -> Vec<SessionId> {
    store
        .recent_sessions(&bot(), limit, &keep)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.spec.id)
        .collect()
}

async fn recent_sessions_are_listed_newest_first(store: &dyn Store) {
    let start = now();
    let sessions: Vec<Session> = (0..6)
        .map(|i| session_of("acme", &format!("u{i}"), start + time::Duration::seconds(i)))
        .collect();
    for s in &sessions {
        create(store, s).await;
    }
    create(
        store,
        &session_of("other", "u9", start + time::Duration::seconds(9)),
    )
    .await;
    let newest: Vec<SessionId> = sessions.iter().rev().map(|s| s.spec.id).collect();
    assert_eq!(recent_ids(store, 10, |_| true).await, newest);
    assert_eq!(recent_ids(store, 2, |_| true).await, newest[..2]);
    // Filtered: only what `keep` accepts, still newest first.
    move_to(
        store,
        &sessions[1],
        Status::Cancelled,
        SideWrite::None,
        None,
        start,
    )
    .await
    .unwrap();
    move_to(
        store,
        &sessions[4],
        Status::Cancelled,
        SideWrite::None,
        None,
        start,
    )
    .await
    .unwrap();
    assert_eq!(
        recent_ids(store, 10, |s| s.status == Status::Cancelled).await,
        [sessions[4].spec.id, sessions[1].spec.id]
    );
    assert_eq!(
        recent_ids(store, 1, |s| s.status == Status::Cancelled).await,
        [sessions[4].spec.id]
    );
    // A session taken back (the user was connected already) is not listed.
    let g = grant(&sessions[0], start);
    complete(store, &sessions[0], &g, start).await;
    let again = session_of("acme", "u0", start + time::Duration::seconds(30));
    assert!(matches!(
        create(store, &again).await,
        CreateOutcome::AlreadyAuthorized(_)
    ));
    assert_eq!(recent_ids(store, 10, |_| true).await, newest);
}
contract!(recent_sessions_are_listed_newest_first);

/// Each partition keeps only its newest `RECENT_SESSIONS_PER_PARTITION` in the listing.
async fn recent_sessions_keep_the_newest_of_each_partition(store: &dyn Store) {
    let start = now();
    let cap = authlink::store::RECENT_SESSIONS_PER_PARTITION;
    let target = Partition::of(&bot(), &integration(), &Subject::parse("u0").unwrap());
    let users: Vec<String> = (0..)
        .map(|i| format!("u{i}"))
        .filter(|u| Partition::of(&bot(), &integration(), &Subject::parse(u).unwrap()) == target)
        .take(cap + 2)
        .collect();
    let mut ids = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let s = session_of("acme", u, start + time::Duration::milliseconds(i as i64));
        create(store, &s).await;
        ids.push(s.spec.id);
    }
    let oldest = [ids[0], ids[1]];
    assert!(
        recent_ids(store, 100, move |s| oldest.contains(&s.spec.id))
            .await
            .is_empty(),
        "the two oldest of the partition are out of the index"
    );
    let listed = recent_ids(store, 100, |_| true).await;
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[0], ids[cap + 1], "newest first");
}
contract!(recent_sessions_keep_the_newest_of_each_partition);

/// Redis: records written before the indexes existed (by an older authlink) are listed once the
/// one-time backfill ran, and index entries whose record is gone are skipped and dropped.
async fn old_records_are_backfilled_and_ghost_entries_dropped(fixture: Fixture) {
    let store = &*fixture.store;
    let now = now();
    let legacy_bot = a_bot("legacy", now);
    let s = session("old-user", now);
    let g = grant(&s, now);
    let p = s.spec.id.partition().index();
    let prefix = &fixture.prefix;
    let grant_key = format!("{prefix}:{{p{p:02}}}:g:acme:crm:old-user");
    let bot_key = format!("{prefix}:{{b:legacy}}:bot");
    raw(
        &fixture,
        &[
            "SET",
            &bot_key,
            &serde_json::to_string(&legacy_bot).unwrap(),
        ],
    );
    raw(
        &fixture,
        &[
            "HSET",
            &grant_key,
            "j",
            &serde_json::to_string(&g).unwrap(),
            "st",
            "active",
            "cfg",
            "salesforce",
            "gen",
            "1",
        ],
    );
    store.put_bot(&a_bot("acme", now)).await.unwrap();
    assert_eq!(bot_ids(store, None, 10).await, ["acme", "legacy"]);
    connect(store, "new-user", now).await;
    assert_eq!(subjects(store, None, 10).await, ["new-user", "old-user"]);

    // The records vanish behind the store's back: listing skips them and forgets them.
    raw(&fixture, &["DEL", &bot_key]);
    raw(&fixture, &["DEL", &grant_key]);
    assert_eq!(bot_ids(store, None, 10).await, ["acme"]);
    assert_eq!(subjects(store, None, 10).await, ["new-user"]);
    let index = format!("{prefix}:{{p{p:02}}}:gx:acme:crm");
    assert_eq!(
        raw(&fixture, &["ZSCORE", &index, "old-user"]),
        redis::Value::Nil
    );
    assert_eq!(
        raw(&fixture, &["ZSCORE", &format!("{prefix}:bots"), "legacy"]),
        redis::Value::Nil
    );
    let recent = session("recent-user", now);
    create(store, &recent).await;
    let rp = recent.spec.id.partition().index();
    raw(
        &fixture,
        &[
            "DEL",
            &format!("{prefix}:{{p{rp:02}}}:s:{}", recent.spec.id),
        ],
    );
    let listed = recent_ids(store, 10, |_| true).await;
    assert!(!listed.contains(&recent.spec.id), "{listed:?}");
    assert_eq!(listed.len(), 1, "new-user's session is still there");
    assert_eq!(
        raw(
            &fixture,
            &[
                "LPOS",
                &format!("{prefix}:{{p{rp:02}}}:rn:acme"),
                &recent.spec.id.to_string()
            ]
        ),
        redis::Value::Nil
    );
}

/// A command straight to Redis (a Cluster routes it by its key).
fn raw(fixture: &Fixture, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    args[1..].iter().for_each(|a| {
        cmd.arg(*a);
    });
    if fixture.nodes.len() > 1 {
        let client = redis::cluster::ClusterClient::new(fixture.nodes.clone()).unwrap();
        cmd.query(&mut client.get_connection().unwrap()).unwrap()
    } else {
        let client = redis::Client::open(fixture.nodes[0].as_str()).unwrap();
        cmd.query(&mut client.get_connection().unwrap()).unwrap()
    }
}

#[tokio::test]
async fn old_records_are_backfilled_and_ghost_entries_dropped_on_redis() {
    old_records_are_backfilled_and_ghost_entries_dropped(redis()).await;
}

#[tokio::test]
async fn old_records_are_backfilled_and_ghost_entries_dropped_on_cluster() {
    old_records_are_backfilled_and_ghost_entries_dropped(cluster()).await;
}

/// No deadline in `p` is due (or back from its lease) at `at`.
async fn assert_nothing_claimable(store: &dyn Store, p: Partition, at: OffsetDateTime, why: &str) {
    let due = store
        .claim_expiries(p, at, Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{why}: {due:?}");
}

/// Creation writes the deadline before the session (one pipeline, no transaction), so a crash
/// between the two leaves a deadline without its session: the sweep drops it, sends nothing, and
/// it is never claimed again.
#[tokio::test]
async fn a_deadline_whose_session_was_never_written_is_dropped_without_an_event() {
    let fixture = redis();
    let store = &*fixture.store;
    let now = now();
    let s = session("crashed-between-writes", now);
    create(store, &s).await;
    let key = format!(
        "{}:{{p{:02}}}:s:{}",
        fixture.prefix,
        s.spec.id.partition().index(),
        s.spec.id
    );
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let removed: u32 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the session record is where the store keeps it");

    let p = s.spec.id.partition();
    let lease = Duration::from_secs(30);
    let later = s.spec.expires_at + time::Duration::seconds(1);
    assert_eq!(
        authlink::expiry::sweep(store, &Clock::default(), p, later, lease)
            .await
            .unwrap(),
        1,
        "the orphaned deadline is claimed"
    );
    assert!(store.get_session(s.spec.id).await.unwrap().is_none());
    assert!(
        queued(store).await.is_empty(),
        "no event for a session nobody saw"
    );
    assert_nothing_claimable(
        store,
        p,
        later + time::Duration::seconds(99),
        "dropped, not leased again",
    )
    .await;
}

/// Sentinel: after a failover the same store, never restarted, still has the sessions written
/// before it and keeps its contract on the new master — writes go there (the old master here
/// stays writable, so only following the sentinels gets them there), and so does the change
/// subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_the_store_follows_the_new_master() {
    let setup = crate::servers::SentinelSetup::start();
    let settings = setup.settings();
    let topology = RedisTopology::Sentinel(authlink::config::SentinelConfig {
        master_name: settings.master_name,
        nodes: settings.nodes,
        master_tls: false,
        master_username: None,
        master_password: None,
    });
    let fixture = on_redis(topology, Vec::new());
    let (store, prefix) = (&*fixture.store, fixture.prefix.as_str());
    let now = now();
    let before = session("u1", now);
    create(store, &before).await;
    setup.replicated();

    let old_master = setup.master_port();
    setup.failover();
    assert_ne!(setup.master_port(), old_master);
    let new_master = &setup.replica;
    crate::helpers::until_async_within(Duration::from_secs(30), || async {
        let probe = session("probe", authlink::clock::now());
        let id = probe.spec.id.to_string();
        store
            .create_session(NewSession {
                session: &probe,
                idempotency: None,
                retention: Duration::from_secs(60),
                unless_authorized_by: None,
                delivery: None,
                quota: None,
            })
            .await
            .is_ok()
            && new_master.keys(prefix).iter().any(|k| k.contains(&id))
    })
    .await;
    crate::helpers::until(|| new_master.has_subscriber(prefix)).await;

    let back = store.get_session(before.spec.id).await.unwrap();
    assert_eq!(
        back.and_then(|s| s.spec.context)
            .map(|c| c.get().to_owned()),
        before.spec.context.map(|c| c.get().to_owned())
    );
    sessions_round_trip(store).await;
    transitions_follow_the_status_machine(store).await;
    an_attempt_is_taken_exactly_once(store).await;
    listeners_wake_on_transitions(store).await;
}
