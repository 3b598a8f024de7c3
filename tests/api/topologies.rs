//! ④ Redis topologies through the whole daemon: the store settings as an operator writes them
//! (`check-config`), a long-poll woken across Cluster nodes, and a Sentinel failover in the middle
//! of a run (the contract suite covers the store itself on a Cluster and across a failover).

use std::process::Command;
use std::time::Duration;

use authlink::config::{RedisTopology, StoreConfig};
use authlink::domain::SessionId;
use reqwest::StatusCode;

use crate::helpers::{Browser, Options, spawn_with, until_async_within};
use crate::servers::{SentinelSetup, TlsServer, cluster};

/// `authlink check-config` on `toml` (after the keys) with `env`: (succeeded, what it printed).
fn check_config(toml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let keys = authlink::config::GeneratedKeys::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authlink.toml");
    std::fs::write(&file, format!("{}\n{toml}", keys.to_toml())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authlink"))
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .envs(env.iter().copied())
        .output()
        .expect("the authlink binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_config_accepts_each_topology_and_names_the_setting_at_fault() {
    let (ok, out) = check_config(
        "[store]\nredis_cluster_nodes = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("redis cluster (2 seed nodes)"), "{out}");

    let (ok, out) = check_config(
        "[store.redis_sentinel]\nmaster_name = \"mymaster\"\nnodes = [\"redis://10.0.0.1:26379\"]",
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("redis sentinel"), "{out}");

    // Environment variables set the same settings, lists included.
    let (ok, out) = check_config(
        "",
        &[
            ("AUTHLINK__STORE__REDIS_SENTINEL__MASTER_NAME", "mymaster"),
            (
                "AUTHLINK__STORE__REDIS_SENTINEL__NODES",
                "[\"redis://10.0.0.1:26379\",\"redis://10.0.0.2:26379\"]",
            ),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("2 sentinels"), "{out}");

    for (toml, env, expected) in [
        (
            "[store]\nredis_url = \"redis://10.0.0.1:6379\"",
            vec![(
                "AUTHLINK__STORE__REDIS_CLUSTER_NODES",
                "[\"redis://10.0.0.1:7000\"]",
            )],
            "store: redis_url and redis_cluster_nodes are set",
        ),
        (
            "[store]\nredis_cluster_nodes = []",
            vec![],
            "store.redis_cluster_nodes: the list is empty",
        ),
        (
            "[store]\nredis_cluster_nodes = [\"http://10.0.0.1:7000\"]",
            vec![],
            "store.redis_cluster_nodes: node 1: must start with redis://",
        ),
        (
            "[store.redis_sentinel]\nnodes = [\"redis://10.0.0.1:26379\"]",
            vec![],
            "store.redis_sentinel.master_name: required",
        ),
        (
            "[store.redis_sentinel]\nmaster = \"mymaster\"",
            vec![],
            "store.redis_sentinel",
        ),
        (
            "[store]\nredis_url = \"redis://10.0.0.1:6379\"\nredis_ca_file = \"/etc/ssl/ca.pem\"",
            vec![],
            "store.redis_ca_file: is only used for rediss://",
        ),
        (
            "[store]\nredis_url = \"rediss://10.0.0.1:6379\"\nredis_ca_file = \"/nonexistent/ca.pem\"",
            vec![],
            "store.redis_ca_file: cannot read /nonexistent/ca.pem",
        ),
    ] {
        let (ok, out) = check_config(toml, &env);
        assert!(!ok, "{toml}: accepted");
        assert!(out.contains(expected), "{toml}: {out}");
    }
}

/// The waiting replica subscribes on a node that does not hold the session, so the wake-up
/// crosses the Cluster bus (a Cluster forwards every PUBLISH to every node).
#[tokio::test]
async fn on_a_cluster_a_long_poll_wakes_through_another_node() {
    let cluster = cluster();
    let a = spawn_with(Options {
        redis_cluster_nodes: Some(cluster.urls()),
        ..Options::default()
    })
    .await;
    crate::callback::long_poll_wakes_on_a_callback_at_another_replica(a, |id, config| {
        let partition = SessionId::parse(id).unwrap().partition().index();
        let owner = cluster.owner_of(&format!("{{p{partition:02}}}"));
        let mut nodes = cluster.urls();
        nodes.rotate_left(owner + 1);
        let StoreConfig::Redis { topology, .. } = &mut config.store else {
            unreachable!("a Redis app")
        };
        *topology = RedisTopology::Cluster(nodes);
    })
    .await;
}

/// The master crashes mid-run (SIGKILL) and the sentinel promotes the replica: the running daemon
/// finds the new master by itself, the sessions from before are still there (replicated, AOF on),
/// and a whole new flow completes — no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_sentinel_survives_a_master_crash_without_restart() {
    let mut setup = SentinelSetup::start();
    let app = spawn_with(Options {
        redis_sentinel: Some(setup.settings()),
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    let before = app.new_session(&key, "acme", "u1").await;
    let before_id = before["id"].as_str().unwrap();
    setup.replicated();

    let old_master = setup.master_port();
    setup.crash_master();
    assert_ne!(setup.master_port(), old_master);
    until_async_within(Duration::from_secs(30), || async {
        app.status_of("/readyz").await == StatusCode::OK
    })
    .await;

    let (status, s) = app.session(&key, "acme", before_id, None).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["status"], "pending");
    let after = app.new_session(&key, "acme", "u2").await;
    for session in [&before, &after] {
        let id = session["id"].as_str().unwrap();
        let page = Browser::new()
            .authorize(session["link"].as_str().unwrap())
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let (_, done) = app.session(&key, "acme", id, Some(30)).await;
        assert_eq!(done["status"], "completed");
        let events = app.receiver.wait_for(id, 1).await;
        assert_eq!(events[0].kind, "auth_session.completed");
    }
}

/// `rediss://` to a server whose certificate comes from a private CA: refused (503, not ready)
/// until `store.redis_ca_file` names that CA; then the whole flow runs over TLS (and its records
/// are found in that server, read back through its plain port).
#[tokio::test]
async fn over_tls_the_private_ca_is_required_and_the_full_flow_runs() {
    let redis = TlsServer::start();
    let untrusted = spawn_with(Options {
        redis_url: Some(redis.tls_url()),
        ..Options::default()
    })
    .await;
    assert_eq!(
        untrusted.status_of("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the public roots do not vouch for this server"
    );
    crate::callback::full_flow(Options {
        redis_url: Some(redis.tls_url()),
        redis_tls: Some((redis.ca_file.clone(), redis.server.url())),
        ..Options::default()
    })
    .await;
    // The flow's keys are in this server, written over TLS.
    assert!(
        redis
            .server
            .info("stats")
            .contains("total_connections_received")
    );
}
