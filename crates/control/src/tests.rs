//! Scenario tests of the engine: a short description of a cluster and what the leader
//! observed, one tick, and the exact list of actions it decides.
//!
//! `check` renders each action as one line (`n2 down`, `place web: n1 n3`, `voters n1 n2
//! n3`, ...), asserts the list, then applies the proposals and membership changes as if
//! they had been executed, so the next `check` continues from there.
use std::collections::BTreeMap;

use holdfast_placement::{Capacity, NodeId};
use holdfast_state::labels::StartLabels;
use holdfast_state::model::CaRecord;
use holdfast_state::{ClusterState, Command, NodeRecord, Request, Response};

use crate::{
    Engine, Input, InstanceReport, Level, MemberReport, MemberRole, MembershipChange, Millis, NodeReport, Observations,
    Output,
};

const SEC: Millis = 1000;

struct World {
    state: ClusterState,
    obs: Observations,
    engine: Engine,
    now: Millis,
    me: NodeId,
    own_ca: Option<CaRecord>,
    last: Output,
    /// The wall clock (ms since the epoch), moved with `now`.
    wall: Millis,
}

fn record(id: NodeId, site: &str) -> NodeRecord {
    NodeRecord {
        cert_fingerprint: format!("fp{id}"),
        software: BTreeMap::from([("postgres".to_string(), "15".to_string())]),
        ..NodeRecord::new(
            id,
            format!("n{id}"),
            format!("10.0.0.{id}:7946"),
            site,
            "arm64",
            Capacity { cpu_millis: 4000, memory_bytes: 4 << 30 },
        )
    }
}

/// A cluster of `nodes` (id, site), voters spread over sites, n1 the leader since long ago, everyone
/// heard from just now, fully replicated.
fn world(nodes: &[(NodeId, &str)]) -> World {
    let mut state = ClusterState::default();
    let mut obs = Observations::default();
    let now = 600 * SEC;
    for (id, site) in nodes {
        state.apply(&Request::new(Command::UpsertNode(record(*id, site))));
        obs.lag.insert(*id, 0);
    }
    let all: Vec<(NodeId, String)> = nodes.iter().map(|(id, site)| (*id, site.to_string())).collect();
    obs.membership.voters = holdfast_state::voters::choose_voters(&all, &Default::default());
    obs.membership.learners =
        nodes.iter().map(|(id, _)| *id).filter(|id| !obs.membership.voters.contains(id)).collect();
    let mut w =
        World { state, obs, engine: Engine::new(), now, me: 1, own_ca: None, last: Output::default(), wall: WALL0 };
    for (id, _) in nodes {
        w.seen(*id, 0);
    }
    // The leader took over long ago, and every node has been alive since.
    w.now = 0;
    w.tick();
    w.now = now;
    w.tick();
    w
}

fn name(state: &ClusterState, id: NodeId) -> String {
    state.node_name(id)
}

fn render(before: &ClusterState, out: &Output) -> Vec<String> {
    let mut sim = before.clone();
    let mut lines = Vec::new();
    for cmd in &out.proposals {
        let line = match cmd {
            Command::SetNodeFlags { id, down: Some(true), .. } => format!("{} down", name(&sim, *id)),
            Command::SetNodeFlags { id, down: Some(false), .. } => format!("{} up", name(&sim, *id)),
            Command::UpsertNode(n) => format!("record {} at {}", n.name, n.addr),
            Command::SetCa(_) => "record the CA".to_string(),
            Command::SetNodeLabels { id, set, .. } => {
                format!("labels {} {}", name(&sim, *id), holdfast_state::labels::format_labels(set))
            }
            Command::RemoveNode { id, .. } => format!("remove {}", name(&sim, *id)),
            Command::SetDatabasePrimary { database, term, primary, .. } => {
                let node = sim.desired.databases.get(database).and_then(|d| d.members.get(*primary as usize).copied());
                format!(
                    "promote {database} member {primary} on {}, term {term}",
                    node.map_or("?".into(), |n| name(&sim, n))
                )
            }
            Command::SetDatabaseSwitchover { database, switchover: Some(sw), .. } => {
                format!("switchover {database}: {:?} to member {:?}", sw.phase, sw.to)
            }
            Command::SetDatabaseSwitchover { database, switchover: None, .. } => {
                format!("switchover {database}: clear")
            }
            Command::MoveDatabaseMember { database, member, from, to, .. } => {
                format!("move {database} member {member} from {} to {}", name(&sim, *from), name(&sim, *to))
            }
            Command::SetDesired { desired, .. } => {
                let mut parts = Vec::new();
                for (svc, placed) in &desired.placements {
                    if sim.desired.placements.get(svc) != Some(placed) {
                        let nodes: Vec<String> = placed.iter().map(|n| name(&sim, *n)).collect();
                        parts.push(format!("place {svc}: {}", nodes.join(" ")));
                    }
                }
                for (svc, moves) in &desired.moves {
                    for (replica, to) in moves {
                        let old = sim.desired.moves.get(svc).and_then(|m| m.get(replica));
                        if old != Some(to) {
                            parts.push(format!("move {svc}-{replica} to {}", name(&sim, *to)));
                        }
                    }
                }
                parts.join("; ")
            }
            other => format!("{}", Request::new(other.clone())),
        };
        lines.push(line);
        sim.apply(&Request::new(cmd.clone()));
    }
    for m in &out.membership {
        lines.push(match m {
            MembershipChange::AddLearner { id, .. } => format!("learner {}", name(&sim, *id)),
            MembershipChange::Remove(ids) => {
                format!("remove members {}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "))
            }
            MembershipChange::SetVoters(ids) => {
                format!("voters {}", ids.iter().map(|i| name(&sim, *i)).collect::<Vec<_>>().join(" "))
            }
        });
    }
    lines
}

