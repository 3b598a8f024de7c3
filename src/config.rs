//! One settings tree: built-in defaults, then a TOML file (`--config` / `AUTHLINK_CONFIG`), then
//! `AUTHLINK__SECTION__KEY` environment variables. Secrets can come from files (`*_file`).
//! `Settings` is what the operator writes; `Config` is what the daemon runs with, produced by
//! `Settings::validate`, which reports every problem at once with the setting's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::crypto::{EncryptionKeys, KeyEntry, SigningKeys, sha256_hex};
use crate::domain::grant::RefreshPolicy;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The externally visible base URL: links and callback URLs are built from it.
    pub public_url: String,
    /// Address to listen on.
    pub listen: String,
    /// `pretty` for a terminal, `json` for production log collectors.
    pub log_format: LogFormat,
    pub store: StoreSettings,
    pub keys: KeySettings,
    pub sessions: SessionSettings,
    pub http: HttpSettings,
    pub webhooks: WebhookSettings,
    pub tokens: TokenSettings,
    pub system_apps: SystemApps,
    pub rate_limits: RateLimits,
    pub limits: LimitSettings,
}

/// Bounds on what callers may make the daemon hold. Open sessions are counted in the store (all
/// replicas together); waits and connections per replica, in this process. Over a bound a
/// caller gets `429` (its own share) or `503` (the daemon's connections) with `Retry-After`,
/// never a daemon out of descriptors or memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Open sessions (pending, in progress or awaiting a code, not expired) per bot: past it a
    /// create is refused with 429 until one settles or expires. Shared by every replica.
    pub pending_sessions_per_bot: u32,
    /// Open sessions per (bot, user) likewise.
    pub pending_sessions_per_user: u32,
    /// Requests one API key may have waiting at once: long-polls (`?wait=`), event streams,
    /// agent retries with `wait`. The operator key counts as one key.
    pub waits_per_key: u32,
    /// The same, for all keys of one bot together.
    pub waits_per_bot: u32,
    /// Open connections; lowered at start to fit the descriptor limit (`RLIMIT_NOFILE`, raised to
    /// its hard limit first) with a reserve for the store, providers and webhooks. Connections
    /// over it are answered `503` and closed, except `/healthz` and `/readyz` on a few reserved
    /// slots.
    pub max_connections: u32,
    /// An event stream ends cleanly after this long (its first event carries an SSE `retry:`
    /// hint); the client reconnects and gets the current status first.
    pub event_stream_max_seconds: u32,
    /// A connection whose response makes no write progress for this long (a client that does not
    /// read) is closed.
    pub write_timeout_seconds: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            // A person has one or a few sign-ins open at a time (agents reuse theirs), so 20 is
            // far above any real use and still stops a loop creating sessions for one user.
            // 100,000 per bot is over 100 new sign-ins a second held for the default 15-minute
            // lifetime, far beyond any one bot's real traffic, and bounds what one leaked key can
            // park in the store (with 8 KiB contexts, about 1 GiB), where there was no bound.
            pending_sessions_per_bot: 100_000,
            pending_sessions_per_user: 20,
            // A chatbot waits on the people mid-authorization at one time: a thousand per key and
            // 2,500 per bot is far above one engine's need, and four bots at their bound still
            // leave room in the default connection cap.
            waits_per_key: 1_000,
            waits_per_bot: 2_500,
            // 10,000 parked requests are what benches/run measures (about 70 MiB).
            max_connections: 10_000,
            // Reconnecting costs one request; ten minutes keeps that rare while a stream does not
            // pin a replica for a session's whole life (up to 24 h).
            event_stream_max_seconds: 600,
            // Answers are small: a reading client takes them in milliseconds. 30 s also spares
            // a phone on a bad network.
            write_timeout_seconds: 30,
        }
    }
}

