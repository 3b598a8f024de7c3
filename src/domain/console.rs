//! A signed-in console browser: who it acts as, and the token its forms must carry. The browser
//! holds only a random session id (in a `__Host-` cookie); the store keeps this record under the
//! id's SHA-256, so neither the key nor the id is ever stored in a readable form.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::BotId;

/// Whom the console acts as: the operator, or one bot's admin key (by its stored hash, so that
/// revoking the key ends its console sessions at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConsoleActor {
    Operator {
        /// Which operator key signed in (a prefix of its hash): rotating the key ends the session.
        key: String,
    },
    Admin {
        bot: BotId,
        key_hash: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub actor: ConsoleActor,
    /// Every form carries it; a POST without it (a cross-site request) changes nothing.
    pub csrf: String,
    #[serde(with = "crate::clock::rfc3339")]
    pub expires_at: OffsetDateTime,
}
