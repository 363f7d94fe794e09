//! The configuration holdfast owns in a member's data directory, rendered from what the
//! member is (pure).
//!
//! holdfast writes the whole `postgresql.conf` (managed settings first, then the user's
//! validated `parameters`) and `pg_hba.conf` (SCRAM passwords only; the Unix socket for
//! holdfast's own admin connection, loopback TCP for everything that arrives through the
//! node's proxy or tunnel). A replica's upstream is the database's `-rw` service address
//! on its own node: the proxy there always leads to the primary of the current term, so a
//! failover never needs replicas re-pointed.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Everything `postgresql.conf` depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConf<'a> {
    /// `<db>-m<i>`: the member's `cluster_name` and its `application_name` upstream.
    pub name: &'a str,
    /// The local TCP port (loopback only).
    pub port: u16,
    pub socket_dir: &'a Path,
    /// `Some` on a replica: where it streams from.
    pub upstream: Option<Upstream<'a>>,
    /// On a primary: `synchronous_standby_names` (see [`sync_names`]); empty: async.
    pub sync_standbys: String,
    /// The user's `parameters`, validated by the spec.
    pub parameters: &'a BTreeMap<String, String>,
}

/// A replica's upstream: the `-rw` address of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream<'a> {
    pub host: &'a str,
    pub port: u16,
    pub password: &'a str,
    /// The physical replication slot kept for this member on the primary.
    pub slot: &'a str,
}

/// A member's name: `db-m0`.
pub fn member_name(database: &str, member: u32) -> String {
    format!("{database}-m{member}")
}

/// A member's replication slot (slot names allow `[a-z0-9_]` only).
pub fn slot_name(database: &str, member: u32) -> String {
    format!("{}_m{member}", database.replace('-', "_"))
}

/// `synchronous_standby_names` for a primary: `ANY k ("db-m1", "db-m2")` over the
/// members `standbys` (see `DatabaseRecord::sync_standbys`), empty for `k == 0`.
pub fn sync_names(database: &str, standbys: &[u32], k: u32) -> String {
    if k == 0 || standbys.is_empty() {
        return String::new();
    }
    let names: Vec<String> = standbys.iter().map(|m| format!("\"{}\"", member_name(database, *m))).collect();
    format!("ANY {} ({})", k.min(standbys.len() as u32), names.join(", "))
}

/// `synchronous_standby_names` of a primary whose node's lease lapsed: a standby no
/// member is named, so every commit waits (none is acknowledged) until the real list is
/// back. It holds `sync: 0` databases too (`synchronous_commit` is `on`).
pub const HOLD_COMMITS: &str = "FIRST 1 (\"holdfast-commits-held\")";

/// A value quoted for `postgresql.conf` (single quotes doubled).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A value quoted for a libpq connection string.
pub fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The replication connection string of a replica.
pub fn upstream_conninfo(up: &Upstream<'_>, application_name: &str) -> String {
    format!(
        "host={} port={} user={} password={} application_name={} connect_timeout=2 keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=3 tcp_user_timeout=5000",
        conninfo_value(up.host),
        up.port,
        crate::REPLICATION_USER,
        conninfo_value(up.password),
        conninfo_value(application_name),
    )
}

