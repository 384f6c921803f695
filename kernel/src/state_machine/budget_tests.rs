//! The byte budget (`budget.rs`): refusals that name the budget and its parts, writes
//! that pass whatever the bytes, the caps on history and stored replies, and property
//! tests that the running count is a recount, that a refusal changes nothing, and that a
//! restored machine refuses exactly what the original does.

use super::{ClusterStateMachine, ITEM_OVERHEAD_BYTES, Limits, StateBytes};
use crate::command::{
    Command, CommandError, CommandResult, LeaderCommand, ProcessPatch, Proposal, ProposalBody, Reply, Request,
    SessionOwner,
};
use crate::ids::{MemberId, ProcessId, ServerId, SessionId};
use crate::model::{Labels, ProcessInfo, ResourceAverage, ServerInfo};
use proptest::prelude::*;
use std::collections::BTreeMap;

const BUDGET: u64 = 6_000;

/// Limits whose budget a few dozen small writes fill.
fn budget_limits() -> Limits {
    Limits {
        max_sessions: 16,
        max_servers: 3,
        max_processes: 20,
        max_kv_keys: 200,
        max_key_bytes: 8,
        max_value_bytes: 64,
        max_name_bytes: 8,
        max_labels: 4,
        max_label_bytes: 8,
        tombstone_max_count: 8,
        tombstone_max_age_ms: 10_000,
        event_history: 64,
        session_idle_ms: 60_000,
        state_budget_bytes: BUDGET,
    }
}

/// A machine with sessions that each send commands in sequence.
struct Driver {
    machine: ClusterStateMachine,
    /// Open sessions and their last sequence.
    sessions: Vec<(SessionId, u64)>,
    now_ms: u64,
}

impl Driver {
    fn new() -> Self {
        let mut driver = Driver { machine: ClusterStateMachine::new(budget_limits()), sessions: Vec::new(), now_ms: 1 };
        driver.open();
        driver
    }

    fn open_proposal(&self) -> Proposal {
        Proposal { at_unix_ms: self.now_ms, body: ProposalBody::OpenSession { owner: SessionOwner::Node } }
    }

    fn open(&mut self) -> SessionId {
        match self.machine.apply(&self.open_proposal()) {
            Ok(Reply::SessionOpened { session }) => {
                self.sessions.push((session, 0));
                session
            }
            other => panic!("open failed: {other:?}"),
        }
    }

    /// The next command of session number `which` (modulo the open ones).
    fn client_proposal(&mut self, which: usize, command: Command) -> Proposal {
        let slot = which % self.sessions.len();
        let (session, seq) = &mut self.sessions[slot];
        *seq += 1;
        let request = Request { session: *session, seq: *seq, command };
        Proposal { at_unix_ms: self.now_ms, body: ProposalBody::Client { request, by: SessionOwner::Node } }
    }

    fn run(&mut self, command: Command) -> CommandResult {
        let proposal = self.client_proposal(0, command);
        self.machine.apply(&proposal)
    }

    fn leader(&mut self, command: LeaderCommand) -> CommandResult {
        self.machine.apply(&Proposal { at_unix_ms: self.now_ms, body: ProposalBody::Leader(command) })
    }
}

fn put(key: &str, value_len: usize) -> Command {
    Command::KvPut { key: key.to_string(), value: "v".repeat(value_len) }
}

fn server_info() -> ServerInfo {
    ServerInfo {
        name: "s".to_string(),
        raft_addr: "h:1".to_string(),
        api_addr: "h:2".to_string(),
        started_at_unix_ms: 0,
        cpu_capacity_percent: 400,
        mem_capacity_bytes: 1 << 30,
    }
}

fn process_info(labels: Labels) -> ProcessInfo {
    ProcessInfo {
        name: "p".to_string(),
        server: ServerId(1),
        service_host: "h".to_string(),
        service_port: None,
        started_at_unix_ms: 0,
        labels,
        reserved: ResourceAverage::default(),
    }
}

