//! Data-driven and property tests of the scheduler.
use super::*;
use proptest::prelude::*;

fn node(id: NodeId, cpu: u64, mem_mi: u64) -> NodeView {
    labelled(id, cpu, mem_mi, "default", &[])
}

/// A node in `site` with extra `labels` (built-ins `name`, `site`, `arch` added).
fn labelled(id: NodeId, cpu: u64, mem_mi: u64, site: &str, labels: &[(&str, &str)]) -> NodeView {
    let name = format!("node-{id}");
    let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert(LABEL_NAME.into(), name.clone());
    l.insert(LABEL_SITE.into(), site.into());
    l.entry(LABEL_ARCH.into()).or_insert_with(|| "amd64".into());
    NodeView {
        id,
        name,
        schedulable: true,
        keeps_replicas: false,
        capacity: Capacity { cpu_millis: cpu, memory_bytes: mem_mi << 20 },
        labels: l,
    }
}

fn wl(service: &str, replicas: u32, cpu: u64, mem_mi: u64) -> Workload {
    Workload::new(service, replicas, Capacity { cpu_millis: cpu, memory_bytes: mem_mi << 20 })
}

fn selecting(mut w: Workload, selector: &[(&str, &str)]) -> Workload {
    w.selector = selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    w
}

fn avoiding(mut w: Workload, services: &[&str]) -> Workload {
    w.anti_affinity = services.iter().map(|s| s.to_string()).collect();
    w
}

fn by_sites(mut w: Workload) -> Workload {
    w.spread = Spread::Sites;
    w
}

fn render(result: Result<Assignment, PlacementError>) -> String {
    match result {
        Ok(a) => a.iter().map(|(s, n)| format!("{s}={n:?}")).collect::<Vec<_>>().join(" "),
        Err(e) => format!("error: {e}"),
    }
}

fn check(workloads: &[Workload], nodes: &[NodeView], previous: &Assignment, expect: &str) {
    assert_eq!(render(place(workloads, nodes, previous)), expect);
}

fn none() -> Assignment {
    Assignment::new()
}

#[test]
fn a_cordoned_node_that_is_alive_keeps_its_replicas_but_gets_no_new_one() {
    let mut nodes = vec![node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    nodes[0].schedulable = false;
    nodes[0].keeps_replicas = true;
    let prev = Assignment::from([("web".to_string(), vec![1, 2])]);
    let placed = place(&[wl("web", 3, 100, 64)], &nodes, &prev).expect("placed");
    assert_eq!(placed["web"], vec![1, 2, 3]);
    let fresh = place(&[wl("web", 3, 100, 64)], &nodes, &Assignment::new()).expect("placed");
    assert!(!fresh["web"].contains(&1), "nothing new on a cordoned node: {fresh:?}");
}

#[test]
fn spreads_replicas_over_nodes() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    check(&[wl("web", 3, 100, 64)], &nodes, &none(), "web=[1, 2, 3]");
    check(&[wl("web", 4, 100, 64)], &nodes, &none(), "web=[1, 2, 3, 1]");
}

#[test]
fn balances_services_across_nodes() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096)];
    check(&[wl("a", 1, 100, 64), wl("b", 1, 100, 64)], &nodes, &none(), "a=[1] b=[2]");
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
fn shares_a_node_only_when_no_other_fits() {
    let nodes = [node(1, 4000, 4096), node(2, 100, 64)];
    check(&[wl("web", 2, 500, 64)], &nodes, &none(), "web=[1, 1]");
}

#[test]
fn refuses_over_capacity_with_detail() {
    let nodes = [node(1, 1000, 1024)];
    check(
        &[wl("web", 3, 400, 64)],
        &nodes,
        &none(),
        "error: cannot place replica 2 of `web` (needs 0.40 CPU, 64Mi memory): no node has room (node-1: 0.20 CPU, 896Mi memory free)",
    );
    check(&[wl("web", 1, 0, 0)], &[], &none(), "error: no node to run `web` on: the cluster has no schedulable node");
}

#[test]
fn zero_replicas_place_nothing() {
    check(&[wl("web", 0, 100, 64)], &[node(1, 100, 64)], &none(), "web=[]");
}

