//! Rate limits as GCRA (the generic cell rate algorithm): each limited thing keeps one number,
//! its *theoretical arrival time*; a request is allowed when that time is no further ahead of
//! now than the window, and moves it on by one emission interval. Smooth (no burst of twice the
//! limit at a window's edge), and one value per key, so a store can check and update it in one
//! atomic step. The Redis store runs the same arithmetic in Lua.

use std::time::Duration;

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
    /// Requests left right now (after this one, if allowed).
    pub remaining: u32,
    /// Until the quota is whole again (allowed), or until the next request may pass (refused).
    pub reset: Duration,
}

/// One GCRA step at `now_us` (µs) for a key whose theoretical arrival time is `tat_us`
/// (`None`: new). Returns the verdict and the new arrival time to store (unchanged when refused).
pub fn step(quota: Quota, tat_us: Option<u64>, now_us: u64) -> (Verdict, u64) {
    let interval = quota.interval_us();
    let window = quota.window_us();
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let next = tat + interval;
    if next > now_us + window {
        let wait = next - (now_us + window);
        let verdict = Verdict {
            allowed: false,
            remaining: 0,
            reset: Duration::from_micros(wait),
        };
        return (verdict, tat);
    }
    let verdict = Verdict {
        allowed: true,
        remaining: ((now_us + window - next) / interval).min(u64::from(u32::MAX)) as u32,
        reset: Duration::from_micros(next - now_us),
    };
    (verdict, next)
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
            let (v, t) = step(Q, tat, 1_000_000);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
            tat = Some(t);
        }
        let (v, t) = step(Q, tat, 1_000_000);
        assert!(!v.allowed);
        assert_eq!(
            v.reset,
            Duration::from_secs(6),
            "one interval until the next"
        );
        assert_eq!(Some(t), tat, "a refusal changes nothing");
        assert!(!step(Q, tat, 6_999_999).0.allowed);
        let (v, _) = step(Q, tat, 7_000_000);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn an_idle_key_is_whole_again_after_the_window() {
        let (_, t) = step(Q, None, 0);
        let (v, _) = step(Q, Some(t), 60_000_000);
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
            let (v, t) = step(q, tat, 0);
            assert!(v.allowed);
            tat = Some(t);
        }
        assert!(!step(q, tat, 0).0.allowed);
        for _ in 0..100 {
            let (v, t) = step(q, tat, 1_000);
            assert!(v.allowed);
            tat = Some(t);
        }
        assert!(!step(q, tat, 1_000).0.allowed);
    }
}
