//! The agent itself: `Agent::start` (directories, cgroup detection,
//! re-adoption of persisted instances), the `AgentHandle` API used by the
//! daemon, and the supervisor task that reconciles the desired set against
//! the observed instances, dispatches actions to per-instance tasks, and
//! rotates logs.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::cgroup::{Cgroups, InstanceCgroup};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::instance::{self, Cmd, Initial};
use crate::ports::PortAllocator;
use crate::proc;
use crate::reconcile::{reconcile, Action, ObservedInstance};
use crate::record::{self, InstanceRecord};
use crate::types::{InstanceId, InstanceSpec, InstanceState, InstanceStatus, ShutdownMode};

/// One row of the status table.
pub(crate) struct Entry {
    pub status: InstanceStatus,
    /// The cgroup of the running process (for usage numbers).
    pub cgroup: Option<InstanceCgroup>,
}

/// State shared by the handle, the supervisor and the instance tasks.
pub(crate) struct Inner {
    pub config: AgentConfig,
    pub cgroups: Cgroups,
    pub instances_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub table: Mutex<BTreeMap<InstanceId, Entry>>,
    pub ports: Mutex<PortAllocator>,
    pub version: watch::Sender<u64>,
    cgroup_warned: AtomicBool,
    /// Opens the secrets instances read (set by the daemon with
    /// [`AgentHandle::set_secret_source`]).
    pub secret_source: std::sync::RwLock<Option<crate::secrets::SharedSecretSource>>,
    /// Where instances' secret files go (tmpfs), if anywhere.
    pub secrets_root: Option<PathBuf>,
    /// `state_dir/agent.lock`, flock'ed while this agent runs; released at
    /// shutdown (and on exec: the descriptor is close-on-exec).
    lock: Mutex<Option<std::fs::File>>,
}

impl Inner {
    /// Mutates the entry of `id` (if any) and announces a status change.
    pub(crate) fn update(&self, id: &InstanceId, f: impl FnOnce(&mut Entry)) {
        {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = t.get_mut(id) {
                f(e);
            }
        }
        self.bump();
    }

    pub(crate) fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn state_of(&self, id: &InstanceId) -> Option<InstanceState> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.get(id).map(|e| e.status.state)
    }

    pub(crate) fn started_at_of(&self, id: &InstanceId) -> Option<u64> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.get(id).and_then(|e| e.status.started_at_ms)
    }

    pub(crate) fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.logs_dir.join(format!("{}.log", id.file_stem()))
    }

    /// Logs cgroup problems at WARN once per agent.
    pub(crate) fn warn_once(&self, warnings: &[String]) {
        if !self.cgroup_warned.swap(true, Ordering::Relaxed) {
            for w in warnings {
                tracing::warn!("{w}");
            }
        }
    }
}

enum Control {
    Shutdown(ShutdownMode, oneshot::Sender<()>),
}

/// Entry point: see [`Agent::start`].
pub struct Agent;

/// Handle to a running agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    inner: Arc<Inner>,
    control: mpsc::UnboundedSender<Control>,
    desired: Arc<watch::Sender<Option<Arc<Vec<InstanceSpec>>>>>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("state_dir", &self.inner.config.state_dir)
            .field("cgroup_name", &self.inner.config.cgroup_name)
            .finish()
    }
}

