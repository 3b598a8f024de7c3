//! `spawn_app()` and friends: a real authlink on port 0 with a unique Redis key prefix (or the
//! embedded store), a fake Salesforce on loopback, and a tiny cookie-keeping browser.

use std::collections::HashMap;
use std::sync::Arc;

use authlink::config::{
    AppSettings, Config, GeneratedKeys, SentinelSettings, Settings, StoreConfig, SystemApps,
};
use authlink::flow::AppState;
use authlink::startup::Application;
use authlink::store::Store;
use authlink::store::memory::MemoryStore;
use authlink::store::redis::RedisStore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::provider::{FakeProvider, ProviderOptions, Shape};
use crate::receiver::Receiver;

pub const CLIENT_ID: &str = "3MVG9test.client.id";
pub const CLIENT_SECRET: &str = "test-client-secret-7f3a9c";

/// The Redis the tests use: `AUTHLINK_TEST_REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("AUTHLINK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Memory,
}

pub struct TestApp {
    pub base: String,
    pub operator_key: String,
    pub api: reqwest::Client,
    pub provider: FakeProvider,
    pub prefix: String,
    pub backend: Backend,
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// The daemon's own state: its clock (`state.clock.advance`) and the flow functions that
    /// take it (e.g. one `refresh::sweep`).
    pub state: AppState,
    /// The webhook receiver `setup_bot` points bots at.
    pub receiver: Receiver,
    /// The real OpenID provider, when asked for.
    pub oidc: Option<Arc<crate::oidc::OidcProvider>>,
    /// The Redis servers holding this test's keys, to read and clean up (none for Sentinel: its
    /// servers are the test's own and go away with it).
    redis_nodes: Vec<String>,
}

pub struct Options {
    pub backend: Backend,
    pub shape: Shape,
    /// Use this Redis instead of the shared one (e.g. one the test stops).
    pub redis_url: Option<String>,
    /// Use a Redis Cluster with these nodes (all its masters) instead.
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// Use the master these sentinels name instead.
    pub redis_sentinel: Option<SentinelSettings>,
    /// `redis_url` is `rediss://`: trust this CA, and inspect the store through this plain URL.
    pub redis_tls: Option<(std::path::PathBuf, String)>,
    pub deny_private_networks: bool,
    /// Webhook deliveries in flight per replica and per bot.
    pub webhook_concurrency: (usize, usize),
    /// Use a real OpenID provider (`tests/oidc`, oidc-provider) as the generic `oauth2` app,
    /// with this access-token lifetime, refresh margin and proactive refresh.
    pub oidc: Option<OidcOptions>,
    /// Salesforce: learn token expiry from the introspection endpoint.
    pub salesforce_introspect: bool,
    /// The lease on claimed work (`webhooks.visibility_timeout_seconds`).
    pub lease_seconds: u64,
    /// Rate limits (off unless a test turns them on: most tests make many calls from one
    /// address with one key).
    pub rate_limits: Option<authlink::config::RateLimits>,
    /// Bounds on what one caller can make the daemon hold (the defaults unless given).
    pub limits: Option<authlink::config::LimitSettings>,
}

