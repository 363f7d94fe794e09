//! PostgreSQL members (the runner's PostgreSQL half): every pass looks at the member
//! (its directory marker, the agent's instance, a probe over the admin socket), asks the
//! pure [`holdfast_postgres::member::next`] what to do, and does it: `initdb`,
//! `pg_basebackup` from the `-rw` address, start (as an agent instance, run as the
//! member's OS user), promote, stop (fencing), `pg_rewind`.
//!
//! Fencing: a primary holds every commit when the lease lapses (the synchronous standby
//! list names no member; the real list is back, and the held commits complete, the
//! moment it is renewed); when it is gone, or while a switchover fences it, postgres is
//! stopped.
use std::collections::BTreeSet;
use std::time::Duration;

use holdfast_agent::InstanceSpec;
use holdfast_api::peer::{MemberRole, MemberStatus};
use holdfast_postgres::admin::{Admin, Probe};
use holdfast_postgres::conf::{self, MemberConf, Upstream};
use holdfast_postgres::datadir::{self, Marker, MemberDir};
use holdfast_postgres::install::{self, Binaries, OsUser};
use holdfast_postgres::member::{self, Have, Step, Want};
use holdfast_spec::SyncLoss;
use holdfast_state::events::Level;
use holdfast_state::model::{DatabaseRecord, SwitchoverPhase};

use super::{instance_id, status, Key};
use crate::lease::Standing;
use crate::NodeContext;

/// What a member task remembers between passes.
#[derive(Default)]
pub(super) struct Local {
    /// (term, generation, users) the primary was last configured for.
    configured: Option<(u64, u64, Vec<String>)>,
    rewind_failures: u32,
    /// The sync list last written, to log changes once.
    sync_written: Option<String>,
    /// The agent's restart count of the instance when postgres last answered: two more
    /// restarts without an answer in between mark a replica as diverged.
    restarts_answering: u32,
    /// Diverged from the primary's WAL: rewind before it runs again.
    diverged: bool,
    /// Divergences found since postgres last answered: after a rewind that did not help,
    /// the member is cloned afresh.
    divergences: u32,
    /// Since when this replica answers without streaming while its primary is up.
    not_streaming_since: Option<std::time::Instant>,
    /// The primary holds its commits (the lease lapsed): since when.
    holding_since: Option<std::time::Instant>,
    /// Holding the commits failed (no reload): the primary is stopped instead.
    hold_failed: bool,
    /// The admin connection of the last pass, and the port it reached.
    admin: Option<(u16, Admin)>,
    /// The database generation whose configuration was loaded in an earlier pass (written
    /// and reloaded, or unchanged while running): reported with the next pass's probe, so
    /// its `pending_restart` speaks of that generation.
    loaded_generation: Option<u64>,
    /// A primary: the members of the sync list it runs with, loaded in an earlier pass
    /// (reported with the next pass's probe, so the LSN it reports is from after it took
    /// effect); `None` while none or the commit hold is loaded.
    sync_applied: Option<Vec<u32>>,
    /// The step of the last pass (a change to a notable one is an event).
    last_step: Option<Step>,
    /// The binaries found for the spec's `bin_dir` (looked up once, not every pass: it
    /// runs `postgres --version`).
    bins: Option<(Option<std::path::PathBuf>, Binaries)>,
}

/// How long a replica may answer without streaming from a primary that is up before it
/// is taken as unable to follow it (diverged) and rewound.
const NOT_STREAMING_FOR: Duration = Duration::from_secs(15);
/// The same for a replica that answers on an older timeline than its primary's.
const BEHIND_TIMELINE_FOR: Duration = Duration::from_secs(3);
/// The same for a replica that runs but does not answer at all (recovery never reaches
/// a consistent state: WAL it needs is gone from the primary).
const NOT_ANSWERING_FOR: Duration = Duration::from_secs(30);

impl Local {
    /// New data (initdb or a fresh clone): nothing diverged, nothing to rewind.
    fn fresh_data(&mut self) {
        self.rewind_failures = 0;
        self.diverged = false;
        self.divergences = 0;
        self.not_streaming_since = None;
        self.restarts_answering = u32::MAX; // re-based at the next look
    }
}

