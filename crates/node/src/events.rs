//! This node's event journal (wiring only; what an applied command says is decided by
//! `holdfast_state::events`). Every node records the events of the log entries it applies
//! (same key on every node: `r<index>.<n>`) and the leader changes it sees
//! (`leader.<term>`), so the history survives any one node, the leader included;
//! `GET /v1/events` merges every node's journal.
//!
//! The journal is `events.jsonl` in the data directory, one JSON event per line, appended
//! only when something happens (an idle cluster writes nothing) and cut back to its newest
//! [`KEEP`] lines once it passes [`MAX_BYTES`].
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use holdfast_api::types::EventView;
use holdfast_raft::WatchReceiver;
use holdfast_state::events::Level;
use tokio_util::sync::CancellationToken;

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

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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
    let event = EventView {
        key: format!("{}.{at_ms}.{n}", ctx.identity.name),
        at_ms,
        level: self::level(level),
        kind: kind.to_string(),
        subject,
        message,
    };
    let journal = ctx.events.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = journal.append(&[event]) {
            tracing::warn!("cannot write the event journal: {e}");
        }
    });
}

/// Records applied entries' events and leader changes until cancelled.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut applied = ctx.control.subscribe_events();
    // Server metrics change with votes and leadership only (the full metrics change with
    // every replication ack: waking on those would cost an idle leader CPU).
    let mut server = ctx.control.raft.server_metrics();
    let mut last_term_recorded = None;
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = applied.recv() => match r {
                Ok(a) => {
                    for (n, h) in a.events.into_iter().enumerate() {
                        batch.push(EventView {
                            key: format!("r{}.{n}", a.index),
                            at_ms: now_ms(),
                            level: level(h.level),
                            kind: h.kind,
                            subject: h.subject,
                            message: h.message,
                        });
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
