//! `roster status --json` and `GET /v1/status`.

use super::members::ServerView;
use roster_client::wire::{ClusterStatus, ProcessCounts, ServerStatus};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The node that answered.
    pub node: u64,
    /// `null` while no leader is known.
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub revision: u64,
    pub voters: Vec<RaftMember>,
    pub learners: Vec<RaftMember>,
    /// Every server, as `ls` lists it, with how long ago the leader heard it.
    pub servers: Vec<ServerStatusView>,
    /// How many processes there are; `ls --kind processes` lists them.
    pub processes: ProcessCountsView,
    /// Why this node does not vote yet (it waits for `member add` or `member replace`).
    pub waiting: Option<String>,
    /// The cluster's id (16 hex digits), once the node knows it.
    pub cluster_id: Option<String>,
    /// This start's incarnation while the node decides whether to form a new cluster.
    pub deciding: Option<u64>,
    /// The peers this node saw deciding when it formed the cluster.
    pub formed_with: Vec<Incarnation>,
    /// The replicated state's byte budget, what uses it, and whether its alarm is on.
    pub state: StateView,
    /// The leader's guard against mass false expiry (docs/operations.md, "Mass expiry").
    pub expiry: ExpiryView,
}

/// What the leader's own lateness adds to the heartbeat timeout, and the expiry brake's
/// alarm (only from the leader, while it holds expiries back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryView {
    pub lateness_grace_ms: u64,
    pub brake: Option<BrakeView>,
}

/// Too many members went silent at once to believe: every expiry waits `hold_ms` more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrakeView {
    /// When the brake began to hold (the leader's clock, ms).
    pub since_ms: u64,
    /// Members silent for longer than the timeout less one interval, or expired lately.
    pub suspects: u64,
    pub members: u64,
    pub hold_ms: u64,
}

impl From<&roster_kernel::ExpiryGuardStatus> for ExpiryView {
    fn from(e: &roster_kernel::ExpiryGuardStatus) -> Self {
        ExpiryView {
            lateness_grace_ms: e.lateness_grace_ms,
            brake: e.brake.map(|b| BrakeView {
                since_ms: b.since_ms,
                suspects: b.suspects,
                members: b.members,
                hold_ms: b.hold_ms,
            }),
        }
    }
}

/// `state_budget_bytes`, the bytes each part of the replicated state uses, and the alarm
/// (on while the largest write would be refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    pub budget_bytes: u64,
    pub used: StateBytesView,
    pub alarm: bool,
}

/// Bytes by part: keys and values, the event history, stored session replies, labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBytesView {
    pub kv: u64,
    pub events: u64,
    pub replies: u64,
    pub labels: u64,
}

impl From<&roster_kernel::StateUsage> for StateView {
    fn from(u: &roster_kernel::StateUsage) -> Self {
        let used = &u.used;
        StateView {
            budget_bytes: u.budget_bytes,
            used: StateBytesView { kv: used.kv, events: used.events, replies: used.replies, labels: used.labels },
            alarm: u.alarm,
        }
    }
}

/// A node of the Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMember {
    pub id: u64,
    pub addr: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    pub id: u64,
    pub incarnation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatusView {
    #[serde(flatten)]
    pub server: ServerView,
    /// Milliseconds since the leader heard it; `null` from a node that does not lead.
    pub heartbeat_age_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCountsView {
    pub total: u64,
    pub online: u64,
    pub draining: u64,
}

impl From<&ProcessCounts> for ProcessCountsView {
    fn from(c: &ProcessCounts) -> Self {
        ProcessCountsView { total: c.total, online: c.online, draining: c.draining }
    }
}

impl From<&ServerStatus> for ServerStatusView {
    fn from(s: &ServerStatus) -> Self {
        ServerStatusView { server: ServerView::from(&s.entry), heartbeat_age_ms: s.heartbeat_age_ms }
    }
}

impl From<&ClusterStatus> for StatusView {
    fn from(s: &ClusterStatus) -> Self {
        let raft = |list: &[(u64, String)]| -> Vec<RaftMember> {
            list.iter().map(|(id, addr)| RaftMember { id: *id, addr: addr.clone() }).collect()
        };
        StatusView {
            node: s.node,
            leader: s.leader,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            revision: s.revision,
            voters: raft(&s.voters),
            learners: raft(&s.learners),
            servers: s.servers.iter().map(ServerStatusView::from).collect(),
            processes: ProcessCountsView::from(&s.processes),
            waiting: s.waiting.clone(),
            cluster_id: s.cluster_id.clone(),
            deciding: s.deciding,
            formed_with: s
                .formed_with
                .iter()
                .map(|(id, incarnation)| Incarnation { id: *id, incarnation: *incarnation })
                .collect(),
            state: StateView::from(&s.state),
            expiry: ExpiryView::from(&s.expiry),
        }
    }
}
