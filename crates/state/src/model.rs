//! The state model: desired services, routes, placements and databases, and the node
//! registry.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use holdfast_placement::{Assignment, Capacity, NodeId};
use holdfast_spec::{DatabaseSpec, DbEndpoint, RouteSpec, ServiceSpec};
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
    /// When each replica got the node it is on (see [`crate::fencing`]); maintained by
    /// [`ClusterState::apply`], never planned.
    #[serde(default)]
    pub epochs: Epochs,
    /// Per-cluster settings (failure detection).
    #[serde(default)]
    pub settings: ClusterSettings,
    /// Secrets by `project/name`, sealed (see [`crate::secrets`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::secrets::SecretRecord>,
    /// The id of the cluster key every secret is sealed under (recorded with the first
    /// secret; a value sealed under another key is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key_id: Option<String>,
    /// API tokens besides the admin token, by id (see [`crate::acl`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_tokens: BTreeMap<String, crate::acl::ApiTokenRecord>,
    /// Each job's runs and schedule cursor (see [`crate::jobs`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<String, crate::jobs::JobRuns>,
    /// Automatic certificates (see [`crate::acme`]).
    #[serde(default)]
    pub acme: crate::acme::AcmeState,
}

/// The revision at which each replica was assigned to its current node, and at which each
/// move started. An instance's generation is the larger of its service's generation and
/// its epoch, so a replica that moves, or comes back to a node it left, is a new instance
/// there; an older one still running anywhere is stale and is fenced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epochs {
    /// `slots[s][i]`: when replica `i` of service `s` got its current node.
    pub slots: BTreeMap<String, Vec<u64>>,
    /// `moves[s][i]`: when the move of replica `i` to its target node started.
    pub moves: BTreeMap<String, BTreeMap<u32, u64>>,
}

/// Default [`ClusterSettings::db_lease_ms`].
pub const DEFAULT_DB_LEASE_MS: u64 = 1_500;

/// Failure-detection timing, the same for every node of the cluster and changed with
/// `holdfast cluster set`. Defaults are tuned for Raspberry Pis on Wi-Fi: a lost packet or
/// two never flips a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// How often every node heartbeats to the leader.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long: the node is shown as suspect (nothing moves yet).
    pub suspect_after_ms: u64,
    /// No heartbeat for this long: the node is declared down and its replicas are placed
    /// elsewhere.
    pub down_after_ms: u64,
    /// A Raft voter down for this long is replaced by another node.
    pub voter_replace_after_ms: u64,
    /// A new member votes only after it has been alive and caught up with the log for
    /// this long (it starts as a non-voting learner), so a node that dies at once costs
    /// no quorum.
    pub promote_after_ms: u64,
    /// Database primary lease: the leader promotes a standby only after it has not heard
    /// from the primary's node for this long, and a primary's node holds every commit
    /// when it has had no heartbeat answer for `db_lease_ms - 500` (so the old primary
    /// acknowledges nothing once a new one may be promoted) and stops its PostgreSQL at
    /// `2 × db_lease_ms - 500`.
    pub db_lease_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_ms: 300,
            suspect_after_ms: 1_200,
            down_after_ms: 3_000,
            voter_replace_after_ms: 30_000,
            promote_after_ms: 5_000,
            db_lease_ms: DEFAULT_DB_LEASE_MS,
        }
    }
}

