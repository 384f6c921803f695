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
            ProposalBody::OpenSession { owner } => write!(f, "open-session for {owner}"),
            ProposalBody::Client { request: r, by } => write!(f, "{}#{} by {by} {:?}", r.session, r.seq, r.command),
            ProposalBody::CloseSession { session, by } => write!(f, "close {session} by {by}"),
            ProposalBody::Leader(c) => write!(f, "leader {c:?}"),
            ProposalBody::Audit(a) => write!(f, "audit {} ({}): {}", a.by, a.role, a.action),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalBody {
    /// Opens a session that only `owner` may use; the reply carries its id.
    OpenSession { owner: SessionOwner },
    /// A client command under exactly-once rules, made with credential `by` (which must
    /// own the session).
    Client { request: Request, by: SessionOwner },
    /// Ends a session for good; only its owner may. A retry of the close finds it gone.
    CloseSession { session: SessionId, by: SessionOwner },
    /// Leader-internal bookkeeping (expiries, resource averages); no session.
    Leader(LeaderCommand),
    /// An admin action, stamped by the node that authorised it: an event in the change
    /// stream (the audit trail), nothing else.
    Audit(AuditRecord),
}

/// The credential a session belongs to, as the node that received the request proved it:
/// only requests made with the same credential may use the session, so a session id seen
/// or guessed by another caller (ids are small integers) is of no use to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SessionOwner {
    /// A node of the cluster (the peer key): its own sessions (the server agent, HTTP
    /// writes without a session of the caller's).
    Node,
    /// The token file's credential.
    Bootstrap,
    /// A token the record holds; ids are never reused, so a revoked token's sessions stay
    /// unusable by a later token.
    Token(TokenId),
}

impl std::fmt::Display for SessionOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionOwner::Node => f.write_str("a node"),
            SessionOwner::Bootstrap => f.write_str("the bootstrap token"),
            SessionOwner::Token(id) => id.fmt(f),
        }
    }
}

/// Who did what, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The credential's name (`token create --name`), or "bootstrap" for the token file.
    pub by: String,
    /// The credential's role (`admin`, `agent`, ...).
    pub role: String,
    /// What it did, in words (`remove node 3`).
    pub action: String,
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
    /// Records a credential by the hash of its secret (the secret itself is never
    /// replicated). A member token is dropped with its member.
    CreateToken {
        hash: TokenHash,
        name: String,
        role: TokenRole,
        /// After this proposal time (Unix ms) the token is refused; `None`: never.
        expires_at_unix_ms: Option<u64>,
    },
    /// Forgets a credential: every node refuses it from the apply on.
    RevokeToken {
        id: TokenId,
    },
}

impl Command {
    /// What the command does, in words (refusals and the audit trail).
    pub fn describe(&self) -> String {
        match self {
            Command::RegisterServer { id, .. } => format!("register {id}"),
            Command::DeregisterServer { id } => format!("deregister {id}"),
            Command::RegisterProcess { info } => format!("register a process on {}", info.server),
            Command::DeregisterProcess { id, .. } => format!("deregister {id}"),
            Command::PutServer { id, .. } => format!("update {id}"),
            Command::PutProcess { id, patch } if patch.status.is_some() => format!("set the status of {id}"),
            Command::PutProcess { id, .. } => format!("update {id}"),
            Command::Delete { member } => format!("delete {member}"),
            Command::KvPut { key, .. } => format!("put key {key:?}"),
            Command::KvDelete { key } => format!("delete key {key:?}"),
            Command::KvCas { key, .. } => format!("compare-and-swap key {key:?}"),
            Command::Noop => "noop".into(),
            Command::SetDrained { id, drained: true } => format!("drain {id}"),
            Command::SetDrained { id, drained: false } => format!("undrain {id}"),
            Command::CreateToken { role, name, .. } => format!("create {} token {name:?}", role.describe()),
            Command::RevokeToken { id } => format!("revoke {id}"),
        }
    }

    /// Whether the audit trail records it: the admin's own actions, not the workers'
    /// everyday traffic (a member token minted by an agent is recorded by its event).
    pub fn is_audited(&self) -> bool {
        matches!(
            self,
            Command::Delete { .. }
                | Command::SetDrained { .. }
                | Command::CreateToken {
                    role: TokenRole::Admin | TokenRole::Read | TokenRole::Launch | TokenRole::Agent(_),
                    ..
                }
                | Command::RevokeToken { .. }
        )
    }
}

/// SHA-256 of a token's secret.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash, not a secret, but short is enough to tell two apart in a log.
        write!(f, "TokenHash({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// A token's id, assigned by the state machine; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenId(pub u64);

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "token-{}", self.0)
    }
}

/// The role a token carries (see `authority.rs`); agents and members are bound to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TokenRole {
    Admin,
    Read,
    Launch,
    Agent(ServerId),
    Member(MemberId),
}

impl TokenRole {
    pub fn name(&self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Read => "read",
            TokenRole::Launch => "launch",
            TokenRole::Agent(_) => "agent",
            TokenRole::Member(_) => "member",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TokenRole::Agent(server) => format!("agent ({server})"),
            TokenRole::Member(member) => format!("member ({member})"),
            other => other.name().to_string(),
        }
    }
}

