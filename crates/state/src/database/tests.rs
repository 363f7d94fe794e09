//! Database planning: members placed one per node, over sites, on one architecture and
//! PostgreSQL version; the errors say why not; passwords and addresses are kept; the
//! term commands are compare-and-set; old JSON loads.
use std::collections::BTreeMap;

use holdfast_placement::{Capacity, NodeId};
use holdfast_spec::Stack;

use crate::command::{Command, Request, Response};
use crate::model::{ClusterSettings, ClusterState, NodeRecord, Switchover, SwitchoverPhase};
use crate::plan::{plan_deploy, plan_deploy_with, plan_reschedule, PlanError};

/// A node `n<id>` on `site` with `arch`, reporting PostgreSQL `pg` (none if empty).
fn node(id: NodeId, site: &str, arch: &str, pg: &str) -> NodeRecord {
    let mut n = NodeRecord::new(
        id,
        format!("n{id}"),
        format!("10.0.0.{id}:7946"),
        site,
        arch,
        Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
    );
    n.cert_fingerprint = format!("fp{id}");
    if !pg.is_empty() {
        n.software.insert("postgres".into(), pg.into());
    }
    n
}

fn cluster(nodes: &[NodeRecord]) -> ClusterState {
    let mut s = ClusterState::default();
    for n in nodes {
        s.apply(&Request::new(Command::UpsertNode(n.clone())));
    }
    s
}

fn stack(yaml: &str) -> Stack {
    match holdfast_spec::parse_str("test.yaml", yaml) {
        Ok(s) => s,
        Err(e) => panic!("test spec does not parse: {e}"),
    }
}

/// Passwords `pw1`, `pw2`, ... in the order they are asked for.
fn counter(start: u32) -> impl FnMut() -> String {
    let mut i = start;
    move || {
        i += 1;
        format!("pw{i}")
    }
}

/// Deploys and applies; returns (plan lines, state).
fn deploy(state: &ClusterState, yaml: &str) -> (Vec<String>, ClusterState) {
    let mut pw = counter(0);
    let (plan, desired) = plan_deploy_with(state, &stack(yaml), &mut pw).unwrap_or_else(|e| panic!("refused: {e}"));
    let mut next = state.clone();
    let r = next.apply(&Request::new(Command::SetDesired { expected_revision: state.revision, desired }));
    assert!(matches!(r, Response::Applied { .. }), "{r:?}");
    let lines = plan
        .changes
        .iter()
        .map(|c| {
            if c.details.is_empty() {
                format!("{} {}", c.kind, c.target)
            } else {
                format!("{} {} [{}]", c.kind, c.target, c.details.join("; "))
            }
        })
        .collect();
    (lines, next)
}

fn refused(state: &ClusterState, yaml: &str) -> String {
    let mut pw = counter(0);
    match plan_deploy_with(state, &stack(yaml), &mut pw) {
        Ok((plan, _)) => panic!("must be refused, planned {plan:?}"),
        Err(e) => e.to_string(),
    }
}

fn members(state: &ClusterState, db: &str) -> Vec<String> {
    state.desired.databases[db].members.iter().map(|n| state.node_name(*n)).collect()
}

const DB3: &str = "databases:\n  db: { instances: 3 }\n";

#[test]
fn members_spread_over_nodes_and_sites() {
    let s = cluster(&[
        node(1, "a", "arm64", "15"),
        node(2, "a", "arm64", "15"),
        node(3, "b", "arm64", "15"),
        node(4, "c", "arm64", "15"),
    ]);
    let (plan, s) = deploy(&s, DB3);
    assert_eq!(
        plan,
        ["create database db [members: n1 n3 n4; arm64, PostgreSQL 15 (architecture chosen by holdfast)]"]
    );
    assert_eq!(members(&s, "db"), ["n1", "n3", "n4"]);
    let rec = &s.desired.databases["db"];
    assert_eq!((rec.term, rec.primary, rec.generation), (1, 0, 5), "generation: the revision of the deploy");
}

