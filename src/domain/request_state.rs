//! The `requestState` of an MCP 2026-07-28 `input_required` result: the client hands it back
//! byte for byte on its retry, and it decides what the retry may see, so it is attacker-controlled
//! input. authlink seals it (AEAD, the encryption keys; the bot and integration as associated
//! data) around who asked (subject), which session waits for the person, a digest of the
//! originating tool call, and an expiry — and refuses it on any mismatch.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{BotId, IntegrationName, SessionId, Subject};
use crate::crypto::EncryptionKeys;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestState {
    #[serde(rename = "s")]
    pub subject: Subject,
    #[serde(rename = "sid")]
    pub session: SessionId,
    /// The caller's digest of the tool call (name and arguments); `""` when none was given.
    #[serde(rename = "tc", default)]
    pub tool_call: String,
    #[serde(rename = "exp", with = "crate::clock::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestStateError {
    /// Not ours, altered, or sealed for another bot or integration (the associated data differs).
    #[error("request_state is not valid here")]
    Invalid,
    #[error("request_state has expired")]
    Expired,
    #[error("request_state belongs to another user")]
    OtherSubject,
    #[error("request_state belongs to another tool call")]
    OtherToolCall,
}

/// A prefix so a request state is recognisable in logs and support tickets (and versioned).
const PREFIX: &str = "rs1.";

fn aad(bot: &BotId, integration: &IntegrationName) -> String {
    format!("mcp-request-state|{bot}|{integration}")
}

impl RequestState {
    pub fn seal(
        &self,
        keys: &EncryptionKeys,
        bot: &BotId,
        integration: &IntegrationName,
    ) -> String {
        let json = serde_json::to_vec(self).expect("plain structs serialize");
        format!("{PREFIX}{}", keys.seal(&aad(bot, integration), &json))
    }

    /// Open `token` for a retry by `subject` of the tool call `tool_call` at `now`.
    pub fn open(
        keys: &EncryptionKeys,
        token: &str,
        bot: &BotId,
        integration: &IntegrationName,
        subject: &Subject,
        tool_call: &str,
        now: OffsetDateTime,
    ) -> Result<Self, RequestStateError> {
        let sealed = token
            .strip_prefix(PREFIX)
            .ok_or(RequestStateError::Invalid)?;
        let plain = keys
            .open(&aad(bot, integration), sealed)
            .map_err(|_| RequestStateError::Invalid)?;
        let state: Self = serde_json::from_slice(&plain).map_err(|_| RequestStateError::Invalid)?;
        if now >= state.expires_at {
            return Err(RequestStateError::Expired);
        }
        if &state.subject != subject {
            return Err(RequestStateError::OtherSubject);
        }
        if crate::crypto::sha256(state.tool_call.as_bytes())
            != crate::crypto::sha256(tool_call.as_bytes())
        {
            return Err(RequestStateError::OtherToolCall);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyEntry;

    fn keys() -> EncryptionKeys {
        let (id, b64) = KeyEntry::generate();
        EncryptionKeys::new(vec![KeyEntry::parse(&id, &b64).unwrap()]).unwrap()
    }

    #[test]
    fn a_sealed_state_opens_only_for_its_bot_integration_subject_call_and_time() {
        let keys = keys();
        let (bot, other_bot) = (BotId::parse("acme").unwrap(), BotId::parse("evil").unwrap());
        let crm = IntegrationName::parse("crm").unwrap();
        let mail = IntegrationName::parse("mail").unwrap();
        let alice = Subject::parse("alice").unwrap();
        let now = time::macros::datetime!(2026-12-01 10:00 UTC);
        let state = RequestState {
            subject: alice.clone(),
            session: SessionId::new(crate::domain::Partition::of(&bot, &crm, &alice)),
            tool_call: "sha256:abc".into(),
            expires_at: now + time::Duration::minutes(10),
        };
        let token = state.seal(&keys, &bot, &crm);
        assert!(token.starts_with("rs1."));
        let open = |t: &str, b: &BotId, i: &IntegrationName, s: &Subject, c: &str, at| {
            RequestState::open(&keys, t, b, i, s, c, at)
        };
        assert_eq!(
            open(&token, &bot, &crm, &alice, "sha256:abc", now),
            Ok(state)
        );
        assert_eq!(
            open(&token, &other_bot, &crm, &alice, "sha256:abc", now),
            Err(RequestStateError::Invalid)
        );
        assert_eq!(
            open(&token, &bot, &mail, &alice, "sha256:abc", now),
            Err(RequestStateError::Invalid)
        );
        let bob = Subject::parse("bob").unwrap();
        assert_eq!(
            open(&token, &bot, &crm, &bob, "sha256:abc", now),
            Err(RequestStateError::OtherSubject)
        );
        assert_eq!(
            open(&token, &bot, &crm, &alice, "sha256:other", now),
            Err(RequestStateError::OtherToolCall)
        );
        let later = now + time::Duration::minutes(10);
        assert_eq!(
            open(&token, &bot, &crm, &alice, "sha256:abc", later),
            Err(RequestStateError::Expired)
        );
        // Any change to the bytes breaks the seal.
        let mut tampered = token.clone().into_bytes();
        let i = tampered.len() - 3;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            open(&tampered, &bot, &crm, &alice, "sha256:abc", now),
            Err(RequestStateError::Invalid)
        );
        assert_eq!(
            open("rs1.garbage", &bot, &crm, &alice, "", now),
            Err(RequestStateError::Invalid)
        );
        assert_eq!(
            open("", &bot, &crm, &alice, "", now),
            Err(RequestStateError::Invalid)
        );
    }
}
