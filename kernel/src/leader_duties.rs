//! What the leader decides on its own: who is alive, whom to expire, when to write
//! servers' averaged resources. Sans-IO: the driver feeds it the node's role, heartbeats,
//! the applied record and the results of its proposals, and does what `poll_proposal`
//! says.
//!
//! # Rules, in one place
//!
//! 1. **Grace per term.** On every new term this node leads (also when leadership was
//!    lost and won back between two ticks: a new term number is a new tenure), every
//!    member in the record gets a full timeout of grace from that moment.
//! 2. **The lease.** While Raft calls this node leader but no quorum acknowledged it
//!    within the lease ([`Lease::Lapsed`]), it may have been replaced, or it is only
//!    slow (a paused process, a stalled disk). It counts heartbeats but sends members on
//!    ([`HeartbeatVerdict::CountedSentOn`]), proposes nothing, and when the lease is
//!    [`Lease::Held`] again gives every member grace once more: heartbeats that went
//!    elsewhere meanwhile were never seen here.
//! 3. **The record decides membership.** A heartbeat from a member the tracker does not
//!    know is checked against the applied record (after catching up with it), so one
//!    racing its own registration is accepted.
//! 4. **Catching up.** The tracker follows registrations and departures through the
//!    record's events; if the history was compacted past it, it re-reads every member,
//!    with grace.
//! 5. **Bounded expiry.** Silent members are proposed for expiry at most
//!    [`DutiesConfig::max_expire_per_proposal`] at a time, one proposal in flight. A
//!    member is proposed once per term until its removal is applied; only a proposal that
//!    failed is retried, after [`DutiesConfig::retry_delay_ms`], and then without the
//!    members heard meanwhile.
//! 6. **Resource write rate** ([`ResourcePolicy`]): per member, server or process alike,
//!    at most one write per `min_interval_ms`; a meaningful change (or a first value) is
//!    written once that much has passed since the last write, any other change after
//!    `max_interval_ms`, an unchanged value never. A failed write counts against the rate
//!    and its value is kept for the next one. One write carries at most
//!    [`MAX_RESOURCE_REPORTS_PER_PROPOSAL`] members, in id order; the rest wait for the
//!    next.
//! 7. **The seal.** A leader whose record holds no cluster id proposes the id it was
//!    offered ([`LeaderDuties::offer_cluster_id`]: a random number drawn at the node's
//!    start, or the id its data directory already holds), first of all its proposals and
//!    one at a time; a failed seal is tried again after `retry_delay_ms`. The first seal
//!    applied stays, so every node adopts one id.
//! 8. **The budget.** A leader whose record's state budget differs from the one it was
//!    offered ([`LeaderDuties::offer_state_budget`]: its `state_budget_bytes`) proposes
//!    its own, once per term, after the seal; a failed proposal is tried again after
//!    `retry_delay_ms`. The budget is a replicated value, so every node refuses the same
//!    writes whatever its own config says, and a new leader's config takes over.
//!
//! Call order for a driver, after every input:
//!
//! ```text
//! handle_tick(now, role, record)              at least every lease check period
//! handle_heartbeat(now, role, beat, record)   per heartbeat; answer with the verdict
//! handle_proposal_result(now, id, outcome)    when a proposal's fate is known
//! while let Some(p) = poll_proposal(now) { propose p.command, remember p.id }
//! sleep until min(poll_timeout(), next lease check)
//! ```

use crate::command::LeaderCommand;
use crate::event::EventKind;
use crate::ids::MemberId;
use crate::liveness::{Liveness, LivenessConfig, LivenessConfigError, UnknownMember};
use crate::model::ResourceAverage;
use crate::state_machine::{ClusterStateMachine, EventsCompacted};
use std::collections::BTreeMap;

#[cfg(test)]
mod tests;

