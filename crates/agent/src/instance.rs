//! The supervisor of ONE instance (a tokio task per instance): starts the
//! process, watches it exit, applies the restart policy with backoff, runs
//! its health checks, stops it gracefully (signal, grace, SIGKILL of the
//! whole process group and cgroup), re-adopts it after an agent restart,
//! and keeps its status entry and on-disk record current.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::agent::Inner;
use crate::backoff::Backoff;
use crate::cgroup::{human_bytes, InstanceCgroup};
use crate::health::{self, HealthUpdate, ProbeCtx, Readiness};
use crate::proc::{self, ExitOutcome, ExitWatcher};
use crate::record::{self, InstanceRecord, RECORD_FORMAT};
use crate::spawn::{self, Launch};
use crate::types::{now_ms, ExitInfo, InstanceId, InstanceSpec, InstanceState, RestartPolicy};

/// Commands from the agent supervisor.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Stop gracefully, clean up, forget (record removed), end the task.
    Stop,
    /// Stop the current process (if any) and run this spec instead.
    Replace(Box<InstanceSpec>),
    /// End the task, leaving the process running and the record on disk.
    Detach,
}

/// How the task begins.
pub(crate) enum Initial {
    Fresh,
    /// A live process from a record of an earlier agent.
    Adopt(Box<InstanceRecord>),
    /// A record of an instance whose restart policy had finished it.
    Exited(Box<InstanceRecord>),
}

struct Running {
    pid: u32,
    pgid: u32,
    start_time: u64,
    watcher: ExitWatcher,
    cgroup: Option<InstanceCgroup>,
    oom_at_start: Option<u64>,
    started: Instant,
    health_task: Option<JoinHandle<()>>,
    health_rx: Option<mpsc::Receiver<HealthUpdate>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.health_task.take() {
            h.abort();
        }
    }
}

enum Phase {
    Running(Box<Running>),
    Waiting(Instant),
    Exited,
}

enum Event {
    Exit(ExitOutcome),
    Health(HealthUpdate),
    Cmd(Option<Cmd>),
    Wake,
}

struct Instance {
    inner: Arc<Inner>,
    id: InstanceId,
    stem: String,
    log: PathBuf,
    spec: InstanceSpec,
    ports: BTreeMap<String, u16>,
    restarts: u32,
    backoff: Backoff,
    last_exit: Option<ExitInfo>,
    warned: bool,
}

async fn next_health(rx: &mut Option<mpsc::Receiver<HealthUpdate>>) -> HealthUpdate {
    if let Some(r) = rx {
        if let Some(u) = r.recv().await {
            return u;
        }
    }
    std::future::pending().await
}

