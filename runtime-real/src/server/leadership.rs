//! Answers for a request this node cannot serve because it does not lead (or not yet):
//! where to go instead. Shared by the API, the proposer and launch.

use crate::net::wire::{ClientResponse, Unavailable};
use crate::raft::{NodeId, TypeConfig};
use crate::server::Raft;
use openraft::error::{ForwardReason, ForwardToLeader};
use openraft_rt::WatchReceiver;

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
