//! Loopback mode (no root or no namespaces needed): nodes are 127.0.<id>.x host addresses,
//! kill and freeze work, network faults say they are unsupported. Runs everywhere.

use std::time::Duration;

use holdfast_testbed::{Mode, Testbed, TestbedConfig, TestbedError};

mod common;

use common::{read_counter, wait_counter_above as wait_above};

#[test]
fn loopback_nodes_kill_and_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::start(TestbedConfig::new("loop").site("a", 2).site("b", 1).mode(Mode::Loopback)).unwrap();
    assert_eq!(tb.mode(), Mode::Loopback);
    assert_eq!(tb.nodes().len(), 3);
    let addr = tb.nodes()[2].addr;
    assert!(addr.is_loopback() && addr.octets()[3] == 12, "{addr}");
    assert_eq!(tb.nodes()[2].site, "b");
    assert!(tb.nodes().iter().all(|n| n.netns.is_none()));

    // A node address is bindable on the host.
    let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
    drop(listener);

    let mut sleeper = tb.spawn(0, &["sleep", "1000"], &[], &dir.path().join("s.log")).unwrap();
    tb.kill(0).unwrap();
    assert!(sleeper.wait_timeout(Duration::from_secs(5)).unwrap().is_some());

    let counter = dir.path().join("counter");
    let script =
        "i=0; while [ $i -lt 6000 ]; do i=$((i+1)); echo $i > \"$0.tmp\"; mv \"$0.tmp\" \"$0\"; sleep 0.01; done";
    let counter_s = counter.to_string_lossy().into_owned();
    let mut counting = tb.spawn(1, &["sh", "-c", script, &counter_s], &[], &dir.path().join("c.log")).unwrap();
    wait_above(&counter, 3);
    tb.freeze(1).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let frozen = read_counter(&counter).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read_counter(&counter), Some(frozen), "counter stops while frozen");
    tb.thaw(1).unwrap();
    wait_above(&counter, frozen + 3);
    counting.kill().unwrap();

    let out = tb.exec(2, &["echo", "hi"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");

    assert!(matches!(tb.partition(&[0], &[1]), Err(TestbedError::Unsupported { .. })));
    assert!(matches!(tb.link_down(0), Err(TestbedError::Unsupported { .. })));
    assert!(matches!(tb.latency_between_sites(10), Err(TestbedError::Unsupported { .. })));
    assert!(matches!(tb.loss(0, 10), Err(TestbedError::Unsupported { .. })));
    assert!(matches!(tb.cut_sites("a", "b"), Err(TestbedError::Unsupported { .. })));
}

#[test]
fn bad_configs_are_refused() {
    let empty = Testbed::start(TestbedConfig::new("bad").mode(Mode::Loopback));
    assert!(matches!(empty, Err(TestbedError::Config(_))));
    let twice = Testbed::start(TestbedConfig::new("bad").site("a", 1).site("a", 1).mode(Mode::Loopback));
    assert!(matches!(twice, Err(TestbedError::Config(_))));
    let tb = Testbed::start(TestbedConfig::new("bad").site("a", 1).mode(Mode::Loopback)).unwrap();
    assert!(matches!(tb.kill(5), Err(TestbedError::NoSuchNode { index: 5, count: 1 })));
    assert!(matches!(tb.site("zz"), Err(TestbedError::NoSuchSite(_))));
}
