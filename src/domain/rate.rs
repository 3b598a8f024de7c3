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
    /// Milliseconds between requests at the steady rate.
    pub fn interval_ms(&self) -> u64 {
        (self.window.as_millis() as u64 / u64::from(self.limit.max(1))).max(1)
    }

    pub fn window_ms(&self) -> u64 {
        self.window.as_millis() as u64
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

/// One GCRA step at `now_ms` for a key whose theoretical arrival time is `tat_ms` (`None`: new).
/// Returns the verdict and the new arrival time to store (unchanged when refused).
pub fn step(quota: Quota, tat_ms: Option<u64>, now_ms: u64) -> (Verdict, u64) {
    let interval = quota.interval_ms();
    let window = quota.window_ms();
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let next = tat + interval;
    if next > now_ms + window {
        let wait = next - (now_ms + window);
        let verdict = Verdict {
            allowed: false,
            remaining: 0,
            reset: Duration::from_millis(wait),
        };
        return (verdict, tat);
    }
    let verdict = Verdict {
        allowed: true,
        remaining: ((now_ms + window - next) / interval) as u32,
        reset: Duration::from_millis(next - now_ms),
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
            let (v, t) = step(Q, tat, 1_000);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
            tat = Some(t);
        }
        let (v, t) = step(Q, tat, 1_000);
        assert!(!v.allowed);
        assert_eq!(
            v.reset,
            Duration::from_secs(6),
            "one interval until the next"
        );
        assert_eq!(Some(t), tat, "a refusal changes nothing");
        assert!(!step(Q, tat, 6_999).0.allowed);
        let (v, _) = step(Q, tat, 7_000);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn an_idle_key_is_whole_again_after_the_window() {
        let (_, t) = step(Q, None, 0);
        let (v, _) = step(Q, Some(t), 60_000);
        assert_eq!(v.remaining, 9);
    }
}
