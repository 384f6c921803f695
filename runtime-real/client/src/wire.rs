//! Messages between clients and nodes, and the handshake every connection starts with
//! (a `Hello` carrying the cluster token). Peer messages, which carry openraft's types,
//! are the node's own (`roster_real::net::wire`).

use roster_kernel::{
    CommandResult, Event, MemberId, ProcessId, Query, QueryReply, Request, ResourceAverage, ServerId, SessionId,
    SessionOwner,
};
use serde::{Deserialize, Serialize};

/// A server node's id in the Raft group.
pub type NodeId = u64;

/// Largest frame a client may send or receive.
pub const MAX_CLIENT_FRAME_BYTES: usize = 4 << 20;

/// Most snapshot bytes in one `SnapshotChunk`: well under a frame, with room for the
/// envelope, so a snapshot of any size streams in frames the client accepts.
pub const SNAPSHOT_STREAM_CHUNK_BYTES: usize = 1 << 20;

/// Largest hello (and peer proof) a node reads before the caller is authenticated.
pub const MAX_HELLO_BYTES: usize = 4 << 10;

/// The first frame of every connection: who the caller is and what it wants to speak.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub auth: Auth,
    pub channel: Channel,
}

#[derive(Clone, Serialize, Deserialize)]
pub enum Auth {
    /// A client's bearer token: the bootstrap token file, or one made with `roster token create`.
    Token(String),
    /// Another node of the cluster, proving the peer key (see `peer_auth.rs`); `cluster`
    /// is its cluster id when it knows it (a node of another cluster is refused).
    Peer { from: NodeId, cluster: Option<u64>, nonce: crate::peer_auth::Nonce },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(<secret>)"),
            Auth::Peer { from, cluster, .. } => write!(f, "Peer {{ from: {from}, cluster: {cluster:?} }}"),
        }
    }
}

/// What the connection carries after the hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// Raft's messages between nodes (peer key only).
    Raft,
    /// The client protocol (`ClientEnvelope`s).
    Client,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HelloReply {
    /// Authenticated; `role` names what the caller may do (`admin`, `member process-3`, `node`).
    Welcome {
        node: NodeId,
        role: String,
    },
    /// The accepting node proves the peer key; the connecting node answers with a `PeerProof`.
    Challenge {
        node: NodeId,
        nonce: crate::peer_auth::Nonce,
        proof: crate::peer_auth::Proof,
    },
    Refused {
        reason: String,
    },
}

/// The connecting node's answer to a `Challenge`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerProof {
    pub proof: crate::peer_auth::Proof,
}

// ---- clients ----

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Confirmed with a quorum by the leader (read-index) before answering.
    Linearizable,
    /// Whatever the contacted node has applied; may be behind.
    Stale,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientEnvelope {
    /// Echoed on the response, so one connection can carry many requests at once.
    pub id: u64,
    pub request: ClientRequest,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Opens a session that only the caller's credential may use.
    OpenSession,
    /// A command under exactly-once rules, on a session of the caller's.
    Submit(Request),
    /// Ends a session of the caller's for good.
    CloseSession {
        session: SessionId,
    },
    /// A node passing on a session request (`OpenSession`, `Submit`, `CloseSession`) for
    /// a caller it authenticated itself (an HTTP client): the session is the caller's, not
    /// the node's. Only nodes may send it.
    OnBehalf {
        owner: SessionOwner,
        request: Box<ClientRequest>,
    },
    Query {
        query: Query,
        consistency: Consistency,
    },
    /// "I am alive", to the leader only; servers attach their averaged resources.
    Heartbeat {
        member: MemberId,
        resources: Option<ResourceAverage>,
    },
    /// Stream change events after `after_revision` on this connection until it closes.
    Watch {
        after_revision: u64,
    },
    Status,
    AddNode {
        id: NodeId,
        addr: String,
    },
    RemoveNode {
        id: NodeId,
    },
    /// Bring back voter `id` that lost its data: demote it to learner, replicate to it
    /// from scratch, wait (bounded) until it caught up, promote it again.
    ReplaceNode {
        id: NodeId,
    },
    /// Leader → a node that started with an empty data directory and did not bootstrap:
    /// take replication from me now; vote again once applied up to `last_log_index`
    /// (the leader's last log index when it let this node back in).
    Readmit {
        leader: NodeId,
        last_log_index: u64,
        /// The cluster id, which the node adopts (a node of another cluster refuses).
        cluster: Option<u64>,
    },
    /// Hand leadership to voter `to`, or to the most up-to-date voter.
    TransferLeader {
        to: Option<NodeId>,
    },
    Launch(LaunchRequest),
    /// Leader → chosen node: start this program here.
    StartLocal(LaunchRequest),
    /// A consistent snapshot of the applied state, from the leader (after a read-index
    /// round, so it holds every write acknowledged before the request): one
    /// `SnapshotBegin`, then `SnapshotChunk`s on the same id until `total_bytes` came.
    Snapshot,
    /// A piece of a launched process's output, from the node that runs it (any node
    /// takes the request and forwards it there).
    Output(OutputRequest),
    /// Any node → the node that runs the process: read its output here.
    LocalOutput(OutputRequest),
}

