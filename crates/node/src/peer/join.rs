//! Joining: [`join`] (server side, on the leader) checks a join token through Raft and
//! signs the new node's certificate; [`perform_join`] is the joining node's side, called
//! only once the joining node has bound every listener it needs (see `Node::start`), so
//! a node that cannot start never becomes a member. A member starts as a non-voting
//! learner; the controller promotes it once it has been alive and caught up.
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_api::client::error_chain;
use holdfast_api::peer::{JoinReply, JoinRequest, PeerMessage, PEER_VERSION};
use holdfast_state::labels::StartLabels;
use holdfast_state::{Command, NodeRecord, Request, Response as Applied};

use super::{not_leader, now_ms, LEADER_HEADER};
use crate::api::ApiError;
use crate::identity::{self, Identity};
use crate::{NodeContext, NodeError};

/// `POST /join` (leader): admits a node with a valid token and signs its certificate.
pub async fn join(State(ctx): State<NodeContext>, body: Bytes) -> Response {
    match join_inner(&ctx, &body).await {
        Ok(r) => Json(r).into_response(),
        Err(JoinError::NotLeader) => not_leader(&ctx),
        Err(JoinError::Api(e)) => e.into_response(),
    }
}

enum JoinError {
    NotLeader,
    Api(ApiError),
}

impl From<ApiError> for JoinError {
    fn from(e: ApiError) -> Self {
        JoinError::Api(e)
    }
}

async fn join_inner(ctx: &NodeContext, body: &[u8]) -> Result<JoinReply, JoinError> {
    let bad = |m: String| JoinError::Api(ApiError(StatusCode::BAD_REQUEST, m));
    let req = JoinRequest::decode(body).map_err(|e| bad(e.to_string()))?;
    if !ctx.control.is_leader() {
        return Err(JoinError::NotLeader);
    }
    if !holdfast_spec::names::is_dns_label(&req.name) {
        return Err(bad(format!("invalid node name `{}`: use lowercase letters, digits and '-'", req.name)));
    }
    let addr: std::net::SocketAddr =
        req.addr.parse().map_err(|_| bad(format!("invalid node address `{}`: expected IP:PORT", req.addr)))?;
    if addr.ip().is_unspecified() {
        return Err(bad(format!("node address `{addr}` is not reachable by others; pass --advertise IP:PORT")));
    }
    for (k, v) in &req.labels {
        if let Some(problem) = holdfast_state::labels::user_label_problem(k, Some(v)) {
            return Err(bad(format!("invalid --label {k}={v}: {problem}")));
        }
    }
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.read_linearizable().await.map_err(ApiError::from)?;
    let ca = state.ca.clone().ok_or_else(|| {
        JoinError::Api(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the cluster CA is not recorded yet; retry".into()))
    })?;
    let node_id = identity::random_node_id()
        .map_err(|e| JoinError::Api(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))?;
    let ca = holdfast_pki::Ca { cert_pem: ca.cert_pem, key_pem: ca.key_pem };
    let cert_pem = ca
        .issue_node_cert(&req.name, node_id, &identity::cert_addrs(addr), &req.public_key_pem)
        .map_err(|e| bad(format!("cannot certify the node's public key: {e}")))?;
    // Fail closed: a member whose certificate fingerprint is unknown could never be
    // revoked, so such a join is refused.
    let cert_fingerprint = holdfast_pki::fingerprint_of_pem(&cert_pem).map_err(|e| {
        JoinError::Api(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot fingerprint the new certificate: {e}"),
        ))
    })?;
    let node = NodeRecord {
        labels: req.labels.clone(),
        labels_start_id: req.start_id,
        software: req.software.clone(),
        cert_fingerprint,
        ..NodeRecord::new(node_id, &req.name, addr.to_string(), &req.site, &req.arch, req.capacity)
    };
    let cmd = Command::Join {
        token_id: req.token_id.clone(),
        secret_hash: holdfast_pki::hash_secret(&req.secret),
        now_ms: now_ms(),
        node,
    };
    match ctx.control.propose(Request::new(cmd)).await.map_err(ApiError::from)? {
        Applied::Applied { .. } => {}
        Applied::Refused { reason } => {
            tracing::warn!(name = %req.name, addr = %req.addr, %reason, "join refused");
            return Err(JoinError::Api(ApiError(StatusCode::FORBIDDEN, format!("join refused: {reason}"))));
        }
        other => return Err(JoinError::Api(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("join: {other:?}")))),
    }
    if let Err(e) = ctx.control.add_learner(node_id, &addr.to_string()).await {
        tracing::warn!(error = %e, node_id, "adding the new node as learner failed; the leader retries");
    }
    tracing::info!(name = %req.name, node_id, %addr, site = %req.site, "node joined (as a learner until it has been alive and caught up)");
    Ok(JoinReply {
        v: PEER_VERSION,
        node_id,
        name: req.name,
        cert_pem,
        ca_pem: ca.cert_pem,
        admin_token: ctx.identity.admin_token.clone(),
    })
}

