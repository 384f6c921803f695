//! The first start of a cluster, when its initial members start at about the same time.
//!
//! A fresh node started with `--bootstrap` asks its peers before it forms a new cluster
//! (`rejoin::check_peers`). One that finds a cluster already running waits for `member
//! replace`, because it cannot tell whether it lost its disk (see `vote_gate.rs`). That
//! would also strand an initial member whose check merely came a moment after the others
//! had formed the cluster, which is easy with elections of 100–200 ms.
//!
//! Rules, in one place:
//! - Every start of a node has its own `incarnation` number. While a fresh node decides
//!   (its vote gate closed in memory: it has refused every vote and every append since it
//!   started), its status names that incarnation (`ClusterStatus::deciding`).
//! - A node that forms the cluster (first, or by the next rule) remembers, in memory, the
//!   peers it saw deciding in its own check, with their incarnations
//!   (`ClusterStatus::formed_with`).
//! - A deciding node that finds a running cluster may still form it (an initialisation
//!   identical to theirs) if a peer names it with its current incarnation in
//!   `formed_with`: that incarnation has refused every vote and append, and there is no
//!   earlier one that could have acknowledged anything in this cluster, which was formed
//!   while it was deciding. A restarted node has a new incarnation and is refused as before.
//! - A peer knows a running cluster if it knows a leader or has seen an entry committed;
//!   one that formed the cluster and never reached a quorum does not (members started one
//!   after another still form it, as before this module).
//! - A node's check asks every peer, in passes, until one pass heard them all (bounded),
//!   so that members started together see each other deciding, and so that a member
//!   named by any peer finds it even if another peer does not name it.
//! - The verdict is judged on each peer's latest answer from any pass (`PeerAnswers`),
//!   not on the last pass alone: the pass that the deadline cuts short may hear nobody,
//!   and "nobody answered" would then read as "no cluster". A node that lost its disk
//!   formed a cluster of its own that way, opened its vote gate, and its vote elected a
//!   node that lacked committed writes (simulator, `disk-loss`).

use crate::net::wire::ClusterStatus;
use crate::raft::NodeId;
use std::sync::Mutex;

/// What this node's start knows of the first formation.
pub struct Formation {
    incarnation: u64,
    state: Mutex<State>,
}

struct State {
    deciding: bool,
    formed_with: Vec<(NodeId, u64)>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Every critical section leaves the state whole: a poisoned lock still holds it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Formation {
    /// `deciding`: this start found no vote and no log and decides whether to bootstrap.
    pub fn new(incarnation: u64, deciding: bool) -> Formation {
        Formation { incarnation, state: Mutex::new(State { deciding, formed_with: Vec::new() }) }
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This start's incarnation while it decides whether to bootstrap.
    pub fn deciding(&self) -> Option<u64> {
        lock(&self.state).deciding.then_some(self.incarnation)
    }

    /// The peers (with their incarnations) seen deciding when this node formed the cluster.
    pub fn formed_with(&self) -> Vec<(NodeId, u64)> {
        lock(&self.state).formed_with.clone()
    }

    /// The decision is made: `formed_with` the deciding peers when this node forms the
    /// cluster, empty when it waits instead.
    pub fn decided(&self, formed_with: Vec<(NodeId, u64)>) {
        let mut state = lock(&self.state);
        state.deciding = false;
        state.formed_with = formed_with;
    }
}

/// A number for this start of the process, different from every earlier start of this
/// node: wall-clock milliseconds, mixed with the process id outside the simulator (where
/// every simulated start has its own simulated time).
pub fn new_incarnation() -> u64 {
    let ms = crate::rt::clock::unix_ms();
    #[cfg(not(madsim))]
    let ms = (ms << 20) ^ u64::from(std::process::id());
    ms
}

/// What the peers' answers say about forming a new cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerCheck {
    /// No peer knows a cluster: form one, remembering `deciding`, the peers seen deciding.
    NoCluster { deciding: Vec<(NodeId, u64)> },
    /// A cluster runs, formed while this very start was deciding (named by the peer `by`):
    /// form it too, remembering `deciding` as well (a peer that finds this node formed
    /// must find itself named here, or in another's list).
    FormedWithMe { by: String, deciding: Vec<(NodeId, u64)> },
    /// A cluster runs without this start: wait for `member replace`.
    Running(String),
}

/// The latest answer of each peer that answered in any pass of a check, with its address.
#[derive(Default)]
pub struct PeerAnswers {
    latest: std::collections::BTreeMap<NodeId, (String, ClusterStatus)>,
}

impl PeerAnswers {
    /// Records `status` as `id`'s answer, replacing any earlier one.
    pub fn heard(&mut self, id: NodeId, addr: String, status: ClusterStatus) {
        self.latest.insert(id, (addr, status));
    }

