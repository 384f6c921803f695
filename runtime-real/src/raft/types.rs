//! openraft's type configuration for Roster: a `Batch` of the kernel's proposals is the
//! log payload, their results the response, and `RosterRuntime` the one async runtime.

use crate::raft::entry::{Batch, BatchReplies};
use crate::rt::RosterRuntime;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the cluster knows of how to reach a server node; carried in Raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// `HOST:PORT` serving both peers and clients (the handshake tells them apart).
    pub addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = BatchReplies,
        NodeId = u64,
        Node = NodeAddr,
        AsyncRuntime = RosterRuntime,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type NodeId = u64;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
