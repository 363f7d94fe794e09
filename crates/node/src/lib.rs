//! A holdfast node: everything `holdfast up` runs in one process.
//!
//! - [`identity`]: the data directory's identity files (node id, admin token, CA and
//!   node certificates), created on first start or by joining.
//! - [`controller`]: the leader's duties: runs `holdfast_control::Engine::tick` every
//!   heartbeat period and executes what it decides (proposals, membership changes).
//! - [`peer`]: node-to-node protocols: join, heartbeats, links, tunnels.
//! - [`api`]: the `/v1` handlers, one module per resource.
//! - [`workers`]: what each background loop is doing (`holdfast workers`).
//! - [`workloads`]: the pure mapping from the replicated [`holdfast_state::ClusterState`] to
//!   the instances this node's agent must run.
//! - [`server`]: the HTTPS server on the holdfast port: TLS, routing, authentication,
//!   forwarding to the leader, the `/raft` RPC endpoints and `/healthz`.
//! - [`status`]: the status view (desired state joined with what the agent observes).
//! - [`ui`]: the web dashboard at `/ui/` (rendered by `holdfast_ui`), read-only.
//! - [`images`]: the architectures an image offers, from its registry, before a deploy.
//! - [`logs`]: tailing and following instance log files for the API.
//! - [`network`]: the routing table for this node's proxy, DNS server and HTTP ingress
//!   (`holdfast-net`), rebuilt on every state or readiness change.
//! - [`secrets`]: this node's copy of the secrets key: sealing values for the API,
//!   opening the versions its instances read, fetching the key from another member.
//! - [`Node`] (this file): ordered start-up and shutdown of Raft, agent and server.
#![forbid(unsafe_code)]

pub mod acme;
pub mod api;
pub mod controller;
pub mod databases;
pub mod edge;
pub mod events;
pub mod identity;
pub mod images;
pub mod lease;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod peer;
pub mod recover;
pub mod secrets;
pub mod server;
pub mod status;
pub mod ui;
pub mod usage;
pub mod workers;
pub mod workloads;

pub use peer::{links, tunnel};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use holdfast_agent::{AgentConfig, AgentHandle, ShutdownMode};
use holdfast_raft::{ControlPlane, ControlPlaneError, RaftTiming};
use tokio_util::sync::CancellationToken;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// The holdfast port: API, Raft RPC, node-to-node traffic.
    pub listen: SocketAddr,
    /// The address other nodes use to reach this one (default: `listen`).
    pub advertise: Option<SocketAddr>,
    /// A join token: on a new data directory, join that cluster instead of creating one.
    pub join: Option<String>,
    /// HTTP ingress listen address (routes by Host and path); None: no ingress.
    pub http: Option<SocketAddr>,
    /// Internal DNS listen address (UDP and TCP); None: no DNS server.
    pub dns: Option<SocketAddr>,
    /// Node name; defaults to the host name on first start.
    pub name: Option<String>,
    pub site: String,
    /// `--arch`: the architecture to report instead of the one this binary was built
    /// for (placement puts only images of it here).
    pub arch: Option<String>,
    /// User labels from `--label`: set when the node first registers or joins, and again
    /// (once) on every start that gives them; other labels are left alone.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Listen ports handed to instances.
    pub port_range: std::ops::Range<u16>,
    /// Read the secrets key from this file (kept out of the data directory, never handed
    /// to other nodes); `None`: `secrets.key` in the data directory.
    pub secrets_key_file: Option<PathBuf>,
    /// Take public traffic as an edge node (`--edge`); `None`: not an edge.
    pub edge: Option<EdgeConfig>,
}

/// How an edge node takes public traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// What the node reports and DNS answers (`--public-address`).
    pub public_address: std::net::IpAddr,
    /// Where the listeners bind (`--edge-listen`; default the public address).
    pub listen_address: std::net::IpAddr,
    pub http_port: u16,
    pub https_port: u16,
    /// 0: no DNS server.
    pub dns_port: u16,
    /// The site's moving address (`--site-address IP/PREFIX`) and the interface it goes
    /// on (`--site-address-interface`; `None`: the one the kernel routes it through).
    pub site_address: Option<(String, Option<String>)>,
}

