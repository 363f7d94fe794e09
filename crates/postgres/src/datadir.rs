//! Preparing a member's directory: `<member dir>/data` (the PostgreSQL data directory),
//! `<member dir>/sock` (its Unix socket) and `<member dir>/member.json` (what holdfast
//! last made of the directory: the marker survives daemon restarts).
//!
//! Every PostgreSQL program runs as the member's OS user; files holdfast writes into the
//! data directory are handed to that user.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::install::{Binaries, OsUser};
use crate::PgError;

/// What a member directory was last prepared as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The data directory holds a complete cluster (initdb or base backup finished).
    pub ready: bool,
    /// It last ran as the primary of this term (0: as a replica).
    pub primary_term: u64,
}

/// The paths of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDir {
    pub root: PathBuf,
}

impl MemberDir {
    pub fn new(root: impl Into<PathBuf>) -> MemberDir {
        MemberDir { root: root.into() }
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("sock")
    }
    fn marker_path(&self) -> PathBuf {
        self.root.join("member.json")
    }

    /// The marker (default when there is none or it cannot be read).
    pub fn marker(&self) -> Marker {
        std::fs::read(self.marker_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Records what the directory is now (written atomically).
    pub fn set_marker(&self, m: &Marker) -> Result<(), PgError> {
        let path = self.marker_path();
        let tmp = self.root.join("member.json.tmp");
        let bytes = serde_json::to_vec(m).map_err(|e| PgError::Answer(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| PgError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| PgError::io(&path, e))
    }

    /// Creates the member directory, its socket directory, and hands both to `user`.
    pub fn create(&self, user: &OsUser) -> Result<(), PgError> {
        for d in [self.root.clone(), self.socket()] {
            std::fs::create_dir_all(&d).map_err(|e| PgError::io(&d, e))?;
            chown(&d, user)?;
        }
        Ok(())
    }

    /// Removes the data directory (before a fresh clone) and resets the marker.
    pub fn wipe_data(&self) -> Result<(), PgError> {
        let data = self.data();
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| PgError::io(&data, e))?;
        }
        self.set_marker(&Marker::default())
    }

    /// Writes a file into the data directory, owned by `user`, mode 0600.
    pub fn write_file(&self, name: &str, text: &str, user: &OsUser) -> Result<(), PgError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data().join(name);
        let tmp = self.data().join(format!("{name}.holdfast-tmp"));
        std::fs::write(&tmp, text).map_err(|e| PgError::io(&tmp, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(|e| PgError::io(&tmp, e))?;
        chown(&tmp, user)?;
        std::fs::rename(&tmp, &path).map_err(|e| PgError::io(&path, e))
    }

    /// The file's current text, if any.
    pub fn read_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.data().join(name)).ok()
    }

    /// Creates or removes `standby.signal`.
    pub fn set_standby(&self, standby: bool, user: &OsUser) -> Result<(), PgError> {
        let path = self.data().join("standby.signal");
        if standby {
            if !path.exists() {
                self.write_file("standby.signal", "", user)?;
            }
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(|e| PgError::io(&path, e))?;
        }
        Ok(())
    }
}

fn chown(path: &Path, user: &OsUser) -> Result<(), PgError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| PgError::io(path, e))
}

/// Runs a PostgreSQL program as `user` within `timeout`; its output is the error text.
async fn run(
    bins: &Binaries,
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    user: &OsUser,
    timeout: Duration,
) -> Result<String, PgError> {
    let path = bins.program(program);
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C.UTF-8").kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if rustix::process::getuid().as_raw() != user.uid {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd.current_dir("/");
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| PgError::Command {
            program: program.into(),
            status: format!("no result within {} s", timeout.as_secs()),
            output: String::new(),
        })?
        .map_err(|source| PgError::Spawn { program: path.display().to_string(), source })?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(PgError::Command { program: program.into(), status: out.status.to_string(), output: last_lines(&text, 12) })
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `initdb` of a new primary: superuser `holdfast` with `superuser_password`, SCRAM,
/// UTF-8.
pub async fn initdb(bins: &Binaries, dir: &MemberDir, user: &OsUser, superuser_password: &str) -> Result<(), PgError> {
    use std::os::unix::fs::PermissionsExt;
    let pwfile = dir.root.join("initdb.pw");
    std::fs::write(&pwfile, superuser_password).map_err(|e| PgError::io(&pwfile, e))?;
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).map_err(|e| PgError::io(&pwfile, e))?;
    chown(&pwfile, user)?;
    let args = vec![
        "-D".to_string(),
        dir.data().display().to_string(),
        "-U".into(),
        crate::SUPERUSER.into(),
        format!("--pwfile={}", pwfile.display()),
        "--auth=scram-sha-256".into(),
        "-E".into(),
        "UTF8".into(),
        "--no-locale".into(),
        "--no-instructions".into(),
    ];
    let result = run(bins, "initdb", &args, &[], user, Duration::from_secs(120)).await;
    let _ = std::fs::remove_file(&pwfile);
    result.map(|_| ())
}

