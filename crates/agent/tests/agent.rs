//! End-to-end tests of the agent with real processes, sockets and cgroups:
//! replicas of a python HTTP server, crash restarts and backoff, health
//! checks, re-adoption after detach, graceful stop of stubborn process
//! groups, OOM kills, log capture and rotation, rolling replace.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_agent::{
    Agent, AgentConfig, AgentHandle, HealthConfig, HealthProbe, InstanceId, InstanceSpec, InstanceState,
    InstanceStatus, Limits, RestartPolicy, ShutdownMode,
};

// ---------------------------------------------------------------- harness

/// Per-test environment: temp state dir, unique cgroup name, own port range,
/// and every agent started through it is shut down (StopWorkloads) when the
/// test ends, even if it panicked; finally a fresh agent re-adopts and stops
/// anything a detached agent may have left behind.
struct Ctx {
    name: String,
    dir: Arc<tempfile::TempDir>,
    ports: std::ops::Range<u16>,
    handles: Arc<Mutex<Vec<AgentHandle>>>,
}

impl Ctx {
    fn config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(
            self.dir.path().join("state"),
            format!("holdfast-test-{}-{}", std::process::id(), self.name),
        );
        c.port_range = self.ports.clone();
        c.backoff_base = Duration::from_millis(100);
        c.backoff_max = Duration::from_secs(2);
        c
    }

    async fn start(&self, cfg: AgentConfig) -> AgentHandle {
        let h = Agent::start(cfg).await.expect("agent starts");
        self.handles.lock().expect("lock").push(h.clone());
        h
    }
}

async fn run_test<F, Fut>(name: &str, port_slot: u16, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = 24000 + port_slot * 100;
    let ctx = Ctx {
        name: name.to_string(),
        dir: Arc::new(tempfile::tempdir().expect("tempdir")),
        ports: base..base + 100,
        handles: Arc::new(Mutex::new(Vec::new())),
    };
    let handles = ctx.handles.clone();
    let dir = ctx.dir.clone();
    let cfg = ctx.config();
    let started = Instant::now();
    let result = tokio::spawn(body(ctx)).await;
    let hs: Vec<AgentHandle> = handles.lock().expect("lock").drain(..).collect();
    for h in hs {
        h.shutdown(ShutdownMode::StopWorkloads).await;
    }
    // Sweep: adopt and stop whatever is still recorded.
    if let Ok(h) = Agent::start(cfg).await {
        h.shutdown(ShutdownMode::StopWorkloads).await;
    }
    drop(dir);
    eprintln!("[{name}] took {:?}", started.elapsed());
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

/// Waits until `f` returns `Some` on the agent's status, re-checking on
/// every status change (and every 100ms).
async fn wait_status<T>(
    h: &AgentHandle,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&[InstanceStatus]) -> Option<T>,
) -> T {
    let mut rx = h.subscribe();
    let deadline = Instant::now() + timeout;
    loop {
        rx.borrow_and_update();
        let st = h.status();
        if let Some(v) = f(&st) {
            return v;
        }
        let now = Instant::now();
        assert!(now < deadline, "timed out after {timeout:?} waiting for {what}; status: {st:#?}");
        let step = (deadline - now).min(Duration::from_millis(100));
        let _ = tokio::time::timeout(step, rx.changed()).await;
    }
}

/// Waits until `f()` is true, polling every 50ms.
async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find<'a>(st: &'a [InstanceStatus], id: &InstanceId) -> Option<&'a InstanceStatus> {
    st.iter().find(|s| &s.id == id)
}

fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_string()
    } else {
        "python3".to_string()
    }
}

const HTTP_SERVER: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ["HOLDFAST_INSTANCE"] + " " + self.path).encode()
        self.send_response(200 if self.path in ("/", "/healthz") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("listening on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn http_spec(service: &str, replica: u32) -> InstanceSpec {
    let mut s = InstanceSpec::new(InstanceId::new(service, replica), vec![python(), "-c".into(), HTTP_SERVER.into()]);
    s.ports = vec!["http".into()];
    let mut h = HealthConfig::new(HealthProbe::Http { port: "http".into(), path: "/healthz".into() });
    h.interval = Duration::from_millis(200);
    h.timeout = Duration::from_secs(1);
    h.unhealthy_threshold = 3;
    h.start_grace = Duration::from_secs(5);
    s.health = Some(h);
    s.stop_grace = Duration::from_secs(3);
    s
}

fn sh_spec(service: &str, replica: u32, script: &str) -> InstanceSpec {
    InstanceSpec::new(InstanceId::new(service, replica), vec!["/bin/sh".into(), "-c".into(), script.into()])
}

/// Blocking HTTP GET on 127.0.0.1 returning (status code, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((code, body))
}

