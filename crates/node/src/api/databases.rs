//! `/v1/databases`: status of the managed databases, connection URLs with their
//! passwords (admin token only, like every `/v1` route), and switchover requests.
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use holdfast_api::types::{DatabaseUrlResponse, DatabasesResponse, SwitchoverRequest, SwitchoverResponse};
use holdfast_spec::DbEngine;
use holdfast_state::model::{Switchover, SwitchoverPhase};
use holdfast_state::{Command, Response as ApplyResponse};

use super::{json_body, ApiError};
use crate::NodeContext;

/// `GET /v1/databases`.
pub async fn list(State(ctx): State<NodeContext>) -> Result<Json<DatabasesResponse>, ApiError> {
    Ok(Json(build_list(&ctx).await))
}

/// The managed databases as this node sees them (members' reports reach the leader).
pub async fn build_list(ctx: &NodeContext) -> DatabasesResponse {
    let state = ctx.control.state();
    let members = crate::peer::heartbeat::members_by_node(ctx).await;
    let lease_for = std::time::Duration::from_millis(state.settings.db_lease_ms);
    let lease = holdfast_api::types::LeaseView {
        node: ctx.identity.name.clone(),
        held: ctx.lease.held(lease_for, state.revision),
        renewed_ms_ago: ctx.lease.age(state.revision).map(|a| a.as_millis() as u64),
    };
    DatabasesResponse { databases: crate::databases::view::databases(&state, &members, None), lease: Some(lease) }
}

#[derive(serde::Deserialize)]
pub struct UrlQuery {
    endpoint: Option<String>,
    user: Option<String>,
}

/// `GET /v1/databases/{name}/url?endpoint=rw|ro|r|admin&user=U`.
pub async fn url(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    Query(q): Query<UrlQuery>,
) -> Result<Json<DatabaseUrlResponse>, ApiError> {
    let state = ctx.control.state();
    let rec = state.desired.databases.get(&name).ok_or_else(|| unknown(&state, &name))?;
    let endpoint = q.endpoint.as_deref().unwrap_or("rw");
    let engine = rec.spec.engine;
    if endpoint == "admin" {
        let url = match engine {
            DbEngine::Postgres => format!(
                "postgresql://{}:{}@{}:{}/postgres",
                holdfast_postgres::SUPERUSER,
                rec.credentials.superuser,
                rec.addresses.rw,
                holdfast_postgres::POSTGRES_PORT
            ),
            DbEngine::Redis => format!(
                "redis://{}:{}@{}:{}",
                holdfast_redis::ADMIN_USER,
                rec.credentials.superuser,
                rec.addresses.rw,
                holdfast_spec::REDIS_PORT
            ),
        };
        return Ok(Json(DatabaseUrlResponse { url }));
    }
    let valid: Vec<&str> = engine.endpoints().iter().map(|e| e.as_str()).collect();
    let Some(e) = engine.endpoints().iter().copied().find(|e| e.as_str() == endpoint) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "database `{name}` ({}) has no endpoint `{endpoint}`: use {} or admin",
                engine.product(),
                valid.join(", ")
            ),
        ));
    };
    crate::databases::url::url(&name, rec, e, q.user.as_deref())
        .map(|url| Json(DatabaseUrlResponse { url }))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "database `{name}` has no user `{}` (users: {})",
                    q.user.unwrap_or_default(),
                    rec.spec.users.join(", ")
                ),
            )
        })
}

/// `POST /v1/databases/{name}/switchover`.
pub async fn switchover(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SwitchoverResponse>, ApiError> {
    let req: SwitchoverRequest =
        if body.is_empty() { SwitchoverRequest::default() } else { json_body("switchover", &body)? };
    let state = ctx.control.read_linearizable().await?;
    let rec = state.desired.databases.get(&name).ok_or_else(|| unknown(&state, &name))?;
    if rec.members.len() < 2 {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("database `{name}` has one instance: there is nothing to switch over to"),
        ));
    }
    if let Some(s) = &rec.switchover {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("a switchover of `{name}` is already in progress ({:?})", s.phase),
        ));
    }
    let to = match &req.to {
        None => None,
        Some(node) => {
            let id = state
                .nodes
                .values()
                .find(|n| &n.name == node)
                .map(|n| n.id)
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node `{node}`")))?;
            let member =
                rec.members.iter().position(|n| *n == id).ok_or_else(|| {
                    ApiError(StatusCode::CONFLICT, format!("node `{node}` runs no member of `{name}`"))
                })? as u32;
            if member == rec.primary {
                return Err(ApiError(StatusCode::CONFLICT, format!("the member on `{node}` is already the primary")));
            }
            Some(member)
        }
    };
    let cmd = Command::SetDatabaseSwitchover {
        database: name.clone(),
        expected_term: rec.term,
        switchover: Some(Switchover { to, requested_term: rec.term, phase: SwitchoverPhase::Requested }),
    };
    match ctx.control.propose(holdfast_state::Request::new(cmd)).await? {
        ApplyResponse::Applied { .. } => Ok(Json(SwitchoverResponse { database: name, from_term: rec.term })),
        ApplyResponse::Refused { reason } => Err(ApiError(StatusCode::CONFLICT, reason)),
        other => Err(ApiError(StatusCode::CONFLICT, format!("not applied: {other:?}"))),
    }
}

fn unknown(state: &holdfast_state::ClusterState, name: &str) -> ApiError {
    let known: Vec<&str> = state.desired.databases.keys().map(String::as_str).collect();
    let hint = if known.is_empty() {
        "no databases are deployed".to_string()
    } else {
        format!("databases: {}", known.join(", "))
    };
    ApiError(StatusCode::NOT_FOUND, format!("no database `{name}` ({hint})"))
}