impl World {
    fn input(&self) -> Input<'_> {
        Input {
            now: self.now,
            me: self.me,
            state: &self.state,
            observations: &self.obs,
            own_ca: self.own_ca.as_ref(),
            wall_ms: self.wall,
        }
    }

    fn tick(&mut self) -> Output {
        let input = Input {
            now: self.now,
            me: self.me,
            state: &self.state,
            observations: &self.obs,
            own_ca: self.own_ca.as_ref(),
            wall_ms: self.wall,
        };
        self.engine.tick(input)
    }

    /// `id` was last heard `ago` ms before now, reporting its record as the state has it.
    fn seen(&mut self, id: NodeId, ago: Millis) -> &mut Self {
        let record = self.state.nodes.get(&id).cloned().unwrap_or_else(|| record(id, "a"));
        let instances = self.obs.nodes.get(&id).map(|r| r.instances.clone()).unwrap_or_default();
        let databases = self.obs.nodes.get(&id).map(|r| r.databases.clone()).unwrap_or_default();
        self.obs
            .nodes
            .insert(id, NodeReport { seen_at: self.now - ago, record, instances, start_labels: None, databases });
        self
    }

    /// Every node but the listed ones heartbeats now.
    fn all_seen_but(&mut self, silent: &[NodeId]) -> &mut Self {
        let ids: Vec<NodeId> = self.state.nodes.keys().copied().filter(|id| !silent.contains(id)).collect();
        for id in ids {
            self.seen(id, 0);
        }
        self
    }

    fn after(&mut self, ms: Millis) -> &mut Self {
        self.now += ms;
        self.wall += ms;
        self
    }

    fn deploy(&mut self, yaml: &str) -> &mut Self {
        let stack = holdfast_spec::parse_str("t.yaml", yaml).expect("test spec parses");
        let mut pw = || "pw".to_string();
        let (_, desired) =
            holdfast_state::plan::plan_deploy_with(&self.state, &stack, &mut pw).expect("test spec places");
        let r =
            self.state.apply(&Request::new(Command::SetDesired { expected_revision: self.state.revision, desired }));
        assert!(matches!(r, Response::Applied { .. }), "{r:?}");
        self
    }

    fn command(&mut self, cmd: Command) -> &mut Self {
        let r = self.state.apply(&Request::new(cmd));
        assert!(matches!(r, Response::Applied { .. }), "{r:?}");
        self
    }

    /// The notes of the last `check`, as text.
    fn last_notes(&self) -> Vec<String> {
        self.last.notes.iter().map(|n| n.text.clone()).collect()
    }

    /// Every instance the state places on `node` runs there, ready or not.
    fn running(&mut self, node: NodeId, ready: bool) -> &mut Self {
        let mut instances = Vec::new();
        for p in self.state.instances_on(node) {
            instances.push(InstanceReport {
                service: p.service,
                replica: p.replica,
                generation: p.generation,
                ready,
                running: true,
                exited: None,
            });
        }
        if let Some(r) = self.obs.nodes.get_mut(&node) {
            r.instances = instances;
        }
        self
    }

    /// The primary on `node` reports running with `names` as its sync list.
    fn sync_applied(&mut self, node: NodeId, member: u32, names: &[u32]) -> &mut Self {
        if let Some(r) = self.obs.nodes.get_mut(&node) {
            for m in r.databases.iter_mut().filter(|m| m.member == member) {
                m.sync_applied = Some(names.to_vec());
            }
        }
        self
    }

    /// `node` reports member `member` of database `db`.
    fn member(&mut self, node: NodeId, member: u32, role: MemberRole, term: u64, lsn: u64) -> &mut Self {
        self.member_at(node, member, role, term, 1, lsn, lsn, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn member_at(
        &mut self,
        node: NodeId,
        member: u32,
        role: MemberRole,
        term: u64,
        timeline: u32,
        lsn: u64,
        replay_lsn: u64,
        answering: bool,
    ) -> &mut Self {
        if let Some(r) = self.obs.nodes.get_mut(&node) {
            r.databases.retain(|m| !(m.database == "db" && m.member == member));
            r.databases.push(MemberReport {
                database: "db".into(),
                member,
                term,
                role,
                timeline,
                lsn,
                replay_lsn,
                answering,
                streaming: role == MemberRole::Replica && answering,
                sync_applied: None,
                down_since: None,
                pending_restart: false,
                config_generation: None,
            });
        }
        self
    }

    /// `node`'s member `member` of `db` says a setting waits for a restart (or not).
    fn pending_restart(&mut self, node: NodeId, member: u32, pending: bool) -> &mut Self {
        if let Some(r) = self.obs.nodes.get_mut(&node) {
            for m in r.databases.iter_mut().filter(|m| m.member == member) {
                m.pending_restart = pending;
            }
        }
        self
    }

    fn placement(&self, service: &str) -> Vec<String> {
        self.state
            .desired
            .placements
            .get(service)
            .map(|p| p.iter().map(|n| name(&self.state, *n)).collect())
            .unwrap_or_default()
    }

    /// One tick: asserts the actions, then executes them on the world.
    #[track_caller]
    fn check(&mut self, expect: &[&str]) -> &mut Self {
        let out = self.tick();
        let got = render(&self.state, &out);
        assert_eq!(got, expect, "at t={}ms; notes: {:?}", self.now, out.notes);
        for cmd in &out.proposals {
            let r = self.state.apply(&Request::new(cmd.clone()));
            assert!(matches!(r, Response::Applied { .. }), "{cmd:?}: {r:?}");
        }
        for m in &out.membership {
            let mem = &mut self.obs.membership;
            match m {
                MembershipChange::AddLearner { id, .. } => {
                    mem.learners.insert(*id);
                }
                MembershipChange::Remove(ids) => {
                    for id in ids {
                        mem.voters.remove(id);
                        mem.learners.remove(id);
                    }
                }
                MembershipChange::SetVoters(ids) => {
                    let all: Vec<NodeId> = mem.voters.union(&mem.learners).copied().collect();
                    mem.voters = ids.clone();
                    mem.learners = all.into_iter().filter(|i| !ids.contains(i)).collect();
                }
            }
        }
        self.last = out;
        self
    }

    fn notes(&self) -> Vec<String> {
        self.last
            .notes
            .iter()
            .map(|n| format!("{}: {}", if n.level == Level::Warn { "warn" } else { "info" }, n.text))
            .collect()
    }

    /// A node joins: in the state (as the join command does) and heartbeating, not yet a
    /// Raft member.
    fn join(&mut self, id: NodeId, site: &str) -> &mut Self {
        self.command(Command::UpsertNode(record(id, site)));
        self.obs.lag.insert(id, 0);
        self.seen(id, 0)
    }
}

const WEB2: &str = "project: p\nservices:\n  web:\n    run: [sleep, '100']\n    replicas: 2\n";

// ---------------------------------------------------------------- failure detection

#[test]
fn a_silent_node_goes_down_and_its_replicas_move() {
    // n2 silent 3.1 s, n3 seen 0.2 s -> n2 down, its replica moves to n3.
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.deploy(WEB2);
    assert_eq!(w.placement("web"), ["n1", "n2"]);
    w.after(3100).seen(1, 0).seen(2, 3100).seen(3, 200).check(&["n2 down", "place web: n1 n3"]);
    assert_eq!(
        w.notes(),
        [
            "warn: node n2 is down (silent for 3100ms); placing its replicas elsewhere",
            "info: re-placed replicas: web-1: n2 -> n3"
        ]
    );
    // Nothing more to do while it stays silent.
    w.after(1000).all_seen_but(&[2]).check(&[]);
    // Back: flagged up; its replica stays where it moved (minimal moves).
    w.after(1000).all_seen_but(&[]).check(&["n2 up"]);
    assert_eq!(w.notes(), ["info: node n2 is back"]);
    assert_eq!(w.placement("web"), ["n1", "n3"]);
}

#[test]
fn silence_short_of_down_after_changes_nothing() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.after(2900).seen(1, 0).seen(2, 2900).seen(3, 0).check(&[]);
    w.after(99).seen(1, 0).seen(3, 0).check(&[]);
    w.after(1).seen(1, 0).seen(3, 0).check(&["n2 down"]);
}

#[test]
fn a_new_leader_gives_every_node_down_after_before_judging() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.engine.step_down();
    // n3 was last heard minutes ago; this leader just took over.
    w.seen(3, 500 * SEC);
    w.check(&[]);
    w.after(2999).all_seen_but(&[3]).check(&[]);
    w.after(1).all_seen_but(&[3]).check(&["n3 down"]);
}

#[test]
fn a_down_node_comes_back_only_when_heard_within_suspect_after() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.after(3000).all_seen_but(&[2]).check(&["n2 down"]);
    // Its last heartbeat is 1.3 s old by the time the leader looks: still down.
    w.after(5000).all_seen_but(&[]).seen(2, 1300).check(&[]);
    w.seen(2, 100).check(&["n2 up"]);
}

#[test]
fn a_silent_node_is_suspect_once_and_answers_or_goes_down() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    let observed = |w: &mut World| -> Vec<(&'static str, String)> {
        let out = w.tick();
        out.observed.iter().map(|o| (o.kind, o.message.clone())).collect()
    };
    w.after(1000).all_seen_but(&[]);
    assert_eq!(observed(&mut w), vec![]);
    // n2 silent 1.3 s (suspect after 1.2 s): one event, not again on the next tick.
    w.after(1300).all_seen_but(&[2]);
    assert_eq!(observed(&mut w), vec![("node-suspect", "node n2 is suspect: no heartbeat for 1300ms".to_string())]);
    w.after(300).all_seen_but(&[2]);
    assert_eq!(observed(&mut w), vec![]);
    // It answers before down_after: it is not suspect any more.
    w.all_seen_but(&[]);
    assert_eq!(
        observed(&mut w),
        vec![("node-answers", "node n2 answers again before it was declared down".to_string())]
    );
    // n3 goes silent for good: suspect, then down (the down verdict says it; no
    // "answers" event).
    w.after(1500).all_seen_but(&[3]);
    assert_eq!(observed(&mut w), vec![("node-suspect", "node n3 is suspect: no heartbeat for 1500ms".to_string())]);
    w.after(2000).all_seen_but(&[3]).check(&["n3 down"]);
    w.after(300).all_seen_but(&[3]);
    assert_eq!(observed(&mut w), vec![]);
}

#[test]
fn the_leader_clears_its_own_down_flag() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.command(Command::SetNodeFlags { id: 1, cordoned: None, down: Some(true), draining: None });
    w.check(&["n1 up"]);
}

// ---------------------------------------------------------------- records and labels

#[test]
fn reported_records_keep_the_clusters_flags_and_labels() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.command(Command::SetNodeFlags { id: 2, cordoned: Some(true), down: None, draining: None });
    w.command(Command::SetNodeLabels {
        id: 2,
        set: BTreeMap::from([("disk".into(), "ssd".into())]),
        remove: Default::default(),
        start_id: None,
    });
    // n2 restarted on a new address; it reports itself without flags or labels and
    // without a certificate fingerprint.
    let mut rec = record(2, "a");
    rec.addr = "10.0.0.22:7946".into();
    rec.cert_fingerprint.clear();
    w.obs.nodes.get_mut(&2).expect("n2 reported").record = rec;
    w.check(&["record n2 at 10.0.0.22:7946"]);
    let n2 = &w.state.nodes[&2];
    assert!(n2.cordoned);
    assert_eq!(n2.labels["disk"], "ssd");
    assert_eq!(n2.cert_fingerprint, "fp2", "a report never clears the recorded fingerprint");
    // The same report again: nothing to write.
    w.check(&[]);
}

#[test]
fn reports_never_register_strangers_or_bring_back_removed_nodes() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    // n7 never joined: a heartbeat is not a join.
    w.obs.nodes.insert(
        7,
        NodeReport { seen_at: w.now, record: record(7, "a"), instances: vec![], start_labels: None, databases: vec![] },
    );
    w.check(&[]);
    // n2 is removed, but a stale process still heartbeats.
    w.command(Command::RemoveNode { id: 2, expected_revision: w.state.revision });
    w.check(&["remove members 2"]);
    w.check(&[]);
    assert!(!w.state.nodes.contains_key(&2));
}

#[test]
fn the_founder_registers_itself_and_records_the_ca_once() {
    let mut w = World {
        state: ClusterState::default(),
        obs: Observations::default(),
        engine: Engine::new(),
        now: 0,
        me: 1,
        own_ca: Some(CaRecord { cert_pem: "cert".into(), key_pem: "key".into() }),
        last: Output::default(),
        wall: WALL0,
    };
    w.obs.membership.voters.insert(1);
    w.obs.nodes.insert(
        1,
        NodeReport { seen_at: 0, record: record(1, "a"), instances: vec![], start_labels: None, databases: vec![] },
    );
    w.check(&["record the CA", "record n1 at 10.0.0.1:7946"]);
    w.check(&[]);
}

