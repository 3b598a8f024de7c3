//! Rate limits as GCRA (the generic cell rate algorithm): each limited thing keeps one number,
//! its *theoretical arrival time*; a request is allowed when that time is no further ahead of
//! now than the window, and moves it on by one emission interval. Smooth (no burst of twice the
//! limit at a window's edge), and one value per key, so a store can check and update it in one
//! atomic step. The Redis store runs the same arithmetic in Lua.
//!
//! A step may take several requests' worth at once (`want`): a replica serving one key at a high
//! rate takes a few milliseconds' worth of permits in one store step and hands them out itself
//! (`routes::limit`). The store never grants more than the quota, so the limit holds across
//! replicas exactly as before; permits a replica does not use in time are lost, never reused.

use std::time::{Duration, Instant};

/// `limit` requests per `window`, with bursts of up to `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

impl Quota {
    /// Microseconds between requests at the steady rate (microseconds, so that limits of more
    /// than one request per millisecond are what they say).
    pub fn interval_us(&self) -> u64 {
        (self.window.as_micros() as u64 / u64::from(self.limit.max(1))).max(1)
    }

    pub fn window_us(&self) -> u64 {
        self.window.as_micros() as u64
    }
}

/// What the limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Permits taken by this step (0 when refused): the `want` asked for if all fit, else one.
    pub granted: u32,
    /// Requests left right now (after this one, if allowed).
    pub remaining: u32,
    /// Until the quota is whole again (allowed), or until the next request may pass (refused).
    pub reset: Duration,
}

/// One GCRA step at `now_us` (µs) for a key whose theoretical arrival time is `tat_us`
/// (`None`: new), taking `want` permits if they all fit, else one. Returns the verdict and the
/// new arrival time to store (unchanged when refused).
pub fn step(quota: Quota, tat_us: Option<u64>, now_us: u64, want: u32) -> (Verdict, u64) {
    let interval = quota.interval_us();
    let window = quota.window_us();
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let mut take = u64::from(want.max(1));
    if tat + take * interval > now_us + window {
        take = 1;
    }
    let next = tat + take * interval;
    if next > now_us + window {
        let wait = next - (now_us + window);
        let verdict = Verdict {
            allowed: false,
            granted: 0,
            remaining: 0,
            reset: Duration::from_micros(wait),
        };
        return (verdict, tat);
    }
    let verdict = Verdict {
        allowed: true,
        granted: take as u32,
        remaining: ((now_us + window - next) / interval).min(u64::from(u32::MAX)) as u32,
        reset: Duration::from_micros(next - now_us),
    };
    (verdict, next)
}

/// Permits this replica took from the store ahead of need, per limited key (see the module
/// note). A key starts at one permit per store step; while its lease keeps running out before
/// its 20 ms are up, each step asks for twice as many (at most 64, and at most 1% of the quota,
/// so small quotas are always counted one by one); permits left when a lease runs out halve it.
/// While a step for a batch is on its way, requests that find no permit wait for it instead of
/// each going to the store (at a high rate, that would be most of them).
#[derive(Default)]
pub struct Permits(std::sync::Mutex<foldhash::HashMap<String, Lease>>);

pub struct Lease {
    left: u32,
    until: Instant,
    /// The store's `remaining` when the permits were taken (it does not count them).
    remaining: u32,
    reset_at: Instant,
    want: u32,
    /// The step asking for more than one that is on its way, if any: a receiver of its
    /// `Batch`, whose drop (answered, failed or cancelled) wakes whoever waits for it.
    batch: Option<tokio::sync::watch::Receiver<()>>,
}

/// What a request that found no permit does next.
pub enum Next {
    /// Ask the store for `want` permits, holding `batch` (when asking for more than one) until
    /// the answer is recorded with `granted`: dropping it wakes the requests waiting for it.
    Ask { want: u32, batch: Option<Batch> },
    /// A batch is on its way: wait for it, then `take` again.
    Wait(Waiter),
}

/// Held by the request whose store step takes a batch.
pub struct Batch {
    _wakes: tokio::sync::watch::Sender<()>,
}

/// Waits for a batch: returns once its request has recorded the answer, failed, or was dropped.
pub struct Waiter(tokio::sync::watch::Receiver<()>);

impl Waiter {
    pub async fn done(mut self) {
        // Nothing is ever sent: the sender's drop is the signal.
        let _ = self.0.changed().await;
    }
}