#[test]
fn shared_nodes_reports_doubled_replicas() {
    let a = Assignment::from([("web".to_string(), vec![1, 1, 2])]);
    assert_eq!(shared_nodes(&a), vec![("web".to_string(), 1, 2)]);
}

// ---------------------------------------------------------------- selectors

fn gpu_cluster() -> Vec<NodeView> {
    vec![
        labelled(1, 4000, 4096, "a", &[]),
        labelled(2, 4000, 4096, "a", &[("gpu", "true")]),
        labelled(3, 4000, 4096, "b", &[("arch", "arm64")]),
        labelled(4, 4000, 4096, "b", &[("gpu", "true"), ("arch", "arm64")]),
    ]
}

#[test]
fn selector_limits_replicas_to_matching_nodes() {
    let nodes = gpu_cluster();
    check(&[selecting(wl("ml", 2, 100, 64), &[("gpu", "true")])], &nodes, &none(), "ml=[2, 4]");
    check(&[selecting(wl("ml", 3, 100, 64), &[("gpu", "true")])], &nodes, &none(), "ml=[2, 4, 2]");
    check(&[selecting(wl("pi", 2, 100, 64), &[("arch", "arm64"), ("gpu", "true")])], &nodes, &none(), "pi=[4, 4]");
    check(&[selecting(wl("x", 1, 100, 64), &[("name", "node-3")])], &nodes, &none(), "x=[3]");
    check(&[selecting(wl("x", 2, 100, 64), &[("site", "a")])], &nodes, &none(), "x=[1, 2]");
}

