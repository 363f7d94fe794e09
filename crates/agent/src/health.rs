//! Health checking: the pure threshold logic (`HealthTracker`), the probes
//! (HTTP GET written by hand over a tokio `TcpStream`, TCP connect, exec
//! with timeout), and the per-instance probe loop that reports readiness
//! changes to the instance supervisor.
//!
//! Health only drives readiness; an unhealthy instance is NOT restarted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::types::{HealthConfig, HealthProbe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Not yet ready (no enough passes, failures not counted yet).
    Starting,
    Ready,
    Unready,
}

/// Consecutive pass/fail counting.
#[derive(Debug, Clone)]
pub(crate) struct HealthTracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    start_grace: Duration,
    passes: u32,
    fails: u32,
    state: Readiness,
}

impl HealthTracker {
    pub(crate) fn new(cfg: &HealthConfig) -> Self {
        Self {
            healthy_threshold: cfg.healthy_threshold.max(1),
            unhealthy_threshold: cfg.unhealthy_threshold.max(1),
            start_grace: cfg.start_grace,
            passes: 0,
            fails: 0,
            state: Readiness::Starting,
        }
    }

    /// Feeds one probe result; `since_start` is the process uptime.
    pub(crate) fn observe(&mut self, pass: bool, since_start: Duration) -> Readiness {
        if pass {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if self.passes >= self.healthy_threshold {
                self.state = Readiness::Ready;
            }
        } else {
            self.passes = 0;
            if since_start >= self.start_grace {
                self.fails = self.fails.saturating_add(1);
            }
            if self.fails >= self.unhealthy_threshold {
                self.state = Readiness::Unready;
            }
        }
        self.state
    }
}

/// What probes need from the instance.
#[derive(Debug, Clone)]
pub(crate) struct ProbeCtx {
    pub ports: BTreeMap<String, u16>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
}

impl ProbeCtx {
    fn port(&self, name: &str) -> Result<u16, String> {
        if let Some(p) = self.ports.get(name) {
            return Ok(*p);
        }
        name.parse().map_err(|_| format!("health check port {name:?} is not a port of the instance"))
    }
}

/// Runs one probe with `timeout`. `Err` carries a human readable reason.
pub(crate) async fn probe(check: &HealthProbe, ctx: &ProbeCtx, timeout: Duration) -> Result<(), String> {
    match check {
        HealthProbe::Http { port, path } => {
            let port = ctx.port(port)?;
            match tokio::time::timeout(timeout, http_get(port, path)).await {
                Ok(r) => r,
                Err(_) => Err(format!("GET http://127.0.0.1:{port}{path}: timed out after {timeout:?}")),
            }
        }
        HealthProbe::Tcp { port } => {
            let port = ctx.port(port)?;
            match tokio::time::timeout(timeout, TcpStream::connect(("127.0.0.1", port))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect 127.0.0.1:{port}: {e}")),
                Err(_) => Err(format!("connect 127.0.0.1:{port}: timed out after {timeout:?}")),
            }
        }
        HealthProbe::Exec { argv } => exec(argv, ctx, timeout).await,
    }
}

async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("GET {url}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: holdfast-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| format!("GET {url}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk).await.map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let status_line = line.lines().next().unwrap_or("").trim();
    let code: u16 = status_line
        .strip_prefix("HTTP/")
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP response: {status_line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url}: {status_line}"))
    }
}

async fn exec(argv: &[String], ctx: &ProbeCtx, timeout: Duration) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("exec health check has an empty argv".to_string());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&ctx.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &ctx.workdir {
        cmd.current_dir(d);
    }
    let child = cmd.spawn().map_err(|e| format!("exec {program}: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if text.is_empty() {
                text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            if text.len() > 200 {
                let mut cut = text.len() - 200;
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                text = format!("...{}", &text[cut..]);
            }
            let status = match (out.status.code(), std::os::unix::process::ExitStatusExt::signal(&out.status)) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("killed by {}", crate::proc::signal_name(s)),
                _ => "failed".to_string(),
            };
            if text.is_empty() {
                Err(format!("exec {program}: {status}"))
            } else {
                Err(format!("exec {program}: {status}: {text}"))
            }
        }
        Ok(Err(e)) => Err(format!("exec {program}: {e}")),
        Err(_) => {
            // The child (dropped with the future) is killed by kill_on_drop;
            // also kill anything it started in its process group.
            if let Some(pid) = pid {
                let _ = crate::proc::signal_group(pid, 9);
            }
            Err(format!("exec {program}: timed out after {timeout:?}"))
        }
    }
}

/// A change worth telling the supervisor about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthUpdate {
    pub readiness: Readiness,
    pub error: Option<String>,
}

