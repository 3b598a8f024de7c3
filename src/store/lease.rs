//! Leases on queued work (webhook deliveries, due refreshes, due expiries). A claim leases what
//! it takes until a time; the holder renews the lease while it works ([`Lease::hold`]), so the
//! lease can be short and a replica that dies holding work gives it back within one lease length,
//! while a live one keeps it however long its work takes.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use super::Store;
use crate::clock::{self, Clock};
use crate::domain::{BotId, IntegrationName, Partition, SessionId, Subject};

/// What a lease holds: members of one partition of one queue.
#[derive(Clone, Debug)]
pub enum Held {
    /// Deliveries, by event id.
    Deliveries(Vec<String>),
    /// Grants due for a proactive refresh.
    Refreshes(Vec<(BotId, IntegrationName, Subject)>),
    /// Sessions past their deadline.
    Expiries(Vec<SessionId>),
}

#[derive(Clone, Debug)]
pub struct Lease {
    pub partition: Partition,
    pub held: Held,
    /// The end of the lease as the store recorded it (what a renewal must still find).
    pub until: OffsetDateTime,
}

/// The end of a lease of `len` taken at `now`, at the store's millisecond resolution.
pub fn lease_end(now: OffsetDateTime, len: Duration) -> OffsetDateTime {
    let len_ms = i64::try_from(len.as_millis()).unwrap_or(i64::MAX / 2);
    clock::from_unix_ms(clock::unix_ms(now).saturating_add(len_ms))
}

impl Lease {
    /// The lease a claim of `len` at `now` took on `held`.
    pub fn taken(partition: Partition, held: Held, now: OffsetDateTime, len: Duration) -> Self {
        Self {
            partition,
            held,
            until: lease_end(now, len),
        }
    }

    /// Run `work`, renewing the lease every third of `len` while it runs. Renewal stops once the
    /// store says nothing is held any more (the work finished its members, or — after a stall
    /// longer than the lease — another worker took them over); a failed renewal is retried at
    /// the next tick. Dropping the future drops the work and stops renewing.
    pub async fn hold<F: Future>(
        mut self,
        store: &dyn Store,
        clock: &Clock,
        len: Duration,
        work: F,
    ) -> F::Output {
        let keep = async {
            loop {
                tokio::time::sleep(len / 3).await;
                let until = lease_end(clock.now(), len);
                match store.renew_lease(&self, until).await {
                    Ok(0) => break,
                    Ok(_) => self.until = until,
                    Err(e) => tracing::warn!(error = %e, "cannot renew a lease; retrying"),
                }
            }
            std::future::pending::<Infallible>().await
        };
        tokio::select! {
            biased;
            out = work => out,
            never = keep => match never {},
        }
    }
}