#[test]
fn selector_errors_say_which_label_is_missing() {
    let mut nodes = gpu_cluster();
    check(
        &[selecting(wl("ml", 1, 100, 64), &[("tpu", "v4")])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `ml`: no node matches node_selector {tpu=v4}: no schedulable node has label `tpu`",
    );
    check(
        &[selecting(wl("ml", 1, 100, 64), &[("arch", "riscv64")])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `ml`: no node matches node_selector {arch=riscv64}: no schedulable node has arch=riscv64 (seen: arch=amd64, arch=arm64)",
    );
    check(
        &[selecting(wl("ml", 1, 100, 64), &[("gpu", "true"), ("site", "c")])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `ml`: no node matches node_selector {gpu=true, site=c}: no schedulable node has site=c (seen: site=a, site=b)",
    );
    check(
        &[selecting(wl("ml", 1, 100, 64), &[("arch", "amd64"), ("site", "b")])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `ml`: no node matches node_selector {arch=amd64, site=b}: no single schedulable node has all of these labels",
    );
    nodes[1].schedulable = false;
    nodes[3].schedulable = false;
    check(
        &[selecting(wl("ml", 1, 100, 64), &[("gpu", "true")])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `ml`: no node matches node_selector {gpu=true}: no schedulable node has label `gpu`; node-2, node-4 match but are drained or down",
    );
}

#[test]
fn capacity_errors_name_the_selector() {
    let nodes = gpu_cluster();
    check(
        &[selecting(wl("ml", 3, 3000, 64), &[("gpu", "true")])],
        &nodes,
        &none(),
        "error: cannot place replica 2 of `ml` (needs 3.00 CPU, 64Mi memory): no node matching node_selector {gpu=true} has room (node-2: 1.00 CPU, 4032Mi memory free; node-4: 1.00 CPU, 4032Mi memory free)",
    );
}

#[test]
fn a_selector_value_may_list_alternatives() {
    // An image offering amd64 and arm64 goes on either, never on riscv64.
    let nodes = [
        labelled(1, 4000, 4096, "a", &[("arch", "riscv64")]),
        labelled(2, 4000, 4096, "a", &[("arch", "arm64")]),
        labelled(3, 4000, 4096, "a", &[]),
    ];
    let w = selecting(wl("web", 2, 100, 64), &[("arch", "amd64|arm64")]);
    check(std::slice::from_ref(&w), &nodes, &none(), "web=[2, 3]");
    let only = selecting(wl("web", 1, 100, 64), &[("arch", "arm64|s390x")]);
    check(&[only], &nodes, &none(), "web=[2]");
    let w = selecting(wl("web", 1, 100, 64), &[("arch", "s390x|ppc64le")]);
    assert!(render(place(&[w], &nodes, &none())).contains("no node matches node_selector"));
}

#[test]
fn relabelled_node_moves_only_replicas_whose_selector_no_longer_matches() {
    let mut nodes = gpu_cluster();
    let wls = [selecting(wl("ml", 2, 100, 64), &[("gpu", "true")]), wl("web", 4, 100, 64)];
    let first = place(&wls, &nodes, &none()).expect("placed");
    assert_eq!(render(Ok(first.clone())), "ml=[2, 4] web=[1, 3, 2, 4]");
    nodes[3].labels.remove("gpu");
    nodes[0].labels.insert("gpu".into(), "true".into());
    // ml-1 moves off node-4 (no gpu any more) to node-1; web stays everywhere.
    check(&wls, &nodes, &first, "ml=[2, 1] web=[1, 3, 2, 4]");
}

// ---------------------------------------------------------------- anti-affinity

#[test]
fn anti_affinity_keeps_services_apart_in_both_directions() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096), node(4, 4000, 4096)];
    // db is placed first (alphabetical); web avoids db's nodes although only db names it.
    check(&[wl("db", 2, 100, 64), avoiding(wl("web", 2, 100, 64), &["db"])], &nodes, &none(), "db=[1, 2] web=[3, 4]");
    check(&[avoiding(wl("db", 2, 100, 64), &["web"]), wl("web", 2, 100, 64)], &nodes, &none(), "db=[1, 2] web=[3, 4]");
    // web shares its own nodes rather than a db node.
    check(
        &[wl("db", 2, 100, 64), avoiding(wl("web", 3, 100, 64), &["db"])],
        &nodes,
        &none(),
        "db=[1, 2] web=[3, 4, 3]",
    );
    // an unknown or self reference is ignored
    check(&[avoiding(wl("web", 2, 100, 64), &["web", "gone"])], &nodes, &none(), "web=[1, 2]");
}

#[test]
fn anti_affinity_errors_name_the_services_in_the_way() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096)];
    check(
        &[wl("db", 2, 100, 64), avoiding(wl("web", 1, 100, 64), &["db"])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `web`: anti_affinity excludes every node (node-1 runs `db`; node-2 runs `db`)",
    );
    let nodes = gpu_cluster();
    check(
        &[selecting(wl("db", 2, 100, 64), &[("gpu", "true")]), avoiding(selecting(wl("ml", 1, 100, 64), &[("gpu", "true")]), &["db"])],
        &nodes,
        &none(),
        "error: cannot place replica 0 of `ml`: anti_affinity excludes every node matching node_selector {gpu=true} (node-2 runs `db`; node-4 runs `db`)",
    );
    check(
        &[wl("db", 1, 100, 64), avoiding(wl("web", 2, 3500, 64), &["db"])],
        &[node(1, 4000, 4096), node(2, 4000, 4096)],
        &none(),
        "error: cannot place replica 1 of `web` (needs 3.50 CPU, 64Mi memory): no node not running `db` (anti_affinity) has room (node-2: 0.50 CPU, 4032Mi memory free)",
    );
}

#[test]
fn the_most_constrained_service_chooses_first() {
    // `db` (any node) would take node-2 first by name and load; `ml` can only use the
    // gpu nodes 2 and 4 and must not share with db: it goes first.
    let nodes = gpu_cluster();
    check(
        &[wl("db", 2, 100, 64), avoiding(selecting(wl("ml", 2, 100, 64), &[("gpu", "true")]), &["db"])],
        &nodes,
        &none(),
        "db=[1, 3] ml=[2, 4]",
    );
}

#[test]
fn new_anti_affinity_moves_the_later_service_only() {
    let nodes = [node(1, 4000, 4096), node(2, 4000, 4096), node(3, 4000, 4096)];
    let prev = Assignment::from([("db".to_string(), vec![1]), ("web".to_string(), vec![1, 2])]);
    check(&[wl("db", 1, 100, 64), avoiding(wl("web", 2, 100, 64), &["db"])], &nodes, &prev, "db=[1] web=[3, 2]");
}

// ---------------------------------------------------------------- site spread

