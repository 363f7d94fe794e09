//! `GET /v1/events` (every node's journal, merged: the history survives any one node)
//! and `GET /cluster/events` (node-to-node: this node's journal). Answered by the node
//! asked, never forwarded: it works without a leader.
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use holdfast_api::types::{EventView, EventsResponse};
use serde::Deserialize;

use crate::events::merge;
use crate::NodeContext;

/// `?since_ms=&limit=`.
#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    since_ms: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    200
}

/// At most this many events in one answer.
const MAX_LIMIT: usize = 5000;

async fn own(ctx: &NodeContext, since_ms: u64) -> Vec<EventView> {
    let journal = ctx.events.clone();
    tokio::task::spawn_blocking(move || journal.read(since_ms)).await.unwrap_or_default()
}

/// The newest `limit` events of one other node's journal through its `/cluster/events`
/// (mutual TLS), within 2 s. The merged newest `limit` are among the nodes' newest
/// `limit` each.
async fn fetch(ctx: &NodeContext, addr: &str, since_ms: u64, limit: usize) -> Result<Vec<EventView>, String> {
    let path = format!("/cluster/events?since_ms={since_ms}&limit={limit}");
    super::fetch_json::<EventsResponse>(ctx, addr, &path, Duration::from_secs(2)).await.map(|r| r.events)
}

/// `GET /v1/events`: this node's journal and every other node's, merged (one event per
/// key, oldest first, the newest `limit`); nodes that did not answer are named.
pub async fn events(State(ctx): State<NodeContext>, Query(q): Query<EventsQuery>) -> Json<EventsResponse> {
    Json(build_events(&ctx, q.since_ms, q.limit).await)
}

/// Every node's journal merged: the newest `limit` (at most 5000) events since `since_ms`.
pub async fn build_events(ctx: &NodeContext, since_ms: u64, limit: usize) -> EventsResponse {
    let state = ctx.control.state();
    let others: Vec<(String, String)> = state
        .nodes
        .values()
        .filter(|n| n.id != ctx.identity.node_id)
        .map(|n| (n.name.clone(), n.addr.clone()))
        .collect();
    let fetches = others.iter().map(|(name, addr)| {
        let ctx = ctx.clone();
        async move { (name.clone(), fetch(&ctx, addr, since_ms, limit.min(MAX_LIMIT)).await) }
    });
    let (mine, theirs) = tokio::join!(own(ctx, since_ms), futures::future::join_all(fetches));
    let mut lists = vec![mine];
    let mut unreachable = Vec::new();
    for (name, r) in theirs {
        match r {
            Ok(list) => lists.push(list),
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "events: journal not read");
                unreachable.push(name);
            }
        }
    }
    EventsResponse { events: merge(lists, limit.min(MAX_LIMIT)), unreachable }
}

/// `GET /cluster/events`: this node's journal.
pub async fn local(State(ctx): State<NodeContext>, Query(q): Query<EventsQuery>) -> Json<EventsResponse> {
    let mine = own(&ctx, q.since_ms).await;
    Json(EventsResponse { events: merge(vec![mine], q.limit.min(MAX_LIMIT)), unreachable: Vec::new() })
}
