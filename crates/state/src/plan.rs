//! Pure planning of changes to the desired state.
//!
//! Every user-facing change (deploy, scale, restart, remove, node labels) is planned here
//! from the current [`ClusterState`]: the result is a [`Plan`] to show the user and the
//! next [`Desired`] to propose through Raft with the revision it was planned on.
//! [`plan_reschedule`] moves replicas after the cluster itself changed (a node down,
//! drained or relabelled). Databases are planned with their services
//! ([`crate::database`] places their members); a deploy that creates a database or a
//! user needs passwords from the caller ([`plan_deploy_with`]).
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use holdfast_placement::{Assignment, Capacity, NodeId, PlacementError, Workload};
use holdfast_spec::{RouteSpec, ServiceSpec, Stack};
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::labels::{split_changes, LabelChange};
use crate::model::{ClusterState, DatabaseRecord, Desired, ServiceRecord};

/// What a change does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
    Unchanged,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
            ChangeKind::Unchanged => "unchanged",
        })
    }
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// `service web` or `route demo.localhost/`.
    pub target: String,
    /// What changes, e.g. `replicas: 2 -> 3`; empty for create/delete/unchanged.
    pub details: Vec<String>,
    /// True when running instances are replaced (not only added or removed).
    pub replaces_instances: bool,
}

/// A planned change, shown by `diff` and `deploy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// True when applying the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.changes.iter().all(|c| c.kind == ChangeKind::Unchanged)
    }
}

/// Why a change cannot be planned. Nothing is changed when planning fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("invalid spec:\n{0}")]
    InvalidSpec(String),
    #[error(
        "service `{service}` already belongs to project `{owner}`; project `{project}` cannot take it over (rename it, or remove it from `{owner}` first)"
    )]
    ServiceOwnedByOtherProject { service: String, owner: String, project: String },
    #[error("route `{host}{path}` is already served by project `{owner}`'s service `{service}`")]
    RouteTaken { host: String, path: String, owner: String, service: String },
    #[error("unknown service `{name}`{hint}")]
    UnknownService { name: String, hint: String },
    #[error("replicas must be between 0 and 1000, got {0}")]
    BadReplicas(u64),
    #[error("unknown node `{name}`{hint}")]
    UnknownNode { name: String, hint: String },
    #[error("{0}")]
    BadLabel(String),
    #[error(
        "changing the labels of node {node} would leave replicas with no node to run on, so nothing was changed:\n  {detail}\n(label another node first, or change the service's placement)"
    )]
    LabelsStrandReplicas { node: String, detail: String },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(
        "database `{database}` already belongs to project `{owner}`; project `{project}` cannot take it over (rename it, or remove it from `{owner}` first)"
    )]
    DatabaseOwnedByOtherProject { database: String, owner: String, project: String },
    #[error("the name `{name}` of {what} is already taken by {taken_by}; rename one")]
    NameTaken { name: String, what: String, taken_by: String },
    #[error(
        "database `{database}` needs a new password (for role `{role}`), but this plan was made without a password source (use plan_deploy_with)"
    )]
    NoPasswordSource { database: String, role: String },
    #[error("the name `{name}` of job `{name}` of project `{project}` is already taken by {taken_by}; rename one")]
    JobNameTaken { name: String, project: String, taken_by: String },
    #[error(
        "{reader} reads secret {secret}, which has no value yet: set it first with `holdfast secret set {secret}` (from stdin or --from-file)"
    )]
    SecretWithoutValue { reader: String, secret: String },
    /// A database cannot be placed or changed so; the text says why and what to do.
    #[error("{0}")]
    Database(String),
    #[error(
        "zone `{zone}` already belongs to project `{owner}`; project `{project}` cannot take it over (remove it from `{owner}` first)"
    )]
    ZoneTaken { zone: String, owner: String, project: String },
    #[error(
        "zone `{zone}` has no edge node to answer it: start at least one node with `--edge --public-address IP` (or `holdfast join ... --edge`) first, then delegate the zone to the edge nodes (ns1.{zone}, ns2.{zone}, ...)"
    )]
    ZoneWithoutEdges { zone: String },
    #[error("cannot place service `{service}`: {message}")]
    NoImageForArch { service: String, message: String },
}

fn unknown_service(state: &ClusterState, name: &str) -> PlanError {
    let known: Vec<&str> = state.desired.services.keys().map(String::as_str).collect();
    let hint = if known.is_empty() {
        " (no services are deployed)".to_string()
    } else {
        format!(" (services: {})", known.join(", "))
    };
    PlanError::UnknownService { name: name.to_string(), hint }
}

