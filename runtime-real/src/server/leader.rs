//! The leader driver: the one owner of the kernel's `LeaderDuties`. It feeds them the
//! node's role (from Raft's metrics), the applied record, heartbeats and the results of
//! its proposals, and proposes what they decide. Every rule is in the kernel
//! (`roster_kernel::leader_duties`); this loop only moves inputs in and outputs out.
//!
//! API tasks reach it through a bounded channel ([`LeaderHandle`]) and get their answer
//! back on a oneshot. Locks: the driver reads Raft's metrics, then (separately) takes the
//! applied state's read lock for one batch of inputs; it never holds one while taking the
//! other, nor across an `.await`.

use crate::raft::entry::Batch;
use crate::raft::{NodeId, TypeConfig};
use crate::rt::clock::Clock;
use crate::server::Raft;
use crate::storage::SharedState;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use openraft_rt::WatchReceiver;
use roster_kernel::{
    DutiesConfig, DutyProposal, HeartbeatVerdict, LeaderCommand, LeaderDuties, Lease, MemberId, Proposal, ProposalBody,
    ProposalId, ProposalOutcome, ResourceAverage, Role,
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How often the driver looks at Raft's role and lease when nothing is due sooner.
pub const TICK_MS: u64 = 50;
/// Requests waiting for the driver; one more is refused as `Busy` (at 10,000 members
/// heartbeating at 1 Hz this is more than a second of backlog).
pub(crate) const QUEUE_CAPACITY: usize = 16_384;
/// Most requests answered in one batch (under one read of the record).
const BATCH_MAX: usize = 1_024;

/// Why the driver could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverUnavailable {
    #[error("the leader's duty queue is full ({QUEUE_CAPACITY} requests waiting); retry shortly")]
    Busy,
    #[error("the leader's duty loop has stopped (the node is shutting down)")]
    Stopped,
}

enum Request {
    Heartbeat { member: MemberId, resources: Option<ResourceAverage>, reply: oneshot::Sender<HeartbeatVerdict> },
    HeartbeatAges { members: Vec<MemberId>, reply: oneshot::Sender<Vec<Option<u64>>> },
}

/// Sends work to the driver. Cheap to clone.
#[derive(Clone)]
pub struct LeaderHandle {
    tx: mpsc::Sender<Request>,
}

impl LeaderHandle {
    /// The verdict on a heartbeat that reached this node.
    pub async fn heartbeat(
        &self,
        member: MemberId,
        resources: Option<ResourceAverage>,
    ) -> Result<HeartbeatVerdict, DriverUnavailable> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Heartbeat { member, resources, reply })?;
        answer.await.map_err(|_| DriverUnavailable::Stopped)
    }

    /// Milliseconds since the leader last heard each of `members` (`None`: not leading,
    /// or not tracked).
    pub async fn heartbeat_ages_ms(&self, members: Vec<MemberId>) -> Result<Vec<Option<u64>>, DriverUnavailable> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::HeartbeatAges { members, reply })?;
        answer.await.map_err(|_| DriverUnavailable::Stopped)
    }

    fn send(&self, request: Request) -> Result<(), DriverUnavailable> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DriverUnavailable::Busy,
            mpsc::error::TrySendError::Closed(_) => DriverUnavailable::Stopped,
        })
    }
}

/// Raft's metrics as the driver reads them: one receiver, kept (making one per read
/// registers a receiver each time).
type Metrics = openraft::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>;

/// Everything the driver reads from; it owns the duties alone.
pub struct Driver {
    pub node: NodeId,
    pub raft: Raft,
    pub shared: Arc<SharedState>,
    pub clock: Clock,
    /// A leader that has not heard from a quorum for this long may have been replaced
    /// (`election_timeout_max_ms`: see where `node.rs` sets it).
    pub lease_ms: u64,
    /// The node's counters (heartbeats answered, members expired).
    pub counters: Arc<crate::metrics::Metrics>,
    /// The id to seal the cluster with if this node leads a cluster that has none yet
    /// (see `server::cluster_id`).
    pub cluster_id_offer: u64,
    /// The state budget this node proposes when it leads a record that holds another
    /// (`state_budget_bytes`; the kernel's leader duties, rule 8).
    pub state_budget_offer: u64,
}

/// Starts the driver task; it runs until every handle is dropped.
pub fn start(driver: Driver, config: DutiesConfig) -> Result<LeaderHandle, roster_kernel::DutiesConfigError> {
    let mut duties = LeaderDuties::new(config)?;
    duties.offer_cluster_id(driver.cluster_id_offer);
    duties.offer_state_budget(driver.state_budget_offer);
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let metrics = driver.raft.metrics();
    tokio::spawn(driver.run(duties, metrics, rx));
    Ok(LeaderHandle { tx })
}

