//! Unit tests, one per rule and branch, and property tests of `LeaderDuties` against a
//! naive model, driven step by step with a plain record.

use super::*;
use crate::command::SessionOwner;
use crate::ids::{ProcessId, ServerId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

pub(super) const INTERVAL_MS: u64 = 100;
pub(super) const TIMEOUT_MS: u64 = 300;

pub(super) fn config(max_expire: usize) -> DutiesConfig {
    DutiesConfig {
        liveness: LivenessConfig { interval_ms: INTERVAL_MS, timeout_ms: TIMEOUT_MS },
        resources: ResourcePolicy {
            min_interval_ms: 200,
            max_interval_ms: 1_000,
            cpu_change_percent: 5,
            mem_change_permille: 50,
        },
        max_expire_per_proposal: max_expire,
        retry_delay_ms: RETRY_DELAY_MS,
        expiry_guard: crate::expiry_guard::ExpiryGuardConfig::default(),
    }
}

pub(super) fn p(n: u64) -> MemberId {
    MemberId::Process(ProcessId(n))
}

fn s(n: u64) -> MemberId {
    MemberId::Server(ServerId(n))
}

fn avg(cpu: u32, mem: u64) -> ResourceAverage {
    ResourceAverage { cpu_percent_avg: cpu, mem_bytes_used_avg: mem }
}

const HELD: Lease = Lease::Held;

pub(super) fn leader(term: u64) -> Role {
    Role::Leader { term, lease: HELD }
}

/// A record as plain as possible: a member set and a list of changes, of which those up
/// to `compacted_to` are gone.
#[derive(Clone, Debug, Default)]
pub(super) struct TestRecord {
    revision: u64,
    members: BTreeSet<MemberId>,
    changes: Vec<(u64, MemberId, bool)>,
    compacted_to: u64,
    resources: BTreeMap<MemberId, ResourceAverage>,
    cluster_id: Option<u64>,
    state_budget_bytes: u64,
}

impl TestRecord {
    pub(super) fn with(members: &[MemberId]) -> TestRecord {
        let mut r = TestRecord::default();
        for m in members {
            r.register(*m);
        }
        r
    }

    pub(super) fn register(&mut self, m: MemberId) {
        self.revision += 1;
        self.members.insert(m);
        self.changes.push((self.revision, m, true));
    }

    fn depart(&mut self, m: MemberId) {
        if self.members.remove(&m) {
            self.revision += 1;
            self.changes.push((self.revision, m, false));
            self.resources.remove(&m);
        }
    }

    fn compact(&mut self) {
        self.compacted_to = self.revision;
        self.changes.clear();
    }

    /// Applies a committed leader command, as the state machine would.
    pub(super) fn apply(&mut self, command: &LeaderCommand) {
        match command {
            LeaderCommand::Expire { members } => members.iter().for_each(|(m, _)| self.depart(*m)),
            LeaderCommand::ReportResources { reports } => {
                self.revision += 1;
                for (id, a) in reports {
                    if self.members.contains(&MemberId::Server(*id)) {
                        self.resources.insert(MemberId::Server(*id), *a);
                    }
                }
            }
            LeaderCommand::ReportMemberResources { reports } => {
                self.revision += 1;
                for (member, a) in reports {
                    if self.members.contains(member) {
                        self.resources.insert(*member, *a);
                    }
                }
            }
            LeaderCommand::SealCluster { id } => {
                self.revision += 1;
                self.cluster_id = self.cluster_id.or(Some(*id));
            }
            LeaderCommand::SetStateBudget { bytes } => {
                self.revision += 1;
                self.state_budget_bytes = *bytes;
            }
        }
    }
}

impl MemberRecord for TestRecord {
    fn revision(&self) -> u64 {
        self.revision
    }
    fn members(&self) -> Vec<MemberId> {
        self.members.iter().copied().collect()
    }
    fn contains_member(&self, member: MemberId) -> bool {
        self.members.contains(&member)
    }
    fn member_changes_after(&self, revision: u64) -> Result<Vec<(MemberId, bool)>, EventsCompacted> {
        if revision < self.compacted_to {
            return Err(EventsCompacted { requested: revision, oldest_available: self.compacted_to });
        }
        Ok(self.changes.iter().filter(|(r, _, _)| *r > revision).map(|(_, m, a)| (*m, *a)).collect())
    }
    fn recorded_resources(&self, member: MemberId) -> Option<ResourceAverage> {
        self.resources.get(&member).copied()
    }
    fn cluster_id(&self) -> Option<u64> {
        self.cluster_id
    }
    fn state_budget_bytes(&self) -> u64 {
        self.state_budget_bytes
    }
}

pub(super) fn expired(p: &DutyProposal) -> Vec<MemberId> {
    match &p.command {
        LeaderCommand::Expire { members } => members.iter().map(|(m, _)| *m).collect(),
        other => panic!("expected an expiry, got {other:?}"),
    }
}

fn drain(d: &mut LeaderDuties, now_ms: u64) -> Vec<DutyProposal> {
    std::iter::from_fn(|| d.poll_proposal(now_ms)).collect()
}

// ----- configuration -----

#[test]
fn config_errors_name_their_values() {
    let mut c = config(8);
    c.resources.min_interval_ms = 5_000;
    let e = LeaderDuties::new(c).unwrap_err();
    assert_eq!(e, DutiesConfigError::ResourceIntervals { min_interval_ms: 5_000, max_interval_ms: 1_000 });
    assert!(e.to_string().contains("5000") && e.to_string().contains("1000"));
    assert_eq!(LeaderDuties::new(config(0)).unwrap_err(), DutiesConfigError::ZeroExpiryBatch);
    let mut c = config(8);
    c.liveness.timeout_ms = 200;
    assert!(matches!(
        LeaderDuties::new(c),
        Err(DutiesConfigError::Liveness(LivenessConfigError::TimeoutTooShort { .. }))
    ));
}

// ----- the seal (rule 7) -----

fn sealed_with(p: &DutyProposal) -> Option<u64> {
    match p.command {
        LeaderCommand::SealCluster { id } => Some(id),
        _ => None,
    }
}

#[test]
fn a_leader_seals_an_unsealed_record_once_first_of_all() {
    let mut record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.offer_cluster_id(0xfeed);
    d.handle_tick(0, leader(1), &record);
    assert_eq!(d.poll_timeout(), Some(0));
    let seal = d.poll_proposal(0).expect("a seal");
    assert_eq!(sealed_with(&seal), Some(0xfeed));
    // One at a time: while it is in flight, nothing more is sealed (expiry goes on).
    let later = drain(&mut d, 1_000);
    assert!(later.iter().all(|p| sealed_with(p).is_none()), "{later:?}");
    record.apply(&seal.command);
    d.handle_proposal_result(1_000, seal.id, ProposalOutcome::Committed);
    d.handle_tick(1_000, leader(1), &record);
    // A later term finds the record sealed: nothing to do.
    d.handle_tick(2_000, leader(2), &record);
    assert!(drain(&mut d, 2_000).iter().all(|p| sealed_with(p).is_none()));
    assert_eq!(record.cluster_id, Some(0xfeed));
}

#[test]
fn a_failed_seal_is_retried_after_the_delay_and_none_without_an_offer_or_a_lease() {
    let record = TestRecord::with(&[]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    assert!(drain(&mut d, 0).is_empty(), "no offer, no seal");
    d.offer_cluster_id(7);
    d.handle_tick(10, Role::Leader { term: 1, lease: Lease::Lapsed }, &record);
    assert!(drain(&mut d, 10).is_empty(), "no seal without the lease");
    d.handle_tick(20, leader(1), &record);
    let seal = d.poll_proposal(20).expect("a seal");
    d.handle_proposal_result(30, seal.id, ProposalOutcome::Failed);
    assert!(d.poll_proposal(30 + RETRY_DELAY_MS - 1).is_none(), "retried before the delay");
    assert_eq!(d.poll_timeout(), Some(30 + RETRY_DELAY_MS));
    let again = d.poll_proposal(30 + RETRY_DELAY_MS).expect("retried");
    assert_eq!(sealed_with(&again), Some(7));
}

// ----- the budget (rule 8) -----

fn budget_of(p: &DutyProposal) -> Option<u64> {
    match p.command {
        LeaderCommand::SetStateBudget { bytes } => Some(bytes),
        _ => None,
    }
}

#[test]
fn a_leader_proposes_its_budget_after_the_seal_once_per_term_when_the_record_differs() {
    let mut record = TestRecord { state_budget_bytes: 100, ..TestRecord::with(&[p(1)]) };
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.offer_cluster_id(5);
    d.offer_state_budget(200);
    d.handle_tick(0, leader(1), &record);
    let seal = d.poll_proposal(0).expect("the seal first");
    assert_eq!(sealed_with(&seal), Some(5));
    assert!(drain(&mut d, 0).iter().all(|p| budget_of(p).is_none()), "the budget waits for the seal");
    record.apply(&seal.command);
    d.handle_proposal_result(1, seal.id, ProposalOutcome::Committed);
    d.handle_tick(1, leader(1), &record);
    let budget = d.poll_proposal(1).expect("the budget");
    assert_eq!(budget_of(&budget), Some(200));
    assert!(drain(&mut d, 1).iter().all(|p| budget_of(p).is_none()), "one at a time");
    record.apply(&budget.command);
    d.handle_proposal_result(2, budget.id, ProposalOutcome::Committed);
    d.handle_tick(2, leader(1), &record);
    assert!(drain(&mut d, 2).iter().all(|p| budget_of(p).is_none()), "proposed once");
    // Another leader's config took over meanwhile: the next term brings this one's back.
    record.apply(&LeaderCommand::SetStateBudget { bytes: 300 });
    d.handle_tick(3, leader(1), &record);
    assert!(drain(&mut d, 3).iter().all(|p| budget_of(p).is_none()), "once per term");
    d.handle_tick(4, leader(2), &record);
    assert_eq!(drain(&mut d, 4).iter().find_map(budget_of), Some(200));
}

#[test]
fn a_failed_budget_is_retried_after_the_delay_and_an_equal_one_never_proposed() {
    let record = TestRecord { state_budget_bytes: 100, ..TestRecord::with(&[]) };
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.offer_state_budget(100);
    d.handle_tick(0, leader(1), &record);
    assert!(drain(&mut d, 0).is_empty(), "equal: nothing to propose");
    d.offer_state_budget(150);
    d.handle_tick(10, leader(2), &record);
    let budget = d.poll_proposal(10).expect("a budget");
    d.handle_proposal_result(20, budget.id, ProposalOutcome::Failed);
    assert!(d.poll_proposal(20 + RETRY_DELAY_MS - 1).is_none(), "retried before the delay");
    assert_eq!(d.poll_timeout(), Some(20 + RETRY_DELAY_MS));
    assert_eq!(d.poll_proposal(20 + RETRY_DELAY_MS).as_ref().and_then(budget_of), Some(150));
}

#[test]
fn the_state_machine_keeps_the_first_seal() {
    let mut machine = ClusterStateMachine::new(crate::Limits::default());
    let seal =
        |id| crate::Proposal { at_unix_ms: 1, body: crate::ProposalBody::Leader(LeaderCommand::SealCluster { id }) };
    assert_eq!(machine.apply(&seal(11)), Ok(crate::Reply::Applied { count: 1, revision: 1 }));
    assert_eq!(machine.apply(&seal(12)), Ok(crate::Reply::Applied { count: 0, revision: 2 }), "the first seal stays");
    assert_eq!(MemberRecord::cluster_id(&machine), Some(11));
    let mut restored = ClusterStateMachine::restore(&machine.snapshot()).unwrap();
    assert_eq!(restored.cluster_id(), Some(11), "snapshots keep the id");
    restored.forget_cluster_id();
    assert_eq!(restored.cluster_id(), None);
}

// ----- role and grace -----

#[test]
fn a_follower_judges_nobody_and_answers_not_leader() {
    let record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, Role::Follower, &record);
    assert_eq!(d.handle_heartbeat(10, Role::Follower, p(1), None, &record), HeartbeatVerdict::NotLeader);
    assert!(drain(&mut d, 10_000).is_empty());
    assert_eq!(d.poll_timeout(), None);
    assert_eq!(d.heartbeat_age_ms(10, p(1)), None);
}

#[test]
fn a_new_leader_gives_every_member_a_full_timeout_of_grace() {
    let record = TestRecord::with(&[p(1), p(2)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(1_000, leader(1), &record);
    assert_eq!(d.poll_timeout(), Some(1_000 + TIMEOUT_MS + 1));
    assert!(drain(&mut d, 1_000 + TIMEOUT_MS).is_empty(), "expired within its grace");
    let got = drain(&mut d, 1_000 + TIMEOUT_MS + 1);
    assert_eq!(got.len(), 1);
    assert_eq!(expired(&got[0]), vec![p(1), p(2)]);
}

#[test]
fn leadership_lost_and_won_back_between_two_ticks_is_a_new_term_with_grace() {
    let record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(2), &record);
    // The driver never saw the follower phase: only the term number changed.
    d.handle_tick(250, leader(4), &record);
    assert_eq!(d.term(), Some(4));
    assert!(drain(&mut d, 301).is_empty(), "judged on the old term's grace");
    assert_eq!(d.poll_timeout(), Some(250 + TIMEOUT_MS + 1));
}

#[test]
fn stepping_down_forgets_everything_and_ignores_old_results() {
    let mut record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    let old = drain(&mut d, 400).pop().unwrap();
    d.handle_tick(410, Role::Follower, &record);
    assert_eq!(d.tracked_count(), 0);
    d.handle_tick(420, leader(3), &record);
    d.handle_proposal_result(430, old.id, ProposalOutcome::Failed);
    assert!(drain(&mut d, 500).is_empty(), "an old term's failure was retried");
    record.apply(&old.command);
    d.handle_tick(800, leader(3), &record);
    assert_eq!(d.tracked_count(), 0, "the old term's committed expiry arrives through the record");
}

// ----- heartbeats and the lease -----

#[test]
fn a_heartbeat_resets_the_timeout() {
    let record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    assert_eq!(d.handle_heartbeat(200, leader(1), p(1), None, &record), HeartbeatVerdict::Accepted);
    assert!(drain(&mut d, 450).is_empty());
    assert_eq!(d.heartbeat_age_ms(450, p(1)), Some(250));
    assert_eq!(expired(&drain(&mut d, 501)[0]), vec![p(1)]);
}

#[test]
fn a_heartbeat_from_outside_the_record_is_unknown() {
    let record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    let v = d.handle_heartbeat(0, leader(1), p(9), None, &record);
    assert_eq!(v, HeartbeatVerdict::UnknownMember(UnknownMember { member: p(9) }));
}

#[test]
fn a_heartbeat_racing_its_registration_is_accepted_once_it_is_applied() {
    let mut record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    record.register(p(2)); // applied, but the duties have not ticked since
    assert_eq!(d.handle_heartbeat(10, leader(1), p(2), None, &record), HeartbeatVerdict::Accepted);
}

#[test]
fn a_lapsed_lease_counts_heartbeats_sends_members_on_and_proposes_nothing() {
    let record = TestRecord::with(&[p(1), p(2)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    let lapsed = Role::Leader { term: 1, lease: Lease::Lapsed };
    d.handle_tick(0, leader(1), &record);
    assert_eq!(d.handle_heartbeat(100, lapsed, p(1), None, &record), HeartbeatVerdict::CountedSentOn);
    assert_eq!(d.handle_heartbeat(100, lapsed, p(9), None, &record), HeartbeatVerdict::CountedSentOn);
    assert_eq!(d.heartbeat_age_ms(150, p(1)), Some(50), "not counted");
    assert!(drain(&mut d, 2_000).is_empty(), "a leader without a quorum proposed");
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn a_lease_held_again_gives_grace_again() {
    let record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    d.handle_tick(100, Role::Leader { term: 1, lease: Lease::Lapsed }, &record);
    // A stall: nothing was heard for 2 s, but heartbeats may have gone to another node.
    d.handle_tick(2_100, leader(1), &record);
    assert!(drain(&mut d, 2_100).is_empty(), "expired members after a stall");
    assert_eq!(d.poll_timeout(), Some(2_100 + TIMEOUT_MS + 1));
}

// ----- expiry -----

#[test]
fn expiry_is_bounded_with_one_proposal_in_flight() {
    let members: Vec<MemberId> = (1..=7).map(p).collect();
    let record = TestRecord::with(&members);
    let mut d = LeaderDuties::new(config(3)).unwrap();
    d.handle_tick(0, leader(1), &record);
    let first = drain(&mut d, 400);
    assert_eq!(first.len(), 1, "more than one expiry in flight");
    assert_eq!(expired(&first[0]), vec![p(1), p(2), p(3)]);
    assert_eq!(d.poll_timeout(), None, "woke for an expiry it cannot propose yet");
    d.handle_proposal_result(410, first[0].id, ProposalOutcome::Committed);
    assert_eq!(expired(&drain(&mut d, 410)[0]), vec![p(4), p(5), p(6)]);
}

#[test]
fn a_committed_expiry_is_not_proposed_again_until_applied() {
    let mut record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    let e = drain(&mut d, 400).pop().unwrap();
    d.handle_proposal_result(405, e.id, ProposalOutcome::Committed);
    assert!(drain(&mut d, 5_000).is_empty());
    record.apply(&e.command);
    d.handle_tick(5_000, leader(1), &record);
    assert_eq!(d.tracked_count(), 0);
}

#[test]
fn a_failed_expiry_is_retried_without_the_members_heard_meanwhile() {
    let record = TestRecord::with(&[p(1), p(2)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    let e = drain(&mut d, 400).pop().unwrap();
    assert_eq!(expired(&e), vec![p(1), p(2)]);
    // p(1) kept heartbeating while the proposal waited.
    assert_eq!(d.handle_heartbeat(420, leader(1), p(1), None, &record), HeartbeatVerdict::Accepted);
    d.handle_proposal_result(430, e.id, ProposalOutcome::Failed);
    assert_eq!(d.poll_timeout(), Some(430 + RETRY_DELAY_MS));
    assert!(drain(&mut d, 430 + RETRY_DELAY_MS - 1).is_empty(), "retried before its delay");
    let retry = drain(&mut d, 430 + RETRY_DELAY_MS).pop().unwrap();
    match retry.command {
        LeaderCommand::Expire { members } => assert_eq!(members, vec![(p(2), 480)], "silence measured at the retry"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_compacted_history_is_read_again_with_grace() {
    let mut record = TestRecord::with(&[p(1)]);
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &record);
    record.depart(p(1));
    record.register(p(2));
    record.compact();
    d.handle_tick(200, leader(1), &record);
    assert_eq!(d.heartbeat_age_ms(200, p(1)), None, "a departed member is still tracked");
    assert_eq!(d.heartbeat_age_ms(200, p(2)), Some(0));
    assert_eq!(d.poll_timeout(), Some(200 + TIMEOUT_MS + 1));
}

#[test]
fn the_state_machine_is_a_member_record() {
    use crate::command::{Command, Proposal, ProposalBody, Reply, Request};
    use crate::model::{Labels, ProcessInfo};
    let mut sm = ClusterStateMachine::new(crate::state_machine::Limits::default());
    let session =
        match sm.apply(&Proposal { at_unix_ms: 1, body: ProposalBody::OpenSession { owner: SessionOwner::Node } }) {
            Ok(Reply::SessionOpened { session }) => session,
            other => panic!("{other:?}"),
        };
    let server_info = crate::model::ServerInfo {
        name: "s1".into(),
        raft_addr: "127.0.0.1:1".into(),
        api_addr: "127.0.0.1:1".into(),
        started_at_unix_ms: 0,
        cpu_capacity_percent: 100,
        mem_capacity_bytes: 1 << 30,
    };
    let body = ProposalBody::Client {
        request: Request { session, seq: 1, command: Command::RegisterServer { id: ServerId(1), info: server_info } },
        by: SessionOwner::Node,
    };
    sm.apply(&Proposal { at_unix_ms: 2, body }).unwrap();
    let mut d = LeaderDuties::new(config(8)).unwrap();
    d.handle_tick(0, leader(1), &sm);
    let info = ProcessInfo {
        name: "w".into(),
        server: ServerId(1),
        service_host: String::new(),
        service_port: None,
        started_at_unix_ms: 0,
        labels: Labels::default(),
        reserved: ResourceAverage::default(),
    };
    let body = ProposalBody::Client {
        request: Request { session, seq: 2, command: Command::RegisterProcess { info } },
        by: SessionOwner::Node,
    };
    let id = match sm.apply(&Proposal { at_unix_ms: 2, body }) {
        Ok(Reply::ProcessRegistered { id, .. }) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(d.handle_heartbeat(100, leader(1), MemberId::Process(id), None, &sm), HeartbeatVerdict::Accepted);
    let e = drain(&mut d, 401).pop().unwrap();
    assert_eq!(expired(&e), vec![s(1), MemberId::Process(id)]);
    sm.apply(&Proposal { at_unix_ms: 3, body: ProposalBody::Leader(e.command) }).unwrap();
    d.handle_tick(402, leader(1), &sm);
    assert_eq!(d.tracked_count(), 0);
    assert!(!sm.contains_member(MemberId::Process(id)));
}

// ----- resources -----

/// Duties whose members never time out within a test, so only resource writes come due.
fn resource_duties() -> LeaderDuties {
    let mut c = config(8);
    c.liveness.timeout_ms = 1_000_000;
    LeaderDuties::new(c).unwrap()
}

fn report(p: &DutyProposal) -> Vec<(MemberId, ResourceAverage)> {
    match &p.command {
        LeaderCommand::ReportMemberResources { reports } => reports.clone(),
        other => panic!("expected a resource report, got {other:?}"),
    }
}

#[test]
fn a_first_value_is_written_at_once_and_an_unchanged_one_never() {
    let record = TestRecord::with(&[s(1)]);
    let mut d = resource_duties();
    let _ = d.handle_heartbeat(0, leader(1), s(1), Some(avg(10, 1_000)), &record);
    let w = drain(&mut d, 0).pop().unwrap();
    assert_eq!(report(&w), vec![(s(1), avg(10, 1_000))]);
    d.handle_proposal_result(1, w.id, ProposalOutcome::Committed);
    let _ = d.handle_heartbeat(2, leader(1), s(1), Some(avg(10, 1_000)), &record);
    let _ = d.handle_heartbeat(90, leader(1), s(1), None, &record);
    assert!(drain(&mut d, 100_000).is_empty());
    assert_eq!(d.poll_timeout(), Some(90 + 1_000_000 + 1), "woke for an unchanged value");
}

#[test]
fn a_meaningful_change_waits_the_min_interval_and_a_small_one_the_max() {
    let record = TestRecord::with(&[s(1)]);
    let mut d = resource_duties();
    let _ = d.handle_heartbeat(0, leader(1), s(1), Some(avg(10, 1_000)), &record);
    let w = drain(&mut d, 0).pop().unwrap();
    d.handle_proposal_result(1, w.id, ProposalOutcome::Committed);
    let _ = d.handle_heartbeat(50, leader(1), s(1), Some(avg(12, 1_000)), &record);
    assert_eq!(d.poll_timeout(), Some(1_000), "a small change is due after the max interval");
    let _ = d.handle_heartbeat(60, leader(1), s(1), Some(avg(30, 1_000)), &record);
    assert_eq!(d.poll_timeout(), Some(200), "a meaningful change is due after the min interval");
    assert!(drain(&mut d, 199).is_empty());
    assert_eq!(report(&drain(&mut d, 200)[0]), vec![(s(1), avg(30, 1_000))]);
}

#[test]
fn a_failed_write_counts_against_the_rate_and_its_value_is_kept() {
    let record = TestRecord::with(&[s(1)]);
    let mut d = resource_duties();
    let _ = d.handle_heartbeat(0, leader(1), s(1), Some(avg(10, 1_000)), &record);
    let w = drain(&mut d, 0).pop().unwrap();
    d.handle_proposal_result(5, w.id, ProposalOutcome::Failed);
    assert_eq!(d.poll_timeout(), Some(200), "the failed first value is written again after the min interval");
    assert_eq!(report(&drain(&mut d, 200)[0]), vec![(s(1), avg(10, 1_000))]);
}

#[test]
fn a_new_leader_starts_from_the_values_the_record_holds() {
    let mut record = TestRecord::with(&[s(1)]);
    record.resources.insert(s(1), avg(10, 1_000));
    let mut d = resource_duties();
    let _ = d.handle_heartbeat(0, leader(1), s(1), Some(avg(10, 1_000)), &record);
    assert!(drain(&mut d, 0).is_empty(), "rewrote what the record holds");
    let _ = d.handle_heartbeat(10, leader(1), s(1), Some(avg(50, 1_000)), &record);
    assert!(drain(&mut d, 10).is_empty(), "wrote within the min interval of the tenure's start");
    assert_eq!(report(&drain(&mut d, 200)[0]), vec![(s(1), avg(50, 1_000))]);
}

#[test]
fn a_process_is_written_at_the_servers_rate() {
    let record = TestRecord::with(&[s(1), p(4)]);
    let mut d = resource_duties();
    let _ = d.handle_heartbeat(0, leader(1), p(4), Some(avg(10, 1_000)), &record);
    let w = drain(&mut d, 0).pop().unwrap();
    assert_eq!(report(&w), vec![(p(4), avg(10, 1_000))], "a process's first value is written at once");
    d.handle_proposal_result(1, w.id, ProposalOutcome::Committed);
    // Heartbeats every 10 ms with values that keep moving: at most one write per min interval.
    let mut writes = Vec::new();
    for now_ms in (10..=1_000).step_by(10) {
        let cpu = u32::try_from(now_ms / 10).unwrap() * 7 % 90;
        let _ = d.handle_heartbeat(now_ms, leader(1), p(4), Some(avg(cpu, 1_000)), &record);
        for w in drain(&mut d, now_ms) {
            writes.push(now_ms);
            d.handle_proposal_result(now_ms, w.id, ProposalOutcome::Committed);
        }
    }
    assert!(!writes.is_empty());
    let mut last = 0;
    for at in writes {
        assert!(at - last >= 200, "written {} ms after the last", at - last);
        last = at;
    }
}

#[test]
fn one_write_reports_at_most_the_bound_and_the_rest_next() {
    let n = MAX_RESOURCE_REPORTS_PER_PROPOSAL as u64 + 5;
    let members: Vec<MemberId> = (1..=n).map(p).collect();
    let record = TestRecord::with(&members);
    let mut d = resource_duties();
    for m in &members {
        let _ = d.handle_heartbeat(0, leader(1), *m, Some(avg(10, 1_000)), &record);
    }
    let first = drain(&mut d, 0);
    assert_eq!(first.len(), 1, "one resource write in flight");
    let first_reports = report(&first[0]);
    assert_eq!(first_reports.len(), MAX_RESOURCE_REPORTS_PER_PROPOSAL);
    assert_eq!(first_reports[0].0, p(1), "in id order");
    d.handle_proposal_result(1, first[0].id, ProposalOutcome::Committed);
    let rest = drain(&mut d, 1);
    assert_eq!(report(&rest[0]).iter().map(|(m, _)| *m).collect::<Vec<_>>(), (n - 4..=n).map(p).collect::<Vec<_>>());
}

// ----- properties against a naive model -----

#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    Heartbeat(u64),
    /// A heartbeat with resources, from a process or a server.
    ResourceBeat(u64, u32, u64),
    Register(u64),
    Deregister(u64),
    /// A new term: `true` skips one (leadership lost and won back unseen).
    NewTerm(bool),
    Resign,
    Lapse,
    Regain,
    /// A member registers unseen and the history is compacted past the leader.
    CompactUnseen(u64),
    /// The oldest outstanding proposal is resolved.
    Resolve(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u64..500).prop_map(Step::Advance),
        6 => (1u64..=8).prop_map(Step::Heartbeat),
        3 => (1u64..=8, 0u32..40, 1_000u64..1_200).prop_map(|(n, c, m)| Step::ResourceBeat(n, c, m)),
        2 => (1u64..=8).prop_map(Step::Register),
        1 => (1u64..=8).prop_map(Step::Deregister),
        1 => any::<bool>().prop_map(Step::NewTerm),
        1 => Just(Step::Resign),
        1 => Just(Step::Lapse),
        1 => Just(Step::Regain),
        1 => (1u64..=8).prop_map(Step::CompactUnseen),
        4 => any::<bool>().prop_map(Step::Resolve),
    ]
}

/// Members 1..=6 are processes, 7 and 8 the servers 1 and 2.
fn member(n: u64) -> MemberId {
    if n <= 6 { p(n) } else { s(n - 6) }
}

/// The rules, written as plainly as possible.
#[derive(Default)]
struct Model {
    term: u64,
    leading: bool,
    lease_held: bool,
    /// Per member in the record: when it was last heard, or its grace began.
    heard: BTreeMap<MemberId, u64>,
    /// Proposed for expiry in this term and neither failed nor heard since.
    proposed: BTreeSet<MemberId>,
    /// No expiry may be due before this (a failure's retry delay).
    retry_until: u64,
    /// Per member, this tenure: the last write's time, and the newest value heard and
    /// not yet proposed.
    last_write_ms: BTreeMap<MemberId, u64>,
    unwritten: BTreeMap<MemberId, ResourceAverage>,
}

impl Model {
    fn grace_all(&mut self, now_ms: u64, record: &TestRecord) {
        self.heard = record.members.iter().map(|m| (*m, now_ms)).collect();
        self.proposed.clear();
        self.retry_until = 0;
    }
}

fn role(m: &Model) -> Role {
    if !m.leading {
        Role::Follower
    } else {
        Role::Leader { term: m.term, lease: if m.lease_held { Lease::Held } else { Lease::Lapsed } }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// - a member heard within the timeout (after the current grace) is never proposed;
    /// - a member silent past the timeout is proposed at the first poll that may, and
    ///   once per term until it is heard again or its proposal fails;
    /// - resource writes per member (server or process) are at least `min_interval_ms`
    ///   apart in a tenure, and
    ///   a change is written as soon as the policy allows;
    /// - every heartbeat gets the verdict the role and the record call for.
    #[test]
    fn matches_naive_model(steps in proptest::collection::vec(step(), 1..120)) {
        let cfg = config(3);
        let policy = cfg.resources;
        let mut d = LeaderDuties::new(cfg).unwrap();
        let mut record = TestRecord::with(&[member(1), member(2), member(7)]);
        let mut m = Model::default();
        let mut now_ms = 0u64;
        let mut outstanding: Vec<(u64, DutyProposal)> = Vec::new();
        let mut resource_outstanding = false;
        let mut expiry_outstanding = false;
        for step in steps {
            match step {
                Step::Advance(ms) => now_ms += ms,
                Step::Heartbeat(n) | Step::ResourceBeat(n, ..) => {
                    let (member, resources) = match step {
                        Step::ResourceBeat(n, cpu, mem) => (member(n), Some(avg(cpu, mem))),
                        _ => (member(n), None),
                    };
                    let verdict = d.handle_heartbeat(now_ms, role(&m), member, resources, &record);
                    let known = record.members.contains(&member);
                    let want = match (m.leading, m.lease_held, known) {
                        (false, _, _) => HeartbeatVerdict::NotLeader,
                        (true, false, _) => HeartbeatVerdict::CountedSentOn,
                        (true, true, true) => HeartbeatVerdict::Accepted,
                        (true, true, false) => HeartbeatVerdict::UnknownMember(UnknownMember { member }),
                    };
                    prop_assert_eq!(verdict, want);
                    if m.leading && known {
                        m.heard.insert(member, now_ms);
                        m.proposed.remove(&member);
                        if let Some(a) = resources {
                            m.unwritten.insert(member, a);
                        }
                    }
                }
                Step::Register(n) => {
                    if !record.members.contains(&member(n)) {
                        record.register(member(n));
                        if m.leading {
                            m.heard.insert(member(n), now_ms);
                        }
                    }
                }
                Step::Deregister(n) => {
                    record.depart(member(n));
                    m.heard.remove(&member(n));
                    m.proposed.remove(&member(n));
                    m.unwritten.remove(&member(n));
                    m.last_write_ms.remove(&member(n));
                }
                Step::NewTerm(skip) => {
                    m.term += if skip { 2 } else { 1 };
                    m.leading = true;
                    m.lease_held = true;
                    m.grace_all(now_ms, &record);
                    m.unwritten.clear();
                    m.last_write_ms = record.resources.keys().map(|id| (*id, now_ms)).collect();
                    // Results of the old term's proposals no longer matter to this one.
                    outstanding.clear();
                    expiry_outstanding = false;
                    resource_outstanding = false;
                }
                Step::Resign => {
                    m.leading = false;
                    m.heard.clear();
                    m.proposed.clear();
                    outstanding.clear();
                    expiry_outstanding = false;
                    resource_outstanding = false;
                }
                Step::Lapse => m.lease_held = false,
                Step::Regain => {
                    if m.leading && !m.lease_held {
                        m.grace_all(now_ms, &record);
                    }
                    m.lease_held = true;
                }
                Step::CompactUnseen(n) => {
                    if !record.members.contains(&member(n)) {
                        record.register(member(n));
                        record.compact();
                        if m.leading {
                            m.grace_all(now_ms, &record);
                        }
                    }
                }
                Step::Resolve(ok) => {
                    if !outstanding.is_empty() {
                        let (_, prop) = outstanding.remove(0);
                        let outcome = if ok { ProposalOutcome::Committed } else { ProposalOutcome::Failed };
                        match &prop.command {
                            LeaderCommand::Expire { members } => {
                                expiry_outstanding = false;
                                if ok {
                                    record.apply(&prop.command);
                                    for (mm, _) in members {
                                        m.heard.remove(mm);
                                        m.proposed.remove(mm);
                                    }
                                } else {
                                    for (mm, _) in members {
                                        m.proposed.remove(mm);
                                    }
                                    m.retry_until = now_ms + RETRY_DELAY_MS;
                                }
                            }
                            LeaderCommand::SealCluster { .. } | LeaderCommand::SetStateBudget { .. } => {
                                unreachable!("never proposed below")
                            }
                            LeaderCommand::ReportMemberResources { reports } => {
                                resource_outstanding = false;
                                if ok {
                                    record.apply(&prop.command);
                                } else {
                                    for (mm, a) in reports {
                                        if record.members.contains(mm) {
                                            m.unwritten.entry(*mm).or_insert(*a);
                                        }
                                    }
                                }
                            }
                            LeaderCommand::ReportResources { .. } => {
                                prop_assert!(false, "a leader writes resources as ReportMemberResources");
                            }
                        }
                        d.handle_proposal_result(now_ms, prop.id, outcome);
                    }
                }
            }
            d.handle_tick(now_ms, role(&m), &record);
            // Departures applied to the record (committed expiries) reach the model too.
            m.heard.retain(|mm, _| record.members.contains(mm));
            m.unwritten.retain(|mm, _| record.members.contains(mm));
            m.last_write_ms.retain(|mm, _| record.members.contains(mm));
            while let Some(prop) = d.poll_proposal(now_ms) {
                prop_assert!(m.leading && m.lease_held, "proposed without a held lease: {:?}", prop);
                match &prop.command {
                    LeaderCommand::Expire { members } => {
                        prop_assert!(!expiry_outstanding, "two expiries in flight");
                        prop_assert!(members.len() <= 3);
                        for (mm, silent) in members {
                            let heard = *m.heard.get(mm).expect("proposed a member outside the record");
                            prop_assert!(now_ms - heard > TIMEOUT_MS, "{} proposed {} ms after it was heard", mm, now_ms - heard);
                            prop_assert_eq!(*silent, now_ms - heard);
                            prop_assert!(m.proposed.insert(*mm), "{} proposed twice in term {}", mm, m.term);
                        }
                        expiry_outstanding = true;
                    }
                    LeaderCommand::SealCluster { .. } => prop_assert!(false, "sealed without an offer"),
                    LeaderCommand::SetStateBudget { .. } => prop_assert!(false, "a budget without an offer"),
                    LeaderCommand::ReportResources { .. } => {
                        prop_assert!(false, "a leader writes resources as ReportMemberResources");
                    }
                    LeaderCommand::ReportMemberResources { reports } => {
                        prop_assert!(!resource_outstanding, "two resource writes in flight");
                        for (id, a) in reports {
                            if let Some(last) = m.last_write_ms.get(id) {
                                prop_assert!(now_ms - last >= policy.min_interval_ms, "{} written {} ms after the last", id, now_ms - last);
                            }
                            prop_assert_eq!(m.unwritten.remove(id), Some(*a), "wrote a value not heard");
                            m.last_write_ms.insert(*id, now_ms);
                        }
                        resource_outstanding = true;
                    }
                }
                outstanding.push((now_ms, prop));
            }
            if m.leading && m.lease_held {
                if !expiry_outstanding && now_ms >= m.retry_until {
                    for (mm, heard) in &m.heard {
                        prop_assert!(now_ms - heard <= TIMEOUT_MS || m.proposed.contains(mm),
                            "{} silent for {} ms and not proposed", mm, now_ms - heard);
                    }
                }
                if !resource_outstanding {
                    for (id, a) in &m.unwritten {
                        let recorded = record.resources.get(id).copied();
                        if recorded == Some(*a) {
                            continue;
                        }
                        let wait = match recorded {
                            Some(old) if !policy.is_meaningful(old, *a) => policy.max_interval_ms,
                            _ => policy.min_interval_ms,
                        };
                        let due = m.last_write_ms.get(id).is_none_or(|last| now_ms - last >= wait);
                        prop_assert!(!due, "{} value {:?} due and not written", id, a);
                    }
                }
            }
        }
    }
}
