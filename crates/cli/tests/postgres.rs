//! Managed PostgreSQL end to end, with the machine's PostgreSQL and psql: three members
//! on three holdfast nodes, a primary whose machine dies under a write loop, the old
//! primary coming back as a replica, the read-only endpoint, and a switchover under load.
//! Every write is counted as acknowledged or failed; with `sync: 1` no acknowledged
//! write may be missing afterwards.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The database of these tests in `project` (each test its own: on loopback the
/// clusters of tests running side by side share the machine's service addresses).
fn spec(project: &str) -> String {
    format!("project: {project}\n{DB}")
}

const DB: &str = "databases:\n  db:\n    engine: postgres\n    instances: 3\n    sync: 1\n    users: [app]\n    databases: [app]\n    parameters: {max_connections: \"50\", shared_buffers: 16MB}\n";

/// PostgreSQL server binaries are on this machine (required under CI).
fn have_postgres() -> bool {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.path().join("bin/pg_rewind").is_file()))
        .unwrap_or(false);
    let psql = std::process::Command::new("psql").arg("--version").output().is_ok();
    if !(found && psql) {
        assert!(std::env::var("CI").is_err(), "CI must have PostgreSQL and psql (scripts/test.sh installs them)");
        eprintln!("skipping: no PostgreSQL server or psql here");
    }
    found && psql
}

/// One statement through `url` with psql: its output, or the error.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn db(n: &Node) -> Result<Value, String> {
    let v = n.cli_json(&["db", "status"])?;
    v["databases"].as_array().and_then(|a| a.first()).cloned().ok_or_else(|| format!("no database: {v}"))
}

/// Waits until the database has its primary of the current term and `replicas`
/// streaming replicas; returns the status.
fn wait_healthy(n: &Node, replicas: usize, within: Duration) -> Value {
    wait_for("a primary and streaming replicas", within, || {
        let d = db(n)?;
        let term = d["term"].as_u64().unwrap_or(0);
        let members = d["members"].as_array().cloned().unwrap_or_default();
        let primary = members.iter().any(|m| m["role"] == "primary" && m["term"].as_u64() == Some(term));
        let streaming = members.iter().filter(|m| m["role"] == "replica" && m["streaming"] == true).count();
        seen_unless(primary && streaming >= replicas, d.clone(), d.to_string())
    })
}

/// One write attempt: (row, started, finished, acknowledged).
type Attempt = (u64, Instant, Instant, bool);

/// A write loop through the `-rw` URL: one row per statement, every one counted.
struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let started = Instant::now();
                let ok = psql(&url, &format!("INSERT INTO w VALUES ({i})")).is_ok();
                l.lock().expect("log").push((i, started, Instant::now(), ok));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Writer { stop, log, thread: Some(thread) }
    }

    fn acked(&self) -> Vec<u64> {
        self.log.lock().expect("log").iter().filter(|e| e.3).map(|e| e.0).collect()
    }

    fn acked_after(&self, t: Instant) -> usize {
        self.log.lock().expect("log").iter().filter(|e| e.3 && e.1 > t).count()
    }

    /// From the first failed write to the first acknowledged one after it.
    fn outage(&self) -> Option<Duration> {
        let log = self.log.lock().expect("log");
        let first_fail = log.iter().position(|e| !e.3)?;
        let back = log[first_fail..].iter().find(|e| e.3)?;
        Some(back.2.duration_since(log[first_fail].1))
    }

    fn stop(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let log = self.log.lock().expect("log").clone();
        log
    }
}