    /// `judge` on the latest answers, in peer id order.
    pub fn judge(&self, me: (NodeId, u64)) -> PeerCheck {
        let answers: Vec<(NodeId, String, ClusterStatus)> =
            self.latest.iter().map(|(id, (addr, s))| (*id, addr.clone(), s.clone())).collect();
        judge(me, &answers)
    }
}

/// Judges the answers of the peers (`(id, address, status)`) for the start `me`.
/// Pure, so that the rules above have unit tests.
pub fn judge(me: (NodeId, u64), answers: &[(NodeId, String, ClusterStatus)]) -> PeerCheck {
    let deciding = || answers.iter().filter_map(|(id, _, s)| s.deciding.map(|inc| (*id, inc))).collect();
    if let Some((id, addr, _)) = answers.iter().find(|(_, _, s)| s.formed_with.contains(&me)) {
        return PeerCheck::FormedWithMe { by: format!("node {id} at {addr}"), deciding: deciding() };
    }
    // A peer that knows a leader, or has seen an entry committed (the cluster had a
    // quorum once: a node that lost its disk may have acknowledged entries), knows a
    // running cluster. One that merely formed it and never reached a quorum (its peers
    // were started one after another) does not: nothing was acknowledged there yet.
    let running = answers.iter().find(|(_, _, s)| s.leader.is_some() || s.commit_index.is_some_and(|c| c >= 1));
    if let Some((id, addr, s)) = running {
        return PeerCheck::Running(format!(
            "node {id} at {addr} reports {} in term {}, commit index {}",
            s.leader.map_or("no leader yet".to_string(), |l| format!("leader {l}")),
            s.term,
            s.commit_index.map_or("-".to_string(), |c| c.to_string())
        ));
    }
    PeerCheck::NoCluster { deciding: deciding() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: NodeId) -> ClusterStatus {
        ClusterStatus { node, ..ClusterStatus::default() }
    }

    fn answer(node: NodeId, s: ClusterStatus) -> (NodeId, String, ClusterStatus) {
        (node, format!("10.0.0.{node}:7000"), s)
    }

    #[test]
    fn fresh_peers_mean_no_cluster_and_the_deciding_ones_are_named() {
        let deciding = ClusterStatus { deciding: Some(77), ..status(2) };
        let waiting = ClusterStatus { waiting: Some("lost its disk".into()), ..status(3) };
        let got = judge((1, 5), &[answer(2, deciding), answer(3, waiting)]);
        assert_eq!(got, PeerCheck::NoCluster { deciding: vec![(2, 77)] });
        assert_eq!(judge((1, 5), &[]), PeerCheck::NoCluster { deciding: vec![] });
    }

    #[test]
    fn a_peer_with_a_leader_or_a_membership_is_a_running_cluster() {
        let led = ClusterStatus { leader: Some(3), term: 4, commit_index: Some(37), ..status(2) };
        let PeerCheck::Running(why) = judge((1, 5), &[answer(2, led)]) else { panic!("running") };
        assert!(why.contains("node 2") && why.contains("leader 3") && why.contains("37"), "{why}");
        // Between leaders, but entries were committed once: a cluster all the same.
        let electing = ClusterStatus {
            voters: vec![(1, "a".into()), (2, "b".into())],
            term: 6,
            commit_index: Some(40),
            ..status(2)
        };
        let PeerCheck::Running(why) = judge((1, 5), &[answer(2, electing)]) else { panic!("running") };
        assert!(why.contains("no leader yet") && why.contains("40"), "{why}");
        // Formed alone, never a quorum (started first, its peers later): nothing to forget.
        let alone = ClusterStatus { voters: vec![(1, "a".into()), (2, "b".into())], term: 1, ..status(2) };
        assert_eq!(judge((1, 5), &[answer(2, alone)]), PeerCheck::NoCluster { deciding: vec![] });
    }

    #[test]
    fn a_cluster_formed_while_this_start_was_deciding_may_be_joined_but_not_by_a_later_start() {
        let formed = ClusterStatus {
            leader: Some(2),
            voters: vec![(1, "a".into())],
            formed_with: vec![(1, 5), (3, 9)],
            ..status(2)
        };
        let deciding = ClusterStatus { deciding: Some(8), ..status(4) };
        let got = judge((1, 5), &[answer(3, status(3)), answer(2, formed.clone()), answer(4, deciding)]);
        // Those seen deciding are kept here too: they may find this node formed first.
        assert_eq!(got, PeerCheck::FormedWithMe { by: "node 2 at 10.0.0.2:7000".into(), deciding: vec![(4, 8)] });
        // The same node restarted (a new incarnation, perhaps with a lost disk): refused.
        assert!(matches!(judge((1, 6), &[answer(2, formed.clone())]), PeerCheck::Running(_)));
        // Another node's entry is not this one's.
        assert!(matches!(judge((3, 5), &[answer(2, formed)]), PeerCheck::Running(_)));
    }

    #[test]
    fn a_pass_that_hears_nobody_does_not_forget_a_running_cluster() {
        let mut answers = PeerAnswers::default();
        answers.heard(2, "10.0.0.2:7000".into(), ClusterStatus { leader: Some(2), term: 4, ..status(2) });
        // The next passes hear nobody (peer 3 is cut off; the deadline cuts the last one
        // short before peer 2 answers again): the cluster still runs.
        assert!(matches!(answers.judge((1, 5)), PeerCheck::Running(_)));
        // A later answer replaces the earlier one (peer 3 stopped deciding).
        let deciding = ClusterStatus { deciding: Some(8), ..status(3) };
        let mut fresh = PeerAnswers::default();
        fresh.heard(3, "10.0.0.3:7000".into(), deciding);
        fresh.heard(3, "10.0.0.3:7000".into(), status(3));
        assert_eq!(fresh.judge((1, 5)), PeerCheck::NoCluster { deciding: vec![] });
        assert_eq!(PeerAnswers::default().judge((1, 5)), PeerCheck::NoCluster { deciding: vec![] });
    }

    #[test]
    fn a_decision_ends_deciding_and_keeps_who_was_seen() {
        let f = Formation::new(42, true);
        assert_eq!(f.deciding(), Some(42));
        f.decided(vec![(2, 7)]);
        assert_eq!((f.deciding(), f.formed_with()), (None, vec![(2, 7)]));
        assert_eq!(Formation::new(42, false).deciding(), None);
    }
}