/// Plans a deploy of `stack` that needs no new password: [`plan_deploy_with`] without a
/// password source. A stack that creates a database, or adds a user to one, is refused
/// with [`PlanError::NoPasswordSource`]; redeploying existing databases unchanged works.
pub fn plan_deploy(state: &ClusterState, stack: &Stack) -> Result<(Plan, Desired), PlanError> {
    plan_deploy_inner(state, stack, &BTreeMap::new(), &mut || None)
}

/// The architectures each image offers (reference → `amd64`, `arm64`, ...), as read
/// from the registries before planning.
pub type ImageArchs = BTreeMap<String, std::collections::BTreeSet<String>>;

/// [`plan_deploy_with`], knowing the architectures the stack's images offer: a service's
/// replicas go only on nodes of those, and a service no node can run is refused, naming
/// the architectures on both sides. An image missing from `images` keeps what the
/// service's record knew for the same reference (every node, for a new one).
pub fn plan_deploy_images(
    state: &ClusterState,
    stack: &Stack,
    images: &ImageArchs,
    passwords: &mut dyn FnMut() -> String,
) -> Result<(Plan, Desired), PlanError> {
    plan_deploy_inner(state, stack, images, &mut || Some(passwords()))
}

/// Plans a deploy of `stack`: the project's services, routes and databases become
/// exactly those of the stack; other projects are untouched. `passwords` is called once
/// for each database role that needs a new password (a new database's superuser,
/// replication role and users; a user added later); existing passwords are kept.
pub fn plan_deploy_with(
    state: &ClusterState,
    stack: &Stack,
    passwords: &mut dyn FnMut() -> String,
) -> Result<(Plan, Desired), PlanError> {
    plan_deploy_inner(state, stack, &BTreeMap::new(), &mut || Some(passwords()))
}