fn kill9(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("run kill").success();
    assert!(ok, "kill -9 {pid}");
}

/// (pid, state, pgid) of every process on the machine.
fn process_table() -> Vec<(u32, char, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let state = f.first().and_then(|s| s.chars().next()).unwrap_or('?');
        let pgid = f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((pid, state, pgid));
    }
    out
}

/// Live (non-zombie) processes in process group `pgid`.
fn live_group(pgid: u32) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|(_, state, g)| *g == pgid && *state != 'Z' && *state != 'X')
        .map(|(p, _, _)| p)
        .collect()
}

fn alive(pid: u32) -> bool {
    process_table().iter().any(|(p, s, _)| *p == pid && *s != 'Z' && *s != 'X')
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn rotated(p: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n}", p.display()))
}

/// Milliseconds of the day of the `[...Z]` timestamps of the log lines
/// starting with `prefix`.
fn marker_times(log: &str, prefix: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let ts = l.rsplit('[').next()?.trim_end_matches(']').trim_end_matches('Z');
            let time = ts.split('T').nth(1)?;
            let mut it = time.split(':');
            let h: u64 = it.next()?.parse().ok()?;
            let m: u64 = it.next()?.parse().ok()?;
            let s: f64 = it.next()?.parse().ok()?;
            Some(h * 3_600_000 + m * 60_000 + (s * 1000.0).round() as u64)
        })
        .collect()
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

// ------------------------------------------------------------------ tests

/// 1. Two replicas of a python HTTP server become Ready, each on its own
/// port, each answering GET with its own identity; usage numbers come from
/// cgroups; removing them from the desired set stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_http_replicas_become_ready_and_serve() {
    run_test("http2", 0, |ctx| async move {
        let h = ctx.start(ctx.config()).await;
        h.set_desired(vec![http_spec("web", 0), http_spec("web", 1)]);
        let st = wait_status(&h, "both replicas ready", Duration::from_secs(30), |st| {
            (st.len() == 2 && st.iter().all(|s| s.ready && s.state == InstanceState::Ready)).then(|| st.to_vec())
        })
        .await;
        let p0 = st[0].ports["http"];
        let p1 = st[1].ports["http"];
        // Usage is read by `usage()` (a node's sampler, every 10 s); `status()` reports
        // the last reading.
        let readings = h.usage();
        assert_eq!(readings.len(), 2, "{readings:?}");
        let st = h.status();
        assert_ne!(p0, p1, "each replica has its own port");
        assert!(ctx.ports.contains(&p0) && ctx.ports.contains(&p1));
        assert_eq!(http_get(p0, "/").expect("GET web-0"), (200, "web-0 /".to_string()));
        assert_eq!(http_get(p1, "/").expect("GET web-1"), (200, "web-1 /".to_string()));
        for s in &st {
            assert_eq!(s.restarts, 0);
            assert!(!s.adopted);
            assert!(s.pid.is_some() && s.started_at_ms.is_some());
            assert!(s.last_health_error.is_none(), "{:?}", s.last_health_error);
            // Usage comes from the instance's cgroups. A machine without usable cgroup
            // controllers reports that as a warning; only outside CI may the usage check
            // then be left out, and it says so.
            if s.warnings.is_empty() || ci() {
                assert!(s.warnings.is_empty(), "CI=true: cgroups unusable: {:?}", s.warnings);
                assert!(s.memory_bytes.is_some_and(|m| m > 0), "memory usage from cgroup: {s:?}");
                assert!(s.cpu_usage_ns.is_some(), "cpu usage from cgroup: {s:?}");
            } else {
                eprintln!("SKIPPED the cgroup usage check of {}: {:?}", s.id, s.warnings);
            }
            let log = read(&h.log_file(&s.id));
            assert!(log.contains(&format!("--- holdfast: started pid {} (generation 1)", s.pid.unwrap_or(0))));
            assert!(log.contains(&format!("listening on {}", s.ports["http"])), "{log}");
        }
        // Scale to zero: both stop, their groups are gone.
        let pids: Vec<u32> = st.iter().filter_map(|s| s.pid).collect();
        h.set_desired(vec![]);
        wait_status(&h, "no instances", Duration::from_secs(20), |st| st.is_empty().then_some(())).await;
        for pid in pids {
            assert!(live_group(pid).is_empty(), "group {pid} is gone");
        }
        assert!(http_get(p0, "/").is_err(), "nothing listens any more");
    })
    .await;
}

