//! The HTTP server on the holdfast port: `/v1` API (admin token), `/raft` RPC (cluster
//! secret), `/healthz` (open). Handlers plan changes with `holdfast_state::plan` and
//! propose them through Raft; a bad request changes nothing.
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use holdfast_api::types::{DeployRequest, ErrorBody, PlanResponse, ScaleRequest};
use holdfast_raft::ControlPlaneError;
use holdfast_state::plan::{self, Plan, PlanError};
use holdfast_state::{ClusterState, Command, Desired, Response as ApplyResponse};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::NodeContext;

/// An error answer with its HTTP status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<ControlPlaneError> for ApiError {
    fn from(e: ControlPlaneError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        let status = match e {
            PlanError::UnknownService { .. } => StatusCode::NOT_FOUND,
            PlanError::Placement(_) | PlanError::ServiceOwnedByOtherProject { .. } | PlanError::RouteTaken { .. } => {
                StatusCode::CONFLICT
            }
            PlanError::InvalidSpec(_) | PlanError::BadReplicas(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError(status, e.to_string())
    }
}

/// Serves until `cancel` fires.
pub async fn serve(listener: tokio::net::TcpListener, ctx: NodeContext, cancel: CancellationToken) {
    let app = router(ctx);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
        tracing::error!(error = %e, "http server failed");
    }
}

/// The whole route table.
pub fn router(ctx: NodeContext) -> Router {
    let api = Router::new()
        .route("/v1/deploy", post(deploy))
        .route("/v1/status", get(status))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/scale", post(scale))
        .route("/v1/services/{name}", delete(remove))
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/node/reexec", post(reexec))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_admin_token));
    let raft = Router::new()
        .route("/raft/{rpc}", post(raft_rpc))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_cluster_secret));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(api)
        .merge(raft)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(ctx)
}

/// Compares without an early exit, so the time taken does not leak the secret.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn require_admin_token(State(ctx): State<NodeContext>, req: Request, next: Next) -> Response {
    if !ctx.started.load(Ordering::SeqCst) {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "the node is still starting; try again in a moment".into())
            .into_response();
    }
    match bearer(&req) {
        Some(t) if same_secret(t.trim(), &ctx.identity.admin_token) => next.run(req).await,
        Some(_) => ApiError(StatusCode::UNAUTHORIZED, "the API token was refused".into()).into_response(),
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "missing API token: send `Authorization: Bearer <token>` (the token is in admin.token in the data directory)".into(),
        )
        .into_response(),
    }
}

async fn require_cluster_secret(State(ctx): State<NodeContext>, req: Request, next: Next) -> Response {
    match bearer(&req) {
        Some(t) if same_secret(t, &ctx.identity.cluster_secret) => next.run(req).await,
        _ => ApiError(StatusCode::UNAUTHORIZED, "raft rpc refused: wrong cluster secret".into()).into_response(),
    }
}

async fn raft_rpc(State(ctx): State<NodeContext>, Path(rpc): Path<String>, body: Bytes) -> Response {
    match holdfast_raft::network::handle_rpc(&ctx.control.raft, &rpc, &body).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e @ holdfast_raft::network::RpcError::UnknownRpc(_)) => {
            ApiError(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e @ holdfast_raft::network::RpcError::BadBody(_)) => {
            ApiError(StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Plans a change against a linearizable read of the state and proposes it with that
/// revision; retried when another change slipped in between.
async fn change(
    ctx: &NodeContext,
    dry_run: bool,
    planner: impl Fn(&ClusterState) -> Result<(Plan, Desired), PlanError>,
) -> Result<PlanResponse, ApiError> {
    let _guard = ctx.change_lock.lock().await;
    for _ in 0..5 {
        let state = ctx.control.read_linearizable().await?;
        let (plan, desired) = planner(&state)?;
        if dry_run || plan.is_noop() {
            return Ok(PlanResponse { plan, applied: false, revision: state.revision });
        }
        let req = holdfast_state::Request::new(Command::SetDesired { expected_revision: state.revision, desired });
        match ctx.control.propose(req).await? {
            ApplyResponse::Applied { revision } => {
                tracing::info!(revision, changes = plan.changes.len(), "change applied");
                return Ok(PlanResponse { plan, applied: true, revision });
            }
            ApplyResponse::Conflict { current_revision } => {
                tracing::debug!(current_revision, "change conflicted; planning again");
            }
            other => {
                return Err(ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("change refused by the state machine: {other:?}"),
                ))
            }
        }
    }
    Err(ApiError(StatusCode::CONFLICT, "the state kept changing while planning; try again".into()))
}

fn json_body<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid {what} request body: {e}")))
}

async fn deploy(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<PlanResponse>, ApiError> {
    let req: DeployRequest = json_body("deploy", &body)?;
    let resp = change(&ctx, req.dry_run, |s| plan::plan_deploy(s, &req.stack)).await?;
    Ok(Json(resp))
}

async fn restart(State(ctx): State<NodeContext>, Path(name): Path<String>) -> Result<Json<PlanResponse>, ApiError> {
    Ok(Json(change(&ctx, false, |s| plan::plan_restart(s, &name)).await?))
}

async fn scale(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PlanResponse>, ApiError> {
    let req: ScaleRequest = json_body("scale", &body)?;
    Ok(Json(change(&ctx, false, |s| plan::plan_scale(s, &name, req.replicas)).await?))
}

async fn remove(State(ctx): State<NodeContext>, Path(name): Path<String>) -> Result<Json<PlanResponse>, ApiError> {
    Ok(Json(change(&ctx, false, |s| plan::plan_remove(s, &name)).await?))
}

async fn status(State(ctx): State<NodeContext>) -> Json<holdfast_api::types::StatusResponse> {
    Json(crate::status::build(&ctx))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default = "default_tail")]
    tail: usize,
    #[serde(default)]
    follow: bool,
}

fn default_tail() -> usize {
    100
}

async fn logs(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let state = ctx.control.state();
    let Some(nodes) = state.desired.placements.get(&name) else {
        let known: Vec<&str> = state.desired.services.keys().map(String::as_str).collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown service `{name}` (services: {})", known.join(", ")),
        ));
    };
    let files: Vec<(String, std::path::PathBuf)> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == ctx.identity.node_id)
        .map(|(i, _)| {
            let id = holdfast_agent::InstanceId::new(name.clone(), i as u32);
            (id.to_string(), ctx.agent.log_file(&id))
        })
        .collect();
    let stream = crate::logs::stream(files, q.tail, q.follow, ctx.shutdown.clone());
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
}

async fn reexec(State(ctx): State<NodeContext>) -> impl IntoResponse {
    tracing::info!("re-exec requested through the API");
    ctx.reexec.store(true, Ordering::SeqCst);
    ctx.shutdown.cancel();
    (StatusCode::ACCEPTED, "re-executing; workloads keep running\n")
}
