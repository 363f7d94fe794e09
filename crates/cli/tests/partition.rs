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

/// Three nodes (sites a, a, b) with `web` deployed one replica per node; returns the
/// nodes, the spec path and text, and the pid and port of the replica on n3.
fn three_nodes_with_web(tb: &Testbed, root: &Path) -> (Vec<Node>, PathBuf, &'static str, u64, String) {
    let mut nodes = vec![start(tb, 0, root, &["up"])];
    for i in 1..3 {
        let out = cli(tb, 0, &nodes[0].dir, &["token", "create", "--ttl", "5m"]);
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        nodes.push(start(tb, i, root, &["join", &token]));
    }
    wait("3 voters", 20, || {
        let out = cli(tb, 0, &nodes[0].dir, &["nodes", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let voting = v["nodes"].as_array()?.iter().filter(|n| n["role"] == "voter" || n["role"] == "leader").count();
        (voting == 3).then_some(())
    });
    let spec = root.join("web.yaml");
    let web = "project: part\nservices:\n  web:\n    run: [\"holdfast-demo-web\"]\n    replicas: 3\n    ports: {http: 8080}\n    health: {http: /healthz, interval: 300ms, timeout: 300ms}\n";
    std::fs::write(&spec, web).expect("spec");
    let out = cli(tb, 0, &nodes[0].dir, &["deploy", spec.to_str().expect("utf8"), "--timeout", "30s"]);
    assert!(out.status.success(), "deploy: {}", String::from_utf8_lossy(&out.stderr));
    let st = wait("3 ready", 20, || status(tb, 0, &nodes[0].dir).filter(|s| s["services"][0]["ready"] == 3));
    let stale = instances(&st).into_iter().find(|i| i["node"] == "n3").expect("a replica on n3");
    let stale_pid = stale["pid"].as_u64().expect("pid");
    let stale_port = stale["ports"]["http"].as_u64().expect("port").to_string();
    (nodes, spec, web, stale_pid, stale_port)
}

fn namespaces_or_skip(name: &str) -> Option<Testbed> {
    match Testbed::start(TestbedConfig::new(name).site("a", 2).site("b", 1)) {
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
    for n in nodes.iter_mut() {
        if let Some(mut p) = n.proc.take() {
            holdfast_testbed_stop(&mut p);
        }
    }
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
    for n in nodes.iter_mut() {
        if let Some(mut p) = n.proc.take() {
            holdfast_testbed_stop(&mut p);
        }
    }
}

/// Stops a node gracefully (its workloads and cgroups go with it).
fn holdfast_testbed_stop(p: &mut NodeProcess) {
    let _ = std::process::Command::new("kill").args(["-TERM", &p.pid().to_string()]).status();
    let _ = p.wait_timeout(Duration::from_secs(20));
}