/// Most members one Expire proposal removes; the rest go in the next. Bounds the entry.
pub const MAX_EXPIRE_PER_PROPOSAL: usize = 4_096;
/// Most members one resource write reports; the rest go in the next. Bounds the entry
/// when thousands of processes report at once.
pub const MAX_RESOURCE_REPORTS_PER_PROPOSAL: usize = 1_024;
/// How long after a failed proposal it is tried again.
pub const RETRY_DELAY_MS: u64 = 50;

/// When the leader writes averaged resources into the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourcePolicy {
    /// At least this long between two writes for one member...
    pub min_interval_ms: u64,
    /// ...and any change is written once this long has passed...
    pub max_interval_ms: u64,
    /// ...but a move of this many percentage points of CPU...
    pub cpu_change_percent: u32,
    /// ...or of this fraction of memory (per mille) is written after `min_interval_ms`.
    pub mem_change_permille: u64,
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        ResourcePolicy {
            min_interval_ms: 1_000,
            max_interval_ms: 10_000,
            cpu_change_percent: 5,
            mem_change_permille: 50,
        }
    }
}

impl ResourcePolicy {
    /// Whether `new` differs enough from `old` to be written after `min_interval_ms`.
    pub fn is_meaningful(&self, old: ResourceAverage, new: ResourceAverage) -> bool {
        let cpu_moved = old.cpu_percent_avg.abs_diff(new.cpu_percent_avg) >= self.cpu_change_percent;
        let mem_base = u128::from(old.mem_bytes_used_avg.max(1));
        let mem_moved = u128::from(old.mem_bytes_used_avg.abs_diff(new.mem_bytes_used_avg)) * 1000 / mem_base
            >= u128::from(self.mem_change_permille);
        cpu_moved || mem_moved
    }
}

/// Everything the leader's rules are tuned by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DutiesConfig {
    pub liveness: LivenessConfig,
    pub resources: ResourcePolicy,
    pub max_expire_per_proposal: usize,
    pub retry_delay_ms: u64,
}

impl DutiesConfig {
    pub fn new(liveness: LivenessConfig) -> DutiesConfig {
        DutiesConfig {
            liveness,
            resources: ResourcePolicy::default(),
            max_expire_per_proposal: MAX_EXPIRE_PER_PROPOSAL,
            retry_delay_ms: RETRY_DELAY_MS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DutiesConfigError {
    #[error(transparent)]
    Liveness(#[from] LivenessConfigError),
    #[error(
        "resource write interval: min_interval_ms {min_interval_ms} is above max_interval_ms {max_interval_ms}; \
         lower the first or raise the second"
    )]
    ResourceIntervals { min_interval_ms: u64, max_interval_ms: u64 },
    #[error("max_expire_per_proposal is 0: at least one member must fit in an expiry")]
    ZeroExpiryBatch,
}

/// Whether a quorum acknowledged this leader within the lease (a single voter is its own
/// quorum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    Held,
    Lapsed,
}

/// This node's role as Raft reports it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Leader { term: u64, lease: Lease },
}

/// What to answer a heartbeat.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatVerdict {
    /// Heard: the member is alive until the timeout.
    Accepted,
    /// This node does not lead: look for the leader.
    NotLeader,
    /// Not in the record: register again.
    UnknownMember(UnknownMember),
    /// Counted here in case this node still leads, but its lease lapsed: look for another
    /// leader too, in case it does not (a new leader that never hears the member would
    /// expire it after its grace).
    CountedSentOn,
}

/// Names one proposal, to match its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProposalId(pub u64);

/// A leader command to propose through Raft.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DutyProposal {
    pub id: ProposalId,
    pub command: LeaderCommand,
}

/// The fate of a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Committed and applied.
    Committed,
    /// Not committed by this leader (refused, timed out, or leadership lost); it may be
    /// proposed again.
    Failed,
}

