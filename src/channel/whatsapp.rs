//! WhatsApp Cloud API: an `interactive` `cta_url` message (a URL button; the URL is not shown
//! raw), or — outside the 24-hour customer-service window, which the API reports as error
//! 131047 — the bot's approved template with a URL button, if one is configured. Messages
//! cannot be edited or deleted: a settled session changes nothing here (the link page tells the
//! truth). Errors are `{"error":{"code",…}}`; rate limits are codes, not headers.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{Channel, ChannelError, LinkMessage, MessageRef, Posted, read_answer};
use crate::domain::channel::{ChannelTarget, WhatsappTemplate};

pub struct Whatsapp {
    pub http: crate::outbound::HttpClient,
    /// `https://graph.facebook.com/v23.0`.
    pub api_base_url: Url,
    pub phone_number_id: String,
    pub template: Option<WhatsappTemplate>,
    pub token: SecretString,
}

/// Recipients are phone numbers in international format (digits, optional leading `+`).
pub fn check_target(to: &str, target: &ChannelTarget) -> Result<(), String> {
    let digits = to.strip_prefix('+').unwrap_or(to);
    if !((7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!(
            "channel.to {to:?} is not a phone number in international format (like +16505551234)"
        ));
    }
    if let Some(t) = &target.thread
        && !t.starts_with("wamid.")
    {
        return Err(format!(
            "channel.thread {t:?} is not a WhatsApp message id (wamid.…)"
        ));
    }
    Ok(())
}

/// Outside the customer-service window: only a template may be sent.
const REENGAGEMENT: u64 = 131047;

fn classify(code: u64, message: &str) -> ChannelError {
    match code {
        // Throughput, per-pair, account and app rate limits. The pair limit allows about one
        // message every 6 s.
        130429 | 80007 | 4 => ChannelError::retry(code.to_string(), None),
        131056 => ChannelError::retry(code.to_string(), Some(Duration::from_secs(6))),
        // Temporary server-side problems.
        1 | 2 | 131000 | 131016 => ChannelError::retry(code.to_string(), None),
        _ => ChannelError::permanent(code.to_string(), message.to_owned()),
    }
}

impl Whatsapp {
    async fn post(&self, body: Value) -> Result<Value, ChannelError> {
        let url = format!(
            "{}/{}/messages",
            self.api_base_url.as_str().trim_end_matches('/'),
            self.phone_number_id
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(self.token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e))?;
        let status = response.status();
        let body = read_answer(&self.http, response).await?;
        answer(status, &body)
    }
}

/// A Cloud API answer: the body on 2xx, else its `error.code` classified.
pub(crate) fn answer(status: reqwest::StatusCode, body: &[u8]) -> Result<Value, ChannelError> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    match answer["error"]["code"].as_u64() {
        Some(code) => Err(classify(
            code,
            answer["error"]["message"].as_str().unwrap_or(""),
        )),
        None if status.is_server_error() => Err(ChannelError::retry(status.as_str(), None)),
        None => Err(ChannelError::permanent(status.as_str(), "unreadable error")),
    }
}

#[async_trait]
impl Channel for Whatsapp {
    async fn send(
        &self,
        to: &ChannelTarget,
        message: &LinkMessage,
        _key: &str,
    ) -> Result<MessageRef, ChannelError> {
        let number = to.to.as_deref().unwrap_or_default();
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": number,
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "header": {"type": "text", "text": message.provider.chars().take(60).collect::<String>()},
                "body": {"text": message.text.chars().take(1024).collect::<String>()},
                "action": {"name": "cta_url", "parameters": {
                    "display_text": message.label_within(20),
                    "url": message.url,
                }},
            },
        });
        if let Some(reply_to) = &to.thread {
            body["context"] = json!({"message_id": reply_to});
        }
        let answer = match self.post(body).await {
            Err(ChannelError::Permanent { code, description })
                if code == REENGAGEMENT.to_string() =>
            {
                let Some(template) = &self.template else {
                    return Err(ChannelError::permanent(
                        code,
                        format!(
                            "{description} (outside the 24-hour window, and the channel has no template configured)"
                        ),
                    ));
                };
                // The template's URL button is the daemon's link base; its dynamic suffix is
                // the link's token.
                let token = message.url.rsplit("/l/").next().unwrap_or_default();
                self.post(json!({
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": number,
                    "type": "template",
                    "template": {
                        "name": template.name,
                        "language": {"code": template.language},
                        "components": [{
                            "type": "button", "sub_type": "url", "index": "0",
                            "parameters": [{"type": "text", "text": token}],
                        }],
                    },
                }))
                .await?
            }
            other => other?,
        };
        answer["messages"][0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ChannelError::retry("unreadable_response", None))
    }

    async fn update(
        &self,
        _to: &ChannelTarget,
        _posted: &Posted<'_>,
        _text: &str,
        _key: &str,
    ) -> Result<bool, ChannelError> {
        Ok(false)
    }
}