/// Requests per minute (smooth: GCRA, bursts up to the limit), shared by every replica through
/// the store. API keys are limited per key, the browser's pages per client address. The webhook
/// and channel workers are never limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub enabled: bool,
    /// Per runtime key (sessions, tokens).
    pub runtime_per_minute: u32,
    /// For the operator key (it may do what every runtime and admin key may).
    pub operator_per_minute: u32,
    /// Per admin key.
    pub admin_per_minute: u32,
    /// Per client address: link pages, provider and binding callbacks.
    pub browser_per_minute: u32,
    /// Per client address: console sign-in attempts.
    pub sign_in_per_minute: u32,
    /// Per client address: API calls with a missing or unknown key (key guessing).
    pub unauthenticated_per_minute: u32,
    /// Behind this many trusted proxies, the client address is the `X-Forwarded-For` entry
    /// this many places from its end. 0: the connection's own address (the header is ignored,
    /// so it cannot be spoofed).
    pub trusted_proxy_hops: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            runtime_per_minute: 60_000,
            operator_per_minute: 60_000,
            admin_per_minute: 600,
            browser_per_minute: 120,
            sign_in_per_minute: 10,
            unauthenticated_per_minute: 60,
            trusted_proxy_hops: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Refresh when the access token expires within this many seconds — but at most a third of
    /// the token's own lifetime before it, so short-lived tokens are not refreshed on every use.
    pub refresh_margin_seconds: u64,
    /// After a refresh fails for a transient reason (network, 5xx), wait this long before the
    /// next attempt, doubling per failure (jittered) up to `refresh_retry_max_seconds`.
    pub refresh_retry_base_seconds: u64,
    pub refresh_retry_max_seconds: u64,
    /// Refresh grants in the background before they expire, so requests rarely wait for one.
    pub proactive_refresh: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            refresh_margin_seconds: 300,
            refresh_retry_base_seconds: 2,
            refresh_retry_max_seconds: 300,
            proactive_refresh: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Delay before each retry, in seconds (±20% jitter); after the last one the event is a dead
    /// letter. The default spreads 11 attempts over about a day.
    pub retry_schedule_seconds: Vec<f64>,
    pub request_timeout_seconds: u64,
    /// The lease on claimed work (deliveries, due refreshes, due expiries): renewed every third
    /// of it while the worker holds the work, so a killed replica's work is taken over by
    /// another within this time. The request timeout plus two seconds by default: a live holder
    /// survives two missed renewals.
    pub visibility_timeout_seconds: u64,
    /// How often idle workers look for due deliveries and expired sessions (changes on any
    /// replica wake them sooner).
    pub poll_interval_ms: u64,
    /// Deliveries in flight per replica, and per bot (so one slow endpoint cannot starve others).
    pub concurrency: usize,
    pub per_bot_concurrency: usize,
    /// Refuse webhook URLs that are or resolve to loopback/private/link-local addresses.
    /// Default: on when `public_url` is https (production), off otherwise (local runs, tests).
    pub deny_private_networks: Option<bool>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_schedule_seconds: vec![
                5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0,
            ],
            request_timeout_seconds: 10,
            visibility_timeout_seconds: 12,
            poll_interval_ms: 1000,
            concurrency: 64,
            per_bot_concurrency: 8,
            deny_private_networks: None,
        }
    }
}

/// Webhook delivery, validated.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub retry_schedule: Vec<Duration>,
    pub request_timeout: Duration,
    pub visibility_timeout: Duration,
    pub poll_interval: Duration,
    pub concurrency: usize,
    pub per_bot_concurrency: usize,
    pub deny_private_networks: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Where the store lives: at most one of `redis_url`, `redis_cluster_nodes` and `redis_sentinel`;
