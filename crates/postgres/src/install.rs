//! Which PostgreSQL this machine offers and which OS user runs it.
//!
//! The binary directory is the spec's `bin_dir`, or the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian's layout, several majors side by side). The
//! major version comes from `postgres --version`. PostgreSQL refuses to run as root, so
//! a daemon running as root runs members as the `postgres` user Debian's package
//! creates; a daemon running as another user runs them as itself.
use std::path::{Path, PathBuf};

use crate::PgError;

/// The programs a member needs.
pub const PROGRAMS: [&str; 6] = ["postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_ctl", "pg_controldata"];

/// A PostgreSQL installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub bin_dir: PathBuf,
    /// Major version, e.g. `15`.
    pub major: u32,
    /// Full version string, e.g. `15.8`.
    pub version: String,
}

impl Binaries {
    /// The path of one program.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Where Debian installs PostgreSQL majors.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Finds PostgreSQL: in `bin_dir` when given, else the newest Debian major.
pub fn discover(bin_dir: Option<&Path>) -> Result<Binaries, PgError> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => newest_debian_bin_dir()?,
    };
    for p in PROGRAMS {
        if !dir.join(p).is_file() {
            return Err(PgError::NotInstalled(format!(
                "{} has no {p} (install Debian's postgresql package, or set bin_dir)",
                dir.display()
            )));
        }
    }
    let out = std::process::Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|source| PgError::Spawn { program: dir.join("postgres").display().to_string(), source })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = parse_version(&text)
        .ok_or_else(|| PgError::NotInstalled(format!("cannot read the version from `postgres --version`: {text}")))?;
    let major = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Ok(Binaries { bin_dir: dir, major, version })
}

fn newest_debian_bin_dir() -> Result<PathBuf, PgError> {
    let entries = std::fs::read_dir(DEBIAN_ROOT)
        .map_err(|e| PgError::NotInstalled(format!("{DEBIAN_ROOT}: {e} (install Debian's postgresql package)")))?;
    let mut majors: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, p)| p).ok_or_else(|| PgError::NotInstalled(format!("no server binaries under {DEBIAN_ROOT}")))
}

/// `postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)` → `15.8`.
pub fn parse_version(text: &str) -> Option<String> {
    let rest = text.split(")").nth(1)?.trim();
    let v = rest.split_whitespace().next()?;
    v.chars().next()?.is_ascii_digit().then(|| v.to_string())
}

pub use holdfast_agent::osuser::{current_uid, find_user, untraversable_ancestor, OsUser};

/// The user members run as: `postgres` when the daemon is root, the daemon's own user
/// otherwise.
pub fn member_user() -> Result<OsUser, PgError> {
    OsUser::for_server(
        "postgres",
        "holdfast runs as root and PostgreSQL refuses to: the `postgres` user (created by Debian's postgresql package) is missing",
    )
    .map_err(|why| PgError::User { user: "postgres".into(), why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n").as_deref(), Some("15.8"));
        assert_eq!(parse_version("postgres (PostgreSQL) 16.2\n").as_deref(), Some("16.2"));
        assert_eq!(parse_version("nonsense"), None);
    }
}
