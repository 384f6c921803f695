//! A node's first start: may it form a new cluster, or must it wait to be replaced?
//!
//! A node started with `--bootstrap` and an empty data directory cannot tell "new" from
//! "lost its disk". If it formed a cluster of its own after losing its disk, its empty
//! log could vote a node that lacks committed writes into leadership: the loss the vote
//! gate exists to prevent. So it asks its peers first, and this state machine decides
//! from their answers. It does no I/O: the driver asks the peers it is told to
//! (`poll_asks`), reports each answer or its absence (`handle_answer`), wakes it at
//! `poll_timeout` (`handle_timeout`), and acts on `decision`.
//!
//! The rules:
//! - Every start of a node has its own incarnation. While a fresh node decides, its
//!   status names that incarnation ("deciding"). A node that forms the cluster remembers
//!   the peers it saw deciding (`formed_with`).
//! - A peer that knows a leader, or has seen an entry committed, knows a running cluster.
//!   One that merely formed it and never reached a quorum does not: nothing was
//!   acknowledged there yet, so members started one after another still form it.
//! - A running cluster that names this very incarnation in its `formed_with` was formed
//!   while this start was deciding, and this start has refused every vote and append
//!   since: it may form it too (an initialisation identical to theirs).
//! - Any other running cluster, heard in any pass, is never forgotten: the node waits
//!   for `member replace`. A later pass that hears nobody does not undo it.
//! - Every pass asks every peer at once, each ask bounded by `ask_timeout_ms`, so one
//!   silent peer (powered off, its packets dropped) costs one ask's time, not the whole
//!   budget, and the other peers are heard in every pass.
//! - The check ends when a pass heard every peer, when a peer names this start in its
//!   `formed_with`, or at the budget. Between passes it waits `retry_ms`, so that members
//!   started together see each other deciding.

use std::collections::{BTreeMap, BTreeSet};

/// A Raft node id.
pub type NodeId = u64;

/// A start of a node: its id and this start's incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Start {
    pub node: NodeId,
    pub incarnation: u64,
}

/// What a peer says of itself, as far as formation cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The incarnation of a start that is deciding whether to bootstrap.
    pub deciding: Option<u64>,
    /// The starts it saw deciding when it formed the cluster.
    pub formed_with: Vec<Start>,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: Option<u64>,
}

impl PeerStatus {
    /// It knows a leader, or has seen an entry committed: the cluster had a quorum once,
    /// and a node that lost its disk may have acknowledged entries there.
    pub fn knows_a_running_cluster(&self) -> bool {
        self.leader.is_some() || self.commit_index.is_some_and(|c| c >= 1)
    }
}

/// The answer to one ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Status(PeerStatus),
    /// Refused, unreachable, or not within the ask's timeout.
    NoAnswer,
}

/// Ask `peer` for its status now; give up at `until_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub peer: NodeId,
    pub until_ms: u64,
}

/// A running cluster that this start may not form, as heard from one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub peer: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: Option<u64>,
}

/// What the check decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No peer knows a running cluster: form one, remembering the peers seen deciding.
    Form { formed_with: Vec<Start> },
    /// A cluster runs that `by` formed while this start was deciding: form it too
    /// (the same initialisation), remembering the peers seen deciding as well, because a
    /// peer that finds this node formed must find itself named here or in another's list.
    Join { by: NodeId, formed_with: Vec<Start> },
    /// A cluster runs without this start: wait for `member replace`.
    Wait { running: Running },
}

/// Bounds of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// The whole check, all passes together.
    pub budget_ms: u64,
    /// One ask within a pass.
    pub ask_timeout_ms: u64,
    /// The pause between passes.
    pub retry_ms: u64,
}

