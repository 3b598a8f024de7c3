//! Talking to OAuth providers: building the authorize URL, exchanging the code (PKCE), and
//! learning who signed in. `salesforce` adds what Salesforce needs on top of the generic client.
//! Every call goes through one HTTP client that never follows redirects (SSRF) and times out.

pub mod issuer;
pub mod salesforce;

use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, RevocationUrl, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use crate::config::{AppConfig, Config};
use crate::domain::bot::{
    AuthProfile, ClientAuth, Integration, ProfileRef, ProviderKind, SalesforceEnvironment,
};
use crate::domain::grant::{Identity, Tokens};
use crate::outbound::{BodyError, HttpClient, Size};

/// Fields some providers add to the token response; all optional so one type serves every
/// provider. Salesforce sends `instance_url`, `id`, `issued_at`, `signature` and no `expires_in`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}
impl ExtraTokenFields for ExtraFields {}

pub(crate) type TokenResponseT = StandardTokenResponse<ExtraFields, BasicTokenType>;
type OAuthClient = Client<
    BasicErrorResponse,
    TokenResponseT,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointSet,
>;

/// Why a provider call got no usable answer. 5xx and 429 are turned into errors here, before
/// the oauth2 crate would parse an error body, so that "the provider is down" is never mistaken
/// for "the provider rejected the grant".
#[derive(Debug, thiserror::Error)]
pub enum ProviderHttpError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("provider answered HTTP {0}")]
    Status(u16),
    #[error("the provider's answer exceeded {}", Size(*.0))]
    TooLarge(usize),
}

/// One HTTP exchange for the oauth2 crate, through our no-redirect client and its capped reader
/// (the oauth2 crate's own reqwest adapter, which reads answers whole, is not built: Cargo.toml).
async fn send(
    http: HttpClient,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, ProviderHttpError> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| ProviderHttpError::Transport(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderHttpError::Status(status.as_u16()));
    }
    let mut builder = axum::http::Response::builder().status(status.as_u16());
    for (k, v) in response.headers() {
        builder = builder.header(k, v);
    }
    let body = http.body(response).await.map_err(|e| match e {
        BodyError::TooLarge { limit } => ProviderHttpError::TooLarge(limit),
        e => ProviderHttpError::Transport(e.to_string()),
    })?;
    builder
        .body(body)
        .map_err(|e| ProviderHttpError::Transport(e.to_string()))
}

/// The HTTP client for provider calls: no redirects, bounded time, answers read up to
/// `max_body`. `resolver`: names resolved only through it (e.g. to public addresses only, against
/// SSRF through tenant-configured URLs — custom profiles, identity issuers).
pub fn http_client<R: reqwest::dns::Resolve + 'static>(
    timeout: Duration,
    resolver: Option<std::sync::Arc<R>>,
    max_body: usize,
) -> HttpClient {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("authlink/", env!("CARGO_PKG_VERSION")));
    if let Some(r) = resolver {
        builder = builder.dns_resolver(r);
    }
    let client = builder
        .build()
        .expect("static reqwest configuration is valid");
    HttpClient::new(client, max_body)
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no system app is configured for provider {0}")]
    NoSystemApp(&'static str),
    #[error("custom authorization profiles are not available yet")]
    CustomProfile,
    #[error("{0}")]
    Invalid(String),
}

/// One OAuth app, resolved for one integration: the endpoints, the client, and the callback.
#[derive(Clone, Debug)]
pub struct Provider {
    pub kind: ProviderKind,
    /// Names the app; the callback path is `/oauth/callback/{config_id}` (mix-up defence: each app
    /// has its own redirect URI, and a state issued for one app is refused on another's path).
    pub config_id: String,
    pub app: AppConfig,
    pub redirect_uri: Url,
}

