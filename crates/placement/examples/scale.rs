//! Scheduler benchmark: places many replicas on many nodes and prints the time.
//! `cargo run --release -p holdfast-placement --example scale -- [NODES] [SERVICES] [REPLICAS]`
use std::time::Instant;

use holdfast_placement::{place, Assignment, Capacity, NodeView, Workload};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let nodes_n = args.first().copied().unwrap_or(5000);
    let services_n = args.get(1).copied().unwrap_or(10_000);
    let replicas = args.get(2).copied().unwrap_or(10) as u32;
    let nodes: Vec<NodeView> = (0..nodes_n)
        .map(|i| NodeView {
            id: i + 1,
            name: format!("n{i}"),
            schedulable: i % 50 != 0, // 2% cordoned or down
            keeps_replicas: false,
            capacity: Capacity { cpu_millis: 64_000, memory_bytes: 256 << 30 },
        })
        .collect();
    let workloads: Vec<Workload> = (0..services_n)
        .map(|i| Workload {
            service: format!("svc-{i}"),
            replicas,
            request: Capacity { cpu_millis: 100 + (i % 5) * 50, memory_bytes: (64 + (i % 7) * 32) << 20 },
        })
        .collect();
    let start = Instant::now();
    let a = match place(&workloads, &nodes, &Assignment::new()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("placement failed: {e}");
            std::process::exit(1);
        }
    };
    let first = start.elapsed();
    let start = Instant::now();
    let again = place(&workloads, &nodes, &a);
    let second = start.elapsed();
    let total: usize = a.values().map(Vec::len).sum();
    let shared = holdfast_placement::shared_nodes(&a).len();
    assert!(again.as_ref().is_ok_and(|b| b == &a), "idempotent");
    println!(
        "{{\"nodes\": {nodes_n}, \"replicas\": {total}, \"first_ms\": {:.1}, \"replace_ms\": {:.1}, \"services_sharing_a_node\": {shared}}}",
        first.as_secs_f64() * 1000.0,
        second.as_secs_f64() * 1000.0
    );
}
