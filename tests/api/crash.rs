//! Two real `authlink` processes on one Redis; one is killed with SIGKILL in the middle of a
//! backlog of 1,000 webhook events. Every event still arrives: the dead process's leased
//! deliveries return to the queue when their lease ends (no longer renewed, within the default
//! 12 s lease), and the survivor delivers them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use authlink::config::GeneratedKeys;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{redis_url, scan_keys, until};
use crate::receiver::Receiver;
use crate::servers::{Daemon, Solo, free_port};

/// Two daemon processes on one Redis (a fresh key prefix), with bot `acme` whose webhooks go to
/// `receiver` (which trusts its secret) and the Salesforce integration `crm`.
struct Replicas {
    a: Daemon,
    /// The other replica: it only needs to run (it delivers what A leaves behind).
    _b: Daemon,
    operator: String,
    api: reqwest::Client,
    _dir: tempfile::TempDir,
    // Last: the keys are deleted after both daemons are gone.
    _cleanup: Cleanup,
}

impl Replicas {
    async fn start(receiver: &Receiver) -> Self {
        let keys = GeneratedKeys::new();
        let operator = secrecy::ExposeSecret::expose_secret(&keys.operator_key).to_owned();
        let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
        let cleanup = Cleanup(prefix.clone());
        let (port_a, port_b) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("authlink.toml");
        std::fs::write(
            &config,
            format!(
                r#"public_url = "http://127.0.0.1:{port_a}"
[store]
redis_url = "{redis}"
key_prefix = "{prefix}"
[keys]
signing = ["{signing}"]
encryption = ["{encryption}"]
operator_key_sha256 = "{op}"
[webhooks]
retry_schedule_seconds = [0.05, 0.1, 0.2, 0.5]
poll_interval_ms = 20
per_bot_concurrency = 4
[system_apps.salesforce]
client_id = "cid"
client_secret = "secret"
login_host = "http://127.0.0.1:9"
"#,
                redis = redis_url(),
                signing = keys.signing,
                encryption = keys.encryption,
                op = keys.operator_key_sha256,
            ),
        )
        .unwrap();
        let a = Daemon::start(&config, port_a, &[]).await;
        let b = Daemon::start(&config, port_b, &[]).await;
        let r = Self {
            a,
            _b: b,
            operator,
            api: reqwest::Client::new(),
            _dir: dir,
            _cleanup: cleanup,
        };
        let bot = r
            .call(
                reqwest::Method::PUT,
                "/v1/bots/acme",
                Some(json!({"name": "acme", "webhook_url": receiver.url})),
            )
            .await;
        assert_eq!(bot.status(), StatusCode::CREATED);
        let secret: Value = r
            .call(reqwest::Method::POST, "/v1/bots/acme/webhook-secrets", None)
            .await
            .json()
            .await
            .unwrap();
        receiver.trust(secret["secret"].as_str().unwrap());
        let integration = r
            .call(
                reqwest::Method::PUT,
                "/v1/bots/acme/integrations/crm",
                Some(json!({"provider": "salesforce"})),
            )
            .await;
        assert_eq!(integration.status(), StatusCode::CREATED);
        r
    }

    /// An operator call to replica A.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .api
            .request(method, format!("{}{path}", self.a.base))
            .bearer_auth(&self.operator);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }
}

