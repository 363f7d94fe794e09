//! Cluster membership and health.
//!
//! - Joining: [`join`] (server side, on the leader) checks a join token through Raft and
//!   signs the new node's certificate; [`perform_join`] is the joining node's side.
//! - Heartbeats: every node tells the leader it is alive, with its instances' status,
//!   every [`ClusterTiming::heartbeat`]; the answer carries every node's instances, so
//!   followers can show cluster-wide status and route with the last view they had.
//! - The leader's duties ([`run`]): record the CA and node records, declare nodes down
//!   after [`ClusterTiming::down_after`] without a heartbeat (and up again), re-place the
//!   replicas of down or drained nodes, and keep the Raft voters spread over sites.
//! - Node labels: `--label` flags reach the cluster with the join, the first
//!   registration, or (once per start) the heartbeat; `holdfast node label` changes them
//!   at runtime and moves the replicas whose node selector no longer matches.
//! - Node commands for the API: tokens, `nodes`, drain, uncordon, labels, remove.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_agent::InstanceStatus;
use holdfast_api::types::{
    NodeActionResponse, NodeLabelsRequest, NodeLabelsResponse, NodeView, NodesResponse, SettingsChange, SettingsView,
    TokenRequest, TokenResponse,
};
use holdfast_placement::NodeId;
use holdfast_state::labels::{node_labels, LabelChange};
use holdfast_state::{ClusterSettings, Command, NodeRecord, Request, Response as Applied};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use holdfast_api::client::error_chain;

use crate::identity::{self, Identity};
use crate::server::ApiError;
use crate::{NodeContext, NodeError};

/// Failure-detection timing, from the cluster's replicated [`ClusterSettings`] (changed
/// with `holdfast cluster set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTiming {
    pub heartbeat: Duration,
    /// No heartbeat for this long: shown as suspect (nothing moves yet).
    pub suspect_after: Duration,
    /// No heartbeat for this long: declared down; its replicas are placed elsewhere.
    pub down_after: Duration,
    /// A voter down for this long is replaced by another node.
    pub voter_replace_after: Duration,
}

impl From<&ClusterSettings> for ClusterTiming {
    fn from(s: &ClusterSettings) -> Self {
        ClusterTiming {
            heartbeat: Duration::from_millis(s.heartbeat_ms),
            suspect_after: Duration::from_millis(s.suspect_after_ms),
            down_after: Duration::from_millis(s.down_after_ms),
            voter_replace_after: Duration::from_millis(s.voter_replace_after_ms),
        }
    }
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming::from(&ClusterSettings::default())
    }
}

/// What the leader knows of each node's liveness (in memory; a new leader starts fresh
/// and gives every node `down_after` before judging it).
#[derive(Default)]
pub struct Liveness {
    seen: HashMap<NodeId, (Instant, Vec<InstanceStatus>)>,
    /// Records nodes reported about themselves, to be written by the leader.
    reported: HashMap<NodeId, NodeRecord>,
    leader_since: Option<Instant>,
    down_since: HashMap<NodeId, Instant>,
    /// `--label` flags nodes started with, to be applied once per start by the leader.
    start_labels: HashMap<NodeId, StartLabels>,
    /// The replicas that could not be moved, as last logged (logged again on change).
    last_stuck: Vec<String>,
    /// The last cluster-wide instance view (from heartbeat answers on followers).
    pub view: BTreeMap<NodeId, Vec<InstanceStatus>>,
    /// Drain events already logged (a stuck move is logged once, not every tick).
    drain_notes: BTreeSet<String>,
}

impl Liveness {
    /// Milliseconds since the node was last heard from.
    pub fn last_seen_ms(&self, id: NodeId) -> Option<u64> {
        self.seen.get(&id).map(|(t, _)| t.elapsed().as_millis() as u64)
    }
}

/// The `--label` flags of one start of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartLabels {
    /// Random per process start: the leader applies the labels once per start.
    pub start_id: u64,
    pub labels: BTreeMap<String, String>,
}

