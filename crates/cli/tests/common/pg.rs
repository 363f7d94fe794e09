//! What the managed-PostgreSQL tests share: psql inside a node, the `db status` view,
//! waiting for a primary with streaming replicas, a direct look at every member's
//! postgres, and the drills' writer (`bench/pg_writer.py` on psycopg 3 from PyPI, a
//! client from another ecosystem with only its usual reconnect), whose every write is
//! logged as acknowledged or failed-or-unknown.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::*;

/// PostgreSQL server binaries and psql are on this machine (required under CI).
pub fn have_postgres() -> bool {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.path().join("bin/pg_rewind").is_file()))
        .unwrap_or(false);
    let psql = std::process::Command::new("psql").arg("--version").output().is_ok();
    if !(found && psql) {
        assert!(std::env::var("CI").is_err(), "CI must have PostgreSQL and psql (scripts/test.sh installs them)");
        eprintln!("skipping: no PostgreSQL server or psql here");
    }
    found && psql
}

/// The python with psycopg 3 and redis-py (`HOLDFAST_TEST_PYTHON`, set by scripts/test.sh
/// from scripts/pyenv.sh; required under CI).
pub fn python() -> Option<PathBuf> {
    let py = std::env::var_os("HOLDFAST_TEST_PYTHON").map(PathBuf::from).filter(|p| {
        std::process::Command::new(p).args(["-c", "import psycopg, redis"]).output().is_ok_and(|o| o.status.success())
    });
    if py.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have psycopg: run through scripts/test.sh (HOLDFAST_TEST_PYTHON from scripts/pyenv.sh)"
        );
        eprintln!("skipping: no HOLDFAST_TEST_PYTHON with psycopg (PY=$(bash scripts/pyenv.sh))");
    }
    py
}

