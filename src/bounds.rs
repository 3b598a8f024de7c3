//! Resource bounds per caller and per connection (`[limits]`): how many requests one key and one
//! bot may have waiting at once, how many connections the daemon holds, and how long a
//! connection may go without taking what it is sent.
//!
//! Counts are this replica's own (in-process, not shared through the store): they protect this
//! process's descriptors and memory, which is what a flood exhausts. Behind a load balancer with
//! N replicas, one key may hold up to N times its bound in total.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::LimitSettings;
use crate::error::ApiError;

/// What a caller over its bound of waits is told to wait before trying again: a wait ends when
/// its session settles or after at most `sessions.max_wait_seconds`, so slots free up quickly.
const WAIT_RETRY_AFTER_SECS: u64 = 5;

/// The waiting requests of each key and each bot on this replica.
pub struct Waits {
    per_key: u32,
    per_bot: u32,
    counts: Arc<Mutex<HashMap<Owner, u32, foldhash::fast::RandomState>>>,
}

/// Whom a wait counts against. Keys are named with their bot, so that ids of two bots' keys can
/// never meet.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Owner {
    Key(Box<str>, Box<str>),
    Bot(Box<str>),
}

impl Waits {
    pub fn new(limits: &LimitSettings) -> Self {
        Self {
            per_key: limits.waits_per_key,
            per_bot: limits.waits_per_bot,
            counts: Arc::default(),
        }
    }

    /// A slot for one waiting request of `key` (an API key's id, or `operator`) on `bot`, held
    /// until the slot is dropped — however the wait ends: settled, timed out, the client gone
    /// (its future dropped), shutdown. `429` with `Retry-After` when the key or the bot is at
    /// its bound.
    pub fn enter(&self, key: &str, bot: &str) -> Result<WaitSlot, ApiError> {
        let key = Owner::Key(bot.into(), key.into());
        let bot = Owner::Bot(bot.into());
        // A poisoned map is still a consistent map (each step below is one insert or update).
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = |o: &Owner| counts.get(o).copied().unwrap_or(0);
        if held(&key) >= self.per_key || held(&bot) >= self.per_bot {
            metrics::counter!("authlink_waits_refused_total").increment(1);
            return Err(ApiError::TooManyWaiting(WAIT_RETRY_AFTER_SECS));
        }
        for owner in [&key, &bot] {
            *counts.entry(owner.clone()).or_insert(0) += 1;
        }
        drop(counts);
        Ok(WaitSlot {
            counts: self.counts.clone(),
            owners: Box::new([key, bot]),
        })
    }

    /// Waiting requests held by `key` of `bot` now (for tests and the metrics).
    pub fn held_by_key(&self, key: &str, bot: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .get(&Owner::Key(bot.into(), key.into()))
            .copied()
            .unwrap_or(0)
    }
}

/// One waiting request's place in its key's and its bot's count; given back on drop. (Boxed
/// owners: a parked request's future holds one pointer for it.)
pub struct WaitSlot {
    counts: Arc<Mutex<HashMap<Owner, u32, foldhash::fast::RandomState>>>,
    owners: Box<[Owner; 2]>,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for owner in self.owners.iter() {
            if let Some(n) = counts.get_mut(owner) {
                *n -= 1;
                if *n == 0 {
                    // Gone when unused: the map holds only keys and bots waiting now.
                    counts.remove(owner);
                }
            }
        }
    }
}

/// A connection whose writes must make progress: a write (or flush) that stays blocked for
/// `timeout` — the client neither reads nor closes, e.g. it pipelines requests and never reads
/// the answers — fails with `TimedOut`, and the server closes the connection. Reads pass
/// through (an idle connection is bounded by the header read timeout instead).
pub struct WriteProgress<IO> {
    io: IO,
    timeout: Duration,
    /// Armed while a write is blocked; made on the first block only.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl<IO> WriteProgress<IO> {
    pub fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            armed: false,
        }
    }

    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// `polled` is what the inner write answered: progress disarms the timer; a block arms it
    /// (once) and fails the write when it runs out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = match &mut self.stalled {
            Some(timer) => {
                if !self.armed {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .stalled
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        ready!(timer.as_mut().poll(cx));
        self.armed = false;
        metrics::counter!("authlink_http_write_timeouts_total").increment(1);
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took nothing of the response within the write timeout",
        )))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteProgress<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteProgress<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// Descriptors kept free of connections: the store's connections, provider and webhook calls,