impl Agent {
    /// Starts the agent: creates its directories, detects cgroups,
    /// re-adopts persisted instances whose process is still alive (cleaning
    /// up after the others), and spawns the supervisor task. Must be called
    /// inside a tokio runtime.
    ///
    /// Nothing is started or stopped before the first
    /// [`AgentHandle::set_desired`]: re-adopted instances keep running until
    /// the daemon says what it wants.
    pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
        if config.state_dir.as_os_str().is_empty() {
            return Err(AgentError::Config("state_dir must be set".into()));
        }
        if config.cgroup_name.is_empty() || config.cgroup_name.contains('/') {
            return Err(AgentError::Config(format!(
                "cgroup_name {:?} must be a non-empty single path component",
                config.cgroup_name
            )));
        }
        let instances_dir = config.instances_dir();
        let logs_dir = config.logs_dir();
        for d in [&config.state_dir, &instances_dir, &logs_dir] {
            std::fs::create_dir_all(d).map_err(|e| AgentError::io("create directory", d, e))?;
        }
        // A lock held a moment longer is retried: a process forked by this one (or by a
        // previous agent of this process) shares the lock until it execs.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let lock = loop {
            match lock_state_dir(&config.state_dir) {
                Err(AgentError::Config(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                other => break other?,
            }
        };
        let cgroups = Cgroups::detect(&config.cgroup_name);
        match cgroups.version {
            None => tracing::warn!(notes = ?cgroups.notes, "cgroups unavailable: running workloads without limits"),
            Some(v) => tracing::info!(
                version = ?v,
                memory = ?cgroups.memory,
                cpu = ?cgroups.cpu,
                notes = ?cgroups.notes,
                "cgroups detected"
            ),
        }
        let seed = std::collections::hash_map::RandomState::new().hash_one((
            std::process::id(),
            &config.cgroup_name,
            crate::types::now_ms(),
        ));
        let (version, _) = watch::channel(0u64);
        let secrets_root = crate::secrets::default_root(&config.cgroup_name);
        let inner = Arc::new(Inner {
            secret_source: std::sync::RwLock::new(None),
            secrets_root,
            ports: Mutex::new(PortAllocator::new(config.port_range.clone(), seed)),
            config,
            cgroups,
            instances_dir,
            logs_dir,
            table: Mutex::new(BTreeMap::new()),
            version,
            cgroup_warned: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
        });

        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut sup =
            Supervisor { inner: inner.clone(), tasks: BTreeMap::new(), done_tx, seq: 0, log_sizes: BTreeMap::new() };
        sup.load_records().await;

        let (control, control_rx) = mpsc::unbounded_channel();
        let (desired_tx, desired_rx) = watch::channel(None);
        tokio::spawn(sup.run(control_rx, desired_rx, done_rx));
        Ok(AgentHandle { inner, control, desired: Arc::new(desired_tx) })
    }
}