/// Probes forever (until the task is aborted), sending an update whenever
/// readiness or the error changes. `started` is when the process started.
pub(crate) async fn run(cfg: HealthConfig, ctx: ProbeCtx, started: Instant, tx: mpsc::Sender<HealthUpdate>) {
    let mut tracker = HealthTracker::new(&cfg);
    let interval = cfg.interval.max(Duration::from_millis(50));
    let timeout = cfg.timeout.max(Duration::from_millis(10));
    let mut last: Option<HealthUpdate> = None;
    loop {
        let next = Instant::now() + interval;
        let res = probe(&cfg.check, &ctx, timeout).await;
        let readiness = tracker.observe(res.is_ok(), started.elapsed());
        let update = HealthUpdate { readiness, error: res.err() };
        if last.as_ref() != Some(&update) {
            if tx.send(update.clone()).await.is_err() {
                return;
            }
            last = Some(update);
        }
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Readiness::*;

    fn cfg(healthy: u32, unhealthy: u32, grace_ms: u64) -> HealthConfig {
        let mut c = HealthConfig::new(HealthProbe::Tcp { port: "x".into() });
        c.healthy_threshold = healthy;
        c.unhealthy_threshold = unhealthy;
        c.start_grace = Duration::from_millis(grace_ms);
        c
    }

    #[test]
    fn thresholds() {
        let mut t = HealthTracker::new(&cfg(2, 3, 0));
        let s = Duration::from_secs(1);
        assert_eq!(t.observe(true, s), Starting);
        assert_eq!(t.observe(true, s), Ready);
        assert_eq!(t.observe(false, s), Ready);
        assert_eq!(t.observe(false, s), Ready);
        assert_eq!(t.observe(true, s), Ready, "a pass resets the failure count");
        assert_eq!(t.observe(false, s), Ready);
        assert_eq!(t.observe(false, s), Ready);
        assert_eq!(t.observe(false, s), Unready);
        assert_eq!(t.observe(true, s), Unready);
        assert_eq!(t.observe(true, s), Ready);
    }

    #[test]
    fn failures_in_start_grace_do_not_count() {
        let mut t = HealthTracker::new(&cfg(1, 1, 5000));
        for ms in [0, 1000, 4999] {
            assert_eq!(t.observe(false, Duration::from_millis(ms)), Starting);
        }
        assert_eq!(t.observe(false, Duration::from_millis(5000)), Unready);
        assert_eq!(t.observe(true, Duration::from_millis(6000)), Ready);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut t = HealthTracker::new(&cfg(0, 0, 0));
        assert_eq!(t.observe(true, Duration::ZERO), Ready);
        assert_eq!(t.observe(false, Duration::ZERO), Unready);
    }

    fn ctx(ports: &[(&str, u16)]) -> ProbeCtx {
        ProbeCtx {
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
            workdir: None,
        }
    }

    async fn serve_once(status: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probe_status_codes() {
        let t = Duration::from_secs(2);
        let ok = serve_once("200 OK").await;
        let redirect = serve_once("302 Found").await;
        let bad = serve_once("503 Service Unavailable").await;
        let check = |p: &str| HealthProbe::Http { port: p.into(), path: "/healthz".into() };
        let c = ctx(&[("ok", ok), ("redirect", redirect), ("bad", bad)]);
        assert_eq!(probe(&check("ok"), &c, t).await, Ok(()));
        assert_eq!(probe(&check("redirect"), &c, t).await, Ok(()));
        let err = probe(&check("bad"), &c, t).await.expect_err("503 fails");
        assert!(err.contains("503"), "{err}");
        let err = probe(&check("nope"), &c, t).await.expect_err("unknown port");
        assert!(err.contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn tcp_probe() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let c = ctx(&[("p", port)]);
        let t = Duration::from_secs(2);
        assert_eq!(probe(&HealthProbe::Tcp { port: "p".into() }, &c, t).await, Ok(()));
        drop(l);
        assert!(probe(&HealthProbe::Tcp { port: "p".into() }, &c, t).await.is_err());
    }

    #[tokio::test]
    async fn exec_probe_pass_fail_timeout() {
        let c = ctx(&[]);
        let t = Duration::from_millis(500);
        let sh = |s: &str| HealthProbe::Exec { argv: vec!["sh".into(), "-c".into(), s.into()] };
        assert_eq!(probe(&sh("exit 0"), &c, t).await, Ok(()));
        let err = probe(&sh("echo boom >&2; exit 2"), &c, t).await.expect_err("fails");
        assert!(err.contains("exit code 2") && err.contains("boom"), "{err}");
        let started = std::time::Instant::now();
        let err = probe(&sh("sleep 30"), &c, t).await.expect_err("times out");
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
