//! Answers for a request this node cannot serve because it does not lead (or not yet):
//! where to go instead. Shared by the API, the proposer and launch.

use crate::net::wire::{ClientResponse, RequestError, Unavailable};
use crate::raft::{NodeId, TypeConfig};
use crate::server::Raft;
use openraft::alias::WatchReceiverOf;
use openraft::error::{ForwardReason, ForwardToLeader};
use openraft_rt::WatchReceiver;
use roster_kernel::redirect::{self, First, Refused, Step};
use std::time::Duration;

/// The answer of node `node`, which does not lead: the leader's id and address when known.
pub async fn not_leader(raft: &Raft, node: NodeId) -> ClientResponse {
    let leader = raft.current_leader().await;
    let addr = leader.and_then(|l| node_addr(raft, l));
    match (leader, addr) {
        (Some(l), _) if l == node => ClientResponse::RetryLater(Unavailable::DutiesStarting),
        (Some(l), Some(a)) => ClientResponse::NotLeader { leader: Some((l, a)) },
        _ => ClientResponse::NotLeader { leader: None },
    }
}

/// The address of voter or learner `id`, from the membership Raft holds.
pub fn node_addr(raft: &Raft, id: NodeId) -> Option<String> {
    let m = raft.metrics().borrow_watched().membership_config.clone();
    m.membership().get_node(&id).map(|n| n.addr.clone())
}

/// Whether `node`, refused a write with `LeaseExpired`, was only just elected: its
/// metrics do not yet show it as a leader with a quorum acknowledgment (they are published
/// after the core's state changes, so a leader of a few microseconds may still show as a
/// candidate). The other case is a leader whose quorum has gone quiet.
fn is_fresh_leader(raft: &Raft, node: NodeId) -> bool {
    let m = raft.metrics();
    let m = m.borrow_watched();
    !(m.state == openraft::ServerState::Leader && m.current_leader == Some(node) && m.last_quorum_acked.is_some())
}

/// The answer to a request node `node` cannot serve because Raft sent it elsewhere.
///
/// openraft refuses a write with `LeaseExpired` (and no leader named) at a leader without
/// a quorum acknowledgment within its lease. Just elected (no acknowledgment yet this
/// term), it is ready within a round trip: same node, shortly. Otherwise its quorum has
/// gone quiet and another node may lead already: the client should look elsewhere.
pub fn forward_response(raft: &Raft, node: NodeId, f: &ForwardToLeader<TypeConfig>) -> ClientResponse {
    if f.reason == ForwardReason::LeaseExpired {
        return if is_fresh_leader(raft, node) {
            ClientResponse::RetryLater(Unavailable::LeaderNotReady)
        } else {
            ClientResponse::NotLeader { leader: None }
        };
    }
    ClientResponse::NotLeader { leader: f.leader_id.zip(f.leader_node.as_ref().map(|n| n.addr.clone())) }
}

/// Hands leadership from this node (`node`, the leader) to voter `to`, or to the voter
/// whose replicated log is furthest (ties: the lower id), and waits until Raft reports
/// another leader, at most `timeout_ms`. Returns the new leader.
pub async fn hand_off(raft: &Raft, node: NodeId, to: Option<NodeId>, timeout_ms: u64) -> Result<NodeId, RequestError> {
    let mut metrics = raft.metrics();
    let target = {
        let m = metrics.borrow_watched();
        let voters: std::collections::BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let matched: std::collections::BTreeMap<NodeId, u64> =
            m.replication.iter().flatten().filter_map(|(id, matched)| matched.map(|l| (*id, l.index))).collect();
        roster_kernel::membership::hand_off_target(&voters, node, to, &matched)?
    };
    tracing::info!(node, to = target, "handing leadership over");
    if let Err(e) = raft.trigger().transfer_leader(target).await {
        return Err(RequestError::WriteFailed { reason: format!("raft stopped during the hand-off: {e}") });
    }
    let moved = wait_for_other_leader(&mut metrics, node);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    match crate::rt::Timeout::new(moved, deadline).await {
        Ok(Some(leader)) => {
            tracing::info!(node, leader, "leadership handed over");
            Ok(leader)
        }
        Ok(None) | Err(_) => Err(RequestError::TransferTimedOut { to: target, timeout_ms }),
    }
}