#[test]
fn start_labels_apply_once_per_start_and_bad_ones_are_said() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    let labels = BTreeMap::from([("disk".to_string(), "ssd".to_string()), ("site".to_string(), "x".to_string())]);
    w.obs.nodes.get_mut(&2).expect("n2").start_labels = Some(StartLabels { start_id: 77, labels });
    w.check(&["labels n2 disk=ssd"]);
    assert!(w.notes()[0].starts_with("warn: node n2: ignoring --label site=x: `site` is a built-in label"));
    assert_eq!(w.notes()[1], "info: node n2: applying its --label flags disk=ssd");
    // A user removes the label at runtime: the same start does not put it back.
    w.command(Command::SetNodeLabels {
        id: 2,
        set: BTreeMap::new(),
        remove: ["disk".to_string()].into(),
        start_id: None,
    });
    w.check(&[]);
    // A new start with the same flags does.
    w.obs.nodes.get_mut(&2).expect("n2").start_labels.as_mut().expect("labels").start_id = 78;
    w.check(&["labels n2 disk=ssd"]);
}

// ---------------------------------------------------------------- membership

#[test]
fn a_new_member_is_a_learner_until_alive_and_caught_up() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "b")]);
    w.join(4, "b").check(&["learner n4"]);
    // Alive 4.9 s: not yet.
    w.after(4900).all_seen_but(&[]).check(&[]);
    // 5 s, but 40 entries behind: not yet.
    w.obs.lag.insert(4, 40);
    w.after(100).all_seen_but(&[]).check(&[]);
    assert_eq!(w.engine.promotion_blockers(w.input()).get(&4).map(String::as_str), Some("40 log entries behind"));
    // Caught up: 4 candidates make 3 voters, so nothing changes...
    w.obs.lag.insert(4, 0);
    w.check(&[]);
    // ...until a fifth node makes five voters.
    w.join(5, "b").check(&["learner n5"]);
    w.obs.lag.insert(5, 3);
    w.after(100).all_seen_but(&[]).check(&[]);
    w.after(4899).all_seen_but(&[]).check(&[]);
    w.after(1).all_seen_but(&[]).check(&["voters n1 n2 n3 n4 n5"]);
}

#[test]
fn a_node_that_joins_and_dies_at_once_costs_no_quorum() {
    // The scenario found by hand: two joins whose nodes exited right away.
    let mut w = world(&[(1, "a")]);
    w.join(2, "a").join(3, "a").check(&["learner n2", "learner n3"]);
    // Alive, caught up, but only for 0.5 s: three candidates would make three voters.
    w.after(500).all_seen_but(&[]).check(&[]);
    // They die: never heard again.
    w.after(3000).all_seen_but(&[2, 3]).check(&["n2 down", "n3 down"]);
    w.after(60 * SEC).all_seen_but(&[2, 3]).check(&[]);
    assert_eq!(w.obs.membership.voters.iter().copied().collect::<Vec<_>>(), [1], "n1 alone keeps the quorum");
}

#[test]
fn three_healthy_joins_make_three_voters() {
    let mut w = world(&[(1, "a")]);
    w.join(2, "a").join(3, "b").check(&["learner n2", "learner n3"]);
    w.after(2000).all_seen_but(&[]).check(&[]);
    w.after(3000).all_seen_but(&[]).check(&["voters n1 n2 n3"]);
}

#[test]
fn a_learner_that_goes_silent_restarts_its_probation() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.join(3, "a").check(&["learner n3"]);
    w.after(4000).all_seen_but(&[]).check(&[]);
    // Silent 2 s (longer than suspect_after): its alive run starts again.
    w.after(2000).all_seen_but(&[3]).check(&[]);
    w.after(100).all_seen_but(&[]).check(&[]);
    w.after(4800).all_seen_but(&[]).check(&[]);
    w.after(200).all_seen_but(&[]).check(&["voters n1 n2 n3"]);
}

#[test]
fn a_voter_down_for_voter_replace_after_is_replaced() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]);
    w.after(3000).all_seen_but(&[3]).check(&["n3 down"]);
    // voter_replace_after (30 s) counts from the verdict.
    w.after(29_999).all_seen_but(&[3]).check(&[]);
    w.after(1).all_seen_but(&[3]).check(&["voters n1 n2 n4"]);
}

#[test]
fn members_that_are_no_longer_nodes_are_removed_first() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.obs.membership.learners.insert(9);
    w.join(4, "a").check(&["learner n4", "remove members 9"]);
}

// ---------------------------------------------------------------- drains and removal

#[test]
fn a_drain_moves_one_replica_at_a_time_start_before_stop() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.deploy(WEB2);
    w.command(Command::SetNodeFlags { id: 2, cordoned: Some(true), down: None, draining: Some(true) });
    w.check(&["move web-1 to n3"]);
    // The new instance is not ready yet: the move waits.
    w.after(300).all_seen_but(&[]).running(3, false).check(&[]);
    w.after(300).all_seen_but(&[]).running(3, true).check(&["place web: n1 n3"]);
    assert_eq!(w.notes(), ["info: drain: web-1: ready on n3; stopping the one on n2"]);
}

#[test]
fn node_rm_drains_then_removes_and_revokes() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.deploy(WEB2);
    w.command(Command::SetRemoving { id: 2, removing: true });
    w.check(&["move web-1 to n3"]);
    w.after(300).all_seen_but(&[]).running(3, true).check(&["place web: n1 n3", "remove n2", "remove members 2"]);
    assert_eq!(w.state.removed_nodes.get(&2).map(String::as_str), Some("fp2"));
}

#[test]
fn node_rm_of_a_down_node_re_places_at_once() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.deploy(WEB2);
    w.after(3000).all_seen_but(&[2]).check(&["n2 down", "place web: n1 n3"]);
    w.command(Command::SetRemoving { id: 2, removing: true });
    w.check(&["remove n2", "remove members 2"]);
}

#[test]
fn a_replica_that_cannot_move_is_said_once() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.deploy("project: p\nservices:\n  db:\n    run: [sleep, '100']\n    placement: {node_selector: {name: n2}}\n");
    w.after(3000).all_seen_but(&[2]).check(&["n2 down"]);
    let notes = w.notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[1].starts_with("warn: a replica cannot move; it stays where it is: "), "{notes:?}");
    w.after(300).all_seen_but(&[2]).check(&[]);
    assert!(w.notes().is_empty(), "said once: {:?}", w.notes());
}

#[test]
fn fencing_verdicts_name_superseded_instances() {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.deploy(WEB2);
    let old = w.state.instances_on(2);
    w.after(3000).all_seen_but(&[2]).check(&["n2 down", "place web: n1 n3"]);
    let reports: Vec<InstanceReport> = old
        .iter()
        .map(|p| InstanceReport {
            service: p.service.clone(),
            replica: p.replica,
            generation: p.generation,
            ready: true,
            running: true,
            exited: None,
        })
        .collect();
    assert_eq!(crate::fence::stale(&w.state, 2, &reports), [("web".to_string(), 1, old[0].generation)]);
    // The replacement on n3 is current, and so is web-0 on n1.
    let current: Vec<InstanceReport> = [1, 3]
        .iter()
        .flat_map(|n| w.state.instances_on(*n))
        .map(|p| InstanceReport {
            service: p.service,
            replica: p.replica,
            generation: p.generation,
            ready: true,
            running: true,
            exited: None,
        })
        .collect();
    assert_eq!(current.len(), 2);
    assert!(crate::fence::stale(&w.state, 1, &current[..1]).is_empty());
    assert!(crate::fence::stale(&w.state, 3, &current[1..]).is_empty());
}

#[test]
fn an_idle_leader_does_not_re_place_again_at_the_same_revision() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.deploy("project: p\nservices:\n  db:\n    run: [sleep, '100']\n    placement: {node_selector: {name: n2}}\n");
    w.after(3000).all_seen_but(&[2]).check(&["n2 down"]);
    // Planned on a simulated revision: not remembered.
    assert_eq!(w.engine.placed_at, None);
    w.after(300).all_seen_but(&[2]).check(&[]);
    // Worked out again at the committed revision and remembered with its note.
    assert_eq!(w.engine.placed_at.as_ref().map(|(r, n)| (*r, n.len())), Some((w.state.revision, 1)));
    w.after(300).all_seen_but(&[2]).check(&[]);
    assert!(w.notes().is_empty(), "the stuck note is not said again: {:?}", w.notes());
    // A new revision is planned again: n2 back, nothing to move.
    w.after(300).all_seen_but(&[]).check(&["n2 up"]);
    w.check(&[]);
    assert_eq!(w.engine.placed_at.as_ref().map(|(r, n)| (*r, n.len())), Some((w.state.revision, 0)));
}

