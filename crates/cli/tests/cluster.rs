//! Multi-node tests on loopback: several real `holdfast` processes on distinct 127.0.x.y
//! addresses form one cluster over mutual TLS. Machine loss = SIGKILL of a node and its
//! workloads. Each test starts with one sentence of what it proves.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WEB: &str = r#"
project: demo
services:
  web:
    run: ["holdfast-demo-web"]
    replicas: 3
    ports: {http: 8080}
    health: {http: /healthz, interval: 300ms, timeout: 300ms}
"#;

#[test]
fn three_nodes_over_two_sites_survive_leader_loss() {
    // Proves: nodes join with tokens, replicas spread over every node, killing the leader
    // elects a new one within seconds, its replica is replaced on a survivor, and changes
    // work again.
    let mut nodes = cluster(21, 22000, &["seoul", "seoul", "idc"]);
    let out = nodes[0].cli_ok(&["nodes"]);
    assert!(out.contains("2 of 3 control-plane voters are in site `seoul`"), "layout warning: {out}");
    let (ok, out, err) = nodes[2].deploy_yaml("web.yaml", WEB);
    assert!(ok, "deploy through a follower: {out}\n{err}");
    let st = nodes[1].wait_ready("web", 3, Duration::from_secs(20));
    let placed: Vec<String> = service_of(&st, "web")["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| i["node"].as_str().unwrap_or("").to_string())
        .collect();
    let mut distinct = placed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one replica per node: {placed:?}");

    let leader = leader_of(&nodes[0]).expect("a leader");
    let li = nodes.iter().position(|d| node_id(d) == leader).expect("leader is one of ours");
    let leader_name = nodes[li].name();
    let killed_at = Instant::now();
    nodes[li].kill_machine();
    let survivor = if li == 0 { 1 } else { 0 };
    let new_leader =
        wait_for("a new leader", Duration::from_secs(10), || leader_of(&nodes[survivor]).filter(|l| *l != leader));
    let elected = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {elected:?}");
    assert!(elected < Duration::from_secs(5), "leader failover took {elected:?}");
    let st = wait_for("web replaced on survivors", Duration::from_secs(20), || {
        let st = nodes[survivor].try_status()?;
        let s = service_of(&st, "web");
        let ok = s["ready"] == 3 && s["instances"].as_array()?.iter().all(|i| i["node"] != leader_name.as_str());
        ok.then_some(st)
    });
    eprintln!("replacement ready after {:?}", killed_at.elapsed());
    assert!(st["warnings"].to_string().contains(&format!("node {leader_name} is down")), "{}", st["warnings"]);
    let (ok, out, err) = nodes[survivor].deploy_yaml("web.yaml", &WEB.replace("replicas: 3", "replicas: 4"));
    assert!(ok, "changes work with 2 of 3 voters: {out}\n{err}");
    nodes[survivor].wait_ready("web", 4, Duration::from_secs(20));
}

#[test]
fn join_refuses_wrong_expired_and_reused_tokens_without_half_joining() {
    // Proves: a bad token is refused with a clear message and leaves the new data
    // directory uninitialised; a good token works once.
    let founder = Daemon::start_with("127.0.22.1", 23000, &["up", "--name", "n1"]);
    let good = founder.token("5m");
    // Wrong secret: same token with another secret.
    let tampered = {
        use base64_free::*;
        retoken(&good, |t| t["secret"] = Value::String("00".repeat(32)))
    };
    let (d, st) = Daemon::try_spawn("127.0.22.2", 23100, &["join", &tampered, "--name", "bad"]);
    assert_eq!(st.code(), Some(1));
    assert!(d.log_text().contains("wrong join token secret"), "{}", d.log_text());
    assert!(!d.dir.join("node.json").exists(), "nothing half-joined");

    let short = founder.token("1s");
    std::thread::sleep(Duration::from_millis(1500));
    let (d, st) = Daemon::try_spawn("127.0.22.3", 23200, &["join", &short, "--name", "late"]);
    assert_eq!(st.code(), Some(1));
    assert!(d.log_text().contains("expired"), "{}", d.log_text());

    let (d, st) = Daemon::try_spawn("127.0.22.4", 23300, &["join", "hfjoin1.garbage", "--name", "x"]);
    assert_eq!(st.code(), Some(1));
    assert!(d.log_text().contains("damaged"), "{}", d.log_text());

    let member = Daemon::start_with("127.0.22.5", 23400, &["join", &good, "--name", "n2"]);
    assert!(member.status()["control_plane"]["revision"].is_u64());
    let (d, st) = Daemon::try_spawn("127.0.22.6", 23500, &["join", &good, "--name", "n3"]);
    assert_eq!(st.code(), Some(1));
    assert!(d.log_text().contains("already used"), "{}", d.log_text());
    let nodes: Value = serde_json::from_str(&founder.cli_ok(&["nodes", "--json"])).expect("json");
    assert_eq!(nodes["nodes"].as_array().map(|a| a.len()), Some(2), "only the good join is a member");
}

/// Helpers to rewrite a join token's JSON (tests only).
mod base64_free {
    use serde_json::Value;

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    fn decode(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = 0u32;
        let mut bits = 0;
        for c in s.bytes() {
            let v = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32;
            buf = (buf << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
                buf &= (1 << bits) - 1;
            }
        }
        out
    }

    fn encode(b: &[u8]) -> String {
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, x| (acc << 8) | *x as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    pub fn retoken(token: &str, f: impl FnOnce(&mut Value)) -> String {
        let body = token.strip_prefix("hfjoin1.").expect("token prefix");
        let mut v: Value = serde_json::from_slice(&decode(body)).expect("token json");
        f(&mut v);
        format!("hfjoin1.{}", encode(&serde_json::to_vec(&v).expect("json")))
    }
}

#[test]
fn a_removed_node_certificate_is_refused() {
    // Proves: node-to-node endpoints accept a member's certificate, and refuse it once
    // the node was removed with `holdfast node rm`.
    let nodes = cluster(23, 24000, &["a", "a", "b"]);
    let n3 = &nodes[2];
    let heartbeat = |target: &Daemon| -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", " %{http_code}", "-X", "POST", "-d", "{}"])
            .args(["--cacert", n3.dir.join("ca.pem").to_str().expect("utf8")])
            .args(["--cert", n3.dir.join("node.pem").to_str().expect("utf8")])
            .args(["--key", n3.dir.join("node.key").to_str().expect("utf8")])
            .arg(format!("https://{}/cluster/heartbeat", target.addr()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = heartbeat(&nodes[0]);
    assert!(!before.ends_with(" 401") && !before.ends_with(" 403"), "a member's certificate is accepted: {before}");
    let rm_from = if leader_of(&nodes[0]) == Some(node_id(&nodes[0])) { &nodes[0] } else { &nodes[1] };
    let out = rm_from.cli_ok(&["node", "rm", "n3"]);
    assert!(out.contains("removed"), "{out}");
    let after = wait_for("n3's certificate refused", Duration::from_secs(10), || {
        let r = heartbeat(&nodes[0]);
        r.ends_with(" 403").then_some(r)
    });
    assert!(after.contains("revoked"), "{after}");
    let list: Value = serde_json::from_str(&nodes[0].cli_ok(&["nodes", "--json"])).expect("json");
    assert_eq!(list["nodes"].as_array().map(|a| a.len()), Some(2));
}

#[test]
fn five_nodes_lose_four_and_the_survivor_keeps_serving() {
    // Proves: losing quorum stops changes, not traffic: the last node keeps running its
    // replica and it keeps answering; status still answers there, changes are refused.
    let mut nodes = cluster(24, 25000, &["a", "a", "b", "b", "c"]);
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &WEB.replace("replicas: 3", "replicas: 5"));
    assert!(ok, "{out}\n{err}");
    let st = nodes[0].wait_ready("web", 5, Duration::from_secs(30));
    let on_last: Vec<Value> = service_of(&st, "web")["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["node"] == "n5")
        .collect();
    assert_eq!(on_last.len(), 1, "one replica on n5");
    let port = on_last[0]["ports"]["http"].as_u64().expect("port");
    for d in nodes.iter_mut().take(4) {
        d.kill_machine();
    }
    for _ in 0..20 {
        assert!(curl(port, "/").is_some(), "the survivor's replica answers");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = nodes[4].cli(&["status"]);
    assert!(out.status.success(), "status answers without quorum: {}", String::from_utf8_lossy(&out.stderr));
    let (ok, _, err) = nodes[4].deploy_yaml("web.yaml", WEB);
    assert!(!ok, "changes are refused without quorum");
    assert!(err.contains("no leader") || err.contains("quorum"), "{err}");
}

#[test]
fn ingress_reaches_replicas_on_other_nodes_and_a_node_kill_fails_no_request() {
    // Proves: a node's ingress sends requests to replicas on every node (through the
    // mTLS tunnel on the holdfast port), and SIGKILLing a node that holds a replica during
    // a steady request loop through a surviving node's ingress fails no request; the
    // replica is replaced elsewhere.
    let mut nodes = cluster(25, 27000, &["a", "a", "b"]);
    let spec = WEB.replace("project: demo", "project: xnode") + "routes:\n  - {host: x.localhost, service: web}\n";
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    nodes[0].wait_ready("web", 3, Duration::from_secs(20));
    let mut seen = std::collections::BTreeSet::new();
    wait_for("every replica answering through n1's ingress", Duration::from_secs(10), || {
        let (code, body) = ingress(&nodes[0], "x.localhost", "/");
        if code == 200 {
            seen.insert(body.split_whitespace().nth(2).unwrap_or("").to_string());
        }
        (seen.len() == 3).then_some(())
    });
    let leader = leader_of(&nodes[0]).expect("leader");
    let victim = (1..3).find(|i| node_id(&nodes[*i]) != leader).expect("a non-leader node besides n1");
    let victim_name = nodes[victim].name();
    let mut failures = Vec::new();
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    for i in 0..400 {
        if i == 100 {
            nodes[victim].kill_machine();
        }
        let t = Instant::now();
        let (code, body) = ingress(&nodes[0], "x.localhost", "/");
        longest = longest.max(t.elapsed());
        if code != 200 {
            failures.push(format!("#{i}: {code} {body}"));
        }
    }
    eprintln!("400 requests in {:?}, longest {:?}", start.elapsed(), longest);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    wait_for("replacement ready elsewhere", Duration::from_secs(20), || {
        let st = nodes[0].try_status()?;
        let s = service_of(&st, "web");
        let ok = s["ready"] == 3 && s["instances"].as_array()?.iter().all(|i| i["node"] != victim_name.as_str());
        ok.then_some(())
    });
}
