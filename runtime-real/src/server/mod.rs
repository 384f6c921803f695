//! The server side of a node: what it does with requests and what it does by itself.
//!
//! - `dispatch`: the listener; tells peers from clients and hands each request on.
//! - `api`: what a node does with each client request, in parts by concern (reads, status,
//!   membership, backups; `served` routes a request to its part).
//! - `authority`: who is calling (token or peer key) and whether it may send a request.
//! - `proposer`: gathers writes into batched Raft entries and answers each.
//! - `leader`: the leader driver, sole owner of the kernel's `LeaderDuties`.
//! - `agent`: this server's own membership (register, heartbeat with resources, leave).
//! - `leadership`: where to send a request this node cannot serve.
//! - `launch`: remote launch (placement on the leader, start on the chosen node).
//! - `compaction`: snapshots by log bytes.
//! - `probe`: CPU and memory samples for the agent.
//! - `vote_gate`: no vote from a node that started with an empty data directory until it caught up.
//! - `cluster_id`: which cluster this node belongs to; peers of another are refused.
//! - `relay`: one request from this node to another (asks and forwards).
//! - `rejoin`: the bootstrap check of a fresh node, readmission and `member replace`.
//! - `formation`: initial members started together form the cluster together.
//! - `raft_stopped`: tells the node to exit once its Raft core has stopped (a fail-stopped log).

pub mod agent;
pub mod api;
pub mod authority;
pub mod cluster_id;
pub mod compaction;
pub mod dispatch;
pub mod formation;
pub mod launch;
pub mod leader;
pub mod leadership;
pub mod outbox;
pub mod output;
pub mod peer_intake;
pub mod proposer;
pub mod raft_stopped;
pub mod rejoin;
pub mod relay;
pub mod snapshot_receive;
pub mod vote_gate;

/// The Raft instance of a node: the kernel's state machine behind the durable store.
pub type Raft = openraft::Raft<crate::raft::TypeConfig, crate::storage::StateMachineStore>;

/// The node's owners the API's parts hand work to (each part keeps the ones it needs).
pub struct Handles {
    pub id: crate::raft::NodeId,
    pub raft: Raft,
    pub shared: std::sync::Arc<crate::storage::SharedState>,
    /// Closed while this node may not vote (it started with an empty data directory).
    pub vote_gate: std::sync::Arc<vote_gate::VoteGate>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The peer key: what other nodes prove, and what this node's own connections prove.
    pub peer: roster_client::PeerAuth,
    /// How this node connects to another (plain TCP, or TLS with its certificate).
    pub connector: crate::net::transport::Connector,
}