/// Node-to-node: `POST /cluster/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeRecord,
    pub instances: Vec<InstanceStatus>,
    /// The node's `--label` flags, when it started with some.
    #[serde(default)]
    pub start_labels: Option<StartLabels>,
}

/// The leader's answer: every node's instances as it last heard, and which of the
/// sender's own instances are superseded (fencing: stop them now, even before this
/// node's Raft log has caught up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub instances: BTreeMap<NodeId, Vec<InstanceStatus>>,
    #[serde(default)]
    pub stale: Vec<(holdfast_agent::InstanceId, u64)>,
    /// The leader's state revision: a node that just started runs nothing new until its
    /// own state has caught up to it.
    #[serde(default)]
    pub revision: u64,
}

/// `POST /join` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: String,
    pub secret: String,
    pub name: String,
    pub addr: String,
    pub site: String,
    pub arch: String,
    pub capacity: holdfast_placement::Capacity,
    pub public_key_pem: String,
    /// `--label` flags of the joining node.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The id of the joining node's start (see [`StartLabels`]).
    #[serde(default)]
    pub start_id: u64,
}

/// `POST /join` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    pub node_id: NodeId,
    pub name: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub admin_token: String,
}

const LEADER_HEADER: &str = "x-holdfast-leader";

fn not_leader(ctx: &NodeContext) -> Response {
    let leader = ctx.control.leader().map(|(_, a)| a);
    let mut resp = ApiError(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this node is not the leader{}",
            leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default()
        ),
    )
    .into_response();
    if let Some(l) = leader.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(LEADER_HEADER, l);
    }
    resp
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// This node's own record, keeping the flags and labels the cluster set (the `--label`
/// flags when it registers for the first time).
pub fn own_record(ctx: &NodeContext) -> NodeRecord {
    let state = ctx.control.state();
    let existing = state.nodes.get(&ctx.identity.node_id);
    let (labels, labels_start_id) = match existing {
        Some(n) => (n.labels.clone(), n.labels_start_id),
        None => (ctx.start_labels.labels.clone(), ctx.start_labels.start_id),
    };
    NodeRecord {
        id: ctx.identity.node_id,
        name: ctx.identity.name.clone(),
        addr: ctx.advertise.to_string(),
        site: ctx.site.clone(),
        arch: identity::arch().to_string(),
        capacity: identity::capacity(),
        labels,
        labels_start_id,
        cordoned: existing.is_some_and(|n| n.cordoned),
        draining: existing.is_some_and(|n| n.draining),
        down: existing.is_some_and(|n| n.down),
        cert_fingerprint: ctx.identity.cert_fingerprint(),
    }
}

