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
}

/// A running Raft node with its store.
#[derive(Clone)]
pub struct ControlPlane {
    pub raft: Raft,
    pub node_id: NodeId,
    state: tokio::sync::watch::Receiver<Arc<ClusterState>>,
}

/// Timing of the Raft protocol. Defaults suit a LAN or Wi-Fi (4 heartbeats in a row must
/// be lost before a follower starts an election); the one-voter cluster elects itself
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
            heartbeat_ms: 120,
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
        let raft =
            Raft::new(node_id, config, network, log, sm).await.map_err(|e| ControlPlaneError::Fatal(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| ControlPlaneError::Fatal(e.to_string()))?;
        if bootstrap && !initialized {
            let members = std::collections::BTreeMap::from([(node_id, openraft::BasicNode::new(addr))]);
            raft.initialize(members).await.map_err(|e| ControlPlaneError::Fatal(e.to_string()))?;
        }
        Ok(ControlPlane { raft, node_id, state })
    }

    /// The latest applied state (may lag the leader by the replication delay).
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// A receiver that sees every newly applied state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// Waits until this node is leader with its log applied, and returns the state as of
    /// a linearizable read: planning against it cannot miss a committed change.
    pub async fn read_linearizable(&self) -> Result<Arc<ClusterState>, ControlPlaneError> {
        use openraft::errors::{LinearizableReadError, RaftError};
        match self.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(self.state()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ControlPlaneError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(e) => Err(ControlPlaneError::Unavailable(e.to_string())),
        }
    }

    /// Proposes a command and waits until it is committed and applied here.
    pub async fn propose(&self, req: Request) -> Result<Response, ControlPlaneError> {
        use openraft::errors::{ClientWriteError, RaftError};
        match self.raft.client_write(req).await {
            Ok(resp) => Ok(resp.response().clone()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ControlPlaneError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(e) => Err(ControlPlaneError::Unavailable(e.to_string())),
        }
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

    /// Voters and learners of the current membership.
    pub fn membership(&self) -> (std::collections::BTreeSet<NodeId>, std::collections::BTreeSet<NodeId>) {
        use openraft::async_runtime::WatchReceiver;
        let m = self.raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = mem.voter_ids().collect();
        let learners: std::collections::BTreeSet<NodeId> = mem.learner_ids().collect();
        (voters, learners)
    }

    /// Adds a node as a learner (it receives the log, does not vote); returns at once.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), ControlPlaneError> {
        self.raft
            .add_learner(id, openraft::BasicNode::new(addr), false)
            .await
            .map(|_| ())
            .map_err(|e| ControlPlaneError::Unavailable(e.to_string()))
    }

    /// Removes nodes from the Raft membership entirely.
    pub async fn remove_members(&self, ids: std::collections::BTreeSet<NodeId>) -> Result<(), ControlPlaneError> {
        self.raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(ids), false)
            .await
            .map(|_| ())
            .map_err(|e| ControlPlaneError::Unavailable(e.to_string()))
    }

    /// Makes exactly `voters` the voters; other members stay as learners.
    pub async fn set_voters(&self, voters: std::collections::BTreeSet<NodeId>) -> Result<(), ControlPlaneError> {
        self.raft
            .change_membership(voters, true)
            .await
            .map(|_| ())
            .map_err(|e| ControlPlaneError::Unavailable(e.to_string()))
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
