//! What a node says about the cluster and itself: `roster status` and `/metrics`.

use crate::net::wire::{ClusterStatus, ProcessCounts, ServerStatus};
use crate::raft::NodeId;
use crate::server::Raft;
use crate::server::cluster_id::Identity;
use crate::server::formation::Formation;
use crate::server::leader::LeaderHandle;
use crate::server::vote_gate::VoteGate;
use crate::storage::SharedState;
use openraft_rt::WatchReceiver;
use roster_kernel::MemberId;
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct StatusView {
    id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    /// Asked for the servers' heartbeat ages (known only on the leader).
    leader: LeaderHandle,
    vote_gate: Arc<VoteGate>,
    identity: Arc<Identity>,
    formation: Arc<Formation>,
}

impl StatusView {
    pub fn new(
        handles: &crate::server::Handles,
        leader: LeaderHandle,
        identity: Arc<Identity>,
        formation: Arc<Formation>,
    ) -> StatusView {
        StatusView {
            id: handles.id,
            raft: handles.raft.clone(),
            shared: handles.shared.clone(),
            leader,
            vote_gate: handles.vote_gate.clone(),
            identity,
            formation,
        }
    }

    /// This node's view of the cluster (heartbeat ages only when it leads).
    pub async fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for (id, node) in membership.nodes() {
            let entry = (*id, node.addr.clone());
            if voter_ids.contains(id) { voters.push(entry) } else { learners.push(entry) }
        }
        let (revision, servers, processes, state) = crate::storage::with_kernel(&self.shared, |sm| {
            let mut counts = ProcessCounts::default();
            for p in sm.processes() {
                counts.total += 1;
                match p.status {
                    roster_kernel::MemberStatus::Online => counts.online += 1,
                    roster_kernel::MemberStatus::Draining => counts.draining += 1,
                }
            }
            (sm.revision(), sm.servers().cloned().collect::<Vec<_>>(), counts, sm.state_usage())
        });
        // Asked after the record's lock is released: never one lock inside another.
        let members = servers.iter().map(|s| MemberId::Server(s.id)).collect();
        let ages = self.leader.heartbeat_ages_ms(members).await.unwrap_or_default();
        let servers = servers
            .into_iter()
            .enumerate()
            .map(|(i, entry)| ServerStatus { entry, heartbeat_age_ms: ages.get(i).copied().flatten() })
            .collect();
        ClusterStatus {
            node: self.id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.cluster_committed.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            revision,
            voters,
            learners,
            servers,
            processes,
            state,
            waiting: self.vote_gate.waiting(m.last_applied.map(|l| l.index)),
            cluster_id: self.identity.get().map(|id| id.to_string()),
            deciding: self.formation.deciding(),
            formed_with: self.formation.formed_with(),
        }
    }

    /// The values `/metrics` reads when scraped: Raft's view and the record's counts.
    pub fn scrape(&self) -> crate::metrics::Scrape {
        let m = self.raft.metrics().borrow_watched().clone();
        let (servers, processes, sessions, used, state) = crate::storage::with_kernel(&self.shared, |sm| {
            let online = |s: roster_kernel::MemberStatus| s == roster_kernel::MemberStatus::Online;
            let servers = sm.servers().fold((0, 0), |(o, d), s| if online(s.status) { (o + 1, d) } else { (o, d + 1) });
            let processes =
                sm.processes().fold((0, 0), |(o, d), p| if online(p.status) { (o + 1, d) } else { (o, d + 1) });
            let used = sm.processes().filter_map(|p| p.resources).fold((0u64, 0u64, 0u64), |(n, cpu, mem), r| {
                (n + 1, cpu.saturating_add(u64::from(r.cpu_percent_avg)), mem.saturating_add(r.mem_bytes_used_avg))
            });
            (servers, processes, sm.session_count() as u64, used, sm.state_usage())
        });
        crate::metrics::Scrape {
            has_leader: m.current_leader.is_some(),
            is_leader: m.current_leader == Some(self.id),
            term: m.current_term,
            commit_index: m.cluster_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            servers_online: servers.0,
            servers_draining: servers.1,
            processes_online: processes.0,
            processes_draining: processes.1,
            sessions,
            state,
            processes_reporting: used.0,
            processes_cpu_percent_sum: used.1,
            processes_mem_bytes_sum: used.2,
        }
    }

    /// The state budget, its use and its alarm, as this node has applied them.
    pub fn state_usage(&self) -> roster_kernel::StateUsage {
        crate::storage::with_kernel(&self.shared, |sm| sm.state_usage())
    }
}