/// Restarts without postgres ever answering after which a replica is rewound.
const DIVERGED_AFTER_RESTARTS: u32 = 2;

/// Everything a pass needs about the member, gathered before deciding.
struct Member<'a> {
    key: &'a Key,
    rec: &'a DatabaseRecord,
    bins: Binaries,
    user: OsUser,
    dir: MemberDir,
    port: Option<u16>,
    running: bool,
}

/// One look at the member; `true` beside the status when the next pass should follow at
/// once (the step changed what the member is).
pub(super) async fn pass(ctx: &NodeContext, key: &Key, local: &mut Local) -> (MemberStatus, bool) {
    let state = ctx.control.state();
    let Some(rec) = state.desired.databases.get(&key.0) else {
        return (status(key, 0, MemberRole::Stopped, "no longer in the state"), false);
    };
    let failed = |detail: String| (status(key, rec.term, MemberRole::Failed, detail), false);
    let bins =
        match super::cached(&mut local.bins, &rec.spec.bin_dir, || install::discover(rec.spec.bin_dir.as_deref())) {
            Ok(b) => b,
            Err(e) => return failed(e.to_string()),
        };
    let user = match install::member_user() {
        Ok(u) => u,
        Err(e) => return failed(e.to_string()),
    };
    let dir = MemberDir::new(super::member_root(ctx, key));
    if let Err(e) = super::reachable_for(ctx, &dir.root, &user, "PostgreSQL") {
        return failed(e);
    }
    if let Err(e) = dir.create(&user) {
        return failed(e.to_string());
    }
    let id = instance_id(holdfast_state::DbEngine::Postgres, &key.0, key.1);
    let (inst, running, port) = super::member_instance(ctx, &id, "pg");
    // One admin connection per member, kept across passes while it works: a new one per
    // pass costs a SCRAM handshake each time, which made a pass slow enough to delay
    // fencing and switchovers by most of a second.
    // The list and the configuration loaded before this pass's probe (see `Local`).
    let sync_applied = local.sync_applied.clone();
    let loaded_generation = local.loaded_generation;
    let conn = match (running, port, local.admin.take()) {
        (true, Some(p), Some((q, a))) if q == p && !a.is_closed() => Some((q, a)),
        (true, Some(p), _) => Admin::connect(&dir.socket(), p, &rec.credentials.superuser, Duration::from_secs(1))
            .await
            .ok()
            .map(|a| (p, a)),
        _ => None,
    };
    let admin = conn.as_ref().map(|(_, a)| a);
    let probe = match admin {
        Some(a) => a.probe().await.ok(),
        None => None,
    };
    let marker = dir.marker();
    let restarts = inst.as_ref().map_or(0, |s| s.restarts);
    if probe.is_some() || restarts < local.restarts_answering {
        local.restarts_answering = restarts;
    }
    // The primary's timeline as this node hears it, when this member is a running
    // replica and the primary answers: a replica still on an older timeline streams only
    // now and then (it reaches the end of its own timeline and cannot switch: its WAL went
    // past the fork) and must not count as following.
    let replica = running && marker.ready && marker.primary_term == 0 && rec.primary != key.1;
    let primary_tli = if replica { super::current_primary(ctx, rec, &key.0).await.map(|m| m.timeline) } else { None };
    let follows = |p: &Probe| p.streaming && primary_tli.is_none_or(|t| p.timeline >= t);
    if probe.is_some_and(|p| follows(&p) || !p.in_recovery) {
        local.divergences = 0; // it follows (or leads): earlier rewinds did their job
    }
    // A replica cannot follow the primary when postgres keeps failing to start, or when it
    // runs without streaming (answering or not) while the primary is up and answering (as
    // this node hears it): it is rewound, and cloned afresh when a rewind did not help.
    let crash_looping = probe.is_none()
        && marker.ready
        && marker.primary_term == 0
        && restarts >= local.restarts_answering.saturating_add(DIVERGED_AFTER_RESTARTS);
    if crash_looping {
        local.restarts_answering = restarts;
    }
    // Behind the primary's timeline is the clearest sign (a healthy replica takes the new
    // timeline within a second of a promotion), and a synchronous standby stuck there
    // holds commits up: it is rewound soonest.
    let behind = probe.is_some_and(|p| p.in_recovery && primary_tli.is_some_and(|t| p.timeline < t));
    let stuck_for = if behind {
        BEHIND_TIMELINE_FOR
    } else if probe.is_some() {
        NOT_STREAMING_FOR
    } else {
        NOT_ANSWERING_FOR
    };
    let idle = replica && probe.is_none_or(|p| p.in_recovery && !follows(&p));
    let stuck = if idle && primary_tli.is_some() {
        let since = *local.not_streaming_since.get_or_insert_with(std::time::Instant::now);
        since.elapsed() >= stuck_for
    } else {
        local.not_streaming_since = None;
        false
    };
    if (crash_looping || stuck) && !local.diverged {
        local.divergences += 1;
        local.not_streaming_since = None;
        let why = if crash_looping {
            "keeps failing to start as a replica (see its log)"
        } else {
            "runs without streaming from the primary"
        };
        tracing::warn!(database = %key.0, member = key.1, divergences = local.divergences, "postgres {why}: its WAL may have gone past the current timeline's fork; {}", if local.divergences >= 2 { "a rewind did not help: cloning the primary afresh" } else { "rewinding it onto the primary" });
        local.diverged = true;
    }
    let marker = dir.marker();
    let lease = Duration::from_millis(state.settings.db_lease_ms);
    let switchover_fence =
        rec.primary == key.1 && rec.switchover.as_ref().is_some_and(|s| s.phase == SwitchoverPhase::Fencing);
    let standing = ctx.lease.standing(lease, state.revision);
    if standing == Standing::Held {
        local.hold_failed = false;
    }
    let want = Want {
        term: rec.term,
        primary: rec.primary == key.1,
        fenced: standing == Standing::Gone || switchover_fence || local.hold_failed,
        hold: standing == Standing::Lapsed,
        restart: rec.restart == Some(key.1),
    };
    let have =
        Have { marker: (&marker).into(), data_exists: dir.data().exists(), running, probe, diverged: local.diverged };
    let step = member::next(want, have);
    if let Some((level, kind, text)) = notable(&step, local.last_step.as_ref()) {
        crate::events::record_local(
            ctx,
            level,
            kind,
            format!("database {}", key.0),
            format!("{}: member {} on {}: {text}", key.0, key.1, ctx.identity.name),
        );
    }
    local.last_step = Some(step.clone());
    let m = Member { key, rec, bins, user, dir, port, running };
    let outcome = execute(&m, &step, admin, probe, local).await;
    let keep_running = match &step {
        Step::Run { .. } | Step::Promote { .. } | Step::Hold => true,
        Step::Wait { .. } => running && !want.fenced,
        Step::Init | Step::Clone | Step::Stop { .. } | Step::Rewind => false,
    };
    // A step that failed before anything ran leaves the instance as it was.
    let keep_running = keep_running && (outcome.is_ok() || running);
    if ctx.lease.age(state.revision).is_some() || keep_running {
        // Before the first contact with the leader a running (re-adopted) postgres is
        // left to the agent as it is: the fencing verdict needs the lease.
        ctx.dbs.set_instance(key, keep_running.then(|| instance_spec(&m)));
    }
    let marker = m.dir.marker();
    let again = outcome.is_ok() && matches!(step, Step::Promote { .. });
    let mut st = match &outcome {
        Err(e) => failed(format!("{}: {e}", describe(&step))).0,
        Ok(detail) => {
            let role = match (running, probe) {
                (true, Some(p)) if p.in_recovery => MemberRole::Replica,
                (true, Some(_)) => MemberRole::Primary,
                (true, None) => MemberRole::Starting,
                (false, _) if want.fenced && marker.primary_term > 0 => MemberRole::Fenced,
                (false, _) if matches!(step, Step::Stop { .. }) => MemberRole::Fenced,
                (false, _) if matches!(step, Step::Wait { .. }) => MemberRole::Stopped,
                (false, _) => MemberRole::Starting,
            };
            status(key, rec.term, role, detail.clone())
        }
    };
    if let Some(p) = probe {
        st.timeline = p.timeline;
        st.lsn = p.lsn;
        st.replay_lsn = p.replay_lsn;
        st.answering = true;
        st.streaming = p.streaming;
        st.pending_restart = p.pending_restart;
        st.config_generation = loaded_generation;
        if !p.in_recovery {
            st.term = marker.primary_term;
            st.sync_applied = sync_applied;
        }
    }
    st.port = if running { port } else { None };
    if !running && marker.primary_term > 0 && matches!(st.role, MemberRole::Fenced | MemberRole::Stopped) {
        // A stopped primary: where its WAL ends, once it shut down cleanly, so the
        // leader can tell when a switchover target holds all of it.
        st.term = marker.primary_term;
        if let Ok(cd) = datadir::control_data(&m.bins, &m.dir, &m.user).await {
            if cd.clean_primary_shutdown() {
                st.lsn = cd.checkpoint_lsn;
            }
        }
    }
    // While postgres is being stopped, look again soon (a switchover waits for it);
    // while commits are held, too: they are released the moment the lease is back.
    let again = again || (matches!(step, Step::Stop { .. }) && running) || matches!(step, Step::Hold);
    local.admin = if probe.is_some() && running { conn } else { None };
    (st, again)
}

