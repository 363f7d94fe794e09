//! Heartbeats: every node tells the leader it is alive, with its instances' status, every
//! `heartbeat` period (a cluster setting). The leader keeps what it heard in
//! [`Liveness`] — the controller's observations — and answers with every node's instances
//! (so followers can show cluster-wide status and route with the last view they had) and
//! a fencing verdict: the sender's instances that a newer placement superseded.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast_agent::InstanceStatus;
use holdfast_api::client::error_chain;
use holdfast_api::peer::{Heartbeat, HeartbeatReply, MemberStatus, PeerMessage, PEER_VERSION};
use holdfast_placement::NodeId;
use holdfast_state::NodeRecord;
use tokio_util::sync::CancellationToken;

use super::not_leader;
use crate::api::ApiError;
use crate::identity;
use crate::workers::Pass;
use crate::NodeContext;

/// The worker name heartbeats report under.
pub const WORKER: &str = "heartbeats";

/// What the leader heard from each node (in memory; a new leader starts fresh and gives
/// every node `down_after` before judging it), and on followers the last cluster-wide
/// instance view from the leader's answers.
#[derive(Default)]
pub struct Liveness {
    /// Per node: when its last heartbeat arrived, and the heartbeat.
    pub seen: HashMap<NodeId, (Instant, Heartbeat)>,
    /// The last cluster-wide instance view.
    pub view: BTreeMap<NodeId, Vec<InstanceStatus>>,
    /// The last cluster-wide view of database members.
    pub db_view: BTreeMap<NodeId, Vec<MemberStatus>>,
    /// On the leader: since when it leads, and the members' view it had as a follower
    /// then. For one database lease it routes to the members of nodes it has not heard
    /// yet as that view had them (an election must not empty `-rw` and cut its
    /// connections while the primary's node is still on its way to the new leader).
    pub led: Option<(Instant, BTreeMap<NodeId, Vec<MemberStatus>>)>,
}

impl Liveness {
    /// Every node's instances as last heard (the leader's view).
    pub fn heard_instances(&self) -> BTreeMap<NodeId, Vec<InstanceStatus>> {
        self.seen.iter().map(|(id, (_, h))| (*id, h.instances.clone())).collect()
    }

    /// Every node's database members as last heard, leaving out nodes not heard within
    /// `within` when given (the leader's view).
    pub fn heard_members(&self, within: Option<Duration>) -> BTreeMap<NodeId, Vec<MemberStatus>> {
        self.seen
            .iter()
            .filter(|(_, (at, _))| within.is_none_or(|w| at.elapsed() < w))
            .map(|(id, (_, h))| (*id, h.databases.clone()))
            .collect()
    }

    /// Milliseconds since the node was last heard from.
    pub fn last_seen_ms(&self, id: NodeId) -> Option<u64> {
        self.seen.get(&id).map(|(t, _)| t.elapsed().as_millis() as u64)
    }
}

/// Shared `Arc` so the context stays cheap to clone.
pub type SharedLiveness = Arc<tokio::sync::Mutex<Liveness>>;

/// This node's own record, keeping the flags and labels the cluster set (the `--label`
/// flags when it registers for the first time).
pub fn own_record(ctx: &NodeContext) -> NodeRecord {
    let state = ctx.control.state();
    let existing = state.nodes.get(&ctx.identity.node_id);
    let (labels, labels_start_id) = match existing {
        Some(n) => (n.labels.clone(), n.labels_start_id),
        None => (ctx.start_labels.labels.clone(), ctx.start_labels.start_id),
    };
    let software = crate::databases::local_software();
    NodeRecord {
        labels,
        labels_start_id,
        software,
        cordoned: existing.is_some_and(|n| n.cordoned),
        draining: existing.is_some_and(|n| n.draining),
        down: existing.is_some_and(|n| n.down),
        removing: existing.is_some_and(|n| n.removing),
        cert_fingerprint: ctx.cert_fingerprint.clone(),
        edge: ctx.edge.clone(),
        ..NodeRecord::new(
            ctx.identity.node_id,
            ctx.identity.name.clone(),
            ctx.advertise.to_string(),
            ctx.site.clone(),
            identity::arch(),
            identity::capacity(),
        )
    }
}

/// This node's heartbeat as it would send it now.
pub fn own_heartbeat(ctx: &NodeContext) -> Heartbeat {
    let start_labels = (!ctx.start_labels.labels.is_empty()).then(|| ctx.start_labels.clone());
    // Database members travel as `databases` (their agent instances are no service's).
    let instances = ctx.agent.status().into_iter().filter(|s| !crate::databases::is_member(&s.id)).collect();
    Heartbeat { v: PEER_VERSION, node: own_record(ctx), instances, start_labels, databases: ctx.dbs.statuses() }
}

