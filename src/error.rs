//! The single mapping from failures to HTTP: RFC 9457 problem+json for the API. Causes of 5xx are
//! logged here and never sent to the client. (Browser pages have their own renderer in
//! `routes::pages`.)

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::{StoreError, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A body that parsed but is not acceptable (RFC 9457 `validation`).
    #[error("{0}")]
    Invalid(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this key may not do that")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The access-token API found no usable grant.
    #[error("the user has not authorized this integration (or must authorize again)")]
    AuthorizationRequired,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("the store is unavailable; retry shortly")]
    Unavailable,
    /// The provider could not refresh right now (network, 5xx, rate limit); the grant is kept.
    #[error("the provider is unavailable ({0}); retry shortly")]
    ProviderUnavailable(String),
    /// Over a rate limit; retry after this many seconds.
    #[error("too many requests; retry in {0} s")]
    TooManyRequests(u64),
    /// At a quota of things held open (e.g. open sessions); retry after `retry_after` seconds.
    #[error("{detail}")]
    OverQuota { detail: String, retry_after: u64 },
    /// The key or its bot has as many requests waiting (long-polls, event streams, agent
    /// retries) as `[limits]` allows on this replica; retry after this many seconds.
    #[error("too many requests of this key or bot are waiting; retry in {0} s")]
    TooManyWaiting(u64),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::AuthorizationRequired => (StatusCode::NOT_FOUND, "authorization_required"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::ProviderUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable")
            }
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::OverQuota { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            ApiError::TooManyWaiting(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_waiting"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::flow::provider::ProviderError> for ApiError {
    fn from(e: crate::flow::provider::ProviderError) -> Self {
        match e {
            crate::flow::provider::ProviderError::Misconfigured(why) => ApiError::Conflict(why),
            crate::flow::provider::ProviderError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                ApiError::Unavailable
            }
            StoreError::Corrupt(_) => ApiError::Internal(e.into()),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound => ApiError::NotFound("auth session"),
            TransitionError::Expired => ApiError::Conflict("the auth session has expired".into()),
            TransitionError::Conflict(s) => ApiError::Conflict(format!(
                "the auth session is {} and cannot change that way",
                s.as_str()
            )),
            TransitionError::Store(e) => e.into(),
        }
    }
}

/// A problem of `status` with a `code` outside the `ApiError` table, and RFC 9457 extension
/// members (e.g. the pending session and MCP payloads of `authorization_required`).
pub fn problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    extensions: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut body = problem_body(status, code, detail);
    if let serde_json::Value::Object(map) = &mut body {
        map.extend(extensions);
    }
    problem_response(status, body)
}

fn problem_body(status: StatusCode, code: &str, detail: &str) -> serde_json::Value {
    json!({
        "type": format!("https://authlink.dev/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut resp = problem_response(status, problem_body(status, code, &self.to_string()));
        if let ApiError::TooManyRequests(after)
        | ApiError::TooManyWaiting(after)
        | ApiError::OverQuota {
            retry_after: after, ..
        } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        resp
    }
}

fn problem_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"authlink\""),
        );
    }
    resp
}
