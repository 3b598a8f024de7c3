//! The HTTP edge: thin handlers, one file per flow step. Handlers parse input into domain types,
//! call the store / providers, and map failures through `ApiError` (API) or `pages` (browsers).

pub mod admin;
pub mod attempt;
pub mod auth;
pub mod binding;
pub mod callback;
pub mod channels;
pub mod contract;
pub mod health;
pub mod interactions;
pub mod limit;
pub mod link;
mod observe;
pub mod pages;
mod paging;
pub mod profiles;
pub mod sessions;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::flow::AppState;

/// The raw request body, with axum's rejections (over the size limit, unreadable) turned into
/// our problem+json errors.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(Into::into)
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(0),
            _ => ApiError::BadRequest(r.body_text()),
        }
    }
}

/// The bot a route's path names, or 404.
pub async fn existing_bot(
    state: &AppState,
    id: &crate::domain::BotId,
) -> Result<Arc<crate::domain::bot::Bot>, ApiError> {
    state
        .store
        .get_bot(id)
        .await?
        .ok_or(ApiError::NotFound("bot"))
}

/// A DELETE's answer: 204 when `what` was there, else 404.
pub fn deleted(found: bool, what: &'static str) -> Result<StatusCode, ApiError> {
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(what))
    }
}

/// A JSON request body: its bytes (read within the body limit, rejections as problem+json) and
/// whether the request declared JSON. Handlers `parse` it only after the caller's rights are
/// checked, so another tenant's key never learns anything from validation errors.
pub struct JsonBody {
    pub bytes: axum::body::Bytes,
    declared_json: bool,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let declared_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        Ok(Self {
            bytes,
            declared_json,
        })
    }
}

impl JsonBody {
    /// A body known to be JSON (the console calling a handler as the API would be called).
    pub fn json(bytes: axum::body::Bytes) -> Self {
        Self {
            bytes,
            declared_json: true,
        }
    }

    /// 415 without a JSON content type, 400 when malformed, 422 when well-formed but wrong.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !self.declared_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        contract::json_object(&self.bytes)
    }
}

/// A JSON response serialized into one buffer sized for a session view (axum's `Json` starts at
/// 128 bytes and grows it several times).
pub fn json_response(value: &impl serde::Serialize) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::Internal(e.into()).into_response(),
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "authlink",
        description = "OAuth authorization links for chatbots and AI agents: sessions, signed links, the PKCE callback, tokens, webhooks. Errors are RFC 9457 problem+json."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// `Authorization: Bearer <operator key | bot key>`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API and the people's pages, with `pages` (the console, built above this module) served
/// under the same layers.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let config = state.config.clone();
    let limited = state.clone();
    // Long-polls hold a request for up to `max_wait`; the deadline covers that plus the work.
    let deadline = config.request_timeout + config.max_wait;
    let (api_router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(admin::list_bots))
        .routes(routes!(admin::put_bot, admin::get_bot, admin::delete_bot))
        .routes(routes!(admin::create_api_key, admin::list_api_keys))
        .routes(routes!(admin::delete_api_key))
        .routes(routes!(admin::list_integrations))
        .routes(routes!(
            admin::put_integration,
            admin::get_integration,
            admin::delete_integration
        ))
        .routes(routes!(
            admin::create_webhook_secret,
            admin::list_webhook_secrets
        ))
        .routes(routes!(admin::delete_webhook_secret))
        .routes(routes!(admin::list_deliveries))
        .routes(routes!(admin::replay_delivery))
        .routes(routes!(channels::list))
        .routes(routes!(interactions::slack))
        .routes(routes!(channels::put, channels::get, channels::delete))
        .routes(routes!(profiles::create, profiles::list))
        .routes(routes!(profiles::get, profiles::update, profiles::delete))
        .routes(routes!(sessions::pre_authorize))
        .routes(routes!(sessions::create, sessions::list))
        .routes(routes!(sessions::status, sessions::cancel))
        .routes(routes!(sessions::events))
        .routes(routes!(sessions::verify))
        .routes(routes!(tokens::access_token))
        .routes(routes!(tokens::list_connections))
        .routes(routes!(tokens::connection, tokens::disconnect))
        .routes(routes!(tokens::check))
        .routes(routes!(link::interstitial, link::start))
        .routes(routes!(callback::callback))
        .routes(routes!(binding::callback))
        .split_for_parts();
    // The spec is built from the same annotated handlers the router serves: it cannot drift.
    let spec: Arc<str> = contract::document(
        openapi,
        config.max_wait.as_secs(),
        sessions::session_schema(),
    )
    .into();
    api_router
        .route(
            "/openapi.json",
            get(move || {
                let spec = spec.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        spec.to_string(),
                    )
                }
            }),
        )
        .merge(pages)
        .fallback(|| async { ApiError::NotFound("route") })
        .with_state(state.clone())
        // One stack, applied to the routes once (each `Router::layer` call would box every route
        // again: a service clone and a boxed future per layer per request). Outermost first.
        .layer(
            tower::ServiceBuilder::new()
                // Request id, span, HTTP metrics and the request's log lines.
                .layer(observe::EdgeLayer::default())
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                    header::SET_COOKIE,
                ]))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    deadline + Duration::from_secs(1),
                ))
                // The limit is enforced where the body is read, so that 413 is our problem+json too.
                .layer(DefaultBodyLimit::max(config.body_limit))
                // Innermost: limited requests are still traced, counted and time-bounded.
                .layer(limit::RateLimitLayer::new(limited)),
        )
}
