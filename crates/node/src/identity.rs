//! The data directory's identity: node id and name, the admin token and the cluster
//! secret (both 0600), and the runtime files the CLI reads (`api.addr`, `holdfast.pid`).
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use holdfast_placement::Capacity;
use serde::{Deserialize, Serialize};

use crate::NodeError;

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: u64,
    pub name: String,
    /// Bearer token of the `/v1` API (file `admin.token`).
    pub admin_token: String,
    /// Shared by the cluster's nodes for `/raft` RPC (file `cluster.secret`).
    pub cluster_secret: String,
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

fn random_hex(bytes: usize) -> Result<String, NodeError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| NodeError::DataDir { path: "-".into(), message: format!("no randomness: {e}") })?;
    Ok(hex::encode(buf))
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

/// Loads the identity, creating the directory and its files on first start.
pub fn load_or_init(dir: &Path, name: Option<&str>) -> Result<Identity, NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| dir_err(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| dir_err(dir, e))?;
    let node_path = dir.join("node.json");
    let node = if node_path.exists() {
        let text = std::fs::read_to_string(&node_path).map_err(|e| dir_err(&node_path, e))?;
        let node: NodeFile = serde_json::from_str(&text).map_err(|e| dir_err(&node_path, e))?;
        if let Some(n) = name {
            if n != node.name {
                tracing::warn!(configured = n, stored = %node.name, "node name is fixed at first start; keeping the stored one");
            }
        }
        node
    } else {
        let mut id = 0u64;
        while id == 0 {
            let hex = random_hex(8)?;
            id = u64::from_str_radix(&hex, 16).unwrap_or(0) & 0x7fff_ffff_ffff_ffff;
        }
        let node = NodeFile { format: 1, id, name: name.map(str::to_string).unwrap_or_else(hostname) };
        let text = serde_json::to_string_pretty(&node).map_err(|e| dir_err(&node_path, e))?;
        write_private(&node_path, &text)?;
        node
    };
    let token_path = dir.join("admin.token");
    if !token_path.exists() {
        write_private(&token_path, &format!("{}\n", random_hex(32)?))?;
    }
    let secret_path = dir.join("cluster.secret");
    if !secret_path.exists() {
        write_private(&secret_path, &format!("{}\n", random_hex(32)?))?;
    }
    Ok(Identity {
        node_id: node.id,
        name: node.name,
        admin_token: read_trimmed(&token_path)?,
        cluster_secret: read_trimmed(&secret_path)?,
    })
}

/// Writes `api.addr` and `holdfast.pid`, which the CLI uses with `--data-dir`.
pub fn write_runtime_files(dir: &Path, listen: SocketAddr) -> Result<(), NodeError> {
    write_private(&dir.join("api.addr"), &format!("{listen}\n"))?;
    write_private(&dir.join("holdfast.pid"), &format!("{}\n", std::process::id()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node-1".to_string())
}

/// The machine's architecture in the names people use for images (amd64, arm64).
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// CPU and memory this machine offers to workloads.
pub fn capacity() -> Capacity {
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
    fn identity_is_created_once_with_private_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_init(dir.path(), Some("alpha")).expect("init");
        let b = load_or_init(dir.path(), Some("beta")).expect("reload");
        assert_eq!(a.node_id, b.node_id);
        assert_eq!(b.name, "alpha");
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.admin_token.len(), 64);
        for f in ["admin.token", "cluster.secret", "node.json"] {
            let mode = std::fs::metadata(dir.path().join(f)).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}