/// What the leader's rules read of the applied record. The kernel's state machine is the
/// one implementation that ships; tests use a plain one.
pub trait MemberRecord {
    fn revision(&self) -> u64;
    /// Every live member.
    fn members(&self) -> Vec<MemberId>;
    fn contains_member(&self, member: MemberId) -> bool;
    /// Registrations (`true`) and departures (`false`) after `revision`, oldest first.
    fn member_changes_after(&self, revision: u64) -> Result<Vec<(MemberId, bool)>, EventsCompacted>;
    /// Averages the record holds for a member, if it has any.
    fn recorded_resources(&self, member: MemberId) -> Option<ResourceAverage>;
    /// The cluster's id, once a leader sealed it.
    fn cluster_id(&self) -> Option<u64>;
    /// The replicated state budget (`LeaderCommand::SetStateBudget`).
    fn state_budget_bytes(&self) -> u64;
}

impl MemberRecord for ClusterStateMachine {
    fn revision(&self) -> u64 {
        ClusterStateMachine::revision(self)
    }

    fn members(&self) -> Vec<MemberId> {
        ClusterStateMachine::members(self).collect()
    }

    fn contains_member(&self, member: MemberId) -> bool {
        ClusterStateMachine::contains_member(self, member)
    }

    fn member_changes_after(&self, revision: u64) -> Result<Vec<(MemberId, bool)>, EventsCompacted> {
        Ok(self
            .events_after(revision)?
            .filter_map(|e| match &e.kind {
                EventKind::ServerRegistered(s) => Some((MemberId::Server(s.id), true)),
                EventKind::ProcessRegistered(p) => Some((MemberId::Process(p.id), true)),
                EventKind::Departed { member, .. } => Some((*member, false)),
                _ => None,
            })
            .collect())
    }

    fn recorded_resources(&self, member: MemberId) -> Option<ResourceAverage> {
        match member {
            MemberId::Server(id) => self.get_server(id).and_then(|s| s.resources),
            MemberId::Process(id) => self.get_process(id).and_then(|p| p.resources),
        }
    }

    fn cluster_id(&self) -> Option<u64> {
        ClusterStateMachine::cluster_id(self)
    }

    fn state_budget_bytes(&self) -> u64 {
        ClusterStateMachine::state_budget_bytes(self)
    }
}

/// The leader's expiry proposal, as far as it got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expiry {
    Idle,
    InFlight {
        id: ProposalId,
        members: Vec<MemberId>,
    },
    /// Failed; proposed again at `at_ms`, without members heard meanwhile.
    RetryAt {
        at_ms: u64,
        members: Vec<MemberId>,
    },
}

/// What this leader last wrote for a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    /// The value the record holds, as far as this leader knows.
    value: Option<ResourceAverage>,
    /// When this leader last proposed a write for the member (failed ones too).
    at_ms: Option<u64>,
}

/// One term of leading.
#[derive(Clone, Debug)]
struct Tenure {
    term: u64,
    lease: Lease,
    /// The record's revision the tracker has caught up with.
    synced_revision: u64,
    expiry: Expiry,
    /// Newest averages heard per member and not yet written.
    heard: BTreeMap<MemberId, ResourceAverage>,
    written: BTreeMap<MemberId, Written>,
    resources_in_flight: Option<(ProposalId, Vec<(MemberId, ResourceAverage)>)>,
    seal: Seal,
    budget: BudgetDuty,
}

/// Where this tenure's proposal of the state budget stands (rule 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BudgetDuty {
    /// Not yet compared with the record this term.
    Unchecked,
    /// The record's budget differs: propose the offer when the lease holds, not before `at_ms`.
    Due {
        at_ms: u64,
    },
    InFlight(ProposalId),
    /// Equal, or proposed and applied: nothing more this term.
    Settled,
}

/// Where this tenure's seal of the cluster id stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seal {
    /// The record holds an id, or none was offered: nothing to do.
    Done,
    /// The record holds none: propose one when the lease holds, not before `at_ms`.
    Due {
        at_ms: u64,
    },
    InFlight(ProposalId),
}