/// The joining node's side: proves the token to the cluster (authenticated by the CA
/// fingerprint in the token), gets a certificate for a key made here, and stores the
/// identity. Nothing is written unless the cluster accepted the join.
pub async fn perform_join(
    dir: &std::path::Path,
    token: &str,
    name: Option<&str>,
    advertise: std::net::SocketAddr,
    site: &str,
    start_labels: &StartLabels,
) -> Result<Identity, NodeError> {
    use http_body_util::BodyExt;
    let fail = |m: String| NodeError::Join(m);
    let token = holdfast_pki::JoinToken::decode(token).map_err(|e| fail(e.to_string()))?;
    if now_ms() >= token.expires_at_ms {
        return Err(fail("this join token has expired; create a new one with `holdfast token create`".into()));
    }
    let key = holdfast_pki::NodeKey::generate().map_err(|e| fail(e.to_string()))?;
    let name = name.map(str::to_string).unwrap_or_else(identity::hostname);
    let req = JoinRequest {
        v: PEER_VERSION,
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        name: name.clone(),
        addr: advertise.to_string(),
        site: site.to_string(),
        arch: identity::arch().to_string(),
        capacity: identity::capacity(),
        public_key_pem: key.public_key_pem().map_err(|e| fail(e.to_string()))?,
        labels: start_labels.labels.clone(),
        start_id: start_labels.start_id,
        software: crate::databases::local_software(),
    };
    let tls = holdfast_pki::tls::pinned_client_config(&token.ca).map_err(|e| fail(e.to_string()))?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(conn);
    let body = serde_json::to_vec(&req).map_err(|e| fail(e.to_string()))?;
    // The token's node first, then the other members it names, until one answers.
    let mut candidates = vec![token.addr.clone()];
    candidates.extend(token.addrs.iter().filter(|a| **a != token.addr).cloned());
    let mut unreachable = Vec::new();
    'candidates: for first in candidates {
        let mut target = first;
        for _ in 0..4 {
            let request = hyper::Request::post(format!("https://{target}/join"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
                .map_err(|e| fail(e.to_string()))?;
            let resp = match tokio::time::timeout(Duration::from_secs(15), client.request(request)).await {
                Err(_) => return Err(fail(format!("{target} did not answer within 15s"))),
                // Never sent: another member may take it.
                Ok(Err(e)) if e.is_connect() => {
                    unreachable.push(format!("{target}: {}", error_chain(&e)));
                    continue 'candidates;
                }
                Ok(Err(e)) => return Err(fail(format!("cannot reach {target}: {}", error_chain(&e)))),
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            let leader = resp.headers().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
            let bytes = resp.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
            if status == StatusCode::MISDIRECTED_REQUEST {
                match leader {
                    Some(l) => {
                        target = l;
                        continue;
                    }
                    None => return Err(fail(format!("{target} is not the leader and knows no leader; retry later"))),
                }
            }
            if !status.is_success() {
                let msg = serde_json::from_slice::<holdfast_api::types::ErrorBody>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                return Err(fail(msg));
            }
            let reply = JoinReply::decode(&bytes).map_err(|e| fail(e.to_string()))?;
            if holdfast_pki::fingerprint_of_pem(&reply.ca_pem).ok().as_deref() != Some(token.ca.as_str()) {
                return Err(fail("the cluster answered with a CA that does not match the token".into()));
            }
            let id = Identity {
                node_id: reply.node_id,
                name: reply.name,
                admin_token: reply.admin_token,
                ca_pem: reply.ca_pem,
                cert_pem: reply.cert_pem,
                key_pem: key.key_pem,
                ca_key_pem: None,
            };
            identity::store(dir, &id)?;
            return Ok(id);
        }
        return Err(fail("too many leader redirects while joining; retry".into()));
    }
    Err(fail(format!("no member of the cluster could be reached: {}", unreachable.join("; "))))
}
