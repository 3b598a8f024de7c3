//! ⑤ Handing out working tokens. A token near expiry (or on `force_refresh`, after a 401) is
//! refreshed by exactly one request across all replicas: it takes the grant's lock (renewed while
//! the provider call runs), re-reads the grant, refreshes, and writes the result fenced by the
//! grant's generation — so a writer with a stale view is refused — before releasing the lock. A
//! response without a refresh token keeps the old one. Everyone else waits for the new generation
//! and never calls the provider. `invalid_grant` & co. mark the grant `reauth_required` (after a
//! re-read: another replica may just have rotated it); network errors and 5xx keep the grant.

use std::time::Duration;

use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::clock;
use crate::domain::event::Event;
use crate::domain::grant::{Grant, GrantStatus, Tokens};
use crate::oauth::{ExchangeError, Provider};
use crate::routes::AppState;
use crate::store::StoreError;

const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a request waits for another replica's refresh before answering 503.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no usable grant")]
    AuthorizationRequired,
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Usable without a refresh: it does not expire within the margin. (A token of unknown lifetime
/// is refreshed only on `force_refresh`, i.e. after the API said 401.)
fn fresh(state: &AppState, grant: &Grant, now: OffsetDateTime) -> bool {
    let margin =
        time::Duration::try_from(state.config.refresh_margin).unwrap_or(time::Duration::ZERO);
    grant.access_expires_at.is_none_or(|exp| now + margin < exp)
}

fn open(state: &AppState, grant: &Grant) -> Result<Tokens, TokenError> {
    let aad = Grant::aad(&grant.bot, &grant.integration, &grant.subject);
    Tokens::open(&state.config.encryption, &aad, &grant.sealed_tokens)
        .map_err(|_| TokenError::AuthorizationRequired)
}

/// A working access token for `grant` (refreshed if needed, or if `force`).
pub async fn access_token(
    state: &AppState,
    provider: &Provider,
    grant: Grant,
    force: bool,
) -> Result<(Grant, Tokens), TokenError> {
    let now = clock::now();
    if !force && fresh(state, &grant, now) {
        let tokens = open(state, &grant)?;
        return Ok((grant, tokens));
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
            let tokens = open(state, &latest)?;
            return Ok((latest, tokens));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TokenError::Unavailable(
                "another refresh of this grant is still running".into(),
            ));
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
    let now = clock::now();
    if latest.generation != seen || (!force && fresh(state, &latest, now)) {
        let tokens = open(state, &latest)?;
        return Ok((latest, tokens));
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
            updated.schedule_refresh(refreshable, state.config.refresh_margin);
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
            tracing::warn!(error = %e, "refresh failed; the grant is kept");
            Err(TokenError::Unavailable(e.to_string()))
        }
    }
}

/// The access token itself, for the response (the only place it leaves the process).
pub fn expose(tokens: &Tokens) -> &str {
    tokens.access_token.expose_secret()
}

/// The proactive refresher every replica runs: grants whose `refresh_at` passed are leased (one
/// replica each) and refreshed through the same lock-protected path as a request, so a hot token
/// is rarely refreshed on the request path. At most four refreshes run at once per replica.
pub async fn run(state: AppState, cancel: tokio_util::sync::CancellationToken) {
    const LEASE: Duration = Duration::from_secs(60);
    let interval = state
        .config
        .webhooks
        .poll_interval
        .max(Duration::from_millis(50));
    while !cancel.is_cancelled() {
        let now = clock::now();
        for p in crate::domain::Partition::all() {
            let due = match state.store.claim_refreshes(p, now, LEASE, 20).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim grants to refresh");
                    break;
                }
            };
            for chunk in due.chunks(4) {
                futures_util::future::join_all(chunk.iter().map(|(bot, integration, subject)| {
                    refresh_in_background(&state, bot, integration, subject)
                }))
                .await;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn refresh_in_background(
    state: &AppState,
    bot: &crate::domain::BotId,
    integration: &crate::domain::IntegrationName,
    subject: &crate::domain::Subject,
) {
    let (Ok(Some(integration)), Ok(Some(grant))) = (
        state.store.get_integration(bot, integration).await,
        state.store.get_grant(bot, integration, subject).await,
    ) else {
        return;
    };
    let Ok(provider) = crate::routes::profiles::provider_for(state, &integration).await else {
        return;
    };
    // Due by its schedule (a request may have refreshed it since it was claimed: then it has a
    // later `refresh_at`). Due means refresh now, even if it is not yet stale for requests: the
    // schedule's jitter deliberately runs a little ahead of the request path's margin.
    let due = grant.refresh_at.is_some_and(|t| t <= clock::now());
    if !grant.is_working(&provider.config_id) || !due {
        return;
    }
    match access_token(state, &provider, grant, true).await {
        Ok(_) => {
            metrics::counter!("authlink_proactive_refreshes_total", "outcome" => "ok").increment(1)
        }
        Err(e) => {
            metrics::counter!("authlink_proactive_refreshes_total", "outcome" => "failed")
                .increment(1);
            tracing::warn!(bot = %bot, integration = %integration.name, error = %e, "background refresh failed");
        }
    }
}
