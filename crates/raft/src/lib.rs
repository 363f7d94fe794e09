//! holdfast's control plane: openraft over a durable redb store.
//!
//! - [`store`]: the Raft log, vote and state machine in one redb file (`raft.redb` in the
//!   data directory); the state machine is [`holdfast_state::ClusterState`], published to
//!   the rest of the node through a `tokio::sync::watch` channel after every apply.
//! - [`network`]: node-to-node Raft RPC (append, vote, snapshot, transfer-leader) as JSON
//!   over HTTP, client side; [`network::handle_rpc`] is the server side, mounted by the
//!   node's HTTP server.
//! - [`ControlPlane`]: starting Raft on a data directory (new cluster or restart) and
//!   proposing commands.
#![forbid(unsafe_code)]

use std::sync::Arc;

use holdfast_state::{ClusterState, Request, Response};

pub use openraft::async_runtime::WatchReceiver;

pub mod network;
pub mod store;

pub use store::{force_single_voter, AppliedEvents, Recovered};

openraft::declare_raft_types!(
    /// Types holdfast's Raft runs with.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, store::StateMachine>;
pub type NodeId = u64;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("raft store: {0}")]
    Store(#[from] store::StoreError),
    #[error("raft: {0}")]
    Fatal(String),
    #[error("this node is not the leader{}", leader.as_ref().map(|l| format!(" (leader: {l})")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    #[error("the control plane has no quorum or is shutting down: {0}")]
    Unavailable(String),
    /// A change or read that needs the voters could not get a majority of them.
    #[error("{what} needs a majority of the {voters} control-plane voters, but {}; nothing was changed. Bring them back, or if they are gone for good, see `holdfast cluster recover --help`", describe_unreachable(unreachable))]
    NoQuorum { what: &'static str, voters: usize, unreachable: Vec<(String, Option<u64>)> },
    /// A change was sent to the voters but did not commit in time.
    #[error("{what} did not commit within {}s ({}); it is not applied, and applies only if those voters come back first", after_ms / 1000, describe_unreachable(unreachable))]
    Timeout { what: &'static str, after_ms: u64, unreachable: Vec<(String, Option<u64>)> },
}

fn describe_unreachable(unreachable: &[(String, Option<u64>)]) -> String {
    if unreachable.is_empty() {
        return "every voter answers".into();
    }
    let each: Vec<String> = unreachable
        .iter()
        .map(|(name, ms)| match ms {
            Some(ms) => format!("{name} (last answered {:.1}s ago)", *ms as f64 / 1000.0),
            None => format!("{name} (never answered this leader)"),
        })
        .collect();
    format!("{} {} unreachable", each.join(", "), if unreachable.len() == 1 { "is" } else { "are" })
}

/// How long a change or linearizable read may wait for the voters by default.
pub const DEFAULT_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A voter that has not acknowledged the leader for this long counts as unreachable.
const UNREACHABLE_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

tokio::task_local! {
    static COMMIT_TIMEOUT: std::time::Duration;
}

/// Runs `fut` with another bound on how long its proposals and linearizable reads wait
/// for the voters (e.g. an API request's `--commit-timeout`).
pub async fn with_commit_timeout<F: std::future::Future>(timeout: std::time::Duration, fut: F) -> F::Output {
    COMMIT_TIMEOUT.scope(timeout, fut).await
}

fn commit_timeout() -> std::time::Duration {
    COMMIT_TIMEOUT.try_with(|t| *t).unwrap_or(DEFAULT_COMMIT_TIMEOUT)
}

/// A running Raft node with its store.
#[derive(Clone)]
pub struct ControlPlane {
    pub raft: Raft,
    pub node_id: NodeId,
    state: tokio::sync::watch::Receiver<Arc<ClusterState>>,
    events: tokio::sync::broadcast::Sender<store::AppliedEvents>,
    stats: Arc<RaftStats>,
}

/// Upper bounds (seconds) of the buckets of the commit-latency histogram.
pub const COMMIT_BUCKETS_S: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0];

/// What this node counted of the control plane since it started (for `/metrics`).
#[derive(Debug, Default)]
pub struct RaftStats {
    /// Times the leader this node knows of changed (to another node or to none).
    pub leader_changes: std::sync::atomic::AtomicU64,
    /// Changes this node proposed that were committed and applied here.
    pub commits: std::sync::atomic::AtomicU64,
    /// Sum of their commit latencies (propose to applied), microseconds.
    pub commit_latency_us_sum: std::sync::atomic::AtomicU64,
    /// Commits per bucket of [`COMMIT_BUCKETS_S`] (not cumulative).
    pub commit_buckets: [std::sync::atomic::AtomicU64; COMMIT_BUCKETS_S.len()],
}

impl RaftStats {
    fn record_commit(&self, elapsed: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commits.fetch_add(1, Relaxed);
        self.commit_latency_us_sum.fetch_add(elapsed.as_micros() as u64, Relaxed);
        let s = elapsed.as_secs_f64();
        if let Some(i) = COMMIT_BUCKETS_S.iter().position(|b| s <= *b) {
            self.commit_buckets[i].fetch_add(1, Relaxed);
        }
    }
}

/// Timing of the Raft protocol. Defaults suit a LAN or Wi-Fi: a follower starts an
/// election after 500–900 ms without a heartbeat (every 200 ms), so one lost segment and
/// its TCP retransmission (the heartbeats share one stream, so a loss delays them all by
/// the retransmission timeout, 200 ms and up) never starts one. The interval sets the
/// idle cost: openraft's tick runs every 13/64 of it on every node and the leader sends
/// one RPC per follower per interval; 120 ms cost an idle 3-node leader 1.1–1.2% of a
/// core, 200 ms 0.8–0.9% (`bench/footprint.sh`). The one-voter cluster elects itself
/// immediately.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 200,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 900,
            snapshot_every: 500,
        }
    }
}

