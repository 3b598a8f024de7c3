//! A read-through cache for the records every API call reads — API keys, bots, integrations — so
//! the hot path (create a session) costs one Redis round trip instead of four. Correctness does
//! not rest on the TTL: every write publishes an invalidation that all replicas apply, and a
//! replica whose change subscription dropped clears everything when it resubscribes. The TTL only
//! bounds the damage of a bug.

use foldhash::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::bot::{ApiKey, Bot, Integration};
use crate::domain::{BotId, IntegrationName};

const TTL: Duration = Duration::from_secs(30);
/// Entries per map; past it the map is emptied (simple, and bounded).
const MAX: usize = 10_000;

struct Map<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::default()))
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn get<Q: Eq + Hash + ?Sized>(&self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        let map = self.lock();
        map.get(k)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(v, _)| v.clone())
    }
    fn put(&self, k: K, v: V) {
        let mut map = self.lock();
        if map.len() >= MAX {
            map.clear();
        }
        map.insert(k, (v, Instant::now()));
    }
    fn retain(&self, keep: impl Fn(&K, &V) -> bool) {
        self.lock().retain(|k, (v, _)| keep(k, v));
    }
    fn clear(&self) {
        self.lock().clear();
    }
}

pub struct ConfigCache {
    keys: Map<String, Arc<ApiKey>>,
    bots: Map<BotId, Arc<Bot>>,
    integrations: Map<(BotId, IntegrationName), Arc<Integration>>,
}

impl Default for ConfigCache {
    fn default() -> Self {
        Self {
            keys: Map::new(),
            bots: Map::new(),
            integrations: Map::new(),
        }
    }
}

impl ConfigCache {
    pub fn key(&self, hash: &str) -> Option<Arc<ApiKey>> {
        self.keys.get(hash)
    }
    pub fn put_key(&self, key: Arc<ApiKey>) {
        self.keys.put(key.hash.clone(), key);
    }
    pub fn bot(&self, id: &BotId) -> Option<Arc<Bot>> {
        self.bots.get(id)
    }
    pub fn put_bot(&self, bot: Arc<Bot>) {
        self.bots.put(bot.id.clone(), bot);
    }
    pub fn integration(&self, bot: &BotId, name: &IntegrationName) -> Option<Arc<Integration>> {
        self.integrations.get(&(bot.clone(), name.clone()))
    }
    pub fn put_integration(&self, i: Arc<Integration>) {
        self.integrations.put((i.bot.clone(), i.name.clone()), i);
    }

    /// Something about `bot` changed (the bot, one of its keys or integrations).
    pub fn invalidate_bot(&self, bot: &BotId) {
        self.bots.retain(|k, _| k != bot);
        self.keys.retain(|_, v| &v.bot != bot);
        self.integrations.retain(|(b, _), _| b != bot);
    }

    pub fn clear(&self) {
        self.keys.clear();
        self.bots.clear();
        self.integrations.clear();
    }
}