impl Provider {
    /// The app an integration uses, without building its client (the session-create hot path
    /// only needs the name, and that the app exists). Its checks are `resolve`'s: an app it
    /// names also resolves.
    pub fn config_id(config: &Config, integration: &Integration) -> Result<String, ResolveError> {
        let kind = integration.provider;
        match &integration.profile {
            ProfileRef::System => {
                let app = match kind {
                    ProviderKind::Salesforce => &config.salesforce,
                    ProviderKind::Oauth2 => &config.oauth2,
                };
                app.as_ref()
                    .ok_or(ResolveError::NoSystemApp(kind.as_str()))?;
                if lacks_host(integration) {
                    return Err(host_required());
                }
                Ok(kind.as_str().to_owned())
            }
            // Profile ids are their own callback path segment.
            ProfileRef::Custom(id) => Ok(id.clone()),
        }
    }

    /// The app of an integration whose profile is a bot's custom one.
    pub fn custom(
        config: &Config,
        integration: &Integration,
        profile: &AuthProfile,
    ) -> Result<Self, ResolveError> {
        let secret = config
            .encryption
            .open(
                &AuthProfile::secret_aad(&profile.bot, &profile.id),
                &profile.client_secret_sealed,
            )
            .ok()
            .and_then(|s| String::from_utf8(s).ok())
            .ok_or_else(|| {
                ResolveError::Invalid("the profile's client secret cannot be opened".into())
            })?;
        let app = AppConfig {
            client_id: profile.client_id.clone(),
            client_secret: secret.into(),
            authorize_url: profile.authorization_url.clone(),
            token_url: profile.token_url.clone(),
            userinfo_url: profile.userinfo_url.clone(),
            revoke_url: profile.revoke_url.clone(),
            scopes: integration
                .scopes
                .clone()
                .unwrap_or_else(|| profile.scopes.clone()),
            client_auth_in_body: profile.client_auth == ClientAuth::Body,
            introspect_url: None,
            assumed_lifetime: (integration.provider == ProviderKind::Salesforce)
                .then_some(Duration::from_secs(7200)),
            extra_authorize_params: profile.extra_authorize_params.clone().into_iter().collect(),
            refresh_url: profile.refresh_token_url.clone(),
        };
        Ok(Self {
            kind: integration.provider,
            config_id: profile.id.clone(),
            redirect_uri: callback_url(&config.public_url, &profile.id),
            app,
        })
    }

    pub fn resolve(config: &Config, integration: &Integration) -> Result<Self, ResolveError> {
        let kind = integration.provider;
        let mut app = match &integration.profile {
            ProfileRef::System => match kind {
                ProviderKind::Salesforce => config.salesforce.clone(),
                ProviderKind::Oauth2 => config.oauth2.clone(),
            }
            .ok_or(ResolveError::NoSystemApp(kind.as_str()))?,
            ProfileRef::Custom(_) => return Err(ResolveError::CustomProfile),
        };
        if let Some(host) = salesforce_host(integration)? {
            salesforce::with_host(&mut app, &host);
        }
        if let Some(scopes) = &integration.scopes {
            app.scopes = scopes.clone();
        }
        let config_id = Self::config_id(config, integration)?;
        let redirect_uri = callback_url(&config.public_url, &config_id);
        Ok(Self {
            kind,
            config_id,
            app,
            redirect_uri,
        })
    }

