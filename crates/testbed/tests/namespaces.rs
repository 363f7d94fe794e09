//! Namespaces-mode tests: connectivity, every network fault and its heal, kill and
//! freeze of node processes, latency, cleanup (also after a panic) and parallel testbeds.
//! Without root they print SKIPPED; under CI=true they must run.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{leftovers, namespaces_or_skip, ping, ping_ok, read_counter, rtts, two_sites, wait_counter_above};

#[test]
fn every_node_pings_every_other() {
    if !namespaces_or_skip("every_node_pings_every_other") {
        return;
    }
    let tb = two_sites("mesh", 2);
    assert!(holdfast_testbed::guard_route_present().unwrap(), "guard route while a testbed lives");
    for from in 0..4 {
        for to in 0..4 {
            if from != to {
                assert!(ping_ok(&tb, from, to), "ping {from} -> {to}");
            }
        }
    }
}

#[test]
fn partition_and_heal() {
    if !namespaces_or_skip("partition_and_heal") {
        return;
    }
    let tb = two_sites("part", 2);
    let (a, b) = (tb.site("a").unwrap().to_vec(), tb.site("b").unwrap().to_vec());
    assert!(ping_ok(&tb, 0, 2));
    tb.partition(&a, &b).unwrap();
    assert!(!ping(&tb, 0, 2), "across the partition");
    assert!(!ping(&tb, 3, 1), "across the partition, other way");
    assert!(ping_ok(&tb, 0, 1), "within site a");
    assert!(ping_ok(&tb, 2, 3), "within site b");
    tb.heal_partitions().unwrap();
    assert!(ping_ok(&tb, 0, 2), "healed");
    assert!(ping_ok(&tb, 3, 1), "healed, other way");
    // A partition inside one site works too.
    tb.partition(&[0], &[1]).unwrap();
    assert!(!ping(&tb, 0, 1));
    assert!(ping_ok(&tb, 0, 2));
    tb.heal_partitions().unwrap();
    assert!(ping_ok(&tb, 0, 1));
}

#[test]
fn cut_and_join_sites() {
    if !namespaces_or_skip("cut_and_join_sites") {
        return;
    }
    let tb = two_sites("cut", 2);
    tb.cut_sites("a", "b").unwrap();
    assert!(!ping(&tb, 0, 2), "across the cut");
    assert!(!ping(&tb, 3, 1), "across the cut, other way");
    assert!(ping_ok(&tb, 0, 1), "within site a");
    assert!(ping_ok(&tb, 3, 2), "within site b");
    tb.join_sites("b", "a").unwrap();
    assert!(ping_ok(&tb, 0, 2), "joined");
    assert!(ping_ok(&tb, 3, 1), "joined, other way");
    assert!(tb.cut_sites("a", "a").is_err());
    assert!(tb.cut_sites("a", "nope").is_err());
}

#[test]
fn link_down_and_up() {
    if !namespaces_or_skip("link_down_and_up") {
        return;
    }
    let tb = two_sites("link", 2);
    tb.link_down(1).unwrap();
    assert!(!ping(&tb, 1, 0), "from the unplugged node");
    assert!(!ping(&tb, 0, 1), "to the unplugged node");
    assert!(ping_ok(&tb, 0, 2), "others unaffected");
    tb.link_up(1).unwrap();
    assert!(ping_ok(&tb, 1, 0), "plugged back in");
    assert!(ping_ok(&tb, 2, 1));
}

#[test]
fn loss_and_clear() {
    if !namespaces_or_skip("loss_and_clear") {
        return;
    }
    let tb = two_sites("loss", 1);
    tb.loss(0, 100).unwrap();
    assert!(!ping(&tb, 0, 1));
    assert!(!ping(&tb, 1, 0));
    tb.clear_loss(0).unwrap();
    assert!(ping_ok(&tb, 0, 1));
    assert!(tb.loss(0, 101).is_err());
}

