//! The HTTPS server on the holdfast port — the one port nodes need between them.
//!
//! Every connection is TLS with this node's certificate; a client certificate signed by
//! the cluster CA is optional at the TLS layer and checked per route:
//! - `/v1/...` — the API: needs the admin token or an API token whose scope grants the
//!   call (`api::acl::need_for`). On a follower, every `/v1` request except logs and
//!   status-without-quorum is forwarded to the leader.
//! - `/raft/...`, `/cluster/...` — node-to-node: need a CA-signed certificate that was not
//!   revoked by `holdfast node rm`. Among them `CONNECT /cluster/tunnel/{port}`: HTTP/2
//!   extended CONNECT is enabled so one connection per peer carries all its tunnels.
//! - `/join` — a new node with a join token (no certificate yet).
//! - `/healthz` — open.
//! - `/ui/...` — the web dashboard ([`crate::ui`]): the same token as `/v1` reads, or its
//!   login cookie.
//!
//! The handlers are in [`crate::api`] (by resource) and [`crate::peer`]; a `/v1` request's
//! proposals and reads wait at most its commit timeout (header
//! [`COMMIT_TIMEOUT_HEADER`], default 10 s) for the voters.
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{connect, delete, get, post, put};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::api::{
    acl, certs, databases, events, jobs, local, logs, nodes, routes, secrets, services, settings, tokens, usage,
    ApiError,
};
use crate::NodeContext;

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
        .route("/v1/deploy", post(services::deploy))
        .route("/v1/status", get(services::status))
        .route("/v1/services/{name}/restart", post(services::restart))
        .route("/v1/services/{name}/scale", post(services::scale))
        .route("/v1/services/{name}", delete(services::remove))
        .route("/v1/tokens", post(tokens::create_token))
        .route("/v1/nodes", get(nodes::list_nodes))
        .route("/v1/databases", get(databases::list))
        .route("/v1/databases/{name}/url", get(databases::url))
        .route("/v1/databases/{name}/switchover", post(databases::switchover))
        .route("/v1/nodes/{name}/cordon", post(nodes::cordon))
        .route("/v1/nodes/{name}/drain", post(nodes::drain))
        .route("/v1/nodes/{name}/uncordon", post(nodes::uncordon))
        .route("/v1/nodes/{name}/labels", post(nodes::label_node))
        .route("/v1/nodes/{name}", delete(nodes::remove_node))
        .route("/v1/cluster/settings", get(settings::get_settings).put(settings::put_settings))
        .route("/v1/secrets", get(secrets::list))
        .route("/v1/secrets/{project}/{name}", get(secrets::history).put(secrets::set).delete(secrets::remove))
        .route("/v1/secrets-key/rotate", post(secrets::rotate_key))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{name}", get(jobs::history))
        .route("/v1/jobs/{name}/run", post(jobs::start))
        .route("/v1/acl/tokens", get(acl::list).post(acl::create))
        .route("/v1/certs/{host}/renew", post(certs::renew))
        .route("/v1/acme", put(certs::set_acme))
        .route("/v1/acl/tokens/{id}", delete(acl::remove))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), forward_to_leader));
    let api = Router::new()
        .merge(forwarded)
        .route("/v1/services/{name}/logs", get(logs::logs))
        .route("/v1/jobs/{name}/runs/{id}/logs", get(jobs::logs))
        .route("/v1/node/reexec", post(local::reexec))
        .route("/v1/workers", get(local::workers))
        .route("/v1/events", get(events::events))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/routes", get(routes::routes))
        .route("/v1/certs", get(certs::list))
        .route("/metrics", get(crate::metrics::metrics))
        .route_layer(middleware::from_fn(commit_timeout))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    let peers = Router::new()
        .route("/raft/{rpc}", post(raft_rpc))
        .route("/cluster/heartbeat", post(crate::peer::heartbeat::handle))
        .route("/cluster/logs/{service}", get(logs::local_logs))
        .route("/cluster/tunnel/{port}", connect(crate::tunnel::accept).get(crate::tunnel::accept))
        .route("/cluster/links", get(crate::tunnel::links))
        .route("/cluster/events", get(events::local))
        .route("/cluster/usage", get(usage::local_usage))
        .route("/cluster/secrets-key", get(crate::secrets::serve_key))
        .route("/cluster/run-logs/{job}/{id}", get(jobs::local_logs))
        .route("/cluster/route-stats", get(routes::local))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_member_cert));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/join", post(crate::peer::join::join))
        .merge(api)
        .merge(peers)
        .merge(crate::ui::router(ctx.clone()))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(ctx)
}

/// The header the CLI sends its `--commit-timeout` in (milliseconds).
pub const COMMIT_TIMEOUT_HEADER: &str = "x-holdfast-commit-timeout-ms";

/// Bounds how long the request's proposals and linearizable reads wait for the voters:
/// the CLI's `--commit-timeout` (1 s to 10 min), else the default of 10 s.
async fn commit_timeout(req: Request, next: Next) -> Response {
    let asked = req.headers().get(COMMIT_TIMEOUT_HEADER).and_then(|v| v.to_str().ok()).map(str::parse::<u64>);
    let timeout = match asked {
        None => holdfast_raft::DEFAULT_COMMIT_TIMEOUT,
        Some(Ok(ms)) if (1_000..=600_000).contains(&ms) => std::time::Duration::from_millis(ms),
        Some(_) => {
            return refuse(
                req,
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{COMMIT_TIMEOUT_HEADER} must be milliseconds between 1000 and 600000"),
                ),
            )
            .await
        }
    };
    holdfast_raft::with_commit_timeout(timeout, next.run(req)).await
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Every `/v1` call: the bearer token must be the admin token or an API token whose
/// scope grants the call; the caller is handed to the handler (history lines, and the
/// checks that need the request body, such as a deploy's project).
async fn require_token(State(ctx): State<NodeContext>, mut req: Request, next: Next) -> Response {
    if !ctx.started.load(Ordering::SeqCst) {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "the node is still starting; try again in a moment".into())
            .into_response();
    }
    let state = ctx.control.state();
    let caller = match bearer(&req) {
        Some(t) => match acl::authenticate(&state, &ctx.identity.admin_token, &|t| ctx.keyring.check_job_token(t), t) {
            Some(c) => c,
            None => return refuse(req, ApiError(StatusCode::UNAUTHORIZED, "the API token was refused".into())).await,
        },
        None => {
            return refuse(
                req,
                ApiError(
                    StatusCode::UNAUTHORIZED,
                    "missing API token: send `Authorization: Bearer <token>` (the admin token is in admin.token in the data directory; scoped ones come from `holdfast acl token create`)".into(),
                ),
            )
            .await
        }
    };
    if let Some(need) = acl::need_for(req.method(), req.uri().path(), &state) {
        if let Err(e) = caller.require(&need) {
            return refuse(req, e).await;
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
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

/// Sends `req` to the member at `addr` as a forwarded request (the headers a `/v1` call
/// needs, never forwarded again) and returns its answer.
pub(crate) async fn forward(ctx: &NodeContext, addr: &str, req: Request) -> Result<Response, String> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = hyper::Request::builder().method(parts.method.clone()).uri(format!("https://{addr}{path}"));
    for (k, v) in parts.headers.iter() {
        if k == header::AUTHORIZATION || k == header::CONTENT_TYPE || k == header::ACCEPT || k == COMMIT_TIMEOUT_HEADER
        {
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
