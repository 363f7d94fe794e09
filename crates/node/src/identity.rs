//! The data directory's identity: node id and name, the admin token, the cluster CA
//! certificate, this node's key and certificate (all 0600; `ca.key` only on the founder),
//! and the runtime files the CLI reads (`api.addr`, `holdfast.pid`).
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use holdfast_placement::Capacity;

use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Who this node is, and its TLS material.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: u64,
    pub name: String,
    /// Bearer token of the `/v1` API (file `admin.token`); the same on every node.
    pub admin_token: String,
    /// The cluster CA certificate (file `ca.pem`).
    pub ca_pem: String,
    /// This node's certificate and key (files `node.pem`, `node.key`).
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA key, only on the node that created the cluster (file `ca.key`); it is also
    /// replicated in the Raft state so any leader can admit nodes.
    pub ca_key_pem: Option<String>,
}

impl Identity {
    /// True on the node that created the cluster: it initialises Raft on first start.
    pub fn is_founder(&self) -> bool {
        self.ca_key_pem.is_some()
    }

    /// SHA-256 of this node's certificate. An unreadable certificate is an error, never
    /// an empty fingerprint (which a revocation could not match).
    pub fn cert_fingerprint(&self) -> Result<String, holdfast_pki::PkiError> {
        holdfast_pki::fingerprint_of_pem(&self.cert_pem)
    }
}

#[derive(Serialize, Deserialize)]
struct NodeFile {
    format: u32,
    id: u64,
    name: String,
}

fn dir_err(path: &Path, message: impl std::fmt::Display) -> NodeError {
    NodeError::DataDir { path: path.display().to_string(), message: message.to_string() }
}

/// `n` random bytes as hex.
pub fn random_hex(bytes: usize) -> Result<String, NodeError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| NodeError::DataDir { path: "-".into(), message: format!("no randomness: {e}") })?;
    Ok(hex::encode(buf))
}

/// A random password of 32 letters and digits (190 bits).
pub fn random_password() -> Result<String, NodeError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf)
            .map_err(|e| NodeError::DataDir { path: "-".into(), message: format!("no randomness: {e}") })?;
        // Rejection sampling keeps every character equally likely.
        out.extend(buf.iter().filter(|b| usize::from(**b) < 248).map(|b| char::from(ALPHABET[usize::from(*b) % 62])));
    }
    out.truncate(32);
    Ok(out)
}

/// A random non-zero node id.
pub fn random_node_id() -> Result<u64, NodeError> {
    loop {
        let id = u64::from_str_radix(&random_hex(8)?, 16).unwrap_or(0) & 0x7fff_ffff_ffff_ffff;
        if id != 0 {
            return Ok(id);
        }
    }
}

/// Writes `contents` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, contents: &str) -> Result<(), NodeError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| dir_err(&tmp, e))?;
    f.write_all(contents.as_bytes()).map_err(|e| dir_err(&tmp, e))?;
    f.sync_all().map_err(|e| dir_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| dir_err(path, e))
}

fn read_trimmed(path: &Path) -> Result<String, NodeError> {
    let s = std::fs::read_to_string(path).map_err(|e| dir_err(path, e))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(dir_err(path, "file is empty"));
    }
    Ok(s)
}

fn prepare_dir(dir: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| dir_err(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| dir_err(dir, e))
}

/// Loads the identity of an initialised data directory; `None` when it has none yet.
pub fn load(dir: &Path) -> Result<Option<Identity>, NodeError> {
    let node_path = dir.join("node.json");
    if !node_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&node_path).map_err(|e| dir_err(&node_path, e))?;
    let node: NodeFile = serde_json::from_str(&text).map_err(|e| dir_err(&node_path, e))?;
    let ca_key = dir.join("ca.key");
    Ok(Some(Identity {
        node_id: node.id,
        name: node.name,
        admin_token: read_trimmed(&dir.join("admin.token"))?,
        ca_pem: read_trimmed(&dir.join("ca.pem"))?,
        cert_pem: read_trimmed(&dir.join("node.pem"))?,
        key_pem: read_trimmed(&dir.join("node.key"))?,
        ca_key_pem: if ca_key.exists() { Some(read_trimmed(&ca_key)?) } else { None },
    }))
}

