//! Managed Redis under the faults that need network namespaces (holdfast-testbed in
//! Namespaces mode; root, required under CI): the master's node frozen and thawed, and
//! the master's site cut off and healed. Clients run inside node namespaces: redis-cli,
//! and `bench/redis_writer.py` on redis-py from PyPI with only its usual reconnect. With
//! `durability: replicated` an acknowledged write missing afterwards fails the test, and
//! so do two members answering as master once the cluster has settled.
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pg::*;
use common::*;
use serde_json::Value;

/// Error lines a fault is expected to cause (a node unreachable, a link lost).
const FAULT_ERRORS: &[&str] = &["heartbeat", "link", "tunnel", "raft", "Raft", "connect"];

/// A three-member `durability: replicated` Redis database on a namespace cluster.
struct Rd {
    c: Cluster,
    py: PathBuf,
    /// The master URL (user `default`) and the admin's.
    url: String,
    admin: String,
}

fn have_redis() -> bool {
    let ok = std::process::Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").is_err(), "CI must have redis-server (scripts/test.sh installs it)");
        eprintln!("skipping: no redis-server here");
    }
    ok
}

impl Rd {
    fn start(name: &str, sites: &[&str], durability: &str) -> Option<Rd> {
        if !namespaces_or_skip(name) || !have_redis() {
            return None;
        }
        let py = python()?;
        let c = Cluster::form(config(name).sites(sites).namespaces());
        let spec = format!(
            "project: {name}\ndatabases:\n  cache:\n    engine: redis\n    instances: 3\n    durability: {durability}\n"
        );
        let (ok, out, err) = c[0].deploy_yaml("cache.yaml", &spec);
        assert!(ok, "{out}\n{err}");
        wait_healthy(&c[0], 2, Duration::from_secs(120));
        let url = c[0].cli_ok(&["db", "url", "cache"]).trim().to_string();
        let admin = c[0].cli_ok(&["db", "url", "cache", "--endpoint", "admin"]).trim().to_string();
        Some(Rd { c, py, url, admin })
    }

    /// The local port of member `k`'s redis-server, from its agent record on the node
    /// running it.
    fn member_port(&self, k: usize) -> Option<(usize, u16)> {
        self.c.iter().enumerate().filter(|(_, n)| n.running()).find_map(|(i, n)| {
            let path = n.dir.join("agent/instances").join(format!("redis_cache-{k}.json"));
            let text = std::fs::read_to_string(path).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            v["ports"]["redis"].as_u64().and_then(|p| u16::try_from(p).ok()).map(|p| (i, p))
        })
    }

    /// `ROLE` of member `k` asked directly on its node (`master`, `slave`; `None`: not
    /// running or not answering).
    fn role_directly(&self, k: usize) -> Option<String> {
        let (node, port) = self.member_port(k)?;
        let url = at_port(&self.admin, port);
        let out = self.c[node]
            .exec_within(&["redis-cli", "--no-auth-warning", "-u", &url, "ROLE"], Duration::from_secs(3))
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        text.lines().next().map(str::to_string).filter(|r| r == "master" || r == "slave")
    }

    fn masters_directly(&self) -> Vec<usize> {
        (0..3).filter(|k| self.role_directly(*k).as_deref() == Some("master")).collect()
    }

    /// Waits until the database is healthy with both replicas streaming (as `from` sees
    /// it) and exactly one member answers as master directly.
    fn wait_settled(&self, from: usize, within: Duration) -> Value {
        wait_for("one master, two streaming replicas", within, || {
            let d = db(&self.c[from])?;
            if !healthy(&d, 2) {
                return Err(d.to_string());
            }
            let masters = self.masters_directly();
            seen_unless(
                masters.len() == 1 && masters[0] as u64 == d["primary"],
                d.clone(),
                format!("directly master: {masters:?}; {d}"),
            )
        })
    }

