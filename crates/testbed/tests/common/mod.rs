//! Helpers shared by the testbed's integration tests: two-site testbeds, pings and RTT
//! parsing, leftovers; counters written by a node process and read with `wait_for`.

#![allow(dead_code)]

use std::time::Duration;

use holdfast_testbed::{Mode, Testbed, TestbedConfig};

/// Whether namespace tests can run (the harness's one check: panics under `CI=true`).
#[allow(unused_imports)] // not every test binary needs it
pub use holdfast_testbed::namespaces_or_skip;

/// Starts a namespaces-mode testbed with sites `a` and `b` of `per_site` nodes each.
pub fn two_sites(name: &str, per_site: usize) -> Testbed {
    let tb = Testbed::start(TestbedConfig::new(name).site("a", per_site).site("b", per_site).mode(Mode::Namespaces))
        .expect("testbed starts");
    assert_eq!(tb.mode(), Mode::Namespaces);
    tb
}

/// One ping from node `from` to node `to` (1 s timeout), inside `from`'s namespace.
pub fn ping(tb: &Testbed, from: usize, to: usize) -> bool {
    let addr = tb.nodes()[to].addr.to_string();
    let out = tb.exec_timeout(from, &["ping", "-n", "-c1", "-W1", &addr], Duration::from_secs(10)).expect("ping runs");
    out.status.success()
}

/// Pings with a few retries (the first packet may wait for ARP or a freshly applied rule).
pub fn ping_ok(tb: &Testbed, from: usize, to: usize) -> bool {
    (0..3).any(|_| ping(tb, from, to))
}

/// Round-trip times in ms of `count` pings from `from` to `to`.
pub fn rtts(tb: &Testbed, from: usize, to: usize, count: u32) -> Vec<f64> {
    let addr = tb.nodes()[to].addr.to_string();
    let count = count.to_string();
    let out = tb
        .exec_timeout(from, &["ping", "-n", "-c", &count, "-i", "0.2", "-W1", &addr], Duration::from_secs(20))
        .expect("ping runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The names in `ip netns list` and `ip link` (root namespace) that contain `prefix`.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for args in [&["netns", "list"][..], &["link", "show"][..]] {
        let out = std::process::Command::new("ip").args(args).output().expect("ip runs");
        found.extend(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(prefix)).map(String::from));
    }
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let dir = std::path::Path::new(root).join(prefix);
        if dir.exists() {
            found.push(dir.display().to_string());
        }
    }
    found
}

/// The number in a counter file a node process rewrites, if it is readable now.
pub fn read_counter(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until the counter file holds a number above `above`; returns it.
pub fn wait_counter_above(path: &std::path::Path, above: u64) -> u64 {
    holdfast_testbed::wait_for(&format!("counter above {above}"), Duration::from_secs(10), || {
        let n = read_counter(path);
        holdfast_testbed::seen_unless(n.is_some_and(|n| n > above), n.unwrap_or(0), n)
    })
}
