//! End-to-end tests of one node: real `holdfast up` processes, real workloads, the real
//! CLI and curl. Each test starts with one sentence of what it proves.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn web() -> String {
    demo_web("demo", 3, Some("demo.localhost"))
}

fn pid_of(i: &Value) -> u64 {
    i["pid"].as_u64().unwrap_or_else(|| panic!("instance has no pid: {i}"))
}

/// The pids of `service`'s instances in a status answer, in instance order.
fn pids_of(st: &Value, service: &str) -> Vec<u64> {
    service_of(st, service)["instances"].as_array().map(|a| a.iter().map(pid_of).collect()).unwrap_or_default()
}

fn listen_port(i: &Value) -> u64 {
    i["ports"]["http"].as_u64().unwrap_or_else(|| panic!("instance has no http port: {i}"))
}

#[test]
fn deploy_answers_on_every_instance_and_kill9_is_restarted_with_backoff() {
    // Proves: deploy brings every replica to ready, each answers on its own port, and an
    // instance killed with SIGKILL comes back (new pid, restart counted in status) after
    // a backoff that doubles when it dies again soon after its restart.
    let c = one_node("kill9", 21000);
    let d = &c[0];
    let (ok, out, err) = d.deploy_yaml("web.yaml", &web());
    assert!(ok, "deploy failed:\n{out}\n{err}\n{}", d.log_text());
    assert!(out.contains("+ service web"), "plan shows the creation: {out}");
    assert!(out.contains("All 1 service(s) ready"), "{out}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let instances = service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default();
    let mut ports = Vec::new();
    for i in &instances {
        let body = d.curl_local(listen_port(i), "/").unwrap_or_else(|| panic!("{} does not answer", i["name"]));
        assert!(body.contains(&format!("from {}", i["name"].as_str().unwrap_or("?"))), "{body}");
        ports.push(listen_port(i));
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each instance has its own port");

    let web1 = |seen_pid: &Value, restarts: u64| {
        wait_for("web-1 restarted with a new pid", Duration::from_secs(20), || {
            let i = d.instances("web").into_iter().find(|i| i["name"] == "web-1").ok_or("no web-1")?;
            let ok = i["pid"].is_u64() && i["pid"] != *seen_pid && i["restarts"].as_u64() >= Some(restarts);
            seen_unless(ok, i.clone(), i.to_string())
        })
    };
    let victim = instances[1].clone();
    signal(pid_of(&victim) as u32, libc_sig::KILL);
    let back = web1(&victim["pid"], 1);
    // Killed again right after its restart (well inside the 10 s a run must last to reset
    // the count): the next restart waits twice as long.
    signal(pid_of(&back) as u32, libc_sig::KILL);
    let again = web1(&back["pid"], 2);
    let log = std::fs::read_to_string(d.dir.join("agent/logs/web-1.log")).expect("web-1's log");
    let delays: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(delays, ["200ms", "400ms"], "restart backoff doubles (the agent's 200 ms base): {log}");
    let ready = wait_for("web-1 ready after its restarts", Duration::from_secs(20), || {
        let i = d.instances("web").into_iter().find(|i| i["name"] == "web-1").ok_or("no web-1")?;
        seen_unless(i["ready"] == true && i["pid"] == again["pid"], i.clone(), i.to_string())
    });
    assert!(d.curl_local(listen_port(&ready), "/").is_some(), "restarted instance answers");
    assert_eq!(ready["restarts"], 2, "{ready}");
    let text = d.cli_ok(&["status"]);
    assert!(text.contains("web-1"), "{text}");
    assert!(text.contains("killed by SIGKILL"), "status shows the kill: {text}");
}

#[test]
fn failing_health_check_makes_an_instance_unready_until_it_recovers() {
    // Proves: readiness follows the health check both ways, without restarting the process.
    let c = one_node("health", 21100);
    let d = &c[0];
    let flag = d.home.join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let yaml = format!(
        "services:\n  probe:\n    run: [sleep, '1000']\n    health:\n      exec: [test, -f, '{}']\n      interval: 200ms\n      timeout: 200ms\n      unhealthy_threshold: 2\n",
        flag.display()
    );
    let (ok, out, err) = d.deploy_yaml("probe.yaml", &yaml);
    assert!(ok, "{out}\n{err}");
    let pid = pid_of(&d.wait_ready("probe", 1, Duration::from_secs(10))["services"][0]["instances"][0]);
    std::fs::remove_file(&flag).expect("rm flag");
    let unready = wait_for("probe-0 unready", Duration::from_secs(5), || {
        let i = d.instances("probe").pop().ok_or("no probe-0")?;
        seen_unless(i["state"] == "unready", i.clone(), i.to_string())
    });
    assert_eq!(pid_of(&unready), pid, "an unhealthy instance is not restarted");
    assert!(unready["last_health_error"].is_string(), "{unready}");
    assert!(d.cli_ok(&["status"]).contains("0/1"));
    std::fs::write(&flag, "").expect("flag");
    let st = d.wait_ready("probe", 1, Duration::from_secs(5));
    assert_eq!(pid_of(&service_of(&st, "probe")["instances"][0]), pid);
}

#[test]
fn bad_specs_give_precise_errors_and_change_nothing() {
    // Proves: syntax errors, unknown fields, bad units and routes to missing services are
    // reported with file:line:column and leave the running services untouched.
    let c = one_node("badspecs", 21200);
    let d = &c[0];
    let (ok, _, err) = d.deploy_yaml("web.yaml", &web());
    assert!(ok, "{err}");
    let before = d.wait_ready("web", 3, Duration::from_secs(20));
    let pids: Vec<Value> = service_of(&before, "web")["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| i["pid"].clone())
        .collect();
    let revision = before["control_plane"]["revision"].clone();

    let cases: &[(&str, &str, &[&str])] = &[
        ("syntax.yaml", "services:\n  web:\n    run: [unclosed\n", &["syntax.yaml:"]),
        (
            "unknown.yaml",
            "services:\n  web:\n    run: [sleep, '1']\n    replica: 2\n",
            &["unknown.yaml:4:5", "replica", "did you mean `replicas`"],
        ),
        (
            "unit.yaml",
            "services:\n  web:\n    run: [sleep, '1']\n    resources:\n      memory: 256MB\n",
            &["unit.yaml:5:", "services.web.resources.memory", "256MB", "Mi"],
        ),
        (
            "route.yaml",
            "services:\n  web:\n    run: [sleep, '1']\n    ports: {http: 80}\nroutes:\n  - {host: a.example, service: wbe}\n",
            &["route.yaml:6:", "wbe", "did you mean `web`"],
        ),
    ];
    for (file, yaml, expect) in cases {
        let (ok, out, err) = d.deploy_yaml(file, &format!("project: demo\n{yaml}"));
        assert!(!ok, "{file} must be refused:\n{out}");
        // The project line shifts every line by one.
        for e in *expect {
            let e = shift_line(e);
            assert!(err.contains(&e), "{file}: expected `{e}` in:\n{err}");
        }
        assert!(err.contains("nothing was changed"), "{err}");
    }
    let after = d.status();
    assert_eq!(after["control_plane"]["revision"], revision, "no change was applied");
    let pids_after: Vec<Value> = d.instances("web").iter().map(|i| i["pid"].clone()).collect();
    assert_eq!(pids_after, pids, "running instances untouched");

    // A usage error exits with 2, a failed command with 1.
    assert_eq!(d.cli(&["scale", "web"]).status.code(), Some(2));
    let unknown = d.cli(&["restart", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown service `nope` (services: web)"));
}

/// `file.yaml:4:5` -> `file.yaml:5:5` (tests prepend a `project:` line).
fn shift_line(e: &str) -> String {
    let parts: Vec<&str> = e.split(':').collect();
    if parts.len() >= 2 {
        if let Ok(n) = parts[1].parse::<u32>() {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[1] = (n + 1).to_string();
            return p.join(":");
        }
    }
    e.to_string()
}

#[test]
fn daemon_kill9_and_restart_readopts_running_workloads() {
    // Proves: a crashed daemon does not take its workloads down; the next one re-adopts
    // the same pids, tracks their health again, and deploys work again.
    let mut c = one_node("readopt", 21300);
    let d = &mut c[0];
    let (ok, _, err) = d.deploy_yaml("web.yaml", &web());
    assert!(ok, "{err}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let mut pids = pids_of(&st, "web");
    pids.sort();
    d.kill9();
    for p in &pids {
        assert!(alive(*p as u32), "workload {p} survived the daemon's death");
    }
    d.spawn(&[]);
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let instances = service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default();
    let mut again: Vec<u64> = instances.iter().map(pid_of).collect();
    again.sort();
    assert_eq!(again, pids, "same processes after the restart");
    assert!(instances.iter().all(|i| i["adopted"] == true), "{instances:?}");
    // health is tracked again: kill one and it is restarted by the new daemon
    signal(pids[0] as u32, libc_sig::KILL);
    wait_for("a replacement for the killed adopted instance", Duration::from_secs(20), || {
        let s = service_of(&d.try_status()?, "web");
        let ok = s["ready"] == 3 && s["instances"].as_array().is_some_and(|a| a.iter().all(|i| i["pid"] != pids[0]));
        seen_unless(ok, (), s.to_string())
    });
    let (ok, out, err) = d.deploy_yaml("web.yaml", &demo_web("demo", 4, Some("demo.localhost")));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("replicas: 3 -> 4"), "{out}");
    d.wait_ready("web", 4, Duration::from_secs(20));
}

#[test]
fn stopping_the_node_leaves_no_process_behind() {
    // Proves: SIGTERM on `holdfast up` stops every workload, including children that
    // ignore SIGTERM, and the daemon exits 0.
    let mut c = one_node("stopping", 21400);
    let d = &mut c[0];
    let yaml = "services:\n  stubborn:\n    run: \"trap '' TERM; sleep 1000 & sleep 1000 & wait\"\n    replicas: 2\n    stop: {grace: 1s}\n";
    let (ok, out, err) = d.deploy_yaml("s.yaml", yaml);
    assert!(ok, "{out}\n{err}");
    let st = d.wait_ready("stubborn", 2, Duration::from_secs(10));
    let pgids: Vec<u32> = service_of(&st, "stubborn")["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| pid_of(i) as u32)
        .collect();
    wait_for("children forked", Duration::from_secs(5), || {
        let groups: Vec<Vec<u32>> = pgids.iter().map(|g| pids_in_group(*g)).collect();
        seen_unless(groups.iter().all(|g| g.len() >= 3), (), groups)
    });
    let daemon_pid = d.pid();
    let status = d.signal_and_wait(15, Duration::from_secs(20));
    assert!(status.success(), "holdfast up exits 0 on SIGTERM: {status}");
    for g in &pgids {
        assert!(pids_in_group(*g).is_empty(), "process group {g} still has {:?}", pids_in_group(*g));
    }
    assert!(!alive(daemon_pid), "daemon gone");
}

#[test]
fn sigusr2_reexecutes_in_place_without_restarting_workloads() {
    // Proves: the documented in-place upgrade keeps the daemon's pid and every workload.
    let c = one_node("reexec", 21500);
    let d = &c[0];
    let (ok, _, err) = d.deploy_yaml("web.yaml", &web());
    assert!(ok, "{err}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let pids = pids_of(&st, "web");
    let daemon_pid = d.pid();
    signal(daemon_pid, libc_sig::USR2);
    wait_for("the re-executed daemon answering", Duration::from_secs(20), || {
        let st = d.try_status()?;
        let ok = st["node"]["pid"].as_u64() == Some(u64::from(daemon_pid)) && service_of(&st, "web")["ready"] == 3;
        seen_unless(ok, (), format!("pid {}, web ready {}", st["node"]["pid"], service_of(&st, "web")["ready"]))
    });
    assert!(d.log_text().contains("SIGUSR2"), "log mentions the re-exec");
    let again: Vec<u64> = d.instances("web").iter().map(pid_of).collect();
    assert_eq!(again, pids, "workloads kept across re-exec");
    // the CLI form of the same
    let out = d.cli_ok(&["node", "reexec"]);
    assert!(out.contains("pid"), "{out}");
    let again: Vec<u64> = pids_of(&d.wait_ready("web", 3, Duration::from_secs(20)), "web");
    assert_eq!(again, pids);
}

#[test]
fn memory_limit_overrun_is_reported_as_oom_kill() {
    // Proves: an instance that exceeds its memory limit is killed by the kernel and the
    // status says it ran out of memory.
    if std::fs::metadata("/sys/fs/cgroup/memory/memory.limit_in_bytes").is_err()
        && std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_err()
    {
        assert!(std::env::var("CI").is_err(), "CI machines must offer the memory cgroup");
        eprintln!("SKIPPED: no memory cgroup controller on this machine");
        return;
    }
    let c = one_node("oom", 21600);
    let d = &c[0];
    let yaml = "services:\n  hog:\n    run: [tail, /dev/zero]\n    resources: {memory: 32Mi}\n    restart: never\n";
    let path = d.write_spec("hog.yaml", yaml);
    d.cli_ok(&["deploy", path.to_str().expect("utf8"), "--no-wait"]);
    let i = wait_for("hog-0 OOM-killed", Duration::from_secs(30), || {
        let i = d.instances("hog").pop().ok_or("no hog-0")?;
        seen_unless(i["last_exit"]["oom_killed"] == true, i.clone(), i.to_string())
    });
    let text = d.cli_ok(&["status"]);
    assert!(text.to_lowercase().contains("out of memory"), "status tells the OOM kill: {text}\n{i}");
    // The history has it too, with the limit.
    let events = wait_for("the OOM kill in the events", Duration::from_secs(10), || {
        let text = d.cli_ok(&["events"]);
        seen_unless(text.contains("oom-killed"), text.clone(), text.clone())
    });
    assert!(events.contains("hog-0 on") && events.contains("out of memory: limit"), "{events}");
}

#[test]
fn diff_shows_the_plan_without_applying_and_rm_scale_restart_work() {
    // Proves: diff is read-only; scale keeps running instances; restart replaces them;
    // rm removes the service and its route.
    let c = one_node("diff", 21700);
    let d = &c[0];
    let spec = d.write_spec("web.yaml", &web());
    let spec = spec.to_str().expect("utf8");
    let out = d.cli_ok(&["diff", spec]);
    assert!(out.contains("+ service web"), "{out}");
    assert_eq!(d.status()["services"].as_array().map(|a| a.len()), Some(0), "diff changed nothing");
    d.cli_ok(&["deploy", spec]);
    let out = d.cli_ok(&["diff", spec]);
    assert!(out.contains("No changes."), "{out}");
    let json: Value = serde_json::from_str(&d.cli_ok(&["diff", spec, "--json"])).expect("diff --json");
    assert_eq!(json["applied"], false);

    let pids: Vec<u64> = pids_of(&d.wait_ready("web", 3, Duration::from_secs(20)), "web");
    d.cli_ok(&["scale", "web", "2"]);
    let kept: Vec<u64> = pids_of(&d.wait_ready("web", 2, Duration::from_secs(20)), "web");
    assert_eq!(kept, pids[..2].to_vec(), "scaling down keeps the first replicas running");
    wait_for("web-2 stopped", Duration::from_secs(10), || seen_unless(!alive(pids[2] as u32), (), "web-2 alive"));

    d.cli_ok(&["restart", "web"]);
    let st = d.wait_ready("web", 2, Duration::from_secs(30));
    let new: Vec<u64> = pids_of(&st, "web");
    assert!(new.iter().all(|p| !pids.contains(p)), "restart replaced every instance: {new:?} vs {pids:?}");

    let logs = d.cli_ok(&["logs", "web", "--tail", "5"]);
    assert!(logs.contains("web-0 | "), "logs are prefixed by instance: {logs}");

    d.cli_ok(&["rm", "web"]);
    let st = d.status();
    assert_eq!(st["services"].as_array().map(|a| a.len()), Some(0));
    assert_eq!(st["routes"].as_array().map(|a| a.len()), Some(0));
    wait_for("every web process gone", Duration::from_secs(15), || {
        let left: Vec<&u64> = new.iter().filter(|p| alive(**p as u32)).collect();
        seen_unless(left.is_empty(), (), left)
    });
}

#[test]
fn the_api_requires_the_admin_token_and_node_routes_a_cluster_certificate() {
    // Proves: without the token (or with a wrong one) the API refuses, with a clear message;
    // node-to-node routes refuse clients without a cluster certificate; only TLS is spoken.
    let c = one_node("auth", 21800);
    let d = &c[0];
    let url = format!("https://{}/v1/status", d.addr());
    let ca = d.dir.join("ca.pem");
    let ca = ca.to_str().expect("utf8");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca, "-H", "Authorization: Bearer wrong", &url])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("token was refused"));
    let server = format!("https://{}", d.addr());
    let out = std::process::Command::new(holdfast_bin())
        .args(["status", "--server", &server, "--token", "wrong", "--ca", ca])
        .output()
        .expect("holdfast");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token was refused"));
    let token = std::fs::read_to_string(d.dir.join("admin.token")).expect("token");
    let out = std::process::Command::new(holdfast_bin())
        .args(["status", "--server", &server, "--token", token.trim(), "--ca", ca])
        .output()
        .expect("holdfast");
    assert!(out.status.success());
    // Node-to-node endpoints refuse a client without a cluster certificate.
    let raft = format!("https://{}/raft/vote", d.addr());
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca, "-X", "POST", "-d", "{}", "-w", " %{http_code}", &raft])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 401") && text.contains("cluster certificate is required"), "{text}");
    // Only TLS is spoken: /healthz answers 200 over TLS, and the same request in plain
    // HTTP on the same port gets no HTTP answer at all: the connection is closed, at most
    // after a TLS alert record (content type 21).
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", &format!("https://{}/healthz", d.addr())])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "the port answers over TLS");
    let reply = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(d.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).expect("the server closes the connection (no read timeout)");
        reply
    };
    assert!(reply.is_empty() || reply[0] == 21, "plain HTTP got an answer that is not a TLS alert: {reply:?}");
    assert!(!reply.starts_with(b"HTTP/"), "plain HTTP was answered");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.dir.join("admin.token")).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
