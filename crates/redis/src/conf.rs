//! The `redis.conf` holdfast writes for a member (pure). The file is rewritten whenever
//! what it says changes; running members get the same changes through `CONFIG SET`, so
//! a restart never brings back an older role or an open write path.
//!
//! Users (ACL, in the file): `default` — what services connect as, every command but the
//! administrative ones (`@admin`: `REPLICAOF`, `CONFIG SET`, `SHUTDOWN`, `FAILOVER`, …; `ROLE`,
//! `INFO` and `CONFIG GET` stay, clients check them); `holdfast` — the admin; and
//! `holdfast_replication` — what replicas authenticate as (`PSYNC`, `REPLCONF`, `PING`).
use std::fmt::Write as _;
use std::path::Path;

use crate::{ADMIN_USER, FENCE_REPLICAS, REPLICATION_USER};

/// How a member keeps its data on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Append-only file, fsynced every second.
    Aof,
    /// RDB snapshots (`save 3600 1 300 100 60 10000`).
    Rdb,
    /// Nothing.
    None,
}

/// Whether the member takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Open; a write needs `min_replicas` replicas that acknowledged within 10 s
    /// (`durability: replicated` is 1).
    Open { min_replicas: u32 },
    /// Fenced: every write is refused (`NOREPLICAS`), reads go on.
    Fenced,
}

impl Writes {
    /// `(min-replicas-to-write, min-replicas-max-lag)`.
    pub fn settings(self) -> (u32, u32) {
        match self {
            Writes::Open { min_replicas } => (min_replicas, 10),
            Writes::Fenced => (FENCE_REPLICAS, 10),
        }
    }
}

/// The passwords of a database's three users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passwords<'a> {
    /// Redis's `default` user (what services use).
    pub default: &'a str,
    pub admin: &'a str,
    pub replication: &'a str,
}

/// Everything the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberConf<'a> {
    /// `<db>-m<i>`, in the file's header.
    pub name: &'a str,
    /// The data directory (`dir`).
    pub dir: &'a Path,
    pub disk: Disk,
    pub maxmemory: Option<u64>,
    pub passwords: Passwords<'a>,
    /// A replica's master: the database's replication address and port.
    pub upstream: Option<(&'a str, u16)>,
    pub writes: Writes,
}

/// The ACL rule of the `default` user.
pub const DEFAULT_USER_RULES: &str = "~* &* +@all -@admin +role +info +config|get";

/// The file's text. Passwords are letters and digits (holdfast makes them); the port is
/// given on the command line (`--port`), since the agent picks it.
pub fn redis_conf(c: &MemberConf<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Written by holdfast for {}; rewritten on every change: do not edit.", c.name);
    s.push_str("bind 127.0.0.1\nprotected-mode yes\ndaemonize no\nsupervised no\nlogfile \"\"\nloglevel notice\n");
    let _ = writeln!(s, "dir {}", quote(&c.dir.display().to_string()));
    s.push_str("dbfilename dump.rdb\n");
    match c.disk {
        Disk::Aof => s.push_str("appendonly yes\nappendfsync everysec\nsave \"\"\n"),
        Disk::Rdb => s.push_str("appendonly no\nsave 3600 1 300 100 60 10000\n"),
        Disk::None => s.push_str("appendonly no\nsave \"\"\n"),
    }
    if let Some(bytes) = c.maxmemory {
        let _ = writeln!(s, "maxmemory {bytes}");
    }
    // A new replica syncs at once (no 5 s wait for others), over the socket.
    s.push_str(
        "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\nreplica-read-only yes\nreplica-serve-stale-data yes\n",
    );
    let (min, lag) = c.writes.settings();
    let _ = writeln!(s, "min-replicas-to-write {min}\nmin-replicas-max-lag {lag}");
    let _ = writeln!(s, "user default on >{} {DEFAULT_USER_RULES}", c.passwords.default);
    let _ = writeln!(s, "user {ADMIN_USER} on >{} ~* &* +@all", c.passwords.admin);
    let _ = writeln!(s, "user {REPLICATION_USER} on >{} +psync +replconf +ping +sync", c.passwords.replication);
    let _ = writeln!(s, "masteruser {REPLICATION_USER}\nmasterauth {}", c.passwords.replication);
    if let Some((host, port)) = c.upstream {
        let _ = writeln!(s, "replicaof {host} {port}");
    }
    s
}

/// A value in double quotes, `\` and `"` escaped (Redis's config syntax).
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(upstream: Option<(&str, u16)>, writes: Writes, disk: Disk) -> String {
        redis_conf(&MemberConf {
            name: "cache-m1",
            dir: Path::new("/var/lib/holdfast/databases/cache/m1/data"),
            disk,
            maxmemory: Some(256 << 20),
            passwords: Passwords { default: "pwD", admin: "pwA", replication: "pwR" },
            upstream,
            writes,
        })
    }

    #[test]
    fn a_replica_points_at_the_replication_address_and_authenticates() {
        let text = conf(Some(("127.64.1.2", 6380)), Writes::Open { min_replicas: 0 }, Disk::Aof);
        assert!(text.contains("replicaof 127.64.1.2 6380\n"), "{text}");
        assert!(text.contains("masteruser holdfast_replication\nmasterauth pwR\n"));
        assert!(text.contains("user holdfast_replication on >pwR +psync +replconf +ping +sync\n"));
        assert!(text.contains("user default on >pwD ~* &* +@all -@admin +role +info +config|get\n"));
        assert!(text.contains("bind 127.0.0.1\n"));
        assert!(text.contains("dir \"/var/lib/holdfast/databases/cache/m1/data\"\n"));
        assert!(text.contains("appendonly yes\nappendfsync everysec\n"));
        assert!(text.contains("maxmemory 268435456\n"));
        assert!(text.contains("min-replicas-to-write 0\n"));
    }

    #[test]
    fn a_master_has_no_upstream_and_a_fence_refuses_writes() {
        let open = conf(None, Writes::Open { min_replicas: 1 }, Disk::Rdb);
        assert!(!open.contains("replicaof"));
        assert!(open.contains("min-replicas-to-write 1\nmin-replicas-max-lag 10\n"));
        assert!(open.contains("appendonly no\nsave 3600 1 300 100 60 10000\n"));
        let fenced = conf(None, Writes::Fenced, Disk::None);
        assert!(fenced.contains(&format!("min-replicas-to-write {FENCE_REPLICAS}\n")));
        assert!(fenced.contains("appendonly no\nsave \"\"\n"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
    }
}
