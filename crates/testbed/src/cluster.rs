//! A holdfast cluster on a testbed: real `holdfast` processes, one per testbed node, each
//! with its own data directory, driven through the real CLI (run inside the node's
//! namespace in Namespaces mode, on the host in Loopback mode). The testbed core knows
//! nothing about holdfast; this module knows only its command line and its JSON output
//! (`status --json`, `nodes --json`), so it stays free of holdfast crates.
//!
//! [`Cluster::form`] starts a founder and joins the others with tokens; [`Cluster::prepare`]
//! only lays the nodes out, for tests that start them one by one. When the test ends
//! ([`Cluster::finish`], or drop without a panic in flight) every node is stopped and its
//! logs are scanned: a line logged at ERROR level, or a panic, fails the test naming the
//! node and the line, unless the test allowed it ([`Cluster::allow_errors`]).

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

pub use crate::ports::{free_port, free_udp_port};
use crate::process::signal_pid;
use crate::wait::{seen_unless, wait_for};
use crate::{Mode, NodeProcess, Testbed, TestbedConfig};

/// How long a client command may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// The holdfast, HTTP ingress and DNS ports in Namespaces mode (each node has its own
/// addresses there, so every node uses the same ones).
const NS_PORTS: (u16, u16, u16) = (7946, 8080, 8053);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    name: String,
    bin: PathBuf,
    mode: Mode,
    nodes: Vec<NodeConfig>,
    range_base: u16,
}

/// One node: its holdfast site (`--site`, if any) and extra flags for `up`/`join`.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub site: Option<String>,
    pub flags: Vec<String>,
}

impl ClusterConfig {
    /// A cluster of the `holdfast` binary `bin`, on loopback addresses, with no node yet.
    /// `name` names the testbed (namespaces, cgroups).
    pub fn new(name: &str, bin: impl Into<PathBuf>) -> Self {
        ClusterConfig {
            name: name.to_string(),
            bin: bin.into(),
            mode: Mode::Loopback,
            nodes: Vec::new(),
            range_base: 40000,
        }
    }

    /// One node per site name, in order (`["a", "a", "b"]`: two in site a, one in b).
    pub fn sites(mut self, sites: &[&str]) -> Self {
        for s in sites {
            self.nodes.push(NodeConfig { site: Some(s.to_string()), flags: Vec::new() });
        }
        self
    }

    /// One node with extra flags (`--site` among them is used as its site).
    pub fn node(mut self, flags: &[&str]) -> Self {
        let mut cfg = NodeConfig::default();
        let mut it = flags.iter();
        while let Some(f) = it.next() {
            if *f == "--site" {
                cfg.site = it.next().map(|s| s.to_string());
            } else {
                cfg.flags.push(f.to_string());
            }
        }
        self.nodes.push(cfg);
        self
    }

    /// `n` nodes without site or flags.
    pub fn plain(mut self, n: usize) -> Self {
        self.nodes.extend((0..n).map(|_| NodeConfig::default()));
        self
    }

    /// Every node in its own network namespace behind per-site bridges (needs root; see
    /// [`namespaces_or_skip`]). The default is Loopback.
    pub fn namespaces(mut self) -> Self {
        self.mode = Mode::Namespaces;
        self
    }

    /// [`ClusterConfig::namespaces`] when running as root (as CI does), else Loopback: for
    /// tests that run either way but are only true to a real cluster with one network
    /// per node (on loopback every node's proxy listens on the same service addresses, so
    /// only one of them binds each, and killing that node takes the others' too).
    pub fn namespaces_when_root(self) -> Self {
        if rustix::process::geteuid().is_root() {
            self.namespaces()
        } else {
            self
        }
    }

    /// The first instance port of node 0; node i gets `base + 100 i ..= base + 100 i + 99`.
    /// On loopback every node's instances share 127.0.0.1, so tests running at once need
    /// ranges apart.
    pub fn ports_from(mut self, base: u16) -> Self {
        self.range_base = base;
        self
    }
}

