//! holdfast-testbed: a multi-node, multi-site test harness on one machine.
//!
//! It runs N real processes as "machines" grouped into "sites", and breaks them. Its core
//! knows nothing about holdfast: any command can run on a node. On top of it, [`cluster`]
//! runs a holdfast cluster (the `holdfast` binary, driven through its CLI and JSON output,
//! no holdfast crate), and [`wait_for`] is the one condition-with-deadline loop of the
//! tests. holdfast's integration tests and benchmarks use it as a dev-dependency.
//!
//! Two modes ([`Mode`]):
//! * **Namespaces** (root, and `ip netns` works): every node is a network namespace with one
//!   `eth0` at `10.99.<id>.<10+i>/16` plugged into its site's bridge in a per-testbed
//!   "switch" namespace; the site bridges are joined through a WAN bridge. `<id>` is unique
//!   among the live testbeds of the machine, so parallel tests never share addresses. Every
//!   fault is available.
//! * **Loopback** (otherwise, or when asked for): nodes are the host addresses
//!   `127.0.<id>.<10+i>` (the kernel routes all of 127/8 to `lo`); only kill and freeze work,
//!   network faults return [`TestbedError::Unsupported`]. The harness says so on stderr.
//!
//! Safety (see `shared/TESTBED.md`): before any namespace exists the root namespace gets
//! `unreachable 10.99.0.0/16`, removed when the last live testbed of the machine is dropped
//! (leases in `/run/holdfast-testbed`, under a lock file). Nodes have no default route.
//! Clients run inside node namespaces ([`Testbed::exec`], [`Testbed::spawn`],
//! [`Testbed::run_in_node`]). Every name made starts with `hft-<pid>-<name>-<id>`;
//! [`Drop`] removes all of it, also after a panic, and [`Testbed::start`] first sweeps what
//! dead processes left behind.
//!
//! Use it as a dev-dependency (`holdfast-testbed = { workspace = true }`). The host needs
//! `iproute2` (namespaces), `nftables` (partition, cut, loss) and `iptables` (latency); a
//! missing tool is reported as [`TestbedError::ToolMissing`], never installed.
//!
//! ```no_run
//! use holdfast_testbed::{Testbed, TestbedConfig};
//! let tb = Testbed::start(TestbedConfig::new("doc").site("a", 2).site("b", 2))?;
//! let to = tb.nodes()[2].addr.to_string();
//! tb.partition(tb.site("a")?, tb.site("b")?)?;
//! assert!(!tb.exec(0, &["ping", "-c1", "-W1", &to])?.status.success());
//! tb.heal_partitions()?;
//! # Ok::<(), holdfast_testbed::TestbedError>(())
//! ```

mod cgroup;
pub mod cluster;
mod cmd;
mod error;
mod faults;
mod latency;
mod lease;
mod netns;
pub mod ports;
mod process;
pub mod wait;

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::Signal;

pub use cluster::{namespaces_or_skip, Cluster, ClusterConfig, Node};
pub use error::TestbedError;
pub use latency::LatencyGuard;
pub use lease::{guard_route_present, live_namespace_testbeds, GUARD_ROUTE};
pub use process::NodeProcess;
pub use wait::{seen_unless, wait_for, wait_for_every};

use error::Result;
use faults::NetFaults;
use process::ProcRecord;

/// Most nodes one testbed may have (host part 10..=253 of its /24).
pub const MAX_NODES: usize = 244;

/// How long [`Testbed::exec`] lets a client command run before killing it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// How nodes are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per node, bridges per site: every fault works. Needs root.
    Namespaces,
    /// Nodes are `127.0.<id>.<10+i>` on the host: only kill and freeze faults work.
    Loopback,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// A short name, e.g. the test's name: it goes into every namespace and cgroup name
    /// (`hft-<pid>-<name>-<id>-...`). Characters other than `[A-Za-z0-9_]` become `_`; at
    /// most 24 are kept.
    pub name: String,
    /// The sites, in order; node indices are assigned site after site.
    pub sites: Vec<SiteConfig>,
    /// Force a mode; `None` picks Namespaces when root and `ip netns` works, else Loopback.
    pub mode: Option<Mode>,
}

