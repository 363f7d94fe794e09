//! Events from short scenarios: a command applied to a small cluster, and the exact
//! lines it says.
use holdfast_placement::{Capacity, NodeId};

use super::*;
use crate::command::{Request, Response};
use crate::model::{NodeRecord, Switchover};
use crate::plan::plan_deploy_with;

fn node(id: NodeId) -> NodeRecord {
    let mut n = NodeRecord::new(
        id,
        format!("n{id}"),
        format!("10.0.0.{id}:7946"),
        if id == 1 { "a" } else { "b" },
        "arm64",
        Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
    );
    n.cert_fingerprint = format!("fp{id}");
    n.software.insert("postgres".into(), "15".into());
    n
}

/// Applies `cmd` to `state` and returns the events as `kind subject: message` lines.
fn apply(state: &mut ClusterState, cmd: Command) -> Vec<String> {
    let before = state.clone();
    let r = state.apply(&Request::new(cmd.clone()));
    assert!(matches!(r, Response::Applied { .. }), "{r:?}");
    describe(&before, &cmd, state)
        .iter()
        .map(|h| format!("{:?} {} {}: {}", h.level, h.kind, h.subject, h.message))
        .collect()
}

fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    for id in 1..=3 {
        s.apply(&Request::new(Command::UpsertNode(node(id))));
    }
    s
}

fn deploy(s: &mut ClusterState, yaml: &str) -> Vec<String> {
    let stack = holdfast_spec::parse_str("t.yaml", yaml).expect("parses");
    let mut pw = || "pw".to_string();
    let (_, desired) = plan_deploy_with(s, &stack, &mut pw).expect("places");
    let revision = s.revision;
    apply(s, Command::SetDesired { expected_revision: revision, desired })
}

#[test]
fn nodes_joining_going_down_coming_back_and_draining() {
    let mut s = ClusterState::default();
    assert_eq!(
        apply(&mut s, Command::UpsertNode(node(1))),
        ["Info node-joined node n1: node n1 joined (site a, arm64, 2.00 CPU, 4096Mi memory)"]
    );
    assert_eq!(apply(&mut s, Command::UpsertNode(node(1))), Vec::<String>::new(), "a refreshed record says nothing");
    let down = Command::SetNodeFlags { id: 1, cordoned: None, down: Some(true), draining: None };
    assert_eq!(apply(&mut s, down), ["Warn node-down node n1: node n1 is down"]);
    let up = Command::SetNodeFlags { id: 1, cordoned: None, down: Some(false), draining: None };
    assert_eq!(apply(&mut s, up), ["Info node-up node n1: node n1 is back"]);
    let drain = Command::SetNodeFlags { id: 1, cordoned: Some(true), down: None, draining: Some(true) };
    assert_eq!(
        apply(&mut s, drain),
        ["Info node-draining node n1: node n1 is draining: its replicas and database members move away"]
    );
    let uncordon = Command::SetNodeFlags { id: 1, cordoned: Some(false), down: None, draining: Some(false) };
    assert_eq!(apply(&mut s, uncordon), ["Info node-uncordoned node n1: node n1 takes replicas again"]);
}

#[test]
fn deploys_moves_and_database_role_changes() {
    let mut s = cluster();
    assert_eq!(
        deploy(&mut s, "services:\n  web: { run: [x], replicas: 2 }\ndatabases:\n  db: { instances: 2 }\n"),
        [
            "Info deployed service web: service web deployed: 2 replica(s), generation 4",
            "Info deployed database db: database db deployed: 2 member(s) on n1, n2"
        ]
    );
    assert_eq!(
        deploy(&mut s, "services:\n  web: { run: [x], replicas: 3 }\ndatabases:\n  db: { instances: 2 }\n"),
        ["Info scaled service web: service web scaled: 2 -> 3 replica(s)"]
    );
    // A switchover, then its promotion.
    let sw = Switchover { to: Some(1), requested_term: 1, phase: SwitchoverPhase::Requested };
    let ask = Command::SetDatabaseSwitchover { database: "db".into(), expected_term: 1, switchover: Some(sw) };
    assert_eq!(
        apply(&mut s, ask),
        ["Info switchover-requested database db: db: switchover to member 1 on n2 requested"]
    );
    let promote = Command::SetDatabasePrimary { database: "db".into(), expected_term: 1, term: 2, primary: 1 };
    assert_eq!(
        apply(&mut s, promote),
        ["Info switchover database db: db: member 1 on n2 is the primary (term 2), switched over from member 0 on n1"]
    );
    // n2 dies: a failover to member 0.
    apply(&mut s, Command::SetNodeFlags { id: 2, cordoned: None, down: Some(true), draining: None });
    let promote = Command::SetDatabasePrimary { database: "db".into(), expected_term: 2, term: 3, primary: 0 };
    assert_eq!(
        apply(&mut s, promote),
        ["Warn failover database db: db: failover: member 0 on n1 promoted (term 3); the primary was member 1 on n2: its node n2 is down"]
    );
    let mv = Command::MoveDatabaseMember { database: "db".into(), expected_term: 3, member: 1, from: 2, to: 3 };
    assert_eq!(apply(&mut s, mv), ["Info member-moved database db: db: member 1 moves from n2 to n3 (drain)"]);
    let restart = Command::SetDatabaseRestart { database: "db".into(), expected_term: 3, member: Some(1) };
    assert_eq!(
        apply(&mut s, restart),
        ["Info member-restart database db: db: member 1 on n3 restarts for settings that need a restart"]
    );
    assert_eq!(
        deploy(&mut s, "services: {}\n"),
        ["Info removed service web: service web removed", "Info removed database db: database db removed"]
    );
}

#[test]
fn a_refused_command_says_nothing() {
    let mut s = cluster();
    let before = s.clone();
    let cmd = Command::SetDatabasePrimary { database: "nope".into(), expected_term: 1, term: 2, primary: 0 };
    s.apply(&Request::new(cmd.clone()));
    assert!(describe(&before, &cmd, &s).is_empty());
}