fn sites_cluster() -> Vec<NodeView> {
    // site a: 1, 2, 3; site b: 4; site c: 5, 6
    vec![
        labelled(1, 4000, 4096, "a", &[]),
        labelled(2, 4000, 4096, "a", &[]),
        labelled(3, 4000, 4096, "a", &[]),
        labelled(4, 4000, 4096, "b", &[]),
        labelled(5, 4000, 4096, "c", &[]),
        labelled(6, 4000, 4096, "c", &[]),
    ]
}

#[test]
fn site_spread_fills_sites_evenly_before_nodes() {
    let nodes = sites_cluster();
    check(&[by_sites(wl("web", 3, 100, 64))], &nodes, &none(), "web=[1, 4, 5]");
    // a 4th replica goes to a site with one replica and a free node (a or c), not to b's
    // only node: sharing a node comes last.
    check(&[by_sites(wl("web", 5, 100, 64))], &nodes, &none(), "web=[1, 4, 5, 2, 6]");
    check(&[by_sites(wl("web", 7, 100, 64))], &nodes, &none(), "web=[1, 4, 5, 2, 6, 3, 4]");
    // node spread alone would ignore sites: 1, 2, 3 are all in site a
    check(&[wl("web", 3, 100, 64)], &nodes, &none(), "web=[1, 2, 3]");
}

#[test]
fn site_spread_keeps_running_replicas() {
    let nodes = sites_cluster();
    let prev = Assignment::from([("web".to_string(), vec![1, 2])]);
    // both stay in site a (minimal moves); the new one goes to another site
    check(&[by_sites(wl("web", 3, 100, 64))], &nodes, &prev, "web=[1, 2, 4]");
}

#[test]
fn site_spread_with_selector() {
    let nodes = gpu_cluster();
    check(&[by_sites(selecting(wl("ml", 2, 100, 64), &[("gpu", "true")]))], &nodes, &none(), "ml=[2, 4]");
    check(&[by_sites(selecting(wl("arm", 2, 100, 64), &[("arch", "arm64")]))], &nodes, &none(), "arm=[3, 4]");
}

#[test]
fn unspread_sites_reports_services_in_one_site() {
    let nodes = sites_cluster();
    let wls = [by_sites(wl("web", 2, 100, 64)), wl("api", 2, 100, 64)];
    let a = Assignment::from([("web".to_string(), vec![1, 2]), ("api".to_string(), vec![1, 2])]);
    assert_eq!(unspread_sites(&wls, &nodes, &a), vec![("web".to_string(), "a".to_string())]);
    let a = Assignment::from([("web".to_string(), vec![1, 4])]);
    assert!(unspread_sites(&wls, &nodes, &a).is_empty());
}

// ---------------------------------------------------------------- rescheduling

#[test]
fn reschedule_leaves_stuck_replicas_and_moves_the_others() {
    let mut nodes = gpu_cluster();
    let wls = [selecting(wl("ml", 1, 100, 64), &[("gpu", "true")]), wl("web", 2, 100, 64)];
    let prev = Assignment::from([("ml".to_string(), vec![2]), ("web".to_string(), vec![2, 3])]);
    nodes[1].schedulable = false; // node-2 down
    nodes[3].labels.remove("gpu");
    let r = reschedule(&wls, &nodes, &prev).expect("rescheduled");
    assert_eq!(render(Ok(r.assignment.clone())), "ml=[2] web=[1, 3]", "web moved, ml stuck on node-2");
    assert_eq!(r.stuck.len(), 1);
    assert_eq!(
        r.stuck[0].to_string(),
        "cannot place replica 0 of `ml`: no node matches node_selector {gpu=true}: no schedulable node has label `gpu`; node-2 matches but is drained or down"
    );
    assert!(place(&wls, &nodes, &prev).is_err(), "strict placement refuses the same input");
    let v = violations(&wls, &nodes, &r.assignment);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].reason, "node-2 is down");
}

