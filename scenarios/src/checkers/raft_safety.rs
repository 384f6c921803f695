//! Raft's safety properties, checked over what the nodes reported while the run went on.
//!
//! - [`check_leader_per_term`]: Election Safety — at most one leader per term.
//! - [`check_committed_entries`]: Log Matching and Leader Completeness as seen from the
//!   outside — an index, once committed anywhere, holds the same (term, entry hash) on
//!   every node at every later time, including after restarts; the terms of committed
//!   entries never decrease as the index grows; and a node's commit index only goes back
//!   across a restart.
//! - [`check_commits_recovered`]: committed entries are never lost to a restart — a
//!   restarted node that reports commits again gets back to its old commit index.
//! - [`check_state_machines`]: State Machine Safety — equal applied index, equal state.
//!
//! Inputs are observations in the order they were made (a trace); a node's own
//! observations are the subsequence with its id. Times only label findings.

use super::{Checker, Violation};
use roster_kernel::ids::ServerId;
use std::collections::BTreeMap;

/// Where and when a value was first observed.
type FirstSeen = (ServerId, u64);

/// A node saw itself as leader of `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderObservation {
    pub node: ServerId,
    pub term: u64,
    pub at_ms: u64,
}

/// At most one node leads any term. One violation per term with several leaders.
pub fn check_leader_per_term(observations: &[LeaderObservation]) -> Vec<Violation> {
    // term -> node -> first time seen
    let mut leaders: BTreeMap<u64, BTreeMap<ServerId, u64>> = BTreeMap::new();
    for o in observations {
        leaders.entry(o.term).or_default().entry(o.node).or_insert(o.at_ms);
    }
    leaders
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(term, nodes)| {
            let list = nodes.iter().map(|(node, at)| format!("{node} (from {at} ms)")).collect::<Vec<_>>().join(", ");
            Violation::new(Checker::LeaderPerTerm, format!("term {term} had {} leaders: {list}", nodes.len()))
        })
        .collect()
}

/// What a node reported about its committed log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitEvent {
    /// The entry at `index` is committed; `entry_hash` is a hash of its payload.
    Committed { index: u64, term: u64, entry_hash: u64 },
    /// The node restarted (crash or clean); its in-memory commit index is gone.
    Restarted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitObservation {
    pub node: ServerId,
    pub at_ms: u64,
    pub event: CommitEvent,
}

/// Checks, over the whole trace:
/// 1. agreement: every observation of an index, on any node at any time (before or after
///    any restart), carries the same (term, hash). One violation per disagreeing index,
///    naming every variant and where it was first seen.
/// 2. term order: among committed indices, a higher index never has a lower term (Raft
///    logs' terms are non-decreasing, so a committed prefix's are too). Checked between
///    neighbouring observed indices, on the first variant seen of each.
/// 3. no regression: within one incarnation of a node (between its restarts), a reported
///    commit index is never below one it reported before. Reporting the same index again
///    is allowed (agreement covers its content). After `Restarted` the node may report
///    any index again, e.g. while it replays its log from a snapshot; whether it gets
///    back is [`check_commits_recovered`]'s question.
pub fn check_committed_entries(trace: &[CommitObservation]) -> Vec<Violation> {
    let mut violations = Vec::new();
    // index -> (term, hash) -> (node, at) first seen
    let mut seen: BTreeMap<u64, BTreeMap<(u64, u64), FirstSeen>> = BTreeMap::new();
    // node -> (highest index this incarnation, when)
    let mut high: BTreeMap<ServerId, (u64, u64)> = BTreeMap::new();
    for o in trace {
        match o.event {
            CommitEvent::Restarted => {
                high.remove(&o.node);
            }
            CommitEvent::Committed { index, term, entry_hash } => {
                seen.entry(index).or_default().entry((term, entry_hash)).or_insert((o.node, o.at_ms));
                match high.get(&o.node) {
                    Some(&(before, before_at)) if index < before => {
                        violations.push(Violation::new(
                            Checker::CommittedEntries,
                            format!(
                                "{} reported commit index {index} at {} ms after {before} at \
                                 {before_at} ms, with no restart between",
                                o.node, o.at_ms
                            ),
                        ));
                    }
                    Some(&(before, _)) if index == before => {}
                    _ => {
                        high.insert(o.node, (index, o.at_ms));
                    }
                }
            }
        }
    }
    for (index, variants) in &seen {
        if variants.len() > 1 {
            let list = variants
                .iter()
                .map(|((term, hash), (node, at))| format!("term {term} hash {hash:#x} (first on {node} at {at} ms)"))
                .collect::<Vec<_>>()
                .join(" vs ");
            violations
                .push(Violation::new(Checker::CommittedEntries, format!("committed index {index} changed: {list}")));
        }
    }
    let firsts: Vec<(u64, u64)> = seen
        .iter()
        .map(|(&index, variants)| {
            let (&(term, _), _) =
                variants.iter().min_by_key(|(_, (_, at))| *at).expect("an index is recorded with a variant");
            (index, term)
        })
        .collect();
    for pair in firsts.windows(2) {
        let ((lo_index, lo_term), (hi_index, hi_term)) = (pair[0], pair[1]);
        if hi_term < lo_term {
            violations.push(Violation::new(
                Checker::CommittedEntries,
                format!(
                    "committed index {hi_index} has term {hi_term}, lower than term {lo_term} \
                     of committed index {lo_index}"
                ),
            ));
        }
    }
    violations
}