/// A step worth an event when a member comes to it (only this node sees it: fencing,
/// holding commits, rewinds, clones), with its level, kind and words.
fn notable(step: &Step, last: Option<&Step>) -> Option<(Level, &'static str, String)> {
    if last == Some(step) {
        return None;
    }
    Some(match step {
        Step::Hold => (
            Level::Warn,
            "member-holding",
            "holds every commit: this node lost the control plane's quorum (its lease lapsed)".to_string(),
        ),
        Step::Stop { why } if why.starts_with("fenced") => (Level::Warn, "member-fenced", format!("stopped: {why}")),
        Step::Stop { why } => (Level::Info, "member-stopped", format!("stopped: {why}")),
        Step::Rewind => (Level::Warn, "member-rewind", "pg_rewind onto the primary's timeline".to_string()),
        Step::Clone => (Level::Info, "member-clone", "cloning the primary (pg_basebackup)".to_string()),
        Step::Run { standby: false } if last == Some(&Step::Hold) => {
            (Level::Info, "member-released", "the lease is back: held commits complete".to_string())
        }
        _ => return None,
    })
}

fn describe(step: &Step) -> String {
    match step {
        Step::Init => "initdb".into(),
        Step::Clone => "cloning the primary".into(),
        Step::Run { standby: true } => "running as a replica".into(),
        Step::Run { standby: false } => "running as the primary".into(),
        Step::Hold => "running as the primary, holding every commit: this node's lease lapsed".into(),
        Step::Stop { why } => format!("stopped: {why}"),
        Step::Rewind => "pg_rewind".into(),
        Step::Promote { term } => format!("promoting (term {term})"),
        Step::Wait { why } => format!("waiting: {why}"),
    }
}