#[test]
fn the_architecture_with_most_nodes_is_chosen_and_versions_are_not_mixed() {
    let s = cluster(&[
        node(1, "a", "amd64", "15"),
        node(2, "a", "arm64", "15"),
        node(3, "a", "arm64", "15"),
        node(4, "a", "arm64", "16"),
        node(5, "a", "arm64", ""),
    ]);
    let (plan, s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    assert_eq!(plan, ["create database db [members: n2 n3; arm64, PostgreSQL 15 (architecture chosen by holdfast)]"]);
    assert_eq!(members(&s, "db"), ["n2", "n3"]);
    // A tie between groups goes alphabetically: amd64 before arm64.
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "amd64", "15")]);
    let (_, s) = deploy(&s, "databases:\n  db: {}\n");
    assert_eq!(members(&s, "db"), ["n2"]);
    // A selector that fixes the arch is obeyed.
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "amd64", "15"), node(3, "a", "amd64", "15")]);
    let (plan, _) = deploy(&s, "databases:\n  db: { placement: { node_selector: { arch: arm64 } } }\n");
    assert_eq!(plan, ["create database db [members: n1; arm64, PostgreSQL 15]"]);
}

#[test]
fn too_few_nodes_of_one_kind_is_refused_naming_them() {
    let s = cluster(&[
        node(1, "a", "arm64", "15"),
        node(2, "a", "arm64", "15"),
        node(3, "a", "amd64", "15"),
        node(4, "a", "amd64", ""),
    ]);
    assert_eq!(
        refused(&s, DB3),
        "database `db` needs 3 instances on nodes of one architecture with PostgreSQL, one node each: amd64 with PostgreSQL 15 has n3; arm64 with PostgreSQL 15 has n1, n2; n4 report no PostgreSQL (install it there, or keep the database off them with a node_selector); add nodes or lower instances"
    );
    let s = cluster(&[node(1, "a", "arm64", "")]);
    assert_eq!(
        refused(&s, "databases:\n  db: {}\n"),
        "database `db` needs 1 instances on nodes of one architecture with PostgreSQL, one node each: n1 report no PostgreSQL (install it there, or keep the database off them with a node_selector); add nodes or lower instances"
    );
}

#[test]
fn capacity_is_shared_with_services() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "arm64", "15")]);
    let (_, s) = deploy(&s, "services:\n  big: { run: [x], replicas: 2, resources: { cpu: 1500m } }\n");
    assert_eq!(
        refused(&s, "services:\n  big: { run: [x], replicas: 2, resources: { cpu: 1500m } }\ndatabases:\n  db: { resources: { cpu: 1 } }\n"),
        "database `db`: no node for member 0 (needs 1.00 CPU, 0Mi memory) among the arm64 nodes with PostgreSQL 15: n1 has 0.50 CPU, 4096Mi memory free, n2 has 0.50 CPU, 4096Mi memory free; add nodes, free room or lower instances"
    );
    // A database's members reserve capacity that services then cannot take.
    let s = cluster(&[node(1, "a", "arm64", "15")]);
    let (_, s) = deploy(&s, "databases:\n  db: { resources: { cpu: 1500m } }\n");
    let views = s.node_views();
    assert_eq!(views[0].capacity.cpu_millis, 500);
}

#[test]
fn passwords_are_kept_added_and_dropped() {
    let s = cluster(&[node(1, "a", "arm64", "15")]);
    let (_, s) = deploy(&s, "databases:\n  db: { users: [app, report] }\n");
    let c = &s.desired.databases["db"].credentials;
    assert_eq!((c.superuser.as_str(), c.replication.as_str()), ("pw1", "pw2"));
    assert_eq!(c.users, BTreeMap::from([("app".into(), "pw3".into()), ("report".into(), "pw4".into())]));
    // Redeploy: `report` goes, `audit` comes with a new password, the rest is kept.
    let mut pw = counter(10);
    let (plan, desired) =
        plan_deploy_with(&s, &stack("databases:\n  db: { users: [app, audit] }\n"), &mut pw).expect("plans");
    let c = &desired.databases["db"].credentials;
    assert_eq!((c.superuser.as_str(), c.replication.as_str()), ("pw1", "pw2"));
    assert_eq!(c.users, BTreeMap::from([("app".into(), "pw3".into()), ("audit".into(), "pw11".into())]));
    assert_eq!(plan.changes[0].details, ["users: +audit -report"]);
    // Without a password source: fine when nothing new is needed, refused otherwise.
    assert!(plan_deploy(&s, &stack("databases:\n  db: { users: [app] }\n")).is_ok());
    assert_eq!(
        plan_deploy(&s, &stack("databases:\n  db: { users: [app, new] }\n")).map(|_| ()),
        Err(PlanError::NoPasswordSource { database: "db".into(), role: "new".into() })
    );
}