// ---------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    /// A random cluster: nodes over two sites with a random `disk` label; services with
    /// random replica counts, selectors and anti-affinity.
    /// (node id, has ssd), (replicas, selector kind, anti-affine to the previous), silence kind per node.
    type Case = (Vec<(u64, bool)>, Vec<(u32, u8, bool)>, Vec<u8>);

    fn arb_world() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec((any::<bool>(), any::<bool>()), 2..7)
                .prop_map(|v| v.into_iter().enumerate().map(|(i, (ssd, _))| (i as u64 + 1, ssd)).collect()),
            prop::collection::vec((1u32..4, 0u8..3, any::<bool>()), 1..4),
            prop::collection::vec(0u8..4, 7),
        )
    }

    fn yaml(services: &[(u32, u8, bool)]) -> String {
        let mut y = String::from("project: p\nservices:\n");
        for (i, (replicas, selector, anti)) in services.iter().enumerate() {
            y.push_str(&format!("  s{i}:\n    run: [sleep, '1']\n    replicas: {replicas}\n"));
            let mut placement = Vec::new();
            match selector {
                1 => placement.push("node_selector: {disk: ssd}".to_string()),
                2 => placement.push("spread: sites".to_string()),
                _ => {}
            }
            if *anti && i > 0 {
                placement.push(format!("anti_affinity: [s{}]", i - 1));
            }
            if !placement.is_empty() {
                y.push_str(&format!("    placement: {{{}}}\n", placement.join(", ")));
            }
        }
        y
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever nodes fall silent, a tick never proposes a placement that puts a
        /// replica somewhere a hard rule forbids: every rule a proposed placement breaks
        /// was already broken by that replica where it was (a stuck replica stays).
        #[test]
        fn a_tick_never_breaks_a_hard_rule((nodes, services, silence) in arb_world()) {
            let ids: Vec<(u64, &str)> = nodes.iter().map(|(id, _)| (*id, if id % 2 == 0 { "b" } else { "a" })).collect();
            let mut w = world(&ids);
            for (id, ssd) in &nodes {
                if *ssd {
                    w.command(Command::SetNodeLabels { id: *id, set: BTreeMap::from([("disk".into(), "ssd".into())]), remove: Default::default(), start_id: None });
                }
            }
            let stack = holdfast_spec::parse_str("t.yaml", &yaml(&services)).expect("generated spec parses");
            let planned = holdfast_state::plan::plan_deploy(&w.state, &stack);
            // An infeasible spec is refused at deploy: proptest draws another case (and
            // fails the test if too many are rejected).
            prop_assume!(planned.is_ok());
            let Ok((_, desired)) = planned else { return Ok(()) };
            w.command(Command::SetDesired { expected_revision: w.state.revision, desired });
            // Some nodes fall silent (never the leader), some get cordoned or drained.
            w.after(3500);
            for (i, (id, _)) in nodes.iter().enumerate() {
                match silence[i] {
                    0 if *id != 1 => {}
                    2 => { w.seen(*id, 0); w.command(Command::SetNodeFlags { id: *id, cordoned: Some(true), down: None, draining: None }); }
                    3 => { w.seen(*id, 0); w.command(Command::SetNodeFlags { id: *id, cordoned: Some(true), down: None, draining: Some(true) }); }
                    _ => { w.seen(*id, 0); }
                }
            }
            for _ in 0..3 {
                let out = w.tick();
                let mut sim = w.state.clone();
                for cmd in &out.proposals {
                    if let Command::SetDesired { desired, .. } = cmd {
                        let workloads = holdfast_state::plan::workloads(&desired.services);
                        let views = sim.node_views();
                        let before = holdfast_placement::violations(&workloads, &views, &sim.desired.placements);
                        let after = holdfast_placement::violations(&workloads, &views, &desired.placements);
                        for v in &after {
                            let stayed = sim.desired.placements.get(&v.service).and_then(|p| p.get(v.replica as usize)) == Some(&v.node);
                            let was = before.iter().any(|b| b.service == v.service && b.replica == v.replica && b.node == v.node);
                            prop_assert!(stayed && was, "proposed placement breaks a rule: {v:?}");
                        }
                        // Drain targets are schedulable nodes the selector allows.
                        let mut with_moves = desired.placements.clone();
                        for (svc, moves) in &desired.moves {
                            for (replica, to) in moves {
                                if let Some(slot) = with_moves.get_mut(svc).and_then(|p| p.get_mut(*replica as usize)) { *slot = *to; }
                                let target = sim.nodes.get(to);
                                prop_assert!(target.is_some_and(|n| !n.down && !n.cordoned), "move of {svc}-{replica} to an unschedulable node");
                            }
                        }
                        for v in holdfast_placement::violations(&workloads, &views, &with_moves) {
                            let moved = desired.moves.get(&v.service).is_some_and(|m| m.get(&v.replica) == Some(&v.node));
                            prop_assert!(!moved, "move target breaks a rule: {v:?}");
                        }
                    }
                    sim.apply(&Request::new(cmd.clone()));
                }
                for cmd in out.proposals {
                    w.state.apply(&Request::new(cmd));
                }
                w.after(300);
                for (i, (id, _)) in nodes.iter().enumerate() {
                    if silence[i] != 0 || *id == 1 { w.seen(*id, 0); }
                }
            }
        }
    }
}

/// A cluster of `nodes` whose n1 (the leader) has no PostgreSQL, with database `db` of
/// `fields` (`instances: 3, sync: 1`) deployed; nobody reports its members yet.
fn pg_world(nodes: &[(NodeId, &str)], fields: &str) -> World {
    let mut w = world(nodes);
    let mut n1 = w.state.nodes[&1].clone();
    n1.software.clear();
    w.command(Command::UpsertNode(n1));
    w.seen(1, 0);
    w.deploy(&format!("databases:\n  db: {{ {fields} }}\n"));
    w
}

/// Four nodes on four sites, n1 (the leader) without PostgreSQL; database `db` with
/// `fields` has its members on n2 n3 n4 (member 0 on n2 the primary, term 1), all
/// reporting: the primary at lsn 1000, member 1 at 900, member 2 at 950.
fn db_world(fields: &str) -> World {
    let mut w = pg_world(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")], &format!("instances: 3{fields}"));
    assert_eq!(w.state.desired.databases["db"].members, [2, 3, 4]);
    w.member(2, 0, MemberRole::Primary, 1, 1000).member(3, 1, MemberRole::Replica, 1, 900).member(
        4,
        2,
        MemberRole::Replica,
        1,
        950,
    );
    w
}

#[test]
fn a_healthy_primary_changes_nothing() {
    db_world("").check(&[]).after(300).all_seen_but(&[]).check(&[]);
}

#[test]
fn a_primary_silent_for_the_lease_fails_over_to_the_most_advanced_replica() {
    let mut w = db_world("");
    w.after(1200).all_seen_but(&[2]).check(&[]);
    w.after(400).all_seen_but(&[2]).check(&["promote db member 2 on n4, term 2"]);
    assert_eq!(
        w.notes(),
        ["info: db: promoting member 2 on n4 (term 1 → 2): primary n2 silent for 1.6 s; may lose up to 50 bytes of acknowledged writes (asynchronous replication)"]
    );
    // The new term is in the state; the promoted member reconfigures: nothing more.
    w.member(4, 2, MemberRole::Primary, 2, 960).after(300).all_seen_but(&[2]).check(&[]);
}

#[test]
fn a_new_leader_waits_for_the_lease_before_failing_over() {
    let mut w = db_world("");
    w.engine = Engine::new();
    w.after(1200).all_seen_but(&[2]).check(&[]); // the new leader takes over now
    w.after(500).all_seen_but(&[2]).check(&[]);
    assert_eq!(w.notes(), ["info: db: primary n2 silent; waiting: leader for only 500 ms (lease 1500 ms)"]);
    w.after(1000).all_seen_but(&[2]).check(&["promote db member 2 on n4, term 2"]);
}

#[test]
fn sync_promotes_only_with_enough_standbys_reporting() {
    // instances 3, sync 1: 2 standbys, a commit is on at least 1, so both must report.
    let mut w = db_world(", sync: 1");
    w.after(1600).all_seen_but(&[2, 4]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: primary n2 silent; heard from 1 of 2 synchronous standbys, need 2 to be sure no acknowledged commit is lost; waiting"]
    );
    w.after(300).all_seen_but(&[2]).check(&["promote db member 2 on n4, term 2"]);
    assert_eq!(w.notes(), ["info: db: promoting member 2 on n4 (term 1 → 2): primary n2 silent for 1.9 s"]);
}

#[test]
fn the_standby_holding_more_wal_wins_even_when_its_receiver_restarted() {
    // n4's WAL receiver restarted (received falls back to its segment's start) but it
    // replayed further than n3 received: n4 holds more WAL and is promoted.
    let mut w = db_world(", sync: 1");
    w.member_at(3, 1, MemberRole::Replica, 1, 1, 990, 980, true);
    w.member_at(4, 2, MemberRole::Replica, 1, 1, 512, 995, true);
    w.after(1600).all_seen_but(&[2]).check(&["promote db member 2 on n4, term 2"]);
}

#[test]
fn sync_with_every_standby_needed_for_all_but_one() {
    // sync 2 of 2 standbys: any one standby holds every acknowledged commit.
    let mut w = db_world(", sync: 2");
    w.after(1600).all_seen_but(&[2, 4]).check(&["promote db member 1 on n3, term 2"]);
}

#[test]
fn a_primary_not_answering_on_a_live_node_fails_over_after_two_ticks() {
    let mut w = db_world("");
    w.member_at(2, 0, MemberRole::Primary, 1, 1, 1000, 1000, false);
    w.after(300).all_seen_but(&[]).check(&[]);
    w.after(300).all_seen_but(&[]).check(&["promote db member 2 on n4, term 2"]);
    assert_eq!(
        w.notes(),
        ["info: db: promoting member 2 on n4 (term 1 → 2): PostgreSQL of primary n2 not answering; may lose up to 50 bytes of acknowledged writes (asynchronous replication)"]
    );
}

#[test]
fn a_primary_that_answers_again_resets_the_count() {
    let mut w = db_world("");
    w.member_at(2, 0, MemberRole::Failed, 1, 1, 1000, 1000, false);
    w.after(300).all_seen_but(&[]).check(&[]);
    w.member(2, 0, MemberRole::Primary, 1, 1000).after(300).all_seen_but(&[]).check(&[]);
    w.member_at(2, 0, MemberRole::Failed, 1, 1, 1000, 1000, false);
    w.after(300).all_seen_but(&[]).check(&[]);
}

#[test]
fn ties_go_to_the_timeline_then_replay_then_the_lowest_member() {
    let mut w = db_world("");
    w.member_at(3, 1, MemberRole::Replica, 1, 1, 950, 940, true);
    w.member_at(4, 2, MemberRole::Replica, 1, 1, 950, 930, true);
    w.after(1600).all_seen_but(&[2]).check(&["promote db member 1 on n3, term 2"]);
    let mut w = db_world("");
    w.member_at(3, 1, MemberRole::Replica, 1, 1, 950, 950, true);
    w.member_at(4, 2, MemberRole::Replica, 1, 1, 950, 950, true);
    w.after(1600).all_seen_but(&[2]).check(&["promote db member 1 on n3, term 2"]);
    let mut w = db_world("");
    w.member_at(3, 1, MemberRole::Replica, 1, 2, 100, 100, true);
    w.after(1600).all_seen_but(&[2]).check(&["promote db member 1 on n3, term 2"]);
}

#[test]
fn no_candidate_is_said_and_nothing_is_promoted() {
    let mut w = db_world("");
    w.member_at(3, 1, MemberRole::Starting, 1, 1, 900, 900, false);
    w.member(4, 2, MemberRole::Stopped, 1, 950);
    w.after(1600).all_seen_but(&[2]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: primary n2 silent; no standby can be promoted (none is up, heard within the lease and answering as a replica); waiting"]
    );
}

#[test]
fn a_stale_primary_is_warned_about() {
    let mut w = db_world("");
    w.command(Command::SetDatabasePrimary { database: "db".into(), expected_term: 1, term: 2, primary: 2 });
    w.member(4, 2, MemberRole::Primary, 2, 1000);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: member 0 on n2 still reports primary for term 1 (current term 2, primary member 2); its node must fence it"]
    );
}

