//! Managed PostgreSQL end to end (each node in its own network namespace when root, as
//! under CI; on loopback otherwise), with the machine's PostgreSQL, psql and a
//! psycopg writer: three members on three holdfast nodes, a primary whose machine dies
//! under the write loop, the old primary coming back as a replica, a synchronous standby
//! dying, the read-only endpoint, a switchover under load, a drain of the primary's
//! node, and a rolling restart for a setting that needs one. Every write is counted as
//! acknowledged or failed-or-unknown; with `sync: 1` no acknowledged write may be missing.
//! The faults that need network namespaces (freeze, partition, link down, the seeded
//! schedule) are in `postgres_faults.rs`.
mod common;

use std::time::Duration;

use common::pg::*;
use common::*;

/// Three nodes on sites a, a, b, each in its own network namespace when root (see
/// `ClusterConfig::namespaces_when_root`), on loopback otherwise.
fn pg_cluster(name: &str, ports_from: u16) -> Cluster {
    Cluster::form(config(name).sites(&["a", "a", "b"]).ports_from(ports_from).namespaces_when_root())
}

/// The database of these tests in `project` (each test its own: on loopback the
/// clusters of tests running side by side share the machine's service addresses).
fn spec(project: &str) -> String {
    format!("project: {project}\n{DB}")
}

const DB: &str = "databases:\n  db:\n    engine: postgres\n    instances: 3\n    sync: 1\n    users: [app]\n    databases: [app]\n    parameters: {max_connections: \"50\", shared_buffers: 16MB}\n";