impl AgentHandle {
    /// Gives the agent what opens the secrets its instances read (before they start).
    pub fn set_secret_source(&self, source: crate::secrets::SharedSecretSource) {
        *self.inner.secret_source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Declares the complete set of instances this node should run. The
    /// agent reconciles continuously toward the latest set.
    pub fn set_desired(&self, desired: Vec<InstanceSpec>) {
        self.desired.send_replace(Some(Arc::new(desired)));
    }

    /// Status of every instance the agent knows, sorted by id: a copy of the table,
    /// cheap enough for every heartbeat and tunneled connection. Memory and CPU are the
    /// last [`AgentHandle::usage`] reading (a node's sampler reads every 10 s).
    pub fn status(&self) -> Vec<InstanceStatus> {
        let t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
        t.values().map(|e| e.status.clone()).collect()
    }

    /// A usage reading of every running instance: from its cgroup, or, without one, the
    /// sum over its process group's live processes (one scan of `/proc`). Kept for
    /// [`AgentHandle::status`].
    pub fn usage(&self) -> Vec<(InstanceId, crate::usage::Reading)> {
        let rows: Vec<(InstanceId, u32, Option<InstanceCgroup>)> = {
            let t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
            t.values().filter_map(|e| Some((e.status.id.clone(), e.status.pid?, e.cgroup.clone()))).collect()
        };
        let without: Vec<u32> = rows.iter().filter(|(_, _, cg)| cg.is_none()).map(|(_, pid, _)| *pid).collect();
        let by_group = if without.is_empty() { Default::default() } else { crate::proc::group_usage(&without) };
        let readings: Vec<(InstanceId, crate::usage::Reading)> = rows
            .into_iter()
            .map(|(id, pid, cg)| {
                let reading = match cg {
                    Some(cg) => crate::usage::Reading { cpu_ns: cg.cpu_usage_ns(), memory_bytes: cg.memory_bytes() },
                    None => {
                        let (cpu, mem) = by_group.get(&pid).copied().unzip();
                        crate::usage::Reading { cpu_ns: cpu, memory_bytes: mem }
                    }
                };
                (id, reading)
            })
            .collect();
        // What `status()` reports until the next reading (nothing for what does not run).
        let mut t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
        for e in t.values_mut() {
            let r = readings.iter().find(|(id, _)| *id == e.status.id).map(|(_, r)| *r);
            e.status.memory_bytes = r.and_then(|r| r.memory_bytes);
            e.status.cpu_usage_ns = r.and_then(|r| r.cpu_ns);
        }
        readings
    }

    /// A receiver whose value bumps on every status change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// The current log file of an instance (`state_dir/logs/<instance>.log`;
    /// rotated ones: the same path + `.1`, `.2`, ...).
    pub fn log_file(&self, id: &InstanceId) -> PathBuf {
        self.inner.log_path(id)
    }

    /// Stops the agent. `StopWorkloads`: every instance is stopped
    /// gracefully (stop signal, grace, then SIGKILL of its process group and
    /// every pid in its cgroup), cgroups and records are removed.
    /// `Detach`: workloads keep running and records stay for the next agent.
    pub async fn shutdown(self, mode: ShutdownMode) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(mode, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Task {
    seq: u64,
    cmds: mpsc::UnboundedSender<Cmd>,
    join: JoinHandle<()>,
    stop_sent: bool,
}

struct Supervisor {
    inner: Arc<Inner>,
    tasks: BTreeMap<InstanceId, Task>,
    done_tx: mpsc::UnboundedSender<(InstanceId, u64)>,
    seq: u64,
    /// Each instance log's size at its last time checkpoint.
    log_sizes: BTreeMap<PathBuf, u64>,
}

impl Supervisor {
    fn spawn_task(&mut self, spec: InstanceSpec, initial: Initial) {
        let id = spec.id.clone();
        {
            let mut t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
            t.insert(id.clone(), Entry { status: InstanceStatus::new(id.clone(), spec.generation), cgroup: None });
        }
        self.seq += 1;
        let seq = self.seq;
        let (tx, rx) = mpsc::unbounded_channel();
        let done = self.done_tx.clone();
        let inner = self.inner.clone();
        let task_id = id.clone();
        let join = tokio::spawn(async move {
            instance::run(inner, spec, initial, rx).await;
            let _ = done.send((task_id, seq));
        });
        self.tasks.insert(id, Task { seq, cmds: tx, join, stop_sent: false });
        self.inner.bump();
    }

    fn forget_task(&mut self, id: &InstanceId) {
        self.tasks.remove(id);
        let mut t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(id);
        drop(t);
        self.inner.bump();
    }

    /// Re-adopts (or cleans up after) every persisted instance.
    async fn load_records(&mut self) {
        let me = std::process::id();
        for (path, rec) in record::load_records(&self.inner.instances_dir) {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable instance record; moved aside");
                    let mut bad = path.clone().into_os_string();
                    bad.push(".bad");
                    let _ = std::fs::rename(&path, bad);
                    continue;
                }
            };
            let id = rec.spec.id.clone();
            if self.tasks.contains_key(&id) {
                continue;
            }
            let st = proc::read_stat(rec.pid);
            let same = st.is_some_and(|s| s.start_time == rec.start_time);
            let alive = st.is_some_and(|s| same && (!s.is_zombie() || s.ppid == me));
            if rec.exited.is_some() && !alive {
                let spec = rec.spec.clone();
                self.spawn_task(spec, Initial::Exited(Box::new(rec)));
            } else if alive {
                {
                    let mut a = self.inner.ports.lock().unwrap_or_else(|e| e.into_inner());
                    for p in rec.ports.values() {
                        a.hold(*p);
                    }
                }
                let spec = rec.spec.clone();
                self.spawn_task(spec, Initial::Adopt(Box::new(rec)));
            } else {
                tracing::info!(instance = %id, pid = rec.pid, "recorded process is gone; cleaning up");
                crate::logs::marker(
                    &self.inner.log_path(&id),
                    &format!("pid {} is gone after agent restart; cleaning up", rec.pid),
                );
                cleanup_leftovers(&rec).await;
                let _ = record::remove_record(&self.inner.instances_dir, &id.file_stem());
            }
        }
    }

    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut desired: watch::Receiver<Option<Arc<Vec<InstanceSpec>>>>,
        mut done: mpsc::UnboundedReceiver<(InstanceId, u64)>,
    ) {
        let mut version = self.inner.version.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut control_open = true;
        let mut desired_open = true;
        loop {
            tokio::select! {
                biased;
                c = control.recv(), if control_open => match c {
                    Some(Control::Shutdown(mode, ack)) => {
                        self.shutdown(mode, &mut done).await;
                        let _ = ack.send(());
                        return;
                    }
                    // Every handle is gone: keep supervising what runs.
                    None => control_open = false,
                },
                r = desired.changed(), if desired_open => {
                    if r.is_err() {
                        desired_open = false;
                    }
                }
                Some((id, seq)) = done.recv() => {
                    if self.tasks.get(&id).is_some_and(|t| t.seq == seq) {
                        self.forget_task(&id);
                    }
                }
                _ = version.changed() => {}
                _ = tick.tick() => {
                    self.reap_crashed_tasks();
                    self.rotate_logs().await;
                }
            }
            let want = desired.borrow_and_update().clone();
            if let Some(want) = want {
                self.reconcile_pass(&want);
            }
        }
    }

