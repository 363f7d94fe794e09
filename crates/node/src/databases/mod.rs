//! Database members on this node: the runner (wiring only). For every member the
//! replicated state places here it runs one task that, every half second (more often
//! while a switchover or a lease change is near), looks at the member and carries out
//! what its engine's pure decision says: [`postgres`] (initdb, base backup, promote,
//! fence by stopping, rewind) or [`redis`] (start, promote, re-point, fence by refusing
//! writes). It publishes each member's status for the heartbeat (the leader's failover
//! decisions and every node's routing read it) and the member instances for the
//! workload reconciler.
//!
//! Both engines share the terms, the lease and the switchover protocol: a member that
//! should be primary takes writes only while this node holds its lease
//! ([`crate::lease`]); when it lapses writes wait, when it is gone (or a switchover
//! fences it) they are refused.
pub mod postgres;
pub mod redis;
pub mod url;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use holdfast_agent::osuser::OsUser;
use holdfast_agent::{InstanceId, InstanceSpec};
use holdfast_api::peer::{MemberRole, MemberStatus};
use holdfast_state::DbEngine;
use tokio_util::sync::CancellationToken;

use crate::workers::Pass;
use crate::NodeContext;

/// The worker name the runner reports under.
pub const WORKER: &str = "databases";
/// How often each member is looked at.
const PASS: Duration = Duration::from_millis(500);
/// How often members look while their database has a switchover under way.
const SWITCHOVER_PASS: Duration = Duration::from_millis(50);
/// How long after the lease lapses a member looks again (the lapse itself is exact).
const LAPSE_SLACK: Duration = Duration::from_millis(2);
/// The agent's instance ids of members: `pg:<db>` / `redis:<db>` with the member index as
/// the replica, never a service's (service names are DNS labels, without `:`).
pub const INSTANCE_PREFIXES: [(DbEngine, &str); 2] = [(DbEngine::Postgres, "pg:"), (DbEngine::Redis, "redis:")];

fn prefix(engine: DbEngine) -> &'static str {
    INSTANCE_PREFIXES.iter().find(|(e, _)| *e == engine).map_or("pg:", |(_, p)| p)
}

/// The agent instance id of a member.
pub fn instance_id(engine: DbEngine, database: &str, member: u32) -> InstanceId {
    InstanceId::new(format!("{}{database}", prefix(engine)), member)
}

/// The agent instance of a member's server: `script` run by `/bin/sh -c` with `args` as
/// `$0`, `$1`, … (the port in `$PORT`), in `workdir`, as `user`, with one port named
/// `port`, a TCP health check on it, and `stop_signal` to the main process only (30 s of
/// grace: the server's own shutdown writes what it must).
pub(super) fn server_instance(
    id: InstanceId,
    script: &str,
    args: &[String],
    workdir: &std::path::Path,
    port: &str,
    stop_signal: i32,
    user: &OsUser,
) -> InstanceSpec {
    let mut argv = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    argv.extend(args.iter().cloned());
    let mut spec = InstanceSpec::new(id, argv);
    spec.workdir = Some(workdir.to_path_buf());
    spec.ports = vec![port.to_string()];
    spec.health = Some(holdfast_agent::HealthConfig {
        check: holdfast_agent::HealthProbe::Tcp { port: port.to_string() },
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        healthy_threshold: 1,
        unhealthy_threshold: 3,
        start_grace: Duration::from_secs(30),
    });
    spec.stop_signal = stop_signal;
    spec.stop_main_only = true;
    spec.stop_grace = Duration::from_secs(30);
    spec.run_as = Some(holdfast_agent::RunAs { uid: user.uid, gid: user.gid });
    spec
}

/// The database and engine of a member's agent instance (`None`: a service replica).
pub fn member_of(id: &InstanceId) -> Option<(&str, DbEngine)> {
    INSTANCE_PREFIXES.iter().find_map(|(e, p)| id.service.strip_prefix(p).map(|db| (db, *e)))
}

