//! The HTTP edge: thin handlers, one file per flow step. Handlers parse input into domain types,
//! call the store / providers, and map failures through `ApiError` (API) or `pages` (browsers).

pub mod admin;
pub mod auth;
pub mod callback;
pub mod health;
pub mod link;
pub mod pages;
pub mod profiles;
pub mod sessions;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::routing::{get, post, put};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::ApiError;
use crate::store::Store;

/// Everything a handler needs; no per-replica state that another replica would need lives here.
/// One `Arc`, so the per-request clone is a single reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    /// Provider calls: no redirects, bounded time.
    pub http: reqwest::Client,
    /// Cancelled when the daemon is asked to stop: long-polls answer at once and event streams
    /// end, so that graceful shutdown is not held up by requests that would wait for minutes.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, http: reqwest::Client) -> Self {
        Self(Arc::new(Shared {
            config,
            store,
            http,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

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

/// Parse a JSON request body into our problem+json errors: 415 without a JSON content type, 400
/// when malformed, 422 when well-formed but wrong. Handlers call it only after the caller's rights
/// are checked, so another tenant's key never learns anything from validation errors.
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })
}

/// The request span: method, route template and request id — never the raw path or query (the
/// link carries its token, the callback the authorization code and state) and never headers.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    // The route template (`/l/{link}`), not the path: link tokens stay out of logs.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route,
        request_id = %request_id,
    )
}

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    // Long-polls hold a request for up to `max_wait`; the deadline covers that plus the work.
    let deadline = config.request_timeout + config.max_wait;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/v1/bots/{bot}",
            put(admin::put_bot)
                .get(admin::get_bot)
                .delete(admin::delete_bot),
        )
        .route(
            "/v1/bots/{bot}/api-keys",
            post(admin::create_api_key).get(admin::list_api_keys),
        )
        .route(
            "/v1/bots/{bot}/api-keys/{key}",
            axum::routing::delete(admin::delete_api_key),
        )
        .route(
            "/v1/bots/{bot}/integrations/{integration}",
            put(admin::put_integration)
                .get(admin::get_integration)
                .delete(admin::delete_integration),
        )
        .route(
            "/v1/bots/{bot}/webhook-secrets",
            post(admin::create_webhook_secret).get(admin::list_webhook_secrets),
        )
        .route(
            "/v1/bots/{bot}/webhook-secrets/{id}",
            axum::routing::delete(admin::delete_webhook_secret),
        )
        .route(
            "/v1/bots/{bot}/webhook-deliveries",
            get(admin::list_deliveries),
        )
        .route(
            "/v1/bots/{bot}/webhook-deliveries/{id}/replay",
            post(admin::replay_delivery),
        )
        .route(
            "/v1/bots/{bot}/auth-sessions/{id}/events",
            get(sessions::events),
        )
        .route(
            "/v1/bots/{bot}/auth-sessions/{id}/verify",
            post(sessions::verify),
        )
        .route("/metrics", get(health::metrics))
        .route(
            "/v1/bots/{bot}/auth-profiles",
            post(profiles::create).get(profiles::list),
        )
        .route(
            "/v1/bots/{bot}/auth-profiles/{id}",
            get(profiles::get)
                .put(profiles::update)
                .delete(profiles::delete),
        )
        .route(
            "/v1/bots/{bot}/integrations/{integration}/pre-authorize",
            post(sessions::pre_authorize),
        )
        .route(
            "/v1/bots/{bot}/integrations/{integration}/access-token",
            post(tokens::access_token),
        )
        .route(
            "/v1/bots/{bot}/integrations/{integration}/connections/{user}",
            get(tokens::connection).delete(tokens::disconnect),
        )
        .route(
            "/v1/bots/{bot}/integrations/{integration}/connections/{user}/check",
            post(tokens::check),
        )
        .route("/v1/bots/{bot}/auth-sessions", post(sessions::create))
        .route(
            "/v1/bots/{bot}/auth-sessions/{id}",
            get(sessions::status).delete(sessions::cancel),
        )
        .route("/l/{link}", get(link::interstitial).post(link::start))
        .route("/oauth/callback/{config}", get(callback::callback))
        .fallback(|| async { ApiError::NotFound("route") })
        .with_state(state)
        // The limit is enforced where the body is read, so that 413 is our problem+json too.
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            deadline + Duration::from_secs(1),
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::SET_COOKIE,
        ]))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
