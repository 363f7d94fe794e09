//! This node's event journal (wiring only; what an applied command says is decided by
//! `holdfast_state::events`). Every node records the events of the log entries it applies
//! (same key on every node: `r<index>.<n>`) and the leader changes it sees
//! (`leader.<term>`), so the history survives any one node, the leader included;
//! `GET /v1/events` merges every node's journal. What only this node sees is recorded
//! here too: its instances started, exited (OOM kills with the limit), crash-looping,
//! failing health checks ([`instance_events`]), and its database members fenced or
//! holding commits (`record_local`, from the member runner).
//!
//! The journal is `events.jsonl` in the data directory, one JSON event per line, appended
//! only when something happens (an idle cluster writes nothing) and cut back to its newest
//! [`KEEP`] lines once it passes [`MAX_BYTES`].
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use std::collections::BTreeMap;

use holdfast_agent::{InstanceId, InstanceState, InstanceStatus};
use holdfast_api::types::EventView;
use holdfast_raft::WatchReceiver;
use holdfast_state::events::{Happened, Level};
use tokio_util::sync::CancellationToken;

use crate::peer::now_ms;
use crate::workers::Pass;
use crate::NodeContext;

/// The journal is cut back when it grows past this many bytes...
pub const MAX_BYTES: u64 = 1 << 20;
/// ... to its newest this many events.
pub const KEEP: usize = 2000;
const WORKER: &str = "events";

/// One node's journal file (cheap to clone; appends are serialised).
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    lock: Arc<std::sync::Mutex<()>>,
}

impl Journal {
    pub fn new(data_dir: &std::path::Path) -> Journal {
        Journal { path: data_dir.join("events.jsonl"), lock: Arc::new(std::sync::Mutex::new(())) }
    }

    /// Appends `events` (one line each); cuts the file back when it is too long.
    pub fn append(&self, events: &[EventView]) -> std::io::Result<()> {
        let _guard = self.lock.lock().map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
        // A line cut short by a crash: start on a new line (the torn one is skipped).
        let len = f.metadata()?.len();
        let mut last = [0u8; 1];
        if len > 0 && std::os::unix::fs::FileExt::read_at(&f, &mut last, len - 1)? == 1 && last[0] != b'\n' {
            text.insert(0, '\n');
        }
        f.write_all(text.as_bytes())?;
        if f.metadata()?.len() > MAX_BYTES {
            drop(f);
            let all = std::fs::read_to_string(&self.path)?;
            let lines: Vec<&str> = all.lines().collect();
            let keep = lines[lines.len().saturating_sub(KEEP)..].join("\n") + "\n";
            let tmp = self.path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, keep)?;
            std::fs::rename(&tmp, &self.path)?;
        }
        Ok(())
    }

    /// The events recorded at or after `since_ms`, oldest first (a line that does not
    /// parse, e.g. one cut short by a crash, is skipped; a key seen twice counts once).
    pub fn read(&self, since_ms: u64) -> Vec<EventView> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        text.lines()
            .filter_map(|l| serde_json::from_str::<EventView>(l).ok())
            .filter(|e| e.at_ms >= since_ms && seen.insert(e.key.clone()))
            .collect()
    }
}

/// Merges several nodes' events: one per key (the earliest record of it), oldest first,
/// at most the newest `limit`.
pub fn merge(lists: Vec<Vec<EventView>>, limit: usize) -> Vec<EventView> {
    let mut by_key: std::collections::HashMap<String, EventView> = std::collections::HashMap::new();
    for e in lists.into_iter().flatten() {
        match by_key.get(&e.key) {
            Some(have) if have.at_ms <= e.at_ms => {}
            _ => {
                by_key.insert(e.key.clone(), e);
            }
        }
    }
    let mut all: Vec<EventView> = by_key.into_values().collect();
    all.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.key.cmp(&b.key)));
    let skip = all.len().saturating_sub(limit);
    all.split_off(skip)
}

fn level(l: Level) -> String {
    match l {
        Level::Info => "info".into(),
        Level::Warn => "warn".into(),
    }
}