/// Whether an agent instance is a database member (not a service replica).
pub fn is_member(id: &InstanceId) -> bool {
    member_of(id).is_some()
}

/// The database engines this machine offers, with their major versions, looked up once
/// (`NodeRecord::software`: members are placed only on nodes that report their engine).
pub fn local_software() -> BTreeMap<String, String> {
    static SOFTWARE: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    SOFTWARE
        .get_or_init(|| {
            let mut out = BTreeMap::new();
            if let Ok(b) = holdfast_postgres::install::discover(None) {
                out.insert(DbEngine::Postgres.as_str().to_string(), b.major.to_string());
            }
            if let Ok(b) = holdfast_redis::install::discover(None) {
                out.insert(DbEngine::Redis.as_str().to_string(), b.major.to_string());
            }
            out
        })
        .clone()
}

type Key = (String, u32);

/// What the runner publishes.
pub struct Shared {
    statuses: Mutex<BTreeMap<Key, MemberStatus>>,
    instances: tokio::sync::watch::Sender<BTreeMap<Key, InstanceSpec>>,
    /// Members that had a pass since this node first renewed its lease: until then a
    /// member's instance is not known yet (a re-adopted postgres must not be stopped
    /// because the first pass ran before any contact with the leader).
    settled: Mutex<BTreeSet<Key>>,
    /// Bumped when a member's role, term or reachability changes (not its positions):
    /// the heartbeat goes out at once and routing follows.
    roles: tokio::sync::watch::Sender<u64>,
    /// The members placed here that have a task (only they may publish an instance).
    placed: Mutex<BTreeSet<Key>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            statuses: Mutex::default(),
            instances: tokio::sync::watch::Sender::new(BTreeMap::new()),
            settled: Mutex::default(),
            roles: tokio::sync::watch::Sender::new(0),
            placed: Mutex::default(),
        }
    }
}

impl Shared {
    /// Whether every member the state places on `node` has had a pass since the lease
    /// was first renewed (the workload reconciler waits for it after a start).
    pub fn settled(&self, state: &holdfast_state::ClusterState, node: u64) -> bool {
        let settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        local_members(state, node).iter().all(|k| settled.contains(k))
    }

    /// This node's members as last seen.
    pub fn statuses(&self) -> Vec<MemberStatus> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The member instances this node should run now.
    pub fn instances(&self) -> Vec<InstanceSpec> {
        self.instances.borrow().values().cloned().collect()
    }

    /// Woken when [`Self::instances`] changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<BTreeMap<Key, InstanceSpec>> {
        self.instances.subscribe()
    }

    /// Woken when a member's role, term or reachability changes.
    pub fn subscribe_roles(&self) -> tokio::sync::watch::Receiver<u64> {
        self.roles.subscribe()
    }

    fn set_status(&self, key: &Key, status: MemberStatus) {
        let role = |s: &MemberStatus| (s.role, s.term, s.answering, s.streaming, s.port);
        let changed = {
            let mut all = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
            let changed = all.get(key).map(role) != Some(role(&status));
            all.insert(key.clone(), status);
            changed
        };
        if changed {
            self.roles.send_modify(|n| *n += 1);
        }
    }

    fn set_instance(&self, key: &Key, spec: Option<InstanceSpec>) {
        // A member no longer placed here publishes nothing (a pass still running when the
        // runner forgot it must not bring its instance back).
        let spec = spec.filter(|_| self.placed.lock().unwrap_or_else(|e| e.into_inner()).contains(key));
        self.instances.send_if_modified(|m| match spec {
            Some(s) => m.insert(key.clone(), s.clone()) != Some(s),
            None => m.remove(key).is_some(),
        });
    }

    fn forget(&self, key: &Key) {
        self.placed.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.set_instance(key, None);
    }
}

/// The members the state places on `node`.
fn local_members(state: &holdfast_state::ClusterState, node: u64) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for (name, rec) in &state.desired.databases {
        for (i, n) in rec.members.iter().enumerate() {
            if *n == node {
                out.insert((name.clone(), i as u32));
            }
        }
    }
    out
}