fn ask_switchover(w: &mut World, to: Option<u32>) {
    w.command(Command::SetDatabaseSwitchover {
        database: "db".into(),
        expected_term: 1,
        switchover: Some(holdfast_state::Switchover {
            to,
            requested_term: 1,
            phase: holdfast_state::SwitchoverPhase::Requested,
        }),
    });
}

#[test]
fn a_switchover_fences_the_primary_then_promotes_the_caught_up_target() {
    let mut w = db_world("");
    ask_switchover(&mut w, Some(1));
    w.after(300).all_seen_but(&[]).check(&["switchover db: Fencing to member Some(1)"]);
    assert_eq!(w.notes(), ["info: db: switchover to member 1 on n3: fencing the primary on n2"]);
    // The primary's shutdown checkpoint starts at lsn 1000; member 1 is still behind.
    w.member(2, 0, MemberRole::Fenced, 1, 1000).after(300).all_seen_but(&[]).check(&[]);
    // Received up to the record's start is not enough: promoting then would fork the
    // timeline before the old primary's last record (it could not rejoin without a rewind).
    w.member(3, 1, MemberRole::Replica, 1, 1000).after(300).all_seen_but(&[]).check(&[]);
    w.member(3, 1, MemberRole::Replica, 1, 1114)
        .after(300)
        .all_seen_but(&[])
        .check(&["promote db member 1 on n3, term 2"]);
    assert_eq!(
        w.notes(),
        ["info: db: switchover: promoting member 1 on n3 (term 1 → 2): caught up with the fenced primary at lsn 1000"]
    );
    assert_eq!(w.state.desired.databases["db"].switchover, None);
}

#[test]
fn a_switchover_to_any_member_picks_the_most_advanced() {
    let mut w = db_world("");
    ask_switchover(&mut w, None);
    w.after(300).all_seen_but(&[]).check(&["switchover db: Fencing to member Some(2)"]);
}

#[test]
fn a_switchover_whose_target_does_not_catch_up_is_aborted_after_10_s() {
    let mut w = db_world("");
    ask_switchover(&mut w, Some(1));
    w.after(300).all_seen_but(&[]).check(&["switchover db: Fencing to member Some(1)"]);
    w.member(2, 0, MemberRole::Fenced, 1, 1000);
    w.after(9_000).all_seen_but(&[]).check(&[]);
    w.after(1_000).all_seen_but(&[]).check(&["switchover db: clear"]);
    assert_eq!(
        w.notes(),
        ["warn: db: switchover to member 1 aborted: it did not catch up within 10.0 s of fencing (at lsn 900; the primary stopped at lsn 1000); the primary takes writes again"]
    );
    assert_eq!(w.state.desired.databases["db"].term, 1, "same term: the old primary resumes");
}

#[test]
fn a_switchover_to_an_unhealthy_member_is_refused() {
    let mut w = db_world("");
    ask_switchover(&mut w, Some(1));
    w.after(1600).all_seen_but(&[3]).check(&["switchover db: clear"]);
    assert_eq!(
        w.notes(),
        ["warn: db: switchover refused: member 1 is a healthy replica (up, heard within the lease, answering as a replica)"]
    );
}

/// Sites a, a, a, b: n1 (the leader) without PostgreSQL; `db` (instances 3, sync 1) has
/// member 0 on n2 (site a, the primary at lsn 1000), member 1 on n4 (site b, 900) and
/// member 2 on n3 (site a, 950): members spread over sites first.
fn db_sites_world() -> World {
    let mut w = pg_world(&[(1, "a"), (2, "a"), (3, "a"), (4, "b")], "instances: 3, sync: 1");
    assert_eq!(w.state.desired.databases["db"].members, [2, 4, 3]);
    w.member(2, 0, MemberRole::Primary, 1, 1000).member(4, 1, MemberRole::Replica, 1, 900).member(
        3,
        2,
        MemberRole::Replica,
        1,
        950,
    );
    w
}

#[test]
fn with_sites_a_commit_waits_for_a_standby_in_another_site() {
    let mut w = db_sites_world();
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [2])"]);
    assert_eq!(
        w.notes(),
        ["info: db: synchronous standbys: member 1 on n4 (site b) (dropping member 2 on n3 (site a) once the primary runs without it)"]
    );
    let rec = &w.state.desired.databases["db"];
    assert_eq!((rec.sync_names(0), rec.sync_standbys(0)), (vec![1], vec![1, 2]), "a failover still counts member 2");
    // Not yet loaded by the primary: member 2 stays counted.
    w.after(300).all_seen_but(&[]).check(&[]);
    // Loaded, but member 1 does not hold the WAL the primary had then: a commit
    // acknowledged by member 2 alone may be missing from it.
    w.sync_applied(2, 0, &[1]).after(300).all_seen_but(&[]).check(&[]);
    w.member(4, 1, MemberRole::Replica, 1, 1000).sync_applied(2, 0, &[1]);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [])"]);
    assert_eq!(
        w.notes(),
        ["info: db: synchronous standbys: member 1 on n4 (site b) (no longer member 2 on n3 (site a))"]
    );
    assert_eq!(w.state.desired.databases["db"].sync_standbys(0), vec![1]);
    w.after(300).all_seen_but(&[]).check(&[]);
    // Site a is lost with the primary: member 1 holds every acknowledged commit, so it
    // is promoted without hearing member 2 (with every standby listed it could not be).
    w.after(1600).all_seen_but(&[1, 2, 3]).check(&["promote db member 1 on n4, term 2"]);
    assert_eq!(w.state.desired.databases["db"].sync_set, None, "a promotion lists every other member again");
}

#[test]
fn without_the_other_site_commits_wait_for_the_standby_of_the_primarys_own() {
    let mut w = db_sites_world();
    w.member(4, 1, MemberRole::Replica, 1, 1000).sync_applied(2, 0, &[1]);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [2])"]);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [])"]);
    // n4 dies: once it is suspect, member 2 takes its place.
    w.after(300).all_seen_but(&[4]).check(&[]);
    w.after(900).all_seen_but(&[4]).check(&["set-database-sync-set db at term 1: [2] (leaving [1])"]);
    assert_eq!(
        w.notes(),
        [
            "info: db: synchronous standbys: member 2 on n3 (site a) (dropping member 1 on n4 (site b) once the primary runs without it)",
            "warn: db: no standby in another site than the primary's (a) streams: acknowledged commits are in that site only"
        ]
    );
    // Member 2 catches up and the primary loads the list: member 1 is forgotten.
    w.member(3, 2, MemberRole::Replica, 1, 1000).sync_applied(2, 0, &[2]);
    w.after(300).all_seen_but(&[4]).check(&["set-database-sync-set db at term 1: [2] (leaving [])"]);
    // n4 is back and streams: the list moves back to it (adding is one step, dropping two).
    w.member(4, 1, MemberRole::Replica, 1, 1000)
        .after(300)
        .all_seen_but(&[])
        .check(&["set-database-sync-set db at term 1: [1] (leaving [2])"]);
}

