//! Managed PostgreSQL under the faults that need network namespaces (holdfast-testbed in
//! Namespaces mode; root, required under CI): the primary's node frozen and thawed, the
//! primary's site cut off and healed, the primary's cable pulled under a connected
//! client, and a seeded random schedule of kills, freezes, partitions and pulled cables.
//! Clients run inside node namespaces: psql, and `bench/pg_writer.py` on psycopg 3 from
//! PyPI with only its usual reconnect. Every write is counted as acknowledged or
//! failed-or-unknown; with `sync: 1` an acknowledged write missing afterwards fails the
//! test, and so do two members answering as primary once the cluster has settled.
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pg::*;
use common::*;
use serde_json::Value;

/// Error lines a fault is expected to cause (a node unreachable, a link lost).
const FAULT_ERRORS: &[&str] = &["heartbeat", "link", "tunnel", "raft", "Raft", "connect"];

/// A three-member `sync: 1` database on a namespace cluster, with table `t(id)`.
struct Pg {
    c: Cluster,
    py: PathBuf,
    /// The `-rw` URL (user app) and the superuser's.
    url: String,
    admin: String,
}

impl Pg {
    /// `None` (skipped) outside CI without root, PostgreSQL or psycopg.
    fn start(name: &str, sites: &[&str]) -> Option<Pg> {
        if !namespaces_or_skip(name) || !have_postgres() {
            return None;
        }
        let py = python()?;
        let c = Cluster::form(config(name).sites(sites).namespaces());
        let spec = format!(
            "project: {name}\ndatabases:\n  db:\n    engine: postgres\n    instances: 3\n    sync: 1\n    users: [app]\n    databases: [app]\n    parameters: {{max_connections: \"50\", shared_buffers: 16MB}}\n"
        );
        let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec);
        assert!(ok, "{out}\n{err}");
        wait_healthy(&c[0], 2, Duration::from_secs(120));
        let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
        let admin = c[0].cli_ok(&["db", "url", "db", "--endpoint", "admin"]).trim().to_string();
        psql(&c[0], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
        Some(Pg { c, py, url, admin })
    }

