//! The Raft membership the leader keeps: every node of the cluster a member, new members
//! as non-voting learners first, and 1, 3 or 5 voters spread over sites.
//!
//! A learner is promoted only once it has been alive (heartbeating) for
//! `promote_after` and is caught up with the leader's log, as etcd promotes learners: a
//! node that joins and dies at once never counted towards the quorum, so it cannot take
//! the quorum with it. A voter down for `voter_replace_after` is replaced by a healthy
//! member where there is one.
use std::collections::{BTreeMap, BTreeSet};

use holdfast_placement::NodeId;
use holdfast_state::ClusterState;

use crate::{Membership, MembershipChange, Millis};

/// A learner at most this many log entries behind the leader is caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 16;

/// What the leader knows about each member's health, beyond the replicated state.
#[derive(Debug, Clone, Copy)]
pub struct MemberHealth<'a> {
    /// Since when each node has been heartbeating without a gap of `suspect_after`.
    pub alive_since: &'a BTreeMap<NodeId, Millis>,
    /// Since when each node has been down (as this leader declared it).
    pub down_since: &'a BTreeMap<NodeId, Millis>,
    /// Log entries each member is behind the leader.
    pub lag: &'a BTreeMap<NodeId, u64>,
}

/// Why a learner is not a voter yet, or None when it may vote.
pub fn promotion_blocker(state: &ClusterState, id: NodeId, health: MemberHealth<'_>, now: Millis) -> Option<String> {
    let node = state.nodes.get(&id)?;
    if node.down {
        return Some("down".into());
    }
    if node.removing {
        return Some("being removed".into());
    }
    let Some(since) = health.alive_since.get(&id) else { return Some("not heartbeating".into()) };
    let alive = now.saturating_sub(*since);
    if alive < state.settings.promote_after_ms {
        return Some(format!("alive for {alive}ms of the {}ms a new voter needs", state.settings.promote_after_ms));
    }
    match health.lag.get(&id) {
        None => Some("not replicating the log yet".into()),
        Some(lag) if *lag > CAUGHT_UP_ENTRIES => Some(format!("{lag} log entries behind")),
        Some(_) => None,
    }
}

/// The membership changes that bring the Raft membership in line with the state.
pub fn plan(
    state: &ClusterState,
    me: NodeId,
    current: &Membership,
    health: MemberHealth<'_>,
    now: Millis,
) -> Vec<MembershipChange> {
    let mut out: Vec<MembershipChange> = state
        .nodes
        .values()
        .filter(|n| !current.contains(n.id))
        .map(|n| MembershipChange::AddLearner { id: n.id, addr: n.addr.clone() })
        .collect();
    let gone: BTreeSet<NodeId> = current
        .voters
        .union(&current.learners)
        .filter(|id| !state.nodes.contains_key(id) && **id != me)
        .copied()
        .collect();
    if !gone.is_empty() {
        // One membership change at a time: voters are chosen on the next tick.
        out.push(MembershipChange::Remove(gone));
        return out;
    }
    let replace_after = state.settings.voter_replace_after_ms;
    let candidates: Vec<(NodeId, String)> = state
        .nodes
        .values()
        .filter(|n| {
            if n.id == me {
                return true;
            }
            if current.voters.contains(&n.id) {
                // A voter keeps its seat until it has been down for voter_replace_after.
                !n.down || health.down_since.get(&n.id).is_none_or(|t| now.saturating_sub(*t) < replace_after)
            } else {
                current.learners.contains(&n.id) && promotion_blocker(state, n.id, health, now).is_none()
            }
        })
        .map(|n| (n.id, n.site.clone()))
        .collect();
    let want = holdfast_state::voters::choose_voters(&candidates, &current.voters);
    if !want.is_empty() && want != current.voters {
        out.push(MembershipChange::SetVoters(want));
    }
    out
}
