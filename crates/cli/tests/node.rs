//! End-to-end tests of one node: real `holdfast up` processes, real workloads, the real
//! CLI and curl. Each test starts with one sentence of what it proves.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WEB: &str = r#"
project: demo
services:
  web:
    run: ["holdfast-demo-web"]
    replicas: 3
    ports: {http: 8080}
    health:
      http: /healthz
      interval: 300ms
      timeout: 300ms
routes:
  - {host: demo.localhost, service: web}
"#;

fn pid_of(i: &Value) -> u64 {
    i["pid"].as_u64().unwrap_or_else(|| panic!("instance has no pid: {i}"))
}

fn listen_port(i: &Value) -> u64 {
    i["ports"]["http"].as_u64().unwrap_or_else(|| panic!("instance has no http port: {i}"))
}

#[test]
fn deploy_answers_on_every_instance_and_kill9_is_restarted_with_backoff() {
    // Proves: deploy brings every replica to ready, each answers on its own port, and an
    // instance killed with SIGKILL comes back (new pid, restart counted in status).
    let d = Daemon::start(21000);
    let (ok, out, err) = d.deploy_yaml("web.yaml", WEB);
    assert!(ok, "deploy failed:\n{out}\n{err}\n{}", d.log_text());
    assert!(out.contains("+ service web"), "plan shows the creation: {out}");
    assert!(out.contains("All 1 service(s) ready"), "{out}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let instances = service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default();
    let mut ports = Vec::new();
    for i in &instances {
        let body = curl(listen_port(i), "/").unwrap_or_else(|| panic!("{} does not answer", i["name"]));
        assert!(body.contains(&format!("from {}", i["name"].as_str().unwrap_or("?"))), "{body}");
        ports.push(listen_port(i));
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each instance has its own port");

    let victim = instances[1].clone();
    kill(pid_of(&victim) as u32, 9);
    let back = wait_for("web-1 restarted and ready", Duration::from_secs(20), || {
        let i = d.instances("web").into_iter().find(|i| i["name"] == "web-1")?;
        (i["ready"] == true && i["pid"] != victim["pid"] && i["restarts"].as_u64()? >= 1).then_some(i)
    });
    assert!(curl(listen_port(&back), "/").is_some(), "restarted instance answers");
    let text = d.cli_ok(&["status"]);
    assert!(text.contains("web-1"), "{text}");
    assert!(text.contains("killed by SIGKILL") || text.contains("SIGKILL"), "status shows the kill: {text}");
}

#[test]
fn failing_health_check_makes_an_instance_unready_until_it_recovers() {
    // Proves: readiness follows the health check both ways, without restarting the process.
    let d = Daemon::start(21100);
    let flag = d.dir.parent().expect("parent").join("healthy");
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
        let i = d.instances("probe").pop()?;
        (i["state"] == "unready").then_some(i)
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
    let d = Daemon::start(21200);
    let (ok, _, err) = d.deploy_yaml("web.yaml", WEB);
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
    let mut d = Daemon::start(21300);
    let (ok, _, err) = d.deploy_yaml("web.yaml", WEB);
    assert!(ok, "{err}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let mut pids: Vec<u64> =
        service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default().iter().map(pid_of).collect();
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
    kill(pids[0] as u32, 9);
    wait_for("a replacement for the killed adopted instance", Duration::from_secs(20), || {
        let st = d.try_status()?;
        let s = service_of(&st, "web");
        let ok = s["ready"] == 3 && s["instances"].as_array()?.iter().all(|i| i["pid"] != pids[0]);
        ok.then_some(())
    });
    let (ok, out, err) = d.deploy_yaml("web.yaml", &WEB.replace("replicas: 3", "replicas: 4"));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("replicas: 3 -> 4"), "{out}");
    d.wait_ready("web", 4, Duration::from_secs(20));
}

#[test]
fn stopping_the_node_leaves_no_process_behind() {
    // Proves: SIGTERM on `holdfast up` stops every workload, including children that
    // ignore SIGTERM, and the daemon exits 0.
    let mut d = Daemon::start(21400);
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
        pgids.iter().all(|g| pids_in_group(*g).len() >= 3).then_some(())
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
    let d = Daemon::start(21500);
    let (ok, _, err) = d.deploy_yaml("web.yaml", WEB);
    assert!(ok, "{err}");
    let st = d.wait_ready("web", 3, Duration::from_secs(20));
    let pids: Vec<u64> =
        service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default().iter().map(pid_of).collect();
    let daemon_pid = d.pid();
    kill(daemon_pid, 12);
    wait_for("the re-executed daemon answering", Duration::from_secs(20), || {
        let st = d.try_status()?;
        (st["node"]["pid"].as_u64()? == daemon_pid as u64 && service_of(&st, "web")["ready"] == 3).then_some(())
    });
    assert!(d.log_text().contains("SIGUSR2"), "log mentions the re-exec");
    let again: Vec<u64> = d.instances("web").iter().map(pid_of).collect();
    assert_eq!(again, pids, "workloads kept across re-exec");
    // the CLI form of the same
    let out = d.cli_ok(&["node", "reexec"]);
    assert!(out.contains("pid"), "{out}");
    let again: Vec<u64> = d.wait_ready("web", 3, Duration::from_secs(20))["services"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(pid_of)
        .collect();
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
    let d = Daemon::start(21600);
    let yaml = "services:\n  hog:\n    run: [tail, /dev/zero]\n    resources: {memory: 32Mi}\n    restart: never\n";
    let path = d.write_spec("hog.yaml", yaml);
    d.cli_ok(&["deploy", path.to_str().expect("utf8"), "--no-wait"]);
    let i = wait_for("hog-0 OOM-killed", Duration::from_secs(30), || {
        let i = d.instances("hog").pop()?;
        (i["last_exit"]["oom_killed"] == true).then_some(i)
    });
    let text = d.cli_ok(&["status"]);
    assert!(text.to_lowercase().contains("out of memory"), "status tells the OOM kill: {text}\n{i}");
}

#[test]
fn diff_shows_the_plan_without_applying_and_rm_scale_restart_work() {
    // Proves: diff is read-only; scale keeps running instances; restart replaces them;
    // rm removes the service and its route.
    let d = Daemon::start(21700);
    let spec = d.write_spec("web.yaml", WEB);
    let spec = spec.to_str().expect("utf8");
    let out = d.cli_ok(&["diff", spec]);
    assert!(out.contains("+ service web"), "{out}");
    assert_eq!(d.status()["services"].as_array().map(|a| a.len()), Some(0), "diff changed nothing");
    d.cli_ok(&["deploy", spec]);
    let out = d.cli_ok(&["diff", spec]);
    assert!(out.contains("No changes."), "{out}");
    let json: Value = serde_json::from_str(&d.cli_ok(&["diff", spec, "--json"])).expect("diff --json");
    assert_eq!(json["applied"], false);

    let pids: Vec<u64> = d.wait_ready("web", 3, Duration::from_secs(20))["services"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(pid_of)
        .collect();
    d.cli_ok(&["scale", "web", "2"]);
    let kept: Vec<u64> = d.wait_ready("web", 2, Duration::from_secs(20))["services"][0]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(pid_of)
        .collect();
    assert_eq!(kept, pids[..2].to_vec(), "scaling down keeps the first replicas running");
    assert!(
        !alive(pids[2] as u32)
            || wait_for("web-2 stopped", Duration::from_secs(10), || (!alive(pids[2] as u32)).then_some(true))
    );

    d.cli_ok(&["restart", "web"]);
    let st = d.wait_ready("web", 2, Duration::from_secs(30));
    let new: Vec<u64> =
        service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default().iter().map(pid_of).collect();
    assert!(new.iter().all(|p| !pids.contains(p)), "restart replaced every instance: {new:?} vs {pids:?}");

    let logs = d.cli_ok(&["logs", "web", "--tail", "5"]);
    assert!(logs.contains("web-0 | "), "logs are prefixed by instance: {logs}");

    d.cli_ok(&["rm", "web"]);
    let st = d.status();
    assert_eq!(st["services"].as_array().map(|a| a.len()), Some(0));
    assert_eq!(st["routes"].as_array().map(|a| a.len()), Some(0));
    wait_for("every web process gone", Duration::from_secs(15), || new.iter().all(|p| !alive(*p as u32)).then_some(()));
}

#[test]
fn the_api_requires_the_admin_token_and_node_routes_a_cluster_certificate() {
    // Proves: without the token (or with a wrong one) the API refuses, with a clear message;
    // node-to-node routes refuse clients without a cluster certificate; only TLS is spoken.
    let d = Daemon::start(21800);
    let url = format!("https://127.0.0.1:{}/v1/status", d.port);
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
    let server = format!("https://127.0.0.1:{}", d.port);
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
    let raft = format!("https://127.0.0.1:{}/raft/vote", d.port);
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", ca, "-X", "POST", "-d", "{}", "-w", " %{http_code}", &raft])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 401") && text.contains("cluster certificate is required"), "{text}");
    // And plain HTTP is not spoken at all.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{}/healthz", d.port)])
        .output()
        .expect("curl");
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.dir.join("admin.token")).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