    fn client(&self) -> OAuthClient {
        Client::new(ClientId::new(self.app.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.app.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::from_url(self.app.authorize_url.clone()))
            .set_token_uri(TokenUrl::from_url(self.app.token_url.clone()))
            .set_revocation_url_option(self.app.revoke_url.clone().map(RevocationUrl::from_url))
            .set_redirect_uri(RedirectUrl::from_url(self.redirect_uri.clone()))
            .set_auth_type(if self.app.client_auth_in_body {
                AuthType::RequestBody
            } else {
                AuthType::BasicAuth
            })
    }

    /// The host the person signs in at: the authorize URL's (`login.salesforce.com`, a My
    /// Domain, a custom profile's authorization server).
    pub fn sign_in_host(&self) -> Option<&str> {
        self.app.authorize_url.host_str()
    }

    /// The provider's authorize URL for one attempt, and the PKCE verifier to keep.
    pub fn authorize_url(
        &self,
        state: String,
        scopes: &[String],
        login_hint: Option<&str>,
    ) -> (Url, SecretString) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let scopes = if scopes.is_empty() {
            &self.app.scopes
        } else {
            scopes
        };
        let client = self.client();
        let mut req = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge);
        if let Some(hint) = login_hint {
            req = req.add_extra_param("login_hint", hint.to_owned());
        }
        for (k, v) in &self.app.extra_authorize_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let (url, _) = req.url();
        (url, verifier.secret().clone().into())
    }

    /// Exchange the authorization code, then check and enrich the response (Salesforce
    /// signature and hosts; identity from the provider).
    pub async fn exchange(
        &self,
        http: &HttpClient,
        code: String,
        verifier: SecretString,
        now: OffsetDateTime,
    ) -> Result<TokenSet, ExchangeError> {
        let started = std::time::Instant::now();
        let result = self.exchange_inner(http, code, verifier, now).await;
        metrics::histogram!(
            "authlink_exchange_seconds",
            "provider" => self.kind.as_str(),
            "outcome" => if result.is_ok() { "ok" } else { "failed" },
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    /// The code exchange with the identity checks that belong to it.
    async fn exchange_inner(
        &self,
        http: &HttpClient,
        code: String,
        verifier: SecretString,
        now: OffsetDateTime,
    ) -> Result<TokenSet, ExchangeError> {
        let response = self
            .client()
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()))
            .request_async(&|req| send(http.clone(), req))
            .await
            .map_err(classify)?;
        let mut set = TokenSet::from_response(&response, now);
        self.learn_expiry(http, &mut set, now).await;
        match self.kind {
            ProviderKind::Salesforce => {
                salesforce::check_response(&self.app, response.extra_fields())?;
                set.instance_url = response.extra_fields().instance_url.clone();
                set.identity = salesforce::fetch_identity(
                    http,
                    &self.app,
                    response.extra_fields(),
                    &set.tokens.access_token,
                )
                .await?;
            }
            ProviderKind::Oauth2 => {
                if let Some(url) = &self.app.userinfo_url {
                    set.identity = fetch_userinfo(http, url, &set.tokens.access_token).await?;
                }
            }
        }
        Ok(set)
    }
}

impl Provider {
    /// Refresh an access token. The response may carry a rotated refresh token; Salesforce's is
    /// checked like an exchange (signature, hosts).
    pub async fn refresh(
        &self,
        http: &HttpClient,
        refresh_token: &SecretString,
        now: OffsetDateTime,
    ) -> Result<TokenSet, ExchangeError> {
        let rt = oauth2::RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut client = self.client();
        if let Some(url) = &self.app.refresh_url {
            client = client.set_token_uri(TokenUrl::from_url(url.clone()));
        }
        let response = client
            .exchange_refresh_token(&rt)
            .request_async(&|req| send(http.clone(), req))
            .await
            .map_err(classify)?;
        let mut set = TokenSet::from_response(&response, now);
        if self.kind == ProviderKind::Salesforce {
            salesforce::check_response(&self.app, response.extra_fields())?;
            set.instance_url = response.extra_fields().instance_url.clone();
        }
        self.learn_expiry(http, &mut set, now).await;
        Ok(set)
    }
}

impl Provider {
    /// A live identity call with `access_token` (the "Test" button): `None` when the app has no
    /// identity endpoint.
    pub async fn check(
        &self,
        http: &HttpClient,
        access_token: &SecretString,
    ) -> Option<Result<Identity, ExchangeError>> {
        let url = self.app.userinfo_url.as_ref()?;
        Some(fetch_userinfo(http, url, access_token).await)
    }
}

/// The login host a Salesforce integration's settings choose (`None`: not Salesforce, or no
/// settings: the app's own endpoints).
fn salesforce_host(integration: &Integration) -> Result<Option<Url>, ResolveError> {
    let Some(sf) = integration
        .salesforce
        .as_ref()
        .filter(|_| integration.provider == ProviderKind::Salesforce)
    else {
        return Ok(None);
    };
    Ok(match sf.environment {
        SalesforceEnvironment::Production => salesforce::PRODUCTION.parse().ok(),
        SalesforceEnvironment::Sandbox => salesforce::SANDBOX.parse().ok(),
        SalesforceEnvironment::MyDomain => Some(sf.host.clone().ok_or_else(host_required)?),
    })
}