/// none of them selects the embedded in-memory store (one process, nothing persisted).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// One Redis server: `redis://…` or `rediss://…` (TLS).
    pub redis_url: Option<String>,
    /// Redis Cluster: some of its nodes (`redis://host:port`, or all `rediss://`); the client
    /// learns the rest of the cluster from them.
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// Redis Sentinel: the master is whichever server the sentinels name, found again after a
    /// failover.
    pub redis_sentinel: Option<SentinelSettings>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: Option<String>,
    /// PEM file of the certificate authorities that sign the Redis servers' certificates, for
    /// `rediss://` with a private CA. Trusted instead of the public web roots.
    pub redis_ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelSettings {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The sentinels: `redis://host:26379` (`rediss://` for TLS, `redis://user:pass@…` when they
    /// require a password). Asked in this order.
    pub nodes: Vec<String>,
    /// How to talk to the master once found (its address comes from the sentinels): over TLS,
    /// and with an ACL user and password.
    pub master_tls: bool,
    pub master_username: Option<String>,
    pub master_password: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    /// `id:base64` entries; the first signs, all verify. From `authlink keygen`.
    pub signing: Vec<String>,
    /// A file with one `id:base64` entry per line (alternative to `signing`).
    pub signing_file: Option<PathBuf>,
    /// `id:base64` entries; the first encrypts, all decrypt.
    pub encryption: Vec<String>,
    pub encryption_file: Option<PathBuf>,
    /// SHA-256 (hex) of the operator key, as printed by `authlink keygen`.
    pub operator_key_sha256: Option<String>,
    /// A file containing the operator key itself.
    pub operator_key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    pub default_ttl_seconds: u32,
    /// How long a finished or expired session stays readable.
    pub retention_seconds: u32,
    pub idempotency_ttl_seconds: u32,
    /// Longest `?wait=` accepted.
    pub max_wait_seconds: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            default_ttl_seconds: 900,
            retention_seconds: 86_400,
            idempotency_ttl_seconds: 86_400,
            max_wait_seconds: 60,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub body_limit_bytes: usize,
    /// Per-request deadline (long-polls get their wait on top).
    pub request_timeout_seconds: u64,
    /// Timeout for calls to providers (token, identity, revoke).
    pub provider_timeout_seconds: u64,
    /// A connection that has not sent a whole request head within this is closed (slowloris).
    pub header_read_timeout_ms: u64,
    /// After SIGTERM: the listener closes at once, and connections already open are served for
    /// this long before idle ones are closed (in-flight requests always finish). A request that
    /// reached a just-accepted connection is answered instead of cut off.
    pub shutdown_drain_ms: u64,
    /// The most read of any answer from another server (providers, identity issuers, chat
    /// APIs): their URLs are tenants', and a longer answer fails the call instead of filling
    /// memory (`outbound`).
    pub max_response_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout_seconds: 30,
            provider_timeout_seconds: 15,
            header_read_timeout_ms: 15_000,
            shutdown_drain_ms: 500,
            max_response_body_bytes: crate::outbound::DEFAULT_MAX_RESPONSE_BODY,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemApps {
    pub salesforce: Option<AppSettings>,
    pub oauth2: Option<AppSettings>,
}

/// An OAuth app the operator configured. For Salesforce only the client and `login_host` are
/// needed; the generic provider needs its endpoint URLs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSettings {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Salesforce: `https://login.salesforce.com` (default), `https://test.salesforce.com`, or a
    /// My Domain host.
    pub login_host: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub revoke_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// `basic` (HTTP Basic, the default) or `body` (client_id/client_secret form fields).
    pub client_auth: Option<String>,
    /// Salesforce sends no `expires_in`. With `introspect = true` the expiry is learned from the
    /// introspection endpoint; otherwise (or if that fails) tokens are assumed to live
    /// `session_lifetime_seconds` (the org's session timeout; default 7200).
    pub introspect: Option<bool>,
    pub session_lifetime_seconds: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            listen: "127.0.0.1:8080".into(),
            log_format: LogFormat::Pretty,
            store: StoreSettings::default(),
            keys: KeySettings::default(),
            sessions: SessionSettings::default(),
            http: HttpSettings::default(),
            webhooks: WebhookSettings::default(),
            tokens: TokenSettings::default(),
            system_apps: SystemApps::default(),
            rate_limits: RateLimits::default(),
            limits: LimitSettings::default(),
        }
    }
}

/// One problem with the configuration, named by the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