async fn execute(
    m: &Member<'_>,
    step: &Step,
    admin: Option<&Admin>,
    probe: Option<Probe>,
    local: &mut Local,
) -> Result<String, String> {
    let rec = m.rec;
    let rw = rec.addresses.rw.to_string();
    match step {
        Step::Init => {
            tracing::info!(database = %m.key.0, member = m.key.1, "initdb of the first primary");
            if m.dir.data().exists() {
                m.dir.wipe_data().map_err(|e| e.to_string())?;
            }
            datadir::initdb(&m.bins, &m.dir, &m.user, &rec.credentials.superuser).await.map_err(|e| e.to_string())?;
            write_conf(m, false, String::new())?;
            m.dir.set_marker(&Marker { ready: true, primary_term: rec.term }).map_err(|e| e.to_string())?;
            local.fresh_data();
            Ok("initialised; starting".into())
        }
        Step::Clone => {
            if m.dir.data().exists() {
                m.dir.wipe_data().map_err(|e| e.to_string())?;
            }
            tracing::info!(database = %m.key.0, member = m.key.1, from = %rw, "cloning the primary (pg_basebackup)");
            datadir::basebackup(
                &m.bins,
                &m.dir,
                &m.user,
                &rw,
                holdfast_postgres::POSTGRES_PORT,
                &rec.credentials.replication,
            )
            .await
            .map_err(|e| e.to_string())?;
            write_conf(m, true, String::new())?;
            m.dir.set_marker(&Marker { ready: true, primary_term: 0 }).map_err(|e| e.to_string())?;
            local.fresh_data();
            Ok("cloned; starting as a replica".into())
        }
        Step::Hold => {
            // Every commit waits for a standby that does not exist: none is acknowledged
            // while another primary may be promoted.
            let since = *local.holding_since.get_or_insert_with(std::time::Instant::now);
            local.sync_applied = None;
            let sync = conf::HOLD_COMMITS.to_string();
            if local.sync_written.as_ref() != Some(&sync) {
                tracing::warn!(database = %m.key.0, member = m.key.1, "this node's lease lapsed: the primary holds every commit until it is renewed (it is stopped if that takes longer than another lease)");
                local.sync_written = Some(sync.clone());
            }
            let changed = write_conf(m, false, sync);
            let held = match (changed, admin) {
                (Ok(true), Some(a)) => a.reload().await.map_err(|e| e.to_string()),
                (Ok(false), Some(_)) => Ok(()),
                (Ok(_), None) => Err("no admin connection to reload the configuration".to_string()),
                (Err(e), _) => Err(e),
            };
            if let Err(e) = held {
                local.hold_failed = true;
                return Err(format!("cannot hold the commits ({e}): stopping the primary instead"));
            }
            Ok(format!("{} for {:.1} s", describe(step), since.elapsed().as_secs_f64()))
        }
        Step::Run { standby } => {
            let released = !*standby && local.holding_since.is_some();
            let (sync, names) = if *standby { (String::new(), Vec::new()) } else { sync_list(m, admin).await };
            if !*standby && local.sync_written.as_ref() != Some(&sync) {
                if sync.is_empty() && rec.spec.sync > 0 {
                    tracing::warn!(database = %m.key.0, "too few standbys stream: commits no longer wait for one (on_sync_loss: async)");
                } else if local.sync_written.is_some() {
                    tracing::info!(database = %m.key.0, synchronous_standby_names = %sync, "synchronous standbys");
                }
                local.sync_written = Some(sync.clone());
            }
            let changed = write_conf(m, *standby, sync)?;
            if changed {
                // Unknown until the new file is loaded: a failed reload below returns
                // before the list is recorded again.
                local.sync_applied = None;
            }
            if changed && m.running {
                if let Some(a) = admin {
                    a.reload().await.map_err(|e| e.to_string())?;
                    if released {
                        // Held commits complete on a standby's next reply: WAL makes one.
                        let _ = a.nudge().await;
                    }
                }
            }
            // Loaded when unchanged, or reloaded just now (reported from the next pass).
            let loaded = m.running && (!changed || admin.is_some());
            local.sync_applied = (!*standby && loaded).then_some(names);
            if loaded {
                local.loaded_generation = Some(rec.generation);
            }
            if let Some(since) = local.holding_since.take() {
                if !*standby {
                    tracing::info!(database = %m.key.0, member = m.key.1, held_ms = since.elapsed().as_millis() as u64, "the lease is back: held commits complete");
                }
            }
            if !*standby {
                if let (Some(a), Some(p)) = (admin, probe) {
                    if !p.in_recovery {
                        configure_primary(m, a, local).await?;
                    }
                }
            }
            Ok(describe(step))
        }
        Step::Stop { why } => {
            if m.running {
                tracing::warn!(database = %m.key.0, member = m.key.1, "stopping postgres: {why}");
            }
            Ok(format!("stopped: {why}"))
        }
        Step::Rewind => {
            tracing::info!(database = %m.key.0, member = m.key.1, "pg_rewind onto the current primary");
            if local.divergences >= 2 {
                // A rewind already failed to make it follow: start from a fresh clone.
                m.dir.wipe_data().map_err(|e| e.to_string())?;
                local.fresh_data();
                return Ok("cannot follow the primary after a rewind: cloning it afresh".into());
            }
            // pg_rewind first finishes crash recovery in single-user mode, which refuses
            // standby mode: the member is configured as a standby again afterwards.
            m.dir.set_standby(false, &m.user).map_err(|e| e.to_string())?;
            match datadir::rewind(
                &m.bins,
                &m.dir,
                &m.user,
                &rw,
                holdfast_postgres::POSTGRES_PORT,
                &rec.credentials.superuser,
            )
            .await
            {
                Ok(_) => {
                    local.rewind_failures = 0;
                    local.diverged = false;
                    local.restarts_answering = u32::MAX; // re-based at the next look
                    write_conf(m, true, String::new())?;
                    m.dir.set_marker(&Marker { ready: true, primary_term: 0 }).map_err(|e| e.to_string())?;
                    Ok("rewound; starting as a replica".into())
                }
                Err(e) => {
                    let text = e.to_string();
                    let unreachable = text.contains("could not connect") || text.contains("connection to server");
                    if !unreachable {
                        local.rewind_failures += 1;
                        if local.rewind_failures >= 2 {
                            tracing::warn!(database = %m.key.0, member = m.key.1, error = %text, "pg_rewind failed twice: cloning the primary afresh");
                            m.dir.wipe_data().map_err(|e| e.to_string())?;
                        }
                    }
                    Err(text)
                }
            }
        }
        Step::Promote { term } => {
            let a = admin.ok_or("no admin connection")?;
            tracing::info!(database = %m.key.0, member = m.key.1, term, "promoting");
            a.promote().await.map_err(|e| e.to_string())?;
            m.dir.set_marker(&Marker { ready: true, primary_term: *term }).map_err(|e| e.to_string())?;
            local.configured = None;
            Ok(format!("promoted (term {term})"))
        }
        Step::Wait { why } => Ok(format!("waiting: {why}")),
    }
}

