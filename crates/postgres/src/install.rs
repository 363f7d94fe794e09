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

/// An OS user to run members as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user members run as: `postgres` when the daemon is root, the daemon's own user
/// otherwise.
pub fn member_user() -> Result<OsUser, PgError> {
    let uid = current_uid();
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| PgError::io("/etc/passwd", e))?;
    if uid == 0 {
        find_user(&passwd, |name, _| name == "postgres").ok_or_else(|| PgError::User {
            user: "postgres".into(),
            why: "holdfast runs as root and PostgreSQL refuses to: the `postgres` user (created by Debian's postgresql package) is missing".into(),
        })
    } else {
        Ok(find_user(&passwd, |_, u| u == uid).unwrap_or(OsUser { name: uid.to_string(), uid, gid: uid }))
    }
}

/// The daemon's own user id.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The first `/etc/passwd` line whose (name, uid) matches.
pub fn find_user(passwd: &str, matches: impl Fn(&str, u32) -> bool) -> Option<OsUser> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        matches(name, uid).then(|| OsUser { name: name.to_string(), uid, gid })
    })
}

/// The first ancestor of `path` that `user` cannot traverse (PostgreSQL needs to reach
/// its data directory), if any. Checks the `x` bits for owner, group and others.
pub fn untraversable_ancestor(path: &Path, user: &OsUser) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return None;
    }
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        let Ok(m) = std::fs::metadata(dir) else { continue };
        let mode = m.mode();
        let ok = if m.uid() == user.uid {
            mode & 0o100 != 0
        } else if m.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Some(dir.to_path_buf());
        }
    }
    None
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

    #[test]
    fn users_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:104:110:PostgreSQL:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            find_user(passwd, |n, _| n == "postgres"),
            Some(OsUser { name: "postgres".into(), uid: 104, gid: 110 })
        );
        assert_eq!(find_user(passwd, |_, u| u == 0).map(|u| u.name), Some("root".into()));
        assert_eq!(find_user("garbage\n", |_, _| true), None);
    }
}