/// Runs one task per local member until cancelled.
pub async fn run(ctx: NodeContext, cancel: CancellationToken) {
    let mut states = ctx.control.subscribe();
    let mut tasks: HashMap<Key, (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let state = states.borrow_and_update().clone();
        let wanted = local_members(&state, ctx.identity.node_id);
        tasks.retain(|key, (token, _)| {
            let keep = wanted.contains(key);
            if !keep {
                token.cancel();
                ctx.dbs.forget(key);
                tracing::info!(database = %key.0, member = key.1, "database member no longer placed here: stopped (its data directory is kept)");
            }
            keep
        });
        for key in &wanted {
            if !tasks.contains_key(key) {
                ctx.dbs.placed.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
                let token = cancel.child_token();
                let task = tokio::spawn(member_task(ctx.clone(), key.clone(), token.clone()));
                tasks.insert(key.clone(), (token, task));
            }
        }
        let pass = if wanted.is_empty() {
            Pass::Idle("no database member on this node")
        } else {
            let statuses = ctx.dbs.statuses();
            let failing: Vec<String> = statuses
                .iter()
                .filter(|s| s.role == MemberRole::Failed)
                .map(|s| format!("{}-m{}: {}", s.database, s.member, s.detail))
                .collect();
            if failing.is_empty() {
                Pass::Steady
            } else {
                Pass::Error(failing.join("; "))
            }
        };
        ctx.workers.report(WORKER, pass);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = states.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    for (_, (token, task)) in tasks {
        token.cancel();
        let _ = task.await;
    }
}

async fn member_task(ctx: NodeContext, key: Key, cancel: CancellationToken) {
    let mut pg = postgres::Local::default();
    let mut rd = redis::Local::default();
    let mut states = ctx.control.subscribe();
    // A member's role changing anywhere (a new master answering) is looked at at once: a
    // replica reattaches to it without waiting for its next pass.
    let mut roles = ctx.members_changed.subscribe();
    let mut last_failure = String::new();
    loop {
        let contact = ctx.lease.age(ctx.control.state().revision).is_some();
        let engine = ctx.control.state().desired.databases.get(&key.0).map(|r| r.spec.engine);
        let (status, again) = match engine {
            Some(DbEngine::Redis) => redis::pass(&ctx, &key, &mut rd).await,
            _ => postgres::pass(&ctx, &key, &mut pg).await,
        };
        if contact {
            ctx.dbs.settled.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
        }
        if status.role == MemberRole::Failed && status.detail != last_failure {
            tracing::warn!(database = %key.0, member = key.1, "{}", status.detail);
            last_failure.clone_from(&status.detail);
        } else if status.role != MemberRole::Failed {
            last_failure.clear();
        }
        ctx.dbs.set_status(&key, status);
        if again {
            // A transition (a promotion, a stop under way): look again at once, or
            // after a short breath while the agent stops postgres.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        }
        // Look again at the latest when the lease's standing changes: a primary holds
        // its commits when it lapses and is stopped when it is gone.
        let state = ctx.control.state();
        let lease = Duration::from_millis(state.settings.db_lease_ms);
        let mut next = ctx.lease.changes_in(lease, state.revision).map_or(PASS, |left| PASS.min(left + LAPSE_SLACK));
        if state.desired.databases.get(&key.0).is_some_and(|r| r.switchover.is_some()) {
            // A switchover waits on this member's reports (the old primary's final WAL
            // position, the target's replay): report often while it lasts (at most 10 s).
            next = next.min(SWITCHOVER_PASS);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = states.changed() => {}
            _ = roles.changed() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}

pub(super) fn status(key: &Key, term: u64, role: MemberRole, detail: impl Into<String>) -> MemberStatus {
    // One line: command output spans several.
    let detail: String = detail.into().split_whitespace().collect::<Vec<_>>().join(" ");
    MemberStatus {
        database: key.0.clone(),
        member: key.1,
        term,
        role,
        timeline: 0,
        lsn: 0,
        replay_lsn: 0,
        answering: false,
        streaming: false,
        port: None,
        detail,
        sync_applied: None,
        pending_restart: false,
        config_generation: None,
        replid: None,
    }
}

/// A member's directory: `<data dir>/databases/<db>/m<i>`.
pub(super) fn member_root(ctx: &NodeContext, key: &Key) -> std::path::PathBuf {
    ctx.data_dir.join("databases").join(&key.0).join(format!("m{}", key.1))
}

/// Makes `root` reachable for `user` (the OS user `product`'s server runs as): opens the
/// path through holdfast's data directory, then says which ancestor still blocks it.
pub(super) fn reachable_for(
    ctx: &NodeContext,
    root: &std::path::Path,
    user: &OsUser,
    product: &str,
) -> Result<(), String> {
    open_path_for(&ctx.data_dir, root, user)?;
    match holdfast_agent::osuser::untraversable_ancestor(root, user) {
        Some(blocked) => Err(format!(
            "{product} runs as OS user {} and cannot reach {} ({} is not traversable for it: chmod o+x it, or use a data directory it can reach)",
            user.name,
            root.display(),
            blocked.display()
        )),
        None => Ok(()),
    }
}

/// The agent's instance of a member: its status, whether it runs (whatever its health),
/// and its port named `port`.
pub(super) fn member_instance(
    ctx: &NodeContext,
    id: &InstanceId,
    port: &str,
) -> (Option<holdfast_agent::InstanceStatus>, bool, Option<u16>) {
    use holdfast_agent::InstanceState;
    let inst = ctx.agent.status().into_iter().find(|s| s.id == *id);
    let running = inst
        .as_ref()
        .is_some_and(|s| matches!(s.state, InstanceState::Starting | InstanceState::Ready | InstanceState::Unready));
    let port = inst.as_ref().and_then(|s| s.ports.get(port).copied());
    (inst, running, port)
}

/// The report of the member of `rec` (database `name`) that answers as primary of the
/// current term, as this node hears the members.
pub(super) async fn current_primary(
    ctx: &NodeContext,
    rec: &holdfast_state::model::DatabaseRecord,
    name: &str,
) -> Option<MemberStatus> {
    let node = rec.primary_node()?;
    let members = crate::peer::heartbeat::members_by_node(ctx).await;
    members
        .get(&node)?
        .iter()
        .find(|m| {
            m.database == name
                && m.member == rec.primary
                && m.role == MemberRole::Primary
                && m.term == rec.term
                && m.answering
        })
        .cloned()
}

/// Lets the member user pass through holdfast's data directory to the member directory:
/// `x` only (no listing) for others on `data_dir`, `databases/` and `databases/<db>/`.
/// The data directory's own secrets stay 0600 files.
fn open_path_for(data_dir: &std::path::Path, member_root: &std::path::Path, user: &OsUser) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if user.uid == holdfast_agent::osuser::current_uid() {
        return Ok(());
    }
    let mut dirs = vec![data_dir.to_path_buf()];
    let mut d = member_root.parent();
    while let Some(p) = d.filter(|p| p.starts_with(data_dir) && *p != data_dir) {
        dirs.push(p.to_path_buf());
        d = p.parent();
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o001)).map_err(|e| {
                format!("cannot let the database's OS user {} through {}: {e}", user.name, dir.display())
            })?;
        }
    }
    Ok(())
}

/// A value looked up once per `key` and kept in `cache` (an engine's binaries for a
/// `bin_dir`: running `--version` on every pass is not free).
pub(super) fn cached<K: PartialEq + Clone, T: Clone, E>(
    cache: &mut Option<(K, T)>,
    key: &K,
    find: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if let Some((_, v)) = cache.as_ref().filter(|(k, _)| k == key) {
        return Ok(v.clone());
    }
    let v = find()?;
    *cache = Some((key.clone(), v.clone()));
    Ok(v)
}
