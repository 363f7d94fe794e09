//! Persistent instance records (`state_dir/instances/<instance>.json`): what
//! a restarted agent needs to re-adopt a running process. Written atomically
//! (temp file + fsync + rename + directory fsync).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::InstanceCgroup;
use crate::types::{ExitInfo, InstanceSpec};

pub(crate) const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    pub format: u32,
    pub spec: InstanceSpec,
    pub generation: u64,
    pub pid: u32,
    pub pgid: u32,
    /// Field 22 of /proc/<pid>/stat at start: guards against pid reuse.
    pub start_time: u64,
    pub ports: BTreeMap<String, u16>,
    pub cgroup: Option<InstanceCgroup>,
    pub restarts: u32,
    pub started_at_ms: u64,
    /// The cgroup's OOM-kill counter when the process started.
    pub oom_kills_at_start: Option<u64>,
    /// Set when the restart policy finished the instance (`Exited`).
    pub exited: Option<ExitInfo>,
    /// Pid of the agent that started the process.
    pub agent_pid: u32,
}

pub(crate) fn record_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.json"))
}

/// Atomically replaces the record of `stem`.
pub(crate) fn write_record(dir: &Path, stem: &str, rec: &InstanceRecord) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{stem}.json.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, record_path(dir, stem))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub(crate) fn remove_record(dir: &Path, stem: &str) -> io::Result<()> {
    match std::fs::remove_file(record_path(dir, stem)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every `*.json` record in `dir`, with parse errors reported per file.
pub(crate) fn load_records(dir: &Path) -> Vec<(PathBuf, Result<InstanceRecord, String>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .map(|p| {
            let r = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<InstanceRecord>(&b).map_err(|e| e.to_string()));
            (p, r)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::InstanceId;

    #[test]
    fn write_load_remove_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = InstanceSpec::new(InstanceId::new("web", 0), vec!["sleep".into(), "1".into()]);
        let rec = InstanceRecord {
            format: RECORD_FORMAT,
            spec,
            generation: 3,
            pid: 42,
            pgid: 42,
            start_time: 1234,
            ports: BTreeMap::from([("http".to_string(), 20000)]),
            cgroup: None,
            restarts: 2,
            started_at_ms: 99,
            oom_kills_at_start: Some(0),
            exited: None,
            agent_pid: 1,
        };
        write_record(dir.path(), "web-0", &rec).expect("write");
        std::fs::write(dir.path().join("broken.json"), "{").expect("write");
        let loaded = load_records(dir.path());
        assert_eq!(loaded.len(), 2);
        assert!(loaded[0].1.is_err(), "broken.json sorts first");
        assert_eq!(loaded[1].1.as_ref().expect("parsed"), &rec);
        remove_record(dir.path(), "web-0").expect("remove");
        remove_record(dir.path(), "web-0").expect("remove twice is fine");
        assert_eq!(load_records(dir.path()).len(), 1);
    }
}
