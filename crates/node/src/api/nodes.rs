//! `/v1/nodes...`: the node list, cordon, drain, uncordon, labels, and removal (a state
//! the leader finishes: `DELETE` marks the node `removing` and answers at once).
use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use holdfast_api::types::{NodeActionResponse, NodeLabelsRequest, NodeLabelsResponse, NodeView, NodesResponse};
use holdfast_placement::NodeId;
use holdfast_state::labels::{node_labels, LabelChange};
use holdfast_state::{Command, NodeRecord, Request, Response as Applied};

use super::ApiError;
use crate::NodeContext;

/// `GET /v1/nodes`.
pub async fn list_nodes(State(ctx): State<NodeContext>) -> Json<NodesResponse> {
    Json(build_nodes(&ctx).await)
}

/// The node list as this node sees it (states and lag are the leader's to know).
pub async fn build_nodes(ctx: &NodeContext) -> NodesResponse {
    let state = ctx.control.state();
    let (voters, learners) = ctx.control.membership();
    let leader = ctx.control.leader().map(|(id, _)| id);
    let live = ctx.liveness.lock().await;
    let lag = ctx.control.replication_lag();
    let promotion = ctx.promotion.lock().map(|p| p.clone()).unwrap_or_default();
    let is_leader = ctx.control.is_leader();
    let mut nodes = Vec::new();
    for n in state.nodes.values() {
        let mut instances = 0;
        let (mut cpu, mut mem) = (0u64, 0u64);
        for (svc, placed) in &state.desired.placements {
            let count = placed.iter().filter(|x| **x == n.id).count();
            instances += count;
            if let Some(r) = state.desired.services.get(svc) {
                cpu += count as u64 * r.spec.resources.cpu_millis.map(u64::from).unwrap_or(0);
                mem += count as u64 * r.spec.resources.memory_bytes.unwrap_or(0);
            }
        }
        for db in state.desired.databases.values() {
            let count = db.members.iter().filter(|x| **x == n.id).count();
            instances += count;
            cpu += count as u64 * db.spec.resources.cpu_millis.map(u64::from).unwrap_or(0);
            mem += count as u64 * db.spec.resources.memory_bytes.unwrap_or(0);
        }
        let last_seen_ms = if is_leader { live.last_seen_ms(n.id) } else { None };
        let node_state = holdfast_control::detector::node_state(n.down, last_seen_ms, &state.settings);
        nodes.push(NodeView {
            id: n.id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            site: n.site.clone(),
            arch: n.arch.clone(),
            role: if leader == Some(n.id) {
                "leader"
            } else if voters.contains(&n.id) {
                "voter"
            } else if learners.contains(&n.id) {
                "learner"
            } else {
                "none"
            }
            .to_string(),
            state: node_state.to_string(),
            cordoned: n.cordoned,
            draining: n.draining,
            last_seen_ms,
            instances,
            cpu_reserved_millis: cpu,
            cpu_capacity_millis: n.capacity.cpu_millis,
            memory_reserved_bytes: mem,
            memory_capacity_bytes: n.capacity.memory_bytes,
            labels: node_labels(n),
            removing: n.removing,
            lag_entries: if is_leader { lag.get(&n.id).copied() } else { None },
            not_voting_because: if is_leader && learners.contains(&n.id) {
                promotion.get(&n.id).cloned()
            } else {
                None
            },
        });
    }
    NodesResponse { nodes, warnings: cluster_warnings(ctx) }
}

/// Plain-language warnings about the control plane's layout.
pub fn cluster_warnings(ctx: &NodeContext) -> Vec<String> {
    let state = ctx.control.state();
    let (voters, _) = ctx.control.membership();
    let with_sites: Vec<(NodeId, String)> =
        voters.iter().filter_map(|id| state.nodes.get(id).map(|n| (*id, n.site.clone()))).collect();
    let sites: BTreeSet<&str> = state.nodes.values().map(|n| n.site.as_str()).collect();
    let mut w = Vec::new();
    if sites.len() > 1 || voters.len() > 1 {
        w.extend(holdfast_state::voters::site_loss_warning(&with_sites));
    }
    if ctx.control.leader().is_none() {
        w.push("the control plane has no leader (no quorum): changes are refused; services keep running".into());
    }
    w
}