#[test]
fn violations_name_each_broken_rule() {
    let nodes = gpu_cluster();
    let wls = [selecting(wl("ml", 1, 100, 64), &[("gpu", "true")]), avoiding(wl("web", 1, 100, 64), &["ml"])];
    let a =
        Assignment::from([("ml".to_string(), vec![1]), ("web".to_string(), vec![1]), ("gone".to_string(), vec![1])]);
    let text: Vec<String> =
        violations(&wls, &nodes, &a).iter().map(|v| format!("{}-{}: {}", v.service, v.replica, v.reason)).collect();
    assert_eq!(
        text,
        [
            "ml-0: node-1 does not match node_selector {gpu=true}",
            "ml-0: node-1 also runs `web` (anti_affinity)",
            "web-0: node-1 also runs `ml` (anti_affinity)",
        ]
    );
}

// ---------------------------------------------------------------- properties

const SELECTORS: [&[(&str, &str)]; 5] =
    [&[], &[], &[("arch", "arm64")], &[("disk", "ssd")], &[("arch", "amd64"), ("disk", "ssd")]];

fn arb_nodes() -> impl Strategy<Value = Vec<NodeView>> {
    arb_nodes_in(3, 10)
}

/// Up to `max_nodes` nodes over `sites` sites.
fn arb_nodes_in(sites: usize, max_nodes: usize) -> impl Strategy<Value = Vec<NodeView>> {
    prop::collection::vec((1u64..8000, 1u64..8192, any::<bool>(), 0..sites, any::<bool>(), any::<bool>()), 1..max_nodes)
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, s, site, arm, ssd))| {
                    let mut labels = vec![("arch", if arm { "arm64" } else { "amd64" })];
                    if ssd {
                        labels.push(("disk", "ssd"));
                    }
                    let mut n = labelled(i as u64 + 1, cpu, mem, &format!("site-{site}"), &labels);
                    n.schedulable = s || i == 0;
                    n
                })
                .collect()
        })
}

fn arb_workloads(zero_requests: bool) -> impl Strategy<Value = Vec<Workload>> {
    if zero_requests {
        arb_workloads_of(1, 1, 7)
    } else {
        arb_workloads_of(2000, 1024, 7)
    }
}

/// Up to 6 workloads with requests below `max_cpu` millicores and `max_mem` MiB.
fn arb_workloads_of(max_cpu: u64, max_mem: u64, max_replicas: u32) -> impl Strategy<Value = Vec<Workload>> {
    prop::collection::vec((0..max_replicas, 0..max_cpu, 0..max_mem, 0usize..5, any::<bool>(), 0u8..8), 0..6).prop_map(
        |v| {
            let n = v.len();
            v.into_iter()
                .enumerate()
                .map(|(i, (r, c, m, sel, sites, anti))| {
                    let mut w = selecting(wl(&format!("s{i}"), r, c, m), SELECTORS[sel]);
                    if sites {
                        w.spread = Spread::Sites;
                    }
                    // anti-affinity with a few other services (bits of `anti`)
                    w.anti_affinity = (0..n)
                        .filter(|j| *j != i && anti & (1 << (j % 8)) != 0 && *j % 3 == 0)
                        .map(|j| format!("s{j}"))
                        .collect();
                    w
                })
                .collect()
        },
    )
}

fn arb_case() -> impl Strategy<Value = (Vec<Workload>, Vec<NodeView>)> {
    (arb_workloads(false), arb_nodes())
}

/// Every hard rule holds for `a`.
fn assert_rules(wls: &[Workload], nodes: &[NodeView], a: &Assignment) -> Result<(), TestCaseError> {
    let mut used: BTreeMap<NodeId, Capacity> = BTreeMap::new();
    for w in wls {
        let placed = &a[&w.service];
        prop_assert_eq!(placed.len(), w.replicas as usize);
        for n in placed {
            let view = nodes.iter().find(|v| v.id == *n).expect("placed on a known node");
            prop_assert!(view.schedulable, "{} on unschedulable {}", w.service, n);
            prop_assert!(view.matches(&w.selector), "{} on {} which does not match {:?}", w.service, n, w.selector);
            let u = used.entry(*n).or_default();
            *u = u.add(&w.request);
            prop_assert!(u.cpu_millis <= view.capacity.cpu_millis, "cpu over capacity on {}", n);
            prop_assert!(u.memory_bytes <= view.capacity.memory_bytes, "memory over capacity on {}", n);
        }
    }
    for w in wls {
        for other in &w.anti_affinity {
            let (Some(mine), Some(theirs)) = (a.get(&w.service), a.get(other)) else { continue };
            prop_assert!(mine.iter().all(|n| !theirs.contains(n)), "{} and {} share a node: {:?}", w.service, other, a);
        }
    }
    prop_assert!(violations(wls, nodes, a).is_empty());
    Ok(())
}

