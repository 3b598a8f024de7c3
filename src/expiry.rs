//! Expiry: a live session past its deadline becomes `expired`, with its `auth_session.expired`
//! event, exactly once — whichever replica (or reader) notices first wins the conditional
//! transition; the others see a conflict and move on.

use time::OffsetDateTime;

use crate::clock::Clock;
use crate::domain::event::Event;
use crate::domain::session::{Session, Status};
use crate::store::{Held, Lease, SideWrite, Store, StoreError, Transition, TransitionError};

/// Record the expiry of `s` if it is due; returns the session as it now stands.
pub async fn settle(
    store: &dyn Store,
    s: Session,
    now: OffsetDateTime,
) -> Result<Session, StoreError> {
    if s.status.is_final() || s.status_at(now) != Status::Expired {
        return Ok(s);
    }
    // Boxed: every long-poll and event stream awaits this while parked, and only an expiry
    // needs the transition's state.
    Box::pin(expire(store, s, now)).await
}

async fn expire(store: &dyn Store, s: Session, now: OffsetDateTime) -> Result<Session, StoreError> {
    let mut expired = s.clone();
    expired.status = Status::Expired;
    let event = Event::for_session(&expired, None, now);
    let channel_event = Event::channel_update(&expired, now);
    let result = store
        .transition(Transition {
            id: s.spec.id,
            to: Status::Expired,
            error: None,
            binding: None,
            write: SideWrite::None,
            event: Some(&event),
            channel_event: channel_event.as_ref(),
            now,
        })
        .await;
    match result {
        Ok(updated) => {
            tracing::info!(session_id = %s.spec.id, "auth session expired");
            Ok(updated)
        }
        Err(TransitionError::Conflict(_) | TransitionError::Expired) => {
            Ok(store.get_session(s.spec.id).await?.unwrap_or(s))
        }
        Err(TransitionError::NotFound) => Ok(s),
        Err(TransitionError::Store(e)) => Err(e),
    }
}

/// One sweep of a partition's expiry index: settle what is due, drop what is gone or settled.
/// The claimed sessions stay leased (renewed) until the sweep is done with them.
pub async fn sweep(
    store: &dyn Store,
    clock: &Clock,
    partition: crate::domain::Partition,
    now: OffsetDateTime,
    lease: std::time::Duration,
) -> Result<usize, StoreError> {
    let due = store.claim_expiries(partition, now, lease, 100).await?;
    let n = due.len();
    if n == 0 {
        return Ok(0);
    }
    let held = Lease::taken(partition, Held::Expiries(due.clone()), now, lease);
    let work = async {
        for id in due {
            match store.get_session(id).await? {
                None => store.forget_deadline(id).await?,
                Some(s) if s.status.is_final() => store.forget_deadline(id).await?,
                Some(s) => {
                    settle(store, s, now).await?;
                }
            }
        }
        Ok(n)
    };
    held.hold(store, clock, lease, work).await
}