/// Waits until Raft names a leader other than `node`; `None` if Raft stops.
async fn wait_for_other_leader(
    metrics: &mut WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
    node: NodeId,
) -> Option<NodeId> {
    loop {
        if let Some(l) = metrics.borrow_watched().current_leader.filter(|l| *l != node) {
            return Some(l);
        }
        metrics.changed().await.ok()?;
    }
}

/// What to do with a write Raft refused with `ForwardToLeader`.
pub enum Redirect {
    /// Propose it again: this node leads now and can take it.
    Again,
    /// Answer the client with this.
    Answer(ClientResponse),
}

/// The answer for the kernel's `step`.
fn answer(raft: &Raft, step: Step) -> ClientResponse {
    match step {
        Step::Name(Some(l)) => ClientResponse::NotLeader { leader: node_addr(raft, l).map(|a| (l, a)) },
        Step::Name(None) => ClientResponse::NotLeader { leader: None },
        Step::NotReadyYet | Step::TakeIt | Step::Wait => ClientResponse::RetryLater(Unavailable::LeaderNotReady),
    }
}

/// Decides what to do with a write Raft refused with `f` by the kernel's rules
/// (`roster_kernel::redirect`), reading this node's Raft state and waiting as they say.
pub async fn redirect(raft: &Raft, node: NodeId, f: &ForwardToLeader<TypeConfig>) -> Redirect {
    let config = raft.config();
    let heartbeat_ms = config.heartbeat_interval.max(1);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(redirect::wait_budget_ms(config.election_timeout_max));
    let remaining = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let refused = match f.reason {
        ForwardReason::LeadershipTransfer => Refused::LeadershipTransfer,
        ForwardReason::LeaseExpired => Refused::LeaseExpired { just_elected: is_fresh_leader(raft, node) },
        _ => Refused::NotLeader,
    };
    match redirect::first(refused) {
        First::AnswerAsRaftSaid => return Redirect::Answer(forward_response(raft, node, f)),
        First::AnswerNoLeader => return Redirect::Answer(ClientResponse::NotLeader { leader: None }),
        First::WaitForLease => {
            let settled = raft
                .wait(Some(remaining()))
                .metrics(
                    |m| match m.current_leader {
                        Some(l) if l == node => {
                            m.state == openraft::ServerState::Leader && m.last_quorum_acked.is_some()
                        }
                        Some(_) => true,
                        None => false,
                    },
                    "leader lease",
                )
                .await;
            return match redirect::after_lease_wait(node, settled.ok().map(|m| m.current_leader)) {
                Step::TakeIt => Redirect::Again,
                step => Redirect::Answer(answer(raft, step)),
            };
        }
        First::Follow => {}
    }
    loop {
        // The leader this node follows (its vote, once committed) and when it last heard
        // from it, on the core's own record: metrics lag it. A committed vote is touched
        // only by the leader's own messages.
        let state = raft
            .with_raft_state(|s| {
                let vote = s.vote_ref();
                (vote.is_committed().then_some(vote.leader_id().voted_for), s.vote_last_modified())
            })
            .await;
        let Ok((leader, heard)) = state else {
            return Redirect::Answer(ClientResponse::RetryLater(Unavailable::ShuttingDown));
        };
        let heard_ago_ms = heard.map(|at| openraft::Instant::elapsed(&at).as_millis() as u64);
        match redirect::follow(node, leader, heard_ago_ms, heartbeat_ms, remaining().as_millis() as u64) {
            Step::TakeIt => return Redirect::Again,
            Step::Wait => {
                // Until another leader is known, or one heartbeat (the named one may speak again).
                let heartbeat = Duration::from_millis(heartbeat_ms);
                let _ = raft
                    .wait(Some(heartbeat.min(remaining())))
                    .metrics(|m| m.current_leader != leader, "leader change")
                    .await;
            }
            step => return Redirect::Answer(answer(raft, step)),
        }
    }
}