/// The session ids of every event `receiver` got.
fn arrived(receiver: &Receiver) -> HashSet<String> {
    receiver
        .delivered()
        .iter()
        .map(|r| {
            r.body["data"]["session_id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_backlog_loses_no_event() {
    let receiver = Receiver::spawn().await;
    receiver.slow(Duration::from_millis(20));
    let mut r = Replicas::start(&receiver).await;
    // 1,000 sessions, each cancelled: 1,000 events, queued faster than the receiver takes them.
    let mut sessions = Vec::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let created = join_all(chunk.iter().map(|i| {
            r.call(
                reqwest::Method::POST,
                "/v1/bots/acme/auth-sessions",
                Some(json!({"integration": "crm", "user_id": format!("u{i}")})),
            )
        }))
        .await;
        for c in created {
            let v: Value = c.json().await.unwrap();
            sessions.push(v["id"].as_str().unwrap().to_owned());
        }
    }
    for chunk in sessions.chunks(50) {
        let paths: Vec<String> = chunk
            .iter()
            .map(|id| format!("/v1/bots/acme/auth-sessions/{id}"))
            .collect();
        let cancelled = join_all(
            paths
                .iter()
                .map(|path| r.call(reqwest::Method::DELETE, path, None)),
        )
        .await;
        assert!(cancelled.iter().all(|c| c.status() == StatusCode::OK));
    }

    // Kill A while the backlog drains (it holds leased deliveries at this point).
    until(|| receiver.delivered().len() >= 100).await;
    r.a.child.kill().unwrap(); // SIGKILL
    r.a.child.wait().unwrap();
    let killed = std::time::Instant::now();
    let delivered_at_kill = receiver.delivered().len();
    assert!(delivered_at_kill < 1000, "the kill happened mid-backlog");

    let wanted: HashSet<String> = sessions.iter().cloned().collect();
    // The survivor drains the queue meanwhile; what A held comes back when its lease ends.
    crate::helpers::until_async_within(Duration::from_secs(60), || async {
        arrived(&receiver) == wanted
    })
    .await;
    assert_eq!(arrived(&receiver), wanted, "every event arrived");
    let last = receiver.delivered().iter().map(|r| r.at).max().unwrap();
    let recovered = last.saturating_duration_since(killed);
    // Printed, not asserted: how soon depends on the machine's load (a timing threshold made
    // this test fail on a busy CI machine); that every event arrives is the property.
    eprintln!("last event arrived {recovered:?} after the kill (default 12 s lease)");
    let ids: HashSet<String> = receiver.delivered().iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids.len(),
        1000,
        "one webhook-id per event; duplicates share it"
    );
    assert!(receiver.log().iter().all(|r| r.verified == [true]));
}

/// The same with chat-channel deliveries: 300 sessions whose links go to a Matrix room (a real
/// Synapse), and A killed while they are being posted. Every link reaches the room, and none
/// twice: what A had sent without recording it is sent again by B with the same txnId, which
/// the homeserver recognises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_channel_backlog_posts_every_link_once() {
    let synapse = crate::synapse::Synapse::shared();
    let bot = synapse.register("crash-bot").await;
    let owner = synapse.register("crash-owner").await;
    let room = synapse.create_room(&owner).await;
    synapse.invite_and_join(&room, &owner, &bot).await;
    let receiver = Receiver::spawn().await;
    let mut r = Replicas::start(&receiver).await;
    let put = r
        .call(
            reqwest::Method::PUT,
            "/v1/bots/acme/channels/mx",
            Some(json!({"type": "matrix", "homeserver_url": synapse.base_url, "access_token": bot.access_token})),
        )
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let mut links = Vec::new();
    for chunk in (0..300).collect::<Vec<_>>().chunks(50) {
        let created = join_all(chunk.iter().map(|i| {
            r.call(
                reqwest::Method::POST,
                "/v1/bots/acme/auth-sessions",
                Some(json!({"integration": "crm", "user_id": format!("m{i}"), "channel": {"name": "mx", "to": room}})),
            )
        }))
        .await;
        for c in created {
            assert_eq!(c.status(), StatusCode::CREATED);
            let v: Value = c.json().await.unwrap();
            links.push(v["link"].as_str().unwrap().to_owned());
        }
    }
    let posted = || async {
        let bodies: Vec<String> = synapse
            .messages(&owner, &room)
            .await
            .into_iter()
            .filter(|e| e["content"]["msgtype"] == "m.notice")
            .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
            .collect();
        bodies
    };
    crate::helpers::until_async_within(Duration::from_secs(30), || async {
        posted().await.len() >= 30
    })
    .await;
    r.a.child.kill().unwrap(); // SIGKILL
    r.a.child.wait().unwrap();
    assert!(posted().await.len() < 300, "the kill happened mid-backlog");
    crate::helpers::until_async_within(Duration::from_secs(90), || async {
        posted().await.len() >= 300
    })
    .await;
    let bodies = posted().await;
    for link in &links {
        let n = bodies.iter().filter(|b| b.ends_with(link.as_str())).count();
        assert_eq!(n, 1, "{link} posted {n} times");
    }
    assert_eq!(bodies.len(), 300, "nothing else, nothing twice");
}

