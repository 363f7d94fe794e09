//! Managed Redis end to end (each node in its own network namespace when root, as under
//! CI; on loopback otherwise), with the machine's redis-server, redis-cli and redis-py
//! (PyPI): three members on three holdfast nodes; the master's machine dies under a write
//! loop through the one master URL, writes resume on a promoted replica, the old master
//! comes back as a replica; Sentinel-aware clients (redis-py's `Sentinel`) find the
//! master through holdfast's Sentinel-compatible endpoint before and after; a switchover;
//! every instance restarted keeps its data (AOF). Every write is counted as acknowledged
//! or failed-or-unknown.
mod common;

use std::time::Duration;

use common::pg::*;
use common::*;
use serde_json::Value;

/// redis-server and redis-cli are on this machine (required under CI).
fn have_redis() -> bool {
    let ok = ["redis-server", "redis-cli"]
        .iter()
        .all(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()));
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have redis-server and redis-cli (scripts/test.sh installs them)"
        );
        eprintln!("skipping: no redis-server or redis-cli here");
    }
    ok
}

/// Three nodes on sites a, a, b.
fn redis_cluster(name: &str, ports_from: u16) -> Cluster {
    Cluster::form(config(name).sites(&["a", "a", "b"]).ports_from(ports_from).namespaces_when_root())
}

fn spec(project: &str, fields: &str) -> String {
    format!("project: {project}\ndatabases:\n  cache:\n    engine: redis\n    instances: 3\n{fields}")
}