impl Settings {
    /// Defaults, then the TOML file (if any), then `AUTHLINK__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Vec<Problem>> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(vec![Problem {
                    setting: "--config".into(),
                    message: format!("file {} does not exist", path.display()),
                }]);
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Env::prefixed("AUTHLINK__").split("__"));
        fig.extract().map_err(|errors| {
            errors
                .into_iter()
                .map(|e| Problem {
                    setting: if e.path.is_empty() {
                        "config".into()
                    } else {
                        e.path.join(".")
                    },
                    message: e.kind.to_string(),
                })
                .collect()
        })
    }

    /// Whether the operator configured keys at all (if not, `serve` may run ephemerally).
    pub fn has_keys(&self) -> bool {
        let k = &self.keys;
        !k.signing.is_empty()
            || k.signing_file.is_some()
            || !k.encryption.is_empty()
            || k.encryption_file.is_some()
            || k.operator_key_sha256.is_some()
            || k.operator_key_file.is_some()
    }

    /// Check everything and produce the runtime `Config`, or every problem found.
    pub fn validate(&self) -> Result<Config, Vec<Problem>> {
        let mut p = Problems::default();

        let public_url = p.check("public_url", parse_base_url(&self.public_url));
        let listen = p.check(
            "listen",
            self.listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("{e} (expected host:port, e.g. 0.0.0.0:8080)")),
        );
        let store = store_config(&self.store)
            .map_err(|problems| p.0.extend(problems))
            .ok();
        let signing = p.check(
            "keys.signing",
            key_list(&self.keys.signing, self.keys.signing_file.as_deref())
                .and_then(|k| SigningKeys::new(k).map_err(|e| e.to_string())),
        );
        let encryption = p.check(
            "keys.encryption",
            key_list(&self.keys.encryption, self.keys.encryption_file.as_deref())
                .and_then(|k| EncryptionKeys::new(k).map_err(|e| e.to_string())),
        );
        let operator = p.check("keys.operator_key_sha256", operator_hash(&self.keys));
        let s = &self.sessions;
        if !(60..=86_400).contains(&s.default_ttl_seconds) {
            p.add(
                "sessions.default_ttl_seconds",
                "must be between 60 and 86400",
            );
        }
        if s.max_wait_seconds == 0 || s.max_wait_seconds > 300 {
            p.add("sessions.max_wait_seconds", "must be between 1 and 300");
        }
        let l = &self.limits;
        for (setting, value) in [
            (
                "limits.pending_sessions_per_bot",
                l.pending_sessions_per_bot,
            ),
            (
                "limits.pending_sessions_per_user",
                l.pending_sessions_per_user,
            ),
            ("limits.waits_per_key", l.waits_per_key),
            ("limits.waits_per_bot", l.waits_per_bot),
            ("limits.max_connections", l.max_connections),
            (
                "limits.event_stream_max_seconds",
                l.event_stream_max_seconds,
            ),
            ("limits.write_timeout_seconds", l.write_timeout_seconds),
        ] {
            if value == 0 {
                p.add(setting, "must be positive");
            }
        }
        let w = &self.webhooks;
        let webhooks = if w
            .retry_schedule_seconds
            .iter()
            .any(|s| !s.is_finite() || *s < 0.0 || *s > 7.0 * 86_400.0)
        {
            p.add(
                "webhooks.retry_schedule_seconds",
                "delays must be between 0 and 604800 seconds",
            );
            None
        } else if w.concurrency == 0
            || w.per_bot_concurrency == 0
            || w.poll_interval_ms == 0
            || w.visibility_timeout_seconds == 0
        {
            p.add("webhooks", "concurrency, per_bot_concurrency, poll_interval_ms and visibility_timeout_seconds must be positive");
            None
        } else {
            Some(WebhookConfig {
                retry_schedule: w
                    .retry_schedule_seconds
                    .iter()
                    .map(|s| Duration::from_secs_f64(*s))
                    .collect(),
                request_timeout: Duration::from_secs(w.request_timeout_seconds.max(1)),
                visibility_timeout: Duration::from_secs(w.visibility_timeout_seconds),
                poll_interval: Duration::from_millis(w.poll_interval_ms),
                concurrency: w.concurrency,
                per_bot_concurrency: w.per_bot_concurrency,
                deny_private_networks: w
                    .deny_private_networks
                    .unwrap_or(self.public_url.starts_with("https://")),
            })
        };
        let t = &self.tokens;
        if t.refresh_retry_base_seconds == 0
            || t.refresh_retry_max_seconds < t.refresh_retry_base_seconds
        {
            p.add(
                "tokens.refresh_retry_base_seconds",
                "must be positive and at most tokens.refresh_retry_max_seconds",
            );
        }
        if self.http.body_limit_bytes < 1024 {
            p.add("http.body_limit_bytes", "must be at least 1024");
        }
        if self.http.max_response_body_bytes < 16 * 1024 {
            // Below this, ordinary answers (a JWKS with a few RSA keys) would be refused.
            p.add("http.max_response_body_bytes", "must be at least 16384");
        }
        let salesforce = self.system_apps.salesforce.as_ref().and_then(|a| {
            p.check(
                "system_apps.salesforce",
                app_config(a, crate::domain::bot::ProviderKind::Salesforce),
            )
        });
        let oauth2 = self.system_apps.oauth2.as_ref().and_then(|a| {
            p.check(
                "system_apps.oauth2",
                app_config(a, crate::domain::bot::ProviderKind::Oauth2),
            )
        });
        let r = &self.rate_limits;
        for (name, per_minute) in [
            ("runtime_per_minute", r.runtime_per_minute),
            ("operator_per_minute", r.operator_per_minute),
            ("admin_per_minute", r.admin_per_minute),
            ("browser_per_minute", r.browser_per_minute),
            ("sign_in_per_minute", r.sign_in_per_minute),
            ("unauthenticated_per_minute", r.unauthenticated_per_minute),
        ] {
            if r.enabled && per_minute == 0 {
                p.add(
                    &format!("rate_limits.{name}"),
                    "must be at least 1 (set rate_limits.enabled = false to turn limits off)",
                );
            }
        }

        if !p.0.is_empty() {
            return Err(p.0);
        }
        let (
            Some(public_url),
            Some(listen),
            Some(store),
            Some(signing),
            Some(encryption),
            Some(operator_key_sha256),
            Some(webhooks),
        ) = (
            public_url, listen, store, signing, encryption, operator, webhooks,
        )
        else {
            unreachable!("every None above recorded a problem");
        };
        Ok(Config {
            public_url,
            listen,
            log_format: self.log_format,
            store,
            signing,
            encryption,
            operator_key_sha256,
            default_ttl: Duration::from_secs(s.default_ttl_seconds.into()),
            retention: Duration::from_secs(s.retention_seconds.into()),
            idempotency_ttl: Duration::from_secs(s.idempotency_ttl_seconds.into()),
            max_wait: Duration::from_secs(s.max_wait_seconds.into()),
            body_limit: self.http.body_limit_bytes,
            request_timeout: Duration::from_secs(self.http.request_timeout_seconds),
            provider_timeout: Duration::from_secs(self.http.provider_timeout_seconds),
            shutdown_drain: Duration::from_millis(self.http.shutdown_drain_ms),
            header_read_timeout: Duration::from_millis(self.http.header_read_timeout_ms.max(1)),
            webhooks,
            refresh: RefreshPolicy {
                margin: Duration::from_secs(t.refresh_margin_seconds),
                retry_base: Duration::from_secs(t.refresh_retry_base_seconds),
                retry_max: Duration::from_secs(t.refresh_retry_max_seconds),
            },
            proactive_refresh: self.tokens.proactive_refresh,
            salesforce,
            oauth2,
            rate_limits: self.rate_limits,
            max_response_body: self.http.max_response_body_bytes,
            limits: self.limits,
        })
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, setting: &str, message: impl Into<String>) {
        self.0.push(Problem {
            setting: setting.into(),
            message: message.into(),
        });
    }
    fn check<T>(&mut self, setting: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.add(setting, m)).ok()
    }
}

