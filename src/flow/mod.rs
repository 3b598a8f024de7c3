//! The flow's home, below every edge: the state the HTTP API, the channel deliveries and the
//! background workers all work with, and the flow steps more than one edge needs (which app an
//! integration uses).

pub mod agent;
pub mod provider;

use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;

/// Everything a flow step needs; no per-replica state that another replica would need lives here.
/// One `Arc`, so the per-request clone is a single reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    /// Provider and issuer calls: no redirects, bounded time, answers read up to a cap.
    pub http: crate::outbound::HttpClient,
    /// Cancelled when the daemon is asked to stop: long-polls answer at once and event streams
    /// end, so that graceful shutdown is not held up by requests that would wait for minutes.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Time for the flow: session expiry, token refresh, backoff and leases all read it here.
    pub clock: crate::clock::Clock,
    /// Bots' identity issuers (discovery and JWKS) as last fetched, for the binding step.
    pub issuers: crate::oauth::issuer::IssuerCache,
    /// Rate-limit permits this replica took ahead of need (`domain::rate::Permits`).
    pub permits: crate::domain::rate::Permits,
    /// The tokens of the grants served last, opened (`domain::grant::OpenedTokens`).
    pub opened: crate::domain::grant::OpenedTokens,
    /// Requests waiting now, per key and per bot (`[limits]`).
    pub waits: crate::bounds::Waits,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        http: crate::outbound::HttpClient,
        clock: crate::clock::Clock,
    ) -> Self {
        Self(Arc::new(Shared {
            store,
            http,
            shutdown: tokio_util::sync::CancellationToken::new(),
            clock,
            issuers: Default::default(),
            permits: Default::default(),
            opened: Default::default(),
            waits: crate::bounds::Waits::new(&config.limits),
            config,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