#[test]
fn addresses_are_distinct_and_kept() {
    let s = cluster(&[node(1, "a", "arm64", "15")]);
    let (_, s) = deploy(&s, "services:\n  web: { run: [x] }\ndatabases:\n  db: {}\n");
    let a = s.desired.databases["db"].addresses;
    let web = s.desired.services["web"].address;
    let all = [a.rw, a.ro, a.r, web];
    for (i, x) in all.iter().enumerate() {
        assert!(all[i + 1..].iter().all(|y| y != x), "{all:?}");
        assert_eq!(x.octets()[0..2], [127, x.octets()[1]]);
        assert!((64..128).contains(&x.octets()[1]), "{x} in 127.64.0.0/10");
    }
    assert_eq!(a.rw, crate::plan::service_address("default", "db-rw", &[web]));
    assert_eq!(s.database_of_address(a.ro), Some(("db", holdfast_spec::DbEndpoint::Ro)));
    let (_, s2) = deploy(&s, "databases:\n  db: { instances: 1, parameters: { work_mem: 8MB } }\n");
    assert_eq!(s2.desired.databases["db"].addresses, a);
    assert!(s2.desired.services.is_empty());
}

#[test]
fn redeploys_keep_members_and_removal_deletes() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "b", "arm64", "15"), node(3, "c", "arm64", "15")]);
    let (_, s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    assert_eq!(members(&s, "db"), ["n1", "n2"]);
    let (plan, s) = deploy(&s, DB3);
    assert_eq!(plan, ["update database db [instances: 2 -> 3; db-2 on n3]"]);
    assert_eq!(s.desired.databases["db"].generation, 4, "instances alone rewrites nothing");
    let (plan, s) = deploy(&s, "databases:\n  db: { instances: 3, sync: 1 }\n");
    assert_eq!(plan, ["update database db [sync: 0 -> 1]"]);
    assert_eq!(s.desired.databases["db"].generation, 6);
    assert_eq!(s.database_members_on(2), [("db".to_string(), 1)]);
    let (plan, s) = deploy(&s, "services: {}\n");
    assert_eq!(plan, ["delete database db"]);
    assert!(s.desired.databases.is_empty());
}

#[test]
fn a_standby_on_a_down_node_moves_the_primary_does_not() {
    let s = cluster(&[
        node(1, "a", "arm64", "15"),
        node(2, "b", "arm64", "15"),
        node(3, "c", "arm64", "15"),
        node(4, "c", "arm64", "15"),
    ]);
    let (_, mut s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    assert_eq!(members(&s, "db"), ["n1", "n2"]);
    // The primary's node (n1) goes down: nothing moves, the failover acts first.
    s.apply(&Request::new(Command::SetNodeFlags { id: 1, cordoned: None, down: Some(true), draining: None }));
    let r = plan_reschedule(&s).expect("reschedule");
    assert_eq!(r.desired, None);
    // After the promotion of member 1, member 0 (on the down n1) is re-placed.
    let cmd = Command::SetDatabasePrimary { database: "db".into(), expected_term: 1, term: 2, primary: 1 };
    assert!(matches!(s.apply(&Request::new(cmd)), Response::Applied { .. }));
    let r = plan_reschedule(&s).expect("reschedule");
    let moves: Vec<String> = r.moves.iter().map(|m| m.describe(&s)).collect();
    assert_eq!(moves, ["db-0: n1 -> n3"]);
    let desired = r.desired.expect("moves");
    assert_eq!(desired.databases["db"].members, [3, 2]);
    assert_eq!((desired.databases["db"].term, desired.databases["db"].primary), (2, 1));
}

#[test]
fn a_live_primary_is_never_moved_by_a_deploy() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "arm64", "15")]);
    let (_, s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    assert_eq!(
        refused(&s, "databases:\n  db: { instances: 2, placement: { node_selector: { name: n2 } } }\n"),
        "database `db`: the primary (member 0) runs on n1, which no longer qualifies for the database (arm64 with PostgreSQL 15 has n2); switch the primary over to another member first"
    );
    let mut s = s;
    let cmd = Command::SetDatabasePrimary { database: "db".into(), expected_term: 1, term: 2, primary: 1 };
    s.apply(&Request::new(cmd));
    assert_eq!(
        refused(&s, "databases:\n  db: { instances: 1 }\n"),
        "database `db`: instances 1 would drop member 1, the primary; switch the primary over to a member below 1 first"
    );
}

