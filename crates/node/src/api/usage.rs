//! `GET /v1/usage` (every node's usage history, gathered; `holdfast top`, the dashboard)
//! and `GET /cluster/usage` (node-to-node: this node's). Answered by the node asked,
//! never forwarded: it works without a leader, and a node that does not answer is named.
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use holdfast_agent::usage::{SAMPLE_EVERY_MS, WINDOW_MS};
use holdfast_api::types::{InstanceUsage, UsageResponse, UsageSample};
use holdfast_state::ClusterState;
use serde::Deserialize;

use crate::peer::now_ms;
use crate::NodeContext;

/// `?service=&node=&samples=`: one service's or one node's instances, and how many
/// samples of history each (the newest; 0 for none).
#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub samples: usize,
}

/// What an instance's agent name says it is: (service or `job`/`database` name as
/// shown, project, the resources it asked for).
fn owner(state: &ClusterState, agent_service: &str) -> (String, String, Option<u32>, Option<u64>) {
    if let Some(rec) = state.desired.services.get(agent_service) {
        let r = &rec.spec.resources;
        return (agent_service.to_string(), rec.project.clone(), r.cpu_millis, r.memory_bytes);
    }
    if let Some(job) = holdfast_state::jobs::job_of_instance(agent_service) {
        if let Some(rec) = state.desired.jobs.get(job) {
            let r = &rec.spec.resources;
            return (format!("job {job}"), rec.project.clone(), r.cpu_millis, r.memory_bytes);
        }
    }
    for (_, prefix) in crate::databases::INSTANCE_PREFIXES {
        if let Some(db) = agent_service.strip_prefix(prefix) {
            if let Some(rec) = state.desired.databases.get(db) {
                let r = &rec.spec.resources;
                return (format!("database {db}"), rec.project.clone(), r.cpu_millis, r.memory_bytes);
            }
        }
    }
    (agent_service.to_string(), String::new(), None, None)
}

/// This node's instances (running now, or with history), filtered by service.
pub fn local(ctx: &NodeContext, service: Option<&str>, samples: usize) -> Vec<InstanceUsage> {
    let state = ctx.control.state();
    let now = now_ms();
    let live: std::collections::BTreeMap<String, holdfast_agent::usage::Reading> =
        ctx.agent.usage().into_iter().map(|(id, r)| (id.to_string(), r)).collect();
    let history = ctx.usage.lock().unwrap_or_else(|e| e.into_inner());
    let mut names: std::collections::BTreeSet<String> = live.keys().cloned().collect();
    names.extend(history.instances().map(str::to_string));
    let mut out = Vec::new();
    for name in names {
        let Some((agent_service, _)) = name.rsplit_once('-') else { continue };
        let (shown, project, cpu_req, mem_req) = owner(&state, agent_service);
        if service.is_some_and(|s| s != shown && s != agent_service) {
            continue;
        }
        let reading = live.get(&name);
        let summary = history.summary(&name);
        let kept = history.samples(&name);
        let skip = kept.len().saturating_sub(samples);
        out.push(InstanceUsage {
            instance: if shown == agent_service {
                name.clone()
            } else {
                format!("{shown} member {}", &name[agent_service.len() + 1..])
            },
            service: shown,
            project,
            node: ctx.identity.name.clone(),
            cpu_request_millis: cpu_req,
            memory_request_bytes: mem_req,
            cpu_millis: reading.and_then(|r| history.cpu_now(&name, now, r.cpu_ns)),
            memory_bytes: reading.and_then(|r| r.memory_bytes),
            cpu_avg_millis: summary.cpu_avg_millis,
            cpu_peak_millis: summary.cpu_peak_millis,
            memory_peak_bytes: summary.memory_peak_bytes,
            samples: kept[skip..]
                .iter()
                .map(|s| UsageSample { at_ms: s.at_ms, cpu_millis: s.cpu_millis, memory_bytes: s.memory_bytes })
                .collect(),
        });
    }
    out
}

fn query_of(service: Option<&str>, samples: usize) -> String {
    let mut q = format!("/cluster/usage?samples={samples}");
    if let Some(s) = service {
        q.push_str(&format!("&service={}", holdfast_api::client::query_escape(s)));
    }
    q
}

/// Every node's instances (or one node's), gathered within 2 s per node; nodes that did
/// not answer are named in `unreachable`.
pub async fn collect(ctx: &NodeContext, service: Option<&str>, node: Option<&str>, samples: usize) -> UsageResponse {
    let state = ctx.control.state();
    let wanted = |name: &str| node.is_none_or(|n| n == name);
    let mut instances = Vec::new();
    if wanted(&ctx.identity.name) {
        let ctx2 = ctx.clone();
        let svc = service.map(str::to_string);
        instances =
            tokio::task::spawn_blocking(move || local(&ctx2, svc.as_deref(), samples)).await.unwrap_or_default();
    }
    let others: Vec<(String, String)> = state
        .nodes
        .values()
        .filter(|n| n.id != ctx.identity.node_id && wanted(&n.name))
        .map(|n| (n.name.clone(), n.addr.clone()))
        .collect();
    let path = query_of(service, samples);
    let fetches =
        others.iter().map(|(name, addr)| {
            let (ctx, path) = (ctx.clone(), path.clone());
            async move {
                (name.clone(), super::fetch_json::<UsageResponse>(&ctx, addr, &path, Duration::from_secs(2)).await)
            }
        });
    let mut unreachable = Vec::new();
    for (name, r) in futures::future::join_all(fetches).await {
        match r {
            Ok(resp) => instances.extend(resp.instances),
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "usage: node not read");
                unreachable.push(name);
            }
        }
    }
    instances.sort_by(|a, b| (&a.service, &a.instance, &a.node).cmp(&(&b.service, &b.instance, &b.node)));
    UsageResponse { interval_ms: SAMPLE_EVERY_MS, window_ms: WINDOW_MS, instances, unreachable }
}

/// `GET /v1/usage`.
pub async fn usage(State(ctx): State<NodeContext>, Query(q): Query<UsageQuery>) -> Json<UsageResponse> {
    Json(collect(&ctx, q.service.as_deref(), q.node.as_deref(), q.samples).await)
}

/// `GET /cluster/usage`: this node's instances.
pub async fn local_usage(State(ctx): State<NodeContext>, Query(q): Query<UsageQuery>) -> Json<UsageResponse> {
    let svc = q.service.clone();
    let instances =
        tokio::task::spawn_blocking(move || local(&ctx, svc.as_deref(), q.samples)).await.unwrap_or_default();
    Json(UsageResponse { interval_ms: SAMPLE_EVERY_MS, window_ms: WINDOW_MS, instances, unreachable: Vec::new() })
}