/// What the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub store: StoreConfig,
    pub signing: SigningKeys,
    pub encryption: EncryptionKeys,
    pub operator_key_sha256: String,
    pub default_ttl: Duration,
    pub retention: Duration,
    pub idempotency_ttl: Duration,
    pub max_wait: Duration,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub provider_timeout: Duration,
    pub shutdown_drain: Duration,
    pub header_read_timeout: Duration,
    pub webhooks: WebhookConfig,
    pub refresh: RefreshPolicy,
    pub proactive_refresh: bool,
    pub salesforce: Option<AppConfig>,
    pub oauth2: Option<AppConfig>,
    pub rate_limits: RateLimits,
    /// What is read of an answer from another server at most (`outbound`).
    pub max_response_body: usize,
    pub limits: LimitSettings,
}

impl Config {
    /// Browsers only send `Secure` cookies over https; local http runs use plain names.
    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

#[derive(Clone, Debug)]
pub enum StoreConfig {
    Memory,
    Redis {
        topology: RedisTopology,
        prefix: String,
        /// PEM roots for `rediss://` (else the public web roots).
        tls_ca: Option<Arc<[u8]>>,
    },
}

/// How the Redis store reaches Redis.
#[derive(Clone, Debug)]
pub enum RedisTopology {
    /// One server, by URL.
    Single(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    Sentinel(SentinelConfig),
}

#[derive(Clone, Debug)]
pub struct SentinelConfig {
    pub master_name: String,
    /// Sentinel URLs, asked in order.
    pub nodes: Vec<String>,
    pub master_tls: bool,
    pub master_username: Option<String>,
    pub master_password: Option<SecretString>,
}

/// A validated OAuth app.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: Url,
    pub token_url: Url,
    pub userinfo_url: Option<Url>,
    pub revoke_url: Option<Url>,
    pub scopes: Vec<String>,
    pub client_auth_in_body: bool,
    /// Where to learn an access token's expiry when the token response has none.
    pub introspect_url: Option<Url>,
    /// Assumed access-token lifetime when neither the response nor introspection tells.
    pub assumed_lifetime: Option<Duration>,
    /// Extra query parameters for the authorize URL (custom profiles).
    pub extra_authorize_params: Vec<(String, String)>,
    /// A distinct endpoint for refresh grants (custom profiles), else `token_url`.
    pub refresh_url: Option<Url>,
}

/// Salesforce scopes when none are configured: `refresh_token` is explicit because `full` alone
/// never yields a refresh token.
pub const SALESFORCE_DEFAULT_SCOPES: [&str; 3] = ["api", "refresh_token", "id"];

fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e}: {s:?}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http(s) URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must not contain a query, fragment or credentials".into());
    }
    Ok(url)
}

/// Is `url` acceptable for talking to a provider: https, or http to a loopback host (local runs
/// and tests against a provider on this machine)?
pub fn secure_or_loopback(url: &Url) -> bool {
    url.scheme() == "https"
        || (url.scheme() == "http"
            && match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            })
}

fn endpoint(name: &str, s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{name}: {e}"))?;
    if !secure_or_loopback(&url) {
        return Err(format!(
            "{name}: must be https (http only for loopback hosts)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{name}: must not contain credentials"));
    }
    Ok(url)
}