fn labels(count: usize) -> Labels {
    (0..count).map(|i| (format!("k{i}"), "vvvvvvvv".to_string())).collect()
}

/// Puts 64-byte values under new keys until one is refused; returns that refusal.
fn fill(driver: &mut Driver) -> CommandError {
    for i in 0.. {
        match driver.run(put(&format!("k{i}"), 64)) {
            Ok(_) => {}
            Err(error) => return error,
        }
    }
    unreachable!("the loop ends at the first refusal")
}

/// Everything a refusal must leave as it was: the records and the bytes of each part
/// but the stored replies.
fn contents(machine: &ClusterStateMachine) -> (Vec<(String, String)>, Vec<crate::model::ProcessEntry>, StateBytes) {
    let kv = machine.kv_range("", None, u32::MAX).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let processes = machine.processes().cloned().collect();
    let bytes = StateBytes { replies: 0, ..machine.state_bytes() };
    (kv, processes, bytes)
}

#[test]
fn a_put_past_the_budget_is_refused_naming_the_budget_and_what_uses_it() {
    let mut driver = Driver::new();
    let revision_before = driver.machine.revision();
    let error = fill(&mut driver);
    let CommandError::OverBudget { budget_bytes, used, needed_bytes } = &error else {
        panic!("expected OverBudget, got {error:?}");
    };
    assert_eq!(*budget_bytes, BUDGET);
    // A new key of 64 bytes: its entry and its event.
    let entry = ITEM_OVERHEAD_BYTES + 2 + 64;
    assert!(*needed_bytes >= 2 * entry, "{needed_bytes}");
    assert!(used.total() + needed_bytes > BUDGET && used.total() <= BUDGET, "{used:?}");
    assert!(used.kv > 0 && used.events > 0 && used.replies > 0, "{used:?}");
    let message = error.to_string();
    for part in [
        format!("{BUDGET}-byte budget"),
        format!("{} of the", used.total()),
        format!("kv {} B", used.kv),
        format!("events {} B", used.events),
        format!("replies {} B", used.replies),
        "labels 0 B".to_string(),
        "state_budget_bytes".to_string(),
    ] {
        assert!(message.contains(&part), "{message:?} lacks {part:?}");
    }
    assert!(driver.machine.state_usage().alarm, "a refused largest-size write means the alarm is on");
    assert!(driver.machine.revision() > revision_before);
}

#[test]
fn a_refused_write_changes_nothing_but_the_revision_and_its_stored_reply() {
    let mut driver = Driver::new();
    fill(&mut driver);
    let before = contents(&driver.machine);
    let revision = driver.machine.revision();
    let reply = driver.run(put("new", 64));
    assert!(matches!(reply, Err(CommandError::OverBudget { .. })), "{reply:?}");
    assert_eq!(contents(&driver.machine), before);
    assert_eq!(driver.machine.revision(), revision + 1);
    assert_eq!(driver.machine.kv_get("new"), None);
    assert_eq!(driver.machine.check_invariants(), Ok(()));
}

