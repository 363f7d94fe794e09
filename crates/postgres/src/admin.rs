//! The admin connection to one member: SQL over its Unix socket as the `holdfast`
//! superuser. Every call is bounded in time, so a hung server is a typed error, not a
//! stuck runner.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::PgError;

/// What the member says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// `pg_is_in_recovery()`: a replica.
    pub in_recovery: bool,
    /// Primary: its timeline. Replica: the newest timeline it holds WAL of (its WAL
    /// receiver's, or the newest segment in `pg_wal`; never only the last restartpoint's,
    /// which can be several failovers old while the receiver is down: a standby ranked by
    /// that once lost a failover to one holding less WAL).
    pub timeline: u32,
    /// Primary: `pg_current_wal_flush_lsn()`; replica: the greater of
    /// `pg_last_wal_receive_lsn()` (WAL flushed on the standby) and the replay position.
    /// The receive position alone is not enough: each time the WAL receiver restarts it
    /// falls back to the start of the segment it streams from, so a standby holding more
    /// WAL than another could report less (and lose the failover to it).
    pub lsn: u64,
    /// Replica: `pg_last_wal_replay_lsn()`; primary: same as `lsn`.
    pub replay_lsn: u64,
    /// Replica: connected to its upstream.
    pub streaming: bool,
    /// A setting changed in the configuration file takes effect only after a restart
    /// (`pg_settings.pending_restart`, e.g. `shared_buffers`).
    pub pending_restart: bool,
}

/// An open admin connection.
pub struct Admin {
    client: Client,
    socket: String,
    timeout: Duration,
}