/// The store settings, or every problem with them (each named by its setting).
fn store_config(s: &StoreSettings) -> Result<StoreConfig, Vec<Problem>> {
    let mut p = Problems::default();
    let prefix = s.key_prefix.clone().unwrap_or_else(|| "authlink".into());
    if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
        p.add(
            "store.key_prefix",
            "must be non-empty without braces or spaces",
        );
    }
    let chosen: Vec<&str> = [
        ("redis_url", s.redis_url.is_some()),
        ("redis_cluster_nodes", s.redis_cluster_nodes.is_some()),
        ("redis_sentinel", s.redis_sentinel.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if chosen.len() > 1 {
        p.add(
            "store",
            format!(
                "{} are set; set only one of them (one server, a Cluster, or Sentinel)",
                chosen.join(" and ")
            ),
        );
    }
    let topology = if let Some(url) = &s.redis_url {
        p.check(
            "store.redis_url",
            redis_node_url(url, true).map(|_| RedisTopology::Single(url.clone())),
        )
    } else if let Some(nodes) = &s.redis_cluster_nodes {
        p.check(
            "store.redis_cluster_nodes",
            redis_node_list(nodes).map(|_| RedisTopology::Cluster(nodes.clone())),
        )
    } else if let Some(sentinel) = &s.redis_sentinel {
        let name = sentinel.master_name.trim();
        if name.is_empty() {
            p.add(
                "store.redis_sentinel.master_name",
                "required: the name the sentinels monitor the master under",
            );
        }
        p.check(
            "store.redis_sentinel.nodes",
            redis_node_list(&sentinel.nodes),
        )
        .map(|_| {
            RedisTopology::Sentinel(SentinelConfig {
                master_name: name.to_owned(),
                nodes: sentinel.nodes.clone(),
                master_tls: sentinel.master_tls,
                master_username: sentinel.master_username.clone(),
                master_password: sentinel.master_password.clone().map(SecretString::from),
            })
        })
    } else {
        None
    };
    let tls_ca = s.redis_ca_file.as_ref().and_then(|path| {
        let uses_tls = s
            .redis_url
            .iter()
            .chain(s.redis_cluster_nodes.iter().flatten())
            .chain(s.redis_sentinel.iter().flat_map(|s| &s.nodes))
            .any(|u| u.starts_with("rediss://"))
            || s.redis_sentinel.as_ref().is_some_and(|s| s.master_tls);
        let read = if uses_tls {
            read_ca(path)
        } else {
            Err("is only used for rediss:// (TLS) connections, and none is configured".into())
        };
        p.check("store.redis_ca_file", read)
    });
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(match topology {
        Some(topology) => StoreConfig::Redis {
            topology,
            prefix,
            tls_ca,
        },
        None => StoreConfig::Memory,
    })
}

/// A PEM bundle with at least one certificate.
fn read_ca(path: &std::path::Path) -> Result<Arc<[u8]>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(pem.into())
}

/// A Redis server's URL: `redis://` or `rediss://` (and, for a single server, a unix socket).
/// Messages never repeat the URL: it may hold a password.
fn redis_node_url(s: &str, unix_allowed: bool) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "redis" | "rediss" if url.host().is_some() => Ok(url),
        "redis" | "rediss" => Err("needs a host".into()),
        "redis+unix" | "unix" if unix_allowed => Ok(url),
        _ => Err("must start with redis:// or rediss://".into()),
    }
}

/// Cluster seeds or sentinels: at least one, each a `redis://` or `rediss://` URL, not mixed.
fn redis_node_list(nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("the list is empty; give at least one node (redis://host:port)".into());
    }
    let mut schemes = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let url = redis_node_url(node, false).map_err(|e| format!("node {}: {e}", i + 1))?;
        schemes.push(url.scheme().to_owned());
    }
    if schemes.iter().any(|s| *s != schemes[0]) {
        return Err("mixes redis:// and rediss:// nodes; use one for all".into());
    }
    Ok(())
}

fn key_list(inline: &[String], file: Option<&Path>) -> Result<Vec<KeyEntry>, String> {
    let from_file;
    let lines: Vec<&str> = match file {
        Some(path) => {
            from_file = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            from_file
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        }
        None => inline.iter().map(String::as_str).collect(),
    };
    if lines.is_empty() {
        return Err("no keys configured (run `authlink keygen`)".into());
    }
    lines
        .iter()
        .map(|l| {
            let (id, key) = l
                .split_once(':')
                .ok_or_else(|| "each key must be written id:base64".to_string())?;
            KeyEntry::parse(id.trim(), key.trim()).map_err(|e| e.to_string())
        })
        .collect()
}