#[test]
fn names_are_unique_across_services_and_projects() {
    let s = cluster(&[node(1, "a", "arm64", "15")]);
    let (_, s) = deploy(&s, "project: one\ndatabases:\n  db: {}\n");
    assert_eq!(
        refused(&s, "project: two\ndatabases:\n  db: {}\n"),
        "database `db` already belongs to project `one`; project `two` cannot take it over (rename it, or remove it from `one` first)"
    );
    assert_eq!(
        refused(&s, "project: two\nservices:\n  db-rw: { run: [x] }\n"),
        "the name `db-rw` of service `db-rw` of project `two` is already taken by database `db` of project `one` (a database's name and `-rw`, `-ro`, `-r` names are its endpoints); rename one"
    );
}

#[test]
fn set_database_primary_is_compare_and_set() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "arm64", "15")]);
    let (_, mut s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    let set = |expected_term, term, primary| Command::SetDatabasePrimary {
        database: "db".into(),
        expected_term,
        term,
        primary,
    };
    let refused = |s: &mut ClusterState, cmd: Command| match s.apply(&Request::new(cmd)) {
        Response::Refused { reason } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(&mut s, set(0, 2, 1)), "database `db` is at term 1, not 0: its primary changed meanwhile");
    assert_eq!(refused(&mut s, set(1, 1, 1)), "database `db`: term 1 is not newer than term 1");
    assert_eq!(refused(&mut s, set(1, 2, 2)), "database `db` has 2 members, no member 2");
    let unknown = Command::SetDatabasePrimary { database: "nope".into(), expected_term: 1, term: 2, primary: 0 };
    assert_eq!(refused(&mut s, unknown), "unknown database `nope`");
    let rev = s.revision;
    assert_eq!(s.apply(&Request::new(set(1, 2, 1))), Response::Applied { revision: rev + 1 });
    let rec = &s.desired.databases["db"];
    assert_eq!((rec.term, rec.primary, rec.members.clone()), (2, 1, vec![1, 2]));
    assert_eq!(refused(&mut s, set(1, 2, 0)), "database `db` is at term 2, not 1: its primary changed meanwhile");
}

#[test]
fn switchover_commands_are_compare_and_set_and_a_promotion_ends_them() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "arm64", "15")]);
    let (_, mut s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    let ask = |expected_term, to| Command::SetDatabaseSwitchover {
        database: "db".into(),
        expected_term,
        switchover: Some(Switchover { to, requested_term: 1, phase: SwitchoverPhase::Requested }),
    };
    assert_eq!(
        s.apply(&Request::new(ask(1, Some(0)))),
        Response::Refused {
            reason: "database `db`: member 0 cannot be the new primary (members 0..2, member 0 is the primary)".into()
        }
    );
    assert!(matches!(s.apply(&Request::new(ask(2, Some(1)))), Response::Refused { .. }));
    assert!(matches!(s.apply(&Request::new(ask(1, Some(1)))), Response::Applied { .. }));
    assert_eq!(s.desired.databases["db"].switchover.as_ref().and_then(|x| x.to), Some(1));
    let cmd = Command::SetDatabasePrimary { database: "db".into(), expected_term: 1, term: 2, primary: 1 };
    s.apply(&Request::new(cmd));
    assert_eq!(s.desired.databases["db"].switchover, None);
}