/// Whether namespace tests can run here (root, and the tools they use). Without root they
/// are skipped with a line on stderr; under `CI=true` they must run, so this panics.
pub fn namespaces_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        for (tool, package) in
            [("ip", "iproute2"), ("ping", "iputils-ping"), ("nft", "nftables"), ("iptables", "iptables")]
        {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(found, "{test}: the tests need `{tool}` (Debian package {package})");
        }
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: CI=true but not running as root; namespace tests may not be skipped"
    );
    // Straight to the stderr handle: the test harness does not capture that, so the skip is
    // visible in a normal `cargo test` run.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root for network namespaces");
    false
}

/// What every node of a cluster shares: the testbed, the binary, the temp directory.
struct Env {
    tb: Testbed,
    bin: PathBuf,
    path_var: String,
    _root: tempfile::TempDir,
}

/// A running (or prepared) cluster: derefs to its nodes (`cluster[0]`, `cluster.iter()`).
pub struct Cluster {
    env: Arc<Env>,
    nodes: Vec<Node>,
    allowed: Vec<String>,
    finished: bool,
}

impl Deref for Cluster {
    type Target = [Node];
    fn deref(&self) -> &[Node] {
        &self.nodes
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }
}

/// How many voters holdfast keeps for `n` nodes.
fn voters_for(n: usize) -> usize {
    match n {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

impl Cluster {
    /// Builds the testbed and lays out the nodes (data directories, addresses, ports)
    /// without starting any.
    pub fn prepare(cfg: ClusterConfig) -> Cluster {
        assert!(!cfg.nodes.is_empty(), "a cluster needs at least one node");
        // Testbed sites are consecutive runs of the holdfast sites (or one site).
        let mut tcfg = TestbedConfig::new(cfg.name.as_str()).mode(cfg.mode);
        let mut runs: Vec<(String, usize)> = Vec::new();
        for n in &cfg.nodes {
            let site = n.site.clone().unwrap_or_else(|| "default".to_string());
            match runs.last_mut() {
                Some((s, count)) if *s == site => *count += 1,
                _ => runs.push((site, 1)),
            }
        }
        for (site, count) in &runs {
            tcfg = tcfg.site(site.as_str(), *count);
        }
        let tb = Testbed::start(tcfg).unwrap_or_else(|e| panic!("testbed for {}: {e}", cfg.name));
        // HOLDFAST_TEST_KEEP=1 keeps every node's directory (logs, data) after the test.
        let keep = std::env::var_os("HOLDFAST_TEST_KEEP").is_some();
        let root = tempfile::Builder::new().prefix("holdfast-test-").disable_cleanup(keep).tempdir().expect("tempdir");
        if keep {
            eprintln!("{}: node directories kept under {}", cfg.name, root.path().display());
        }
        // Traversable (not listable) by other users: managed PostgreSQL runs as the
        // `postgres` user under the nodes' data directories.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711));
        }
        let bin_dir = cfg.bin.parent().map(Path::to_path_buf).unwrap_or_default();
        let path_var = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let root_path = root.path().to_path_buf();
        let env = Arc::new(Env { tb, bin: cfg.bin.clone(), path_var, _root: root });
        let nodes = cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let info = &env.tb.nodes()[i];
                let (port, http_port, dns_port) = match env.tb.mode() {
                    Mode::Namespaces => NS_PORTS,
                    Mode::Loopback => (free_port(), free_port(), free_udp_port()),
                };
                let base = cfg.range_base + 100 * i as u16;
                let home = root_path.join(format!("n{}", i + 1));
                std::fs::create_dir_all(&home).expect("node dir");
                let mut flags = n.flags.clone();
                if let Some(site) = &n.site {
                    flags.extend(["--site".to_string(), site.clone()]);
                }
                Node {
                    index: i,
                    name: format!("n{}", i + 1),
                    dir: home.join("data"),
                    home,
                    ip: info.addr.to_string(),
                    port,
                    http_port,
                    dns_port,
                    flags,
                    command: Vec::new(),
                    port_range: format!("{}-{}", base, base + 99),
                    proc: None,
                    log: PathBuf::new(),
                    run: 0,
                    env: env.clone(),
                }
            })
            .collect();
        Cluster { env, nodes, allowed: Vec::new(), finished: false }
    }

    /// Starts node 0 as founder (`up`) and every other node with a join token from it,
    /// then waits until all are members, alive, and the voters are chosen.
    pub fn form(cfg: ClusterConfig) -> Cluster {
        let mut c = Cluster::prepare(cfg);
        c.nodes[0].start_up();
        for i in 1..c.nodes.len() {
            let token = c.nodes[0].token("5m");
            c.nodes[i].start_join(&token);
        }
        c.wait_formed();
        c
    }

    /// Waits until every started node is a member and alive and the voters are chosen.
    pub fn wait_formed(&self) {
        let n = self.nodes.iter().filter(|d| d.proc.is_some()).count();
        let voters = voters_for(n);
        wait_for("every node a member and alive, voters chosen", Duration::from_secs(30), || {
            let v = self.nodes[0].nodes_json()?;
            let list = v["nodes"].as_array().cloned().unwrap_or_default();
            let voting = list.iter().filter(|x| x["role"] == "voter" || x["role"] == "leader").count();
            let summary: Vec<String> =
                list.iter().map(|x| format!("{} {} {}", x["name"], x["role"], x["state"])).collect();
            seen_unless(
                list.len() == n && voting == voters && list.iter().all(|x| x["state"] == "alive"),
                (),
                format!("{} of {n} nodes, {voting} of {voters} voters: {summary:?}", list.len()),
            )
        });
    }

    /// The testbed under the cluster (faults: partition, freeze, kill, latency...).
    pub fn tb(&self) -> &Testbed {
        &self.env.tb
    }

    /// Error lines the nodes may log in this test (substrings of the line). Anything else
    /// logged at ERROR level fails the test when it ends.
    pub fn allow_errors(&mut self, patterns: &[&str]) {
        self.allowed.extend(patterns.iter().map(|p| p.to_string()));
    }

    /// The index of the node whose id is the current leader, as `from` sees it.
    pub fn leader_index(&self, from: usize) -> Option<usize> {
        let leader = self.nodes[from].leader()?;
        self.nodes.iter().position(|n| n.proc.is_some() && n.id() == leader)
    }

    /// Stops every node and checks their logs (see the module documentation).
    pub fn finish(mut self) {
        self.finished = true;
        self.stop_and_check();
    }

    fn stop_and_check(&mut self) {
        // What each log held before the nodes were told to stop: later lines are shutdown.
        let before: Vec<Vec<(PathBuf, u64)>> = self.nodes.iter().map(Node::log_sizes).collect();
        for n in self.nodes.iter_mut() {
            n.stop();
        }
        if std::thread::panicking() {
            return;
        }
        let mut unexpected = Vec::new();
        for (n, before) in self.nodes.iter().zip(&before) {
            for (file, offset, line) in n.error_lines() {
                let at_shutdown = before.iter().find(|(f, _)| *f == file).is_none_or(|(_, size)| offset >= *size);
                let noise = at_shutdown && SHUTDOWN_NOISE.iter().any(|a| line.contains(a));
                if !noise && !self.allowed.iter().any(|a| line.contains(a.as_str())) {
                    unexpected.push(format!("{} ({}): {line}", n.name, file.display()));
                }
            }
        }
        assert!(
            unexpected.is_empty(),
            "nodes logged unexpected errors (allow expected ones with Cluster::allow_errors):\n{}",
            unexpected.join("\n")
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.stop_and_check();
        }
    }
}

