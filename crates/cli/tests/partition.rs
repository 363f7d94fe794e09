//! Sites and partitions with real network namespaces (holdfast-testbed): three holdfast
//! nodes in two sites behind bridges, the minority site cut off and healed. Needs root;
//! under CI it must run (CI is root), elsewhere it is skipped with the reason.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdfast_testbed::{Mode, NodeProcess, Testbed, TestbedConfig};
use serde_json::Value;

fn holdfast() -> &'static str {
    env!("CARGO_BIN_EXE_holdfast")
}

fn test_path() -> String {
    let dir = Path::new(holdfast()).parent().map(Path::to_path_buf).unwrap_or_default();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

struct Node {
    dir: PathBuf,
    proc: Option<NodeProcess>,
}

fn cli(tb: &Testbed, node: usize, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut argv = vec![holdfast(), "--data-dir", dir.to_str().expect("utf8")];
    argv.extend_from_slice(args);
    tb.exec_timeout(node, &argv, Duration::from_secs(20)).expect("exec in node")
}

fn status(tb: &Testbed, node: usize, dir: &Path) -> Option<Value> {
    let out = cli(tb, node, dir, &["status", "--json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start(tb: &Testbed, i: usize, root: &Path, cmd: &[&str]) -> Node {
    let dir = root.join(format!("n{i}"));
    let addr = format!("{}:7946", tb.nodes()[i].addr);
    let range = format!("{}-{}", 32000 + i * 100, 32099 + i * 100);
    let name = format!("n{}", i + 1);
    let site = tb.nodes()[i].site.clone();
    let mut argv: Vec<&str> = vec![holdfast()];
    argv.extend_from_slice(cmd);
    argv.extend_from_slice(&["--data-dir", dir.to_str().expect("utf8"), "--listen", &addr, "--port-range", &range]);
    argv.extend_from_slice(&["--name", &name, "--site", &site]);
    let path = test_path();
    let proc = tb.spawn(i, &argv, &[("PATH", &path)], &root.join(format!("n{i}.log"))).expect("spawn node");
    let node = Node { dir, proc: Some(proc) };
    wait("node API", 20, || status(tb, i, &node.dir).map(|_| ()));
    node
}

fn instances(st: &Value) -> Vec<Value> {
    st["services"][0]["instances"].as_array().cloned().unwrap_or_default()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Every node of the testbed started (the first founds the cluster, the others join),
/// with `web` deployed at `replicas` and a route `w.localhost`; returns the nodes, the
/// spec path and text.
fn cluster_with_web(tb: &Testbed, root: &Path, replicas: u32) -> (Vec<Node>, PathBuf, String) {
    let n = tb.nodes().len();
    let mut nodes = vec![start(tb, 0, root, &["up"])];
    for i in 1..n {
        let out = cli(tb, 0, &nodes[0].dir, &["token", "create", "--ttl", "5m"]);
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        nodes.push(start(tb, i, root, &["join", &token]));
    }
    let want_voters = if n >= 5 {
        5
    } else if n >= 3 {
        3
    } else {
        1
    };
    wait("voters chosen", 30, || {
        let out = cli(tb, 0, &nodes[0].dir, &["nodes", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let voting = v["nodes"].as_array()?.iter().filter(|n| n["role"] == "voter" || n["role"] == "leader").count();
        (voting == want_voters).then_some(())
    });
    let spec = root.join("web.yaml");
    let web = format!(
        "project: part\nservices:\n  web:\n    run: [\"holdfast-demo-web\"]\n    replicas: {replicas}\n    ports: {{http: 8080}}\n    health: {{http: /healthz, interval: 300ms, timeout: 300ms}}\nroutes:\n  - {{host: w.localhost, service: web}}\n"
    );
    std::fs::write(&spec, &web).expect("spec");
    let out = cli(tb, 0, &nodes[0].dir, &["deploy", spec.to_str().expect("utf8"), "--timeout", "30s"]);
    assert!(out.status.success(), "deploy: {}", String::from_utf8_lossy(&out.stderr));
    wait("all ready", 30, || status(tb, 0, &nodes[0].dir).filter(|s| s["services"][0]["ready"] == replicas));
    (nodes, spec, web)
}

/// Three nodes (sites a, a, b) with `web` deployed one replica per node; returns the
/// nodes, the spec path and text, and the pid and port of the replica on n3.
fn three_nodes_with_web(tb: &Testbed, root: &Path) -> (Vec<Node>, PathBuf, String, u64, String) {
    let (nodes, spec, web) = cluster_with_web(tb, root, 3);
    let st = status(tb, 0, &nodes[0].dir).expect("status");
    let stale = instances(&st).into_iter().find(|i| i["node"] == "n3").expect("a replica on n3");
    let stale_pid = stale["pid"].as_u64().expect("pid");
    let stale_port = stale["ports"]["http"].as_u64().expect("port").to_string();
    (nodes, spec, web, stale_pid, stale_port)
}

/// Runs `count` requests through the ingress of `node` (inside its namespace, one curl
/// each, `gap_ms` apart) and returns the HTTP codes that were not 200.
fn request_loop(tb: &Testbed, node: usize, count: u32, gap_ms: u32) -> Vec<String> {
    let script = format!(
        "for i in $(seq 1 {count}); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 5 -H 'Host: w.localhost' http://127.0.0.1:8080/; sleep {}; done",
        f64::from(gap_ms) / 1000.0
    );
    let out = tb
        .exec_timeout(node, &["sh", "-c", &script], Duration::from_secs(u64::from(count) * 6 + 30))
        .expect("request loop");
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(codes.lines().count(), count as usize, "every request ran: {codes}");
    codes.lines().filter(|c| *c != "200").map(str::to_string).collect()
}

fn leader(tb: &Testbed, node: usize, dir: &Path) -> Option<u64> {
    status(tb, node, dir)?["control_plane"]["leader"].as_u64()
}

fn node_id(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("node.json")).expect("node.json");
    serde_json::from_str::<Value>(&text).expect("json")["id"].as_u64().expect("id")
}

fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        if let Some(mut p) = n.proc.take() {
            holdfast_testbed_stop(&mut p);
        }
    }
}

fn namespaces_or_skip(name: &str) -> Option<Testbed> {
    namespaces_or_skip_with(TestbedConfig::new(name).site("a", 2).site("b", 1))
}

fn namespaces_or_skip_with(config: TestbedConfig) -> Option<Testbed> {
    match Testbed::start(config) {
        Ok(tb) if tb.mode() == Mode::Namespaces => Some(tb),
        other => {
            let why = match other {
                Ok(_) => "network namespaces unavailable (not root?)".to_string(),
                Err(e) => e.to_string(),
            };
            assert!(std::env::var("CI").is_err(), "CI must run the namespace test: {why}");
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

#[test]
fn a_frozen_node_is_replaced_and_stops_its_stale_replica_when_thawed() {
    // Proves: a node that hangs (all its processes frozen) is declared down and its
    // replica placed elsewhere; when it thaws it learns the new state and stops the stale
    // replica, leaving exactly one instance per replica.
    let Some(tb) = namespaces_or_skip("hffrz") else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, _, _, stale_pid, _) = three_nodes_with_web(&tb, root.path());
    tb.freeze(2).expect("freeze n3");
    let frozen = Instant::now();
    wait("n3's replica re-placed", 20, || {
        let st = status(&tb, 0, &nodes[0].dir)?;
        let ok = st["services"][0]["ready"] == 3 && instances(&st).iter().all(|i| i["node"] != "n3");
        ok.then_some(())
    });
    eprintln!("re-placed {:?} after the freeze", frozen.elapsed());
    assert!(alive(stale_pid), "a frozen process is still there");
    tb.thaw(2).expect("thaw n3");
    wait("n3 back and its stale replica stopped", 30, || {
        let st = status(&tb, 2, &nodes[2].dir)?;
        let ok =
            st["services"][0]["ready"] == 3 && !alive(stale_pid) && !st["warnings"].to_string().contains("n3 is down");
        ok.then_some(())
    });
    let st = status(&tb, 0, &nodes[0].dir).expect("status");
    let names: Vec<String> = instances(&st).iter().map(|i| i["name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(names, vec!["web-0", "web-1", "web-2"], "no duplicate instances");
    stop_all(&mut nodes);
}

#[test]
fn minority_site_keeps_serving_majority_keeps_changing_and_heal_converges() {
    // Proves: cut off from the majority, the minority site keeps running and serving its
    // replica with the state it had; the majority declares it down, re-places its replica
    // and accepts changes; after healing there is one state, the change is not lost, and
    // the minority's stale instance is stopped (no duplicate).
    let Some(tb) = namespaces_or_skip("hfpart") else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, spec, web, stale_pid, stale_port) = three_nodes_with_web(&tb, root.path());
    tb.partition(&[0, 1], &[2]).expect("partition");
    let cut = Instant::now();
    // The minority keeps serving its replica, and answers status from its own view.
    for _ in 0..10 {
        let out = tb
            .exec(2, &["curl", "-sf", "--max-time", "2", &format!("http://127.0.0.1:{stale_port}/")])
            .expect("curl in n3");
        assert!(out.status.success(), "n3's replica keeps answering during the partition");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(status(&tb, 2, &nodes[2].dir).is_some(), "status answers on the minority");
    let refused = cli(&tb, 2, &nodes[2].dir, &["scale", "web", "1"]);
    assert!(!refused.status.success(), "the minority cannot change anything");
    // The majority moves n3's replica and keeps changing.
    wait("replica re-placed in site a", 20, || {
        let st = status(&tb, 0, &nodes[0].dir)?;
        let ok = st["services"][0]["ready"] == 3 && instances(&st).iter().all(|i| i["node"] != "n3");
        ok.then_some(())
    });
    eprintln!("re-placed {:?} after the cut", cut.elapsed());
    std::fs::write(&spec, web.replace("replicas: 3", "replicas: 4")).expect("spec");
    let out = cli(&tb, 0, &nodes[0].dir, &["deploy", spec.to_str().expect("utf8"), "--timeout", "30s"]);
    assert!(out.status.success(), "the majority accepts changes: {}", String::from_utf8_lossy(&out.stderr));

    tb.heal_partitions().expect("heal");
    let st = wait("one consistent state after healing", 30, || {
        let st = status(&tb, 2, &nodes[2].dir)?;
        let ok = st["services"][0]["replicas"] == 4 && st["services"][0]["ready"] == 4 && !alive(stale_pid);
        ok.then_some(st)
    });
    let names: Vec<String> = instances(&st).iter().map(|i| i["name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(names, vec!["web-0", "web-1", "web-2", "web-3"], "no duplicate instances");
    stop_all(&mut nodes);
}

#[test]
fn five_nodes_over_two_sites_lose_the_leader_then_a_worker_and_no_request_fails() {
    // Proves: with 5 nodes in 2 sites and requests flowing through a survivor's ingress,
    // SIGKILLing the leader and then a worker (each with its workloads) fails no request;
    // a new leader is elected, every lost replica is replaced on the survivors, and the
    // cluster still accepts changes with 3 of 5 voters.
    let Some(tb) = namespaces_or_skip_with(TestbedConfig::new("hf5").site("a", 3).site("b", 2)) else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, spec, web) = cluster_with_web(&tb, root.path(), 5);
    let old_leader = leader(&tb, 0, &nodes[0].dir).expect("leader");
    let li = nodes.iter().position(|n| node_id(&n.dir) == old_leader).expect("leader is ours");
    // A worker in the other site than the leader's, and a survivor to send requests from.
    let leader_site = tb.nodes()[li].site.clone();
    let wi = (0..5).find(|i| *i != li && tb.nodes()[*i].site != leader_site).expect("worker");
    let si = (0..5).find(|i| *i != li && *i != wi).expect("survivor");
    eprintln!("leader n{}, worker n{}, requests through n{}", li + 1, wi + 1, si + 1);
    let worker_killed = std::thread::scope(|scope| {
        let requests = scope.spawn(|| request_loop(&tb, si, 250, 20));
        std::thread::sleep(Duration::from_secs(1));
        let killed = Instant::now();
        tb.kill(li).expect("kill leader");
        let new_leader = wait("a new leader", 15, || leader(&tb, si, &nodes[si].dir).filter(|l| *l != old_leader));
        eprintln!("new leader {new_leader} after {:?}", killed.elapsed());
        std::thread::sleep(Duration::from_secs(1));
        tb.kill(wi).expect("kill worker");
        let worker_killed = Instant::now();
        let failed = requests.join().expect("request loop");
        assert!(failed.is_empty(), "failed requests while the leader and a worker died: {failed:?}");
        worker_killed
    });
    let (dead1, dead2) = (format!("n{}", li + 1), format!("n{}", wi + 1));
    wait("every replica on the survivors", 30, || {
        let st = status(&tb, si, &nodes[si].dir)?;
        let ok = st["services"][0]["ready"] == 5
            && instances(&st).iter().all(|i| i["node"] != dead1.as_str() && i["node"] != dead2.as_str());
        ok.then_some(())
    });
    eprintln!("every replica on the survivors {:?} after the second kill", worker_killed.elapsed());
    std::fs::write(&spec, web.replace("replicas: 5", "replicas: 6")).expect("spec");
    let out = cli(&tb, si, &nodes[si].dir, &["deploy", spec.to_str().expect("utf8"), "--timeout", "30s"]);
    assert!(out.status.success(), "3 of 5 voters accept changes: {}", String::from_utf8_lossy(&out.stderr));
    for i in [li, wi] {
        nodes[i].proc.take();
    }
    stop_all(&mut nodes);
}

#[test]
fn slow_and_lossy_links_between_sites_do_not_flap_nodes_or_fail_requests() {
    // Proves the failure detector's defaults hold on a poor link: with 40 ms round trips
    // between sites and 10% packet loss on the lone node of site b, no node is declared
    // down, the leader stays, and requests through n1's ingress (which reach n3's replica
    // over the tunnel) all succeed.
    let Some(tb) = namespaces_or_skip("hflossy") else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let (mut nodes, _, _, _, _) = three_nodes_with_web(&tb, root.path());
    let before = leader(&tb, 0, &nodes[0].dir).expect("leader");
    let _latency = tb.latency_between_sites(20).expect("latency");
    tb.loss(2, 10).expect("loss");
    let start = Instant::now();
    std::thread::scope(|scope| {
        let requests = scope.spawn(|| request_loop(&tb, 0, 150, 50));
        let mut states = std::collections::BTreeSet::new();
        while start.elapsed() < Duration::from_secs(12) {
            let out = cli(&tb, 0, &nodes[0].dir, &["nodes", "--json"]);
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                for n in v["nodes"].as_array().cloned().unwrap_or_default() {
                    states.insert(format!(
                        "{}={}",
                        n["name"].as_str().unwrap_or(""),
                        n["state"].as_str().unwrap_or("")
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!("node states seen: {states:?}");
        assert!(!states.iter().any(|s| s.ends_with("=down")), "a node was declared down on a lossy link: {states:?}");
        let failed = requests.join().expect("requests");
        assert!(failed.is_empty(), "failed requests on a slow, lossy link: {failed:?}");
    });
    assert_eq!(leader(&tb, 0, &nodes[0].dir), Some(before), "the leader did not change");
    tb.clear_loss(2).expect("clear loss");
    stop_all(&mut nodes);
}

/// Stops a node gracefully (its workloads and cgroups go with it).
fn holdfast_testbed_stop(p: &mut NodeProcess) {
    let _ = std::process::Command::new("kill").args(["-TERM", &p.pid().to_string()]).status();
    let _ = p.wait_timeout(Duration::from_secs(20));
}
