//! Scheduler benchmark: places many replicas on many nodes, with node selectors, site
//! spread and anti-affinity, and prints the times as JSON.
//! `cargo run --release -p holdfast-placement --example scale -- [NODES] [SERVICES] [REPLICAS] [SITES]`
//!
//! Nodes: a third arm64, a fifth with `disk=ssd`, every 50th cordoned or down, spread
//! round-robin over SITES sites. Services: one in ten selects `arch=arm64`, one in ten
//! `disk=ssd`, one in ten `{arch=amd64, disk=ssd}`; every other one spreads over sites;
//! every fourth is anti-affine with its predecessor.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use holdfast_placement::{place, violations, Assignment, Capacity, NodeView, Spread, Workload};

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let nodes_n = args.first().copied().unwrap_or(5000);
    let services_n = args.get(1).copied().unwrap_or(10_000);
    let replicas = args.get(2).copied().unwrap_or(10) as u32;
    let sites_n = args.get(3).copied().unwrap_or(10).max(1);
    let mut nodes: Vec<NodeView> = (0..nodes_n)
        .map(|i| {
            let name = format!("n{i}");
            let arch = if i % 3 == 0 { "arm64" } else { "amd64" };
            let mut l = labels(&[("name", name.clone()), ("site", format!("s{}", i % sites_n)), ("arch", arch.into())]);
            if i % 5 == 0 {
                l.insert("disk".into(), "ssd".into());
            }
            NodeView {
                id: i + 1,
                name,
                schedulable: i % 50 != 7, // 2% cordoned or down
                keeps_replicas: false,
                capacity: Capacity { cpu_millis: 64_000, memory_bytes: 256 << 30 },
                labels: l,
            }
        })
        .collect();
    let workloads: Vec<Workload> = (0..services_n)
        .map(|i| {
            let request = Capacity { cpu_millis: 100 + (i % 5) * 50, memory_bytes: (64 + (i % 7) * 32) << 20 };
            let mut w = Workload::new(format!("svc-{i}"), replicas, request);
            w.selector = match i % 10 {
                0 => labels(&[("arch", "arm64".into())]),
                1 => labels(&[("disk", "ssd".into())]),
                2 => labels(&[("arch", "amd64".into()), ("disk", "ssd".into())]),
                _ => BTreeMap::new(),
            };
            if i % 2 == 0 {
                w.spread = Spread::Sites;
            }
            if i % 4 == 3 {
                w.anti_affinity = BTreeSet::from([format!("svc-{}", i - 1)]);
            }
            w
        })
        .collect();
    let plain: Vec<Workload> =
        workloads.iter().map(|w| Workload::new(w.service.clone(), w.replicas, w.request)).collect();

    let time = |wls: &[Workload], nodes: &[NodeView], prev: &Assignment| {
        let start = Instant::now();
        let r = place(wls, nodes, prev);
        (r, start.elapsed().as_secs_f64() * 1000.0)
    };
    let (plain_result, plain_ms) = time(&plain, &nodes, &Assignment::new());
    if let Err(e) = plain_result {
        eprintln!("placement without constraints failed: {e}");
        std::process::exit(1);
    }
    let (first, first_ms) = time(&workloads, &nodes, &Assignment::new());
    let a = match first {
        Ok(a) => a,
        Err(e) => {
            eprintln!("placement failed: {e}");
            std::process::exit(1);
        }
    };
    let (again, again_ms) = time(&workloads, &nodes, &a);
    assert!(again.as_ref().is_ok_and(|b| b == &a), "placing the result again changes nothing");
    assert!(violations(&workloads, &nodes, &a).is_empty(), "every rule holds");

    // A day in the life: 1% of the nodes go down and 1% lose their ssd label.
    for (i, n) in nodes.iter_mut().enumerate() {
        if i % 100 == 3 {
            n.schedulable = false;
        }
        if i % 100 == 5 {
            n.labels.remove("disk");
        }
    }
    let (moved, move_ms) = time(&workloads, &nodes, &a);
    let b = match moved {
        Ok(b) => b,
        Err(e) => {
            eprintln!("re-placement failed: {e}");
            std::process::exit(1);
        }
    };
    let moves: usize = a.iter().map(|(s, placed)| placed.iter().zip(&b[s]).filter(|(x, y)| x != y).count()).sum();
    let total: usize = a.values().map(Vec::len).sum();
    let shared = holdfast_placement::shared_nodes(&a).len();
    println!(
        "{{\"nodes\": {nodes_n}, \"sites\": {sites_n}, \"replicas\": {total}, \"plain_ms\": {plain_ms:.1}, \"first_ms\": {first_ms:.1}, \"replace_ms\": {again_ms:.1}, \"move_ms\": {move_ms:.1}, \"moved\": {moves}, \"services_sharing_a_node\": {shared}}}"
    );
}
