//! The admin connection to a member (redis-rs, as the `holdfast` ACL user over
//! loopback TCP): what the member is (`INFO`, parsed by the pure [`parse_info`]) and the
//! few commands that change its role — promote (`REPLICAOF NO ONE`), re-point
//! (`REPLICAOF host port`), open or fence writes (`min-replicas-to-write`), hold writes
//! (`CLIENT PAUSE … WRITE`) — and the live settings (`CONFIG SET`). Every call is bounded
//! by the connection's response timeout.
use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::conf::{Disk, Writes};
use crate::{RedisError, ADMIN_USER, FENCE_REPLICAS};

/// What a member says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probe {
    /// `role:master`.
    pub master: bool,
    /// The process's `run_id` (new at every start).
    pub run_id: String,
    /// `master_replid`: the replication history it serves (a master) or follows.
    pub replid: String,
    /// `master_repl_offset`: a master's written offset; a replica's processed one.
    pub offset: u64,
    /// A replica: the offset received (`slave_read_repl_offset`, Redis 7), at least
    /// `offset`.
    pub received: u64,
    /// A replica: `master_link_status:up`.
    pub link_up: bool,
    /// A replica: a full sync is under way.
    pub syncing: bool,
    /// Loading its AOF or RDB.
    pub loading: bool,
    /// A master: replicas connected.
    pub replicas: u32,
    /// `min-replicas-to-write` as running.
    pub min_replicas: u32,
}

impl Probe {
    /// Writes are fenced (refused) as running.
    pub fn fenced(&self) -> bool {
        self.min_replicas >= FENCE_REPLICAS
    }
}

/// Reads `INFO` text (any sections) into a [`Probe`]; `min_replicas` is left at 0.
pub fn parse_info(text: &str) -> Result<Probe, RedisError> {
    let fields: BTreeMap<&str, &str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.trim_end().split_once(':')).collect();
    let get = |k: &str| fields.get(k).copied();
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let role = get("role").ok_or_else(|| RedisError::Answer("INFO has no role".into()))?;
    let master = match role {
        "master" => true,
        "slave" | "replica" => false,
        other => return Err(RedisError::Answer(format!("INFO role `{other}`"))),
    };
    let offset = if master { num("master_repl_offset") } else { num("slave_repl_offset") };
    Ok(Probe {
        master,
        run_id: get("run_id").unwrap_or_default().to_string(),
        replid: get("master_replid").unwrap_or_default().to_string(),
        offset,
        received: num("slave_read_repl_offset").max(offset),
        link_up: !master && get("master_link_status") == Some("up"),
        syncing: get("master_sync_in_progress") == Some("1"),
        loading: get("loading") == Some("1"),
        replicas: num("connected_slaves") as u32,
        min_replicas: 0,
    })
}

/// An open admin connection.
pub struct Admin {
    con: MultiplexedConnection,
    addr: String,
    timeout: Duration,
}

