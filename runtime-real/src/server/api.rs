//! The client API: what a node does with each request on a client connection.

use crate::net::wire::{
    ClientEnvelope, ClientRequest, ClientResponse, ClientResponseEnvelope, ClusterStatus, Consistency, ProcessCounts,
    RequestError, SNAPSHOT_STREAM_CHUNK_BYTES, ServerStatus, SnapshotHead, Unavailable,
};
use crate::raft::{NodeAddr, NodeId, TypeConfig};
use crate::server::Raft;
use crate::server::leader::{DriverUnavailable, LeaderHandle, QUEUE_CAPACITY};
use crate::server::leadership;
use crate::server::outbox::Outbox;
use crate::server::proposer::{Proposer, ReplyTo};
use crate::storage::SharedState;
use openraft::ReadPolicy;
use openraft::error::ForwardToLeader;
use openraft_rt::WatchReceiver;
use roster_kernel::{HeartbeatVerdict, MemberId, ProposalBody};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Most events read for a watcher in one step, and about the most bytes: a step stops at
/// the first revision boundary past either (a revision is never cut when read).
const WATCH_BATCH: usize = 512;
const WATCH_BATCH_BYTES: usize = 1 << 20;
/// Most bytes of events in one `Events` (or `EventsPart`) frame: well under the 4 MiB
/// frame, so a burst of large values (64 KiB each) never makes an answer that cannot be
/// sent.
pub const WATCH_FRAME_BYTES: usize = 1 << 20;

/// A request the caller may send.
#[derive(Debug)]
pub struct Admitted {
    /// The audit record to write, for an admin action.
    pub audit: Option<roster_kernel::AuditRecord>,
    /// Whether the caller may see token and audit events in a watch.
    pub sees_credentials: bool,
}

pub struct Api {
    pub(crate) id: NodeId,
    /// The bootstrap token and the tokens in the record: who a client is.
    pub(crate) credentials: crate::server::authority::Credentials,
    /// The peer key: what other nodes prove, and what this node's own connections prove.
    pub(crate) peer: roster_client::PeerAuth,
    /// How this node connects to another (plain TCP, or TLS with its certificate).
    pub(crate) connector: crate::net::transport::Connector,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<SharedState>,
    /// The leader driver, sole owner of the leader's duties.
    pub(crate) leader: LeaderHandle,
    pub(crate) launcher: Option<Arc<crate::server::launch::Launcher>>,
    /// How long a leadership hand-off may take before it is reported as failed.
    pub(crate) hand_off_timeout_ms: u64,
    /// Batches writes into Raft entries.
    pub(crate) proposer: Proposer,
    /// Closed while this node may not vote (it started with an empty data directory).
    pub(crate) vote_gate: Arc<crate::server::vote_gate::VoteGate>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Which cluster this node belongs to.
    pub(crate) identity: Arc<crate::server::cluster_id::Identity>,
    /// What this start knows of the first formation (answers the bootstrap check).
    pub(crate) formation: Arc<crate::server::formation::Formation>,
    /// Snapshot exports for backups in progress (each holds a copy of the state).
    pub(crate) snapshot_exports: SnapshotExports,
    /// Closed by a clean stop before the Raft core stops.
    pub(crate) peer_intake: crate::server::peer_intake::PeerIntake,
}

/// Snapshot exports a node makes at once for `roster snapshot save`, at most: each holds
/// an encoded copy of the whole state while it streams, so a caller that asks again and
/// again cannot multiply the node's memory. One more is refused with `SnapshotsBusy`.
pub const MAX_SNAPSHOT_EXPORTS: usize = 2;

/// The places for snapshot exports on this node.
#[derive(Clone)]
pub struct SnapshotExports(Arc<tokio::sync::Semaphore>);

impl Default for SnapshotExports {
    fn default() -> Self {
        SnapshotExports(Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOT_EXPORTS)))
    }
}

