//! Test harness: runs real `holdfast` processes on loopback with their own data
//! directories and port ranges, drives them with the real CLI, and cleans up always.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `holdfast` binary under test.
pub fn holdfast_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

/// PATH for the daemon: the build's binaries (holdfast-demo-web) first.
pub fn test_path() -> String {
    let dir = holdfast_bin().parent().map(Path::to_path_buf).unwrap_or_default();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A free UDP (and TCP) port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `f` returns Some, polling every 100 ms; panics with `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

pub fn kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// One holdfast node process.
pub struct Daemon {
    pub dir: PathBuf,
    pub ip: String,
    pub port: u16,
    /// HTTP ingress and DNS ports (on `ip`).
    pub http_port: u16,
    pub dns_port: u16,
    /// `up` or `join TOKEN`, plus extra flags (site, name).
    pub command: Vec<String>,
    pub port_range: String,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub log: PathBuf,
    run: u32,
}

impl Daemon {
    /// A node on a fresh data directory. `range_base` keeps tests' instance ports apart.
    pub fn start(range_base: u16) -> Daemon {
        Daemon::start_with("127.0.0.1", range_base, &["up", "--name", "test-node"])
    }

    /// A node on `ip` (any 127.x address) running `command` (`up ...` or `join TOKEN ...`).
    pub fn start_with(ip: &str, range_base: u16, command: &[&str]) -> Daemon {
        let mut d = Daemon::new(ip, range_base, command);
        d.spawn(&[]);
        d
    }

    /// A node description with its own temp directory and free ports, not started.
    fn new(ip: &str, range_base: u16, command: &[&str]) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        Daemon {
            dir: tmp.path().join("data"),
            ip: ip.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            port: free_port(),
            http_port: free_port(),
            dns_port: free_udp_port(),
            port_range: format!("{}-{}", range_base, range_base + 99),
            child: None,
            log: tmp.path().join("daemon-0.log"),
            _tmp: Some(tmp),
            run: 0,
        }
    }

    /// Starts (again) the daemon process on this data directory.
    pub fn spawn(&mut self, extra: &[&str]) {
        self.run += 1;
        self.log = self.dir.parent().expect("parent").join(format!("daemon-{}.log", self.run));
        let log = std::fs::File::create(&self.log).expect("daemon log");
        let child = Command::new(holdfast_bin())
            .args(&self.command)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &format!("{}:{}", self.ip, self.port), "--port-range", &self.port_range])
            .args([
                "--http",
                &format!("{}:{}", self.ip, self.http_port),
                "--dns",
                &format!("{}:{}", self.ip, self.dns_port),
            ])
            .args(["--log-level", "info,openraft=warn,holdfast_node=debug"])
            .args(extra)
            .env("PATH", test_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn holdfast up");
        self.child = Some(child);
        let addr = format!("{}:{}", self.ip, self.port);
        wait_for("the API to answer", Duration::from_secs(20), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("holdfast {:?} exited early with {st}; log:\n{}", self.command, self.log_text());
                }
            }
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        });
        wait_for("status to answer", Duration::from_secs(20), || self.try_status());
    }

    /// Starts the node process without waiting for its API (a join may be refused).
    pub fn try_spawn(ip: &str, range_base: u16, command: &[&str]) -> (Daemon, std::process::ExitStatus) {
        let d = Daemon::new(ip, range_base, command);
        let log = std::fs::File::create(&d.log).expect("log");
        let mut child = Command::new(holdfast_bin())
            .args(command)
            .arg("--data-dir")
            .arg(&d.dir)
            .args(["--listen", &format!("{}:{}", d.ip, d.port), "--port-range", &d.port_range])
            .args(["--http", "off", "--dns", "off"])
            .env("PATH", test_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return (d, st);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let st = child.wait().expect("wait");
                return (d, st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A join token from this node.
    pub fn token(&self, ttl: &str) -> String {
        self.cli_ok(&["token", "create", "--ttl", ttl]).trim().to_string()
    }

    /// `ip:port` of this node.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// SIGKILLs the node and every workload it runs: a machine dying. The workloads are
    /// found from the agent's instance records on disk, so this works without a leader.
    pub fn kill_machine(&mut self) {
        self.kill9();
        let dir = self.dir.join("agent").join("instances");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            if let Some(pid) = v["pid"].as_u64() {
                for q in pids_in_group(pid as u32) {
                    kill(q, 9);
                }
            }
        }
    }

    /// The node name given with --name.
    pub fn name(&self) -> String {
        self.command
            .iter()
            .position(|a| a == "--name")
            .and_then(|i| self.command.get(i + 1))
            .cloned()
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("daemon running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a client command against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(holdfast_bin())
            .args(["--data-dir"])
            .arg(&self.dir)
            .args(args)
            .env("PATH", test_path())
            .stdin(Stdio::null())
            .output()
            .expect("run holdfast")
    }

    /// Runs a client command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "holdfast {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn try_status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|| panic!("status failed; daemon log:\n{}", self.log_text()))
    }

    /// Writes a spec into the test directory and deploys it; returns (exit ok, stdout, stderr).
    pub fn deploy_yaml(&self, name: &str, yaml: &str) -> (bool, String, String) {
        let path = self.write_spec(name, yaml);
        let out = self.cli(&["deploy", path.to_str().expect("utf8 path"), "--timeout", "30s"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn write_spec(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.parent().expect("parent").join(name);
        std::fs::write(&path, yaml).expect("write spec");
        path
    }

    /// SIGKILLs the daemon (workloads keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to the daemon and waits for it to exit; returns its exit status.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        kill(c.id(), sig);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if start.elapsed() > timeout {
                let _ = c.kill();
                panic!("daemon did not exit within {timeout:?} after signal {sig}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The instances of a service in the status JSON.
    pub fn instances(&self, service: &str) -> Vec<Value> {
        service_of(&self.status(), service)["instances"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `service` has `n` ready replicas on its current generation.
    pub fn wait_ready(&self, service: &str, n: u64, timeout: Duration) -> Value {
        wait_for(&format!("{service} to have {n} ready replicas"), timeout, || {
            let st = self.try_status()?;
            let s = service_of(&st, service);
            let ready = s["ready"].as_u64()? == n
                && s["instances"].as_array()?.iter().all(|i| {
                    i["generation"].as_u64() >= s["generation"].as_u64()
                        && i["state"] != "outdated"
                        && i["ready"] == true
                });
            ready.then_some(st)
        })
    }
}

pub fn service_of(status: &Value, name: &str) -> Value {
    status["services"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name).cloned()).unwrap_or(Value::Null)
}

/// GET http://127.0.0.1:port/path with the real curl; returns the body when it answered 2xx.
pub fn curl(port: u64, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .expect("curl must be installed (.ci/run installs it)");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Stop the node and every workload. If the daemon was killed, start it again on
        // the same data directory so it re-adopts and then stops what is left.
        if self.child.is_none() && self.dir.join("node.json").exists() {
            let log = std::fs::File::create(self.dir.parent().expect("parent").join("cleanup.log")).ok();
            let mut cmd = Command::new(holdfast_bin());
            cmd.args(["up", "--data-dir"])
                .arg(&self.dir)
                .args(["--listen", &format!("{}:{}", self.ip, self.port), "--port-range", &self.port_range])
                .args(["--http", "off", "--dns", "off"])
                .env("PATH", test_path())
                .stdin(Stdio::null());
            if let Some(l) = log {
                if let Ok(l2) = l.try_clone() {
                    cmd.stdout(l).stderr(l2);
                }
            }
            if let Ok(c) = cmd.spawn() {
                let port = self.port;
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(10)
                    && std::net::TcpStream::connect((self.ip.as_str(), port)).is_err()
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                self.child = Some(c);
            }
        }
        if let Some(mut c) = self.child.take() {
            kill(c.id(), 15);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET `path` through a node's HTTP ingress with `Host: host` (real curl); returns the
/// status code and the body.
pub fn ingress(d: &Daemon, host: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", "-w", "\n%{http_code}", "-H", &format!("Host: {host}")])
        .arg(format!("http://{}:{}{path}", d.ip, d.http_port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Starts a founder and `n - 1` joined nodes; sites given per node.
pub fn cluster(tag: u8, range_base: u16, sites: &[&str]) -> Vec<Daemon> {
    let flags: Vec<Vec<&str>> = sites.iter().map(|s| vec!["--site", *s]).collect();
    cluster_with(tag, range_base, &flags)
}

/// Starts a founder and joined nodes `n1..`, each with its own extra flags (site, labels).
pub fn cluster_with(tag: u8, range_base: u16, flags: &[Vec<&str>]) -> Vec<Daemon> {
    let mut nodes = Vec::new();
    let mut first = vec!["up", "--name", "n1"];
    first.extend(flags[0].iter().copied());
    nodes.push(Daemon::start_with(&format!("127.0.{tag}.1"), range_base, &first));
    for (i, extra) in flags.iter().enumerate().skip(1) {
        let token = nodes[0].token("5m");
        let name = format!("n{}", i + 1);
        let mut command = vec!["join", &token, "--name", &name];
        command.extend(extra.iter().copied());
        let d = Daemon::start_with(&format!("127.0.{tag}.{}", i + 1), range_base + 100 * i as u16, &command);
        nodes.push(d);
    }
    let n = flags.len();
    let voters = match n {
        1 | 2 => 1,
        3 | 4 => 3,
        _ => 5,
    };
    wait_for("every node to be a member, voters chosen", Duration::from_secs(20), || {
        let out = nodes[0].cli(&["nodes", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let list = v["nodes"].as_array()?;
        let voting = list.iter().filter(|x| x["role"] == "voter" || x["role"] == "leader").count();
        (list.len() == n && voting == voters && list.iter().all(|x| x["state"] == "alive")).then_some(())
    });
    nodes
}

pub fn leader_of(d: &Daemon) -> Option<u64> {
    d.try_status()?["control_plane"]["leader"].as_u64()
}

/// This node's id, from its data directory (status is answered by the leader).
pub fn node_id(d: &Daemon) -> u64 {
    let text = std::fs::read_to_string(d.dir.join("node.json")).expect("node.json");
    serde_json::from_str::<Value>(&text).expect("json")["id"].as_u64().expect("node id")
}