/// True when `w` takes part in no anti-affinity relation.
fn free_of_anti(w: &Workload, wls: &[Workload]) -> bool {
    w.anti_affinity.is_empty() && wls.iter().all(|o| !o.anti_affinity.contains(&w.service))
}

/// Spread holds for every workload free of anti-affinity (requests are zero): even over
/// nodes, or over sites without needless sharing.
/// Returns whether the case was placeable (and so checked).
fn check_spread(wls: &[Workload], nodes: &[NodeView]) -> Result<bool, TestCaseError> {
    let wls = wls.to_vec();
    let Ok(a) = place(&wls, nodes, &Assignment::new()) else {
        // with zero requests, only selectors and anti-affinity can make it fail
        prop_assert!(wls.iter().any(|w| w.replicas > 0 && (!w.selector.is_empty() || !free_of_anti(w, &wls))));
        return Ok(false);
    };
    for w in wls.iter().filter(|w| free_of_anti(w, &wls)) {
        let eligible: Vec<&NodeView> = nodes.iter().filter(|n| n.schedulable && n.matches(&w.selector)).collect();
        let mut on_node: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (n.id, 0)).collect();
        for n in &a[&w.service] {
            *on_node.entry(*n).or_default() += 1;
        }
        match w.spread {
            Spread::Nodes => {
                let max = on_node.values().max().copied().unwrap_or(0);
                let min = on_node.values().min().copied().unwrap_or(0);
                prop_assert!(max - min <= 1, "uneven node spread of {}: {:?}", w.service, on_node);
            }
            Spread::Sites if (w.replicas as usize) <= eligible.len() => {
                prop_assert!(
                    on_node.values().all(|c| *c <= 1),
                    "{} shares a node needlessly: {:?}",
                    w.service,
                    on_node
                );
                let mut per_site: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
                for n in &eligible {
                    let e = per_site.entry(n.site()).or_default();
                    e.0 += on_node[&n.id];
                    e.1 += 1;
                }
                for (s, (count, size)) in &per_site {
                    for (t, (other, _)) in &per_site {
                        prop_assert!(
                            count + 1 >= *other || count == size,
                            "site {} has {} of {} and {} has {}, but {} has free nodes: {:?}",
                            s,
                            count,
                            w.service,
                            t,
                            other,
                            s,
                            per_site
                        );
                    }
                }
            }
            Spread::Sites => {}
        }
    }
    Ok(true)
}