    /// The member on node `node` (index) in a `db status` view.
    fn member_on(&self, d: &Value, node: usize) -> Value {
        let name = &self.c[node].name;
        d["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["node"] == name.as_str()).cloned())
            .unwrap_or_else(|| panic!("a member on {name}: {d}"))
    }

    /// Which members answer as primary when asked directly on their nodes.
    fn primaries(&self) -> Vec<usize> {
        members_directly(&self.c, &self.admin, "db", 3)
            .iter()
            .enumerate()
            .filter(|(_, r)| **r == Some(false))
            .map(|(k, _)| k)
            .collect()
    }

    /// Waits until the database is healthy with both replicas streaming (as `from` sees
    /// it) and exactly one member answers as primary directly; returns the status.
    fn wait_settled(&self, from: usize, within: Duration) -> Value {
        wait_for("one primary, two streaming replicas", within, || {
            let d = db(&self.c[from])?;
            if !healthy(&d, 2) {
                return Err(d.to_string());
            }
            let primaries = self.primaries();
            seen_unless(
                primaries.len() == 1 && primaries[0] as u64 == d["primary"],
                d.clone(),
                format!("directly primary: {primaries:?}; {d}"),
            )
        })
    }

    /// Fails the test if an acknowledged id of `acked` is missing (read through `-rw`
    /// inside node `from`).
    fn assert_none_missing(&self, from: usize, acked: &[u64], when: &str) {
        let lost = missing(&self.c[from], &self.url, "t", acked);
        assert!(
            lost.is_empty(),
            "{when}: {} acknowledged writes missing: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
    }
}

/// The index of the node of the primary in `d`.
fn primary_index(c: &Cluster, d: &Value) -> usize {
    node_index(c, d["primary_node"].as_str().expect("a primary node"))
}

fn acked(log: &[Attempt]) -> Vec<u64> {
    log.iter().filter(|a| a.acked).map(|a| a.id).collect()
}

#[test]
fn a_frozen_primary_is_replaced_never_takes_a_write_when_thawed_and_rejoins_as_a_replica() {
    // Proves: the primary's whole node (daemon and postgres) frozen for 10 s under write
    // loops through `db-rw` from another node and from the frozen node itself: a replica
    // is promoted and writes resume; after the thaw, no write straight to the old
    // primary's own postgres is acknowledged, it rejoins as a streaming replica, exactly
    // one member answers as primary, and no acknowledged write is missing.
    let Some(mut pg) = Pg::start("pgfrz", &["a", "a", "b"]) else { return };
    let before = db(&pg.c[0]).expect("status");
    let p = primary_index(&pg.c, &before);
    let w = (0..3).find(|i| *i != p).expect("another node");
    let old_member = pg.member_on(&before, p)["member"].as_u64().expect("member");
    let writer = PyWriter::start(&pg.py, &pg.c[w], &pg.url, &pg.c[w].home);
    let local = PyWriter::start_at(&pg.py, &pg.c[p], &pg.url, &pg.c[w].home, 1_000_000);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    local.wait_acked_after(0.0, 5, Duration::from_secs(20), "writes through the primary's own node");
    pg.c.allow_errors(FAULT_ERRORS);

    let frozen = epoch_now();
    pg.c.tb().freeze(p).expect("freeze");
    writer.expect_acked_after(&pg.c, frozen + 0.1, 20, Duration::from_secs(30), "writes on a new primary");
    let outage = writer.longest_gap_after(frozen - 1.0);
    let during = db(&pg.c[w]).expect("status");
    assert!(during["term"].as_u64() > before["term"].as_u64(), "a new term while frozen: {during}");
    assert_ne!(during["primary_node"], before["primary_node"], "{during}");
    while epoch_now() < frozen + 10.0 {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Thawed: its postgres still believes it is the primary; writes straight to it
    // (bypassing holdfast) must never be acknowledged.
    let pid = pg.c[p].dir.join(format!("databases/db/m{old_member}/data/postmaster.pid"));
    let port: Option<u16> =
        std::fs::read_to_string(&pid).ok().and_then(|t| t.lines().nth(3).and_then(|l| l.trim().parse().ok()));
    pg.c.tb().thaw(p).expect("thaw");
    let thawed = Instant::now();
    let fenced = wait_for_every(
        "the thawed primary stops answering as primary",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let r = members_directly(&pg.c, &pg.admin, "db", 3)[old_member as usize];
            seen_unless(r != Some(false), thawed.elapsed(), r)
        },
    );
    let mut direct = Vec::new();
    if let Some(port) = port {
        let at = pg.admin.rsplit_once('@').map(|(h, _)| format!("{h}@127.0.0.1:{port}/app")).expect("admin url");
        let mut n = 0;
        while thawed.elapsed() < Duration::from_secs(5) {
            n += 1;
            let r = psql(&pg.c[p], &at, &format!("INSERT INTO t VALUES (-{n})"));
            direct.push((n, r.is_ok()));
        }
    }
    let settled = pg.wait_settled(w, Duration::from_secs(90));
    let rejoined = pg.member_on(&settled, p);
    assert_eq!(rejoined["role"], "replica", "the thawed primary rejoins as a replica: {settled}");
    // The history has the failover (every node) and the thawed node's own fencing.
    let kinds = event_kinds(&pg.c[w], "database db");
    assert!(kinds.contains(&"failover".to_string()), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "member-fenced" || k == "member-holding"), "{kinds:?}");
    assert!(fenced < Duration::from_secs(10), "the thawed primary answered as primary for {fenced:?}");
    let accepted: Vec<i64> = direct.iter().filter(|(_, ok)| *ok).map(|(n, _)| -*n).collect();
    assert!(accepted.is_empty(), "the thawed old primary acknowledged writes {accepted:?}");
    let mut all = acked(&writer.stop());
    all.extend(acked(&local.stop()));
    pg.assert_none_missing(w, &all, "after the freeze");
    eprintln!(
        "frozen primary: writes back after {outage:.2} s; fenced {fenced:?} after the thaw; {} direct writes to the thawed one, none acknowledged; {} acknowledged in all",
        direct.len(),
        all.len()
    );
}

#[test]
fn a_primary_cut_off_with_its_site_stops_taking_writes_and_the_majority_promotes() {
    // Proves: the primary alone in site b, the WAN to site a cut: no write sent through
    // the minority's `db-rw` after the cut is acknowledged, and writes straight to the
    // old primary's own postgres (bypassing holdfast) are acknowledged only until its
    // lease lapses, before the majority's new primary takes its first write; within 10 s
    // the old primary stops answering as primary; after healing exactly one
    // member is primary, the old one streams as a replica, and no acknowledged write
    // (through either proxy or straight to the old primary) is missing.
    let Some(mut pg) = Pg::start("pgcut", &["a", "a", "b"]) else { return };
    let mut d = db(&pg.c[0]).expect("status");
    if d["primary_node"] != "n3" {
        let out = pg.c[0].cli_ok(&["db", "switchover", "db", "--to", "n3"]);
        assert!(out.contains("on n3 is the primary"), "{out}");
        d = pg.wait_settled(0, Duration::from_secs(60));
    }
    let old_member = pg.member_on(&d, 2)["member"].as_u64().expect("member") as usize;
    let pid = pg.c[2].dir.join(format!("databases/db/m{old_member}/data/postmaster.pid"));
    let port: u16 = std::fs::read_to_string(&pid)
        .ok()
        .and_then(|t| t.lines().nth(3).and_then(|l| l.trim().parse().ok()))
        .expect("the old primary's port");
    let at = pg.admin.rsplit_once('@').map(|(h, _)| format!("{h}@127.0.0.1:{port}/app")).expect("admin url");
    let majority = PyWriter::start(&pg.py, &pg.c[0], &pg.url, &pg.c[0].home);
    let minority = PyWriter::start_at(&pg.py, &pg.c[2], &pg.url, &pg.c[0].home, 1_000_000);
    let direct = PyWriter::start_at(&pg.py, &pg.c[2], &at, &pg.c[2].home, 2_000_000);
    majority.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes from site a");
    minority.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes from site b");
    direct.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes straight to the primary");
    pg.c.allow_errors(FAULT_ERRORS);

    let cut = epoch_now();
    let cut_at = Instant::now();
    pg.c.tb().cut_sites("a", "b").expect("cut the sites");
    // The rules are in place from here (setting them up takes a while under load).
    let cut_in_place = epoch_now();
    let stopped = wait_for_every(
        "the cut-off primary stops answering as primary",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let r = members_directly(&pg.c, &pg.admin, "db", 3)[old_member];
            seen_unless(r != Some(false), cut_at.elapsed(), r)
        },
    );
    majority.expect_acked_after(&pg.c, cut + 0.1, 20, Duration::from_secs(30), "writes on the majority's new primary");
    let first_new = majority.log().iter().find(|a| a.acked && a.sent > cut + 0.1).map(|a| a.done - cut).unwrap_or(0.0);
    let outage = majority.longest_gap_after(cut - 1.0);
    let late: Vec<Attempt> = minority.log().into_iter().filter(|a| a.acked && a.sent > cut_in_place).collect();
    assert!(late.is_empty(), "writes sent after the cut acknowledged on the minority: {late:?}");
    let during = db(&pg.c[0]).expect("status");
    assert!(during["term"].as_u64() > d["term"].as_u64(), "{during}");
    // The invariant: the old primary acknowledged its last write before the new one
    // took its first (the leader waits out the lease within which the old one's node
    // holds every commit).
    let last_old = direct.log().iter().filter(|a| a.acked).map(|a| a.done - cut).fold(f64::MIN, f64::max);
    assert!(
        last_old < first_new,
        "the cut-off primary acknowledged a write {last_old:.2} s after the cut, after the new primary's first write at {first_new:.2} s"
    );
    // `stopped` is bounded by the wait above (10 s): the hold starts at the lease's lapse,
    // the stop a lease later, and a fast shutdown waits for its cut-off walsenders.

