//! Microsoft Teams through the Bot Framework Connector: an Adaptive Card with `Action.OpenUrl`
//! posted to `{serviceUrl}v3/conversations/{id}/activities`, replaced on settle with `PUT
//! …/activities/{activityId}`. Calls carry a Bot Framework token from the app's client-credentials
//! grant (multi-tenant at `botframework.com`, or the app's tenant), cached until shortly before
//! it expires and fetched again when the Connector says 401.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{
    Channel, ChannelError, LinkMessage, MessageRef, Posted, read_answer, retry_after_header,
};
use crate::domain::channel::ChannelTarget;

const SCOPE: &str = "https://api.botframework.com/.default";

/// Tokens per (token endpoint, app): one replica fetches one token per app and hour.
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<(String, String), (SecretString, Instant)>>);

impl TokenCache {
    fn get(&self, key: &(String, String)) -> Option<SecretString> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }
    pub(crate) fn put(&self, key: (String, String), token: SecretString, lifetime: Duration) {
        // Renewed ahead of expiry: 5 minutes, or a tenth of a short lifetime.
        let early = Duration::from_secs(300).min(lifetime / 10);
        let until = Instant::now() + lifetime.saturating_sub(early);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key, (token, until));
    }
    fn forget(&self, key: &(String, String)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

pub struct Teams<'a> {
    pub http: crate::outbound::HttpClient,
    pub app_id: String,
    pub tenant_id: Option<String>,
    /// The Connector's base (`https://smba.trafficmanager.net/teams/`).
    pub service_url: Url,
    /// `https://login.microsoftonline.com`.
    pub login_base_url: Url,
    pub secret: SecretString,
    pub tokens: &'a TokenCache,
}

impl Teams<'_> {
    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.login_base_url.as_str().trim_end_matches('/'),
            self.tenant_id.as_deref().unwrap_or("botframework.com")
        )
    }

    async fn token(&self) -> Result<SecretString, ChannelError> {
        let key = (self.token_url(), self.app_id.clone());
        if let Some(token) = self.tokens.get(&key) {
            return Ok(token);
        }
        let response = self
            .http
            .post(&key.0)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.app_id.as_str()),
                ("client_secret", self.secret.expose_secret()),
                ("scope", SCOPE),
            ])
            .send()
            .await
            .map_err(|e| ChannelError::transport(&e))?;
        let status = response.status();
        let body = read_answer(&self.http, response).await?;
        let (token, lifetime) = token_answer(status, &body)?;
        self.tokens.put(key, token.clone(), lifetime);
        Ok(token)
    }

    /// One Connector call; a 401 (token expired or revoked early) fetches a fresh token and
    /// tries once more.
    async fn connector(
        &self,
        method: reqwest::Method,
        path: &str,
        activity: &Value,
    ) -> Result<Value, ChannelError> {
        let url = self
            .service_url
            .join(path)
            .map_err(|_| ChannelError::permanent("bad_service_url", "cannot join the path"))?;
        for first in [true, false] {
            let token = self.token().await?;
            let response = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .json(activity)
                .send()
                .await
                .map_err(|e| ChannelError::transport(&e))?;
            let status = response.status();
            let wait = retry_after_header(response.headers());
            if status == reqwest::StatusCode::UNAUTHORIZED && first {
                self.tokens.forget(&(self.token_url(), self.app_id.clone()));
                continue;
            }
            let body = read_answer(&self.http, response).await?;
            return connector_answer(status, wait, &body);
        }
        Err(ChannelError::permanent(
            "Unauthorized",
            "the Connector refused a fresh token",
        ))
    }
}

