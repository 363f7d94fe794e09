//! `/v1/deploy`, `/v1/status` and `/v1/services/{name}/...`: changes to a project's
//! services, planned with `holdfast_state::plan` against a linearizable read.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use holdfast_api::types::{DeployRequest, PlanResponse, ScaleRequest};
use holdfast_state::plan;

use super::{change, json_body, ApiError};
use crate::NodeContext;

/// `POST /v1/deploy`.
pub async fn deploy(
    State(ctx): State<NodeContext>,
    axum::Extension(caller): axum::Extension<super::acl::Caller>,
    body: Bytes,
) -> Result<Json<PlanResponse>, ApiError> {
    let req: DeployRequest = json_body("deploy", &body)?;
    caller.require(&holdfast_state::acl::Need::Project(req.stack.project.clone()))?;
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    crate::edge::check_route_certificates(&ctx, &ctx.control.state(), &req.stack, now_s)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    // New database roles get random passwords (32 letters and digits: safe in URLs and
    // connection strings without escaping).
    // At most every role of every database in the stack needs one (superuser,
    // replication, users): drawn before planning, where drawing can fail.
    let need: usize = req.stack.databases.values().map(|d| 2 + d.users.len()).sum();
    let pool: Vec<String> = (0..need)
        .map(|_| crate::identity::random_password())
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // The architectures each image offers, from its registry (nothing changes when one
    // cannot be read).
    let images = crate::images::resolve(&req.stack).await.map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let resp = change(&ctx, req.dry_run, |s| {
        let mut pool = pool.clone();
        plan::plan_deploy_images(s, &req.stack, &images, &mut || pool.pop().unwrap_or_default())
    })
    .await?;
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