impl ClusterSettings {
    /// Checks the settings make sense together; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        let s = self;
        if !(50..=10_000).contains(&s.heartbeat_ms) {
            return Err(format!("heartbeat must be between 50ms and 10s, got {}ms", s.heartbeat_ms));
        }
        if s.suspect_after_ms < 2 * s.heartbeat_ms {
            return Err(format!(
                "suspect-after ({}ms) must be at least two heartbeats ({}ms), or one lost packet flags a node",
                s.suspect_after_ms,
                2 * s.heartbeat_ms
            ));
        }
        if s.down_after_ms <= s.suspect_after_ms {
            return Err(format!(
                "down-after ({}ms) must be longer than suspect-after ({}ms)",
                s.down_after_ms, s.suspect_after_ms
            ));
        }
        if s.down_after_ms > 600_000 {
            return Err(format!("down-after must be at most 10m, got {}ms", s.down_after_ms));
        }
        if s.promote_after_ms > 600_000 {
            return Err(format!("promote-after must be at most 10m, got {}ms", s.promote_after_ms));
        }
        if !(1_000..=60_000).contains(&s.db_lease_ms) {
            return Err(format!("db-lease must be between 1s and 60s, got {}ms", s.db_lease_ms));
        }
        if s.voter_replace_after_ms < s.down_after_ms {
            return Err(format!(
                "voter-replace-after ({}ms) must not be shorter than down-after ({}ms)",
                s.voter_replace_after_ms, s.down_after_ms
            ));
        }
        Ok(())
    }
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
            epochs: Epochs::default(),
            settings: ClusterSettings::default(),
            secrets: BTreeMap::new(),
            secrets_key_id: None,
            api_tokens: BTreeMap::new(),
            runs: BTreeMap::new(),
            acme: crate::acme::AcmeState::default(),
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
    /// Replicas being moved off a draining node: `moves[s][i]` is the node where a new
    /// instance of replica `i` starts *before* the one on `placements[s][i]` stops. The
    /// leader turns a move into the placement once the new instance is ready.
    #[serde(default)]
    pub moves: BTreeMap<String, BTreeMap<u32, NodeId>>,
    /// Managed databases by name (never the name of a service). Absent in state written
    /// before databases existed.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseRecord>,
    /// Jobs by name (never the name of a service), each with its project.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, crate::jobs::JobRecord>,
    /// DNS zones the edge nodes answer, by zone name, each with its project.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, ZoneRecord>,
}

/// A zone as deployed: the project that owns it and its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub project: String,
    pub spec: holdfast_spec::ZoneSpec,
}

/// One managed database as the cluster runs it: a primary and standbys, each member on
/// its own node, the primary named by `term` (a fencing generation: a member that was
/// primary for an older term is stale and must not take writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// The project (stack) the database was deployed with.
    pub project: String,
    pub spec: DatabaseSpec,
    /// Bumped when the spec changes in anything but `instances` and `placement` (the
    /// members' configuration must be rewritten).
    pub generation: u64,
    /// Member `i` runs on node `members[i]`; never two members on one node.
    pub members: Vec<NodeId>,
    /// The primary's term: starts at 1, bumped by every promotion
    /// ([`crate::Command::SetDatabasePrimary`]).
    pub term: u64,
    /// The member index that is primary for `term`.
    pub primary: u32,
    pub credentials: DbCredentials,
    /// Stable addresses of the endpoints (port [`DbEngine::port`](holdfast_spec::DbEngine::port)).
    pub addresses: DbAddresses,
    /// A switchover asked for by a user, being carried out by the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<Switchover>,
    /// The synchronous standbys the leader chose for the primary of `term`; `None`: every
    /// other member (the default, and what every promotion resets it to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_set: Option<SyncSet>,
    /// The member the leader asks to restart now (settings changed that take effect only
    /// after a restart; one member at a time, the primary by a switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<u32>,
}

impl DatabaseRecord {
    /// The node the primary runs on.
    pub fn primary_node(&self) -> Option<NodeId> {
        self.members.get(self.primary as usize).copied()
    }

    /// The members a commit waits for while member `primary` is the primary: the list of
    /// its `synchronous_standby_names = 'ANY k (...)'` — [`DatabaseRecord::sync_set`]'s
    /// names, or every other member.
    pub fn sync_names(&self, primary: u32) -> Vec<u32> {
        match &self.sync_set {
            Some(set) => self.valid_standbys(primary, set.names.iter().copied()),
            None => self.valid_standbys(primary, 0..self.members.len() as u32),
        }
    }

    /// The members an acknowledged commit of member `primary` may be on (`k` of them,
    /// `k = spec.sync`): the names it waits for, and members leaving the list that its
    /// commits may still have waited for (see [`SyncSet::leaving`]). A failover counts
    /// these.
    pub fn sync_standbys(&self, primary: u32) -> Vec<u32> {
        match &self.sync_set {
            Some(set) => self.valid_standbys(primary, set.names.iter().chain(&set.leaving).copied()),
            None => self.sync_names(primary),
        }
    }

    fn valid_standbys(&self, primary: u32, members: impl Iterator<Item = u32>) -> Vec<u32> {
        let n = self.members.len() as u32;
        let set: BTreeSet<u32> = members.filter(|m| *m < n && *m != primary).collect();
        set.into_iter().collect()
    }
}

/// A primary's synchronous standbys, chosen by the leader so that with several sites a
/// commit is acknowledged by a standby in another site than the primary's.
///
/// A change that drops members goes in two steps, so a failover never counts too few:
/// `names` is the new list and `leaving` the dropped members, still counted by
/// [`DatabaseRecord::sync_standbys`]; once the primary reports running with `names`
/// and `k` of them hold its WAL, `leaving` is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSet {
    pub names: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<u32>,
}