/// Records an event only this node sees (e.g. a database member fenced here), keyed by
/// this node's name, the time and a counter.
pub fn record_local(ctx: &NodeContext, level: Level, kind: &str, subject: String, message: String) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let at_ms = now_ms();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let event = view(
        format!("{}.{at_ms}.{n}", ctx.identity.name),
        at_ms,
        Happened { level, kind: kind.to_string(), subject, message },
    );
    let journal = ctx.events.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = journal.append(&[event]) {
            tracing::warn!("cannot write the event journal: {e}");
        }
    });
}

/// What changed in this node's instances between two looks at the agent, in words:
/// started (not re-adopted after a daemon restart), exited (OOM-killed says so, with the
/// limit; a stop asked for is `instance-stopped`), crash-looping, failing its health
/// check and passing again. Pure.
pub fn instance_events(
    before: &BTreeMap<InstanceId, InstanceStatus>,
    now: &[InstanceStatus],
    node: &str,
) -> Vec<Happened> {
    let mut out = Vec::new();
    for s in now {
        let p = before.get(&s.id);
        let (subject, name) = match crate::databases::member_of(&s.id) {
            Some((db, engine)) => (format!("database {db}"), format!("{db} member {} ({engine})", s.id.replica)),
            None => (format!("service {}", s.id.service), s.id.to_string()),
        };
        let event = |level, kind: &str, message: String| Happened {
            level,
            kind: kind.to_string(),
            subject: subject.clone(),
            message,
        };
        let new_run = s.started_at_ms.is_some() && p.is_none_or(|p| p.started_at_ms != s.started_at_ms);
        if let Some(e) = &s.last_exit {
            if p.is_none_or(|p| p.last_exit.as_ref().map(|x| x.at_ms) != Some(e.at_ms)) {
                let stopping = p.is_some_and(|p| p.state == InstanceState::Stopping);
                out.push(if e.oom_killed {
                    event(
                        Level::Warn,
                        "oom-killed",
                        format!("{name} on {node} was killed for running out of memory: {}", e.description),
                    )
                } else if stopping {
                    event(Level::Info, "instance-stopped", format!("{name} on {node} stopped: {}", e.description))
                } else {
                    event(Level::Warn, "instance-exited", format!("{name} on {node} exited: {}", e.description))
                });
            }
        }
        if new_run && !s.adopted {
            let pid = s.pid.map_or(String::new(), |p| format!("pid {p}, "));
            out.push(event(
                Level::Info,
                "instance-started",
                format!("{name} started on {node} ({pid}generation {})", s.generation),
            ));
        }
        let was = p.map(|p| p.state);
        if s.state == InstanceState::CrashLoop && was != Some(InstanceState::CrashLoop) {
            let why = s.last_exit.as_ref().map_or(String::new(), |e| format!(": {}", e.description));
            out.push(event(
                Level::Warn,
                "crash-loop",
                format!("{name} on {node} is crash-looping ({} restarts){why}", s.restarts),
            ));
        }
        if s.state == InstanceState::Unready && was == Some(InstanceState::Ready) {
            let why = s.last_health_error.as_deref().unwrap_or("no reason given");
            out.push(event(Level::Warn, "unhealthy", format!("{name} on {node} fails its health check: {why}")));
        }
        if s.state == InstanceState::Ready && was == Some(InstanceState::Unready) {
            out.push(event(Level::Info, "healthy", format!("{name} on {node} passes its health check again")));
        }
    }
    out
}

fn view(key: String, at_ms: u64, h: Happened) -> EventView {
    EventView { key, at_ms, level: level(h.level), kind: h.kind, subject: h.subject, message: h.message }
}