/// A token as `token ls` shows it: never its secret, nor its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: String,
    pub role: TokenRole,
    pub expires_at_unix_ms: Option<u64>,
    pub created_rev: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderCommand {
    /// Members whose heartbeats stopped, batched; each with how long it was silent.
    Expire { members: Vec<(MemberId, u64)> },
    /// Averaged resources of servers, batched (what leaders before per-process resources
    /// wrote; still applied from an older log).
    ReportResources { reports: Vec<(ServerId, ResourceAverage)> },
    /// The cluster's id, a random number the first leader of a new cluster draws: the
    /// first one applied stays, later ones change nothing (see `server::cluster_id`).
    SealCluster { id: u64 },
    /// Averaged resources of servers and processes, batched (at most
    /// `leader_duties::MAX_RESOURCE_REPORTS_PER_PROPOSAL`).
    ReportMemberResources { reports: Vec<(MemberId, ResourceAverage)> },
    /// The state's byte budget, from the leader's `state_budget_bytes` (leader duties,
    /// rule 8): replicated, so every node refuses the same writes. A budget the limits
    /// cannot run with changes nothing; a smaller one first drops the oldest events and
    /// sessions past the new caps.
    SetStateBudget { bytes: u64 },
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
    TokenCreated {
        id: TokenId,
        revision: u64,
    },
    /// For leader commands: how many members they touched.
    Applied {
        count: u32,
        revision: u64,
    },
}

/// A refusal by `authority::authorize`: the caller's role may not do the action.
/// Nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("forbidden: a {role} credential may not {action}")]
pub struct Forbidden {
    /// The caller (its role, and what it is bound to).
    pub role: String,
    pub action: String,
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
    #[error("unknown {0}")]
    UnknownToken(TokenId),
    #[error("a token with this secret exists already: make a new secret")]
    DuplicateToken,
    /// Refused by the node before the log, for the caller's role: nothing was applied,
    /// and the session's sequence did not move (never a stored reply).
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// The caller's token was revoked or expired: nothing was applied.
    #[error("unauthenticated: {reason}")]
    Unauthenticated { reason: String },
    /// The pair (session, seq) was applied to another command: answering with that
    /// command's stored reply would tell the caller its own command applied.
    #[error("{session} sequence {seq} was used by another command: nothing was applied; use the next sequence")]
    SequenceReused { session: SessionId, seq: u64 },
    /// The session existed and is gone (idle too long, or evicted by newer sessions): a
    /// retry cannot be matched to its first attempt any more.
    #[error("{0} expired or was evicted: a command retried on it may have applied; open a new session")]
    SessionExpired(SessionId),
    /// The session was opened with another credential: nothing was applied, and nothing
    /// of the session (its sequence, its stored reply) is shown.
    #[error("{0} belongs to another credential: open a session of your own")]
    NotYourSession(SessionId),
    /// The write would take the replicated state past its byte budget (`budget.rs`):
    /// nothing was applied. Deletes still pass and free room.
    #[error(
        "state budget full: this write needs {needed_bytes} more bytes, and {total} of the {budget_bytes}-byte budget are in use ({used}); delete keys, labels or processes, or raise state_budget_bytes on every server",
        total = .used.total()
    )]
    OverBudget { budget_bytes: u64, used: crate::state_machine::StateBytes, needed_bytes: u64 },
}

/// A digest of `command`, stored beside a session's reply so that a duplicate (session,
/// seq) pair carrying another command is told apart: FNV-1a over its postcard encoding,
/// the same on every replica and every build of one wire version. A start time that a
/// node stamps when the caller gave none ("now") is left out: a retry stamped later is
/// the same request.
pub fn command_digest(command: &Command) -> u64 {
    match command {
        Command::RegisterProcess { info } if info.started_at_unix_ms != 0 => {
            let info = ProcessInfo { started_at_unix_ms: 0, ..info.clone() };
            digest(&Command::RegisterProcess { info })
        }
        Command::RegisterServer { id, info } if info.started_at_unix_ms != 0 => {
            let info = ServerInfo { started_at_unix_ms: 0, ..info.clone() };
            digest(&Command::RegisterServer { id: *id, info })
        }
        _ => digest(command),
    }
}

fn digest(command: &Command) -> u64 {
    struct Fnv(u64);
    impl postcard::ser_flavors::Flavor for Fnv {
        type Output = u64;
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<u64> {
            Ok(self.0)
        }
    }
    postcard::serialize_with_flavor(command, Fnv(0xcbf2_9ce4_8422_2325)).expect("hashing a command cannot fail")
}

pub type CommandResult = Result<Reply, CommandError>;

/// What a read asks for. Reads do not go through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    GetServer(ServerId),
    GetProcess(ProcessId),
    /// One page of the members `filter` matches, after member `after` (servers sort
    /// before processes), at most `limit` of them (0 is taken as 1) and one page of bytes
    /// (`query::MAX_PAGE_BYTES`); the answer names the next page's `after`.
    List {
        filter: ListFilter,
        after: Option<MemberId>,
        limit: u32,
    },
    KvGet {
        key: String,
    },
    /// Keys in `[start, end)`; `end = None` means to the last key; at most `limit` items
    /// and one page of bytes; the answer names the key the next page starts at.
    KvRange {
        start: String,
        end: Option<String>,
        limit: u32,
    },
    Tombstones {
        limit: u32,
    },
    /// Tokens (ids, names, roles), members' included, in id order after `after`, at most
    /// `limit` (0 is taken as 1) and one page of bytes; never a secret. The answer names
    /// the next page's `after`.
    Tokens {
        after: Option<TokenId>,
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