    fn assert_none_missing(&self, from: usize, acked: &[u64], when: &str) {
        let keys = wait_for("the keys read back", Duration::from_secs(20), || {
            let out = self.c[from]
                .exec_within(
                    &["redis-cli", "--no-auth-warning", "-u", &self.url, "KEYS", "w:*"],
                    Duration::from_secs(10),
                )
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && !text.starts_with("ERR") {
                Ok(text)
            } else {
                Err(text)
            }
        });
        let have: std::collections::BTreeSet<u64> =
            keys.lines().filter_map(|k| k.trim().strip_prefix("w:")).filter_map(|v| v.parse().ok()).collect();
        let lost: Vec<u64> = acked.iter().copied().filter(|v| !have.contains(v)).collect();
        assert!(
            lost.is_empty(),
            "{when}: {} acknowledged writes missing: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
    }

    fn writer(&self, on: usize, url: &str, first_id: u64) -> PyWriter {
        PyWriter::start_script(&self.py, &self.c[on], "redis_writer.py", &[url], &self.c[on].home, first_id)
    }
}

/// `url` (a `redis://user:pw@host:port` URL) pointed at 127.0.0.1:`port`.
fn at_port(url: &str, port: u16) -> String {
    url.rsplit_once('@').map(|(h, _)| format!("{h}@127.0.0.1:{port}")).unwrap_or_default()
}

fn acked(log: &[Attempt]) -> Vec<u64> {
    log.iter().filter(|a| a.acked).map(|a| a.id).collect()
}

fn member_on(c: &Cluster, d: &Value, node: usize) -> Value {
    let name = &c[node].name;
    d["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == name.as_str()).cloned())
        .unwrap_or_else(|| panic!("a member on {name}: {d}"))
}

#[test]
fn a_frozen_master_is_replaced_never_takes_a_write_when_thawed_and_rejoins_as_a_replica() {
    // Proves (durability: none, so nothing but fencing protects a write): the master's
    // whole node (daemon and redis-server) frozen for 10 s under write loops through the
    // master URL from another node and from the frozen node itself: a replica is promoted
    // and writes resume; after the thaw no write sent after the freeze is acknowledged by
    // the old master (every acknowledged one is on the new master: the thawed node's proxy
    // forwards nothing without its lease, even on connections it held open), writes
    // straight to the old master's own redis-server are refused once its node has looked
    // (it runs with the freeze until then), it rejoins as a replica, and exactly one
    // member answers as master.
    let Some(mut rd) = Rd::start("rdfrz", &["a", "a", "b"], "none") else { return };
    let before = db(&rd.c[0]).expect("status");
    let p = node_index(&rd.c, before["primary_node"].as_str().expect("master"));
    let w = (0..3).find(|i| *i != p).expect("another node");
    let old_member = member_on(&rd.c, &before, p)["member"].as_u64().expect("member") as usize;
    let (_, port) = rd.member_port(old_member).expect("the master's port");
    let writer = rd.writer(w, &rd.url, 1);
    let local = rd.writer(p, &rd.url, 1_000_000);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    local.wait_acked_after(0.0, 5, Duration::from_secs(20), "writes through the master's own node");
    rd.c.allow_errors(FAULT_ERRORS);

    let frozen = epoch_now();
    rd.c.tb().freeze(p).expect("freeze");
    writer.expect_acked_after(&rd.c, frozen + 0.1, 20, Duration::from_secs(30), "writes on a new master");
    let outage = writer.longest_gap_after(frozen - 1.0);
    let during = db(&rd.c[w]).expect("status");
    assert!(during["term"].as_u64() > before["term"].as_u64(), "a new term while frozen: {during}");
    while epoch_now() < frozen + 10.0 {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Thawed: writes straight to the old master's redis-server (bypassing holdfast's
    // proxies); its node fences it at its first look.
    let direct_url = at_port(&rd.url, port);
    rd.c.tb().thaw(p).expect("thaw");
    let thawed = Instant::now();
    let mut direct = Vec::new();
    let mut n = 0;
    while thawed.elapsed() < Duration::from_secs(5) {
        n += 1;
        let sent = thawed.elapsed();
        let out = rd.c[p].exec_within(
            &["redis-cli", "--no-auth-warning", "-u", &direct_url, "SET", &format!("direct:{n}"), "1"],
            Duration::from_secs(3),
        );
        let ok = out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "OK");
        direct.push((sent, ok));
    }
    let settled = rd.wait_settled(w, Duration::from_secs(90));
    assert_eq!(member_on(&rd.c, &settled, p)["role"], "replica", "the thawed master rejoins as a replica: {settled}");
    let kinds = event_kinds(&rd.c[w], "database cache");
    assert!(kinds.contains(&"failover".to_string()), "{kinds:?}");
    let late: Vec<Duration> =
        direct.iter().filter(|(at, ok)| *ok && *at > Duration::from_secs(1)).map(|(at, _)| *at).collect();
    assert!(late.is_empty(), "the thawed old master took direct writes a second and more after the thaw: {late:?}");
    let early = direct.iter().filter(|(_, ok)| *ok).count();
    // Every write sent after the freeze that a client saw acknowledged is on the new
    // master (one the old master took after the thaw would be gone with its demotion).
    let mut after_freeze: Vec<u64> =
        writer.stop().iter().filter(|a| a.acked && a.sent > frozen + 0.05).map(|a| a.id).collect();
    after_freeze.extend(local.stop().iter().filter(|a| a.acked && a.sent > frozen + 0.05).map(|a| a.id));
    rd.assert_none_missing(w, &after_freeze, "writes sent after the freeze");
    eprintln!(
        "frozen master: writes back after {outage:.2} s; {} direct writes to the thawed one, {early} acknowledged in its first second (before its node looked); {} acknowledged after the freeze, none lost",
        direct.len(),
        after_freeze.len()
    );
}

#[test]
fn a_master_cut_off_with_its_site_stops_taking_writes_and_the_majority_promotes() {
    // Proves: the master alone in site b, the WAN to site a cut: no write sent through
    // the minority's master URL after the cut is acknowledged, and writes straight to the
    // old master's redis-server are acknowledged only before the majority's new master
    // takes its first write (its node holds, then refuses, writes once its lease lapses);
    // after healing exactly one member is master, the old one is a replica, and no
    // acknowledged write is missing.
    let Some(mut rd) = Rd::start("rdcut", &["a", "a", "b"], "replicated") else { return };
    let mut d = db(&rd.c[0]).expect("status");
    if d["primary_node"] != "n3" {
        let out = rd.c[0].cli_ok(&["db", "switchover", "cache", "--to", "n3"]);
        assert!(out.contains("n3"), "{out}");
        d = rd.wait_settled(0, Duration::from_secs(60));
    }
    let old_member = member_on(&rd.c, &d, 2)["member"].as_u64().expect("member") as usize;
    let (_, port) = rd.member_port(old_member).expect("the master's port");
    let direct_url = at_port(&rd.url, port);
    let majority = rd.writer(0, &rd.url, 1);
    let minority = rd.writer(2, &rd.url, 1_000_000);
    let direct = rd.writer(2, &direct_url, 2_000_000);
    majority.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes from site a");
    minority.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes from site b");
    direct.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes straight to the master");
    rd.c.allow_errors(FAULT_ERRORS);

    let cut = epoch_now();
    rd.c.tb().cut_sites("a", "b").expect("cut the sites");
    let cut_in_place = epoch_now();
    majority.expect_acked_after(&rd.c, cut + 0.1, 20, Duration::from_secs(30), "writes on the majority's new master");
    let first_new = majority.log().iter().find(|a| a.acked && a.sent > cut + 0.1).map(|a| a.done - cut).unwrap_or(0.0);
    let outage = majority.longest_gap_after(cut - 1.0);
    let late: Vec<Attempt> = minority.log().into_iter().filter(|a| a.acked && a.sent > cut_in_place).collect();
    assert!(late.is_empty(), "writes sent after the cut acknowledged on the minority: {late:?}");
    // Wait a little past the new master's first write, then compare.
    std::thread::sleep(Duration::from_secs(3));
    let last_old = direct.log().iter().filter(|a| a.acked).map(|a| a.done - cut).fold(f64::MIN, f64::max);
    assert!(
        last_old < first_new,
        "the cut-off master acknowledged a write {last_old:.2} s after the cut, after the new master's first write at {first_new:.2} s"
    );

    rd.c.tb().join_sites("a", "b").expect("heal");
    let settled = rd.wait_settled(2, Duration::from_secs(90));
    assert_eq!(member_on(&rd.c, &settled, 2)["role"], "replica", "{settled}");
    let mut all = acked(&majority.stop());
    all.extend(acked(&minority.stop()));
    // Writes straight to the old master bypassed the WAIT: only through-holdfast ones
    // carry the replicated guarantee.
    let _ = direct.stop();
    rd.assert_none_missing(0, &all, "after healing the sites");
    eprintln!(
        "site cut: old master's last acknowledged direct write {last_old:.2} s after the cut; the new master's first write {first_new:.2} s after the cut; longest gap {outage:.2} s"
    );
}