/// For every node that restarted at least once and reported a commit after its last
/// restart: by the end of the trace, its highest commit index since that restart must be
/// at least the highest it reported before it (in any earlier incarnation). A committed
/// entry is on a quorum's disk, so a correct node always gets it back.
///
/// Call this only on a trace that ends after a settle period with the cluster healed: a
/// node cut off, or still replaying, when the trace ends would be reported. A node that
/// reported nothing since its last restart is not judged.
pub fn check_commits_recovered(trace: &[CommitObservation]) -> Vec<Violation> {
    #[derive(Default)]
    struct NodeState {
        /// Highest index of the earlier incarnations, and when it was reported.
        before_restart: Option<(u64, u64)>,
        /// Highest index of the current incarnation, and when it was reported.
        current: Option<(u64, u64)>,
        last_restart_ms: u64,
    }
    let mut nodes: BTreeMap<ServerId, NodeState> = BTreeMap::new();
    for o in trace {
        let node = nodes.entry(o.node).or_default();
        match o.event {
            CommitEvent::Restarted => {
                let previous = node.current.take().unwrap_or((0, o.at_ms));
                if node.before_restart.is_none_or(|(b, _)| previous.0 > b) {
                    node.before_restart = Some(previous);
                }
                node.last_restart_ms = o.at_ms;
            }
            CommitEvent::Committed { index, .. } => {
                if node.current.is_none_or(|(c, _)| index > c) {
                    node.current = Some((index, o.at_ms));
                }
            }
        }
    }
    nodes
        .into_iter()
        .filter_map(|(id, node)| {
            let (before, before_at) = node.before_restart?;
            let (current, _) = node.current?;
            (current < before).then(|| {
                Violation::new(
                    Checker::CommitsRecovered,
                    format!(
                        "{id} had committed up to index {before} (reported at {before_at} ms) \
                         but after restarting at {} ms reached only {current} by the end",
                        node.last_restart_ms
                    ),
                )
            })
        })
        .collect()
}

/// A node's state machine at some applied index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedSample {
    pub node: ServerId,
    pub at_ms: u64,
    pub applied_index: u64,
    pub state_hash: u64,
}