impl ClientRequest {
    /// Whether the request is the same when applied twice, so a client may send it again
    /// after it may already have been processed (the kernel's `LeaderSearch` then
    /// resends it; otherwise it reports the outcome ambiguous). Launching twice starts
    /// two programs; removing a node twice reports an error for a removal that worked; a
    /// second leadership transfer may move leadership again. Everything else is a read, a
    /// heartbeat, or a change that is the same when repeated (a repeated session open
    /// leaves an unused session behind, which the cluster evicts in time: cheaper than
    /// failing the open).
    pub fn repeatable(&self) -> bool {
        !matches!(
            self,
            ClientRequest::Launch(_)
                | ClientRequest::StartLocal(_)
                | ClientRequest::RemoveNode { .. }
                | ClientRequest::TransferLeader { .. }
        )
    }
}

/// Which piece of a launched process's output to read. The answer holds at most
/// `MAX_OUTPUT_READ_BYTES`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRequest {
    pub process: ProcessId,
    pub from: OutputFrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputFrom {
    /// The bytes from this offset of the output file on.
    Offset(u64),
    /// The last this many lines (within the read bound).
    TailLines(u32),
}

/// Most bytes of output one request returns: well under a frame, so a follower relays it.
pub const MAX_OUTPUT_READ_BYTES: u64 = 256 * 1024;