impl EdgeConfig {
    /// What the node reports in its record.
    pub fn info(&self) -> holdfast_state::model::EdgeInfo {
        holdfast_state::model::EdgeInfo {
            public_address: self.public_address,
            http_port: self.http_port,
            https_port: self.https_port,
            dns_port: self.dns_port,
            site_address: self.site_address.as_ref().map(|(a, _)| a.clone()),
        }
    }
}

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for {what} on {addr} (nothing was changed: this node did not join or start)")]
    Preflight { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("cannot join: {0}")]
    Join(String),
    #[error("TLS: {0}")]
    Tls(#[from] holdfast_pki::PkiError),
    #[error(transparent)]
    Net(#[from] holdfast_net::NetError),
    #[error("agent: {0}")]
    Agent(#[from] holdfast_agent::AgentError),
}

/// What the process should do after the node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Workloads were stopped; exit.
    Stopped,
    /// Workloads were left running; re-execute the binary (in-place upgrade).
    Reexec,
}

/// Shared handles for the HTTP handlers.
#[derive(Clone)]
pub struct NodeContext {
    pub identity: Arc<identity::Identity>,
    pub control: ControlPlane,
    pub agent: AgentHandle,
    pub listen: SocketAddr,
    /// Serialises changes planned on this node, so they rarely conflict.
    pub change_lock: Arc<tokio::sync::Mutex<()>>,
    /// Cancelled to stop the node; `reexec` tells which way.
    pub shutdown: CancellationToken,
    pub reexec: Arc<std::sync::atomic::AtomicBool>,
    /// False until this node has registered itself; the `/v1` API answers 503 until then.
    pub started: Arc<std::sync::atomic::AtomicBool>,
    /// Mutual-TLS HTTPS client for node-to-node calls.
    pub node_client: holdfast_raft::network::HttpsClient,
    pub liveness: peer::heartbeat::SharedLiveness,
    /// Instances the leader said are superseded (instance, generation): not run even if
    /// this node's state, still catching up, places them here.
    pub fenced: Arc<tokio::sync::watch::Sender<BTreeSet<(holdfast_agent::InstanceId, u64)>>>,
    /// The leader's state revision in its last heartbeat answer (None until one came
    /// back since this process started).
    pub leader_contact: Arc<tokio::sync::watch::Sender<Option<u64>>>,
    pub advertise: SocketAddr,
    pub site: String,
    /// `--label` flags of this start, and the random id of this start (so the leader
    /// applies them once per start).
    pub start_labels: holdfast_state::labels::StartLabels,
    /// This node's links to other nodes (tunnels and their health).
    pub links: links::Links,
    /// SHA-256 of this node's certificate (checked readable at start: never empty).
    pub cert_fingerprint: String,
    /// What each background loop is doing.
    pub workers: workers::Workers,
    /// On the leader: why each learner does not vote yet (from the last controller pass).
    pub promotion: Arc<std::sync::Mutex<std::collections::BTreeMap<u64, String>>>,
    /// This node's event journal (`holdfast events`).
    pub events: events::Journal,
    /// On the leader: what the database duties wait for (from the last controller pass).
    pub database_waits: Arc<std::sync::Mutex<Vec<String>>>,
    /// The node's data directory (database members live under `databases/`).
    pub data_dir: std::path::PathBuf,
    /// Whether this node reaches the control plane's quorum (database fencing).
    pub lease: Arc<lease::Lease>,
    /// The database members this node runs: their status and postgres instances.
    pub dbs: Arc<databases::Shared>,
    /// Bumped when any node's members change in what routing depends on (role, term,
    /// answering, port): wakes the networking loop.
    pub members_changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// This node's copy of the cluster's secrets key.
    pub keyring: Arc<secrets::Keyring>,
    /// This node's edge role, when it has one.
    pub edge: Option<holdfast_state::model::EdgeInfo>,
    /// Consecutive failed probes of each edge node's public HTTP port, as this node's
    /// edge probes last saw them (`edge.rs`); wakes the networking loop.
    pub edge_failures: Arc<tokio::sync::watch::Sender<BTreeMap<u64, u32>>>,
    /// This node's networking (set once it started): counters for `holdfast routes`.
    pub net: Arc<std::sync::OnceLock<holdfast_net::NetHandle>>,
    /// Each local instance's CPU and memory over the last hour (`usage.rs`).
    pub usage: usage::SharedUsage,
}

/// Checks, before anything is written or any cluster is asked, that the listeners this
/// node needs are free (the holdfast port itself is already bound by the caller): the
/// DNS server's UDP and TCP sockets and the HTTP ingress.
fn preflight(config: &NodeConfig) -> Result<(), NodeError> {
    let probe = |what: &'static str, addr: SocketAddr, udp: bool| -> Result<(), NodeError> {
        let r =
            if udp { std::net::UdpSocket::bind(addr).map(drop) } else { std::net::TcpListener::bind(addr).map(drop) };
        r.map_err(|source| NodeError::Preflight { what, addr, source })
    };
    if let Some(dns) = config.dns {
        probe("dns (udp)", dns, true)?;
        probe("dns (tcp)", dns, false)?;
    }
    if let Some(http) = config.http {
        probe("http ingress", http, false)?;
    }
    if let Some(edge) = &config.edge {
        probe("edge http", SocketAddr::new(edge.listen_address, edge.http_port), false)?;
        probe("edge https", SocketAddr::new(edge.listen_address, edge.https_port), false)?;
        if edge.dns_port != 0 {
            let dns = SocketAddr::new(edge.listen_address, edge.dns_port);
            probe("edge dns (udp)", dns, true)?;
            probe("edge dns (tcp)", dns, false)?;
        }
    }
    Ok(())
}