#[test]
fn sync_sets_are_compare_and_set_checked_and_a_promotion_resets_them() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "a", "arm64", "15"), node(3, "b", "arm64", "15")]);
    let (_, mut s) = deploy(&s, "databases:\n  db: { instances: 3, sync: 1 }\n");
    let set = |expected_term, names: &[u32], leaving: &[u32]| Command::SetDatabaseSyncSet {
        database: "db".into(),
        expected_term,
        sync_set: Some(crate::SyncSet { names: names.to_vec(), leaving: leaving.to_vec() }),
    };
    let rec = &s.desired.databases["db"];
    assert_eq!((rec.sync_names(0), rec.sync_standbys(0)), (vec![1, 2], vec![1, 2]), "every other member by default");
    assert_eq!(
        s.apply(&Request::new(set(1, &[0], &[]))),
        Response::Refused {
            reason: "database `db`: member 0 cannot be a synchronous standby (members 0..3, member 0 is the primary)"
                .into()
        }
    );
    assert!(matches!(s.apply(&Request::new(set(1, &[1], &[3]))), Response::Refused { .. }));
    assert!(matches!(s.apply(&Request::new(set(2, &[1], &[]))), Response::Refused { .. }));
    assert_eq!(s.desired.databases["db"].sync_set, None, "nothing changed by a refused set");
    assert!(matches!(s.apply(&Request::new(set(1, &[2], &[1]))), Response::Applied { .. }));
    let rec = &s.desired.databases["db"];
    assert_eq!((rec.sync_names(0), rec.sync_standbys(0)), (vec![2], vec![1, 2]));
    let cmd = Command::SetDatabasePrimary { database: "db".into(), expected_term: 1, term: 2, primary: 2 };
    s.apply(&Request::new(cmd));
    let rec = &s.desired.databases["db"];
    assert_eq!((rec.sync_set.clone(), rec.sync_names(2)), (None, vec![0, 1]));
}

#[test]
fn a_node_with_members_cannot_be_removed() {
    let s = cluster(&[node(1, "a", "arm64", "15")]);
    let (_, mut s) = deploy(&s, "databases:\n  db: {}\n");
    let r = s.apply(&Request::new(Command::RemoveNode { id: 1, expected_revision: s.revision }));
    assert_eq!(r, Response::Refused { reason: "node 1 still has replicas placed on it".into() });
}

#[test]
fn db_lease_is_validated() {
    let ok = ClusterSettings::default();
    assert_eq!(ok.db_lease_ms, 1500);
    assert_eq!(ok.validate(), Ok(()));
    let bad = ClusterSettings { db_lease_ms: 999, ..ok };
    assert_eq!(bad.validate(), Err("db-lease must be between 1s and 60s, got 999ms".to_string()));
    let bad = ClusterSettings { db_lease_ms: 60_001, ..ok };
    assert!(bad.validate().is_err());
}

