//! Leader duties: judge liveness on the leader's own monotonic clock, expire silent
//! members through Raft (batched), and write servers' averaged resources into the
//! replicated record at a bounded rate. Heartbeats themselves never enter the log.

use crate::batch::Batch;
use crate::clock::Clock;
use crate::raft_types::NodeId;
use crate::storage::SharedState;
use openraft_rt::WatchReceiver;
use roster_kernel::{
    CommandResult, EventKind, LeaderCommand, Liveness, LivenessConfig, MemberId, Proposal, ProposalBody,
    ResourceAverage, ServerId, UnknownMember,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most members removed by one Expire entry; more go in the next.
const MAX_EXPIRE_BATCH: usize = 4_096;
/// How often the duty loop looks at its role and the record when nothing is due sooner.
const TICK_MS: u64 = 50;

/// When the leader writes averaged resources into the record.
#[derive(Clone, Copy, Debug)]
pub struct ResourcePolicy {
    /// At least this long between two writes for one server...
    pub min_interval_ms: u64,
    /// ...unless this long has passed, when any change is written...
    pub max_interval_ms: u64,
    /// ...or CPU moved by this many percentage points / memory by this fraction (per mille).
    pub cpu_change_percent: u32,
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

pub struct Duties {
    state: Mutex<DutyState>,
    policy: ResourcePolicy,
}

struct DutyState {
    liveness: Liveness,
    /// Revision of the record the liveness tracker has caught up with.
    synced_revision: u64,
    /// Latest averages heard on heartbeats, not yet written.
    fresh: BTreeMap<ServerId, ResourceAverage>,
    /// What was last written per server, and when (duty clock ms).
    written: BTreeMap<ServerId, (ResourceAverage, u64)>,
}

/// The answer to a heartbeat.
pub enum HeartbeatOutcome {
    Ok,
    NotLeader,
    Unknown(UnknownMember),
}

impl Duties {
    pub fn new(config: LivenessConfig, policy: ResourcePolicy) -> Result<Self, roster_kernel::LivenessConfigError> {
        let liveness = Liveness::new(config)?;
        Ok(Duties {
            state: Mutex::new(DutyState {
                liveness,
                synced_revision: 0,
                fresh: BTreeMap::new(),
                written: BTreeMap::new(),
            }),
            policy,
        })
    }

    fn lock(&self) -> MutexGuard<'_, DutyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A heartbeat reached this node. Only the leader judges; the record (not the
    /// tracker) decides whether a member exists, so a heartbeat racing its own
    /// registration is still accepted.
    pub fn handle_heartbeat(
        &self,
        now_ms: u64,
        member: MemberId,
        resources: Option<ResourceAverage>,
        shared: &SharedState,
    ) -> HeartbeatOutcome {
        let mut st = self.lock();
        if !st.liveness.is_leader() {
            return HeartbeatOutcome::NotLeader;
        }
        if let Err(unknown) = st.liveness.handle_heartbeat(now_ms, member) {
            if !crate::storage::with_kernel(shared, |sm| sm.contains_member(member)) {
                return HeartbeatOutcome::Unknown(unknown);
            }
            st.liveness.handle_member_added(now_ms, member);
        }
        if let (MemberId::Server(id), Some(avg)) = (member, resources) {
            st.fresh.insert(id, avg);
        }
        HeartbeatOutcome::Ok
    }

    /// Milliseconds since the leader last heard `member`, if this node is the leader.
    pub fn heartbeat_age_ms(&self, now_ms: u64, member: MemberId) -> Option<u64> {
        let st = self.lock();
        if !st.liveness.is_leader() {
            return None;
        }
        st.liveness.silent_for_ms(now_ms, member)
    }

    fn resources_due(&self, now_ms: u64) -> Vec<(ServerId, ResourceAverage)> {
        let mut st = self.lock();
        let p = self.policy;
        let mut due = Vec::new();
        let fresh = std::mem::take(&mut st.fresh);
        for (id, avg) in fresh {
            let write = match st.written.get(&id) {
                None => true,
                Some((old, at)) => {
                    let age = now_ms.saturating_sub(*at);
                    let cpu_moved = old.cpu_percent_avg.abs_diff(avg.cpu_percent_avg) >= p.cpu_change_percent;
                    let mem_base = old.mem_bytes_used_avg.max(1);
                    let mem_moved = old.mem_bytes_used_avg.abs_diff(avg.mem_bytes_used_avg) * 1000 / mem_base
                        >= p.mem_change_permille;
                    *old != avg && (age >= p.max_interval_ms || (age >= p.min_interval_ms && (cpu_moved || mem_moved)))
                }
            };
            if write {
                st.written.insert(id, (avg, now_ms));
                due.push((id, avg));
            } else {
                // Keep the newest unwritten value for the next round.
                st.fresh.insert(id, avg);
            }
        }
        due
    }
}

/// The duty loop; runs for the node's lifetime and acts only while this node leads.
pub async fn run(
    node: NodeId,
    raft: crate::raft_types::Raft,
    shared: Arc<SharedState>,
    duties: Arc<Duties>,
    clock: Clock,
) {
    let mut retry_expire: Vec<(MemberId, u64)> = Vec::new();
    let mut led_term: Option<u64> = None;
    loop {
        let now_ms = clock.now_ms();
        let (leading, term) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader == Some(node) && raft.is_leader(), m.current_term)
        };
        // Leadership lost and won back between two ticks is a new term: grace again.
        let new_term = leading && led_term != Some(term);
        let mut to_expire = Vec::new();
        {
            let mut st = duties.lock();
            match (leading, st.liveness.is_leader() && !new_term) {
                (true, false) => {
                    led_term = Some(term);
                    let (members, revision) =
                        crate::storage::with_kernel(&shared, |sm| (sm.members().collect::<Vec<_>>(), sm.revision()));
                    tracing::info!(
                        node,
                        members = members.len(),
                        "became leader: every member gets a full timeout of grace"
                    );
                    st.liveness.handle_became_leader(now_ms, members);
                    st.synced_revision = revision;
                    st.fresh.clear();
                    st.written.clear();
                    retry_expire.clear();
                }
                (false, true) => {
                    led_term = None;
                    tracing::info!(node, "no longer leader: liveness judging stops");
                    st.liveness.handle_stepped_down();
                    retry_expire.clear();
                }
                _ => {}
            }
            if leading {
                sync_members(&mut st, &shared, now_ms);
                // A member heard since its expiry was decided is no longer pending: the
                // retry must not remove it (it kept heartbeating while the proposal waited).
                to_expire = std::mem::take(&mut retry_expire)
                    .into_iter()
                    .filter(|(member, _)| st.liveness.is_pending(*member))
                    .collect();
                if to_expire.len() < MAX_EXPIRE_BATCH {
                    let room = MAX_EXPIRE_BATCH - to_expire.len();
                    to_expire.extend(st.liveness.poll_expired_up_to(now_ms, room));
                }
            }
        }
        if leading && !to_expire.is_empty() {
            let names: Vec<String> = to_expire.iter().take(8).map(|(m, s)| format!("{m} (silent {s} ms)")).collect();
            let body = ProposalBody::Leader(LeaderCommand::Expire { members: to_expire.clone() });
            match propose(&raft, body).await {
                Ok(_) => tracing::info!(count = to_expire.len(), first = ?names, "members expired"),
                Err(e) => {
                    tracing::warn!(count = to_expire.len(), error = %e, "expiry not committed; will retry");
                    retry_expire = to_expire;
                }
            }
        }
        if leading {
            let due = duties.resources_due(now_ms);
            if !due.is_empty()
                && let Err(e) =
                    propose(&raft, ProposalBody::Leader(LeaderCommand::ReportResources { reports: due })).await
            {
                tracing::debug!(error = %e, "resource report not committed");
            }
        }
        let next = {
            let st = duties.lock();
            let now_ms = clock.now_ms();
            let mut wake = now_ms + TICK_MS;
            if let Some(t) = st.liveness.poll_timeout() {
                wake = wake.min(t.max(now_ms));
            }
            if !retry_expire.is_empty() {
                wake = now_ms + TICK_MS;
            }
            wake
        };
        clock.sleep_until_ms(next).await;
    }
}

