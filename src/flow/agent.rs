//! What an MCP server returns to its client when the user has not connected yet, on either
//! protocol revision — built here, so the server author only picks the payload:
//!
//! - 2025-11-25: `elicitation/create` params (`mode: "url"`, `message`, `url`, `elicitationId` =
//!   the session id) for `elicitInput`, or the same inside a `-32042` error;
//! - 2026-07-28: an `input_required` result whose `requestState` authlink sealed;
//! - clients without URL mode: a plain tool result carrying the link.
//!
//! And how a settled session ends an agent's retry.

use serde_json::{Value, json};

use crate::domain::session::{FailureCode, Session, Status};

/// The 2026-07-28 revision: stateless, `input_required` results and `requestState`.
pub const REVISION_2026: &str = "2026-07-28";
/// URL-mode elicitation required (2025-11-25 only).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;

/// The MCP client's side of the call, as the server passed it on (`authorize.mcp`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpClient {
    #[serde(default)]
    pub protocol_version: Option<String>,
    /// The client's declared capabilities (`initialize`, or `_meta` on 2026-07-28).
    #[serde(default)]
    pub capabilities: Option<Value>,
}

impl McpClient {
    /// Whether the client said it can open URLs (`elicitation.url`); `None`: not told.
    fn url_mode(&self) -> Option<bool> {
        self.capabilities
            .as_ref()
            .map(|c| c["elicitation"]["url"].is_object())
    }
    fn is_2026(&self) -> bool {
        self.protocol_version
            .as_deref()
            .is_some_and(|v| v >= REVISION_2026)
    }
}

/// Every payload for one pending session, and which one fits the client (`use`).
pub fn offer(
    client: &McpClient,
    session: &Session,
    message: &str,
    url: &str,
    request_state: &str,
) -> Value {
    let id = session.spec.id.to_string();
    let params_2025 = json!({"mode": "url", "message": message, "url": url, "elicitationId": id});
    let recommended = match (client.url_mode(), client.is_2026()) {
        (Some(false), _) => "tool_result",
        (_, true) => "input_required_2026",
        (_, false) => "elicitation_2025",
    };
    json!({
        "use": recommended,
        "elicitation_2025": params_2025,
        "error_2025": {
            "code": URL_ELICITATION_REQUIRED,
            "message": "This request requires more information.",
            "data": {"elicitations": [params_2025]},
        },
        "input_required_2026": {
            "resultType": "input_required",
            "inputRequests": {
                "authlink": {
                    "method": "elicitation/create",
                    "params": {"mode": "url", "message": message, "url": url},
                },
            },
            "requestState": request_state,
        },
        "tool_result": {
            "content": [{"type": "text", "text": format!("{message} Open this link to continue, then ask again: {url}")}],
            "isError": true,
        },
    })
}

/// How an agent's retry ends when its session settled without a usable grant: the `code` of
/// the problem, the short `reason`, and the sentence for the tool result.
pub fn terminal(session: &Session, status: Status) -> Option<(&'static str, &'static str, String)> {
    let provider = session.spec.provider_name();
    Some(match status {
        Status::Expired => (
            "authorization_expired",
            "expired",
            format!("The link to connect {provider} expired before it was used."),
        ),
        Status::Cancelled => (
            "authorization_cancelled",
            "cancelled",
            format!("Connecting {provider} was cancelled."),
        ),
        Status::Failed => match session.error.as_ref().map(|e| e.code) {
            Some(FailureCode::AccessDenied) => (
                "authorization_denied",
                "denied",
                format!("The user declined to connect {provider}."),
            ),
            Some(FailureCode::IdentityMismatch) => (
                "identity_mismatch",
                "identity_mismatch",
                format!("{provider} was signed in to as someone other than the user who asked."),
            ),
            Some(FailureCode::VerificationFailed) => (
                "verification_failed",
                "verification_failed",
                "The verification code was wrong too many times.".into(),
            ),
            _ => (
                "authorization_failed",
                "failed",
                format!("Connecting {provider} failed."),
            ),
        },
        _ => return None,
    })
}