/// One statement through `url` with psql inside `node` (its namespace, if any): its
/// output, or the error. Bounded: a psql still waiting after 10 s is killed (an error).
pub fn psql(node: &Node, url: &str, sql: &str) -> Result<String, String> {
    let argv = ["env", "PGCONNECT_TIMEOUT=3", "psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql];
    let out = node.exec_within(&argv, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The first database of `db status --json` as `n` sees it.
pub fn db(n: &Node) -> Result<Value, String> {
    let v = n.cli_json(&["db", "status"])?;
    v["databases"].as_array().and_then(|a| a.first()).cloned().ok_or_else(|| format!("no database: {v}"))
}

/// Whether `d` (a `db status` database) has its primary of the current term and at
/// least `replicas` streaming replicas.
pub fn healthy(d: &Value, replicas: usize) -> bool {
    let term = d["term"].as_u64().unwrap_or(0);
    let members = d["members"].as_array().cloned().unwrap_or_default();
    let primary = members.iter().any(|m| m["role"] == "primary" && m["term"].as_u64() == Some(term));
    let streaming = members.iter().filter(|m| m["role"] == "replica" && m["streaming"] == true).count();
    primary && streaming >= replicas
}

/// Waits until the database has its primary of the current term and `replicas`
/// streaming replicas; returns the status.
pub fn wait_healthy(n: &Node, replicas: usize, within: Duration) -> Value {
    wait_for("a primary and streaming replicas", within, || {
        let d = db(n)?;
        seen_unless(healthy(&d, replicas), d.clone(), d.to_string())
    })
}

/// The index of the node called `name`.
pub fn node_index(c: &Cluster, name: &str) -> usize {
    c.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
}

/// The acknowledged rows of `acked` that `url` does not have (read inside `node`).
pub fn missing(node: &Node, url: &str, table: &str, acked: &[u64]) -> Vec<u64> {
    let rows =
        wait_for("the rows read back", Duration::from_secs(20), || psql(node, url, &format!("SELECT * FROM {table}")));
    let have: BTreeSet<u64> = rows.lines().filter_map(|l| l.parse().ok()).collect();
    acked.iter().copied().filter(|v| !have.contains(v)).collect()
}

/// What each member's own postgres says, looked at directly on its node (not through
/// holdfast's proxies): `Some(false)` a primary (takes writes), `Some(true)` in recovery,
/// `None` not running or not answering. By member index.
pub fn members_directly(c: &Cluster, admin_url: &str, database: &str, members: usize) -> Vec<Option<bool>> {
    members_answer(c, admin_url, database, members, "SELECT pg_is_in_recovery()")
        .into_iter()
        .map(|a| a.map(|out| out == "t"))
        .collect()
}

/// What each member's own postgres answers to `sql`, looked at directly on its node (a
/// running member is found by its `postmaster.pid`); `None`: not running or not
/// answering. By member index.
pub fn members_answer(c: &Cluster, admin_url: &str, database: &str, members: usize, sql: &str) -> Vec<Option<String>> {
    (0..members)
        .map(|k| {
            c.iter().filter(|n| n.running()).find_map(|n| {
                let pid = n.dir.join(format!("databases/{database}/m{k}/data/postmaster.pid"));
                let text = std::fs::read_to_string(pid).ok()?;
                let port: u16 = text.lines().nth(3)?.trim().parse().ok()?;
                let url = at_port(admin_url, port)?;
                psql(n, &url, sql).ok()
            })
        })
        .collect()
}

/// `url` pointed at 127.0.0.1:`port` (one member's postgres on its own node).
fn at_port(url: &str, port: u16) -> Option<String> {
    let (head, rest) = url.rsplit_once('@')?;
    let (_, path) = rest.split_once('/')?;
    Some(format!("{head}@127.0.0.1:{port}/{path}"))
}

/// One write of the writer: its id, when it was sent and answered (seconds since the
/// epoch), and whether it was acknowledged (a failure may still have committed).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: u64,
    pub sent: f64,
    pub done: f64,
    pub acked: bool,
    pub detail: String,
}

/// Seconds since the epoch now, as the writer logs them.
pub fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `bench/pg_writer.py` running inside a node's namespace (not its cgroup: the client
/// survives the node's faults): one INSERT into `t(id)` every 10 ms through a URL,
/// reconnecting after an error. Killed when dropped.
pub struct PyWriter {
    child: Child,
    out: PathBuf,
    stop: PathBuf,
}

impl PyWriter {
    /// Starts the writer in `node` with `python`, writing its log under `dir`.
    pub fn start(python: &Path, node: &Node, url: &str, dir: &Path) -> PyWriter {
        PyWriter::start_at(python, node, url, dir, 1)
    }

    /// [`PyWriter::start`] whose first write has id `first_id` (several writers, one
    /// table); its log is `writer-<node>-<first_id>.tsv` under `dir`.
    pub fn start_at(python: &Path, node: &Node, url: &str, dir: &Path, first_id: u64) -> PyWriter {
        PyWriter::start_script(python, node, "pg_writer.py", &[url], dir, first_id)
    }

    /// `bench/<script>` (`pg_writer.py`, `redis_writer.py`) with `--dsn` and the given
    /// arguments (`args[0]` is the DSN), first id `first_id`.
    pub fn start_script(
        python: &Path,
        node: &Node,
        script: &str,
        args: &[&str],
        dir: &Path,
        first_id: u64,
    ) -> PyWriter {
        let url = args.first().copied().unwrap_or_default();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench").join(script);
        let out = dir.join(format!("writer-{}-{first_id}.tsv", node.name));
        let stop = dir.join(format!("writer-{}-{first_id}.stop", node.name));
        let _ = std::fs::remove_file(&stop);
        let py = python.to_string_lossy().into_owned();
        let script = script.to_string_lossy().into_owned();
        let (o, s) = (out.to_string_lossy().into_owned(), stop.to_string_lossy().into_owned());
        let first = first_id.to_string();
        let argv = [
            py.as_str(),
            script.as_str(),
            "--dsn",
            url,
            "--out",
            &o,
            "--stop",
            &s,
            "--max-seconds",
            "900",
            "--first-id",
            &first,
        ];
        let mut argv: Vec<&str> = argv.to_vec();
        argv.extend(args.iter().skip(1));
        let child = node
            .client_command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the writer");
        PyWriter { child, out, stop }
    }

    /// Every attempt so far.
    pub fn log(&self) -> Vec<Attempt> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Some(Attempt {
                    id: f.get(1)?.parse().ok()?,
                    sent: f.get(2)?.parse().ok()?,
                    done: f.get(3)?.parse().ok()?,
                    acked: *f.first()? == "A",
                    detail: f.get(4..).map(|r| r.join(" ")).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The ids of acknowledged writes.
    pub fn acked(&self) -> Vec<u64> {
        self.log().iter().filter(|a| a.acked).map(|a| a.id).collect()
    }

    /// How many writes sent after `t` (epoch seconds) were acknowledged.
    pub fn acked_after(&self, t: f64) -> usize {
        self.log().iter().filter(|a| a.acked && a.sent > t).count()
    }

    /// Waits until `n` writes sent after `t` are acknowledged.
    pub fn wait_acked_after(&self, t: f64, n: usize, within: Duration, what: &str) {
        wait_for(what, within, || {
            let got = self.acked_after(t);
            seen_unless(got >= n, (), format!("{got} acknowledged; last: {:?}", self.log().last()))
        });
    }

    /// [`PyWriter::wait_acked_after`] that, when the writes do not come, fails with what
    /// every node of `c` says about the database and its loops.
    pub fn expect_acked_after(&self, c: &Cluster, t: f64, n: usize, within: Duration, what: &str) {
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if self.acked_after(t) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(secs) = std::env::var("HOLDFAST_TEST_PAUSE").ok().and_then(|s| s.parse().ok()) {
            eprintln!("{what}: failed; pausing {secs} s for a look (HOLDFAST_TEST_PAUSE)");
            std::thread::sleep(Duration::from_secs(secs));
        }
        panic!(
            "timed out after {within:?} waiting for {what}: {} acknowledged; last attempt {:?}\n{}",
            self.acked_after(t),
            self.log().last(),
            diagnose(c)
        );
    }
}

/// What every running node of `c` says: its database view, lease, links and background
/// loops (each question bounded: a frozen node does not answer).
pub fn diagnose(c: &Cluster) -> String {
    let mut out = String::new();
    let bound = Duration::from_secs(5);
    for n in c.iter().filter(|n| n.running()) {
        let status = match n.cli_within(&["db", "status", "--json"], bound) {
            Ok(o) => serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null),
            Err(e) => {
                out.push_str(&format!("--- {}: no answer ({e})\n", n.name));
                continue;
            }
        };
        let d = &status["databases"][0];
        let members: Vec<String> = d["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let up = if m["answering"] == true { "up" } else { "-" };
                format!("{}:{}/t{}/{up}/lsn {}", m["node"], m["role"], m["term"], m["lsn"])
            })
            .collect();
        let workers = n.cli_within(&["workers"], bound).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        out.push_str(&format!(
            "--- {}: term {} primary {} members {}\nlease {}\nlinks {}\n{}\n",
            n.name,
            d["term"],
            d["primary_node"],
            members.join(" "),
            status["lease"],
            n.links(),
            workers.unwrap_or_else(|e| e.to_string())
        ));
    }
    out
}

impl PyWriter {
    /// The longest time without an acknowledged write after `t` (epoch seconds): from
    /// the last acknowledged write before the gap to the first after it.
    pub fn longest_gap_after(&self, t: f64) -> f64 {
        let acks: Vec<f64> = self.log().iter().filter(|a| a.acked).map(|a| a.done).collect();
        acks.windows(2).filter(|w| w[1] > t).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    }

    /// Stops the writer (bounded) and returns its whole log.
    pub fn stop(mut self) -> Vec<Attempt> {
        let _ = std::fs::write(&self.stop, "");
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for PyWriter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kinds of the events about `subject`, oldest first, as node `n` answers them
/// (`holdfast events`: every node's journal merged).
pub fn event_kinds(n: &Node, subject: &str) -> Vec<String> {
    let ev = n.cli_json(&["events"]).unwrap_or_default();
    ev["events"]
        .as_array()
        .map(|a| {
            a.iter().filter(|e| e["subject"] == subject).filter_map(|e| e["kind"].as_str().map(String::from)).collect()
        })
        .unwrap_or_default()
}