impl ControlPlane {
    /// Opens (or creates) the store in `data_dir` and starts Raft. When `bootstrap` is
    /// given and the store is new, a one-voter cluster with this node is initialised.
    pub async fn start(
        data_dir: &std::path::Path,
        node_id: NodeId,
        addr: &str,
        timing: RaftTiming,
        network: network::Network,
        bootstrap: bool,
    ) -> Result<ControlPlane, ControlPlaneError> {
        let config = openraft::Config {
            cluster_name: "holdfast".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_timeout_min_ms,
            election_timeout_max: timing.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| ControlPlaneError::Fatal(e.to_string()))?);
        let (log, sm) = store::open(&data_dir.join("raft.redb"))?;
        let state = sm.subscribe();
        let events = sm.events();
        let raft =
            Raft::new(node_id, config, network, log, sm).await.map_err(|e| ControlPlaneError::Fatal(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| ControlPlaneError::Fatal(e.to_string()))?;
        if bootstrap && !initialized {
            let members = std::collections::BTreeMap::from([(node_id, openraft::BasicNode::new(addr))]);
            raft.initialize(members).await.map_err(|e| ControlPlaneError::Fatal(e.to_string()))?;
        }
        let stats = Arc::new(RaftStats::default());
        // Count leader changes as this node sees them (the task ends with Raft's metrics).
        let (mut metrics, counted) = (raft.metrics(), stats.clone());
        tokio::spawn(async move {
            use openraft::async_runtime::WatchReceiver;
            let mut last = metrics.borrow_watched().current_leader;
            while metrics.changed().await.is_ok() {
                let now = metrics.borrow_watched().current_leader;
                if now != last {
                    counted.leader_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    last = now;
                }
            }
        });
        Ok(ControlPlane { raft, node_id, state, events, stats })
    }

    /// What this node counted of the control plane (leader changes, commit latency).
    pub fn stats(&self) -> &RaftStats {
        &self.stats
    }