impl Driver {
    async fn run(self, mut duties: LeaderDuties, metrics: Metrics, mut rx: mpsc::Receiver<Request>) {
        let mut in_flight = FuturesUnordered::new();
        let mut batch = Vec::with_capacity(BATCH_MAX);
        loop {
            let now_ms = self.clock.now_ms();
            let role = role_of(&metrics, self.node, self.lease_ms);
            let term_before = duties.term();
            self.shared.with_kernel(|record| duties.handle_tick(now_ms, role, record));
            if duties.term() != term_before {
                match duties.term() {
                    Some(term) => tracing::info!(
                        node = self.node,
                        term,
                        members = duties.tracked_count(),
                        "became leader: every member gets a full timeout of grace"
                    ),
                    None => tracing::info!(node = self.node, "no longer leader: liveness judging stops"),
                }
            }
            while let Some(proposal) = duties.poll_proposal(now_ms) {
                in_flight.push(propose(self.raft.clone(), proposal, self.counters.clone()));
            }
            let wake_ms = duties.poll_timeout().map_or(now_ms + TICK_MS, |t| t.clamp(now_ms, now_ms + TICK_MS));
            tokio::select! {
                biased;
                Some((id, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    duties.handle_proposal_result(self.clock.now_ms(), id, outcome);
                }
                n = rx.recv_many(&mut batch, BATCH_MAX) => {
                    if n == 0 {
                        return; // every handle dropped: the node is gone
                    }
                    let role = role_of(&metrics, self.node, self.lease_ms);
                    self.answer(&mut duties, role, &mut batch);
                }
                _ = self.clock.sleep_until_ms(wake_ms) => {}
            }
        }
    }

    /// Answers a batch of requests under one read of the role and one of the record.
    fn answer(&self, duties: &mut LeaderDuties, role: Role, batch: &mut Vec<Request>) {
        let now_ms = self.clock.now_ms();
        let mut replies = Vec::with_capacity(batch.len());
        self.shared.with_kernel(|record| {
            for request in batch.drain(..) {
                match request {
                    Request::Heartbeat { member, resources, reply } => {
                        let verdict = duties.handle_heartbeat(now_ms, role, member, resources, record);
                        replies.push(Reply::Verdict(reply, verdict));
                    }
                    Request::HeartbeatAges { members, reply } => {
                        let ages = members.iter().map(|m| duties.heartbeat_age_ms(now_ms, *m)).collect();
                        replies.push(Reply::Ages(reply, ages));
                    }
                }
            }
        });
        // Counted and answered after the record's lock is released (the counters have
        // locks of their own). A requester that gave up is no loss: its answer is dropped.
        for reply in replies {
            match reply {
                Reply::Verdict(tx, verdict) => {
                    self.counters.count_heartbeat(verdict_label(&verdict));
                    let _ = tx.send(verdict);
                }
                Reply::Ages(tx, ages) => drop(tx.send(ages)),
            }
        }
    }
}

fn verdict_label(verdict: &HeartbeatVerdict) -> &'static str {
    match verdict {
        HeartbeatVerdict::Accepted => "accepted",
        HeartbeatVerdict::NotLeader => "not_leader",
        HeartbeatVerdict::UnknownMember(_) => "unknown_member",
        HeartbeatVerdict::CountedSentOn => "sent_on",
    }
}

enum Reply {
    Verdict(oneshot::Sender<HeartbeatVerdict>, HeartbeatVerdict),
    Ages(oneshot::Sender<Vec<Option<u64>>>, Vec<Option<u64>>),
}

/// Whether Raft calls `node` leader, in which term, and whether a quorum acknowledged it
/// within `lease_ms` (a single voter is its own quorum).
fn role_of(metrics: &Metrics, node: NodeId, lease_ms: u64) -> Role {
    let m = metrics.borrow_watched();
    if m.state != openraft::ServerState::Leader || m.current_leader != Some(node) {
        return Role::Follower;
    }
    let alone = m.membership_config.membership().voter_ids().count() <= 1;
    let lease = std::time::Duration::from_millis(lease_ms);
    let acked = m.last_quorum_acked.as_ref().is_some_and(|at| openraft::Instant::elapsed(&**at) < lease);
    Role::Leader { term: m.current_term, lease: if alone || acked { Lease::Held } else { Lease::Lapsed } }
}

/// Proposes a leader command as an entry of its own and reports its fate.
async fn propose(
    raft: Raft,
    proposal: DutyProposal,
    counters: Arc<crate::metrics::Metrics>,
) -> (ProposalId, ProposalOutcome) {
    let DutyProposal { id, command } = proposal;
    let expired: Option<(usize, Vec<String>)> = match &command {
        LeaderCommand::Expire { members } => {
            Some((members.len(), members.iter().take(8).map(|(m, s)| format!("{m} (silent {s} ms)")).collect()))
        }
        LeaderCommand::ReportResources { .. }
        | LeaderCommand::ReportMemberResources { .. }
        | LeaderCommand::SealCluster { .. }
        | LeaderCommand::SetStateBudget { .. } => None,
    };
    let entry = Proposal { at_unix_ms: crate::rt::clock::unix_ms(), body: ProposalBody::Leader(command) };
    match (raft.client_write(Batch::one(entry)).await, expired) {
        (Ok(_), Some((count, first))) => {
            tracing::info!(count, ?first, "members expired");
            counters.expirations.inc_by(count as u64);
            (id, ProposalOutcome::Committed)
        }
        (Ok(_), None) => (id, ProposalOutcome::Committed),
        (Err(e), Some((count, _))) => {
            tracing::warn!(count, error = %e, "expiry not committed; will retry");
            (id, ProposalOutcome::Failed)
        }
        (Err(e), None) => {
            tracing::debug!(error = %e, "resource report not committed");
            (id, ProposalOutcome::Failed)
        }
    }
}