#[test]
fn deletes_deregistrations_expiries_and_heartbeats_pass_over_the_budget_and_writes_go_on() {
    let mut driver = Driver::new();
    assert!(driver.run(Command::RegisterServer { id: ServerId(1), info: server_info() }).is_ok());
    let mut processes = Vec::new();
    for _ in 0..3 {
        match driver.run(Command::RegisterProcess { info: process_info(labels(2)) }) {
            Ok(Reply::ProcessRegistered { id, .. }) => processes.push(id),
            other => panic!("{other:?}"),
        }
    }
    fill(&mut driver);
    // Over the budget, not merely at it: the deletes' own events and replies add bytes.
    assert!(matches!(driver.run(put("new", 64)), Err(CommandError::OverBudget { .. })));
    let registration = driver.run(Command::RegisterProcess { info: process_info(labels(4)) });
    assert!(matches!(registration, Err(CommandError::OverBudget { .. })), "{registration:?}");
    let label =
        ProcessPatch { labels: BTreeMap::from([("new".to_string(), Some("v".repeat(8)))]), ..Default::default() };
    let patch = driver.run(Command::PutProcess { id: processes[0], patch: label.clone() });
    assert!(matches!(patch, Err(CommandError::OverBudget { .. })), "{patch:?}");

    let status = ProcessPatch { status: Some(crate::model::MemberStatus::Draining), ..Default::default() };
    let passing = [
        driver.run(Command::PutProcess { id: processes[0], patch: status }),
        driver.run(Command::RegisterServer { id: ServerId(1), info: server_info() }),
        driver.run(Command::SetDrained { id: ServerId(1), drained: true }),
        driver.leader(LeaderCommand::ReportMemberResources {
            reports: vec![(
                MemberId::Process(processes[1]),
                ResourceAverage { cpu_percent_avg: 5, mem_bytes_used_avg: 1 },
            )],
        }),
        driver.run(Command::KvDelete { key: "k0".to_string() }),
        driver.run(Command::KvCas { key: "k1".to_string(), expected: Some("v".repeat(64)), new: None }),
        driver.run(Command::DeregisterProcess { id: processes[0], exit_status: Some(0) }),
        driver.run(Command::Delete { member: MemberId::Process(processes[1]) }),
        driver.leader(LeaderCommand::Expire { members: vec![(MemberId::Process(processes[2]), 5_000)] }),
    ];
    for (i, reply) in passing.iter().enumerate() {
        assert!(reply.is_ok(), "command {i} was refused: {reply:?}");
    }
    assert_eq!(driver.machine.process_count(), 0);
    assert_eq!(driver.machine.state_bytes().labels, 0, "departed processes take their labels along");
    // Two keys and three processes' labels freed: writes go on.
    assert!(driver.run(put("new", 64)).is_ok());
    assert_eq!(driver.machine.check_invariants(), Ok(()));
}

#[test]
fn the_event_history_is_bounded_in_bytes_and_drops_the_oldest_first() {
    let mut driver = Driver::new();
    let cap = budget_limits().event_history_bytes();
    // Overwrite one key: the store stays small while its events pile up.
    for i in 0..100 {
        assert!(driver.run(put("k", 60 + i % 4)).is_ok());
    }
    let bytes = driver.machine.state_bytes();
    assert!(bytes.events <= cap && bytes.events + 2 * (ITEM_OVERHEAD_BYTES + 65) > cap, "{bytes:?}");
    let revision = driver.machine.revision();
    let held: Vec<u64> =
        driver.machine.events_after(revision - 5).expect("the newest are held").map(|e| e.revision).collect();
    assert_eq!(held, (revision - 4..=revision).collect::<Vec<_>>());
    assert!(driver.machine.events_after(1).is_err(), "the oldest were dropped");
    assert!(driver.machine.state_bytes().events <= cap);
}

#[test]
fn stored_replies_are_bounded_in_bytes_by_dropping_the_least_recently_used_session() {
    let mut driver = Driver::new();
    assert!(driver.run(put("k", 64)).is_ok());
    let cap = budget_limits().session_reply_bytes();
    // A failed swap stores the current value in its reply.
    let reply_bytes = ITEM_OVERHEAD_BYTES + 64;
    let sessions = (cap / reply_bytes + 1) as usize;
    assert!(sessions < budget_limits().max_sessions, "the count bound is not what evicts here");
    for _ in 1..sessions {
        driver.open();
    }
    let failed_swap = Command::KvCas { key: "k".to_string(), expected: None, new: Some("x".to_string()) };
    for which in 0..sessions {
        let proposal = driver.client_proposal(which, failed_swap.clone());
        assert!(matches!(driver.machine.apply(&proposal), Ok(Reply::Cas { swapped: false, .. })));
    }
    assert!(driver.machine.state_bytes().replies <= cap);
    assert_eq!(driver.machine.session_count(), sessions - 1, "the first session was dropped");
    // Its retry is told it may have applied, never given another command's reply.
    let (first, seq) = driver.sessions[0];
    let retry = Request { session: first, seq, command: failed_swap };
    let reply = driver.machine.apply(&Proposal {
        at_unix_ms: driver.now_ms,
        body: ProposalBody::Client { request: retry, by: SessionOwner::Node },
    });
    assert_eq!(reply, Err(CommandError::SessionExpired(first)));
}

