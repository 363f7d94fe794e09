//! The network faults applied on the switch: partitions between node sets, cut links between
//! sites, and packet loss per node. The whole set is kept here and rendered into one nft
//! `bridge` table (`holdfast_testbed`) in the switch namespace, replaced atomically on every
//! change (`nft -f`), so heal is just "render again without it".

use std::collections::{BTreeMap, BTreeSet};

use crate::netns::{node_port, wan_port};

/// The network faults currently in force.
#[derive(Debug, Default)]
pub(crate) struct NetFaults {
    /// Pairs of node sets that may not talk to each other.
    pub partitions: Vec<(Vec<usize>, Vec<usize>)>,
    /// Pairs of site indices (lower first) whose WAN link is cut.
    pub cuts: BTreeSet<(usize, usize)>,
    /// Packet loss in percent per node (each direction through its port).
    pub loss: BTreeMap<usize, u8>,
}

const TABLE: &str = "holdfast_testbed";

impl NetFaults {
    /// The nft script that makes the switch's table match this state.
    /// `macs[i]` is node i's `eth0` MAC address.
    pub(crate) fn render(&self, macs: &[String]) -> String {
        // Creating then deleting makes the delete succeed whether or not the table exists;
        // all of it is one transaction.
        let mut s = format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n");
        if self.partitions.is_empty() && self.cuts.is_empty() && self.loss.is_empty() {
            return s;
        }
        s.push_str(&format!(
            "table bridge {TABLE} {{\n  chain faults {{\n    type filter hook forward priority 0; policy accept;\n"
        ));
        for (node, percent) in &self.loss {
            let port = node_port(*node);
            // `numgen random mod 100` is 0..=99: "< 100" is not accepted, and not needed.
            let chance = if *percent >= 100 { String::new() } else { format!("numgen random mod 100 < {percent} ") };
            s.push_str(&format!("    iifname \"{port}\" {chance}drop\n"));
            s.push_str(&format!("    oifname \"{port}\" {chance}drop\n"));
        }
        // A frame keeps its source MAC across bridges, and its last hop leaves through the
        // destination node's port (also for broadcasts), so "from a MAC of A out of a port of
        // B" catches every path from A to B, within a site or across the WAN.
        for (a, b) in &self.partitions {
            for (from, to) in [(a, b), (b, a)] {
                let macs: Vec<&str> = from.iter().map(|i| macs[*i].as_str()).collect();
                let ports: Vec<String> = to.iter().map(|i| format!("\"{}\"", node_port(*i))).collect();
                s.push_str(&format!(
                    "    ether saddr {{ {} }} oifname {{ {} }} drop\n",
                    macs.join(", "),
                    ports.join(", ")
                ));
            }
        }
        for (a, b) in &self.cuts {
            let (wa, wb) = (wan_port(*a), wan_port(*b));
            s.push_str(&format!("    iifname \"{wa}\" oifname \"{wb}\" drop\n"));
            s.push_str(&format!("    iifname \"{wb}\" oifname \"{wa}\" drop\n"));
        }
        s.push_str("  }\n}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_state_only_deletes() {
        let s = NetFaults::default().render(&[]);
        assert!(s.contains("delete table bridge holdfast_testbed"));
        assert!(!s.contains("chain"));
    }

    #[test]
    fn renders_every_fault() {
        let mut f = NetFaults::default();
        f.partitions.push((vec![0], vec![1, 2]));
        f.cuts.insert((0, 1));
        f.loss.insert(2, 30);
        let macs = vec!["02:00:00:00:00:00".to_string(), "02:00:00:00:00:01".into(), "02:00:00:00:00:02".into()];
        let s = f.render(&macs);
        assert!(s.contains("ether saddr { 02:00:00:00:00:00 } oifname { \"n1\", \"n2\" } drop"));
        assert!(s.contains("ether saddr { 02:00:00:00:00:01, 02:00:00:00:00:02 } oifname { \"n0\" } drop"));
        assert!(s.contains("iifname \"w0\" oifname \"w1\" drop"));
        assert!(s.contains("iifname \"w1\" oifname \"w0\" drop"));
        assert!(s.contains("iifname \"n2\" numgen random mod 100 < 30 drop"));
        f.loss.insert(2, 100);
        assert!(f.render(&macs).contains("oifname \"n2\" drop"));
    }
}