fn plan_deploy_inner(
    state: &ClusterState,
    stack: &Stack,
    images: &ImageArchs,
    passwords: &mut dyn FnMut() -> Option<String>,
) -> Result<(Plan, Desired), PlanError> {
    if let Err(errors) = stack.validate() {
        let text = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
        return Err(PlanError::InvalidSpec(text));
    }
    let project = &stack.project;
    let current = &state.desired;
    if let Some((svc, secret)) = crate::secrets::missing_values(state, stack).first() {
        return Err(PlanError::SecretWithoutValue {
            reader: svc.to_string(),
            secret: crate::secrets::key(project, secret),
        });
    }
    for name in stack.services.keys() {
        // A job's name (another project's, or one this stack keeps) is not free either.
        if let Some(job) = current.jobs.get(name).filter(|j| &j.project != project || stack.jobs.contains_key(name)) {
            return Err(PlanError::NameTaken {
                name: name.clone(),
                what: format!("service `{name}` of project `{project}`"),
                taken_by: format!("job `{name}` of project `{}`", job.project),
            });
        }
        if let Some(rec) = current.services.get(name) {
            if &rec.project != project {
                return Err(PlanError::ServiceOwnedByOtherProject {
                    service: name.clone(),
                    owner: rec.project.clone(),
                    project: project.clone(),
                });
            }
        }
    }
    for name in stack.databases.keys() {
        if let Some(rec) = current.databases.get(name) {
            if &rec.project != project {
                return Err(PlanError::DatabaseOwnedByOtherProject {
                    database: name.clone(),
                    owner: rec.project.clone(),
                    project: project.clone(),
                });
            }
        }
    }
    // Database names and their endpoint names are DNS names beside services, in the
    // whole cluster (the stack itself was checked by `validate`).
    let other_dbs = current.databases.iter().filter(|(_, r)| &r.project != project).map(|(n, r)| (n, &r.project));
    let stack_dbs = stack.databases.keys().map(|n| (n, project));
    for (db, owner) in other_dbs.chain(stack_dbs) {
        let mut names = vec![db.clone()];
        names.extend(holdfast_spec::DbEndpoint::ALL.iter().map(|e| format!("{db}-{e}")));
        let services = current
            .services
            .iter()
            .filter(|(_, r)| &r.project != project)
            .map(|(n, r)| (n, &r.project))
            .chain(stack.services.keys().map(|n| (n, project)));
        for (svc, svc_owner) in services {
            if names.contains(svc) && (owner != project || svc_owner != project) {
                return Err(PlanError::NameTaken {
                    name: svc.clone(),
                    what: format!("service `{svc}` of project `{svc_owner}`"),
                    taken_by: format!("database `{db}` of project `{owner}` (a database's name and `-rw`, `-ro`, `-r` names are its endpoints)"),
                });
            }
        }
    }
    let owner_of = |route: &RouteSpec| current.services.get(&route.service).map(|r| r.project.clone());
    for route in &stack.routes {
        if let Some(taken) = current
            .routes
            .iter()
            .find(|r| r.host == route.host && r.path == route.path && owner_of(r).as_deref() != Some(project.as_str()))
        {
            return Err(PlanError::RouteTaken {
                host: taken.host.clone(),
                path: taken.path.clone(),
                owner: owner_of(taken).unwrap_or_default(),
                service: taken.service.clone(),
            });
        }
    }

    let new_generation = state.revision + 1;
    let mut plan = Plan::default();
    let mut services: BTreeMap<String, ServiceRecord> =
        current.services.iter().filter(|(_, r)| &r.project != project).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, spec) in &stack.services {
        let record = match current.services.get(name) {
            None => {
                plan.changes.push(change(ChangeKind::Create, format!("service {name}"), vec![], false));
                let mut taken: Vec<Ipv4Addr> = services.values().map(|r| r.address).collect();
                taken.extend(crate::database::addresses_in_use(&BTreeMap::new(), &current.databases));
                let address = service_address(project, name, &taken);
                ServiceRecord::new(project.clone(), spec.clone(), address, new_generation)
            }
            Some(old) => {
                let details = describe_service_change(&old.spec, spec);
                let replaces = needs_replacement(&old.spec, spec);
                let kind = if details.is_empty() { ChangeKind::Unchanged } else { ChangeKind::Update };
                plan.changes.push(change(kind, format!("service {name}"), details, replaces));
                ServiceRecord {
                    project: project.clone(),
                    spec: spec.clone(),
                    address: old.address,
                    generation: if replaces { new_generation } else { old.generation },
                    // A deploy that replaces instances replaces them all (each node one
                    // at a time); a roll in progress otherwise goes on.
                    rollout: if replaces { None } else { old.rollout.clone() },
                    image_archs: old.image_archs.clone().filter(|_| old.spec.image == spec.image),
                }
            }
        };
        let mut record = record;
        if let Some(image) = &spec.image {
            if let Some(archs) = images.get(image) {
                record.image_archs = Some(archs.clone());
            }
            if let Some(archs) = &record.image_archs {
                image_fits_some_node(state, name, image, archs)?;
            }
        } else {
            record.image_archs = None;
        }
        services.insert(name.clone(), record);
    }
    for (name, _) in state.project_services(project) {
        if !stack.services.contains_key(name) {
            plan.changes.push(change(ChangeKind::Delete, format!("service {name}"), vec![], true));
        }
    }

    let mut routes: Vec<RouteSpec> =
        current.routes.iter().filter(|r| owner_of(r).as_deref() != Some(project.as_str())).cloned().collect();
    let old_routes: Vec<&RouteSpec> =
        current.routes.iter().filter(|r| owner_of(r).as_deref() == Some(project.as_str())).collect();
    for r in &stack.routes {
        let kind = if old_routes.contains(&r) { ChangeKind::Unchanged } else { ChangeKind::Create };
        plan.changes.push(change(kind, route_target(r), vec![], false));
        routes.push(r.clone());
    }
    for r in old_routes.iter().filter(|r| !stack.routes.contains(r)) {
        plan.changes.push(change(ChangeKind::Delete, route_target(r), vec![], false));
    }
    routes.sort_by(|a, b| (&a.host, &a.path).cmp(&(&b.host, &b.path)));

    let zones = plan_zones(state, stack, &mut plan)?;
    let databases = plan_databases(state, stack, &services, new_generation, &mut plan, passwords)?;
    let mut desired = finish(state, services, routes, databases)?;
    desired.jobs = crate::jobs::plan_jobs(state, stack, &mut plan)?;
    desired.zones = zones;
    add_moves(state, &mut plan, &desired);
    Ok((plan, desired))
}

