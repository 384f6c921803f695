//! What a node does with a write Raft refused because it does not lead (or not yet): take
//! it, name the leader, or wait a little first. An immediate answer would sometimes send
//! the client round in circles: told to go to a dead leader, it fails to connect, is sent
//! back there by the next follower, and backs off ever longer while the election runs.
//!
//! The rules:
//! 1. A leader handing over names its successor at once.
//! 2. A leader refused for want of a quorum acknowledgment within its lease: just elected
//!    (none yet this term), it waits for the first one and takes the write; otherwise its
//!    quorum went quiet and another may lead: the client looks elsewhere at once.
//! 3. A follower whose leader has been heard within two Raft heartbeats names it.
//! 4. A follower whose leader has gone silent, or that knows none, waits (at most twice
//!    the election timeout in all, one heartbeat at a time) until it hears from a leader,
//!    then names it; if it won the election itself, it takes the write.
//!
//! The runtime (`server/leadership.rs`) reads the node's Raft state and waits as told.

/// A Raft node id.
pub type NodeId = u64;

/// Why Raft sent the write elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    LeadershipTransfer,
    LeaseExpired { just_elected: bool },
    NotLeader,
}

/// What to do first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum First {
    /// Answer with what Raft said (rule 1).
    AnswerAsRaftSaid,
    /// Answer "no leader known": look elsewhere (rule 2).
    AnswerNoLeader,
    /// Wait for the first quorum acknowledgment, then `after_lease_wait` (rule 2).
    WaitForLease,
    /// Follow `follow` until it decides (rules 3 and 4).
    Follow,
}

pub fn first(refused: Refused) -> First {
    match refused {
        Refused::LeadershipTransfer => First::AnswerAsRaftSaid,
        Refused::LeaseExpired { just_elected: false } => First::AnswerNoLeader,
        Refused::LeaseExpired { just_elected: true } => First::WaitForLease,
        Refused::NotLeader => First::Follow,
    }
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Propose the write again here: this node leads now.
    TakeIt,
    /// Name this leader (`None`: none known).
    Name(Option<NodeId>),
    /// This node leads but is not ready yet: the client retries here shortly.
    NotReadyYet,
    /// Wait one heartbeat (or until the leader changes), then ask `follow` again.
    Wait,
}

/// After waiting for the lease: `settled` is the leader then, or `None` if the wait
/// timed out.
pub fn after_lease_wait(node: NodeId, settled: Option<Option<NodeId>>) -> Step {
    match settled {
        Some(Some(l)) if l == node => Step::TakeIt,
        Some(leader) => name(node, leader),
        None => Step::NotReadyYet,
    }
}

/// One look at a follower's state: the leader it follows (its committed vote), how long
/// ago it last heard from it, and how much of the wait is left.
pub fn follow(
    node: NodeId,
    leader: Option<NodeId>,
    heard_ago_ms: Option<u64>,
    heartbeat_ms: u64,
    left_ms: u64,
) -> Step {
    if leader == Some(node) {
        return Step::TakeIt;
    }
    if left_ms == 0 {
        return name(node, leader);
    }
    let silent = heard_ago_ms.is_none_or(|ago| ago > heartbeat_ms.saturating_mul(2));
    match leader {
        Some(_) if !silent => name(node, leader),
        _ => Step::Wait,
    }
}

/// The answer naming `leader` as seen at `node`.
pub fn name(node: NodeId, leader: Option<NodeId>) -> Step {
    match leader {
        Some(l) if l == node => Step::NotReadyYet,
        other => Step::Name(other),
    }
}

/// The longest wait, in all: twice the election timeout.
pub fn wait_budget_ms(election_timeout_max_ms: u64) -> u64 {
    election_timeout_max_ms.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_over_and_a_quiet_quorum_answer_at_once_a_new_leader_waits() {
        assert_eq!(first(Refused::LeadershipTransfer), First::AnswerAsRaftSaid);
        assert_eq!(first(Refused::LeaseExpired { just_elected: false }), First::AnswerNoLeader);
        assert_eq!(first(Refused::LeaseExpired { just_elected: true }), First::WaitForLease);
        assert_eq!(first(Refused::NotLeader), First::Follow);
        assert_eq!(after_lease_wait(1, Some(Some(1))), Step::TakeIt);
        assert_eq!(after_lease_wait(1, Some(Some(2))), Step::Name(Some(2)));
        assert_eq!(after_lease_wait(1, Some(None)), Step::Name(None));
        assert_eq!(after_lease_wait(1, None), Step::NotReadyYet);
    }

    #[test]
    fn a_follower_names_a_live_leader_and_waits_out_a_silent_one() {
        const HB: u64 = 50;
        assert_eq!(follow(1, Some(2), Some(HB * 2), HB, 500), Step::Name(Some(2)), "heard within two heartbeats");
        assert_eq!(follow(1, Some(2), Some(HB * 2 + 1), HB, 500), Step::Wait, "silent: it may have crashed");
        assert_eq!(follow(1, Some(2), None, HB, 500), Step::Wait);
        assert_eq!(follow(1, None, Some(0), HB, 500), Step::Wait, "an election is on");
        assert_eq!(follow(1, Some(1), None, HB, 500), Step::TakeIt, "it won the election");
        assert_eq!(follow(1, Some(2), None, HB, 0), Step::Name(Some(2)), "the wait is over");
        assert_eq!(follow(1, None, None, HB, 0), Step::Name(None));
        assert_eq!(wait_budget_ms(300), 600);
    }
}