#[derive(Clone, Copy)]
pub struct OidcOptions {
    pub access_token_ttl: u64,
    pub refresh_margin: u64,
    pub proactive_refresh: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::Redis,
            shape: Shape::Salesforce,
            redis_url: None,
            redis_cluster_nodes: None,
            redis_tls: None,
            redis_sentinel: None,
            deny_private_networks: false,
            webhook_concurrency: (64, 8),
            oidc: None,
            salesforce_introspect: false,
            lease_seconds: 5,
            rate_limits: None,
            limits: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(opts: Options) -> TestApp {
    capture_logs();
    let provider = FakeProvider::spawn(ProviderOptions {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        shape: opts.shape,
    })
    .await;
    let keys = GeneratedKeys::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    let redis_url = opts.redis_url.unwrap_or_else(redis_url);
    let mut settings = Settings {
        public_url: format!("http://{addr}"),
        listen: addr.to_string(),
        ..Settings::default()
    };
    keys.apply(&mut settings);
    settings.rate_limits = opts.rate_limits.unwrap_or(authlink::config::RateLimits {
        enabled: false,
        ..Default::default()
    });
    if let Some(limits) = opts.limits {
        settings.limits = limits;
    }
    // Webhooks on a compressed schedule: three quick retries, then a dead letter.
    settings.webhooks.retry_schedule_seconds = vec![0.05, 0.1, 0.1];
    settings.webhooks.poll_interval_ms = 20;
    settings.webhooks.visibility_timeout_seconds = opts.lease_seconds;
    settings.webhooks.deny_private_networks = Some(opts.deny_private_networks);
    (
        settings.webhooks.concurrency,
        settings.webhooks.per_bot_concurrency,
    ) = opts.webhook_concurrency;
    let mut redis_nodes = Vec::new();
    if opts.backend == Backend::Redis {
        if let Some(nodes) = opts.redis_cluster_nodes {
            redis_nodes = nodes.clone();
            settings.store.redis_cluster_nodes = Some(nodes);
        } else if let Some(sentinel) = opts.redis_sentinel {
            settings.store.redis_sentinel = Some(sentinel);
        } else if let Some((ca_file, plain_url)) = opts.redis_tls {
            redis_nodes = vec![plain_url];
            settings.store.redis_url = Some(redis_url);
            settings.store.redis_ca_file = Some(ca_file);
        } else {
            redis_nodes = vec![redis_url.clone()];
            settings.store.redis_url = Some(redis_url);
        }
        settings.store.key_prefix = Some(prefix.clone());
    }
    let app = AppSettings {
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.into()),
        ..AppSettings::default()
    };
    let oidc = opts.oidc.map(|o| {
        let redirect = format!("http://{addr}/oauth/callback/oauth2");
        Arc::new(crate::oidc::OidcProvider::start(
            &redirect,
            o.access_token_ttl,
        ))
    });
    if let Some(o) = opts.oidc {
        settings.tokens.refresh_margin_seconds = o.refresh_margin;
        settings.tokens.proactive_refresh = o.proactive_refresh;
    } else {
        settings.tokens.proactive_refresh = false;
    }
    settings.system_apps = match opts.shape {
        Shape::Salesforce => SystemApps {
            salesforce: Some(AppSettings {
                login_host: Some(provider.base_url.clone()),
                introspect: Some(opts.salesforce_introspect),
                ..app
            }),
            oauth2: None,
        },
        Shape::Generic => SystemApps {
            salesforce: None,
            oauth2: Some(AppSettings {
                authorize_url: Some(format!("{}/services/oauth2/authorize", provider.base_url)),
                token_url: Some(format!("{}/services/oauth2/token", provider.base_url)),
                userinfo_url: Some(format!("{}/services/oauth2/userinfo", provider.base_url)),
                revoke_url: Some(format!("{}/services/oauth2/revoke", provider.base_url)),
                scopes: Some(vec!["openid".into(), "email".into()]),
                ..app
            }),
        },
    };
    if let Some(o) = &oidc {
        let at = |path: &str| Some(format!("{}{path}", o.issuer));
        settings.system_apps = SystemApps {
            salesforce: None,
            oauth2: Some(AppSettings {
                client_id: crate::oidc::CLIENT_ID.into(),
                client_secret: Some(crate::oidc::CLIENT_SECRET.into()),
                authorize_url: at("/auth"),
                token_url: at("/token"),
                userinfo_url: at("/me"),
                revoke_url: at("/token/revocation"),
                scopes: Some(vec![
                    "openid".into(),
                    "email".into(),
                    "profile".into(),
                    "offline_access".into(),
                ]),
                ..AppSettings::default()
            }),
        };
    }
    let config = settings.validate().expect("test settings are valid");
    let store = make_store(&config);
    let application = Application::with_listener(config.clone(), store.clone(), listener);
    let state = application.state().clone();
    tokio::spawn(application.run_until_stopped(std::future::pending()));
    TestApp {
        oidc,
        state,
        receiver: Receiver::spawn().await,
        base: format!("http://{addr}"),
        operator_key: keys_operator(&keys),
        api: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        provider,
        prefix,
        backend: opts.backend,
        config,
        store,
        redis_nodes,
    }
}