/// 2a. kill -9 of an instance: restarted with a new pid, restarts == 1,
/// Ready again, same port; the other replica is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_is_restarted() {
    run_test("kill9", 1, |ctx| async move {
        let h = ctx.start(ctx.config()).await;
        let web0 = InstanceId::new("web", 0);
        let web1 = InstanceId::new("web", 1);
        h.set_desired(vec![http_spec("web", 0), http_spec("web", 1)]);
        let st = wait_status(&h, "ready", Duration::from_secs(30), |st| {
            (st.len() == 2 && st.iter().all(|s| s.ready)).then(|| st.to_vec())
        })
        .await;
        let (old, other) = (st[0].clone(), st[1].clone());
        kill9(old.pid.expect("pid"));
        let new = wait_status(&h, "web-0 restarted and ready", Duration::from_secs(30), |st| {
            find(st, &web0).filter(|s| s.ready && s.pid.is_some() && s.pid != old.pid).cloned()
        })
        .await;
        assert_eq!(new.restarts, 1);
        let exit = new.last_exit.clone().expect("last_exit");
        assert_eq!(exit.signal, Some(9), "{exit:?}");
        assert!(exit.description.contains("SIGKILL"), "{}", exit.description);
        assert!(!exit.oom_killed);
        assert_eq!(new.ports, old.ports, "ports are kept across restarts");
        assert_eq!(http_get(new.ports["http"], "/").expect("GET").0, 200);
        let o = h.status().into_iter().find(|s| s.id == web1).expect("web-1");
        assert_eq!((o.pid, o.restarts), (other.pid, 0));
        let log = read(&h.log_file(&web0));
        assert!(log.contains("exited") || log.contains("killed by SIGKILL"), "{log}");
        assert_eq!(log.matches("--- holdfast: started pid").count(), 2, "{log}");
    })
    .await;
}

/// 2b. A command that always fails: restarts back off with growing delays,
/// the state becomes CrashLoop, last_exit.code == 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_command_backs_off_into_crash_loop() {
    run_test("crashloop", 2, |ctx| async move {
        let mut cfg = ctx.config();
        cfg.backoff_base = Duration::from_millis(50);
        cfg.backoff_max = Duration::from_secs(5);
        cfg.crash_loop_after = 5;
        let h = ctx.start(cfg).await;
        let id = InstanceId::new("crash", 0);
        h.set_desired(vec![sh_spec("crash", 0, "echo failing; exit 3")]);
        let st = wait_status(&h, "crash loop", Duration::from_secs(30), |st| {
            find(st, &id).filter(|s| s.state == InstanceState::CrashLoop).cloned()
        })
        .await;
        assert!(!st.ready);
        assert!(st.restarts >= 5, "restarts {}", st.restarts);
        let exit = st.last_exit.expect("last_exit");
        assert_eq!(exit.code, Some(3));
        assert_eq!(exit.signal, None);
        assert!(exit.description.contains("code 3"), "{}", exit.description);
        // Wait for one more start so that 6 start times are in the log.
        wait_until("6 starts", Duration::from_secs(20), || {
            read(&h.log_file(&id)).matches("--- holdfast: started pid").count() >= 6
        })
        .await;
        let log = read(&h.log_file(&id));
        let starts = marker_times(&log, "--- holdfast: started pid");
        let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] + 86_400_000 - w[0]) % 86_400_000).collect();
        eprintln!("gaps between starts (ms): {gaps:?}");
        // Delays are 50, 100, 200, 400, 800ms: each gap is at least its delay.
        for (i, g) in gaps.iter().take(5).enumerate() {
            let want = 50u64 << i;
            assert!(*g + 2 >= want, "gap {i} = {g}ms < backoff {want}ms; gaps {gaps:?}");
        }
        assert!(gaps[4] > 2 * gaps[0] && gaps[4] > gaps[2], "delays grow: {gaps:?}");
        assert!(log.contains("crash loop: 5 consecutive failures"), "{log}");
        assert!(log.contains("failing"));
    })
    .await;
}