impl SnapshotExports {
    /// A place for one export, held until it is dropped; `SnapshotsBusy` when all are taken.
    pub fn try_start(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RequestError> {
        self.0.clone().try_acquire_owned().map_err(|_| RequestError::SnapshotsBusy { max: MAX_SNAPSHOT_EXPORTS })
    }
}

impl Api {
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn peer_intake(&self) -> &crate::server::peer_intake::PeerIntake {
        &self.peer_intake
    }

    pub fn vote_gate(&self) -> &crate::server::vote_gate::VoteGate {
        &self.vote_gate
    }

    pub fn identity(&self) -> &crate::server::cluster_id::Identity {
        &self.identity
    }

    fn cluster(&self) -> Option<u64> {
        self.identity.get().map(|id| id.0)
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The values `/metrics` reads when scraped: Raft's view and the record's counts.
    pub fn scrape(&self) -> crate::metrics::Scrape {
        let m = self.raft.metrics().borrow_watched().clone();
        let (servers, processes, sessions, used) = crate::storage::with_kernel(&self.shared, |sm| {
            let online = |s: roster_kernel::MemberStatus| s == roster_kernel::MemberStatus::Online;
            let servers = sm.servers().fold((0, 0), |(o, d), s| if online(s.status) { (o + 1, d) } else { (o, d + 1) });
            let processes =
                sm.processes().fold((0, 0), |(o, d), p| if online(p.status) { (o + 1, d) } else { (o, d + 1) });
            let used = sm.processes().filter_map(|p| p.resources).fold((0u64, 0u64, 0u64), |(n, cpu, mem), r| {
                (n + 1, cpu.saturating_add(u64::from(r.cpu_percent_avg)), mem.saturating_add(r.mem_bytes_used_avg))
            });
            (servers, processes, sm.session_count() as u64, used)
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
            processes_reporting: used.0,
            processes_cpu_percent_sum: used.1,
            processes_mem_bytes_sum: used.2,
        }
    }

    fn applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().last_applied.map(|l| l.index)
    }

    pub fn credentials(&self) -> &crate::server::authority::Credentials {
        &self.credentials
    }

    pub fn peer_key(&self) -> &roster_client::PeerKey {
        &self.peer.key
    }

    /// This node's own credential for its connections to the others (the peer key).
    pub fn node_credential(&self) -> roster_client::Credential {
        roster_client::Credential::Peer(self.peer.clone())
    }

    /// Whether node `id` is a voter or learner here, or this node has no membership yet
    /// (a new or wiped node: the vote gate and the cluster id guard it).
    pub fn is_member_or_unformed(&self, id: NodeId) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        nodes.peek().is_none() || membership.nodes().any(|(node, _)| *node == id)
    }

    /// Whether `caller` may send `request` now: `Ok` with what the caller may see and an
    /// audit record for an admin action, or the refusal to answer.
    pub fn admit(
        &self,
        caller: &crate::server::authority::Caller,
        request: &ClientRequest,
    ) -> Result<Admitted, RequestError> {
        let now = crate::rt::clock::unix_ms();
        let mut standing =
            self.credentials.standing(caller, now).map_err(|reason| RequestError::Unauthenticated { reason })?;
        // A node outside the membership (a new node before `member add`) reads only.
        if let crate::server::authority::Caller::Node(from) = caller
            && !self.is_member_or_unformed(*from)
        {
            standing.principal = roster_kernel::Principal::Read;
        }
        let result = self.credentials.check(&standing, request);
        if let Err(refusal) = &result {
            self.metrics.count_forbidden();
            tracing::info!(caller = %standing.name, role = %standing.principal, %refusal, "refused");
        }
        let sees_credentials = roster_kernel::authorize(standing.principal, &roster_kernel::Action::ListTokens).is_ok();
        result.map(|audit| Admitted { audit, sees_credentials })
    }

    /// Writes an admin action to the audit trail (an event in the change stream). Best
    /// effort: the action itself does not wait on it, and a lost record is logged.
    pub async fn record_audit(&self, record: roster_kernel::AuditRecord) {
        tracing::info!(by = %record.by, role = %record.role, action = %record.action, "audit");
        let (tx, _rx) = tokio::sync::oneshot::channel();
        self.submit(ProposalBody::Audit(record), ReplyTo::Caller(tx)).await;
    }