impl Admin {
    /// Connects to the member on `127.0.0.1:port` as the admin user within `timeout`
    /// (also each later call's bound).
    pub async fn connect(port: u16, password: &str, timeout: Duration) -> Result<Admin, RedisError> {
        let addr = format!("127.0.0.1:{port}");
        let info = ConnectionAddr::Tcp("127.0.0.1".into(), port)
            .into_connection_info()
            .map_err(|source| RedisError::Redis { addr: addr.clone(), source })?
            .set_redis_settings(RedisConnectionInfo::default().set_username(ADMIN_USER).set_password(password));
        let client = redis::Client::open(info).map_err(|source| RedisError::Redis { addr: addr.clone(), source })?;
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        let con = tokio::time::timeout(timeout, client.get_multiplexed_async_connection_with_config(&config))
            .await
            .map_err(|_| RedisError::Timeout { addr: addr.clone(), ms: timeout.as_millis() as u64 })?
            .map_err(|source| RedisError::Redis { addr: addr.clone(), source })?;
        Ok(Admin { con, addr, timeout })
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let mut con = self.con.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut con)).await {
            Ok(r) => r.map_err(|source| RedisError::Redis { addr: self.addr.clone(), source }),
            Err(_) => Err(RedisError::Timeout { addr: self.addr.clone(), ms: self.timeout.as_millis() as u64 }),
        }
    }

    /// Role, offsets, replication id, run id, loading, and the write fence.
    pub async fn probe(&self) -> Result<Probe, RedisError> {
        let mut text = String::new();
        for section in ["server", "replication", "persistence"] {
            let part: String = self.run(redis::cmd("INFO").arg(section)).await?;
            text.push_str(&part);
            text.push('\n');
        }
        let mut p = parse_info(&text)?;
        let pair: Vec<String> = self.run(redis::cmd("CONFIG").arg("GET").arg("min-replicas-to-write")).await?;
        p.min_replicas = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(p)
    }

    /// Opens or fences writes (`min-replicas-to-write`).
    pub async fn set_writes(&self, writes: Writes) -> Result<(), RedisError> {
        let (min, _) = writes.settings();
        self.run::<()>(redis::cmd("CONFIG").arg("SET").arg("min-replicas-to-write").arg(min)).await
    }

    /// `REPLICAOF NO ONE`: the member becomes a master (keeping its data and offset, and
    /// its former master's history as `replid2`, so the other replicas continue from it).
    pub async fn promote(&self) -> Result<(), RedisError> {
        self.run::<()>(redis::cmd("REPLICAOF").arg("NO").arg("ONE")).await
    }

    /// `REPLICAOF host port`: (re)attaches to the master behind that address. A master
    /// that becomes a replica disconnects its own replicas, so they reconnect too.
    pub async fn replicate_from(&self, host: &str, port: u16) -> Result<(), RedisError> {
        self.run::<()>(redis::cmd("REPLICAOF").arg(host).arg(port)).await
    }

    /// `CLIENT PAUSE <1 day> WRITE`: write commands wait (reads go on) until
    /// [`Admin::resume_writes`]; a fence set meanwhile refuses them when they resume.
    pub async fn hold_writes(&self) -> Result<(), RedisError> {
        self.run::<()>(redis::cmd("CLIENT").arg("PAUSE").arg(86_400_000u64).arg("WRITE")).await
    }

    /// `CLIENT UNPAUSE`.
    pub async fn resume_writes(&self) -> Result<(), RedisError> {
        self.run::<()>(redis::cmd("CLIENT").arg("UNPAUSE")).await
    }

    /// The live settings of the spec: persistence and maxmemory (0: no limit).
    pub async fn apply_settings(&self, disk: Disk, maxmemory: Option<u64>) -> Result<(), RedisError> {
        let (aof, save) = match disk {
            Disk::Aof => ("yes", ""),
            Disk::Rdb => ("no", "3600 1 300 100 60 10000"),
            Disk::None => ("no", ""),
        };
        self.run::<()>(redis::cmd("CONFIG").arg("SET").arg("save").arg(save)).await?;
        self.run::<()>(redis::cmd("CONFIG").arg("SET").arg("appendonly").arg(aof)).await?;
        self.run::<()>(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(maxmemory.unwrap_or(0))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICA: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:aaa111\r\n\r\n# Replication\r\nrole:slave\r\nmaster_host:127.64.0.9\r\nmaster_port:6380\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:0\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:1500\r\nslave_repl_offset:1400\r\nslave_priority:100\r\nconnected_slaves:0\r\nmaster_replid:r2\r\nmaster_replid2:r1\r\nmaster_repl_offset:1400\r\n\r\n# Persistence\r\nloading:0\r\n";
    const MASTER: &str = "run_id:bbb\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=40001,state=online,offset=90,lag=0\r\nmaster_replid:r2\r\nmaster_repl_offset:100\r\nloading:1\r\n";

    #[test]
    fn info_of_a_replica_and_a_master() {
        let r = parse_info(REPLICA).expect("replica");
        assert_eq!(
            r,
            Probe {
                master: false,
                run_id: "aaa111".into(),
                replid: "r2".into(),
                offset: 1400,
                received: 1500,
                link_up: true,
                syncing: false,
                loading: false,
                replicas: 0,
                min_replicas: 0,
            }
        );
        let m = parse_info(MASTER).expect("master");
        assert!(m.master && m.loading && !m.link_up);
        assert_eq!((m.offset, m.received, m.replicas), (100, 100, 2));
        assert!(parse_info("nothing\r\n").is_err());
        assert!(parse_info("role:sentinel\r\n").is_err());
    }
}
