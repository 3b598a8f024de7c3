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
use crate::domain::BotId;
use crate::domain::channel::{ChannelName, ChannelTarget};

const SCOPE: &str = "https://api.botframework.com/.default";

/// Whose token a cache entry is: the channel that asked for it (bot and channel name), the
/// token endpoint, and a digest of the credential (app id and secret) that obtained it. The app
/// id alone is public — another bot can configure it with any secret and its own service URL —
/// so a token is only ever reused by the same channel presenting the same secret again; a
/// changed secret misses the cache and goes to the login endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    bot: BotId,
    channel: ChannelName,
    token_url: String,
    /// Salted SHA-256 of the app id and secret ([`TokenCache::credential`]); never the secret.
    credential: [u8; 32],
}

/// Bot Framework tokens per owner and credential ([`TokenKey`]): one replica fetches one token
/// per channel and hour.
pub struct TokenCache {
    /// A random salt for this process, so the digests in the map say nothing about the secrets
    /// outside it.
    salt: [u8; 32],
    tokens: Mutex<HashMap<TokenKey, (SecretString, Instant)>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            salt: crate::crypto::random_bytes(),
            tokens: Mutex::default(),
        }
    }
}

impl TokenCache {
    /// The cache key of a channel's credential at a token endpoint.
    pub(crate) fn key(
        &self,
        bot: &BotId,
        channel: &ChannelName,
        token_url: &str,
        app_id: &str,
        secret: &SecretString,
    ) -> TokenKey {
        TokenKey {
            bot: bot.clone(),
            channel: channel.clone(),
            token_url: token_url.to_owned(),
            credential: self.credential(app_id, secret),
        }
    }

    /// Length-prefixed, so no (app id, secret) pair can be shifted into another.
    fn credential(&self, app_id: &str, secret: &SecretString) -> [u8; 32] {
        let secret = secret.expose_secret().as_bytes();
        let mut data = Vec::with_capacity(48 + app_id.len() + secret.len());
        data.extend_from_slice(&self.salt);
        data.extend_from_slice(&(app_id.len() as u64).to_be_bytes());
        data.extend_from_slice(app_id.as_bytes());
        data.extend_from_slice(secret);
        crate::crypto::sha256(&data)
    }

    fn get(&self, key: &TokenKey) -> Option<SecretString> {
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }
    pub(crate) fn put(&self, key: TokenKey, token: SecretString, lifetime: Duration) {
        // Renewed ahead of expiry: 5 minutes, or a tenth of a short lifetime.
        let early = Duration::from_secs(300).min(lifetime / 10);
        let now = Instant::now();
        let until = now + lifetime.saturating_sub(early);
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Expired entries go when another is written, so channels that were deleted or got a
        // new secret do not stay in memory for the life of the process.
        map.retain(|_, (_, until)| now < *until);
        map.insert(key, (token, until));
    }
    fn forget(&self, key: &TokenKey) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

pub struct Teams<'a> {
    pub http: crate::outbound::HttpClient,
    /// The channel this is: its tokens are cached for it alone.
    pub bot: BotId,
    pub channel: ChannelName,
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

    fn cache_key(&self) -> TokenKey {
        self.tokens.key(
            &self.bot,
            &self.channel,
            &self.token_url(),
            &self.app_id,
            &self.secret,
        )
    }

    async fn token(&self) -> Result<SecretString, ChannelError> {
        let key = self.cache_key();
        if let Some(token) = self.tokens.get(&key) {
            return Ok(token);
        }
        let response = self
            .http
            .post(&key.token_url)
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
                self.tokens.forget(&self.cache_key());
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
        let key = cache.key(
            &BotId::parse("acme").unwrap(),
            &ChannelName::parse("teams").unwrap(),
            "url",
            "app",
            &SecretString::from("secret"),
        );
        cache.put(key.clone(), token, lifetime);
        assert!(cache.get(&key).is_some());
        let (_, lifetime) = token_answer(
            reqwest::StatusCode::OK,
            br#"{"access_token":"t","expires_in":3599}"#,
        )
        .unwrap();
        assert_eq!(lifetime, Duration::from_secs(3599));
    }

    /// Issue 24: the app id is public, so a token is cached for the channel and the credential
    /// that obtained it, never for the app id alone.
    #[test]
    fn tokens_are_cached_per_channel_and_credential() {
        let cache = TokenCache::default();
        let (acme, evil) = (BotId::parse("acme").unwrap(), BotId::parse("evil").unwrap());
        let teams = ChannelName::parse("teams").unwrap();
        let other = ChannelName::parse("other").unwrap();
        let right = SecretString::from("right");
        let wrong = SecretString::from("wrong");
        let url = "https://login.example/botframework.com/oauth2/v2.0/token";
        let owner = cache.key(&acme, &teams, url, "app", &right);
        cache.put(
            owner.clone(),
            SecretString::from("token-a"),
            Duration::from_secs(3600),
        );
        assert!(
            cache
                .get(&cache.key(&acme, &teams, url, "app", &right))
                .is_some()
        );
        for key in [
            cache.key(&evil, &teams, url, "app", &wrong),
            cache.key(&evil, &teams, url, "app", &right),
            cache.key(&acme, &teams, url, "app", &wrong),
            cache.key(&acme, &other, url, "app", &right),
            cache.key(&acme, &teams, "https://elsewhere/t", "app", &right),
            // Length-prefixed: "ap" + "pright" is not "app" + "right".
            cache.key(&acme, &teams, url, "ap", &SecretString::from("pright")),
        ] {
            assert_ne!(key, owner);
            assert!(cache.get(&key).is_none());
        }
        // Another process's salt: the digest is not a stable function of the secret alone.
        let elsewhere = TokenCache::default();
        assert_ne!(
            elsewhere.key(&acme, &teams, url, "app", &right).credential,
            owner.credential
        );
    }
}
