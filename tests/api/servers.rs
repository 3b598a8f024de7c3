//! Redis servers of the tests' own, on free loopback ports: a single server, a 3-master Cluster,
//! and a master with a replica watched by a sentinel. Each runs in a directory of its own under a
//! small shell that kills it (SIGKILL) and removes the directory when the shell's stdin closes:
//! when the handle drops, or when the test process ends in any way — so no server outlives the
//! tests, not even the Cluster that a whole test binary shares.

use std::io::Write as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use authlink::config::SentinelSettings;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` (blocking, for setup outside the async tests) until it holds or `limit` passes.
fn poll(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(reached(limit, cond), "{what}: not reached within {limit:?}");
}

fn reached(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One `redis-server` (or sentinel) process.
pub struct Server {
    pub port: u16,
    shell: Child,
    /// Closing it stops the server.
    stdin: Option<ChildStdin>,
    dir: std::path::PathBuf,
}

impl Server {
    /// A plain server on `port` without persistence.
    pub fn start(port: u16) -> Self {
        Self::with_args(port, &["--save", "", "--appendonly", "no"])
    }

    /// A server on a free port with the extra arguments `args(port)`, answering PING when this
    /// returns. A port found free may be taken by a parallel test before the server binds it:
    /// then the server is started again on another one.
    pub fn on_free_port(mut args: impl FnMut(u16) -> Vec<String>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let args = args(port);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Some(server) = Self::try_with_args(port, &args) {
                return server;
            }
        }
        panic!("no redis-server started on five free ports");
    }

    /// A server on `port` with these extra arguments, answering PING when this returns.
    pub fn with_args(port: u16, args: &[&str]) -> Self {
        Self::try_with_args(port, args).unwrap_or_else(|| panic!("redis on {port} does not answer"))
    }

    fn try_with_args(port: u16, args: &[&str]) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("authlink-redis-")
            .tempdir()
            .unwrap()
            .keep();
        let (port_arg, dir_arg) = (port.to_string(), dir.to_str().unwrap().to_owned());
        let mut all = vec![
            "--port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir_arg,
        ];
        all.extend_from_slice(args);
        Self::spawn(port, dir, &all)
    }

    /// A sentinel on `port` with this configuration (written to its directory: sentinels rewrite
    /// their configuration file).
    fn sentinel(port: u16, config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("authlink-sentinel-")
            .tempdir()
            .unwrap()
            .keep();
        let file = dir.join("sentinel.conf");
        std::fs::write(
            &file,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n{config}",
                dir.display()
            ),
        )
        .unwrap();
        let file = file.to_str().unwrap().to_owned();
        Self::spawn(port, dir, &[&file, "--sentinel"])
            .unwrap_or_else(|| panic!("sentinel on {port} does not answer"))
    }

    /// The server, once it answers PING; `None` if it does not within 10 s (stopped again).
    fn spawn(port: u16, dir: std::path::PathBuf, args: &[&str]) -> Option<Self> {
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(
                r#"dir=$1; shift; redis-server "$@" & pid=$!
                   read -r _; kill -9 "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir""#,
            )
            .arg("sh")
            .arg(&dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh and redis-server are installed");
        let stdin = shell.stdin.take();
        let server = Self {
            port,
            shell,
            stdin,
            dir,
        };
        reached(Duration::from_secs(10), || server.connection().is_ok()).then_some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| redis::cmd("PING").query::<()>(&mut c).map(|_| c))
    }

    /// `INFO <section>` as text.
    pub fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.connection().unwrap())
            .unwrap()
    }
}

impl Server {
    /// This server's keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        crate::helpers::scan_keys(&mut self.connection().unwrap(), prefix).unwrap()
    }

    /// Whether somebody is subscribed here to a channel under `prefix`.
    pub fn has_subscriber(&self, prefix: &str) -> bool {
        !redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("{prefix}:*"))
            .query::<Vec<String>>(&mut self.connection().unwrap())
            .unwrap()
            .is_empty()
    }
}

impl Drop for Server {
    /// Stops the server (SIGKILL, as a crash) and waits until it is gone.
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.shell.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), created with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                Server::on_free_port(|port| {
                    strings(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        // The default bus port (port + 10000) may be taken or out of range.
                        "--cluster-port",
                        &free_port().to_string(),
                        "--appendonly",
                        "no",
                        "--save",
                        "",
                    ])
                })
            })
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        poll(
            "cluster_state:ok on every node",
            Duration::from_secs(30),
            || {
                nodes.iter().all(|n| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut n.connection().unwrap())
                        .is_ok_and(|i| i.contains("cluster_state:ok"))
                })
            },
        );
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// The node serving `key`'s slot: the others answer MOVED.
    pub fn owner_of(&self, key: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query::<u32>(&mut n.connection().unwrap())
                    .is_ok()
            })
            .expect("some node serves every slot")
    }
}

/// The Cluster this test binary shares (started by the first test asking for it; tests keep
/// apart by their key prefixes). Its servers stop when the test process ends.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

pub const MASTER_NAME: &str = "authlink-test";

/// A master and one replica (both with AOF), and a sentinel watching them (quorum 1), on the
/// test's own servers.
pub struct SentinelSetup {
    pub sentinel: Server,
    /// Taken out to crash the master.
    pub master: Option<Server>,
    pub replica: Server,
}

impl SentinelSetup {
    pub fn start() -> Self {
        let aof = ["--appendonly", "yes", "--save", ""];
        // The first master cannot be turned into a replica (REPLICAOF is disabled on it): after a
        // failover it stays a writable master for good, so a client that kept writing there —
        // rather than following the sentinels — would be seen losing its writes. (Real old
        // masters are demoted seconds later, which only narrows that window.)
        let master = Server::on_free_port(|_| {
            strings(
                &[
                    &aof[..],
                    &[
                        "--rename-command",
                        "REPLICAOF",
                        "",
                        "--rename-command",
                        "SLAVEOF",
                        "",
                    ],
                ]
                .concat(),
            )
        });
        let m = master.port.to_string();
        let replica = Server::on_free_port(|_| {
            strings(&[&aof[..], &["--replicaof", "127.0.0.1", &m]].concat())
        });
        poll("the replica is in sync", Duration::from_secs(20), || {
            replica
                .info("replication")
                .contains("master_link_status:up")
        });
        let sentinel = Server::sentinel(
            free_port(),
            &format!(
                "sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n"
            ),
        );
        let setup = Self {
            sentinel,
            master: Some(master),
            replica,
        };
        // Only a replica the sentinel has heard from recently can be promoted.
        poll(
            "the sentinel knows a healthy replica",
            Duration::from_secs(30),
            || {
                setup
                    .sentinel_query::<Vec<std::collections::HashMap<String, String>>>(&[
                        "REPLICAS",
                        MASTER_NAME,
                    ])
                    .iter()
                    .any(|r| {
                        r.get("flags").map(String::as_str) == Some("slave")
                            && r.get("master-link-status").map(String::as_str) == Some("ok")
                    })
            },
        );
        setup
    }

    fn sentinel_query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        redis::cmd("SENTINEL")
            .arg(args)
            .query(&mut self.sentinel.connection().unwrap())
            .unwrap()
    }

    /// The store settings: a sentinel that is not there comes first, so the client must ask the
    /// next one.
    pub fn settings(&self) -> SentinelSettings {
        SentinelSettings {
            master_name: MASTER_NAME.into(),
            nodes: vec![
                format!("redis://127.0.0.1:{}", free_port()),
                self.sentinel.url(),
            ],
            ..SentinelSettings::default()
        }
    }

    /// The master's port as the sentinel names it.
    pub fn master_port(&self) -> u16 {
        let (_, port): (String, u16) =
            self.sentinel_query(&["GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        port
    }

    /// Blocks until the replica has every write the master took so far (`WAIT` counts this
    /// connection's writes: it writes one of its own first, after everything else).
    pub fn replicated(&self) {
        let master = self.master.as_ref().expect("the master runs");
        let mut con = master.connection().unwrap();
        redis::cmd("INCR")
            .arg("test:replication-mark")
            .query::<()>(&mut con)
            .unwrap();
        let acked: u32 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query(&mut con)
            .unwrap();
        assert_eq!(acked, 1, "the replica acknowledged");
    }

    /// `SENTINEL FAILOVER`, returning once the sentinel names the replica as master.
    pub fn failover(&self) {
        self.sentinel_query::<()>(&["FAILOVER", MASTER_NAME]);
        self.promoted();
    }

    /// Crash the master (SIGKILL), returning once the sentinel has promoted the replica.
    pub fn crash_master(&mut self) {
        drop(self.master.take());
        self.promoted();
    }

    fn promoted(&self) {
        poll(
            "the sentinel names the replica as master",
            Duration::from_secs(60),
            || self.master_port() == self.replica.port,
        );
    }
}

/// A real `authlink serve` process on `port`, killed on drop; `start` returns once it is ready.
pub struct Daemon {
    pub child: Child,
    pub base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// SIGTERM, as an orchestrator stops it.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    pub async fn start(config: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_with_output(config, port, env, Stdio::null()).await
    }

    /// `start`, with the daemon's standard output (its log lines) going to `stdout`.
    pub async fn start_with_output(
        config: &std::path::Path,
        port: u16,
        env: &[(&str, &str)],
        stdout: Stdio,
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_authlink"))
            .args(["serve", "--config"])
            .arg(config)
            .env("AUTHLINK__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("the authlink binary runs");
        let daemon = Daemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        crate::helpers::until_async_within(Duration::from_secs(20), || async {
            client
                .get(format!("{}/readyz", daemon.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        })
        .await;
        daemon
    }
}

/// One daemon process on the embedded store with fresh keys, a Salesforce app, bot `acme` and
/// its integration `crm`. `top` is added to the configuration's top level, `env` to the process.
pub struct Solo {
    pub daemon: Daemon,
    pub operator: String,
    pub api: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Solo {
    pub async fn start(top: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_output(top, env, Stdio::null()).await
    }

    /// `start`, with the daemon's standard output (its log lines) going to `stdout`.
    pub async fn start_with_output(top: &str, env: &[(&str, &str)], stdout: Stdio) -> Self {
        let keys = authlink::config::GeneratedKeys::new();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("authlink.toml");
        std::fs::write(
            &config,
            format!(
                r#"public_url = "http://127.0.0.1:{port}"
{top}
[keys]
signing = ["{}"]
encryption = ["{}"]
operator_key_sha256 = "{}"
[system_apps.salesforce]
client_id = "cid"
client_secret = "secret"
login_host = "http://127.0.0.1:9"
"#,
                keys.signing, keys.encryption, keys.operator_key_sha256
            ),
        )
        .unwrap();
        let solo = Self {
            daemon: Daemon::start_with_output(&config, port, env, stdout).await,
            operator: secrecy::ExposeSecret::expose_secret(&keys.operator_key).to_owned(),
            api: reqwest::Client::new(),
            _dir: dir,
        };
        for (path, body) in [
            ("/v1/bots/acme", serde_json::json!({"name": "acme"})),
            (
                "/v1/bots/acme/integrations/crm",
                serde_json::json!({"provider": "salesforce"}),
            ),
        ] {
            let r = solo
                .api
                .put(solo.url(path))
                .bearer_auth(&solo.operator)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
        solo
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.daemon.base)
    }

    pub async fn new_session(&self, user: &str) -> serde_json::Value {
        self.api
            .post(self.url("/v1/bots/acme/auth-sessions"))
            .bearer_auth(&self.operator)
            .json(&serde_json::json!({"integration": "crm", "user_id": user}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn terminate(&self) {
        self.daemon.terminate();
    }
}

/// A `redis-server` speaking TLS with a certificate from a private CA made for the test
/// (openssl), on a TLS port; it also listens in plain text for the test's own inspection.
pub struct TlsServer {
    pub server: Server,
    pub tls_port: u16,
    /// The CA's certificate (PEM): what authlink must be told to trust.
    pub ca_file: std::path::PathBuf,
    _certs: tempfile::TempDir,
}

impl TlsServer {
    pub fn start() -> Self {
        let certs = tempfile::tempdir().unwrap();
        let ok = Command::new("sh")
            .current_dir(certs.path())
            .arg("-c")
            .arg(
                r#"set -e
                ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
                openssl req -x509 $ec -keyout ca.key -out ca.pem -days 1 \
                  -subj "/CN=authlink test CA" \
                  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
                openssl req $ec -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
                printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext
                openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                  -out server.pem -days 1 -extfile ext"#,
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed")
            .success();
        assert!(ok, "test certificates made");
        let file = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
        let mut tls_port = 0;
        let server = Server::on_free_port(|_| {
            tls_port = free_port();
            strings(&[
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &file("server.pem"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.pem"),
                "--tls-auth-clients",
                "no",
            ])
        });
        Self {
            server,
            tls_port,
            ca_file: certs.path().join("ca.pem"),
            _certs: certs,
        }
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}