/// 3. Exec health check on a file: removing it makes the instance Unready
/// within about unhealthy_threshold * interval (not restarted); recreating
/// it makes it Ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_health_check_drives_readiness() {
    run_test("exechealth", 3, |ctx| async move {
        let flag = ctx.dir.path().join("healthy");
        std::fs::write(&flag, "ok").expect("write flag");
        let h = ctx.start(ctx.config()).await;
        let id = InstanceId::new("worker", 0);
        let mut spec = sh_spec("worker", 0, "exec sleep 1000");
        let mut hc =
            HealthConfig::new(HealthProbe::Exec { argv: vec!["test".into(), "-f".into(), flag.display().to_string()] });
        hc.interval = Duration::from_millis(200);
        hc.timeout = Duration::from_secs(2);
        hc.healthy_threshold = 2;
        hc.unhealthy_threshold = 3;
        spec.health = Some(hc);
        h.set_desired(vec![spec]);
        let ready = wait_status(&h, "ready", Duration::from_secs(20), |st| {
            find(st, &id).filter(|s| s.state == InstanceState::Ready).cloned()
        })
        .await;

        std::fs::remove_file(&flag).expect("remove flag");
        let t0 = Instant::now();
        let unready = wait_status(&h, "unready", Duration::from_secs(10), |st| {
            find(st, &id).filter(|s| s.state == InstanceState::Unready).cloned()
        })
        .await;
        let took = t0.elapsed();
        eprintln!("unready after {took:?} (threshold 3 x 200ms)");
        assert!(took < Duration::from_millis(3 * 200 + 200 + 1500), "took {took:?}");
        assert!(!unready.ready);
        assert!(unready.last_health_error.as_deref().is_some_and(|e| e.contains("exit code 1")), "{unready:?}");
        assert_eq!(unready.pid, ready.pid, "unhealthy instances are not restarted");
        assert_eq!(unready.restarts, 0);

        std::fs::write(&flag, "ok").expect("write flag");
        let again = wait_status(&h, "ready again", Duration::from_secs(10), |st| {
            find(st, &id).filter(|s| s.state == InstanceState::Ready).cloned()
        })
        .await;
        assert!(again.ready && again.last_health_error.is_none());
        assert_eq!(again.pid, ready.pid);
        let log = read(&h.log_file(&id));
        assert!(log.contains("health check failing, instance unready"), "{log}");
    })
    .await;
}

/// 4. Detach, then a new agent on the same state dir re-adopts the same
/// pid (adopted: true), it becomes Ready again, and a kill -9 afterwards is
/// detected and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_instances_are_readopted() {
    run_test("adopt", 4, |ctx| async move {
        let id = InstanceId::new("web", 0);
        let spec = http_spec("web", 0);
        let a = ctx.start(ctx.config()).await;
        a.set_desired(vec![spec.clone()]);
        let before =
            wait_status(&a, "ready", Duration::from_secs(30), |st| find(st, &id).filter(|s| s.ready).cloned()).await;
        let pid = before.pid.expect("pid");
        let port = before.ports["http"];
        a.shutdown(ShutdownMode::Detach).await;
        assert!(alive(pid), "workload survives the detached agent");
        assert_eq!(http_get(port, "/").expect("still serving").0, 200);
        let record = ctx.config().state_dir.join("instances/web-0.json");
        assert!(record.exists(), "record kept on detach");

        let b = ctx.start(ctx.config()).await;
        // Adopted right away, before any desired set is given.
        let adopted = wait_status(&b, "adopted and ready", Duration::from_secs(20), |st| {
            find(st, &id).filter(|s| s.ready).cloned()
        })
        .await;
        assert_eq!(adopted.pid, Some(pid), "same process");
        assert!(adopted.adopted);
        assert_eq!(adopted.ports, before.ports);
        assert_eq!(adopted.generation, before.generation);
        b.set_desired(vec![spec]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let same = b.status().into_iter().find(|s| s.id == id).expect("status");
        assert_eq!(same.pid, Some(pid), "same desired spec: not restarted");

        kill9(pid);
        let restarted = wait_status(&b, "restarted after kill", Duration::from_secs(30), |st| {
            find(st, &id).filter(|s| s.ready && s.pid.is_some() && s.pid != Some(pid)).cloned()
        })
        .await;
        assert!(!restarted.adopted);
        assert_eq!(restarted.restarts, 1);
        assert_eq!(restarted.last_exit.as_ref().and_then(|e| e.signal), Some(9));
        let log = read(&b.log_file(&id));
        assert!(log.contains(&format!("adopted pid {pid}")), "{log}");
    })
    .await;
}

