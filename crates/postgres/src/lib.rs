//! One PostgreSQL member of a managed database, as far as this machine is concerned.
//!
//! - [`install`]: which PostgreSQL this machine has (binary directory, major version) and
//!   the unprivileged OS user it runs as (PostgreSQL refuses to run as root).
//! - [`conf`] (pure): the files holdfast owns in a data directory — `postgresql.conf`,
//!   `pg_hba.conf`, the `ANY k (...)` synchronous standby list — and libpq quoting.
//! - [`datadir`]: preparing a data directory: `initdb` for the first primary,
//!   `pg_basebackup` for a replica, `pg_rewind` for a former primary, `standby.signal`,
//!   and the marker recording what the directory was last prepared as.
//! - [`admin`]: the admin connection over the member's Unix socket: probe (role,
//!   timeline, LSNs), roles and databases, replication slots, promote, reload.
//!
//! Running the `postgres` process itself is the node agent's job (supervision, logs,
//! cgroups, re-adoption); deciding roles is the control plane's. This crate only does
//! what one member needs done, with typed errors naming the command and its output.
pub mod admin;
pub mod conf;
pub mod datadir;
pub mod error;
pub mod install;
pub mod member;

pub use error::PgError;

/// The port every database endpoint (`<db>-rw`, `-ro`, `-r`) listens on at its service
/// address.
pub const POSTGRES_PORT: u16 = 5432;
/// The port replicas stream WAL from, at the database's `-rw` address (`<db>-wal`): it
/// leads to the current primary like `-rw`, but its connections are not cut when the
/// primary changes — a primary being switched over still sends its last WAL to the
/// standbys as it shuts down.
pub const WAL_PORT: u16 = 5433;
/// The superuser role holdfast administers members with.
pub const SUPERUSER: &str = "holdfast";
/// The role replicas stream WAL as.
pub const REPLICATION_USER: &str = "holdfast_replication";
