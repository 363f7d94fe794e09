//! cgroup support, v1 ("hybrid"/legacy) and v2 (unified), detected at run
//! time: creating `<root>/<cgroup_name>/<instance>`, setting memory and CPU
//! limits, reading usage and OOM-kill counters, killing every member, and
//! removing the directories.
//!
//! Where "root" is:
//! * v2 (when `/sys/fs/cgroup/cgroup.controllers` exists): the cgroup2 mount
//!   itself, `/sys/fs/cgroup` (the only place where controllers can be
//!   delegated without moving the agent itself);
//! * v1: for each controller hierarchy (memory, cpu, cpuacct; possibly
//!   co-mounted) the cgroup the agent itself runs in, so workloads stay
//!   accounted inside whatever contains the agent.
//!
//! The child joins its cgroups before exec: the parent opens each
//! `cgroup.procs` and the pre-exec hook writes "0" into them.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::Limits;

const V2_ROOT: &str = "/sys/fs/cgroup";
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CgroupVersion {
    V1,
    V2,
}

/// Where the agent may create instance cgroups (`<parent>/<instance>`), per
/// controller. `None` = that controller is not usable.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    pub version: Option<CgroupVersion>,
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    /// v1 cpuacct parent; v2: the same parent as everything (cpu.stat is
    /// always there).
    pub cpuacct: Option<PathBuf>,
    /// The agent's parent cgroup relative to the hierarchy root, the same in every v1
    /// hierarchy (`/holdfast-1`, or under the agent's own memory cgroup): what a
    /// container's `--cgroup-parent` is relative to.
    pub rel: Option<String>,
    /// Why controllers are missing (for warnings).
    pub notes: Vec<String>,
}

/// The cgroup directories of one instance (persisted in its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceCgroup {
    pub version: CgroupVersion,
    /// Every directory the process joins (one for v2).
    pub dirs: Vec<PathBuf>,
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    /// The memory limit that was set (for messages).
    pub memory_limit: Option<u64>,
    /// The instance's cgroup relative to the hierarchy root (`--cgroup-parent` of its
    /// container). Absent in records written before containers.
    #[serde(default)]
    pub rel: Option<String>,
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Reads `key N` from a flat-keyed cgroup file (memory.events, oom_control, cpu.stat).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One v1 hierarchy from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Mount {
    pub mount_point: PathBuf,
    pub root: String,
    pub controllers: Vec<String>,
}

/// Parses the cgroup (v1) mounts of a mountinfo file.
pub(crate) fn parse_v1_mounts(mountinfo: &str) -> Vec<V1Mount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(sep + 1) != Some(&"cgroup") || fields.len() < 5 {
            continue;
        }
        let opts = fields.get(sep + 3).copied().unwrap_or("");
        out.push(V1Mount {
            mount_point: PathBuf::from(fields[4]),
            root: fields[3].to_string(),
            controllers: opts.split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// The agent's own path in the v1 hierarchy that has `controller`, from
/// /proc/self/cgroup content.
pub(crate) fn own_v1_path(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _id = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        ctrls.split(',').any(|c| c == controller).then(|| path.to_string())
    })
}

impl Cgroups {
    /// No cgroup support.
    pub(crate) fn none(note: impl Into<String>) -> Self {
        Self { version: None, memory: None, cpu: None, cpuacct: None, rel: None, notes: vec![note.into()] }
    }

    /// Detects the cgroup layout and creates the agent's parent cgroup(s).
    pub(crate) fn detect(cgroup_name: &str) -> Self {
        if cgroup_name.is_empty() || cgroup_name.contains('/') || cgroup_name.starts_with('.') {
            return Self::none(format!("invalid cgroup_name {cgroup_name:?}"));
        }
        if Path::new(V2_ROOT).join("cgroup.controllers").exists() {
            Self::detect_v2(Path::new(V2_ROOT), cgroup_name)
        } else {
            Self::detect_v1(cgroup_name)
        }
    }

