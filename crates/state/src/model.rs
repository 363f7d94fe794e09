//! The state model: desired services, routes and placements, and the node registry.
use std::collections::BTreeMap;

use holdfast_placement::{Assignment, Capacity, NodeId};
use holdfast_spec::{RouteSpec, ServiceSpec};
use serde::{Deserialize, Serialize};

/// Version of the encoding of [`ClusterState`] and [`crate::Request`]. Bump it with a
/// migration from the previous version whenever a stored type changes shape.
pub const FORMAT_VERSION: u32 = 1;

/// Everything the control plane agrees on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub format: u32,
    /// Bumped by every applied change; a change is proposed against the revision it was
    /// planned on, so two concurrent deploys cannot silently overwrite each other.
    pub revision: u64,
    pub desired: Desired,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The cluster CA (certificate and key), so whichever node leads can admit new
    /// nodes. Stored only in the Raft store, which lives in the 0700 data directory.
    #[serde(default)]
    pub ca: Option<CaRecord>,
    /// Join tokens by id; only the hash of each secret is kept.
    #[serde(default)]
    pub join_tokens: BTreeMap<String, JoinTokenRecord>,
    /// Nodes removed with `holdfast node rm`: their certificates are no longer accepted,
    /// even if they come back with them.
    #[serde(default)]
    pub removed_nodes: BTreeMap<NodeId, String>,
}

/// The cluster certificate authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A join token as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub secret_hash: String,
    pub expires_at_ms: u64,
    /// The node that used it; a token admits one node only.
    pub used_by: Option<NodeId>,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            format: FORMAT_VERSION,
            revision: 0,
            desired: Desired::default(),
            nodes: BTreeMap::new(),
            ca: None,
            join_tokens: BTreeMap::new(),
            removed_nodes: BTreeMap::new(),
        }
    }
}

/// The desired workloads of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub services: BTreeMap<String, ServiceRecord>,
    pub routes: Vec<RouteSpec>,
    /// Replica `i` of service `s` runs on node `placements[s][i]`.
    pub placements: Assignment,
}

/// One service as the cluster runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The project (stack) the service was deployed with; a deploy of a project only
    /// creates, updates and deletes that project's services.
    pub project: String,
    pub spec: ServiceSpec,
    /// The service's stable address in 127.64.0.0/10, the same on every node: the node's
    /// proxy listens there on the service's named ports. Chosen at creation from a hash of
    /// `project/name` (probing past collisions) and never changed afterwards.
    pub address: std::net::Ipv4Addr,
    /// Bumped whenever running instances must be replaced: a change of anything but the
    /// replica count, or a `restart`. Instances of an older generation are replaced.
    pub generation: u64,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub name: String,
    /// Address of the node's holdfast port (API and Raft).
    pub addr: String,
    pub site: String,
    pub arch: String,
    pub capacity: Capacity,
    /// Labels set by users (`--label`, `holdfast node label`); selectors also see the
    /// built-ins `name`, `site` and `arch` (see [`crate::labels::node_labels`]).
    pub labels: BTreeMap<String, String>,
    /// The node process start (a random id per start) whose `--label` flags were last
    /// applied; a restart with another id applies its flags once. 0: none yet.
    #[serde(default)]
    pub labels_start_id: u64,
    /// Drained or cordoned by a user: nothing is placed here.
    pub cordoned: bool,
    /// Declared down by the leader's failure detector: its replicas are placed elsewhere.
    #[serde(default)]
    pub down: bool,
    /// SHA-256 of the node's certificate: only members' certificates are accepted for
    /// node-to-node traffic.
    #[serde(default)]
    pub cert_fingerprint: String,
}

impl ClusterState {
    /// Services that belong to `project`.
    pub fn project_services<'a>(
        &'a self,
        project: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ServiceRecord)> + 'a {
        self.desired.services.iter().filter(move |(_, r)| r.project == project)
    }

    /// Placement input: the nodes as the scheduler sees them.
    pub fn node_views(&self) -> Vec<holdfast_placement::NodeView> {
        self.nodes
            .values()
            .map(|n| holdfast_placement::NodeView {
                id: n.id,
                name: n.name.clone(),
                schedulable: !n.cordoned && !n.down,
                capacity: n.capacity,
                labels: crate::labels::node_labels(n),
            })
            .collect()
    }
}