/// A base backup of the primary reached at `host:port` (the database's `-rw` address)
/// into an empty data directory.
pub async fn basebackup(
    bins: &Binaries,
    dir: &MemberDir,
    user: &OsUser,
    host: &str,
    port: u16,
    replication_password: &str,
) -> Result<(), PgError> {
    let args = vec![
        "-D".to_string(),
        dir.data().display().to_string(),
        "-h".into(),
        host.into(),
        "-p".into(),
        port.to_string(),
        "-U".into(),
        crate::REPLICATION_USER.into(),
        "-X".into(),
        "stream".into(),
        "-c".into(),
        "fast".into(),
        "--no-password".into(),
    ];
    run(bins, "pg_basebackup", &args, &[("PGPASSWORD", replication_password)], user, Duration::from_secs(3600))
        .await
        .map(|_| ())
}

/// `pg_rewind` of a former primary against the current one (reached as the superuser at
/// the `-rw` address), after a `CHECKPOINT` there (a source promoted moments ago names
/// its old timeline in `pg_control` until then). The target must be stopped; PostgreSQL
/// 13+ finishes its crash recovery first by itself.
pub async fn rewind(
    bins: &Binaries,
    dir: &MemberDir,
    user: &OsUser,
    host: &str,
    port: u16,
    superuser_password: &str,
) -> Result<String, PgError> {
    let source = format!(
        "host={} port={port} user={} dbname=postgres connect_timeout=5",
        crate::conf::conninfo_value(host),
        crate::SUPERUSER
    );
    // Said as not reaching the source (the runner retries without counting a failed
    // rewind, which would end in a fresh clone).
    crate::admin::Admin::checkpoint_remote(host, port, superuser_password, Duration::from_secs(5))
        .await
        .map_err(|e| PgError::Answer(format!("could not connect to checkpoint the source before pg_rewind: {e}")))?;
    let args = vec![format!("--target-pgdata={}", dir.data().display()), format!("--source-server={source}")];
    run(bins, "pg_rewind", &args, &[("PGPASSWORD", superuser_password)], user, Duration::from_secs(3600)).await
}

/// What `pg_controldata` says of a stopped data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// `Database cluster state`, e.g. `shut down`, `shut down in recovery`, `in production`.
    pub state: String,
    /// `Latest checkpoint location`: after a clean shutdown of a primary, the last WAL
    /// record it wrote (its shutdown checkpoint).
    pub checkpoint_lsn: u64,
}

impl ControlData {
    /// Shut down cleanly as a primary: `checkpoint_lsn` is where its WAL ends.
    pub fn clean_primary_shutdown(&self) -> bool {
        self.state == "shut down"
    }
}

/// Reads the control file of a stopped member.
pub async fn control_data(bins: &Binaries, dir: &MemberDir, user: &OsUser) -> Result<ControlData, PgError> {
    let out =
        run(bins, "pg_controldata", &[dir.data().display().to_string()], &[], user, Duration::from_secs(10)).await?;
    parse_control_data(&out)
        .ok_or_else(|| PgError::Answer(format!("unexpected pg_controldata output: {}", last_lines(&out, 3))))
}

/// The two fields of `pg_controldata` output holdfast needs.
pub fn parse_control_data(text: &str) -> Option<ControlData> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
    };
    let state = field("Database cluster state")?;
    let lsn = field("Latest checkpoint location")?;
    Some(ControlData { state, checkpoint_lsn: parse_lsn(&lsn)? })
}

/// `0/3000060` → 0x3000060.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_data_fields() {
        let text = "pg_control version number:            1300\nDatabase cluster state:               shut down\nLatest checkpoint location:           1/3000060\nLatest checkpoint's REDO location:    0/3000028\n";
        assert_eq!(
            parse_control_data(text),
            Some(ControlData { state: "shut down".into(), checkpoint_lsn: (1 << 32) | 0x3000060 })
        );
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("x"), None);
    }
}