#[test]
fn the_leader_sets_the_budget_and_a_smaller_one_drops_the_oldest_events_and_sessions() {
    let mut driver = Driver::new();
    for i in 0..40 {
        assert!(driver.run(put(&format!("k{i}"), 64)).is_ok() || i > 20);
    }
    let before = driver.machine.state_bytes();
    let min = budget_limits().min_state_budget_bytes();
    // A budget the limits cannot run with changes nothing.
    let refused = driver.leader(LeaderCommand::SetStateBudget { bytes: min - 1 });
    assert!(matches!(refused, Ok(Reply::Applied { count: 0, .. })), "{refused:?}");
    assert_eq!(driver.machine.state_budget_bytes(), BUDGET);
    let set = driver.leader(LeaderCommand::SetStateBudget { bytes: min });
    assert!(matches!(set, Ok(Reply::Applied { count: 1, .. })), "{set:?}");
    assert_eq!(driver.machine.state_budget_bytes(), min);
    let after = driver.machine.state_bytes();
    assert!(after.events <= min / 4 && after.events < before.events, "{before:?} -> {after:?}");
    assert_eq!(after.kv, before.kv, "a smaller budget refuses writes, it deletes nothing");
    assert_eq!(driver.machine.check_invariants(), Ok(()));
    assert!(
        matches!(driver.run(put("more", 64)), Err(CommandError::OverBudget { budget_bytes, .. }) if budget_bytes == min)
    );
    // Raised again, writes go on; snapshots keep the budget.
    assert!(driver.leader(LeaderCommand::SetStateBudget { bytes: 4 * BUDGET }).is_ok());
    assert!(driver.run(put("more", 64)).is_ok());
    let restored = ClusterStateMachine::restore(&driver.machine.snapshot()).expect("restores");
    assert_eq!(restored.state_budget_bytes(), 4 * BUDGET);
}

#[test]
fn a_budget_under_the_limits_minimum_is_refused_by_check() {
    let limits = Limits { state_budget_bytes: budget_limits().min_state_budget_bytes() - 1, ..budget_limits() };
    assert!(limits.check().is_err());
}

// ----- properties -----

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        value_len: usize,
    },
    Delete {
        key: u8,
    },
    /// A swap that expects the current value (or, with `stale`, another one).
    Cas {
        key: u8,
        stale: bool,
        new_len: Option<usize>,
    },
    Register {
        labels: usize,
    },
    Deregister {
        which: usize,
    },
    Label {
        which: usize,
        key: u8,
        value_len: Option<usize>,
    },
    Expire {
        which: usize,
    },
    Open,
    Audit,
    /// The leader's `LeaderCommand::SetStateBudget`.
    Budget {
        bytes: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..80, 16usize..=64).prop_map(|(key, value_len)| Op::Put { key, value_len }),
        2 => (0u8..80).prop_map(|key| Op::Delete { key }),
        2 => (0u8..80, any::<bool>(), proptest::option::of(0usize..=64))
            .prop_map(|(key, stale, new_len)| Op::Cas { key, stale, new_len }),
        2 => (0usize..=4).prop_map(|labels| Op::Register { labels }),
        1 => any::<usize>().prop_map(|which| Op::Deregister { which }),
        2 => (any::<usize>(), 0u8..6, proptest::option::of(0usize..=8))
            .prop_map(|(which, key, value_len)| Op::Label { which, key, value_len }),
        1 => any::<usize>().prop_map(|which| Op::Expire { which }),
        1 => Just(Op::Open),
        1 => Just(Op::Audit),
        1 => prop_oneof![Just(4_000u64), Just(4_288), Just(5_000), Just(BUDGET), Just(9_000)]
            .prop_map(|bytes| Op::Budget { bytes }),
    ]
}

