//! Choosing Raft voters so the control plane survives the loss of any one site where the
//! layout allows it (pure).
use std::collections::{BTreeMap, BTreeSet};

use holdfast_placement::NodeId;

/// The voters for a cluster: 1, 3 or 5 of the `candidates` (id, site), spread over sites
/// round-robin (biggest sites first), keeping current voters where possible so the
/// membership does not churn.
pub fn choose_voters(candidates: &[(NodeId, String)], current: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let target = match candidates.len() {
        0 => return BTreeSet::new(),
        1 | 2 => 1,
        3 | 4 => 3,
        _ => 5,
    };
    let mut by_site: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for (id, site) in candidates {
        by_site.entry(site.as_str()).or_default().push(*id);
    }
    for ids in by_site.values_mut() {
        // current voters first, then by id
        ids.sort_by_key(|id| (!current.contains(id), *id));
    }
    let mut sites: Vec<(&str, Vec<NodeId>)> = by_site.into_iter().collect();
    sites.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut chosen = BTreeSet::new();
    let mut round = 0;
    while chosen.len() < target {
        let mut progressed = false;
        for (_, ids) in &sites {
            if chosen.len() == target {
                break;
            }
            if let Some(id) = ids.get(round) {
                chosen.insert(*id);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
        round += 1;
    }
    chosen
}

/// A plain-language warning when losing one site would stop all changes.
pub fn site_loss_warning(voters: &[(NodeId, String)]) -> Option<String> {
    if voters.len() < 2 {
        return None;
    }
    let majority = voters.len() / 2 + 1;
    let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in voters {
        *per_site.entry(s.as_str()).or_default() += 1;
    }
    let (site, count) = per_site.iter().max_by_key(|(_, c)| **c)?;
    if *count < majority {
        return None;
    }
    if per_site.len() == 1 {
        return Some(format!(
            "all {count} control-plane voters are in site `{site}`: losing that site stops all changes (add nodes in another site)"
        ));
    }
    Some(format!(
        "{count} of {} control-plane voters are in site `{site}`: losing that site stops all changes (add a node in another site)",
        voters.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[(u64, &str)]) -> Vec<(NodeId, String)> {
        v.iter().map(|(i, s)| (*i, s.to_string())).collect()
    }

    fn check(cands: &[(u64, &str)], current: &[u64], expect: &[u64]) {
        let got = choose_voters(&c(cands), &current.iter().copied().collect());
        assert_eq!(got.into_iter().collect::<Vec<_>>(), expect.to_vec());
    }

    #[test]
    fn voters_are_odd_and_spread() {
        check(&[(1, "a")], &[], &[1]);
        check(&[(1, "a"), (2, "b")], &[], &[1]);
        check(&[(1, "a"), (2, "a"), (3, "b")], &[], &[1, 2, 3]);
        check(&[(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b")], &[], &[1, 2, 3, 4, 5]);
        // 6 nodes in 3 sites: two per site, minus one
        check(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")], &[], &[1, 2, 3, 4, 5]);
        // 4 nodes in 2 sites: 3 voters, 2+1
        check(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")], &[], &[1, 2, 3]);
    }

    #[test]
    fn current_voters_are_kept() {
        check(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")], &[2, 4, 1], &[1, 2, 4]);
        check(&[(1, "a"), (2, "a"), (3, "a"), (4, "a")], &[4, 3, 2], &[2, 3, 4]);
    }

    #[test]
    fn warns_when_a_site_holds_a_majority() {
        assert_eq!(site_loss_warning(&c(&[(1, "a")])), None);
        assert_eq!(site_loss_warning(&c(&[(1, "a"), (2, "b"), (3, "c")])), None);
        assert_eq!(
            site_loss_warning(&c(&[(1, "seoul"), (2, "seoul"), (3, "idc")])).as_deref(),
            Some("2 of 3 control-plane voters are in site `seoul`: losing that site stops all changes (add a node in another site)")
        );
        assert!(site_loss_warning(&c(&[(1, "a"), (2, "a"), (3, "a")])).unwrap_or_default().starts_with("all 3"));
    }
}
