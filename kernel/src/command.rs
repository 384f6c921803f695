//! Commands the state machine applies (through Raft), their replies and errors.

use crate::ids::{MemberId, ProcessId, ServerId, SessionId};
use crate::model::{Labels, MemberStatus, ProcessInfo, ResourceAverage, ServerInfo};
use serde::{Deserialize, Serialize};

/// One Raft log entry's payload: a command stamped by the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposer's wall clock (Unix ms), used only for tombstone times and age-based
    /// pruning; applying never reads a clock, so replicas stay identical.
    pub at_unix_ms: u64,
    pub body: ProposalBody,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            ProposalBody::OpenSession => write!(f, "open-session"),
            ProposalBody::Client(r) => write!(f, "{}#{} {:?}", r.session, r.seq, r.command),
            ProposalBody::Leader(c) => write!(f, "leader {c:?}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalBody {
    /// Opens a session; the reply carries its id.
    OpenSession,
    /// A client command under exactly-once rules.
    Client(Request),
    /// Leader-internal bookkeeping (expiries, resource averages); no session.
    Leader(LeaderCommand),
}

/// A client command with its (session, sequence) for exactly-once application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub session: SessionId,
    /// Starts at 1 and grows by one per command of the session.
    pub seq: u64,
    pub command: Command,
}

/// Partial update of a server entry: `None` leaves the field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPatch {
    pub name: Option<String>,
    pub raft_addr: Option<String>,
    pub api_addr: Option<String>,
    pub cpu_capacity_percent: Option<u32>,
    pub mem_capacity_bytes: Option<u64>,
    pub status: Option<MemberStatus>,
}

/// Partial update of a process entry: `None` leaves the field as it is; labels merge
/// key by key, and a label set to `None` is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPatch {
    pub name: Option<String>,
    pub service_host: Option<String>,
    pub service_port: Option<Option<u16>>,
    pub status: Option<MemberStatus>,
    pub labels: std::collections::BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Registers a server, or re-registers it (same id) after a restart.
    RegisterServer {
        id: ServerId,
        info: ServerInfo,
    },
    DeregisterServer {
        id: ServerId,
    },
    RegisterProcess {
        info: ProcessInfo,
    },
    DeregisterProcess {
        id: ProcessId,
        exit_status: Option<i32>,
    },
    /// Create-or-merge of a server entry (creates only if `info` is given).
    PutServer {
        id: ServerId,
        patch: ServerPatch,
        create: Option<ServerInfo>,
    },
    /// Merge into an existing process entry.
    PutProcess {
        id: ProcessId,
        patch: ProcessPatch,
    },
    /// Operator removal; leaves a `Deleted` tombstone.
    Delete {
        member: MemberId,
    },
    KvPut {
        key: String,
        value: String,
    },
    KvDelete {
        key: String,
    },
    /// Sets `key` to `new` (or deletes it when `new` is `None`) only if its current value
    /// equals `expected` (`None` meaning absent).
    KvCas {
        key: String,
        expected: Option<String>,
        new: Option<String>,
    },
    /// Does nothing but advance the session; lets a client learn that it is in sync.
    Noop,
    /// Drains server `id` (placement stops choosing it) or ends its drain; see
    /// `ServerEntry::drained`. Refused for an unknown server.
    SetDrained {
        id: ServerId,
        drained: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderCommand {
    /// Members whose heartbeats stopped, batched; each with how long it was silent.
    Expire { members: Vec<(MemberId, u64)> },
    /// Averaged resources of servers, batched.
    ReportResources { reports: Vec<(ServerId, ResourceAverage)> },
}

/// The successful outcome of an applied command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    SessionOpened {
        session: SessionId,
    },
    /// The command changed nothing it was not meant to; `revision` is the state after it.
    Done {
        revision: u64,
    },
    ProcessRegistered {
        id: ProcessId,
        revision: u64,
    },
    /// For `KvCas`: whether it swapped, and the value found.
    Cas {
        swapped: bool,
        current: Option<String>,
        revision: u64,
    },
    /// For leader commands: how many members they touched.
    Applied {
        count: u32,
        revision: u64,
    },
}

/// Why a command was refused; refusals are deterministic, so they are replies too and
/// a retried command gets the same refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("unknown {0}")]
    UnknownMember(MemberId),
    #[error("unknown or evicted {0}: open a new session")]
    UnknownSession(SessionId),
    #[error("{session} sequence {seq} is older than the last applied {last}; its reply was discarded")]
    StaleSequence { session: SessionId, seq: u64, last: u64 },
    #[error("{session} sequence {seq} skips ahead of the last applied {last}")]
    SequenceGap { session: SessionId, seq: u64, last: u64 },
    #[error("process claims unknown host {0}")]
    UnknownServer(ServerId),
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge { what: String, len: usize, max: usize },
    #[error("the cluster holds {count} {what}, its limit")]
    TableFull { what: String, count: usize },
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: String, reason: String },
}

pub type CommandResult = Result<Reply, CommandError>;

/// What a read asks for. Reads do not go through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    GetServer(ServerId),
    GetProcess(ProcessId),
    List(ListFilter),
    KvGet {
        key: String,
    },
    /// Keys in `[start, end)`; `end = None` means to the last key; at most `limit` items.
    KvRange {
        start: String,
        end: Option<String>,
        limit: u32,
    },
    Tombstones {
        limit: u32,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// `None` lists both kinds.
    pub kind: Option<MemberKind>,
    /// Only processes hosted on this server (and this server itself).
    pub server: Option<ServerId>,
    pub status: Option<MemberStatus>,
    /// Every label here must match.
    pub labels: Labels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberKind {
    Server,
    Process,
}
