//! Machine-wide coordination between testbeds (of this and other processes): the state
//! directory with its lock file, per-testbed id leases (the id picks the testbed's
//! `10.99.<id>.0/24`), and the root namespace's guard route `unreachable 10.99.0.0/16`,
//! which exists exactly while at least one live namespaces-mode testbed holds a lease.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::cmd::{self, IP};
use crate::error::{Result, TestbedError};

/// The range every test address lives in; the guard route makes it unreachable from the
/// root namespace so that no test packet can leave the machine through the default route.
pub const GUARD_ROUTE: &str = "10.99.0.0/16";

/// Highest testbed id (ids are 1..=MAX_ID, one /24 each).
const MAX_ID: u8 = 250;

/// The state directory: `/run/holdfast-testbed` for root, a per-user temp dir otherwise.
pub(crate) fn state_dir() -> PathBuf {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/holdfast-testbed")
    } else {
        std::env::temp_dir().join(format!("holdfast-testbed-{}", uid.as_raw()))
    }
}

/// An exclusive `flock` on `<state dir>/lock`, released on drop.
pub(crate) struct Lock {
    _file: File,
}

pub(crate) fn lock(dir: &Path) -> Result<Lock> {
    std::fs::create_dir_all(dir).map_err(|e| TestbedError::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| TestbedError::io(format!("opening {}", path.display()), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| TestbedError::io(format!("locking {}", path.display()), e.into()))?;
    Ok(Lock { _file: file })
}

/// Whether process `pid` still exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The owning pid encoded in a `hft-<pid>-...` name, if it is one.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("hft-")?.split('-').next()?.parse().ok()
}

/// A live lease as read from disk.
#[derive(Debug, Clone)]
pub(crate) struct LeaseInfo {
    pub id: u8,
    pub namespaces: bool,
}

/// Reads all leases, deleting those whose owner is dead. Call with the lock held.
pub(crate) fn live_leases(dir: &Path) -> Vec<LeaseInfo> {
    let mut live = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return live };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("tb-").and_then(|s| s.parse::<u8>().ok()) else { continue };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let pid = fields.next().and_then(|p| p.parse::<u32>().ok());
        let namespaces = fields.next() == Some("namespaces");
        match pid {
            Some(pid) if pid_alive(pid) => live.push(LeaseInfo { id, namespaces }),
            // Dead owner, or a half-written file whose writer died: stale.
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    live
}

/// A testbed's claim on an id; released (with the guard route, if last) by [`release`].
#[derive(Debug)]
pub(crate) struct Lease {
    pub id: u8,
    pub namespaces: bool,
    path: PathBuf,
}

/// Claims the lowest free id. Call with the lock held.
pub(crate) fn acquire(dir: &Path, namespaces: bool, prefix_hint: &str) -> Result<Lease> {
    let live = live_leases(dir);
    let id = (1..=MAX_ID).find(|id| !live.iter().any(|l| l.id == *id)).ok_or(TestbedError::NoFreeId(live.len()))?;
    let path = dir.join(format!("tb-{id}"));
    let kind = if namespaces { "namespaces" } else { "loopback" };
    let text = format!("{} {kind} {prefix_hint}\n", std::process::id());
    std::fs::write(&path, text).map_err(|e| TestbedError::io(format!("writing {}", path.display()), e))?;
    Ok(Lease { id, namespaces, path })
}

/// Gives the lease back; removes the guard route when no live namespaces-mode lease remains.
pub(crate) fn release(dir: &Path, lease: &Lease) -> Result<()> {
    let _lock = lock(dir)?;
    let _ = std::fs::remove_file(&lease.path);
    if lease.namespaces && !live_leases(dir).iter().any(|l| l.namespaces) {
        remove_guard_route()?;
    }
    Ok(())
}

/// Whether the root namespace has a route for [`GUARD_ROUTE`], and whether it is `unreachable`.
fn guard_route_state() -> Result<Option<bool>> {
    let out = cmd::run(IP, &["route", "show", "exact", GUARD_ROUTE], None)?;
    let line = out.lines().find(|l| l.contains(GUARD_ROUTE));
    Ok(line.map(|l| l.trim_start().starts_with("unreachable")))
}

/// Whether the guard route `unreachable 10.99.0.0/16` is present in the root namespace.
pub fn guard_route_present() -> Result<bool> {
    Ok(guard_route_state()? == Some(true))
}

/// Adds the guard route (idempotent). Refuses when another route for the range exists.
pub(crate) fn ensure_guard_route() -> Result<()> {
    match guard_route_state()? {
        Some(true) => Ok(()),
        Some(false) => Err(TestbedError::Config(format!(
            "the root namespace already routes {GUARD_ROUTE} somewhere; refusing to use that range"
        ))),
        None => match cmd::run(IP, &["route", "add", "unreachable", GUARD_ROUTE], None) {
            Ok(_) => Ok(()),
            // Lost a race with someone adding the same route: fine if it is ours.
            Err(e) if guard_route_present().unwrap_or(false) => {
                let _ = e;
                Ok(())
            }
            Err(e) => Err(e),
        },
    }
}

fn remove_guard_route() -> Result<()> {
    if guard_route_present()? {
        cmd::run(IP, &["route", "del", "unreachable", GUARD_ROUTE], None)?;
    }
    Ok(())
}

/// With the lock held: drops a guard route that no live testbed needs any more (left by a
/// crashed run).
pub(crate) fn sweep_guard_route(dir: &Path) {
    if !live_leases(dir).iter().any(|l| l.namespaces) {
        let _ = remove_guard_route();
    }
}

/// How many namespaces-mode testbeds (of any process on this machine) are alive now.
pub fn live_namespace_testbeds() -> usize {
    let dir = state_dir();
    match lock(&dir) {
        Ok(_lock) => live_leases(&dir).iter().filter(|l| l.namespaces).count(),
        Err(_) => 0,
    }
}