/// 5. StopWorkloads with a workload that ignores SIGTERM and has a child:
/// after the grace period everything in its process group is gone, and its
/// cgroup and record are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_stubborn_process_group() {
    run_test("stubborn", 5, |ctx| async move {
        let cfg = ctx.config();
        let h = ctx.start(cfg.clone()).await;
        let id = InstanceId::new("stubborn", 0);
        let mut spec = sh_spec("stubborn", 0, "trap '' TERM; sleep 1000 & sleep 1000; wait");
        spec.stop_grace = Duration::from_secs(1);
        h.set_desired(vec![spec]);
        let st = wait_status(&h, "running", Duration::from_secs(20), |st| find(st, &id).and_then(|s| s.pid)).await;
        let pgid = st;
        wait_until("sh and both sleeps running", Duration::from_secs(10), || live_group(pgid).len() >= 3).await;
        let t0 = Instant::now();
        h.shutdown(ShutdownMode::StopWorkloads).await;
        let took = t0.elapsed();
        eprintln!("stop took {took:?}");
        assert!(took >= Duration::from_millis(900), "grace was honoured: {took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        let left = live_group(pgid);
        assert!(left.is_empty(), "processes left in group {pgid}: {left:?}");
        let records: Vec<_> = std::fs::read_dir(cfg.state_dir.join("instances")).expect("dir").flatten().collect();
        assert!(records.is_empty(), "records removed: {records:?}");
        let log = read(&cfg.state_dir.join("logs/stubborn-0.log"));
        assert!(log.contains("grace period of 1s over"), "{log}");
        assert!(log.contains("stopped pid"), "{log}");
        // No cgroup directory of this agent is left.
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu"] {
            let leftover = find_dir(Path::new(root), &cfg.cgroup_name, 4);
            assert!(leftover.is_none(), "cgroup left: {leftover:?}");
        }
    })
    .await;
}

fn find_dir(root: &Path, name: &str, depth: u32) -> Option<PathBuf> {
    let rd = std::fs::read_dir(root).ok()?;
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_str() == Some(name) {
            return Some(e.path());
        }
        if depth > 0 {
            if let Some(p) = find_dir(&e.path(), name, depth - 1) {
                return Some(p);
            }
        }
    }
    None
}

/// 6. A workload allocating 200 MB under a 64Mi memory limit is OOM-killed
/// and reported as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_is_reported() {
    run_test("oom", 6, |ctx| async move {
        let h = ctx.start(ctx.config()).await;
        let id = InstanceId::new("hog", 0);
        let mut spec = InstanceSpec::new(
            id.clone(),
            vec![
                python(),
                "-c".into(),
                "import time\nprint('allocating', flush=True)\nx = b'a' * (200 << 20)\nprint('survived', flush=True)\ntime.sleep(30)\n".into(),
            ],
        );
        spec.limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(1000),
        };
        spec.restart = RestartPolicy::Never;
        h.set_desired(vec![spec]);
        let st = wait_status(&h, "exited", Duration::from_secs(60), |st| {
            find(st, &id)
                .filter(|s| s.state == InstanceState::Exited || !s.warnings.is_empty())
                .cloned()
        })
        .await;
        if let Some(w) = st.warnings.iter().find(|w| w.contains("memory")) {
            if ci() {
                panic!("memory cgroup controller unusable under CI: {w}");
            }
            eprintln!("SKIPPING memory limit test: {w}");
            return;
        }
        let exit = st.last_exit.expect("last_exit");
        assert!(exit.oom_killed, "{exit:?}");
        assert_eq!(exit.signal, Some(9), "{exit:?}");
        assert!(
            exit.description.contains("out of memory") && exit.description.contains("64Mi"),
            "{}",
            exit.description
        );
        assert_eq!(st.restarts, 0, "restart policy Never");
        assert_eq!(st.oom_kills, 1, "the OOM kill is counted (holdfast_instance_oom_kills_total)");
        let log = read(&h.log_file(&id));
        assert!(log.contains("allocating") && !log.contains("survived"), "{log}");
    })
    .await;
}