fn find_node(ctx: &NodeContext, name: &str) -> Result<NodeRecord, ApiError> {
    let state = ctx.control.state();
    state.nodes.values().find(|n| n.name == name || n.id.to_string() == name).cloned().ok_or_else(|| {
        let known: Vec<&str> = state.nodes.values().map(|n| n.name.as_str()).collect();
        ApiError(StatusCode::NOT_FOUND, format!("unknown node `{name}` (nodes: {})", known.join(", ")))
    })
}

/// What a node command does to the node's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeAction {
    /// Nothing new is placed; replicas stay.
    Cordon,
    /// Cordon, and move the replicas away one at a time (start before stop).
    Drain,
    /// Back to normal; a drain in progress stops where it is.
    Uncordon,
}

async fn set_flags(ctx: &NodeContext, name: &str, action: NodeAction) -> Result<NodeActionResponse, ApiError> {
    let node = find_node(ctx, name)?;
    let (cordoned, draining) = match action {
        NodeAction::Cordon => (true, None),
        NodeAction::Drain => (true, Some(true)),
        NodeAction::Uncordon => (false, Some(false)),
    };
    let _guard = ctx.change_lock.lock().await;
    if action == NodeAction::Uncordon && node.removing {
        match ctx.control.propose(Request::new(Command::SetRemoving { id: node.id, removing: false })).await? {
            Applied::Applied { .. } => tracing::info!(node = %node.name, "node removal cancelled"),
            other => return Err(ApiError(StatusCode::CONFLICT, format!("cannot cancel the removal: {other:?}"))),
        }
    }
    let cmd = Command::SetNodeFlags { id: node.id, cordoned: Some(cordoned), down: None, draining };
    match ctx.control.propose(Request::new(cmd)).await? {
        Applied::Applied { revision } => {
            let replicas = holdfast_control::removal::replicas_on(&ctx.control.state(), node.id);
            let message = match action {
                NodeAction::Cordon => format!(
                    "node {} cordoned: nothing new is placed there; its {replicas} replica(s) stay (use `drain` to move them)",
                    node.name
                ),
                NodeAction::Drain => format!(
                    "node {} draining: {replicas} replica(s) move to other nodes one at a time, each new instance ready before the old one stops",
                    node.name
                ),
                NodeAction::Uncordon if node.removing => format!(
                    "node {} is no longer being removed and accepts replicas again (running replicas stay where they are)",
                    node.name
                ),
                NodeAction::Uncordon => {
                    format!("node {} accepts replicas again (running replicas stay where they are)", node.name)
                }
            };
            Ok(NodeActionResponse { message, revision })
        }
        Applied::Refused { reason } => Err(ApiError(StatusCode::CONFLICT, reason)),
        other => Err(ApiError(StatusCode::CONFLICT, format!("{other:?}"))),
    }
}

/// `POST /v1/nodes/{name}/cordon`.
pub async fn cordon(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
) -> Result<Json<NodeActionResponse>, ApiError> {
    Ok(Json(set_flags(&ctx, &name, NodeAction::Cordon).await?))
}

/// `POST /v1/nodes/{name}/drain`: starts the drain and answers at once; the leader moves
/// the replicas (`GET /v1/nodes` shows how many are left).
pub async fn drain(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
) -> Result<Json<NodeActionResponse>, ApiError> {
    Ok(Json(set_flags(&ctx, &name, NodeAction::Drain).await?))
}

/// `POST /v1/nodes/{name}/uncordon`.
pub async fn uncordon(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
) -> Result<Json<NodeActionResponse>, ApiError> {
    Ok(Json(set_flags(&ctx, &name, NodeAction::Uncordon).await?))
}

