//! ⑤ Handing out working tokens. A token is *stale* from `margin` before it expires, where the
//! margin is the configured one capped at a third of the token's own lifetime (see
//! `Grant::refresh_margin`): short-lived tokens are served unchanged for most of their life
//! instead of being refreshed on every use. A stale token (or one asked for with `force_refresh`,
//! after a 401) is refreshed by exactly one request across all replicas: it takes the grant's
//! lock (renewed while the provider call runs), re-reads the grant, refreshes, and writes the
//! result fenced by the grant's generation — so a writer with a stale view is refused — before
//! releasing the lock. A response without a refresh token keeps the old one. Everyone else waits
//! for the new generation and never calls the provider. `invalid_grant` & co. mark the grant
//! `reauth_required` (after a re-read: another replica may just have rotated it). Network errors,
//! 5xx and rate limits keep the grant and put it in backoff: no attempt, by a request or the
//! background refresher, before an exponentially growing delay; meanwhile a token that has not
//! expired yet is still served, and an expired one is answered with 503 and `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::domain::bot::Integration;
use crate::domain::event::Event;
use crate::domain::grant::{Grant, GrantStatus, Tokens};
use crate::flow::AppState;
use crate::flow::provider::ProviderError;
use crate::oauth::{ExchangeError, Provider};
use crate::store::{Held, Lease, StoreError};

const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a request waits for another replica's refresh before answering 503.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no usable grant")]
    AuthorizationRequired,
    /// The provider cannot refresh the token right now; ask again after `retry_after`.
    #[error("provider unavailable: {cause}")]
    Unavailable {
        cause: String,
        retry_after: Duration,
    },
    /// The integration's app cannot be resolved (a configuration problem, see
    /// `flow::provider::ProviderError`).
    #[error("{0}")]
    Misconfigured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ProviderError> for TokenError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Misconfigured(why) => TokenError::Misconfigured(why),
            ProviderError::Store(e) => TokenError::Store(e),
        }
    }
}

/// What a grant needs before its token can be handed out.
enum Need {
    Nothing,
    Refresh,
    /// Refreshes failed recently and the next attempt is not due before this.
    Backoff(OffsetDateTime),
}

fn need(state: &AppState, grant: &Grant, now: OffsetDateTime, force: bool) -> Need {
    if let Some(retry_at) = grant.backing_off(now) {
        // A token that still works is served while the provider recovers.
        return if force || grant.is_expired(now) {
            Need::Backoff(retry_at)
        } else {
            Need::Nothing
        };
    }
    if force || !grant.is_fresh(now, &state.config.refresh) {
        Need::Refresh
    } else {
        Need::Nothing
    }
}

fn backing_off(grant: &Grant, retry_at: OffsetDateTime, now: OffsetDateTime) -> TokenError {
    TokenError::Unavailable {
        cause: format!(
            "the last {} refresh(es) of this grant failed at the provider; the next attempt is due in {} s",
            grant.refresh_failures,
            (retry_at - now).whole_seconds().max(1)
        ),
        retry_after: (retry_at - now).try_into().unwrap_or(Duration::ZERO),
    }
}

fn open(state: &AppState, grant: &Grant) -> Result<Tokens, TokenError> {
    let aad = Grant::aad(&grant.bot, &grant.integration, &grant.subject);
    state
        .opened
        .open(&state.config.encryption, &aad, &grant.sealed_tokens)
        .map_err(|_| TokenError::AuthorizationRequired)
}

fn serve(state: &AppState, grant: Grant) -> Result<(Grant, Tokens), TokenError> {
    let tokens = open(state, &grant)?;
    Ok((grant, tokens))
}

/// A newer generation of the grant appeared while we waited for it (someone refreshed, or
/// recorded a failed refresh): hand it out, unless it is in backoff and its token will not do.
fn settled(
    state: &AppState,
    latest: Grant,
    force: bool,
    now: OffsetDateTime,
) -> Result<(Grant, Tokens), TokenError> {
    match latest.backing_off(now) {
        Some(retry_at) if force || latest.is_expired(now) => {
            Err(backing_off(&latest, retry_at, now))
        }
        _ => serve(state, latest),
    }
}

