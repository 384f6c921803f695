//! The replicated record: server and process entries, tombstones of departed members.

use crate::ids::{ProcessId, ServerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Free-form labels; a `BTreeMap` so iteration order is deterministic.
pub type Labels = BTreeMap<String, String>;

/// Whether a member is alive, as far as the cluster knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    Online,
    /// Announced it is leaving (graceful shutdown in progress); never chosen by placement.
    Draining,
}

/// Resource use averaged over the resource window, as carried on heartbeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAverage {
    /// Averaged CPU use across all cores, in percent of one core (0..=cpu_capacity_percent).
    pub cpu_percent_avg: u32,
    /// Averaged memory in use, in bytes.
    pub mem_bytes_used_avg: u64,
}

/// A server as registered: what the node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub name: String,
    /// Peer (Raft) address, `HOST:PORT`.
    pub raft_addr: String,
    /// Client API address, `HOST:PORT`.
    pub api_addr: String,
    /// Start time as reported by the server (Unix ms); for display only, never compared.
    pub started_at_unix_ms: u64,
    /// Logical cores × 100.
    pub cpu_capacity_percent: u32,
    pub mem_capacity_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    pub id: ServerId,
    pub info: ServerInfo,
    pub status: MemberStatus,
    /// Drained by an operator (`roster server drain`): placement never chooses it.
    ///
    /// A flag of its own, not [`MemberStatus::Draining`]. `Draining` is what the server
    /// says of itself (it is shutting down and leaves next); `drained` is what an operator
    /// says of it, while the server still runs, heartbeats and stays a member, possibly for
    /// days. Kept apart, neither overwrites the other: a restart re-registers the server
    /// as `Online` and leaves its drain in place, and an undrain never turns a server that
    /// is leaving back into a candidate. The flag lives on the live entry: a server that
    /// departs (a graceful stop deregisters it) and registers again later comes back
    /// undrained, ready for work after its maintenance.
    #[serde(default)]
    pub drained: bool,
    /// Last averages written by the leader; `None` until the first report.
    pub resources: Option<ResourceAverage>,
    pub registered_rev: u64,
    pub updated_rev: u64,
}

/// A process as registered by its wrapper or library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub name: String,
    /// The server node that hosts it.
    pub server: ServerId,
    /// Where the process serves, if it does.
    pub service_host: String,
    pub service_port: Option<u16>,
    /// Start time as reported by the process (Unix ms); for display only, never compared.
    pub started_at_unix_ms: u64,
    pub labels: Labels,
    /// Resources set aside for it when it was launched with requirements (0 otherwise);
    /// placement counts them against the host until its averages catch up.
    pub reserved: ResourceAverage,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    pub id: ProcessId,
    pub info: ProcessInfo,
    pub status: MemberStatus,
    /// Last averages written by the leader, from the process's heartbeats (`roster run`
    /// samples its program's process tree); `None` until the first report.
    pub resources: Option<ResourceAverage>,
    pub registered_rev: u64,
    pub updated_rev: u64,
}

/// How a member left the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Departure {
    /// Left on its own; a process carries the exit status of its program when known.
    Deregistered { exit_status: Option<i32> },
    /// Removed by the leader after its heartbeats stopped.
    Expired { silent_for_ms: u64 },
    /// Removed by an operator's delete.
    Deleted,
}

/// What is left of a departed member, kept for a bounded count and age.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TombstoneSubject {
    Server(ServerEntry),
    Process(ProcessEntry),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub subject: TombstoneSubject,
    pub departure: Departure,
    /// Leader's proposal time of the removal (Unix ms).
    pub left_at_unix_ms: u64,
    pub left_rev: u64,
}
