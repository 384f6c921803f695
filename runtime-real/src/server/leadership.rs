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

/// The answer to a request node `node` cannot serve because Raft sent it elsewhere.
pub fn forward_response(node: NodeId, f: &ForwardToLeader<TypeConfig>) -> ClientResponse {
    // Right after an election the new leader may refuse with LeaseExpired: same leader,
    // try again shortly.
    if f.reason == ForwardReason::LeaseExpired && f.leader_id == Some(node) {
        return ClientResponse::RetryLater(Unavailable::LeaderNotReady);
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
