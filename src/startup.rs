//! The application: builds the store and the router from a `Config`, binds its own listener
//! (port 0 in tests), and serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::flow::AppState;
use crate::oauth::http_client;
use crate::outbox::Dispatcher;
use crate::routes::limit::Peer;
use crate::routes::router;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Zero-configuration runs only: the demo provider, served beside the API.
    demo: Option<crate::demo::Demo>,
}

impl Application {
    /// Bind the listen address and connect the store (lazily: a daemon whose Redis is down starts,
    /// answers `/readyz` with 503, and recovers when Redis comes back).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
            StoreConfig::Redis {
                topology,
                prefix,
                tls_ca,
            } => Arc::new(
                RedisStore::open_with_ca(topology, tls_ca.as_deref(), prefix)
                    .context("store: cannot use these Redis settings")?,
            ),
        };
        Self::with_store(config, store).await
    }

    /// Like `build`, with a store made elsewhere (tests share one memory store between replicas).
    pub async fn with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        Ok(Self::with_listener(config, store, listener))
    }

    /// With a listener bound elsewhere (tests bind port 0 first, to know `public_url`).
    pub fn with_listener(config: Config, store: Arc<dyn Store>, listener: TcpListener) -> Self {
        Self::with_clock(config, store, listener, Clock::default())
    }

    /// With a clock of the caller's (tests move it forward; replicas in one test share it).
    pub fn with_clock(
        config: Config,
        store: Arc<dyn Store>,
        listener: TcpListener,
        clock: Clock,
    ) -> Self {
        // Provider and issuer calls reach public addresses only when private networks are denied
        // (URLs in custom profiles and identity issuers are the tenants').
        let resolver = config
            .webhooks
            .deny_private_networks
            .then(|| Arc::new(crate::webhook::PublicOnlyResolver));
        let http = http_client(config.provider_timeout, resolver, config.max_response_body);
        let state = AppState::new(Arc::new(config), store, http, clock);
        Self {
            listener,
            state,
            demo: None,
        }
    }

    /// Serve the built-in demo provider too, and configure bot `demo` for it through the API.
    /// Only a zero-configuration run can make a `DemoMode`.
    pub async fn enable_demo(
        &mut self,
        mode: crate::demo::DemoMode,
    ) -> anyhow::Result<&crate::demo::Demo> {
        let demo = crate::demo::seed(router(self.state.clone(), axum::Router::new()), mode).await?;
        Ok(self.demo.insert(demo))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` completes, then: close the listener (new connections are refused,
    /// `/readyz` says 503, long-polls and event streams end), serve the connections already open
    /// for `http.shutdown_drain_ms`, close the idle ones and finish in-flight requests, stop the
    /// workers claiming, let in-flight deliveries finish, and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // One token for everything that must stop: long-polls, event streams, the workers.
        let cancel = self.state.shutdown.clone();
        let stop = cancel.clone();
        let drain = self.state.config.shutdown_drain;
        let shutdown = async move {
            shutdown.await;
            stop.cancel();
            // Requests may already sit in connections accepted a moment ago: read and answer
            // them before idle connections are closed.
            tokio::time::sleep(drain).await;
        };
        let workers = TaskTracker::new();
        crate::telemetry::metrics();
        let dispatcher = Dispatcher::new(
            self.state.store.clone(),
            self.state.config.clone(),
            self.state.clock.clone(),
        );
        workers.spawn(dispatcher.run(cancel.clone()));
        workers.spawn(upkeep(self.state.store.clone(), cancel.clone()));
        if self.state.config.proactive_refresh {
            workers.spawn(crate::refresh::run(self.state.clone(), cancel.clone()));
        }
        workers.close();
        let demo = self
            .demo
            .as_ref()
            .map(|d| d.router(self.state.clock.clone()));
        let timeouts = crate::parked::Timeouts {
            header: self.state.config.header_read_timeout,
            write: Duration::from_secs(self.state.config.limits.write_timeout_seconds.into()),
        };
        let cap = crate::bounds::connection_cap(
            self.state.config.limits.max_connections,
            crate::bounds::descriptor_limit(),
        );
        if cap < self.state.config.limits.max_connections as usize {
            tracing::warn!(
                connections = cap,
                configured = self.state.config.limits.max_connections,
                "limits.max_connections lowered to fit the descriptor limit (RLIMIT_NOFILE)"
            );
        }
        let mut app = router(self.state, crate::console::router());
        if let Some(demo) = demo {
            app = app.merge(demo);
        }
        let listener = Draining {
            listener: Some(self.listener),
            stop: cancel.clone(),
        };
        serve(listener, app, shutdown, timeouts, cap).await;
        cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(30), workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "workers did not stop within 30 s; their claimed deliveries return to the queue when the lease ends"
            );
        }
        Ok(())
    }
}

/// Serve every connection `listener` accepts until `shutdown` completes; then stop accepting,
/// let open connections finish their requests (idle ones close), and return when all are
/// done. Each request carries its connection's address (`ConnectInfo<Peer>`). A connection
/// that has not sent a whole request head within the header timeout is closed (also between
/// requests: hyper restarts it when a connection goes idle), and one whose answer makes no
/// write progress for the write timeout. At most `cap` connections are served; beyond it a few
/// more are accepted to answer health probes and tell everybody else `503`.
async fn serve(
    mut listener: Draining,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    timeouts: crate::parked::Timeouts,
    cap: usize,
) {
    use hyper_util::rt::TokioTimer;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    // Connections whose first request waits are served by `parked` until it is answered.
    let first_requests = TaskTracker::new();
    let closing = CancellationToken::new();
    // One permit per connection served, held until it closes.
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let health_slots = Arc::new(tokio::sync::Semaphore::new(crate::bounds::HEALTH_SLOTS));
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: answered on a health slot, or (those taken too) closed at once.
            if let Ok(health) = health_slots.clone().try_acquire_owned() {
                let app = app.clone();
                first_requests.spawn(async move {
                    crate::parked::over_capacity(io, addr, app, timeouts.write).await;
                    drop(health);
                });
            } else {
                metrics::counter!("authlink_http_connections_dropped_total").increment(1);
            }
            continue;
        };
        let (app, http, watcher) = (app.clone(), http.clone(), graceful.watcher());
        let closing = closing.clone();
        first_requests.spawn(async move {
            let first = crate::parked::first_request(io, addr, app.clone(), timeouts, closing);
            if let crate::parked::First::Hyper(io) = first.await {
                // A task of its own: this one would hold the connection's state twice.
                let conn = serve_with_hyper(&http, watcher, io, addr, app, timeouts.write);
                tokio::spawn(futures_util::FutureExt::map(conn, move |()| drop(slot)));
            }
        });
    }
    drop(listener);
    closing.cancel();
    first_requests.close();
    first_requests.wait().await;
    graceful.shutdown().await;
}

/// One connection served by hyper until it closes (or, on shutdown, finishes its request).
fn serve_with_hyper(
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: tokio::net::TcpStream,
    addr: SocketAddr,
    app: axum::Router,
    write_timeout: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let peer = axum::extract::ConnectInfo(Peer(addr));
    let svc = tower::ServiceExt::map_request(
        app,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            req
        },
    );
    let conn = http.serve_connection(
        hyper_util::rt::TokioIo::new(crate::bounds::WriteProgress::new(io, write_timeout)),
        hyper_util::service::TowerToHyperService::new(svc),
    );
    // A map, not an `async move` block awaiting `conn`: the block would hold the connection
    // twice (captured, and moved into the await), for the connection's life.
    futures_util::FutureExt::map(watcher.watch(conn), |ended| {
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    })
}

/// Housekeeping: histogram upkeep for the Prometheus recorder, and the queue-depth gauge.
async fn upkeep(store: Arc<dyn Store>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        crate::telemetry::metrics().run_upkeep();
        if let Ok(n) = store.backlog().await {
            metrics::gauge!("authlink_webhook_queue_depth").set(n as f64);
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Draining>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Draining>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The listener, closed (not just no longer polled) as soon as `stop` is cancelled: new
/// connections are refused at once while open ones drain.
struct Draining {
    listener: Option<TcpListener>,
    stop: CancellationToken,
}

impl axum::serve::Listener for Draining {
    type Io = <TcpListener as axum::serve::Listener>::Io;
    type Addr = <TcpListener as axum::serve::Listener>::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = &mut self.listener else {
                return std::future::pending().await;
            };
            tokio::select! {
                biased;
                () = self.stop.cancelled() => self.listener = None,
                accepted = axum::serve::Listener::accept(listener) => return accepted,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}