/// ERROR lines openraft logs while a node shuts down (its workers outlive the core by a
/// moment); allowed only in what a node logged after it was told to stop.
const SHUTDOWN_NOISE: &[&str] = &["to RaftCore; when:(send HeartbeatProgress)"];

/// Strips ANSI colour sequences (tracing's default output colours the level).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a daemon log line reports an error: logged at ERROR level
/// (`<timestamp> ERROR target: ...`), or a Rust panic.
pub fn is_error_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let _time = words.next();
    words.next() == Some("ERROR") || line.contains("panicked at")
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

/// Every live pid whose process group is `pgid`.
pub fn pids_in_group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest: state ppid pgrp ...
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Sends SIGSTOP to `pid` and waits (up to 5 s) until every thread of it is stopped:
/// the signal reaches a thread running on another core only at its next interrupt, and a
/// test that calls the process frozen before that can see it answer once more.
pub fn stop_and_wait(pid: u32) {
    signal(pid, libc_sig::STOP);
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
        tasks.flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the command name in parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|s| s == "T" || s == "t")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !stopped() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends signal number `sig` to `pid` (errors, e.g. already gone, are ignored).
pub fn signal(pid: u32, sig: i32) {
    // rustix takes a known signal: map the numbers tests use.
    let known = [
        (libc_sig::KILL, Signal::KILL),
        (libc_sig::TERM, Signal::TERM),
        (libc_sig::INT, Signal::INT),
        (libc_sig::STOP, Signal::STOP),
        (libc_sig::CONT, Signal::CONT),
        (libc_sig::USR1, Signal::USR1),
        (libc_sig::USR2, Signal::USR2),
    ];
    let s = known.iter().find(|(n, _)| *n == sig).map(|(_, s)| *s).unwrap_or_else(|| panic!("signal {sig}"));
    signal_pid(pid, s);
}