/// A Salesforce integration on My Domain without its host: it cannot be resolved.
fn lacks_host(integration: &Integration) -> bool {
    integration.provider == ProviderKind::Salesforce
        && integration.salesforce.as_ref().is_some_and(|sf| {
            sf.environment == SalesforceEnvironment::MyDomain && sf.host.is_none()
        })
}

fn host_required() -> ResolveError {
    ResolveError::Invalid("salesforce.host is required".into())
}

/// The redirect URI registered at the provider for an app.
pub fn callback_url(public_url: &Url, config_id: &str) -> Url {
    let mut url = public_url.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/oauth/callback/{config_id}"));
    url
}

/// What an exchange produced.
#[derive(Debug)]
pub struct TokenSet {
    pub tokens: Tokens,
    pub scopes: Vec<String>,
    pub access_expires_at: Option<OffsetDateTime>,
    pub instance_url: Option<String>,
    pub identity: Identity,
}

impl TokenSet {
    pub(crate) fn from_response(r: &TokenResponseT, now: OffsetDateTime) -> Self {
        Self {
            tokens: Tokens {
                access_token: r.access_token().secret().clone().into(),
                refresh_token: r.refresh_token().map(|t| t.secret().clone().into()),
                token_type: "Bearer".into(),
            },
            scopes: r
                .scopes()
                .map(|s| s.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            // `expires_in` is the provider's number: out of range means "not said".
            access_expires_at: r
                .expires_in()
                .and_then(|d| time::Duration::try_from(d).ok())
                .and_then(|d| now.checked_add(d)),
            instance_url: None,
            identity: Identity::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The provider answered with an OAuth error (`invalid_grant`, …).
    #[error("provider rejected the request: {error}")]
    Rejected {
        error: String,
        description: Option<String>,
    },
    /// Network error, timeout, 5xx, or an unparseable answer.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The answer failed a check (Salesforce signature, foreign host, identity call).
    #[error("provider response rejected: {0}")]
    Untrusted(String),
}

fn classify(
    e: RequestTokenError<
        ProviderHttpError,
        oauth2::StandardErrorResponse<impl oauth2::ErrorResponseType + std::fmt::Display>,
    >,
) -> ExchangeError {
    match e {
        RequestTokenError::ServerResponse(r) => ExchangeError::Rejected {
            error: r.error().to_string(),
            description: r.error_description().cloned(),
        },
        // Not "unavailable": the provider answered, with something no provider sends.
        RequestTokenError::Request(e @ ProviderHttpError::TooLarge(_)) => {
            ExchangeError::Untrusted(e.to_string())
        }
        RequestTokenError::Request(e) => ExchangeError::Unavailable(e.to_string()),
        RequestTokenError::Parse(e, _) => {
            ExchangeError::Unavailable(format!("unparseable token response: {e}"))
        }
        RequestTokenError::Other(e) => ExchangeError::Unavailable(e),
    }
}

/// OIDC-style userinfo: `sub`, `email`, `preferred_username`, `name`.
async fn fetch_userinfo(
    http: &HttpClient,
    url: &Url,
    access_token: &SecretString,
) -> Result<Identity, ExchangeError> {
    #[derive(Deserialize)]
    struct UserInfo {
        sub: Option<String>,
        /// Salesforce's userinfo carries the plain user and org ids beside `sub`.
        user_id: Option<String>,
        organization_id: Option<String>,
        email: Option<String>,
        preferred_username: Option<String>,
        name: Option<String>,
    }
    let info: UserInfo = get_json(http, url.clone(), access_token).await?;
    Ok(Identity {
        user_id: info.user_id.or(info.sub),
        org_id: info.organization_id,
        username: info.preferred_username,
        email: info.email,
        display_name: info.name,
    })
}

/// GET a JSON document with the access token.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &HttpClient,
    url: Url,
    access_token: &SecretString,
) -> Result<T, ExchangeError> {
    let resp = http
        .get(url)
        .bearer_auth(access_token.expose_secret())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| ExchangeError::Unavailable(e.without_url().to_string()))?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(ExchangeError::Unavailable(format!(
            "identity call answered {status}"
        )));
    }
    if !status.is_success() {
        return Err(ExchangeError::Untrusted(format!(
            "identity call answered {status}"
        )));
    }
    http.json(resp)
        .await
        .map_err(|e| ExchangeError::Untrusted(format!("identity response: {e}")))
}