const LEASE: Duration = Duration::from_millis(20);
const MAX_WANT: u32 = 64;
const MAX_KEYS: usize = 10_000;

impl Permits {
    fn lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<String, Lease>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit taken earlier for `key`, if one is left: the verdict to answer with.
    pub fn take(&self, key: &str, now: Instant) -> Option<Verdict> {
        let mut map = self.lock();
        let lease = map.get_mut(key)?;
        if lease.left == 0 || now >= lease.until {
            return None;
        }
        lease.left -= 1;
        Some(Verdict {
            allowed: true,
            granted: 1,
            remaining: lease.remaining.saturating_add(lease.left),
            reset: lease.reset_at.saturating_duration_since(now),
        })
    }

    /// What to do when `take` found no permit for `key`: wait for the batch on its way, or ask
    /// the store — for twice as many permits as before if the last lease ran out before its
    /// time, half if permits were left when it did.
    pub fn next(&self, key: &str, quota: Quota, now: Instant) -> Next {
        let cap = (quota.limit / 100).clamp(1, MAX_WANT);
        let mut map = self.lock();
        let Some(lease) = map.get_mut(key) else {
            return Next::Ask {
                want: 1,
                batch: None,
            };
        };
        if let Some(batch) = &lease.batch {
            // A batch whose request was dropped before its answer is gone: ask afresh.
            if batch.has_changed().is_ok() {
                return Next::Wait(Waiter(batch.clone()));
            }
            lease.batch = None;
        }
        lease.want = match (lease.left, now < lease.until) {
            (0, true) => lease.want.saturating_mul(2).min(MAX_WANT),
            (0, false) => lease.want,
            (_, _) => (lease.want / 2).max(1),
        };
        let want = lease.want.min(cap);
        let batch = (want > 1).then(|| {
            let (tx, rx) = tokio::sync::watch::channel(());
            lease.batch = Some(rx);
            Batch { _wakes: tx }
        });
        Next::Ask { want, batch }
    }

    /// A step for `key` failed (the store did not answer): the next one may take a batch.
    pub fn abandon(&self, key: &str) {
        if let Some(lease) = self.lock().get_mut(key) {
            lease.batch = None;
        }
    }

    /// The store's answer to a step for `key` (refusals included): the permits this request does
    /// not use are kept for the next ones.
    pub fn granted(&self, key: &str, v: &Verdict, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, l| now < l.until);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let lease = map.entry(key.to_owned()).or_insert(Lease {
            left: 0,
            until: now,
            remaining: 0,
            reset_at: now,
            want: 1,
            batch: None,
        });
        lease.batch = None;
        let live = now < lease.until;
        if !live {
            // A new lease window: requests within it that find no permit left make the
            // next step ask for more.
            lease.left = 0;
            lease.until = now + LEASE;
        }
        if v.granted > 1 {
            lease.left = lease.left.saturating_add(v.granted - 1);
            lease.until = now + LEASE;
            lease.remaining = v.remaining;
            lease.reset_at = now + v.reset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        limit: 10,
        window: Duration::from_secs(60),
    };