/// SIGTERM under load: replica A stops accepting, answers everything it accepted, and exits 0
/// by itself; clients see nothing worse than refused connections once it has closed, and every
/// event queued through A arrives (sent by A before it exits, or by B).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request_and_loses_no_webhook() {
    let receiver = Receiver::spawn().await;
    receiver.slow(Duration::from_millis(20));
    let mut r = Replicas::start(&receiver).await;
    let signalled = Arc::new(AtomicBool::new(false));
    // A new connection per request, so that a closed listener shows as a refused connection.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, signalled) = (client.clone(), signalled.clone());
            let (base, operator) = (r.a.base.clone(), r.operator.clone());
            tokio::spawn(async move {
                let mut cancelled = Vec::new();
                for i in 0.. {
                    let body = json!({"integration": "crm", "user_id": format!("c{c}-{i}")});
                    let created = client
                        .post(format!("{base}/v1/bots/acme/auth-sessions"))
                        .bearer_auth(&operator)
                        .json(&body)
                        .send()
                        .await;
                    let Some(created) = answered(created, &signalled) else {
                        break;
                    };
                    assert_eq!(created.status(), StatusCode::CREATED);
                    let id = created.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let cancel = client
                        .delete(format!("{base}/v1/bots/acme/auth-sessions/{id}"))
                        .bearer_auth(&operator)
                        .send()
                        .await;
                    let Some(cancel) = answered(cancel, &signalled) else {
                        break;
                    };
                    assert_eq!(cancel.status(), StatusCode::OK);
                    cancelled.push(id);
                }
                cancelled
            })
        })
        .collect();

    // Under load, with deliveries flowing: SIGTERM to A.
    until(|| receiver.delivered().len() >= 50).await;
    signalled.store(true, Ordering::SeqCst);
    r.a.terminate();
    let mut wanted = HashSet::new();
    for c in clients {
        wanted.extend(c.await.expect("no client saw a failed request"));
    }
    // A exits by itself, successfully (bounded, so a hang fails instead of blocking the suite).
    crate::helpers::until_async_within(Duration::from_secs(40), || {
        let exited = r.a.child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(r.a.child.wait().unwrap().success());
    // Every cancelled session's event arrives.
    crate::helpers::until_async_within(Duration::from_secs(60), || async {
        arrived(&receiver).is_superset(&wanted)
    })
    .await;
    assert!(wanted.len() > 50, "the load ran: {}", wanted.len());
}

/// A response, or `None` for a connection refused after the signal; any other failure panics.
/// Refused includes a reset of a fresh connection without any answer: the kernel had completed
/// its handshake, but the daemon never accepted it before closing its listener (the kernel then
/// resets what waits in the accept queue). Depending on when that reset arrives, the client
/// reports it as a reset, or as the request cancelled before it was sent ("connection was not
/// ready"): every request here goes on a fresh connection, so neither was ever read by the
/// daemon. Every connection the daemon did accept is answered.
fn answered(
    result: reqwest::Result<reqwest::Response>,
    signalled: &AtomicBool,
) -> Option<reqwest::Response> {
    let refused = |e: &reqwest::Error| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
                || s.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_canceled)
            {
                return true;
            }
            source = s.source();
        }
        e.is_connect()
    };
    match result {
        Ok(response) => Some(response),
        Err(e) if signalled.load(Ordering::SeqCst) && refused(&e) => None,
        Err(e) => panic!("request failed: {e:?}"),
    }
}

/// Deletes a key prefix's keys when dropped — also when the test panics.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut con) = client.get_connection() else {
            return;
        };
        let keys = scan_keys(&mut con, &self.0).unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}