    /// Instance tasks that ended without reporting (a panic): forget them
    /// so reconcile starts them again.
    fn reap_crashed_tasks(&mut self) {
        let dead: Vec<InstanceId> =
            self.tasks.iter().filter(|(_, t)| t.join.is_finished()).map(|(id, _)| id.clone()).collect();
        for id in dead {
            tracing::error!(instance = %id, "instance supervisor task ended unexpectedly");
            self.forget_task(&id);
        }
    }

    /// Once a second: rotates the instances' logs that grew too big and adds a time
    /// checkpoint to the index of each that grew (`logs.rs`).
    async fn rotate_logs(&mut self) {
        let paths: Vec<PathBuf> = self.tasks.keys().map(|id| self.inner.log_path(id)).collect();
        let (max, keep) = (self.inner.config.log_max_bytes, self.inner.config.log_keep);
        let mut sizes = std::mem::take(&mut self.log_sizes);
        let job = tokio::task::spawn_blocking(move || {
            let now = crate::types::now_ms();
            let mut kept = BTreeMap::new();
            for p in paths {
                let mut last = sizes.remove(&p).unwrap_or_else(|| crate::logs::last_checkpoint(&p));
                match crate::logs::rotate_if_needed(&p, max, keep) {
                    Ok(true) => last = 0,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(path = %p.display(), error = %e, "log rotation failed"),
                }
                match crate::logs::checkpoint(&p, last, now) {
                    Ok(size) => last = size,
                    Err(e) => tracing::debug!(path = %p.display(), error = %e, "log time index not written"),
                }
                kept.insert(p, last);
            }
            kept
        });
        self.log_sizes = job.await.unwrap_or_default();
    }

