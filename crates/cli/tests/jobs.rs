//! End-to-end tests of jobs: real `holdfast` processes running real commands to
//! completion — by hand with `holdfast run`, on a schedule across a leader kill, and a
//! job refreshing a secret that services read. Each test starts with one sentence of what
//! it proves.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn history(d: &Node, job: &str) -> Result<Value, String> {
    d.cli_json(&["jobs", job])
}

#[test]
fn a_run_streams_its_log_returns_its_exit_code_retries_and_times_out() {
    // Proves: `holdfast run` streams the run's output and exits with the run's exit code;
    // a failing run is retried `retries` times, then reported failed with its code; a run
    // past its timeout is stopped and reported; `holdfast jobs` shows the results; bad
    // input is refused precisely.
    let c = one_node("job1", 44500);
    let d = &c[0];
    let spec = r#"
project: ops
jobs:
  migrate:
    run: ["/bin/sh", "-c", "echo migrating $HOLDFAST_JOB run $HOLDFAST_RUN; echo done"]
  flaky:
    run: ["/bin/sh", "-c", "echo attempt $HOLDFAST_ATTEMPT; exit 4"]
    retries: 1
  slow:
    run: ["sleep", "60"]
    timeout: 2s
"#;
    let (ok, out, err) = d.deploy_yaml("jobs.yaml", spec);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("+ job migrate"), "{out}");

    let out = d.cli(&["run", "ops/migrate"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("migrate.run-0 | migrating migrate run 0") && stdout.contains("| done"), "{stdout}");
    assert!(stderr.contains("run #0 of ops/migrate succeeded: exited with code 0 after 1 attempt(s)"), "{stderr}");

    let out = d.cli(&["run", "flaky"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stdout.contains("attempt 1") && stdout.contains("attempt 2"), "both attempts' output: {stdout}");
    assert!(stderr.contains("failed: exited with code 4 after 2 attempt(s)"), "{stderr}");

    let out = d.cli(&["run", "slow"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed-out: timed out after 2s"), "{stderr}");
    // The stopped run's process is gone.
    let ps = std::process::Command::new("pgrep").args(["-f", "^sleep 60$"]).output().expect("pgrep");
    assert!(ps.stdout.is_empty(), "the timed-out run still runs: {}", String::from_utf8_lossy(&ps.stdout));

    let jobs = d.cli_json(&["jobs"]).expect("jobs");
    let by_name: BTreeMap<String, Value> = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| (j["name"].as_str().unwrap_or("").to_string(), j.clone()))
        .collect();
    assert_eq!(by_name["migrate"]["last"]["state"], "succeeded");
    assert_eq!(by_name["flaky"]["last"]["state"], "failed");
    assert_eq!(by_name["flaky"]["last"]["exit_code"], 4);
    assert_eq!(by_name["slow"]["last"]["state"], "timed-out");
    let h = history(d, "flaky").expect("history");
    assert_eq!(h["runs"][0]["attempt"], 2, "{h}");

    // Bad input.
    let out = d.cli(&["run", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown job `nope` (jobs: flaky, migrate, slow)"), "{err}");
    let out = d.cli(&["run", "shop/migrate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("job `migrate` belongs to project `ops`, not `shop`"), "{err}");
    let revision = d.status()["control_plane"]["revision"].clone();
    let (ok, _, err) = d.deploy_yaml(
        "both.yaml",
        "project: ops\njobs:\n  tick:\n    run: [x]\n    schedule: \"@hourly\"\n    every: 1h\n",
    );
    assert!(!ok);
    assert!(
        err.contains("both.yaml:6:5: jobs.tick.every: a job runs on a `schedule` (cron) or `every` interval, not both"),
        "{err}"
    );
    let (ok, _, err) =
        d.deploy_yaml("cron.yaml", "project: ops\njobs:\n  tick:\n    run: [x]\n    schedule: \"0 24 * * *\"\n");
    assert!(!ok);
    assert!(
        err.contains("cron.yaml:5:15: jobs.tick.schedule: invalid cron expression `0 24 * * *`: field 2 (hour) `24`"),
        "{err}"
    );
    let (ok, _, err) =
        d.deploy_yaml("secret.yaml", "project: ops\njobs:\n  tick:\n    run: [x]\n    secrets_write: [key]\n");
    assert!(!ok);
    assert!(err.contains("secret.yaml:5:21: jobs.tick.secrets_write[0]: secret `key` is not declared"), "{err}");
    assert_eq!(d.status()["control_plane"]["revision"], revision, "refused specs changed the state");
    c.finish();
}

#[test]
fn a_job_with_secrets_write_refreshes_its_secret_and_nothing_else() {
    // Proves seed 002's two-week OAuth key, done once for every service: a job given
    // `secrets_write: [oauth-key]` sets a new version with the token it gets, both services
    // reading the key roll onto it, and the same token can set no other secret, deploy,
    // or read status — and is refused once the run is over.
    let c = one_node("job2", 45000);
    let d = &c[0];
    let value = d.home.join("v1");
    std::fs::write(&value, "hola").expect("value");
    d.cli_ok(&["secret", "set", "shop/oauth-key", "--from-file", value.to_str().unwrap()]);
    let bin = holdfast_bin();
    let bindir = bin.parent().expect("bin dir").display().to_string();
    let token_file = d.home.join("token-seen");
    let redeploy = d.write_spec("redeploy.yaml", &demo_web("shop", 1, None));
    let spec = format!(
        r#"
project: shop
secrets:
  oauth-key: {{}}
  other: {{}}
services:
  web:
    run: ["holdfast-demo-web"]
    replicas: 2
    ports: {{http: 8080}}
    health: {{http: /healthz, interval: 300ms, timeout: 300ms}}
    env: {{ GREETING: {{ secret: oauth-key }} }}
  api:
    run: ["holdfast-demo-web"]
    ports: {{http: 8080}}
    health: {{http: /healthz, interval: 300ms, timeout: 300ms}}
    env: {{ GREETING: {{ secret: oauth-key }} }}
jobs:
  refresh-oauth:
    run: ["/bin/sh", "-c", "set -e; PATH={bindir}:$PATH; echo -n bonjour > /tmp/job2-new-$HOLDFAST_RUN; holdfast secret set shop/oauth-key --from-file /tmp/job2-new-$HOLDFAST_RUN; rm /tmp/job2-new-$HOLDFAST_RUN; ! holdfast secret set shop/other --from-file /proc/self/cmdline; ! holdfast status; ! holdfast deploy {redeploy} --no-wait; echo -n $HOLDFAST_TOKEN > {token}"]
    secrets_write: [oauth-key]
"#,
        token = token_file.display(),
        redeploy = redeploy.display()
    );
    std::fs::write(d.home.join("other"), "x").expect("other");
    d.cli_ok(&["secret", "set", "shop/other", "--from-file", d.home.join("other").to_str().unwrap()]);
    let (ok, out, err) = d.deploy_yaml("shop.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 2, Duration::from_secs(20));
    d.wait_ready("api", 1, Duration::from_secs(20));
    let out = d.cli(&["run", "refresh-oauth"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("shop/oauth-key version 2 set (7 bytes); rolling api, web"), "{stdout}");
    assert!(
        stdout.contains("this token's scope is secrets:shop/oauth-key; this call needs scope project:shop or secrets:shop/other; nothing was changed"),
        "{stdout}"
    );
    assert!(stdout.contains("this call needs scope read"), "{stdout}");
    assert!(stdout.contains("this call needs scope project:shop; nothing was changed"), "the deploy: {stdout}");
    assert!(d.status()["services"].as_array().is_some_and(|s| s.len() == 2), "the job's deploy changed nothing");
    let h = d.cli_json(&["secret", "history", "shop/oauth-key"]).expect("history");
    assert_eq!(h["versions"][0]["set_by"], "job shop/refresh-oauth run #0", "{h}");
    assert_eq!(
        d.cli_json(&["secret", "history", "shop/other"]).expect("other")["versions"].as_array().map(Vec::len),
        Some(1)
    );
    for svc in ["web", "api"] {
        wait_for(&format!("{svc} greets with the refreshed key"), Duration::from_secs(30), || {
            let st = d.try_status()?;
            let s = service_of(&st, svc);
            let bodies: Vec<String> = s["instances"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|i| d.curl_local(i["ports"]["http"].as_u64().unwrap_or(0), "/").unwrap_or_default())
                .collect();
            let ok = s["rollout"].is_null() && !bodies.is_empty() && bodies.iter().all(|b| b.starts_with("bonjour "));
            seen_unless(ok, (), format!("{bodies:?} {}", s["rollout"]))
        });
    }
    // The run is over: its token is refused.
    let token = std::fs::read_to_string(&token_file).expect("the job wrote its token");
    assert!(token.starts_with("hfjob1.refresh-oauth.0."), "{token}");
    let out = d.cli(&["--token", &token, "secret", "set", "shop/oauth-key", "--from-file", value.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the API token was refused"), "{err}");
    c.finish();
}

#[test]
fn a_schedule_runs_each_slot_once_across_a_leader_kill() {
    // Proves: a job `every: 2s` runs once per slot, on time, on the nodes it may use; when
    // the leader's machine is killed, the new leader goes on from the slot the old one
    // left (a slot missed meanwhile runs once, late), and no slot ever runs twice — not in
    // the job history, not in what the runs wrote.
    let mut c = cluster("job3", 45500, &["a", "b", "c"]);
    let leader = c.leader_index(0).expect("a leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &others {
        let name = c[*i].name.clone();
        c[others[0]].cli_ok(&["node", "label", &name, "jobs=yes"]);
    }
    let slots_file = c[0].home.join("slots");
    let spec = format!(
        "project: cron\njobs:\n  tick:\n    run: [\"/bin/sh\", \"-c\", \"echo $HOLDFAST_RUN_SLOT_MS >> {}\"]\n    every: 2s\n    node_selector: {{ jobs: \"yes\" }}\n",
        slots_file.display()
    );
    let (ok, out, err) = c[others[0]].deploy_yaml("cron.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    let succeeded = |d: &Node| -> Result<Vec<Value>, String> {
        let h = history(d, "tick")?;
        Ok(h["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["state"] == "succeeded")
            .collect())
    };
    wait_for("three scheduled runs", Duration::from_secs(20), || {
        let n = succeeded(&c[others[0]])?.len();
        seen_unless(n >= 3, (), format!("{n} succeeded"))
    });
    let before_kill = succeeded(&c[others[0]]).expect("history").len();
    let old_leader = c[leader].id();
    c[leader].kill_machine();
    let killed_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let survivor = others[0];
    wait_for("four more runs after the leader's death", Duration::from_secs(40), || {
        let n = succeeded(&c[survivor])?.len();
        seen_unless(n >= before_kill + 4, (), format!("{n} succeeded"))
    });
    let new_leader = c[survivor].leader();
    assert!(new_leader.is_some() && new_leader != Some(old_leader), "a new leader runs the schedule: {new_leader:?}");
    let runs = history(&c[survivor], "tick").expect("history")["runs"].as_array().cloned().unwrap_or_default();
    let slots: Vec<u64> = runs.iter().filter_map(|r| r["slot_ms"].as_u64()).collect();
    let mut unique = slots.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), slots.len(), "a slot ran twice: {slots:?}");
    let mut lines: Vec<u64> = std::fs::read_to_string(&slots_file)
        .expect("slots file")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let written = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), written, "a slot's command ran twice: {lines:?}");
    // Every run ran on a node it may use, on time (the runs around the failover late by
    // at most the time without a leader).
    let late: Vec<(u64, u64)> = runs
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .filter_map(|r| Some((r["slot_ms"].as_u64()?, r["created_at_ms"].as_u64()?)))
        .map(|(slot, at)| (slot, at.saturating_sub(slot)))
        .collect();
    let leader_name = c[leader].name.clone();
    assert!(runs.iter().all(|r| r["node"] != leader_name.as_str()), "{runs:?}");
    let on_time = late.iter().filter(|(slot, _)| *slot + 10_000 < killed_at || *slot > killed_at + 10_000);
    for (slot, by) in on_time {
        assert!(*by < 1_500, "the run of slot {slot} started {by} ms late");
    }
    eprintln!("slots (ms late): {late:?}");
    c.finish();
}

#[test]
fn a_run_cut_off_from_the_quorum_stops_before_its_retry_starts_elsewhere() {
    // Proves: a node partitioned away from the majority stops its job run once it has been
    // cut off as long as the leader takes to call it down, and the leader's retry on
    // another node starts only after that: the two attempts never run at the same time.
    if !namespaces_or_skip("hfjobpart") {
        return;
    }
    let c = Cluster::form(config("hfjobpart").sites(&["a", "a", "b"]).namespaces());
    c[0].cli_ok(&["node", "label", "n3", "jobs=yes"]);
    let lines = c[0].home.join("beats");
    let spec = format!(
        "project: part\njobs:\n  long:\n    run: [\"/bin/sh\", \"-c\", \"while true; do echo $HOLDFAST_ATTEMPT $(date +%s%3N) >> {}; sleep 0.1; done\"]\n    retries: 2\n    timeout: 10m\n    node_selector: {{ jobs: \"yes\" }}\n",
        lines.display()
    );
    let (ok, out, err) = c[0].deploy_yaml("long.yaml", &spec);
    assert!(ok, "{out}\n{err}");
    let run = c[0].cli_json(&["run", "long", "--no-wait"]).expect("run");
    assert_eq!(run["run"], 0);
    let beats = |attempt: &str| -> Vec<u64> {
        std::fs::read_to_string(&lines)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').filter(|(a, _)| *a == attempt).and_then(|(_, t)| t.trim().parse().ok()))
            .collect()
    };
    wait_for("attempt 1 running on n3", Duration::from_secs(20), || {
        let n = beats("1").len();
        seen_unless(n >= 5, (), format!("{n} beats"))
    });
    // Another node may take the retry; then cut n3 off.
    c[0].cli_ok(&["node", "label", "n2", "jobs=yes"]);
    c.tb().partition(&[0, 1], &[2]).expect("partition");
    let second = wait_for("attempt 2 running elsewhere", Duration::from_secs(60), || {
        let b = beats("2");
        seen_unless(b.len() >= 5, b.clone(), format!("{} beats of attempt 2", b.len()))
    });
    let first = beats("1");
    let (last_1, first_2) = (*first.iter().max().expect("beats"), *second.iter().min().expect("beats"));
    eprintln!(
        "attempt 1 last beat {last_1}, attempt 2 first beat {first_2}: {} ms apart",
        first_2 as i64 - last_1 as i64
    );
    assert!(last_1 < first_2, "the attempts overlapped: attempt 1 beat at {last_1}, attempt 2 began at {first_2}");
    let h = c[0].cli_json(&["jobs", "long"]).expect("history");
    let r = &h["runs"][0];
    assert_eq!((r["attempt"].as_u64(), r["node"].as_str()), (Some(2), Some("n2")), "{h}");
    assert!(r["result"].as_str().unwrap_or("").contains("node n3 went down during attempt 1"), "{h}");
    c.tb().heal_partitions().expect("heal");
    c.finish();
}
