//! OS users that instances run as (`RunAs`): looking one up in `/etc/passwd`, the
//! daemon's own uid, and whether a user can reach a directory.
use std::path::{Path, PathBuf};

/// An OS user to run a process as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl OsUser {
    /// The user named `name` when the daemon is root (the server refuses to run as root,
    /// or should not), the daemon's own user otherwise. `missing` says what to do when
    /// that user does not exist.
    pub fn for_server(name: &str, missing: &str) -> Result<OsUser, String> {
        let uid = current_uid();
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
        if uid == 0 {
            find_user(&passwd, |n, _| n == name).ok_or_else(|| format!("OS user {name}: {missing}"))
        } else {
            Ok(find_user(&passwd, |_, u| u == uid).unwrap_or(OsUser { name: uid.to_string(), uid, gid: uid }))
        }
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