/// Any two samples at the same applied index have the same state hash. One violation per
/// disagreeing index.
pub fn check_state_machines(samples: &[AppliedSample]) -> Vec<Violation> {
    // index -> hash -> (node, at) first seen
    let mut seen: BTreeMap<u64, BTreeMap<u64, FirstSeen>> = BTreeMap::new();
    for s in samples {
        seen.entry(s.applied_index).or_default().entry(s.state_hash).or_insert((s.node, s.at_ms));
    }
    seen.into_iter()
        .filter(|(_, hashes)| hashes.len() > 1)
        .map(|(index, hashes)| {
            let list = hashes
                .iter()
                .map(|(hash, (node, at))| format!("{hash:#x} (first on {node} at {at} ms)"))
                .collect::<Vec<_>>()
                .join(" vs ");
            Violation::new(
                Checker::StateMachineAgreement,
                format!("state machines differ at applied index {index}: {list}"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(node: u64, term: u64, at_ms: u64) -> LeaderObservation {
        LeaderObservation { node: ServerId(node), term, at_ms }
    }

    fn commit(node: u64, at_ms: u64, index: u64, term: u64, entry_hash: u64) -> CommitObservation {
        CommitObservation { node: ServerId(node), at_ms, event: CommitEvent::Committed { index, term, entry_hash } }
    }

    fn restart(node: u64, at_ms: u64) -> CommitObservation {
        CommitObservation { node: ServerId(node), at_ms, event: CommitEvent::Restarted }
    }

    fn sample(node: u64, applied_index: u64, state_hash: u64) -> AppliedSample {
        AppliedSample { node: ServerId(node), at_ms: applied_index * 10, applied_index, state_hash }
    }

    #[test]
    fn one_leader_per_term_passes_even_when_reported_often() {
        let trace = [leader(1, 1, 10), leader(1, 1, 20), leader(2, 2, 30), leader(2, 2, 40), leader(1, 3, 50)];
        assert!(check_leader_per_term(&trace).is_empty());
        assert!(check_leader_per_term(&[]).is_empty());
    }

    #[test]
    fn two_leaders_in_a_term_fail_once_per_term() {
        let trace = [leader(1, 4, 10), leader(2, 4, 12), leader(1, 4, 14), leader(3, 5, 20)];
        let v = check_leader_per_term(&trace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::LeaderPerTerm);
        assert_eq!(v[0].detail, "term 4 had 2 leaders: server-1 (from 10 ms), server-2 (from 12 ms)");
    }

    #[test]
    fn agreeing_commits_with_restart_and_replay_pass() {
        let trace = [
            commit(1, 10, 1, 1, 0xa),
            commit(2, 11, 1, 1, 0xa),
            commit(1, 20, 2, 1, 0xb),
            commit(1, 20, 2, 1, 0xb),
            commit(2, 21, 2, 1, 0xb),
            commit(1, 30, 3, 2, 0xc),
            restart(1, 40),
            // Replays from the start after the restart: allowed to go back.
            commit(1, 50, 1, 1, 0xa),
            commit(1, 51, 2, 1, 0xb),
            commit(1, 52, 3, 2, 0xc),
            commit(1, 53, 4, 3, 0xd),
            // A node that installed a snapshot jumps ahead.
            commit(2, 60, 4, 3, 0xd),
        ];
        assert!(check_committed_entries(&trace).is_empty());
        assert!(check_commits_recovered(&trace).is_empty());
    }

    #[test]
    fn a_changed_committed_entry_fails_even_across_restarts() {
        let trace = [
            commit(1, 10, 1, 1, 0xa),
            commit(1, 11, 2, 1, 0xb),
            restart(1, 20),
            restart(2, 20),
            commit(1, 30, 1, 1, 0xa),
            commit(2, 31, 2, 2, 0xee),
        ];
        let v = check_committed_entries(&trace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::CommittedEntries);
        assert_eq!(
            v[0].detail,
            "committed index 2 changed: term 1 hash 0xb (first on server-1 at 11 ms) vs \
             term 2 hash 0xee (first on server-2 at 31 ms)"
        );
    }

    #[test]
    fn a_commit_index_going_back_without_restart_fails() {
        let trace = [commit(1, 10, 1, 1, 0xa), commit(1, 11, 2, 1, 0xb), commit(1, 12, 1, 1, 0xa)];
        let v = check_committed_entries(&trace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("server-1 reported commit index 1 at 12 ms after 2"), "{v:?}");
    }

    #[test]
    fn committed_terms_decreasing_with_the_index_fail() {
        let trace = [commit(1, 10, 1, 3, 0xa), commit(2, 11, 2, 2, 0xb)];
        let v = check_committed_entries(&trace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("index 2 has term 2, lower than term 3"), "{v:?}");
    }

    #[test]
    fn a_restarted_node_that_never_gets_back_fails_recovery() {
        let trace = [
            commit(1, 10, 1, 1, 0xa),
            commit(1, 11, 2, 1, 0xb),
            commit(1, 12, 3, 1, 0xc),
            restart(1, 20),
            commit(1, 30, 1, 1, 0xa),
            commit(1, 31, 2, 1, 0xb),
            // Node 2 restarted but reported nothing since: not judged.
            commit(2, 12, 3, 1, 0xc),
            restart(2, 40),
        ];
        assert!(check_committed_entries(&trace).is_empty());
        let v = check_commits_recovered(&trace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::CommitsRecovered);
        assert_eq!(
            v[0].detail,
            "server-1 had committed up to index 3 (reported at 12 ms) but after restarting at \
             20 ms reached only 2 by the end"
        );
    }

    #[test]
    fn recovery_compares_with_the_highest_of_all_earlier_incarnations() {
        let trace = [
            commit(1, 10, 5, 1, 0xa),
            restart(1, 20),
            commit(1, 30, 3, 1, 0xc),
            restart(1, 40),
            commit(1, 50, 4, 1, 0xd),
        ];
        let v = check_commits_recovered(&trace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("up to index 5"), "{v:?}");
        let mut healed = trace.to_vec();
        healed.push(commit(1, 60, 5, 1, 0xa));
        assert!(check_commits_recovered(&healed).is_empty());
    }

    #[test]
    fn equal_states_at_equal_indices_pass() {
        let samples = [sample(1, 1, 0x11), sample(2, 1, 0x11), sample(2, 2, 0x22), sample(1, 3, 0x33)];
        assert!(check_state_machines(&samples).is_empty());
    }

    #[test]
    fn different_states_at_one_index_fail() {
        let samples = [sample(1, 7, 0x11), sample(2, 7, 0x12), sample(3, 7, 0x11), sample(3, 8, 1)];
        let v = check_state_machines(&samples);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::StateMachineAgreement);
        assert_eq!(
            v[0].detail,
            "state machines differ at applied index 7: 0x11 (first on server-1 at 70 ms) vs \
             0x12 (first on server-2 at 70 ms)"
        );
    }
}