/// Runs the instance until it is stopped or detached.
pub(crate) async fn run(
    inner: Arc<Inner>,
    spec: InstanceSpec,
    initial: Initial,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let cfg = &inner.config;
    let backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max, cfg.backoff_reset, cfg.crash_loop_after);
    let mut inst = Instance {
        id: spec.id.clone(),
        stem: spec.id.file_stem(),
        log: inner.log_path(&spec.id),
        spec,
        ports: BTreeMap::new(),
        restarts: 0,
        backoff,
        last_exit: None,
        warned: false,
        inner,
    };
    let mut phase = match initial {
        Initial::Fresh => Phase::Waiting(Instant::now()),
        Initial::Adopt(rec) => inst.adopt(*rec),
        Initial::Exited(rec) => inst.restore_exited(*rec),
    };
    loop {
        let event = match &mut phase {
            Phase::Waiting(until) => {
                let until = *until;
                tokio::select! {
                    biased;
                    c = cmds.recv() => Event::Cmd(c),
                    _ = tokio::time::sleep_until(until) => Event::Wake,
                }
            }
            Phase::Exited => Event::Cmd(cmds.recv().await),
            Phase::Running(r) => {
                let r = &mut **r;
                tokio::select! {
                    biased;
                    c = cmds.recv() => Event::Cmd(c),
                    o = r.watcher.wait() => Event::Exit(o),
                    u = next_health(&mut r.health_rx) => Event::Health(u),
                }
            }
        };
        phase = match (event, phase) {
            (Event::Wake, _) => inst.start(),
            (Event::Exit(o), Phase::Running(r)) => inst.on_exit(*r, o).await,
            (Event::Health(u), Phase::Running(r)) => {
                inst.apply_health(u);
                Phase::Running(r)
            }
            (Event::Cmd(Some(Cmd::Stop)), p) => {
                if let Phase::Running(r) = p {
                    inst.stop_running(*r).await;
                }
                inst.forget();
                return;
            }
            (Event::Cmd(Some(Cmd::Replace(spec))), p) => {
                if let Phase::Running(r) = p {
                    inst.stop_running(*r).await;
                }
                inst.replace(*spec);
                Phase::Waiting(Instant::now())
            }
            (Event::Cmd(Some(Cmd::Detach)) | Event::Cmd(None), p) => {
                if let Phase::Running(r) = &p {
                    tracing::info!(instance = %inst.id, pid = r.pid, "detached; process left running");
                }
                // Dropping `Running` closes the pidfd and aborts health
                // checks; the process itself is untouched.
                drop(p);
                return;
            }
            (_, p) => p,
        };
    }
}

impl Instance {
    fn set_status(&self, f: impl FnOnce(&mut crate::agent::Entry)) {
        self.inner.update(&self.id, f);
    }

    fn write_record(&self, r: &Running, exited: Option<ExitInfo>, started_at_ms: u64) {
        let rec = InstanceRecord {
            format: RECORD_FORMAT,
            spec: self.spec.clone(),
            generation: self.spec.generation,
            pid: r.pid,
            pgid: r.pgid,
            start_time: r.start_time,
            ports: self.ports.clone(),
            cgroup: r.cgroup.clone(),
            restarts: self.restarts,
            started_at_ms,
            oom_kills_at_start: r.oom_at_start,
            exited,
            agent_pid: std::process::id(),
        };
        if let Err(e) = record::write_record(&self.inner.instances_dir, &self.stem, &rec) {
            tracing::error!(instance = %self.id, error = %e, "cannot write instance record");
        }
    }

    fn health_for(&self, started: Instant) -> (Option<JoinHandle<()>>, Option<mpsc::Receiver<HealthUpdate>>) {
        let Some(mut cfg) = self.spec.health.clone() else {
            return (None, None);
        };
        // A container's exec check runs in the container, where its tools are.
        if let (Some(_), crate::types::HealthProbe::Exec { argv }) = (&self.spec.image, &mut cfg.check) {
            *argv = crate::oci::exec_argv(&self.inner.config.oci, &crate::oci::container_name(&self.stem), argv);
        }
        let (tx, rx) = mpsc::channel(8);
        let ctx = ProbeCtx {
            ports: self.ports.clone(),
            env: spawn::instance_env(&self.spec, &self.ports),
            workdir: self.spec.workdir.clone(),
        };
        (Some(tokio::spawn(health::run(cfg, ctx, started, tx))), Some(rx))
    }

