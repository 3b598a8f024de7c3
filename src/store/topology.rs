//! ④ How the Redis store reaches Redis: one server (`redis://`, `rediss://`), a Redis Cluster
//! (seed nodes; the crate routes every command to the node serving its key's slot), or the master
//! that Redis Sentinel names, found again after a failover. `Conn` is one handle over the three, so
//! `redis.rs` sends its commands and Lua scripts the same way to each; `Subscriber` opens the
//! pub/sub subscription that change notices arrive on.
//!
//! All three fail fast: short connect and response timeouts, at most a retry, so a caller whose
//! Redis is unreachable gets a 503 within about a second and a half instead of a hang. None of
//! them connects before the first command: a daemon whose Redis is down starts and reports
//! not-ready.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{BoxStream, StreamExt};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Msg,
    Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Role, ServerErrorKind,
    Value,
};
use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::config::{RedisTopology, SentinelConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A connection to wherever the store's data is; cheap to clone (clones share it).
#[derive(Clone)]
pub enum Conn {
    /// One server; reconnects by itself.
    Single(ConnectionManager),
    /// Connections to every master, kept and re-learned (MOVED, failovers) by the crate.
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// Subscribes where the `PUBLISH`es of every authlink replica arrive.
pub enum Subscriber {
    /// The one server, or any node of a Cluster (a Cluster forwards every `PUBLISH` to every
    /// node): tried in turn, starting with the one that worked last.
    Servers { servers: Vec<Client>, next: usize },
    /// On the current master; the subscription ends when the sentinels announce another one
    /// (until it is demoted, the old master does not hear what is published on the new one).
    Sentinel(Arc<Sentinels>),
}

/// A client for one server; `rediss://` trusts the PEM roots `ca` if given (else the public
/// web roots).
fn client<T: redis::IntoConnectionInfo>(info: T, ca: Option<&[u8]>) -> RedisResult<Client> {
    let info = info.into_connection_info()?;
    match (ca, info.addr()) {
        (Some(ca), redis::ConnectionAddr::TcpTls { .. }) => {
            Client::build_with_tls(info, certificates(ca))
        }
        _ => Client::open(info),
    }
}

fn certificates(ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

/// The connection and its subscriber for `topology`. Nothing is contacted yet.
pub fn open(topology: &RedisTopology, ca: Option<&[u8]>) -> RedisResult<(Conn, Subscriber)> {
    match topology {
        RedisTopology::Single(url) => {
            let client = client(url.as_str(), ca)?;
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200))
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let conn = client.get_connection_manager_lazy(config)?;
            let subscriber = Subscriber::Servers {
                servers: vec![client],
                next: 0,
            };
            Ok((Conn::Single(conn), subscriber))
        }
        RedisTopology::Cluster(nodes) => {
            let seeds = nodes
                .iter()
                .map(|n| client(n.as_str(), ca))
                .collect::<RedisResult<Vec<_>>>()?;
            let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(2);
            if let Some(ca) = ca {
                builder = builder.certs(certificates(ca));
            }
            let client = builder.build()?;
            let conn = client.get_pending_async_connection_with_config(
                ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT),
            );
            let subscriber = Subscriber::Servers {
                servers: seeds,
                next: 0,
            };
            Ok((Conn::Cluster(conn), subscriber))
        }
        RedisTopology::Sentinel(config) => {
            let sentinels = Arc::new(Sentinels::new(config, ca)?);
            let conn = SentinelConn::new(sentinels.clone());
            tokio::spawn(follow_switches(conn.clone()));
            Ok((Conn::Sentinel(conn), Subscriber::Sentinel(sentinels)))
        }
    }
}

/// One server a keyspace-wide `SCAN` runs on: the only one (`None`), or a Cluster master.
pub type ScanNode = Option<(String, u16)>;

