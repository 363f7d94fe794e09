//! A real PostgreSQL primary and replica driven by this crate's operations: initdb, roles,
//! base backup, streaming, promotion, and a former primary rewound into a replica.
//! Proves the SQL and the command lines work against the machine's PostgreSQL, not just
//! that they are rendered.
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use holdfast_postgres::admin::Admin;
use holdfast_postgres::conf::{self, MemberConf, Upstream};
use holdfast_postgres::datadir::{self, Marker, MemberDir};
use holdfast_postgres::install::{self, OsUser};

fn installed() -> Option<(install::Binaries, OsUser)> {
    match (install::discover(None), install::member_user()) {
        (Ok(b), Ok(u)) => Some((b, u)),
        (b, u) => {
            assert!(std::env::var("CI").is_err(), "CI must have PostgreSQL: {b:?} {u:?}");
            eprintln!("skipping: no PostgreSQL here ({b:?} {u:?})");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Running(std::process::Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn start(bins: &install::Binaries, dir: &MemberDir, user: &OsUser, port: u16) -> Running {
    let log = std::fs::File::create(dir.root.join("postgres.log")).expect("log");
    let child = std::process::Command::new(bins.program("postgres"))
        .arg("-D")
        .arg(dir.data())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .uid(user.uid)
        .gid(user.gid)
        .spawn()
        .expect("postgres");
    let _ = port;
    Running(child)
}

async fn admin_when_up(dir: &MemberDir, port: u16, pw: &str) -> Admin {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Admin::connect(&dir.socket(), port, pw, Duration::from_secs(2)).await {
            Ok(a) => return a,
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.root.join("postgres.log")).unwrap_or_default();
                panic!("postgres on {port} never answered: {e}\n{log}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn write_conf(dir: &MemberDir, user: &OsUser, port: u16, upstream: Option<Upstream<'_>>, sync: String) {
    let params = BTreeMap::from([("shared_buffers".to_string(), "16MB".to_string())]);
    let text = conf::postgresql_conf(&MemberConf {
        name: &format!("db-m{}", if upstream.is_some() { 1 } else { 0 }),
        port,
        socket_dir: &dir.socket(),
        upstream,
        sync_standbys: sync,
        parameters: &params,
    });
    dir.write_file("postgresql.conf", &text, user).expect("conf");
    dir.write_file("pg_hba.conf", &conf::pg_hba_conf(), user).expect("hba");
}

#[tokio::test]
async fn primary_replica_promotion_and_rewind() {
    let Some((bins, user)) = installed() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    assert_eq!(install::untraversable_ancestor(&tmp.path().join("a/data"), &user), None);
    let (su, repl) = ("su-secret", "repl-secret");
    let users = BTreeMap::from([("app".to_string(), "app-secret".to_string())]);

    // The first primary.
    let p = MemberDir::new(tmp.path().join("m0"));
    p.create(&user).expect("dirs");
    datadir::initdb(&bins, &p, &user, su).await.expect("initdb");
    let p_port = free_port();
    write_conf(&p, &user, p_port, None, String::new());
    p.set_marker(&Marker { ready: true, primary_term: 1 }).expect("marker");
    let primary = start(&bins, &p, &user, p_port);
    let pa = admin_when_up(&p, p_port, su).await;
    pa.ensure_roles(&users, repl, &["app".to_string()], Some("app")).await.expect("roles");
    pa.ensure_roles(&users, repl, &["app".to_string()], Some("app")).await.expect("roles again (idempotent)");
    pa.ensure_slots("db_m", &["db_m1".to_string()]).await.expect("slots");
    let probe = pa.probe().await.expect("probe");
    assert!(!probe.in_recovery && probe.timeline == 1 && probe.lsn > 0, "{probe:?}");

    // The app user logs in over TCP with its password (psql, a real client).
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &p_port.to_string(), "-U", "app", "-d", "app", "-Atc"])
        .arg("CREATE TABLE t (v int); INSERT INTO t VALUES (1); SELECT count(*) FROM t")
        .env("PGPASSWORD", "app-secret")
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or(""),
        "1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A replica cloned from it streams.
    let r = MemberDir::new(tmp.path().join("m1"));
    r.create(&user).expect("dirs");
    datadir::basebackup(&bins, &r, &user, "127.0.0.1", p_port, repl).await.expect("basebackup");
    let r_port = free_port();
    let up = Upstream { host: "127.0.0.1", port: p_port, password: repl, slot: "db_m1" };
    write_conf(&r, &user, r_port, Some(up.clone()), String::new());
    r.set_standby(true, &user).expect("standby.signal");
    r.set_marker(&Marker { ready: true, primary_term: 0 }).expect("marker");
    let replica = start(&bins, &r, &user, r_port);
    let ra = admin_when_up(&r, r_port, su).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pr = ra.probe().await.expect("probe replica");
        let standbys = pa.standbys().await.expect("standbys");
        if pr.in_recovery && pr.streaming && standbys.contains_key("db-m1") {
            break;
        }
        assert!(Instant::now() < deadline, "replica never streamed: {pr:?} {standbys:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Promote the replica; the old primary (stopped) is rewound and follows it.
    drop(pa);
    drop(primary);
    ra.promote().await.expect("promote");
    let after = ra.probe().await.expect("probe");
    assert!(!after.in_recovery && after.timeline == 2, "{after:?}");
    ra.ensure_slots("db_m", &["db_m0".to_string()]).await.expect("slot for the old primary");
    // A write on the new timeline that the old primary never had.
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &r_port.to_string(), "-U", "app", "-d", "app", "-Atc"])
        .arg("INSERT INTO t VALUES (2); SELECT count(*) FROM t")
        .env("PGPASSWORD", "app-secret")
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or(""),
        "2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = datadir::rewind(&bins, &p, &user, "127.0.0.1", r_port, su).await.expect("rewind");
    eprintln!("pg_rewind: {text}");
    let up0 = Upstream { host: "127.0.0.1", port: r_port, password: repl, slot: "db_m0" };
    write_conf(&p, &user, p_port, Some(up0), String::new());
    p.set_standby(true, &user).expect("standby.signal");
    let _old = start(&bins, &p, &user, p_port);
    let oa = admin_when_up(&p, p_port, su).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pr = oa.probe().await.expect("probe");
        if pr.in_recovery && pr.timeline == 2 && pr.streaming {
            break;
        }
        assert!(Instant::now() < deadline, "the former primary never followed: {pr:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(replica);
    let _ = Path::new("");
}