/// The leader's duties. Inert while this node follows.
#[derive(Clone, Debug)]
pub struct LeaderDuties {
    config: DutiesConfig,
    liveness: Liveness,
    tenure: Option<Tenure>,
    next_proposal: u64,
    /// The id to seal the cluster with when the record holds none.
    cluster_id_offer: Option<u64>,
    /// The state budget this node's leaders propose when the record's differs.
    state_budget_offer: Option<u64>,
}

impl LeaderDuties {
    pub fn new(config: DutiesConfig) -> Result<Self, DutiesConfigError> {
        let policy = config.resources;
        if policy.min_interval_ms > policy.max_interval_ms {
            return Err(DutiesConfigError::ResourceIntervals {
                min_interval_ms: policy.min_interval_ms,
                max_interval_ms: policy.max_interval_ms,
            });
        }
        if config.max_expire_per_proposal == 0 {
            return Err(DutiesConfigError::ZeroExpiryBatch);
        }
        let liveness = Liveness::new(config.liveness)?;
        Ok(LeaderDuties {
            config,
            liveness,
            tenure: None,
            next_proposal: 1,
            cluster_id_offer: None,
            state_budget_offer: None,
        })
    }

    /// The id to seal the cluster with if this node leads while the record holds none
    /// (rule 7). Without an offer, this node never seals.
    pub fn offer_cluster_id(&mut self, id: u64) {
        self.cluster_id_offer = Some(id);
    }

    /// The state budget to propose if this node leads while the record holds another
    /// (rule 8). Without an offer, this node never proposes one.
    pub fn offer_state_budget(&mut self, bytes: u64) {
        self.state_budget_offer = Some(bytes);
    }

    pub fn config(&self) -> &DutiesConfig {
        &self.config
    }

    /// The term this node leads in, if it does.
    pub fn term(&self) -> Option<u64> {
        self.tenure.as_ref().map(|t| t.term)
    }

    /// Milliseconds since this leader last heard `member` (or since its grace began);
    /// `None` when not leading or the member is not tracked.
    pub fn heartbeat_age_ms(&self, now_ms: u64, member: MemberId) -> Option<u64> {
        self.tenure.as_ref()?;
        self.liveness.silent_for_ms(now_ms, member)
    }

    /// Members tracked by this leader (0 when following).
    pub fn tracked_count(&self) -> usize {
        self.liveness.len()
    }

    /// Takes in the node's role and catches up with the record.
    pub fn handle_tick(&mut self, now_ms: u64, role: Role, record: &impl MemberRecord) {
        self.apply_role(now_ms, role, record);
        if self.tenure.is_some() {
            self.sync(now_ms, record);
        }
        self.check_invariants();
    }

    /// A heartbeat reached this node; the verdict is what to answer.
    pub fn handle_heartbeat(
        &mut self,
        now_ms: u64,
        role: Role,
        member: MemberId,
        resources: Option<ResourceAverage>,
        record: &impl MemberRecord,
    ) -> HeartbeatVerdict {
        self.handle_tick(now_ms, role, record);
        let Some(tenure) = self.tenure.as_mut() else {
            return HeartbeatVerdict::NotLeader;
        };
        // Caught up with the record above, so the tracker knows exactly its members: a
        // heartbeat racing its own registration finds it once the registration is applied.
        let known = self.liveness.handle_heartbeat(now_ms, member).is_ok();
        if known && let Some(avg) = resources {
            tenure.heard.insert(member, avg);
        }
        match (tenure.lease, known) {
            (Lease::Lapsed, _) => HeartbeatVerdict::CountedSentOn,
            (Lease::Held, true) => HeartbeatVerdict::Accepted,
            (Lease::Held, false) => HeartbeatVerdict::UnknownMember(UnknownMember { member }),
        }
    }