/// One site: a name (unique within the testbed, `[A-Za-z0-9_-]`) and its node count.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The site's name, e.g. `"a"` or `"eu"`.
    pub name: String,
    /// How many nodes it has.
    pub nodes: usize,
}

impl TestbedConfig {
    /// A config with no sites yet.
    pub fn new(name: impl Into<String>) -> Self {
        TestbedConfig { name: name.into(), sites: Vec::new(), mode: None }
    }

    /// Adds a site with `nodes` nodes.
    pub fn site(mut self, name: impl Into<String>, nodes: usize) -> Self {
        self.sites.push(SiteConfig { name: name.into(), nodes });
        self
    }

    /// Forces a mode instead of detecting one.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// One node of a running testbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its index (the `node` argument of every method).
    pub index: usize,
    /// `<site>-<k>`, k counting within the site.
    pub name: String,
    /// The name of its site.
    pub site: String,
    /// Its address: in its namespace (Namespaces) or on the host's `lo` (Loopback).
    pub addr: Ipv4Addr,
    /// Its network namespace (Namespaces mode only).
    pub netns: Option<String>,
}

/// A running testbed. Dropping it kills every node process and removes every namespace,
/// veth, bridge, nft table, cgroup and lease it made. All methods take `&self`; the type is
/// `Sync`, so several client threads may share it.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    mode: Mode,
    nodes: Vec<NodeInfo>,
    macs: Vec<String>,
    sites: Vec<(String, Vec<usize>)>,
    switch: Option<String>,
    cgroups: Option<cgroup::Cgroups>,
    faults: Mutex<NetFaults>,
    procs: Mutex<Vec<ProcRecord>>,
    latency: Mutex<Option<Arc<latency::Delayers>>>,
    state_dir: PathBuf,
    lease: Option<lease::Lease>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().take(24).map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.is_empty() {
        "tb".to_string()
    } else {
        s
    }
}

fn validate(cfg: &TestbedConfig) -> Result<()> {
    let total: usize = cfg.sites.iter().map(|s| s.nodes).sum();
    if total == 0 {
        return Err(TestbedError::Config("a testbed needs at least one node".into()));
    }
    if total > MAX_NODES {
        return Err(TestbedError::Config(format!("{total} nodes; at most {MAX_NODES} are supported")));
    }
    for (i, site) in cfg.sites.iter().enumerate() {
        if site.name.is_empty() || !site.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(TestbedError::Config(format!("site name `{}` must be [A-Za-z0-9_-]+", site.name)));
        }
        if cfg.sites[..i].iter().any(|s| s.name == site.name) {
            return Err(TestbedError::Config(format!("site `{}` appears twice", site.name)));
        }
    }
    Ok(())
}

/// Picks the mode; for Loopback also says why.
fn choose_mode(cfg: &TestbedConfig) -> Result<(Mode, Option<String>)> {
    let root = rustix::process::geteuid().is_root();
    let namespaces_ok = || -> std::result::Result<(), String> {
        if !root {
            return Err("not running as root".into());
        }
        cmd::find(cmd::IP).map_err(|e| e.to_string())?;
        netns::usable().map_err(|e| format!("`ip netns` does not work: {e}"))
    };
    match cfg.mode {
        Some(Mode::Loopback) => Ok((Mode::Loopback, Some("Loopback mode was requested".into()))),
        Some(Mode::Namespaces) => match namespaces_ok() {
            Ok(()) => Ok((Mode::Namespaces, None)),
            Err(why) => Err(TestbedError::Config(format!("Namespaces mode was requested but {why}"))),
        },
        None => match namespaces_ok() {
            Ok(()) => Ok((Mode::Namespaces, None)),
            Err(why) => Ok((Mode::Loopback, Some(why))),
        },
    }
}