/// The databases after a deploy of `stack`: the project's become exactly the stack's
/// (members placed, passwords kept or asked for, addresses kept or chosen).
fn plan_databases(
    state: &ClusterState,
    stack: &Stack,
    services: &BTreeMap<String, ServiceRecord>,
    new_generation: u64,
    plan: &mut Plan,
    passwords: &mut dyn FnMut() -> Option<String>,
) -> Result<BTreeMap<String, DatabaseRecord>, PlanError> {
    let project = &stack.project;
    let current = &state.desired.databases;
    let mut databases: BTreeMap<String, DatabaseRecord> =
        current.iter().filter(|(_, r)| &r.project != project).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (name, spec) in &stack.databases {
        let old = current.get(name);
        // Placed against everything else as it will be: other databases as planned so far
        // and the current members of the ones still to come.
        let mut all = current.clone();
        all.retain(|k, r| &r.project != project || stack.databases.contains_key(k));
        all.extend(databases.iter().map(|(k, v)| (k.clone(), v.clone())));
        let used = crate::database::used_except(state, services, &all, name);
        let members = crate::database::place_members(state, name, spec, old, &used)?;
        let credentials = crate::database::credentials(name, old.map(|o| &o.credentials), &spec.users, passwords)?;
        let nodes: Vec<String> = members.nodes.iter().map(|n| state.node_name(*n)).collect();
        let record = match old {
            None => {
                let mut taken = crate::database::addresses_in_use(services, &all);
                taken.extend(crate::database::addresses_in_use(&BTreeMap::new(), current));
                let addresses = crate::database::addresses(project, name, spec.engine, &mut taken);
                plan.changes.push(change(
                    ChangeKind::Create,
                    format!("database {name}"),
                    vec![format!("members: {}", nodes.join(" ")), members.describe_group(spec.engine)],
                    false,
                ));
                DatabaseRecord {
                    project: project.clone(),
                    spec: spec.clone(),
                    generation: new_generation,
                    members: members.nodes,
                    term: 1,
                    primary: 0,
                    credentials,
                    addresses,
                    switchover: None,
                    sync_set: None,
                    restart: None,
                }
            }
            Some(old) => {
                if old.spec.engine != spec.engine {
                    return Err(PlanError::Database(format!(
                        "database `{name}` runs {}; it cannot become {} in place (its data would not carry over): deploy the {} database under another name, or remove `{name}` first",
                        old.spec.engine.product(),
                        spec.engine.product(),
                        spec.engine.product()
                    )));
                }
                if let Some(why) = crate::database::refused_decrease(name, &old.spec, spec) {
                    return Err(PlanError::Database(why));
                }
                let mut details = crate::database::describe_change(&old.spec, spec);
                for (i, (a, b)) in old.members.iter().zip(&members.nodes).enumerate() {
                    if a != b {
                        details.push(format!("{name}-{i} moves {} -> {}", state.node_name(*a), state.node_name(*b)));
                    }
                }
                for (i, b) in members.nodes.iter().enumerate().skip(old.members.len()) {
                    details.push(format!("{name}-{i} on {}", state.node_name(*b)));
                }
                let replaces = crate::database::needs_new_generation(&old.spec, spec);
                let kind = if details.is_empty() { ChangeKind::Unchanged } else { ChangeKind::Update };
                plan.changes.push(change(kind, format!("database {name}"), details, replaces));
                // Other members or another `sync`: every other member again (a superset
                // of any chosen list, so a failover never counts too few); the leader
                // chooses anew.
                let same = old.members == members.nodes && old.spec.sync == spec.sync;
                DatabaseRecord {
                    project: project.clone(),
                    spec: spec.clone(),
                    generation: if replaces { new_generation } else { old.generation },
                    sync_set: if same { old.sync_set.clone() } else { None },
                    members: members.nodes,
                    credentials,
                    ..old.clone()
                }
            }
        };
        databases.insert(name.clone(), record);
    }
    for (name, r) in current {
        if &r.project == project && !stack.databases.contains_key(name) {
            plan.changes.push(change(ChangeKind::Delete, format!("database {name}"), vec![], true));
        }
    }
    Ok(databases)
}

/// Adds the replicas that move to the lines of their services.
fn add_moves(state: &ClusterState, plan: &mut Plan, desired: &Desired) {
    for m in moves_between(&state.desired.placements, &desired.placements) {
        let target = format!("service {}", m.service);
        if let Some(c) = plan.changes.iter_mut().find(|c| c.target == target) {
            if c.kind == ChangeKind::Unchanged {
                c.kind = ChangeKind::Update;
            }
            c.details.push(format!(
                "{}-{} moves {} -> {}",
                m.service,
                m.replica,
                state.node_name(m.from),
                state.node_name(m.to)
            ));
        }
    }
}

/// Plans a change of one service's replica count. Existing instances keep running.
pub fn plan_scale(state: &ClusterState, service: &str, replicas: u64) -> Result<(Plan, Desired), PlanError> {
    let replicas32 = u32::try_from(replicas).ok().filter(|r| *r <= 1000).ok_or(PlanError::BadReplicas(replicas))?;
    let mut services = state.desired.services.clone();
    let record = services.get_mut(service).ok_or_else(|| unknown_service(state, service))?;
    let before = record.spec.replicas;
    record.spec.replicas = replicas32;
    let (kind, details) = if before == replicas32 {
        (ChangeKind::Unchanged, vec![])
    } else {
        (ChangeKind::Update, vec![format!("replicas: {before} -> {replicas32}")])
    };
    let plan = Plan { changes: vec![change(kind, format!("service {service}"), details, false)] };
    Ok((plan, finish(state, services, state.desired.routes.clone(), state.desired.databases.clone())?))
}