/// The port every database endpoint listens on.
pub use holdfast_spec::POSTGRES_PORT;

/// Passwords of a database's roles. They come from the planner's caller (the state is
/// pure and has no randomness) and are kept across redeploys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbCredentials {
    /// Password of the superuser role `holdfast`.
    pub superuser: String,
    /// Password of the replication role `holdfast_replication`.
    pub replication: String,
    /// Password of each user of the spec.
    pub users: BTreeMap<String, String>,
}

/// A database's endpoint addresses in 127.64.0.0/10, chosen like a service's from the
/// hash of `project/<db>-rw` (`-ro`, `-r`) and never changed afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbAddresses {
    /// The primary.
    pub rw: Ipv4Addr,
    /// Replicas only.
    pub ro: Ipv4Addr,
    /// Any member.
    pub r: Ipv4Addr,
    /// Redis: the Sentinel-compatible endpoint (`None` for PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<Ipv4Addr>,
}

impl DbAddresses {
    /// The address of `endpoint` (`None`: the database has no such endpoint).
    pub fn get(&self, endpoint: DbEndpoint) -> Option<Ipv4Addr> {
        match endpoint {
            DbEndpoint::Rw => Some(self.rw),
            DbEndpoint::Ro => Some(self.ro),
            DbEndpoint::R => Some(self.r),
            DbEndpoint::Sentinel => self.sentinel,
        }
    }
}

/// A planned switchover of a database's primary (`Command::SetDatabaseSwitchover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// The member to promote; `None`: the most advanced healthy replica (the leader fills
    /// it in when it starts fencing).
    pub to: Option<u32>,
    /// The term the switchover was asked for; it ends with the next term.
    pub requested_term: u64,
    #[serde(default)]
    pub phase: SwitchoverPhase,
}

/// Where a switchover is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchoverPhase {
    /// Asked for; the primary still takes writes.
    #[default]
    Requested,
    /// The primary's node must stop taking writes (stop PostgreSQL, report `Fenced` with
    /// its final position); the target is promoted once it has caught up.
    Fencing,
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
    /// A roll in progress across the cluster (a `restart`, a new secret version): only
    /// the first `rolled` replicas run `generation` yet; the leader lets the next one
    /// go once the last one it let go is ready, so one instance at a time is replaced
    /// however many nodes they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The architectures the service's image offers (`amd64`, `arm64`), read from its
    /// manifest by the node that planned the deploy: replicas go only on nodes of one of
    /// them. `None`: no image, or not known (every node may take it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_archs: Option<std::collections::BTreeSet<String>>,
}

/// A cluster-wide, one-instance-at-a-time roll of a service (see
/// [`ServiceRecord::rollout`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The generation replicas not yet rolled keep running.
    pub from: u64,
    /// Replicas `0..rolled` run the service's current generation.
    pub rolled: u32,
    /// The secret versions (`project/name` → version) replicas not yet rolled read, where
    /// they differ from the current ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
}

impl ServiceRecord {
    /// A record with no roll in progress.
    pub fn new(project: String, spec: ServiceSpec, address: std::net::Ipv4Addr, generation: u64) -> Self {
        ServiceRecord { project, spec, address, generation, rollout: None, image_archs: None }
    }

    /// Moves the service to a new `generation`. With replicas `placed`, as a roll: they
    /// are replaced one at a time, in replica order, and the ones not reached yet keep
    /// reading the secret versions they read (a roll in progress's, plus `reads`: a
    /// `project/name` and the version current until now). Without, at once.
    pub fn begin_rollout(&mut self, placed: bool, generation: u64, reads: Option<(String, u64)>) {
        if placed {
            let mut secrets = self.rollout.take().map(|r| r.secrets).unwrap_or_default();
            if let Some((key, version)) = reads {
                secrets.entry(key).or_insert(version);
            }
            // Mid-roll, the replicas not rolled yet (still on the roll's old generation)
            // are replaced at once by their nodes: the roll restarts from the last one.
            self.rollout = Some(Rollout { from: self.generation, rolled: 1, secrets });
        }
        self.generation = generation;
    }