/// `synchronous_standby_names` for this primary now: `ANY k (...)`, or empty with
/// `on_sync_loss: async` while fewer than k standbys stream; with the members it names.
async fn sync_list(m: &Member<'_>, admin: Option<&Admin>) -> (String, Vec<u32>) {
    let spec = &m.rec.spec;
    let set = m.rec.sync_names(m.key.1);
    let full = conf::sync_names(&m.key.0, &set, spec.sync);
    let full = if spec.sync == 0 { (full, Vec::new()) } else { (full, set.clone()) };
    if spec.sync == 0 || spec.on_sync_loss == SyncLoss::Block {
        return full;
    }
    let names: BTreeSet<String> = set.iter().map(|k| conf::member_name(&m.key.0, *k)).collect();
    let streaming = match admin {
        Some(a) => a.standbys().await.map(|s| s.keys().filter(|n| names.contains(*n)).count() as u32).unwrap_or(0),
        None => return full,
    };
    if streaming < spec.sync {
        (String::new(), Vec::new())
    } else {
        full
    }
}

/// Writes `postgresql.conf`, `pg_hba.conf` and `standby.signal`; true when the
/// configuration changed.
fn write_conf(m: &Member<'_>, standby: bool, sync: String) -> Result<bool, String> {
    let rec = m.rec;
    let name = conf::member_name(&m.key.0, m.key.1);
    let slot = conf::slot_name(&m.key.0, m.key.1);
    let rw = rec.addresses.rw.to_string();
    let upstream = standby.then(|| Upstream {
        host: &rw,
        port: holdfast_postgres::WAL_PORT,
        password: &rec.credentials.replication,
        slot: &slot,
    });
    let text = conf::postgresql_conf(&MemberConf {
        name: &name,
        port: m.port.unwrap_or(holdfast_postgres::POSTGRES_PORT),
        socket_dir: &m.dir.socket(),
        upstream,
        sync_standbys: sync,
        parameters: &rec.spec.parameters,
    });
    let hba = conf::pg_hba_conf();
    let mut changed = false;
    if m.dir.read_file("postgresql.conf").as_deref() != Some(text.as_str()) {
        m.dir.write_file("postgresql.conf", &text, &m.user).map_err(|e| e.to_string())?;
        changed = true;
    }
    if m.dir.read_file("pg_hba.conf").as_deref() != Some(hba.as_str()) {
        m.dir.write_file("pg_hba.conf", &hba, &m.user).map_err(|e| e.to_string())?;
        changed = true;
    }
    m.dir.set_standby(standby, &m.user).map_err(|e| e.to_string())?;
    Ok(changed)
}