    fn detect_v2(root: &Path, cgroup_name: &str) -> Self {
        let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let parent = root.join(cgroup_name);
        if let Err(e) = std::fs::create_dir_all(&parent) {
            return Self::none(format!("cannot create cgroup {}: {e}", parent.display()));
        }
        let mut me = Self {
            version: Some(CgroupVersion::V2),
            memory: None,
            cpu: None,
            cpuacct: Some(parent.clone()),
            rel: Some(format!("/{cgroup_name}")),
            notes: Vec::new(),
        };
        for ctrl in ["memory", "cpu"] {
            if !available.split_whitespace().any(|c| c == ctrl) {
                me.notes.push(format!("cgroup v2 controller {ctrl} not available"));
                continue;
            }
            // Already enabled in the root is the common case; errors are
            // judged by the final check below.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), format!("+{ctrl}"));
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), format!("+{ctrl}"));
            let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == ctrl) {
                match ctrl {
                    "memory" => me.memory = Some(parent.clone()),
                    _ => me.cpu = Some(parent.clone()),
                }
            } else {
                me.notes.push(format!("cannot enable cgroup v2 controller {ctrl} in {}", parent.display()));
            }
        }
        me
    }

    fn detect_v1(cgroup_name: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = parse_v1_mounts(&mountinfo);
        let mut me = Self {
            version: Some(CgroupVersion::V1),
            memory: None,
            cpu: None,
            cpuacct: None,
            rel: None,
            notes: Vec::new(),
        };
        // One relative path in every hierarchy (the agent's own memory cgroup's, where
        // its memory is accounted), so one `--cgroup-parent` names the instance's cgroup
        // in all of them.
        let base = mounts
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == "memory"))
            .and_then(|m| {
                let own = own_v1_path(&proc_cgroup, "memory")?;
                Some(own.strip_prefix(m.root.trim_end_matches('/')).unwrap_or(&own).trim_start_matches('/').to_string())
            })
            .unwrap_or_default();
        me.rel = Some(if base.is_empty() { format!("/{cgroup_name}") } else { format!("/{base}/{cgroup_name}") });
        for ctrl in ["memory", "cpu", "cpuacct"] {
            let Some(m) = mounts.iter().find(|m| m.controllers.iter().any(|c| c == ctrl)) else {
                me.notes.push(format!("cgroup v1 controller {ctrl} not mounted"));
                continue;
            };
            let parent = m.mount_point.join(&base).join(cgroup_name);
            match std::fs::create_dir_all(&parent) {
                Ok(()) => match ctrl {
                    "memory" => me.memory = Some(parent),
                    "cpu" => me.cpu = Some(parent),
                    _ => me.cpuacct = Some(parent),
                },
                Err(e) => me.notes.push(format!("cannot create cgroup {}: {e}", parent.display())),
            }
        }
        if me.memory.is_none() && me.cpu.is_none() && me.cpuacct.is_none() {
            me.version = None;
        }
        me
    }

    /// Warnings for limits in `limits` that cannot be enforced.
    pub(crate) fn unenforceable(&self, limits: &Limits) -> Vec<String> {
        let mut w = Vec::new();
        let why = || {
            if self.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.notes.join("; "))
            }
        };
        if limits.memory_bytes.is_some() && self.memory.is_none() {
            w.push(format!("memory limit not enforced: cgroup memory controller unavailable{}", why()));
        }
        if limits.cpu_millis.is_some() && self.cpu.is_none() {
            w.push(format!("cpu limit not enforced: cgroup cpu controller unavailable{}", why()));
        }
        w
    }

    fn parents(&self) -> BTreeSet<PathBuf> {
        [&self.memory, &self.cpu, &self.cpuacct].into_iter().flatten().cloned().collect()
    }

    /// Creates (fresh) `<parent>/<stem>` in every usable hierarchy and
    /// applies `limits`. `Ok(None)` when there is no cgroup support at all.
    pub(crate) fn create(&self, stem: &str, limits: &Limits) -> io::Result<Option<InstanceCgroup>> {
        let Some(version) = self.version else {
            return Ok(None);
        };
        let join = |p: &Option<PathBuf>| p.as_ref().map(|p| p.join(stem));
        let cg = InstanceCgroup {
            version,
            dirs: self.parents().into_iter().map(|p| p.join(stem)).collect(),
            memory: join(&self.memory),
            cpu: join(&self.cpu),
            cpuacct: join(&self.cpuacct),
            memory_limit: limits.memory_bytes,
            rel: self.rel.as_ref().map(|r| format!("{r}/{stem}")),
        };
        if cg.dirs.is_empty() {
            return Ok(None);
        }
        // A leftover from an earlier run: empty it and start clean so the
        // OOM counters and usage start at zero.
        if cg.dirs.iter().any(|d| d.exists()) {
            cg.kill_all();
            let _ = cg.remove();
        }
        for d in &cg.dirs {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("mkdir {}: {e}", d.display())));
                }
            }
        }
        if let Err(e) = cg.apply_limits(limits) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// Removes the agent's parent cgroups if they are empty.
    pub(crate) fn remove_parents(&self) {
        for p in self.parents() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// `dir` and every cgroup below it (a container's runtime makes its own below the
/// instance's), parents first.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            let mut subs: Vec<PathBuf> =
                rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
            subs.sort();
            out.extend(subs);
        }
        i += 1;
    }
    out
}