#[test]
fn a_new_list_whose_member_dies_before_its_drop_is_confirmed_changes_again_and_counts_both() {
    let mut w = db_sites_world();
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [2])"]);
    // Member 1 never catches up: n4 dies. Waiting for the confirmation would block every
    // commit for good; the list moves to member 2, and member 1 is counted as leaving.
    w.after(300).all_seen_but(&[4]).check(&[]);
    w.after(900).all_seen_but(&[4]).check(&["set-database-sync-set db at term 1: [2] (leaving [1])"]);
    assert_eq!(w.state.desired.databases["db"].sync_standbys(0), vec![1, 2]);
    w.member(3, 2, MemberRole::Replica, 1, 1000).sync_applied(2, 0, &[2]);
    w.after(300).all_seen_but(&[4]).check(&["set-database-sync-set db at term 1: [2] (leaving [])"]);
}

#[test]
fn a_listed_standby_that_stops_streaming_on_a_live_node_keeps_its_place_for_a_second() {
    let mut w = db_sites_world();
    w.member(4, 1, MemberRole::Replica, 1, 1000).sync_applied(2, 0, &[1]);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [2])"]);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [1] (leaving [])"]);
    w.member_at(4, 1, MemberRole::Starting, 1, 1, 1000, 1000, false);
    w.after(300).all_seen_but(&[]).check(&[]).after(600).all_seen_but(&[]).check(&[]);
    w.after(400).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [2] (leaving [1])"]);
}

#[test]
fn one_site_or_async_keeps_every_standby_listed() {
    let mut w = pg_world(&[(1, "a"), (2, "a"), (3, "a"), (4, "a")], "instances: 3, sync: 1");
    let members = w.state.desired.databases["db"].members.clone();
    w.member(members[0], 0, MemberRole::Primary, 1, 1000).member(members[1], 1, MemberRole::Replica, 1, 900);
    w.member(members[2], 2, MemberRole::Replica, 1, 950);
    w.after(300).all_seen_but(&[]).check(&[]).after(2000).all_seen_but(&[members[2]]).check(&[]);
    let mut w = db_sites_world();
    w.deploy("databases:\n  db: { instances: 3 }\n");
    w.after(300).all_seen_but(&[]).check(&[]);
}

#[test]
fn the_sync_list_is_not_changed_when_too_few_stream() {
    let mut w = db_sites_world();
    w.member_at(3, 2, MemberRole::Starting, 1, 1, 900, 900, false);
    w.member_at(4, 1, MemberRole::Starting, 1, 1, 900, 900, false);
    w.after(300).all_seen_but(&[]).check(&[]).after(2000).all_seen_but(&[]).check(&[]);
}

mod db_props {
    use super::*;
    use proptest::prelude::*;

    fn role(i: u8) -> MemberRole {
        match i % 6 {
            0 => MemberRole::Primary,
            1 => MemberRole::Replica,
            2 => MemberRole::Starting,
            3 => MemberRole::Stopped,
            4 => MemberRole::Fenced,
            _ => MemberRole::Failed,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever the members report, a tick never promotes a member on a down node or
        /// one that did not report `Replica`.
        #[test]
        fn never_promotes_a_member_on_a_down_node_or_not_a_replica(
            members in proptest::collection::vec((0u8..4, any::<bool>(), 0u8..6, any::<bool>(), 0u64..4, 1u64..3), 3),
            sync in 0u32..3,
        ) {
            let mut w = db_world(&format!(", sync: {sync}"));
            let agos = [0, 1000, 2000, 4000];
            for (i, (ago, down, r, answering, lsn, term)) in members.iter().enumerate() {
                let node = i as NodeId + 2;
                if *down {
                    w.command(Command::SetNodeFlags { id: node, cordoned: None, down: Some(true), draining: None });
                }
                w.member_at(node, i as u32, role(*r), *term, 1, *lsn, *lsn, *answering);
                w.seen(node, agos[*ago as usize]);
            }
            for _ in 0..2 {
                let out = w.tick();
                // Checked on the state as the earlier proposals of the tick leave it (the
                // detector may bring a node back first).
                let mut sim = w.state.clone();
                for cmd in &out.proposals {
                    if let Command::SetDatabasePrimary { primary, .. } = cmd {
                        let node = sim.desired.databases["db"].members[*primary as usize];
                        prop_assert!(!sim.nodes[&node].down, "promoted a member on down node {node}");
                        let report = w.obs.nodes[&node].databases.iter().find(|m| m.member == *primary);
                        prop_assert_eq!(report.map(|r| r.role), Some(MemberRole::Replica));
                    }
                    sim.apply(&Request::new(cmd.clone()));
                }
            }
        }
    }
}

/// Five nodes on five sites, n1 (the leader) without PostgreSQL; database `db` with
/// `fields` has its members on n2 n3 n4 (member 0 on n2 the primary), reporting as in
/// [`db_world`]; n5 is free.
fn db_drain_world(fields: &str) -> World {
    let mut w = pg_world(&[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")], &format!("instances: 3{fields}"));
    assert_eq!(w.state.desired.databases["db"].members, [2, 3, 4]);
    w.member(2, 0, MemberRole::Primary, 1, 1000).member(3, 1, MemberRole::Replica, 1, 900).member(
        4,
        2,
        MemberRole::Replica,
        1,
        950,
    );
    w
}

fn drain(w: &mut World, node: NodeId) {
    w.command(Command::SetNodeFlags { id: node, cordoned: Some(true), down: None, draining: Some(true) });
}

#[test]
fn draining_the_primarys_node_switches_it_over_then_moves_its_member() {
    let mut w = db_drain_world("");
    w.command(Command::SetRemoving { id: 2, removing: true });
    w.after(300).all_seen_but(&[]).check(&["switchover db: Requested to member Some(2)"]);
    assert_eq!(w.notes(), ["info: db: drain: switching the primary over from n2 to member 2 on n4"]);
    w.after(300).all_seen_but(&[]).check(&["switchover db: Fencing to member Some(2)"]);
    w.member(2, 0, MemberRole::Fenced, 1, 1000).member(4, 2, MemberRole::Replica, 1, 1001);
    w.after(300).all_seen_but(&[]).check(&["promote db member 2 on n4, term 2"]);
    // The old primary's node has not turned its member into a replica yet: it waits
    // for nothing (it is leaving), but member 1 must stream before member 0 moves.
    w.member(4, 2, MemberRole::Primary, 2, 1100).member_at(3, 1, MemberRole::Replica, 2, 1, 1100, 1100, false);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["info: db: drain: member 0 on n2 waits for member 1 on n3 to stream (one member moves at a time)"]
    );
    w.member(3, 1, MemberRole::Replica, 2, 1100);
    w.after(300).all_seen_but(&[]).check(&["move db member 0 from n2 to n5"]);
    assert_eq!(
        w.notes(),
        ["info: db: drain: member 0 moves from n2 to n5 (cloned there from the primary; the copy on n2 stops)"]
    );
    // Nothing is left on n2: its removal finishes.
    w.after(300).all_seen_but(&[]).check(&["remove n2", "remove members 2"]);
    assert_eq!(w.state.desired.databases["db"].members, [5, 3, 4]);
}

#[test]
fn a_draining_standby_moves_once_the_synchronous_list_no_longer_counts_it() {
    let mut w = db_drain_world(", sync: 1");
    w.member(4, 2, MemberRole::Replica, 1, 1000);
    drain(&mut w, 3);
    // Sites: the list drops member 1 (its node drains) in two steps, then it moves.
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [2] (leaving [1])"]);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(w.notes(), ["info: db: drain: member 1 on n3 waits to leave the synchronous standbys"]);
    w.sync_applied(2, 0, &[2]);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: [2] (leaving [])"]);
    w.after(300).all_seen_but(&[]).check(&["move db member 1 from n3 to n5"]);
    // Its copy on n5 streams: the list takes it back.
    w.member(5, 1, MemberRole::Replica, 1, 1000);
    w.after(300).all_seen_but(&[]).check(&["set-database-sync-set db at term 1: every standby"]);
}

#[test]
fn a_standby_whose_move_would_hold_commits_stays_and_says_why() {
    let mut w = pg_world(&[(1, "a"), (2, "a"), (3, "a"), (4, "a")], "instances: 2, sync: 1");
    assert_eq!(w.state.desired.databases["db"].members, [2, 3]);
    w.member(2, 0, MemberRole::Primary, 1, 1000).member(3, 1, MemberRole::Replica, 1, 1000);
    drain(&mut w, 3);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: drain: member 1 on n3 cannot leave: with sync 1, commits would wait while its copy is made elsewhere (0 other standby(s) stream); raise instances by one for the drain, or lower sync"]
    );
    // Draining the primary's node too: no standby off a draining node to switch over to.
    drain(&mut w, 2);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: drain: the primary on n2 cannot leave yet: no standby streams on a node that is not draining within 16 MiB of it"]
    );
}

#[test]
fn a_standby_with_nowhere_to_go_stays_and_says_why() {
    let mut w = db_drain_world("");
    w.command(Command::SetNodeFlags { id: 5, cordoned: Some(true), down: None, draining: None });
    drain(&mut w, 3);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: drain: member 1 on n3 cannot leave: database `db`: no node for member 1 (needs 0.00 CPU, 0Mi memory) among the arm64 nodes with PostgreSQL 15: n2 runs another member, n4 runs another member; add nodes, free room or lower instances"]
    );
    // Uncordoning n5 lets it go there.
    w.command(Command::SetNodeFlags { id: 5, cordoned: Some(false), down: None, draining: None });
    w.after(300).all_seen_but(&[]).check(&["move db member 1 from n3 to n5"]);
}