    /// The fate of a proposal from `poll_proposal`. Results of another term's proposals
    /// are ignored: the new tenure judged from scratch.
    pub fn handle_proposal_result(&mut self, now_ms: u64, id: ProposalId, outcome: ProposalOutcome) {
        let Some(tenure) = self.tenure.as_mut() else {
            return;
        };
        if tenure.seal == Seal::InFlight(id) {
            tenure.seal = match outcome {
                ProposalOutcome::Committed => Seal::Done,
                ProposalOutcome::Failed => Seal::Due { at_ms: now_ms.saturating_add(self.config.retry_delay_ms) },
            };
        } else if tenure.budget == BudgetDuty::InFlight(id) {
            tenure.budget = match outcome {
                ProposalOutcome::Committed => BudgetDuty::Settled,
                ProposalOutcome::Failed => BudgetDuty::Due { at_ms: now_ms.saturating_add(self.config.retry_delay_ms) },
            };
        } else if let Expiry::InFlight { id: in_flight, members } = &mut tenure.expiry
            && *in_flight == id
        {
            tenure.expiry = match outcome {
                // The removals arrive through the record's events.
                ProposalOutcome::Committed => Expiry::Idle,
                ProposalOutcome::Failed => Expiry::RetryAt {
                    at_ms: now_ms.saturating_add(self.config.retry_delay_ms),
                    members: std::mem::take(members),
                },
            };
        } else if tenure.resources_in_flight.as_ref().is_some_and(|(in_flight, _)| *in_flight == id) {
            let (_, reports) = tenure.resources_in_flight.take().expect("checked above");
            for (member, avg) in reports {
                match outcome {
                    ProposalOutcome::Committed => {
                        if let Some(w) = tenure.written.get_mut(&member) {
                            w.value = Some(avg);
                        }
                    }
                    // Keep the value for the next write, unless a newer one came or the
                    // member left meanwhile.
                    ProposalOutcome::Failed => {
                        if self.liveness.contains(member) {
                            tenure.heard.entry(member).or_insert(avg);
                        }
                    }
                }
            }
        }
        self.check_invariants();
    }

    /// The next leader command to propose, if any is due at `now_ms`. Call until `None`.
    #[must_use]
    pub fn poll_proposal(&mut self, now_ms: u64) -> Option<DutyProposal> {
        let tenure = self.tenure.as_mut()?;
        if tenure.lease == Lease::Lapsed {
            return None;
        }
        if let (Seal::Due { at_ms }, Some(cluster)) = (tenure.seal, self.cluster_id_offer)
            && at_ms <= now_ms
        {
            let id = ProposalId(self.next_proposal);
            self.next_proposal += 1;
            tenure.seal = Seal::InFlight(id);
            return Some(DutyProposal { id, command: LeaderCommand::SealCluster { id: cluster } });
        }
        if let (BudgetDuty::Due { at_ms }, Some(bytes)) = (tenure.budget, self.state_budget_offer)
            && at_ms <= now_ms
            && !matches!(tenure.seal, Seal::Due { .. } | Seal::InFlight(_))
        {
            let id = ProposalId(self.next_proposal);
            self.next_proposal += 1;
            tenure.budget = BudgetDuty::InFlight(id);
            return Some(DutyProposal { id, command: LeaderCommand::SetStateBudget { bytes } });
        }
        let max = self.config.max_expire_per_proposal;
        let retry: Option<Vec<MemberId>> = match &mut tenure.expiry {
            Expiry::Idle => Some(Vec::new()),
            Expiry::RetryAt { at_ms, members } if *at_ms <= now_ms => Some(std::mem::take(members)),
            _ => None,
        };
        if let Some(retry) = retry {
            // A member heard since the failed proposal is not pending any more: it kept
            // heartbeating while the proposal waited, so it must not be removed.
            let mut expire: Vec<(MemberId, u64)> = retry
                .into_iter()
                .filter(|m| self.liveness.is_pending(*m))
                .map(|m| (m, self.liveness.silent_for_ms(now_ms, m).unwrap_or(0)))
                .collect();
            if expire.len() < max {
                expire.extend(self.liveness.poll_expired_up_to(now_ms, max - expire.len()));
            }
            if expire.is_empty() {
                tenure.expiry = Expiry::Idle;
            } else {
                let id = ProposalId(self.next_proposal);
                self.next_proposal += 1;
                tenure.expiry = Expiry::InFlight { id, members: expire.iter().map(|(m, _)| *m).collect() };
                let command = LeaderCommand::Expire { members: expire };
                self.check_invariants();
                return Some(DutyProposal { id, command });
            }
        }
        if tenure.resources_in_flight.is_none() {
            let due = resources_due(&self.config.resources, tenure, now_ms);
            if !due.is_empty() {
                let id = ProposalId(self.next_proposal);
                self.next_proposal += 1;
                for (member, _) in &due {
                    tenure.heard.remove(member);
                    tenure.written.entry(*member).or_insert(Written { value: None, at_ms: None }).at_ms = Some(now_ms);
                }
                tenure.resources_in_flight = Some((id, due.clone()));
                self.check_invariants();
                return Some(DutyProposal { id, command: LeaderCommand::ReportMemberResources { reports: due } });
            }
        }
        None
    }