impl Provider {
    /// Revoke a token at the provider (RFC 7009; Salesforce's revoke endpoint). `Ok(false)` when
    /// the app has no revocation endpoint. A token the provider no longer knows counts as revoked
    /// (RFC 7009 answers 200; Salesforce answers 400 `invalid_token`).
    ///
    /// Written against reqwest directly: the oauth2 crate insists on https revocation URLs, which
    /// would make revocation silently impossible against a provider on loopback.
    pub async fn revoke(
        &self,
        http: &HttpClient,
        token: &SecretString,
        is_refresh: bool,
    ) -> Result<bool, ExchangeError> {
        let Some(url) = &self.app.revoke_url else {
            return Ok(false);
        };
        let hint = if is_refresh {
            "refresh_token"
        } else {
            "access_token"
        };
        let mut form = vec![("token", token.expose_secret()), ("token_type_hint", hint)];
        let secret = self.app.client_secret.expose_secret();
        let mut req = http.post(url.clone());
        if self.app.client_auth_in_body {
            form.push(("client_id", &self.app.client_id));
            form.push(("client_secret", secret));
        } else {
            req = req.basic_auth(form_encode(&self.app.client_id), Some(form_encode(secret)));
        }
        let response = req
            .form(&form)
            .send()
            .await
            .map_err(|e| ExchangeError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ExchangeError::Unavailable(format!(
                "revocation answered {status}"
            )));
        }
        #[derive(Deserialize)]
        struct OAuthError {
            error: String,
            error_description: Option<String>,
        }
        match http.json::<OAuthError>(response).await {
            Ok(e) if e.error == "invalid_token" => Ok(true),
            Ok(e) => Err(ExchangeError::Rejected {
                error: e.error,
                description: e.error_description,
            }),
            Err(e @ BodyError::TooLarge { .. }) => {
                Err(ExchangeError::Untrusted(format!("revocation: {e}")))
            }
            Err(_) => Err(ExchangeError::Rejected {
                error: format!("http_{}", status.as_u16()),
                description: None,
            }),
        }
    }
}

impl Provider {
    /// A form POST to one of the provider's endpoints, authenticated as the client.
    fn authed_post(
        &self,
        http: &HttpClient,
        url: &Url,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let secret = self.app.client_secret.expose_secret();
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut req = http.post(url.clone());
        if self.app.client_auth_in_body {
            form.push(("client_id", &self.app.client_id));
            form.push(("client_secret", secret));
        } else {
            req = req.basic_auth(form_encode(&self.app.client_id), Some(form_encode(secret)));
        }
        req.form(&form)
    }

