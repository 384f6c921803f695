//! Messages on the wire: the client protocol and the handshake (`roster_client::wire`,
//! re-exported here), and the peer protocol, which carries openraft's types.

use crate::raft::TypeConfig;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

pub use roster_client::wire::*;

/// Largest frame a peer may send: an append of many entries or a snapshot chunk.
pub const MAX_PEER_FRAME_BYTES: usize = 32 << 20;
/// Snapshots travel in chunks of at most this many bytes.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

// ---- peers ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// One piece of a snapshot; the receiver installs it when `last` arrives.
    SnapshotChunk {
        vote: openraft::alias::VoteOf<TypeConfig>,
        meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    },
    /// The leader hands leadership to the receiver (or tells the others it does).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum PeerResponse {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    /// A chunk was stored; send the next.
    ChunkAccepted,
    SnapshotInstalled(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The receiving node could not handle the request (shutting down, bad chunk order).
    Failed(String),
}