#[test]
fn kill_freeze_thaw_processes() {
    if !namespaces_or_skip("kill_freeze_thaw_processes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = two_sites("proc", 1);
    assert!(tb.cgroup_dir(0).is_some(), "cgroup v2 is available on this kind of machine");

    let mut sleeper = tb.spawn(0, &["sleep", "1000"], &[], &dir.path().join("sleep.log")).unwrap();
    assert!(sleeper.is_running());
    let procs = std::fs::read_to_string(tb.cgroup_dir(0).unwrap().join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l.trim() == sleeper.pid().to_string()), "process is in the node's cgroup");
    tb.kill(0).unwrap();
    assert!(sleeper.wait_timeout(Duration::from_secs(5)).unwrap().is_some(), "killed");
    assert!(!Path::new(&format!("/proc/{}/cmdline", sleeper.pid())).exists() || !sleeper.is_running());

    // The env reaches the process and it runs in the node's namespace (its address is there).
    let counter = dir.path().join("counter");
    let script = "i=0; while [ $i -lt 6000 ]; do i=$((i+1)); echo $i > \"$COUNTER.tmp\"; mv \"$COUNTER.tmp\" \"$COUNTER\"; sleep 0.01; done";
    let counter_s = counter.to_string_lossy().into_owned();
    let mut counting =
        tb.spawn(1, &["sh", "-c", script], &[("COUNTER", counter_s.as_str())], &dir.path().join("count.log")).unwrap();
    let first = wait_counter_above(&counter, 3);
    tb.freeze(1).unwrap();
    let frozen = read_counter(&counter).expect("counter readable");
    assert!(frozen >= first);
    // The counter ticks every 10 ms; 400 ms still is 40 ticks missed.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read_counter(&counter), Some(frozen), "counter stops while frozen");
    assert!(counting.is_running(), "a frozen process still exists");
    tb.thaw(1).unwrap();
    wait_counter_above(&counter, frozen + 3);
    drop(counting);

    let ip = tb.exec(1, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(String::from_utf8_lossy(&ip.stdout).contains(&tb.nodes()[1].addr.to_string()));
}

#[test]
fn latency_between_sites() {
    if !namespaces_or_skip("latency_between_sites") {
        return;
    }
    let tb = two_sites("lat", 2);
    assert!(ping_ok(&tb, 0, 2));
    let guard = tb.latency_between_sites(20).unwrap();
    assert!(matches!(tb.latency_between_sites(5), Err(holdfast_testbed::TestbedError::LatencyActive)));
    let across = rtts(&tb, 0, 2, 4);
    assert_eq!(across.len(), 4, "all pings across answered: {across:?}");
    assert!(across.iter().all(|ms| *ms >= 40.0), "RTT across sites >= 40 ms: {across:?}");
    let within = rtts(&tb, 0, 1, 4);
    assert_eq!(within.len(), 4);
    let best = within.iter().cloned().fold(f64::MAX, f64::min);
    assert!(best < 5.0, "RTT within a site < 5 ms: {within:?}");
    drop(guard);
    let after = rtts(&tb, 0, 2, 3);
    assert!(after.iter().cloned().fold(f64::MAX, f64::min) < 5.0, "latency removed: {after:?}");
    // A second guard can be taken once the first is gone.
    drop(tb.latency_between_sites(1).unwrap());
}

#[test]
fn cleanup_after_drop_and_after_panic() {
    if !namespaces_or_skip("cleanup_after_drop_and_after_panic") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = two_sites("clean", 2);
    let prefix = tb.prefix().to_string();
    let _proc = tb.spawn(0, &["sleep", "1000"], &[], &dir.path().join("s.log")).unwrap();
    tb.partition(&[0], &[1]).unwrap();
    let _latency = tb.latency_between_sites(5).unwrap();
    assert!(!leftovers(&prefix).is_empty(), "namespaces exist while alive");
    drop(_latency);
    drop(tb);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());

    let mut panicked_prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let tb = two_sites("panic", 2);
        panicked_prefix = tb.prefix().to_string();
        let _proc = tb.spawn(1, &["sleep", "1000"], &[], &dir.path().join("p.log")).unwrap();
        tb.loss(0, 50).unwrap();
        let _latency = tb.latency_between_sites(5).unwrap();
        panic!("test body fails");
    }));
    assert!(result.is_err());
    assert!(!panicked_prefix.is_empty());
    assert_eq!(leftovers(&panicked_prefix), Vec::<String>::new());
    let tables = std::process::Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("holdfast_testbed"), "no nft table in the root ns");
}