impl Testbed {
    /// Builds the testbed: sweeps leftovers of dead processes, takes an id, installs the
    /// guard route, then creates namespaces, wiring and cgroups. Takes ~0.1 s for a few nodes.
    pub fn start(cfg: TestbedConfig) -> Result<Testbed> {
        validate(&cfg)?;
        let (mode, loopback_reason) = choose_mode(&cfg)?;
        let root = rustix::process::geteuid().is_root();
        let name = sanitize(&cfg.name);
        let state_dir = lease::state_dir();
        let lease = {
            let _lock = lease::lock(&state_dir)?;
            let _ = lease::live_leases(&state_dir);
            if root {
                cgroup::sweep_dead();
                if cmd::find(cmd::IP).is_ok() {
                    netns::sweep_dead();
                    if mode == Mode::Loopback {
                        lease::sweep_guard_route(&state_dir);
                    }
                }
            }
            if mode == Mode::Namespaces {
                lease::ensure_guard_route()?;
            }
            let hint = format!("hft-{}-{name}", std::process::id());
            lease::acquire(&state_dir, mode == Mode::Namespaces, &hint)?
        };
        let id = lease.id;
        let prefix = format!("hft-{}-{name}-{id}", std::process::id());
        let mut nodes = Vec::new();
        let mut sites = Vec::new();
        for site in &cfg.sites {
            let mut members = Vec::new();
            for k in 0..site.nodes {
                let index = nodes.len();
                let host = u8::try_from(10 + index).unwrap_or(u8::MAX);
                let (addr, netns) = match mode {
                    Mode::Namespaces => (Ipv4Addr::new(10, 99, id, host), Some(format!("{prefix}-n{index}"))),
                    Mode::Loopback => (Ipv4Addr::new(127, 0, id, host), None),
                };
                nodes.push(NodeInfo {
                    index,
                    name: format!("{}-{k}", site.name),
                    site: site.name.clone(),
                    addr,
                    netns,
                });
                members.push(index);
            }
            sites.push((site.name.clone(), members));
        }
        let macs = (0..nodes.len()).map(|i| format!("02:68:66:{id:02x}:{:02x}:{:02x}", i >> 8, i & 0xff)).collect();
        let mut tb = Testbed {
            switch: (mode == Mode::Namespaces).then(|| format!("{prefix}-sw")),
            prefix,
            mode,
            nodes,
            macs,
            sites,
            cgroups: None,
            faults: Mutex::new(NetFaults::default()),
            procs: Mutex::new(Vec::new()),
            latency: Mutex::new(None),
            state_dir,
            lease: Some(lease),
        };
        // From here on, an error drops `tb`, which tears down whatever was made.
        tb.cgroups = cgroup::Cgroups::create(&tb.prefix, tb.nodes.len())?;
        if tb.cgroups.is_none() {
            eprintln!(
                "holdfast-testbed: {}: no writable cgroup v2 hierarchy; kill/freeze fall back to process groups",
                tb.prefix
            );
        }
        if let Some(reason) = loopback_reason {
            eprintln!(
                "holdfast-testbed: {}: Loopback mode ({reason}): nodes are 127.0.{id}.x on the host, \
                 only kill/freeze faults are available",
                tb.prefix
            );
        }
        if let Some(switch) = &tb.switch {
            let wiring: Vec<netns::NodeWiring<'_>> = tb
                .nodes
                .iter()
                .map(|n| netns::NodeWiring {
                    netns: n.netns.as_deref().unwrap_or_default(),
                    site: tb.sites.iter().position(|(s, _)| *s == n.site).unwrap_or(0),
                    addr: n.addr,
                    mac: tb.macs[n.index].clone(),
                })
                .collect();
            netns::build(switch, tb.sites.len(), &wiring)?;
        }
        Ok(tb)
    }

