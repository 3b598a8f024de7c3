//! The second edge: chat channels. A session is created with a `channel` → its link is
//! delivered there (`deliver`: an outbox item written with the session) → the message is
//! updated when the session settles (another outbox item, written with the status change).
//!
//! One module per channel type, each implementing [`Channel`]: it knows its wire format and its
//! error codes, and classifies every failure once into a [`ChannelError`] the outbox worker acts
//! on (retry after the channel's own signal, or fail at once). No channel knows Redis or another
//! channel; the message is built once (`message`), independent of the channel.

pub mod deliver;
pub mod matrix;
pub mod message;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod webhook;
pub mod whatsapp;

use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use crate::domain::channel::{ChannelConfig, ChannelKind, ChannelSettings, ChannelTarget};
use crate::outbound::{BodyError, HttpClient, Size};
pub use message::LinkMessage;

/// The longest wait a channel can ask for; longer signals are cut to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// How a channel call failed, decided once by the adapter.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// Worth trying again: rate limited (after `retry_after`, as the channel said), a 5xx, a
    /// timeout. `code` is the channel's own (`ratelimited`, `429`, `M_LIMIT_EXCEEDED`, …).
    Retry {
        code: String,
        retry_after: Option<Duration>,
    },
    /// Will not work as configured or addressed (`channel_not_found`, `invalid_auth`, Telegram
    /// 403, `M_FORBIDDEN`, WhatsApp 131047 without a template): the delivery fails at once.
    Permanent { code: String, description: String },
}

impl ChannelError {
    pub fn permanent(code: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            description: description.into(),
        }
    }
    /// `retry_after` is bounded by [`MAX_RETRY_AFTER`]: it comes from the channel's answer
    /// (Telegram's `retry_after`, Matrix's `retry_after_ms`), and the worker adds it to the clock.
    pub fn retry(code: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::Retry {
            code: code.into(),
            retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        }
    }
    /// A request that did not get an answer: it may have been sent, so it is retried (only
    /// Matrix can tell a retry from a new message).
    pub fn transport(e: &reqwest::Error) -> Self {
        Self::retry(if e.is_timeout() { "timeout" } else { "network" }, None)
    }
}

/// The body of a channel API's answer, read up to the cap. An unreadable body is empty, as if
/// the API had sent none (the status decides then). One past the cap fails the call for good:
/// the same request would get the same answer, and the message may already be posted, so a retry
/// could post it twice.
pub(crate) async fn read_answer(
    http: &HttpClient,
    response: reqwest::Response,
) -> Result<Vec<u8>, ChannelError> {
    match http.body(response).await {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge { limit }) => Err(ChannelError::permanent(
            "response_too_large",
            format!("the channel API's answer exceeded {}", Size(limit)),
        )),
        Err(_) => Ok(Vec::new()),
    }
}

/// A posted message, as its channel names it (for the later edit).
pub type MessageRef = String;

/// What an update knows about the posted message.
pub struct Posted<'a> {
    pub message_ref: &'a str,
    /// Slack ephemerals: the `response_url` of the person's click, if there was one.
    pub reply_url: Option<secrecy::SecretString>,
}

/// One configured channel, ready to post.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Post the link message to `to`. `key` is stable across retries of this one delivery
    /// (channels with an idempotency key use it, so a retry cannot post twice).
    async fn send(
        &self,
        to: &ChannelTarget,
        message: &LinkMessage,
        key: &str,
    ) -> Result<MessageRef, ChannelError>;

    /// Replace the posted message's content by `text` (no button, no link). `Ok(false)`: this
    /// channel cannot change a posted message (WhatsApp, Slack ephemerals), nothing was sent.
    async fn update(
        &self,
        to: &ChannelTarget,
        message: &Posted<'_>,
        text: &str,
        key: &str,
    ) -> Result<bool, ChannelError>;
}

/// `Retry-After` in seconds, if the response carries one.
pub fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// Whether a session may be delivered to `target` through `config`: the address fits the
/// channel type, and the link will be accepted there. Checked when the session is created, so a
/// bad address is a clear 422 instead of a late delivery failure.
pub fn check_target(
    config: &ChannelConfig,
    target: &ChannelTarget,
    link_base: &Url,
) -> Result<(), String> {
    let kind = config.settings.kind();
    let to = target.to.as_deref().unwrap_or("");
    if to.is_empty() || to.chars().count() > 256 || to.chars().any(char::is_control) {
        return Err(format!(
            "channel.to is required for a {} channel: 1-256 characters without control characters",
            kind.as_str()
        ));
    }
    if target.user.is_some() && kind != ChannelKind::Slack {
        return Err("channel.user (an ephemeral message) is only for Slack channels".into());
    }
    for (field, v) in [("thread", &target.thread), ("user", &target.user)] {
        if v.as_deref().is_some_and(|v| {
            v.is_empty() || v.chars().count() > 256 || v.chars().any(char::is_control)
        }) {
            return Err(format!(
                "channel.{field} must be 1-256 characters without control characters"
            ));
        }
    }
    match &config.settings {
        ChannelSettings::Slack { .. } => slack::check_target(to, target),
        ChannelSettings::Telegram { .. } => telegram::check_target(to, target, link_base),
        ChannelSettings::Whatsapp { .. } => whatsapp::check_target(to, target),
        ChannelSettings::Matrix { .. } => matrix::check_target(to, target),
        ChannelSettings::Teams { .. } | ChannelSettings::Webhook { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_and_bounded() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after_header(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::RETRY_AFTER, "9999999".parse().unwrap());
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(86_400)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after_header(&h), None);
    }

    /// Found while writing the `channel_responses` fuzz target (its bound on waits fails on this
    /// answer; the input is in its corpus): a wait from the body was unbounded, and the outbox
    /// worker's `now + wait` panicked.
    #[test]
    fn waits_from_answer_bodies_are_bounded() {
        let huge = u64::MAX;
        let retry = |r: Result<serde_json::Value, ChannelError>| match r {
            Err(ChannelError::Retry { retry_after, .. }) => retry_after,
            other => panic!("{other:?}"),
        };
        let telegram =
            format!(r#"{{"ok":false,"error_code":429,"parameters":{{"retry_after":{huge}}}}}"#);
        let wait = retry(telegram::answer(
            reqwest::StatusCode::TOO_MANY_REQUESTS,
            None,
            telegram.as_bytes(),
        ));
        assert_eq!(wait, Some(MAX_RETRY_AFTER));
        let matrix = format!(r#"{{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":{huge}}}"#);
        let wait = retry(matrix::answer(
            reqwest::StatusCode::TOO_MANY_REQUESTS,
            None,
            matrix.as_bytes(),
        ));
        assert_eq!(wait, Some(MAX_RETRY_AFTER));
        let _ = time::OffsetDateTime::now_utc() + wait.unwrap();
        // A short wait is kept as the channel said it.
        let ok = r#"{"ok":false,"error_code":429,"parameters":{"retry_after":35}}"#;
        let wait = retry(telegram::answer(
            reqwest::StatusCode::TOO_MANY_REQUESTS,
            None,
            ok.as_bytes(),
        ));
        assert_eq!(wait, Some(Duration::from_secs(35)));
    }
}