/// Brings the tracker up to date with registrations and departures in the record.
fn sync_members(st: &mut DutyState, shared: &SharedState, now_ms: u64) {
    let since = st.synced_revision;
    let outcome = crate::storage::with_kernel(shared, |sm| match sm.events_after(since) {
        Ok(events) => {
            let changes: Vec<(MemberId, bool)> = events
                .filter_map(|e| match &e.kind {
                    EventKind::ServerRegistered(s) => Some((MemberId::Server(s.id), true)),
                    EventKind::ProcessRegistered(p) => Some((MemberId::Process(p.id), true)),
                    EventKind::Departed { member, .. } => Some((*member, false)),
                    _ => None,
                })
                .collect();
            Ok((changes, sm.revision()))
        }
        Err(_) => Err((sm.members().collect::<Vec<_>>(), sm.revision())),
    });
    match outcome {
        Ok((changes, revision)) => {
            for (member, added) in changes {
                if added {
                    st.liveness.handle_member_added(now_ms, member);
                } else {
                    st.liveness.handle_member_removed(member);
                }
            }
            st.synced_revision = revision;
        }
        Err((members, revision)) => {
            // History was compacted past us: start over from the record, with grace.
            tracing::warn!("liveness fell behind the event history; re-reading all members with grace");
            st.liveness.handle_became_leader(now_ms, members);
            st.synced_revision = revision;
        }
    }
}

/// Proposes through Raft, as an entry of its own, and waits for the result.
pub async fn propose(raft: &crate::raft_types::Raft, body: ProposalBody) -> Result<CommandResult, String> {
    let proposal = Proposal { at_unix_ms: crate::clock::unix_ms(), body };
    match raft.client_write(Batch::one(proposal)).await {
        Ok(resp) => resp.data.into_iter().next().ok_or_else(|| "the state machine gave no reply".to_string()),
        Err(e) => Err(e.to_string()),
    }
}