/// Everything a node needs on disk to be a member; written last, `node.json` at the end,
/// so a crash half-way leaves an uninitialised directory, not a half-joined one.
pub fn store(dir: &Path, id: &Identity) -> Result<(), NodeError> {
    prepare_dir(dir)?;
    write_private(&dir.join("admin.token"), &format!("{}\n", id.admin_token))?;
    write_private(&dir.join("ca.pem"), &id.ca_pem)?;
    write_private(&dir.join("node.pem"), &id.cert_pem)?;
    write_private(&dir.join("node.key"), &id.key_pem)?;
    if let Some(k) = &id.ca_key_pem {
        write_private(&dir.join("ca.key"), k)?;
    }
    let node = NodeFile { format: 1, id: id.node_id, name: id.name.clone() };
    let text = serde_json::to_string_pretty(&node).map_err(|e| dir_err(dir, e))?;
    write_private(&dir.join("node.json"), &text)
}

/// The IP addresses a node certificate names: the listen address (unless unspecified)
/// and loopback, so local clients can verify it by address too.
pub fn cert_addrs(listen: SocketAddr) -> Vec<std::net::IpAddr> {
    let mut v = vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
    if !listen.ip().is_unspecified() && !v.contains(&listen.ip()) {
        v.push(listen.ip());
    }
    v
}

/// Creates a new cluster's identity: CA, node key and certificate, admin token.
pub fn bootstrap(dir: &Path, name: Option<&str>, listen: SocketAddr) -> Result<Identity, NodeError> {
    let pki = |e: holdfast_pki::PkiError| dir_err(dir, format!("creating certificates: {e}"));
    let node_id = random_node_id()?;
    let name = name.map(str::to_string).unwrap_or_else(hostname);
    let ca = holdfast_pki::Ca::generate(&random_hex(4)?).map_err(pki)?;
    let key = holdfast_pki::NodeKey::generate().map_err(pki)?;
    let cert_pem =
        ca.issue_node_cert(&name, node_id, &cert_addrs(listen), &key.public_key_pem().map_err(pki)?).map_err(pki)?;
    let id = Identity {
        node_id,
        name,
        admin_token: random_hex(32)?,
        ca_pem: ca.cert_pem,
        cert_pem,
        key_pem: key.key_pem,
        ca_key_pem: Some(ca.key_pem),
    };
    store(dir, &id)?;
    Ok(id)
}

/// Writes `api.addr` and `holdfast.pid`, which the CLI uses with `--data-dir`.
pub fn write_runtime_files(dir: &Path, listen: SocketAddr) -> Result<(), NodeError> {
    write_private(&dir.join("api.addr"), &format!("{listen}\n"))?;
    write_private(&dir.join("holdfast.pid"), &format!("{}\n", std::process::id()))
}

/// The host name, lowercased (default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node-1".to_string())
}

static ARCH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The architecture of the machine's programs in the names images use (amd64, arm64,
/// arm), unless `--arch` named another at start ([`set_arch`]).
pub fn arch() -> &'static str {
    ARCH.get_or_init(|| {
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            other => other,
        }
        .to_string()
    })
}

/// Sets the architecture this node reports (`--arch`), before anything reads it.
pub fn set_arch(arch: &str) {
    if ARCH.set(arch.to_string()).is_err() && self::arch() != arch {
        tracing::warn!(arch, reported = self::arch(), "--arch came after the architecture was first read; ignored");
    }
}

/// CPU and memory this machine offers to workloads.
/// Re-read at most once a minute: every heartbeat carries it, and reading it means
/// opening cgroup and /proc files (4% of an idle leader's CPU when read every tick).
pub fn capacity() -> Capacity {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Capacity)>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    match *cache {
        Some((at, c)) if at.elapsed() < std::time::Duration::from_secs(60) => c,
        _ => {
            let c = read_capacity();
            *cache = Some((std::time::Instant::now(), c));
            c
        }
    }
}

fn read_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30);
    Capacity { cpu_millis: cpus * 1000, memory_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_creates_private_files_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("load").is_none());
        let a = bootstrap(dir.path(), Some("alpha"), "127.0.0.1:7946".parse().expect("addr")).expect("init");
        let b = load(dir.path()).expect("reload").expect("initialised");
        assert_eq!(a.node_id, b.node_id);
        assert_eq!(b.name, "alpha");
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.admin_token.len(), 64);
        assert!(b.is_founder());
        for f in ["admin.token", "node.json", "ca.pem", "ca.key", "node.pem", "node.key"] {
            let mode = std::fs::metadata(dir.path().join(f)).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let dmode = std::fs::metadata(dir.path()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
    }
}
