//! `/v1/jobs`: list, one job's runs, start a run now, a run's logs (from the node it ran
//! on); `/cluster/run-logs` is the node-to-node side of the logs.
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use holdfast_api::types::{JobHistoryResponse, JobView, JobsResponse, RunStarted, RunView};
use holdfast_state::jobs::{instance_service, JobRecord, Run};
use holdfast_state::{ClusterState, Command, Request, Response as Applied};

use super::acl::Caller;
use super::logs::{selection, LogQuery};
use super::ApiError;
use crate::peer::now_ms;
use crate::NodeContext;

fn run_view(state: &ClusterState, r: &Run) -> RunView {
    RunView {
        id: r.id,
        slot_ms: r.slot_ms,
        by: r.by.clone(),
        attempt: r.attempt,
        state: r.state.as_str().to_string(),
        node: r.node.map(|n| state.node_name(n)),
        created_at_ms: r.created_at_ms,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        retry_at_ms: r.retry_at_ms,
        result: r.result.clone(),
        exit_code: r.exit_code,
    }
}

fn job_view(state: &ClusterState, name: &str, rec: &JobRecord) -> JobView {
    let runs = state.runs.get(name);
    let next_at_ms = rec.spec.schedule.as_ref().and_then(|s| {
        let from = runs.and_then(|r| r.cursor_ms).unwrap_or_else(now_ms);
        s.next_after(from)
    });
    JobView {
        name: name.to_string(),
        project: rec.project.clone(),
        schedule: rec.spec.schedule.as_ref().map(|s| s.describe()),
        next_at_ms,
        last: runs.and_then(|r| r.runs.last()).map(|r| run_view(state, r)),
        active: runs.map_or(0, |r| r.runs.iter().filter(|x| x.state.active()).count() as u32),
    }
}

fn unknown_job(state: &ClusterState, name: &str) -> ApiError {
    let known: Vec<&str> = state.desired.jobs.keys().map(String::as_str).collect();
    let hint =
        if known.is_empty() { " (no jobs are deployed)".to_string() } else { format!(" (jobs: {})", known.join(", ")) };
    ApiError(StatusCode::NOT_FOUND, format!("unknown job `{name}`{hint}"))
}

/// `GET /v1/jobs`.
pub async fn list(State(ctx): State<NodeContext>) -> Result<Json<JobsResponse>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    Ok(Json(JobsResponse { jobs: state.desired.jobs.iter().map(|(n, r)| job_view(&state, n, r)).collect() }))
}

/// `GET /v1/jobs/{name}`.
pub async fn history(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
) -> Result<Json<JobHistoryResponse>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    let rec = state.desired.jobs.get(&name).ok_or_else(|| unknown_job(&state, &name))?;
    let runs =
        state.runs.get(&name).map(|r| r.runs.iter().rev().map(|x| run_view(&state, x)).collect()).unwrap_or_default();
    Ok(Json(JobHistoryResponse { job: job_view(&state, &name, rec), runs }))
}

/// `POST /v1/jobs/{name}/run`: a run now (the leader places it at its next pass).
pub async fn start(
    State(ctx): State<NodeContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<RunStarted>, ApiError> {
    let _guard = ctx.change_lock.lock().await;
    for _ in 0..5 {
        let state = ctx.control.read_linearizable().await?;
        let rec = state.desired.jobs.get(&name).ok_or_else(|| unknown_job(&state, &name))?;
        let id = state.runs.get(&name).map_or(0, |r| r.next_id);
        let run = Run::new(id, None, caller.who.clone(), now_ms());
        match ctx.control.propose(Request::new(Command::StartRun { job: name.clone(), run })).await? {
            Applied::Applied { .. } => {
                return Ok(Json(RunStarted { job: name.clone(), project: rec.project.clone(), run: id }));
            }
            Applied::Refused { reason } if reason.contains("taken meanwhile") => continue,
            Applied::Refused { reason } => return Err(ApiError(StatusCode::CONFLICT, reason)),
            other => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}"))),
        }
    }
    Err(ApiError(StatusCode::CONFLICT, "runs kept starting meanwhile; try again".into()))
}

fn local(ctx: &NodeContext, job: &str, id: u64, q: &LogQuery) -> Result<Response, ApiError> {
    let instance = holdfast_agent::InstanceId::new(instance_service(job), id as u32);
    let files = vec![(instance.to_string(), ctx.agent.log_file(&instance))];
    let (node, format) = (ctx.identity.name.clone(), crate::logs::Format::Text);
    let stream = crate::logs::stream(node, files, selection(q)?, format, ctx.shutdown.clone());
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
}

/// `GET /v1/jobs/{name}/runs/{id}/logs`: the log of a run's instance, from the node of
/// its latest attempt.
pub async fn logs(
    State(ctx): State<NodeContext>,
    Path((name, id)): Path<(String, u64)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let state = ctx.control.state();
    if !state.desired.jobs.contains_key(&name) {
        return Err(unknown_job(&state, &name));
    }
    let run = state
        .runs
        .get(&name)
        .and_then(|r| r.runs.iter().find(|x| x.id == id))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("job {name} has no run #{id}")))?;
    let Some(node) = run.node else {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "").into_response());
    };
    if node == ctx.identity.node_id {
        return local(&ctx, &name, id, &q);
    }
    let addr = state.nodes.get(&node).map(|n| n.addr.clone()).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("node {} of run #{id} is no longer a member", state.node_name(node)))
    })?;
    let tail = q.tail.map(|t| format!("&tail={t}")).unwrap_or_default();
    let url = format!("https://{addr}/cluster/run-logs/{name}/{id}?follow={}{tail}", q.follow);
    let req = hyper::Request::get(&url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(3), ctx.node_client.request(req))
        .await
        .map_err(|_| ApiError(StatusCode::GATEWAY_TIMEOUT, format!("{addr} did not answer for the logs within 3s")))?
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("cannot reach {addr} for the logs: {e}")))?;
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `GET /cluster/run-logs/{job}/{id}` (node-to-node): a run's log on this node.
pub async fn local_logs(
    State(ctx): State<NodeContext>,
    Path((name, id)): Path<(String, u64)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    local(&ctx, &name, id, &q)
}
