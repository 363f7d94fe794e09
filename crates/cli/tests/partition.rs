//! Sites and partitions with real network namespaces (holdfast-testbed's cluster harness
//! in Namespaces mode): holdfast nodes in two sites behind bridges, the minority site cut
//! off and healed, nodes frozen and killed, slow and lossy links. Needs root; under CI it
//! must run (CI is root), elsewhere it is skipped with the reason.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn instances(st: &Value) -> Vec<Value> {
    st["services"][0]["instances"].as_array().cloned().unwrap_or_default()
}

fn names(st: &Value) -> Vec<String> {
    instances(st).iter().map(|i| i["name"].as_str().unwrap_or("").to_string()).collect()
}

/// The demo web service at `replicas`, routed as `w.localhost`.
fn web(replicas: u32) -> String {
    format!(
        "project: part\nservices:\n  web:\n    run: [\"holdfast-demo-web\"]\n    replicas: {replicas}\n    ports: {{http: 8080}}\n    health: {{http: /healthz, interval: 300ms, timeout: 300ms}}\nroutes:\n  - {{host: w.localhost, service: web}}\n"
    )
}

/// A cluster in network namespaces, one node per entry of `sites`, with `web` deployed at
/// one replica per node and every replica ready. `None` when namespaces are unavailable
/// outside CI (skipped).
fn cluster_with_web(name: &str, sites: &[&str]) -> Option<Cluster> {
    if !namespaces_or_skip(name) {
        return None;
    }
    let c = Cluster::form(config(name).sites(sites).namespaces());
    let (ok, out, err) = c[0].deploy_yaml("web.yaml", &web(sites.len() as u32));
    assert!(ok, "deploy: {out}\n{err}");
    c[0].wait_ready("web", sites.len() as u64, Duration::from_secs(30));
    Some(c)
}

/// The pid and port of the replica on `node`.
fn replica_on(c: &Cluster, node: &str) -> (u64, u64) {
    let st = c[0].status();
    let i = instances(&st).into_iter().find(|i| i["node"] == node).unwrap_or_else(|| panic!("a replica on {node}"));
    (i["pid"].as_u64().expect("pid"), i["ports"]["http"].as_u64().expect("port"))
}

/// Runs `count` requests through the ingress of `node` (inside its namespace, one curl
/// each, `gap_ms` apart) and returns the HTTP codes that were not 200.
fn request_loop(node: &Node, count: u32, gap_ms: u32) -> Vec<String> {
    let script = format!(
        "for i in $(seq 1 {count}); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 5 -H 'Host: w.localhost' http://{}:{}/; sleep {}; done",
        node.ip,
        node.http_port,
        f64::from(gap_ms) / 1000.0
    );
    let out = node.exec(&["sh", "-c", &script]);
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(codes.lines().count(), count as usize, "every request ran: {codes}");
    codes.lines().filter(|c| *c != "200").map(str::to_string).collect()
}

#[test]
fn a_frozen_node_is_replaced_and_stops_its_stale_replica_when_thawed() {
    // Proves: a node that hangs (all its processes frozen) is declared down and its
    // replica placed elsewhere; when it thaws it learns the new state and stops the stale
    // replica, leaving exactly one instance per replica.
    let Some(c) = cluster_with_web("hffrz", &["a", "a", "b"]) else { return };
    let (stale_pid, _) = replica_on(&c, "n3");
    c.tb().freeze(2).expect("freeze n3");
    let frozen = Instant::now();
    wait_for("n3's replica re-placed", Duration::from_secs(20), || {
        let st = c[0].try_status()?;
        let ok = st["services"][0]["ready"] == 3 && instances(&st).iter().all(|i| i["node"] != "n3");
        seen_unless(ok, (), st["services"][0].to_string())
    });
    eprintln!("re-placed {:?} after the freeze", frozen.elapsed());
    assert!(alive(stale_pid as u32), "a frozen process is still there");
    c.tb().thaw(2).expect("thaw n3");
    wait_for("n3 back and its stale replica stopped", Duration::from_secs(30), || {
        let st = c[2].try_status()?;
        let ok = st["services"][0]["ready"] == 3
            && !alive(stale_pid as u32)
            && !st["warnings"].to_string().contains("n3 is down");
        seen_unless(ok, (), format!("stale alive {}: {}", alive(stale_pid as u32), st["warnings"]))
    });
    assert_eq!(names(&c[0].status()), ["web-0", "web-1", "web-2"], "no duplicate instances");
}