    /// Starts a process for the current spec.
    fn start(&mut self) -> Phase {
        // Ports: keep the previous ones when still free.
        let alloc = {
            let mut a = self.inner.ports.lock().unwrap_or_else(|e| e.into_inner());
            a.allocate(&self.spec.ports, &self.ports, crate::ports::bind_test)
        };
        self.ports = match alloc {
            Ok(p) => p,
            Err(e) => {
                self.ports.clear();
                return self.on_failed_start(e.to_string());
            }
        };

        let mut warnings = self.inner.cgroups.unenforceable(&self.spec.limits);
        let cgroup = match self.inner.cgroups.create(&self.stem, &self.spec.limits) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("running without cgroup: {e}"));
                None
            }
        };
        if !warnings.is_empty() && !self.warned {
            self.warned = true;
            for w in &warnings {
                crate::logs::marker(&self.log, &format!("warning: {w}"));
            }
            self.inner.warn_once(&warnings);
        }
        let oom_at_start = cgroup.as_ref().and_then(|c| c.oom_kills());

        let fail_cleanup = |cg: &Option<InstanceCgroup>| {
            if let Some(c) = cg {
                let _ = c.remove();
            }
        };
        let log = match crate::logs::open_append(&self.log) {
            Ok(f) => f,
            Err(e) => {
                fail_cleanup(&cgroup);
                return self.on_failed_start(format!("cannot open log {}: {e}", self.log.display()));
            }
        };
        // A container's client stays outside the instance's cgroup: podman puts conmon
        // and the container below it (`--cgroup-parent`), and cgroup v2 allows no
        // process beside child cgroups.
        let join = cgroup.as_ref().filter(|_| self.spec.image.is_none());
        let cgroup_procs = match join.map(|c| c.open_procs()).transpose() {
            Ok(fds) => fds.unwrap_or_default(),
            Err(e) => {
                fail_cleanup(&cgroup);
                return self.on_failed_start(format!("cannot join cgroup: {e}"));
            }
        };
        let prepared = {
            let source = self.inner.secret_source.read().unwrap_or_else(|e| e.into_inner()).clone();
            crate::secrets::prepare(&self.spec, source.as_ref(), self.inner.secrets_root.as_deref(), &self.stem)
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                fail_cleanup(&cgroup);
                return self.on_failed_start(e);
            }
        };
        let env = spawn::instance_env(&self.spec, &self.ports);
        let launch = match &self.spec.image {
            None => Launch {
                argv: self.spec.argv.clone(),
                env,
                secret_env: prepared.env,
                mounts: prepared.mounts,
                workdir: self.spec.workdir.clone(),
                log,
                cgroup_procs,
                run_as: self.spec.run_as,
            },
            Some(image) => {
                // The host's PATH is the client's; the container keeps the image's
                // unless the spec sets one.
                let mut names: Vec<&str> = env
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != "PATH" || self.spec.env.contains_key("PATH"))
                    .collect();
                names.extend(prepared.env.iter().map(|(k, _)| k.as_str()));
                let mounts: Vec<(String, String)> = prepared
                    .mounts
                    .iter()
                    .map(|(a, b)| (a.to_string_lossy().into_owned(), b.to_string_lossy().into_owned()))
                    .collect();
                let name = crate::oci::container_name(&self.stem);
                let argv = crate::oci::run_argv(
                    &self.inner.config.oci,
                    &crate::oci::RunRequest {
                        image,
                        name: &name,
                        command: &self.spec.argv,
                        env_names: names,
                        mounts: &mounts,
                        workdir: self.spec.workdir.as_deref(),
                        cgroup_parent: cgroup.as_ref().and_then(|c| c.rel.as_deref()),
                        limits: &self.spec.limits,
                        ulimits: crate::oci::own_ulimits(),
                    },
                );
                // The client itself runs with `env`'s PATH (the agent's unless the spec
                // sets one) to find podman, conmon and the runtime.
                Launch {
                    argv,
                    env,
                    secret_env: prepared.env,
                    mounts: Vec::new(),
                    workdir: None,
                    log,
                    cgroup_procs,
                    run_as: self.spec.run_as,
                }
            }
        };
        let pid = match spawn::spawn(launch) {
            Ok(pid) => pid,
            Err(e) => {
                fail_cleanup(&cgroup);
                return self.on_failed_start(e.to_string());
            }
        };
        let start_time = proc::read_stat(pid).map_or(0, |s| s.start_time);
        let started = Instant::now();
        let started_at_ms = now_ms();
        crate::logs::marker(&self.log, &format!("started pid {pid} (generation {})", self.spec.generation));
        tracing::info!(instance = %self.id, pid, generation = self.spec.generation, "started");
        let (health_task, health_rx) = self.health_for(started);
        let r = Running {
            pid,
            pgid: pid,
            start_time,
            watcher: ExitWatcher::new(pid, start_time),
            cgroup,
            oom_at_start,
            started,
            health_task,
            health_rx,
        };
        self.write_record(&r, None, started_at_ms);
        let has_health = self.spec.health.is_some();
        let (gen, restarts, ports, cg) = (self.spec.generation, self.restarts, self.ports.clone(), r.cgroup.clone());
        self.set_status(|e| {
            let s = &mut e.status;
            s.generation = gen;
            s.pid = Some(pid);
            s.state = if has_health { InstanceState::Starting } else { InstanceState::Ready };
            s.ready = !has_health;
            s.restarts = restarts;
            s.ports = ports;
            s.started_at_ms = Some(started_at_ms);
            s.last_health_error = None;
            s.adopted = false;
            s.warnings = warnings;
            e.cgroup = cg;
        });
        Phase::Running(Box::new(r))
    }

    /// Takes over a live process recorded by an earlier agent.
    fn adopt(&mut self, rec: InstanceRecord) -> Phase {
        self.ports = rec.ports.clone();
        self.restarts = rec.restarts;
        let elapsed = Duration::from_millis(now_ms().saturating_sub(rec.started_at_ms));
        let started = Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now);
        let (health_task, health_rx) = self.health_for(started);
        let r = Running {
            pid: rec.pid,
            pgid: rec.pgid,
            start_time: rec.start_time,
            watcher: ExitWatcher::new(rec.pid, rec.start_time),
            cgroup: rec.cgroup.clone(),
            oom_at_start: rec.oom_kills_at_start,
            started,
            health_task,
            health_rx,
        };
        crate::logs::marker(
            &self.log,
            &format!("adopted pid {} (generation {}) after agent restart", rec.pid, rec.generation),
        );
        tracing::info!(instance = %self.id, pid = rec.pid, "re-adopted running process");
        let has_health = self.spec.health.is_some();
        let warnings = self.inner.cgroups.unenforceable(&self.spec.limits);
        let (ports, restarts, cg) = (self.ports.clone(), self.restarts, r.cgroup.clone());
        self.set_status(|e| {
            let s = &mut e.status;
            s.generation = rec.generation;
            s.pid = Some(rec.pid);
            s.state = if has_health { InstanceState::Starting } else { InstanceState::Ready };
            s.ready = !has_health;
            s.restarts = restarts;
            s.ports = ports;
            s.started_at_ms = Some(rec.started_at_ms);
            s.adopted = true;
            if rec.cgroup.is_some() {
                s.warnings = warnings;
            }
            e.cgroup = cg;
        });
        Phase::Running(Box::new(r))
    }

    fn restore_exited(&mut self, rec: InstanceRecord) -> Phase {
        self.restarts = rec.restarts;
        self.last_exit = rec.exited.clone();
        let (restarts, last_exit) = (self.restarts, self.last_exit.clone());
        self.set_status(|e| {
            let s = &mut e.status;
            s.generation = rec.generation;
            s.state = InstanceState::Exited;
            s.ready = false;
            s.restarts = restarts;
            s.last_exit = last_exit;
        });
        Phase::Exited
    }

    fn apply_health(&mut self, u: HealthUpdate) {
        let (state, ready) = match u.readiness {
            Readiness::Starting => (InstanceState::Starting, false),
            Readiness::Ready => (InstanceState::Ready, true),
            Readiness::Unready => (InstanceState::Unready, false),
        };
        let prev = self.inner.state_of(&self.id);
        if prev != Some(state) {
            match u.readiness {
                Readiness::Ready => tracing::info!(instance = %self.id, "ready"),
                Readiness::Unready => {
                    tracing::warn!(instance = %self.id, error = u.error.as_deref().unwrap_or(""), "unready")
                }
                Readiness::Starting => {}
            }
            if state == InstanceState::Unready || prev == Some(InstanceState::Unready) {
                let msg = match &u.error {
                    Some(e) if !ready => format!("health check failing, instance unready: {e}"),
                    _ => "health check passing again, instance ready".to_string(),
                };
                crate::logs::marker(&self.log, &msg);
            }
        }
        self.set_status(|e| {
            e.status.state = state;
            e.status.ready = ready;
            e.status.last_health_error = u.error;
        });
    }

    fn exit_info(&self, r: &Running, outcome: Option<ExitOutcome>, what: &str) -> ExitInfo {
        let oom_now = r.cgroup.as_ref().and_then(|c| c.oom_kills());
        let oom_killed = match (r.oom_at_start, oom_now) {
            (Some(a), Some(b)) => b > a,
            (None, Some(b)) => b > 0,
            _ => false,
        };
        let (code, signal, mut description) = match outcome {
            Some(ExitOutcome::Code(c)) => (Some(c), None, format!("{what} with code {c}")),
            Some(ExitOutcome::Signal(s)) => (None, Some(s), format!("killed by {}", proc::signal_name(s))),
            Some(ExitOutcome::Unknown) | None => (
                None,
                None,
                format!(
                    "{what} (exit status unknown: the process was re-adopted after an agent restart and is not a child of this agent)"
                ),
            ),
        };
        if oom_killed {
            let limit = r
                .cgroup
                .as_ref()
                .and_then(|c| c.memory_limit)
                .map_or(String::new(), |l| format!(": limit {}", human_bytes(l)));
            let peak = r.cgroup.as_ref().and_then(|c| c.memory_peak_bytes());
            let limit = match peak {
                Some(p) => format!("{limit}, peak {}", human_bytes(p)),
                None => limit,
            };
            if matches!(outcome, Some(ExitOutcome::Signal(9))) {
                description.push_str(&format!(" (out of memory{limit})"));
            } else {
                description.push_str(&format!(" (out of memory: a process of the instance was OOM-killed{limit})"));
            }
        }
        ExitInfo { code, signal, oom_killed, at_ms: now_ms(), description }
    }

    /// SIGKILLs whatever is left of the instance (process group, cgroup)
    /// and waits (bounded, 10s) until it is gone. `outcome`: the leader's
    /// exit if already reaped (`None` = not yet, so the pgid is certainly
    /// ours). Returns the leader's exit once known.
    async fn kill_leftovers(&self, r: &mut Running, mut outcome: Option<ExitOutcome>) -> Option<ExitOutcome> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if outcome.is_none() {
                outcome = r.watcher.poll_once();
            }
            let members = proc::group_members(r.pgid);
            let in_cgroup = r.cgroup.as_ref().map(|c| c.live_pids()).unwrap_or_default();
            if outcome.is_some() && members.is_empty() && in_cgroup.is_empty() {
                return outcome;
            }
            // While the leader is unreaped (or members remain) the pgid
            // number cannot have been reused, so killing the group is safe.
            if outcome.is_none() || !members.is_empty() {
                let _ = proc::signal_group(r.pgid, 9);
            }
            if let Some(c) = &r.cgroup {
                c.kill_all();
            }
            if Instant::now() >= deadline {
                tracing::error!(instance = %self.id, pgid = r.pgid, ?members, ?in_cgroup, "processes survive SIGKILL");
                crate::logs::marker(&self.log, &format!("error: processes {members:?} {in_cgroup:?} survive SIGKILL"));
                return outcome;
            }
            if outcome.is_none() {
                if let Ok(o) = tokio::time::timeout(Duration::from_millis(50), r.watcher.wait()).await {
                    outcome = Some(o);
                }
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Removes a container instance's container from the node's store (by name), once
    /// its processes are gone.
    async fn remove_container(&self) {
        if self.spec.image.is_none() {
            return;
        }
        let argv = crate::oci::remove_argv(&self.inner.config.oci, &crate::oci::container_name(&self.stem));
        let Some((prog, args)) = argv.split_first() else { return };
        let run = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output();
        match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(Ok(out)) if out.status.success() => {}
            Ok(Ok(out)) => tracing::warn!(
                instance = %self.id,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "cannot remove the container"
            ),
            Ok(Err(e)) => tracing::warn!(instance = %self.id, error = %e, "cannot run podman to remove the container"),
            Err(_) => tracing::warn!(instance = %self.id, "removing the container took over 30s; left"),
        }
    }

    async fn remove_cgroup(&self, r: &Running) {
        self.remove_container().await;
        let Some(c) = &r.cgroup else { return };
        for _ in 0..20 {
            if c.remove().is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = c.remove() {
            tracing::warn!(instance = %self.id, error = %e, "cannot remove cgroup");
        }
    }

    /// The process exited on its own.
    async fn on_exit(&mut self, mut r: Running, outcome: ExitOutcome) -> Phase {
        let uptime = r.started.elapsed();
        // Read the OOM counter before the cgroup goes away.
        let info = self.exit_info(&r, Some(outcome), "exited");
        self.kill_leftovers(&mut r, Some(outcome)).await;
        self.remove_cgroup(&r).await;
        let pid = r.pid;
        let started_at_ms = self.inner.started_at_of(&self.id).unwrap_or(0);
        tracing::warn!(instance = %self.id, pid, exit = %info.description, "process exited");
        self.after_failure(info, uptime, Some(pid), Some((r, started_at_ms)))
    }

    fn on_failed_start(&mut self, err: String) -> Phase {
        tracing::warn!(instance = %self.id, error = %err, "cannot start");
        let info = ExitInfo {
            code: None,
            signal: None,
            oom_killed: false,
            at_ms: now_ms(),
            description: format!("failed to start: {err}"),
        };
        self.after_failure(info, Duration::ZERO, None, None)
    }

    /// Applies the restart policy after an exit or a failed start.
    fn after_failure(
        &mut self,
        info: ExitInfo,
        uptime: Duration,
        pid: Option<u32>,
        ran: Option<(Running, u64)>,
    ) -> Phase {
        let success = info.code == Some(0);
        let restart = match self.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        let what = match pid {
            Some(p) => format!("pid {p} {}", info.description),
            None => info.description.clone(),
        };
        self.last_exit = Some(info.clone());
        if restart {
            let plan = self.backoff.on_failure(uptime);
            self.restarts = self.restarts.saturating_add(1);
            let state = if plan.crash_loop { InstanceState::CrashLoop } else { InstanceState::Backoff };
            let mut msg = format!("{what}; restarting in {:?} (restart {})", plan.delay, self.restarts);
            if plan.crash_loop {
                msg.push_str(&format!("; crash loop: {} consecutive failures", plan.consecutive_failures));
            }
            crate::logs::marker(&self.log, &msg);
            let restarts = self.restarts;
            self.set_status(|e| {
                let s = &mut e.status;
                s.pid = None;
                s.state = state;
                s.ready = false;
                s.restarts = restarts;
                s.started_at_ms = None;
                s.adopted = false;
                s.oom_kills += u32::from(info.oom_killed);
                s.last_exit = Some(info);
                e.cgroup = None;
            });
            Phase::Waiting(Instant::now() + plan.delay)
        } else {
            crate::logs::marker(&self.log, &format!("{what}; restart policy {:?}: not restarting", self.spec.restart));
            if let Some((r, started_at_ms)) = &ran {
                self.write_record(r, Some(info.clone()), *started_at_ms);
            }
            {
                let mut a = self.inner.ports.lock().unwrap_or_else(|e| e.into_inner());
                a.release(self.ports.values());
            }
            self.ports.clear();
            self.set_status(|e| {
                let s = &mut e.status;
                s.pid = None;
                s.state = InstanceState::Exited;
                s.ready = false;
                s.started_at_ms = None;
                s.adopted = false;
                s.ports.clear();
                s.oom_kills += u32::from(info.oom_killed);
                s.last_exit = Some(info);
                e.cgroup = None;
            });
            Phase::Exited
        }
    }

    /// Graceful stop: stop signal to the group (and cgroup), wait up to the
    /// grace period for everything to exit, then SIGKILL everything left.
    async fn stop_running(&mut self, mut r: Running) {
        let sig = if self.spec.stop_signal > 0 { self.spec.stop_signal } else { 15 };
        let grace = self.spec.stop_grace;
        self.set_status(|e| {
            e.status.state = InstanceState::Stopping;
            e.status.ready = false;
        });
        let to = if self.spec.stop_main_only { "the main process" } else { "the process group" };
        crate::logs::marker(
            &self.log,
            &format!("stopping pid {}: {} to {to} (grace {grace:?})", r.pid, proc::signal_name(sig)),
        );
        tracing::info!(instance = %self.id, pid = r.pid, "stopping");
        if let Some(h) = r.health_task.take() {
            h.abort();
        }
        let mut outcome = r.watcher.poll_once();
        if self.spec.stop_main_only {
            if outcome.is_none() {
                if let Err(e) = proc::signal_pid(r.pid, sig) {
                    tracing::warn!(instance = %self.id, error = %e, "cannot signal the main process");
                }
            }
        } else {
            if outcome.is_none() {
                if let Err(e) = proc::signal_group(r.pgid, sig) {
                    tracing::warn!(instance = %self.id, error = %e, "cannot signal process group");
                    let _ = proc::signal_group(r.pgid, 15);
                }
            }
            if let Some(c) = &r.cgroup {
                c.signal_all(sig);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            if outcome.is_none() {
                outcome = r.watcher.poll_once();
            }
            if outcome.is_some()
                && proc::group_members(r.pgid).is_empty()
                && r.cgroup.as_ref().is_none_or(|c| c.live_pids().is_empty())
            {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                crate::logs::marker(
                    &self.log,
                    &format!("grace period of {grace:?} over: sending SIGKILL to pid {} and its group", r.pid),
                );
                break;
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            if outcome.is_none() {
                if let Ok(o) = tokio::time::timeout(step, r.watcher.wait()).await {
                    outcome = Some(o);
                }
            } else {
                tokio::time::sleep(step).await;
            }
        }
        let outcome = self.kill_leftovers(&mut r, outcome).await;
        let info = self.exit_info(&r, outcome, "exited");
        self.remove_cgroup(&r).await;
        crate::logs::marker(&self.log, &format!("stopped pid {}: {}", r.pid, info.description));
        self.last_exit = Some(info.clone());
        self.set_status(|e| {
            e.status.pid = None;
            e.status.last_exit = Some(info);
            e.status.started_at_ms = None;
            e.cgroup = None;
        });
    }

    /// After a stop: record removed, ports released.
    fn forget(&mut self) {
        if let Err(e) = record::remove_record(&self.inner.instances_dir, &self.stem) {
            tracing::warn!(instance = %self.id, error = %e, "cannot remove instance record");
        }
        crate::secrets::remove(self.inner.secrets_root.as_deref(), &self.stem);
        let mut a = self.inner.ports.lock().unwrap_or_else(|e| e.into_inner());
        a.release(self.ports.values());
        self.ports.clear();
    }

    fn replace(&mut self, spec: InstanceSpec) {
        crate::logs::marker(
            &self.log,
            &format!("replacing generation {} with generation {}", self.spec.generation, spec.generation),
        );
        self.spec = spec;
        self.restarts = 0;
        self.backoff.reset();
        self.warned = false;
        let gen = self.spec.generation;
        self.set_status(|e| {
            e.status.generation = gen;
            e.status.restarts = 0;
            e.status.oom_kills = 0;
            e.status.state = InstanceState::Starting;
            e.status.ready = false;
            e.status.adopted = false;
        });
    }
}