fn keys_operator(keys: &GeneratedKeys) -> String {
    secrecy::ExposeSecret::expose_secret(&keys.operator_key).to_owned()
}

fn make_store(config: &Config) -> Arc<dyn Store> {
    match &config.store {
        StoreConfig::Memory => Arc::new(MemoryStore::new()),
        StoreConfig::Redis {
            topology,
            prefix,
            tls_ca,
        } => Arc::new(RedisStore::open_with_ca(topology, tls_ca.as_deref(), prefix).unwrap()),
    }
}

impl TestApp {
    /// A second daemon on the same Redis, with the same keys and public URL (as behind a load
    /// balancer); its own address is `base`.
    pub async fn replica(&self) -> TestApp {
        self.replica_with(|_| {}).await
    }

    /// A replica whose configuration differs (e.g. rotated keys).
    pub async fn replica_with(&self, change: impl FnOnce(&mut Config)) -> TestApp {
        assert_eq!(self.backend, Backend::Redis, "replicas share a Redis");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = self.config.clone();
        config.listen = addr;
        change(&mut config);
        let store = make_store(&config);
        // One clock for both: moving time forward moves it for every replica.
        let application = Application::with_clock(
            config.clone(),
            store.clone(),
            listener,
            self.state.clock.clone(),
        );
        let state = application.state().clone();
        tokio::spawn(application.run_until_stopped(std::future::pending()));
        TestApp {
            state,
            oidc: self.oidc.clone(),
            receiver: self.receiver.clone(),
            base: format!("http://{addr}"),
            operator_key: self.operator_key.clone(),
            api: self.api.clone(),
            provider: self.provider.clone(),
            prefix: self.prefix.clone(),
            backend: self.backend,
            config,
            store,
            redis_nodes: self.redis_nodes.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The status a plain GET of `path` answers with (e.g. `/readyz`).
    /// The Prometheus text at `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self.api.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn status_of(&self, path: &str) -> StatusCode {
        self.api.get(self.url(path)).send().await.unwrap().status()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.api.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// A bot whose webhooks go to the receiver — unless the daemon denies private networks:
    /// the receiver is on loopback, which such a daemon refuses as a bot's webhook URL.
    pub async fn put_bot(&self, bot: &str) -> Response {
        let webhook_url =
            (!self.config.webhooks.deny_private_networks).then(|| self.receiver.url.clone());
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/bots/{bot}"),
            &self.operator_key,
            Some(json!({
                "name": format!("{bot} assistant"),
                "allowed_return_hosts": ["chat.example.com"],
                "webhook_url": webhook_url,
            })),
        )
        .await
    }

    /// A new webhook secret for `bot`, trusted by the receiver.
    pub async fn webhook_secret(&self, bot: &str) -> Value {
        let r = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/bots/{bot}/webhook-secrets"),
                &self.operator_key,
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        self.receiver.trust(v["secret"].as_str().unwrap());
        v
    }

    pub async fn new_key(&self, bot: &str) -> String {
        let r = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/bots/{bot}/api-keys"),
                &self.operator_key,
                Some(json!({})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn put_integration(&self, bot: &str, name: &str, body: Value) -> Response {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/bots/{bot}/integrations/{name}"),
            &self.operator_key,
            Some(body),
        )
        .await
    }

    /// A bot (webhooks to the receiver, signed with a secret it trusts) with a runtime key and a
    /// `crm` integration on the configured provider.
    pub async fn setup_bot(&self, bot: &str) -> String {
        assert!(self.put_bot(bot).await.status().is_success());
        self.webhook_secret(bot).await;
        let provider = if self.config.salesforce.is_some() {
            "salesforce"
        } else {
            "oauth2"
        };
        let r = self
            .put_integration(bot, "crm", json!({"provider": provider}))
            .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        self.new_key(bot).await
    }

    pub async fn create_session(&self, key: &str, bot: &str, body: Value) -> Response {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/bots/{bot}/auth-sessions"),
            key,
            Some(body),
        )
        .await
    }

    /// Create a session for `user` and return its JSON (asserting 201).
    pub async fn new_session(&self, key: &str, bot: &str, user: &str) -> Value {
        let r = self
            .create_session(key, bot, json!({"integration": "crm", "user_id": user, "conversation_id": "conv-1", "context": {"node": "n1"}}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    pub async fn session(
        &self,
        key: &str,
        bot: &str,
        id: &str,
        wait: Option<u32>,
    ) -> (StatusCode, Value) {
        let q = wait.map(|w| format!("?wait={w}")).unwrap_or_default();
        let r = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/bots/{bot}/auth-sessions/{id}{q}"),
                key,
                None,
            )
            .await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every key/value this test's prefix owns in Redis, as text (hash fields and stream entries
    /// flattened), for secret scanning.
    pub fn redis_dump(&self) -> Vec<(String, String)> {
        assert!(!self.redis_nodes.is_empty(), "a dump needs the Redis nodes");
        let mut dump = Vec::new();
        for node in &self.redis_nodes {
            let client = redis::Client::open(node.as_str()).unwrap();
            let mut con = client.get_connection().unwrap();
            for k in scan_keys(&mut con, &self.prefix).unwrap() {
                let value = dump_value(&mut con, &k);
                dump.push((k, value));
            }
        }
        dump
    }
}

fn dump_value(con: &mut redis::Connection, k: &str) -> String {
    let kind: String = redis::cmd("TYPE").arg(k).query(con).unwrap();
    match kind.as_str() {
        "string" => redis::cmd("GET").arg(k).query::<String>(con).unwrap(),
        "hash" => format!(
            "{:?}",
            redis::cmd("HGETALL")
                .arg(k)
                .query::<Vec<String>>(con)
                .unwrap()
        ),
        "zset" => format!(
            "{:?}",
            redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query::<Vec<String>>(con)
                .unwrap()
        ),
        "stream" => format!(
            "{:?}",
            redis::cmd("XRANGE")
                .arg(k)
                .arg("-")
                .arg("+")
                .query::<redis::Value>(con)
                .unwrap()
        ),
        other => format!("<{other}>"),
    }
}

impl Drop for TestApp {
    /// Remove exactly the keys this test created (its unique prefix), nothing else.
    fn drop(&mut self) {
        if self.backend != Backend::Redis {
            return;
        }
        for node in &self.redis_nodes {
            delete_prefix(node, &self.prefix);
        }
    }
}

/// Delete every key under `prefix` on the Redis server at `url` (one `DEL` per key: on a Cluster
/// node the keys are in many slots).
pub fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut con) = client.get_connection_with_timeout(std::time::Duration::from_secs(1)) else {
        return;
    };
    let keys: Vec<String> = scan_keys(&mut con, prefix).unwrap_or_default();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.del(k).ignore();
    }
    let _: Result<(), _> = pipe.query(&mut con);
}

/// A browser: keeps cookies per host, never follows redirects by itself.
#[derive(Default)]
pub struct Browser {
    client: reqwest::Client,
    cookies: HashMap<String, String>,
}

/// Where a walk through the flow ended.
pub struct Landing {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn keep_cookies(&mut self, r: &Response) {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_owned(), v.to_owned());
        }
    }

    /// The `Cookie` header this browser sends.
    pub fn cookie_string(&self) -> String {
        self.cookie_header()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, url: &str) -> Response {
        let mut req = self.client.get(url);
        if !self.cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, self.cookie_header());
        }
        let r = req.send().await.unwrap();
        self.keep_cookies(&r);
        r
    }

    /// POST `url` as a button on the page this browser shows: a modern browser says so with
    /// `Sec-Fetch-Site: same-origin` (Continue refuses a POST from another site).
    pub async fn post(&mut self, url: &str) -> Response {
        let r = self
            .client
            .post(url)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        self.keep_cookies(&r);
        r
    }

    /// Submit a form (`application/x-www-form-urlencoded`) with this browser's cookies and any
    /// `headers` (e.g. the `Origin` of another site).
    pub async fn submit(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = self
            .client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if !self.cookies.is_empty() {
            req = req.header(reqwest::header::COOKIE, self.cookie_header());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        self.keep_cookies(&r);
        r
    }

    /// GET `url` and return where it redirects to (relative locations resolved).
    pub async fn redirect(&mut self, url: &str) -> Url {
        let r = self.get(url).await;
        assert!(
            r.status().is_redirection(),
            "{url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        let location = r.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        Url::parse(url).unwrap().join(&location).unwrap()
    }

    /// Press Continue on the link: returns the provider authorize URL.
    pub async fn start(&mut self, link: &str) -> Url {
        let r = self.post(link).await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{}",
            r.text().await.unwrap_or_default()
        );
        Url::parse(r.headers()[reqwest::header::LOCATION].to_str().unwrap()).unwrap()
    }

    /// Sign in at the provider: returns the callback URL it redirects to.
    pub async fn sign_in(&mut self, authorize: &Url) -> Url {
        let r = self.get(authorize.as_str()).await;
        assert_eq!(
            r.status(),
            StatusCode::FOUND,
            "{}",
            r.text().await.unwrap_or_default()
        );
        Url::parse(r.headers()[reqwest::header::LOCATION].to_str().unwrap()).unwrap()
    }

    pub async fn land(&mut self, url: &str) -> Landing {
        let r = self.get(url).await;
        Landing {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// The whole flow from the link to the result page.
    pub async fn authorize(&mut self, link: &str) -> Landing {
        let authorize = self.start(link).await;
        let callback = self.sign_in(&authorize).await;
        self.land(callback.as_str()).await
    }
}

/// Point `url` at another replica (as a load balancer would).
pub fn on(base: &str, url: &Url) -> String {
    let base = Url::parse(base).unwrap();
    let mut u = url.clone();
    u.set_port(base.port()).unwrap();
    u.to_string()
}

/// Wait until `cond` holds (polling; gives up after 10 s so a broken test fails, not hangs).
/// Cancel a session of bot `acme` (asserting 200).
pub async fn cancel(app: &TestApp, key: &str, id: &str) {
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

pub async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}

/// `until` for conditions that need I/O to check (e.g. another replica's view).
pub async fn until_async<F: std::future::Future<Output = bool>>(cond: impl FnMut() -> F) {
    until_async_within(std::time::Duration::from_secs(5), cond).await
}

/// `until_async` with its own limit (a failing test gives up after it, instead of hanging).
pub async fn until_async_within<F: std::future::Future<Output = bool>>(
    limit: std::time::Duration,
    mut cond: impl FnMut() -> F,
) {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached within {limit:?}");
}

/// Every log line any daemon in this test process wrote (debug level and up), for secret scans.
/// One process-wide subscriber: a thread-local one races with tracing's callsite cache when
/// tests run in parallel. `TEST_LOG=1` also prints the lines.
static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
    std::sync::OnceLock::new();

#[derive(Clone)]
struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            eprint!("{}", String::from_utf8_lossy(buf));
        }
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = LogSink(buf.clone());
        // The production format (JSON lines with their spans), at debug level.
        let guard =
            authlink::telemetry::init_with(authlink::config::LogFormat::Json, "debug", move || {
                sink.clone()
            });
        std::mem::forget(guard);
        buf
    });
}

/// The captured logs so far.
pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

/// Every key under `prefix` (SCAN, not KEYS: the shared Redis may hold many other keys).
pub fn scan_keys(con: &mut redis::Connection, prefix: &str) -> redis::RedisResult<Vec<String>> {
    let iter: redis::Iter<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}:*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(con)?;
    iter.collect()
}
