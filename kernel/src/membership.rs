//! Membership changes of the Raft voters, decided before anything is changed: who may be
//! removed, to whom leadership is handed, and the steps of `member replace`. The runtime
//! carries out what these return (openraft's `change_membership`, readmission, waits).

use std::collections::{BTreeMap, BTreeSet};

/// A Raft node id.
pub type NodeId = u64;

/// Why a membership change is refused before anything changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipRefusal {
    #[error("node {node} is not a voter")]
    NotAVoter { node: NodeId },
    /// A cluster without voters can never elect a leader again.
    #[error("node {node} is the last voter")]
    LastVoter { node: NodeId },
    /// The leader would demote itself mid-replace: hand leadership over first.
    #[error("node {node} leads")]
    ReplaceLeader { node: NodeId },
    #[error("node {node} is neither voter nor learner")]
    UnknownNode { node: NodeId },
    #[error("node {node} is not a voter to hand leadership to")]
    TransferTargetNotVoter { node: NodeId },
    #[error("no other voter to hand leadership to")]
    NoOtherVoter,
}

/// The voters after removing `node`.
pub fn remove(voters: &BTreeSet<NodeId>, node: NodeId) -> Result<BTreeSet<NodeId>, MembershipRefusal> {
    let mut after = voters.clone();
    if !after.remove(&node) {
        return Err(MembershipRefusal::NotAVoter { node });
    }
    if after.is_empty() {
        return Err(MembershipRefusal::LastVoter { node });
    }
    Ok(after)
}

/// Whom leader `leader` hands leadership to: `to` if it is another voter; otherwise the
/// voter whose log the leader has replicated furthest (`matched`: the index matched per
/// voter, when known), the lower id among equals.
pub fn hand_off_target(
    voters: &BTreeSet<NodeId>,
    leader: NodeId,
    to: Option<NodeId>,
    matched: &BTreeMap<NodeId, u64>,
) -> Result<NodeId, MembershipRefusal> {
    let others = voters.iter().copied().filter(|v| *v != leader);
    match to {
        Some(t) if t != leader && voters.contains(&t) => Ok(t),
        Some(t) => Err(MembershipRefusal::TransferTargetNotVoter { node: t }),
        // Furthest first; among equals the lower id (`max_by_key` keeps the last maximum,
        // so the ids are visited from the highest down).
        None => others.rev().max_by_key(|v| matched.get(v).copied()).ok_or(MembershipRefusal::NoOtherVoter),
    }
}

/// One step of `member replace`, in the order `plan_replace` gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplaceStep {
    /// Make the node a learner (kept, so replication to it goes on): these voters remain.
    Demote { voters: BTreeSet<NodeId> },
    /// Let the leader replicate to it from scratch: its log went back to empty, which
    /// openraft would otherwise take for a bug.
    AllowRevert,
    /// Tell the node to take replication again, naming the leader's last log index as
    /// the point it must apply before it votes again (its vote gate).
    Readmit,
    /// Wait until the leader's replication to it has matched that index, bounded.
    CatchUp { timeout_ms: u64 },
    /// Make it a voter again: these voters.
    Promote { voters: BTreeSet<NodeId> },
}

/// How long `member replace` waits for the replaced node to catch up as a learner.
pub const REPLACE_CATCH_UP_TIMEOUT_MS: u64 = 30_000;

/// The steps that replace node `node` (one that lost its disk) in a cluster led by
/// `leader` with these `voters` and `learners`: a voter is demoted first, so the quorum
/// never counts its empty log, and promoted only once it has caught up.
pub fn plan_replace(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    leader: NodeId,
    node: NodeId,
) -> Result<Vec<ReplaceStep>, MembershipRefusal> {
    if node == leader {
        return Err(MembershipRefusal::ReplaceLeader { node });
    }
    let mut steps = Vec::with_capacity(5);
    if voters.contains(&node) {
        steps.push(ReplaceStep::Demote { voters: remove(voters, node)? });
    } else if !learners.contains(&node) {
        return Err(MembershipRefusal::UnknownNode { node });
    }
    let mut after: BTreeSet<NodeId> = voters.clone();
    after.insert(node);
    steps.extend([
        ReplaceStep::AllowRevert,
        ReplaceStep::Readmit,
        ReplaceStep::CatchUp { timeout_ms: REPLACE_CATCH_UP_TIMEOUT_MS },
        ReplaceStep::Promote { voters: after },
    ]);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_voter_is_removed_but_never_the_last_one_or_a_stranger() {
        assert_eq!(remove(&set(&[1, 2, 3]), 2), Ok(set(&[1, 3])));
        assert_eq!(remove(&set(&[1, 3]), 2), Err(MembershipRefusal::NotAVoter { node: 2 }));
        assert_eq!(remove(&set(&[1]), 1), Err(MembershipRefusal::LastVoter { node: 1 }));
    }

    #[test]
    fn leadership_goes_to_the_named_voter_or_the_furthest_lowest_one() {
        let voters = set(&[1, 2, 3, 4]);
        let matched: BTreeMap<NodeId, u64> = [(2, 10), (3, 12), (4, 12)].into();
        assert_eq!(hand_off_target(&voters, 1, Some(4), &matched), Ok(4));
        assert_eq!(hand_off_target(&voters, 1, None, &matched), Ok(3), "furthest, then the lower id");
        assert_eq!(hand_off_target(&voters, 1, None, &BTreeMap::new()), Ok(2), "nothing known: the lowest id");
        assert_eq!(
            hand_off_target(&voters, 1, Some(9), &matched),
            Err(MembershipRefusal::TransferTargetNotVoter { node: 9 })
        );
        assert_eq!(
            hand_off_target(&voters, 1, Some(1), &matched),
            Err(MembershipRefusal::TransferTargetNotVoter { node: 1 }),
            "not to itself"
        );
        assert_eq!(hand_off_target(&set(&[1]), 1, None, &matched), Err(MembershipRefusal::NoOtherVoter));
    }

    #[test]
    fn a_replaced_voter_is_demoted_first_and_promoted_last() {
        let steps = plan_replace(&set(&[1, 2, 3]), &set(&[]), 1, 3).unwrap();
        assert_eq!(
            steps,
            vec![
                ReplaceStep::Demote { voters: set(&[1, 2]) },
                ReplaceStep::AllowRevert,
                ReplaceStep::Readmit,
                ReplaceStep::CatchUp { timeout_ms: REPLACE_CATCH_UP_TIMEOUT_MS },
                ReplaceStep::Promote { voters: set(&[1, 2, 3]) },
            ]
        );
        // A learner already (a replace that failed half-way): no demotion, the rest again.
        let again = plan_replace(&set(&[1, 2]), &set(&[3]), 1, 3).unwrap();
        assert_eq!(again.first(), Some(&ReplaceStep::AllowRevert));
        assert_eq!(again.last(), Some(&ReplaceStep::Promote { voters: set(&[1, 2, 3]) }));
    }

    #[test]
    fn the_leader_a_stranger_and_the_last_voter_are_not_replaced() {
        assert_eq!(plan_replace(&set(&[1, 2]), &set(&[]), 1, 1), Err(MembershipRefusal::ReplaceLeader { node: 1 }));
        assert_eq!(plan_replace(&set(&[1, 2]), &set(&[]), 1, 7), Err(MembershipRefusal::UnknownNode { node: 7 }));
        assert_eq!(plan_replace(&set(&[2]), &set(&[]), 1, 2), Err(MembershipRefusal::LastVoter { node: 2 }));
    }
}