/// the runtime's own, files. Generous: running out of them fails work already accepted.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// Connections beyond the cap that are still accepted, to answer `/healthz` and `/readyz` (and
/// to tell everybody else `503`): a probe always gets through a full daemon.
pub const HEALTH_SLOTS: usize = 16;

/// Raise this process's soft descriptor limit to its hard limit (allowed without privileges;
/// the binary does it at start), and return the soft limit in force afterwards.
#[cfg(unix)]
pub fn raise_descriptor_limit() -> Option<u64> {
    let limit = nofile()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "cannot raise the descriptor limit to its hard limit"
            );
        }
    }
    descriptor_limit()
}

/// The soft descriptor limit (`RLIMIT_NOFILE`); `None` when unlimited or unreadable.
#[cfg(unix)]
pub fn descriptor_limit() -> Option<u64> {
    nofile()
        .map(|l| l.rlim_cur)
        .filter(|&l| l != libc::RLIM_INFINITY)
}

#[cfg(unix)]
fn nofile() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

#[cfg(not(unix))]
pub fn raise_descriptor_limit() -> Option<u64> {
    None
}

#[cfg(not(unix))]
pub fn descriptor_limit() -> Option<u64> {
    None
}

/// The connections this process may hold: `max_connections`, lowered to fit under the
/// descriptor limit `descriptors` with the reserve and the health slots kept free (at least
/// one).
pub fn connection_cap(max_connections: u32, descriptors: Option<u64>) -> usize {
    let configured = max_connections as usize;
    match descriptors {
        Some(d) => {
            let room = d.saturating_sub(RESERVED_DESCRIPTORS + HEALTH_SLOTS as u64);
            configured
                .min(usize::try_from(room).unwrap_or(usize::MAX))
                .max(1)
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_key: u32, per_bot: u32) -> LimitSettings {
        LimitSettings {
            waits_per_key: per_key,
            waits_per_bot: per_bot,
            ..LimitSettings::default()
        }
    }

    #[test]
    fn a_key_and_a_bot_hold_at_most_their_bound_and_dropping_gives_back() {
        let waits = Waits::new(&limits(2, 3));
        let a1 = waits.enter("k1", "acme").unwrap();
        let _a2 = waits.enter("k1", "acme").unwrap();
        assert!(matches!(
            waits.enter("k1", "acme"),
            Err(ApiError::TooManyWaiting(_))
        ));
        // Another key of the same bot: the bot's bound (3) is next.
        let _b1 = waits.enter("k2", "acme").unwrap();
        assert!(waits.enter("k2", "acme").is_err());
        // The same key id on another bot counts apart.
        let _other = waits.enter("k1", "other").unwrap();
        drop(a1);
        assert_eq!(waits.held_by_key("k1", "acme"), 1);
        let _again = waits.enter("k1", "acme").unwrap();
    }

    #[test]
    fn the_cap_fits_under_the_descriptor_limit() {
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, Some(1_024)), 1_024 - 128 - 16);
        assert_eq!(connection_cap(10_000, Some(10)), 1);
        assert_eq!(connection_cap(10_000, Some(u64::MAX)), 10_000);
    }

    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        use tokio::io::AsyncWriteExt as _;
        // A pipe whose reader never reads: writes block once its buffer is full.
        let (client, _server) = tokio::io::duplex(64);
        let mut io = WriteProgress::new(client, Duration::from_millis(50));
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_write_that_progresses_is_not_cut() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (client, mut server) = tokio::io::duplex(64);
        // Each write blocks until the reader takes the pipe's 64 bytes: many blocks, each ended
        // by progress, none lasting the timeout.
        let mut io = WriteProgress::new(client, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        io.write_all(&[0u8; 64 * 1024]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }
}