/// Commands that must pass whatever the bytes.
fn always_passes(op: &Op) -> bool {
    matches!(
        op,
        Op::Delete { .. }
            | Op::Deregister { .. }
            | Op::Expire { .. }
            | Op::Open
            | Op::Audit
            | Op::Budget { .. }
            | Op::Cas { new_len: None, .. }
            | Op::Label { value_len: None, .. }
    )
}

fn nth_process(machine: &ClusterStateMachine, which: usize) -> Option<ProcessId> {
    let count = machine.process_count();
    (count > 0).then(|| machine.processes().nth(which % count).map(|entry| entry.id)).flatten()
}

/// The proposal for `op`, with the session it uses picked by `which`.
fn proposal(driver: &mut Driver, op: &Op, which: usize) -> Proposal {
    let key = |k: u8| format!("k{k}");
    let command = match op {
        Op::Put { key: k, value_len } => put(&key(*k), *value_len),
        Op::Delete { key: k } => Command::KvDelete { key: key(*k) },
        Op::Cas { key: k, stale, new_len } => {
            let current = driver.machine.kv_get(&key(*k)).map(str::to_string);
            let expected = if *stale { Some("stale".to_string()) } else { current };
            Command::KvCas { key: key(*k), expected, new: new_len.map(|n| "n".repeat(n)) }
        }
        Op::Register { labels: count } => Command::RegisterProcess { info: process_info(labels(*count)) },
        Op::Deregister { which } | Op::Label { which, .. } | Op::Expire { which } => {
            let Some(id) = nth_process(&driver.machine, *which) else {
                return Proposal {
                    at_unix_ms: driver.now_ms,
                    body: ProposalBody::Leader(LeaderCommand::Expire { members: vec![] }),
                };
            };
            match op {
                Op::Deregister { .. } => Command::DeregisterProcess { id, exit_status: None },
                Op::Label { key: k, value_len, .. } => {
                    let value = value_len.map(|n| "l".repeat(n));
                    let patch =
                        ProcessPatch { labels: BTreeMap::from([(format!("k{k}"), value)]), ..Default::default() };
                    Command::PutProcess { id, patch }
                }
                _ => {
                    let members = vec![(MemberId::Process(id), 5_000)];
                    return Proposal {
                        at_unix_ms: driver.now_ms,
                        body: ProposalBody::Leader(LeaderCommand::Expire { members }),
                    };
                }
            }
        }
        Op::Open => return driver.open_proposal(),
        Op::Budget { bytes } => {
            let command = LeaderCommand::SetStateBudget { bytes: *bytes };
            return Proposal { at_unix_ms: driver.now_ms, body: ProposalBody::Leader(command) };
        }
        Op::Audit => {
            let record =
                crate::command::AuditRecord { by: "admin".into(), role: "admin".into(), action: "a".repeat(40) };
            return Proposal { at_unix_ms: driver.now_ms, body: ProposalBody::Audit(record) };
        }
    };
    driver.client_proposal(which, command)
}

fn setup() -> Driver {
    let mut driver = Driver::new();
    assert!(driver.run(Command::RegisterServer { id: ServerId(1), info: server_info() }).is_ok());
    driver
}