    /// When the response did not say how long the access token lives: ask the introspection
    /// endpoint (RFC 7662; Salesforce `/services/oauth2/introspect`) if configured, else assume
    /// the configured session lifetime.
    async fn learn_expiry(&self, http: &HttpClient, set: &mut TokenSet, now: OffsetDateTime) {
        if set.access_expires_at.is_some() {
            return;
        }
        if let Some(url) = &self.app.introspect_url {
            #[derive(Deserialize)]
            struct Introspection {
                active: bool,
                exp: Option<i64>,
            }
            let answer = self
                .authed_post(
                    http,
                    url,
                    &[
                        ("token", set.tokens.access_token.expose_secret()),
                        ("token_type_hint", "access_token"),
                    ],
                )
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => match http.json::<Introspection>(r).await {
                    Ok(Introspection {
                        active: true,
                        exp: Some(exp),
                    }) => {
                        set.access_expires_at = OffsetDateTime::from_unix_timestamp(exp).ok();
                    }
                    Ok(_) => tracing::warn!("introspection gave no expiry for a fresh token"),
                    Err(e) => tracing::warn!(error = %e, "unreadable introspection answer"),
                },
                Ok(r) => tracing::warn!(status = %r.status(), "introspection refused"),
                Err(e) => tracing::warn!(error = %e.without_url(), "introspection failed"),
            }
        }
        if set.access_expires_at.is_none()
            && let Some(lifetime) = self
                .app
                .assumed_lifetime
                .and_then(|d| time::Duration::try_from(d).ok())
        {
            set.access_expires_at = Some(now + lifetime);
        }
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-urlencoded before HTTP Basic.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppSettings, GeneratedKeys, Settings, SystemApps};
    use crate::domain::bot::SalesforceSettings;

    fn config() -> Config {
        let mut s = Settings {
            public_url: "https://authlink.example.com".into(),
            system_apps: SystemApps {
                salesforce: Some(AppSettings {
                    client_id: "cid".into(),
                    client_secret: Some("secret".into()),
                    ..AppSettings::default()
                }),
                oauth2: None,
            },
            ..Settings::default()
        };
        GeneratedKeys::new().apply(&mut s);
        s.validate().unwrap()
    }

    fn integration(sf: Option<SalesforceSettings>) -> Integration {
        Integration {
            salesforce: sf,
            ..Integration::example()
        }
    }

    #[test]
    fn salesforce_environments_choose_the_login_host() {
        let c = config();
        let host = |sf| {
            Provider::resolve(&c, &integration(sf))
                .unwrap()
                .app
                .token_url
                .host_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(host(None), "login.salesforce.com");
        let env = |environment, host: Option<&str>| {
            Some(SalesforceSettings {
                environment,
                host: host.map(|h| h.parse().unwrap()),
            })
        };
        assert_eq!(
            host(env(SalesforceEnvironment::Production, None)),
            "login.salesforce.com"
        );
        assert_eq!(
            host(env(SalesforceEnvironment::Sandbox, None)),
            "test.salesforce.com"
        );
        assert_eq!(
            host(env(
                SalesforceEnvironment::MyDomain,
                Some("https://acme.my.salesforce.com")
            )),
            "acme.my.salesforce.com"
        );
        let p =
            Provider::resolve(&c, &integration(env(SalesforceEnvironment::Sandbox, None))).unwrap();
        assert_eq!(
            p.app.authorize_url.as_str(),
            "https://test.salesforce.com/services/oauth2/authorize"
        );
        assert_eq!(
            p.redirect_uri.as_str(),
            "https://authlink.example.com/oauth/callback/salesforce"
        );
    }

    #[test]
    fn the_sign_in_host_is_the_authorize_urls() {
        let c = config();
        let my_domain = Some(SalesforceSettings {
            environment: SalesforceEnvironment::MyDomain,
            host: Some("https://acme.my.salesforce.com".parse().unwrap()),
        });
        for sf in [None, my_domain] {
            let p = Provider::resolve(&c, &integration(sf)).unwrap();
            let (url, _) = p.authorize_url("s".into(), &[], None);
            assert_eq!(p.sign_in_host(), url.host_str());
        }
    }

    /// Found by the `oauth_responses` fuzz target: an `expires_in` beyond the calendar made
    /// `now + expires_in` panic in the callback (and in refreshes). Out of range = not said.
    #[test]
    fn an_expiry_beyond_the_calendar_is_not_an_expiry() {
        let now = time::macros::datetime!(2026-12-01 10:00 UTC);
        let parse = |body: String| {
            let r: TokenResponseT = serde_json::from_str(&body).unwrap();
            TokenSet::from_response(&r, now).access_expires_at
        };
        let body = |secs: u64| {
            format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{secs}}}"#)
        };
        assert_eq!(parse(body(i64::MAX as u64)), None);
        assert_eq!(parse(body(u64::MAX)), None);
        assert_eq!(parse(body(3600)), Some(now + time::Duration::hours(1)));
    }
}
