//! How one attempt at an outbox item went, as the edge that made it (webhook or chat channel)
//! classified it; the outbox worker turns it into done, retry or dead letter.

use std::time::Duration;

/// How one attempt at an outbox item went, as its edge classified it.
pub enum Attempt {
    Delivered,
    Failed {
        error: String,
        /// The other side asked for this much patience.
        retry_after: Option<Duration>,
        /// Will not work however often it is tried (410 Gone, a bot or chat that is gone, a
        /// revoked token): no retries.
        permanent: bool,
    },
}

impl Attempt {
    /// The webhook metrics' `status_class` label.
    pub fn status_class(&self) -> &'static str {
        match self {
            Attempt::Delivered => "2xx",
            Attempt::Failed { error, .. } if error.starts_with("endpoint answered 4") => "4xx",
            Attempt::Failed { error, .. } if error.starts_with("endpoint answered 5") => "5xx",
            Attempt::Failed { error, .. } if error.starts_with("endpoint answered") => "other",
            Attempt::Failed { .. } => "error",
        }
    }
}