/// A working access token for `grant`, a grant of `integration` (refreshed if needed, or if
/// `force`). The integration's app is resolved only for a refresh.
pub async fn access_token(
    state: &AppState,
    integration: &Integration,
    grant: Arc<Grant>,
    force: bool,
) -> Result<(Arc<Grant>, Tokens), TokenError> {
    let now = state.clock.now();
    match need(state, &grant, now, force) {
        Need::Nothing => {
            let tokens = open(state, &grant)?;
            Ok((grant, tokens))
        }
        Need::Backoff(retry_at) => Err(backing_off(&grant, retry_at, now)),
        // Boxed: the refresh (locks, the provider call) is most of this future's size, and
        // the common answer needs none of it — every request would otherwise carry (and copy)
        // those kilobytes.
        Need::Refresh => {
            let grant = Arc::unwrap_or_clone(grant);
            let (grant, tokens) = Box::pin(refresh(state, integration, grant, force)).await?;
            Ok((Arc::new(grant), tokens))
        }
    }
}

/// The stale token's path: one refresh across replicas, everyone else waits for its result.
async fn refresh(
    state: &AppState,
    integration: &Integration,
    grant: Grant,
    force: bool,
) -> Result<(Grant, Tokens), TokenError> {
    let provider = &crate::flow::provider::provider_for(state, integration).await?;
    if !grant.is_working(&provider.config_id) {
        // The integration moved to another app since the grant was read.
        return Err(TokenError::AuthorizationRequired);
    }
    let seen = grant.generation;
    let owner = crate::crypto::random_token::<12>();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if state.store.lock_grant(&grant, &owner, LOCK_TTL).await? {
            let result = refresh_locked(state, provider, &grant, seen, force, &owner).await;
            let _ = state.store.unlock_grant(&grant, &owner).await;
            return result;
        }
        // Someone else is refreshing: wait for the new generation instead of calling the provider.
        tokio::time::sleep(Duration::from_millis(25)).await;
        let latest = reread(state, &grant).await?;
        if latest.generation != seen {
            return settled(state, latest, force, state.clock.now());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TokenError::Unavailable {
                cause: "another refresh of this grant is still running".into(),
                retry_after: Duration::from_secs(1),
            });
        }
    }
}

async fn reread(state: &AppState, grant: &Grant) -> Result<Grant, TokenError> {
    state
        .store
        .get_grant(&grant.bot, &grant.integration, &grant.subject)
        .await?
        .filter(|g| g.status == GrantStatus::Active)
        .ok_or(TokenError::AuthorizationRequired)
}