fn operator_hash(k: &KeySettings) -> Result<String, String> {
    match (&k.operator_key_sha256, &k.operator_key_file) {
        (Some(h), None) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(h)
            } else {
                Err("must be 64 hex digits (the SHA-256 printed by `authlink keygen`)".into())
            }
        }
        (None, Some(path)) => {
            let key = std::fs::read_to_string(path)
                .map_err(|e| format!("operator_key_file: cannot read {}: {e}", path.display()))?;
            if key.trim().len() < 32 {
                return Err("operator_key_file: the key must be at least 32 characters".into());
            }
            Ok(sha256_hex(key.trim().as_bytes()))
        }
        (Some(_), Some(_)) => Err("set operator_key_sha256 or operator_key_file, not both".into()),
        (None, None) => Err("no operator key configured (run `authlink keygen`)".into()),
    }
}

fn read_secret(inline: &Option<String>, file: &Option<PathBuf>) -> Result<SecretString, String> {
    match (inline, file) {
        (Some(s), None) if !s.is_empty() => Ok(s.clone().into()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned().into())
            .map_err(|e| format!("client_secret_file: cannot read {}: {e}", path.display())),
        (Some(_), Some(_)) => Err("set client_secret or client_secret_file, not both".into()),
        _ => Err("client_secret (or client_secret_file) is required".into()),
    }
}

fn app_config(
    a: &AppSettings,
    kind: crate::domain::bot::ProviderKind,
) -> Result<AppConfig, String> {
    use crate::domain::bot::ProviderKind;
    if a.client_id.is_empty() {
        return Err("client_id is required".into());
    }
    let client_secret = read_secret(&a.client_secret, &a.client_secret_file)?;
    let client_auth_in_body = match a.client_auth.as_deref() {
        None | Some("basic") => false,
        Some("body") => true,
        Some(other) => return Err(format!("client_auth must be basic or body, not {other:?}")),
    };
    let opt = |name: &str, v: &Option<String>| v.as_deref().map(|s| endpoint(name, s)).transpose();
    match kind {
        ProviderKind::Salesforce => {
            let host = endpoint(
                "login_host",
                a.login_host
                    .as_deref()
                    .unwrap_or("https://login.salesforce.com"),
            )?;
            let at = |path: &str| host.join(path).map_err(|e| e.to_string());
            Ok(AppConfig {
                client_id: a.client_id.clone(),
                client_secret,
                authorize_url: at("/services/oauth2/authorize")?,
                token_url: at("/services/oauth2/token")?,
                userinfo_url: Some(at("/services/oauth2/userinfo")?),
                revoke_url: Some(at("/services/oauth2/revoke")?),
                scopes: a
                    .scopes
                    .clone()
                    .unwrap_or_else(|| SALESFORCE_DEFAULT_SCOPES.map(String::from).to_vec()),
                client_auth_in_body,
                introspect_url: if a.introspect.unwrap_or(false) {
                    Some(at("/services/oauth2/introspect")?)
                } else {
                    None
                },
                assumed_lifetime: Some(Duration::from_secs(
                    a.session_lifetime_seconds.unwrap_or(7200).max(60),
                )),
                extra_authorize_params: Vec::new(),
                refresh_url: None,
            })
        }
        ProviderKind::Oauth2 => Ok(AppConfig {
            client_id: a.client_id.clone(),
            client_secret,
            authorize_url: opt("authorize_url", &a.authorize_url)?
                .ok_or("authorize_url is required")?,
            token_url: opt("token_url", &a.token_url)?.ok_or("token_url is required")?,
            userinfo_url: opt("userinfo_url", &a.userinfo_url)?,
            revoke_url: opt("revoke_url", &a.revoke_url)?,
            scopes: a.scopes.clone().unwrap_or_default(),
            client_auth_in_body,
            introspect_url: None,
            assumed_lifetime: a.session_lifetime_seconds.map(Duration::from_secs),
            extra_authorize_params: Vec::new(),
            refresh_url: None,
        }),
    }
}

/// Fresh keys for `authlink keygen` and for an unconfigured development run.
pub struct GeneratedKeys {
    pub signing: String,
    pub encryption: String,
    pub operator_key: SecretString,
    pub operator_key_sha256: String,
}

impl GeneratedKeys {
    pub fn new() -> Self {
        let (sid, skey) = KeyEntry::generate();
        let (eid, ekey) = KeyEntry::generate();
        let operator_key = format!("alo_{}", crate::crypto::random_token::<32>());
        let operator_key_sha256 = sha256_hex(operator_key.as_bytes());
        Self {
            signing: format!("{sid}:{skey}"),
            encryption: format!("{eid}:{ekey}"),
            operator_key: operator_key.into(),
            operator_key_sha256,
        }
    }

    /// TOML that pastes straight into the config file.
    pub fn to_toml(&self) -> String {
        format!(
            "# Operator key (store it in your secret manager; only its hash goes into the config):\n\
             #   {}\n\
             [keys]\n\
             signing = [\"{}\"]\n\
             encryption = [\"{}\"]\n\
             operator_key_sha256 = \"{}\"\n",
            self.operator_key.expose_secret(),
            self.signing,
            self.encryption,
            self.operator_key_sha256
        )
    }

