//! `GET`/`PUT /v1/cluster/settings`: failure detection and learner promotion timing.
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use holdfast_api::types::{SettingsChange, SettingsView};
use holdfast_state::{ClusterSettings, Command, Request, Response as Applied};

use super::ApiError;
use crate::NodeContext;

fn settings_view(s: &ClusterSettings) -> SettingsView {
    SettingsView {
        heartbeat_ms: s.heartbeat_ms,
        suspect_after_ms: s.suspect_after_ms,
        down_after_ms: s.down_after_ms,
        voter_replace_after_ms: s.voter_replace_after_ms,
        promote_after_ms: s.promote_after_ms,
    }
}

/// `GET /v1/cluster/settings`.
pub async fn get_settings(State(ctx): State<NodeContext>) -> Result<Json<SettingsView>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    Ok(Json(settings_view(&state.settings)))
}

/// `PUT /v1/cluster/settings`: changes the given settings; refused as a whole (nothing
/// changed) when the result does not make sense.
pub async fn put_settings(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<SettingsView>, ApiError> {
    let change: SettingsChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid settings change: {e}")))?;
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.read_linearizable().await?;
    let mut next = state.settings;
    next.heartbeat_ms = change.heartbeat_ms.unwrap_or(next.heartbeat_ms);
    next.suspect_after_ms = change.suspect_after_ms.unwrap_or(next.suspect_after_ms);
    next.down_after_ms = change.down_after_ms.unwrap_or(next.down_after_ms);
    next.voter_replace_after_ms = change.voter_replace_after_ms.unwrap_or(next.voter_replace_after_ms);
    next.promote_after_ms = change.promote_after_ms.unwrap_or(next.promote_after_ms);
    next.validate().map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    match ctx.control.propose(Request::new(Command::SetSettings(next))).await? {
        Applied::Applied { .. } => Ok(Json(settings_view(&next))),
        Applied::Refused { reason } => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, reason)),
        other => Err(ApiError(StatusCode::CONFLICT, format!("{other:?}"))),
    }
}
