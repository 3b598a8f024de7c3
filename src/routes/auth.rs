//! Who is calling: the operator (key from the config) or a bot key (created through the API,
//! stored as a SHA-256). A bot key used on another bot's path is answered 404, exactly as if that
//! bot did not exist.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::crypto::{ct_eq, sha256_hex};
use crate::domain::BotId;
use crate::domain::bot::{ApiKey, KeyRole};
use crate::error::ApiError;
use crate::flow::AppState;

/// The key in `Authorization: Bearer <key>`, if it has a plausible shape.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 256)
}

#[derive(Clone)]
pub enum Caller {
    Operator,
    Bot(std::sync::Arc<ApiKey>),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = match parts.extensions.remove::<Proven>() {
            Some(Proven(caller)) => caller,
            None => {
                let key = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
                let hash = sha256_hex(key.as_bytes());
                if ct_eq(&hash, &state.config.operator_key_sha256) {
                    return Ok(Caller::Operator);
                }
                let key = state
                    .store
                    .find_api_key(&hash)
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                Caller::Bot(key)
            }
        };
        // Another bot's path: answered before anything else (body validation included) looks
        // at the request, exactly as if that bot did not exist.
        if let Caller::Bot(key) = &caller {
            let path_bot = parts
                .uri
                .path()
                .strip_prefix("/v1/bots/")
                .map(|rest| rest.split('/').next().unwrap_or(""));
            if path_bot.is_some_and(|b| b != key.bot.as_str()) {
                return Err(ApiError::NotFound("bot"));
            }
        }
        Ok(caller)
    }
}

/// The caller the rate limiter already identified from this request's key (a request
/// extension: only the server sets those), so that the key is hashed and looked up once.
#[derive(Clone)]
pub struct Proven(pub Caller);

impl Caller {
    /// Runtime access to `bot`: the operator, or any key of that bot.
    pub fn runtime(&self, bot: &BotId) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Bot(k) if &k.bot == bot => Ok(()),
            Caller::Bot(_) => Err(ApiError::NotFound("bot")),
        }
    }

    /// Managing `bot`'s integrations: the operator, or an admin key of that bot.
    pub fn admin(&self, bot: &BotId) -> Result<(), ApiError> {
        self.runtime(bot)?;
        match self {
            Caller::Bot(k) if k.role != KeyRole::Admin => Err(ApiError::Forbidden),
            _ => Ok(()),
        }
    }

    /// What concerns every bot (listing them): the operator only.
    pub fn operator_only(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Bot(_) => Err(ApiError::Forbidden),
        }
    }

    /// Creating, changing and deleting bots and their keys: the operator only.
    pub fn operator(&self, bot: &BotId) -> Result<(), ApiError> {
        self.runtime(bot)?;
        match self {
            Caller::Operator => Ok(()),
            Caller::Bot(_) => Err(ApiError::Forbidden),
        }
    }
}

/// Parse a path segment that names a bot.
pub fn bot_id(s: &str) -> Result<BotId, ApiError> {
    BotId::parse(s).map_err(|_| ApiError::NotFound("bot"))
}