/// The token endpoint's answer: the token and how long it lives.
pub(crate) fn token_answer(
    status: reqwest::StatusCode,
    body: &[u8],
) -> Result<(SecretString, Duration), ChannelError> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(ChannelError::retry(
            format!("token endpoint {status}"),
            None,
        ));
    }
    let (Some(token), true) = (answer["access_token"].as_str(), status.is_success()) else {
        let code = answer["error"]
            .as_str()
            .unwrap_or("token_refused")
            .to_owned();
        return Err(ChannelError::permanent(
            code,
            "the Bot Framework token endpoint refused the app's credentials",
        ));
    };
    // Bot Framework tokens live an hour; a longer claim is cut to a day (the cache adds the
    // lifetime to the clock).
    let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(3600).min(86_400));
    Ok((SecretString::from(token.to_owned()), lifetime))
}

/// A Connector answer: the body on 2xx, else classified.
pub(crate) fn connector_answer(
    status: reqwest::StatusCode,
    wait: Option<Duration>,
    body: &[u8],
) -> Result<Value, ChannelError> {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    let code = answer["error"]["code"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| status.as_str().to_owned());
    // Throttled, concurrent operations on one conversation, and gateway trouble pass.
    Err(match status.as_u16() {
        429 | 412 | 502 | 503 | 504 => ChannelError::retry(code, wait),
        _ => ChannelError::permanent(
            code,
            answer["error"]["message"]
                .as_str()
                .or(answer["message"].as_str())
                .unwrap_or("")
                .to_owned(),
        ),
    })
}

fn conversation_path(conversation: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(conversation.as_bytes()).collect();
    format!("v3/conversations/{encoded}/activities")
}

#[async_trait]
impl Channel for Teams<'_> {
    async fn send(
        &self,
        to: &ChannelTarget,
        message: &LinkMessage,
        _key: &str,
    ) -> Result<MessageRef, ChannelError> {
        let conversation = to.to.as_deref().unwrap_or_default();
        let activity = json!({
            "type": "message",
            "text": message.text,
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "type": "AdaptiveCard",
                    "version": "1.5",
                    "body": [{"type": "TextBlock", "text": message.text, "wrap": true}],
                    "actions": [{"type": "Action.OpenUrl", "title": message.label, "url": message.url}],
                },
            }],
        });
        let mut path = conversation_path(conversation);
        if let Some(reply_to) = &to.thread {
            path.push('/');
            path.extend(url::form_urlencoded::byte_serialize(reply_to.as_bytes()));
        }
        let answer = self
            .connector(reqwest::Method::POST, &path, &activity)
            .await?;
        answer["id"]
            .as_str()
            .map(|id| format!("{conversation}|{id}"))
            .ok_or_else(|| ChannelError::retry("unreadable_response", None))
    }

    async fn update(
        &self,
        _to: &ChannelTarget,
        posted: &Posted<'_>,
        text: &str,
        _key: &str,
    ) -> Result<bool, ChannelError> {
        let message = posted.message_ref;
        let Some((conversation, id)) = message.rsplit_once('|') else {
            return Err(ChannelError::permanent(
                "bad_message_ref",
                "not conversation|activity",
            ));
        };
        let mut path = conversation_path(conversation);
        path.push('/');
        path.extend(url::form_urlencoded::byte_serialize(id.as_bytes()));
        let activity = json!({"type": "message", "text": text, "attachments": []});
        self.connector(reqwest::Method::PUT, &path, &activity)
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found while writing the `channel_responses` fuzz target (the input is in its corpus): a
    /// huge `expires_in` overflowed the token cache's `Instant::now() + lifetime`.
    #[test]
    fn a_token_lifetime_is_bounded_before_it_is_cached() {
        let body = format!(r#"{{"access_token":"t","expires_in":{}}}"#, u64::MAX);
        let (token, lifetime) = token_answer(reqwest::StatusCode::OK, body.as_bytes()).unwrap();
        assert_eq!(lifetime, Duration::from_secs(86_400));
        let cache = TokenCache::default();
        let key = ("url".to_owned(), "app".to_owned());
        cache.put(key.clone(), token, lifetime);
        assert!(cache.get(&key).is_some());
        let (_, lifetime) = token_answer(
            reqwest::StatusCode::OK,
            br#"{"access_token":"t","expires_in":3599}"#,
        )
        .unwrap();
        assert_eq!(lifetime, Duration::from_secs(3599));
    }
}
