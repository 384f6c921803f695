//! The vote gate's rules. A node that started with an empty data directory and did not
//! form a new cluster has forgotten its vote and its log. Were it to vote, it could vote
//! twice in one term, or help elect a candidate lacking entries it had acknowledged before
//! it lost them. So, while its gate is closed:
//!
//! 1. it refuses every vote and pre-vote, and does not campaign;
//! 2. until the leader readmits it, it also refuses replication (appends, snapshots): its
//!    empty log would look to the leader like a log that went backwards;
//! 3. a readmission names the leader's last log index as the target; a second one may only
//!    raise it (a repeated `member replace`);
//! 4. the gate lifts once the node has applied the target: it then holds every entry the
//!    leader held when it let the node back in, which includes every entry this node
//!    acknowledged before it lost its disk (a leader elected while it refused votes has
//!    them all).
//!
//! The runtime (`server/vote_gate.rs`) keeps the state durable and asks these rules.

/// A closed gate: why, and the readmission target once the leader let the node back in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub reason: String,
    pub readmit_target: Option<u64>,
}

/// Why a request is refused at a closed gate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    #[error("node {node} does not vote: {reason}")]
    Vote { node: u64, reason: String },
    #[error("node {node} takes no replication before it is readmitted: {reason}")]
    Replication { node: u64, reason: String },
}

impl Closed {
    pub fn new(reason: String) -> Closed {
        Closed { reason, readmit_target: None }
    }

    /// The gate after a readmission naming `target` (rule 3).
    pub fn readmitted(&self, target: u64) -> Closed {
        Closed {
            reason: self.reason.clone(),
            readmit_target: Some(self.readmit_target.map_or(target, |t| t.max(target))),
        }
    }

    /// Whether the gate lifts with `applied` applied (rule 4).
    pub fn lifts(&self, applied: Option<u64>) -> bool {
        self.readmit_target.is_some_and(|target| applied.is_some_and(|a| a >= target))
    }

    /// Rule 1: every vote is refused.
    pub fn refuse_vote(&self, node: u64) -> GateRefusal {
        GateRefusal::Vote { node, reason: self.reason.clone() }
    }

    /// Rule 2: replication is refused until readmitted.
    pub fn refuse_replication(&self, node: u64) -> Option<GateRefusal> {
        self.readmit_target.is_none().then(|| GateRefusal::Replication { node, reason: self.reason.clone() })
    }

    /// Why the node does not vote yet, with its progress.
    pub fn waiting(&self, applied: Option<u64>) -> String {
        match self.readmit_target {
            None => self.reason.clone(),
            Some(t) => format!(
                "{}; readmitted by the leader, catching up: applied {} of {t}",
                self.reason,
                applied.map_or("-".to_string(), |a| a.to_string())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_refuses_votes_always_and_replication_until_readmitted() {
        let closed = Closed::new("lost its disk".into());
        assert_eq!(closed.refuse_vote(3).to_string(), "node 3 does not vote: lost its disk");
        assert!(closed.refuse_replication(3).is_some());
        let readmitted = closed.readmitted(40);
        assert_eq!(readmitted.refuse_replication(3), None);
        assert!(matches!(readmitted.refuse_vote(3), GateRefusal::Vote { .. }), "readmitted, not caught up: no vote");
    }

    #[test]
    fn a_readmission_only_raises_the_target_and_the_gate_lifts_there() {
        let gate = Closed::new("r".into()).readmitted(40);
        assert_eq!(gate.readmitted(30).readmit_target, Some(40));
        assert_eq!(gate.readmitted(50).readmit_target, Some(50));
        assert!(!gate.lifts(None) && !gate.lifts(Some(39)));
        assert!(gate.lifts(Some(40)) && gate.lifts(Some(41)));
        assert!(!Closed::new("r".into()).lifts(Some(1_000)), "never before a readmission");
        assert_eq!(gate.waiting(Some(12)), "r; readmitted by the leader, catching up: applied 12 of 40");
        assert_eq!(Closed::new("r".into()).waiting(None), "r");
    }
}
