//! The HTTPS server on the holdfast port — the one port nodes need between them.
//!
//! Every connection is TLS with this node's certificate; a client certificate signed by
//! the cluster CA is optional at the TLS layer and checked per route:
//! - `/v1/...` — the API: needs the admin token. On a follower, every `/v1` request
//!   except logs and status-without-quorum is forwarded to the leader.
//! - `/raft/...`, `/cluster/...` — node-to-node: need a CA-signed certificate that was not
//!   revoked by `holdfast node rm`. Among them `CONNECT /cluster/tunnel/{port}`: HTTP/2
//!   extended CONNECT is enabled so one connection per peer carries all its tunnels.
//! - `/join` — a new node with a join token (no certificate yet).
//! - `/healthz` — open.
//!
//! Handlers plan changes with `holdfast_state::plan` and propose them through Raft; a bad
//! request changes nothing.
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{connect, delete, get, post};
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
            PlanError::UnknownService { .. } | PlanError::UnknownNode { .. } => StatusCode::NOT_FOUND,
            PlanError::Placement(_)
            | PlanError::ServiceOwnedByOtherProject { .. }
            | PlanError::RouteTaken { .. }
            | PlanError::LabelsStrandReplicas { .. } => StatusCode::CONFLICT,
            PlanError::InvalidSpec(_) | PlanError::BadReplicas(_) | PlanError::BadLabel(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        ApiError(status, e.to_string())
    }
}

/// The certificate fingerprint of the client of one connection, if it sent one.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Option<String>);

/// Serves HTTPS until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    ctx: NodeContext,
    cancel: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // HTTP/2 carries the node-to-node tunnels (extended CONNECT, one stream per tunneled
    // connection, see links.rs); pings reap the streams of a peer that vanished.
    let ping = ctx.links.timing().server_ping_interval;
    builder
        .http2()
        .enable_connect_protocol()
        .max_concurrent_streams(crate::links::MAX_STREAMS)
        .initial_stream_window_size(crate::links::STREAM_WINDOW)
        .initial_connection_window_size(crate::links::CONNECTION_WINDOW)
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping);
    let builder = std::sync::Arc::new(builder);
    let app = router(ctx);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let cancel = cancel.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let peer =
                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(holdfast_pki::tls::peer_fingerprint);
            let svc = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(PeerCert(peer))));
            let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::trace!(%remote, error = %e, "connection ended with an error") },
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// The whole route table.
pub fn router(ctx: NodeContext) -> Router {
    let forwarded = Router::new()
        .route("/v1/deploy", post(deploy))
        .route("/v1/status", get(status))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/scale", post(scale))
        .route("/v1/services/{name}", delete(remove))
        .route("/v1/tokens", post(crate::cluster::create_token))
        .route("/v1/nodes", get(crate::cluster::list_nodes))
        .route("/v1/nodes/{name}/cordon", post(crate::cluster::cordon))
        .route("/v1/nodes/{name}/drain", post(crate::cluster::drain))
        .route("/v1/nodes/{name}/uncordon", post(crate::cluster::uncordon))
        .route("/v1/nodes/{name}/labels", post(crate::cluster::label_node))
        .route("/v1/nodes/{name}", delete(crate::cluster::remove_node))
        .route("/v1/cluster/settings", get(crate::cluster::get_settings).put(crate::cluster::put_settings))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), forward_to_leader));
    let api = Router::new()
        .merge(forwarded)
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/node/reexec", post(reexec))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_admin_token));
    let nodes = Router::new()
        .route("/raft/{rpc}", post(raft_rpc))
        .route("/cluster/heartbeat", post(crate::cluster::heartbeat))
        .route("/cluster/logs/{service}", get(local_logs))
        .route("/cluster/tunnel/{port}", connect(crate::tunnel::accept).get(crate::tunnel::accept))
        .route("/cluster/links", get(crate::tunnel::links))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_member_cert));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/join", post(crate::cluster::join))
        .merge(api)
        .merge(nodes)
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
        Some(_) => refuse(req, ApiError(StatusCode::UNAUTHORIZED, "the API token was refused".into())).await,
        None => {
            refuse(
                req,
                ApiError(
                    StatusCode::UNAUTHORIZED,
                    "missing API token: send `Authorization: Bearer <token>` (the token is in admin.token in the data directory)".into(),
                ),
            )
            .await
        }
    }
}

