//! End-to-end tests of seeing what runs, on a real three-node cluster: `holdfast logs`
//! (each line with its node, its time, `--since`, `--grep`, `--json`, and a frozen node
//! not waited for) and `holdfast top` (every instance's CPU and memory against its
//! requests, with history). Each test starts with one sentence of what it proves.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A service on every node that prints `tick <its own unix ms>` five times a second, and
/// `boom` every tenth line.
const TICKER: &str = r#"project: obs
services:
  ticker:
    run: ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); if [ $((i % 10)) -eq 0 ]; then echo boom $i; fi; echo tick $(date +%s%3N); sleep 0.2; done"]
    replicas: 3
    resources: { memory: 64Mi, cpu: 0.25 }
    placement: { spread: nodes }
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `holdfast logs ticker ARGS --json` as parsed items.
fn log_items(d: &Node, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["logs", "ticker", "--json"];
    all.extend_from_slice(args);
    d.cli_ok(&all).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn logs_carry_node_and_time_filter_by_since_and_grep_and_do_not_wait_for_a_frozen_node() {
    // Proves: every line of `holdfast logs --json` names its node and instance and is
    // dated within about a second of when the program wrote it; `--since` keeps only
    // later lines, `--grep` only matching ones, the text form prefixes `node instance`;
    // and with one node frozen, `holdfast logs` still answers within seconds with the
    // other nodes' lines and a note naming the frozen one.
    let c = cluster("observe-logs", 48800, &["a", "b", "c"]);
    let d = &c[0];
    let (ok, out, err) = d.deploy_yaml("ticker.yaml", TICKER);
    assert!(ok, "{out}\n{err}");
    d.wait_ready("ticker", 3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(2500)); // let every instance log a while
    let mark = now_ms();
    wait_for("lines after the mark from all three nodes", Duration::from_secs(15), || {
        let items = log_items(d, &["--tail", "5"]);
        let nodes: std::collections::BTreeSet<String> = items
            .iter()
            .filter(|i| i["at_ms"].as_u64().is_some_and(|t| t > mark))
            .filter_map(|i| i["node"].as_str().map(str::to_string))
            .collect();
        seen_unless(nodes.len() == 3, (), nodes)
    });

    // Every line: node, instance, time; a tick's own clock agrees with its date.
    let items = log_items(d, &["--tail", "20"]);
    let mut ticks = 0;
    for i in &items {
        let (node, instance, line) = (i["node"].as_str(), i["instance"].as_str(), i["line"].as_str());
        assert!(node.is_some_and(|n| n.starts_with('n')) && instance.is_some_and(|s| s.starts_with("ticker-")), "{i}");
        let at = i["at_ms"].as_u64().expect("dated");
        if let Some(own) = line.and_then(|l| l.strip_prefix("tick ")).and_then(|t| t.parse::<u64>().ok()) {
            ticks += 1;
            assert!(at + 50 >= own && at <= own + 1600, "dated {at}, written at {own}: {i}");
        }
    }
    assert!(ticks >= 30, "ticks from three instances: {ticks}");

    // --since: only lines dated at or after it, and there are some before it.
    let since = holdfast_agent::utc_timestamp(mark);
    let recent = log_items(d, &["--since", &since]);
    assert!(!recent.is_empty());
    assert!(recent.iter().all(|i| i["at_ms"].as_u64().is_some_and(|t| t >= mark)), "{recent:?}");
    let all = log_items(d, &["--tail", "1000"]);
    assert!(all.iter().any(|i| i["at_ms"].as_u64().is_some_and(|t| t < mark)));
    let short = log_items(d, &["--since", "1s"]);
    assert!(short.len() < all.len(), "--since 1s: {} of {} lines", short.len(), all.len());

    // --grep: only matching lines, from every node.
    let booms = log_items(d, &["--grep", "^boom [0-9]+$", "--tail", "3"]);
    assert!(booms.len() >= 3 && booms.iter().all(|i| i["line"].as_str().is_some_and(|l| l.starts_with("boom "))));
    let bad = d.cli(&["logs", "ticker", "--grep", "(unclosed"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a regular expression"));

    // Text: `node instance | line`, and -t puts the time first.
    let text = d.cli_ok(&["logs", "ticker", "--tail", "2", "-t"]);
    let line = text.lines().find(|l| l.contains(" | tick ")).unwrap_or_else(|| panic!("{text}"));
    let (stamp, rest) = line.split_once(' ').expect("time first");
    assert!(holdfast_agent::logs::parse_utc_timestamp(stamp).is_some(), "{line}");
    assert!(rest.starts_with('n') && rest.contains(" ticker-"), "{line}");

    // Freeze n3: the answer comes within seconds, names n3, and has n1's and n2's lines.
    let frozen = c[2].pid();
    stop_and_wait(frozen);
    let started = Instant::now();
    let out = d.cli(&["logs", "ticker", "--tail", "3"]);
    let took = started.elapsed();
    signal(frozen, libc_sig::CONT);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(8), "logs took {took:?} with a frozen node");
    assert!(stderr.contains("n3") && stderr.contains("unavailable"), "a note names the frozen node: {stderr}");
    assert!(stdout.contains("n1 ticker-") && stdout.contains("n2 ticker-"), "{stdout}");
    c.finish();
}

#[test]
fn top_shows_every_instance_against_its_requests_with_history() {
    // Proves: `holdfast top --json` lists each instance of a service on its node with
    // memory and CPU read now, the service's requests, and samples of history; the table
    // shows per-service, per-node and per-instance rows; `--service` and `--node` filter.
    let c = cluster("observe-top", 49100, &["a", "b"]);
    let d = &c[0];
    let spec = TICKER.replace("replicas: 3", "replicas: 2");
    let (ok, out, err) = d.deploy_yaml("ticker.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    d.wait_ready("ticker", 2, Duration::from_secs(30));
    // The sampler samples at start and every 10 s: wait for two samples of each.
    let r = wait_for("two usage samples of each instance", Duration::from_secs(40), || {
        let r = d.cli_json(&["top"]).unwrap_or(Value::Null);
        let inst: Vec<Value> = r["instances"]
            .as_array()
            .map(|a| a.iter().filter(|i| i["service"] == "ticker").cloned().collect())
            .unwrap_or_default();
        let ok = inst.len() == 2 && inst.iter().all(|i| i["cpu_avg_millis"].as_u64().is_some());
        seen_unless(ok, r.clone(), r)
    });
    let inst: Vec<&Value> =
        r["instances"].as_array().expect("instances").iter().filter(|i| i["service"] == "ticker").collect();
    let nodes: std::collections::BTreeSet<&str> = inst.iter().filter_map(|i| i["node"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "{inst:?}");
    for i in &inst {
        assert_eq!(i["project"], "obs");
        assert_eq!(i["cpu_request_millis"], 250);
        assert_eq!(i["memory_request_bytes"], 64 << 20);
        let mem = i["memory_bytes"].as_u64().expect("memory now");
        assert!(mem > 100 << 10 && mem < 64 << 20, "memory {mem}");
        assert!(i["cpu_millis"].as_u64().is_some_and(|c| c < 1000), "{i}");
        assert!(i["memory_peak_bytes"].as_u64().is_some_and(|p| p >= 100 << 10), "{i}");
    }
    assert_eq!(r["interval_ms"], 10_000);
    assert_eq!(r["window_ms"], 3_600_000);
    // The history through the API, as the dashboard reads it.
    let admin = std::fs::read_to_string(d.dir.join("admin.token")).expect("admin token");
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", "--cacert"])
        .arg(d.dir.join("ca.pem"))
        .args(["-H", &format!("Authorization: Bearer {}", admin.trim())])
        .arg(format!("https://{}/v1/usage?service=ticker&samples=360", d.addr()))
        .output()
        .expect("curl");
    let hist: Value = serde_json::from_slice(&out.stdout).expect("usage json");
    for i in hist["instances"].as_array().expect("instances") {
        let samples = i["samples"].as_array().expect("samples");
        assert!(samples.len() >= 2, "{i}");
        let times: Vec<u64> = samples.iter().filter_map(|s| s["at_ms"].as_u64()).collect();
        assert!(times.windows(2).all(|w| w[1] >= w[0] + 9_000), "10 s apart: {times:?}");
        assert!(samples.iter().all(|s| s["memory_bytes"].as_u64().is_some()), "{i}");
    }
    let text = d.cli_ok(&["top", "--sort", "memory"]);
    assert!(text.contains("SERVICE") && text.contains("MEM LIMIT") && text.contains("ticker-0"), "{text}");
    assert!(text.contains("64.0Mi") && text.contains("250m"), "{text}");
    let one = d.cli_json(&["top", "--node", "n2"]).expect("top --node");
    let list = one["instances"].as_array().expect("instances");
    assert!(!list.is_empty() && list.iter().all(|i| i["node"] == "n2"), "{one}");
    let none = d.cli_ok(&["top", "--service", "nope"]);
    assert!(none.contains("no instances"), "{none}");
    c.finish();
}

/// `holdfast events --json` on node `d`: (kind, subject, message) of every event.
fn events_of(d: &Node) -> Vec<(String, String, String)> {
    let v = d.cli_json(&["events", "--limit", "5000"]).unwrap_or(Value::Null);
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("kind"), s("subject"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the events have one of `kind` about `subject`.
fn has(events: &[(String, String, String)], kind: &str, subject: &str) -> bool {
    events.iter().any(|(k, s, _)| k == kind && s == subject)
}

#[test]
fn oom_kill_node_kill_and_drain_are_events_on_every_node_and_survive_the_leader() {
    // Proves: an OOM kill (with its limit and peak, and counted in /metrics), a drain and
    // a killed node each appear in `holdfast events` asked of every node, the leader saw
    // the dead node turn suspect first, and after the leader is killed too every survivor
    // still tells all three.
    if std::fs::metadata("/sys/fs/cgroup/memory/memory.limit_in_bytes").is_err()
        && std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_err()
    {
        assert!(std::env::var("CI").is_err(), "CI machines must offer the memory cgroup");
        eprintln!("SKIPPED: no memory cgroup controller on this machine");
        return;
    }
    let mut c = cluster("observe-events", 49400, &["a", "b", "c", "d"]);
    let leader = c.leader_index(0).expect("a leader");
    let others: Vec<usize> = (0..4).filter(|i| *i != leader).collect();
    let (oom, drained, killed) = (others[0], others[1], others[2]);
    let name = |i: usize| format!("n{}", i + 1);
    let spec = format!(
        "{}  hog:\n    run: [tail, /dev/zero]\n    resources: {{memory: 32Mi}}\n    restart: never\n    placement: {{node_selector: {{name: {}}}}}\n",
        demo_web("obs", 3, None),
        name(oom)
    );
    let path = c[leader].write_spec("obs.yaml", &spec);
    c[leader].cli_ok(&["deploy", path.to_str().expect("utf8"), "--no-wait"]);
    c[leader].wait_ready("web", 3, Duration::from_secs(30));
    let d = &c[leader];
    wait_for("hog-0 OOM-killed", Duration::from_secs(30), || {
        let i = d.instances("hog").pop().ok_or("no hog-0")?;
        seen_unless(i["last_exit"]["oom_killed"] == true, (), i.to_string())
    });
    // The OOM counter on the hog's node, and its links' round trips to the web replicas'
    // nodes.
    let admin = std::fs::read_to_string(c[0].dir.join("admin.token")).expect("admin token");
    let scrape = |d: &Node| -> String {
        let metrics = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", "--cacert"])
            .arg(d.dir.join("ca.pem"))
            .args(["-H", &format!("Authorization: Bearer {}", admin.trim())])
            .arg(format!("https://{}/metrics", d.addr()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&metrics.stdout).into_owned()
    };
    let text = scrape(&c[oom]);
    let line = text
        .lines()
        .find(|l| l.starts_with("holdfast_instance_oom_kills_total{") && l.contains("instance=\"hog-0\""))
        .unwrap_or_else(|| panic!("no OOM counter for hog-0:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    let rtt = wait_for("a link round trip in /metrics", Duration::from_secs(10), || {
        let text = scrape(&c[oom]);
        let rtt: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("holdfast_link_round_trip_seconds{"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
            .collect();
        seen_unless(!rtt.is_empty(), rtt.clone(), "none yet")
    });
    assert!(rtt.iter().all(|s| *s > 0.0 && *s < 0.5), "{rtt:?}");

    c[leader].cli_ok(&["drain", &name(drained)]);
    c[killed].kill_machine();
    let dead = format!("node {}", name(killed));
    wait_for("the dead node's down event", Duration::from_secs(20), || {
        let ev = events_of(&c[leader]);
        seen_unless(has(&ev, "node-down", &dead), (), format!("{} events", ev.len()))
    });
    let hog = "service hog".to_string();
    let draining = format!("node {}", name(drained));
    for i in [leader, oom, drained] {
        let ev = events_of(&c[i]);
        assert!(has(&ev, "oom-killed", &hog), "n{}: {ev:?}", i + 1);
        let oom_msg = ev.iter().find(|(k, _, _)| k == "oom-killed").map(|e| e.2.clone()).unwrap_or_default();
        assert!(oom_msg.contains("limit 32") && oom_msg.contains("peak"), "{oom_msg}");
        assert!(has(&ev, "node-draining", &draining), "n{}: {ev:?}", i + 1);
        assert!(has(&ev, "node-down", &dead), "n{}: {ev:?}", i + 1);
        assert!(has(&ev, "node-suspect", &dead), "the leader's suspicion, gathered: n{}: {ev:?}", i + 1);
    }

    let st = c[leader].cli_ok(&["status"]);
    assert!(st.contains("recent events:") && st.contains("oom-killed"), "{st}");

    c[leader].kill_machine();
    for i in [oom, drained] {
        let ev = wait_for("events without the leader", Duration::from_secs(15), || {
            let ev = events_of(&c[i]);
            seen_unless(!ev.is_empty(), ev.clone(), "no answer")
        });
        assert!(has(&ev, "oom-killed", &hog), "n{}: {ev:?}", i + 1);
        assert!(has(&ev, "node-draining", &draining), "n{}: {ev:?}", i + 1);
        assert!(has(&ev, "node-down", &dead), "n{}: {ev:?}", i + 1);
    }
    c.finish();
}
