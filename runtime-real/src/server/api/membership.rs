//! Changes of the Raft membership and of who leads: `member add`, `remove`, `replace`,
//! a leader's readmission of a node that lost its data, and leadership hand-off. The
//! refusals and the steps are the kernel's (`roster_kernel::membership`); this part does
//! the I/O.

use super::served::MembershipRequest;
use crate::net::transport::Connector;
use crate::net::wire::{ClientResponse, RequestError};
use crate::raft::{NodeAddr, NodeId};
use crate::server::Raft;
use crate::server::cluster_id::{ClusterId, Identity};
use crate::server::leadership;
use crate::server::vote_gate::VoteGate;
use openraft_rt::WatchReceiver;
use roster_client::{Credential, PeerAuth};
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct Membership {
    id: NodeId,
    raft: Raft,
    /// The peer key: what this node proves to the node it adds or readmits.
    peer: PeerAuth,
    connector: Connector,
    identity: Arc<Identity>,
    vote_gate: Arc<VoteGate>,
    /// How long a leadership hand-off may take before it is reported as failed.
    hand_off_timeout_ms: u64,
}

impl Membership {
    pub fn new(handles: &crate::server::Handles, identity: Arc<Identity>, hand_off_timeout_ms: u64) -> Membership {
        Membership {
            id: handles.id,
            raft: handles.raft.clone(),
            peer: handles.peer.clone(),
            connector: handles.connector.clone(),
            identity,
            vote_gate: handles.vote_gate.clone(),
            hand_off_timeout_ms,
        }
    }

    /// Whether node `id` is a voter or learner here, or this node has no membership yet
    /// (a new or wiped node: the vote gate and the cluster id guard it).
    pub fn is_member_or_unformed(&self, id: NodeId) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        nodes.peek().is_none() || membership.nodes().any(|(node, _)| *node == id)
    }

    pub async fn handle(&self, request: MembershipRequest) -> ClientResponse {
        match request {
            MembershipRequest::Readmit { leader, last_log_index, cluster } => {
                self.readmitted(leader, last_log_index, cluster).await
            }
            // Every other change is the leader's to make.
            _ if !self.raft.is_leader() => leadership::not_leader(&self.raft, self.id).await,
            MembershipRequest::Add { id, addr } => self.add(id, addr).await,
            MembershipRequest::Remove { id } => self.remove(id).await,
            MembershipRequest::Replace { id } => self.replace(id).await,
            MembershipRequest::TransferLeader { to } => {
                match leadership::hand_off(&self.raft, self.id, to, self.hand_off_timeout_ms).await {
                    Ok(leader) => ClientResponse::LeaderTransferred { leader },
                    Err(e) => ClientResponse::Error(e),
                }
            }
        }
    }

    fn cluster(&self) -> Option<u64> {
        self.identity.get().map(|id| id.0)
    }

    fn credential(&self) -> Credential {
        Credential::Peer(self.peer.clone())
    }

    async fn replace(&self, id: NodeId) -> ClientResponse {
        let credential = self.credential();
        match crate::server::rejoin::replace(&self.raft, self.id, &credential, &self.connector, self.cluster(), id)
            .await
        {
            Ok(()) => ClientResponse::Done,
            Err(e) => {
                tracing::warn!(node = id, error = %e, "member replace failed");
                ClientResponse::Error(e)
            }
        }
    }

    /// The leader lets this node take replication again (see `vote_gate.rs`), and names
    /// the cluster: a node of another cluster refuses.
    /// Answers only once what it stored is durable.
    async fn readmitted(&self, leader: NodeId, last_log_index: u64, cluster: Option<u64>) -> ClientResponse {
        if let Some(id) = cluster
            && let Err(e) = self.identity.adopt(ClusterId(id), &format!("leader {leader}"))
        {
            tracing::warn!(leader, error = %e, "refusing readmission");
            return ClientResponse::Error(RequestError::ReadmitFailed { node: self.id, reason: e.to_string() });
        }
        self.identity.settled().await;
        if !self.vote_gate.is_closed() {
            return ClientResponse::Done;
        }
        match self.vote_gate.readmit(last_log_index) {
            Ok(()) => {
                self.vote_gate.settled().await;
                tracing::info!(
                    leader,
                    target = last_log_index,
                    "readmitted by the leader: taking replication; votes again once applied up to the target"
                );
                ClientResponse::Done
            }
            Err(e) => ClientResponse::Error(RequestError::ReadmitFailed { node: self.id, reason: e.to_string() }),
        }
    }

    async fn add(&self, id: NodeId, addr: String) -> ClientResponse {
        tracing::info!(node = id, %addr, "adding server node: catching up as learner");
        // A new node waits, refusing replication, until a leader readmits it.
        let credential = self.credential();
        if let Err(e) =
            crate::server::rejoin::readmit(&self.raft, self.id, &credential, &self.connector, self.cluster(), id, &addr)
                .await
        {
            return ClientResponse::Error(e);
        }
        if let Err(e) = self.raft.add_learner(id, NodeAddr { addr }, true).await {
            return match e.forward_to_leader() {
                Some(f) => leadership::forward_response(&self.raft, self.id, f),
                None => ClientResponse::Error(RequestError::AddLearner { node: id, reason: e.to_string() }),
            };
        }
        let mut voters: BTreeSet<NodeId> = self.raft.voter_ids().collect();
        voters.insert(id);
        self.change_voters(voters, format!("node {id} added as voter")).await
    }

    async fn remove(&self, id: NodeId) -> ClientResponse {
        let voters: BTreeSet<NodeId> = self.raft.voter_ids().collect();
        match roster_kernel::membership::remove(&voters, id) {
            Ok(after) => self.change_voters(after, format!("node {id} removed")).await,
            Err(refusal) => ClientResponse::Error(refusal.into()),
        }
    }

    async fn change_voters(&self, voters: BTreeSet<NodeId>, what: String) -> ClientResponse {
        match self.raft.change_membership(voters, false).await {
            Ok(_) => {
                tracing::info!("{what}");
                ClientResponse::Done
            }
            Err(e) => match e.forward_to_leader() {
                Some(f) => leadership::forward_response(&self.raft, self.id, f),
                None => ClientResponse::Error(RequestError::MembershipChange { reason: e.to_string() }),
            },
        }
    }
}