/// Answers a refused request after reading (a bounded amount of) its body: over HTTP/2
/// an answer sent while the client is still sending makes the server reset the stream,
/// and some clients (curl 7.88) then drop the answer and report no status at all.
async fn refuse(req: Request, error: ApiError) -> Response {
    let body = req.into_body();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), axum::body::to_bytes(body, 64 * 1024)).await;
    error.into_response()
}

/// Node-to-node routes: a client certificate of this cluster that was not revoked.
async fn require_member_cert(State(ctx): State<NodeContext>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerCert>().and_then(|p| p.0.clone());
    match peer {
        None => {
            refuse(
                req,
                ApiError(StatusCode::UNAUTHORIZED, "node-to-node endpoint: a cluster certificate is required".into()),
            )
            .await
        }
        Some(fp) if ctx.control.state().removed_nodes.values().any(|r| r == &fp) => {
            refuse(
                req,
                ApiError(
                    StatusCode::FORBIDDEN,
                    "this node was removed from the cluster; its certificate is revoked".into(),
                ),
            )
            .await
        }
        Some(_) => next.run(req).await,
    }
}

const FORWARDED: &str = "x-holdfast-forwarded";

/// On a follower, sends the request to the leader and returns its answer. Without a
/// known leader, `GET /v1/status` is answered from this node's own view (the data plane
/// keeps running without quorum); changes answer 503.
async fn forward_to_leader(State(ctx): State<NodeContext>, req: Request, next: Next) -> Response {
    if ctx.control.is_leader() || req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let mut leader = ctx.control.leader();
    if leader.is_none() {
        // An election takes about a second, and a node that just joined learns the
        // leader's address with its first log entries: wait rather than refuse at once.
        let wait = if req.method() == axum::http::Method::GET { 1000 } else { 3000 };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait);
        while leader.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            leader = ctx.control.leader();
        }
        if ctx.control.is_leader() {
            return next.run(req).await;
        }
    }
    let Some((_, addr)) = leader else {
        if req.method() == axum::http::Method::GET {
            return next.run(req).await;
        }
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control plane has no leader (no quorum): changes are not possible now; running services keep running"
                .into(),
        )
        .into_response();
    };
    match forward(&ctx, &addr, req).await {
        Ok(resp) => resp,
        Err(e) => ApiError(StatusCode::BAD_GATEWAY, format!("cannot reach the leader at {addr}: {e}")).into_response(),
    }
}

async fn forward(ctx: &NodeContext, addr: &str, req: Request) -> Result<Response, String> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = hyper::Request::builder().method(parts.method.clone()).uri(format!("https://{addr}{path}"));
    for (k, v) in parts.headers.iter() {
        if k == header::AUTHORIZATION || k == header::CONTENT_TYPE || k == header::ACCEPT {
            out = out.header(k, v);
        }
    }
    let out = out.header(FORWARDED, "1").body(http_body_util::Full::new(body)).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(60), ctx.node_client.request(out))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
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
    Json(crate::status::build(&ctx).await)
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

/// `GET /v1/services/{name}/logs`: this node's instances from their files, other nodes'
/// instances through those nodes (`/cluster/logs`), merged into one stream.
async fn logs(
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
async fn local_logs(State(ctx): State<NodeContext>, Path(name): Path<String>, Query(q): Query<LogQuery>) -> Response {
    let stream = local_stream(&ctx, &name, &q);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response()
}

async fn reexec(State(ctx): State<NodeContext>) -> impl IntoResponse {
    tracing::info!("re-exec requested through the API");
    ctx.reexec.store(true, Ordering::SeqCst);
    ctx.shutdown.cancel();
    (StatusCode::ACCEPTED, "re-executing; workloads keep running\n")
}