#[test]
fn parallel_testbeds_do_not_interfere() {
    if !namespaces_or_skip("parallel_testbeds_do_not_interfere") {
        return;
    }
    let (one, two) = std::thread::scope(|s| {
        let a = s.spawn(|| two_sites("par1", 1));
        let b = s.spawn(|| two_sites("par2", 1));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(one.prefix(), two.prefix());
    assert_ne!(one.nodes()[0].addr, two.nodes()[0].addr, "each testbed has its own /24");
    one.partition(&[0], &[1]).unwrap();
    std::thread::scope(|s| {
        let a = s.spawn(|| ping(&one, 0, 1));
        let b = s.spawn(|| ping_ok(&two, 0, 1));
        assert!(!a.join().unwrap(), "partitioned in testbed one");
        assert!(b.join().unwrap(), "testbed two unaffected");
    });
    // A node of one testbed cannot reach the other testbed's nodes.
    let other = two.nodes()[1].addr.to_string();
    assert!(!one.exec(0, &["ping", "-n", "-c1", "-W1", &other]).unwrap().status.success());
    let prefix = one.prefix().to_string();
    drop(one);
    assert!(leftovers(&prefix).is_empty());
    assert!(ping_ok(&two, 1, 0), "dropping one leaves two working");
}

#[test]
fn run_in_node_enters_the_namespace() {
    if !namespaces_or_skip("run_in_node_enters_the_namespace") {
        return;
    }
    let tb = two_sites("inproc", 1);
    let server_addr = tb.nodes()[1].addr;
    let listener = tb.run_in_node(1, || std::net::TcpListener::bind((server_addr, 0))).unwrap().unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepting = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer));
    let peer = tb
        .run_in_node(0, || std::net::TcpStream::connect_timeout(&(server_addr, port).into(), Duration::from_secs(5)))
        .unwrap()
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(tb.nodes()[0].addr));
    assert_eq!(accepting.join().unwrap().unwrap().ip(), peer.ip());
}

#[test]
fn three_sites_cut_one_pair() {
    if !namespaces_or_skip("three_sites_cut_one_pair") {
        return;
    }
    let tb = holdfast_testbed::Testbed::start(
        holdfast_testbed::TestbedConfig::new("three").site("a", 1).site("b", 1).site("c", 1),
    )
    .unwrap();
    assert_eq!(tb.mode(), holdfast_testbed::Mode::Namespaces);
    tb.cut_sites("a", "b").unwrap();
    assert!(!ping(&tb, 0, 1), "a-b cut");
    assert!(ping_ok(&tb, 0, 2), "a-c still up");
    assert!(ping_ok(&tb, 1, 2), "b-c still up");
    tb.join_sites("a", "b").unwrap();
    assert!(ping_ok(&tb, 0, 1));
}

#[test]
fn start_sweeps_leftovers_of_dead_processes() {
    if !namespaces_or_skip("start_sweeps_leftovers_of_dead_processes") {
        return;
    }
    // A pid that is certainly dead: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let stale = format!("hft-{dead}-stale-99");
    let netns = format!("{stale}-n0");
    assert!(std::process::Command::new("ip").args(["netns", "add", &netns]).status().unwrap().success());
    let cgroup_root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|r| Path::new(r).join("cgroup.subtree_control").exists())
        .unwrap();
    let cgroup = Path::new(cgroup_root).join(&stale);
    std::fs::create_dir_all(cgroup.join("n0")).unwrap();
    assert_eq!(leftovers(&stale).len(), 2);

    let tb = two_sites("sweeper", 1);
    assert_eq!(leftovers(&stale), Vec::<String>::new(), "swept at start");
    // The live testbed's own names are untouched by sweeps of others.
    assert!(!leftovers(tb.prefix()).is_empty());
}