/// redis-cli inside `node` with `url` (bounded): its output, or the error.
fn cli(node: &Node, url: &str, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["redis-cli", "--no-auth-warning", "-u", url];
    argv.extend(args);
    let out = node.exec_within(&argv, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !text.starts_with("ERR") && !text.contains("NOAUTH") && !text.starts_with("NOPERM") {
        Ok(text)
    } else {
        Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The role line of `ROLE` through `url` (`master`, `slave`).
fn role(node: &Node, url: &str) -> Result<String, String> {
    cli(node, url, &["ROLE"]).map(|t| t.lines().next().unwrap_or_default().to_string())
}

/// The `w:*` keys `url` does not have among `acked`.
fn missing_keys(node: &Node, url: &str, acked: &[u64]) -> Vec<u64> {
    let keys = wait_for("the keys read back", Duration::from_secs(20), || cli(node, url, &["KEYS", "w:*"]));
    let have: std::collections::BTreeSet<u64> =
        keys.lines().filter_map(|k| k.strip_prefix("w:")).filter_map(|v| v.parse().ok()).collect();
    acked.iter().copied().filter(|v| !have.contains(v)).collect()
}

/// redis-py's Sentinel client inside `node`: the master address it discovers through
/// `sentinel` (host:port) for `name`, and `ROLE` through a connection to it.
fn sentinel_discovers(py: &std::path::Path, node: &Node, sentinel: &str, password: &str) -> Result<String, String> {
    let script = format!(
        "from redis.sentinel import Sentinel\nh,p='{sentinel}'.rsplit(':',1)\ns=Sentinel([(h,int(p))],socket_timeout=2)\nm=s.master_for('cache',username='default',password='{password}',socket_timeout=2)\nprint(s.discover_master('cache'), m.execute_command('ROLE')[0].decode(), m.set('sentinel-check','1'))\nprint(len(s.discover_slaves('cache')))"
    );
    let py = py.to_string_lossy().into_owned();
    let out = node.exec_within(&[py.as_str(), "-c", &script], Duration::from_secs(15)).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The password in a `redis://default:<pw>@host:port` URL.
fn password(url: &str) -> String {
    url.split_once("default:").and_then(|(_, r)| r.split_once('@')).map(|(p, _)| p.to_string()).unwrap_or_default()
}

/// `host:port` of a `redis+sentinel://…@host:port/name` URL.
fn host_port(url: &str) -> String {
    url.rsplit_once('@').and_then(|(_, r)| r.split_once('/')).map(|(h, _)| h.to_string()).unwrap_or_default()
}

fn members(d: &Value) -> Vec<Value> {
    d["members"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_dead_masters_machine_fails_over_and_comes_back_as_a_replica() {
    // Proves: SIGKILL of the master's whole machine (daemon and redis-server) under a
    // redis-py write loop through the one master URL: writes resume on a promoted replica
    // through the same URL (the proxies cut the old connections; the client only
    // reconnects), the term moves on, `cache-ro` reaches only replicas, a Sentinel-aware
    // client finds the master before and after, and the old master's node, started
    // again, rejoins as a replica instead of taking writes.
    if !have_redis() {
        return;
    }
    let Some(py) = python() else { return };
    let mut c = redis_cluster("rdkill", 40000);
    let (ok, out, err) = c[0].deploy_yaml("cache.yaml", &spec("rdkill", ""));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(60));
    let url = c[0].cli_ok(&["db", "url", "cache"]).trim().to_string();
    let ro = c[0].cli_ok(&["db", "url", "cache", "--endpoint", "ro"]).trim().to_string();
    let sentinel = host_port(c[0].cli_ok(&["db", "url", "cache", "--endpoint", "sentinel"]).trim());
    assert!(url.starts_with("redis://default:"), "{url}");
    assert_eq!(cli(&c[0], &url, &["SET", "k", "v"]).as_deref(), Ok("OK"));
    // Every node's proxy follows the members' reports within a heartbeat or two.
    let reached = |n: &Node, url: &str, want: &str| {
        wait_for("the endpoint's member answering", Duration::from_secs(10), || {
            let r = role(n, url);
            seen_unless(r.as_deref() == Ok(want), (), format!("{r:?}"))
        })
    };
    reached(&c[1], &url, "master"); // the master URL reaches the master from every node
    reached(&c[2], &ro, "slave"); // cache-ro reaches a replica
    assert!(cli(&c[0], &url, &["CONFIG", "SET", "maxmemory", "1"]).is_err(), "services cannot reconfigure members");
    let found = wait_for("redis-py's Sentinel before the failover", Duration::from_secs(15), || {
        sentinel_discovers(&py, &c[1], &sentinel, &password(&url))
    });
    assert!(found.contains("master True"), "{found}");

    let victim_name = before["primary_node"].as_str().expect("master node").to_string();
    let victim = node_index(&c, &victim_name);
    let watcher = (0..c.len()).find(|i| *i != victim).expect("a survivor");
    let term = before["term"].as_u64().expect("term");
    let writer = PyWriter::start_script(&py, &c[watcher], "redis_writer.py", &[&url], &c[watcher].home, 1);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    c.allow_errors(&["heartbeat", "link", "tunnel", "raft", "Raft", "connect"]);
    let killed_at = epoch_now();
    c[victim].kill_machine();
    writer.expect_acked_after(&c, killed_at + 0.1, 20, Duration::from_secs(30), "writes acknowledged again");
    let outage = writer.longest_gap_after(killed_at - 1.0);
    let after = wait_healthy(&c[watcher], 1, Duration::from_secs(30));
    assert!(after["term"].as_u64() > Some(term), "a new term: {after}");
    assert_ne!(after["primary_node"], victim_name.as_str(), "{after}");
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    let lost = missing_keys(&c[watcher], &url, &acked);
    eprintln!(
        "master killed: writes back after {outage:.2} s without an acknowledged write; {} acknowledged, {} lost (durability: none)",
        acked.len(),
        lost.len()
    );
    // Asynchronous replication may lose the last writes before the kill, never more than
    // the in-flight moment: a replica that was behind by more than that is not chosen.
    assert!(lost.len() <= 5, "acknowledged writes lost beyond the last moment: {lost:?}");
    assert_eq!(role(&c[watcher], &ro).as_deref(), Ok("slave"), "cache-ro still reaches only replicas");
    let found = sentinel_discovers(&py, &c[watcher], &sentinel, &password(&url)).expect("redis-py Sentinel after");
    assert!(found.contains("master True"), "{found}");
    let failover = wait_for("the failover in the events", Duration::from_secs(10), || {
        let kinds = event_kinds(&c[watcher], "database cache");
        seen_unless(kinds.iter().any(|k| k == "failover"), kinds.clone(), format!("{kinds:?}"))
    });
    assert!(failover.contains(&"deployed".to_string()), "{failover:?}");

    // The old master's machine comes back: it rejoins as a replica of the new master.
    c[victim].start_up();
    let back = wait_for("the old master back as a replica", Duration::from_secs(60), || {
        let d = db(&c[watcher])?;
        let m = members(&d).into_iter().find(|m| m["node"] == victim_name.as_str()).unwrap_or_default();
        seen_unless(m["role"] == "replica" && m["streaming"] == true, d.clone(), d.to_string())
    });
    assert_eq!(back["primary_node"], after["primary_node"], "the new master stays: {back}");
    assert_eq!(cli(&c[victim], &url, &["GET", "k"]).as_deref(), Ok("v"), "the data written before is there");
    c.finish();
}

#[test]
fn a_switchover_and_a_full_restart_keep_every_write() {
    // Proves: a planned switchover under a write loop hands the master to the chosen
    // member with no acknowledged write lost (the old master refuses writes while the
    // target catches up); then every node stops and starts again: with AOF persistence
    // the data is still there and one master serves it.
    if !have_redis() {
        return;
    }
    let Some(py) = python() else { return };
    let mut c = redis_cluster("rdswitch", 40500);
    let (ok, out, err) = c[0].deploy_yaml("cache.yaml", &spec("rdswitch", "    persistence: aof\n"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(60));
    let url = c[0].cli_ok(&["db", "url", "cache"]).trim().to_string();
    let from = before["primary_node"].as_str().expect("master").to_string();
    let to = c.iter().map(|n| n.name.clone()).find(|n| *n != from).expect("another node");
    let writer = PyWriter::start_script(&py, &c[0], "redis_writer.py", &[&url], &c[0].home, 1);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    let asked = epoch_now();
    let out = c[0].cli_ok(&["db", "switchover", "cache", "--to", &to]);
    assert!(out.contains(&to), "{out}");
    writer.expect_acked_after(&c, asked + 0.5, 20, Duration::from_secs(20), "writes after the switchover");
    let pause = writer.longest_gap_after(asked - 0.5);
    let after = wait_healthy(&c[0], 2, Duration::from_secs(30));
    assert_eq!(after["primary_node"], to.as_str(), "{after}");
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    assert_eq!(missing_keys(&c[0], &url, &acked), Vec::<u64>::new(), "acknowledged writes lost by a switchover");
    eprintln!("switchover: writes paused {pause:.2} s; {} acknowledged, none lost", acked.len());

    // Every node stops, then starts again: AOF brings the data back.
    for i in (0..c.len()).rev() {
        c[i].signal_and_wait(15, Duration::from_secs(60));
    }
    for i in 0..c.len() {
        c[i].start_up();
    }
    c.wait_formed();
    wait_healthy(&c[0], 2, Duration::from_secs(90));
    assert_eq!(missing_keys(&c[0], &url, &acked), Vec::<u64>::new(), "data lost by restarting every instance");
    c.finish();
}

#[test]
fn with_replicated_durability_a_dead_master_loses_no_acknowledged_write() {
    // Proves: with `durability: replicated` every node's proxy acknowledges a write only
    // once a replica has it (WAIT after each batch of writes), so SIGKILL of the master's
    // machine under a write loop loses none of the acknowledged writes, and pipelines and
    // transactions still work through the relay.
    if !have_redis() {
        return;
    }
    let Some(py) = python() else { return };
    let mut c = redis_cluster("rdrepl", 41000);
    let (ok, out, err) = c[0].deploy_yaml("cache.yaml", &spec("rdrepl", "    durability: replicated\n"));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(60));
    let url = c[0].cli_ok(&["db", "url", "cache"]).trim().to_string();
    // A pipeline and a transaction through the relay, from redis-py.
    let script = format!(
        "import redis\nr=redis.Redis.from_url('{url}')\nr.delete('c')\np=r.pipeline(transaction=False)\nfor i in range(50): p.set(f'p:{{i}}', i)\np.get('p:7')\nprint(p.execute()[-1].decode())\nt=r.pipeline(transaction=True)\nt.incr('c'); t.incr('c')\nprint(t.execute())"
    );
    let pyname = py.to_string_lossy().into_owned();
    let answer = wait_for("a pipeline and a transaction through the relay", Duration::from_secs(15), || {
        let o =
            c[1].exec_within(&[pyname.as_str(), "-c", &script], Duration::from_secs(15)).map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    });
    assert_eq!(answer, "7\n[1, 2]");

    let victim_name = before["primary_node"].as_str().expect("master node").to_string();
    let victim = node_index(&c, &victim_name);
    let watcher = (0..c.len()).find(|i| *i != victim).expect("a survivor");
    let writer = PyWriter::start_script(&py, &c[watcher], "redis_writer.py", &[&url], &c[watcher].home, 1);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    c.allow_errors(&["heartbeat", "link", "tunnel", "raft", "Raft", "connect"]);
    let killed_at = epoch_now();
    c[victim].kill_machine();
    writer.expect_acked_after(&c, killed_at + 0.1, 20, Duration::from_secs(30), "writes acknowledged again");
    let outage = writer.longest_gap_after(killed_at - 1.0);
    wait_healthy(&c[watcher], 1, Duration::from_secs(30));
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    let lost = missing_keys(&c[watcher], &url, &acked);
    eprintln!(
        "replicated: writes back after {outage:.2} s; {} acknowledged, {} failed or unknown, {} lost",
        acked.len(),
        log.len() - acked.len(),
        lost.len()
    );
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged writes lost with durability: replicated");
    c.finish();
}

/// The `NODE_PATH` with ioredis (scripts/nodeenv.sh; required under CI).
fn ioredis() -> Option<String> {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/nodeenv.sh"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    if out.is_none() {
        assert!(std::env::var("CI").is_err(), "CI must have node and ioredis (scripts/nodeenv.sh installs them)");
        eprintln!("skipping: no node/ioredis here (bash scripts/nodeenv.sh)");
    }
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// ioredis inside `node`: as a plain one-URL client, in Sentinel mode for the master, and
/// in Sentinel mode for a replica (`role: 'slave'`); each writes or reads and answers
/// `ROLE`. Prints the three roles.
fn ioredis_roles(node_path: &str, node: &Node, url: &str, sentinel: &str, password: &str) -> Result<String, String> {
    const SCRIPT: &str = r#"
const Redis = require('ioredis');
const [url, sentinel, password] = process.argv.slice(1);
const [host, port] = [sentinel.slice(0, sentinel.lastIndexOf(':')), Number(sentinel.slice(sentinel.lastIndexOf(':') + 1))];
const opts = { connectTimeout: 2000, maxRetriesPerRequest: 2, enableOfflineQueue: true };
(async () => {
  const plain = new Redis(url, opts);
  await plain.set('io:plain', '1');
  const a = (await plain.role())[0];
  const master = new Redis({ ...opts, sentinels: [{ host, port }], name: 'cache', username: 'default', password });
  await master.set('io:sentinel', '1');
  const b = (await master.role())[0];
  const replica = new Redis({ ...opts, sentinels: [{ host, port }], name: 'cache', role: 'slave', username: 'default', password });
  const c = (await replica.role())[0];
  await replica.get('io:sentinel');
  console.log(a, b, c);
  for (const r of [plain, master, replica]) r.disconnect();
})().catch((e) => { console.error(String(e)); process.exit(1); });
"#;
    let env = format!("NODE_PATH={node_path}");
    let out = node
        .exec_within(&["env", &env, "node", "-e", SCRIPT, url, sentinel, password], Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn ioredis_finds_the_master_as_a_plain_and_a_sentinel_client_before_and_after_a_failover() {
    // Proves: seed 000's own client, ioredis from npm, unchanged: with the one master URL,
    // and in Sentinel mode against holdfast's Sentinel-compatible endpoint (the master,
    // and a replica with role 'slave'), it reaches the right member before and after the
    // master's machine dies.
    if !have_redis() {
        return;
    }
    let Some(node_path) = ioredis() else { return };
    let mut c = redis_cluster("rdio", 41500);
    let (ok, out, err) = c[0].deploy_yaml("cache.yaml", &spec("rdio", ""));
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 2, Duration::from_secs(60));
    let url = c[0].cli_ok(&["db", "url", "cache"]).trim().to_string();
    let sentinel = host_port(c[0].cli_ok(&["db", "url", "cache", "--endpoint", "sentinel"]).trim());
    let pw = password(&url);
    let roles = wait_for("ioredis before the failover", Duration::from_secs(15), || {
        ioredis_roles(&node_path, &c[1], &url, &sentinel, &pw)
    });
    assert_eq!(roles, "master master slave");

    let victim = node_index(&c, before["primary_node"].as_str().expect("master"));
    let watcher = (0..c.len()).find(|i| *i != victim).expect("a survivor");
    // A Sentinel subscriber hears the failover on `+switch-master`.
    let (host, port) = sentinel.rsplit_once(':').expect("host:port");
    let heard_file = c[watcher].home.join("switch-master.txt");
    let sink = std::fs::File::create(&heard_file).expect("subscriber output file");
    let mut subscriber = c[watcher]
        .client_command(&["timeout", "40", "redis-cli", "-h", host, "-p", port, "SUBSCRIBE", "+switch-master"])
        .stdout(sink)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli SUBSCRIBE");
    std::thread::sleep(Duration::from_millis(500));
    c.allow_errors(&["heartbeat", "link", "tunnel", "raft", "Raft", "connect"]);
    c[victim].kill_machine();
    wait_for("a new master", Duration::from_secs(30), || {
        let d = db(&c[watcher])?;
        seen_unless(healthy(&d, 1) && d["term"].as_u64() > before["term"].as_u64(), (), d.to_string())
    });
    let roles = wait_for("ioredis after the failover", Duration::from_secs(20), || {
        ioredis_roles(&node_path, &c[watcher], &url, &sentinel, &pw)
    });
    assert_eq!(roles, "master master slave");
    let master_addr = url.rsplit_once('@').and_then(|(_, h)| h.split_once(':')).map(|(h, _)| h.to_string());
    let expected = format!("cache {0} 6379 {0} 6379", master_addr.unwrap_or_default());
    wait_for("+switch-master heard by a Sentinel subscriber", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&heard_file).unwrap_or_default();
        seen_unless(text.contains(&expected), (), text)
    });
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    c.finish();
}

/// redis-server processes whose working directory is under `dir` (a node's data
/// directory: members chdir to theirs; Redis rewrites its process title).
fn redis_under(dir: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            // `comm`, not `exe`: Debian's redis-server is a link to redis-check-rdb.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            comm.trim() == "redis-server" && cwd.starts_with(dir)
        })
        .collect()
}

#[test]
fn draining_the_masters_node_switches_over_and_moves_its_member_away() {
    // Proves: `holdfast drain` of the node holding the master (two members, a third node
    // free) under a redis-py write loop: the master is switched over (not failed over) to
    // the replica (fenced first, so no acknowledged write is lost even without
    // `durability: replicated`, which with two instances would keep the only replica from
    // moving, as `sync: 1` does for PostgreSQL), the old master's member moves to the free
    // node and syncs there, the drain returns once the node is empty, no redis-server runs
    // on it any more, and no acknowledged write is missing.
    if !have_redis() {
        return;
    }
    let Some(py) = python() else { return };
    let c = redis_cluster("rddrain", 42000);
    let yaml = "project: rddrain\ndatabases:\n  cache:\n    engine: redis\n    instances: 2\n";
    let (ok, out, err) = c[0].deploy_yaml("cache.yaml", yaml);
    assert!(ok, "{out}\n{err}");
    let before = wait_healthy(&c[0], 1, Duration::from_secs(60));
    let url = c[0].cli_ok(&["db", "url", "cache"]).trim().to_string();
    let nodes_of = |d: &Value| -> Vec<String> {
        let mut v: Vec<String> = members(d).iter().filter_map(|m| m["node"].as_str().map(String::from)).collect();
        v.sort();
        v
    };
    let master = before["primary_node"].as_str().expect("master").to_string();
    let on = nodes_of(&before);
    let replica = on.iter().find(|n| **n != master).expect("a replica").clone();
    let spare = c.iter().map(|n| n.name.clone()).find(|n| !on.contains(n)).expect("a free node");
    let victim = node_index(&c, &master);
    let watcher = node_index(&c, &spare);
    assert!(!redis_under(&c[victim].dir).is_empty(), "the master's redis-server runs under {:?}", c[victim].dir);

    let writer = PyWriter::start_script(&py, &c[watcher], "redis_writer.py", &[&url], &c[watcher].home, 1);
    writer.wait_acked_after(0.0, 20, Duration::from_secs(20), "writes under way");
    let asked = epoch_now();
    let out = c[watcher].cli_ok(&["drain", &master, "--timeout", "120s"]);
    assert!(out.contains(&format!("node {master} is drained")), "{out}");
    writer.expect_acked_after(&c, epoch_now(), 20, Duration::from_secs(30), "writes after the drain");
    let pause = writer.longest_gap_after(asked);
    let log = writer.stop();
    let acked: Vec<u64> = log.iter().filter(|a| a.acked).map(|a| a.id).collect();
    let after = wait_healthy(&c[watcher], 1, Duration::from_secs(60));
    assert_eq!(after["primary_node"], replica.as_str(), "switched over to the replica: {after}");
    assert_eq!(after["term"].as_u64(), before["term"].as_u64().map(|t| t + 1), "one promotion: {after}");
    let mut expected = vec![replica.clone(), spare.clone()];
    expected.sort();
    assert_eq!(nodes_of(&after), expected, "the member left {master} for {spare}: {after}");
    wait_for("no redis-server left on the drained node", Duration::from_secs(30), || {
        let pids = redis_under(&c[victim].dir);
        seen_unless(pids.is_empty(), (), format!("redis-server pids {pids:?}"))
    });
    assert_eq!(missing_keys(&c[watcher], &url, &acked), Vec::<u64>::new(), "acknowledged writes lost by a drain");
    eprintln!("drain of the master's node: {} acknowledged, none lost; longest write pause {pause:.2} s", acked.len());
    c.finish();
}
