//! The guard route's lifecycle, in its own test binary so no other testbed of this process
//! is alive: `unreachable 10.99.0.0/16` exists while testbeds live (two at once here) and is
//! gone after the last one is dropped.

mod common;

use common::{namespaces_or_skip, ping_ok, two_sites};

#[test]
fn guard_route_follows_the_last_testbed() {
    if !namespaces_or_skip("guard_route_follows_the_last_testbed") {
        return;
    }
    let first = two_sites("guard1", 2);
    assert!(holdfast_testbed::guard_route_present().unwrap());
    let second = two_sites("guard2", 1);
    assert!(ping_ok(&first, 0, 3));
    drop(first);
    assert!(holdfast_testbed::guard_route_present().unwrap(), "still needed by the second testbed");
    assert!(ping_ok(&second, 1, 0));
    drop(second);
    if holdfast_testbed::live_namespace_testbeds() == 0 {
        assert!(!holdfast_testbed::guard_route_present().unwrap(), "removed with the last testbed");
    } else {
        eprintln!("another process runs a testbed: the route stays, as it should");
    }
}
