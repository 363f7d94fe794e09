//! Commands carried by Raft entries and their deterministic application.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    CaRecord, ClusterSettings, ClusterState, DatabaseRecord, Desired, JoinTokenRecord, NodeRecord, Switchover, SyncSet,
    FORMAT_VERSION,
};
use holdfast_placement::NodeId;

/// A Raft entry's payload: a command with the encoding version it was written with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub command: Command,
}

impl Request {
    pub fn new(command: Command) -> Self {
        Request { v: FORMAT_VERSION, command }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::UpsertNode(n) => write!(f, "upsert-node {} ({})", n.id, n.name),
            Command::SetDesired { expected_revision, desired } => write!(
                f,
                "set-desired at revision {expected_revision}: {} services, {} routes",
                desired.services.len(),
                desired.routes.len()
            ),
            Command::SetCa(_) => write!(f, "set-ca"),
            Command::AddJoinToken { id, .. } => write!(f, "add-join-token {id}"),
            Command::Join { token_id, node, .. } => write!(f, "join {} ({}) with token {token_id}", node.id, node.name),
            Command::SetNodeFlags { id, cordoned, down, draining } => {
                write!(f, "set-node-flags {id} cordoned={cordoned:?} down={down:?} draining={draining:?}")
            }
            Command::SetSettings(s) => write!(f, "set-settings {s:?}"),
            Command::SetDatabasePrimary { database, expected_term, term, primary } => {
                write!(f, "set-database-primary {database} member {primary} term {expected_term} -> {term}")
            }
            Command::SetDatabaseSwitchover { database, expected_term, switchover } => match switchover {
                Some(s) => write!(
                    f,
                    "set-database-switchover {database} at term {expected_term}: {:?} to {}",
                    s.phase,
                    s.to.map_or("any".to_string(), |t| format!("member {t}"))
                ),
                None => write!(f, "set-database-switchover {database} at term {expected_term}: clear"),
            },
            Command::SetDatabaseSyncSet { database, expected_term, sync_set } => match sync_set {
                Some(s) => write!(
                    f,
                    "set-database-sync-set {database} at term {expected_term}: {:?} (leaving {:?})",
                    s.names, s.leaving
                ),
                None => write!(f, "set-database-sync-set {database} at term {expected_term}: every standby"),
            },
            Command::MoveDatabaseMember { database, expected_term, member, from, to } => {
                write!(f, "move-database-member {database} member {member} from {from} to {to} at term {expected_term}")
            }
            Command::SetDatabaseRestart { database, expected_term, member } => match member {
                Some(m) => write!(f, "set-database-restart {database} member {m} at term {expected_term}"),
                None => write!(f, "set-database-restart {database} none at term {expected_term}"),
            },
            Command::SetRemoving { id, removing } => write!(f, "set-removing {id} {removing}"),
            Command::PutSecret { project, name, version } => {
                write!(f, "put-secret {project}/{name} version {} by {}", version.version, version.set_by)
            }
            Command::RemoveSecret { project, name } => write!(f, "remove-secret {project}/{name}"),
            Command::SetAcmeConfig { config } => write!(f, "set-acme-config {}", config.directory),
            Command::PutAcmeAccount { directory, .. } => write!(f, "put-acme-account {directory}"),
            Command::PutAcmeChallenge { token, .. } => write!(f, "put-acme-challenge {token}"),
            Command::RemoveAcmeChallenge { token } => write!(f, "remove-acme-challenge {token}"),
            Command::PutAcmeCert { host, cert, .. } => {
                write!(f, "put-acme-cert {host} until {}", holdfast_spec::format_utc_ms(cert.not_after_ms))
            }
            Command::AcmeOrderFailed { host, error, .. } => write!(f, "acme-order-failed {host}: {error}"),
            Command::RenewAcmeCert { host } => write!(f, "renew-acme-cert {host}"),
            Command::AddApiToken { id, token } => {
                write!(f, "add-api-token {id} ({}, scope {})", token.name, token.scope)
            }
            Command::RemoveApiToken { id } => write!(f, "remove-api-token {id}"),
            Command::StartRun { job, run } => match run.slot_ms {
                Some(s) => write!(f, "start-run {job} #{} for slot {s} ({})", run.id, run.state.as_str()),
                None => write!(f, "start-run {job} #{} by {}", run.id, run.by),
            },
            Command::PutRun { job, run, .. } => write!(
                f,
                "put-run {job} #{} attempt {} {}{}",
                run.id,
                run.attempt,
                run.state.as_str(),
                run.node.map(|n| format!(" on {n}")).unwrap_or_default()
            ),
            Command::SetJobCursor { job, cursor_ms } => write!(f, "set-job-cursor {job} {cursor_ms}"),
            Command::RekeySecrets { from, to, resealed } => {
                write!(f, "rekey-secrets {} -> {to}, {} versions", from.as_deref().unwrap_or("-"), resealed.len())
            }
            Command::AdvanceRollout { service, generation, rolled } => match rolled {
                Some(n) => write!(f, "advance-rollout {service}@{generation} to {n} replicas"),
                None => write!(f, "advance-rollout {service}@{generation} done"),
            },
            Command::RemoveNode { id, expected_revision } => {
                write!(f, "remove-node {id} at revision {expected_revision}")
            }
            Command::SetNodeLabels { id, set, remove, start_id } => {
                write!(f, "set-node-labels {id}")?;
                for (k, v) in set {
                    write!(f, " {k}={v}")?;
                }
                for k in remove {
                    write!(f, " {k}-")?;
                }
                match start_id {
                    Some(s) => write!(f, " (--label flags of start {s:x})"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Register a node or update what it reports about itself.
    UpsertNode(NodeRecord),
    /// Replace the desired workloads, if nothing changed since `expected_revision`.
    SetDesired {
        expected_revision: u64,
        desired: Desired,
    },
    /// Record the cluster CA (once, by the first node).
    SetCa(CaRecord),
    /// Create a join token.
    AddJoinToken {
        id: String,
        secret_hash: String,
        expires_at_ms: u64,
    },
    /// Admit a node with a token: refused unless the token exists, its secret hash
    /// matches, it is unused and `now_ms` (the leader's clock when proposing) is before
    /// its expiry. Atomic: the token is consumed and the node added together.
    Join {
        token_id: String,
        secret_hash: String,
        now_ms: u64,
        node: NodeRecord,
    },
    /// Change a node's cordoned/down/draining flags (None leaves one as it is).
    SetNodeFlags {
        id: NodeId,
        cordoned: Option<bool>,
        down: Option<bool>,
        #[serde(default)]
        draining: Option<bool>,
    },
    /// Change the cluster's settings; refused (state untouched) unless they validate.
    SetSettings(ClusterSettings),
    /// Remove a node and revoke its certificate; its replicas must already be placed
    /// elsewhere (planned against `expected_revision`).
    RemoveNode {
        id: NodeId,
        expected_revision: u64,
    },
    /// Set and remove user labels of a node (the built-ins `name`, `site`, `arch` are
    /// refused). `start_id`, for the `--label` flags of a node start, is recorded so they
    /// are applied once per start.
    SetNodeLabels {
        id: NodeId,
        set: BTreeMap<String, String>,
        remove: BTreeSet<String>,
        start_id: Option<u64>,
    },
    /// Start (or cancel) the removal of a node: it is cordoned and drained, and the
    /// leader removes it once nothing is placed on it. Refused for a node whose
    /// certificate fingerprint is unknown (its removal could not revoke it).
    SetRemoving {
        id: NodeId,
        removing: bool,
    },
    /// Make member `primary` of `database` the primary for `term` (a failover or a
    /// switchover). Compare-and-set: refused unless the database's term is still
    /// `expected_term` and `term` is newer. Ends any switchover; nothing else changes.
    SetDatabasePrimary {
        database: String,
        expected_term: u64,
        term: u64,
        primary: u32,
    },
    /// Ask for a switchover, move it to its next phase, or clear it (`None`: done or
    /// aborted, the primary takes writes again). Compare-and-set on the term like
    /// `SetDatabasePrimary`; the target, if any, must be a member other than the primary.
    SetDatabaseSwitchover {
        database: String,
        expected_term: u64,
        switchover: Option<Switchover>,
    },
    /// Set the synchronous standbys of the primary of `expected_term` (`None`: every
    /// other member). Compare-and-set on the term; every member named must exist and
    /// not be the primary.
    SetDatabaseSyncSet {
        database: String,
        expected_term: u64,
        sync_set: Option<SyncSet>,
    },
    /// Move standby `member` of `database` from node `from` to node `to` (a drain: the
    /// node `to` clones it, the one on `from` stops). Compare-and-set on the term and on
    /// the member's node; refused for the primary, for a node already holding a member
    /// of the database, and for a node that is not a live member of the cluster.
    MoveDatabaseMember {
        database: String,
        expected_term: u64,
        member: u32,
        from: NodeId,
        to: NodeId,
    },
    /// Ask member `member` of `database` to restart (`None`: no restart under way).
    /// Compare-and-set on the term; the member must exist.
    SetDatabaseRestart {
        database: String,
        expected_term: u64,
        member: Option<u32>,
    },
    /// Set the next version of a project's secret (sealed by the proposing node); every
    /// service reading it gets a new generation, so its instances roll. Refused unless
    /// `version.version` is the next version (compare-and-set).
    PutSecret {
        project: String,
        name: String,
        version: crate::secrets::SecretVersion,
    },
    /// Where certificates are ordered (`holdfast cert acme`).
    SetAcmeConfig {
        config: crate::acme::AcmeConfig,
    },
    /// The ACME account of `directory`, its credentials sealed.
    PutAcmeAccount {
        directory: String,
        credentials: crate::secrets::SecretVersion,
    },
    /// An HTTP-01 challenge every edge answers until it is removed.
    PutAcmeChallenge {
        token: String,
        key_authorization: String,
    },
    RemoveAcmeChallenge {
        token: String,
    },
    /// An issued certificate and its sealed key.
    PutAcmeCert {
        host: String,
        cert: crate::acme::AcmeCert,
        key: crate::secrets::SecretVersion,
    },
    /// An order that failed, with the CA's error: backoff before the next.
    AcmeOrderFailed {
        host: String,
        error: String,
        at_ms: u64,
    },
    /// A user asked for a new certificate now.
    RenewAcmeCert {
        host: String,
    },
    /// Remove a secret and its history; refused while a service reads it.
    RemoveSecret {
        project: String,
        name: String,
    },
    /// Add an API token (only its hash is stored).
    AddApiToken {
        id: String,
        token: crate::acl::ApiTokenRecord,
    },
    /// Remove an API token; it is refused from the next request on.
    RemoveApiToken {
        id: String,
    },
    /// Move every secret to the cluster key `to`: `resealed` holds every readable version
    /// (`project/name`, version, envelope) sealed under it. Refused unless the cluster's
    /// key is still `from` and the list covers exactly the readable versions.
    RekeySecrets {
        from: Option<String>,
        to: String,
        resealed: Vec<(String, u64, holdfast_secrets::Sealed)>,
    },
    /// Start a run of `job` (its id must be the job's next; a scheduled run's slot must be
    /// after the job's cursor, which moves to it: a slot runs once).
    StartRun {
        job: String,
        run: crate::jobs::Run,
    },
    /// Replace an active run whose attempt is still `attempt` (placed, started, finished,
    /// retried, cancelled).
    PutRun {
        job: String,
        attempt: u32,
        run: crate::jobs::Run,
    },
    /// Move a job's schedule cursor forward (a job seen for the first time).
    SetJobCursor {
        job: String,
        cursor_ms: u64,
    },
    /// Let the roll of `service` onto `generation` go on to `rolled` replicas (`None`:
    /// done). Compare-and-set on the generation; `rolled` only grows.
    AdvanceRollout {
        service: String,
        generation: u64,
        rolled: Option<u32>,
    },
}

/// The outcome of applying a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied; the state is now at `revision`.
    Applied { revision: u64 },
    /// Refused because the state moved on since the change was planned.
    Conflict { current_revision: u64 },
    /// Refused: written by a newer holdfast than this one.
    UnsupportedVersion { v: u32 },
    /// Entries that carry no command (Raft's own blank and membership entries).
    Nothing,
    /// Refused with a reason meant for the user (bad token, unknown node).
    Refused { reason: String },
}

impl ClusterState {
    fn applied(&mut self, r: Result<(), String>) -> Response {
        match r {
            Ok(()) => {
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Err(reason) => Response::Refused { reason },
        }
    }

    /// Applies one command. Deterministic: every replica of the log reaches the same state.
    pub fn apply(&mut self, req: &Request) -> Response {
        if req.v > FORMAT_VERSION {
            return Response::UnsupportedVersion { v: req.v };
        }
        match &req.command {
            Command::UpsertNode(node) => {
                if self.nodes.get(&node.id) != Some(node) {
                    self.nodes.insert(node.id, node.clone());
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::SetDesired { expected_revision, desired } => {
                if *expected_revision != self.revision {
                    return Response::Conflict { current_revision: self.revision };
                }
                let epochs = crate::fencing::next_epochs(self, desired, self.revision + 1);
                self.desired = desired.clone();
                // A removed job's runs go with it (a run still going is stopped).
                self.runs.retain(|job, _| desired.jobs.contains_key(job));
                // A deploy that replaced a rolling service's instances ends its roll.
                let projects: std::collections::BTreeSet<String> =
                    self.secrets.keys().filter_map(|k| k.split_once('/').map(|(p, _)| p.to_string())).collect();
                for p in projects {
                    crate::secrets::retire_unused(self, &p);
                }
                self.epochs = epochs;
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::SetCa(ca) => {
                if self.ca.is_some() {
                    return Response::Refused { reason: "the cluster already has a CA".into() };
                }
                self.ca = Some(ca.clone());
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::AddJoinToken { id, secret_hash, expires_at_ms } => {
                self.join_tokens.insert(
                    id.clone(),
                    JoinTokenRecord { secret_hash: secret_hash.clone(), expires_at_ms: *expires_at_ms, used_by: None },
                );
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::Join { token_id, secret_hash, now_ms, node } => {
                let Some(token) = self.join_tokens.get_mut(token_id) else {
                    return Response::Refused {
                        reason: "unknown join token (create one with `holdfast token create`)".into(),
                    };
                };
                if &token.secret_hash != secret_hash {
                    return Response::Refused { reason: "wrong join token secret".into() };
                }
                if let Some(by) = token.used_by {
                    return Response::Refused {
                        reason: format!("this join token was already used (by node {by}); create a new one"),
                    };
                }
                if *now_ms >= token.expires_at_ms {
                    return Response::Refused { reason: "this join token has expired; create a new one".into() };
                }
                if self.nodes.contains_key(&node.id) || self.removed_nodes.contains_key(&node.id) {
                    return Response::Refused { reason: format!("node id {} is already taken", node.id) };
                }
                if self.nodes.values().any(|n| n.name == node.name) {
                    return Response::Refused {
                        reason: format!("a node named `{}` is already a member; choose another --name", node.name),
                    };
                }
                token.used_by = Some(node.id);
                self.nodes.insert(node.id, node.clone());
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::SetNodeFlags { id, cordoned, down, draining } => {
                let Some(n) = self.nodes.get_mut(id) else {
                    return Response::Refused { reason: format!("unknown node {id}") };
                };
                let before = (n.cordoned, n.down, n.draining);
                if let Some(c) = cordoned {
                    n.cordoned = *c;
                }
                if let Some(d) = down {
                    n.down = *d;
                }
                if let Some(d) = draining {
                    n.draining = *d;
                }
                if (n.cordoned, n.down, n.draining) != before {
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::SetSettings(settings) => {
                if let Err(reason) = settings.validate() {
                    return Response::Refused { reason };
                }
                if &self.settings != settings {
                    self.settings = *settings;
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::RemoveNode { id, expected_revision } => {
                if *expected_revision != self.revision {
                    return Response::Conflict { current_revision: self.revision };
                }
                if self.desired.placements.values().any(|nodes| nodes.contains(id))
                    || self.desired.moves.values().any(|m| m.values().any(|n| n == id))
                    || self.desired.databases.values().any(|d| d.members.contains(id))
                {
                    return Response::Refused { reason: format!("node {id} still has replicas placed on it") };
                }
                match self.nodes.get(id) {
                    None => return Response::Refused { reason: format!("unknown node {id}") },
                    // Fail closed: a revocation that matches no certificate revokes nothing.
                    Some(n) if n.cert_fingerprint.is_empty() => {
                        return Response::Refused {
                            reason: format!("node {id} has no recorded certificate fingerprint, so removing it could not revoke its certificate"),
                        }
                    }
                    Some(_) => {}
                }
                let Some(n) = self.nodes.remove(id) else {
                    return Response::Refused { reason: format!("unknown node {id}") };
                };
                self.removed_nodes.insert(*id, n.cert_fingerprint);
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::SetDatabasePrimary { database, expected_term, term, primary } => {
                let db = match database_at_term(&mut self.desired.databases, database, *expected_term) {
                    Ok(db) => db,
                    Err(refused) => return refused,
                };
                if *term <= db.term {
                    return Response::Refused {
                        reason: format!("database `{database}`: term {term} is not newer than term {}", db.term),
                    };
                }
                if *primary as usize >= db.members.len() {
                    return Response::Refused {
                        reason: format!("database `{database}` has {} members, no member {primary}", db.members.len()),
                    };
                }
                db.term = *term;
                db.primary = *primary;
                db.switchover = None;
                db.sync_set = None;
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::SetDatabaseSwitchover { database, expected_term, switchover } => {
                let db = match database_at_term(&mut self.desired.databases, database, *expected_term) {
                    Ok(db) => db,
                    Err(refused) => return refused,
                };
                if let Some(to) = switchover.as_ref().and_then(|s| s.to) {
                    if to as usize >= db.members.len() || to == db.primary {
                        return Response::Refused {
                            reason: format!(
                                "database `{database}`: member {to} cannot be the new primary (members 0..{}, member {} is the primary)",
                                db.members.len(),
                                db.primary
                            ),
                        };
                    }
                }
                if &db.switchover != switchover {
                    db.switchover = switchover.clone();
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::MoveDatabaseMember { database, expected_term, member, from, to } => {
                let to_ok = self.nodes.get(to).is_some_and(|n| !n.down && !n.removing);
                let db = match database_at_term(&mut self.desired.databases, database, *expected_term) {
                    Ok(db) => db,
                    Err(refused) => return refused,
                };
                let refuse = |reason: String| Response::Refused { reason: format!("database `{database}`: {reason}") };
                if *member == db.primary {
                    return refuse(format!("member {member} is the primary; switch it over before it moves"));
                }
                match db.members.get(*member as usize) {
                    None => return refuse(format!("there is no member {member}")),
                    Some(at) if at != from => {
                        return refuse(format!("member {member} is on node {at}, not {from}: it moved meanwhile"))
                    }
                    Some(_) => {}
                }
                if db.members.contains(to) {
                    return refuse(format!("node {to} already runs a member"));
                }
                if !to_ok {
                    return refuse(format!("node {to} is not a live member of the cluster"));
                }
                db.members[*member as usize] = *to;
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::SetDatabaseRestart { database, expected_term, member } => {
                let db = match database_at_term(&mut self.desired.databases, database, *expected_term) {
                    Ok(db) => db,
                    Err(refused) => return refused,
                };
                if let Some(m) = member.filter(|m| *m as usize >= db.members.len()) {
                    return Response::Refused {
                        reason: format!("database `{database}` has no member {m} (members 0..{})", db.members.len()),
                    };
                }
                if &db.restart != member {
                    db.restart = *member;
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::SetDatabaseSyncSet { database, expected_term, sync_set } => {
                let db = match database_at_term(&mut self.desired.databases, database, *expected_term) {
                    Ok(db) => db,
                    Err(refused) => return refused,
                };
                if let Some(set) = sync_set {
                    let bad = set
                        .names
                        .iter()
                        .chain(&set.leaving)
                        .find(|m| **m as usize >= db.members.len() || **m == db.primary);
                    if let Some(m) = bad {
                        return Response::Refused {
                            reason: format!(
                                "database `{database}`: member {m} cannot be a synchronous standby (members 0..{}, member {} is the primary)",
                                db.members.len(),
                                db.primary
                            ),
                        };
                    }
                }
                if &db.sync_set != sync_set {
                    db.sync_set = sync_set.clone();
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::PutSecret { project, name, version } => match crate::secrets::put(self, project, name, version) {
                Ok(_) => {
                    self.revision += 1;
                    Response::Applied { revision: self.revision }
                }
                Err(reason) => Response::Refused { reason },
            },
            Command::SetAcmeConfig { config } => {
                self.acme.config = config.clone();
                // A new CA (or account) may succeed where the old one failed: try now.
                for order in self.acme.orders.values_mut() {
                    order.next_attempt_ms = 0;
                }
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::PutAcmeAccount { directory, credentials } => {
                let r = crate::acme::put_account(self, directory, credentials);
                self.applied(r)
            }
            Command::PutAcmeChallenge { token, key_authorization } => {
                self.acme.challenges.insert(token.clone(), key_authorization.clone());
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::RemoveAcmeChallenge { token } => {
                self.acme.challenges.remove(token);
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::PutAcmeCert { host, cert, key } => {
                let r = crate::acme::put_cert(self, host, cert, key);
                self.applied(r)
            }
            Command::AcmeOrderFailed { host, error, at_ms } => {
                crate::acme::order_failed(self, host, error, *at_ms);
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::RenewAcmeCert { host } => {
                let r = crate::acme::renew(self, host);
                self.applied(r)
            }
            Command::RemoveSecret { project, name } => match crate::secrets::remove(self, project, name) {
                Ok(()) => {
                    self.revision += 1;
                    Response::Applied { revision: self.revision }
                }
                Err(reason) => Response::Refused { reason },
            },
            Command::AddApiToken { id, token } => {
                if self.api_tokens.contains_key(id) {
                    return Response::Refused { reason: format!("token {id} already exists") };
                }
                self.api_tokens.insert(id.clone(), token.clone());
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::RemoveApiToken { id } => {
                if self.api_tokens.remove(id).is_none() {
                    return Response::Refused { reason: format!("there is no token {id}") };
                }
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::RekeySecrets { from, to, resealed } => {
                match crate::secrets::rekey(self, from.as_deref(), to, resealed) {
                    Ok(()) => {
                        self.revision += 1;
                        Response::Applied { revision: self.revision }
                    }
                    Err(reason) => Response::Refused { reason },
                }
            }
            Command::StartRun { job, run } => {
                let r = crate::jobs::start(self, job, run);
                self.applied(r)
            }
            Command::PutRun { job, attempt, run } => {
                let r = crate::jobs::put(self, job, *attempt, run);
                self.applied(r)
            }
            Command::SetJobCursor { job, cursor_ms } => {
                let r = crate::jobs::set_cursor(self, job, *cursor_ms);
                self.applied(r)
            }
            Command::AdvanceRollout { service, generation, rolled } => {
                let Some(rec) = self.desired.services.get_mut(service) else {
                    return Response::Refused { reason: format!("there is no service {service}") };
                };
                match (&mut rec.rollout, rolled) {
                    (Some(_), _) if rec.generation != *generation => {
                        return Response::Refused {
                            reason: format!("{service} is no longer at generation {generation}"),
                        }
                    }
                    (Some(r), Some(n)) if *n > r.rolled => r.rolled = *n,
                    (Some(_), None) => {
                        rec.rollout = None;
                        // The versions only its old replicas read are retired with them.
                        let project = rec.project.clone();
                        crate::secrets::retire_unused(self, &project);
                    }
                    _ => return Response::Refused { reason: format!("{service} has no roll to advance so") },
                }
                self.revision += 1;
                Response::Applied { revision: self.revision }
            }
            Command::SetRemoving { id, removing } => {
                let Some(n) = self.nodes.get_mut(id) else {
                    return Response::Refused { reason: format!("unknown node {id}") };
                };
                if *removing && n.cert_fingerprint.is_empty() {
                    return Response::Refused {
                        reason: format!("node {} has no recorded certificate fingerprint, so removing it could not revoke its certificate", n.name),
                    };
                }
                let before = (n.removing, n.cordoned, n.draining);
                n.removing = *removing;
                if *removing {
                    n.cordoned = true;
                    n.draining = true;
                }
                if (n.removing, n.cordoned, n.draining) != before {
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
            Command::SetNodeLabels { id, set, remove, start_id } => {
                let problem = set
                    .iter()
                    .find_map(|(k, v)| crate::labels::user_label_problem(k, Some(v)))
                    .or_else(|| remove.iter().find_map(|k| crate::labels::user_label_problem(k, None)));
                if let Some(reason) = problem {
                    return Response::Refused { reason };
                }
                let Some(n) = self.nodes.get_mut(id) else {
                    return Response::Refused { reason: format!("unknown node {id}") };
                };
                let before = (n.labels.clone(), n.labels_start_id);
                for k in remove {
                    n.labels.remove(k);
                }
                n.labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                if let Some(s) = start_id {
                    n.labels_start_id = *s;
                }
                if (n.labels.clone(), n.labels_start_id) != before {
                    self.revision += 1;
                }
                Response::Applied { revision: self.revision }
            }
        }
    }
}

/// The database `database` for a compare-and-set on its term: refused when it is unknown
/// or no longer at `expected_term` (its primary changed meanwhile).
fn database_at_term<'a>(
    databases: &'a mut BTreeMap<String, DatabaseRecord>,
    database: &str,
    expected_term: u64,
) -> Result<&'a mut DatabaseRecord, Response> {
    let Some(db) = databases.get_mut(database) else {
        return Err(Response::Refused { reason: format!("unknown database `{database}`") });
    };
    if db.term != expected_term {
        return Err(Response::Refused {
            reason: format!(
                "database `{database}` is at term {}, not {expected_term}: its primary changed meanwhile",
                db.term
            ),
        });
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_placement::Capacity;

    fn node(id: u64) -> NodeRecord {
        NodeRecord::new(
            id,
            format!("node-{id}"),
            "127.0.0.1:7946",
            "default",
            "amd64",
            Capacity { cpu_millis: 2000, memory_bytes: 1 << 30 },
        )
    }

    #[test]
    fn set_desired_is_compare_and_set_on_revision() {
        let mut s = ClusterState::default();
        let ok = s.apply(&Request::new(Command::SetDesired { expected_revision: 0, desired: Desired::default() }));
        assert_eq!(ok, Response::Applied { revision: 1 });
        let stale = s.apply(&Request::new(Command::SetDesired { expected_revision: 0, desired: Desired::default() }));
        assert_eq!(stale, Response::Conflict { current_revision: 1 });
        assert_eq!(s.revision, 1);
    }

    #[test]
    fn upsert_node_is_idempotent() {
        let mut s = ClusterState::default();
        s.apply(&Request::new(Command::UpsertNode(node(1))));
        s.apply(&Request::new(Command::UpsertNode(node(1))));
        assert_eq!(s.revision, 1);
        assert_eq!(s.nodes.len(), 1);
    }

    #[test]
    fn newer_format_is_refused_untouched() {
        let mut s = ClusterState::default();
        let before = s.clone();
        let r = s.apply(&Request { v: FORMAT_VERSION + 1, command: Command::UpsertNode(node(1)) });
        assert_eq!(r, Response::UnsupportedVersion { v: FORMAT_VERSION + 1 });
        assert_eq!(s, before);
    }

    #[test]
    fn node_labels_are_set_and_removed_deterministically() {
        let mut s = ClusterState::default();
        s.apply(&Request::new(Command::UpsertNode(node(1))));
        let label = |set: &[(&str, &str)], remove: &[&str], start_id| Command::SetNodeLabels {
            id: 1,
            set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            remove: remove.iter().map(|k| k.to_string()).collect(),
            start_id,
        };
        let r = s.apply(&Request::new(label(&[("gpu", "true"), ("zone", "b")], &[], None)));
        assert_eq!(r, Response::Applied { revision: 2 });
        let r = s.apply(&Request::new(label(&[("zone", "c")], &["gpu", "absent"], Some(7))));
        assert_eq!(r, Response::Applied { revision: 3 });
        assert_eq!(s.nodes[&1].labels, BTreeMap::from([("zone".to_string(), "c".to_string())]));
        assert_eq!(s.nodes[&1].labels_start_id, 7);
        // the same again changes nothing
        assert_eq!(s.apply(&Request::new(label(&[("zone", "c")], &[], Some(7)))), Response::Applied { revision: 3 });
        // built-ins and bad labels are refused untouched
        let before = s.clone();
        for bad in [label(&[("site", "x")], &[], None), label(&[], &["arch"], None), label(&[("Bad", "x")], &[], None)]
        {
            assert!(matches!(s.apply(&Request::new(bad)), Response::Refused { .. }));
        }
        assert!(matches!(
            s.apply(&Request::new(Command::SetNodeLabels {
                id: 9,
                set: BTreeMap::new(),
                remove: BTreeSet::new(),
                start_id: None
            })),
            Response::Refused { .. }
        ));
        assert_eq!(s, before);
        // selectors see the built-ins too
        let views = s.node_views();
        assert_eq!(
            views[0].labels,
            BTreeMap::from([
                ("arch".to_string(), "amd64".to_string()),
                ("name".to_string(), "node-1".to_string()),
                ("site".to_string(), "default".to_string()),
                ("zone".to_string(), "c".to_string()),
            ])
        );
    }

    #[test]
    fn node_records_stored_before_labels_start_id_still_load() {
        let old = r#"{"id":1,"name":"n1","addr":"127.0.0.1:7946","site":"a","arch":"amd64",
            "capacity":{"cpu_millis":1000,"memory_bytes":1},"labels":{"gpu":"true"},"cordoned":false}"#;
        let n: NodeRecord = serde_json::from_str(old).expect("old record");
        assert_eq!(n.labels_start_id, 0);
        assert_eq!(n.labels["gpu"], "true");
    }

    #[test]
    fn request_roundtrips_through_json() {
        let r = Request::new(Command::UpsertNode(node(7)));
        let text = serde_json::to_string(&r).expect("encode");
        let back: Request = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, r);
    }
}

#[cfg(test)]
mod join_tests {
    //! Join tokens admit exactly one node, only with the right secret, only before expiry.
    use super::*;
    use holdfast_placement::Capacity;

    fn node(id: u64, name: &str) -> NodeRecord {
        NodeRecord {
            cert_fingerprint: "f".into(),
            ..NodeRecord::new(
                id,
                name,
                "127.0.0.2:7946",
                "b",
                "arm64",
                Capacity { cpu_millis: 4000, memory_bytes: 1 << 30 },
            )
        }
    }

    fn with_token() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Request::new(Command::AddJoinToken { id: "t".into(), secret_hash: "h".into(), expires_at_ms: 100 }));
        s
    }

    fn join(s: &mut ClusterState, secret: &str, now: u64, id: u64, name: &str) -> Response {
        s.apply(&Request::new(Command::Join {
            token_id: "t".into(),
            secret_hash: secret.into(),
            now_ms: now,
            node: node(id, name),
        }))
    }

    fn refused(r: Response) -> String {
        match r {
            Response::Refused { reason } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn token_rules() {
        let mut s = with_token();
        assert!(refused(join(&mut s, "wrong", 1, 2, "b")).contains("wrong join token secret"));
        assert!(refused(join(&mut s, "h", 100, 2, "b")).contains("expired"));
        assert!(s.nodes.is_empty(), "nothing half-joined");
        assert_eq!(join(&mut s, "h", 99, 2, "b"), Response::Applied { revision: 2 });
        assert!(refused(join(&mut s, "h", 99, 3, "c")).contains("already used (by node 2)"));
        let mut s2 = with_token();
        s2.apply(&Request::new(Command::UpsertNode(node(9, "b"))));
        assert!(refused(join(&mut s2, "h", 1, 3, "b")).contains("already a member"));
        assert_eq!(s2.join_tokens["t"].used_by, None, "a refused join leaves the token usable");
    }

    #[test]
    fn removed_nodes_are_remembered_and_need_no_replicas() {
        let mut s = with_token();
        join(&mut s, "h", 1, 2, "b");
        s.desired.placements.insert("web".into(), vec![2]);
        let r = s.apply(&Request::new(Command::RemoveNode { id: 2, expected_revision: s.revision }));
        assert!(refused(r).contains("still has replicas"));
        s.desired.placements.clear();
        s.apply(&Request::new(Command::RemoveNode { id: 2, expected_revision: s.revision }));
        assert!(!s.nodes.contains_key(&2));
        assert_eq!(s.removed_nodes.get(&2).map(String::as_str), Some("f"));
    }

    #[test]
    fn a_node_without_a_recorded_fingerprint_cannot_be_removed() {
        // Fail closed: an empty revocation entry would match no certificate.
        let mut s = with_token();
        let mut n = node(2, "b");
        n.cert_fingerprint.clear();
        s.apply(&Request::new(Command::UpsertNode(n)));
        let r = s.apply(&Request::new(Command::SetRemoving { id: 2, removing: true }));
        assert!(refused(r).contains("no recorded certificate fingerprint"));
        let r = s.apply(&Request::new(Command::RemoveNode { id: 2, expected_revision: s.revision }));
        assert!(refused(r).contains("no recorded certificate fingerprint"));
        assert!(s.nodes.contains_key(&2) && s.removed_nodes.is_empty());
    }

    #[test]
    fn removing_a_node_drains_it_and_cancelling_keeps_it_cordoned() {
        let mut s = with_token();
        s.apply(&Request::new(Command::UpsertNode(node(2, "b"))));
        let r0 = s.revision;
        s.apply(&Request::new(Command::SetRemoving { id: 2, removing: true }));
        let n = &s.nodes[&2];
        assert!(n.removing && n.cordoned && n.draining);
        assert_eq!(s.revision, r0 + 1);
        s.apply(&Request::new(Command::SetRemoving { id: 2, removing: true }));
        assert_eq!(s.revision, r0 + 1, "no change, no revision");
        s.apply(&Request::new(Command::SetRemoving { id: 2, removing: false }));
        let n = &s.nodes[&2];
        assert!(!n.removing && n.cordoned && n.draining);
    }
}
