//! `GET /v1/services/{name}/logs` (cluster-wide, merged) and `GET /cluster/logs/{service}`
//! (node-to-node: this node's instances of a service). Both answer one JSON `LogItem` per
//! line; a node that does not answer within 3 s (or, without follow, stops answering) is
//! a `Note`, never a wait without end.
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::NodeContext;

/// `?tail=N&since_ms=&grep=&follow=true` (also for a job run's log): the API's own query.
pub use holdfast_api::client::LogsQuery as LogQuery;

/// Lines of history per instance when neither `tail` nor `since_ms` is given.
const DEFAULT_TAIL: usize = 100;

/// The selection a query asks for; a `grep` that is not a regular expression is a 400.
pub fn selection(q: &LogQuery) -> Result<crate::logs::Selection, ApiError> {
    let grep =
        match &q.grep {
            Some(g) => Some(regex::Regex::new(g).map_err(|e| {
                ApiError(StatusCode::BAD_REQUEST, format!("grep: `{g}` is not a regular expression: {e}"))
            })?),
            None => None,
        };
    let tail = q.tail.or(if q.since_ms.is_none() { Some(DEFAULT_TAIL) } else { None });
    Ok(crate::logs::Selection { since_ms: q.since_ms, tail, grep, follow: q.follow })
}

/// How long another node may take to start answering, and (without follow) between two
/// chunks, before its part is given up with a note.
const NODE_ANSWER: std::time::Duration = std::time::Duration::from_secs(3);

fn note(node: &str, why: String) -> bytes::Bytes {
    let item = holdfast_api::types::LogItem::Note { node: node.to_string(), note: why };
    bytes::Bytes::from(serde_json::to_string(&item).map(|j| j + "\n").unwrap_or_default())
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
    let sel = selection(&q)?;
    let nodes: std::collections::BTreeSet<u64> = placed.iter().copied().collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
    for node in nodes {
        let tx = tx.clone();
        if node == ctx.identity.node_id {
            let mut local = Box::pin(local_stream(&ctx, &name, sel.clone()));
            tokio::spawn(async move {
                while let Some(Ok(chunk)) = local.next().await {
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            });
            continue;
        }
        let Some((node_name, addr)) = state.nodes.get(&node).map(|n| (n.name.clone(), n.addr.clone())) else {
            continue;
        };
        let url = format!("https://{addr}/cluster/logs/{name}?{}", q.to_query());
        let (client, follow) = (ctx.node_client.clone(), q.follow);
        tokio::spawn(async move {
            let req = match hyper::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())) {
                Ok(r) => r,
                Err(_) => return,
            };
            let unavailable = |m: String| note(&node_name, format!("logs from {node_name} ({addr}) unavailable: {m}"));
            match tokio::time::timeout(NODE_ANSWER, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    let mut body = resp.into_body();
                    loop {
                        // Without follow, a node that stops sending mid-answer (frozen,
                        // cut off) is given up after a pause; with follow, quiet is normal.
                        let frame = if follow {
                            body.frame().await
                        } else {
                            match tokio::time::timeout(NODE_ANSWER, body.frame()).await {
                                Ok(f) => f,
                                Err(_) => {
                                    let _ = tx.send(unavailable("it stopped answering".into())).await;
                                    return;
                                }
                            }
                        };
                        let Some(Ok(frame)) = frame else { return };
                        if let Ok(data) = frame.into_data() {
                            if tx.send(data).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(Ok(resp)) => {
                    let _ = tx.send(unavailable(format!("HTTP {}", resp.status()))).await;
                }
                Ok(Err(e)) => {
                    let _ = tx.send(unavailable(e.to_string())).await;
                }
                Err(_) => {
                    let _ = tx.send(unavailable(format!("no answer within {NODE_ANSWER:?}"))).await;
                }
            }
        });
    }
    drop(tx);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

fn local_stream(
    ctx: &NodeContext,
    service: &str,
    sel: crate::logs::Selection,
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
    crate::logs::stream(ctx.identity.name.clone(), files, sel, crate::logs::Format::Json, ctx.shutdown.clone())
}

/// `GET /cluster/logs/{service}` (node-to-node): this node's instances of a service.
pub async fn local_logs(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let stream = local_stream(&ctx, &name, selection(&q)?);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}