    /// When something next comes due (`poll_proposal` then); `None` when nothing will
    /// without new input. Role and lease changes come from outside: the driver looks at
    /// them on its own period too.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let tenure = self.tenure.as_ref()?;
        if tenure.lease == Lease::Lapsed {
            return None;
        }
        let expiry = match &tenure.expiry {
            Expiry::Idle => self.liveness.poll_timeout(),
            Expiry::InFlight { .. } => None,
            Expiry::RetryAt { at_ms, .. } => Some(*at_ms),
        };
        let resources = match tenure.resources_in_flight {
            Some(_) => None,
            None => {
                let policy = &self.config.resources;
                tenure
                    .heard
                    .iter()
                    .filter_map(|(member, avg)| write_due_ms(policy, tenure.written.get(member), *avg))
                    .min()
            }
        };
        let seal = match tenure.seal {
            Seal::Due { at_ms } => Some(at_ms),
            Seal::Done | Seal::InFlight(_) => None,
        };
        let budget = match tenure.budget {
            BudgetDuty::Due { at_ms } => Some(at_ms),
            BudgetDuty::Unchecked | BudgetDuty::InFlight(_) | BudgetDuty::Settled => None,
        };
        [expiry, resources, seal, budget].into_iter().flatten().min()
    }

    fn apply_role(&mut self, now_ms: u64, role: Role, record: &impl MemberRecord) {
        match (role, self.tenure.as_mut()) {
            (Role::Follower, None) => {}
            (Role::Follower, Some(_)) => {
                self.tenure = None;
                self.liveness.handle_stepped_down();
            }
            (Role::Leader { term, lease }, Some(tenure)) if tenure.term == term => {
                if tenure.lease == Lease::Lapsed && lease == Lease::Held {
                    // Heartbeats that went elsewhere while no quorum answered were never
                    // seen here: judge everyone from now, as a new leader would.
                    self.liveness.handle_grace(now_ms);
                    if let Expiry::RetryAt { .. } = tenure.expiry {
                        tenure.expiry = Expiry::Idle;
                    }
                }
                tenure.lease = lease;
            }
            (Role::Leader { term, lease }, _) => {
                let members = record.members();
                self.liveness.handle_became_leader(now_ms, members.iter().copied());
                let written = members
                    .iter()
                    .filter_map(|member| {
                        let value = record.recorded_resources(*member)?;
                        Some((*member, Written { value: Some(value), at_ms: Some(now_ms) }))
                    })
                    .collect();
                self.tenure = Some(Tenure {
                    term,
                    lease,
                    synced_revision: record.revision(),
                    expiry: Expiry::Idle,
                    heard: BTreeMap::new(),
                    written,
                    resources_in_flight: None,
                    seal: Seal::Done,
                    budget: BudgetDuty::Unchecked,
                });
            }
        }
    }

    /// Brings the tracker up to date with registrations and departures in the record.
    fn sync(&mut self, now_ms: u64, record: &impl MemberRecord) {
        let tenure = self.tenure.as_mut().expect("sync only while leading");
        tenure.seal = match (record.cluster_id(), self.cluster_id_offer, tenure.seal) {
            (Some(_), _, _) | (None, None, _) => Seal::Done,
            (None, Some(_), Seal::Done) => Seal::Due { at_ms: now_ms },
            (None, Some(_), pending) => pending,
        };
        if tenure.budget == BudgetDuty::Unchecked {
            tenure.budget = match self.state_budget_offer {
                Some(bytes) if bytes != record.state_budget_bytes() => BudgetDuty::Due { at_ms: now_ms },
                _ => BudgetDuty::Settled,
            };
        }
        let revision = record.revision();
        if revision == tenure.synced_revision {
            return;
        }
        let changes = if revision > tenure.synced_revision {
            record.member_changes_after(tenure.synced_revision).ok()
        } else {
            None // the record went back (a snapshot installed under us): start over
        };
        match changes {
            Some(changes) => {
                for (member, added) in changes {
                    if added {
                        self.liveness.handle_member_added(now_ms, member);
                    } else {
                        self.liveness.handle_member_removed(member);
                        tenure.heard.remove(&member);
                        tenure.written.remove(&member);
                    }
                }
            }
            None => {
                // History compacted past the tracker: re-read every member, with grace.
                self.liveness.handle_became_leader(now_ms, record.members());
                tenure.heard.retain(|member, _| record.contains_member(*member));
                tenure.written.retain(|member, _| record.contains_member(*member));
            }
        }
        tenure.synced_revision = revision;
    }

    fn check_invariants(&self) {
        match &self.tenure {
            None => assert!(self.liveness.is_empty(), "leader duties: a follower tracks members"),
            Some(tenure) => {
                let max = self.config.max_expire_per_proposal;
                match &tenure.expiry {
                    Expiry::Idle => {}
                    Expiry::InFlight { members, .. } | Expiry::RetryAt { members, .. } => {
                        assert!(
                            !members.is_empty() && members.len() <= max,
                            "leader duties: expiry batch out of bounds"
                        )
                    }
                }
                if let Some((_, reports)) = &tenure.resources_in_flight {
                    assert!(
                        !reports.is_empty() && reports.len() <= MAX_RESOURCE_REPORTS_PER_PROPOSAL,
                        "leader duties: a resource write in flight that is empty or over the bound"
                    );
                }
            }
        }
    }
}

