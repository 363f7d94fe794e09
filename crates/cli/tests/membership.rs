//! Membership that a mistake cannot break, on real processes over loopback: a node that
//! cannot start never joins, a node that dies right after joining costs no quorum, a
//! change without quorum fails in bounded time naming the unreachable voters, a removed
//! node's certificate is refused, and `cluster recover` brings a cluster that lost 4 of 5
//! nodes back to accepting changes.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn web(replicas: u32) -> String {
    demo_web("demo", replicas, None)
}

fn nodes_json(d: &Node) -> Vec<Value> {
    d.nodes_json().expect("nodes --json")["nodes"].as_array().cloned().unwrap_or_default()
}

fn role_of(d: &Node, name: &str) -> Option<String> {
    nodes_json(d).iter().find(|n| n["name"] == name).map(|n| n["role"].as_str().unwrap_or("").to_string())
}

/// Runs `holdfast join TOKEN` on node `d` with the DNS server on `dns` and returns its
/// exit status and output (the process is expected to fail).
fn join_with_dns(d: &mut Node, token: &str, name: &str, dns: &str) -> (std::process::ExitStatus, String) {
    let status = d.try_run(&["join", token, "--name", name, "--dns", dns], Duration::from_secs(30));
    assert!(!d.dir.join("node.json").exists(), "a refused join leaves no identity behind");
    (status, d.log_text())
}