impl Admin {
    /// Connects over the Unix socket in `socket_dir` to the member on `port`.
    pub async fn connect(socket_dir: &Path, port: u16, password: &str, timeout: Duration) -> Result<Admin, PgError> {
        let socket = format!("{}/.s.PGSQL.{port}", socket_dir.display());
        let mut cfg = superuser(password, timeout);
        cfg.host_path(socket_dir)
            .port(port)
            // holdfast's own writes (roles, databases) commit locally: with synchronous
            // standbys configured they would otherwise wait for a standby that cannot
            // exist yet (it needs the replication role to clone).
            .options("-c synchronous_commit=local");
        let (client, connection) = open(&cfg, &socket, timeout).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres admin connection ended");
            }
        });
        Ok(Admin { client, socket, timeout })
    }

    /// Runs `CHECKPOINT` on the server at `host:port` (TCP, as the superuser): before
    /// `pg_rewind` from a primary promoted moments ago, whose `pg_control` still names its
    /// old timeline until its first checkpoint (PostgreSQL's pg_rewind documentation says
    /// to checkpoint it); a rewind from it would leave a replica that cannot start
    /// ("requested timeline N does not contain minimum recovery point ...").
    pub async fn checkpoint_remote(host: &str, port: u16, password: &str, timeout: Duration) -> Result<(), PgError> {
        let socket = format!("{host}:{port}");
        let mut cfg = superuser(password, timeout);
        cfg.host(host).port(port);
        let (client, connection) = open(&cfg, &socket, timeout).await?;
        let conn = tokio::spawn(connection);
        let done = tokio::time::timeout(Duration::from_secs(120), client.simple_query("CHECKPOINT")).await;
        drop(client);
        let _ = conn.await;
        match done {
            Err(_) => Err(PgError::Timeout { socket, secs: 120 }),
            Ok(Err(source)) => Err(PgError::Sql { socket, source }),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Whether the connection is gone (postgres stopped or restarted): connect again.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    async fn rows(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, PgError> {
        self.rows_within(sql, self.timeout).await
    }

    async fn rows_within(&self, sql: &str, within: Duration) -> Result<Vec<tokio_postgres::Row>, PgError> {
        tokio::time::timeout(within, self.client.query(sql, &[]))
            .await
            .map_err(|_| PgError::Timeout { socket: self.socket.clone(), secs: within.as_secs() })?
            .map_err(|source| PgError::Sql { socket: self.socket.clone(), source })
    }

    /// The first column of the first row of `sql`, as a boolean (`None`: no such value).
    async fn boolean(&self, sql: &str, within: Duration) -> Result<Option<bool>, PgError> {
        Ok(self.rows_within(sql, within).await?.first().and_then(|r| r.try_get::<_, bool>(0).ok()))
    }

    async fn exec(&self, sql: &str) -> Result<(), PgError> {
        tokio::time::timeout(self.timeout, self.client.batch_execute(sql))
            .await
            .map_err(|_| PgError::Timeout { socket: self.socket.clone(), secs: self.timeout.as_secs() })?
            .map_err(|source| PgError::Sql { socket: self.socket.clone(), source })
    }

    async fn text_column(&self, sql: &str) -> Result<Vec<String>, PgError> {
        let rows = self.rows(sql).await?;
        rows.iter().map(|r| r.try_get::<_, String>(0).map_err(|e| PgError::Answer(e.to_string()))).collect()
    }

    /// Role, timeline and positions.
    pub async fn probe(&self) -> Result<Probe, PgError> {
        let rows = self
            .rows(
                "SELECT pg_is_in_recovery(), \
                 CASE WHEN pg_is_in_recovery() THEN \
                   GREATEST(COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), 0), \
                     (pg_control_checkpoint()).timeline_id, \
                     COALESCE((SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() \
                       WHERE name ~ '^[0-9A-F]{24}$'), 0)) \
                 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
                 ((CASE WHEN pg_is_in_recovery() THEN GREATEST(COALESCE(pg_last_wal_receive_lsn(), '0/0'), \
                   COALESCE(pg_last_wal_replay_lsn(), '0/0')) \
                   ELSE pg_current_wal_flush_lsn() END) - '0/0'::pg_lsn)::text, \
                 ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END) \
                   - '0/0'::pg_lsn)::text, \
                 EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'), \
                 EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart)",
            )
            .await?;
        let row = rows.first().ok_or_else(|| PgError::Answer("the probe returned no row".into()))?;
        let get_lsn = |i: usize| -> Result<u64, PgError> {
            let t: Option<String> = row.try_get(i).map_err(|e| PgError::Answer(e.to_string()))?;
            Ok(t.and_then(|t| t.split('.').next().and_then(|n| n.parse().ok())).unwrap_or(0))
        };
        let in_recovery: bool = row.try_get(0).map_err(|e| PgError::Answer(e.to_string()))?;
        let timeline: Option<i32> = row.try_get(1).map_err(|e| PgError::Answer(e.to_string()))?;
        let streaming: bool = row.try_get(4).map_err(|e| PgError::Answer(e.to_string()))?;
        let pending_restart: bool = row.try_get(5).map_err(|e| PgError::Answer(e.to_string()))?;
        Ok(Probe {
            in_recovery,
            timeline: timeline.unwrap_or(0).max(0) as u32,
            lsn: get_lsn(2)?,
            replay_lsn: get_lsn(3)?,
            streaming,
            pending_restart,
        })
    }

    /// Creates or updates the roles (login + password) and databases: every user, the
    /// replication role, every database owned by the first user.
    pub async fn ensure_roles(
        &self,
        users: &BTreeMap<String, String>,
        replication_password: &str,
        databases: &[String],
        owner: Option<&str>,
    ) -> Result<(), PgError> {
        let existing: BTreeSet<String> =
            self.text_column("SELECT rolname::text FROM pg_roles").await?.into_iter().collect();
        let mut sql = String::new();
        let mut role = |name: &str, password: &str, extra: &str| {
            let verb = if existing.contains(name) { "ALTER" } else { "CREATE" };
            sql.push_str(&format!("{verb} ROLE {} {extra} LOGIN PASSWORD {};\n", ident(name), literal(password)));
        };
        role(crate::REPLICATION_USER, replication_password, "REPLICATION");
        for (user, password) in users {
            role(user, password, "");
        }
        self.exec(&sql).await?;
        let dbs: BTreeSet<String> =
            self.text_column("SELECT datname::text FROM pg_database").await?.into_iter().collect();
        for db in databases.iter().filter(|d| !dbs.contains(*d)) {
            // CREATE DATABASE cannot run in a transaction block: one statement each.
            let owner = owner.map(|o| format!(" OWNER {}", ident(o))).unwrap_or_default();
            self.exec(&format!("CREATE DATABASE {}{owner}", ident(db))).await?;
        }
        Ok(())
    }

    /// Keeps exactly `slots` as this primary's physical replication slots (holdfast's
    /// own, by prefix): creates the missing, drops the others that are not in use.
    pub async fn ensure_slots(&self, prefix: &str, slots: &[String]) -> Result<(), PgError> {
        let existing: BTreeSet<String> = self
            .text_column("SELECT slot_name::text FROM pg_replication_slots WHERE slot_type = 'physical'")
            .await?
            .into_iter()
            .collect();
        for s in slots.iter().filter(|s| !existing.contains(*s)) {
            self.exec(&format!("SELECT pg_create_physical_replication_slot({})", literal(s))).await?;
        }
        for s in existing.iter().filter(|s| s.starts_with(prefix) && !slots.contains(s)) {
            let _ = self.exec(&format!("SELECT pg_drop_replication_slot({}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {} AND active)", literal(s), literal(s))).await;
        }
        Ok(())
    }

    /// Promotes a replica and waits (up to 30 s) until it accepts writes. It asks
    /// without waiting and looks every 10 ms itself: `pg_promote(true)` looks only every
    /// 100 ms, and a switchover's write pause is that much longer.
    pub async fn promote(&self) -> Result<(), PgError> {
        let within = Duration::from_secs(5);
        if !self.boolean("SELECT pg_promote(false)", within).await?.unwrap_or(false) {
            return Err(PgError::Answer("pg_promote refused (not a standby, or the signal failed)".into()));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if !self.boolean("SELECT pg_is_in_recovery()", within).await?.unwrap_or(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PgError::Answer("the promotion did not finish within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Re-reads `postgresql.conf`.
    pub async fn reload(&self) -> Result<(), PgError> {
        self.exec("SELECT pg_reload_conf()").await
    }

    /// Writes and flushes a WAL record (a transactional logical message nothing
    /// decodes, committed without waiting for a standby), so every streaming standby
    /// answers with what it flushed and commits waiting for one complete at once.
    pub async fn nudge(&self) -> Result<(), PgError> {
        let r = self
            .exec(
                "BEGIN; SET LOCAL synchronous_commit = local; SELECT pg_logical_emit_message(true, 'holdfast', 'commits released'); COMMIT",
            )
            .await;
        if r.is_err() {
            // The connection is kept across passes: never leave it in a failed transaction.
            let _ = self.exec("ROLLBACK").await;
        }
        r
    }

    /// The standbys streaming from this primary: application name → flushed LSN.
    pub async fn standbys(&self) -> Result<BTreeMap<String, (u64, String)>, PgError> {
        let rows = self
            .rows("SELECT application_name::text, COALESCE((flush_lsn - '0/0'::pg_lsn)::text, '0'), sync_state::text FROM pg_stat_replication")
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| PgError::Answer(e.to_string()))?;
            let lsn: String = r.try_get(1).map_err(|e| PgError::Answer(e.to_string()))?;
            let state: String = r.try_get(2).map_err(|e| PgError::Answer(e.to_string()))?;
            out.insert(name, (lsn.split('.').next().and_then(|n| n.parse().ok()).unwrap_or(0), state));
        }
        Ok(out)
    }
}

/// The superuser's connection settings (database `postgres`), without a host.
fn superuser(password: &str, timeout: Duration) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(crate::SUPERUSER)
        .password(password)
        .dbname("postgres")
        .application_name("holdfast")
        .connect_timeout(timeout);
    cfg
}

/// Connects with `cfg` within `timeout`; `socket` names the server in errors.
async fn open(
    cfg: &tokio_postgres::Config,
    socket: &str,
    timeout: Duration,
) -> Result<
    (tokio_postgres::Client, tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>),
    PgError,
> {
    tokio::time::timeout(timeout, cfg.connect(NoTls))
        .await
        .map_err(|_| PgError::Timeout { socket: socket.to_string(), secs: timeout.as_secs() })?
        .map_err(|source| PgError::Sql { socket: socket.to_string(), source })
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