/// Records applied entries' events and leader changes until cancelled.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut applied = ctx.control.subscribe_events();
    // Server metrics change with votes and leadership only (the full metrics change with
    // every replication ack: waking on those would cost an idle leader CPU).
    let mut server = ctx.control.raft.server_metrics();
    let mut last_term_recorded = None;
    // This node's instances as last seen (re-adopted ones are not news).
    let mut agent_version = ctx.agent.subscribe();
    let mut instances: BTreeMap<InstanceId, InstanceStatus> =
        ctx.agent.status().into_iter().map(|s| (s.id.clone(), s)).collect();
    let mut seq: u64 = 0;
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = agent_version.changed() => {
                if r.is_err() {
                    break;
                }
                let now = ctx.agent.status();
                let at_ms = now_ms();
                for h in instance_events(&instances, &now, &ctx.identity.name) {
                    seq += 1;
                    batch.push(view(format!("{}.{at_ms}.i{seq}", ctx.identity.name), at_ms, h));
                }
                instances = now.into_iter().map(|s| (s.id.clone(), s)).collect();
            }
            r = applied.recv() => match r {
                Ok(a) => {
                    let at_ms = now_ms();
                    for (n, h) in a.events.into_iter().enumerate() {
                        batch.push(view(format!("r{}.{n}", a.index), at_ms, h));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the event journal fell behind the applied log; {missed} entries' events are not recorded here");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            r = server.changed() => {
                if r.is_err() {
                    break;
                }
                let leader = server.borrow_watched().current_leader;
                let term = ctx.control.raft.metrics().borrow_watched().current_term;
                if let Some(leader) = leader.filter(|_| last_term_recorded != Some(term)) {
                    last_term_recorded = Some(term);
                    // A brand-new cluster's first leader has no node record yet.
                    let name = if leader == ctx.identity.node_id {
                        ctx.identity.name.clone()
                    } else {
                        ctx.control.state().node_name(leader)
                    };
                    batch.push(EventView {
                        key: format!("leader.{term}"),
                        at_ms: now_ms(),
                        level: "info".into(),
                        kind: "leader".into(),
                        subject: "control plane".into(),
                        message: format!("{name} is the control plane's leader (term {term})"),
                    });
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let journal = ctx.events.clone();
        let written = tokio::task::spawn_blocking(move || journal.append(&batch)).await;
        let pass = match written {
            Ok(Ok(())) => Pass::Steady,
            Ok(Err(e)) => Pass::Error(format!("cannot write the event journal: {e}")),
            Err(e) => Pass::Error(format!("the event journal writer failed: {e}")),
        };
        ctx.workers.report(WORKER, pass);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, at_ms: u64) -> EventView {
        EventView {
            key: key.into(),
            at_ms,
            level: "info".into(),
            kind: "k".into(),
            subject: "s".into(),
            message: key.into(),
        }
    }

    fn inst(service: &str, state: InstanceState, started: Option<u64>, exit: Option<(u64, bool)>) -> InstanceStatus {
        InstanceStatus {
            id: InstanceId::new(service, 0),
            generation: 3,
            pid: started.map(|_| 42),
            state,
            ready: state == InstanceState::Ready,
            restarts: 5,
            oom_kills: 0,
            ports: Default::default(),
            started_at_ms: started,
            last_exit: exit.map(|(at_ms, oom_killed)| holdfast_agent::ExitInfo {
                code: None,
                signal: Some(9),
                oom_killed,
                at_ms,
                description: if oom_killed {
                    "killed by SIGKILL (out of memory: limit 64Mi)".into()
                } else {
                    "exit code 1".into()
                },
            }),
            last_health_error: (state == InstanceState::Unready).then(|| "HTTP 500".to_string()),
            adopted: false,
            memory_bytes: None,
            cpu_usage_ns: None,
            warnings: Vec::new(),
        }
    }

    fn said(before: Vec<InstanceStatus>, now: Vec<InstanceStatus>) -> Vec<String> {
        let before = before.into_iter().map(|s| (s.id.clone(), s)).collect();
        instance_events(&before, &now, "n1")
            .into_iter()
            .map(|h| format!("{:?} {} {}: {}", h.level, h.kind, h.subject, h.message))
            .collect()
    }

    #[test]
    fn instances_starting_exiting_crash_looping_and_flapping_say_so_once() {
        use InstanceState::*;
        let ready = inst("web", Ready, Some(1000), None);
        assert_eq!(
            said(vec![], vec![ready.clone()]),
            ["Info instance-started service web: web-0 started on n1 (pid 42, generation 3)"]
        );
        assert_eq!(said(vec![ready.clone()], vec![ready.clone()]), Vec::<String>::new(), "nothing changed");
        let adopted = InstanceStatus { adopted: true, ..ready.clone() };
        assert_eq!(said(vec![], vec![adopted]), Vec::<String>::new(), "re-adopted after a daemon restart");
        let oom = inst("web", Backoff, None, Some((2000, true)));
        assert_eq!(
            said(vec![ready.clone()], vec![oom.clone()]),
            ["Warn oom-killed service web: web-0 on n1 was killed for running out of memory: killed by SIGKILL (out of memory: limit 64Mi)"]
        );
        let looping = inst("web", CrashLoop, None, Some((3000, false)));
        assert_eq!(
            said(vec![oom], vec![looping]),
            [
                "Warn instance-exited service web: web-0 on n1 exited: exit code 1",
                "Warn crash-loop service web: web-0 on n1 is crash-looping (5 restarts): exit code 1"
            ]
        );
        let unready = inst("web", Unready, Some(1000), None);
        assert_eq!(
            said(vec![ready.clone()], vec![unready.clone()]),
            ["Warn unhealthy service web: web-0 on n1 fails its health check: HTTP 500"]
        );
        assert_eq!(
            said(vec![unready], vec![ready.clone()]),
            ["Info healthy service web: web-0 on n1 passes its health check again"]
        );
        let stopping = inst("web", Stopping, Some(1000), None);
        let stopped = inst("web", Exited, None, Some((4000, false)));
        assert_eq!(
            said(vec![stopping], vec![stopped]),
            ["Info instance-stopped service web: web-0 on n1 stopped: exit code 1"]
        );
        let pg = inst("pg:db", Ready, Some(5000), None);
        assert_eq!(
            said(vec![], vec![pg]),
            ["Info instance-started database db: db member 0 (postgres) started on n1 (pid 42, generation 3)"]
        );
    }

    #[test]
    fn merging_keeps_one_per_key_at_its_earliest_and_the_newest_up_to_the_limit() {
        let a = vec![ev("r1.0", 100), ev("r2.0", 200), ev("leader.3", 250)];
        let b = vec![ev("r1.0", 90), ev("leader.3", 260), ev("r3.0", 300)];
        let keys = |v: &[EventView]| v.iter().map(|e| (e.key.clone(), e.at_ms)).collect::<Vec<_>>();
        assert_eq!(
            keys(&merge(vec![a.clone(), b.clone()], 10)),
            [("r1.0".into(), 90), ("r2.0".into(), 200), ("leader.3".into(), 250), ("r3.0".into(), 300)]
        );
        assert_eq!(keys(&merge(vec![a, b], 2)), [("leader.3".into(), 250), ("r3.0".into(), 300)]);
    }

    #[test]
    fn the_journal_appends_reads_since_and_is_cut_back_when_long() {
        let dir = std::env::temp_dir().join(format!("holdfast-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let j = Journal::new(&dir);
        j.append(&[ev("r1.0", 100), ev("r2.0", 200)]).expect("append");
        j.append(&[ev("r2.0", 210)]).expect("append a key again");
        assert_eq!(j.read(150).iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["r2.0"]);
        // A line cut short by a crash is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("events.jsonl"))
            .and_then(|mut f| f.write_all(b"{\"key\":\"r9"))
            .expect("torn line");
        j.append(&[ev("r3.0", 300)]).expect("append after a torn line");
        assert_eq!(j.read(0).iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["r1.0", "r2.0", "r3.0"]);
        // Past MAX_BYTES it keeps only the newest KEEP events.
        let many: Vec<EventView> = (0..20_000u64).map(|i| ev(&format!("r{}.0", 100 + i), 1000 + i)).collect();
        j.append(&many).expect("append many");
        let kept = j.read(0);
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept.last().map(|e| e.at_ms), Some(1000 + 19_999));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