#[test]
fn a_drain_switches_over_only_to_a_close_standby_and_not_again_at_once_after_an_abort() {
    let mut w = db_drain_world("");
    // Both standbys are over 16 MiB behind the primary: no switchover yet.
    w.member(2, 0, MemberRole::Primary, 1, 100 << 20);
    drain(&mut w, 2);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: drain: the primary on n2 cannot leave yet: no standby streams on a node that is not draining within 16 MiB of it"]
    );
    w.member(3, 1, MemberRole::Replica, 1, 90 << 20);
    w.after(300).all_seen_but(&[]).check(&["switchover db: Requested to member Some(1)"]);
    w.after(300).all_seen_but(&[]).check(&["switchover db: Fencing to member Some(1)"]);
    // The target never catches up: aborted after 10 s, and not asked again for 30 s.
    w.after(10_000).all_seen_but(&[]).check(&["switchover db: clear"]);
    w.after(300).all_seen_but(&[]).check(&[]);
    w.after(19_500).all_seen_but(&[]).check(&["switchover db: Requested to member Some(1)"]);
}

#[test]
fn settings_that_need_a_restart_roll_standbys_first_then_the_primary_by_a_switchover() {
    let mut w = db_drain_world(", sync: 1");
    w.member(3, 1, MemberRole::Replica, 1, 1000).member(4, 2, MemberRole::Replica, 1, 1000);
    for (node, member) in [(2, 0), (3, 1), (4, 2)] {
        w.pending_restart(node, member, true);
    }
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db member 1 at term 1"]);
    assert_eq!(w.notes(), ["info: db: restarting member 1 on n3 (settings changed that need a restart)"]);
    // Member 1 is down for its restart: nothing else happens until it streams again.
    w.member_at(3, 1, MemberRole::Starting, 1, 1, 1000, 1000, false);
    w.after(300).all_seen_but(&[]).check(&[]);
    w.member(3, 1, MemberRole::Replica, 1, 1000).pending_restart(3, 1, false);
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db none at term 1"]);
    assert_eq!(w.notes(), ["info: db: member 1 on n3 restarted with the new settings"]);
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db member 2 at term 1"]);
    w.pending_restart(4, 2, false);
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db none at term 1"]);
    // Every standby runs the new settings: the primary hands over to the best of them.
    w.after(300).all_seen_but(&[]).check(&["switchover db: Requested to member Some(1)"]);
    assert_eq!(
        w.notes(),
        ["info: db: switching the primary over from n2 to member 1 on n3 (settings changed that need a restart; the old primary restarts as a standby)"]
    );
}

#[test]
fn restarts_wait_until_every_member_loaded_the_new_configuration() {
    // The primary reloaded the new settings first and says a restart is needed; the
    // standbys still run the previous generation's file, so their "not pending" means
    // nothing yet: no switchover (which would land on a standby that still needs a
    // restart, and need a second one) until they report the new generation.
    let mut w = db_drain_world(", sync: 1");
    w.member(3, 1, MemberRole::Replica, 1, 1000).member(4, 2, MemberRole::Replica, 1, 1000);
    let gen = w.state.desired.databases["db"].generation;
    let set_gen = |w: &mut World, node: NodeId, g: u64| {
        for m in w.obs.nodes.get_mut(&node).expect("node").databases.iter_mut() {
            m.config_generation = Some(g);
        }
    };
    set_gen(&mut w, 2, gen);
    set_gen(&mut w, 3, gen - 1);
    set_gen(&mut w, 4, gen - 1);
    w.pending_restart(2, 0, true);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(w.notes(), ["info: db: restarts wait until member 1 on n3 has loaded the new settings"]);
    // The standbys load it and say they need a restart too: standbys first, as always.
    set_gen(&mut w, 3, gen);
    set_gen(&mut w, 4, gen);
    w.pending_restart(3, 1, true).pending_restart(4, 2, true);
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db member 1 at term 1"]);
}

#[test]
fn a_standby_restarts_only_while_the_others_stream_and_a_lone_primary_restarts_in_place() {
    let mut w = db_drain_world("");
    w.pending_restart(3, 1, true).pending_restart(4, 2, true);
    w.member_at(4, 2, MemberRole::Replica, 1, 1, 950, 950, true);
    w.obs.nodes.get_mut(&4).expect("n4").databases[0].streaming = false;
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["info: db: member 1 on n3 waits to restart until member 2 on n4 streams (one member restarts at a time)"]
    );

    let mut w = pg_world(&[(1, "a"), (2, "a")], "instances: 1");
    w.member(2, 0, MemberRole::Primary, 1, 1000).pending_restart(2, 0, true);
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db member 0 at term 1"]);
    assert_eq!(
        w.notes(),
        ["warn: db: restarting its only member, the primary on n2 (settings changed that need a restart): connections drop and writes wait until it is back"]
    );
    w.pending_restart(2, 0, false);
    w.after(300).all_seen_but(&[]).check(&["set-database-restart db none at term 1"]);
}

#[test]
fn a_one_member_database_on_a_draining_node_says_how_to_let_it_leave() {
    let mut w = pg_world(&[(1, "a"), (2, "a"), (3, "a")], "instances: 1");
    w.member(2, 0, MemberRole::Primary, 1, 1000);
    drain(&mut w, 2);
    w.after(300).all_seen_but(&[]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: drain: its only member, the primary on n2, cannot leave: there is no standby to hand writes to; deploy it with `instances: 2` (a standby is cloned on another node, then the drain switches over to it)"]
    );
    // With a second member on n3 streaming, the drain switches over to it.
    w.deploy("databases:\n  db: { instances: 2 }\n");
    w.member(3, 1, MemberRole::Replica, 1, 1000);
    w.after(300).all_seen_but(&[]).check(&["switchover db: Requested to member Some(1)"]);
}

/// Sites a, a, a, b, every node with PostgreSQL and Redis, n1 (the leader) with neither;
/// Redis database `db` of `fields` on n2 (the master, offset 1000) n4 (900) n3 (950).
fn redis_world(fields: &str) -> World {
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a"), (4, "b")]);
    for id in 1..=4 {
        let mut n = w.state.nodes[&id].clone();
        if id == 1 {
            n.software.clear();
        } else {
            n.software.insert("redis".into(), "7".into());
        }
        w.command(Command::UpsertNode(n));
        w.seen(id, 0);
    }
    w.deploy(&format!("databases:\n  db: {{ engine: redis, instances: 3{fields} }}\n"));
    assert_eq!(w.state.desired.databases["db"].members, [2, 4, 3]);
    w.member(2, 0, MemberRole::Primary, 1, 1000).member(4, 1, MemberRole::Replica, 1, 900).member(
        3,
        2,
        MemberRole::Replica,
        1,
        950,
    );
    w
}

#[test]
fn a_redis_master_silent_for_the_lease_fails_over_to_the_replica_with_the_highest_offset() {
    let mut w = redis_world("");
    // Several sites, but Redis's WAIT counts any replica: no synchronous list is chosen.
    w.after(300).all_seen_but(&[]).check(&[]);
    w.after(1200).all_seen_but(&[2]).check(&[]);
    w.after(400).all_seen_but(&[2]).check(&["promote db member 2 on n3, term 2"]);
    assert_eq!(
        w.notes(),
        ["info: db: promoting member 2 on n3 (term 1 → 2): primary n2 silent for 1.6 s; may lose up to 50 bytes of acknowledged writes (asynchronous replication)"]
    );
}

#[test]
fn a_redis_master_not_answering_fails_over_after_two_ticks() {
    let mut w = redis_world("");
    // A restart (starting) is not a failure; failing twice in a row is.
    w.member_at(2, 0, MemberRole::Starting, 1, 0, 0, 0, false);
    w.after(300).all_seen_but(&[]).check(&[]);
    w.member_at(2, 0, MemberRole::Failed, 1, 0, 0, 0, false);
    w.after(300).all_seen_but(&[]).check(&[]);
    w.after(300).all_seen_but(&[]).check(&["promote db member 2 on n3, term 2"]);
    assert_eq!(w.notes(), ["info: db: promoting member 2 on n3 (term 1 → 2): Redis of primary n2 not answering"]);
}

#[test]
fn replicated_redis_promotes_only_when_every_replica_that_may_hold_a_write_reports() {
    let mut w = redis_world(", durability: replicated");
    w.after(1600).all_seen_but(&[2, 3]).check(&[]);
    assert_eq!(
        w.notes(),
        ["warn: db: primary n2 silent; heard from 1 of 2 synchronous standbys, need 2 to be sure no acknowledged commit is lost; waiting"]
    );
    w.after(300).all_seen_but(&[2]).check(&["promote db member 2 on n3, term 2"]);
}

#[test]
fn a_redis_switchover_promotes_a_target_that_processed_the_fenced_masters_offset() {
    let mut w = redis_world("");
    ask_switchover(&mut w, Some(1));
    w.after(300).all_seen_but(&[]).check(&["switchover db: Fencing to member Some(1)"]);
    // The fenced master keeps running and reports the offset it stopped at.
    w.member(2, 0, MemberRole::Fenced, 1, 1000).after(300).all_seen_but(&[]).check(&[]);
    w.member_at(4, 1, MemberRole::Replica, 1, 0, 1000, 999, true).after(300).all_seen_but(&[]).check(&[]);
    // Processed exactly that offset: it holds every write the master took.
    w.member_at(4, 1, MemberRole::Replica, 1, 0, 1000, 1000, true)
        .after(300)
        .all_seen_but(&[])
        .check(&["promote db member 1 on n4, term 2"]);
}