    fn reconcile_pass(&mut self, want: &[InstanceSpec]) {
        let observed: Vec<ObservedInstance> = {
            let t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
            t.values().map(|e| ObservedInstance::from(&e.status)).collect()
        };
        for action in reconcile(want, &observed) {
            match action {
                Action::Start(spec) => {
                    if !self.tasks.contains_key(&spec.id) {
                        tracing::info!(instance = %spec.id, generation = spec.generation, "start");
                        self.spawn_task(spec, Initial::Fresh);
                    }
                }
                Action::Stop(id) => match self.tasks.get_mut(&id) {
                    Some(t) if !t.stop_sent => {
                        tracing::info!(instance = %id, "stop");
                        t.stop_sent = true;
                        let _ = t.cmds.send(Cmd::Stop);
                    }
                    Some(_) => {}
                    None => self.forget_task(&id),
                },
                Action::Replace(spec) => {
                    let Some(t) = self.tasks.get(&spec.id) else {
                        continue;
                    };
                    if t.stop_sent {
                        continue;
                    }
                    tracing::info!(instance = %spec.id, generation = spec.generation, "replace");
                    let gen = spec.generation;
                    let _ = t.cmds.send(Cmd::Replace(Box::new(spec.clone())));
                    self.inner.update(&spec.id, |e| {
                        e.status.generation = gen;
                        e.status.state = InstanceState::Stopping;
                        e.status.ready = false;
                    });
                }
            }
        }
    }

    async fn shutdown(&mut self, mode: ShutdownMode, done: &mut mpsc::UnboundedReceiver<(InstanceId, u64)>) {
        let _ = done;
        tracing::info!(?mode, instances = self.tasks.len(), "agent shutting down");
        let cmd = || match mode {
            ShutdownMode::StopWorkloads => Cmd::Stop,
            ShutdownMode::Detach => Cmd::Detach,
        };
        for t in self.tasks.values() {
            let _ = t.cmds.send(cmd());
        }
        let tasks = std::mem::take(&mut self.tasks);
        for (id, t) in tasks {
            if let Err(e) = t.join.await {
                tracing::error!(instance = %id, error = %e, "instance task failed during shutdown");
            }
        }
        if mode == ShutdownMode::StopWorkloads {
            // Anything still recorded (e.g. a task that died) is killed too.
            for (path, rec) in record::load_records(&self.inner.instances_dir) {
                if let Ok(rec) = rec {
                    cleanup_leftovers(&rec).await;
                }
                let _ = std::fs::remove_file(path);
            }
            self.inner.cgroups.remove_parents();
            if let Some(root) = &self.inner.secrets_root {
                let _ = std::fs::remove_dir_all(root);
            }
        }
        {
            let mut t = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
            t.clear();
        }
        self.inner.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.inner.bump();
    }
}

/// Takes the exclusive lock on the state directory: two agents on one
/// state_dir would fight over the same processes.
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File, AgentError> {
    let path = state_dir.join("agent.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AgentError::io("open lock file", &path, e))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Err(AgentError::Config(format!("state_dir {} is in use by another running agent", state_dir.display())))
        }
        Err(e) => Err(AgentError::io("lock", &path, e.into())),
    }
}

/// Kills whatever is left of a recorded instance whose agent is gone: the
/// recorded process (if still the same), its process group (unless the
/// pgid number now belongs to an unrelated process), and its cgroup; then
/// removes the cgroup directories.
async fn cleanup_leftovers(rec: &InstanceRecord) {
    let leader = proc::read_stat(rec.pgid);
    let pgid_reused = leader.is_some_and(|s| s.start_time != rec.start_time);
    for _ in 0..50 {
        let members = if pgid_reused { Vec::new() } else { proc::group_members(rec.pgid) };
        let in_cg = rec.cgroup.as_ref().map(|c| c.live_pids()).unwrap_or_default();
        if members.is_empty() && in_cg.is_empty() {
            break;
        }
        if !members.is_empty() {
            let _ = proc::signal_group(rec.pgid, 9);
        }
        if let Some(c) = &rec.cgroup {
            c.kill_all();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reap the leader if it is our child (after a re-exec).
    if !pgid_reused {
        let mut w = proc::ExitWatcher::new(rec.pid, rec.start_time);
        let _ = w.poll_once();
    }
    if let Some(c) = &rec.cgroup {
        for _ in 0..20 {
            if c.remove().is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