/// Plans a rolling restart of every instance of one service.
pub fn plan_restart(state: &ClusterState, service: &str) -> Result<(Plan, Desired), PlanError> {
    let mut services = state.desired.services.clone();
    let record = services.get_mut(service).ok_or_else(|| unknown_service(state, service))?;
    // One instance at a time across the cluster.
    let placed = state.desired.placements.get(service).is_some_and(|p| !p.is_empty());
    record.begin_rollout(placed, state.revision + 1, None);
    let plan = Plan {
        changes: vec![change(
            ChangeKind::Update,
            format!("service {service}"),
            vec!["restart all instances".into()],
            true,
        )],
    };
    Ok((plan, finish(state, services, state.desired.routes.clone(), state.desired.databases.clone())?))
}

/// Plans the removal of one service and of the routes that point at it.
pub fn plan_remove(state: &ClusterState, service: &str) -> Result<(Plan, Desired), PlanError> {
    let mut services = state.desired.services.clone();
    services.remove(service).ok_or_else(|| unknown_service(state, service))?;
    let mut plan = Plan { changes: vec![change(ChangeKind::Delete, format!("service {service}"), vec![], true)] };
    let mut routes = state.desired.routes.clone();
    routes.retain(|r| {
        let keep = r.service != service;
        if !keep {
            plan.changes.push(change(ChangeKind::Delete, route_target(r), vec![], false));
        }
        keep
    });
    Ok((plan, finish(state, services, routes, state.desired.databases.clone())?))
}

/// The outcome of [`plan_reschedule`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reschedule {
    /// The next desired state, when some replica moves.
    pub desired: Option<Desired>,
    /// The replicas that move.
    pub moves: Vec<Move>,
    /// Replicas that break a rule where they run (node down or gone, relabelled, an
    /// anti-affine service beside them) but cannot move anywhere: they stay, and why.
    pub stuck: Vec<PlacementError>,
    /// Databases whose members could not be re-placed (they stay), and why.
    pub databases_stuck: Vec<String>,
}

/// Re-places replicas that may no longer stay where they are: on nodes that are down or
/// gone (a replica being moved off such a node goes where its new instance already
/// runs), that no longer match the service's node selector, or beside an anti-affine
/// service. The others stay; draining nodes are emptied gradually by
/// [`crate::drain::plan_drain_step`] instead. A replica that fits nowhere else stays too
/// and is reported in `stuck`, so it never blocks the others.
pub fn plan_reschedule(state: &ClusterState) -> Result<Reschedule, PlanError> {
    let current = &state.desired.placements;
    let previous = crate::drain::previous_with_moves(state);
    let (databases, mut db_moves, databases_stuck) = reschedule_databases(state);
    let r = holdfast_placement::reschedule(
        &workloads(&state.desired.services),
        &state.node_views_with(&databases),
        &previous,
    )?;
    if &r.assignment == current && databases == state.desired.databases {
        return Ok(Reschedule { desired: None, moves: Vec::new(), stuck: r.stuck, databases_stuck });
    }
    let mut moves = moves_between(current, &r.assignment);
    moves.append(&mut db_moves);
    let carried = crate::drain::carry_moves(state, &state.desired.services, &r.assignment);
    let desired = Desired {
        services: state.desired.services.clone(),
        routes: state.desired.routes.clone(),
        placements: r.assignment,
        moves: carried,
        databases,
        jobs: state.desired.jobs.clone(),
        zones: state.desired.zones.clone(),
    };
    Ok(Reschedule { desired: Some(desired), moves, stuck: r.stuck, databases_stuck })
}

/// Re-places database members on nodes that are down or gone (never the primary's, see
/// [`crate::database`]) or that no longer qualify; a database that cannot be re-placed
/// stays as it is and is reported.
fn reschedule_databases(state: &ClusterState) -> (BTreeMap<String, DatabaseRecord>, Vec<Move>, Vec<String>) {
    let mut databases = state.desired.databases.clone();
    let mut moves = Vec::new();
    let mut stuck = Vec::new();
    let names: Vec<String> = databases.keys().cloned().collect();
    for name in names {
        let Some(record) = databases.get(&name).cloned() else { continue };
        let needs = record
            .members
            .iter()
            .enumerate()
            .any(|(i, n)| i as u32 != record.primary && state.nodes.get(n).is_none_or(|n| n.down));
        if !needs {
            continue;
        }
        let used = crate::database::used_except(state, &state.desired.services, &databases, &name);
        match crate::database::place_members(state, &name, &record.spec, Some(&record), &used) {
            Ok(m) => {
                for (i, (a, b)) in record.members.iter().zip(&m.nodes).enumerate() {
                    if a != b {
                        moves.push(Move { service: name.clone(), replica: i as u32, from: *a, to: *b });
                    }
                }
                if let Some(r) = databases.get_mut(&name) {
                    r.members = m.nodes;
                }
            }
            Err(e) => stuck.push(e.to_string()),
        }
    }
    (databases, moves, stuck)
}