#[test]
fn minority_site_keeps_serving_majority_keeps_changing_and_heal_converges() {
    // Proves: cut off from the majority, the minority site keeps running and serving its
    // replica with the state it had; the majority declares it down, re-places its replica
    // and accepts changes; after healing there is one state, the change is not lost, and
    // the minority's stale instance is stopped (no duplicate).
    let Some(c) = cluster_with_web("hfpart", &["a", "a", "b"]) else { return };
    let (stale_pid, stale_port) = replica_on(&c, "n3");
    c.tb().partition(&[0, 1], &[2]).expect("partition");
    let cut = Instant::now();
    // The minority keeps serving its replica, and answers status from its own view.
    for _ in 0..10 {
        assert!(c[2].curl_local(stale_port, "/").is_some(), "n3's replica keeps answering during the partition");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(c[2].try_status().is_ok(), "status answers on the minority");
    let refused = c[2].cli(&["scale", "web", "1"]);
    assert!(!refused.status.success(), "the minority cannot change anything");
    // The majority moves n3's replica and keeps changing.
    wait_for("replica re-placed in site a", Duration::from_secs(20), || {
        let st = c[0].try_status()?;
        let ok = st["services"][0]["ready"] == 3 && instances(&st).iter().all(|i| i["node"] != "n3");
        seen_unless(ok, (), st["services"][0].to_string())
    });
    eprintln!("re-placed {:?} after the cut", cut.elapsed());
    let (ok, out, err) = c[0].deploy_yaml("web.yaml", &web(4));
    assert!(ok, "the majority accepts changes: {out}\n{err}");

    c.tb().heal_partitions().expect("heal");
    let st = wait_for("one consistent state after healing", Duration::from_secs(30), || {
        let st = c[2].try_status()?;
        let s = &st["services"][0];
        let ok = s["replicas"] == 4 && s["ready"] == 4 && !alive(stale_pid as u32);
        seen_unless(ok, st.clone(), format!("stale alive {}: {s}", alive(stale_pid as u32)))
    });
    assert_eq!(names(&st), ["web-0", "web-1", "web-2", "web-3"], "no duplicate instances");
}

#[test]
fn five_nodes_over_two_sites_lose_the_leader_then_a_worker_and_no_request_fails() {
    // Proves: with 5 nodes in 2 sites and requests flowing through a survivor's ingress,
    // SIGKILLing the leader and then a worker (each with its workloads) fails no request;
    // a new leader is elected, every lost replica is replaced on the survivors, and the
    // cluster still accepts changes with 3 of 5 voters.
    let Some(c) = cluster_with_web("hf5", &["a", "a", "a", "b", "b"]) else { return };
    let old_leader = c[0].leader().expect("leader");
    let li = c.leader_index(0).expect("leader is ours");
    // A worker in the other site than the leader's, and a survivor to send requests from.
    let leader_site = c.tb().nodes()[li].site.clone();
    let wi = (0..5).find(|i| *i != li && c.tb().nodes()[*i].site != leader_site).expect("worker");
    let si = (0..5).find(|i| *i != li && *i != wi).expect("survivor");
    eprintln!("leader n{}, worker n{}, requests through n{}", li + 1, wi + 1, si + 1);
    let worker_killed = std::thread::scope(|scope| {
        let requests = scope.spawn(|| request_loop(&c[si], 250, 20));
        std::thread::sleep(Duration::from_secs(1)); // requests are flowing
        let killed = Instant::now();
        c.tb().kill(li).expect("kill leader");
        let new_leader = wait_for("a new leader", Duration::from_secs(15), || {
            let now = c[si].leader();
            now.filter(|l| *l != old_leader).ok_or(now)
        });
        eprintln!("new leader {new_leader} after {:?}", killed.elapsed());
        std::thread::sleep(Duration::from_secs(1)); // requests flow under the new leader
        c.tb().kill(wi).expect("kill worker");
        let worker_killed = Instant::now();
        let failed = requests.join().expect("request loop");
        assert!(failed.is_empty(), "failed requests while the leader and a worker died: {failed:?}");
        worker_killed
    });
    let (dead1, dead2) = (format!("n{}", li + 1), format!("n{}", wi + 1));
    wait_for("every replica on the survivors", Duration::from_secs(30), || {
        let st = c[si].try_status()?;
        let ok = st["services"][0]["ready"] == 5
            && instances(&st).iter().all(|i| i["node"] != dead1.as_str() && i["node"] != dead2.as_str());
        seen_unless(ok, (), st["services"][0].to_string())
    });
    eprintln!("every replica on the survivors {:?} after the second kill", worker_killed.elapsed());
    let (ok, out, err) = c[si].deploy_yaml("web.yaml", &web(6));
    assert!(ok, "3 of 5 voters accept changes: {out}\n{err}");
}

#[test]
fn slow_and_lossy_links_between_sites_do_not_flap_nodes_or_fail_requests() {
    // Proves the failure detector's defaults hold on a poor link: with 40 ms round trips
    // between sites and 10% packet loss on the lone node of site b, no node is declared
    // down, the leader stays, and requests through n1's ingress (which reach n3's replica
    // over the tunnel) all succeed. The node states are sampled through the whole window,
    // and enough samples must have answered for "never down" to mean something.
    let Some(c) = cluster_with_web("hflossy", &["a", "a", "b"]) else { return };
    let before = c[0].leader().expect("leader");
    let _latency = c.tb().latency_between_sites(20).expect("latency");
    c.tb().loss(2, 10).expect("loss");
    let start = Instant::now();
    std::thread::scope(|scope| {
        let requests = scope.spawn(|| request_loop(&c[0], 150, 50));
        let mut states = std::collections::BTreeSet::new();
        let (mut answered, mut failed_polls) = (0u32, Vec::new());
        while start.elapsed() < Duration::from_secs(12) {
            match c[0].nodes_json() {
                Ok(v) => {
                    answered += 1;
                    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
                        states.insert(format!(
                            "{}={}",
                            n["name"].as_str().unwrap_or(""),
                            n["state"].as_str().unwrap_or("")
                        ));
                    }
                }
                Err(e) => failed_polls.push(e),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!("node states seen: {states:?} in {answered} answered polls; failed polls: {failed_polls:?}");
        assert!(answered >= 15, "only {answered} polls of the node states answered: {failed_polls:?}");
        assert!(!states.iter().any(|s| s.ends_with("=down")), "a node was declared down on a lossy link: {states:?}");
        let failed = requests.join().expect("requests");
        assert!(failed.is_empty(), "failed requests on a slow, lossy link: {failed:?}");
    });
    assert_eq!(c[0].leader(), Some(before), "the leader did not change");
    c.tb().clear_loss(2).expect("clear loss");
}
