//! A member's directory: `<member dir>/data` (Redis's `dir`: AOF, RDB), `redis.conf`
//! (0600, holds passwords) and `member.json` (what holdfast last made of the member: the
//! marker survives daemon restarts). Files are handed to the member's OS user.
use std::path::{Path, PathBuf};

use holdfast_agent::osuser::OsUser;
use serde::{Deserialize, Serialize};

use crate::RedisError;

/// What a member was last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// It holds the database's data: it was the first master, or a replica that completed
    /// a sync.
    pub ready: bool,
    /// It last ran as the master of this term (0: as a replica).
    pub primary_term: u64,
    /// The `run_id` of the redis-server process that held the data when the marker was
    /// written. Without persistence a process with another id starts empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
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
    pub fn conf(&self) -> PathBuf {
        self.root.join("redis.conf")
    }
    fn marker_path(&self) -> PathBuf {
        self.root.join("member.json")
    }

    /// The marker (default when there is none or it cannot be read).
    pub fn marker(&self) -> Marker {
        std::fs::read(self.marker_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Records what the member is now (written atomically).
    pub fn set_marker(&self, m: &Marker) -> Result<(), RedisError> {
        let path = self.marker_path();
        let tmp = self.root.join("member.json.tmp");
        let bytes = serde_json::to_vec(m).map_err(|e| RedisError::Answer(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| RedisError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| RedisError::io(&path, e))
    }

    /// Creates the member directory and its data directory, owned by `user`.
    pub fn create(&self, user: &OsUser) -> Result<(), RedisError> {
        for d in [self.root.clone(), self.data()] {
            std::fs::create_dir_all(&d).map_err(|e| RedisError::io(&d, e))?;
            chown(&d, user)?;
        }
        Ok(())
    }

    /// Writes `redis.conf` (mode 0600, owned by `user`) when its text differs; true when
    /// it changed.
    pub fn write_conf(&self, text: &str, user: &OsUser) -> Result<bool, RedisError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.conf();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
            return Ok(false);
        }
        let tmp = self.root.join("redis.conf.holdfast-tmp");
        std::fs::write(&tmp, text).map_err(|e| RedisError::io(&tmp, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(|e| RedisError::io(&tmp, e))?;
        chown(&tmp, user)?;
        std::fs::rename(&tmp, &path).map_err(|e| RedisError::io(&path, e))?;
        Ok(true)
    }
}

fn chown(path: &Path, user: &OsUser) -> Result<(), RedisError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| RedisError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_conf_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = MemberDir::new(tmp.path().join("m0"));
        let me = OsUser { name: "me".into(), uid: holdfast_agent::osuser::current_uid(), gid: rustix_gid() };
        dir.create(&me).expect("create");
        assert_eq!(dir.marker(), Marker::default());
        let m = Marker { ready: true, primary_term: 3, run_id: "abc".into() };
        dir.set_marker(&m).expect("marker");
        assert_eq!(dir.marker(), m);
        assert!(dir.write_conf("a\n", &me).expect("write"));
        assert!(!dir.write_conf("a\n", &me).expect("same"), "unchanged text is not rewritten");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.conf()).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn rustix_gid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| m.gid()).unwrap_or(0)
    }
}