    /// The mode this testbed runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, node: usize) -> Result<&NodeInfo> {
        self.nodes.get(node).ok_or(TestbedError::NoSuchNode { index: node, count: self.nodes.len() })
    }

    /// The node indices of site `name`.
    pub fn site(&self, name: &str) -> Result<&[usize]> {
        self.sites
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, members)| members.as_slice())
            .ok_or_else(|| TestbedError::NoSuchSite(name.to_string()))
    }

    /// The prefix of every namespace and cgroup name of this testbed (`hft-<pid>-<name>-<id>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The switch namespace holding the bridges (Namespaces mode only).
    pub fn switch_netns(&self) -> Option<&str> {
        self.switch.as_deref()
    }

    /// Node `node`'s cgroup v2 directory, if cgroups are in use.
    pub fn cgroup_dir(&self, node: usize) -> Option<&Path> {
        self.cgroups.as_ref().filter(|_| node < self.nodes.len()).map(|c| c.node_dir(node))
    }

    fn netns_of(&self, node: usize) -> Result<Option<&str>> {
        Ok(self.node(node)?.netns.as_deref())
    }

    fn require_namespaces(&self, operation: &'static str) -> Result<&str> {
        self.switch.as_deref().ok_or(TestbedError::Unsupported { operation, mode: self.mode })
    }

    /// Starts `argv` on `node`: in the node's cgroup (joined before entering the namespace,
    /// since `ip netns exec` remounts /sys), inside its namespace, as leader of its own process
    /// group, with the testbed's environment plus `env`, stdin from /dev/null and stdout and
    /// stderr appended to `log` (created if missing).
    pub fn spawn(&self, node: usize, argv: &[&str], env: &[(&str, &str)], log: &Path) -> Result<NodeProcess> {
        let netns = self.netns_of(node)?;
        let (program, args) =
            argv.split_first().ok_or_else(|| TestbedError::Config("spawn needs a non-empty argv".into()))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| TestbedError::io(format!("opening log {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| TestbedError::io("duplicating the log file", e))?;
        // The command line that runs inside the cgroup: `[ip netns exec NS] argv...`.
        let mut inner: Vec<OsString> = Vec::new();
        if let Some(netns) = netns {
            inner.push(cmd::find(cmd::IP)?.into_os_string());
            inner.extend(["netns", "exec", netns].map(OsString::from));
        }
        inner.push(OsString::from(program));
        inner.extend(args.iter().map(OsString::from));
        let mut command = match &self.cgroups {
            Some(groups) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("echo $$ > \"$1\" || exit 125; shift; exec \"$@\"")
                    .arg("hft-spawn")
                    .arg(groups.procs_file(node))
                    .args(&inner);
                c
            }
            None => {
                let mut c = Command::new(&inner[0]);
                c.args(&inner[1..]);
                c
            }
        };
        command.envs(env.iter().copied()).stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = command.spawn().map_err(|e| TestbedError::io(format!("spawning {argv:?} on node {node}"), e))?;
        let live = Arc::new(AtomicBool::new(true));
        let mut procs = lock(&self.procs);
        procs.retain(|r| r.live.load(std::sync::atomic::Ordering::SeqCst));
        procs.push(ProcRecord { node, pgid: child.id(), live: live.clone() });
        drop(procs);
        let mut proc = NodeProcess::new(child, node, live);
        if let Some(groups) = &self.cgroups {
            // Return only once the process is in the node's cgroup, so that a kill or freeze
            // right after spawn cannot miss it.
            let start = std::time::Instant::now();
            while !cgroup::procs(groups.node_dir(node)).contains(&proc.pid()) && proc.try_wait()?.is_none() {
                if start.elapsed() > Duration::from_secs(5) {
                    return Err(TestbedError::Timeout {
                        what: format!("process {argv:?} joining the cgroup of node {node}"),
                        after: Duration::from_secs(5),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(proc)
    }

    /// Runs a client command inside `node`'s namespace (on the host in Loopback mode) and
    /// returns its output. Killed after [`EXEC_TIMEOUT`].
    pub fn exec(&self, node: usize, argv: &[&str]) -> Result<Output> {
        self.exec_timeout(node, argv, EXEC_TIMEOUT)
    }

    /// [`Testbed::exec`] with an explicit time bound.
    pub fn exec_timeout(&self, node: usize, argv: &[&str], bound: Duration) -> Result<Output> {
        let command = self.client_command(node, argv)?;
        process::output_within(command, &format!("{argv:?} on node {node}"), bound)
    }

    /// A client command inside `node`'s namespace (on the host in Loopback mode), not in
    /// its cgroup (a fault of the node does not hit the client), for the caller to run,
    /// e.g. in the background. The caller bounds and reaps it.
    pub fn client_command(&self, node: usize, argv: &[&str]) -> Result<Command> {
        let netns = self.netns_of(node)?;
        let (program, args) =
            argv.split_first().ok_or_else(|| TestbedError::Config("exec needs a non-empty argv".into()))?;
        Ok(match netns {
            Some(netns) => {
                let mut c = Command::new(cmd::find(cmd::IP)?);
                c.args(["netns", "exec", netns]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        })
    }

    /// Runs `f` on a fresh thread that has entered `node`'s network namespace, for in-process
    /// clients (sockets made there, and by threads it starts, belong to the node). In Loopback
    /// mode the thread stays on the host. A panic in `f` is passed on.
    pub fn run_in_node<T: Send>(&self, node: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = self.netns_of(node)?.map(netns::netns_path);
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T> {
                if let Some(path) = path {
                    let file = std::fs::File::open(&path)
                        .map_err(|e| TestbedError::io(format!("opening {}", path.display()), e))?;
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| TestbedError::io(format!("entering {}", path.display()), e.into()))?;
                }
                Ok(f())
            });
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    // ---- faults -------------------------------------------------------------------------

    fn signal_node(&self, node: usize, signal: Signal) {
        for rec in lock(&self.procs).iter().filter(|r| r.node == node) {
            rec.signal(signal);
        }
    }

    /// Crash: SIGKILLs everything of the node (`cgroup.kill`, else its process groups; in
    /// Namespaces mode also any other process inside its namespace), and waits until it is
    /// gone (bounded).
    pub fn kill(&self, node: usize) -> Result<()> {
        let netns = self.netns_of(node)?;
        self.signal_node(node, Signal::KILL);
        if let Some(netns) = netns {
            for pid in netns::pids(netns) {
                process::signal_pid(pid, Signal::KILL);
            }
        }
        match &self.cgroups {
            Some(groups) => groups.kill(node),
            None => Ok(()),
        }
    }

    /// Hang: freezes everything in the node's cgroup (`cgroup.freeze`, else SIGSTOP to its
    /// process groups).
    pub fn freeze(&self, node: usize) -> Result<()> {
        self.node(node)?;
        match &self.cgroups {
            Some(groups) => groups.freeze(node, true),
            None => {
                self.signal_node(node, Signal::STOP);
                Ok(())
            }
        }
    }

    /// Undoes [`Testbed::freeze`].
    pub fn thaw(&self, node: usize) -> Result<()> {
        self.node(node)?;
        match &self.cgroups {
            Some(groups) => groups.freeze(node, false),
            None => {
                self.signal_node(node, Signal::CONT);
                Ok(())
            }
        }
    }

    fn set_port(&self, node: usize, up: bool, operation: &'static str) -> Result<()> {
        self.node(node)?;
        let switch = self.require_namespaces(operation)?;
        let port = netns::node_port(node);
        cmd::run(cmd::IP, &["-n", switch, "link", "set", &port, if up { "up" } else { "down" }], None).map(|_| ())
    }

    /// Pulls the node's cable on the switch side: its peers' packets to it vanish (they time
    /// out) and the node sees no carrier.
    pub fn link_down(&self, node: usize) -> Result<()> {
        self.set_port(node, false, "link_down")
    }

    /// Plugs the cable back in.
    pub fn link_up(&self, node: usize) -> Result<()> {
        self.set_port(node, true, "link_up")
    }

    fn apply_faults(&self, operation: &'static str, change: impl FnOnce(&mut NetFaults) -> Result<()>) -> Result<()> {
        let switch = self.require_namespaces(operation)?;
        cmd::find(cmd::NFT)?;
        let mut faults = lock(&self.faults);
        change(&mut faults)?;
        let script = faults.render(&self.macs);
        cmd::run_in_netns(switch, cmd::NFT, &["-f", "-"], Some(&script)).map(|_| ())
    }

    fn check_nodes(&self, set: &[usize]) -> Result<()> {
        set.iter().try_for_each(|n| self.node(*n).map(|_| ()))
    }

    /// Partitions node set `a` from node set `b` (both directions, any path). Adds to the
    /// partitions already in force.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<()> {
        self.check_nodes(a)?;
        self.check_nodes(b)?;
        if a.is_empty() || b.is_empty() || a.iter().any(|n| b.contains(n)) {
            return Err(TestbedError::Config("partition needs two non-empty, disjoint node sets".into()));
        }
        self.apply_faults("partition", |f| {
            f.partitions.push((a.to_vec(), b.to_vec()));
            Ok(())
        })
    }

    /// Removes every partition (site cuts and loss stay).
    pub fn heal_partitions(&self) -> Result<()> {
        self.apply_faults("heal_partitions", |f| {
            f.partitions.clear();
            Ok(())
        })
    }

    fn site_pair(&self, a: &str, b: &str) -> Result<(usize, usize)> {
        let find = |name: &str| {
            self.sites.iter().position(|(s, _)| s == name).ok_or_else(|| TestbedError::NoSuchSite(name.to_string()))
        };
        let (x, y) = (find(a)?, find(b)?);
        if x == y {
            return Err(TestbedError::Config(format!("cannot cut site `{a}` from itself")));
        }
        Ok((x.min(y), x.max(y)))
    }

    /// Cuts the WAN link between sites `a` and `b` (other sites stay reachable).
    pub fn cut_sites(&self, a: &str, b: &str) -> Result<()> {
        let pair = self.site_pair(a, b)?;
        self.apply_faults("cut_sites", |f| {
            f.cuts.insert(pair);
            Ok(())
        })
    }

    /// Restores the WAN link between sites `a` and `b`.
    pub fn join_sites(&self, a: &str, b: &str) -> Result<()> {
        let pair = self.site_pair(a, b)?;
        self.apply_faults("join_sites", |f| {
            f.cuts.remove(&pair);
            Ok(())
        })
    }

    /// Drops `percent` % of the frames into and out of the node (each direction on its own).
    pub fn loss(&self, node: usize, percent: u8) -> Result<()> {
        self.node(node)?;
        if percent > 100 {
            return Err(TestbedError::Config(format!("loss of {percent}% is more than 100%")));
        }
        self.apply_faults("loss", |f| {
            if percent == 0 {
                f.loss.remove(&node);
            } else {
                f.loss.insert(node, percent);
            }
            Ok(())
        })
    }

    /// Removes the node's packet loss.
    pub fn clear_loss(&self, node: usize) -> Result<()> {
        self.loss(node, 0)
    }

    /// Adds `ms` milliseconds to every packet from a node to a node of another site (so a
    /// round trip between sites gains 2·`ms`; within a site nothing changes), until the
    /// returned guard is dropped. NFQUEUE-based (no netem in this kernel): needs `iptables`.
    pub fn latency_between_sites(&self, ms: u32) -> Result<LatencyGuard> {
        self.require_namespaces("latency_between_sites")?;
        let mut slot = lock(&self.latency);
        if slot.as_ref().is_some_and(|d| !d.is_stopped()) {
            return Err(TestbedError::LatencyActive);
        }
        let plan = self
            .nodes
            .iter()
            .map(|n| {
                let dests = self.nodes.iter().filter(|m| m.site != n.site).map(|m| m.addr).collect();
                (n.netns.clone().unwrap_or_default(), dests)
            })
            .collect();
        let delayers = latency::Delayers::start(plan, Duration::from_millis(u64::from(ms)))?;
        *slot = Some(delayers.clone());
        Ok(LatencyGuard { delayers })
    }

    fn teardown(&mut self) {
        if let Some(delayers) = lock(&self.latency).take() {
            delayers.stop(false);
        }
        for rec in lock(&self.procs).iter() {
            rec.signal(Signal::KILL);
        }
        if let Some(groups) = &self.cgroups {
            for node in 0..self.nodes.len() {
                let _ = groups.freeze(node, false);
            }
        }
        for node in &self.nodes {
            if let Some(ns) = &node.netns {
                netns::delete(ns);
            }
        }
        if let Some(switch) = &self.switch {
            netns::delete(switch);
        }
        if let Some(mut groups) = self.cgroups.take() {
            groups.remove();
        }
        if let Some(lease) = self.lease.take() {
            if let Err(e) = lease::release(&self.state_dir, &lease) {
                eprintln!("holdfast-testbed: {}: releasing lease: {e}", self.prefix);
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}