/// `64Mi`, `1Gi`, `1500000 bytes`.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "Ti"), (1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")];
    for (size, unit) in UNITS {
        if b >= size && b % size == 0 {
            return format!("{}{unit}", b / size);
        }
    }
    if b >= 1 << 20 {
        return format!("{:.1}Mi", b as f64 / (1u64 << 20) as f64);
    }
    format!("{b} bytes")
}

impl InstanceCgroup {
    fn apply_limits(&self, limits: &Limits) -> io::Result<()> {
        match self.version {
            CgroupVersion::V1 => {
                if let Some(m) = &self.memory {
                    let v = limits.memory_bytes.map_or("-1".to_string(), |b| b.to_string());
                    write_file(&m.join("memory.limit_in_bytes"), &v)?;
                }
                if let Some(c) = &self.cpu {
                    write_file(&c.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let quota = limits
                        .cpu_millis
                        .map_or("-1".to_string(), |m| (u64::from(m) * CPU_PERIOD_US / 1000).max(1000).to_string());
                    write_file(&c.join("cpu.cfs_quota_us"), &quota)?;
                }
            }
            CgroupVersion::V2 => {
                if let Some(m) = &self.memory {
                    let v = limits.memory_bytes.map_or("max".to_string(), |b| b.to_string());
                    write_file(&m.join("memory.max"), &v)?;
                }
                if let Some(c) = &self.cpu {
                    let quota = limits
                        .cpu_millis
                        .map_or("max".to_string(), |m| (u64::from(m) * CPU_PERIOD_US / 1000).max(1000).to_string());
                    write_file(&c.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
        }
        Ok(())
    }

    /// Opens every `cgroup.procs` for writing (done before fork; the child
    /// writes "0" to join).
    pub(crate) fn open_procs(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", p.display())))
            })
            .collect()
    }

    /// Kernel OOM kills in this cgroup so far.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let m = self.memory.as_ref()?;
        match self.version {
            CgroupVersion::V1 => read_key(&m.join("memory.oom_control"), "oom_kill"),
            CgroupVersion::V2 => read_key(&m.join("memory.events"), "oom_kill"),
        }
    }

    pub(crate) fn memory_bytes(&self) -> Option<u64> {
        let m = self.memory.as_ref()?;
        match self.version {
            CgroupVersion::V1 => read_u64(&m.join("memory.usage_in_bytes")),
            CgroupVersion::V2 => read_u64(&m.join("memory.current")),
        }
    }

    /// The most memory the instance's cgroup has used (v1 `memory.max_usage_in_bytes`,
    /// v2 `memory.peak`, which kernels before 5.19 lack).
    pub(crate) fn memory_peak_bytes(&self) -> Option<u64> {
        let m = self.memory.as_ref()?;
        match self.version {
            CgroupVersion::V1 => read_u64(&m.join("memory.max_usage_in_bytes")),
            CgroupVersion::V2 => read_u64(&m.join("memory.peak")),
        }
    }

    pub(crate) fn cpu_usage_ns(&self) -> Option<u64> {
        match self.version {
            CgroupVersion::V1 => read_u64(&self.cpuacct.as_ref()?.join("cpuacct.usage")),
            CgroupVersion::V2 => {
                let dir = self.cpuacct.as_ref().or(self.dirs.first())?;
                read_key(&dir.join("cpu.stat"), "usage_usec").map(|us| us.saturating_mul(1000))
            }
        }
    }

    /// Every pid in any of the instance's cgroups.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut set = BTreeSet::new();
        for d in &self.dirs {
            for dir in tree(d) {
                if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    set.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
                }
            }
        }
        set.into_iter().collect()
    }

    /// Sends `sig` to every member.
    pub(crate) fn signal_all(&self, sig: i32) {
        for pid in self.pids() {
            let _ = crate::proc::signal_pid(pid, sig);
        }
    }

    /// SIGKILLs every member (v2: `cgroup.kill` when the kernel has it).
    pub(crate) fn kill_all(&self) {
        if self.version == CgroupVersion::V2 {
            for d in &self.dirs {
                let k = d.join("cgroup.kill");
                if k.exists() {
                    let _ = std::fs::write(k, "1");
                }
            }
        }
        self.signal_all(9);
    }

    /// Live (non-zombie) members.
    pub(crate) fn live_pids(&self) -> Vec<u32> {
        self.pids().into_iter().filter(|p| crate::proc::read_stat(*p).is_some_and(|st| !st.is_zombie())).collect()
    }

    /// Removes the directories (they must be empty of processes).
    pub(crate) fn remove(&self) -> io::Result<()> {
        let mut first_err = None;
        // A container's runtime makes cgroups below the instance's: deepest first.
        let mut all: Vec<PathBuf> = self.dirs.iter().flat_map(|d| tree(d)).collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in &all {
            match std::fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(io::Error::new(e.kind(), format!("rmdir {}: {e}", d.display())));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /sub /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_v1_mounts() {
        let m = parse_v1_mounts(MOUNTINFO);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(m[0].controllers.iter().any(|c| c == "cpuacct"));
        assert_eq!(m[1].root, "/sub");
    }

    #[test]
    fn finds_own_v1_path() {
        let pc = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(own_v1_path(pc, "memory").as_deref(), Some("/process_api/abc"));
        assert_eq!(own_v1_path(pc, "cpuacct").as_deref(), Some("/x"));
        assert_eq!(own_v1_path(pc, "pids"), None);
    }

    #[test]
    fn reads_keyed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("memory.oom_control");
        std::fs::write(&p, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").expect("write");
        assert_eq!(read_key(&p, "oom_kill"), Some(3));
        assert_eq!(read_key(&p, "nope"), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(64 << 20), "64Mi");
        assert_eq!(human_bytes(1 << 30), "1Gi");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(3 * (1 << 20) / 2), "1536Ki");
    }

    /// Exercises the v2 code path: create, join before exec, list, cgroup.kill, remove.
    /// Runs on a pure cgroup-v2 host (the hierarchy at /sys/fs/cgroup, today's Debian
    /// default) and on a hybrid one (the controller-less cgroup2 mount at
    /// /sys/fs/cgroup/unified). Only a host with no cgroup2 mount at all, or a run
    /// without root, skips it; under CI (`CI=true`) that is a failure.
    #[test]
    fn v2_membership_kill_and_removal() {
        let pure = Path::new(V2_ROOT);
        let hybrid = Path::new("/sys/fs/cgroup/unified");
        let root = if pure.join("cgroup.controllers").exists() {
            pure
        } else if hybrid.join("cgroup.procs").exists() {
            hybrid
        } else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: this machine has no cgroup2 mount");
            eprintln!("SKIPPED v2_membership_kill_and_removal: no cgroup2 mount");
            return;
        };
        if !rustix::process::geteuid().is_root() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: the cgroup v2 test needs root");
            eprintln!("SKIPPED v2_membership_kill_and_removal: needs root to create cgroups");
            return;
        }
        let name = format!("holdfast-unit-{}", std::process::id());
        let cgs = Cgroups::detect_v2(root, &name);
        assert_eq!(cgs.version, Some(CgroupVersion::V2), "v2 usable at {}: {:?}", root.display(), cgs.notes);
        let inst = cgs.create("t-0", &Limits::default()).expect("create").expect("v2 cgroup");
        assert_eq!(inst.dirs, vec![root.join(&name).join("t-0")]);
        let dir = tempfile::tempdir().expect("tempdir");
        let log = crate::logs::open_append(&dir.path().join("t.log")).expect("log");
        let pid = crate::spawn::spawn(crate::spawn::Launch {
            argv: vec!["sleep".into(), "30".into()],
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            secret_env: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            log,
            cgroup_procs: inst.open_procs().expect("open procs"),
            run_as: None,
        })
        .expect("spawn");
        assert_eq!(inst.pids(), vec![pid], "joined before exec");
        assert!(inst.cpu_usage_ns().is_some());
        inst.kill_all();
        let mut w = crate::proc::ExitWatcher::new(pid, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let outcome = loop {
            if let Some(o) = w.poll_once() {
                break o;
            }
            assert!(std::time::Instant::now() < deadline, "killed child exits");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(outcome, crate::proc::ExitOutcome::Signal(9));
        inst.remove().expect("remove");
        cgs.remove_parents();
        assert!(!root.join(&name).exists());
    }
}
