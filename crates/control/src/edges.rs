//! Which edge nodes DNS sends clients to: a pure function of the state and this node's
//! own probes of every edge's public HTTP port.
//!
//! An edge is *live* when the cluster has not declared it down and its last
//! [`FAIL_AFTER`] probes did not all fail (an edge never probed yet counts as live). Every
//! edge node probes every edge (itself included) about twice a second, so a killed or
//! frozen edge leaves the answers within about a second, long before the failure
//! detector declares the node down, and each edge decides alone (no quorum needed).
//!
//! When no edge looks live — this node is cut off from all of them, or every probe fails
//! at once — the answer **fails open**: every edge's address. Clients then try them all
//! (browsers and resolvers fall over between A records), which beats answering nothing
//! for a zone whose machines may well be up. [`LiveEdges::failing_open`] says so.

use std::collections::BTreeMap;
use std::net::IpAddr;

use holdfast_placement::NodeId;
use holdfast_state::model::EdgeInfo;
use holdfast_state::ClusterState;

/// Consecutive failed probes after which an edge leaves the answers.
pub const FAIL_AFTER: u32 = 2;

/// The edges DNS answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEdges {
    /// Public addresses of the live edges, in node-name order (every edge when failing open).
    pub addresses: Vec<IpAddr>,
    /// No edge looked live, so every edge is answered.
    pub failing_open: bool,
}

/// Every edge node of the cluster (not being removed), in node-name order (the order of
/// the zones' name servers: `ns1` is the first name).
pub fn edge_nodes(state: &ClusterState) -> Vec<(NodeId, EdgeInfo)> {
    let mut edges: Vec<(&str, NodeId, EdgeInfo)> = state
        .nodes
        .values()
        .filter(|n| !n.removing)
        .filter_map(|n| n.edge.clone().map(|e| (n.name.as_str(), n.id, e)))
        .collect();
    edges.sort_by_key(|(name, id, _)| (*name, *id));
    edges.into_iter().map(|(_, id, e)| (id, e)).collect()
}

/// The live edges given each edge's count of consecutive failed probes (`failures`;
/// absent: not probed yet).
pub fn live_edges(state: &ClusterState, failures: &BTreeMap<NodeId, u32>) -> LiveEdges {
    let edges = edge_nodes(state);
    let live: Vec<IpAddr> = edges
        .iter()
        .filter(|(id, _)| !state.nodes.get(id).is_some_and(|n| n.down))
        .filter(|(id, _)| failures.get(id).is_none_or(|f| *f < FAIL_AFTER))
        .map(|(_, e)| e.public_address)
        .collect();
    if live.is_empty() && !edges.is_empty() {
        return LiveEdges { addresses: edges.iter().map(|(_, e)| e.public_address).collect(), failing_open: true };
    }
    LiveEdges { addresses: live, failing_open: false }
}

/// Which edge holds the moving address `address` of `site`: the first by name of the
/// site's edges that announce it, are not down and answer their probes (as this node's
/// probes see them). Every candidate decides for itself from the same rule, so when the
/// holder dies the next one takes the address within two failed probes, and gives it
/// back when the first one answers again. `None`: no candidate is live.
pub fn site_address_holder(
    state: &ClusterState,
    site: &str,
    address: &str,
    failures: &BTreeMap<NodeId, u32>,
) -> Option<NodeId> {
    edge_nodes(state)
        .into_iter()
        .filter(|(id, e)| {
            e.site_address.as_deref() == Some(address)
                && state.nodes.get(id).is_some_and(|n| n.site == site && !n.down)
                && failures.get(id).is_none_or(|f| *f < FAIL_AFTER)
        })
        .map(|(id, _)| id)
        .next()
}

/// The count after one more probe: reset by a success.
pub fn after_probe(failures: u32, ok: bool) -> u32 {
    if ok {
        0
    } else {
        failures.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_placement::Capacity;
    use holdfast_state::NodeRecord;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for (id, edge) in [(1, Some("192.0.2.1")), (2, None), (3, Some("2001:db8::3")), (4, Some("192.0.2.4"))] {
            let mut n =
                NodeRecord::new(id, format!("n{id}"), format!("10.0.0.{id}:7946"), "a", "x86_64", Capacity::default());
            n.edge = edge.map(|a| EdgeInfo {
                public_address: a.parse().unwrap(),
                http_port: 80,
                https_port: 443,
                dns_port: 53,
                site_address: None,
            });
            s.nodes.insert(id, n);
        }
        s
    }

    fn check(s: &ClusterState, failures: &[(NodeId, u32)], expected: &str, open: bool) {
        let got = live_edges(s, &failures.iter().copied().collect());
        let addrs: Vec<String> = got.addresses.iter().map(ToString::to_string).collect();
        assert_eq!((addrs.join(" "), got.failing_open), (expected.to_string(), open), "{failures:?}");
    }

    #[test]
    fn probes_and_down_flags_decide() {
        let mut s = state();
        check(&s, &[], "192.0.2.1 2001:db8::3 192.0.2.4", false);
        check(&s, &[(1, 1)], "192.0.2.1 2001:db8::3 192.0.2.4", false);
        check(&s, &[(1, 2)], "2001:db8::3 192.0.2.4", false);
        check(&s, &[(1, 2), (3, 7), (4, 0)], "192.0.2.4", false);
        s.nodes.get_mut(&4).unwrap().down = true;
        check(&s, &[(1, 0)], "192.0.2.1 2001:db8::3", false);
        s.nodes.get_mut(&3).unwrap().removing = true;
        check(&s, &[], "192.0.2.1", false);
    }

    #[test]
    fn no_live_edge_fails_open() {
        let s = state();
        check(&s, &[(1, 2), (3, 2), (4, 9)], "192.0.2.1 2001:db8::3 192.0.2.4", true);
        check(&ClusterState::default(), &[], "", false);
    }

    #[test]
    fn the_first_live_candidate_of_the_site_holds_its_address() {
        let mut s = state();
        let vip = "192.0.2.200/24";
        for id in [1, 3, 4] {
            s.nodes.get_mut(&id).unwrap().edge.as_mut().unwrap().site_address = Some(vip.into());
        }
        s.nodes.get_mut(&3).unwrap().site = "b".into();
        let holder =
            |s: &ClusterState, f: &[(NodeId, u32)]| site_address_holder(s, "a", vip, &f.iter().copied().collect());
        assert_eq!(holder(&s, &[]), Some(1));
        assert_eq!(holder(&s, &[(1, 1)]), Some(1));
        assert_eq!(holder(&s, &[(1, 2)]), Some(4), "n1 stopped answering: n4 takes it (n3 is in another site)");
        assert_eq!(holder(&s, &[(1, 2), (4, 2)]), None);
        assert_eq!(holder(&s, &[(1, 0)]), Some(1), "n1 is back: it takes the address back");
        assert_eq!(site_address_holder(&s, "a", "192.0.2.201/24", &BTreeMap::new()), None);
        s.nodes.get_mut(&1).unwrap().down = true;
        assert_eq!(holder(&s, &[]), Some(4));
    }

    #[test]
    fn probe_counting() {
        assert_eq!(after_probe(0, false), 1);
        assert_eq!(after_probe(1, false), 2);
        assert_eq!(after_probe(5, true), 0);
        assert_eq!(after_probe(u32::MAX, false), u32::MAX);
    }
}