/// A piece of a launched process's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// The server that runs (ran) the process, and the file there.
    pub server: ServerId,
    pub file: String,
    /// Where `data` starts in the file; the next piece starts at `offset + data.len()`.
    pub offset: u64,
    pub data: Vec<u8>,
    /// The file's size when it was read.
    pub size_bytes: u64,
    /// The process is no longer registered (it ended): the output will not grow.
    pub process_left: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub require_mem_bytes: Option<u64>,
    pub require_cpu_percent: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientResponseEnvelope {
    pub id: u64,
    pub response: ClientResponse,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientResponse {
    SessionOpened(SessionId),
    Applied(CommandResult),
    Query(QueryReply),
    HeartbeatOk,
    /// The member is not (or no longer) in the cluster: register again.
    UnknownMember(MemberId),
    /// One or more watch events, ending on a whole revision; more follow on the same id.
    Events(Vec<Event>),
    /// The first events of one revision too large for a frame; the rest of it follows,
    /// closed by an `Events`. A stream that breaks before then resumes before it.
    EventsPart(Vec<Event>),
    /// The requested revision is older than the node keeps; list again and watch from now.
    WatchCompacted {
        oldest_available: u64,
    },
    Status(Box<ClusterStatus>),
    Launched {
        server: ServerId,
        process: ProcessId,
    },
    /// The head of a snapshot stream: what the snapshot holds, and how to check it.
    SnapshotBegin(SnapshotHead),
    /// The next piece of the snapshot (at most `SNAPSHOT_STREAM_CHUNK_BYTES`).
    SnapshotChunk(Vec<u8>),
    Done,
    /// Leadership moved to this node.
    LeaderTransferred {
        leader: NodeId,
    },
    /// Ask the leader instead; the hint is its id and address when known.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    /// Try again shortly at the same node: it cannot serve the request yet.
    RetryLater(Unavailable),
    /// The node refused the request: repeating it unchanged cannot succeed.
    Error(RequestError),
    /// A launch started: where it runs, and the file on that server its output goes to.
    LaunchStarted {
        server: ServerId,
        process: ProcessId,
        output_file: String,
    },
    /// A piece of a launched process's output.
    Output(OutputChunk),
}

/// Why a node cannot serve a request right now; the same request may succeed shortly at
/// the same node (clients retry these, with backoff).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Unavailable {
    /// Right after an election openraft refuses writes until the leader's lease holds.
    #[error("the new leader is not ready yet: its lease is still being established")]
    LeaderNotReady,
    /// Raft calls this node leader, but its duties have not started this term yet.
    #[error("the leader is starting its duties")]
    DutiesStarting,
    #[error("cannot confirm leadership for a linearizable read: {reason}")]
    ReadNotConfirmed { reason: String },
    /// Heartbeats and status questions wait for the leader driver in a bounded queue.
    #[error("the leader's duty queue is full ({capacity} requests waiting)")]
    DutiesBusy { capacity: usize },
    /// The node started with an empty data directory and has not caught up with the
    /// cluster yet: what it holds is not the cluster's state (see `ClusterStatus::waiting`).
    #[error("this node is not caught up: {reason}")]
    NotCaughtUp { reason: String },
    /// Its connections close next; the client moves to another node.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A request the node refused; retrying it unchanged cannot help, so clients surface it
/// at once with this message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    #[error("remote launch is unavailable on node {node}")]
    LaunchUnavailable { node: NodeId },
    #[error("launch refused: program {program:?} is not on node {node}'s allow-list (launch_allow / --launch-allow)")]
    NotAllowed { program: String, node: NodeId },
    #[error("launch of {name:?}: {error}")]
    Placement { name: String, error: roster_kernel::PlacementError },
    #[error("launch: chosen {server} has no known address")]
    NoAddress { server: ServerId },
    /// Starting the program failed on the chosen node (the OS's reason).
    #[error("launch failed: {reason}")]
    LaunchFailed { reason: String },
    #[error("launch timed out: {name:?} did not register within {timeout_ms} ms (log: {log})")]
    RegisterTimeout { name: String, timeout_ms: u64, log: String },
    #[error("launch: forwarding to {addr} failed: {reason}")]
    ForwardFailed { addr: String, reason: String },
    #[error("launch timed out waiting for {addr}")]
    ForwardTimeout { addr: String },
    #[error("node {node} is not a voter of this cluster")]
    NotAVoter { node: NodeId },
    #[error("refusing to remove node {node}: it is the last voter")]
    LastVoter { node: NodeId },
    #[error("adding node {node} as learner failed: {reason}")]
    AddLearner { node: NodeId, reason: String },
    #[error("cannot hand leadership to node {node}: it is not a voter of this cluster")]
    TransferTargetNotVoter { node: NodeId },
    #[error("cannot hand leadership over: this node is the only voter")]
    NoOtherVoter,
    #[error(
        "leadership did not move to node {to} within {timeout_ms} ms (it may be behind or unreachable); the old leader leads on"
    )]
    TransferTimedOut { to: NodeId, timeout_ms: u64 },
    #[error(
        "cannot replace node {node}: it is the leader answering; hand leadership over first (roster member transfer-leader)"
    )]
    ReplaceLeader { node: NodeId },
    #[error("node {node} is not a member of this cluster (neither voter nor learner)")]
    UnknownNode { node: NodeId },
    #[error("cannot let node {node} back in: {reason}")]
    ReadmitFailed { node: NodeId, reason: String },
    #[error(
        "node {node} did not catch up within {timeout_ms} ms (matched {matched:?} of {target}); it stays a learner: check that it runs and is reachable, then run `roster member replace {node}` again"
    )]
    CatchUpTimedOut { node: NodeId, timeout_ms: u64, matched: Option<u64>, target: u64 },
    #[error("membership change failed: {reason}")]
    MembershipChange { reason: String },
    /// Raft could not take the write for a reason other than leadership (openraft's text).
    #[error("write failed: {reason}")]
    WriteFailed { reason: String },
    #[error("write failed: the state machine gave no reply for this command")]
    NoReply,
    /// The request frame could not be read; the node closes the connection after this.
    #[error("closing connection: {reason}")]
    BadFrame { reason: String },
    #[error("this node does not serve {request}")]
    Unsupported { request: String },
    #[error("the leader cannot take a snapshot: {reason}")]
    SnapshotFailed { reason: String },
    /// The answer would not fit in a frame; the request did what it did (a read changed
    /// nothing), and the connection goes on. Ask for less (a smaller page).
    #[error(
        "the answer to {request} is {bytes} bytes, over the {max_bytes}-byte frame limit: ask for less (a smaller page or range)"
    )]
    AnswerTooLarge { request: String, bytes: usize, max_bytes: usize },
    /// The answer could not be encoded for another reason (a bug: the node logs it); the
    /// connection goes on.
    #[error("the answer to {request} could not be encoded: {reason}")]
    AnswerUnencodable { request: String, reason: String },
    /// Watches and snapshot downloads open on one connection at once, at most.
    #[error("{max} streams (watches, snapshot downloads) are already open on this connection: close one first")]
    TooManyStreams { max: usize },
    /// Snapshot exports this node makes at once, at most (each holds a copy of the state).
    #[error("the leader is already exporting {max} snapshots, its limit: retry when one has finished")]
    SnapshotsBusy { max: usize },
    /// The caller's credential does not allow the request; nothing was applied.
    #[error("forbidden: a {role} credential may not {action}")]
    Forbidden { role: String, action: String },
    /// The connection's token was revoked or expired after it connected.
    #[error("unauthenticated: {reason}")]
    Unauthenticated { reason: String },
    #[error("{process} is neither registered nor among the recent departures: no output to show")]
    UnknownProcess { process: ProcessId },
    #[error(
        "{process} was not launched by Roster (it runs under `roster run` or registered itself): its output is \
         wherever its owner sent it; `roster logs` reads only launched processes"
    )]
    NotLaunched { process: ProcessId },
    #[error("cannot read the output of {process} on node {node}: {reason}")]
    OutputUnreadable { process: ProcessId, node: NodeId, reason: String },
}

