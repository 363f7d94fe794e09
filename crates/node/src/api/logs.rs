//! `GET /v1/services/{name}/logs` (cluster-wide, merged) and `GET /cluster/logs/{service}`
//! (node-to-node: this node's instances of a service).
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiError;
use crate::NodeContext;

/// `?tail=N&follow=true` (also for a job run's log).
#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default = "default_tail")]
    pub tail: usize,
    #[serde(default)]
    pub follow: bool,
}

fn default_tail() -> usize {
    100
}

/// `GET /v1/services/{name}/logs`: this node's instances from their files, other nodes'
/// instances through those nodes (`/cluster/logs`), merged into one stream.
pub async fn logs(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    let state = ctx.control.state();
    let Some(placed) = state.desired.placements.get(&name) else {
        let known: Vec<&str> = state.desired.services.keys().map(String::as_str).collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown service `{name}` (services: {})", known.join(", ")),
        ));
    };
    let nodes: std::collections::BTreeSet<u64> = placed.iter().copied().collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    for node in nodes {
        let tx = tx.clone();
        if node == ctx.identity.node_id {
            let mut local = Box::pin(local_stream(&ctx, &name, &q));
            tokio::spawn(async move {
                while let Some(Ok(chunk)) = local.next().await {
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            });
            continue;
        }
        let Some(addr) = state.nodes.get(&node).map(|n| n.addr.clone()) else { continue };
        let url = format!("https://{addr}/cluster/logs/{name}?tail={}&follow={}", q.tail, q.follow);
        let client = ctx.node_client.clone();
        tokio::spawn(async move {
            let req = match hyper::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())) {
                Ok(r) => r,
                Err(_) => return,
            };
            let note = |m: String| bytes::Bytes::from(format!("(holdfast: logs from {addr} unavailable: {m})\n"));
            match client.request(req).await {
                Ok(resp) if resp.status().is_success() => {
                    let mut body = resp.into_body();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Ok(data) = frame.into_data() {
                            if tx.send(data).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(resp) => {
                    let _ = tx.send(note(format!("HTTP {}", resp.status()))).await;
                }
                Err(e) => {
                    let _ = tx.send(note(e.to_string())).await;
                }
            }
        });
    }
    drop(tx);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
}

fn local_stream(
    ctx: &NodeContext,
    service: &str,
    q: &LogQuery,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    let state = ctx.control.state();
    let files: Vec<(String, std::path::PathBuf)> = state
        .desired
        .placements
        .get(service)
        .map(|nodes| {
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == ctx.identity.node_id)
                .map(|(i, _)| {
                    let id = holdfast_agent::InstanceId::new(service.to_string(), i as u32);
                    (id.to_string(), ctx.agent.log_file(&id))
                })
                .collect()
        })
        .unwrap_or_default();
    crate::logs::stream(files, q.tail, q.follow, ctx.shutdown.clone())
}

/// `GET /cluster/logs/{service}` (node-to-node): this node's instances of a service.
pub async fn local_logs(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let stream = local_stream(&ctx, &name, &q);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response()
}
