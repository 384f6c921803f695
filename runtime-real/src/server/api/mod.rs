//! The client API: what a node does with each request on a client connection, in parts
//! by concern, each owning the handles it needs:
//!
//! - `served`: which part serves a request (writes go to the proposer);
//! - `reads`: queries and watches (`watch`: the pure step and framing both protocols use);
//! - `status`: `roster status` and the values `/metrics` scrapes;
//! - `membership`: member add, remove, replace, readmission and leadership hand-off;
//! - `backups`: snapshot streams for `roster snapshot save`.
//!
//! Who may send what is `authority.rs`; this module asks it (`admit`) and records the
//! audit trail.

pub mod backups;
pub mod membership;
pub mod reads;
pub mod served;
pub mod status;
pub mod watch;

use crate::net::wire::{ClientRequest, ClientResponse, ClientResponseEnvelope, RequestError, Unavailable};
use crate::raft::NodeId;
use crate::server::Handles;
use crate::server::Raft;
use crate::server::authority::{Caller, Credentials};
use crate::server::cluster_id::Identity;
use crate::server::formation::Formation;
use crate::server::launch::Launcher;
use crate::server::leader::{DriverUnavailable, LeaderHandle, QUEUE_CAPACITY};
use crate::server::leadership;
use crate::server::outbox::Outbox;
use crate::server::peer_intake::PeerIntake;
use crate::server::proposer::{Proposer, ReplyTo};
use crate::server::vote_gate::VoteGate;
use crate::storage::SharedState;
use roster_client::PeerAuth;
use roster_kernel::{HeartbeatVerdict, MemberId, ProposalBody};
use served::Served;
use std::sync::Arc;

/// A request the caller may send.
#[derive(Debug)]
pub struct Admitted {
    /// The audit record to write, for an admin action.
    pub audit: Option<roster_kernel::AuditRecord>,
    /// Whether the caller may see token and audit events in a watch.
    pub sees_credentials: bool,
    /// The credential the caller's session requests are made with.
    pub owner: roster_kernel::SessionOwner,
}

/// What the node hands the API besides its owners' handles.
pub struct Services {
    /// The bootstrap token: the admin credential before any other exists.
    pub bootstrap_token: String,
    /// The leader driver, sole owner of the leader's duties.
    pub leader: LeaderHandle,
    pub launcher: Launcher,
    /// Which cluster this node belongs to.
    pub identity: Arc<Identity>,
    /// What this start knows of the first formation (answers the bootstrap check).
    pub formation: Arc<Formation>,
    pub hand_off_timeout_ms: u64,
}

pub struct Api {
    id: NodeId,
    raft: Raft,
    /// Who a client is: the bootstrap token and the tokens in the record.
    credentials: Credentials,
    peer: PeerAuth,
    identity: Arc<Identity>,
    vote_gate: Arc<VoteGate>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Heartbeats are judged by the leader driver.
    leader: LeaderHandle,
    /// Batches writes into Raft entries.
    writes: Proposer,
    reads: reads::Reads,
    status: status::StatusView,
    membership: membership::Membership,
    backups: backups::Backups,
    launcher: Arc<Launcher>,
    /// Closed by a clean stop before the Raft core stops.
    peer_intake: PeerIntake,
}

