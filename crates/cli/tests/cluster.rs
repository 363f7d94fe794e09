//! Multi-node tests on loopback: several real `holdfast` processes on distinct 127.0.x.y
//! addresses form one cluster over mutual TLS. Machine loss = SIGKILL of a node and its
//! workloads. Each test starts with one sentence of what it proves.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn three_nodes_over_two_sites_survive_leader_loss() {
    // Proves: nodes join with tokens, replicas spread over every node, killing the leader
    // elects a new one within seconds, its replica is replaced on a survivor, and changes
    // work again.
    let mut nodes = cluster("leaderloss", 22000, &["seoul", "seoul", "idc"]);
    let out = nodes[0].cli_ok(&["nodes"]);
    assert!(out.contains("2 of 3 control-plane voters are in site `seoul`"), "layout warning: {out}");
    let (ok, out, err) = nodes[2].deploy_yaml("web.yaml", &demo_web("demo", 3, None));
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

    let leader = nodes[0].leader().expect("a leader");
    let li = nodes.leader_index(0).expect("leader is one of ours");
    let leader_name = nodes[li].name.clone();
    let killed_at = Instant::now();
    nodes[li].kill_machine();
    let survivor = if li == 0 { 1 } else { 0 };
    let new_leader = wait_for("a new leader", Duration::from_secs(10), || {
        let now = nodes[survivor].leader();
        now.filter(|l| *l != leader).ok_or(now)
    });
    let elected = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {elected:?}");
    assert!(elected < Duration::from_secs(5), "leader failover took {elected:?}");
    let st = wait_for("web replaced on survivors", Duration::from_secs(20), || {
        let st = nodes[survivor].try_status()?;
        let s = service_of(&st, "web");
        let ok = s["ready"] == 3
            && s["instances"].as_array().is_some_and(|a| a.iter().all(|i| i["node"] != leader_name.as_str()));
        seen_unless(ok, st.clone(), s.to_string())
    });
    eprintln!("replacement ready after {:?}", killed_at.elapsed());
    assert!(st["warnings"].to_string().contains(&format!("node {leader_name} is down")), "{}", st["warnings"]);
    let (ok, out, err) = nodes[survivor].deploy_yaml("web.yaml", &demo_web("demo", 4, None));
    assert!(ok, "changes work with 2 of 3 voters: {out}\n{err}");
    nodes[survivor].wait_ready("web", 4, Duration::from_secs(20));
}

#[test]
fn join_refuses_wrong_expired_and_reused_tokens_without_half_joining() {
    // Proves: a bad token is refused with a clear message and leaves the new data
    // directory uninitialised; a good token works once.
    let mut c = Cluster::prepare(config("joins").plain(6).ports_from(23000));
    c[0].start_up();
    let good = c[0].token("5m");
    // Wrong secret: same token with another secret.
    let tampered = {
        use base64_free::*;
        retoken(&good, |t| t["secret"] = Value::String("00".repeat(32)))
    };
    let bound = Duration::from_secs(20);
    let st = c[1].try_run(&["join", &tampered, "--name", "bad"], bound);
    assert_eq!(st.code(), Some(1));
    assert!(c[1].log_text().contains("wrong join token secret"), "{}", c[1].log_text());
    assert!(!c[1].dir.join("node.json").exists(), "nothing half-joined");

    let short = c[0].token("1s");
    std::thread::sleep(Duration::from_millis(1500)); // the token's 1 s lifetime passes
    let st = c[2].try_run(&["join", &short, "--name", "late"], bound);
    assert_eq!(st.code(), Some(1));
    assert!(c[2].log_text().contains("expired"), "{}", c[2].log_text());

    let st = c[3].try_run(&["join", "hfjoin1.garbage", "--name", "x"], bound);
    assert_eq!(st.code(), Some(1));
    assert!(c[3].log_text().contains("damaged"), "{}", c[3].log_text());

    c[4].start_join(&good);
    assert!(c[4].status()["control_plane"]["revision"].is_u64());
    let st = c[5].try_run(&["join", &good, "--name", "n3"], bound);
    assert_eq!(st.code(), Some(1));
    assert!(c[5].log_text().contains("already used"), "{}", c[5].log_text());
    let nodes = c[0].nodes_json().expect("nodes");
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
    let nodes = cluster("revoked", 24000, &["a", "a", "b"]);
    let n3 = &nodes[2];
    // (HTTP code, body) of a request to `target` with n3's certificate (real curl);
    // code 0 when no HTTP answer came (a TLS failure).
    let with_n3_cert = |target: &Node, method: &str, path: &str| curl_with_cert(n3, target, method, path);
    // Accepted: the member-only links view answers 200, and a heartbeat gets an answer
    // from the handler (TLS and the certificate check passed), not a refusal.
    let (code, body) = with_n3_cert(&nodes[0], "GET", "/cluster/links");
    assert_eq!(code, 200, "a member's certificate is accepted: {body}");
    let (code, body) = with_n3_cert(&nodes[0], "POST", "/cluster/heartbeat");
    assert!(code != 0 && code != 401 && code != 403, "a member's heartbeat reaches the handler: {code} {body}");
    let rm_from = if nodes[0].leader() == Some(nodes[0].id()) { &nodes[0] } else { &nodes[1] };
    let out = rm_from.cli_ok(&["node", "rm", "n3"]);
    assert!(out.contains("removed"), "{out}");
    let after = wait_for("n3's certificate refused", Duration::from_secs(10), || {
        let r = with_n3_cert(&nodes[0], "POST", "/cluster/heartbeat");
        seen_unless(r.0 == 403, r.clone(), r)
    });
    assert!(after.1.contains("revoked"), "{after:?}");
    let (code, body) = with_n3_cert(&nodes[0], "GET", "/cluster/links");
    assert_eq!(code, 403, "every node-to-node route refuses it: {body}");
    let list = nodes[0].nodes_json().expect("nodes");
    assert_eq!(list["nodes"].as_array().map(|a| a.len()), Some(2));
}