    /// The generation replica `replica` runs before its placement epoch is counted.
    pub fn replica_generation(&self, replica: u32) -> u64 {
        match &self.rollout {
            Some(r) if replica >= r.rolled => r.from,
            _ => self.generation,
        }
    }
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
    /// Cordoned by a user (`cordon` or `drain`): nothing new is placed here; replicas
    /// already here stay unless the node is also draining.
    pub cordoned: bool,
    /// Drained by a user: its replicas move to other nodes one at a time, each new
    /// instance ready before the old one stops.
    #[serde(default)]
    pub draining: bool,
    /// Declared down by the leader's failure detector: its replicas are placed elsewhere.
    #[serde(default)]
    pub down: bool,
    /// Being removed (`holdfast node rm`): drained like `draining`, then removed and its
    /// certificate revoked by the leader once nothing is placed on it.
    #[serde(default)]
    pub removing: bool,
    /// SHA-256 of the node's certificate: only members' certificates are accepted for
    /// node-to-node traffic.
    #[serde(default)]
    pub cert_fingerprint: String,
    /// Software the node has, as it reports it: e.g. `"postgres" -> "15"` (the major
    /// version). Database members are only placed on nodes that report their engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub software: BTreeMap<String, String>,
    /// How the node takes public traffic, when it is an edge (`--edge`), as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeInfo>,
}

/// An edge node's public entry: HTTP, HTTPS and DNS on its public address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeInfo {
    /// The address clients reach it on (what DNS answers), e.g. `203.0.113.10`.
    pub public_address: std::net::IpAddr,
    pub http_port: u16,
    pub https_port: u16,
    /// The authoritative DNS server's port; 0: none.
    pub dns_port: u16,
    /// The site's moving address this edge may hold (`--site-address 192.168.1.50/24`):
    /// one live edge of the site holds it (see `control::edges::site_address_holder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_address: Option<String>,
}

impl NodeRecord {
    /// A member as it describes itself: no labels, no flags, no certificate recorded.
    pub fn new(
        id: NodeId,
        name: impl Into<String>,
        addr: impl Into<String>,
        site: impl Into<String>,
        arch: impl Into<String>,
        capacity: Capacity,
    ) -> NodeRecord {
        NodeRecord {
            id,
            name: name.into(),
            addr: addr.into(),
            site: site.into(),
            arch: arch.into(),
            capacity,
            labels: BTreeMap::new(),
            labels_start_id: 0,
            cordoned: false,
            draining: false,
            down: false,
            removing: false,
            cert_fingerprint: String::new(),
            software: BTreeMap::new(),
            edge: None,
        }
    }
}

impl ClusterState {
    /// A node's name for people (`node 42` once it is gone).
    pub fn node_name(&self, id: NodeId) -> String {
        self.nodes.get(&id).map(|n| n.name.clone()).unwrap_or_else(|| format!("node {id}"))
    }

    /// Services that belong to `project`.
    pub fn project_services<'a>(
        &'a self,
        project: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ServiceRecord)> + 'a {
        self.desired.services.iter().filter(move |(_, r)| r.project == project)
    }

    /// Placement input for services: the nodes as the scheduler sees them, each node's
    /// capacity less what the database members placed on it reserve.
    pub fn node_views(&self) -> Vec<holdfast_placement::NodeView> {
        self.node_views_with(&self.desired.databases)
    }

    /// [`ClusterState::node_views`] with the members of `databases` reserving capacity.
    pub fn node_views_with(&self, databases: &BTreeMap<String, DatabaseRecord>) -> Vec<holdfast_placement::NodeView> {
        let reserved = crate::database::reserved_by(databases);
        self.nodes
            .values()
            .map(|n| holdfast_placement::NodeView {
                id: n.id,
                name: n.name.clone(),
                schedulable: !n.cordoned && !n.down,
                keeps_replicas: !n.down,
                capacity: match reserved.get(&n.id) {
                    Some(r) => Capacity {
                        cpu_millis: n.capacity.cpu_millis.saturating_sub(r.cpu_millis),
                        memory_bytes: n.capacity.memory_bytes.saturating_sub(r.memory_bytes),
                    },
                    None => n.capacity,
                },
                labels: crate::labels::node_labels(n),
            })
            .collect()
    }

    /// The database members placed on `node`: (database, member index).
    pub fn database_members_on(&self, node: NodeId) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (name, db) in &self.desired.databases {
            for (i, n) in db.members.iter().enumerate() {
                if *n == node {
                    out.push((name.clone(), i as u32));
                }
            }
        }
        out
    }

    /// The database and endpoint that `ip` is the address of.
    pub fn database_of_address(&self, ip: Ipv4Addr) -> Option<(&str, DbEndpoint)> {
        self.desired.databases.iter().find_map(|(name, db)| {
            DbEndpoint::ALL.into_iter().find(|e| db.addresses.get(*e) == Some(ip)).map(|e| (name.as_str(), e))
        })
    }
}