    /// Serves one request; `sees_credentials` says whether the caller may see the token
    /// and audit events of a watch (as `token ls`: admins and nodes).
    pub async fn handle(self: Arc<Self>, env: ClientEnvelope, mut outbox: Outbox, sees_credentials: bool) {
        let id = env.id;
        let op = op_name(&env.request);
        let started = tokio::time::Instant::now();
        let response = match env.request {
            ClientRequest::Watch { after_revision } => {
                let _open = crate::metrics::Open::new(&self.metrics.watchers);
                self.watch(id, after_revision, outbox, sees_credentials).await;
                return;
            }
            ClientRequest::Snapshot => {
                self.snapshot_stream(id, outbox).await;
                self.metrics.observe_request(op, started.elapsed());
                return;
            }
            ClientRequest::OpenSession => self.write(ProposalBody::OpenSession).await,
            ClientRequest::Submit(req) => self.write(ProposalBody::Client(req)).await,
            ClientRequest::Query { query, consistency } => {
                let waiting =
                    if consistency == Consistency::Stale { self.vote_gate.waiting(self.applied_index()) } else { None };
                if let Some(reason) = waiting {
                    ClientResponse::RetryLater(Unavailable::NotCaughtUp { reason })
                } else if consistency == Consistency::Linearizable
                    && let Err(resp) = self.linearize().await
                {
                    resp
                } else {
                    ClientResponse::Query(crate::storage::with_kernel(&self.shared, |sm| sm.query(&query)))
                }
            }
            ClientRequest::Heartbeat { member, resources } => self.heartbeat(member, resources).await,
            ClientRequest::Status => ClientResponse::Status(Box::new(self.status().await)),
            ClientRequest::AddNode { id, addr } => self.add_node(id, addr).await,
            ClientRequest::RemoveNode { id } => self.remove_node(id).await,
            ClientRequest::ReplaceNode { id } => self.replace_node(id).await,
            ClientRequest::Readmit { leader, last_log_index, cluster } => {
                self.readmitted(leader, last_log_index, cluster).await
            }
            ClientRequest::TransferLeader { to } => self.transfer_leader(to).await,
            // Counted by the launcher, where the program starts (`roster_launches_total`).
            ClientRequest::Launch(req) => match &self.launcher {
                Some(l) => l.clone().launch(req).await,
                None => ClientResponse::Error(RequestError::LaunchUnavailable { node: self.id }),
            },
            ClientRequest::StartLocal(req) => match &self.launcher {
                Some(l) => l.clone().start_local(req).await,
                None => ClientResponse::Error(RequestError::LaunchUnavailable { node: self.id }),
            },
            ClientRequest::Output(req) => match &self.launcher {
                Some(l) => l.output().read(req).await,
                None => ClientResponse::Error(RequestError::LaunchUnavailable { node: self.id }),
            },
            ClientRequest::LocalOutput(req) => match &self.launcher {
                Some(l) => l.output().read_local(req),
                None => ClientResponse::Error(RequestError::LaunchUnavailable { node: self.id }),
            },
        };
        if op != "submit" {
            self.metrics.observe_request(op, started.elapsed());
        }
        let _ = outbox.send(ClientResponseEnvelope { id, response }).await;
    }