#[test]
fn a_dead_primarys_machine_fails_over_and_comes_back_as_a_replica() {
    // Proves: with sync: 1, SIGKILL of the primary's whole machine (daemon and postgres)
    // under a psycopg write loop through `db-rw`: writes resume on a promoted replica with
    // only the client's usual reconnect, no acknowledged write is missing, the term moves
    // on, `db-ro` reaches only replicas, and the old primary's node, started again,
    // rejoins as a streaming replica (pg_rewind) instead of serving writes. Then the
    // machine of a synchronous standby dies while another standby is alive: writes go on.
    if !have_postgres() {
        return;
    }
    let Some(py) = python() else { return };
    let mut c = pg_cluster("pgkill", 37000);
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec("pgkill"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    let ro = c[0].cli_ok(&["db", "url", "db", "--endpoint", "ro"]).trim().to_string();
    psql(&c[0], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
    assert_eq!(psql(&c[0], &ro, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"), "db-ro reaches a replica");
    assert_eq!(psql(&c[0], &url, "SELECT pg_is_in_recovery()").as_deref(), Ok("f"), "db-rw reaches the primary");

    let victim_name = before["primary_node"].as_str().expect("primary node").to_string();
    let victim = node_index(&c, &victim_name);
    let watcher = (0..c.len()).find(|i| *i != victim).expect("a survivor");
    let term = before["term"].as_u64().expect("term");
    let writer = PyWriter::start(&py, &c[watcher], &url, &c[watcher].home);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    c.allow_errors(&["heartbeat", "link", "tunnel", "raft", "Raft", "connect"]);
    let killed_at = epoch_now();
    c[victim].kill_machine();
    writer.wait_acked_after(killed_at + 0.1, 20, Duration::from_secs(30), "writes acknowledged again after the kill");
    let outage = writer.longest_gap_after(killed_at - 1.0);
    let after = wait_healthy(&c[watcher], 1, Duration::from_secs(30));
    assert!(after["term"].as_u64() > Some(term), "a new term: {after}");
    assert_ne!(after["primary_node"], victim_name.as_str(), "{after}");
    assert_eq!(
        missing(&c[watcher], &url, "t", &writer.acked()),
        Vec::<u64>::new(),
        "acknowledged writes lost (sync: 1)"
    );
    assert_eq!(
        psql(&c[watcher], &ro, "SELECT pg_is_in_recovery()").as_deref(),
        Ok("t"),
        "db-ro still reaches only replicas"
    );
    eprintln!("primary killed: writes back after {outage:.2} s without an acknowledged write");
    // A survivor's history names the failover, whether or not the leader died with it.
    let failover = wait_for("the failover in the events", Duration::from_secs(10), || {
        let kinds = event_kinds(&c[watcher], "database db");
        seen_unless(kinds.contains(&"failover".to_string()), kinds.clone(), format!("{kinds:?}"))
    });
    assert!(failover.contains(&"deployed".to_string()), "{failover:?}");

    // The old primary's machine comes back: it rejoins as a replica of the new term.
    c[victim].spawn(&[]);
    let healed = wait_healthy(&c[watcher], 2, Duration::from_secs(90));
    let old = healed["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == victim_name.as_str()).cloned())
        .expect("the old primary's member");
    assert_eq!(old["role"], "replica", "{healed}");

    // A synchronous standby's machine dies (`ANY 1` of the two standbys): the other one
    // answers for commits and writes go on within seconds. When the Raft leader's node
    // holds a standby (and not the writer) it is the one killed: the cluster loses its leader as well, and the
    // primary's node must keep its lease through the election instead of fencing a
    // healthy primary.
    let primary = healed["primary_node"].as_str().expect("primary").to_string();
    let leader = c.leader_index(watcher).filter(|i| c[*i].name != primary && *i != watcher);
    let standby = leader.or_else(|| (0..c.len()).find(|i| c[*i].name != primary && *i != watcher)).unwrap_or(victim);
    let standby_killed = epoch_now();
    c[standby].kill_machine();
    writer.expect_acked_after(
        &c,
        standby_killed + 0.1,
        100,
        Duration::from_secs(20),
        "writes go on without that standby",
    );
    let gap = writer.longest_gap_after(standby_killed);
    let was = if leader == Some(standby) { " (the Raft leader's node)" } else { "" };
    eprintln!("standby {}{was} killed: longest gap between acknowledged writes {gap:.2} s", c[standby].name);
    assert!(gap < 5.0, "writes stalled {gap:.2} s after a standby died while another was alive");
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    eprintln!("writes: {} acknowledged, {} failed or unknown", acked.len(), log.len() - acked.len());
    assert_eq!(missing(&c[watcher], &url, "t", &acked), Vec::<u64>::new(), "still every acknowledged write");
}

#[test]
fn the_raft_leaders_machine_dying_does_not_stop_a_primary_elsewhere() {
    // Proves: when the machine that dies is the control plane's Raft leader and holds
    // only a standby, the primary on another node keeps its lease through the election
    // (its commits are held during the election, its postgres is never restarted), so
    // writes through a third node's proxy pause briefly (~1 s here; the test allows 3 s);
    // no acknowledged write is missing, and the term does not move.
    if !have_postgres() {
        return;
    }
    let Some(py) = python() else { return };
    let mut c = pg_cluster("pglead", 36000);
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec("pglead"));
    assert!(ok, "{out}\n{err}");
    let mut d = wait_healthy(&c[0], 2, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    psql(&c[0], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
    let leader = c.leader_index(0).expect("a leader");
    if d["primary_node"] == c[leader].name.as_str() {
        let to = c.iter().map(|n| n.name.clone()).find(|n| *n != c[leader].name).expect("another node");
        c[0].cli_ok(&["db", "switchover", "db", "--to", &to]);
        d = wait_healthy(&c[0], 2, Duration::from_secs(60));
    }
    let primary = node_index(&c, d["primary_node"].as_str().expect("primary"));
    assert_eq!(c.leader_index(primary), Some(leader), "the leader did not move: {d}");
    let writer_node = (0..c.len()).find(|i| *i != leader && *i != primary).expect("a third node");
    let term = d["term"].as_u64();
    let member = d["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == c[primary].name.as_str()).cloned())
        .and_then(|m| m["member"].as_u64())
        .expect("the primary's member");
    let pidfile = c[primary].dir.join(format!("databases/db/m{member}/data/postmaster.pid"));
    let postmaster = || std::fs::read_to_string(&pidfile).ok().and_then(|t| t.lines().next().map(str::to_string));
    let before = postmaster().expect("the primary's postmaster.pid");
    let writer = PyWriter::start(&py, &c[writer_node], &url, &c[writer_node].home);
    writer.expect_acked_after(&c, 0.0, 50, Duration::from_secs(20), "writes under way");
    c.allow_errors(&["heartbeat", "link", "tunnel", "raft", "Raft", "connect"]);
    let killed = epoch_now();
    c[leader].kill_machine();
    writer.expect_acked_after(&c, killed + 0.1, 200, Duration::from_secs(30), "writes after the leader died");
    let gap = writer.longest_gap_after(killed);
    let after = wait_healthy(&c[primary], 1, Duration::from_secs(30));
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    eprintln!(
        "leader {} killed (primary on {}): longest gap {gap:.2} s; {} acknowledged, {} failed or unknown",
        c[leader].name,
        c[primary].name,
        acked.len(),
        log.len() - acked.len()
    );
    assert_eq!(missing(&c[primary], &url, "t", &acked), Vec::<u64>::new(), "acknowledged writes lost");
    assert_eq!(after["term"].as_u64(), term, "the primary was replaced: {after}");
    assert_eq!(postmaster().as_deref(), Some(before.as_str()), "the primary's postgres was restarted");
    assert!(gap < 3.0, "writes paused {gap:.2} s when only the leader's machine died");
}

#[test]
fn a_switchover_under_load_loses_nothing() {
    // Proves: `holdfast db switchover` moves the primary to the named node while a
    // psycopg write loop runs: no acknowledged write is missing, writes pause briefly,
    // and the former primary streams from the new one.
    if !have_postgres() {
        return;
    }
    let Some(py) = python() else { return };
    let c = pg_cluster("pgswitch", 38000);
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec("pgswitch"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    psql(&c[0], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
    let old = before["primary_node"].as_str().expect("primary").to_string();
    let to = c.iter().map(|n| n.name.clone()).find(|n| *n != old).expect("another node");
    let writer = PyWriter::start(&py, &c[0], &url, &c[0].home);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    let asked = epoch_now();
    let out = c[0].cli_ok(&["db", "switchover", "db", "--to", &to]);
    assert!(out.contains(&format!("on {to} is the primary")), "{out}");
    writer.wait_acked_after(epoch_now(), 20, Duration::from_secs(30), "writes after the switchover");
    let pause = writer.longest_gap_after(asked);
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    eprintln!("switchover: {} acknowledged, {} failed; pause {pause:.2} s", acked.len(), log.len() - acked.len());
    assert_eq!(missing(&c[0], &url, "t", &acked), Vec::<u64>::new(), "acknowledged writes lost in a switchover");
    let after = wait_healthy(&c[0], 2, Duration::from_secs(60));
    assert_eq!(after["primary_node"], to.as_str(), "{after}");
}

/// The pids of `postgres` processes whose command line names `dir` (a node's data
/// directory: its members' data directories are under it).
fn postgres_under(dir: &std::path::Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_postgres = args.first().is_some_and(|a| a.ends_with("/postgres") || a.starts_with("postgres:"));
        if is_postgres && args.iter().any(|a| a.contains(&dir)) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn draining_the_primarys_node_switches_over_and_moves_its_member_away() {
    // Proves: `holdfast drain` of the node holding the primary (two members, a third node
    // free) under a psycopg write loop: the primary is switched over (not failed over) to
    // the standby, the old primary's member is moved to the free node and cloned there,
    // the drain command returns once the node is empty, no postgres runs on it any more,
    // no acknowledged write is missing, and writes pause only for the switchover.
    if !have_postgres() {
        return;
    }
    let Some(py) = python() else { return };
    let c = pg_cluster("pgdrain", 35000);
    let yaml = "project: pgdrain\ndatabases:\n  db:\n    engine: postgres\n    instances: 2\n    users: [app]\n    databases: [app]\n";
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", yaml);
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 1, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    psql(&c[0], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
    let member_nodes = |d: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = d["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["node"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let primary = before["primary_node"].as_str().expect("primary").to_string();
    let members = member_nodes(&before);
    let standby = members.iter().find(|n| **n != primary).expect("a standby").clone();
    let spare = c.iter().map(|n| n.name.clone()).find(|n| !members.contains(n)).expect("a free node");
    let victim = node_index(&c, &primary);
    let watcher = node_index(&c, &spare);
    assert!(!postgres_under(&c[victim].dir).is_empty(), "the primary's postgres runs under {:?}", c[victim].dir);

    let writer = PyWriter::start(&py, &c[watcher], &url, &c[watcher].home);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    let asked = epoch_now();
    let out = c[watcher].cli_ok(&["drain", &primary, "--timeout", "150s"]);
    eprintln!("holdfast drain {primary}:\n{out}");
    assert!(out.contains(&format!("node {primary} is drained")), "{out}");
    writer.expect_acked_after(&c, epoch_now(), 20, Duration::from_secs(30), "writes after the drain");
    let pause = writer.longest_gap_after(asked);
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();

    let after = wait_healthy(&c[watcher], 1, Duration::from_secs(90));
    assert_eq!(after["primary_node"], standby.as_str(), "switched over to the standby: {after}");
    assert_eq!(after["term"].as_u64(), before["term"].as_u64().map(|t| t + 1), "one promotion: {after}");
    let mut expected = vec![standby.clone(), spare.clone()];
    expected.sort();
    assert_eq!(member_nodes(&after), expected, "the member left {primary} for {spare}: {after}");
    let nodes = c[watcher].cli_json(&["nodes"]).expect("nodes");
    let drained = nodes["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == primary.as_str()).cloned())
        .expect("the drained node");
    assert_eq!(drained["instances"], 0, "{drained}");
    wait_for("no postgres left on the drained node", Duration::from_secs(30), || {
        let pids = postgres_under(&c[victim].dir);
        seen_unless(pids.is_empty(), (), format!("postgres pids {pids:?}"))
    });
    eprintln!(
        "drain of the primary's node: {} acknowledged, {} failed or unknown; longest write pause {pause:.2} s",
        acked.len(),
        log.len() - acked.len()
    );
    assert_eq!(missing(&c[watcher], &url, "t", &acked), Vec::<u64>::new(), "acknowledged writes lost in a drain");
    // The history says what happened, in order, on every node (the drained one too).
    for n in c.iter() {
        let kinds = event_kinds(n, "database db");
        let order = ["switchover-requested", "switchover", "member-moved"];
        let at: Vec<Option<usize>> = order.iter().map(|k| kinds.iter().position(|x| x == k)).collect();
        assert!(at.iter().all(Option::is_some) && at.windows(2).all(|w| w[0] < w[1]), "{}: {kinds:?}", n.name);
        assert!(event_kinds(n, &format!("node {primary}")).contains(&"node-draining".to_string()), "{}", n.name);
    }
}

#[test]
fn a_setting_that_needs_a_restart_rolls_out_member_by_member_losing_nothing() {
    // Proves: a redeploy that changes `shared_buffers` (a setting PostgreSQL applies only
    // at a restart) under a psycopg write loop: every member ends up running it, the
    // standbys restart one at a time and the primary hands over by a switchover (one new
    // term, not a failover), no acknowledged write is missing, and `db status` shows
    // nothing pending afterwards. Lowering `max_connections` is refused, changing nothing.
    if !have_postgres() {
        return;
    }
    let Some(py) = python() else { return };
    let c = pg_cluster("pgrestart", 34000);
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec("pgrestart"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    let admin = c[0].cli_ok(&["db", "url", "db", "--endpoint", "admin"]).trim().to_string();
    psql(&c[0], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
    let shared = |c: &Cluster| members_answer(c, &admin, "db", 3, "SHOW shared_buffers");
    assert_eq!(shared(&c), vec![Some("16MB".to_string()); 3]);
    let primary = before["primary_node"].as_str().expect("primary").to_string();
    let watcher = (0..c.len()).find(|i| c[*i].name != primary).expect("another node");
    let writer = PyWriter::start(&py, &c[watcher], &url, &c[watcher].home);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");

    let asked = epoch_now();
    let (ok, out, err) =
        c[0].deploy_yaml("db.yaml", &spec("pgrestart").replace("shared_buffers: 16MB", "shared_buffers: 32MB"));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("~shared_buffers"), "{out}");
    wait_for("every member runs shared_buffers 32MB", Duration::from_secs(120), || {
        let now = shared(&c);
        seen_unless(now.iter().all(|s| s.as_deref() == Some("32MB")), (), format!("{now:?}"))
    });
    let after = wait_for("the database healthy with nothing pending", Duration::from_secs(60), || {
        let d = db(&c[watcher]);
        let done = d.as_ref().is_ok_and(|d| {
            healthy(d, 2) && d["members"].as_array().is_some_and(|m| m.iter().all(|m| m["pending_restart"] == false))
        });
        seen_unless(done, d.clone().unwrap_or_default(), format!("{d:?}"))
    });
    assert_eq!(after["term"].as_u64(), before["term"].as_u64().map(|t| t + 1), "one switchover: {after}");
    writer.expect_acked_after(&c, epoch_now(), 20, Duration::from_secs(30), "writes after the rolling restart");
    let pause = writer.longest_gap_after(asked);
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    eprintln!(
        "rolling restart for shared_buffers: {} acknowledged, {} failed or unknown; longest write pause {pause:.2} s",
        acked.len(),
        log.len() - acked.len()
    );
    assert_eq!(missing(&c[watcher], &url, "t", &acked), Vec::<u64>::new(), "acknowledged writes lost in a restart");

    // Lowering a setting standbys must keep as high as the primary: refused, nothing changes.
    let lower = spec("pgrestart").replace("max_connections: \"50\"", "max_connections: \"20\"");
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &lower.replace("shared_buffers: 16MB", "shared_buffers: 32MB"));
    assert!(!ok, "{out}");
    assert!(err.contains("lowering max_connections (50 -> 20)"), "{err}");
    assert_eq!(members_answer(&c, &admin, "db", 3, "SHOW max_connections"), vec![Some("50".to_string()); 3]);
}

#[test]
fn bad_database_specs_are_refused_with_their_place_and_nothing_changes() {
    // Proves: a spec with a bad database field is refused before anything is planned,
    // naming the file, line and field, and a later good deploy still works.
    let c = one_node("pgbad", 39000);
    let bad = "databases:\n  db:\n    engine: mysql\n    instances: 0\n    users: [Bad-Name]\n    parameters: {max_conection: \"10\", port: \"1\"}\n";
    let (ok, out, err) = c[0].deploy_yaml("bad.yaml", bad);
    assert!(!ok, "{out}");
    for needle in
        ["bad.yaml:3", "engine", "postgres", "instances", "Bad-Name", "max_connections", "managed by holdfast"]
    {
        assert!(err.contains(needle), "`{needle}` in:\n{err}");
    }
    let st = c[0].cli_json(&["db", "status"]).expect("status");
    assert_eq!(st["databases"].as_array().map(Vec::len), Some(0), "nothing was deployed: {st}");
}
