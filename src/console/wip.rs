//! Stand-ins for the list endpoints being added (replaced when they land).
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::flow::AppState;
use crate::routes::auth::Caller;

pub async fn list_bots(
    _: State<AppState>,
    caller: Caller,
    _: Query<Value>,
) -> Result<Json<Value>, ApiError> {
    // Listing every bot is the operator's, as the real endpoint's will be.
    if !matches!(caller, Caller::Operator) {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(json!({"bots": []})))
}
pub async fn list_integrations(
    _: State<AppState>,
    _: Caller,
    _: Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"integrations": []})))
}
pub async fn list_sessions(
    _: State<AppState>,
    _: Caller,
    _: Path<String>,
    _: Query<Value>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"sessions": []})))
}
pub async fn list_connections(
    _: State<AppState>,
    _: Caller,
    _: Path<(String, String)>,
    _: Query<Value>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"connections": []})))
}
