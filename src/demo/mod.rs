//! Try authlink in a minute: in a zero-configuration run only (embedded store, keys generated for
//! this very process), a built-in, clearly labelled demo provider — an OAuth 2.0 authorization
//! server on the daemon's own port (`server`) — configured through authlink's own API as bot
//! `demo`'s integration `demo`. A daemon with a real store or real keys cannot make a
//! `DemoMode`, so it never serves `/demo/…`.

mod server;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tower::ServiceExt;
use url::Url;

use crate::clock::Clock;
use crate::config::{Config, GeneratedKeys, StoreConfig};
use crate::crypto::{ct_eq, random_token};

pub const BOT: &str = "demo";
pub const INTEGRATION: &str = "demo";

/// Permission to serve the demo provider: only a run on the embedded store with the keys made
/// for it at start-up (`GeneratedKeys`, never written anywhere) can have one.
pub struct DemoMode {
    operator_key: SecretString,
    client: server::Client,
    public_url: Url,
}

impl DemoMode {
    /// `keys`: the throw-away keys this process generated and runs with. `None` for any other
    /// configuration: a Redis store, or keys that came from a file or the environment.
    pub fn zero_config(config: &Config, keys: &GeneratedKeys) -> Option<Self> {
        let ephemeral = matches!(config.store, StoreConfig::Memory)
            && ct_eq(&config.operator_key_sha256, &keys.operator_key_sha256);
        ephemeral.then(|| Self {
            operator_key: keys.operator_key.clone(),
            client: server::Client {
                id: format!("demo_{}", random_token::<9>()),
                secret: random_token::<32>().into(),
                redirect_uri: None,
            },
            public_url: config.public_url.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.as_str().trim_end_matches('/'))
    }
}

/// The demo, configured: the authorization server and what the start-up banner shows.
pub struct Demo {
    client: server::Client,
    runtime_key: SecretString,
    public_url: String,
}

/// Create bot `demo`, an authorization profile pointing at the demo provider, integration `demo`
/// and a runtime key — as requests to the API (`api`), so they pass exactly the checks any
/// operator's requests pass.
pub async fn seed(api: Router, mode: DemoMode) -> anyhow::Result<Demo> {
    let key = mode.operator_key.expose_secret();
    let call = |method: Method, path: String, body: Value| {
        let api = api.clone();
        async move {
            let request = Request::builder()
                .method(method)
                .uri(&path)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))?;
            let response = api.oneshot(request).await?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
            anyhow::ensure!(
                status.is_success(),
                "demo setup: {path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
            Ok::<Value, anyhow::Error>(serde_json::from_slice(&bytes)?)
        }
    };
    call(
        Method::PUT,
        format!("/v1/bots/{BOT}"),
        json!({"name": "Demo assistant"}),
    )
    .await?;
    let profile = call(
        Method::POST,
        format!("/v1/bots/{BOT}/auth-profiles"),
        json!({
            "name": "Demo provider",
            "client_id": mode.client.id,
            "client_secret": mode.client.secret.expose_secret(),
            "authorization_url": mode.url(server::AUTHORIZE),
            "token_url": mode.url(server::TOKEN),
            "userinfo_url": mode.url(server::USERINFO),
            "scopes": ["profile"],
        }),
    )
    .await?;
    let (Some(id), Some(callback)) = (profile["id"].as_str(), profile["callback_url"].as_str())
    else {
        anyhow::bail!("demo setup: the profile has no id or callback URL");
    };
    call(
        Method::PUT,
        format!("/v1/bots/{BOT}/integrations/{INTEGRATION}"),
        json!({"provider": "oauth2", "profile": id, "display_name": "Demo provider"}),
    )
    .await?;
    let created = call(
        Method::POST,
        format!("/v1/bots/{BOT}/api-keys"),
        json!({"name": "demo"}),
    )
    .await?;
    let runtime_key = created["key"]
        .as_str()
        .context("demo setup: no key in the answer")?
        .to_owned();
    let public_url = mode.url("");
    let mut client = mode.client;
    client.redirect_uri = Some(callback.to_owned());
    Ok(Demo {
        client,
        runtime_key: runtime_key.into(),
        public_url,
    })
}

impl Demo {
    /// The demo provider's routes (`/demo/…`), with its own state.
    pub fn router(&self, clock: Clock) -> Router {
        server::router(self.client.clone(), clock)
    }

    /// What to print at start-up: where to click, and a request that makes a link.
    pub fn banner(&self) -> String {
        let base = &self.public_url;
        format!(
            "  Try it: bot \"{BOT}\" has integration \"{INTEGRATION}\" at the built-in DEMO provider\n  \
             (anyone can sign in there as the demo user; it exists only in runs without configuration).\n  \
             Console: {base}/console\n  \
             Runtime key of bot {BOT}: {key}\n  \
             Create a session link, open it, click through:\n    \
             curl -s -X POST {base}/v1/bots/{BOT}/auth-sessions -H 'authorization: Bearer {key}' \
             -H 'content-type: application/json' -d '{{\"integration\": \"{INTEGRATION}\", \"user_id\": \"me\"}}'\n  \
             Then the token:\n    \
             curl -s -X POST {base}/v1/bots/{BOT}/integrations/{INTEGRATION}/access-token -H 'authorization: Bearer {key}' \
             -H 'content-type: application/json' -d '{{\"user_id\": \"me\"}}'\n",
            key = self.runtime_key.expose_secret(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn config(keys: &GeneratedKeys, redis: bool) -> Config {
        let mut s = Settings::default();
        keys.apply(&mut s);
        if redis {
            s.store.redis_url = Some("redis://127.0.0.1:6379".into());
        }
        s.validate().unwrap()
    }

    #[test]
    fn only_the_embedded_store_with_this_runs_generated_keys_makes_a_demo() {
        let keys = GeneratedKeys::new();
        assert!(DemoMode::zero_config(&config(&keys, false), &keys).is_some());
        assert!(DemoMode::zero_config(&config(&keys, true), &keys).is_none());
        let configured = GeneratedKeys::new();
        assert!(DemoMode::zero_config(&config(&configured, false), &keys).is_none());
    }
}