/// A primary's roles, databases and the replication slots of the other members, once
/// per term, spec generation and user list.
async fn configure_primary(m: &Member<'_>, a: &Admin, local: &mut Local) -> Result<(), String> {
    let rec = m.rec;
    let users: Vec<String> = rec.credentials.users.keys().cloned().collect();
    let want = (rec.term, rec.generation, users);
    if local.configured.as_ref() == Some(&want) {
        return Ok(());
    }
    a.ensure_roles(
        &rec.credentials.users,
        &rec.credentials.replication,
        &rec.spec.databases,
        rec.spec.users.first().map(String::as_str),
    )
    .await
    .map_err(|e| e.to_string())?;
    let slots: Vec<String> =
        (0..rec.spec.instances).filter(|i| *i != m.key.1).map(|i| conf::slot_name(&m.key.0, i)).collect();
    let prefix = format!("{}_m", m.key.0.replace('-', "_"));
    a.ensure_slots(&prefix, &slots).await.map_err(|e| e.to_string())?;
    tracing::info!(database = %m.key.0, member = m.key.1, term = rec.term, "primary configured: roles, databases, slots");
    local.configured = Some(want);
    Ok(())
}

/// The agent instance that runs the member's postgres.
fn instance_spec(m: &Member<'_>) -> InstanceSpec {
    // SIGINT: PostgreSQL's fast shutdown (sessions end at once, WAL goes to the standbys,
    // a checkpoint is written).
    super::server_instance(
        instance_id(holdfast_state::DbEngine::Postgres, &m.key.0, m.key.1),
        r#"exec "$0" -D "$1" -p "$PORT""#,
        &[m.bins.program("postgres").display().to_string(), m.dir.data().display().to_string()],
        &m.dir.root,
        "pg",
        2,
        &m.user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_coming_to_a_notable_step_is_an_event_once() {
        let kind = |step: &Step, last: Option<&Step>| notable(step, last).map(|(l, k, _)| (l, k));
        let fenced = Step::Stop { why: "fenced: this node cannot reach the control plane's quorum" };
        assert_eq!(kind(&Step::Hold, Some(&Step::Run { standby: false })), Some((Level::Warn, "member-holding")));
        assert_eq!(kind(&Step::Hold, Some(&Step::Hold)), None, "said once");
        assert_eq!(kind(&Step::Run { standby: false }, Some(&Step::Hold)), Some((Level::Info, "member-released")));
        assert_eq!(kind(&fenced, Some(&Step::Hold)), Some((Level::Warn, "member-fenced")));
        assert_eq!(kind(&Step::Stop { why: member::RESTART }, None), Some((Level::Info, "member-stopped")));
        assert_eq!(kind(&Step::Rewind, None), Some((Level::Warn, "member-rewind")));
        assert_eq!(kind(&Step::Clone, None), Some((Level::Info, "member-clone")));
        assert_eq!(kind(&Step::Run { standby: true }, None), None, "the steady state says nothing");
        assert_eq!(kind(&Step::Wait { why: "fenced" }, None), None);
    }
}