/// The placement rules written the slow, obvious way: keep what may stay, then (services
/// with the fewest allowed nodes first) give each missing replica the allowed node with
/// the least (replicas of the service there,
/// replicas of the service in its site when spreading over sites, replicas there, id).
/// The indexed implementation must agree with it exactly.
fn reference(wls: &[Workload], nodes: &[NodeView], previous: &Assignment) -> Option<Assignment> {
    let mut nodes: Vec<&NodeView> = nodes.iter().collect();
    nodes.sort_by_key(|n| n.id);
    let mut wls: Vec<&Workload> = wls.iter().collect();
    wls.sort_by(|a, b| a.service.cmp(&b.service));
    let mut used: BTreeMap<NodeId, Capacity> = BTreeMap::new();
    let mut load: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut hosts: BTreeMap<&str, BTreeMap<NodeId, u64>> = BTreeMap::new();
    let anti = |a: &Workload, b: &Workload| {
        a.service != b.service && (a.anti_affinity.contains(&b.service) || b.anti_affinity.contains(&a.service))
    };
    let allowed = |w: &Workload,
                   n: &NodeView,
                   used: &BTreeMap<NodeId, Capacity>,
                   hosts: &BTreeMap<&str, BTreeMap<NodeId, u64>>| {
        let u = used.get(&n.id).copied().unwrap_or_default().add(&w.request);
        n.schedulable
            && n.matches(&w.selector)
            && u.cpu_millis <= n.capacity.cpu_millis
            && u.memory_bytes <= n.capacity.memory_bytes
            && wls
                .iter()
                .filter(|o| anti(w, o))
                .all(|o| hosts.get(o.service.as_str()).is_none_or(|h| !h.contains_key(&n.id)))
    };
    let mut out: BTreeMap<String, Vec<Option<NodeId>>> = BTreeMap::new();
    for w in &wls {
        let mut slots = vec![None; w.replicas as usize];
        for (i, id) in previous.get(&w.service).into_iter().flatten().take(w.replicas as usize).enumerate() {
            if let Some(n) = nodes.iter().find(|n| n.id == *id) {
                if allowed(w, n, &used, &hosts) {
                    slots[i] = Some(*id);
                    let u = used.entry(*id).or_default();
                    *u = u.add(&w.request);
                    *load.entry(*id).or_default() += 1;
                    *hosts.entry(w.service.as_str()).or_default().entry(*id).or_default() += 1;
                }
            }
        }
        out.insert(w.service.clone(), slots);
    }
    // most constrained first: fewest schedulable matching nodes, then by name
    let mut order = wls.clone();
    order.sort_by_key(|w| nodes.iter().filter(|n| n.schedulable && n.matches(&w.selector)).count());
    for w in &order {
        for i in 0..w.replicas as usize {
            if out[&w.service][i].is_some() {
                continue;
            }
            let mine = hosts.get(w.service.as_str()).cloned().unwrap_or_default();
            let in_site = |site: &str| -> u64 {
                mine.iter()
                    .filter(|(id, _)| nodes.iter().any(|n| n.id == **id && n.site() == site))
                    .map(|(_, c)| c)
                    .sum()
            };
            let best = nodes
                .iter()
                .filter(|n| allowed(w, n, &used, &hosts))
                .map(|n| {
                    let site = if w.spread == Spread::Sites { in_site(n.site()) } else { 0 };
                    (mine.get(&n.id).copied().unwrap_or(0), site, load.get(&n.id).copied().unwrap_or(0), n.id)
                })
                .min()?;
            let id = best.3;
            if let Some(slots) = out.get_mut(&w.service) {
                slots[i] = Some(id);
            }
            let u = used.entry(id).or_default();
            *u = u.add(&w.request);
            *load.entry(id).or_default() += 1;
            *hosts.entry(w.service.as_str()).or_default().entry(id).or_default() += 1;
        }
    }
    Some(out.into_iter().map(|(s, v)| (s, v.into_iter().flatten().collect())).collect())
}

