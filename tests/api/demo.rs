//! The built-in demo provider: a zero-configuration `authlink serve` serves it and a whole session
//! completes against it; a daemon with a Redis store or configured keys has none.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Browser, redis_url, until_async_within};
use crate::servers::{Solo, free_port};

/// `authlink serve` with no configuration file and no keys (`env` on top), killed on drop.
struct ZeroConfig {
    child: Child,
    base: String,
    /// What it writes to stderr: the start-up banner.
    stderr: tempfile::NamedTempFile,
}

impl Drop for ZeroConfig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ZeroConfig {
    /// Started, ready, and its banner written up to `last_line` (a line it prints last).
    async fn start(env: &[(&str, &str)], last_line: &str) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_authlink"))
            .arg("serve")
            .env_remove("AUTHLINK_CONFIG")
            .env("AUTHLINK__LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHLINK__PUBLIC_URL", &base)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("the authlink binary runs");
        let daemon = Self {
            child,
            base,
            stderr,
        };
        let client = reqwest::Client::new();
        until_async_within(Duration::from_secs(20), || async {
            client
                .get(daemon.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        let banner = daemon.banner();
        assert!(banner.contains(last_line), "{banner}");
        daemon
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn banner(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    /// The value printed after `label` in the banner.
    fn printed(&self, label: &str) -> String {
        let banner = self.banner();
        let line = banner
            .lines()
            .find_map(|l| l.split_once(label).map(|(_, v)| v.trim().to_owned()));
        line.unwrap_or_else(|| panic!("no {label:?} in {banner}"))
    }
}

#[tokio::test]
async fn a_zero_config_start_completes_a_session_at_the_demo_provider() {
    let daemon = ZeroConfig::start(&[], "Then the token:").await;
    assert!(
        daemon.banner().contains(&daemon.url("/console")),
        "{}",
        daemon.banner()
    );
    let key = daemon.printed("Runtime key of bot demo:");
    let api = reqwest::Client::new();
    let r = api
        .post(daemon.url("/v1/bots/demo/auth-sessions"))
        .bearer_auth(&key)
        .json(&json!({"integration": "demo", "user_id": "me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let session: Value = r.json().await.unwrap();
    let link = session["link"].as_str().unwrap();

    let mut browser = Browser::new();
    let page = browser.land(link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Demo assistant asks for access to your Demo provider account. You will sign in at 127.0.0.1;"),
        "{}",
        page.body
    );
    let authorize = browser.start(link).await;
    assert!(
        authorize
            .as_str()
            .starts_with(&daemon.url("/demo/oauth/authorize?")),
        "{authorize}"
    );
    // Looking at the sign-in page signs nobody in.
    let page = browser.land(authorize.as_str()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Sign in as demo user"), "{}", page.body);
    let r = browser.post(authorize.as_str()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let callback = r.headers()["location"].to_str().unwrap().to_owned();
    let done = browser.land(&callback).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body
            .contains("You signed in to Demo provider as demo."),
        "{}",
        done.body
    );

    let r = api
        .post(daemon.url("/v1/bots/demo/integrations/demo/access-token"))
        .bearer_auth(&key)
        .json(&json!({"user_id": "me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token: Value = r.json().await.unwrap();
    assert!(
        token["access_token"].as_str().is_some_and(|t| t.len() > 20),
        "{token}"
    );
}

/// No demo routes and no demo bot.
async fn no_demo(base: &str, operator: &str) {
    let api = reqwest::Client::new();
    for path in [
        "/demo/oauth/authorize?client_id=x",
        "/demo/oauth/token",
        "/demo/userinfo",
    ] {
        let r = api.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let r = api.post(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = api
        .get(format!("{base}/v1/bots/demo"))
        .bearer_auth(operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_daemon_with_a_redis_store_or_configured_keys_serves_no_demo() {
    // Throw-away keys, but a real store.
    let prefix = format!("authlink-demo-{}", uuid::Uuid::new_v4().simple());
    let redis = ZeroConfig::start(
        &[
            ("AUTHLINK__STORE__REDIS_URL", &redis_url()),
            ("AUTHLINK__STORE__KEY_PREFIX", &prefix),
        ],
        "Operator key for this run:",
    )
    .await;
    assert!(!redis.banner().contains("DEMO"), "{}", redis.banner());
    no_demo(&redis.base, &redis.printed("Operator key for this run:")).await;

    // The embedded store, but keys from a configuration file.
    let configured = Solo::start("", &[]).await;
    no_demo(&configured.daemon.base, &configured.operator).await;
}

#[tokio::test]
async fn a_zero_config_start_on_a_non_loopback_address_is_refused() {
    // Throw-away keys and the demo provider on every interface would hand anyone who reaches the
    // port a signed-in operator (the key is printed) and a provider anyone can sign in at.
    for listen in ["0.0.0.0", "[::]"] {
        let port = free_port();
        let stderr_file = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_authlink"))
            .arg("serve")
            .env_remove("AUTHLINK_CONFIG")
            .env("AUTHLINK__LISTEN", format!("{listen}:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file.reopen().unwrap())
            .spawn()
            .expect("the authlink binary runs");
        // It exits by itself; a daemon that started instead is killed when the poll gives up.
        let mut exit = None;
        for _ in 0..1000 {
            exit = child.try_wait().unwrap();
            if exit.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if exit.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stderr = std::fs::read_to_string(stderr_file.path()).unwrap();
        let status = exit.unwrap_or_else(|| panic!("{listen}: it started: {stderr}"));
        assert!(!status.success(), "{listen}: {stderr}");
        assert!(
            stderr.contains("refusing to start without configuration")
                && stderr.contains("127.0.0.1"),
            "{stderr}"
        );
        assert!(!stderr.contains("Operator key"), "no key printed: {stderr}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {port}"
        );
    }
}