#[tracing::instrument(name = "refresh", skip_all, fields(bot = %grant.bot, integration = %grant.integration, provider = provider.kind.as_str()))]
async fn refresh_locked(
    state: &AppState,
    provider: &Provider,
    grant: &Grant,
    seen: u64,
    force: bool,
    owner: &str,
) -> Result<(Grant, Tokens), TokenError> {
    // Re-read under the lock: another replica may have refreshed meanwhile.
    let latest = reread(state, grant).await?;
    let now = state.clock.now();
    if latest.generation != seen {
        return settled(state, latest, force, now);
    }
    match need(state, &latest, now, force) {
        Need::Nothing => return serve(state, latest),
        Need::Backoff(retry_at) => return Err(backing_off(&latest, retry_at, now)),
        Need::Refresh => {}
    }
    let old = open(state, &latest)?;
    let Some(refresh_token) = old.refresh_token.clone() else {
        return Err(TokenError::AuthorizationRequired);
    };
    // Keep the lease while the provider call runs.
    let renew = {
        let (store, lease_grant, owner) = (state.store.clone(), latest.clone(), owner.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_TTL / 3).await;
                if !matches!(
                    store.renew_grant_lock(&lease_grant, &owner, LOCK_TTL).await,
                    Ok(true)
                ) {
                    return;
                }
            }
        })
    };
    let started = std::time::Instant::now();
    let result = provider.refresh(&state.http, &refresh_token, now).await;
    renew.abort();
    metrics::histogram!("authlink_refresh_seconds", "provider" => provider.kind.as_str())
        .record(started.elapsed().as_secs_f64());
    let aad = Grant::aad(&latest.bot, &latest.integration, &latest.subject);
    match result {
        Ok(set) => {
            metrics::counter!("authlink_refreshes_total", "outcome" => "ok").increment(1);
            let tokens = Tokens {
                access_token: set.tokens.access_token,
                // No refresh token in the answer (Salesforce without rotation): keep ours.
                refresh_token: set.tokens.refresh_token.or(old.refresh_token),
                token_type: old.token_type,
            };
            let refreshable = tokens.refresh_token.is_some();
            let mut updated = Grant {
                sealed_tokens: tokens.seal(&state.config.encryption, &aad),
                access_expires_at: set.access_expires_at,
                access_issued_at: Some(now),
                refreshed_at: Some(now),
                instance_url: set.instance_url.or(latest.instance_url.clone()),
                scopes: if set.scopes.is_empty() {
                    latest.scopes.clone()
                } else {
                    set.scopes
                },
                last_error: None,
                ..latest.clone()
            };
            updated.schedule_refresh(refreshable, &state.config.refresh);
            if !state.store.update_grant(&updated, None).await? {
                // Fenced out (our lease ran out and someone else wrote): theirs is the truth.
                let now_latest = reread(state, grant).await?;
                let tokens = open(state, &now_latest)?;
                return Ok((now_latest, tokens));
            }
            tracing::info!(bot = %latest.bot, integration = %latest.integration, "access token refreshed");
            Ok((
                Grant {
                    generation: updated.generation + 1,
                    ..updated
                },
                tokens,
            ))
        }
        Err(ExchangeError::Rejected { error, .. }) if error != "rate_limit_exceeded" => {
            metrics::counter!("authlink_refreshes_total", "outcome" => "rejected").increment(1);
            // A rotated token may have been written by another replica in between.
            let again = reread(state, grant).await?;
            if again.generation != latest.generation {
                let tokens = open(state, &again)?;
                return Ok((again, tokens));
            }
            let bot = state.store.get_bot(&latest.bot).await?;
            let dead = Grant {
                status: GrantStatus::ReauthRequired,
                // The tokens are useless now; they are not kept.
                sealed_tokens: String::new(),
                refresh_at: None,
                last_error: Some(error.clone()),
                ..latest.clone()
            };
            let event = Event::for_connection(
                &dead,
                "connection.reauth_required",
                Some(&error),
                bot.and_then(|b| b.webhook_url.clone()),
                now,
            );
            state.store.update_grant(&dead, Some(&event)).await?;
            tracing::warn!(bot = %latest.bot, integration = %latest.integration, %error, "grant needs re-authorization");
            Err(TokenError::AuthorizationRequired)
        }
        Err(e) => {
            metrics::counter!("authlink_refreshes_total", "outcome" => "unavailable").increment(1);
            let cause = e.to_string();
            let mut failed = Grant {
                last_error: Some(cause.clone()),
                ..latest.clone()
            };
            failed.schedule_retry(now, &state.config.refresh);
            let retry_in = failed
                .refresh_at
                .map_or(0.0, |at| (at - now).as_seconds_f64());
            tracing::warn!(
                bot = %latest.bot,
                integration = %latest.integration,
                error = %e,
                failures = failed.refresh_failures,
                retry_in_seconds = retry_in,
                "refresh failed; the grant is kept and backs off"
            );
            if !state.store.update_grant(&failed, None).await? {
                // Someone else wrote meanwhile: theirs is the truth.
                return settled(state, reread(state, grant).await?, force, now);
            }
            if force || latest.is_expired(now) {
                return Err(TokenError::Unavailable {
                    cause,
                    retry_after: Duration::from_secs_f64(retry_in.max(0.0)),
                });
            }
            // The token still works: serve it while the provider recovers.
            let failed = Grant {
                generation: failed.generation + 1,
                ..failed
            };
            serve(state, failed)
        }
    }
}