/// 7a. stdout and stderr both land in the instance log file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_captured() {
    run_test("logs", 7, |ctx| async move {
        let h = ctx.start(ctx.config()).await;
        let id = InstanceId::new("chatty", 0);
        let mut spec = sh_spec(
            "chatty",
            0,
            "echo \"to stdout from $HOLDFAST_INSTANCE replica $HOLDFAST_REPLICA\"; echo to-stderr >&2; exec sleep 1000",
        );
        spec.env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        h.set_desired(vec![spec]);
        let log = h.log_file(&id);
        assert_eq!(log, ctx.config().state_dir.join("logs/chatty-0.log"));
        wait_until("both lines logged", Duration::from_secs(10), || {
            let s = read(&log);
            s.contains("to stdout from chatty-0 replica 0") && s.contains("to-stderr")
        })
        .await;
        // The agent writes its marker right after fork, the child may be faster.
        assert!(read(&log).contains("--- holdfast: started pid"));
    })
    .await;
}

/// 7b. Rotation at a small log_max_bytes keeps log_keep old files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_and_keep_n_files() {
    run_test("rotate", 8, |ctx| async move {
        let mut cfg = ctx.config();
        cfg.log_max_bytes = 2000;
        cfg.log_keep = 2;
        let h = ctx.start(cfg).await;
        let id = InstanceId::new("spam", 0);
        h.set_desired(vec![sh_spec(
            "spam",
            0,
            "i=0; while true; do echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); sleep 0.01; done",
        )]);
        let log = h.log_file(&id);
        wait_until("two rotations", Duration::from_secs(20), || rotated(&log, 2).exists()).await;
        // Let a few more rotations happen.
        let first_of_1 = read(&rotated(&log, 1));
        wait_until("another rotation", Duration::from_secs(10), || {
            read(&rotated(&log, 1)) != first_of_1
        })
        .await;
        assert!(!rotated(&log, 3).exists(), "only log_keep=2 rotated files");
        let one = read(&rotated(&log, 1));
        let two = read(&rotated(&log, 2));
        assert!(one.len() > 2000 && two.len() > 2000, "{} {}", one.len(), two.len());
        // .1 is newer than .2.
        let last_line_no = |s: &str| -> u64 {
            s.lines()
                .rev()
                .find_map(|l| l.strip_prefix("line ").and_then(|r| r.split(' ').next()?.parse().ok()))
                .unwrap_or(0)
        };
        assert!(last_line_no(&one) > last_line_no(&two));
        assert!(std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 200_000);
    })
    .await;
}

/// Rolling replace: a generation bump replaces every replica (one at a
/// time), with fresh pids, generation 2, restarts reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_bump_replaces_all_replicas() {
    run_test("rolling", 9, |ctx| async move {
        let h = ctx.start(ctx.config()).await;
        let mk = |r: u32, g: u64| {
            let mut s = sh_spec("svc", r, "exec sleep 1000");
            s.generation = g;
            s.stop_grace = Duration::from_secs(2);
            s
        };
        h.set_desired((0..3).map(|r| mk(r, 1)).collect());
        let old = wait_status(&h, "3 ready", Duration::from_secs(20), |st| {
            (st.len() == 3 && st.iter().all(|s| s.ready)).then(|| st.to_vec())
        })
        .await;
        let mut max_not_ready = 0;
        h.set_desired((0..3).map(|r| mk(r, 2)).collect());
        let new = wait_status(&h, "all on generation 2", Duration::from_secs(30), |st| {
            max_not_ready = max_not_ready.max(st.iter().filter(|s| !s.ready).count());
            (st.len() == 3 && st.iter().all(|s| s.ready && s.generation == 2)).then(|| st.to_vec())
        })
        .await;
        for (o, n) in old.iter().zip(&new) {
            assert_ne!(o.pid, n.pid, "{} replaced", n.id);
            assert!(o.pid.is_some_and(|p| live_group(p).is_empty()), "old process of {} gone", n.id);
            assert_eq!(n.restarts, 0);
        }
        assert!(max_not_ready <= 1, "one at a time, saw {max_not_ready} not ready");
        let log = read(&h.log_file(&InstanceId::new("svc", 1)));
        assert!(log.contains("replacing generation 1 with generation 2"), "{log}");
        assert!(log.contains("(generation 2)"), "{log}");
    })
    .await;
}