impl Api {
    pub fn new(handles: Handles, services: Services) -> Api {
        let Services { bootstrap_token, leader, launcher, identity, formation, hand_off_timeout_ms } = services;
        let h = &handles;
        Api {
            id: h.id,
            raft: h.raft.clone(),
            credentials: Credentials::new(bootstrap_token, h.shared.clone()),
            peer: h.peer.clone(),
            identity: identity.clone(),
            vote_gate: h.vote_gate.clone(),
            metrics: h.metrics.clone(),
            writes: Proposer::start(h.id, h.raft.clone(), h.metrics.clone()),
            reads: reads::Reads::new(h.id, h.raft.clone(), h.shared.clone(), h.vote_gate.clone()),
            status: status::StatusView::new(h, leader.clone(), identity.clone(), formation),
            membership: membership::Membership::new(h, identity, hand_off_timeout_ms),
            backups: backups::Backups::new(h.id, h.raft.clone(), h.shared.clone()),
            launcher: Arc::new(launcher),
            leader,
            peer_intake: PeerIntake::default(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn peer_intake(&self) -> &PeerIntake {
        &self.peer_intake
    }

    pub fn vote_gate(&self) -> &VoteGate {
        &self.vote_gate
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn peer_key(&self) -> &roster_client::PeerKey {
        &self.peer.key
    }

    /// The applied state, for the HTTP event stream.
    pub fn applied(&self) -> &Arc<SharedState> {
        self.reads.applied()
    }

    /// The values `/metrics` reads when scraped.
    pub fn scrape(&self) -> crate::metrics::Scrape {
        self.status.scrape()
    }

    /// The leader's guard against mass false expiry: lateness grace and the brake's alarm.
    pub fn expiry_status(&self) -> roster_kernel::ExpiryGuardStatus {
        self.status.expiry_status()
    }

    /// The state budget, its use and its alarm, as this node has applied them.
    pub fn state_usage(&self) -> roster_kernel::StateUsage {
        self.status.state_usage()
    }

    /// This node's view of the cluster.
    pub async fn status(&self) -> crate::net::wire::ClusterStatus {
        self.status.status().await
    }

    /// Whether node `id` is a voter or learner here, or this node has no membership yet.
    pub fn is_member_or_unformed(&self, id: NodeId) -> bool {
        self.membership.is_member_or_unformed(id)
    }

    /// Whether `caller` may send `request` now: `Ok` with what the caller may see and an
    /// audit record for an admin action, or the refusal to answer.
    pub fn admit(&self, caller: &Caller, request: &ClientRequest) -> Result<Admitted, RequestError> {
        let now = crate::rt::clock::unix_ms();
        let mut standing = self
            .credentials
            .standing(caller, now)
            .map_err(|refusal| RequestError::Unauthenticated { reason: refusal.to_string() })?;
        // A node outside the membership (a new node before `member add`) reads only.
        if let Caller::Node(from) = caller
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
        result.map(|audit| Admitted { audit, sees_credentials, owner: standing.owner })
    }

    /// Writes an admin action to the audit trail (an event in the change stream). Best
    /// effort: the action itself does not wait on it, and a lost record is logged.
    pub async fn record_audit(&self, record: roster_kernel::AuditRecord) {
        tracing::info!(by = %record.by, role = %record.role, action = %record.action, "audit");
        let (tx, _rx) = tokio::sync::oneshot::channel();
        self.submit(ProposalBody::Audit(record), ReplyTo::Caller(tx)).await;
    }

    /// Proposes through Raft (batched with whatever else is being written); the answer
    /// goes to `reply` once committed and applied, never earlier (Zeppelin acknowledged
    /// before the commit and lost writes).
    pub async fn submit(&self, body: ProposalBody, reply: ReplyTo) {
        self.writes.submit(body, reply).await
    }

    /// Serves one request that is not a write; `sees_credentials` says whether the caller
    /// may see the token and audit events of a watch (as `token ls`: admins and nodes).
    pub async fn handle(self: Arc<Self>, id: u64, request: Served, mut outbox: Outbox, sees_credentials: bool) {
        let op = request.op_name();
        let started = tokio::time::Instant::now();
        let response = match request {
            Served::Watch { after_revision } => {
                let _open = crate::metrics::Open::new(&self.metrics.watchers);
                self.reads.watch(id, after_revision, outbox, sees_credentials).await;
                return;
            }
            Served::Snapshot => {
                self.backups.stream(id, outbox).await;
                self.metrics.observe_request(op, started.elapsed());
                return;
            }
            Served::Query { query, consistency } => self.reads.query(query, consistency).await,
            Served::Heartbeat { member, resources } => self.heartbeat(member, resources).await,
            Served::Status => ClientResponse::Status(Box::new(self.status.status().await)),
            Served::Membership(change) => self.membership.handle(change).await,
            // Counted by the launcher, where the program starts (`roster_launches_total`).
            Served::Launch(req) => self.launcher.clone().launch(req).await,
            Served::StartLocal(req) => self.launcher.clone().start_local(req).await,
            Served::Output(req) => self.launcher.output().read(req).await,
            Served::LocalOutput(req) => self.launcher.output().read_local(req),
        };
        self.metrics.observe_request(op, started.elapsed());
        let _ = outbox.send(ClientResponseEnvelope { id, response }).await;
    }

    /// "Alive", judged by the leader driver (see `roster_kernel::leader_duties` for the
    /// rules: the lease, the record deciding membership).
    async fn heartbeat(&self, member: MemberId, resources: Option<roster_kernel::ResourceAverage>) -> ClientResponse {
        match self.leader.heartbeat(member, resources).await {
            Ok(HeartbeatVerdict::Accepted) => ClientResponse::HeartbeatOk,
            Ok(HeartbeatVerdict::UnknownMember(u)) => ClientResponse::UnknownMember(u.member),
            Ok(HeartbeatVerdict::NotLeader) => leadership::not_leader(&self.raft, self.id).await,
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
}