/// `POST /cluster/heartbeat` (leader).
pub async fn handle(State(ctx): State<NodeContext>, body: Bytes) -> Response {
    let hb = match Heartbeat::decode(&body) {
        Ok(h) => h,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if !ctx.control.is_leader() {
        return not_leader(&ctx);
    }
    let state = ctx.control.state();
    let reports: Vec<holdfast_control::InstanceReport> = hb.instances.iter().map(instance_report).collect();
    let stale = holdfast_control::fence::stale(&state, hb.node.id, &reports)
        .into_iter()
        .map(|(service, replica, generation)| (holdfast_agent::InstanceId::new(service, replica), generation))
        .collect();
    let mut live = ctx.liveness.lock().await;
    let before = live.seen.get(&hb.node.id).map(|(_, h)| routing(&h.databases) != routing(&hb.databases));
    if before.unwrap_or(!hb.databases.is_empty()) {
        ctx.members_changed.send_modify(|n| *n += 1);
    }
    live.seen.insert(hb.node.id, (Instant::now(), hb));
    let (instances, databases) = (live.heard_instances(), live.heard_members(None));
    Json(HeartbeatReply { v: PEER_VERSION, instances, stale, revision: state.revision, databases }).into_response()
}

/// What the controller needs of an instance's status.
pub fn instance_report(i: &InstanceStatus) -> holdfast_control::InstanceReport {
    holdfast_control::InstanceReport {
        service: i.id.service.clone(),
        replica: i.id.replica,
        generation: i.generation,
        ready: i.ready,
        running: i.pid.is_some(),
        exited: (i.state == holdfast_agent::InstanceState::Exited)
            .then(|| i.last_exit.as_ref().map(|e| (e.code, e.description.clone())))
            .flatten(),
    }
}

async fn send(ctx: &NodeContext, leader_addr: &str) -> Result<HeartbeatReply, String> {
    use http_body_util::BodyExt;
    let body = serde_json::to_vec(&own_heartbeat(ctx)).map_err(|e| e.to_string())?;
    let req = hyper::Request::post(format!("https://{leader_addr}/cluster/heartbeat"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(1), ctx.node_client.request(req))
        .await
        .map_err(|_| "no answer within 1s".to_string())?
        .map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    HeartbeatReply::decode(&bytes).map_err(|e| e.to_string())
}

/// Every node: heartbeats to the leader (on the leader: records its own). One goes out
/// every period whether or not the previous one was answered (each waits at most 1 s),
/// so one lost heartbeat does not delay the next and the lease survives it; a database
/// member changing role sends one at once. Answers are applied in sending order.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let applied = Arc::new(AtomicU64::new(0));
    let mut roles = ctx.dbs.subscribe_roles();
    let mut seq = 0u64;
    let mut awaiting_since: Option<Instant> = None;
    loop {
        // The period follows the cluster's settings as they change; while a database's
        // new primary has not been heard of yet, answers are fetched every 50 ms so this
        // node's proxies route to it as soon as it takes writes.
        let awaiting = awaiting_primary(&ctx).await;
        let since = *awaiting_since.get_or_insert_with(Instant::now);
        if !awaiting {
            awaiting_since = None;
        }
        // At most 10 s of fast answers per wait (a promotion that does not finish is
        // reported by the database runner; this node goes back to its period).
        // While this node's lease has lapsed (the leader died, an election is under
        // way) too: a held primary's commits complete at the first answer.
        let lapsed = {
            let state = ctx.control.state();
            ctx.lease.standing(Duration::from_millis(state.settings.db_lease_ms), state.revision)
                == crate::lease::Standing::Lapsed
        } && !ctx.dbs.statuses().is_empty();
        let fast = (awaiting && since.elapsed() < Duration::from_secs(10)) || lapsed;
        let period = if fast { FAST_PERIOD } else { ctx.heartbeat_period() };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            r = roles.changed() => if r.is_err() { return },
        }
        seq += 1;
        let (ctx, applied) = (ctx.clone(), applied.clone());
        let n = seq;
        tokio::spawn(async move {
            let pass = beat(&ctx, n, &applied).await;
            ctx.workers.report(WORKER, pass);
        });
    }
}

/// The heartbeat period while a new primary is awaited.
const FAST_PERIOD: Duration = Duration::from_millis(50);

/// Whether some database's primary of the current term has not reported itself primary
/// in this node's view (a failover or switchover is under way). Not on the leader, whose
/// view is fresh.
async fn awaiting_primary(ctx: &NodeContext) -> bool {
    if ctx.control.is_leader() {
        return false;
    }
    let state = ctx.control.state();
    if state.desired.databases.is_empty() {
        return false;
    }
    let live = ctx.liveness.lock().await;
    state.desired.databases.iter().any(|(name, rec)| {
        let Some(node) = rec.primary_node() else { return false };
        let reported = live.db_view.get(&node).is_some_and(|v| {
            v.iter().any(|m| {
                &m.database == name
                    && m.member == rec.primary
                    && m.role == holdfast_api::peer::MemberRole::Primary
                    && m.term == rec.term
            })
        });
        // Only while the primary's node is alive (a dead one never reports).
        !reported && state.nodes.get(&node).is_some_and(|n| !n.down) && live.db_view.contains_key(&node)
    })
}

