//! Probes: `/healthz` says the process serves; `/readyz` says it can reach its store.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::flow::AppState;

#[utoipa::path(operation_id = "health_healthz", get, path = "/healthz", tag = "operations", summary = "The process serves", responses((status = 200, description = "200"), (status = "4XX", description = "problem+json (RFC 9457)")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(operation_id = "health_readyz", get, path = "/readyz", tag = "operations", summary = "The store is reachable", responses((status = 200, description = "200, or 503"), (status = "4XX", description = "problem+json (RFC 9457)")))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.shutdown.is_cancelled() {
        // Stopping: load balancers should send new requests elsewhere while we drain.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stopping"})),
        );
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "store": e.to_string()})),
        ),
    }
}

#[utoipa::path(operation_id = "health_metrics", get, path = "/metrics", tag = "operations", summary = "Prometheus metrics", responses((status = 200, description = "200: text/plain"), (status = "4XX", description = "problem+json (RFC 9457)")))]
/// Prometheus text exposition.
pub async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    metrics::gauge!("authlink_waiting_requests").set(state.store.waiting() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::metrics().render(),
    )
}
