//! Data-driven and property tests of the scheduler.
use super::*;
use proptest::prelude::*;

fn node(id: NodeId, cpu: u64, mem_mi: u64) -> NodeView {
    NodeView {
        id,
        name: format!("node-{id}"),
        schedulable: true,
        keeps_replicas: false,
        capacity: Capacity { cpu_millis: cpu, memory_bytes: mem_mi << 20 },
    }
}

fn wl(service: &str, replicas: u32, cpu: u64, mem_mi: u64) -> Workload {
    Workload { service: service.into(), replicas, request: Capacity { cpu_millis: cpu, memory_bytes: mem_mi << 20 } }
}

fn check(workloads: &[Workload], nodes: &[NodeView], previous: &Assignment, expect: &str) {
    let got = match place(workloads, nodes, previous) {
        Ok(a) => a.iter().map(|(s, n)| format!("{s}={n:?}")).collect::<Vec<_>>().join(" "),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expect);
}

#[test]
fn spreads_replicas_over_nodes() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    check(&[wl("web", 3, 100, 64)], &nodes, &Assignment::new(), "web=[1, 2, 3]");
    check(&[wl("web", 4, 100, 64)], &nodes, &Assignment::new(), "web=[1, 2, 3, 1]");
}

#[test]
fn balances_services_across_nodes() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096)];
    check(&[wl("a", 1, 100, 64), wl("b", 1, 100, 64)], &nodes, &Assignment::new(), "a=[1] b=[2]");
}

#[test]
fn keeps_existing_replicas_in_place() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    let prev = Assignment::from([("web".to_string(), vec![3, 1])]);
    check(&[wl("web", 3, 100, 64)], &nodes, &prev, "web=[3, 1, 2]");
    // scale down keeps the lowest replica indices
    check(&[wl("web", 1, 100, 64)], &nodes, &prev, "web=[3]");
}

#[test]
fn moves_replicas_off_unschedulable_nodes() {
    let mut nodes = vec![node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    nodes[0].schedulable = false;
    let prev = Assignment::from([("web".to_string(), vec![1, 2])]);
    check(&[wl("web", 2, 100, 64)], &nodes, &prev, "web=[3, 2]");
}

#[test]
fn a_cordoned_node_that_is_alive_keeps_its_replicas_but_gets_no_new_one() {
    let mut nodes = vec![node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    nodes[0].schedulable = false;
    nodes[0].keeps_replicas = true;
    let prev = Assignment::from([("web".to_string(), vec![1, 2])]);
    check(&[wl("web", 3, 100, 64)], &nodes, &prev, "web=[1, 2, 3]");
    check(&[wl("web", 3, 100, 64)], &nodes, &Assignment::new(), "web=[2, 3, 2]");
}

#[test]
fn shares_a_node_only_when_no_other_fits() {
    let nodes = [node(1, 4000, 4096), node(2, 100, 64)];
    check(&[wl("web", 2, 500, 64)], &nodes, &Assignment::new(), "web=[1, 1]");
}

#[test]
fn refuses_over_capacity_with_detail() {
    let nodes = [node(1, 1000, 1024)];
    check(
        &[wl("web", 3, 400, 64)],
        &nodes,
        &Assignment::new(),
        "error: cannot place replica 2 of `web` (needs 0.40 CPU, 64Mi memory): no node has room (node-1: 0.20 CPU, 896Mi memory free)",
    );
    check(
        &[wl("web", 1, 0, 0)],
        &[],
        &Assignment::new(),
        "error: no node to run `web` on: the cluster has no schedulable node",
    );
}

#[test]
fn zero_replicas_place_nothing() {
    check(&[wl("web", 0, 100, 64)], &[node(1, 100, 64)], &Assignment::new(), "web=[]");
}

#[test]
fn shared_nodes_reports_doubled_replicas() {
    let a = Assignment::from([("web".to_string(), vec![1, 1, 2])]);
    assert_eq!(shared_nodes(&a), vec![("web".to_string(), 1, 2)]);
}

fn arb_case() -> impl Strategy<Value = (Vec<Workload>, Vec<NodeView>)> {
    let nodes = prop::collection::vec((1u64..8000, 1u64..8192, any::<bool>()), 1..8).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (cpu, mem, s))| NodeView {
                id: i as u64 + 1,
                name: format!("n{i}"),
                schedulable: s || i == 0,
                keeps_replicas: false,
                capacity: Capacity { cpu_millis: cpu, memory_bytes: mem << 20 },
            })
            .collect::<Vec<_>>()
    });
    let wls = prop::collection::vec((0u32..6, 0u64..2000, 0u64..1024), 0..6).prop_map(|v| {
        v.into_iter().enumerate().map(|(i, (r, c, m))| wl(&format!("s{i}"), r, c, m)).collect::<Vec<_>>()
    });
    (wls, nodes)
}

proptest! {
    #[test]
    fn never_over_capacity_and_deterministic((wls, nodes) in arb_case()) {
        let first = place(&wls, &nodes, &Assignment::new());
        let second = place(&wls, &nodes, &Assignment::new());
        prop_assert_eq!(&first, &second);
        if let Ok(a) = first {
            let mut used: BTreeMap<NodeId, Capacity> = BTreeMap::new();
            for w in &wls {
                let placed = &a[&w.service];
                prop_assert_eq!(placed.len(), w.replicas as usize);
                for n in placed {
                    let view = nodes.iter().find(|v| v.id == *n).expect("placed on a known node");
                    prop_assert!(view.schedulable);
                    let u = used.entry(*n).or_default();
                    *u = u.add(&w.request);
                    prop_assert!(u.cpu_millis <= view.capacity.cpu_millis);
                    prop_assert!(u.memory_bytes <= view.capacity.memory_bytes);
                }
                // spread: replicas share a node only if the other schedulable nodes could not
                // take one more (checked loosely: with zero requests, counts differ by <= 1)
                if w.request == Capacity::default() {
                    let mut counts: BTreeMap<NodeId, usize> = nodes.iter().filter(|v| v.schedulable).map(|v| (v.id, 0)).collect();
                    for n in placed { *counts.entry(*n).or_default() += 1; }
                    let max = counts.values().max().copied().unwrap_or(0);
                    let min = counts.values().min().copied().unwrap_or(0);
                    prop_assert!(max - min <= 1, "uneven spread {:?}", counts);
                }
            }
            // idempotent: placing again with the result as previous changes nothing
            let again = place(&wls, &nodes, &a);
            prop_assert_eq!(again, Ok(a));
        }
    }
}