/// Runs proptest cases of `strategy` through `body`, which returns whether the case got
/// past its precondition (the first placement succeeded) and so exercised the property.
/// A case that did not is rejected, as `prop_assume!` would, so proptest draws another:
/// the property is checked on the full number of cases, all feasible. The run fails when
/// fewer than `min_percent` % of the drawn cases were feasible (a generator that mostly
/// makes infeasible inputs is a test that barely runs), and proptest itself fails past
/// its limit of rejections.
fn exercised_property<S: Strategy>(
    name: &str,
    strategy: S,
    min_percent: usize,
    body: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let drawn = std::cell::Cell::new(0usize);
    let exercised = std::cell::Cell::new(0usize);
    let config = ProptestConfig::default();
    let cases = config.cases as usize;
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        drawn.set(drawn.get() + 1);
        if !body(v)? {
            return Err(TestCaseError::reject("the first placement is infeasible"));
        }
        exercised.set(exercised.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (drawn, exercised) = (drawn.get(), exercised.get());
    eprintln!("{name}: {exercised} feasible cases checked, {drawn} drawn");
    assert!(exercised >= cases, "{name}: only {exercised} of {cases} cases checked");
    assert!(
        exercised * 100 >= drawn * min_percent,
        "{name}: only {exercised} of {drawn} drawn cases were feasible (at least {min_percent}% must be)"
    );
}

#[test]
fn agrees_with_the_reference() {
    let case = ((arb_workloads_of(600, 300, 12), arb_nodes_in(12, 30)), prop::collection::vec(any::<bool>(), 8));
    exercised_property("agrees_with_the_reference", case, 40, |((wls, nodes), drop)| {
        let first = place(&wls, &nodes, &Assignment::new());
        prop_assert_eq!(first.as_ref().ok().cloned(), reference(&wls, &nodes, &Assignment::new()));
        // and again from a previous assignment after some nodes left
        let Ok(a) = first else { return Ok(false) };
        let mut changed = nodes.clone();
        for (i, n) in changed.iter_mut().enumerate() {
            n.schedulable &= !drop[i % drop.len()];
        }
        prop_assert_eq!(place(&wls, &changed, &a).ok(), reference(&wls, &changed, &a));
        Ok(true)
    });
}

#[test]
fn rules_hold_deterministic_and_idempotent() {
    exercised_property("rules_hold_deterministic_and_idempotent", arb_case(), 25, |(wls, nodes)| {
        let first = place(&wls, &nodes, &Assignment::new());
        let second = place(&wls, &nodes, &Assignment::new());
        prop_assert_eq!(&first, &second);
        // input order does not matter
        let mut rev_w = wls.clone();
        rev_w.reverse();
        let mut rev_n = nodes.clone();
        rev_n.reverse();
        prop_assert_eq!(&place(&rev_w, &rev_n, &Assignment::new()), &first);
        let Ok(a) = first else { return Ok(false) };
        assert_rules(&wls, &nodes, &a)?;
        // idempotent: placing again with the result as previous changes nothing
        prop_assert_eq!(place(&wls, &nodes, &a), Ok(a.clone()));
        prop_assert_eq!(reschedule(&wls, &nodes, &a), Ok(Rescheduled { assignment: a, stuck: vec![] }));
        Ok(true)
    });
}

#[test]
fn spread_is_honoured_when_possible() {
    let case = (arb_workloads(true), arb_nodes());
    exercised_property("spread_is_honoured_when_possible", case, 40, |(wls, nodes)| check_spread(&wls, &nodes));
}

#[test]
fn spread_is_honoured_over_many_sites() {
    // more than 8 sites in a group: searched in the global order, not site by site
    let case = (arb_workloads_of(1, 1, 30), arb_nodes_in(20, 40));
    exercised_property("spread_is_honoured_over_many_sites", case, 40, |(wls, nodes)| check_spread(&wls, &nodes));
}

#[test]
fn minimal_moves_when_nodes_leave_or_lose_labels() {
    let flags = || prop::collection::vec(any::<bool>(), 10);
    let case = (arb_case(), flags(), flags());
    exercised_property("minimal_moves_when_nodes_leave_or_lose_labels", case, 25, |((wls, nodes), gone, unlabel)| {
        let Ok(before) = place(&wls, &nodes, &Assignment::new()) else { return Ok(false) };
        let mut changed = nodes.clone();
        for (i, n) in changed.iter_mut().enumerate() {
            if gone[i % gone.len()] && i > 0 {
                n.schedulable = false;
            }
            if unlabel[i % unlabel.len()] {
                n.labels.remove("disk");
            }
        }
        let still_ok =
            |w: &Workload, id: &NodeId| changed.iter().any(|n| n.id == *id && n.schedulable && n.matches(&w.selector));
        match place(&wls, &changed, &before) {
            Ok(after) => {
                assert_rules(&wls, &changed, &after)?;
                for w in &wls {
                    for (i, id) in before[&w.service].iter().enumerate() {
                        if still_ok(w, id) {
                            prop_assert_eq!(
                                after[&w.service][i],
                                *id,
                                "replica {} of {} moved needlessly",
                                i,
                                w.service
                            );
                        }
                    }
                }
            }
            Err(_) => {
                // lenient rescheduling still keeps every replica that may stay
                let r = reschedule(&wls, &changed, &before).expect("every replica had a node");
                prop_assert!(!r.stuck.is_empty());
                for w in &wls {
                    for (i, id) in before[&w.service].iter().enumerate() {
                        if still_ok(w, id) {
                            prop_assert_eq!(r.assignment[&w.service][i], *id);
                        }
                    }
                }
            }
        }
        Ok(true)
    });
}