/// Not a test by itself: the body of a child "daemon" process used by
/// `crashed_agent_instances_are_adopted_as_non_children`. It starts an
/// agent, waits for its instance to be ready, prints the pid and exits
/// abruptly without any shutdown — like a crash.
#[test]
fn helper_crashing_daemon() {
    let Ok(state_dir) = std::env::var("HOLDFAST_TEST_HELPER_STATE") else {
        return;
    };
    let cgroup = std::env::var("HOLDFAST_TEST_HELPER_CGROUP").expect("cgroup env");
    let base: u16 = std::env::var("HOLDFAST_TEST_HELPER_PORT").expect("port env").parse().expect("port");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let mut cfg = AgentConfig::new(state_dir, cgroup);
        cfg.port_range = base..base + 100;
        let h = Agent::start(cfg).await.expect("helper agent");
        h.set_desired(vec![http_spec("web", 0)]);
        let id = InstanceId::new("web", 0);
        let pid = wait_status(&h, "helper ready", Duration::from_secs(30), |st| {
            find(st, &id).filter(|s| s.ready).and_then(|s| s.pid)
        })
        .await;
        println!("READY pid={pid}");
        std::process::exit(0);
    });
}

/// 4b. The agent process dies without a shutdown (crash): its workload is
/// re-parented away from us. A new agent re-adopts it as a non-child, it
/// gets Ready, and when it is killed the exit is detected (status unknown)
/// and it is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_agent_instances_are_adopted_as_non_children() {
    run_test("crash", 10, |ctx| async move {
        let cfg = ctx.config();
        let (state, cgroup, port) = (cfg.state_dir.clone(), cfg.cgroup_name.clone(), cfg.port_range.start.to_string());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(std::env::current_exe().expect("exe"))
                .args(["helper_crashing_daemon", "--exact", "--nocapture", "--test-threads=1"])
                .env("HOLDFAST_TEST_HELPER_STATE", state)
                .env("HOLDFAST_TEST_HELPER_CGROUP", cgroup)
                .env("HOLDFAST_TEST_HELPER_PORT", port)
                .output()
        })
        .await
        .expect("join")
        .expect("run helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = stdout
            .lines()
            .find_map(|l| l.split("READY pid=").nth(1))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("helper failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        assert!(alive(pid), "workload survives the crashed agent");
        let ppid: u32 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok())
            .expect("ppid");
        assert_ne!(ppid, std::process::id(), "not our child");

        let h = ctx.start(cfg).await;
        let id = InstanceId::new("web", 0);
        let adopted = wait_status(&h, "adopted and ready", Duration::from_secs(20), |st| {
            find(st, &id).filter(|s| s.ready).cloned()
        })
        .await;
        assert_eq!(adopted.pid, Some(pid));
        assert!(adopted.adopted);
        assert_eq!(http_get(adopted.ports["http"], "/").expect("GET").0, 200);
        h.set_desired(vec![http_spec("web", 0)]);

        kill9(pid);
        let restarted = wait_status(&h, "restarted after kill", Duration::from_secs(30), |st| {
            find(st, &id).filter(|s| s.ready && s.pid.is_some() && s.pid != Some(pid)).cloned()
        })
        .await;
        let exit = restarted.last_exit.expect("last_exit");
        assert_eq!((exit.code, exit.signal), (None, None));
        assert!(exit.description.contains("exit status unknown"), "{}", exit.description);
        assert_eq!(restarted.restarts, 1);
        assert!(!restarted.adopted);
    })
    .await;
}

/// A second agent on the same state dir is refused while the first runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dir_is_locked() {
    run_test("lock", 11, |ctx| async move {
        let _a = ctx.start(ctx.config()).await;
        let err = Agent::start(ctx.config()).await.expect_err("second agent refused");
        assert!(err.to_string().contains("in use"), "{err}");
    })
    .await;
}