/// Linux signal numbers (x86-64 and aarch64 agree on these).
pub mod libc_sig {
    pub const INT: i32 = 2;
    pub const KILL: i32 = 9;
    pub const USR1: i32 = 10;
    pub const USR2: i32 = 12;
    pub const TERM: i32 = 15;
    pub const CONT: i32 = 18;
    pub const STOP: i32 = 19;
}

/// The entry of service `name` in a `status --json` answer (Null when absent).
pub fn service_of(status: &Value, name: &str) -> Value {
    status["services"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name).cloned()).unwrap_or(Value::Null)
}

/// One holdfast node of a [`Cluster`].
pub struct Node {
    /// Its index in the cluster and the testbed.
    pub index: usize,
    /// `n1`, `n2`, ... (`--name`).
    pub name: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its own directory (logs, specs), the parent of `dir`.
    pub home: PathBuf,
    /// Its address: the holdfast port, the ingress and DNS listen there.
    pub ip: String,
    pub port: u16,
    pub http_port: u16,
    pub dns_port: u16,
    /// Flags given to every `up`/`join` (site, labels).
    pub flags: Vec<String>,
    /// The command of its last start (`up ...` or `join TOKEN ...`).
    pub command: Vec<String>,
    pub port_range: String,
    /// The log of the current (last) run.
    pub log: PathBuf,
    proc: Option<NodeProcess>,
    run: u32,
    env: Arc<Env>,
}

impl Node {
    fn tb(&self) -> &Testbed {
        &self.env.tb
    }

    /// `ip:port` of its holdfast port.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Starts it as a founder: `up --name NAME FLAGS`.
    pub fn start_up(&mut self) {
        let mut command = vec!["up".to_string(), "--name".to_string(), self.name.clone()];
        command.extend(self.flags.iter().cloned());
        self.command = command;
        self.spawn(&[]);
    }

    /// Starts it with `join TOKEN --name NAME FLAGS`.
    pub fn start_join(&mut self, token: &str) {
        let mut command = vec!["join".to_string(), token.to_string(), "--name".to_string(), self.name.clone()];
        command.extend(self.flags.iter().cloned());
        self.command = command;
        self.spawn(&[]);
    }

    fn daemon_argv(&self, command: &[String], net: bool) -> Vec<String> {
        let mut argv = vec![self.env.bin.to_string_lossy().into_owned()];
        argv.extend(command.iter().cloned());
        argv.extend(["--data-dir".to_string(), self.dir.to_string_lossy().into_owned()]);
        argv.extend(["--listen".to_string(), self.addr(), "--port-range".to_string(), self.port_range.clone()]);
        if net {
            argv.extend([
                "--http".to_string(),
                format!("{}:{}", self.ip, self.http_port),
                "--dns".to_string(),
                format!("{}:{}", self.ip, self.dns_port),
            ]);
        } else {
            // Off, unless the command names its own (a test of a taken port does).
            for flag in ["--http", "--dns"] {
                if !command.iter().any(|a| a == flag) {
                    argv.extend([flag.to_string(), "off".to_string()]);
                }
            }
        }
        argv.extend(["--log-level", "info,openraft=warn,holdfast_node=debug"].map(String::from));
        argv
    }

    fn spawn_process(&mut self, argv: &[String], log_name: &str) -> NodeProcess {
        self.log = self.home.join(log_name);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let path = self.env.path_var.clone();
        self.tb().spawn(self.index, &argv, &[("PATH", path.as_str())], &self.log).expect("spawn holdfast")
    }

