//! The `/v1` API handlers, one module per resource. `server.rs` owns TLS, routing and
//! authentication; these only turn a request into a plan or a read, and a plan into
//! proposals. A bad request changes nothing.
//!
//! - [`services`]: deploy, restart, scale, remove, status.
//! - [`events`]: the cluster's event history, every node's journal merged.
//! - [`logs`]: cluster-wide service logs (and the node-to-node side of them).
//! - [`nodes`]: `nodes`, cordon, drain, uncordon, labels, removal.
//! - [`tokens`]: join tokens.
//! - [`settings`]: cluster settings (failure detection, learner promotion).
//! - [`local`]: this node only: its background loops, re-exec.
//! - [`jobs`]: jobs, their runs, a run now, a run's logs.
//! - [`secrets`]: set, list, history and removal of secrets (values go in, never out).
//! - [`usage`]: every instance's CPU and memory, now and over the last hour.
//! - [`acl`]: API tokens (create, list, remove) and what scope each `/v1` call needs.
pub mod acl;
pub mod certs;
pub mod databases;
pub mod events;
pub mod jobs;
pub mod local;
pub mod logs;
pub mod nodes;
pub mod routes;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod tokens;
pub mod usage;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_api::types::{ErrorBody, PlanResponse};
use holdfast_raft::ControlPlaneError;
use holdfast_state::plan::{Plan, PlanError};
use holdfast_state::{ClusterState, Command, Desired, Response as ApplyResponse};

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
        let status = match e {
            ControlPlaneError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        let status = match e {
            PlanError::UnknownService { .. } | PlanError::UnknownNode { .. } => StatusCode::NOT_FOUND,
            PlanError::Placement(_)
            | PlanError::ServiceOwnedByOtherProject { .. }
            | PlanError::RouteTaken { .. }
            | PlanError::LabelsStrandReplicas { .. }
            | PlanError::DatabaseOwnedByOtherProject { .. }
            | PlanError::NameTaken { .. }
            | PlanError::SecretWithoutValue { .. }
            | PlanError::JobNameTaken { .. }
            | PlanError::ZoneTaken { .. }
            | PlanError::ZoneWithoutEdges { .. }
            | PlanError::NoImageForArch { .. }
            | PlanError::Database(_) => StatusCode::CONFLICT,
            PlanError::InvalidSpec(_) | PlanError::BadReplicas(_) | PlanError::BadLabel(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PlanError::NoPasswordSource { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Plans a change against a linearizable read of the state and proposes it with that
/// revision; retried when another change slipped in between.
pub async fn change(
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

/// Parses a JSON request body, naming what it was for.
pub fn json_body<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid {what} request body: {e}")))
}

/// GET `path` from the member at `addr` (mutual TLS) and decode its JSON, within `within`.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    ctx: &NodeContext,
    addr: &str,
    path: &str,
    within: std::time::Duration,
) -> Result<T, String> {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(format!("https://{addr}{path}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let read = async {
        let resp = ctx.node_client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string())
    };
    tokio::time::timeout(within, read).await.map_err(|_| format!("no answer within {within:?}"))?
}