/// A planned change of one node's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelPlan {
    pub node: NodeId,
    /// The Raft command to propose (a [`Command::SetNodeLabels`]).
    pub command: Command,
    /// The node's user labels after the change.
    pub labels: BTreeMap<String, String>,
    /// False when the labels are already so.
    pub changed: bool,
    /// Replicas that move because of it.
    pub moves: Vec<Move>,
}

/// Plans `holdfast node label NODE k=v k2-`: checks every change, and refuses one that
/// would leave a replica with no node to run on (a selector nothing else matches).
pub fn plan_node_labels(state: &ClusterState, node: &str, changes: &[LabelChange]) -> Result<LabelPlan, PlanError> {
    let Some(record) = state.nodes.values().find(|n| n.name == node || n.id.to_string() == node) else {
        let known: Vec<&str> = state.nodes.values().map(|n| n.name.as_str()).collect();
        return Err(PlanError::UnknownNode { name: node.to_string(), hint: format!(" (nodes: {})", known.join(", ")) });
    };
    if changes.is_empty() {
        return Err(PlanError::BadLabel("no label given: write KEY=VALUE to set a label or KEY- to remove one".into()));
    }
    for c in changes {
        let (key, value, arg) = match c {
            LabelChange::Set(k, v) => (k, Some(v.as_str()), format!("{k}={v}")),
            LabelChange::Remove(k) => (k, None, format!("{k}-")),
        };
        let problem = match value {
            Some("") => Some("the value is empty".to_string()),
            _ => crate::labels::user_label_problem(key, value),
        };
        if let Some(p) = problem {
            return Err(PlanError::BadLabel(format!("invalid label `{arg}`: {p}")));
        }
    }
    let (set, remove) = split_changes(changes).map_err(PlanError::BadLabel)?;
    let mut labels = record.labels.clone();
    for k in &remove {
        labels.remove(k);
    }
    labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let changed = labels != record.labels;
    let mut after = state.clone();
    if let Some(n) = after.nodes.get_mut(&record.id) {
        n.labels = labels.clone();
    }
    let before = plan_reschedule(state)?;
    let planned = plan_reschedule(&after)?;
    let was_stuck: Vec<(&str, Option<u32>)> = before.stuck.iter().map(|e| (e.service(), e.replica())).collect();
    let stranded: Vec<String> = planned
        .stuck
        .iter()
        .filter(|e| !was_stuck.contains(&(e.service(), e.replica())))
        .map(|e| e.to_string())
        .collect();
    if !stranded.is_empty() {
        return Err(PlanError::LabelsStrandReplicas { node: record.name.clone(), detail: stranded.join("\n  ") });
    }
    let command = Command::SetNodeLabels { id: record.id, set, remove, start_id: None };
    Ok(LabelPlan { node: record.id, command, labels, changed, moves: planned.moves })
}

fn finish(
    state: &ClusterState,
    services: BTreeMap<String, ServiceRecord>,
    routes: Vec<RouteSpec>,
    databases: BTreeMap<String, DatabaseRecord>,
) -> Result<Desired, PlanError> {
    let previous = crate::drain::previous_with_moves(state);
    let placements = holdfast_placement::place(&workloads(&services), &state.node_views_with(&databases), &previous)?;
    let moves = crate::drain::carry_moves(state, &services, &placements);
    Ok(Desired {
        services,
        routes,
        placements,
        moves,
        databases,
        jobs: state.desired.jobs.clone(),
        zones: state.desired.zones.clone(),
    })
}

/// Refuses a service whose image offers no architecture of any node that may take
/// replicas, naming what the image offers and what the nodes are.
fn image_fits_some_node(
    state: &ClusterState,
    service: &str,
    image: &str,
    archs: &std::collections::BTreeSet<String>,
) -> Result<(), PlanError> {
    let live: Vec<&crate::model::NodeRecord> =
        state.nodes.values().filter(|n| !n.down && !n.cordoned && !n.draining).collect();
    if live.is_empty() || live.iter().any(|n| archs.contains(&n.arch)) {
        return Ok(());
    }
    let mut by_arch: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in &live {
        by_arch.entry(n.arch.as_str()).or_default().push(n.name.as_str());
    }
    by_arch.values_mut().for_each(|names| names.sort_unstable());
    let nodes = by_arch
        .iter()
        .map(|(arch, names)| format!("{} {} {arch}", names.join(", "), if names.len() == 1 { "is" } else { "are" }))
        .collect::<Vec<_>>()
        .join("; ");
    let offered = archs.iter().map(|a| format!("linux/{a}")).collect::<Vec<_>>().join(", ");
    let wanted = by_arch.keys().map(|a| format!("linux/{a}")).collect::<Vec<_>>().join(" or ");
    Err(PlanError::NoImageForArch {
        service: service.to_string(),
        message: format!("{image} has no {wanted} image (it offers {offered}); {nodes}"),
    })
}