    /// The latest applied state (may lag the leader by the replication delay).
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// A receiver that sees every newly applied state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// The events of log entries as this node applies them (see
    /// `holdfast_state::events`); a slow receiver misses the oldest (`Lagged`).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<store::AppliedEvents> {
        self.events.subscribe()
    }

    /// Waits until this node is leader with its log applied, and returns the state as of
    /// a linearizable read: planning against it cannot miss a committed change.
    ///
    /// Bounded: without a majority of voters answering it fails at once (or after the
    /// commit timeout), naming the voters that do not answer.
    pub async fn read_linearizable(&self) -> Result<Arc<ClusterState>, ControlPlaneError> {
        use openraft::errors::{LinearizableReadError, RaftError};
        self.check_quorum("reading the cluster state")?;
        let timeout = commit_timeout();
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex)).await {
            Err(_) => Err(self.timed_out("reading the cluster state", timeout)),
            Ok(Ok(_)) => Ok(self.state()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(ControlPlaneError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => {
                // Raft just asked the voters and too few answered: name those that did not.
                let (voters, _) = self.membership();
                let unreachable = self.voters_where(|id, _| !q.got.contains(&id));
                Err(ControlPlaneError::NoQuorum {
                    what: "reading the cluster state",
                    voters: voters.len(),
                    unreachable,
                })
            }
            Ok(Err(e)) => Err(ControlPlaneError::Unavailable(e.to_string())),
        }
    }

    /// Proposes a command and waits until it is committed and applied here. Bounded as
    /// [`ControlPlane::read_linearizable`] is; a command is applied whole or not at all.
    pub async fn propose(&self, req: Request) -> Result<Response, ControlPlaneError> {
        use openraft::errors::{ClientWriteError, RaftError};
        self.check_quorum("this change")?;
        let timeout = commit_timeout();
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, self.raft.client_write(req)).await {
            Err(_) => Err(self.timed_out("this change", timeout)),
            Ok(Ok(resp)) => {
                self.stats.record_commit(started.elapsed());
                Ok(resp.response().clone())
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ControlPlaneError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(e)) => Err(ControlPlaneError::Unavailable(e.to_string())),
        }
    }

    /// On the leader: the voters that have not acknowledged it within
    /// [`UNREACHABLE_AFTER`] (name, ms since their last acknowledgement).
    pub fn unreachable_voters(&self) -> Vec<(String, Option<u64>)> {
        use openraft::async_runtime::WatchReceiver;
        // Acknowledgements are tracked only while leading; a follower judges nobody.
        if self.raft.metrics().borrow_watched().heartbeat.is_none() {
            return Vec::new();
        }
        self.voters_where(|_, since| since.is_none_or(|d| d >= UNREACHABLE_AFTER))
    }

    /// On the leader: the other voters for which `pick(id, time since its last
    /// acknowledgement)` holds, as (name, ms since that acknowledgement).
    fn voters_where(&self, pick: impl Fn(NodeId, Option<std::time::Duration>) -> bool) -> Vec<(String, Option<u64>)> {
        use openraft::async_runtime::WatchReceiver;
        use openraft::rt::Instant as _;
        let m = self.raft.metrics().borrow_watched().clone();
        let state = self.state();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.node_id)
            .filter_map(|id| {
                let since = m.heartbeat.as_ref().and_then(|acks| acks.get(&id)?.as_ref()).map(|t| t.elapsed());
                pick(id, since).then(|| {
                    let name = state.nodes.get(&id).map(|n| n.name.clone()).unwrap_or_else(|| format!("node {id}"));
                    (name, since.map(|d| d.as_millis() as u64))
                })
            })
            .collect()
    }

    /// Refuses at once when this leader knows a majority of voters does not answer.
    fn check_quorum(&self, what: &'static str) -> Result<(), ControlPlaneError> {
        if !self.is_leader() {
            return Ok(());
        }
        let (voters, _) = self.membership();
        let unreachable = self.unreachable_voters();
        let reachable = voters.len().saturating_sub(unreachable.len());
        if reachable * 2 <= voters.len() {
            return Err(ControlPlaneError::NoQuorum { what, voters: voters.len(), unreachable });
        }
        Ok(())
    }

    fn timed_out(&self, what: &'static str, after: std::time::Duration) -> ControlPlaneError {
        ControlPlaneError::Timeout { what, after_ms: after.as_millis() as u64, unreachable: self.unreachable_voters() }
    }

    /// On the leader: per member, how many log entries it is behind the leader's log
    /// (members not replicating yet are absent).
    pub fn replication_lag(&self) -> std::collections::BTreeMap<NodeId, u64> {
        use openraft::async_runtime::WatchReceiver;
        let m = self.raft.metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        let mut out = std::collections::BTreeMap::new();
        if let Some(rep) = m.replication.as_ref() {
            for (id, matched) in rep {
                if let Some(matched) = matched {
                    out.insert(*id, last.saturating_sub(matched.index));
                }
            }
        }
        out.insert(self.node_id, 0);
        out
    }

    /// The Raft term this node is in.
    pub fn term(&self) -> Option<u64> {
        use openraft::async_runtime::WatchReceiver;
        let m = self.raft.metrics().borrow_watched().clone();
        Some(m.current_term)
    }

    /// The leader this node currently knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        use openraft::async_runtime::WatchReceiver;
        let m = self.raft.metrics().borrow_watched().clone();
        let id = m.current_leader?;
        // A node that just joined may know the leader's id before its membership config
        // lists the leader; the replicated node registry has the address too.
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.state().nodes.get(&id).map(|n| n.addr.clone()))?;
        Some((id, addr))
    }

    /// True when this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader().map(|(id, _)| id) == Some(self.node_id)
    }

    /// How long ago a quorum of voters last acknowledged this node as their leader; `None`
    /// when it is not the leader (or has not heard from a quorum yet). A one-voter
    /// cluster's leader is its own quorum: always `Some(0)`.
    pub fn since_quorum_ack(&self) -> Option<std::time::Duration> {
        use openraft::async_runtime::WatchReceiver;
        use openraft::Instant as _;
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.node_id) {
            return None;
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return Some(std::time::Duration::ZERO);
        }
        m.last_quorum_acked.as_ref().map(|at| at.elapsed())
    }

    /// Voters and learners of the current membership.
    pub fn membership(&self) -> (std::collections::BTreeSet<NodeId>, std::collections::BTreeSet<NodeId>) {
        use openraft::async_runtime::WatchReceiver;
        let m = self.raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = mem.voter_ids().collect();
        let learners: std::collections::BTreeSet<NodeId> = mem.learner_ids().collect();
        (voters, learners)
    }

    /// Adds a node as a learner (it receives the log, does not vote); returns once the
    /// membership entry committed, without waiting for the learner to catch up.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), ControlPlaneError> {
        self.membership_change("adding a learner", self.raft.add_learner(id, openraft::BasicNode::new(addr), false))
            .await
    }

    /// Removes nodes from the Raft membership entirely: voters among them are removed
    /// as voters (and from the node list) first, then the learners.
    pub async fn remove_members(&self, ids: std::collections::BTreeSet<NodeId>) -> Result<(), ControlPlaneError> {
        let (voters, learners) = self.membership();
        let voting: std::collections::BTreeSet<NodeId> = ids.intersection(&voters).copied().collect();
        if !voting.is_empty() {
            let change = self.raft.change_membership(openraft::ChangeMembers::RemoveVoters(voting), false);
            self.membership_change("removing voters", change).await?;
        }
        let rest: std::collections::BTreeSet<NodeId> = ids.intersection(&learners).copied().collect();
        if !rest.is_empty() {
            let change = self.raft.change_membership(openraft::ChangeMembers::RemoveNodes(rest), false);
            self.membership_change("removing learners", change).await?;
        }
        Ok(())
    }

    /// Makes exactly `voters` the voters; other members stay as learners.
    pub async fn set_voters(&self, voters: std::collections::BTreeSet<NodeId>) -> Result<(), ControlPlaneError> {
        self.membership_change("changing the voters", self.raft.change_membership(voters, true)).await
    }

    async fn membership_change<T, E: std::fmt::Display>(
        &self,
        what: &'static str,
        change: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<(), ControlPlaneError> {
        self.check_quorum(what)?;
        let timeout = commit_timeout();
        match tokio::time::timeout(timeout, change).await {
            Err(_) => Err(self.timed_out(what, timeout)),
            Ok(r) => r.map(|_| ()).map_err(|e| ControlPlaneError::Unavailable(e.to_string())),
        }
    }

    /// Waits (up to `timeout`) until this node knows a leader.
    pub async fn wait_for_leader(&self, timeout: std::time::Duration) -> Result<NodeId, ControlPlaneError> {
        use openraft::async_runtime::WatchReceiver;
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = metrics.borrow_watched().current_leader {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ControlPlaneError::Unavailable("raft stopped".into())),
                Err(_) => return Err(ControlPlaneError::Unavailable("no leader elected in time".into())),
            }
        }
    }

    /// Stops Raft; the store stays consistent on disk.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
