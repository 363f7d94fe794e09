//! End-to-end tests of secrets and scoped API tokens: real `holdfast` processes, the real
//! demo web app reading a secret as an env value and as a file, real curl through the
//! ingress. Each test starts with one sentence of what it proves.
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Sets `secret` (`project/name`) to `value` through a file (the way a script would).
fn set_secret(d: &Node, secret: &str, value: &str) -> Value {
    let file = d.home.join(format!("value-{}", secret.replace('/', "-")));
    std::fs::write(&file, value).expect("write value");
    let r = d.cli_json(&["secret", "set", secret, "--from-file", file.to_str().expect("utf8")]);
    std::fs::remove_file(&file).expect("remove value file");
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The demo web app greeting with the secret `greeting`, given both as `GREETING` and as
/// a file; an instance whose file differs from its env exits (so file delivery is checked
/// inside the instance's own view), and one whose greeting is `bad` never listens (its
/// health check fails).
fn greeter(project: &str, host: &str) -> String {
    format!(
        r#"project: {project}
secrets:
  greeting: {{}}
services:
  web:
    run: ["/bin/sh", "-c", "test \"$(cat /run/secrets/{project}/greeting)\" = \"$GREETING\" || exit 3; if [ \"$GREETING\" = bad ]; then exec sleep 600; fi; exec holdfast-demo-web"]
    replicas: 3
    ports: {{http: 8080}}
    health: {{http: /healthz, interval: 300ms, timeout: 300ms, healthy_threshold: 2}}
    env: {{ GREETING: {{ secret: greeting }} }}
    files: {{ /run/secrets/{project}/greeting: {{ secret: greeting }} }}
routes:
  - {{host: {host}, service: web}}
"#
    )
}

/// The greeting of every instance, by asking each one's port on its node.
fn greetings(nodes: &Cluster) -> Vec<String> {
    let st = nodes[0].status();
    let mut out = Vec::new();
    for i in service_of(&st, "web")["instances"].as_array().cloned().unwrap_or_default() {
        let Some(node) = nodes.iter().find(|n| i["node"] == n.name.as_str()) else { continue };
        let port = i["ports"]["http"].as_u64().unwrap_or(0);
        let body = node.curl_local(port, "/").unwrap_or_else(|| "(no answer)".into());
        out.push(body.split_whitespace().next().unwrap_or("").to_string());
    }
    out.sort();
    out
}

#[test]
fn a_new_version_rolls_every_replica_with_no_failed_request_and_a_bad_one_stops_the_roll() {
    // Proves: on three nodes (two of which fetched the cluster key when they joined), a
    // secret reaches every replica as env and as a file; a new version rolls all three one
    // at a time with no failed request through the ingress and never fewer than two
    // ready; a version that fails the health check stops the roll with the previous
    // version serving; and no value is ever in a data directory, a log, `status --json`,
    // `events --json` or a process's command line.
    let nodes = cluster("sec1", 43000, &["a", "b", "c"]);
    let d = &nodes[0];
    let set = set_secret(d, "sec1/greeting", "hola");
    assert_eq!((set["version"].as_u64(), set["rolling"].as_array().map(Vec::len)), (Some(1), Some(0)), "{set}");
    let (ok, out, err) = d.deploy_yaml("web.yaml", &greeter("sec1", "g.localhost"));
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 3, Duration::from_secs(30));
    let st = d.status();
    let on: std::collections::BTreeSet<String> = service_of(&st, "web")["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["node"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(on.len(), 3, "one replica per node, so every node opened the secret: {on:?}");
    assert_eq!(greetings(&nodes), ["hola", "hola", "hola"]);

    // Roll to version 2 under a steady request loop.
    let stop = AtomicBool::new(false);
    let (answered, samples) = (AtomicU64::new(0), AtomicU64::new(0));
    let (failures, lowest, rolled_in) = std::thread::scope(|scope| {
        let requests = scope.spawn(|| {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (code, body) = nodes[0].ingress("g.localhost", "/");
                if code != 200 || !(body.starts_with("hola ") || body.starts_with("bonjour ")) {
                    failures.push(format!("{code} {body}"));
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
        let watch = scope.spawn(|| {
            let mut lowest = u64::MAX;
            while !stop.load(Ordering::SeqCst) {
                if let Some(r) = nodes[0].try_status().ok().and_then(|v| service_of(&v, "web")["ready"].as_u64()) {
                    lowest = lowest.min(r);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            lowest
        });
        wait_for("requests and ready samples flowing", Duration::from_secs(10), || {
            let (a, s) = (answered.load(Ordering::SeqCst), samples.load(Ordering::SeqCst));
            seen_unless(a >= 5 && s >= 2, (), format!("{a} answered, {s} samples"))
        });
        let started = Instant::now();
        let set = set_secret(&nodes[0], "sec1/greeting", "bonjour");
        assert_eq!(set["rolling"], serde_json::json!(["web"]), "{set}");
        wait_for("every replica greets with version 2", Duration::from_secs(60), || {
            let g = greetings(&nodes);
            let st = nodes[0].try_status()?;
            let ready = service_of(&st, "web")["ready"].as_u64();
            seen_unless(
                g == ["bonjour", "bonjour", "bonjour"] && ready == Some(3),
                (),
                format!("{g:?} ready {ready:?}"),
            )
        });
        let rolled_in = started.elapsed();
        let a = answered.load(Ordering::SeqCst);
        wait_for("requests after the roll", Duration::from_secs(10), || {
            seen_unless(answered.load(Ordering::SeqCst) >= a + 5, (), answered.load(Ordering::SeqCst))
        });
        stop.store(true, Ordering::SeqCst);
        (requests.join().expect("requests"), watch.join().expect("watch"), rolled_in)
    });
    eprintln!(
        "rotation: 3 replicas on 3 nodes ran version 2 after {rolled_in:?}; {} requests, {} failed; lowest ready {lowest}",
        answered.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests during the roll: {failures:?}");
    assert!(lowest >= 2, "the roll took more than one replica out at a time (lowest ready {lowest})");

    // A version that fails the health check: its first new instance never becomes ready,
    // so the roll stops there; the other two keep serving version 2.
    set_secret(&nodes[0], "sec1/greeting", "bad");
    let stuck = wait_for("one instance of version 3 unready, the roll stopped", Duration::from_secs(20), || {
        let st = nodes[0].try_status()?;
        let web = service_of(&st, "web");
        let unready: Vec<Value> = web["instances"]
            .as_array()
            .map(|a| a.iter().filter(|i| i["ready"] == false).cloned().collect())
            .unwrap_or_default();
        seen_unless(unready.len() == 1 && web["ready"] == 2, web.clone(), web.to_string())
    });
    // It stays stopped: a while later still exactly one instance is on the bad version.
    let first_unready = stuck["instances"].as_array().and_then(|a| a.iter().find(|i| i["ready"] == false).cloned());
    for _ in 0..20 {
        let (code, body) = nodes[0].ingress("g.localhost", "/");
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("bonjour "), "only version 2 serves while the roll is stopped: {body}");
    }
    let web = service_of(&nodes[0].status(), "web");
    assert_eq!(web["ready"], 2, "the roll did not go on past the unready instance: {web}");
    // `status` says so.
    let rollout = web["rollout"].as_str().unwrap_or("");
    assert!(rollout.starts_with("rolling: 1 of 3 replicas on generation"), "{web}");
    assert!(rollout.contains("waiting for web-0 to be ready"), "{rollout}");
    let text = nodes[0].cli_ok(&["status"]);
    assert!(text.contains("web: rolling: 1 of 3"), "{text}");
    eprintln!("stopped roll: {rollout}; unready instance: {first_unready:?}");
    // The fix rolls on.
    set_secret(&nodes[0], "sec1/greeting", "salut");
    nodes[0].wait_ready("web", 3, Duration::from_secs(60));
    wait_for("every replica greets with version 4", Duration::from_secs(30), || {
        let g = greetings(&nodes);
        seen_unless(g == ["salut", "salut", "salut"], (), format!("{g:?}"))
    });

    // Listing and history show versions and users, never values.
    let ls = nodes[1].cli_json(&["secret", "ls"]).expect("secret ls");
    let entry = &ls["secrets"][0];
    assert_eq!((entry["secret"].as_str(), entry["version"].as_u64()), (Some("sec1/greeting"), Some(4)), "{ls}");
    assert_eq!(entry["used_by"], serde_json::json!(["web"]));
    // Once the roll is over no replica reads an older version: they are retired.
    let h = wait_for("the older versions retired", Duration::from_secs(10), || {
        let h = nodes[2].cli_json(&["secret", "history", "sec1/greeting"])?;
        let states: Vec<(u64, String)> = h["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|v| (v["version"].as_u64().unwrap_or(0), v["state"].as_str().unwrap_or("").to_string()))
            .collect();
        let want = [(4, "current"), (3, "retired"), (2, "retired"), (1, "retired")];
        let ok = states.len() == 4 && states.iter().zip(want).all(|((v, s), (wv, ws))| *v == wv && s == ws);
        seen_unless(ok, h.clone(), h.to_string())
    });
    assert!(!h.to_string().contains("salut"), "history never shows a value");

    // Rotating the cluster key (asked on a follower): the one readable version is
    // resealed, every node ends up holding the new key, and a new version still rolls
    // onto all three nodes.
    let key_of = |n: &Node| std::fs::read_to_string(n.dir.join("secrets.key")).unwrap_or_default();
    let old_key = key_of(&nodes[0]);
    assert!(nodes.iter().all(|n| key_of(n) == old_key), "every node holds the one cluster key");
    let r = nodes[1].cli_json(&["secret", "rotate-key"]).expect("rotate-key");
    assert_eq!(r["resealed"], 1, "{r}");
    wait_for("every node holds the new key", Duration::from_secs(20), || {
        let keys: Vec<String> = nodes.iter().map(key_of).collect();
        seen_unless(keys.iter().all(|k| *k != old_key && *k == keys[0]), (), format!("{keys:?}"))
    });
    set_secret(&nodes[2], "sec1/greeting", "servus");
    wait_for("every replica greets with version 5, under the new key", Duration::from_secs(60), || {
        let g = greetings(&nodes);
        seen_unless(g == ["servus", "servus", "servus"], (), format!("{g:?}"))
    });

    // The plaintext is nowhere: data directories (Raft log, snapshots, instance
    // records), daemon logs, status and events JSON, process command lines.
    let values = ["hola", "bonjour", "salut", "servus"];
    for n in nodes.iter() {
        let out = std::process::Command::new("grep")
            .args(["-r", "-l", "-a", "-e", "hola", "-e", "bonjour", "-e", "salut", "-e", "servus"])
            .arg(&n.dir)
            .output()
            .expect("grep");
        // Instance logs hold what the app printed: the demo app prints no greeting.
        let found = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(found.trim().is_empty(), "a secret value is in {}'s data directory: {found}", n.name);
        let log = n.log_text();
        for v in values {
            assert!(!log.contains(v), "{}'s log holds a secret value", n.name);
        }
    }
    for args in [&["status"][..], &["events"][..], &["secret", "ls"][..]] {
        let text = nodes[0].cli_json(args).expect("json").to_string();
        for v in values {
            assert!(!text.contains(v), "`{args:?} --json` shows a secret value");
        }
    }
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline);
            assert!(!values.iter().any(|v| text.split('\0').any(|a| a == *v)), "a command line holds a value: {text}");
        }
    }
    nodes.finish();
}

#[test]
fn each_token_scope_is_refused_outside_itself_and_changes_nothing() {
    // Proves: read, project and secrets-only tokens can do exactly what their scope says;
    // every refusal names the missing scope and changes nothing; a removed token is
    // refused at once.
    let c = one_node("sec2", 43500);
    let d = &c[0];
    set_secret(d, "shop/key", "v1");
    let (ok, out, err) = d.deploy_yaml("shop.yaml", &demo_web("shop", 1, None));
    assert!(ok, "{out}\n{err}");
    let token = |scope: &str, name: &str| -> String {
        let v = d.cli_json(&["acl", "token", "create", "--scope", scope, "--name", name]).expect("create token");
        assert_eq!(v["scope"], scope, "{v}");
        v["token"].as_str().expect("token").to_string()
    };
    let read = token("read", "grafana");
    let shop = token("project:shop", "ci");
    let key = token("secrets:shop/key", "refresh-job");
    let blog_spec = d.write_spec("blog.yaml", &demo_web("blog", 1, None).replace("  web:", "  blogweb:"));
    let shop_spec = d.write_spec("shop2.yaml", &demo_web("shop", 2, None));
    let value = d.home.join("v");
    std::fs::write(&value, "v2").expect("value");
    let (blog, shop2, val) = (blog_spec.to_str().unwrap(), shop_spec.to_str().unwrap(), value.to_str().unwrap());
    let revision = || d.status()["control_plane"]["revision"].as_u64();
    // (token, command, allowed, the scope a refusal must name)
    let cases: Vec<(&str, Vec<&str>, bool, &str)> = vec![
        (&read, vec!["status"], true, ""),
        (&read, vec!["secret", "ls"], true, ""),
        (&read, vec!["deploy", shop2], false, "needs scope project:shop"),
        (&read, vec!["secret", "set", "shop/key", "--from-file", val], false, "project:shop or secrets:shop/key"),
        (&read, vec!["restart", "web"], false, "needs scope project:shop"),
        (&read, vec!["token", "create"], false, "needs scope admin"),
        (&read, vec!["acl", "token", "create", "--scope", "admin", "--name", "x"], false, "needs scope admin"),
        (&read, vec!["cordon", "n1"], false, "needs scope admin"),
        (&shop, vec!["deploy", blog], false, "needs scope project:blog"),
        (&shop, vec!["secret", "set", "blog/key", "--from-file", val], false, "project:blog or secrets:blog/key"),
        (&shop, vec!["cluster", "set", "--heartbeat", "400ms"], false, "needs scope admin"),
        (&key, vec!["secret", "set", "shop/other", "--from-file", val], false, "project:shop or secrets:shop/other"),
        (&key, vec!["deploy", shop2], false, "needs scope project:shop"),
        (&key, vec!["status"], false, "needs scope read"),
        (&key, vec!["restart", "web"], false, "needs scope project:shop"),
    ];
    for (tok, args, allowed, names) in &cases {
        let before = revision();
        let mut argv = vec!["--token", tok];
        argv.extend(args.iter().copied());
        let out = d.cli(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), *allowed, "{args:?}: {err}");
        if !allowed {
            assert!(err.contains(names) && err.contains("nothing was changed"), "{args:?}: {err}");
            assert_eq!(revision(), before, "{args:?} was refused but changed the state");
        }
    }
    // What each scope may do, it can.
    let out = d.cli(&["--token", &shop, "deploy", shop2, "--timeout", "30s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.cli(&["--token", &key, "secret", "set", "shop/key", "--from-file", val]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = d.cli_json(&["secret", "history", "shop/key"]).expect("history");
    assert!(h["versions"][0]["set_by"].as_str().unwrap_or("").contains("(refresh-job)"), "{h}");
    // A removed token is refused from the next request on.
    let ls = d.cli_json(&["acl", "token", "ls"]).expect("ls");
    let id = ls["tokens"].as_array().and_then(|a| a.iter().find(|t| t["name"] == "grafana")).expect("grafana")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(!ls.to_string().contains(&read), "token ls never shows a token");
    d.cli_ok(&["acl", "token", "rm", &id]);
    let out = d.cli(&["--token", &read, "status"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("the API token was refused"));
    c.finish();
}

#[test]
fn bad_secret_input_is_refused_precisely_and_changes_nothing() {
    // Proves: an undeclared secret, a secret without a value, an oversized value, a bad
    // name and a bad scope are refused with messages naming what and where; and a node
    // given --secrets-key-file keeps no key in its data directory.
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key_file = key_dir.path().join("cluster.key");
    let out =
        std::process::Command::new(holdfast_bin()).args(["secret", "keygen"]).arg(&key_file).output().expect("keygen");
    assert!(out.status.success(), "{out:?}");
    let c = Cluster::form(config("sec3").node(&["--secrets-key-file", key_file.to_str().unwrap()]).ports_from(44000));
    let d = &c[0];
    assert!(!d.dir.join("secrets.key").exists(), "an external key is never copied into the data directory");
    let revision = || d.status()["control_plane"]["revision"].as_u64();
    let before = revision();
    let spec = |body: &str| format!("project: shop\nsecrets:\n  key: {{}}\nservices:\n  web:\n    run: [srv]\n{body}");
    let (ok, _, err) = d.deploy_yaml("undeclared.yaml", &spec("    env: { K: { secret: kee } }\n"));
    assert!(!ok);
    assert!(
        err.contains("undeclared.yaml:7:25: services.web.env.K.secret: secret `kee` is not declared in project `shop`, did you mean `key`?"),
        "{err}"
    );
    let (ok, _, err) = d.deploy_yaml("novalue.yaml", &spec("    env: { K: { secret: key } }\n"));
    assert!(!ok);
    assert!(
        err.contains("service `web` reads secret shop/key, which has no value yet: set it first with `holdfast secret set shop/key`"),
        "{err}"
    );
    let big = d.home.join("big");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).expect("big");
    let out = d.cli(&["secret", "set", "shop/key", "--from-file", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("at most 65536 bytes (nothing was stored)"), "{err}");
    let out = d.cli(&["secret", "set", "Shop/key", "--from-file", big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`Shop/key` is not a secret name"), "{err}");
    let out = d.cli(&["acl", "token", "create", "--scope", "write", "--name", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown scope `write`"), "{err}");
    assert_eq!(revision(), before, "refused input changed the state");
    assert!(d.cli_json(&["secret", "ls"]).expect("ls")["secrets"].as_array().is_some_and(Vec::is_empty));
    // With the external key the secret works as usual.
    let small = d.home.join("small");
    std::fs::write(&small, "ok").expect("small");
    d.cli_ok(&["secret", "set", "shop/key", "--from-file", small.to_str().unwrap()]);
    let (ok, out, err) = d.deploy_yaml(
        "ok.yaml",
        "project: shop\nsecrets: { key: {} }\nservices:\n  web:\n    run: [\"/bin/sh\", \"-c\", \"test \\\"$K\\\" = ok && exec sleep 600\"]\n    env: { K: { secret: key } }\n",
    );
    assert!(ok, "{out}\n{err}");
    d.wait_ready("web", 1, Duration::from_secs(20));
    // Rotating an external key: the leader cannot make it (it never writes one) ...
    let out = d.cli(&["secret", "rotate-key"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("make a new key with `holdfast secret keygen NEW`"), "{err}");
    // ... the operator makes it, puts it in place of every node's key file, and gives it.
    let new_key = key_dir.path().join("new.key");
    let out =
        std::process::Command::new(holdfast_bin()).args(["secret", "keygen"]).arg(&new_key).output().expect("keygen");
    assert!(out.status.success(), "{out:?}");
    std::fs::copy(&new_key, &key_file).expect("replace the key file");
    let r = d.cli_json(&["secret", "rotate-key", "--new-key-file", new_key.to_str().unwrap()]).expect("rotate");
    assert_eq!(r["resealed"], 1, "{r}");
    // A restarted instance opens the value under the new key.
    d.cli_ok(&["restart", "web"]);
    d.wait_ready("web", 1, Duration::from_secs(20));
    assert!(!d.dir.join("secrets.key").exists(), "still no key in the data directory");
    c.finish();
}