    /// Starts (again) the daemon on its data directory with its last command plus `extra`
    /// flags, and waits until its API answers.
    pub fn spawn(&mut self, extra: &[&str]) {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        self.run += 1;
        let mut argv = self.daemon_argv(&self.command, true);
        argv.extend(extra.iter().map(|s| s.to_string()));
        let proc = self.spawn_process(&argv, &format!("daemon-{}.log", self.run));
        self.proc = Some(proc);
        wait_for(&format!("{}'s API to answer", self.name), Duration::from_secs(30), || {
            if let Some(p) = self.proc.as_mut() {
                if let Ok(Some(st)) = p.try_wait() {
                    panic!("holdfast {:?} exited early with {st}; log:\n{}", self.command, self.log_text());
                }
            }
            self.try_status()
        });
    }

    /// Runs the daemon with `command` (e.g. a `join` that must be refused) without its
    /// ingress and DNS (unless `command` gives `--http`/`--dns`), and waits at most `bound` for it to exit; its exit status (a
    /// process still running then is killed, and fails the test).
    pub fn try_run(&mut self, command: &[&str], bound: Duration) -> ExitStatus {
        self.run += 1;
        self.command = command.iter().map(|s| s.to_string()).collect();
        let argv = self.daemon_argv(&self.command, false);
        let mut proc = self.spawn_process(&argv, &format!("daemon-{}.log", self.run));
        match proc.wait_timeout(bound).expect("wait") {
            Some(st) => st,
            None => panic!("holdfast {command:?} still runs after {bound:?}; log:\n{}", self.log_text()),
        }
    }

    /// A join token from this node.
    pub fn token(&self, ttl: &str) -> String {
        self.cli_ok(&["token", "create", "--ttl", ttl]).trim().to_string()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// Whether its daemon runs (was started and not killed or stopped by the test).
    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// The log of the current run.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_files(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(&self.home) else { return Vec::new() };
        let mut logs: Vec<PathBuf> =
            dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
        logs.sort();
        logs
    }