/// `POST /v1/nodes/{name}/labels`: sets and removes user labels, then moves the replicas
/// whose node selector (or anti-affinity) no longer allows them there. A change that would
/// leave a replica with no node at all is refused.
pub async fn label_node(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<NodeLabelsResponse>, ApiError> {
    let req: NodeLabelsRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid labels request: {e}")))?;
    let mut changes: Vec<LabelChange> = req.set.into_iter().map(|(k, v)| LabelChange::Set(k, v)).collect();
    changes.extend(req.remove.into_iter().map(LabelChange::Remove));
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.read_linearizable().await?;
    let plan = holdfast_state::plan::plan_node_labels(&state, &name, &changes)?;
    let mut revision = state.revision;
    if plan.changed {
        match ctx.control.propose(Request::new(plan.command.clone())).await? {
            Applied::Applied { revision: r } => revision = r,
            Applied::Refused { reason } => return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, reason)),
            other => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("labels: {other:?}"))),
        }
        // Move what no longer fits now rather than at the next leader tick.
        for _ in 0..5 {
            let state = ctx.control.read_linearizable().await?;
            let Some(desired) = holdfast_state::plan::plan_reschedule(&state)?.desired else { break };
            match ctx
                .control
                .propose(Request::new(Command::SetDesired { expected_revision: state.revision, desired }))
                .await?
            {
                Applied::Applied { revision: r } => {
                    revision = r;
                    break;
                }
                Applied::Conflict { .. } => continue,
                other => {
                    tracing::warn!(?other, "moving replicas after a label change; the leader retries");
                    break;
                }
            }
        }
    }
    let state = ctx.control.state();
    let moves = holdfast_state::plan::describe_moves(&state, &plan.moves);
    if plan.changed {
        tracing::info!(node = %name, moves = %moves.join(", "), "node labels changed");
    }
    let node = state.nodes.get(&plan.node).map(|n| (n.name.clone(), node_labels(n))).unwrap_or_default();
    Ok(Json(NodeLabelsResponse { node: node.0, labels: node.1, changed: plan.changed, moves, revision }))
}

/// `DELETE /v1/nodes/{name}`: starts removing the node and answers at once. The leader
/// drains it (or re-places its replicas at once when it is down), then removes it and
/// revokes its certificate; `GET /v1/nodes` shows the progress and the node disappears
/// from it when done. Refused, with nothing changed, when a replica on it could go
/// nowhere else.
pub async fn remove_node(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<NodeActionResponse>), ApiError> {
    let node = find_node(&ctx, &name)?;
    if node.id == ctx.identity.node_id {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "cannot remove the node that answers this request (the leader); run it against another node".into(),
        ));
    }
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.read_linearizable().await?;
    // Would the drain finish? Try it on a copy first.
    let mut after = (*state).clone();
    let cmd = Command::SetRemoving { id: node.id, removing: true };
    if let Applied::Refused { reason } = after.apply(&Request::new(cmd.clone())) {
        return Err(ApiError(StatusCode::CONFLICT, format!("cannot remove node {}: {reason}", node.name)));
    }
    let stuck: Vec<String> = holdfast_state::drain::stuck(&after)
        .iter()
        .filter(|e| matches!(e, holdfast_state::drain::DrainEvent::Stuck { from, .. } if *from == node.id))
        .map(|e| e.describe(&after))
        .collect();
    if !stuck.is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "cannot remove node {}: replicas on it have nowhere else to go, so nothing was changed:\n  {}",
                node.name,
                stuck.join("\n  ")
            ),
        ));
    }
    match ctx.control.propose(Request::new(cmd)).await? {
        Applied::Applied { revision } => {
            let replicas = holdfast_control::removal::replicas_on(&state, node.id);
            tracing::info!(node = %node.name, replicas, "node removal started");
            Ok((
                StatusCode::ACCEPTED,
                Json(NodeActionResponse {
                    message: format!(
                        "removing node {}: its {replicas} replica(s) move to other nodes first (each new instance ready before the old one stops), then it is removed and its certificate revoked",
                        node.name
                    ),
                    revision,
                }),
            ))
        }
        Applied::Refused { reason } => Err(ApiError(StatusCode::CONFLICT, reason)),
        other => Err(ApiError(StatusCode::CONFLICT, format!("cannot remove node {}: {other:?}", node.name))),
    }
}