// ---------------------------------------------------------------- joining

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
    let req: JoinRequest = serde_json::from_slice(body).map_err(|e| bad(format!("invalid join request: {e}")))?;
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
    let node = NodeRecord {
        labels: req.labels.clone(),
        labels_start_id: req.start_id,
        cert_fingerprint: holdfast_pki::fingerprint_of_pem(&cert_pem).unwrap_or_default(),
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
    tracing::info!(name = %req.name, node_id, %addr, site = %req.site, "node joined");
    Ok(JoinReply {
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
    let mut target = token.addr.clone();
    for _ in 0..4 {
        let request = hyper::Request::post(format!("https://{target}/join"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .map_err(|e| fail(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(15), client.request(request))
            .await
            .map_err(|_| fail(format!("{target} did not answer within 15s")))?
            .map_err(|e| fail(format!("cannot reach {target}: {}", error_chain(&e))))?;
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
        let reply: JoinReply = serde_json::from_slice(&bytes).map_err(|e| fail(format!("bad join answer: {e}")))?;
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
    Err(fail("too many leader redirects while joining; retry".into()))
}

// ---------------------------------------------------------------- heartbeats

/// `POST /cluster/heartbeat` (leader).
pub async fn heartbeat(State(ctx): State<NodeContext>, body: Bytes) -> Response {
    let hb: Heartbeat = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, format!("invalid heartbeat: {e}")).into_response(),
    };
    if !ctx.control.is_leader() {
        return not_leader(&ctx);
    }
    let state = ctx.control.state();
    let stale = hb
        .instances
        .iter()
        .filter(|i| state.is_stale(hb.node.id, &i.id.service, i.id.replica, i.generation))
        .map(|i| (i.id.clone(), i.generation))
        .collect();
    let mut live = ctx.liveness.lock().await;
    live.seen.insert(hb.node.id, (Instant::now(), hb.instances));
    if let Some(labels) = hb.start_labels {
        live.start_labels.insert(hb.node.id, labels);
    }
    live.reported.insert(hb.node.id, hb.node);
    let instances = live.seen.iter().map(|(id, (_, i))| (*id, i.clone())).collect();
    Json(HeartbeatReply { instances, stale, revision: state.revision }).into_response()
}

async fn send_heartbeat(ctx: &NodeContext, leader_addr: &str) -> Result<HeartbeatReply, String> {
    use http_body_util::BodyExt;
    let start_labels = (!ctx.start_labels.labels.is_empty()).then(|| ctx.start_labels.clone());
    let hb = Heartbeat { node: own_record(ctx), instances: ctx.agent.status(), start_labels };
    let body = serde_json::to_vec(&hb).map_err(|e| e.to_string())?;
    let req = hyper::Request::post(format!("https://{leader_addr}/cluster/heartbeat"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(1), ctx.node_client.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Background duties of every node: heartbeats to the leader, and on the leader the
/// failure detector, re-placement and voter management.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut last_hb_error: Option<String> = None;
    loop {
        // The period follows the cluster's settings as they change.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ctx.timing().heartbeat) => {}
        }
        if ctx.control.is_leader() {
            {
                let mut live = ctx.liveness.lock().await;
                live.leader_since.get_or_insert_with(Instant::now);
                let own = ctx.agent.status();
                live.seen.insert(ctx.identity.node_id, (Instant::now(), own));
                live.reported.insert(ctx.identity.node_id, own_record(&ctx));
                if !ctx.start_labels.labels.is_empty() {
                    live.start_labels.insert(ctx.identity.node_id, ctx.start_labels.clone());
                }
                let view = live.seen.iter().map(|(id, (_, i))| (*id, i.clone())).collect();
                live.view = view;
            }
            apply_fence(&ctx, &ctx.control.state(), None);
            if let Err(e) = leader_duties(&ctx).await {
                tracing::debug!(error = %e, "leader duties");
            }
            continue;
        }
        ctx.liveness.lock().await.leader_since = None;
        let Some((_, addr)) = ctx.control.leader() else { continue };
        match send_heartbeat(&ctx, &addr).await {
            Ok(reply) => {
                if last_hb_error.take().is_some() {
                    tracing::info!(leader = %addr, "heartbeats reach the leader again");
                }
                apply_fence(&ctx, &ctx.control.state(), Some(&reply.stale));
                ctx.liveness.lock().await.view = reply.instances;
                ctx.leader_contact.send_replace(Some(reply.revision));
            }
            Err(e) => {
                if last_hb_error.as_deref() != Some(&e) {
                    tracing::warn!(leader = %addr, error = %e, "heartbeat failed");
                }
                last_hb_error = Some(e);
            }
        }
    }
}

/// Records the leader's fencing verdict: `stale` instances are stopped at once. Entries
/// the local state no longer places here (it has caught up) are forgotten.
fn apply_fence(
    ctx: &NodeContext,
    state: &holdfast_state::ClusterState,
    stale: Option<&[(holdfast_agent::InstanceId, u64)]>,
) {
    let node = ctx.identity.node_id;
    ctx.fenced.send_if_modified(|fenced| {
        let before = fenced.len();
        fenced.retain(|(id, g)| state.is_current(node, &id.service, id.replica, *g));
        let mut added = false;
        for (id, generation) in stale.unwrap_or_default() {
            if fenced.insert((id.clone(), *generation)) {
                tracing::warn!(instance = %id, generation, "the leader says this instance is superseded: stopping it");
                added = true;
            }
        }
        added || fenced.len() != before
    });
}

async fn propose(ctx: &NodeContext, cmd: Command) -> Result<Applied, String> {
    ctx.control.propose(Request::new(cmd)).await.map_err(|e| e.to_string())
}

async fn leader_duties(ctx: &NodeContext) -> Result<(), String> {
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.state();
    // 1. The CA, once (founder only has the key).
    if state.ca.is_none() {
        if let Some(key) = &ctx.identity.ca_key_pem {
            propose(
                ctx,
                Command::SetCa(holdfast_state::model::CaRecord {
                    cert_pem: ctx.identity.ca_pem.clone(),
                    key_pem: key.clone(),
                }),
            )
            .await?;
        }
    }
    // 2. Node records as the nodes report them (flags stay the cluster's).
    let (reported, seen, leader_since, start_labels) = {
        let live = ctx.liveness.lock().await;
        let seen: HashMap<NodeId, Instant> = live.seen.iter().map(|(id, (t, _))| (*id, *t)).collect();
        (live.reported.clone(), seen, live.leader_since.unwrap_or_else(Instant::now), live.start_labels.clone())
    };
    for (id, mut rec) in reported {
        if state.removed_nodes.contains_key(&id) {
            continue;
        }
        if let Some(existing) = state.nodes.get(&id) {
            rec.cordoned = existing.cordoned;
            rec.draining = existing.draining;
            rec.down = existing.down;
            rec.labels = existing.labels.clone();
            rec.labels_start_id = existing.labels_start_id;
            if &rec != existing {
                propose(ctx, Command::UpsertNode(rec)).await?;
            }
        } else if id == ctx.identity.node_id {
            propose(ctx, Command::UpsertNode(rec)).await?;
        }
    }
    // 2b. `--label` flags of a (re)started node, once per start.
    let state = ctx.control.state();
    for (id, start) in start_labels {
        let Some(node) = state.nodes.get(&id) else { continue };
        if node.labels_start_id == start.start_id {
            continue;
        }
        let set: BTreeMap<String, String> = start
            .labels
            .into_iter()
            .filter(|(k, v)| match holdfast_state::labels::user_label_problem(k, Some(v)) {
                Some(problem) => {
                    tracing::warn!(node = %node.name, %problem, "ignoring a --label flag");
                    false
                }
                None => true,
            })
            .collect();
        let cmd =
            Command::SetNodeLabels { id, set: set.clone(), remove: BTreeSet::new(), start_id: Some(start.start_id) };
        match propose(ctx, cmd).await? {
            Applied::Applied { .. } => {
                tracing::info!(node = %node.name, labels = %holdfast_state::labels::format_labels(&set), "applied the node's --label flags")
            }
            other => tracing::warn!(node = %node.name, ?other, "the node's --label flags were refused"),
        }
    }
    // 3. Failure detection.
    let state = ctx.control.state();
    let timing = ClusterTiming::from(&state.settings);
    let now = Instant::now();
    for (id, node) in &state.nodes {
        if *id == ctx.identity.node_id {
            if node.down {
                propose(ctx, Command::SetNodeFlags { id: *id, cordoned: None, down: Some(false), draining: None })
                    .await?;
            }
            continue;
        }
        let last = seen.get(id).copied().unwrap_or(leader_since).max(leader_since);
        let silent = now.saturating_duration_since(last);
        if !node.down && silent >= timing.down_after {
            tracing::warn!(node = %node.name, silent_ms = silent.as_millis() as u64, "node is down; placing its replicas elsewhere");
            propose(ctx, Command::SetNodeFlags { id: *id, cordoned: None, down: Some(true), draining: None }).await?;
            ctx.liveness.lock().await.down_since.insert(*id, now);
        } else if node.down && silent < timing.suspect_after {
            tracing::info!(node = %node.name, "node is back");
            propose(ctx, Command::SetNodeFlags { id: *id, cordoned: None, down: Some(false), draining: None }).await?;
            ctx.liveness.lock().await.down_since.remove(id);
        }
    }
    // 4. Re-place replicas of down, drained or removed nodes, and of nodes that no
    //    longer match a service's placement rules.
    let state = ctx.control.state();
    match holdfast_state::plan::plan_reschedule(&state) {
        Ok(r) => {
            if let Some(desired) = r.desired {
                let applied = propose(ctx, Command::SetDesired { expected_revision: state.revision, desired }).await?;
                tracing::info!(?applied, moves = %r.moves.join(", "), "re-placed replicas");
            }
            let stuck: Vec<String> = r.stuck.iter().map(|e| e.to_string()).collect();
            let mut live = ctx.liveness.lock().await;
            if stuck != live.last_stuck {
                for e in &stuck {
                    tracing::warn!(error = %e, "a replica cannot move; it stays where it is");
                }
                live.last_stuck = stuck;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot re-place replicas"),
    }
    // 4b. Drains: move one replica per service at a time, new instance ready first.
    let state = ctx.control.state();
    if !state.desired.moves.is_empty() || state.nodes.values().any(|n| n.draining) {
        let seen: BTreeMap<NodeId, Vec<InstanceStatus>> = ctx.liveness.lock().await.view.clone();
        let ready = |node: NodeId, service: &str, replica: u32, generation: u64| {
            seen.get(&node).is_some_and(|v| {
                v.iter().any(|i| {
                    i.id.service == service && i.id.replica == replica && i.generation == generation && i.ready
                })
            })
        };
        let (next, events) = holdfast_state::drain::plan_drain_step(&state, &ready);
        let lines: BTreeSet<String> = events.iter().map(|e| e.describe(&state)).collect();
        let mut live = ctx.liveness.lock().await;
        for line in &lines {
            if !live.drain_notes.contains(line) {
                tracing::info!("drain: {line}");
            }
        }
        live.drain_notes = lines;
        drop(live);
        if let Some(desired) = next {
            propose(ctx, Command::SetDesired { expected_revision: state.revision, desired }).await?;
        }
    }
    // 5. Raft membership: every member at least a learner, voters spread over sites.
    let state = ctx.control.state();
    let (voters, learners) = ctx.control.membership();
    for (id, node) in &state.nodes {
        if !voters.contains(id) && !learners.contains(id) {
            if let Err(e) = ctx.control.add_learner(*id, &node.addr).await {
                tracing::debug!(error = %e, node = %node.name, "add learner");
            }
        }
    }
    let gone: BTreeSet<NodeId> = voters.union(&learners).filter(|id| !state.nodes.contains_key(id)).copied().collect();
    if !gone.is_empty() {
        if let Err(e) = ctx.control.remove_members(gone.clone()).await {
            tracing::debug!(error = %e, "removing nodes from raft membership");
        }
        return Ok(());
    }
    let down_since = ctx.liveness.lock().await.down_since.clone();
    let candidates: Vec<(NodeId, String)> = state
        .nodes
        .values()
        .filter(|n| {
            !n.down
                || down_since.get(&n.id).is_none_or(|t| now.saturating_duration_since(*t) < timing.voter_replace_after)
        })
        .filter(|n| voters.contains(&n.id) || learners.contains(&n.id))
        .map(|n| (n.id, n.site.clone()))
        .collect();
    let want = holdfast_state::voters::choose_voters(&candidates, &voters);
    if !want.is_empty() && want != voters {
        tracing::info!(?want, ?voters, "changing raft voters");
        if let Err(e) = ctx.control.set_voters(want).await {
            tracing::debug!(error = %e, "changing voters");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- API: tokens and nodes

/// `POST /v1/tokens`.
pub async fn create_token(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<TokenResponse>, ApiError> {
    let req: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid token request: {e}")))?;
    if req.ttl_ms == 0 || req.ttl_ms > 30 * 24 * 3600 * 1000 {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, "--ttl must be between 1s and 30 days".into()));
    }
    let rnd = |n| identity::random_hex(n).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    let (id, secret) = (rnd(8)?, rnd(32)?);
    let expires_at_ms = now_ms() + req.ttl_ms;
    let state = ctx.control.read_linearizable().await?;
    let ca = state
        .ca
        .as_ref()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the cluster CA is not recorded yet; retry".into()))?;
    let fingerprint = holdfast_pki::fingerprint_of_pem(&ca.cert_pem)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let cmd = Command::AddJoinToken { id: id.clone(), secret_hash: holdfast_pki::hash_secret(&secret), expires_at_ms };
    ctx.control.propose(Request::new(cmd)).await?;
    let join_addr = ctx.advertise.to_string();
    let token =
        holdfast_pki::JoinToken { addr: join_addr.clone(), ca: fingerprint, id, secret, expires_at_ms }.encode();
    Ok(Json(TokenResponse { token, expires_at_ms, join_addr }))
}

/// `GET /v1/nodes`.
pub async fn list_nodes(State(ctx): State<NodeContext>) -> Json<NodesResponse> {
    let state = ctx.control.state();
    let (voters, learners) = ctx.control.membership();
    let leader = ctx.control.leader().map(|(id, _)| id);
    let live = ctx.liveness.lock().await;
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
        let last_seen_ms = if is_leader { live.last_seen_ms(n.id) } else { None };
        let node_state = if n.down {
            "down"
        } else if last_seen_ms.is_some_and(|ms| ms >= ctx.timing().suspect_after.as_millis() as u64) {
            "suspect"
        } else {
            "alive"
        };
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
        });
    }
    Json(NodesResponse { nodes, warnings: cluster_warnings(&ctx) })
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
    let cmd = Command::SetNodeFlags { id: node.id, cordoned: Some(cordoned), down: None, draining };
    match ctx.control.propose(Request::new(cmd)).await? {
        Applied::Applied { revision } => {
            let replicas = replicas_on(&ctx.control.state(), node.id);
            let message = match action {
                NodeAction::Cordon => format!(
                    "node {} cordoned: nothing new is placed there; its {replicas} replica(s) stay (use `drain` to move them)",
                    node.name
                ),
                NodeAction::Drain => format!(
                    "node {} draining: {replicas} replica(s) move to other nodes one at a time, each new instance ready before the old one stops",
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

/// Replicas placed on `node`, including those still moving away from it.
pub fn replicas_on(state: &holdfast_state::ClusterState, node: NodeId) -> usize {
    state.desired.placements.values().map(|p| p.iter().filter(|n| **n == node).count()).sum()
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
        tracing::info!(node = %name, moves = %plan.moves.join(", "), "node labels changed");
    }
    let state = ctx.control.state();
    let node = state.nodes.get(&plan.node).map(|n| (n.name.clone(), node_labels(n))).unwrap_or_default();
    Ok(Json(NodeLabelsResponse { node: node.0, labels: node.1, changed: plan.changed, moves: plan.moves, revision }))
}

fn settings_view(s: &ClusterSettings) -> SettingsView {
    SettingsView {
        heartbeat_ms: s.heartbeat_ms,
        suspect_after_ms: s.suspect_after_ms,
        down_after_ms: s.down_after_ms,
        voter_replace_after_ms: s.voter_replace_after_ms,
    }
}

/// `GET /v1/cluster/settings`.
pub async fn get_settings(State(ctx): State<NodeContext>) -> Result<Json<SettingsView>, ApiError> {
    let state = ctx.control.read_linearizable().await?;
    Ok(Json(settings_view(&state.settings)))
}

/// `PUT /v1/cluster/settings`: changes the given settings; refused as a whole (nothing
/// changed) when the result does not make sense.
pub async fn put_settings(State(ctx): State<NodeContext>, body: Bytes) -> Result<Json<SettingsView>, ApiError> {
    let change: SettingsChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid settings change: {e}")))?;
    let _guard = ctx.change_lock.lock().await;
    let state = ctx.control.read_linearizable().await?;
    let mut next = state.settings;
    next.heartbeat_ms = change.heartbeat_ms.unwrap_or(next.heartbeat_ms);
    next.suspect_after_ms = change.suspect_after_ms.unwrap_or(next.suspect_after_ms);
    next.down_after_ms = change.down_after_ms.unwrap_or(next.down_after_ms);
    next.voter_replace_after_ms = change.voter_replace_after_ms.unwrap_or(next.voter_replace_after_ms);
    next.validate().map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    match ctx.control.propose(Request::new(Command::SetSettings(next))).await? {
        Applied::Applied { .. } => Ok(Json(settings_view(&next))),
        Applied::Refused { reason } => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, reason)),
        other => Err(ApiError(StatusCode::CONFLICT, format!("{other:?}"))),
    }
}

/// How long `node rm` waits for a drain to finish.
const REMOVE_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// `DELETE /v1/nodes/{name}`: drains the node (gracefully, or at once when it is down),
/// then removes it and revokes its certificate.
pub async fn remove_node(
    State(ctx): State<NodeContext>,
    Path(name): Path<String>,
) -> Result<Json<NodeActionResponse>, ApiError> {
    let node = find_node(&ctx, &name)?;
    if node.id == ctx.identity.node_id {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "cannot remove the node that answers this request (the leader); run it against another node".into(),
        ));
    }
    set_flags(&ctx, &name, NodeAction::Drain).await?;
    let deadline = Instant::now() + REMOVE_DRAIN_TIMEOUT;
    loop {
        // The leader's duties move the replicas; wait for them to be gone.
        let state = ctx.control.read_linearizable().await?;
        let left = replicas_on(&state, node.id);
        let moving_in = state.desired.moves.values().any(|m| m.values().any(|n| *n == node.id));
        if left > 0 || moving_in {
            // A replica that no node may take makes the drain wait forever: say so now.
            let stuck: Vec<String> = holdfast_state::drain::stuck(&state)
                .iter()
                .filter(|e| matches!(e, holdfast_state::drain::DrainEvent::Stuck { from, .. } if *from == node.id))
                .map(|e| e.describe(&state))
                .collect();
            if !stuck.is_empty() {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "cannot remove node {}: replicas on it have nowhere else to go (it stays drained):\n  {}",
                        node.name,
                        stuck.join("\n  ")
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "node {} still holds {left} replica(s) after {}s of draining (see `holdfast status`); it stays cordoned and draining: run `holdfast node rm {}` again, or `holdfast uncordon {}`",
                        node.name,
                        REMOVE_DRAIN_TIMEOUT.as_secs(),
                        node.name,
                        node.name
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let _guard = ctx.change_lock.lock().await;
        match ctx
            .control
            .propose(Request::new(Command::RemoveNode { id: node.id, expected_revision: state.revision }))
            .await?
        {
            Applied::Applied { revision } => {
                return Ok(Json(NodeActionResponse {
                    message: format!("node {} removed; its certificate is no longer accepted", node.name),
                    revision,
                }))
            }
            Applied::Conflict { .. } | Applied::Refused { .. } if Instant::now() < deadline => {
                drop(_guard);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                return Err(ApiError(StatusCode::CONFLICT, format!("cannot remove node {}: {other:?}", node.name)))
            }
        }
    }
}

/// All instances the cluster reports, by node (this node's own always fresh).
pub async fn observed_by_node(ctx: &NodeContext) -> BTreeMap<NodeId, Vec<InstanceStatus>> {
    let mut view = ctx.liveness.lock().await.view.clone();
    view.insert(ctx.identity.node_id, ctx.agent.status());
    view
}

/// Shared `Arc` so the context stays cheap to clone.
pub type SharedLiveness = Arc<tokio::sync::Mutex<Liveness>>;