    fn log_sizes(&self) -> Vec<(PathBuf, u64)> {
        self.log_files().into_iter().map(|f| (f.clone(), std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0))).collect()
    }

    /// Every log line of every run (and of the cleanup run) at ERROR level or a panic:
    /// (log file, byte offset of the line, line without colours).
    pub fn error_lines(&self) -> Vec<(PathBuf, u64, String)> {
        let mut out = Vec::new();
        for log in self.log_files() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut offset = 0u64;
            for raw in text.split_inclusive('\n') {
                let line = strip_ansi(raw.trim_end());
                if is_error_line(&line) {
                    out.push((log.clone(), offset, line));
                }
                offset += raw.len() as u64;
            }
        }
        out
    }

    /// Runs a client command against this node (inside its namespace, if any).
    pub fn cli(&self, args: &[&str]) -> Output {
        let bin = self.env.bin.to_string_lossy().into_owned();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut argv = vec![bin.as_str(), "--data-dir", dir.as_str()];
        argv.extend_from_slice(args);
        self.tb().exec_timeout(self.index, &argv, CLI_TIMEOUT).expect("run holdfast")
    }

    /// [`Node::cli`] with its own time bound; a timeout is an error (a frozen node).
    pub fn cli_within(&self, args: &[&str], bound: Duration) -> Result<Output, crate::TestbedError> {
        let bin = self.env.bin.to_string_lossy().into_owned();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut argv = vec![bin.as_str(), "--data-dir", dir.as_str()];
        argv.extend_from_slice(args);
        self.tb().exec_timeout(self.index, &argv, bound)
    }

    /// Runs a client command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "holdfast {args:?} on {} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a client command with `--json`; the answer, or why there is none.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.cli(&args);
        if !out.status.success() {
            return Err(format!("holdfast {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("holdfast {args:?}: {e}"))
    }

    /// `status --json`, or why it failed.
    pub fn try_status(&self) -> Result<Value, String> {
        self.cli_json(&["status"])
    }

    /// `status --json`; failing is a test failure.
    pub fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|e| panic!("status failed: {e}; daemon log:\n{}", self.log_text()))
    }

    /// `nodes --json`, or why it failed.
    pub fn nodes_json(&self) -> Result<Value, String> {
        self.cli_json(&["nodes"])
    }

    /// The entry of node `name` in this node's `nodes --json`.
    pub fn node_view(&self, name: &str) -> Result<Value, String> {
        let v = self.nodes_json()?;
        v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
            .ok_or_else(|| format!("no node {name} in {v}"))
    }

    /// The leader's id as this node's status tells it.
    pub fn leader(&self) -> Option<u64> {
        self.try_status().ok()?["control_plane"]["leader"].as_u64()
    }

    /// This node's id, from its data directory.
    pub fn id(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.join("node.json")).expect("node.json");
        serde_json::from_str::<Value>(&text).expect("json")["id"].as_u64().expect("node id")
    }

    /// Writes a spec next to the data directory and deploys it; (exit ok, stdout, stderr).
    pub fn deploy_yaml(&self, file: &str, yaml: &str) -> (bool, String, String) {
        let path = self.write_spec(file, yaml);
        let out = self.cli(&["deploy", path.to_str().expect("utf8 path"), "--timeout", "30s"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Writes a spec file next to the data directory; its path.
    pub fn write_spec(&self, file: &str, yaml: &str) -> PathBuf {
        let path = self.home.join(file);
        std::fs::write(&path, yaml).expect("write spec");
        path
    }

    /// The instances of `service` in this node's status.
    pub fn instances(&self, service: &str) -> Vec<Value> {
        service_of(&self.status(), service)["instances"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `service` has `n` ready replicas, all of its current generation.
    pub fn wait_ready(&self, service: &str, n: u64, timeout: Duration) -> Value {
        wait_for(&format!("{service} to have {n} ready replicas"), timeout, || {
            let st = self.try_status()?;
            let s = service_of(&st, service);
            let instances = s["instances"].as_array().cloned().unwrap_or_default();
            let ready = s["ready"].as_u64() == Some(n)
                && instances.iter().all(|i| {
                    i["generation"].as_u64() >= s["generation"].as_u64()
                        && i["state"] != "outdated"
                        && i["ready"] == true
                });
            let seen: Vec<String> = instances
                .iter()
                .map(|i| {
                    format!(
                        "{} on {} gen {} {} ready={}",
                        i["name"], i["node"], i["generation"], i["state"], i["ready"]
                    )
                })
                .collect();
            seen_unless(ready, st.clone(), format!("ready {} of {}: {seen:?}", s["ready"], s["replicas"]))
        })
    }

    /// Waits until the leader (as this node sees it) has taken `count` more heartbeats
    /// from node `name` than it had when called: proof that `name` ran that many rounds of
    /// its duties (and got the leader's answers) after this point.
    pub fn wait_heartbeats(&self, name: &str, count: u32, timeout: Duration) {
        let start = Instant::now();
        let mut taken = 0u32;
        let mut last: Option<u64> = None;
        wait_for_every_ms(&format!("{count} heartbeats from {name}"), timeout, 50, || {
            let view = self.node_view(name)?;
            let seen = view["last_seen_ms"].as_u64();
            // `last_seen_ms` counts up between heartbeats and drops when one arrives.
            if let (Some(before), Some(now)) = (last, seen) {
                if now < before {
                    taken += 1;
                }
            }
            last = seen;
            seen_unless(
                taken >= count,
                (),
                format!("{taken} heartbeats in {:?}; last_seen_ms {seen:?}, state {}", start.elapsed(), view["state"]),
            )
        });
    }

    /// `GET /cluster/links` of this node, with its own member certificate (real curl
    /// inside the node): its links to other nodes (Null when it did not answer).
    pub fn links(&self) -> Value {
        let path = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        let (ca, cert, key) = (path("ca.pem"), path("node.pem"), path("node.key"));
        let url = format!("https://{}/cluster/links", self.addr());
        let out = self.exec(&["curl", "-sf", "--max-time", "3", "--cacert", &ca, "--cert", &cert, "--key", &key, &url]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// This node's link to `to`, from [`Node::links`].
    pub fn link_to(&self, to: &Node) -> Option<Value> {
        self.links()["links"].as_array()?.iter().find(|l| l["peer"] == to.addr().as_str()).cloned()
    }

    /// GET `path` through this node's HTTP ingress with `Host: host` (real curl, inside
    /// the node); the status code (0 when none) and the body.
    pub fn ingress(&self, host: &str, path: &str) -> (u16, String) {
        let url = format!("http://{}:{}{path}", self.ip, self.http_port);
        let header = format!("Host: {host}");
        let out = self
            .tb()
            .exec_timeout(
                self.index,
                &["curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", "-H", &header, &url],
                CLI_TIMEOUT,
            )
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// GET http://127.0.0.1:port/path on this node (an instance port) with the real curl;
    /// the body when it answered 2xx.
    pub fn curl_local(&self, port: u64, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let out =
            self.tb().exec_timeout(self.index, &["curl", "-sf", "--max-time", "2", &url], CLI_TIMEOUT).expect("curl");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs any client command inside this node (its namespace, if any).
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.tb().exec_timeout(self.index, argv, CLI_TIMEOUT).expect("exec in node")
    }

    /// [`Node::exec`] with its own time bound; a timeout is an error, not a panic.
    pub fn exec_within(&self, argv: &[&str], bound: Duration) -> Result<Output, crate::TestbedError> {
        self.tb().exec_timeout(self.index, argv, bound)
    }

    /// A client command inside this node's namespace for the caller to run in the
    /// background (see [`Testbed::client_command`]).
    pub fn client_command(&self, argv: &[&str]) -> std::process::Command {
        self.tb().client_command(self.index, argv).expect("a client command in the node")
    }

    /// SIGKILLs the daemon only (its workloads keep running).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
        }
    }

    /// The machine dies: SIGKILL of the daemon and every workload it runs (the node's
    /// cgroup or namespace, and the process groups of the agent's instance records, so
    /// this works without a leader and whatever cgroup the agent moved them to).
    pub fn kill_machine(&mut self) {
        self.kill9();
        let _ = self.tb().kill(self.index);
        for pid in self.instance_pids() {
            for q in pids_in_group(pid) {
                signal(q, libc_sig::KILL);
            }
        }
    }

    /// The pids in the agent's instance records on disk.
    fn instance_pids(&self) -> Vec<u32> {
        let dir = self.dir.join("agent").join("instances");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
            .filter_map(|v| v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }

    /// Sends signal number `sig` to the daemon and waits for it to exit.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> ExitStatus {
        let mut p = self.proc.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        signal(p.pid(), sig);
        match p.wait_timeout(timeout).expect("wait") {
            Some(st) => st,
            None => {
                let _ = p.kill();
                panic!("{} did not exit within {timeout:?} after signal {sig}; log:\n{}", self.name, self.log_text())
            }
        }
    }

    /// Stops the node and every workload: SIGTERM and wait. A killed daemon is started
    /// again on its data directory first, so it re-adopts and then stops what is left.
    fn stop(&mut self) {
        let leftovers = self.instance_pids().iter().any(|p| alive(*p));
        if self.proc.is_none() && self.dir.join("node.json").exists() && leftovers {
            let argv = self.daemon_argv(&["up".to_string()], false);
            let proc = self.spawn_process(&argv, "cleanup.log");
            self.proc = Some(proc);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) && self.try_status().is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(mut p) = self.proc.take() {
            signal(p.pid(), libc_sig::TERM);
            if !matches!(p.wait_timeout(Duration::from_secs(20)), Ok(Some(_))) {
                let _ = p.kill();
            }
        }
    }
}

/// [`wait_for`] polling every `ms` milliseconds.
fn wait_for_every_ms<T, S: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    ms: u64,
    probe: impl FnMut() -> Result<T, S>,
) -> T {
    crate::wait::wait_for_every(what, timeout, Duration::from_millis(ms), probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_found_with_or_without_colour() {
        let plain = "2026-12-01T09:00:00.123456Z ERROR holdfast_node::server: accept failed";
        let coloured = "\u{1b}[2m2026-12-01T09:00:00.123456Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m \u{1b}[2mholdfast_node\u{1b}[0m: boom";
        assert!(is_error_line(plain));
        assert!(is_error_line(&strip_ansi(coloured)), "{}", strip_ansi(coloured));
        assert!(!is_error_line("2026-12-01T09:00:00Z  WARN holdfast_node: an ERROR word inside"));
        assert!(!is_error_line("2026-12-01T09:00:00Z  INFO x: message with ERROR"));
        assert!(is_error_line("thread 'main' panicked at src/x.rs:1:1:"));
    }
}