/// Measurement aid, not a test: queue `BENCH_EVENTS` cancelled-session events for bot `bench`
/// under `BENCH_PREFIX`, addressed to `BENCH_URL`, with no daemon running — so a daemon started
/// afterwards finds a backlog to drain. Run with `--ignored enqueue_backlog`.
#[tokio::test]
#[ignore]
async fn enqueue_backlog() {
    let prefix = std::env::var("BENCH_PREFIX").expect("BENCH_PREFIX");
    let url: url::Url = std::env::var("BENCH_URL")
        .expect("BENCH_URL")
        .parse()
        .unwrap();
    let n: usize = std::env::var("BENCH_EVENTS").map_or(10_000, |v| v.parse().unwrap());
    let store = authlink::store::redis::RedisStore::connect(&redis_url(), &prefix).unwrap();
    let bot = authlink::domain::BotId::parse("bench").unwrap();
    let now = authlink::clock::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        join_all(chunk.iter().map(|i| {
            let store = &store;
            let bot = bot.clone();
            let url = url.clone();
            async move {
                let mut s = crate::store::session_for(
                    &format!("u{i}"),
                    now,
                    time::Duration::minutes(15),
                    Some(url),
                );
                s.spec.bot = bot;
                s.spec.id = authlink::domain::SessionId::new(authlink::domain::Partition::of(
                    &s.spec.bot,
                    &s.spec.integration,
                    &s.spec.subject,
                ));
                use authlink::store::Store;
                store
                    .create_session(authlink::store::NewSession {
                        session: &s,
                        idempotency: None,
                        retention: Duration::from_secs(600),
                        unless_authorized_by: None,
                        delivery: None,
                        quota: None,
                    })
                    .await
                    .unwrap();
                let mut done = s.clone();
                done.status = authlink::domain::session::Status::Cancelled;
                let event = authlink::domain::event::Event::for_session(&done, None, now);
                store
                    .transition(authlink::store::Transition {
                        id: s.spec.id,
                        to: done.status,
                        error: None,
                        binding: None,
                        write: authlink::store::SideWrite::None,
                        channel_event: None,
                        event: Some(&event),
                        now,
                    })
                    .await
                    .unwrap();
            }
        }))
        .await;
    }
    use authlink::store::Store;
    assert_eq!(store.backlog().await.unwrap(), n as u64);
}

/// SIGTERM with an event stream and a long-poll open: both end promptly (the long-poll with the
/// current status), and the process exits cleanly instead of hanging on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_long_polls_and_event_streams_and_exits_cleanly() {
    let mut solo = Solo::start("", &[]).await;
    let (api, base, operator) = (
        solo.api.clone(),
        solo.daemon.base.clone(),
        solo.operator.clone(),
    );
    let s = solo.new_session("u1").await;
    let id = s["id"].as_str().unwrap();
    let mut stream = api
        .get(format!("{base}/v1/bots/acme/auth-sessions/{id}/events"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("pending"));
    let poll = tokio::spawn(
        api.get(format!("{base}/v1/bots/acme/auth-sessions/{id}?wait=60"))
            .bearer_auth(&operator)
            .send(),
    );
    // Both must be parked before the signal (a request arriving after it would be refused).
    crate::helpers::until_async(|| async {
        let m = api
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines().any(|l| l == "authlink_waiting_requests 2")
    })
    .await;

    // A connection that has sent nothing yet (shutdown must not wait out its header timeout,
    // 15 s, beyond the 10 s the exit is given below).
    let mut idle = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    solo.terminate();
    // The stream ends… (bounded, so a regression fails instead of hanging)
    tokio::time::timeout(Duration::from_secs(20), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await
    .expect("the event stream ended");
    // …the long-poll answers with the current status…
    let answered = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the long-poll answered")
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(answered.json::<Value>().await.unwrap()["status"], "pending");
    // …and the process exits by itself, successfully.
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = solo.daemon.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited.expect("exited within 10 s").success());
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut idle, &mut rest)
        .await
        .unwrap();
    assert!(
        rest.is_empty(),
        "the idle connection was closed without an answer"
    );
}
