//! Servers and processes as JSON: one shape wherever they appear (status, ls, get,
//! tombstones, events), with `info` holding what the member says about itself and the
//! rest what the cluster records of it.

use roster_kernel::{
    Labels, MemberStatus, ProcessEntry, ProcessInfo, ResourceAverage, ServerEntry, ServerInfo, TombstoneSubject,
};
use serde::{Deserialize, Serialize};

/// `online` or `draining`: the words the `status` filters take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Online,
    /// Announced it is leaving; placement never picks it.
    Draining,
}

impl From<MemberStatus> for Status {
    fn from(s: MemberStatus) -> Self {
        match s {
            MemberStatus::Online => Status::Online,
            MemberStatus::Draining => Status::Draining,
        }
    }
}

/// Averaged CPU (percent of one core) and memory in use (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_percent_avg: u32,
    pub mem_bytes_used_avg: u64,
}

impl From<ResourceAverage> for Resources {
    fn from(r: ResourceAverage) -> Self {
        Resources { cpu_percent_avg: r.cpu_percent_avg, mem_bytes_used_avg: r.mem_bytes_used_avg }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfoView {
    pub name: String,
    pub raft_addr: String,
    pub api_addr: String,
    pub started_at_unix_ms: u64,
    /// Logical cores × 100.
    pub cpu_capacity_percent: u32,
    pub mem_capacity_bytes: u64,
}

impl From<&ServerInfo> for ServerInfoView {
    fn from(i: &ServerInfo) -> Self {
        ServerInfoView {
            name: i.name.clone(),
            raft_addr: i.raft_addr.clone(),
            api_addr: i.api_addr.clone(),
            started_at_unix_ms: i.started_at_unix_ms,
            cpu_capacity_percent: i.cpu_capacity_percent,
            mem_capacity_bytes: i.mem_capacity_bytes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    pub id: u64,
    pub info: ServerInfoView,
    pub status: Status,
    /// Drained by an operator (`roster server drain`): placement never picks it.
    pub drained: bool,
    /// `null` until the first report.
    pub resources: Option<Resources>,
    pub registered_rev: u64,
    pub updated_rev: u64,
}

impl From<&ServerEntry> for ServerView {
    fn from(e: &ServerEntry) -> Self {
        ServerView {
            id: e.id.0,
            info: ServerInfoView::from(&e.info),
            status: e.status.into(),
            drained: e.drained,
            resources: e.resources.map(Resources::from),
            registered_rev: e.registered_rev,
            updated_rev: e.updated_rev,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfoView {
    pub name: String,
    /// The id of the server that hosts it.
    pub server: u64,
    /// Where it serves (empty if it does not say).
    pub service_host: String,
    pub service_port: Option<u16>,
    pub started_at_unix_ms: u64,
    pub labels: Labels,
    /// Set aside for it at launch (zeros otherwise).
    pub reserved: Resources,
}

impl From<&ProcessInfo> for ProcessInfoView {
    fn from(i: &ProcessInfo) -> Self {
        ProcessInfoView {
            name: i.name.clone(),
            server: i.server.0,
            service_host: i.service_host.clone(),
            service_port: i.service_port,
            started_at_unix_ms: i.started_at_unix_ms,
            labels: i.labels.clone(),
            reserved: i.reserved.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessView {
    pub id: u64,
    pub info: ProcessInfoView,
    pub status: Status,
    /// `null` until the first report.
    pub resources: Option<Resources>,
    pub registered_rev: u64,
    pub updated_rev: u64,
}

impl From<&ProcessEntry> for ProcessView {
    fn from(e: &ProcessEntry) -> Self {
        ProcessView {
            id: e.id.0,
            info: ProcessInfoView::from(&e.info),
            status: e.status.into(),
            resources: e.resources.map(Resources::from),
            registered_rev: e.registered_rev,
            updated_rev: e.updated_rev,
        }
    }
}

/// A server or a process where either may stand: its fields with `"type": "server"` or
/// `"type": "process"` beside them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MemberView {
    Server(ServerView),
    Process(ProcessView),
}

impl From<&TombstoneSubject> for MemberView {
    fn from(s: &TombstoneSubject) -> Self {
        match s {
            TombstoneSubject::Server(e) => MemberView::Server(e.into()),
            TombstoneSubject::Process(e) => MemberView::Process(e.into()),
        }
    }
}