/// Placement input: every service as the scheduler sees it (request, selector, spread,
/// anti-affinity; an image's architectures as an `arch` selector of alternatives).
pub fn workloads(services: &BTreeMap<String, ServiceRecord>) -> Vec<Workload> {
    services
        .iter()
        .map(|(name, r)| {
            let request = Capacity {
                cpu_millis: r.spec.resources.cpu_millis.map(u64::from).unwrap_or(0),
                memory_bytes: r.spec.resources.memory_bytes.unwrap_or(0),
            };
            let mut w = Workload::new(name.clone(), r.spec.replicas, request);
            w.selector = r.spec.placement.node_selector.clone();
            if let Some(archs) = r.image_archs.as_ref().filter(|a| !a.is_empty()) {
                let offered: Vec<&str> = archs.iter().map(String::as_str).collect();
                match w.selector.get(holdfast_placement::LABEL_ARCH) {
                    // The user's own `arch` stays; when the image lacks it, no node
                    // matches and placement says so.
                    Some(user) if offered.contains(&user.as_str()) => {}
                    Some(_) => {
                        w.selector.insert(holdfast_placement::LABEL_ARCH.into(), "-none-".into());
                    }
                    None => {
                        let any_of = offered.join(&holdfast_placement::ANY_OF.to_string());
                        w.selector.insert(holdfast_placement::LABEL_ARCH.into(), any_of);
                    }
                }
            }
            w.spread = match r.spec.placement.spread {
                holdfast_spec::Spread::Nodes => holdfast_placement::Spread::Nodes,
                holdfast_spec::Spread::Sites => holdfast_placement::Spread::Sites,
            };
            w.anti_affinity = r.spec.placement.anti_affinity.iter().cloned().collect();
            w
        })
        .collect()
}

/// One replica that runs on another node after a change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move {
    pub service: String,
    pub replica: u32,
    pub from: NodeId,
    pub to: NodeId,
}

impl Move {
    /// One line for people, with node names from `state`: `web-1: n2 -> n3`.
    pub fn describe(&self, state: &ClusterState) -> String {
        format!("{}-{}: {} -> {}", self.service, self.replica, state.node_name(self.from), state.node_name(self.to))
    }
}

/// Replicas that run on another node in `after` than in `before`.
pub fn moves_between(before: &Assignment, after: &Assignment) -> Vec<Move> {
    let mut out = Vec::new();
    for (service, new) in after {
        let Some(old) = before.get(service) else { continue };
        for (i, (a, b)) in old.iter().zip(new).enumerate() {
            if a != b {
                out.push(Move { service: service.clone(), replica: i as u32, from: *a, to: *b });
            }
        }
    }
    out
}

/// [`Move::describe`] for each move.
pub fn describe_moves(state: &ClusterState, moves: &[Move]) -> Vec<String> {
    moves.iter().map(|m| m.describe(state)).collect()
}

/// The stable address of a new service: a hash of `project/name` mapped into
/// 127.64.0.0/10 (avoiding .0 and .255 host bytes), moved on past addresses in `taken`.
pub fn service_address(project: &str, name: &str, taken: &[Ipv4Addr]) -> Ipv4Addr {
    // FNV-1a: stable across versions and platforms (unlike std's hasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in project.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const SPAN: u32 = 1 << 22; // 127.64.0.0/10
    let mut i = h % SPAN;
    loop {
        let candidate = Ipv4Addr::from(0x7f40_0000 | i);
        let last = candidate.octets()[3];
        if last != 0 && last != 255 && !taken.contains(&candidate) {
            return candidate;
        }
        i = (i + 1) % SPAN;
    }
}

fn change(kind: ChangeKind, target: String, details: Vec<String>, replaces_instances: bool) -> Change {
    Change { kind, target, details, replaces_instances }
}

