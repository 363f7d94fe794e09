//! `/v1/deploy`, `/v1/status` and `/v1/services/{name}/...`: changes to a project's
//! services, planned with `holdfast_state::plan` against a linearizable read.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use holdfast_api::types::{DeployRequest, PlanResponse, ScaleRequest};
use holdfast_state::plan;

use super::{change, json_body, ApiError};
use crate::NodeContext;

/// `POST /v1/deploy`.
pub async fn deploy(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<PlanResponse>, ApiError> {
    let req: DeployRequest = json_body("deploy", &body)?;
    let resp = change(&ctx, req.dry_run, |s| plan::plan_deploy(s, &req.stack)).await?;
    Ok(Json(resp))
}

/// `POST /v1/services/{name}/restart`.
pub async fn restart(State(ctx): State<NodeContext>, Path(name): Path<String>) -> Result<Json<PlanResponse>, ApiError> {
    Ok(Json(change(&ctx, false, |s| plan::plan_restart(s, &name)).await?))
}

/// `POST /v1/services/{name}/scale`.
pub async fn scale(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PlanResponse>, ApiError> {
    let req: ScaleRequest = json_body("scale", &body)?;
    Ok(Json(change(&ctx, false, |s| plan::plan_scale(s, &name, req.replicas)).await?))
}

/// `DELETE /v1/services/{name}`.
pub async fn remove(State(ctx): State<NodeContext>, Path(name): Path<String>) -> Result<Json<PlanResponse>, ApiError> {
    Ok(Json(change(&ctx, false, |s| plan::plan_remove(s, &name)).await?))
}

/// `GET /v1/status`: the answering node's view.
pub async fn status(State(ctx): State<NodeContext>) -> Json<holdfast_api::types::StatusResponse> {
    Json(crate::status::build(&ctx).await)
}