    #[test]
    fn a_burst_of_the_limit_passes_then_one_per_interval() {
        let mut tat = None;
        for i in 0..10 {
            let (v, t) = step(Q, tat, 1_000_000, 1);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
            tat = Some(t);
        }
        let (v, t) = step(Q, tat, 1_000_000, 1);
        assert!(!v.allowed);
        assert_eq!(
            v.reset,
            Duration::from_secs(6),
            "one interval until the next"
        );
        assert_eq!(Some(t), tat, "a refusal changes nothing");
        assert!(!step(Q, tat, 6_999_999, 1).0.allowed);
        let (v, _) = step(Q, tat, 7_000_000, 1);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn a_step_takes_what_it_wants_when_all_fit_else_one() {
        let (v, t) = step(Q, None, 0, 4);
        assert_eq!((v.allowed, v.granted, v.remaining), (true, 4, 6));
        let (v, t) = step(Q, Some(t), 0, 4);
        assert_eq!((v.granted, v.remaining), (4, 2));
        let (v, t) = step(Q, Some(t), 0, 4);
        assert_eq!((v.granted, v.remaining), (1, 1), "four do not fit: one");
        let (_, t) = step(Q, Some(t), 0, 4);
        let (v, _) = step(Q, Some(t), 0, 4);
        assert_eq!(
            (v.allowed, v.granted),
            (false, 0),
            "the quota is never exceeded"
        );
    }

    #[test]
    fn a_busy_key_takes_more_permits_per_step_and_an_idle_one_fewer() {
        let q = Quota {
            limit: 1_000_000,
            window: Duration::from_secs(60),
        };
        let p = Permits::default();
        // The batch (if any) is dropped at once: these steps are answered before the next.
        let want = |key: &str, q: Quota, now: Instant| match p.next(key, q, now) {
            Next::Ask { want, .. } => want,
            Next::Wait(_) => panic!("no batch is on its way"),
        };
        let t0 = Instant::now();
        let step_at = |want: u32| Verdict {
            allowed: true,
            granted: want,
            remaining: 500,
            reset: Duration::from_secs(1),
        };
        assert_eq!(want("k", q, t0), 1, "a new key: one by one");
        assert!(p.take("k", t0).is_none());
        p.granted("k", &step_at(1), t0);
        // Busy: each lease runs out within its time, so the next step asks for twice as many.
        let mut asked = 1;
        for i in 0..8 {
            let now = t0 + Duration::from_millis(i);
            assert!(p.take("k", now).is_none(), "the lease is used up");
            let next = want("k", q, now);
            assert_eq!(next, (asked * 2).min(64));
            asked = next;
            p.granted("k", &step_at(asked), now);
            for _ in 1..asked {
                let v = p.take("k", now).expect("a permit taken ahead");
                assert!(v.allowed);
                assert!(v.remaining >= 500);
            }
        }
        assert_eq!(asked, 64, "at most 64 a step");
        // Requests missing a permit while a batch is on its way wait for it.
        let busy = t0 + Duration::from_millis(9);
        while p.take("k", busy).is_some() {}
        let Next::Ask {
            want: 64,
            batch: Some(batch),
        } = p.next("k", q, busy)
        else {
            panic!("a batch of 64");
        };
        let Next::Wait(waiter) = p.next("k", q, busy) else {
            panic!("one batch at a time: the others wait");
        };
        p.abandon("k");
        drop(batch);
        // The waiter is woken (the batch's drop is its signal), and a failed step frees the batch.
        futures_util::FutureExt::now_or_never(waiter.done()).expect("woken");
        let Next::Ask { want: 64, batch } = p.next("k", q, busy) else {
            panic!("a failed step frees the batch");
        };
        // A batch whose request was dropped unanswered does not keep others waiting.
        drop(batch);
        assert_eq!(want("k", q, busy), 64, "a dropped batch is forgotten");
        p.granted("k", &step_at(64), busy);
        // Left over when the lease ran out: half as many next time, and the old ones are gone.
        let later = t0 + Duration::from_secs(1);
        p.granted("k", &step_at(64), later);
        p.take("k", later).unwrap();
        let expired = later + LEASE;
        assert!(
            p.take("k", expired).is_none(),
            "expired permits are never used"
        );
        assert_eq!(want("k", q, expired), 32);
        // A small quota is counted one by one.
        let small = Quota {
            limit: 5,
            window: Duration::from_secs(60),
        };
        assert_eq!(want("k", small, expired), 1);
    }

    #[test]
    fn an_idle_key_is_whole_again_after_the_window() {
        let (_, t) = step(Q, None, 0, 1);
        let (v, _) = step(Q, Some(t), 60_000_000, 1);
        assert_eq!(v.remaining, 9);
    }

    #[test]
    fn limits_above_one_per_millisecond_hold_their_rate() {
        // 6,000,000 a minute is 100 per millisecond: a millisecond later 100 more may pass.
        let q = Quota {
            limit: 6_000_000,
            window: Duration::from_secs(60),
        };
        let mut tat = None;
        for _ in 0..q.limit {
            let (v, t) = step(q, tat, 0, 1);
            assert!(v.allowed);
            tat = Some(t);
        }
        assert!(!step(q, tat, 0, 1).0.allowed);
        for _ in 0..100 {
            let (v, t) = step(q, tat, 1_000, 1);
            assert!(v.allowed);
            tat = Some(t);
        }
        assert!(!step(q, tat, 1_000, 1).0.allowed);
    }
}
