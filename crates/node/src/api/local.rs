//! This node only: its background loops (`GET /v1/workers`, not forwarded) and re-exec
//! (`POST /v1/node/reexec`).
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use holdfast_api::types::WorkersResponse;

use crate::NodeContext;

/// `GET /v1/workers`: every background loop of the answering node.
pub async fn workers(State(ctx): State<NodeContext>) -> Json<WorkersResponse> {
    Json(WorkersResponse { node: ctx.identity.name.clone(), workers: ctx.workers.views() })
}

/// `POST /v1/node/reexec`.
pub async fn reexec(State(ctx): State<NodeContext>) -> impl IntoResponse {
    tracing::info!("re-exec requested through the API");
    ctx.reexec.store(true, Ordering::SeqCst);
    ctx.shutdown.cancel();
    (StatusCode::ACCEPTED, "re-executing; workloads keep running\n")
}