    /// "Alive", judged by the leader driver (see `roster_kernel::leader_duties` for the
    /// rules: the lease, the record deciding membership).
    async fn heartbeat(&self, member: MemberId, resources: Option<roster_kernel::ResourceAverage>) -> ClientResponse {
        match self.leader.heartbeat(member, resources).await {
            Ok(HeartbeatVerdict::Accepted) => ClientResponse::HeartbeatOk,
            Ok(HeartbeatVerdict::UnknownMember(u)) => ClientResponse::UnknownMember(u.member),
            Ok(HeartbeatVerdict::NotLeader) => self.not_leader().await,
            Ok(HeartbeatVerdict::CountedSentOn) => {
                tracing::debug!(%member, "heartbeat counted, but no quorum within the leader lease: member sent on");
                ClientResponse::NotLeader { leader: None }
            }
            Err(DriverUnavailable::Busy) => {
                ClientResponse::RetryLater(Unavailable::DutiesBusy { capacity: QUEUE_CAPACITY })
            }
            Err(DriverUnavailable::Stopped) => ClientResponse::RetryLater(Unavailable::ShuttingDown),
        }
    }

    /// Proposes through Raft (batched with whatever else is being written); the answer is
    /// the state machine's reply once committed and applied, never earlier (Zeppelin
    /// acknowledged before the commit and lost writes).
    pub(crate) async fn write(&self, body: ProposalBody) -> ClientResponse {
        self.proposer.write(body).await
    }

    /// Like `write`, but the answer goes straight to a client connection's outbox.
    pub(crate) async fn submit(&self, body: ProposalBody, reply: ReplyTo) {
        self.proposer.submit(body, reply).await
    }