impl Conn {
    /// Where a `SCAN` of the whole keyspace must run: each master of a Cluster (each holds only
    /// its own slots), else the one server. Only one-time index backfills scan.
    pub async fn scan_nodes(&mut self) -> RedisResult<Vec<ScanNode>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![None]);
        };
        // [[first slot, last slot, [host, port, id, …] (the master), replicas…], …]
        let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        let mut masters: Vec<ScanNode> = Vec::new();
        for range in ranges {
            let Some(master) = range.into_iter().nth(2) else {
                continue;
            };
            let (host, port): (String, u16) =
                match redis::from_redis_value::<Vec<Value>>(master)?.as_slice() {
                    [host, port, ..] => (
                        redis::from_redis_value_ref(host)?,
                        redis::from_redis_value_ref(port)?,
                    ),
                    _ => continue,
                };
            if !masters.contains(&Some((host.clone(), port))) {
                masters.push(Some((host, port)));
            }
        }
        Ok(masters)
    }

    /// One `SCAN` step on `node` for keys matching `pattern` of type `kind`: the next cursor
    /// (0: done) and the keys found.
    pub async fn scan_step(
        &mut self,
        node: &ScanNode,
        cursor: u64,
        pattern: &str,
        kind: &str,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg(kind);
        let value = match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let to = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(to)).await?
            }
            (conn, _) => conn.req_packed_command(&cmd).await?,
        };
        Ok(redis::from_redis_value(value)?)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

impl Subscriber {
    /// The messages on `channel` until the subscription is lost.
    pub async fn subscribe(&mut self, channel: &str) -> RedisResult<BoxStream<'static, Msg>> {
        match self {
            Subscriber::Servers { servers, next } => {
                let mut last = None;
                for i in 0..servers.len() {
                    let at = (*next + i) % servers.len();
                    match subscription(&servers[at], channel).await {
                        Ok(messages) => {
                            *next = at;
                            return Ok(messages);
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| no_node("no Redis server configured")))
            }
            Subscriber::Sentinel(sentinels) => {
                let mut switched = sentinels.switches.subscribe();
                let messages = subscription(&sentinels.master().await?, channel).await?;
                Ok(messages
                    .take_until(async move { switched.changed().await })
                    .boxed())
            }
        }
    }
}

async fn subscription(client: &Client, channel: &str) -> RedisResult<BoxStream<'static, Msg>> {
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "pub/sub connection timed out")))??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message().boxed())
}

/// Follows the sentinels' `+switch-master` announcements, so that commands and the change
/// subscription move to the new master at once. Waiting for `READONLY` is not enough: after a
/// failover the old master, if still up, takes writes for seconds until the sentinels demote it,
/// and those writes are then lost.
async fn follow_switches(conn: SentinelConn) {
    let sentinels = conn.sentinels.clone();
    let mut backoff = Duration::from_millis(100);
    let mut next = 0;
    let mut listened = false;
    loop {
        let sentinel = &sentinels.sentinels[next % sentinels.sentinels.len()];
        match subscription(sentinel, "+switch-master").await {
            Ok(mut announcements) => {
                backoff = Duration::from_millis(100);
                if listened {
                    // A switch may have gone unheard while not listening.
                    conn.switched();
                }
                listened = true;
                while let Some(msg) = announcements.next().await {
                    // "<master name> <old ip> <old port> <new ip> <new port>"
                    let payload: String = msg.get_payload().unwrap_or_default();
                    if payload.split(' ').next() == Some(sentinels.master_name.as_str()) {
                        tracing::info!(announcement = %payload, "redis sentinel switched master");
                        conn.switched();
                    }
                }
                tracing::warn!("lost the sentinel's master announcements; reconnecting");
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot listen to a sentinel");
                next += 1;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The sentinels of one master, and how to reach the master they name.
pub struct Sentinels {
    master_name: String,
    sentinels: Vec<Client>,
    master_tls: bool,
    master_settings: RedisConnectionInfo,
    ca: Option<Vec<u8>>,
    /// Counts the master switches announced (see `follow_switches`).
    switches: watch::Sender<u64>,
}

impl Sentinels {
    fn new(config: &SentinelConfig, ca: Option<&[u8]>) -> RedisResult<Self> {
        let mut master_settings = RedisConnectionInfo::default();
        if let Some(user) = &config.master_username {
            master_settings = master_settings.set_username(user);
        }
        if let Some(password) = &config.master_password {
            master_settings = master_settings.set_password(password.expose_secret());
        }
        Ok(Self {
            master_name: config.master_name.clone(),
            sentinels: config
                .nodes
                .iter()
                .map(|n| client(n.as_str(), ca))
                .collect::<RedisResult<_>>()?,
            ca: ca.map(<[u8]>::to_vec),
            master_tls: config.master_tls,
            master_settings,
            switches: watch::Sender::new(0),
        })
    }

    /// The master as the sentinels see it now, following the Sentinel client protocol: ask each
    /// sentinel in turn for the master's address, and take the first answer whose server
    /// confirms (`ROLE`) that it is a master — a sentinel cut off from the others may still name
    /// the old one.
    async fn master(&self) -> RedisResult<Client> {
        let mut last = None;
        for sentinel in &self.sentinels {
            match self.master_named_by(sentinel).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_node("no sentinel configured")))
    }

    async fn master_named_by(&self, sentinel: &Client) -> RedisResult<Client> {
        let mut con = sentinel
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query_async(&mut con)
            .await?;
        let Some((host, port)) = addr else {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "a sentinel does not know this master name",
                self.master_name.clone(),
            )));
        };
        let addr = if self.master_tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let client = client(
            addr.into_connection_info()?
                .set_redis_settings(self.master_settings.clone()),
            self.ca.as_deref(),
        )?;
        let mut master = client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await?;
        match redis::cmd("ROLE").query_async(&mut master).await? {
            Role::Primary { .. } => Ok(client),
            _ => Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the server a sentinel names as master is not a master (yet)",
            ))),
        }
    }
}