impl From<roster_kernel::membership::MembershipRefusal> for RequestError {
    fn from(refusal: roster_kernel::membership::MembershipRefusal) -> Self {
        use roster_kernel::membership::MembershipRefusal as R;
        match refusal {
            R::NotAVoter { node } => RequestError::NotAVoter { node },
            R::LastVoter { node } => RequestError::LastVoter { node },
            R::ReplaceLeader { node } => RequestError::ReplaceLeader { node },
            R::UnknownNode { node } => RequestError::UnknownNode { node },
            R::TransferTargetNotVoter { node } => RequestError::TransferTargetNotVoter { node },
            R::NoOtherVoter => RequestError::NoOtherVoter,
        }
    }
}

impl From<roster_kernel::Forbidden> for RequestError {
    fn from(f: roster_kernel::Forbidden) -> Self {
        RequestError::Forbidden { role: f.role, action: f.action }
    }
}

/// What a snapshot stream carries: the node's snapshot bytes (its own header, Raft
/// metadata and the kernel's versioned, checksummed image) at one applied log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHead {
    /// The kernel's revision in the snapshot.
    pub revision: u64,
    /// The last log entry applied in it.
    pub last_log_term: u64,
    pub last_log_index: u64,
    /// Length of the bytes that follow in chunks.
    pub total_bytes: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub crc32: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub revision: u64,
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
    pub servers: Vec<ServerStatus>,
    /// How many processes the record holds; list them with a paged `Query::List`
    /// (`roster ls`), so that a status always fits a frame.
    pub processes: ProcessCounts,
    /// The replicated state's byte budget, what uses it, and whether its alarm is on.
    #[serde(default)]
    pub state: roster_kernel::StateUsage,
    /// The leader's guard against mass false expiry: the grace its own lateness adds to
    /// the heartbeat timeout, and the brake's alarm (set only by the leader).
    #[serde(default)]
    pub expiry: roster_kernel::ExpiryGuardStatus,
    /// Why this node neither votes nor serves stale reads yet: it started with an empty
    /// data directory without bootstrapping (a new node waiting for `member add`, or one
    /// that lost its disk waiting for `member replace`). `None` on a node in good standing.
    #[serde(default)]
    pub waiting: Option<String>,
    /// The cluster this node belongs to (16 hex digits), once it knows.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// This start's incarnation while the node decides whether to form a new cluster
    /// (it started with `--bootstrap` and found no vote and no log).
    #[serde(default)]
    pub deciding: Option<u64>,
    /// The peers (id, incarnation) this node saw deciding when it formed the cluster: they
    /// may form it too (see the node's `server::formation`).
    #[serde(default)]
    pub formed_with: Vec<(NodeId, u64)>,
}

/// The processes in the record, by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCounts {
    pub total: u64,
    pub online: u64,
    pub draining: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub entry: roster_kernel::ServerEntry,
    /// Milliseconds since the leader last heard this server; `None` if not the leader.
    pub heartbeat_age_ms: Option<u64>,
}