/// Notes a session opened by `proposal`'s reply.
fn follow(driver: &mut Driver, reply: &CommandResult) {
    if let Ok(Reply::SessionOpened { session }) = reply {
        driver.sessions.push((*session, 0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_running_count_is_a_recount_and_a_refusal_changes_nothing(
        ops in proptest::collection::vec((op(), any::<usize>()), 1..250),
    ) {
        let mut driver = setup();
        for (op, which) in &ops {
            let before = contents(&driver.machine);
            let used_before = driver.machine.state_bytes();
            let proposal = proposal(&mut driver, op, *which);
            let reply = driver.machine.apply(&proposal);
            follow(&mut driver, &reply);
            // check_invariants recounts every part from scratch and compares.
            prop_assert_eq!(driver.machine.check_invariants(), Ok(()));
            prop_assert_eq!(driver.machine.recount_state_bytes(), Ok(driver.machine.state_bytes()));
            let limits = driver.machine.limits();
            prop_assert!(driver.machine.state_bytes().events <= limits.event_history_bytes());
            prop_assert!(driver.machine.state_bytes().replies <= limits.session_reply_bytes());
            if let Err(CommandError::OverBudget { budget_bytes, used, needed_bytes }) = &reply {
                prop_assert!(!always_passes(op), "{:?} was refused", op);
                prop_assert_eq!(*budget_bytes, driver.machine.state_budget_bytes());
                prop_assert_eq!(*used, used_before);
                prop_assert!(used.total() + needed_bytes > *budget_bytes);
                prop_assert_eq!(contents(&driver.machine), before, "a refusal changed the state");
            }
        }
    }

    #[test]
    fn a_restored_machine_and_a_replay_refuse_exactly_what_the_original_does(
        before in proptest::collection::vec((op(), any::<usize>()), 0..200),
        after in proptest::collection::vec((op(), any::<usize>()), 1..80),
    ) {
        // The log is recorded, replayed into a fresh machine, and the original is also
        // snapshotted and restored midway: all three give the same replies and bytes.
        let mut driver = setup();
        let mut log = Vec::new();
        for (op, which) in &before {
            let proposal = proposal(&mut driver, op, *which);
            let reply = driver.machine.apply(&proposal);
            follow(&mut driver, &reply);
            log.push(proposal);
        }
        let mut restored = ClusterStateMachine::restore(&driver.machine.snapshot()).expect("own snapshot restores");
        prop_assert_eq!(restored.state_bytes(), driver.machine.state_bytes());
        for (op, which) in &after {
            let proposal = proposal(&mut driver, op, *which);
            let reply = driver.machine.apply(&proposal);
            follow(&mut driver, &reply);
            prop_assert_eq!(&restored.apply(&proposal), &reply);
            prop_assert_eq!(restored.state_bytes(), driver.machine.state_bytes());
            log.push(proposal);
        }
        prop_assert_eq!(restored.snapshot(), driver.machine.snapshot());
        let mut replay = setup().machine;
        // `setup` applied the same opening proposals; the rest replay from the log.
        for proposal in &log {
            let _ = replay.apply(proposal);
        }
        prop_assert_eq!(replay.snapshot(), driver.machine.snapshot());
    }
}

#[test]
fn the_generator_reaches_the_budget() {
    // Guards the property tests: random runs do fill the budget and get refusals.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec((op(), any::<usize>()), 200);
    let mut runs_refused = 0;
    for _ in 0..20 {
        let ops = proptest::strategy::ValueTree::current(&strategy.new_tree(&mut runner).unwrap());
        let mut driver = setup();
        let mut refused = false;
        for (op, which) in &ops {
            let proposal = proposal(&mut driver, op, *which);
            let reply = driver.machine.apply(&proposal);
            follow(&mut driver, &reply);
            refused |= matches!(reply, Err(CommandError::OverBudget { .. }));
        }
        runs_refused += usize::from(refused);
    }
    assert!(runs_refused >= 5, "only {runs_refused} of 20 runs reached the budget");
}