/// The access token itself, for the response (the only place it leaves the process).
pub fn expose(tokens: &Tokens) -> &str {
    tokens.access_token.expose_secret()
}

/// The proactive refresher every replica runs: one [`sweep`] per poll interval.
pub async fn run(state: AppState, cancel: tokio_util::sync::CancellationToken) {
    let interval = state
        .config
        .webhooks
        .poll_interval
        .max(Duration::from_millis(50));
    while !cancel.is_cancelled() {
        sweep(&state).await;
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass of the proactive refresher, at the application clock's time: grants whose
/// `refresh_at` passed are claimed (a lease per partition, renewed while this replica works on
/// them, so a dead replica's claims return within one lease) and refreshed through the same
/// lock-protected path as a request — so a hot token is rarely refreshed on the request path, and
/// a grant is never refreshed by both. `refresh_at` follows the same margin rule as requests
/// (and the backoff after failures), so a grant is refreshed once per token lifetime at most.
/// At most four refreshes run at once per replica. Returns how many grants were claimed.
pub async fn sweep(state: &AppState) -> usize {
    let len = state.config.webhooks.visibility_timeout;
    let mut claimed = 0;
    for p in crate::domain::Partition::all() {
        let now = state.clock.now();
        let due = match state.store.claim_refreshes(p, now, len, 20).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim grants to refresh");
                break;
            }
        };
        if due.is_empty() {
            continue;
        }
        claimed += due.len();
        let lease = Lease::taken(p, Held::Refreshes(due.clone()), now, len);
        let work = async {
            for chunk in due.chunks(4) {
                futures_util::future::join_all(chunk.iter().map(|(bot, integration, subject)| {
                    refresh_in_background(state, bot, integration, subject)
                }))
                .await;
            }
        };
        lease.hold(&*state.store, &state.clock, len, work).await;
    }
    claimed
}

async fn refresh_in_background(
    state: &AppState,
    bot: &crate::domain::BotId,
    name: &crate::domain::IntegrationName,
    subject: &crate::domain::Subject,
) {
    let (Ok(integration), Ok(grant)) = (
        state.store.get_integration(bot, name).await,
        state.store.get_grant_shared(bot, name, subject).await,
    ) else {
        return; // The store is unreachable: the lease runs out and the grant is claimed again.
    };
    let (Some(integration), Some(grant)) = (integration, grant) else {
        // The integration (or the grant) is gone: nothing to refresh, ever.
        let _ = state.store.forget_refresh(bot, name, subject).await;
        return;
    };
    let Ok(app) = crate::flow::provider::app_id(state, &integration).await else {
        return;
    };
    if !grant.is_working(&app) {
        // Issued by an app the integration no longer uses (or not active): never refreshed.
        let _ = state.store.forget_refresh(bot, name, subject).await;
        return;
    }
    // Due by its schedule (a request may have refreshed it since it was claimed: then it has a
    // later `refresh_at`). Due means refresh now, even if it is not yet stale for requests: the
    // schedule's jitter deliberately runs a little ahead of the request path's margin.
    if grant.refresh_at.is_none_or(|t| t > state.clock.now()) {
        return;
    }
    match access_token(state, &integration, grant, true).await {
        Ok(_) => {
            metrics::counter!("authlink_proactive_refreshes_total", "outcome" => "ok").increment(1)
        }
        Err(e) => {
            metrics::counter!("authlink_proactive_refreshes_total", "outcome" => "failed")
                .increment(1);
            tracing::warn!(bot = %bot, integration = %name, error = %e, "background refresh failed");
        }
    }
}