#[test]
fn state_written_before_databases_still_loads() -> Result<(), serde_json::Error> {
    let mut s = cluster(&[node(1, "a", "arm64", "")]);
    let (_, with_service) = deploy(&s, "services:\n  web: { run: [x], env: { A: b } }\n");
    s = with_service;
    let mut json: serde_json::Value = serde_json::to_value(&s)?;
    // Remove every field added for databases, as an older version wrote the state.
    if let Some(d) = json.get_mut("desired").and_then(|d| d.as_object_mut()) {
        d.remove("databases");
    }
    if let Some(st) = json.get_mut("settings").and_then(|d| d.as_object_mut()) {
        st.remove("db_lease_ms");
    }
    let text = json.to_string();
    assert!(!text.contains("databases") && !text.contains("software") && !text.contains("db_lease"), "{text}");
    assert!(text.contains(r#""env":{"A":"b"}"#), "{text}");
    let back: ClusterState = serde_json::from_str(&text)?;
    assert_eq!(back, s);
    Ok(())
}

#[test]
fn a_draining_standby_moves_to_the_emptiest_site_and_the_primary_never_does() {
    let s = cluster(&[
        node(1, "a", "arm64", "15"),
        node(2, "b", "arm64", "15"),
        node(3, "b", "arm64", "15"),
        node(4, "c", "arm64", "15"),
        node(5, "d", "amd64", "15"),
    ]);
    let (_, mut s) = deploy(&s, "databases:\n  db: { instances: 2 }\n");
    assert_eq!(members(&s, "db"), ["n1", "n2"]);
    s.apply(&Request::new(Command::SetNodeFlags { id: 2, cordoned: Some(true), down: None, draining: Some(true) }));
    // Member 1 leaves n2 for a site without a member (b's n3 and c's n4 tie: the lowest
    // id); n5 is another architecture.
    let moved = crate::database::move_member(&s, "db", 1).expect("a node takes it");
    assert_eq!(moved.members, [1, 3]);
    // The primary's member never moves this way.
    assert_eq!(
        crate::database::move_member(&s, "db", 0).map(|_| ()),
        Err(PlanError::Database("database `db`: member 0 is the primary; switch it over before it moves".into()))
    );
    // With n3 and n4 cordoned too, nothing of the same kind can take it: said plainly.
    for id in [3, 4] {
        s.apply(&Request::new(Command::SetNodeFlags { id, cordoned: Some(true), down: None, draining: None }));
    }
    let e = crate::database::move_member(&s, "db", 1).map(|_| ()).unwrap_err().to_string();
    assert_eq!(e, "database `db`: no node for member 1 (needs 0.00 CPU, 0Mi memory) among the arm64 nodes with PostgreSQL 15: n1 runs another member; add nodes, free room or lower instances");
}

#[test]
fn lowering_a_setting_standbys_need_as_high_as_the_primary_is_refused_with_more_than_one_member() {
    let s = cluster(&[node(1, "a", "arm64", "15"), node(2, "b", "arm64", "15")]);
    let (_, s) = deploy(&s, "databases:\n  db: { instances: 2, parameters: { max_connections: \"200\" } }\n");
    // Raising is fine; so is any change of another setting.
    let (_, s) = deploy(
        &s,
        "databases:\n  db: { instances: 2, parameters: { max_connections: \"300\", shared_buffers: 64MB } }\n",
    );
    assert_eq!(
        refused(&s, "databases:\n  db: { instances: 2, parameters: { max_connections: \"50\" } }\n"),
        "database `db`: lowering max_connections (300 -> 50) cannot be rolled out: a standby must keep max_connections at least as high as its primary's, and members restart standbys first; to lower it, deploy the database with `instances: 1` first (its standbys are dropped), then with the lower value, then scale back"
    );
    // Dropping the setting goes back to the default (100): lower too.
    assert!(refused(&s, "databases:\n  db: { instances: 2 }\n").contains("(300 -> 100)"));
    // With one member there is no standby: allowed.
    let (_, s) = deploy(&s, "databases:\n  db: { instances: 1, parameters: { max_connections: \"300\" } }\n");
    let (_, s) = deploy(&s, "databases:\n  db: { instances: 1, parameters: { max_connections: \"50\" } }\n");
    assert_eq!(s.desired.databases["db"].spec.parameters["max_connections"], "50");
}

/// A node reporting Redis `version` besides PostgreSQL 15.
fn redis_node(id: NodeId, site: &str, arch: &str, version: &str) -> NodeRecord {
    let mut n = node(id, site, arch, "15");
    if !version.is_empty() {
        n.software.insert("redis".into(), version.into());
    }
    n
}

#[test]
fn redis_members_mix_architectures_but_need_redis() {
    // Redis replicates a portable format: arm64 and amd64 nodes together.
    let s =
        cluster(&[redis_node(1, "a", "arm64", "7"), redis_node(2, "b", "amd64", "7"), redis_node(3, "a", "amd64", "")]);
    let (plan, s) = deploy(&s, "databases:\n  cache: { engine: redis, instances: 2 }\n");
    assert_eq!(plan, ["create database cache [members: n1 n2; Redis 7]"]);
    let rec = &s.desired.databases["cache"];
    assert!(rec.addresses.sentinel.is_some(), "a Redis database has a Sentinel address");
    assert_eq!(rec.credentials.users.keys().collect::<Vec<_>>(), ["default"]);
    // A node without redis-server is named.
    let s = cluster(&[redis_node(1, "a", "arm64", "7"), redis_node(2, "a", "amd64", "")]);
    assert_eq!(
        refused(&s, "databases:\n  cache: { engine: redis, instances: 2 }\n"),
        "database `cache` needs 2 instances on nodes with Redis, one node each: Redis 7 on n1; n2 report no Redis (install it there, or keep the database off them with a node_selector); add nodes or lower instances"
    );
    // An engine is never changed in place.
    let s = cluster(&[redis_node(1, "a", "arm64", "7")]);
    let (_, s) = deploy(&s, "databases:\n  db: {}\n");
    assert_eq!(
        refused(&s, "databases:\n  db: { engine: redis }\n"),
        "database `db` runs PostgreSQL; it cannot become Redis in place (its data would not carry over): deploy the Redis database under another name, or remove `db` first"
    );
}