    /// Put these keys into `settings` (ephemeral development run).
    pub fn apply(&self, settings: &mut Settings) {
        settings.keys.signing = vec![self.signing.clone()];
        settings.keys.encryption = vec![self.encryption.clone()];
        settings.keys.operator_key_sha256 = Some(self.operator_key_sha256.clone());
    }
}

impl Default for GeneratedKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        let s = Settings {
            public_url: "ftp://x".into(),
            listen: "nowhere".into(),
            ..Settings::default()
        };
        let problems = s.validate().unwrap_err();
        let names: Vec<&str> = problems.iter().map(|p| p.setting.as_str()).collect();
        for expected in [
            "public_url",
            "listen",
            "keys.signing",
            "keys.encryption",
            "keys.operator_key_sha256",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    fn store_problems(store: StoreSettings) -> Vec<Problem> {
        store_config(&store).unwrap_err()
    }

    #[test]
    fn store_topologies_are_checked_with_the_setting_named() {
        let cluster = |nodes: &[&str]| StoreSettings {
            redis_cluster_nodes: Some(nodes.iter().map(|n| n.to_string()).collect()),
            ..StoreSettings::default()
        };
        let both = StoreSettings {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..cluster(&["redis://127.0.0.1:7000"])
        };
        let p = store_problems(both);
        assert_eq!(p[0].setting, "store");
        assert!(p[0].message.contains("redis_url and redis_cluster_nodes"));
        let p = store_problems(cluster(&[]));
        assert_eq!(p[0].setting, "store.redis_cluster_nodes");
        assert!(p[0].message.contains("empty"));
        let p = store_problems(cluster(&["redis://a:1", "http://b:2"]));
        assert_eq!(p[0].setting, "store.redis_cluster_nodes");
        assert!(p[0].message.starts_with("node 2:"), "{}", p[0].message);
        let p = store_problems(cluster(&["redis://a:1", "rediss://b:2"]));
        assert!(p[0].message.contains("mixes"));
        let p = store_problems(StoreSettings {
            redis_url: Some("redis://:hunter2@[::1".into()),
            ..StoreSettings::default()
        });
        assert_eq!(p[0].setting, "store.redis_url");
        assert!(!p[0].message.contains("hunter2"));
        let p = store_problems(StoreSettings {
            redis_sentinel: Some(SentinelSettings::default()),
            key_prefix: Some("a{b}".into()),
            ..StoreSettings::default()
        });
        let names: Vec<&str> = p.iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(
            names,
            [
                "store.key_prefix",
                "store.redis_sentinel.master_name",
                "store.redis_sentinel.nodes"
            ]
        );
        let ok = store_config(&StoreSettings {
            redis_sentinel: Some(SentinelSettings {
                master_name: "mymaster".into(),
                nodes: vec!["redis://127.0.0.1:26379".into()],
                ..SentinelSettings::default()
            }),
            ..StoreSettings::default()
        });
        assert!(matches!(
            ok,
            Ok(StoreConfig::Redis {
                topology: RedisTopology::Sentinel(_),
                ..
            })
        ));
    }

    #[test]
    fn generated_keys_validate() {
        let mut s = Settings::default();
        GeneratedKeys::new().apply(&mut s);
        let c = s.validate().unwrap();
        assert!(matches!(c.store, StoreConfig::Memory));
        assert!(!c.is_https());
        assert_eq!(c.max_response_body, 1 << 20);
    }

    #[test]
    fn the_response_body_cap_has_a_floor() {
        let mut s = Settings::default();
        GeneratedKeys::new().apply(&mut s);
        s.http.max_response_body_bytes = 4096;
        let problems = s.validate().unwrap_err();
        assert_eq!(problems[0].setting, "http.max_response_body_bytes");
        s.http.max_response_body_bytes = 16 * 1024;
        assert_eq!(s.validate().unwrap().max_response_body, 16 * 1024);
    }

    #[test]
    fn salesforce_app_defaults_to_login_host_and_refresh_scope() {
        let a = AppSettings {
            client_id: "cid".into(),
            client_secret: Some("sec".into()),
            ..AppSettings::default()
        };
        let c = app_config(&a, crate::domain::bot::ProviderKind::Salesforce).unwrap();
        assert_eq!(
            c.token_url.as_str(),
            "https://login.salesforce.com/services/oauth2/token"
        );
        assert!(c.scopes.contains(&"refresh_token".to_string()));
        let insecure = AppSettings {
            login_host: Some("http://login.example.com".into()),
            ..a
        };
        assert!(app_config(&insecure, crate::domain::bot::ProviderKind::Salesforce).is_err());
    }
}