#[test]
fn five_nodes_lose_four_and_the_survivor_keeps_serving() {
    // Proves: losing quorum stops changes, not traffic: the last node keeps running its
    // replica and it keeps answering; status still answers there, changes are refused.
    let mut nodes = cluster("lose4", 25000, &["a", "a", "b", "b", "c"]);
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &demo_web("demo", 5, None));
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
        assert!(nodes[4].curl_local(port, "/").is_some(), "the survivor's replica answers");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = nodes[4].cli(&["status"]);
    assert!(out.status.success(), "status answers without quorum: {}", String::from_utf8_lossy(&out.stderr));
    let (ok, _, err) = nodes[4].deploy_yaml("web.yaml", &demo_web("demo", 3, None));
    assert!(!ok, "changes are refused without quorum");
    assert!(err.contains("no leader") || err.contains("quorum"), "{err}");
}

#[test]
fn ingress_reaches_replicas_on_other_nodes_and_a_node_kill_fails_no_request() {
    // Proves: a node's ingress sends requests to replicas on every node (through the
    // mTLS tunnel on the holdfast port), and SIGKILLing a node that holds a replica during
    // a steady request loop through a surviving node's ingress fails no request; the
    // replica is replaced elsewhere.
    let mut nodes = cluster("xnode", 27000, &["a", "a", "b"]);
    let spec = demo_web("xnode", 3, Some("x.localhost"));
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    nodes[0].wait_ready("web", 3, Duration::from_secs(20));
    let mut seen = std::collections::BTreeSet::new();
    wait_for("every replica answering through n1's ingress", Duration::from_secs(10), || {
        let (code, body) = nodes[0].ingress("x.localhost", "/");
        if code == 200 {
            seen.insert(body.split_whitespace().nth(2).unwrap_or("").to_string());
        }
        seen_unless(seen.len() == 3, (), format!("{seen:?}; last answer {code} {body}"))
    });
    // Through the tunnel: n1 reaches the replicas on n2 and n3 over its one link to each
    // (up, made once), and the ingress's pooled connections to them are streams of those
    // links, open right after the requests (a check's stream closes at once).
    for peer in [&nodes[1], &nodes[2]] {
        let link = nodes[0].link_to(peer).unwrap_or_else(|| panic!("no link from n1 to {}", peer.name));
        assert_eq!((link["up"].as_bool(), link["connects"].as_u64()), (Some(true), Some(1)), "{link}");
        assert!(
            link["streams_open"].as_u64() >= Some(1),
            "the ingress's connection to {} is a tunnel stream: {link}",
            peer.name
        );
    }
    let leader = nodes[0].leader().expect("leader");
    let victim = (1..3).find(|i| nodes[*i].id() != leader).expect("a non-leader node besides n1");
    let victim_name = nodes[victim].name.clone();
    let mut failures = Vec::new();
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    for i in 0..400 {
        if i == 100 {
            nodes[victim].kill_machine();
        }
        let t = Instant::now();
        let (code, body) = nodes[0].ingress("x.localhost", "/");
        longest = longest.max(t.elapsed());
        if code != 200 {
            failures.push(format!("#{i}: {code} {body}"));
        }
    }
    eprintln!("400 requests in {:?}, longest {:?}", start.elapsed(), longest);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    wait_for("replacement ready elsewhere", Duration::from_secs(20), || {
        let s = service_of(&nodes[0].try_status()?, "web");
        let ok = s["ready"] == 3
            && s["instances"].as_array().is_some_and(|a| a.iter().all(|i| i["node"] != victim_name.as_str()));
        seen_unless(ok, (), s.to_string())
    });
}

