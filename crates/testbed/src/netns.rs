//! Network namespaces and the virtual wiring between them: building a testbed's topology
//! (one switch namespace with a bridge per site and a WAN bridge joining the sites' uplinks;
//! one namespace per node with `eth0` plugged into its site's bridge), tearing it down, and
//! sweeping namespaces left behind by dead processes. Nothing is ever created in the root
//! namespace: every veth is born inside the switch namespace with its peer sent straight
//! into the node namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cmd::{self, IP};
use crate::error::Result;
use crate::lease::{owner_pid, pid_alive};

/// Where `ip netns` keeps its named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The bind-mounted namespace file of `name`.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Names of all named network namespaces.
pub(crate) fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Whether `ip netns` works here (root, and the kernel has network namespaces).
pub(crate) fn usable() -> Result<()> {
    cmd::run(IP, &["netns", "list"], None).map(|_| ())
}

/// One node as the topology builder sees it.
pub(crate) struct NodeWiring<'a> {
    pub netns: &'a str,
    pub site: usize,
    pub addr: Ipv4Addr,
    pub mac: String,
}

/// Interface names inside the switch namespace.
pub(crate) fn node_port(node: usize) -> String {
    format!("n{node}")
}
pub(crate) fn site_bridge(site: usize) -> String {
    format!("s{site}")
}
/// The WAN-side end of site `site`'s uplink (plugged into the `wan` bridge).
pub(crate) fn wan_port(site: usize) -> String {
    format!("w{site}")
}

/// Creates the switch and node namespaces and wires them. On error the caller tears down
/// whatever exists (every name is derived, so [`delete`] finds it).
pub(crate) fn build(switch: &str, sites: usize, nodes: &[NodeWiring<'_>]) -> Result<()> {
    // The names carry our pid and our exclusive lease id: one that exists already is a stale
    // leftover of a crashed process that had our pid.
    delete(switch);
    nodes.iter().for_each(|n| delete(n.netns));
    cmd::run(IP, &["netns", "add", switch], None)?;
    for node in nodes {
        cmd::run(IP, &["netns", "add", node.netns], None)?;
    }
    let mut batch = String::from("link set lo up\n");
    for site in 0..sites {
        let br = site_bridge(site);
        batch.push_str(&format!("link add {br} type bridge\nlink set {br} up\n"));
    }
    if sites > 1 {
        batch.push_str("link add wan type bridge\nlink set wan up\n");
        for site in 0..sites {
            let (up, wan, br) = (format!("u{site}"), wan_port(site), site_bridge(site));
            batch.push_str(&format!(
                "link add {up} type veth peer name {wan}\nlink set {up} master {br} up\nlink set {wan} master wan up\n"
            ));
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let (port, br) = (node_port(i), site_bridge(node.site));
        batch.push_str(&format!(
            "link add {port} type veth peer name eth0 address {} netns {}\nlink set {port} master {br} up\n",
            node.mac, node.netns
        ));
    }
    cmd::run(IP, &["-n", switch, "-batch", "-"], Some(&batch))?;
    for node in nodes {
        let batch = format!("link set lo up\naddr add {}/16 dev eth0\nlink set eth0 up\n", node.addr);
        cmd::run(IP, &["-n", node.netns, "-batch", "-"], Some(&batch))?;
    }
    Ok(())
}

/// Pids of the processes living in namespace `name` (never our own).
pub(crate) fn pids(name: &str) -> Vec<u32> {
    let own = std::process::id();
    cmd::run(IP, &["netns", "pids", name], None)
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).filter(|p| *p != own).collect())
        .unwrap_or_default()
}

/// SIGKILLs every process in namespace `name`, then deletes it. Missing namespaces are fine.
pub(crate) fn delete(name: &str) {
    if !netns_path(name).exists() {
        return;
    }
    for pid in pids(name) {
        crate::process::signal_pid(pid, rustix::process::Signal::KILL);
    }
    let _ = cmd::run(IP, &["netns", "del", name], None);
}

/// Deletes every `hft-<pid>-...` namespace whose owning process is dead.
pub(crate) fn sweep_dead() {
    for name in list() {
        if let Some(pid) = owner_pid(&name) {
            if !pid_alive(pid) {
                eprintln!("holdfast-testbed: removing leftover namespace {name} (owner pid {pid} is dead)");
                delete(&name);
            }
        }
    }
}