#[test]
fn a_restart_rolls_one_replica_at_a_time_across_nodes() {
    // Three replicas on three nodes: the leader lets one at a time onto the new
    // generation, each only once the previous one is ready; an unready one stops the
    // roll; a down node does not hold it up.
    let mut w = world(&[(1, "a"), (2, "a"), (3, "a")]);
    w.deploy("services:\n  web: { run: [x], replicas: 3 }\n").all_seen_but(&[]);
    for n in 1..=3 {
        w.running(n, true);
    }
    w.check(&[]);
    let gens = |w: &World| (0..3).map(|i| w.state.instance_generation("web", i).unwrap_or(0)).collect::<Vec<_>>();
    let old = gens(&w)[1];
    let (_, desired) = holdfast_state::plan::plan_restart(&w.state, "web").expect("restart");
    let rev = w.state.revision;
    w.command(Command::SetDesired { expected_revision: rev, desired });
    let g = w.state.desired.services["web"].generation;
    assert_eq!(gens(&w), [g, old, old], "only web-0 is let go at first");
    // Nodes still report the old instances: nothing moves on.
    w.check(&[]);
    assert!(w.last_notes().iter().any(|n| n.contains("waiting for web-0")), "{:?}", w.last_notes());
    // web-0 runs the new generation but is not ready yet: still waiting.
    for n in 1..=3 {
        w.running(n, false);
    }
    w.check(&[]);
    for n in 1..=3 {
        w.running(n, true);
    }
    w.check(&[&format!("advance-rollout web@{g} to 2 replicas")]);
    assert_eq!(gens(&w), [g, g, old]);
    // web-1's node goes down: the roll waits for its replacement elsewhere, not for it.
    let node_of_1 = w.state.desired.placements["web"][1];
    w.after(10 * SEC).all_seen_but(&[node_of_1]);
    w.check(&["n2 down", "place web: n1 n1 n3"]);
    for n in [1, 3] {
        w.running(n, true);
    }
    w.check(&[&format!("advance-rollout web@{g} to 3 replicas")]);
    for n in [1, 3] {
        w.running(n, true);
    }
    w.check(&[&format!("advance-rollout web@{g} done")]);
    assert_eq!(w.state.desired.services["web"].rollout, None);
}

impl World {
    /// Node `node` reports the instance of run `id` of `job` at `attempt`: running, or
    /// exited with `code`.
    fn run_reported(&mut self, node: NodeId, job: &str, id: u32, attempt: u64, exited: Option<i32>) -> &mut Self {
        let report = InstanceReport {
            service: format!("{job}.run"),
            replica: id,
            generation: attempt,
            ready: exited.is_none(),
            running: exited.is_none(),
            exited: exited.map(|c| (Some(c), format!("exited with code {c}"))),
        };
        if let Some(r) = self.obs.nodes.get_mut(&node) {
            r.instances.retain(|i| !(i.service == report.service && i.replica == id));
            r.instances.push(report);
        }
        self
    }

    fn run_of(&self, job: &str, id: u64) -> holdfast_state::jobs::Run {
        self.state.runs[job].runs.iter().find(|r| r.id == id).cloned().expect("run")
    }
}

const WALL0: Millis = 1_796_644_800_000; // 2026-12-07T12:00:00Z, a multiple of 10 s

#[test]
fn a_schedule_starts_each_slot_once_even_across_a_new_leader() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.deploy("jobs:\n  tick: { run: [x], every: 10s }\n").all_seen_but(&[]);
    assert_eq!(w.wall, WALL0);
    // First look: the cursor starts at the current slot (nothing from the past runs).
    w.check(&[&format!("set-job-cursor tick {WALL0}")]);
    w.after(5 * SEC).all_seen_but(&[]).check(&[]);
    w.after(5 * SEC).all_seen_but(&[]);
    // The slot's run starts and is placed in the same pass.
    w.check(&[
        &format!("start-run tick #0 for slot {} (pending)", WALL0 + 10_000),
        "put-run tick #0 attempt 1 pending on 1",
    ]);
    // A new leader (an engine with no memory) in the same slot starts nothing again.
    w.engine = Engine::new();
    w.check(&[]);
    // Slots missed while nobody led: only the latest runs; run #0 is still going, but
    // concurrency is `forbid`, so that slot is skipped.
    w.after(35 * SEC).all_seen_but(&[]).run_reported(1, "tick", 0, 1, None);
    let slot = WALL0 + 40_000;
    w.check(&["put-run tick #0 attempt 1 running on 1", &format!("start-run tick #1 for slot {slot} (skipped)")]);
    assert!(w.last_notes().iter().any(|n| n.contains("were missed")), "{:?}", w.last_notes());
    assert_eq!(w.run_of("tick", 1).result.as_deref(), Some("skipped: run #0 was still going (concurrency: forbid)"));
    // It finishes; the next slot runs.
    w.after(10 * SEC).all_seen_but(&[]).run_reported(1, "tick", 0, 1, Some(0));
    w.check(&[
        "put-run tick #0 attempt 1 succeeded on 1",
        &format!("start-run tick #2 for slot {} (pending)", slot + 10_000),
        "put-run tick #2 attempt 1 pending on 1",
    ]);
}

#[test]
fn failed_attempts_retry_with_backoff_then_the_run_fails() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.deploy("jobs:\n  once: { run: [x], retries: 1 }\n").all_seen_but(&[]);
    let run = holdfast_state::jobs::Run::new(0, None, "admin".into(), w.wall);
    w.command(Command::StartRun { job: "once".into(), run });
    w.check(&["put-run once #0 attempt 1 pending on 1"]);
    w.after(SEC).all_seen_but(&[]).run_reported(1, "once", 0, 1, Some(3));
    w.check(&["put-run once #0 attempt 2 pending"]);
    let r = w.run_of("once", 0);
    assert_eq!(
        (r.result.as_deref(), r.exit_code, r.retry_at_ms),
        (Some("exited with code 3"), Some(3), Some(w.wall + 10_000))
    );
    // Not before its retry time; then on the least loaded node (both have none: n1).
    w.after(5 * SEC).all_seen_but(&[]).check(&[]);
    w.after(5 * SEC).all_seen_but(&[]).check(&["put-run once #0 attempt 2 pending on 1"]);
    w.after(SEC).all_seen_but(&[]).run_reported(1, "once", 0, 2, Some(1));
    w.check(&["put-run once #0 attempt 2 failed on 1"]);
    assert_eq!(w.run_of("once", 0).state, holdfast_state::jobs::RunState::Failed);
}

#[test]
fn a_run_times_out_and_a_dead_node_loses_its_attempt() {
    let mut w = world(&[(1, "a"), (2, "b")]);
    w.deploy("jobs:\n  slow: { run: [x], timeout: 30s, retries: 1, node_selector: { site: b } }\n").all_seen_but(&[]);
    let run = holdfast_state::jobs::Run::new(0, None, "admin".into(), w.wall);
    w.command(Command::StartRun { job: "slow".into(), run });
    w.check(&["put-run slow #0 attempt 1 pending on 2"]);
    w.all_seen_but(&[]).run_reported(2, "slow", 0, 1, None);
    w.check(&["put-run slow #0 attempt 1 running on 2"]);
    w.after(30 * SEC).all_seen_but(&[]).run_reported(2, "slow", 0, 1, None);
    w.check(&["put-run slow #0 attempt 2 pending"]);
    assert_eq!(w.run_of("slow", 0).result.as_deref(), Some("timed out after 30s"));
    w.after(10 * SEC).all_seen_but(&[]).check(&["put-run slow #0 attempt 2 pending on 2"]);
    // n2 dies: the attempt is lost; no other node matches the selector, so the run ends.
    w.after(10 * SEC).all_seen_but(&[2]);
    w.check(&["n2 down", "put-run slow #0 attempt 2 failed on 2"]);
    assert_eq!(w.run_of("slow", 0).result.as_deref(), Some("node n2 went down during attempt 2"));
}

#[test]
fn runs_go_where_their_requests_fit() {
    let mut w = world(&[(1, "a"), (2, "a")]);
    w.deploy("jobs:\n  big: { run: [x], resources: { cpu: 3 } }\n").all_seen_but(&[]);
    for id in 0..3 {
        let run = holdfast_state::jobs::Run::new(id, None, "admin".into(), w.wall);
        w.command(Command::StartRun { job: "big".into(), run });
    }
    // 4 cores each: one run of 3 cores per node; the third waits and says why.
    w.check(&["put-run big #0 attempt 1 pending on 1", "put-run big #1 attempt 1 pending on 2"]);
    assert!(
        w.last_notes()
            .iter()
            .any(|n| n.contains("run #2 waits: no node it may use has room for its requests (cpu 3000m")),
        "{:?}",
        w.last_notes()
    );
    // One finishes: the waiting run takes its room.
    w.all_seen_but(&[]).run_reported(1, "big", 0, 1, Some(0)).run_reported(2, "big", 1, 1, None);
    w.check(&["put-run big #0 attempt 1 succeeded on 1", "put-run big #1 attempt 1 running on 2"]);
    w.check(&["put-run big #2 attempt 1 pending on 1"]);
}