type PendingMaster = Shared<BoxFuture<'static, RedisResult<MultiplexedConnection>>>;

/// A connection to the master the sentinels name, replaced — by asking them again — when it
/// breaks or the server turns out to be a replica now (`READONLY`: the old master after a
/// failover). Concurrent callers share one lookup.
#[derive(Clone)]
pub struct SentinelConn {
    sentinels: Arc<Sentinels>,
    /// The connection (or the lookup under way), numbered so that of several callers who see it
    /// fail, only the first replaces it.
    current: Arc<Mutex<(u64, PendingMaster)>>,
}

impl SentinelConn {
    fn new(sentinels: Arc<Sentinels>) -> Self {
        let first = Self::lookup(&sentinels);
        Self {
            sentinels,
            current: Arc::new(Mutex::new((0, first))),
        }
    }

    /// Runs when first awaited, not before.
    fn lookup(sentinels: &Arc<Sentinels>) -> PendingMaster {
        let sentinels = sentinels.clone();
        async move {
            sentinels
                .master()
                .await?
                .get_multiplexed_async_connection_with_config(&connection_config())
                .await
        }
        .boxed()
        .shared()
    }

    fn current(&self) -> (u64, PendingMaster) {
        self.current.lock().expect("never poisoned").clone()
    }

    fn replace(&self, generation: u64) {
        let mut current = self.current.lock().expect("never poisoned");
        if current.0 == generation {
            *current = (generation + 1, Self::lookup(&self.sentinels));
        }
    }

    /// Another server is master now: commands and the change subscription go there.
    fn switched(&self) {
        let generation = self.current().0;
        self.replace(generation);
        self.sentinels.switches.send_modify(|n| *n += 1);
    }

    /// Runs `send` on the master's connection. A `READONLY` refusal (nothing was written) is
    /// retried once on the master found anew; a broken connection is replaced for the next
    /// command, but this one fails: it may or may not have run.
    async fn send<T, F>(&self, send: impl Fn(MultiplexedConnection) -> F) -> RedisResult<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let (generation, pending) = self.current();
        let result = match pending.await {
            Ok(conn) => send(conn).await,
            Err(e) => {
                self.replace(generation);
                return Err(e);
            }
        };
        match result {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) => {
                self.replace(generation);
                let (generation, pending) = self.current();
                match pending.await {
                    Ok(conn) => send(conn).await,
                    Err(e) => {
                        self.replace(generation);
                        Err(e)
                    }
                }
            }
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout() => {
                self.replace(generation);
                Err(e)
            }
            other => other,
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.send(move |mut c| async move { c.req_packed_command(cmd).await }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.send(move |mut c| async move { c.req_packed_commands(cmd, offset, count).await }),
        )
    }

    fn get_db(&self) -> i64 {
        self.sentinels.master_settings.db()
    }
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

fn no_node(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, what))
}