impl NodeContext {
    /// How often nodes heartbeat and the leader ticks, as currently replicated (changed
    /// with `holdfast cluster set --heartbeat`).
    pub fn heartbeat_period(&self) -> Duration {
        Duration::from_millis(self.control.state().settings.heartbeat_ms)
    }
}

/// A started node.
pub struct Node {
    pub ctx: NodeContext,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    tasks_token: CancellationToken,
}

impl Node {
    /// Starts Raft (bootstrapping a one-voter cluster on a new data directory), the agent
    /// (re-adopting instances left running by a previous process) and the HTTP server.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if let Some(arch) = &config.arch {
            identity::set_arch(arch);
        }
        let advertise = config.advertise.unwrap_or(config.listen);
        let start_labels = holdfast_state::labels::StartLabels {
            start_id: identity::random_node_id()?,
            labels: config.labels.clone(),
        };
        // Everything that can fail is checked before a join: a node that cannot start
        // must never become a member.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Listen { addr: config.listen, source })?;
        let listen = listener.local_addr().map_err(|source| NodeError::Listen { addr: config.listen, source })?;
        preflight(&config)?;
        let identity = match identity::load(&config.data_dir)? {
            Some(id) => {
                if config.join.is_some() {
                    tracing::warn!(dir = %config.data_dir.display(), "this data directory is already a member of a cluster; the join token is ignored");
                }
                id
            }
            None => match &config.join {
                Some(token) => {
                    if advertise.ip().is_unspecified() {
                        return Err(NodeError::Join(format!(
                            "--listen {} is not an address other nodes can reach; pass --advertise IP:PORT",
                            config.listen
                        )));
                    }
                    peer::join::perform_join(
                        &config.data_dir,
                        token,
                        config.name.as_deref(),
                        advertise,
                        &config.site,
                        &start_labels,
                    )
                    .await?
                }
                None => identity::bootstrap(&config.data_dir, config.name.as_deref(), advertise)?,
            },
        };
        let identity = Arc::new(identity);
        let keyring = Arc::new(secrets::Keyring::load(
            &config.data_dir,
            config.secrets_key_file.as_deref(),
            identity.is_founder(),
        )?);
        let cert_fingerprint = identity.cert_fingerprint()?;
        let advertise = if config.advertise.is_none() { listen } else { advertise };
        identity::write_runtime_files(&config.data_dir, listen)?;

        let server_tls = holdfast_pki::tls::server_config(&identity.ca_pem, &identity.cert_pem, &identity.key_pem)?;
        let client_tls =
            holdfast_pki::tls::node_client_config(&identity.ca_pem, &identity.cert_pem, &identity.key_pem)?;
        let network = holdfast_raft::network::Network::new(client_tls.clone());
        let control = ControlPlane::start(
            &config.data_dir,
            identity.node_id,
            &advertise.to_string(),
            RaftTiming::default(),
            network,
            identity.is_founder(),
        )
        .await?;

        let mut agent_config =
            AgentConfig::new(config.data_dir.join("agent"), format!("holdfast-{:x}", identity.node_id));
        agent_config.port_range = config.port_range.clone();
        let agent = holdfast_agent::Agent::start(agent_config).await?;
        agent.set_secret_source(Arc::new(secrets::StateSecrets { control: control.clone(), keyring: keyring.clone() }));

        let tasks_token = CancellationToken::new();
        let links = links::Links::new(client_tls.clone(), links::LinkTiming::default(), tasks_token.child_token());
        let ctx = NodeContext {
            identity: identity.clone(),
            control: control.clone(),
            agent: agent.clone(),
            listen,
            change_lock: Arc::new(tokio::sync::Mutex::new(())),
            shutdown: CancellationToken::new(),
            reexec: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            started: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            node_client: holdfast_raft::network::node_https_client(client_tls.clone()),
            links: links.clone(),
            liveness: Default::default(),
            fenced: Arc::new(tokio::sync::watch::Sender::new(BTreeSet::new())),
            leader_contact: Arc::new(tokio::sync::watch::Sender::new(None)),
            advertise,
            site: config.site.clone(),
            start_labels,
            cert_fingerprint,
            workers: workers::Workers::default(),
            promotion: Default::default(),
            database_waits: Default::default(),
            events: events::Journal::new(&config.data_dir),
            data_dir: config.data_dir.clone(),
            lease: Default::default(),
            dbs: Default::default(),
            members_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            keyring,
            edge: config.edge.as_ref().map(|e| e.info()),
            edge_failures: Arc::new(tokio::sync::watch::Sender::new(BTreeMap::new())),
            net: Default::default(),
            usage: Default::default(),
        };
        let net = holdfast_net::Net::start(holdfast_net::NetConfig {
            proxy: true,
            dns_listen: config.dns,
            http_listen: config.http,
            // A stream open through a link includes the far node's connect to the instance.
            connect_timeout: links.timing().open_timeout,
            dialer: std::sync::Arc::new(tunnel::TunnelDialer(links)),
            lease: {
                let (lease, control) = (ctx.lease.clone(), ctx.control.clone());
                std::sync::Arc::new(move || {
                    let state = control.state();
                    lease.held(Duration::from_millis(state.settings.db_lease_ms), state.revision)
                })
            },
            edge: config.edge.as_ref().map(|e| holdfast_net::EdgeListen {
                http: SocketAddr::new(e.listen_address, e.http_port),
                https: SocketAddr::new(e.listen_address, e.https_port),
                dns: (e.dns_port != 0).then(|| SocketAddr::new(e.listen_address, e.dns_port)),
                public_https_port: e.https_port,
            }),
            access_log: (config.edge.is_some() || config.http.is_some())
                .then(|| config.data_dir.join("logs").join("access.log")),
            ..Default::default()
        })
        .await?;
        let _ = ctx.net.set(net.clone());
        let mut tasks = vec![];
        if let Some(edge) = &config.edge {
            tasks.push(("edge probes", tokio::spawn(edge::run_probes(ctx.clone(), tasks_token.child_token()))));
            if let Some((address, interface)) = edge.site_address.clone() {
                tasks.push((
                    "site address",
                    tokio::spawn(edge::run_site_address(ctx.clone(), address, interface, tasks_token.child_token())),
                ));
            }
            tasks.push((
                "edge certificates",
                tokio::spawn(edge::run_certificates(ctx.clone(), net.clone(), tasks_token.child_token())),
            ));
        }
        tasks.extend([
            ("service networking", tokio::spawn(network::run(ctx.clone(), net, tasks_token.child_token()))),
            (
                "https server",
                tokio::spawn(server::serve(listener, Arc::new(server_tls), ctx.clone(), tasks_token.child_token())),
            ),
            ("workload reconciler", tokio::spawn(workloads::run(ctx.clone(), tasks_token.child_token()))),
            ("heartbeats", tokio::spawn(peer::heartbeat::run(ctx.clone(), tasks_token.child_token()))),
            ("leader duties", tokio::spawn(controller::run(ctx.clone(), tasks_token.child_token()))),
            ("databases", tokio::spawn(databases::run(ctx.clone(), tasks_token.child_token()))),
            ("event journal", tokio::spawn(events::run(ctx.clone(), tasks_token.child_token()))),
            ("secrets key", tokio::spawn(secrets::run(ctx.clone(), tasks_token.child_token()))),
            ("certificates", tokio::spawn(acme::run(ctx.clone(), tasks_token.child_token()))),
            ("usage sampler", tokio::spawn(usage::run(ctx.clone(), tasks_token.child_token()))),
        ]);

        // A brand-new cluster waits until it has registered itself, so the first deploy
        // finds a node to place on. A restarting or joined node never waits for a leader:
        // it runs its workloads with the state it has (static stability).
        if identity.is_founder() && !control.state().nodes.contains_key(&identity.node_id) {
            control.wait_for_leader(Duration::from_secs(10)).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !control.state().nodes.contains_key(&identity.node_id) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        ctx.started.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(node = %identity.name, id = identity.node_id, %listen, %advertise, "node started");
        Ok(Node { ctx, tasks, tasks_token })
    }

    /// Runs until `ctx.shutdown` is cancelled, then stops in order: HTTP server and
    /// reconciler, then workloads (or leaves them running for a re-exec), then Raft.
    pub async fn run_until_stopped(self) -> Exit {
        self.ctx.shutdown.cancelled().await;
        let reexec = self.ctx.reexec.load(std::sync::atomic::Ordering::SeqCst);
        tracing::info!(reexec, "node stopping");
        self.tasks_token.cancel();
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(_) => tracing::debug!(task = name, "stopped"),
                Err(_) => tracing::warn!(task = name, "did not stop within 5s; abandoned"),
            }
        }
        let mode = if reexec { ShutdownMode::Detach } else { ShutdownMode::StopWorkloads };
        self.ctx.agent.clone().shutdown(mode).await;
        self.ctx.control.shutdown().await;
        tracing::info!("node stopped");
        if reexec {
            Exit::Reexec
        } else {
            Exit::Stopped
        }
    }
}