    pg.c.tb().join_sites("a", "b").expect("heal");
    let settled = pg.wait_settled(2, Duration::from_secs(90));
    assert_eq!(pg.member_on(&settled, 2)["role"], "replica", "{settled}");
    let mut all = acked(&majority.stop());
    all.extend(acked(&minority.stop()));
    all.extend(acked(&direct.stop()));
    pg.assert_none_missing(0, &all, "after healing the sites");
    eprintln!(
        "site cut: old primary's last acknowledged write {last_old:.2} s after the cut, stopped after {stopped:?}; the new primary's first write {first_new:.2} s after the cut; longest gap {outage:.2} s"
    );
}

#[test]
fn losing_the_primarys_whole_site_loses_no_acknowledged_commit() {
    // Proves: with members in sites a, a, b (`sync: 1`) and the primary in site a, a
    // commit waits for the standby in site b (`db status` lists only it as synchronous),
    // so when site a dies whole — the primary's machine and the other standby's, killed
    // at once under a psycopg write loop from site c — the member in site b holds every
    // acknowledged write and is promoted without hearing the dead standby (with every
    // standby listed, nobody could be promoted: the dead one might have held the last
    // commit). Site c's node keeps the Raft quorum with site b's. `on_sync_loss: async`:
    // the new primary is the last member alive, so with `block` its writes would wait
    // for a standby that is gone.
    if !namespaces_or_skip("pgsite") || !have_postgres() {
        return;
    }
    let Some(py) = python() else { return };
    let cfg = config("pgsite")
        .node(&["--site", "a", "--label", "pg=yes"])
        .node(&["--site", "a", "--label", "pg=yes"])
        .node(&["--site", "b", "--label", "pg=yes"])
        .node(&["--site", "c"])
        .namespaces();
    let mut c = Cluster::form(cfg);
    let spec = "project: pgsite\ndatabases:\n  db:\n    engine: postgres\n    instances: 3\n    sync: 1\n    on_sync_loss: async\n    users: [app]\n    databases: [app]\n    placement: { node_selector: { pg: \"yes\" } }\n    parameters: {max_connections: \"50\", shared_buffers: 16MB}\n";
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", spec);
    assert!(ok, "{out}\n{err}");
    let mut d = wait_healthy(&c[3], 2, Duration::from_secs(120));
    if d["primary_node"] == "n3" {
        let out = c[3].cli_ok(&["db", "switchover", "db", "--to", "n1"]);
        assert!(out.contains("on n1 is the primary"), "{out}");
        d = wait_healthy(&c[3], 2, Duration::from_secs(60));
    }
    let primary = d["primary_node"].as_str().expect("primary").to_string();
    let voters: Vec<String> = c[3].nodes_json().expect("nodes")["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter(|n| n["role"] == "leader" || n["role"] == "voter")
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(voters.contains(&"n3".to_string()) && voters.contains(&"n4".to_string()), "voters {voters:?}");
    // The synchronous list settles on site b's member alone.
    wait_for("only site b's member listed as synchronous", Duration::from_secs(30), || {
        let d = db(&c[3])?;
        let listed: Vec<String> = d["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["sync_candidate"] == true)
                    .filter_map(|m| m["node"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        seen_unless(listed == ["n3"] && d["sync_leaving"].as_array().is_some_and(|l| l.is_empty()), (), d.to_string())
    });
    let url = c[3].cli_ok(&["db", "url", "db"]).trim().to_string();
    psql(&c[3], &url, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create table");
    let writer = PyWriter::start(&py, &c[3], &url, &c[3].home);
    writer.wait_acked_after(0.0, 50, Duration::from_secs(20), "writes under way");
    c.allow_errors(FAULT_ERRORS);
    let killed_at = epoch_now();
    c[0].kill_machine();
    c[1].kill_machine();
    writer.expect_acked_after(&c, killed_at + 0.1, 20, Duration::from_secs(30), "writes on site b's member");
    let outage = writer.longest_gap_after(killed_at - 1.0);
    let after = wait_healthy(&c[3], 0, Duration::from_secs(30));
    assert_eq!(after["primary_node"], "n3", "{after}");
    let log = writer.stop();
    let acked = acked(&log);
    assert_eq!(
        missing(&c[3], &url, "t", &acked),
        Vec::<u64>::new(),
        "acknowledged writes lost with site a ({primary} and its standby)"
    );
    eprintln!(
        "site a (primary {primary}) killed: writes back on n3 after {outage:.2} s; {} acknowledged, {} failed or unknown",
        acked.len(),
        log.len() - acked.len()
    );
}

#[test]
fn a_client_on_rw_is_disconnected_when_the_primarys_cable_is_pulled() {
    // Proves: a client connected through another node's `db-rw` to the primary, in the
    // middle of a long query, is disconnected by holdfast within seconds when the
    // primary's cable is pulled (its processes stay alive), instead of hanging; the
    // majority promotes a replica, and with the cable back the old primary rejoins as a
    // replica.
    let Some(mut pg) = Pg::start("pglink", &["a", "a", "b"]) else { return };
    let d = db(&pg.c[0]).expect("status");
    let p = primary_index(&pg.c, &d);
    let x = (0..3).find(|i| *i != p).expect("another node");
    let url = pg.url.clone();
    let mut client = pg.c[x]
        .client_command(&["psql", &url, "-X", "-At", "-c", "SELECT pg_sleep(120)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    wait_for("the long query running on the primary", Duration::from_secs(20), || {
        let n = psql(&pg.c[x], &pg.url, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'")?;
        seen_unless(n == "1", (), n)
    });
    pg.c.allow_errors(FAULT_ERRORS);
    let pulled = Instant::now();
    pg.c.tb().link_down(p).expect("pull the cable");
    let ended = wait_for("the client disconnected", Duration::from_secs(30), || {
        let st = client.try_wait().map_err(|e| e.to_string())?;
        st.map(|s| (s, pulled.elapsed())).ok_or("still connected".to_string())
    });
    let _ = client.kill();
    assert!(!ended.0.success(), "the query cannot have finished");
    assert!(ended.1 < Duration::from_secs(8), "the client hung {:?} on a primary it could not reach", ended.1);
    wait_for("writes on a new primary", Duration::from_secs(30), || {
        psql(&pg.c[x], &pg.url, "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING")
    });
    pg.c.tb().link_up(p).expect("plug the cable back");
    let settled = pg.wait_settled(x, Duration::from_secs(90));
    assert_eq!(pg.member_on(&settled, p)["role"], "replica", "{settled}");
    eprintln!("cable pulled: the client was disconnected after {:?}", ended.1);
}

/// splitmix64: the schedule's random numbers, replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Freeze,
    Partition,
    CablePulled,
}

#[test]
fn a_seeded_schedule_of_faults_keeps_one_primary_and_every_acknowledged_write() {
    // Proves: 30 steps of a seeded random schedule (HOLDFAST_FAULT_SEED replays one),
    // each a kill, freeze, partition or pulled cable of a random node for 0.5-5 s and
    // its repair, under a psycopg write loop from another node: after every step the
    // database settles with exactly one member answering as primary and two streaming
    // replicas, writes are acknowledged again, and no acknowledged write is missing.
    let seed = std::env::var("HOLDFAST_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261201u64);
    let Some(mut pg) = Pg::start("pgchaos", &["a", "a", "b"]) else { return };
    pg.c.allow_errors(FAULT_ERRORS);
    eprintln!("fault schedule seed {seed} (HOLDFAST_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut all = Vec::new();
    let started = Instant::now();
    for step in 0..30u64 {
        let node = rng.below(3) as usize;
        let fault = [Fault::Kill, Fault::Freeze, Fault::Partition, Fault::CablePulled][rng.below(4) as usize];
        let hold = Duration::from_millis(500 + rng.below(4500));
        let from = (node + 1 + rng.below(2) as usize) % 3;
        let what = format!("seed {seed} step {step}: {fault:?} n{} for {hold:?}", node + 1);
        eprintln!("{what}: writes from n{}", from + 1);
        let writer = PyWriter::start_at(&pg.py, &pg.c[from], &pg.url, &pg.c[from].home, (step + 1) * 1_000_000);
        writer.wait_acked_after(0.0, 5, Duration::from_secs(30), &format!("{what}: writes before the fault"));
        let t0 = epoch_now();
        match fault {
            Fault::Kill => pg.c[node].kill_machine(),
            Fault::Freeze => pg.c.tb().freeze(node).expect("freeze"),
            Fault::Partition => {
                let others: Vec<usize> = (0..3).filter(|i| *i != node).collect();
                pg.c.tb().partition(&[node], &others).expect("partition")
            }
            Fault::CablePulled => pg.c.tb().link_down(node).expect("link down"),
        }
        std::thread::sleep(hold);
        match fault {
            Fault::Kill => pg.c[node].spawn(&[]),
            Fault::Freeze => pg.c.tb().thaw(node).expect("thaw"),
            Fault::Partition => pg.c.tb().heal_partitions().expect("heal"),
            Fault::CablePulled => pg.c.tb().link_up(node).expect("link up"),
        }
        let repaired = Instant::now();
        pg.wait_settled(from, Duration::from_secs(120));
        let settle = repaired.elapsed();
        writer.expect_acked_after(
            &pg.c,
            epoch_now(),
            5,
            Duration::from_secs(30),
            &format!("{what}: writes after the repair"),
        );
        let gap = writer.longest_gap_after(t0 - 0.5);
        let log = writer.stop();
        all.extend(acked(&log));
        pg.assert_none_missing(from, &all, &what);
        eprintln!(
            "{what}: longest write gap {gap:.2} s, settled {settle:?} after the repair, {} acknowledged so far",
            all.len()
        );
        assert!(started.elapsed() < Duration::from_secs(1500), "the schedule is bounded in time");
    }
}