/// The zones after a deploy of `stack`: the project's become exactly the stack's; a zone
/// of another project, or a zone with no edge node to answer it, is refused.
fn plan_zones(
    state: &ClusterState,
    stack: &Stack,
    plan: &mut Plan,
) -> Result<BTreeMap<String, crate::model::ZoneRecord>, PlanError> {
    let project = &stack.project;
    let current = &state.desired.zones;
    let mut zones: BTreeMap<String, crate::model::ZoneRecord> =
        current.iter().filter(|(_, z)| &z.project != project).map(|(k, v)| (k.clone(), v.clone())).collect();
    let has_edge = state.nodes.values().any(|n| n.edge.is_some() && !n.removing);
    for zone in &stack.zones {
        if let Some(owner) = zones.get(&zone.name) {
            return Err(PlanError::ZoneTaken {
                zone: zone.name.clone(),
                owner: owner.project.clone(),
                project: project.clone(),
            });
        }
        if !has_edge {
            return Err(PlanError::ZoneWithoutEdges { zone: zone.name.clone() });
        }
        let kind = match current.get(&zone.name) {
            None => ChangeKind::Create,
            Some(old) if old.spec == *zone => ChangeKind::Unchanged,
            Some(_) => ChangeKind::Update,
        };
        let details = vec![format!("{} records, ttl {}s", zone.records.len(), zone.ttl)];
        plan.changes.push(change(kind, format!("zone {}", zone.name), details, false));
        zones.insert(zone.name.clone(), crate::model::ZoneRecord { project: project.clone(), spec: zone.clone() });
    }
    for (name, _) in current.iter().filter(|(n, z)| &z.project == project && !stack.zones.iter().any(|s| &s.name == *n))
    {
        plan.changes.push(change(ChangeKind::Delete, format!("zone {name}"), vec![], false));
    }
    Ok(zones)
}

fn route_target(r: &RouteSpec) -> String {
    format!("route {}{} -> {}:{}", r.host, r.path, r.service, r.port)
}

/// True when a change from `old` to `new` requires replacing running instances: anything
/// but the replica count and the placement rules (a replica that may stay keeps running;
/// one that must move is started on its new node).
fn needs_replacement(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    let mut a = old.clone();
    a.replicas = new.replicas;
    a.placement = new.placement.clone();
    &a != new
}

/// Human-readable field changes. Environment values are never shown (they may be secrets).
fn describe_service_change(old: &ServiceSpec, new: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    if old.run != new.run {
        out.push(format!("run: {:?} -> {:?}", old.run.argv(), new.run.argv()));
    }
    if old.replicas != new.replicas {
        out.push(format!("replicas: {} -> {}", old.replicas, new.replicas));
    }
    if old.workdir != new.workdir {
        out.push(format!("workdir: {:?} -> {:?}", old.workdir, new.workdir));
    }
    let mut env = Vec::new();
    for (k, v) in &new.env {
        match old.env.get(k) {
            None => env.push(format!("+{k}")),
            Some(ov) if ov != v => env.push(format!("~{k}")),
            Some(_) => {}
        }
    }
    for k in old.env.keys() {
        if !new.env.contains_key(k) {
            env.push(format!("-{k}"));
        }
    }
    if !env.is_empty() {
        out.push(format!("env: {}", env.join(" ")));
    }
    if old.ports != new.ports {
        out.push(format!("ports: {} -> {}", fmt_ports(&old.ports), fmt_ports(&new.ports)));
    }
    if old.health != new.health {
        out.push("health: changed".into());
    }
    if old.resources.cpu_millis != new.resources.cpu_millis {
        out.push(format!(
            "resources.cpu: {} -> {}",
            fmt_opt(old.resources.cpu_millis.map(|m| format!("{m}m"))),
            fmt_opt(new.resources.cpu_millis.map(|m| format!("{m}m")))
        ));
    }
    if old.resources.memory_bytes != new.resources.memory_bytes {
        out.push(format!(
            "resources.memory: {} -> {}",
            fmt_opt(old.resources.memory_bytes.map(holdfast_spec::format_bytes)),
            fmt_opt(new.resources.memory_bytes.map(holdfast_spec::format_bytes))
        ));
    }
    if old.restart != new.restart {
        out.push(format!("restart: {:?} -> {:?}", old.restart, new.restart));
    }
    if old.stop != new.stop {
        out.push("stop: changed".into());
    }
    let (a, b) = (&old.placement, &new.placement);
    if a.node_selector != b.node_selector {
        out.push(format!(
            "placement.node_selector: {} -> {}",
            holdfast_placement::format_selector(&a.node_selector),
            holdfast_placement::format_selector(&b.node_selector)
        ));
    }
    if a.spread != b.spread {
        out.push(format!("placement.spread: {} -> {}", a.spread, b.spread));
    }
    if a.anti_affinity != b.anti_affinity {
        out.push(format!(
            "placement.anti_affinity: [{}] -> [{}]",
            a.anti_affinity.join(", "),
            b.anti_affinity.join(", ")
        ));
    }
    out
}

fn fmt_ports(p: &BTreeMap<String, u16>) -> String {
    let parts: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

fn fmt_opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "none".into())
}

#[cfg(test)]
mod tests;