/// When `avg`, heard for a member last written as `written`, may be written; `None` if
/// it never needs to be (the record already holds it).
fn write_due_ms(policy: &ResourcePolicy, written: Option<&Written>, avg: ResourceAverage) -> Option<u64> {
    let Some(w) = written else {
        return Some(0); // never written by this leader and nothing in the record
    };
    let meaningful = match w.value {
        Some(old) if old == avg => return None,
        Some(old) => policy.is_meaningful(old, avg),
        None => true,
    };
    let Some(at_ms) = w.at_ms else {
        return Some(0);
    };
    let wait_ms = if meaningful { policy.min_interval_ms } else { policy.max_interval_ms };
    Some(at_ms.saturating_add(wait_ms))
}

/// The members whose newest averages are due at `now_ms`, in id order, at most
/// `MAX_RESOURCE_REPORTS_PER_PROPOSAL` (the rest stay heard, due for the next write).
/// Values the record already holds are dropped.
fn resources_due(policy: &ResourcePolicy, tenure: &mut Tenure, now_ms: u64) -> Vec<(MemberId, ResourceAverage)> {
    let mut due = Vec::new();
    tenure.heard.retain(|member, avg| match write_due_ms(policy, tenure.written.get(member), *avg) {
        None => false,
        Some(at_ms) => {
            if at_ms <= now_ms && due.len() < MAX_RESOURCE_REPORTS_PER_PROPOSAL {
                due.push((*member, *avg));
            }
            true
        }
    });
    due
}
