//! One Redis member of a managed database, as far as this machine is concerned, and the
//! Sentinel-compatible endpoint every node serves for Redis databases.
//!
//! - [`install`]: which `redis-server` this machine has (its major version) and the OS
//!   user members run as (`redis` when the daemon is root).
//! - [`conf`] (pure): the `redis.conf` holdfast owns — address, persistence, users (the
//!   services' `default`, holdfast's admin, the replicas'), the upstream of a replica
//!   (the database's replication address, so a failover never re-points replicas by
//!   hand), and the write fence.
//! - [`datadir`]: a member's directory and the marker of what it last was.
//! - [`admin`]: the admin connection (redis-rs): probe (`INFO`), promote, re-point,
//!   fence, hold; and the parsing of `INFO` (pure).
//! - [`member`] (pure): the next step for a member from what it should be and what it is.
//! - [`sentinel`] (pure): answers to the Sentinel commands clients use, from a view of the
//!   databases; [`sentinel_server`] serves them on a socket, with `+switch-master`.
//!
//! Running `redis-server` itself is the node agent's job; deciding roles is the control
//! plane's (the same engine, terms and fencing as PostgreSQL).
pub mod admin;
pub mod conf;
pub mod datadir;
pub mod error;
pub mod install;
pub mod member;
pub mod sentinel;
pub mod sentinel_server;

pub use error::RedisError;

/// The port replicas replicate from, at the database's master address (`<db>-repl`): it
/// leads to the current master like the master endpoint, but its connections are not cut
/// when the master changes (a demoted master disconnects its replicas itself).
pub const REPL_PORT: u16 = 6380;
/// A second port of the same replication endpoint. Redis retries a broken replication
/// link only once a second; `REPLICAOF` to another address connects at once (keeping the
/// partial resync), so a replica whose link is down while a master answers is switched
/// between the two ports and reattaches as soon as the new master is there.
pub const REPL_PORT_ALT: u16 = 6381;
/// The ACL user holdfast administers members as.
pub const ADMIN_USER: &str = "holdfast";
/// The ACL user replicas authenticate to their master as.
pub const REPLICATION_USER: &str = "holdfast_replication";
/// `min-replicas-to-write` of a fenced master: more replicas than can exist, so every
/// write is refused (`NOREPLICAS`) while reads go on.
pub const FENCE_REPLICAS: u32 = 1_000_000;