    async fn linearize(&self) -> Result<(), ClientResponse> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.forward_to_leader() {
                Some(f) => self.forward(f),
                None => ClientResponse::RetryLater(Unavailable::ReadNotConfirmed { reason: e.to_string() }),
            }),
        }
    }

    fn forward(&self, f: &ForwardToLeader<TypeConfig>) -> ClientResponse {
        leadership::forward_response(&self.raft, self.id, f)
    }

    pub(crate) async fn not_leader(&self) -> ClientResponse {
        leadership::not_leader(&self.raft, self.id).await
    }

    async fn watch(&self, id: u64, after_revision: u64, mut outbox: Outbox, sees: bool) {
        let mut seen = after_revision;
        let mut changes = self.shared.subscribe();
        loop {
            let response = match watch_step(&self.shared, seen, sees) {
                WatchStep::Current { .. } => {
                    if changes.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                WatchStep::Events { events, through } => {
                    seen = through;
                    for response in watch_frames(events, WATCH_FRAME_BYTES) {
                        if outbox.send(ClientResponseEnvelope { id, response }).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                WatchStep::Compacted { oldest_available } => ClientResponse::WatchCompacted { oldest_available },
            };
            let end = matches!(response, ClientResponse::WatchCompacted { .. });
            if outbox.send(ClientResponseEnvelope { id, response }).await.is_err() || end {
                return;
            }
        }
    }

    /// A backup: on the leader, after a read-index round (so the state holds every write
    /// acknowledged before the request), the applied state as snapshot bytes, streamed in
    /// chunks on request `id` after a head that says what they hold and how to check them.
    async fn snapshot_stream(&self, id: u64, mut outbox: Outbox) {
        // Held until the last chunk is queued: the export lives that long.
        let _place = match self.snapshot_exports.try_start() {
            Ok(place) => place,
            Err(error) => {
                let _ = outbox.send(ClientResponseEnvelope { id, response: ClientResponse::Error(error) }).await;
                return;
            }
        };
        let export = match self.snapshot_export().await {
            Ok(export) => export,
            Err(response) => {
                let _ = outbox.send(ClientResponseEnvelope { id, response }).await;
                return;
            }
        };
        let Some(last) = export.meta.last_log_id else {
            let reason = "nothing is applied yet".to_string();
            let response = ClientResponse::Error(RequestError::SnapshotFailed { reason });
            let _ = outbox.send(ClientResponseEnvelope { id, response }).await;
            return;
        };
        let head = SnapshotHead {
            revision: export.revision,
            last_log_term: last.committed_leader_id().term,
            last_log_index: last.index,
            total_bytes: export.data.len() as u64,
            crc32: crc32fast::hash(&export.data),
        };
        tracing::info!(revision = head.revision, bytes = head.total_bytes, "streaming a snapshot for a backup");
        if outbox.send(ClientResponseEnvelope { id, response: ClientResponse::SnapshotBegin(head) }).await.is_err() {
            return;
        }
        for chunk in export.data.chunks(SNAPSHOT_STREAM_CHUNK_BYTES) {
            let response = ClientResponse::SnapshotChunk(chunk.to_vec());
            // A closed connection ends the stream: the client went away.
            if outbox.send(ClientResponseEnvelope { id, response }).await.is_err() {
                return;
            }
        }
    }

    async fn snapshot_export(&self) -> Result<crate::storage::state_machine::Export, ClientResponse> {
        if !self.raft.is_leader() {
            return Err(self.not_leader().await);
        }
        self.linearize().await?;
        self.shared.export().map_err(|e| ClientResponse::Error(RequestError::SnapshotFailed { reason: e.to_string() }))
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
        let (revision, servers, processes) = crate::storage::with_kernel(&self.shared, |sm| {
            let mut counts = ProcessCounts::default();
            for p in sm.processes() {
                counts.total += 1;
                match p.status {
                    roster_kernel::MemberStatus::Online => counts.online += 1,
                    roster_kernel::MemberStatus::Draining => counts.draining += 1,
                }
            }
            (sm.revision(), sm.servers().cloned().collect::<Vec<_>>(), counts)
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
            waiting: self.vote_gate.waiting(m.last_applied.map(|l| l.index)),
            cluster_id: self.identity.get().map(|id| id.to_string()),
            deciding: self.formation.deciding(),
            formed_with: self.formation.formed_with(),
        }
    }

    async fn replace_node(&self, id: NodeId) -> ClientResponse {
        if !self.raft.is_leader() {
            return self.not_leader().await;
        }
        let credential = self.node_credential();
        match crate::server::rejoin::replace(&self.raft, self.id, &credential, &self.connector, self.cluster(), id)
            .await
        {
            Ok(()) => ClientResponse::Done,
            Err(e) => {
                tracing::warn!(node = id, error = %e, "member replace failed");
                ClientResponse::Error(e)
            }
        }
    }

    /// The leader lets this node take replication again (see `vote_gate.rs`), and names
    /// the cluster: a node of another cluster refuses.
    /// Answers only once what it stored is durable.
    async fn readmitted(&self, leader: NodeId, last_log_index: u64, cluster: Option<u64>) -> ClientResponse {
        if let Some(id) = cluster
            && let Err(e) = self.identity.adopt(crate::server::cluster_id::ClusterId(id), &format!("leader {leader}"))
        {
            tracing::warn!(leader, error = %e, "refusing readmission");
            return ClientResponse::Error(RequestError::ReadmitFailed { node: self.id, reason: e.to_string() });
        }
        self.identity.settled().await;
        if !self.vote_gate.is_closed() {
            return ClientResponse::Done;
        }
        match self.vote_gate.readmit(last_log_index) {
            Ok(()) => {
                self.vote_gate.settled().await;
                tracing::info!(
                    leader,
                    target = last_log_index,
                    "readmitted by the leader: taking replication; votes again once applied up to the target"
                );
                ClientResponse::Done
            }
            Err(e) => ClientResponse::Error(RequestError::ReadmitFailed { node: self.id, reason: e.to_string() }),
        }
    }

    async fn add_node(&self, id: NodeId, addr: String) -> ClientResponse {
        if !self.raft.is_leader() {
            return self.not_leader().await;
        }
        tracing::info!(node = id, %addr, "adding server node: catching up as learner");
        // A new node waits, refusing replication, until a leader readmits it.
        let credential = self.node_credential();
        if let Err(e) =
            crate::server::rejoin::readmit(&self.raft, self.id, &credential, &self.connector, self.cluster(), id, &addr)
                .await
        {
            return ClientResponse::Error(e);
        }
        if let Err(e) = self.raft.add_learner(id, NodeAddr { addr }, true).await {
            return match e.forward_to_leader() {
                Some(f) => self.forward(f),
                None => ClientResponse::Error(RequestError::AddLearner { node: id, reason: e.to_string() }),
            };
        }
        let mut voters: BTreeSet<NodeId> = self.raft.voter_ids().collect();
        voters.insert(id);
        self.change_voters(voters, format!("node {id} added as voter")).await
    }

    async fn transfer_leader(&self, to: Option<NodeId>) -> ClientResponse {
        if !self.raft.is_leader() {
            return self.not_leader().await;
        }
        match leadership::hand_off(&self.raft, self.id, to, self.hand_off_timeout_ms).await {
            Ok(leader) => ClientResponse::LeaderTransferred { leader },
            Err(e) => ClientResponse::Error(e),
        }
    }

    async fn remove_node(&self, id: NodeId) -> ClientResponse {
        if !self.raft.is_leader() {
            return self.not_leader().await;
        }
        let voters: BTreeSet<NodeId> = self.raft.voter_ids().collect();
        match roster_kernel::membership::remove(&voters, id) {
            Ok(after) => self.change_voters(after, format!("node {id} removed")).await,
            Err(refusal) => ClientResponse::Error(refusal.into()),
        }
    }

    async fn change_voters(&self, voters: BTreeSet<NodeId>, what: String) -> ClientResponse {
        match self.raft.change_membership(voters, false).await {
            Ok(_) => {
                tracing::info!("{what}");
                ClientResponse::Done
            }
            Err(e) => match e.forward_to_leader() {
                Some(f) => self.forward(f),
                None => ClientResponse::Error(RequestError::MembershipChange { reason: e.to_string() }),
            },
        }
    }
}

/// The `op` label of a request's duration; writes are timed by the proposer (`submit`).
fn op_name(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::OpenSession | ClientRequest::Submit(_) => "submit",
        ClientRequest::Query { consistency: Consistency::Linearizable, .. } => "query",
        ClientRequest::Query { consistency: Consistency::Stale, .. } => "query_stale",
        ClientRequest::Heartbeat { .. } => "heartbeat",
        ClientRequest::Watch { .. } => "watch",
        ClientRequest::Status => "status",
        ClientRequest::AddNode { .. }
        | ClientRequest::RemoveNode { .. }
        | ClientRequest::ReplaceNode { .. }
        | ClientRequest::Readmit { .. }
        | ClientRequest::TransferLeader { .. } => "membership",
        ClientRequest::Launch(_) => "launch",
        ClientRequest::StartLocal(_) => "start_local",
        ClientRequest::Snapshot => "snapshot",
        ClientRequest::Output(_) | ClientRequest::LocalOutput(_) => "output",
    }
}

/// What a watcher that has seen every event up to `seen` gets next from this node's
/// applied state. Shared by the binary protocol's `Watch` and the HTTP event stream.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchStep {
    /// The next events, whole revisions only (at most about `WATCH_BATCH`), read through
    /// revision `through` (the events a caller may not see are left out: `events` may be
    /// empty while `through` moves on).
    Events { events: Vec<roster_kernel::Event>, through: u64 },
    /// Nothing after `seen`: the watcher has every event up to `revision`, the state's
    /// current revision, read under the same lock (a progress notice may say so).
    Current { revision: u64 },
    /// `seen` is older than the history this node keeps.
    Compacted { oldest_available: u64 },
}

/// `sees_credentials`: whether token and audit events are for this watcher (admins and
/// nodes, as `token ls`); others get the members and keys only.
pub fn watch_step(shared: &SharedState, seen: u64, sees_credentials: bool) -> WatchStep {
    crate::storage::with_kernel(shared, |sm| match sm.events_after(seen) {
        Ok(events) => {
            let mut events = whole_revisions(events, WATCH_BATCH, WATCH_BATCH_BYTES);
            let Some(through) = events.last().map(|e| e.revision) else {
                return WatchStep::Current { revision: sm.revision() };
            };
            if !sees_credentials {
                events.retain(|e| !is_credential_event(e));
            }
            WatchStep::Events { events, through }
        }
        Err(c) => WatchStep::Compacted { oldest_available: c.oldest_available },
    })
}

/// A token's creation or revocation, or an audit record.
fn is_credential_event(event: &roster_kernel::Event) -> bool {
    use roster_kernel::EventKind;
    matches!(event.kind, EventKind::TokenCreated(_) | EventKind::TokenRevoked { .. } | EventKind::Audit(_))
}

/// At least `max` events or `max_bytes` of them (when there are that many), never
/// splitting a revision: one batched leader command (an expiry of many members) shares
/// one revision, and a watcher resumes after the last revision it saw.
fn whole_revisions(
    events: impl Iterator<Item = roster_kernel::Event>,
    max: usize,
    max_bytes: usize,
) -> Vec<roster_kernel::Event> {
    let mut out: Vec<roster_kernel::Event> = Vec::new();
    let mut bytes = 0usize;
    for e in events {
        if (out.len() >= max || bytes >= max_bytes) && out.last().is_some_and(|last| last.revision != e.revision) {
            break;
        }
        bytes = bytes.saturating_add(roster_kernel::encoded_bytes(&e));
        out.push(e);
    }
    out
}

/// The frames of a watch stream for `events` (whole revisions, in order): `Events` of
/// whole revisions, each at most `max_bytes` when its revisions fit; a revision larger
/// than that alone goes as `EventsPart`s closed by an `Events` with its last events (a
/// client counts a revision as received only when it is closed, so a stream that breaks
/// inside one resumes before it). Every frame holds at least one event.
pub fn watch_frames(events: Vec<roster_kernel::Event>, max_bytes: usize) -> Vec<ClientResponse> {
    let mut frames = Vec::new();
    let mut whole: Vec<roster_kernel::Event> = Vec::new();
    let mut whole_bytes = 0usize;
    let mut events = events.into_iter().peekable();
    while let Some(first) = events.next() {
        // One revision's events, with their sizes.
        let revision = first.revision;
        let mut group = vec![(roster_kernel::encoded_bytes(&first), first)];
        while let Some(e) = events.next_if(|e| e.revision == revision) {
            group.push((roster_kernel::encoded_bytes(&e), e));
        }
        let group_bytes: usize = group.iter().map(|(b, _)| *b).sum();
        if whole_bytes.saturating_add(group_bytes) <= max_bytes {
            whole.extend(group.into_iter().map(|(_, e)| e));
            whole_bytes += group_bytes;
            continue;
        }
        if !whole.is_empty() {
            frames.push(ClientResponse::Events(std::mem::take(&mut whole)));
            whole_bytes = 0;
        }
        if group_bytes <= max_bytes {
            whole.extend(group.into_iter().map(|(_, e)| e));
            whole_bytes = group_bytes;
            continue;
        }
        let mut part = Vec::new();
        let mut part_bytes = 0usize;
        for (bytes, e) in group {
            if !part.is_empty() && part_bytes.saturating_add(bytes) > max_bytes {
                frames.push(ClientResponse::EventsPart(std::mem::take(&mut part)));
                part_bytes = 0;
            }
            part.push(e);
            part_bytes += bytes;
        }
        frames.push(ClientResponse::Events(part));
    }
    if !whole.is_empty() {
        frames.push(ClientResponse::Events(whole));
    }
    frames
}

/// Compares without returning early, so timing does not reveal how much matched. Any
/// length difference fails (casting `len ^ len` to a byte would let a multiple of 256
/// extra bytes through).
pub fn tokens_match(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{
        MAX_SNAPSHOT_EXPORTS, SnapshotExports, WATCH_FRAME_BYTES, tokens_match, watch_frames, whole_revisions,
    };
    use crate::net::wire::{ClientResponse, MAX_CLIENT_FRAME_BYTES, RequestError};

    #[test]
    fn snapshot_exports_past_the_bound_are_refused_until_one_ends() {
        let exports = SnapshotExports::default();
        let held: Vec<_> = (0..MAX_SNAPSHOT_EXPORTS).map(|_| exports.try_start().expect("a place")).collect();
        let refused = exports.try_start().expect_err("past the bound");
        assert_eq!(refused, RequestError::SnapshotsBusy { max: MAX_SNAPSHOT_EXPORTS });
        assert!(refused.to_string().contains("retry when one has finished"), "{refused}");
        drop(held);
        assert!(exports.try_start().is_ok(), "a finished export frees its place");
    }
    use roster_kernel::{Event, EventKind};

    #[test]
    fn only_the_exact_token_matches() {
        let token = "s3cret-token";
        assert!(tokens_match(token, token));
        assert!(!tokens_match(token, ""));
        assert!(!tokens_match(token, "s3cret-tokeN"));
        assert!(!tokens_match(token, "s3cret-toke"));
        // Extra bytes after the token fail, whatever their count (256 would wrap a byte).
        for extra in [1, 255, 256, 512] {
            let longer = format!("{token}{}", "x".repeat(extra));
            assert!(!tokens_match(token, &longer), "{extra} extra bytes matched");
        }
    }

    fn ev(revision: u64) -> Event {
        Event { revision, kind: EventKind::KvDeleted { key: revision.to_string() } }
    }

    #[test]
    fn batches_never_split_a_revision() {
        let events = vec![ev(1), ev(2), ev(2), ev(2), ev(3)];
        let got = whole_revisions(events.clone().into_iter(), 2, usize::MAX);
        assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1, 2, 2, 2]);
        assert_eq!(whole_revisions(events.clone().into_iter(), 10, usize::MAX).len(), 5);
        let by_bytes = whole_revisions(events.into_iter(), 10, 1);
        assert_eq!(by_bytes.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1], "stops at the byte bound");
    }

    fn put(revision: u64, value_bytes: usize) -> Event {
        Event { revision, kind: EventKind::KvPut { key: format!("k{revision}"), value: "v".repeat(value_bytes) } }
    }

    fn revisions(frame: &ClientResponse) -> (bool, Vec<u64>) {
        match frame {
            ClientResponse::Events(events) => (true, events.iter().map(|e| e.revision).collect()),
            ClientResponse::EventsPart(events) => (false, events.iter().map(|e| e.revision).collect()),
            other => panic!("not events: {other:?}"),
        }
    }

    #[test]
    fn watch_frames_split_by_bytes_at_revision_boundaries() {
        // 200 values of 64 KiB (the burst that once stopped every watcher behind it).
        let events: Vec<Event> = (1..=200).map(|r| put(r, 64 << 10)).collect();
        let frames = watch_frames(events, WATCH_FRAME_BYTES);
        let mut seen = Vec::new();
        for frame in &frames {
            let encoded = roster_kernel::codec::encode_frame(frame, MAX_CLIENT_FRAME_BYTES).expect("fits a frame");
            assert!(encoded.len() <= WATCH_FRAME_BYTES + 64, "{} bytes", encoded.len());
            let (whole, revs) = revisions(frame);
            assert!(whole && !revs.is_empty());
            seen.extend(revs);
        }
        assert_eq!(seen, (1..=200).collect::<Vec<_>>());
        assert!(frames.len() >= 13, "{} frames", frames.len());
        // Small events still go together.
        let small = watch_frames(vec![ev(1), ev(2), ev(2)], WATCH_FRAME_BYTES);
        assert_eq!(small.iter().map(revisions).collect::<Vec<_>>(), vec![(true, vec![1, 2, 2])]);
    }

    #[test]
    fn a_revision_over_the_frame_bound_goes_in_parts_closed_by_events() {
        let events = vec![put(1, 10), put(2, 600), put(2, 600), put(2, 600), put(3, 10)];
        let frames: Vec<_> = watch_frames(events, 1_000).iter().map(revisions).collect();
        assert_eq!(
            frames,
            vec![(true, vec![1]), (false, vec![2]), (false, vec![2]), (true, vec![2]), (true, vec![3])],
            "revision 2 alone is over the bound"
        );
    }
}