/// `postgresql.conf`.
pub fn postgresql_conf(c: &MemberConf<'_>) -> String {
    let mut s = String::from("# Written by holdfast; changes here are overwritten. Set `parameters` in the spec.\n");
    let mut set = |k: &str, v: String| {
        let _ = writeln!(s, "{k} = {v}");
    };
    set("listen_addresses", quote("127.0.0.1"));
    set("port", c.port.to_string());
    set("unix_socket_directories", quote(&c.socket_dir.display().to_string()));
    set("cluster_name", quote(c.name));
    set("wal_level", "replica".into());
    set("hot_standby", "on".into());
    set("hot_standby_feedback", "on".into());
    set("max_wal_senders", "16".into());
    set("max_replication_slots", "16".into());
    // pg_rewind needs hint bits WAL-logged (or data checksums).
    set("wal_log_hints", "on".into());
    // A dead member's slot must not fill the disk.
    set("max_slot_wal_keep_size", quote("2GB"));
    set("wal_keep_size", quote("256MB"));
    set("password_encryption", quote("scram-sha-256"));
    set("recovery_target_timeline", quote("latest"));
    set("wal_receiver_timeout", quote("5s"));
    set("wal_sender_timeout", quote("5s"));
    set("wal_retrieve_retry_interval", quote("500ms"));
    // A standby tells its primary what it flushed at least every second (default 10 s),
    // so commits held while a lease lapsed complete soon after it is renewed.
    set("wal_receiver_status_interval", quote("1s"));
    // Commits wait for the synchronous standbys (and for none while the list is empty);
    // holding them while the lease lapsed depends on it.
    set("synchronous_commit", "on".into());
    set("tcp_keepalives_idle", "2".into());
    set("tcp_keepalives_interval", "1".into());
    set("tcp_keepalives_count", "3".into());
    set("tcp_user_timeout", "5000".into());
    set("logging_collector", "off".into());
    set("log_line_prefix", quote("%m [%p] %q%u@%d "));
    match &c.upstream {
        Some(up) => {
            set("primary_conninfo", quote(&upstream_conninfo(up, c.name)));
            set("primary_slot_name", quote(up.slot));
            set("synchronous_standby_names", quote(""));
        }
        None => {
            set("primary_conninfo", quote(""));
            set("synchronous_standby_names", quote(&c.sync_standbys));
        }
    }
    s.push_str("# The spec's parameters:\n");
    for (k, v) in c.parameters {
        let _ = writeln!(s, "{k} = {}", quote(v));
    }
    s
}

/// `pg_hba.conf`: SCRAM everywhere; the Unix socket for the admin connection, loopback
/// TCP for clients and replication (they arrive through the node's proxy and tunnels).
pub fn pg_hba_conf() -> String {
    format!(
        "# Written by holdfast.\n\
         local   all          all                         scram-sha-256\n\
         host    replication  {repl}  127.0.0.1/32  scram-sha-256\n\
         host    all          all                   127.0.0.1/32  scram-sha-256\n",
        repl = crate::REPLICATION_USER
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_names_list_the_standbys_a_commit_waits_for() {
        assert_eq!(sync_names("db", &[1, 2], 1), r#"ANY 1 ("db-m1", "db-m2")"#);
        assert_eq!(sync_names("db", &[0, 2], 2), r#"ANY 2 ("db-m0", "db-m2")"#);
        assert_eq!(sync_names("db", &[0, 2], 0), "");
        assert_eq!(sync_names("db", &[2], 2), r#"ANY 1 ("db-m2")"#, "never more than the list");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(conninfo_value(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(slot_name("my-db", 2), "my_db_m2");
    }

    #[test]
    fn a_replica_streams_from_the_rw_address_with_its_slot() {
        let params = BTreeMap::from([("work_mem".to_string(), "8MB".to_string())]);
        let conf = postgresql_conf(&MemberConf {
            name: "db-m1",
            port: 20001,
            socket_dir: Path::new("/d/sock"),
            upstream: Some(Upstream { host: "127.64.0.9", port: 5432, password: "pw", slot: "db_m1" }),
            sync_standbys: "ignored".into(),
            parameters: &params,
        });
        assert!(conf.contains("port = 20001\n"), "{conf}");
        assert!(conf.contains("primary_conninfo = 'host=''127.64.0.9'' port=5432 user=holdfast_replication password=''pw'' application_name=''db-m1'' connect_timeout=2 "), "{conf}");
        assert!(conf.contains("primary_slot_name = 'db_m1'\n"));
        assert!(conf.contains("synchronous_standby_names = ''\n"));
        assert!(conf.ends_with("work_mem = '8MB'\n"), "the user's parameters come last: {conf}");
    }

    #[test]
    fn a_primary_has_its_sync_list() {
        let params = BTreeMap::new();
        let conf = postgresql_conf(&MemberConf {
            name: "db-m0",
            port: 1,
            socket_dir: Path::new("/s"),
            upstream: None,
            sync_standbys: sync_names("db", &[1, 2], 1),
            parameters: &params,
        });
        assert!(conf.contains("synchronous_standby_names = 'ANY 1 (\"db-m1\", \"db-m2\")'\n"), "{conf}");
        assert!(conf.contains("primary_conninfo = ''\n"));
    }
}