#[test]
fn joins_whose_dns_port_is_taken_never_become_members() {
    // The scenario found by hand: node 1 up, then two joins whose DNS port was already
    // taken. Before, each was accepted as a voter and exited: 3 voters, 2 dead, no quorum.
    let mut c = Cluster::prepare(config("dnstaken").plain(2).ports_from(31000));
    c[0].start_up();
    let taken = std::net::UdpSocket::bind((c[1].ip.as_str(), 0)).expect("occupy a udp port");
    let dns = taken.local_addr().expect("addr").to_string();
    for name in ["n2", "n3"] {
        let token = c[0].token("5m");
        let (status, out) = join_with_dns(&mut c[1], &token, name, &dns);
        assert!(!status.success(), "the join must fail: {out}");
        assert!(out.contains(&format!("cannot listen for dns (udp) on {dns}")), "{out}");
        assert!(out.contains("nothing was changed"), "{out}");
    }
    let n1 = &c[0];
    let names: Vec<String> = nodes_json(n1).iter().map(|n| n["name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(names, ["n1"], "neither join became a member");
    // The cluster still changes, at once.
    let started = Instant::now();
    let (ok, out, err) = n1.deploy_yaml("web.yaml", &web(1));
    assert!(ok, "{out}\n{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "deploy took {:?}", started.elapsed());
}

#[test]
fn a_node_that_dies_right_after_joining_costs_no_quorum() {
    // Proves: a new member is a learner until it has been alive and caught up for
    // promote_after; one killed before that never votes, so the one-node cluster keeps its
    // quorum. A healthy one is promoted once the time has passed.
    let mut c = Cluster::prepare(config("deadjoin").plain(5).ports_from(32000));
    c[0].start_up();
    let out = c[0].cli_ok(&["cluster", "set", "--promote-after", "5s"]);
    assert!(out.contains("promote-after"), "{out}");
    // n2 and n3 join and die within a second or two of each other: as voters, the three
    // of them would have been a quorum of 3 that loses 2.
    for i in [1, 2] {
        let token = c[0].token("5m");
        c[i].start_join(&token);
    }
    for name in ["n2", "n3"] {
        assert_eq!(role_of(&c[0], name).as_deref(), Some("learner"), "{name} starts as a learner");
    }
    let why = wait_for("nodes says why n3 does not vote yet", Duration::from_secs(5), || {
        let list = nodes_json(&c[0]);
        let why =
            list.iter().find(|n| n["name"] == "n3").and_then(|n| n["not_voting_because"].as_str()).map(str::to_string);
        match why {
            Some(w) => Ok(w),
            None => Err(Value::from(list)),
        }
    });
    assert!(
        why.contains("of the 5000ms a new voter needs")
            || why == "not replicating the log yet"
            || why == "not heartbeating",
        "{why}"
    );
    c[1].kill_machine();
    c[2].kill_machine();
    // Long past promote_after: they are down learners, never voters.
    wait_for("both dead joiners declared down", Duration::from_secs(15), || {
        let list = nodes_json(&c[0]);
        let down = list.iter().filter(|n| n["name"] != "n1" && n["state"] == "down").count();
        seen_unless(down == 2, (), Value::from(list))
    });
    for name in ["n2", "n3"] {
        assert_eq!(role_of(&c[0], name).as_deref(), Some("learner"), "{name} never voted");
    }
    let started = Instant::now();
    let (ok, out, err) = c[0].deploy_yaml("web.yaml", &web(1));
    assert!(ok, "changes still commit: {out}\n{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A healthy joiner becomes a voter once alive for promote_after... with n1 that is 2
    // candidates, which make one voter; a third healthy node makes three.
    for i in [3, 4] {
        let token = c[0].token("5m");
        c[i].start_join(&token);
    }
    let promoted_in = Instant::now();
    wait_for("n4 and n5 promoted to voters", Duration::from_secs(20), || {
        let roles = (role_of(&c[0], "n4"), role_of(&c[0], "n5"));
        seen_unless(roles.0.as_deref() == Some("voter") && roles.1.as_deref() == Some("voter"), (), roles)
    });
    assert!(promoted_in.elapsed() >= Duration::from_secs(2), "promoted only after being alive a while");
}

#[test]
fn a_change_without_quorum_fails_in_bounded_time_and_names_the_voters() {
    // Proves: with 2 of 3 voters dead, deploy and scale fail within the commit timeout
    // instead of hanging, name the unreachable voters, and change nothing.
    let mut nodes = cluster("quorum", 33000, &["a", "a", "a"]);
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &web(1));
    assert!(ok, "{out}\n{err}");
    let li = nodes.leader_index(0).expect("leader is ours");
    let before = nodes[li].status()["control_plane"]["revision"].clone();
    let dead: Vec<String> = (0..3).filter(|i| *i != li).map(|i| nodes[i].name.clone()).collect();
    for i in (0..3).filter(|i| *i != li) {
        nodes[i].kill_machine();
    }
    for args in [vec!["scale", "web", "2"], vec!["--commit-timeout", "3s", "scale", "web", "3"]] {
        let started = Instant::now();
        let out = nodes[li].cli(&args);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} must fail without quorum");
        assert!(took < Duration::from_secs(15), "{args:?} took {took:?}: {err}");
        for name in &dead {
            assert!(err.contains(name.as_str()), "{args:?}: names {name}: {err}");
        }
        assert!(err.contains("unreachable"), "{err}");
        assert!(err.contains("nothing was changed") || err.contains("it is not applied"), "{err}");
    }
    let st = nodes[li].status();
    assert_eq!(st["control_plane"]["revision"], before, "nothing was applied");
    assert_eq!(service_of(&st, "web")["replicas"], 1);
    // The leader's own duties cannot commit either (the dead nodes' verdicts): status
    // says so, and `workers` names the error.
    let warnings = wait_for("status shows the failing leader duties", Duration::from_secs(20), || {
        let w = nodes[li].try_status()?["warnings"].to_string();
        seen_unless(w.contains("background loop `leader duties` failed"), w.clone(), w)
    });
    assert!(warnings.contains("needs a majority") || warnings.contains("did not commit"), "{warnings}");
    let workers = nodes[li].cli_ok(&["workers"]);
    assert!(workers.contains("leader duties") && workers.contains("failing"), "{workers}");
}

#[test]
fn a_removed_nodes_certificate_is_refused() {
    // Proves: `node rm` finishes as a state the leader drives (the CLI waits), and then
    // the removed node's own certificate no longer opens node-to-node endpoints, while a
    // member's still does.
    let nodes = cluster("removed", 34000, &["a", "a", "a"]);
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &web(3));
    assert!(ok, "{out}\n{err}");
    nodes[0].wait_ready("web", 3, Duration::from_secs(30));
    let curl_as = |who: &Node, target: &Node| curl_with_cert(who, target, "GET", "/cluster/links");
    assert_eq!(curl_as(&nodes[2], &nodes[0]).0, 200, "a member's certificate is accepted");
    let out = nodes[0].cli(&["node", "rm", "n3", "--timeout", "60s"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "node rm: {stdout}\n{err}");
    assert!(stdout.contains("node n3 removed"), "{stdout}");
    assert!(err.contains("replica(s) left on n3"), "progress is shown: {err}");
    let names: Vec<String> =
        nodes_json(&nodes[0]).iter().map(|n| n["name"].as_str().unwrap_or("").to_string()).collect();
    assert!(!names.contains(&"n3".to_string()), "{names:?}");
    let (code, body) = curl_as(&nodes[2], &nodes[0]);
    assert_eq!(code, 403, "the removed node's certificate is refused: {body}");
    assert!(body.contains("revoked"), "{body}");
    assert_eq!(curl_as(&nodes[1], &nodes[0]).0, 200, "a member's certificate is still accepted");
    // Its replica moved before it left: 3 ready on the two members.
    let st = nodes[0].wait_ready("web", 3, Duration::from_secs(30));
    assert!(service_of(&st, "web")["instances"].as_array().expect("instances").iter().all(|i| i["node"] != "n3"));
}

#[test]
fn workers_show_each_loop_and_the_leader_duties() {
    // Proves: `holdfast workers` lists every background loop with its last run; the
    // leader runs the leader duties, a follower only heartbeats.
    let nodes = cluster("workers", 35000, &["a", "a"]);
    let leader = nodes[0].leader().expect("leader");
    let (l, f) = if nodes[0].id() == leader { (&nodes[0], &nodes[1]) } else { (&nodes[1], &nodes[0]) };
    let get = |d: &Node| -> Vec<Value> {
        let v: Value = serde_json::from_str(&d.cli_ok(&["workers", "--json"])).expect("workers --json");
        v["workers"].as_array().cloned().unwrap_or_default()
    };
    let find = |ws: &[Value], name: &str| ws.iter().find(|w| w["name"] == name).cloned().unwrap_or(Value::Null);
    wait_for("both loops reported on both nodes", Duration::from_secs(10), || {
        let (a, b) = (get(l), get(f));
        let ok =
            ["leader duties", "heartbeats"].iter().all(|n| find(&a, n) != Value::Null && find(&b, n) != Value::Null);
        seen_unless(ok, (), (a, b))
    });
    let (a, b) = (get(l), get(f));
    assert_eq!(find(&a, "leader duties")["state"], "running", "{a:?}");
    assert_eq!(find(&b, "leader duties")["state"], "idle", "{b:?}");
    assert_eq!(find(&b, "leader duties")["detail"], "not the leader");
    assert_eq!(find(&b, "heartbeats")["state"], "running", "{b:?}");
    assert_eq!(find(&b, "heartbeats")["consecutive_errors"], 0);
    let table = f.cli_ok(&["workers"]);
    assert!(table.contains("WORKER") && table.contains("heartbeats"), "{table}");
}

#[test]
fn cluster_recover_after_four_of_five_nodes_are_destroyed() {
    // Proves the documented way out: 5 nodes, 4 destroyed for good; the survivor cannot
    // change anything; `cluster recover` on it (stopped) makes it the only voter; started
    // again it leads alone and deploys work.
    let mut nodes = cluster("recover", 36000, &["a", "a", "a", "b", "b"]);
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &web(1));
    assert!(ok, "{out}\n{err}");
    for d in nodes.iter_mut().skip(1) {
        d.kill_machine();
    }
    let out = nodes[0].cli(&["--commit-timeout", "2s", "scale", "web", "2"]);
    assert!(!out.status.success(), "no quorum: {}", String::from_utf8_lossy(&out.stdout));
    // Refused while running, and without confirmation.
    let out = nodes[0].cli(&["cluster", "recover", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the node is running"), "{out:?}");
    let st = nodes[0].signal_and_wait(15, Duration::from_secs(20));
    assert!(st.success() || st.code().is_some(), "stopped: {st}");
    let mut no = Command::new(holdfast_bin())
        .args(["cluster", "recover", "--data-dir"])
        .arg(&nodes[0].dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recover");
    {
        use std::io::Write;
        let mut stdin = no.stdin.take().expect("stdin");
        stdin.write_all(b"no\n").expect("answer");
    }
    let out = no.wait_with_output().expect("recover output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("not confirmed; nothing was changed"), "{err}");
    assert!(err.contains("the ONLY voter"), "explains what it does: {err}");
    let out = nodes[0].cli(&["cluster", "recover", "--yes"]);
    assert!(out.status.success(), "recover: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is now the only voter"), "{out:?}");
    nodes[0].spawn(&[]);
    let started = Instant::now();
    wait_for("n1 leads alone", Duration::from_secs(20), || {
        let role = role_of(&nodes[0], "n1");
        seen_unless(role.as_deref() == Some("leader"), (), role)
    });
    let (ok, out, err) = nodes[0].deploy_yaml("web.yaml", &web(2));
    assert!(ok, "deploy works again: {out}\n{err}");
    nodes[0].wait_ready("web", 2, Duration::from_secs(30));
    eprintln!("recovered and deployed in {:?}", started.elapsed());
    let list = wait_for("the lost nodes shown as down learners", Duration::from_secs(20), || {
        let list = nodes_json(&nodes[0]);
        let ok = list.iter().filter(|n| n["name"] != "n1").all(|n| n["state"] == "down" && n["role"] == "learner");
        seen_unless(ok, list.clone(), Value::from(list))
    });
    assert_eq!(list.len(), 5, "the lost nodes are still members until removed");
}