fn node_index(c: &Cluster, name: &str) -> usize {
    c.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn missing(url: &str, acked: &[u64]) -> Vec<u64> {
    let rows = psql(url, "SELECT v FROM w").expect("read back");
    let have: std::collections::BTreeSet<u64> = rows.lines().filter_map(|l| l.parse().ok()).collect();
    acked.iter().copied().filter(|v| !have.contains(v)).collect()
}

#[test]
fn a_dead_primarys_machine_fails_over_and_comes_back_as_a_replica() {
    // Proves: with sync: 1, SIGKILL of the primary's whole machine (daemon and postgres)
    // under a write loop through `db-rw`: writes resume on a promoted replica, no
    // acknowledged write is missing, the term moves on, `db-ro` reaches only replicas,
    // and the old primary's node, started again, rejoins as a streaming replica
    // (pg_rewind) instead of serving writes.
    if !have_postgres() {
        return;
    }
    let mut c = cluster("pgkill", 37000, &["a", "a", "b"]);
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec("pgkill"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    let ro = c[0].cli_ok(&["db", "url", "db", "--endpoint", "ro"]).trim().to_string();
    psql(&url, "CREATE TABLE w (v bigint PRIMARY KEY)").expect("create table");
    assert_eq!(psql(&ro, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"), "db-ro reaches a replica");
    assert_eq!(psql(&url, "SELECT pg_is_in_recovery()").as_deref(), Ok("f"), "db-rw reaches the primary");

    let victim_name = before["primary_node"].as_str().expect("primary node").to_string();
    let victim = node_index(&c, &victim_name);
    let watcher = (0..c.len()).find(|i| *i != victim && c[*i].running()).expect("a survivor");
    let term = before["term"].as_u64().expect("term");
    let writer = Writer::start(url.clone());
    wait_for("writes under way", Duration::from_secs(20), || {
        seen_unless(writer.acked().len() >= 20, (), writer.acked().len())
    });
    c.allow_errors(&["heartbeat", "link", "tunnel", "raft", "Raft", "connect"]);
    let killed_at = Instant::now();
    c[victim].kill_machine();
    wait_for("writes acknowledged again after the kill", Duration::from_secs(30), || {
        seen_unless(writer.acked_after(killed_at + Duration::from_millis(100)) >= 20, (), writer.acked_after(killed_at))
    });
    let outage = writer.outage();
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|e| e.3).map(|e| e.0).collect();
    let failed = log.iter().filter(|e| !e.3).count();
    eprintln!("writes: {} acknowledged, {failed} failed; outage {outage:?}", acked.len());
    let after = wait_healthy(&c[watcher], 1, Duration::from_secs(30));
    assert!(after["term"].as_u64() > Some(term), "a new term: {after}");
    assert_ne!(after["primary_node"], victim_name.as_str(), "{after}");
    assert_eq!(missing(&url, &acked), Vec::<u64>::new(), "acknowledged writes lost (sync: 1)");
    assert_eq!(psql(&ro, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"), "db-ro still reaches only replicas");

    // The old primary's machine comes back: it rejoins as a replica of the new term.
    c[victim].spawn(&[]);
    let healed = wait_healthy(&c[watcher], 2, Duration::from_secs(90));
    let old = healed["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == victim_name.as_str()).cloned())
        .expect("the old primary's member");
    assert_eq!(old["role"], "replica", "{healed}");
    assert_eq!(missing(&url, &acked), Vec::<u64>::new(), "still every acknowledged write");
}

#[test]
fn a_switchover_under_load_loses_nothing() {
    // Proves: `holdfast db switchover` moves the primary to the named node while a write
    // loop runs: no acknowledged write is missing, writes pause briefly, and the former
    // primary streams from the new one.
    if !have_postgres() {
        return;
    }
    let c = cluster("pgswitch", 38000, &["a", "a", "b"]);
    let (ok, out, err) = c[0].deploy_yaml("db.yaml", &spec("pgswitch"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(90));
    let url = c[0].cli_ok(&["db", "url", "db"]).trim().to_string();
    psql(&url, "CREATE TABLE w (v bigint PRIMARY KEY)").expect("create table");
    let old = before["primary_node"].as_str().expect("primary").to_string();
    let to = c.iter().map(|n| n.name.clone()).find(|n| *n != old).expect("another node");
    let writer = Writer::start(url.clone());
    wait_for("writes under way", Duration::from_secs(20), || {
        seen_unless(writer.acked().len() >= 20, (), writer.acked().len())
    });
    let out = c[0].cli_ok(&["db", "switchover", "db", "--to", &to]);
    assert!(out.contains(&format!("on {to} is the primary")), "{out}");
    let switched = Instant::now();
    wait_for("writes after the switchover", Duration::from_secs(30), || {
        seen_unless(writer.acked_after(switched) >= 20, (), writer.acked_after(switched))
    });
    let outage = writer.outage();
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|e| e.3).map(|e| e.0).collect();
    eprintln!(
        "switchover: {} acknowledged, {} failed; pause {outage:?}",
        acked.len(),
        log.iter().filter(|e| !e.3).count()
    );
    assert_eq!(missing(&url, &acked), Vec::<u64>::new(), "acknowledged writes lost in a switchover");
    let after = wait_healthy(&c[0], 2, Duration::from_secs(60));
    assert_eq!(after["primary_node"], to.as_str(), "{after}");
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