/// The part of members' reports routing depends on.
/// (database, member, term, role, answering, port) of one report.
type RoutingKey<'a> = (&'a str, u32, u64, holdfast_api::peer::MemberRole, bool, Option<u16>);

fn routing(members: &[MemberStatus]) -> Vec<RoutingKey<'_>> {
    members.iter().map(|m| (m.database.as_str(), m.member, m.term, m.role, m.answering, m.port)).collect()
}

/// Wakes the networking loop when the members' routing-relevant reports changed.
fn note_members(
    ctx: &NodeContext,
    before: &BTreeMap<NodeId, Vec<MemberStatus>>,
    after: &BTreeMap<NodeId, Vec<MemberStatus>>,
) {
    let same = before.len() == after.len()
        && before.iter().zip(after.iter()).all(|((a, x), (b, y))| a == b && routing(x) == routing(y));
    if !same {
        ctx.members_changed.send_modify(|n| *n += 1);
    }
}

async fn beat(ctx: &NodeContext, seq: u64, applied: &AtomicU64) -> Pass {
    if ctx.control.is_leader() {
        if let Some(age) = ctx.control.since_quorum_ack() {
            ctx.lease.renew(Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
        }
        let hb = own_heartbeat(ctx);
        let mut live = ctx.liveness.lock().await;
        if live.led.is_none() {
            live.led = Some((Instant::now(), live.db_view.clone()));
        }
        live.seen.insert(ctx.identity.node_id, (Instant::now(), hb));
        live.view = live.heard_instances();
        let db_view = live.heard_members(None);
        note_members(ctx, &live.db_view, &db_view);
        live.db_view = db_view;
        drop(live);
        apply_fence(ctx, &ctx.control.state(), None);
        return Pass::Idle("this node is the leader");
    }
    {
        let mut live = ctx.liveness.lock().await;
        live.seen.clear();
        live.led = None;
    }
    let Some((_, addr)) = ctx.control.leader() else { return Pass::Error("no leader known".into()) };
    let sent_at = Instant::now();
    match send(ctx, &addr).await {
        Ok(reply) => {
            // The leader heard this node no earlier than `sent_at`; the renewal counts
            // once this node's state has what the leader's had when it answered.
            ctx.lease.renew_at_revision(sent_at, reply.revision, ctx.control.state().revision);
            if applied.fetch_max(seq, Ordering::SeqCst) > seq {
                return Pass::Steady; // a later heartbeat's answer is already applied
            }
            apply_fence(ctx, &ctx.control.state(), Some(&reply.stale));
            let mut live = ctx.liveness.lock().await;
            live.view = reply.instances;
            note_members(ctx, &live.db_view, &reply.databases);
            live.db_view = reply.databases;
            drop(live);
            ctx.leader_contact.send_replace(Some(reply.revision));
            Pass::Steady
        }
        Err(e) => Pass::Error(format!("heartbeat to the leader at {addr}: {e}")),
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

/// All instances the cluster reports, by node (this node's own always fresh). The leader
/// answers from the heartbeats as they arrive — the same observations its controller
/// decides on, so `status` never shows a drain's new instance as not ready after the
/// controller saw it ready; a follower answers from the view of its last heartbeat reply.
pub async fn observed_by_node(ctx: &NodeContext) -> BTreeMap<NodeId, Vec<InstanceStatus>> {
    let mut view = {
        let live = ctx.liveness.lock().await;
        if ctx.control.is_leader() && !live.seen.is_empty() {
            live.heard_instances()
        } else {
            live.view.clone()
        }
    };
    view.insert(ctx.identity.node_id, ctx.agent.status());
    view
}

/// Every node's database members as last heard (this node's own always fresh), like
/// [`observed_by_node`].
pub async fn members_by_node(ctx: &NodeContext) -> BTreeMap<NodeId, Vec<MemberStatus>> {
    let mut view = {
        let live = ctx.liveness.lock().await;
        if ctx.control.is_leader() && !live.seen.is_empty() {
            // A node not heard within the database lease: its reports are not current
            // (its primary may be fenced or dead) and route nothing. A new leader keeps
            // what it knew as a follower for the nodes it has not heard yet.
            let lease = Duration::from_millis(ctx.control.state().settings.db_lease_ms);
            let mut heard = live.heard_members(Some(lease));
            if let Some((_, inherited)) = live.led.as_ref().filter(|(since, _)| since.elapsed() < lease) {
                for (node, members) in inherited {
                    if !live.seen.contains_key(node) {
                        heard.entry(*node).or_insert_with(|| members.clone());
                    }
                }
            }
            heard
        } else {
            live.db_view.clone()
        }
    };
    view.insert(ctx.identity.node_id, ctx.dbs.statuses());
    view
}
