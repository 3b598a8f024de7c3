//! Identifiers, validated once at the edge so the rest of the code never sees a malformed one.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {reason}")]
pub struct InvalidId {
    pub what: &'static str,
    pub reason: &'static str,
}

/// `check_slug` as a regular expression, for the OpenAPI document (kept equal by a test below).
pub const SLUG_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";
/// `SessionId::parse` as a regular expression: a partition below 16, then a UUID in hex.
pub const SESSION_ID_PATTERN: &str = "^0[0-9a-f]{33}$";
/// `UserId::parse`/`Subject::parse`: no control characters (length 1-256 is stated apart).
pub const USER_ID_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$";

/// A name chosen by the operator: `[a-z0-9][a-z0-9_-]{0,63}`. Used for bots and integrations;
/// it appears in URLs and store keys, so the alphabet is deliberately small.
fn check_slug(what: &'static str, s: &str) -> Result<(), InvalidId> {
    let ok_start = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_rest = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok_start || !ok_rest || s.len() > 64 {
        return Err(InvalidId {
            what,
            reason: "must be 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
        });
    }
    Ok(())
}

macro_rules! slug_id {
    ($name:ident, $what:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                check_slug($what, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_id!(BotId, "bot id");
slug_id!(IntegrationName, "integration name");

/// The dialog engine's id for the person: opaque, 1-256 printable characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct UserId(String);

impl UserId {
    /// Reserved for the bot-wide grant of a pre-authorized integration.
    pub const BOT: &'static str = "_bot";

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() || s.chars().count() > 256 || s.chars().any(char::is_control) {
            return Err(InvalidId {
                what: "user_id",
                reason: "must be 1-256 characters without control characters",
            });
        }
        if s == Self::BOT {
            return Err(InvalidId {
                what: "user_id",
                reason: "'_bot' is reserved for the bot-wide grant",
            });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whose grant a session produces: one end user's, or the bot-wide grant of a pre-authorized
/// integration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    User(UserId),
    Bot,
}

impl Subject {
    /// `user_id` in paths and payloads; `_bot` for the bot-wide grant.
    pub fn as_str(&self) -> &str {
        match self {
            Subject::User(u) => u.as_str(),
            Subject::Bot => UserId::BOT,
        }
    }
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s == UserId::BOT {
            Ok(Subject::Bot)
        } else {
            UserId::parse(s).map(Subject::User)
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The store is split into a fixed number of partitions. Everything one grant's flow touches in a
/// single atomic step (the session, its attempts, the grant, the outbox stream, the expiry index)
/// lives in one partition, whose number is the Redis Cluster hash tag — so multi-key scripts stay
/// in one slot. The partition is derived from (bot, integration, subject) and embedded in the
/// session id, so a session can be found from its id alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(u8);

impl Partition {
    /// Fixed forever: changing it would move existing grants. 16 spreads load over 16 slots.
    pub const COUNT: u8 = 16;

    pub fn of(bot: &BotId, integration: &IntegrationName, subject: &Subject) -> Self {
        let mut h = Sha256::new();
        for part in [bot.as_str(), integration.as_str(), subject.as_str()] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        Partition(h.finalize()[0] % Self::COUNT)
    }
    pub fn all() -> impl Iterator<Item = Partition> {
        (0..Self::COUNT).map(Partition)
    }
    pub fn index(self) -> u8 {
        self.0
    }
}

/// A UUIDv7 (RFC 9562), increasing within this process: the millisecond, a 12-bit counter for
/// ids within one millisecond (method 1 of §6.2; past 4,096 the timestamp runs ahead a little),
/// then 62 random bits from the thread's generator. `Uuid::now_v7` draws its random bits from
/// the kernel, a system call per id (1.3% of creating a session, by perf).
pub(crate) fn uuid_v7() -> Uuid {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    let stamp = loop {
        let next = (last + 1).max(now << 12);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let mut bits: [u8; 10] = rand::random();
    bits[0] = ((stamp >> 8) & 0x0f) as u8;
    bits[1] = (stamp & 0xff) as u8;
    uuid::Builder::from_unix_timestamp_millis(stamp >> 12, &bits).into_uuid()
}

/// An auth session id: the partition (2 hex digits) followed by a UUIDv7 (32 hex digits).
/// Ordered only so that sets of sessions can be kept sorted (e.g. by expiry, then id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    partition: Partition,
    uuid: Uuid,
}

impl SessionId {
    pub fn new(partition: Partition) -> Self {
        Self {
            partition,
            uuid: uuid_v7(),
        }
    }
    pub fn partition(&self) -> Partition {
        self.partition
    }
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        const BAD: InvalidId = InvalidId {
            what: "session id",
            reason: "is not a valid auth session id",
        };
        if s.len() != 34
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(BAD);
        }
        let p = u8::from_str_radix(&s[..2], 16).map_err(|_| BAD)?;
        if p >= Partition::COUNT {
            return Err(BAD);
        }
        let uuid = Uuid::parse_str(&s[2..]).map_err(|_| BAD)?;
        Ok(Self {
            partition: Partition(p),
            uuid,
        })
    }
    /// 17 bytes: partition then UUID. The link encodes these.
    pub fn to_bytes(self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[0] = self.partition.0;
        out[1..].copy_from_slice(self.uuid.as_bytes());
        out
    }
    /// The 34 characters of the id, written on the stack (ids go into every key and response).
    pub fn encode(self) -> EncodedId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 34];
        out[0] = HEX[usize::from(self.partition.0 >> 4)];
        out[1] = HEX[usize::from(self.partition.0 & 0xf)];
        self.uuid.simple().encode_lower(&mut out[2..]);
        EncodedId(out)
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (&p, rest) = b.split_first()?;
        if p >= Partition::COUNT {
            return None;
        }
        Some(Self {
            partition: Partition(p),
            uuid: Uuid::from_slice(rest).ok()?,
        })
    }
}

/// A session id's text form, without an allocation.
pub struct EncodedId([u8; 34]);

impl EncodedId {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.encode().as_str())
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_accept_names_and_reject_the_rest() {
        assert!(BotId::parse("sales-bot_2").is_ok());
        for bad in ["", "-x", "Upper", "a/b", "a b", &"x".repeat(65)] {
            assert!(BotId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_id_round_trips_through_text_and_bytes() {
        let bot = BotId::parse("b").unwrap();
        let int = IntegrationName::parse("sf").unwrap();
        let p = Partition::of(&bot, &int, &Subject::Bot);
        let id = SessionId::new(p);
        let text = id.to_string();
        assert_eq!(text.len(), 34);
        assert_eq!(SessionId::parse(&text).unwrap(), id);
        assert_eq!(SessionId::from_bytes(&id.to_bytes()).unwrap(), id);
        assert_eq!(id.partition(), p);
    }

    #[test]
    fn session_ids_are_version_7_and_increase_in_order_of_creation() {
        let ids: Vec<SessionId> = (0..10_000).map(|_| SessionId::new(Partition(1))).collect();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for pair in ids.windows(2) {
            assert!(pair[0].to_string() < pair[1].to_string(), "{pair:?}");
        }
        let first = ids[0].uuid;
        assert_eq!(first.get_version_num(), 7);
        assert_eq!(first.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = first.get_timestamp().unwrap().to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(ms <= before && before - ms < 60_000, "{ms} vs {before}");
        let distinct: std::collections::HashSet<_> = ids.iter().map(|i| i.uuid).collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn session_id_rejects_foreign_shapes() {
        let id = SessionId::new(Partition(3)).to_string();
        assert!(SessionId::parse(&id.to_uppercase()).is_err());
        assert!(SessionId::parse(&format!("ff{}", &id[2..])).is_err());
        assert!(SessionId::parse(&id[1..]).is_err());
    }

    #[test]
    fn user_id_reserves_bot() {
        assert!(UserId::parse("_bot").is_err());
        assert_eq!(Subject::parse("_bot").unwrap(), Subject::Bot);
        assert!(UserId::parse("a\nb").is_err());
    }
}