#[test]
fn drain_starts_each_new_instance_before_stopping_the_old_and_fails_no_request() {
    // Proves: `holdfast drain` empties a node one replica at a time, starting the new
    // instance before the old one stops: the service never has fewer ready replicas than
    // wanted, a steady request loop through another node's ingress sees no failure, and
    // `uncordon` lets the node take replicas again.
    let nodes = cluster("drain", 28000, &["a", "a", "b"]);
    // A new instance needs three passing checks (about a second) to be ready, so stopping
    // an old one before its replacement is ready would show in the ready count.
    let spec =
        demo_web("drain", 3, Some("d.localhost")).replace("timeout: 300ms}", "timeout: 300ms, healthy_threshold: 3}");
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    nodes[0].wait_ready("web", 3, Duration::from_secs(20));
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = AtomicBool::new(false);
    let running = || !stop.load(Ordering::SeqCst);
    // How many requests were answered and how many ready counts were read so far: the
    // points the test waits for instead of fixed sleeps.
    let (answered, samples) = (AtomicU64::new(0), AtomicU64::new(0));
    let (n, failures, lowest_ready, took, out) = std::thread::scope(|scope| {
        let requests = scope.spawn(|| {
            let mut failures = Vec::new();
            let mut n = 0;
            while running() {
                let (code, body) = nodes[0].ingress("d.localhost", "/");
                if code != 200 {
                    failures.push(format!("{code} {body}"));
                }
                n += 1;
                answered.fetch_add(1, Ordering::SeqCst);
            }
            (n, failures)
        });
        let ready_watch = scope.spawn(|| {
            let mut lowest = u64::MAX;
            while running() {
                if let Some(r) = nodes[0].try_status().ok().and_then(|v| service_of(&v, "web")["ready"].as_u64()) {
                    lowest = lowest.min(r);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            lowest
        });
        let (requests_going, watching) = (|| answered.load(Ordering::SeqCst), || samples.load(Ordering::SeqCst));
        wait_for("requests and the ready watch under way", Duration::from_secs(10), || {
            seen_unless(requests_going() >= 5 && watching() >= 3, (), (requests_going(), watching()))
        });
        let started = Instant::now();
        let out = nodes[0].cli(&["drain", "n3", "--timeout", "60s"]);
        let took = started.elapsed();
        // Watch on until n3 runs nothing any more, and a few ready counts after that.
        wait_for("n3 empty", Duration::from_secs(20), || {
            let n3 = nodes[0].node_view("n3")?;
            seen_unless(n3["instances"] == 0, (), n3.to_string())
        });
        let (after, seen_after) = (answered.load(Ordering::SeqCst), samples.load(Ordering::SeqCst));
        wait_for("requests and ready counts after the drain", Duration::from_secs(10), || {
            let more = (requests_going() - after, watching() - seen_after);
            seen_unless(more.0 >= 5 && more.1 >= 3, (), more)
        });
        stop.store(true, Ordering::SeqCst);
        let (n, failures) = requests.join().expect("request loop");
        (n, failures, ready_watch.join().expect("ready watch"), took, out)
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "drain: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is drained"), "{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("drain took {took:?}; {n} requests, {} failed; lowest ready count {lowest_ready}", failures.len());
    assert!(failures.is_empty(), "failed requests during the drain: {failures:?}");
    assert_eq!(lowest_ready, 3, "a replica was stopped before its replacement was ready");
    let st = nodes[0].status();
    let web = service_of(&st, "web");
    assert_eq!(web["ready"], 3);
    assert!(web["instances"].as_array().expect("instances").iter().all(|i| i["node"] != "n3"), "{web}");
    let list: Value = serde_json::from_str(&nodes[0].cli_ok(&["nodes", "--json"])).expect("json");
    let n3 = list["nodes"].as_array().expect("nodes").iter().find(|n| n["name"] == "n3").cloned().expect("n3");
    assert_eq!(
        (n3["cordoned"].as_bool(), n3["draining"].as_bool(), n3["instances"].as_u64()),
        (Some(true), Some(true), Some(0))
    );
    assert!(nodes[0].cli_ok(&["nodes"]).contains("drained"));
    // Back to normal: the next replica can land on n3 again.
    nodes[0].cli_ok(&["uncordon", "n3"]);
    nodes[0].cli_ok(&["scale", "web", "4"]);
    let st = nodes[0].wait_ready("web", 4, Duration::from_secs(20));
    assert!(service_of(&st, "web")["instances"].to_string().contains("\"n3\""), "uncordoned n3 takes a replica");
}

#[test]
fn a_machine_that_comes_back_after_its_replica_moved_does_not_start_it_again() {
    // Proves fencing by generation: a node powered off while its replica was placed
    // elsewhere restarts with an old state, and still never starts that replica: it waits
    // for the leader's word (which fences the old generation) before starting anything.
    let mut nodes = cluster("fencing", 29000, &["a", "a", "b"]);
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &demo_web("demo", 3, None));
    assert!(ok, "{out}\n{err}");
    nodes[0].wait_ready("web", 3, Duration::from_secs(20));
    let leader = nodes[0].leader().expect("leader");
    let victim = (1..3).find(|i| nodes[*i].id() != leader).expect("a follower");
    let victim_name = nodes[victim].name.clone();
    nodes[victim].kill_machine();
    wait_for("the replica replaced on the survivors", Duration::from_secs(20), || {
        let s = service_of(&nodes[0].try_status()?, "web");
        let ok = s["ready"] == 3
            && s["instances"].as_array().is_some_and(|a| a.iter().all(|i| i["node"] != victim_name.as_str()));
        seen_unless(ok, (), s.to_string())
    });
    nodes[victim].spawn(&[]);
    wait_for("the machine back and alive", Duration::from_secs(20), || {
        let n = nodes[0].node_view(&victim_name)?;
        seen_unless(n["state"] == "alive", (), n.to_string())
    });
    // The point where a start would have happened is passed once the leader has taken
    // three heartbeats from the returned machine (each answered with the leader's
    // verdicts): by then it has its state and has acted on it.
    nodes[0].wait_heartbeats(&victim_name, 3, Duration::from_secs(20));
    let log = nodes[victim].log_text();
    let starts: Vec<&str> = log.lines().filter(|l| l.contains("holdfast_agent") && l.contains("started")).collect();
    assert!(starts.is_empty(), "the returning machine started an instance of a superseded replica: {starts:?}\n{log}");
    let st = nodes[0].status();
    assert_eq!(service_of(&st, "web")["ready"], 3);
    assert!(service_of(&st, "web")["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .all(|i| i["node"] != victim_name.as_str()));
}

#[test]
fn failure_detection_timing_is_a_cluster_setting() {
    // Proves: `holdfast cluster set` changes failure detection for every node (a slower
    // down-after keeps a silent node "suspect" longer), and a nonsensical combination is
    // refused with the reason, changing nothing.
    let mut nodes = cluster("detection", 30000, &["a", "a", "b"]);
    let out = nodes[1].cli(&["cluster", "set", "--down-after", "1s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("down-after (1000ms) must be longer than suspect-after (1200ms)"), "{err}");
    let shown: Value = serde_json::from_str(&nodes[2].cli_ok(&["cluster", "settings", "--json"])).expect("json");
    assert_eq!(shown["down_after_ms"], 3000, "a refused change changes nothing");
    nodes[1].cli_ok(&["cluster", "set", "--down-after", "10s", "--suspect-after", "1s"]);
    let shown: Value = serde_json::from_str(&nodes[2].cli_ok(&["cluster", "settings", "--json"])).expect("json");
    assert_eq!((shown["down_after_ms"].as_u64(), shown["suspect_after_ms"].as_u64()), (Some(10_000), Some(1_000)));
    assert!(nodes[0].cli_ok(&["cluster", "settings"]).contains("down-after"));
    let leader = nodes[0].leader().expect("leader");
    let victim = (1..3).find(|i| nodes[*i].id() != leader).expect("a follower");
    let victim_name = nodes[victim].name.clone();
    let killed = Instant::now();
    nodes[victim].kill_machine();
    // Every state the leader shows for the silent node, with when it was seen, until it
    // is declared down: the whole history, not one look at a chosen moment.
    let mut history: Vec<(Duration, String)> = Vec::new();
    wait_for("the silent node down", Duration::from_secs(20), || {
        let n = nodes[0].node_view(&victim_name)?;
        let state = n["state"].as_str().unwrap_or("?").to_string();
        history.push((killed.elapsed(), state.clone()));
        seen_unless(state == "down", (), format!("{:?}", history.last()))
    });
    let suspect_from = history.iter().find(|(_, s)| s == "suspect").map(|(t, _)| *t).expect("seen suspect first");
    let down_at = history.last().map(|(t, _)| *t).expect("seen down");
    eprintln!("suspect seen after {suspect_from:?}, down after {down_at:?}, {} samples", history.len());
    assert!(suspect_from < Duration::from_secs(5), "suspect after 1 s of silence: {history:?}");
    let between: Vec<&(Duration, String)> =
        history.iter().filter(|(t, _)| *t >= suspect_from && *t < down_at).collect();
    assert!(between.iter().all(|(_, s)| s == "suspect"), "suspect until declared down: {history:?}");
    assert!(between.len() >= 10, "the suspect period was watched, not skipped: {history:?}");
    assert!(down_at >= Duration::from_secs(9), "declared down after {down_at:?}, before the 10 s down-after");
}

const PLACED: &str = r#"
project: shop
services:
  web:
    run: [sleep, "100000"]
    replicas: 2
    placement:
      node_selector: {disk: ssd}
  db:
    run: [sleep, "100000"]
    placement:
      anti_affinity: [web]
"#;

/// (instance, node) of every instance of `service` in a status answer.
fn placed(st: &Value, service: &str) -> Vec<(String, String)> {
    service_of(st, service)["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| (i["name"].as_str().unwrap_or("").to_string(), i["node"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// The labels `holdfast nodes --json` shows for `node`.
fn labels_of(d: &Node, node: &str) -> Value {
    d.node_view(node).expect("nodes json")["labels"].clone()
}

#[test]
fn labels_select_nodes_and_relabelling_moves_only_what_no_longer_matches() {
    // Proves: `--label` on up/join labels nodes (shown by `nodes`); a service with a
    // node_selector runs only on matching nodes and an anti-affine service never beside
    // it (as `status --json` shows); `holdfast node label` moves the replica whose node no
    // longer matches, refuses a change that would strand replicas and built-in labels; a
    // restart with the same `--label` flags labels the node again and moves nothing.
    let mut nodes = Cluster::form(
        config("labels")
            .node(&["--site", "a", "--label", "disk=ssd"])
            .node(&["--site", "a", "--label", "disk=ssd", "--label", "rack=r2"])
            .node(&["--site", "b"])
            .ports_from(31000),
    );
    let n2 = labels_of(&nodes[0], "n2");
    assert_eq!(n2["disk"], "ssd", "{n2}");
    assert_eq!(n2["rack"], "r2", "{n2}");
    assert_eq!((n2["name"].as_str(), n2["site"].as_str()), (Some("n2"), Some("a")), "built-ins: {n2}");
    assert!(labels_of(&nodes[0], "n3").get("disk").is_none());
    let table = nodes[0].cli_ok(&["nodes"]);
    assert!(table.contains("LABELS") && table.contains("disk=ssd,rack=r2"), "{table}");

    let (ok, out, err) = nodes[2].deploy_yaml("shop.yaml", PLACED);
    assert!(ok, "{out}\n{err}");
    nodes[0].wait_ready("web", 2, Duration::from_secs(20));
    let st = nodes[0].wait_ready("db", 1, Duration::from_secs(20));
    let mut web: Vec<String> = placed(&st, "web").into_iter().map(|(_, n)| n).collect();
    web.sort();
    assert_eq!(web, ["n1", "n2"], "web only on the ssd nodes, one each");
    assert_eq!(placed(&st, "db"), [("db-0".to_string(), "n3".to_string())], "db never beside web");
    assert_eq!(service_of(&st, "web")["placement"]["node_selector"]["disk"], "ssd");
    assert_eq!(service_of(&st, "db")["placement"]["anti_affinity"][0], "web");

    // n2 loses its ssd label: its web replica moves. n3 runs db (anti-affinity), so the
    // only place left is n1, shared.
    let (on_n2, _) = placed(&st, "web").into_iter().find(|(_, n)| n == "n2").expect("a web replica on n2");
    let record = nodes[1].dir.join("agent/instances").join(format!("{on_n2}.json"));
    assert!(record.exists(), "n2 runs {on_n2}");
    let out = nodes[1].cli_ok(&["node", "label", "n2", "disk-"]);
    assert!(out.contains("node n2 labels: rack=r2"), "{out}");
    assert!(out.contains(&format!("moved {on_n2}: n2 -> n1")), "{out}");
    let st = wait_for("web moved off n2 and ready", Duration::from_secs(20), || {
        let st = nodes[0].try_status()?;
        let s = service_of(&st, "web");
        let ok = s["ready"] == 2 && placed(&st, "web").iter().all(|(_, n)| n == "n1");
        seen_unless(ok, st.clone(), s.to_string())
    });
    assert_eq!(placed(&st, "db"), [("db-0".to_string(), "n3".to_string())], "db did not move");
    assert!(st["warnings"].to_string().contains("2 replicas of `web` share node n1"), "{}", st["warnings"]);
    wait_for("n2 to stop its moved instance", Duration::from_secs(15), || {
        seen_unless(!record.exists(), (), format!("{} exists", record.display()))
    });

    // Removing the last ssd label would leave web nowhere: refused, nothing changes.
    let out = nodes[0].cli(&["node", "label", "n1", "disk-"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node matches node_selector {disk=ssd}") && err.contains("nothing was changed"), "{err}");
    assert_eq!(labels_of(&nodes[0], "n1")["disk"], "ssd");
    // Built-ins cannot be changed; the bad argument is named (usage error).
    let out = nodes[0].cli(&["node", "label", "n3", "site=a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid label `site=a`: `site` is a built-in label"));

    // A running node's `--label` flags do not undo a runtime change (n2 went on with its
    // duties, two heartbeats, after it)...
    nodes[0].wait_heartbeats("n2", 2, Duration::from_secs(10));
    assert!(labels_of(&nodes[0], "n2").get("disk").is_none(), "disk stays removed while n2 runs");
    // ...but a restart with them labels the node again; nothing moves back.
    let st = nodes[1].signal_and_wait(15, Duration::from_secs(20));
    assert!(st.success(), "n2 stopped cleanly");
    nodes[1].spawn(&[]);
    wait_for("n2 labelled disk=ssd again", Duration::from_secs(20), || {
        let labels = labels_of(&nodes[0], "n2");
        seen_unless(labels["disk"] == "ssd", (), labels)
    });
    // Nothing moves back, also after n2 and the leader went on (two heartbeats).
    nodes[0].wait_heartbeats("n2", 2, Duration::from_secs(10));
    let st = nodes[0].status();
    assert!(placed(&st, "web").iter().all(|(_, n)| n == "n1"), "minimal moves: {:?}", placed(&st, "web"));
}

#[test]
fn the_cli_and_a_join_go_through_whichever_member_answers() {
    // Proves: `--server a,b,c` reaches the cluster through the first member that
    // answers, and a join token made on n1 joins through another member once n1 is dead.
    let mut c = Cluster::prepare(config("anyserver").plain(4).ports_from(46500));
    c[0].start_up();
    for i in 1..3 {
        let token = c[0].token("5m");
        c[i].start_join(&token);
    }
    c.wait_formed();
    let token = c[0].token("5m");
    let admin = std::fs::read_to_string(c[0].dir.join("admin.token")).expect("admin token").trim().to_string();
    let ca = c[0].dir.join("ca.pem").display().to_string();
    let servers = format!("127.0.0.1:1,{},{},{}", c[0].addr(), c[1].addr(), c[2].addr());
    let via_list = |c: &Cluster| c[1].cli_json(&["--server", &servers, "--token", &admin, "--ca", &ca, "nodes"]);
    let v = via_list(&c).expect("a dead first server is skipped");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{v}");
    c[0].kill_machine();
    wait_for("the CLI reaches the cluster without n1", Duration::from_secs(20), || {
        let v = via_list(&c)?;
        let n1_down =
            v["nodes"].as_array().is_some_and(|a| a.iter().any(|n| n["name"] == "n1" && n["state"] == "down"));
        seen_unless(n1_down, (), v.to_string())
    });
    // The token names n1 first; n1 is dead, so the join goes through n2 or n3.
    c[3].start_join(&token);
    wait_for("n4 joined through another member", Duration::from_secs(30), || {
        let v = c[1].nodes_json()?;
        let ok = v["nodes"].as_array().is_some_and(|a| a.iter().any(|n| n["name"] == "n4" && n["state"] == "alive"));
        seen_unless(ok, (), v.to_string())
    });
    c.finish();
}
