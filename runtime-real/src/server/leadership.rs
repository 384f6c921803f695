//! Answers for a request this node cannot serve because it does not lead (or not yet):
//! where to go instead. Shared by the API, the proposer and launch.

use crate::net::wire::{ClientResponse, RequestError, Unavailable};
use crate::raft::{NodeId, TypeConfig};
use crate::server::Raft;
use openraft::alias::WatchReceiverOf;
use openraft::error::{ForwardReason, ForwardToLeader};
use openraft_rt::WatchReceiver;
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
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != node).collect();
        match to {
            Some(t) if voters.contains(&t) => t,
            Some(t) => return Err(RequestError::TransferTargetNotVoter { node: t }),
            None => {
                let matched = |v: &NodeId| m.replication.as_ref().and_then(|r| r.get(v).cloned().flatten());
                // Furthest log first; among equals the lower id (max_by_key keeps the last max).
                voters.iter().rev().max_by_key(|v| matched(v)).copied().ok_or(RequestError::NoOtherVoter)?
            }
        }
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

/// The answer naming `leader` as Raft's core sees it at `node` (no leader: none known).
fn naming(raft: &Raft, node: NodeId, leader: Option<NodeId>) -> ClientResponse {
    match leader {
        Some(l) if l == node => ClientResponse::RetryLater(Unavailable::LeaderNotReady),
        Some(l) => ClientResponse::NotLeader { leader: node_addr(raft, l).map(|a| (l, a)) },
        None => ClientResponse::NotLeader { leader: None },
    }
}

/// Decides what to do with a write Raft refused with `f`, waiting first (at most twice
/// the election timeout) while an immediate answer would only send the client round in
/// circles:
///
/// - a leader just elected waits for its first quorum acknowledgment (one round trip),
///   then takes the write itself;
/// - a follower whose leader has gone silent (nothing from it for two Raft heartbeats:
///   it may have crashed), or that knows no leader (an election is on), waits until it
///   hears from a leader, then names it; if it won the election itself, it takes the
///   write.
///
/// Without the wait the client is told to go to a dead leader, fails to connect, is sent
/// back there by the next follower, and backs off ever longer while the election runs;
/// the first write after the election then waits out the client's backoff.
pub async fn redirect(raft: &Raft, node: NodeId, f: &ForwardToLeader<TypeConfig>) -> Redirect {
    let config = raft.config();
    let heartbeat = Duration::from_millis(config.heartbeat_interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(config.election_timeout_max * 2);
    let remaining = || deadline.saturating_duration_since(tokio::time::Instant::now());
    if f.reason == ForwardReason::LeadershipTransfer {
        // A leader handing over names its successor: nothing to wait for.
        return Redirect::Answer(forward_response(raft, node, f));
    }
    if f.reason == ForwardReason::LeaseExpired {
        if !is_fresh_leader(raft, node) {
            return Redirect::Answer(ClientResponse::NotLeader { leader: None });
        }
        let settled = raft
            .wait(Some(remaining()))
            .metrics(
                |m| match m.current_leader {
                    Some(l) if l == node => m.state == openraft::ServerState::Leader && m.last_quorum_acked.is_some(),
                    Some(_) => true,
                    None => false,
                },
                "leader lease",
            )
            .await;
        return match settled {
            Ok(m) if m.current_leader == Some(node) => Redirect::Again,
            Ok(m) => Redirect::Answer(naming(raft, node, m.current_leader)),
            Err(_) => Redirect::Answer(ClientResponse::RetryLater(Unavailable::LeaderNotReady)),
        };
    }
    loop {
        // The leader this node follows (its vote, once committed) and when it last heard
        // from it, on the core's own record: metrics lag it.
        let state = raft
            .with_raft_state(|s| {
                let vote = s.vote_ref();
                (vote.is_committed().then_some(vote.leader_id().voted_for), s.vote_last_modified())
            })
            .await;
        let Ok((leader, heard)) = state else {
            return Redirect::Answer(ClientResponse::RetryLater(Unavailable::ShuttingDown));
        };
        if leader == Some(node) {
            return Redirect::Again;
        }
        if remaining().is_zero() {
            return Redirect::Answer(naming(raft, node, leader));
        }
        if leader.is_some() {
            // A committed vote is touched only by the leader's own messages.
            let silent = heard.is_none_or(|at| openraft::Instant::elapsed(&at) > heartbeat * 2);
            if !silent {
                return Redirect::Answer(naming(raft, node, leader));
            }
        }
        // Until another leader is known, or one heartbeat (the named one may speak again).
        let _ =
            raft.wait(Some(heartbeat.min(remaining()))).metrics(|m| m.current_leader != leader, "leader change").await;
    }
}