impl Default for CheckConfig {
    /// Long enough for a loaded peer, short enough not to slow a first start; an ask is a
    /// quarter of the budget, so a silent peer leaves room for three more passes.
    fn default() -> Self {
        CheckConfig { budget_ms: 2_000, ask_timeout_ms: 500, retry_ms: 100 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// The next pass starts at this time.
    Idle {
        next_pass_ms: u64,
    },
    /// A pass is under way; these asks have not come back.
    Asking {
        outstanding: BTreeSet<NodeId>,
        until_ms: u64,
        silent: bool,
    },
    Decided(Decision),
}

/// The first-start check of one node.
#[derive(Clone, Debug)]
pub struct FormationCheck {
    me: Start,
    peers: BTreeSet<NodeId>,
    config: CheckConfig,
    deadline_ms: u64,
    /// Each peer's latest answer from any pass.
    latest: BTreeMap<NodeId, PeerStatus>,
    /// The first running cluster heard in any pass (kept: see the module's rules).
    running: Option<Running>,
    phase: Phase,
}

impl FormationCheck {
    /// A check by `me` of `peers` (this node among them or not), starting at `now_ms`.
    pub fn new(now_ms: u64, me: Start, peers: impl IntoIterator<Item = NodeId>, config: CheckConfig) -> Self {
        let peers: BTreeSet<NodeId> = peers.into_iter().filter(|p| *p != me.node).collect();
        let phase = match peers.is_empty() {
            true => Phase::Decided(Decision::Form { formed_with: Vec::new() }),
            false => Phase::Idle { next_pass_ms: now_ms },
        };
        FormationCheck {
            me,
            peers,
            config,
            deadline_ms: now_ms.saturating_add(config.budget_ms),
            latest: BTreeMap::new(),
            running: None,
            phase,
        }
    }

    /// The asks to send now: every peer at once when a pass starts, nothing otherwise.
    pub fn poll_asks(&mut self, now_ms: u64) -> Vec<Ask> {
        let Phase::Idle { next_pass_ms } = self.phase else { return Vec::new() };
        if now_ms < next_pass_ms {
            return Vec::new();
        }
        let until_ms = now_ms.saturating_add(self.config.ask_timeout_ms).min(self.deadline_ms);
        self.phase = Phase::Asking { outstanding: self.peers.clone(), until_ms, silent: false };
        self.peers.iter().map(|&peer| Ask { peer, until_ms }).collect()
    }

    /// `peer`'s answer to this pass's ask (an answer from another pass, or from a node
    /// that is not a peer, is ignored).
    pub fn handle_answer(&mut self, now_ms: u64, peer: NodeId, answer: Answer) {
        let Phase::Asking { outstanding, silent, .. } = &mut self.phase else { return };
        if !outstanding.remove(&peer) {
            return;
        }
        match answer {
            Answer::Status(status) => {
                if self.running.is_none() && status.knows_a_running_cluster() && !status.formed_with.contains(&self.me)
                {
                    self.running = Some(Running {
                        peer,
                        leader: status.leader,
                        term: status.term,
                        commit_index: status.commit_index,
                    });
                }
                self.latest.insert(peer, status);
            }
            Answer::NoAnswer => *silent = true,
        }
        if outstanding.is_empty() {
            self.end_pass(now_ms);
        }
    }

    /// Wakes the check at `poll_timeout`: asks still out past their time count as no
    /// answer, and the budget's end decides.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let Phase::Asking { outstanding, until_ms, .. } = &self.phase
            && now_ms >= *until_ms
        {
            for peer in outstanding.clone() {
                self.handle_answer(now_ms, peer, Answer::NoAnswer);
            }
        }
        if matches!(self.phase, Phase::Idle { .. }) && now_ms >= self.deadline_ms {
            self.decide();
        }
    }

    /// When to call `handle_timeout` (or `poll_asks`) next; `None` once decided.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.phase {
            Phase::Idle { next_pass_ms } => Some(*next_pass_ms),
            Phase::Asking { until_ms, .. } => Some(*until_ms),
            Phase::Decided(_) => None,
        }
    }

    pub fn decision(&self) -> Option<&Decision> {
        match &self.phase {
            Phase::Decided(d) => Some(d),
            _ => None,
        }
    }

    fn end_pass(&mut self, now_ms: u64) {
        let Phase::Asking { silent, .. } = self.phase else { return };
        let named = self.latest.values().any(|s| s.formed_with.contains(&self.me));
        let next_pass_ms = now_ms.saturating_add(self.config.retry_ms);
        if named || !silent || next_pass_ms >= self.deadline_ms {
            self.decide();
        } else {
            self.phase = Phase::Idle { next_pass_ms };
        }
    }

    fn decide(&mut self) {
        let formed_with: Vec<Start> = self
            .latest
            .iter()
            .filter_map(|(&node, s)| s.deciding.map(|incarnation| Start { node, incarnation }))
            .collect();
        let by = self.latest.iter().find(|(_, s)| s.formed_with.contains(&self.me)).map(|(id, _)| *id);
        let decision = match (by, &self.running) {
            (Some(by), _) => Decision::Join { by, formed_with },
            (None, Some(running)) => Decision::Wait { running: running.clone() },
            (None, None) => Decision::Form { formed_with },
        };
        self.phase = Phase::Decided(decision);
    }
}

#[cfg(test)]
mod tests;
