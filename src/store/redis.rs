//! The Redis store: any number of authlink replicas share one Redis (one server, a Cluster, or
//! Sentinel's master: see `topology`). Key layout — the only place it is written down:
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:{pNN}:s:<session>` | string `<status>\n<expires ms>\n<updated ms>\n<error JSON>\n<spec JSON>`, PX | session |
//! | `P:{pNN}:s:<session>:d` | string: delivery JSON, PX like its session | where the session's link was posted |
//! | `P:{pNN}:ps:<bot>:<integration>:<subject>` | string session id, PX until it expires | an agent's pending session |
//! | `P:{pNN}:psb:<bot>:<integration>:<issuer subject digest>:<subject>` | the same | … of a bound session |
//! | `P:{pNN}:a:<session>:<attempt>` | string, PX | pending attempt (sealed PKCE verifier) |
//! | `P:{pNN}:vc:<session>` | string: tries counted (`right` once one was), PX until the session ends | tries at the session's verification code (next to its grant) |
//! | `P:{pNN}:g:<bot>:<integration>:<subject>` | hash `j` JSON, `st`, `cfg`, `gen` | grant |
//! | `P:{pNN}:ev:<event>` | hash `e` event JSON, `b` bot, `n` failures, `err`, `c` claim, `st` | a delivery (webhook event or channel item) |
//! | `P:{pNN}:due` | zset event → next attempt ms (a claim pushes it to the lease's end) | delivery queue |
//! | `P:{pNN}:dead` | zset event → dead since ms | dead letters |
//! | `P:{pNN}:deadlines` | zset session → expiry ms (a claim pushes it to the lease's end) | expiry index: what the sweeper holds or will hold next |
//! | `P:{pNN}:dl:<second>` | list of sessions expiring within that second (unix time) | expiry index: where a new session goes (`RPUSH`, O(1)); claiming moves a due second into `deadlines` |
//! | `P:{pNN}:dls` | zset second → its end ms | the seconds that have a `dl:` list |
//! | `P:{pNN}:refresh` | zset `bot:integration:subject` → refresh-at ms (leased likewise) | proactive refresh index |
//! | `P:{pNN}:gx:<bot>:<integration>` | zset subject → 0 (read by lex range) | the (bot, integration)'s grants in this partition |
//! | `P:{pNN}:rn:<bot>` | list of sessions, newest first; the newest `RECENT_SESSIONS_PER_PARTITION` are read | the bot's recent sessions in this partition (`LPUSH`, and `LTRIM` on one create in 16: the ids are UUIDv7s, ordered by creation) |
//! | `P:i:<bot>:<sha256(key)>` | string, PX | idempotency key → `<session or "-"> <fingerprint>` |
//! | `P:{b:<bot>}:bot`, `:ints`, `:profiles`, `:channels`, `:whsec` (hashes), `:keys` (hash id → key hash) | | tenancy |
//! | `P:{b:<bot>}:open`, `P:{b:<bot>}:open:<subject>` | zset session → expiry ms, PX until the last expires | the bot's and the user's open sessions (quotas) |
//! | `P:k:<sha256(key)>` | string | API key lookup |
//! | `P:rl:<class>:<id>` | string: arrival time µs (GCRA), PX until the quota is whole | a rate limit |
//! | `P:cs:<sha256(cookie id)>` | string: console session JSON, PX | a signed-in console browser |
//! | `P:bots` | zset bot id → 0 (read by lex range) | every bot |
//! | `P:indexed` | hash `bots`, `grants` → `1` | the one-time backfills of the two indexes above are done |
//!
//! The grant and recent-session indexes are split by partition like the data they index, so that
//! the script or pipeline writing a grant or a session updates its index in the same slot and
//! the same step. Listing reads the 16 parts (one single-key command each) and merges them.
//! Index entries whose record is gone are skipped on read and removed then.
//!
//! `{pNN}` is the partition (see `Partition`): the Cluster hash tag that keeps every key one
//! atomic step touches in one slot. Atomic steps are Lua scripts. Changes are published on
//! `P:changes` so long-polls on other replicas wake up.
//!
//! The open-session sets are the one thing a create writes outside its session's partition: a
//! bot's sessions are spread over all partitions, and a quota must see them all. They share the
//! bot's tag, so checking both quotas and taking a place in both is one script in one slot, and
//! two creates can never both take the last place. The session itself is written in its own
//! slot, just before (taken back if refused) or, when its link goes to a chat channel, just
//! after; a settled session gives its places back after its transition. None of this is
//! atomic with the session: a crash in a gap can leave a place counted for a session that is
//! gone (or, between a write and its place, one session uncounted), never many; and each place
//! is dropped by score when its session would have expired anyway, so nothing leaks for longer.
//!
//! Why sorted sets and not a stream with a consumer group for deliveries: every delivery needs
//! its own next-attempt time (backoff, `Retry-After`), which a stream cannot express; a due-time
//! zset is that schedule, and claiming by pushing the due time to the end of a lease is the
//! visibility timeout that hands a dead worker's deliveries to another replica.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionLike as _;
use redis::{AsyncCommands, Script};

use super::cache::ConfigCache;
use super::notify::{Hub, Listener};
use super::topology::{self, Conn, Subscriber};
use super::{
    CodeCheck, CreateOutcome, Delivery, DeliveryOutcome, Held, Lease, NewSession, QuotaScope,
    RECENT_SESSIONS_PER_PARTITION, SideWrite, Store, StoreError, Transition, TransitionError,
    record_ttl,
};
use crate::clock::{from_unix_ms, unix_ms};
use crate::config::RedisTopology;
use crate::domain::bot::{ApiKey, AuthProfile, Bot, Integration, WebhookSecret};
use crate::domain::channel::{ChannelConfig, ChannelDelivery, ChannelName};
use crate::domain::console::ConsoleSession;
use crate::domain::event::Event;
use crate::domain::grant::Grant;
use crate::domain::rate::{Quota, Verdict};
use crate::domain::session::{Attempt, BindingResult, Session, SessionError, SessionSpec, Status};
use crate::domain::{BotId, IntegrationName, Partition, SessionId, Subject};
use time::OffsetDateTime;

/// Change a session's status with its side write and outbox events, or explain why not.
/// KEYS: session, due, deadlines, side key, event, refresh index, channel event, grant index.
/// ARGV: allowed sources (",a,b,"), target, error JSON, now ms, event JSON or "", side kind ("",
/// "attempt", "grant"), side value, side ttl ms or grant status, grant config, channel, session
/// id, event id, bot, refresh-at ms or "", grant member, channel event JSON or "", channel event
/// id, grant subject.
const TRANSITION: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return {'missing'} end
local st, exp, spec = string.match(cur, '^([^\n]*)\n([^\n]*)\n[^\n]*\n[^\n]*\n(.*)$')
if not st then return redis.error_reply('corrupt session record') end
if not string.find(ARGV[1], ',' .. st .. ',', 1, true) then return {'conflict', st} end
if ARGV[2] ~= 'expired' and tonumber(ARGV[4]) >= tonumber(exp) then return {'expired'} end
redis.call('SET', KEYS[1], ARGV[2] .. '\n' .. exp .. '\n' .. ARGV[4] .. '\n' .. ARGV[3] .. '\n' .. spec, 'KEEPTTL')
if ARGV[6] == 'attempt' then
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[8])
elseif ARGV[6] == 'grant' then
  redis.call('HSET', KEYS[4], 'j', ARGV[7], 'st', ARGV[8], 'cfg', ARGV[9])
  redis.call('HINCRBY', KEYS[4], 'gen', 1)
  if ARGV[14] ~= '' then redis.call('ZADD', KEYS[6], ARGV[14], ARGV[15])
  else redis.call('ZREM', KEYS[6], ARGV[15]) end
  redis.call('ZADD', KEYS[8], 0, ARGV[18])
end
if ARGV[2] == 'completed' or ARGV[2] == 'failed' or ARGV[2] == 'expired' or ARGV[2] == 'cancelled' then
  redis.call('ZREM', KEYS[3], ARGV[11])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[5], 'e', ARGV[5], 'b', ARGV[13], 'n', 0, 'st', 'pending', 'c', '')
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[12])
end
if ARGV[16] ~= '' then
  redis.call('HSET', KEYS[7], 'e', ARGV[16], 'b', ARGV[13], 'n', 0, 'st', 'pending', 'c', '')
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[17])
end
if st ~= ARGV[2] then redis.call('PUBLISH', ARGV[10], 's ' .. ARGV[11]) end
return {'ok'}
"#;

/// Lease due deliveries. KEYS: due. ARGV: now ms, lease end ms, max, event key prefix, claim.
const CLAIM: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local k = ARGV[4] .. id
  local d = redis.call('HMGET', k, 'e', 'n', 'err')
  if d[1] then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', k, 'c', ARGV[5])
    table.insert(out, d[1]); table.insert(out, d[2] or '0'); table.insert(out, d[3] or '')
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"#;

/// Record a delivery's outcome. KEYS: due, dead, event. ARGV: event id, claim, outcome
/// (ok|retry|release|dead), at ms, error, dead-letter ttl s.
const FINISH: &str = r#"
if ARGV[3] == 'ok' then
  redis.call('DEL', KEYS[3]); redis.call('ZREM', KEYS[1], ARGV[1]); return 'ok'
end
local c = redis.call('HGET', KEYS[3], 'c')
if not c then redis.call('ZREM', KEYS[1], ARGV[1]); return 'gone' end
if c ~= ARGV[2] then return 'stale' end
redis.call('HSET', KEYS[3], 'c', '')
if ARGV[3] == 'release' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]); return 'released' end
redis.call('HINCRBY', KEYS[3], 'n', 1)
redis.call('HSET', KEYS[3], 'err', ARGV[5])
if ARGV[3] == 'retry' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]); return 'retry' end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], 'st', 'dead')
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 'dead'
"#;

/// Dead letter back to the queue. KEYS: due, dead, event. ARGV: event id, bot, now ms.
const REPLAY: &str = r#"
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[3], 'b') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'st', 'pending', 'n', 0, 'err', '', 'c', '')
redis.call('PERSIST', KEYS[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"#;

/// Fenced grant write. KEYS: grant, due, event, refresh index, grant index. ARGV: expected
/// generation, JSON, status, config, event JSON or "", event id, bot, now ms, refresh-at ms or
/// "", grant member, subject. (The index entry is written again: a grant from before the index,
/// or from a replica that predates it, is listed from its next write on.)
const UPDATE_GRANT: &str = r#"
local g = redis.call('HGET', KEYS[1], 'gen')
if not g or tonumber(g) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'j', ARGV[2], 'st', ARGV[3], 'cfg', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'gen', 1)
if ARGV[9] ~= '' then redis.call('ZADD', KEYS[4], ARGV[9], ARGV[10])
else redis.call('ZREM', KEYS[4], ARGV[10]) end
redis.call('ZADD', KEYS[5], 0, ARGV[11])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], 'e', ARGV[5], 'b', ARGV[7], 'n', 0, 'st', 'pending', 'c', '')
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[6])
end
return 1
"#;

/// Grant deletion with its event. KEYS: grant, due, event, refresh index, grant index. ARGV:
/// event JSON or "", event id, bot, now ms, grant member, subject.
const DELETE_GRANT: &str = r#"
redis.call('ZREM', KEYS[4], ARGV[5])
redis.call('ZREM', KEYS[5], ARGV[6])
local n = redis.call('DEL', KEYS[1])
if n == 1 and ARGV[1] ~= '' then
  redis.call('HSET', KEYS[3], 'e', ARGV[1], 'b', ARGV[3], 'n', 0, 'st', 'pending', 'c', '')
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
end
return n
"#;

/// Owner-checked lock renew (ARGV[2] = ttl ms) or release (ARGV[2] = ""). KEYS: lock.
const LOCK_OWNER: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"#;

/// Lease sessions past their deadline. KEYS: deadlines. ARGV: now ms, lease end ms, max.
const CLAIM_DEADLINES: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"#;

/// Lease sessions past their deadline, after moving the due seconds' lists into the lease index
/// (scored by the second's end). KEYS: deadlines, seconds. ARGV: now ms, lease end ms, max,
/// second list key prefix.
const CLAIM_EXPIRIES: &str = r#"
local room = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 16)
for i = 1, #due, 2 do
  if room <= 0 then break end
  local list = ARGV[4] .. due[i]
  local ids = redis.call('LPOP', list, room)
  if ids then
    for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'NX', due[i + 1], id) end
    room = room - #ids
  end
  if redis.call('EXISTS', list) == 0 then redis.call('ZREM', KEYS[2], due[i]) end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"#;

/// A channel item is done. KEYS: delivery record, due, item, event. ARGV: delivery JSON, item
/// id, event JSON or "", event id, bot, now ms.
const RECORD_DELIVERY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL') end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[4], 'e', ARGV[3], 'b', ARGV[5], 'n', 0, 'st', 'pending', 'c', '')
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
end
return 1
"#;

/// One GCRA step (`domain::rate::step`, the same arithmetic). KEYS: the limited thing's arrival
/// time. ARGV: now µs, interval µs, window µs (exact in Lua's doubles), permits wanted. →
/// {granted (0: refused), remaining, reset µs}.
const RATE: &str = r#"
local now, interval, window, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat + want * interval > now + window then want = 1 end
local nxt = tat + want * interval
if nxt > now + window then return {0, 0, nxt - now - window} end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.max(1, math.ceil((nxt - now) / 1000)))
return {want, math.floor((now + window - nxt) / interval), nxt - now}
"#;

/// Renew leases still held. KEYS: index. ARGV: held-until ms, new until ms, members…
const RENEW: &str = r#"
local n = 0
for i = 3, #ARGV do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i]); n = n + 1
  end
end
return n
"#;

/// One counted try at a verification code. KEYS: grant, tries. ARGV: digest, max tries, session
/// end ms. The count is taken before the comparison, in the same step, and nothing is compared
/// once it reaches the maximum. (What is compared is a digest of the code bound to the session,
/// never the code; Lua compares interned strings, so the time taken says nothing about them.)
const CHECK_CODE: &str = r#"
if redis.call('HGET', KEYS[1], 'st') ~= 'awaiting_code' then return {'none'} end
local ok, g = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'j') or '')
if not ok or type(g) ~= 'table' or type(g.pending_code) ~= 'table'
  or type(g.pending_code.hash) ~= 'string' then return {'none'} end
local max, seen = tonumber(ARGV[2]), redis.call('GET', KEYS[2]) or '0'
if seen == 'right' then return {'confirmed'} end
if tonumber(seen) >= max then return {'exhausted'} end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('PEXPIREAT', KEYS[2], ARGV[3]) end
if g.pending_code.hash == ARGV[1] then
  redis.call('SET', KEYS[2], 'right', 'KEEPTTL')
  return {'right'}
end
return {'wrong', tostring(max - n)}
"#;

/// Check the quotas of open sessions and take a place in both. KEYS: the bot's set, the user's
/// set. ARGV: now ms, session end ms, session id, per-bot quota, per-user quota. → {'ok'}, or
/// {'user'|'bot', end ms of the first open session there}.
const RESERVE_OPEN: &str = r#"
local function full(key, quota)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) >= tonumber(quota) then
    return redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or ARGV[1]
  end
end
local first = full(KEYS[2], ARGV[5])
if first then return {'user', first} end
first = full(KEYS[1], ARGV[4])
if first then return {'bot', first} end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('PEXPIREAT', key, redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
end
return {'ok'}
"#;

#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    /// `part` of each partition, computed once.
    parts: Vec<String>,
    hub: Arc<Hub>,
    cache: Arc<ConfigCache>,
    transition: Arc<Script>,
    claim: Arc<Script>,
    finish: Arc<Script>,
    replay: Arc<Script>,
    claim_deadlines: Arc<Script>,
    claim_expiries: Arc<Script>,
    update_grant: Arc<Script>,
    delete_grant: Arc<Script>,
    lock_owner: Arc<Script>,
    renew: Arc<Script>,
    record_delivery: Arc<Script>,
    rate: Arc<Script>,
    check_code: Arc<Script>,
    reserve_open: Arc<Script>,
    /// Whether this replica knows the bots and grants indexes to be complete (`backfilled`).
    indexed: Arc<[std::sync::atomic::AtomicBool; 2]>,
    /// Per partition, the deadline second this replica last added to `dls:` (a new session whose
    /// deadline falls in the same second does not add it again).
    deadline_seconds: Arc<[std::sync::atomic::AtomicI64; Partition::COUNT as usize]>,
    /// The grants this replica read last, parsed (`ParsedGrants`).
    parsed_grants: Arc<ParsedGrants>,
    /// Creates since the recent-session lists were last trimmed (they are trimmed every
    /// `RECENT_TRIM_EVERY` creates, so each holds at most that many more than its limit).
    untrimmed: Arc<std::sync::atomic::AtomicU32>,
}

impl RedisStore {
    /// One Redis server by URL; see `open`.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::open(&RedisTopology::Single(url.to_owned()), prefix)
    }

    /// Connects lazily (the daemon starts and reports not-ready while Redis is down) and starts
    /// the change subscription. Commands fail fast when Redis is unreachable (see `topology`):
    /// callers get a 503, not a hang.
    pub fn open(topology: &RedisTopology, prefix: &str) -> Result<Self, StoreError> {
        Self::open_with_ca(topology, None, prefix)
    }

    /// `open`, trusting the PEM roots `tls_ca` (instead of the public web roots) for `rediss://`.
    pub fn open_with_ca(
        topology: &RedisTopology,
        tls_ca: Option<&[u8]>,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        let (conn, subscriber) =
            topology::open(topology, tls_ca).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = Self {
            conn,
            parts: Partition::all()
                .map(|p| format!("{prefix}:{{p{:02}}}", p.index()))
                .collect(),
            prefix: prefix.into(),
            hub: Arc::default(),
            cache: Arc::default(),
            deadline_seconds: Arc::default(),
            parsed_grants: Arc::default(),
            untrimmed: Arc::default(),
            transition: Arc::new(Script::new(TRANSITION)),
            claim: Arc::new(Script::new(CLAIM)),
            finish: Arc::new(Script::new(FINISH)),
            replay: Arc::new(Script::new(REPLAY)),
            claim_deadlines: Arc::new(Script::new(CLAIM_DEADLINES)),
            claim_expiries: Arc::new(Script::new(CLAIM_EXPIRIES)),
            update_grant: Arc::new(Script::new(UPDATE_GRANT)),
            delete_grant: Arc::new(Script::new(DELETE_GRANT)),
            lock_owner: Arc::new(Script::new(LOCK_OWNER)),
            renew: Arc::new(Script::new(RENEW)),
            record_delivery: Arc::new(Script::new(RECORD_DELIVERY)),
            rate: Arc::new(Script::new(RATE)),
            check_code: Arc::new(Script::new(CHECK_CODE)),
            reserve_open: Arc::new(Script::new(RESERVE_OPEN)),
            indexed: Arc::default(),
        };
        tokio::spawn(subscribe(
            subscriber,
            store.channel(),
            store.hub.clone(),
            store.cache.clone(),
        ));
        Ok(store)
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }
    /// `P:{pNN}`, the hash-tagged start of every key in partition `p`.
    fn part(&self, p: Partition) -> &str {
        &self.parts[usize::from(p.index())]
    }
    /// A key in partition `p`: its start followed by `rest`, concatenated into one allocation
    /// (these are built on every request; `format!` costs several times more).
    fn key_in(&self, p: Partition, rest: &[&str]) -> String {
        let part = self.part(p);
        let mut key =
            String::with_capacity(part.len() + rest.iter().map(|r| r.len()).sum::<usize>());
        key.push_str(part);
        rest.iter().for_each(|r| key.push_str(r));
        key
    }
    fn session_key(&self, id: SessionId) -> String {
        self.key_in(id.partition(), &[":s:", id.encode().as_str()])
    }
    fn pending_key(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
    ) -> String {
        let p = Partition::of(bot, integration, subject);
        let (kind, slot_sep) = if slot.is_empty() {
            (":ps:", "")
        } else {
            (":psb:", ":")
        };
        // The subject last: it is free text, the slot before it a hex digest.
        self.key_in(
            p,
            &[
                kind,
                bot.as_str(),
                ":",
                integration.as_str(),
                ":",
                slot,
                slot_sep,
                subject.as_str(),
            ],
        )
    }
    /// The tries counted at `id`'s verification code (in its partition, with its grant).
    fn code_tries_key(&self, id: SessionId) -> String {
        self.key_in(id.partition(), &[":vc:", id.encode().as_str()])
    }
    /// The bot's open sessions, and (with a subject) the user's: both in the bot's slot.
    fn open_key(&self, bot: &BotId, subject: Option<&Subject>) -> String {
        match subject {
            None => self.bot_key(bot, "open"),
            Some(s) => format!("{}:{{b:{bot}}}:open:{}", self.prefix, s.as_str()),
        }
    }
    fn delivery_key(&self, id: SessionId) -> String {
        self.key_in(id.partition(), &[":s:", id.encode().as_str(), ":d"])
    }
    fn attempt_key(&self, id: SessionId, attempt: &str) -> String {
        self.key_in(id.partition(), &[":a:", id.encode().as_str(), ":", attempt])
    }
    fn grant_key(&self, bot: &BotId, integration: &IntegrationName, subject: &Subject) -> String {
        self.grant_key_in(
            Partition::of(bot, integration, subject),
            bot,
            integration,
            subject,
        )
    }
    /// The grant key when its partition is known (a session's is its grant's).
    fn grant_key_in(
        &self,
        p: Partition,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> String {
        self.key_in(
            p,
            &[
                ":g:",
                bot.as_str(),
                ":",
                integration.as_str(),
                ":",
                subject.as_str(),
            ],
        )
    }
    fn due_key(&self, p: Partition) -> String {
        self.key_in(p, &[":due"])
    }
    fn dead_key(&self, p: Partition) -> String {
        self.key_in(p, &[":dead"])
    }
    fn event_prefix(&self, p: Partition) -> String {
        self.key_in(p, &[":ev:"])
    }
    fn refresh_key(&self, p: Partition) -> String {
        self.key_in(p, &[":refresh"])
    }
    /// A grant's member in the refresh index (bot and integration names contain no ':').
    fn grant_member(bot: &BotId, integration: &IntegrationName, subject: &Subject) -> String {
        format!("{bot}:{integration}:{}", subject.as_str())
    }
    fn deadlines_key(&self, p: Partition) -> String {
        self.key_in(p, &[":deadlines"])
    }
    /// The list of the sessions of partition `p` that expire within the unix second `second`.
    fn deadline_second_key(&self, p: Partition, second: &str) -> String {
        self.key_in(p, &[":dl:", second])
    }
    /// The seconds of partition `p` that have a deadline list, scored by their end.
    fn deadline_seconds_key(&self, p: Partition) -> String {
        self.key_in(p, &[":dls"])
    }
    /// The part of (bot, integration)'s grant index in partition `p`.
    fn grant_index_key(&self, p: Partition, bot: &BotId, integration: &IntegrationName) -> String {
        self.key_in(p, &[":gx:", bot.as_str(), ":", integration.as_str()])
    }
    /// The part of `bot`'s recent-session index in partition `p`.
    fn recent_key(&self, p: Partition, bot: &BotId) -> String {
        // `rn`, not the earlier `rs` (a sorted set; ZADD + ZREMRANGEBYRANK cost a create four
        // times what LPUSH + LTRIM do): left-over `rs` keys are unread, at most 101 ids each.
        self.key_in(p, &[":rn:", bot.as_str()])
    }
    fn bots_key(&self) -> String {
        format!("{}:bots", self.prefix)
    }
    fn bot_key(&self, bot: &BotId, what: &str) -> String {
        format!("{}:{{b:{bot}}}:{what}", self.prefix)
    }
    fn api_key_key(&self, hash: &str) -> String {
        format!("{}:k:{hash}", self.prefix)
    }
    fn rate_key(&self, key: &str) -> String {
        format!("{}:rl:{key}", self.prefix)
    }
    fn console_key(&self, id_hash: &str) -> String {
        format!("{}:cs:{id_hash}", self.prefix)
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// A grant, when its partition is known.
    async fn get_grant_in(
        &self,
        p: Partition,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<Option<Arc<Grant>>, StoreError> {
        let key = self.grant_key_in(p, bot, integration, subject);
        let (raw, generation): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg(&["j", "gen"])
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(raw) = raw else { return Ok(None) };
        self.parsed_grants
            .parse(key, raw, generation.unwrap_or(0))
            .map(Some)
    }

    /// Make sure records written before `what`'s index existed are in it: once per deployment,
    /// on the first listing that needs it (recorded in `P:indexed`; this replica also remembers
    /// it). One `SCAN` of the keyspace (each Cluster master), matching only that record's keys;
    /// every write since the index exists maintains it, so nothing written meanwhile is missed,
    /// and a record deleted while the scan runs leaves an entry that listing skips and drops.
    /// Several replicas backfilling at once only add the same entries twice.
    async fn backfilled(&self, what: Backfill) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let known = &self.indexed[what as usize];
        if known.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut conn = self.conn();
        let marker = format!("{}:indexed", self.prefix);
        let done: Option<String> = conn
            .hget(&marker, what.field())
            .await
            .map_err(unavailable)?;
        if done.is_none() {
            let (pattern, kind) = match what {
                Backfill::Bots => (format!("{}:{{b:*}}:bot", self.prefix), "string"),
                Backfill::Grants => (format!("{}:{{p??}}:g:*", self.prefix), "hash"),
            };
            let mut found = 0usize;
            for node in conn.scan_nodes().await.map_err(unavailable)? {
                let mut cursor = 0;
                loop {
                    let (next, keys) = conn
                        .scan_step(&node, cursor, &pattern, kind)
                        .await
                        .map_err(unavailable)?;
                    let entries: Vec<(String, String)> = keys
                        .iter()
                        .filter_map(|k| self.index_entry(what, k))
                        .collect();
                    found += entries.len();
                    futures_util::future::try_join_all(entries.into_iter().map(
                        |(index, member)| {
                            let mut conn = self.conn();
                            async move { conn.zadd::<_, _, _, ()>(index, member, 0).await }
                        },
                    ))
                    .await
                    .map_err(unavailable)?;
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            tracing::info!(
                index = what.field(),
                found,
                "index backfilled from existing records"
            );
            conn.hset::<_, _, _, ()>(&marker, what.field(), "1")
                .await
                .map_err(unavailable)?;
        }
        known.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The index entry (index key, member) of a record key found by a backfill's scan.
    fn index_entry(&self, what: Backfill, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(&*self.prefix)?.strip_prefix(':')?;
        match what {
            Backfill::Bots => {
                let id = BotId::parse(rest.strip_prefix("{b:")?.strip_suffix("}:bot")?).ok()?;
                Some((self.bots_key(), id.as_str().to_owned()))
            }
            Backfill::Grants => {
                // `{pNN}:g:<bot>:<integration>:<subject>`; bot and integration have no ':'.
                let (part, grant) = rest.split_at_checked(5)?;
                let mut fields = grant.strip_prefix(":g:")?.splitn(3, ':');
                let bot = BotId::parse(fields.next()?).ok()?;
                let integration = IntegrationName::parse(fields.next()?).ok()?;
                let subject = Subject::parse(fields.next()?).ok()?;
                let p = Partition::of(&bot, &integration, &subject);
                (self.part(p).ends_with(part)).then(|| {
                    (
                        self.grant_index_key(p, &bot, &integration),
                        subject.as_str().to_owned(),
                    )
                })
            }
        }
    }

    /// One record in a bot-scoped hash (`P:{b:<bot>}:<what>`, field → JSON).
    async fn hash_put(
        &self,
        bot: &BotId,
        what: &str,
        field: &str,
        json: String,
    ) -> Result<(), StoreError> {
        self.conn()
            .hset::<_, _, _, ()>(self.bot_key(bot, what), field, json)
            .await
            .map_err(unavailable)
    }

    async fn hash_get<T: serde::de::DeserializeOwned>(
        &self,
        bot: &BotId,
        what: &str,
        field: &str,
    ) -> Result<Option<T>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .hget(self.bot_key(bot, what), field)
            .await
            .map_err(unavailable)?;
        raw.map(|r| from_json(what, &r)).transpose()
    }

    async fn hash_all<T: serde::de::DeserializeOwned>(
        &self,
        bot: &BotId,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let raw: Vec<String> = self
            .conn()
            .hvals(self.bot_key(bot, what))
            .await
            .map_err(unavailable)?;
        raw.iter().map(|r| from_json(what, r)).collect()
    }

    async fn hash_del(&self, bot: &BotId, what: &str, field: &str) -> Result<bool, StoreError> {
        let n: u32 = self
            .conn()
            .hdel(self.bot_key(bot, what), field)
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    /// Tell every replica (this one included) that `bot`'s records changed.
    async fn changed(&self, bot: &BotId) -> Result<(), StoreError> {
        self.cache.invalidate_bot(bot);
        self.conn()
            .publish::<_, _, ()>(self.channel(), format!("b {bot}"))
            .await
            .map_err(unavailable)
    }

    /// Create a session unless a working grant exists, in one round trip: a pipeline that reads
    /// the grant, adds the session's deadline and its entry in the bot's recent sessions (trimmed
    /// to the newest), and writes the session. Plain commands cost Redis
    /// about half of what the same steps cost as a Lua script, and without MULTI/EXEC there are
    /// three replies to parse instead of five; this is the hot path. No transaction is needed:
    /// the deadline is written first, so a crash between the two leaves a deadline without a
    /// session (which the expiry worker drops), never a session that would not expire (the
    /// index entry likewise: one without its session is skipped when listing). When the
    /// grant turns out to be usable the session is taken back at once: nobody has seen its id,
    /// and its deadline entry goes with it, so no event is ever sent for it.
    async fn create_unless_authorized(
        &self,
        new: &NewSession<'_>,
    ) -> Result<CreateOutcome, StoreError> {
        if let Some((state, job)) = new.delivery {
            return self.create_with_delivery(new, state, job).await;
        }
        let session = new.session;
        let spec = &session.spec;
        let p = spec.id.partition();
        let key = self.session_key(spec.id);
        let recent = self.recent_key(p, &spec.bot);
        let id = spec.id.encode();
        let grant_key = new
            .unless_authorized_by
            .map(|_| self.grant_key_in(p, &spec.bot, &spec.integration, &spec.subject));
        // Commands sized up front: the record is most of the bytes, and growing the buffers
        // argument by argument showed up in profiles.
        let record = session_record(session);
        let mut pipe = redis::Pipeline::with_capacity(5);
        if let Some(grant_key) = &grant_key {
            // Only the status: usually there is no grant, and one nil is the cheapest reply.
            let mut hget = redis::Cmd::with_capacity(3, grant_key.len() + 8);
            hget.arg("HGET").arg(grant_key).arg("st");
            pipe.add_command(hget);
        }
        // The deadline goes to its second's list (O(1)); a sorted set of every live session
        // was the costliest command of a create (`ZADD` at 4.3 µs with a million members).
        let second = spec.expires_at.unix_timestamp();
        let second_text = second.to_string();
        let deadline_list = self.deadline_second_key(p, &second_text);
        let mut push = redis::Cmd::with_capacity(3, deadline_list.len() + 40);
        push.arg("RPUSH").arg(&deadline_list).arg(id.as_str());
        let mut set = redis::Cmd::with_capacity(5, key.len() + record.len() + 32);
        set.arg("SET")
            .arg(&key)
            .arg(&record)
            .arg("PX")
            .arg(ms(record_ttl(session, session.updated_at, new.retention)));
        pipe.add_command(push);
        let slot = &self.deadline_seconds[usize::from(p.index())];
        let new_second = slot.swap(second, std::sync::atomic::Ordering::Relaxed) != second;
        if new_second {
            let seconds = self.deadline_seconds_key(p);
            let mut index = redis::Cmd::with_capacity(4, seconds.len() + 32);
            index
                .arg("ZADD")
                .arg(&seconds)
                .arg((second + 1) * 1000)
                .arg(&second_text);
            pipe.add_command(index);
        }
        for cmd in self.recent_index_commands(&recent, id.as_str()) {
            pipe.add_command(cmd);
        }
        pipe.add_command(set);
        let mut conn = self.conn();
        // The replies as they come (no conversion of the two we do not read); a server error in
        // any of them fails the create.
        let replies = conn
            .req_packed_commands(&pipe, 0, pipe.len())
            .await
            .and_then(|replies| {
                replies
                    .into_iter()
                    .map(redis::Value::extract_error)
                    .collect::<redis::RedisResult<Vec<_>>>()
            })
            .map_err(|e| {
                if new_second {
                    // Not known to be indexed: the next create in that second adds it.
                    slot.store(0, std::sync::atomic::Ordering::Relaxed);
                }
                unavailable(e)
            })?;
        let (Some(grant_key), Some(cfg), Some(redis::Value::BulkString(st))) =
            (grant_key, new.unless_authorized_by, replies.first())
        else {
            return Ok(CreateOutcome::Created);
        };
        if st != b"active" {
            return Ok(CreateOutcome::Created);
        }
        let (issued_by, grant): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&grant_key)
            .arg(&["cfg", "j"])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (Some(grant), true) = (grant, issued_by.as_deref() == Some(cfg)) else {
            return Ok(CreateOutcome::Created);
        };
        self.take_back(session).await?;
        Ok(CreateOutcome::AlreadyAuthorized(Box::new(from_json(
            "grant", &grant,
        )?)))
    }
}

/// The last record read of each grant this replica serves, with its parse: a token request reads
/// its grant every time (that is how a refresh on another replica is seen at once), and the same
/// bytes come back until the grant changes. Reading the JSON was the largest part of a token
/// request (callgrind). Only text identical to the stored one is answered from here, so nothing
/// can be stale; what is kept is what Redis holds (tokens sealed). Bounded: emptied when full.
#[derive(Default)]
struct ParsedGrants(std::sync::Mutex<foldhash::HashMap<String, (String, Arc<Grant>)>>);

impl ParsedGrants {
    const MAX: usize = 1_000;

    fn parse(&self, key: String, raw: String, generation: u64) -> Result<Arc<Grant>, StoreError> {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, grant)) = lock().get(&key)
            && *seen == raw
            && grant.generation == generation
        {
            return Ok(grant.clone());
        }
        let grant = Arc::new(Grant {
            generation,
            ..from_json("grant", &raw)?
        });
        let mut map = lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(key, (raw, grant.clone()));
        Ok(grant)
    }
}

/// Trim a recent-session list on one create in this many (readers read only the newest
/// `RECENT_SESSIONS_PER_PARTITION`, so a list a little longer shows the same).
const RECENT_TRIM_EVERY: u32 = 16;

impl RedisStore {
    /// A create within the quotas of open sessions (if it has any). A session whose link is
    /// posted to a chat channel takes its place first (the post cannot be taken back). Any
    /// other is written first and takes its place right after, so that the write comes as soon
    /// as without a quota (an agent's concurrent retries wait for exactly that write:
    /// `claim_pending`); over a quota it is taken back at once, like an `already_authorized`
    /// one. A place is given back if the session turned out not to be needed; a create that
    /// failed keeps its place (the session may have been written): it runs out with the session.
    async fn create_counted(&self, new: &NewSession<'_>) -> Result<CreateOutcome, StoreError> {
        let Some(quota) = new.quota else {
            return self.create_unless_authorized(new).await;
        };
        let session = new.session;
        if new.delivery.is_some() {
            if let Some(refused) = self.reserve_open(session, quota).await? {
                return Ok(refused);
            }
            let outcome = self.create_unless_authorized(new).await;
            if let Ok(CreateOutcome::AlreadyAuthorized(_)) = outcome {
                self.release_open(&session.spec).await;
            }
            return outcome;
        }
        let outcome = self.create_unless_authorized(new).await?;
        if !matches!(outcome, CreateOutcome::Created) {
            return Ok(outcome);
        }
        match self.reserve_open(session, quota).await {
            Ok(None) => Ok(outcome),
            Ok(Some(refused)) => {
                self.take_back(session).await?;
                Ok(refused)
            }
            Err(e) => {
                // Not counted, so not kept either (a retry creates it afresh).
                let _ = self.take_back(session).await;
                Err(e)
            }
        }
    }

    /// Check the quotas of open sessions and take a place for `session`; `Some`: refused.
    async fn reserve_open(
        &self,
        session: &Session,
        quota: super::OpenQuota,
    ) -> Result<Option<CreateOutcome>, StoreError> {
        let spec = &session.spec;
        let reply: Vec<String> = self
            .reserve_open
            .key(self.open_key(&spec.bot, None))
            .key(self.open_key(&spec.bot, Some(&spec.subject)))
            .arg(unix_ms(session.updated_at))
            .arg(unix_ms(spec.expires_at))
            .arg(spec.id.to_string())
            .arg(quota.per_bot)
            .arg(quota.per_user)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let scope = match reply.first().map(String::as_str) {
            Some("ok") => return Ok(None),
            Some("bot") => QuotaScope::Bot,
            Some("user") => QuotaScope::User,
            _ => return Err(corrupt("quota reply", format!("{reply:?}"))),
        };
        let until = reply
            .get(1)
            .and_then(|ms| ms.parse::<f64>().ok())
            .map_or(session.updated_at, |ms| from_unix_ms(ms as i64));
        Ok(Some(CreateOutcome::OverQuota { scope, until }))
    }

    /// Remove a session written a moment ago by `create_unless_authorized` (no event was sent
    /// for it), with its deadline and its entry in the recent-session index.
    async fn take_back(&self, session: &Session) -> Result<(), StoreError> {
        let spec = &session.spec;
        let p = spec.id.partition();
        let id = spec.id.encode();
        let second = spec.expires_at.unix_timestamp().to_string();
        redis::pipe()
            .del(self.session_key(spec.id))
            .ignore()
            .lrem(self.deadline_second_key(p, &second), 1, id.as_str())
            .ignore()
            .lrem(self.recent_key(p, &spec.bot), 1, id.as_str())
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// A session that settled (or was never needed) gives its places in the quotas back. Best
    /// effort: what it follows has happened already, and a place not given back is dropped
    /// when the session would have expired.
    async fn release_open(&self, spec: &SessionSpec) {
        let id = spec.id.to_string();
        let released = redis::pipe()
            .zrem(self.open_key(&spec.bot, None), &id)
            .ignore()
            .zrem(self.open_key(&spec.bot, Some(&spec.subject)), &id)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await;
        if let Err(e) = released {
            tracing::warn!(session_id = %spec.id, error = %e, "could not release the session's place in the open-session quotas; it is freed when the session would have expired");
        }
    }

    /// The session's entry in its bot's recent-session index (`key`, its partition's part), and
    /// on one create in `RECENT_TRIM_EVERY` the trim that keeps the list near
    /// `RECENT_SESSIONS_PER_PARTITION`. Both O(1).
    fn recent_index_commands(&self, key: &str, id: &str) -> Vec<redis::Cmd> {
        let mut add = redis::Cmd::with_capacity(3, key.len() + 40);
        add.arg("LPUSH").arg(key).arg(id);
        let n = self
            .untrimmed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % RECENT_TRIM_EVERY != 0 {
            return vec![add];
        }
        let mut trim = redis::Cmd::with_capacity(4, key.len() + 16);
        trim.arg("LTRIM")
            .arg(key)
            .arg(0)
            .arg(RECENT_SESSIONS_PER_PARTITION as i64 - 1);
        vec![add, trim]
    }

    /// A session whose link goes to a chat channel: the grant is checked first (a link must not
    /// be posted for a session taken back a moment later), then the session, its deadline, its
    /// delivery record and the outbox item that posts the link are written in one MULTI/EXEC.
    async fn create_with_delivery(
        &self,
        new: &NewSession<'_>,
        state: &ChannelDelivery,
        job: &Event,
    ) -> Result<CreateOutcome, StoreError> {
        let session = new.session;
        let spec = &session.spec;
        let p = spec.id.partition();
        let mut conn = self.conn();
        if let Some(cfg) = new.unless_authorized_by {
            let key = self.grant_key_in(p, &spec.bot, &spec.integration, &spec.subject);
            let (st, issued_by, grant): (Option<String>, Option<String>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&["st", "cfg", "j"])
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
            if let (Some("active"), Some(grant)) = (st.as_deref(), grant)
                && issued_by.as_deref() == Some(cfg)
            {
                return Ok(CreateOutcome::AlreadyAuthorized(Box::new(from_json(
                    "grant", &grant,
                )?)));
            }
        }
        let ttl = ms(record_ttl(session, session.updated_at, new.retention));
        let now = unix_ms(session.updated_at);
        let recent = self.recent_key(p, &spec.bot);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for cmd in self.recent_index_commands(&recent, &spec.id.to_string()) {
            pipe.add_command(cmd).ignore();
        }
        pipe.cmd("SET")
            .arg(self.delivery_key(spec.id))
            .arg(to_json(state))
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("HSET")
            .arg(format!("{}{}", self.event_prefix(p), job.id))
            .arg(&["e", &to_json(job), "b", spec.bot.as_str(), "n", "0"])
            .arg(&["st", "pending", "c", ""])
            .ignore()
            .cmd("ZADD")
            .arg(self.due_key(p))
            .arg(now)
            .arg(&job.id)
            .ignore()
            .cmd("ZADD")
            .arg(self.deadlines_key(p))
            .arg(unix_ms(spec.expires_at))
            .arg(spec.id.encode().as_str())
            .ignore()
            .cmd("SET")
            .arg(self.session_key(spec.id))
            .arg(session_record(session))
            .arg("PX")
            .arg(ttl)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.hub.outbox.notify_one();
        Ok(CreateOutcome::Created)
    }
}

/// Keeps one pub/sub subscription alive and forwards change notices to the hub. After a lost
/// subscription everybody is woken once: they re-read the store and miss nothing.
async fn subscribe(
    mut subscriber: Subscriber,
    channel: String,
    hub: Arc<Hub>,
    cache: Arc<ConfigCache>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match subscriber.subscribe(&channel).await {
            Ok(mut messages) => {
                backoff = Duration::from_millis(100);
                // Changes may have been missed while unsubscribed.
                cache.clear();
                hub.notify_all();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(id) = payload
                        .strip_prefix("s ")
                        .and_then(|s| SessionId::parse(s).ok())
                    {
                        hub.notify(id);
                    } else if let Some(bot) = payload
                        .strip_prefix("b ")
                        .and_then(|b| BotId::parse(b).ok())
                    {
                        cache.invalidate_bot(&bot);
                    }
                }
                tracing::warn!("redis change subscription lost; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "redis change subscription cannot connect"),
        }
        cache.clear();
        hub.notify_all();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The indexes a one-time backfill may have to complete (see `RedisStore::backfilled`).
#[derive(Clone, Copy)]
enum Backfill {
    Bots = 0,
    Grants = 1,
}

impl Backfill {
    fn field(self) -> &'static str {
        match self {
            Backfill::Bots => "bots",
            Backfill::Grants => "grants",
        }
    }
}

/// The lower bound of a lex range: everything after `after`, or everything.
fn lex_after(after: Option<&str>) -> String {
    after.map_or_else(|| "-".to_owned(), |a| format!("({a}"))
}

fn unavailable(e: redis::RedisError) -> StoreError {
    metrics::counter!("authlink_store_errors_total", "kind" => "unavailable").increment(1);
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    metrics::counter!("authlink_store_errors_total", "kind" => "corrupt").increment(1);
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// The mutable part of a session besides its status, as the record's fourth line: the error's
/// fields (records written before bindings existed hold just those) and the binding result.
#[derive(serde::Serialize)]
struct OutcomeRef<'a> {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    error: Option<&'a SessionError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binding: Option<&'a BindingResult>,
}

#[derive(serde::Deserialize)]
struct Outcome {
    #[serde(flatten)]
    error: Option<SessionError>,
    #[serde(default)]
    binding: Option<BindingResult>,
}

/// The fourth line: nothing when there is neither an error nor a binding result.
fn write_outcome(
    out: &mut Vec<u8>,
    error: Option<&SessionError>,
    binding: Option<&BindingResult>,
) -> serde_json::Result<()> {
    if error.is_none() && binding.is_none() {
        return Ok(());
    }
    serde_json::to_writer(out, &OutcomeRef { error, binding })
}

fn outcome_json(error: Option<&SessionError>, binding: Option<&BindingResult>) -> String {
    let mut out = Vec::new();
    write_outcome(&mut out, error, binding).expect("store records serialize");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// A session as one string (one `SET`, no hash to build): `status`, expiry and update times in
/// ms, the outcome JSON (or nothing) and the spec JSON, one per line. JSON never holds a raw
/// newline, and the Lua transition reads the first two fields and rewrites the first four.
fn session_record(s: &Session) -> Vec<u8> {
    // Written straight into one buffer (the spec is most of it): no intermediate strings.
    let mut out = Vec::with_capacity(512);
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(s.status.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(n.format(unix_ms(s.spec.expires_at)).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(n.format(unix_ms(s.updated_at)).as_bytes());
    out.push(b'\n');
    let error = write_outcome(&mut out, s.error.as_ref(), s.binding.as_ref());
    out.push(b'\n');
    let spec = serde_json::to_writer(&mut out, &s.spec);
    error.and(spec).expect("store records serialize");
    out
}

fn parse_session(record: &str) -> Result<Session, StoreError> {
    let bad = || corrupt("session record", "malformed");
    let mut fields = record.splitn(5, '\n');
    let mut next = || fields.next().ok_or_else(bad);
    let (st, _expires, up, outcome, spec) = (next()?, next()?, next()?, next()?, next()?);
    let outcome = match outcome {
        "" => Outcome {
            error: None,
            binding: None,
        },
        o => from_json::<Outcome>("session outcome", o)?,
    };
    Ok(Session {
        status: Status::parse(st).ok_or_else(|| corrupt("session status", st))?,
        updated_at: from_unix_ms(up.parse().map_err(|_| bad())?),
        error: outcome.error,
        binding: outcome.binding,
        spec: from_json::<SessionSpec>("session", spec)?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn put_bot(&self, bot: &Bot) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // The index first (another slot, so not one step): an entry without its bot is skipped
        // when listing, a bot without its entry would be missing.
        conn.zadd::<_, _, _, ()>(self.bots_key(), bot.id.as_str(), 0)
            .await
            .map_err(unavailable)?;
        conn.set::<_, _, ()>(self.bot_key(&bot.id, "bot"), to_json(bot))
            .await
            .map_err(unavailable)?;
        self.changed(&bot.id).await
    }

    async fn list_bots(&self, after: Option<&BotId>, limit: usize) -> Result<Vec<Bot>, StoreError> {
        self.backfilled(Backfill::Bots).await?;
        let mut conn = self.conn();
        let index = self.bots_key();
        let mut out = Vec::new();
        let mut after = after.map(|a| a.as_str().to_owned());
        while out.len() < limit {
            let want = limit - out.len();
            let ids: Vec<String> = conn
                .zrangebylex_limit(&index, lex_after(after.as_deref()), "+", 0, want as isize)
                .await
                .map_err(unavailable)?;
            let records = futures_util::future::try_join_all(ids.iter().map(|id| {
                let mut conn = self.conn();
                let key = format!("{}:{{b:{id}}}:bot", self.prefix);
                async move { conn.get::<_, Option<String>>(key).await }
            }))
            .await
            .map_err(unavailable)?;
            for (id, record) in ids.iter().zip(records) {
                match record {
                    Some(r) => out.push(from_json("bot", &r)?),
                    None => conn
                        .zrem::<_, _, ()>(&index, id)
                        .await
                        .map_err(unavailable)?,
                }
            }
            match ids.last() {
                Some(last) if ids.len() == want => after = Some(last.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn get_bot(&self, id: &BotId) -> Result<Option<Arc<Bot>>, StoreError> {
        if let Some(bot) = self.cache.bot(id) {
            return Ok(Some(bot));
        }
        let raw: Option<String> = self
            .conn()
            .get(self.bot_key(id, "bot"))
            .await
            .map_err(unavailable)?;
        let bot: Option<Arc<Bot>> = raw
            .map(|r| from_json("bot", &r).map(Arc::new))
            .transpose()?;
        if let Some(b) = &bot {
            self.cache.put_bot(b.clone());
        }
        Ok(bot)
    }

    async fn delete_bot(&self, id: &BotId) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let hashes: Vec<String> = conn
            .hvals(self.bot_key(id, "keys"))
            .await
            .map_err(unavailable)?;
        for h in hashes {
            conn.del::<_, ()>(self.api_key_key(&h))
                .await
                .map_err(unavailable)?;
        }
        let removed: u32 = conn
            .del(&[
                self.bot_key(id, "bot"),
                self.bot_key(id, "ints"),
                self.bot_key(id, "keys"),
                self.bot_key(id, "whsec"),
                self.bot_key(id, "profiles"),
                self.bot_key(id, "channels"),
                self.open_key(id, None),
            ])
            .await
            .map_err(unavailable)?;
        conn.zrem::<_, _, ()>(self.bots_key(), id.as_str())
            .await
            .map_err(unavailable)?;
        self.changed(id).await?;
        Ok(removed > 0)
    }

    async fn put_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let mut conn = self.conn();
        conn.hset::<_, _, _, ()>(self.bot_key(&key.bot, "keys"), &key.id, &key.hash)
            .await
            .map_err(unavailable)?;
        conn.set::<_, _, ()>(self.api_key_key(&key.hash), to_json(key))
            .await
            .map_err(unavailable)?;
        self.changed(&key.bot).await
    }

    async fn find_api_key(&self, hash: &str) -> Result<Option<Arc<ApiKey>>, StoreError> {
        if let Some(key) = self.cache.key(hash) {
            return Ok(Some(key));
        }
        let raw: Option<String> = self
            .conn()
            .get(self.api_key_key(hash))
            .await
            .map_err(unavailable)?;
        let key: Option<Arc<ApiKey>> = raw
            .map(|r| from_json("api key", &r).map(Arc::new))
            .transpose()?;
        if let Some(k) = &key {
            self.cache.put_key(k.clone());
        }
        Ok(key)
    }

    async fn list_api_keys(&self, bot: &BotId) -> Result<Vec<ApiKey>, StoreError> {
        let mut conn = self.conn();
        let hashes: Vec<String> = conn
            .hvals(self.bot_key(bot, "keys"))
            .await
            .map_err(unavailable)?;
        let mut keys = Vec::with_capacity(hashes.len());
        for h in hashes {
            if let Some(k) = self.find_api_key(&h).await? {
                keys.push(Arc::unwrap_or_clone(k));
            }
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn delete_api_key(&self, bot: &BotId, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let index = self.bot_key(bot, "keys");
        let hash: Option<String> = conn.hget(&index, id).await.map_err(unavailable)?;
        let Some(hash) = hash else { return Ok(false) };
        conn.del::<_, ()>(self.api_key_key(&hash))
            .await
            .map_err(unavailable)?;
        conn.hdel::<_, _, ()>(&index, id)
            .await
            .map_err(unavailable)?;
        self.changed(bot).await?;
        Ok(true)
    }

    async fn put_integration(&self, integration: &Integration) -> Result<(), StoreError> {
        self.conn()
            .hset::<_, _, _, ()>(
                self.bot_key(&integration.bot, "ints"),
                integration.name.as_str(),
                to_json(integration),
            )
            .await
            .map_err(unavailable)?;
        self.changed(&integration.bot).await
    }

    async fn get_integration(
        &self,
        bot: &BotId,
        name: &IntegrationName,
    ) -> Result<Option<Arc<Integration>>, StoreError> {
        if let Some(i) = self.cache.integration(bot, name) {
            return Ok(Some(i));
        }
        let raw: Option<String> = self
            .conn()
            .hget(self.bot_key(bot, "ints"), name.as_str())
            .await
            .map_err(unavailable)?;
        let integration: Option<Arc<Integration>> = raw
            .map(|r| from_json("integration", &r).map(Arc::new))
            .transpose()?;
        if let Some(i) = &integration {
            self.cache.put_integration(i.clone());
        }
        Ok(integration)
    }

    async fn delete_integration(
        &self,
        bot: &BotId,
        name: &IntegrationName,
    ) -> Result<bool, StoreError> {
        let n: u32 = self
            .conn()
            .hdel(self.bot_key(bot, "ints"), name.as_str())
            .await
            .map_err(unavailable)?;
        self.changed(bot).await?;
        Ok(n > 0)
    }

    async fn list_integrations(&self, bot: &BotId) -> Result<Vec<Integration>, StoreError> {
        let mut integrations: Vec<Integration> = self.hash_all(bot, "ints").await?;
        integrations.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(integrations)
    }

    async fn put_profile(&self, profile: &AuthProfile) -> Result<(), StoreError> {
        self.hash_put(&profile.bot, "profiles", &profile.id, to_json(profile))
            .await
    }

    async fn get_profile(&self, bot: &BotId, id: &str) -> Result<Option<AuthProfile>, StoreError> {
        self.hash_get(bot, "profiles", id).await
    }

    async fn list_profiles(&self, bot: &BotId) -> Result<Vec<AuthProfile>, StoreError> {
        let mut profiles: Vec<AuthProfile> = self.hash_all(bot, "profiles").await?;
        profiles.sort_by_key(|p| p.created_at);
        Ok(profiles)
    }

    async fn delete_profile(&self, bot: &BotId, id: &str) -> Result<bool, StoreError> {
        self.hash_del(bot, "profiles", id).await
    }

    async fn create_session(&self, new: NewSession<'_>) -> Result<CreateOutcome, StoreError> {
        let Some(idem) = new.idempotency else {
            return self.create_counted(&new).await;
        };
        // Reserve the key (SET NX GET: one round trip tells us who was first).
        let spec = &new.session.spec;
        let key = format!(
            "{}:i:{}:{}",
            self.prefix,
            spec.bot,
            crate::crypto::sha256_hex(idem.key.as_bytes())
        );
        let prior: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(format!("- {}", idem.fingerprint))
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ms(super::IDEMPOTENCY_LEASE))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if let Some(prior) = prior {
            let (id, fingerprint) = prior
                .split_once(' ')
                .ok_or_else(|| corrupt("idempotency record", &prior))?;
            let fingerprint = fingerprint.to_owned();
            return Ok(match id {
                "-" => CreateOutcome::InFlight { fingerprint },
                id => CreateOutcome::Replayed {
                    id: SessionId::parse(id).map_err(|e| corrupt("idempotency record", e))?,
                    fingerprint,
                },
            });
        }
        let outcome = self.create_counted(&new).await;
        let mut conn = self.conn();
        match &outcome {
            Ok(CreateOutcome::Created) => conn
                .set_options::<_, _, ()>(
                    &key,
                    format!("{} {}", spec.id, idem.fingerprint),
                    redis::SetOptions::default()
                        .with_expiration(redis::SetExpiry::PX(ms(idem.ttl))),
                )
                .await
                .map_err(unavailable)?,
            // Nothing was created: a retry must be evaluated afresh.
            _ => {
                let _ = conn.del::<_, ()>(&key).await;
            }
        }
        outcome
    }

    async fn get_session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let record: Option<String> = self
            .conn()
            .get(self.session_key(id))
            .await
            .map_err(unavailable)?;
        record.as_deref().map(parse_session).transpose()
    }

    async fn recent_sessions(
        &self,
        bot: &BotId,
        limit: usize,
        keep: &(dyn for<'s> Fn(&'s Session) -> bool + Send + Sync),
    ) -> Result<Vec<Session>, StoreError> {
        // Every part (each at most `RECENT_SESSIONS_PER_PARTITION` long), merged newest first.
        let parts = futures_util::future::try_join_all(Partition::all().map(|p| {
            let mut conn = self.conn();
            let key = self.recent_key(p, bot);
            async move {
                let newest = RECENT_SESSIONS_PER_PARTITION as isize - 1;
                let ids: Vec<String> = conn.lrange(&key, 0, newest).await?;
                Ok::<_, redis::RedisError>((key, ids))
            }
        }))
        .await
        .map_err(unavailable)?;
        // Newest first: after its partition's two hex digits, an id is a UUIDv7 in hex, which
        // sorts by creation time.
        let mut candidates: Vec<(&str, &str, &str)> = parts
            .iter()
            .flat_map(|(key, ids)| {
                ids.iter()
                    .map(move |id| (id.get(2..).unwrap_or(""), id.as_str(), key.as_str()))
            })
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        let mut gone = Vec::new();
        // Read in batches of a page: usually the first batch is the answer.
        'batches: for batch in candidates.chunks(limit.max(1)) {
            let sessions =
                futures_util::future::try_join_all(batch.iter().map(|(_, id, _)| async move {
                    match SessionId::parse(id) {
                        Ok(id) => self.get_session(id).await,
                        Err(_) => Ok(None),
                    }
                }))
                .await?;
            for ((_, id, key), session) in batch.iter().zip(sessions) {
                match session {
                    Some(s) if s.spec.bot == *bot => {
                        if keep(&s) {
                            out.push(s);
                            if out.len() == limit {
                                break 'batches;
                            }
                        }
                    }
                    _ => gone.push((*key, *id)),
                }
            }
        }
        // Entries whose session expired (or was taken back) go now.
        let mut conn = self.conn();
        for (key, id) in gone {
            conn.lrem::<_, _, ()>(key, 1, id)
                .await
                .map_err(unavailable)?;
        }
        Ok(out)
    }

    async fn apply_transition(&self, t: Transition<'_>) -> Result<Session, TransitionError> {
        let p = t.id.partition();
        // Only events with somewhere to go are queued.
        let queued = t.event.filter(|e| e.has_destination());
        let channel_event = t.channel_event.filter(|e| e.has_destination());
        let (refresh_at, member) = match t.write {
            SideWrite::Grant(g) => (
                g.refresh_at
                    .map(|t| unix_ms(t).to_string())
                    .unwrap_or_default(),
                Self::grant_member(&g.bot, &g.integration, &g.subject),
            ),
            _ => (String::new(), String::new()),
        };
        // Without a grant to write, a placeholder in the same slot (never written).
        let (grant_index, subject) = match t.write {
            SideWrite::Grant(g) => (
                self.grant_index_key(p, &g.bot, &g.integration),
                g.subject.as_str(),
            ),
            _ => (self.key_in(p, &[":gx:-"]), ""),
        };
        let sources: String = Status::sources_of(t.to)
            .iter()
            .fold(",".to_owned(), |acc, s| acc + s.as_str() + ",");
        let (side_kind, side_key, side_value, side_a, side_b) = match t.write {
            SideWrite::None => (
                "",
                self.session_key(t.id),
                String::new(),
                String::new(),
                String::new(),
            ),
            SideWrite::Attempt(a, until) => (
                "attempt",
                self.attempt_key(t.id, &a.id),
                to_json(a),
                ms((until - t.now).try_into().unwrap_or(Duration::ZERO)).to_string(),
                String::new(),
            ),
            SideWrite::Grant(g) => (
                "grant",
                self.grant_key(&g.bot, &g.integration, &g.subject),
                to_json(g),
                to_json(&g.status).trim_matches('"').to_owned(),
                g.provider_config.clone(),
            ),
        };
        let reply: Vec<String> = self
            .transition
            .key(self.session_key(t.id))
            .key(self.due_key(p))
            .key(self.deadlines_key(p))
            .key(side_key)
            .key(format!(
                "{}{}",
                self.event_prefix(p),
                t.event.map_or("-", |e| e.id.as_str())
            ))
            .key(self.refresh_key(p))
            .key(format!(
                "{}{}",
                self.event_prefix(p),
                channel_event.map_or("-", |e| e.id.as_str())
            ))
            .key(grant_index)
            .arg(sources)
            .arg(t.to.as_str())
            .arg(outcome_json(t.error, t.binding))
            .arg(unix_ms(t.now))
            .arg(queued.map(to_json).unwrap_or_default())
            .arg(side_kind)
            .arg(side_value)
            .arg(side_a)
            .arg(side_b)
            .arg(self.channel())
            .arg(t.id.to_string())
            .arg(t.event.map_or("", |e| e.id.as_str()))
            .arg(
                t.event
                    .or(t.channel_event)
                    .and_then(Event::bot)
                    .map(|b| b.to_string())
                    .unwrap_or_default(),
            )
            .arg(refresh_at)
            .arg(member)
            .arg(channel_event.map(to_json).unwrap_or_default())
            .arg(channel_event.map_or("", |e| e.id.as_str()))
            .arg(subject)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let session = self
                    .get_session(t.id)
                    .await?
                    .ok_or(TransitionError::NotFound)?;
                if t.to.is_final() {
                    self.release_open(&session.spec).await;
                }
                Ok(session)
            }
            Some("missing") => Err(TransitionError::NotFound),
            Some("expired") => Err(TransitionError::Expired),
            Some("conflict") => {
                let st = reply.get(1).and_then(|s| Status::parse(s));
                Err(st.map(TransitionError::Conflict).unwrap_or_else(|| {
                    StoreError::Corrupt(format!("transition reply {reply:?}")).into()
                }))
            }
            _ => Err(StoreError::Corrupt(format!("transition reply {reply:?}")).into()),
        }
    }

    async fn take_attempt(
        &self,
        session: SessionId,
        attempt: &str,
    ) -> Result<Option<Attempt>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .get_del(self.attempt_key(session, attempt))
            .await
            .map_err(unavailable)?;
        raw.map(|r| from_json("attempt", &r)).transpose()
    }

    async fn check_code(
        &self,
        (bot, integration, subject): (&BotId, &IntegrationName, &Subject),
        session: SessionId,
        digest: &str,
        max: u32,
        until: OffsetDateTime,
    ) -> Result<CodeCheck, StoreError> {
        let reply: Vec<String> = self
            .check_code
            .key(self.grant_key_in(session.partition(), bot, integration, subject))
            .key(self.code_tries_key(session))
            .arg(digest)
            .arg(max)
            .arg(unix_ms(until))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("right"), _) => Ok(CodeCheck::Right),
            (Some("exhausted"), _) => Ok(CodeCheck::Exhausted),
            (Some("confirmed"), _) => Ok(CodeCheck::Confirmed),
            (Some("none"), _) => Ok(CodeCheck::NoCode),
            (Some("wrong"), Some(left)) => Ok(CodeCheck::Wrong {
                left: left.parse().map_err(|e| corrupt("code check reply", e))?,
            }),
            _ => Err(corrupt("code check reply", format!("{reply:?}"))),
        }
    }

    async fn get_grant(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<Option<Grant>, StoreError> {
        Ok(self
            .get_grant_shared(bot, integration, subject)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    async fn get_grant_shared(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<Option<Arc<Grant>>, StoreError> {
        self.get_grant_in(
            Partition::of(bot, integration, subject),
            bot,
            integration,
            subject,
        )
        .await
    }

    async fn list_grants(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        after: Option<&Subject>,
        limit: usize,
    ) -> Result<Vec<Grant>, StoreError> {
        self.backfilled(Backfill::Grants).await?;
        let mut out = Vec::new();
        let mut after = after.map(|a| a.as_str().to_owned());
        while out.len() < limit {
            // The next `want` of every part: the next `want` overall are among them.
            let want = limit - out.len();
            let min = lex_after(after.as_deref());
            let parts = futures_util::future::try_join_all(Partition::all().map(|p| {
                let mut conn = self.conn();
                let key = self.grant_index_key(p, bot, integration);
                let min = min.clone();
                async move {
                    let subjects: Vec<String> = conn
                        .zrangebylex_limit(&key, min, "+", 0, want as isize)
                        .await?;
                    Ok::<_, redis::RedisError>((p, key, subjects))
                }
            }))
            .await
            .map_err(unavailable)?;
            let mut candidates: Vec<(Partition, &str, &str)> = parts
                .iter()
                .flat_map(|(p, key, subjects)| {
                    subjects.iter().map(move |s| (*p, key.as_str(), s.as_str()))
                })
                .collect();
            candidates.sort_unstable_by(|a, b| a.2.cmp(b.2));
            let exhausted = candidates.len() <= want;
            candidates.truncate(want);
            let grants = futures_util::future::try_join_all(candidates.iter().map(
                |(p, _, subject)| async move {
                    match Subject::parse(subject) {
                        Ok(s) => Ok(self
                            .get_grant_in(*p, bot, integration, &s)
                            .await?
                            .map(Arc::unwrap_or_clone)),
                        Err(_) => Ok(None),
                    }
                },
            ))
            .await?;
            let mut conn = self.conn();
            for ((_, key, subject), grant) in candidates.iter().zip(grants) {
                match grant {
                    Some(g) => out.push(g),
                    // Deleted (or gone with its data): not listed, and dropped from the index.
                    None => conn
                        .zrem::<_, _, ()>(*key, *subject)
                        .await
                        .map_err(unavailable)?,
                }
            }
            match candidates.last() {
                Some((_, _, last)) if !exhausted => after = Some((*last).to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn update_grant(&self, grant: &Grant, event: Option<&Event>) -> Result<bool, StoreError> {
        let p = Partition::of(&grant.bot, &grant.integration, &grant.subject);
        let queued = event.filter(|e| e.has_destination());
        let n: i32 = self
            .update_grant
            .key(self.grant_key(&grant.bot, &grant.integration, &grant.subject))
            .key(self.due_key(p))
            .key(format!(
                "{}{}",
                self.event_prefix(p),
                queued.map_or("-", |e| e.id.as_str())
            ))
            .key(self.refresh_key(p))
            .key(self.grant_index_key(p, &grant.bot, &grant.integration))
            .arg(grant.generation)
            .arg(to_json(grant))
            .arg(to_json(&grant.status).trim_matches('"'))
            .arg(&grant.provider_config)
            .arg(queued.map(to_json).unwrap_or_default())
            .arg(queued.map_or("", |e| e.id.as_str()))
            .arg(grant.bot.as_str())
            .arg(unix_ms(crate::clock::now()))
            .arg(
                grant
                    .refresh_at
                    .map(|t| unix_ms(t).to_string())
                    .unwrap_or_default(),
            )
            .arg(Self::grant_member(
                &grant.bot,
                &grant.integration,
                &grant.subject,
            ))
            .arg(grant.subject.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn delete_grant(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let p = Partition::of(bot, integration, subject);
        let queued = event.filter(|e| e.has_destination());
        let n: i32 = self
            .delete_grant
            .key(self.grant_key(bot, integration, subject))
            .key(self.due_key(p))
            .key(format!(
                "{}{}",
                self.event_prefix(p),
                queued.map_or("-", |e| e.id.as_str())
            ))
            .key(self.refresh_key(p))
            .key(self.grant_index_key(p, bot, integration))
            .arg(queued.map(to_json).unwrap_or_default())
            .arg(queued.map_or("", |e| e.id.as_str()))
            .arg(bot.as_str())
            .arg(unix_ms(crate::clock::now()))
            .arg(Self::grant_member(bot, integration, subject))
            .arg(subject.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn claim_refreshes(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<(BotId, IntegrationName, Subject)>, StoreError> {
        // The same lease-the-due-members script as the expiry index.
        let members: Vec<String> = self
            .claim_deadlines
            .key(self.refresh_key(partition))
            .arg(unix_ms(now))
            .arg(unix_ms(now) + ms(lease) as i64)
            .arg(max)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let mut parts = m.splitn(3, ':');
                let bot = BotId::parse(parts.next()?).ok()?;
                let integration = IntegrationName::parse(parts.next()?).ok()?;
                let subject = Subject::parse(parts.next()?).ok()?;
                Some((bot, integration, subject))
            })
            .collect())
    }

    async fn lock_grant(
        &self,
        grant: &Grant,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = format!(
            "{}:lock",
            self.grant_key(&grant.bot, &grant.integration, &grant.subject)
        );
        let set: Option<String> = self
            .conn()
            .set_options(
                key,
                owner,
                redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::PX(ms(ttl))),
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn renew_grant_lock(
        &self,
        grant: &Grant,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = format!(
            "{}:lock",
            self.grant_key(&grant.bot, &grant.integration, &grant.subject)
        );
        let n: i32 = self
            .lock_owner
            .key(key)
            .arg(owner)
            .arg(ms(ttl).to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn unlock_grant(&self, grant: &Grant, owner: &str) -> Result<(), StoreError> {
        let key = format!(
            "{}:lock",
            self.grant_key(&grant.bot, &grant.integration, &grant.subject)
        );
        self.lock_owner
            .key(key)
            .arg(owner)
            .arg("")
            .invoke_async::<i32>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let claim = crate::crypto::random_token::<12>();
        let flat: Vec<String> = self
            .claim
            .key(self.due_key(partition))
            .arg(unix_ms(now))
            .arg(unix_ms(now) + ms(lease) as i64)
            .arg(max)
            .arg(self.event_prefix(partition))
            .arg(&claim)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        flat.chunks(3)
            .map(|c| {
                Ok(Delivery {
                    event: from_json("event", &c[0])?,
                    failures: c[1].parse().unwrap_or(0),
                    last_error: Some(c[2].clone()).filter(|e| !e.is_empty()),
                    dead: false,
                    claim: claim.clone(),
                })
            })
            .collect()
    }

    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        outcome: DeliveryOutcome<'_>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let p = Event::partition_of(&delivery.event.id)
            .ok_or_else(|| corrupt("event id", &delivery.event.id))?;
        let (kind, at, error) = match outcome {
            DeliveryOutcome::Delivered => ("ok", now, ""),
            DeliveryOutcome::Retry { at, error } => ("retry", at, error),
            DeliveryOutcome::Release { at } => ("release", at, ""),
            DeliveryOutcome::Dead { error } => ("dead", now, error),
        };
        self.finish
            .key(self.due_key(p))
            .key(self.dead_key(p))
            .key(format!("{}{}", self.event_prefix(p), delivery.event.id))
            .arg(&delivery.event.id)
            .arg(&delivery.claim)
            .arg(kind)
            .arg(unix_ms(at))
            .arg(error)
            .arg(super::DEAD_LETTER_TTL.as_secs())
            .invoke_async::<String>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        bot: &BotId,
        dead: bool,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn();
        let mut out = Vec::new();
        for p in Partition::all() {
            let index = if dead {
                self.dead_key(p)
            } else {
                self.due_key(p)
            };
            let ids: Vec<String> = conn.zrange(&index, 0, 999).await.map_err(unavailable)?;
            for id in ids {
                let (e, b, n, err): (Option<String>, Option<String>, Option<u32>, Option<String>) =
                    redis::cmd("HMGET")
                        .arg(format!("{}{id}", self.event_prefix(p)))
                        .arg(&["e", "b", "n", "err"])
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                if let (Some(e), Some(b)) = (e, b)
                    && b == bot.as_str()
                {
                    out.push(Delivery {
                        event: from_json("event", &e)?,
                        failures: n.unwrap_or(0),
                        last_error: err.filter(|e| !e.is_empty()),
                        dead,
                        claim: String::new(),
                    });
                }
            }
        }
        out.sort_by_key(|d| d.event.timestamp);
        out.truncate(limit);
        Ok(out)
    }

    async fn replay_delivery(
        &self,
        bot: &BotId,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Some(p) = Event::partition_of(event_id) else {
            return Ok(false);
        };
        let n: i32 = self
            .replay
            .key(self.due_key(p))
            .key(self.dead_key(p))
            .key(format!("{}{event_id}", self.event_prefix(p)))
            .arg(event_id)
            .arg(bot.as_str())
            .arg(unix_ms(now))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        // One command per partition, not one pipeline: in a Cluster the queues are in
        // different slots (the commands still share one round trip on a single server).
        let counts = futures_util::future::try_join_all(Partition::all().map(|p| {
            let mut conn = self.conn();
            let key = self.due_key(p);
            async move { conn.zcard::<_, u64>(key).await }
        }))
        .await
        .map_err(unavailable)?;
        Ok(counts.iter().sum())
    }

    async fn claim_expiries(
        &self,
        partition: Partition,
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<String> = self
            .claim_expiries
            .key(self.deadlines_key(partition))
            .key(self.deadline_seconds_key(partition))
            .arg(unix_ms(now))
            .arg(unix_ms(now) + ms(lease) as i64)
            .arg(max)
            .arg(self.deadline_second_key(partition, ""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ids
            .iter()
            .filter_map(|i| SessionId::parse(i).ok())
            .collect())
    }

    async fn forget_deadline(&self, id: SessionId) -> Result<(), StoreError> {
        self.conn()
            .zrem::<_, _, ()>(self.deadlines_key(id.partition()), id.to_string())
            .await
            .map_err(unavailable)
    }

    async fn renew_lease(&self, lease: &Lease, until: OffsetDateTime) -> Result<usize, StoreError> {
        let p = lease.partition;
        let (index, members): (String, Vec<String>) = match &lease.held {
            Held::Deliveries(ids) => (self.due_key(p), ids.clone()),
            Held::Refreshes(grants) => (
                self.refresh_key(p),
                grants
                    .iter()
                    .map(|(b, i, s)| Self::grant_member(b, i, s))
                    .collect(),
            ),
            Held::Expiries(ids) => (
                self.deadlines_key(p),
                ids.iter().map(ToString::to_string).collect(),
            ),
        };
        if members.is_empty() {
            return Ok(0);
        }
        self.renew
            .key(index)
            .arg(unix_ms(lease.until))
            .arg(unix_ms(until))
            .arg(members)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn forget_refresh(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
    ) -> Result<(), StoreError> {
        let p = Partition::of(bot, integration, subject);
        self.conn()
            .zrem::<_, _, ()>(
                self.refresh_key(p),
                Self::grant_member(bot, integration, subject),
            )
            .await
            .map_err(unavailable)
    }

    async fn get_delivery(&self, id: SessionId) -> Result<Option<ChannelDelivery>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .get(self.delivery_key(id))
            .await
            .map_err(unavailable)?;
        raw.map(|r| from_json("delivery", &r)).transpose()
    }

    async fn claim_pending(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
        id: SessionId,
        until: OffsetDateTime,
    ) -> Result<Option<SessionId>, StoreError> {
        let ttl = (until - crate::clock::now()).whole_milliseconds().max(1);
        // NX GET: one round trip says who was first.
        let prior: Option<String> = redis::cmd("SET")
            .arg(self.pending_key(bot, integration, subject, slot))
            .arg(id.to_string())
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl as u64)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        prior
            .map(|p| SessionId::parse(&p).map_err(|e| corrupt("pending session", e)))
            .transpose()
    }

    async fn release_pending(
        &self,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        slot: &str,
        id: SessionId,
    ) -> Result<(), StoreError> {
        self.lock_owner
            .key(self.pending_key(bot, integration, subject, slot))
            .arg(id.to_string())
            .arg("")
            .invoke_async::<i32>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put_delivery(
        &self,
        id: SessionId,
        state: &ChannelDelivery,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.delivery_key(id))
            .arg(to_json(state))
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn record_delivery(
        &self,
        item: &Delivery,
        session: SessionId,
        state: &ChannelDelivery,
        event: Option<&Event>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let p = session.partition();
        let event = event.filter(|e| e.has_destination());
        self.record_delivery
            .key(self.delivery_key(session))
            .key(self.due_key(p))
            .key(format!("{}{}", self.event_prefix(p), item.event.id))
            .key(format!(
                "{}{}",
                self.event_prefix(p),
                event.map_or("-", |e| e.id.as_str())
            ))
            .arg(to_json(state))
            .arg(&item.event.id)
            .arg(event.map(to_json).unwrap_or_default())
            .arg(event.map_or("", |e| e.id.as_str()))
            .arg(item.event.bot().map(|b| b.to_string()).unwrap_or_default())
            .arg(unix_ms(now))
            .invoke_async::<i32>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if event.is_some() {
            self.hub.outbox.notify_one();
        }
        Ok(())
    }

    async fn put_channel(&self, channel: &ChannelConfig) -> Result<(), StoreError> {
        self.hash_put(
            &channel.bot,
            "channels",
            channel.name.as_str(),
            to_json(channel),
        )
        .await
    }

    async fn get_channel(
        &self,
        bot: &BotId,
        name: &ChannelName,
    ) -> Result<Option<ChannelConfig>, StoreError> {
        self.hash_get(bot, "channels", name.as_str()).await
    }

    async fn list_channels(&self, bot: &BotId) -> Result<Vec<ChannelConfig>, StoreError> {
        let mut channels: Vec<ChannelConfig> = self.hash_all(bot, "channels").await?;
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(channels)
    }

    async fn delete_channel(&self, bot: &BotId, name: &ChannelName) -> Result<bool, StoreError> {
        self.hash_del(bot, "channels", name.as_str()).await
    }

    async fn put_webhook_secret(
        &self,
        bot: &BotId,
        secret: &WebhookSecret,
    ) -> Result<(), StoreError> {
        self.hash_put(bot, "whsec", &secret.id, to_json(secret))
            .await
    }

    async fn webhook_secrets(&self, bot: &BotId) -> Result<Vec<WebhookSecret>, StoreError> {
        let mut secrets: Vec<WebhookSecret> = self.hash_all(bot, "whsec").await?;
        secrets.sort_by_key(|s| s.created_at);
        Ok(secrets)
    }

    async fn delete_webhook_secret(&self, bot: &BotId, id: &str) -> Result<bool, StoreError> {
        self.hash_del(bot, "whsec", id).await
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.hub.outbox.clone()
    }

    fn listen(&self, id: SessionId) -> Listener {
        self.hub.listen(id)
    }

    fn waiting(&self) -> usize {
        self.hub.waiting()
    }

    async fn put_console_session(
        &self,
        id_hash: &str,
        session: &ConsoleSession,
    ) -> Result<(), StoreError> {
        let ttl = (session.expires_at - crate::clock::now())
            .whole_milliseconds()
            .max(1);
        redis::cmd("SET")
            .arg(self.console_key(id_hash))
            .arg(to_json(session))
            .arg("PX")
            .arg(ttl as u64)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn get_console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .get(self.console_key(id_hash))
            .await
            .map_err(unavailable)?;
        raw.map(|r| from_json("console session", &r)).transpose()
    }

    async fn delete_console_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.conn()
            .del::<_, ()>(self.console_key(id_hash))
            .await
            .map_err(unavailable)
    }

    async fn rate_limit(
        &self,
        key: &str,
        quota: Quota,
        now: OffsetDateTime,
        want: u32,
    ) -> Result<Verdict, StoreError> {
        let (granted, remaining, reset): (u32, u64, u64) = self
            .rate
            .key(self.rate_key(key))
            .arg((now.unix_timestamp_nanos() / 1_000).max(0) as u64)
            .arg(quota.interval_us())
            .arg(quota.window_us())
            .arg(want.max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(Verdict {
            allowed: granted > 0,
            granted,
            remaining: remaining.min(u64::from(u32::MAX)) as u32,
            reset: Duration::from_micros(reset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::{BindingMethod, BindingOutcome, FailureCode};

    const SPEC: &str = r#"{"id":"0000000000000000000000000000000000","bot":"acme","integration":"crm","subject":"u1","conversation_id":null,"scopes":[],"provider_config":"salesforce","created_at":"2026-12-01T00:00:00Z","expires_at":"2026-12-01T00:15:00Z"}"#;

    fn record(outcome: &str) -> String {
        format!("failed\n1\n2\n{outcome}\n{SPEC}")
    }

    #[test]
    fn records_from_before_bindings_keep_their_error() {
        let s = parse_session(&record(r#"{"code":"access_denied","description":"no"}"#)).unwrap();
        assert_eq!(s.error.unwrap().code, FailureCode::AccessDenied);
        assert!(s.binding.is_none());
    }

    #[test]
    fn the_outcome_line_round_trips_an_error_and_a_binding() {
        let mut s = parse_session(&record("")).unwrap();
        assert!(s.error.is_none() && s.binding.is_none());
        s.error = Some(SessionError {
            code: FailureCode::IdentityMismatch,
            description: "someone else".into(),
        });
        s.binding = Some(BindingResult {
            method: BindingMethod::Oidc,
            result: BindingOutcome::Mismatch,
            sub: "mallory".into(),
        });
        let back = parse_session(std::str::from_utf8(&session_record(&s)).unwrap()).unwrap();
        assert_eq!(back.error, s.error);
        assert_eq!(back.binding, s.binding);
        s.error = None;
        let back = parse_session(std::str::from_utf8(&session_record(&s)).unwrap()).unwrap();
        assert_eq!((back.error, back.binding), (None, s.binding));
    }
}
