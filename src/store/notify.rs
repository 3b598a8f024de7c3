//! Wake-ups for long-polls and event streams. Each process keeps one hub; the memory store pokes
//! it directly, the Redis store pokes it from a pub/sub subscription, so a change made by any
//! replica wakes waiters on every replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::SessionId;

#[derive(Default)]
pub struct Hub {
    waiters: Mutex<HashMap<SessionId, Arc<Notify>>>,
    /// Poked on every session change: an event may have been queued.
    pub outbox: Arc<Notify>,
}

impl Hub {
    pub fn listen(self: &Arc<Self>, id: SessionId) -> Listener {
        let notify = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone();
        Listener {
            hub: self.clone(),
            id,
            notify,
        }
    }

    pub fn notify(&self, id: SessionId) {
        self.outbox.notify_one();
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiters.get(&id) {
            n.notify_waiters();
        }
    }

    /// Requests parked on a session (long-polls, event streams): a gauge for operators.
    pub fn waiting(&self) -> usize {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Each listener holds one reference; the map holds the other.
        waiters.values().map(|n| Arc::strong_count(n) - 1).sum()
    }

    /// Wake everybody: used after a lost subscription, when changes may have been missed.
    pub fn notify_all(&self) {
        self.outbox.notify_one();
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for n in waiters.values() {
            n.notify_waiters();
        }
    }
}

/// A registration for one session's changes. Dropping it unregisters.
pub struct Listener {
    hub: Arc<Hub>,
    id: SessionId,
    notify: Arc<Notify>,
}

impl Listener {
    /// A future that completes on the next change. It is registered as soon as this returns, so
    /// call it, then read the session, then await it: no change can slip in between.
    pub fn next_change(&self) -> impl Future<Output = ()> + '_ {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut waiters = self.hub.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // The map holds one reference and this listener another: nobody else is waiting.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.id);
        }
    }
}
