//! Per-node cgroups (v2 core files, under `/sys/fs/cgroup/unified` on a v1 "hybrid" host or
//! `/sys/fs/cgroup` on a pure v2 host): `<root>/<testbed prefix>/n<i>`. They give kill
//! (`cgroup.kill`) and freeze (`cgroup.freeze`) of everything a node runs; no controller is
//! enabled, so they work in hybrid mode too. Also sweeps groups left by dead processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError};
use crate::lease::{owner_pid, pid_alive};

/// The v2 hierarchy to use, if the host has one.
pub(crate) fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| root.join("cgroup.procs").exists() && root.join("cgroup.subtree_control").exists())
}

/// One testbed's cgroups.
#[derive(Debug)]
pub(crate) struct Cgroups {
    dir: PathBuf,
    nodes: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `<root>/<prefix>/n<i>` for every node. `Ok(None)` when the host has no
    /// usable v2 hierarchy or we may not write it (the caller falls back to process groups).
    pub(crate) fn create(prefix: &str, nodes: usize) -> Result<Option<Cgroups>> {
        let Some(root) = v2_root() else { return Ok(None) };
        let dir = root.join(prefix);
        if dir.exists() {
            // Our pid and lease id make the name ours: a stale copy from a crashed process
            // that had our pid.
            Cgroups { dir: dir.clone(), nodes: subdirs(&dir) }.remove();
        }
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() == std::io::ErrorKind::PermissionDenied || e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
                return Ok(None);
            }
            return Err(TestbedError::io(format!("creating cgroup {}", dir.display()), e));
        }
        let mut groups = Cgroups { dir, nodes: Vec::with_capacity(nodes) };
        for i in 0..nodes {
            let node = groups.dir.join(format!("n{i}"));
            // On error `groups` is dropped by the caller's teardown path via `remove`.
            if let Err(e) = std::fs::create_dir(&node) {
                groups.remove();
                return Err(TestbedError::io(format!("creating cgroup {}", node.display()), e));
            }
            groups.nodes.push(node);
        }
        if !groups.nodes.iter().all(|n| n.join("cgroup.freeze").exists()) {
            groups.remove();
            return Ok(None);
        }
        Ok(Some(groups))
    }

    /// The directory of node `i`'s cgroup.
    pub(crate) fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i]
    }

    /// The `cgroup.procs` file a process writes its pid to in order to join node `i`.
    pub(crate) fn procs_file(&self, i: usize) -> PathBuf {
        self.nodes[i].join("cgroup.procs")
    }

    /// SIGKILLs everything in node `i`'s cgroup and waits (bounded) until it is empty.
    pub(crate) fn kill(&self, i: usize) -> Result<()> {
        kill_dir(&self.nodes[i])?;
        wait_empty(&self.nodes[i], Duration::from_secs(5))?;
        // A crashed machine comes back unfrozen: what is spawned next must run.
        self.freeze(i, false)
    }

    /// Freezes (`true`) or thaws node `i`'s cgroup and waits until the kernel says it is done.
    pub(crate) fn freeze(&self, i: usize, frozen: bool) -> Result<()> {
        let dir = &self.nodes[i];
        write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        wait_for(&format!("{} to be {want}", dir.display()), Duration::from_secs(5), || {
            std::fs::read_to_string(dir.join("cgroup.events")).map(|s| s.lines().any(|l| l == want)).unwrap_or(true)
        })
    }

    /// Kills everything in every node group and removes the groups. Idempotent, best effort.
    pub(crate) fn remove(&mut self) {
        for node in &self.nodes {
            let _ = write(&node.join("cgroup.freeze"), "0");
            let _ = kill_dir(node);
        }
        for node in &self.nodes {
            let _ = wait_empty(node, Duration::from_secs(5));
            remove_tree(node);
        }
        remove_tree(&self.dir);
        self.nodes.clear();
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|it| it.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default()
}

/// Removes a cgroup directory and any groups a node process created below it, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| TestbedError::io(format!("writing {value} to {}", path.display()), e))
}

/// Pids in a cgroup directory.
pub(crate) fn procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_dir(dir: &Path) -> Result<()> {
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        write(&kill, "1")
    } else {
        for pid in procs(dir) {
            crate::process::signal_pid(pid, rustix::process::Signal::KILL);
        }
        Ok(())
    }
}

fn wait_empty(dir: &Path, bound: Duration) -> Result<()> {
    wait_for(&format!("cgroup {} to empty", dir.display()), bound, || {
        match std::fs::read_to_string(dir.join("cgroup.events")) {
            Ok(events) => events.lines().any(|l| l == "populated 0"),
            Err(_) => true,
        }
    })
}

fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if start.elapsed() >= bound {
            return Err(TestbedError::Timeout { what: what.to_string(), after: bound });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Removes `hft-<pid>-...` groups whose owning process is dead (killing what is left inside).
pub(crate) fn sweep_dead() {
    let Some(root) = v2_root() else { return };
    let Ok(entries) = std::fs::read_dir(&root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else { continue };
        if pid_alive(pid) || !entry.path().is_dir() {
            continue;
        }
        eprintln!("holdfast-testbed: removing leftover cgroup {} (owner pid {pid} is dead)", entry.path().display());
        let mut groups = Cgroups { dir: entry.path(), nodes: subdirs(&entry.path()) };
        groups.remove();
    }
}
