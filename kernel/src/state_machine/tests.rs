//! Unit tests: one per refusal path, and the rules that deserve a worked example.

use super::{ClusterStateMachine, Limits, SnapshotError};
use crate::command::{
    Command, CommandError, CommandResult, LeaderCommand, ListFilter, MemberKind, ProcessPatch, Proposal, ProposalBody,
    Query, Reply, Request, ServerPatch, SessionOwner, TokenId,
};
use crate::event::EventKind;
use crate::ids::{MemberId, ProcessId, ServerId, SessionId};
use crate::model::{Departure, Labels, MemberStatus, ProcessInfo, ResourceAverage, ServerInfo, TombstoneSubject};
use crate::query::QueryResult;

fn limits() -> Limits {
    Limits {
        max_sessions: 3,
        max_servers: 2,
        max_processes: 2,
        max_kv_keys: 2,
        max_key_bytes: 4,
        max_value_bytes: 4,
        max_name_bytes: 6,
        max_labels: 2,
        max_label_bytes: 3,
        tombstone_max_count: 3,
        tombstone_max_age_ms: 1_000,
        event_history: 5,
        session_idle_ms: 60_000,
        // Never reached here: budget.rs's tests hit it.
        state_budget_bytes: 1 << 30,
    }
}

/// A machine with one client session, proposing at a clock the test moves.
struct Client {
    machine: ClusterStateMachine,
    session: SessionId,
    seq: u64,
    now_ms: u64,
}

impl Client {
    fn new() -> Self {
        Self::with(limits())
    }

    fn with(limits: Limits) -> Self {
        let mut machine = ClusterStateMachine::new(limits);
        let session = open(&mut machine, 0);
        Client { machine, session, seq: 0, now_ms: 0 }
    }

    fn run(&mut self, command: Command) -> CommandResult {
        self.seq += 1;
        self.send(self.seq, command)
    }

    fn send(&mut self, seq: u64, command: Command) -> CommandResult {
        let request = Request { session: self.session, seq, command };
        let proposal =
            Proposal { at_unix_ms: self.now_ms, body: ProposalBody::Client { request, by: SessionOwner::Node } };
        self.machine.apply(&proposal)
    }

    fn leader(&mut self, command: LeaderCommand) -> CommandResult {
        let proposal = Proposal { at_unix_ms: self.now_ms, body: ProposalBody::Leader(command) };
        self.machine.apply(&proposal)
    }

    fn register_server(&mut self, id: u64) {
        let reply = self.run(Command::RegisterServer { id: ServerId(id), info: server_info("s") });
        assert!(reply.is_ok(), "{reply:?}");
    }

    fn register_process(&mut self, server: u64) -> ProcessId {
        match self.run(Command::RegisterProcess { info: process_info("p", server) }) {
            Ok(Reply::ProcessRegistered { id, .. }) => id,
            other => panic!("registration failed: {other:?}"),
        }
    }
}

fn open(machine: &mut ClusterStateMachine, at_unix_ms: u64) -> SessionId {
    let proposal = Proposal { at_unix_ms, body: ProposalBody::OpenSession { owner: SessionOwner::Node } };
    match machine.apply(&proposal) {
        Ok(Reply::SessionOpened { session }) => session,
        other => panic!("open failed: {other:?}"),
    }
}

fn server_info(name: &str) -> ServerInfo {
    ServerInfo {
        name: name.to_string(),
        raft_addr: "h:1".to_string(),
        api_addr: "h:2".to_string(),
        started_at_unix_ms: 0,
        cpu_capacity_percent: 400,
        mem_capacity_bytes: 1 << 30,
    }
}

fn process_info(name: &str, server: u64) -> ProcessInfo {
    ProcessInfo {
        name: name.to_string(),
        server: ServerId(server),
        service_host: "h".to_string(),
        service_port: Some(80),
        started_at_unix_ms: 0,
        labels: Labels::new(),
        reserved: ResourceAverage::default(),
    }
}

fn too_large(what: &str, len: usize, max: usize) -> CommandResult {
    Err(CommandError::TooLarge { what: what.to_string(), len, max })
}

fn empty(field: &str) -> CommandResult {
    Err(CommandError::InvalidField { field: field.to_string(), reason: "must not be empty".to_string() })
}

fn table_full(what: &str, count: usize) -> CommandResult {
    Err(CommandError::TableFull { what: what.to_string(), count })
}

fn kv_put(key: &str, value: &str) -> Command {
    Command::KvPut { key: key.to_string(), value: value.to_string() }
}

// ----- sessions -----

#[test]
fn sessions_get_increasing_ids() {
    let mut machine = ClusterStateMachine::new(limits());
    assert_eq!(open(&mut machine, 0), SessionId(1));
    assert_eq!(open(&mut machine, 0), SessionId(2));
    assert_eq!(machine.revision(), 2);
}

#[test]
fn duplicate_returns_the_stored_reply_without_applying_again() {
    let mut client = Client::new();
    let first = client.run(kv_put("a", "1"));
    let revision = client.machine.revision();
    let events = client.machine.events_after(0).unwrap().count();
    // A retry of the same (session, seq) is answered from the session table and changes
    // nothing; another command under the same pair is refused, never told it applied.
    assert_eq!(client.send(1, kv_put("a", "1")), first);
    assert_eq!(client.send(1, kv_put("a", "2")), Err(CommandError::SequenceReused { session: SessionId(1), seq: 1 }));
    assert_eq!(client.machine.revision(), revision);
    assert_eq!(client.machine.events_after(0).unwrap().count(), events);
    assert_eq!(client.machine.kv_get("a"), Some("1"));
}

#[test]
fn stale_sequence_is_refused() {
    let mut client = Client::new();
    client.run(Command::Noop).unwrap();
    client.run(Command::Noop).unwrap();
    let revision = client.machine.revision();
    assert_eq!(
        client.send(1, Command::Noop),
        Err(CommandError::StaleSequence { session: client.session, seq: 1, last: 2 })
    );
    assert_eq!(client.machine.revision(), revision);
}

#[test]
fn sequence_gap_is_refused() {
    let mut client = Client::new();
    assert_eq!(
        client.send(2, Command::Noop),
        Err(CommandError::SequenceGap { session: client.session, seq: 2, last: 0 })
    );
    assert_eq!(client.machine.revision(), 1);
}

#[test]
fn sequence_zero_is_refused() {
    let mut client = Client::new();
    assert_eq!(
        client.send(0, Command::Noop),
        Err(CommandError::InvalidField { field: "seq".to_string(), reason: "sequence numbers start at 1".to_string() })
    );
}

#[test]
fn unknown_session_is_refused() {
    let mut client = Client::new();
    client.session = SessionId(99);
    assert_eq!(client.run(Command::Noop), Err(CommandError::UnknownSession(SessionId(99))));
    assert_eq!(client.machine.revision(), 1);
}

#[test]
fn full_session_table_evicts_the_least_recently_used() {
    let mut machine = ClusterStateMachine::new(limits());
    let a = open(&mut machine, 0);
    let b = open(&mut machine, 0);
    let c = open(&mut machine, 0);
    // a is used after b and c were opened, so b is now the least recently used.
    let noop = |session, seq| Proposal {
        at_unix_ms: 0,
        body: ProposalBody::Client {
            request: Request { session, seq, command: Command::Noop },
            by: SessionOwner::Node,
        },
    };
    machine.apply(&noop(a, 1)).unwrap();
    let d = open(&mut machine, 0);
    assert_eq!(machine.session_count(), 3);
    // b existed: a request on it may be a retry of a command that applied.
    assert_eq!(machine.apply(&noop(b, 1)), Err(CommandError::SessionExpired(b)));
    assert_eq!(machine.apply(&noop(SessionId(99), 1)), Err(CommandError::UnknownSession(SessionId(99))));
    assert_eq!(machine.session_last_seq(a), Some(1));
    assert_eq!(machine.session_last_seq(c), Some(0));
    assert_eq!(machine.session_last_seq(d), Some(0));
    // Next goes c (opened before d, unused since).
    open(&mut machine, 0);
    assert_eq!(machine.session_last_seq(c), None);
    assert_eq!(machine.session_last_seq(a), Some(1));
}

#[test]
fn a_retried_registration_stamped_later_is_the_same_request() {
    let mut client = Client::new();
    // `client.run` sends sequence 1 on session 1.
    let register = |name: &str, started_at_unix_ms| Command::RegisterProcess {
        info: ProcessInfo { started_at_unix_ms, ..process_info(name, 1) },
    };
    client.run(Command::RegisterServer { id: ServerId(1), info: server_info("s") }).unwrap();
    let first = client.run(register("p", 1_000));
    assert!(matches!(first, Ok(Reply::ProcessRegistered { .. })), "{first:?}");
    // The HTTP API stamps "now" when the caller gives no start time: a retry made later
    // carries another one, and is still the same request.
    assert_eq!(client.send(2, register("p", 2_000)), first);
    assert_eq!(
        client.send(2, register("q", 1_000)),
        Err(CommandError::SequenceReused { session: SessionId(1), seq: 2 }),
        "another name is another request"
    );
}

#[test]
fn an_idle_session_expires_and_a_retry_on_it_is_told_it_may_have_applied() {
    let mut machine = ClusterStateMachine::new(limits());
    let idle = limits().session_idle_ms;
    let a = open(&mut machine, 0);
    let b = open(&mut machine, 0);
    let put = |session, seq, at_unix_ms| Proposal {
        at_unix_ms,
        body: ProposalBody::Client {
            request: Request { session, seq, command: Command::KvPut { key: "k".into(), value: "v".into() } },
            by: SessionOwner::Node,
        },
    };
    machine.apply(&put(a, 1, 10)).unwrap();
    // b is used just within its idle time; a stays silent past it.
    machine.apply(&put(b, 1, idle)).unwrap();
    machine.apply(&put(b, 2, idle + 11)).unwrap();
    assert_eq!(machine.session_last_seq(a), None, "idle past {idle} ms");
    assert_eq!(machine.session_last_seq(b), Some(2));
    let retry = machine.apply(&put(a, 1, idle + 12));
    assert_eq!(retry, Err(CommandError::SessionExpired(a)));
    assert!(retry.unwrap_err().to_string().contains("may have applied"));
}

#[test]
fn a_session_serves_only_the_credential_that_opened_it() {
    let mut machine = ClusterStateMachine::new(limits());
    let (owner, stranger) = (SessionOwner::Token(TokenId(3)), SessionOwner::Token(TokenId(4)));
    let opened = machine.apply(&Proposal { at_unix_ms: 0, body: ProposalBody::OpenSession { owner } });
    let Ok(Reply::SessionOpened { session }) = opened else { panic!("open failed: {opened:?}") };
    let put = |value: &str, by| Proposal {
        at_unix_ms: 0,
        body: ProposalBody::Client {
            request: Request { session, seq: 1, command: Command::KvPut { key: "k".into(), value: value.into() } },
            by,
        },
    };
    for by in [stranger, SessionOwner::Bootstrap, SessionOwner::Node] {
        assert_eq!(machine.apply(&put("x", by)), Err(CommandError::NotYourSession(session)), "{by}");
    }
    assert_eq!(machine.session_last_seq(session), Some(0), "a stranger's command moves nothing");
    let applied = machine.apply(&put("v", owner)).unwrap();
    let revision = machine.revision();
    // The owner's retry gets the stored reply; a stranger's copy of it gets nothing, not
    // even the reply.
    assert_eq!(machine.apply(&put("v", owner)), Ok(applied.clone()));
    assert_eq!(machine.apply(&put("v", stranger)), Err(CommandError::NotYourSession(session)));
    assert_eq!(machine.revision(), revision);
    // The owner is kept by snapshots.
    let mut restored = ClusterStateMachine::restore(&machine.snapshot()).unwrap();
    assert_eq!(restored.apply(&put("v", stranger)), Err(CommandError::NotYourSession(session)));
    assert_eq!(restored.apply(&put("v", owner)), Ok(applied.clone()));
}

#[test]
fn a_closed_session_is_gone_for_good_and_only_its_owner_closes_it() {
    let mut client = Client::new();
    client.run(Command::KvPut { key: "k".into(), value: "v".into() }).unwrap();
    let session = client.session;
    let close = |by| Proposal { at_unix_ms: 0, body: ProposalBody::CloseSession { session, by } };
    let revision = client.machine.revision();
    assert_eq!(client.machine.apply(&close(SessionOwner::Bootstrap)), Err(CommandError::NotYourSession(session)));
    assert_eq!(client.machine.revision(), revision, "a refused close changes nothing");
    assert_eq!(client.machine.apply(&close(SessionOwner::Node)), Ok(Reply::Done { revision: revision + 1 }));
    assert_eq!(client.machine.session_last_seq(session), None);
    // A retry of its last command, or of the close, cannot be matched any more.
    assert_eq!(
        client.send(1, Command::KvPut { key: "k".into(), value: "v".into() }),
        Err(CommandError::SessionExpired(session))
    );
    assert_eq!(client.machine.apply(&close(SessionOwner::Node)), Err(CommandError::SessionExpired(session)));
    assert_eq!(client.machine.check_invariants(), Ok(()));
}

#[test]
fn a_refusal_is_the_stored_reply_even_after_the_state_changes() {
    let mut client = Client::new();
    let refused = client.run(Command::RegisterProcess { info: process_info("p", 7) });
    assert_eq!(refused, Err(CommandError::UnknownServer(ServerId(7))));
    // Another session registers server 7; the retry still gets the original refusal.
    let other = open(&mut client.machine, 0);
    let register = Request {
        session: other,
        seq: 1,
        command: Command::RegisterServer { id: ServerId(7), info: server_info("s") },
    };
    let proposal = Proposal { at_unix_ms: 0, body: ProposalBody::Client { request: register, by: SessionOwner::Node } };
    client.machine.apply(&proposal).unwrap();
    assert_eq!(client.send(1, Command::RegisterProcess { info: process_info("p", 7) }), refused);
    assert_eq!(client.machine.process_count(), 0);
}

#[test]
fn refused_commands_still_advance_the_revision() {
    let mut client = Client::new();
    let before = client.machine.revision();
    assert!(client.run(Command::DeregisterServer { id: ServerId(1) }).is_err());
    assert_eq!(client.machine.revision(), before + 1);
}

// ----- refusals, one per path -----

#[test]
fn unknown_members_are_refused() {
    let mut client = Client::new();
    let server = MemberId::Server(ServerId(1));
    let process = MemberId::Process(ProcessId(1));
    assert_eq!(client.run(Command::DeregisterServer { id: ServerId(1) }), Err(CommandError::UnknownMember(server)));
    assert_eq!(
        client.run(Command::DeregisterProcess { id: ProcessId(1), exit_status: Some(0) }),
        Err(CommandError::UnknownMember(process))
    );
    assert_eq!(
        client.run(Command::PutServer { id: ServerId(1), patch: ServerPatch::default(), create: None }),
        Err(CommandError::UnknownMember(server))
    );
    assert_eq!(
        client.run(Command::PutProcess { id: ProcessId(1), patch: ProcessPatch::default() }),
        Err(CommandError::UnknownMember(process))
    );
    assert_eq!(client.run(Command::Delete { member: server }), Err(CommandError::UnknownMember(server)));
    assert_eq!(client.run(Command::Delete { member: process }), Err(CommandError::UnknownMember(process)));
}

#[test]
fn process_on_unknown_server_is_refused() {
    let mut client = Client::new();
    assert_eq!(
        client.run(Command::RegisterProcess { info: process_info("p", 3) }),
        Err(CommandError::UnknownServer(ServerId(3)))
    );
}

#[test]
fn oversized_server_fields_are_refused() {
    let mut client = Client::new();
    let id = ServerId(1);
    let mut info = server_info("s");
    info.name = "x".repeat(7);
    assert_eq!(client.run(Command::RegisterServer { id, info }), too_large("server name", 7, 6));
    let mut info = server_info("s");
    info.raft_addr = "x".repeat(8);
    assert_eq!(client.run(Command::RegisterServer { id, info }), too_large("raft_addr", 8, 6));
    let mut info = server_info("s");
    info.api_addr = "x".repeat(9);
    assert_eq!(client.run(Command::RegisterServer { id, info }), too_large("api_addr", 9, 6));
    let patch = ServerPatch { name: Some("x".repeat(7)), ..ServerPatch::default() };
    assert_eq!(client.run(Command::PutServer { id, patch, create: None }), too_large("server name", 7, 6));
    let mut create = server_info("s");
    create.api_addr = "x".repeat(7);
    let patch = ServerPatch::default();
    assert_eq!(client.run(Command::PutServer { id, patch, create: Some(create) }), too_large("api_addr", 7, 6));
    assert_eq!(client.machine.server_count(), 0);
}

#[test]
fn empty_names_are_refused() {
    let mut client = Client::new();
    assert_eq!(client.run(Command::RegisterServer { id: ServerId(1), info: server_info("") }), empty("server name"));
    client.register_server(1);
    assert_eq!(client.run(Command::RegisterProcess { info: process_info("", 1) }), empty("process name"));
    let id = client.register_process(1);
    let patch = ProcessPatch { name: Some(String::new()), ..ProcessPatch::default() };
    assert_eq!(client.run(Command::PutProcess { id, patch }), empty("process name"));
}

#[test]
fn oversized_process_fields_are_refused() {
    let mut client = Client::new();
    client.register_server(1);
    let mut info = process_info("p", 1);
    info.name = "x".repeat(7);
    assert_eq!(client.run(Command::RegisterProcess { info }), too_large("process name", 7, 6));
    let mut info = process_info("p", 1);
    info.service_host = "x".repeat(7);
    assert_eq!(client.run(Command::RegisterProcess { info }), too_large("service_host", 7, 6));
    let mut info = process_info("p", 1);
    info.labels.insert("long".to_string(), "v".to_string());
    assert_eq!(client.run(Command::RegisterProcess { info }), too_large("label key", 4, 3));
    let mut info = process_info("p", 1);
    info.labels.insert("k".to_string(), "long".to_string());
    assert_eq!(client.run(Command::RegisterProcess { info }), too_large("label value", 4, 3));
    let mut info = process_info("p", 1);
    info.labels.insert(String::new(), "v".to_string());
    assert_eq!(client.run(Command::RegisterProcess { info }), empty("label key"));
    let mut info = process_info("p", 1);
    for key in ["a", "b", "c"] {
        info.labels.insert(key.to_string(), "v".to_string());
    }
    assert_eq!(client.run(Command::RegisterProcess { info }), too_large("labels", 3, 2));
    assert_eq!(client.machine.process_count(), 0);
}

#[test]
fn process_patch_is_checked_against_the_labels_it_merges_into() {
    let mut client = Client::new();
    client.register_server(1);
    let mut info = process_info("p", 1);
    info.labels.insert("a".to_string(), "1".to_string());
    info.labels.insert("b".to_string(), "1".to_string());
    let Ok(Reply::ProcessRegistered { id, .. }) = client.run(Command::RegisterProcess { info }) else {
        panic!("registration failed");
    };
    let label = |key: &str, value: Option<&str>| (key.to_string(), value.map(str::to_string));
    // Adding a third label is refused ...
    let patch = ProcessPatch { labels: [label("c", Some("1"))].into(), ..Default::default() };
    assert_eq!(client.run(Command::PutProcess { id, patch }), too_large("labels", 3, 2));
    // ... but not when another is removed in the same patch.
    let patch = ProcessPatch { labels: [label("c", Some("1")), label("a", None)].into(), ..Default::default() };
    assert!(client.run(Command::PutProcess { id, patch }).is_ok());
    let labels = &client.machine.get_process(id).unwrap().info.labels;
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["b", "c"]);
    let patch = ProcessPatch { labels: [label("b", Some("long"))].into(), ..Default::default() };
    assert_eq!(client.run(Command::PutProcess { id, patch }), too_large("label value", 4, 3));
    let patch = ProcessPatch { service_host: Some("x".repeat(9)), ..Default::default() };
    assert_eq!(client.run(Command::PutProcess { id, patch }), too_large("service_host", 9, 6));
}

#[test]
fn oversized_and_empty_keys_and_values_are_refused() {
    let mut client = Client::new();
    assert_eq!(client.run(kv_put("", "v")), empty("key"));
    assert_eq!(client.run(kv_put("kkkkk", "v")), too_large("key", 5, 4));
    assert_eq!(client.run(kv_put("k", "vvvvv")), too_large("value", 5, 4));
    assert_eq!(client.run(Command::KvDelete { key: String::new() }), empty("key"));
    let cas = Command::KvCas { key: "k".to_string(), expected: None, new: Some("vvvvv".into()) };
    assert_eq!(client.run(cas), too_large("value", 5, 4));
    assert_eq!(client.machine.kv_len(), 0);
}

#[test]
fn full_tables_are_refused() {
    let mut client = Client::new();
    client.register_server(1);
    client.register_server(2);
    assert_eq!(
        client.run(Command::RegisterServer { id: ServerId(3), info: server_info("s") }),
        table_full("servers", 2)
    );
    let create = Some(server_info("s"));
    let patch = ServerPatch::default();
    assert_eq!(client.run(Command::PutServer { id: ServerId(3), patch, create }), table_full("servers", 2));
    // Re-registering a known server still works at the limit.
    client.register_server(2);
    client.register_process(1);
    client.register_process(1);
    assert_eq!(client.run(Command::RegisterProcess { info: process_info("p", 1) }), table_full("processes", 2));
    client.run(kv_put("a", "1")).unwrap();
    client.run(kv_put("b", "1")).unwrap();
    assert_eq!(client.run(kv_put("c", "1")), table_full("kv keys", 2));
    let cas = Command::KvCas { key: "c".to_string(), expected: None, new: Some("1".into()) };
    assert_eq!(client.run(cas), table_full("kv keys", 2));
    // Overwriting an existing key is fine at the limit.
    client.run(kv_put("a", "2")).unwrap();
    assert_eq!(client.machine.kv_get("a"), Some("2"));
}

// ----- commands -----

#[test]
fn register_server_twice_updates_it() {
    let mut client = Client::new();
    client.register_server(1);
    let patch = ServerPatch { status: Some(MemberStatus::Draining), ..Default::default() };
    client.run(Command::PutServer { id: ServerId(1), patch, create: None }).unwrap();
    client.run(Command::RegisterServer { id: ServerId(1), info: server_info("again") }).unwrap();
    let entry = client.machine.get_server(ServerId(1)).unwrap();
    assert_eq!(entry.status, MemberStatus::Online);
    assert_eq!(entry.info.name, "again");
    assert_eq!((entry.registered_rev, entry.updated_rev), (2, 4));
    let kinds: Vec<_> = client.machine.events_after(0).unwrap().map(|e| e.kind).collect();
    assert!(matches!(kinds[0], EventKind::ServerRegistered(_)));
    assert!(matches!(kinds[1], EventKind::ServerUpdated(_)));
    assert!(matches!(kinds[2], EventKind::ServerUpdated(_)));
}

#[test]
fn a_drain_outlives_a_restart_and_ends_only_by_undrain() {
    let mut client = Client::new();
    assert_eq!(
        client.run(Command::SetDrained { id: ServerId(1), drained: true }),
        Err(CommandError::UnknownMember(MemberId::Server(ServerId(1))))
    );
    client.register_server(1);
    let drain = Command::SetDrained { id: ServerId(1), drained: true };
    let revision = match client.run(drain.clone()).unwrap() {
        Reply::Done { revision } => revision,
        other => panic!("expected Done, got {other:?}"),
    };
    assert!(client.machine.get_server(ServerId(1)).unwrap().drained);
    assert_eq!(client.machine.get_server(ServerId(1)).unwrap().updated_rev, revision);
    // Draining twice changes nothing and says nothing.
    let events_before = client.machine.events_after(0).unwrap().count();
    client.run(drain).unwrap();
    assert_eq!(client.machine.events_after(0).unwrap().count(), events_before);
    // A restart re-registers the server online, still drained; so does a status patch.
    client.run(Command::RegisterServer { id: ServerId(1), info: server_info("again") }).unwrap();
    let patch = ServerPatch { status: Some(MemberStatus::Online), ..Default::default() };
    client.run(Command::PutServer { id: ServerId(1), patch, create: None }).unwrap();
    let entry = client.machine.get_server(ServerId(1)).unwrap();
    assert_eq!((entry.status, entry.drained), (MemberStatus::Online, true));
    let restored = ClusterStateMachine::restore(&client.machine.snapshot()).unwrap();
    assert!(restored.get_server(ServerId(1)).unwrap().drained, "the flag is in snapshots");
    client.run(Command::SetDrained { id: ServerId(1), drained: false }).unwrap();
    assert!(!client.machine.get_server(ServerId(1)).unwrap().drained);
    let last = client.machine.events_after(0).unwrap().last().unwrap();
    assert!(matches!(last.kind, EventKind::ServerUpdated(ref e) if !e.drained));
}

#[test]
fn put_server_creates_only_when_asked_and_merges_otherwise() {
    let mut client = Client::new();
    let patch = ServerPatch { cpu_capacity_percent: Some(800), ..Default::default() };
    let create = Some(server_info("s"));
    client.run(Command::PutServer { id: ServerId(5), patch: patch.clone(), create }).unwrap();
    let entry = client.machine.get_server(ServerId(5)).unwrap().clone();
    assert_eq!(entry.info.cpu_capacity_percent, 800);
    assert_eq!(entry.info.name, "s");
    // A patch that sets what is already there changes nothing and emits nothing.
    let events = client.machine.events_after(0).unwrap().count();
    client.run(Command::PutServer { id: ServerId(5), patch, create: None }).unwrap();
    assert_eq!(client.machine.get_server(ServerId(5)), Some(&entry));
    assert_eq!(client.machine.events_after(0).unwrap().count(), events);
}

#[test]
fn processes_outlive_their_server_record() {
    let mut client = Client::new();
    client.register_server(1);
    let process = client.register_process(1);
    client.run(Command::DeregisterServer { id: ServerId(1) }).unwrap();
    assert!(client.machine.get_process(process).is_some());
    assert_eq!(client.machine.members().collect::<Vec<_>>(), [MemberId::Process(process)]);
}

#[test]
fn deregistered_process_leaves_its_exit_status() {
    let mut client = Client::new();
    client.register_server(1);
    let id = client.register_process(1);
    client.now_ms = 42;
    client.run(Command::DeregisterProcess { id, exit_status: Some(3) }).unwrap();
    let tombstone = client.machine.tombstones().next().unwrap().clone();
    assert_eq!(tombstone.departure, Departure::Deregistered { exit_status: Some(3) });
    assert_eq!(tombstone.left_at_unix_ms, 42);
    assert!(matches!(tombstone.subject, TombstoneSubject::Process(ref p) if p.id == id));
    let last = client.machine.events_after(client.machine.revision() - 1).unwrap().last();
    let expected = EventKind::Departed { member: MemberId::Process(id), tombstone };
    assert_eq!(last.map(|e| e.kind), Some(expected));
}

#[test]
fn expire_removes_present_members_and_counts_only_them() {
    let mut client = Client::new();
    client.register_server(1);
    let process = client.register_process(1);
    let members = vec![
        (MemberId::Process(process), 3_000),
        (MemberId::Process(ProcessId(77)), 3_000),
        (MemberId::Server(ServerId(1)), 4_000),
        (MemberId::Server(ServerId(1)), 4_000),
    ];
    let reply = client.leader(LeaderCommand::Expire { members }).unwrap();
    let revision = client.machine.revision();
    assert_eq!(reply, Reply::Applied { count: 2, revision });
    assert_eq!(client.machine.members().count(), 0);
    let departures: Vec<_> = client.machine.tombstones().map(|t| t.departure.clone()).collect();
    assert_eq!(departures, [Departure::Expired { silent_for_ms: 4_000 }, Departure::Expired { silent_for_ms: 3_000 }]);
    // Both departures are events of the same revision.
    let events: Vec<_> = client.machine.events_after(revision - 1).unwrap().collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.revision == revision));
}

#[test]
fn report_resources_sets_known_servers_only() {
    let mut client = Client::new();
    client.register_server(1);
    let average = ResourceAverage { cpu_percent_avg: 150, mem_bytes_used_avg: 1 << 20 };
    let reports = vec![(ServerId(1), average), (ServerId(9), average)];
    let reply = client.leader(LeaderCommand::ReportResources { reports: reports.clone() });
    assert_eq!(reply, Ok(Reply::Applied { count: 1, revision: client.machine.revision() }));
    assert_eq!(client.machine.get_server(ServerId(1)).unwrap().resources, Some(average));
    // The same report again: counted, but nothing changed, so no event.
    let revision = client.machine.revision();
    client.leader(LeaderCommand::ReportResources { reports }).unwrap();
    assert_eq!(client.machine.events_after(revision).unwrap().count(), 0);
}

#[test]
fn compare_and_swap() {
    let mut client = Client::new();
    let cas = |expected: Option<&str>, new: Option<&str>| Command::KvCas {
        key: "k".to_string(),
        expected: expected.map(str::to_string),
        new: new.map(str::to_string),
    };
    let reply = client.run(cas(None, Some("1"))).unwrap();
    assert!(matches!(reply, Reply::Cas { swapped: true, current: None, .. }));
    let reply = client.run(cas(None, Some("2"))).unwrap();
    assert!(matches!(reply, Reply::Cas { swapped: false, current: Some(ref v), .. } if v == "1"));
    let reply = client.run(cas(Some("1"), None)).unwrap();
    assert!(matches!(reply, Reply::Cas { swapped: true, current: Some(ref v), .. } if v == "1"));
    assert_eq!(client.machine.kv_get("k"), None);
}

// ----- queries -----

#[test]
fn list_filters_by_kind_server_status_and_labels() {
    let mut client = Client::new();
    client.register_server(1);
    client.register_server(2);
    let mut info = process_info("p", 1);
    info.labels.insert("app".to_string(), "web".to_string());
    let Ok(Reply::ProcessRegistered { id: web, .. }) = client.run(Command::RegisterProcess { info }) else {
        panic!("registration failed");
    };
    let other = client.register_process(2);
    let ids = |filter: ListFilter| {
        let (servers, processes) = client.machine.list(&filter);
        let mut ids: Vec<MemberId> = servers.iter().map(|s| MemberId::Server(s.id)).collect();
        ids.extend(processes.iter().map(|p| MemberId::Process(p.id)));
        ids
    };
    let s = |id| MemberId::Server(ServerId(id));
    let p = MemberId::Process;
    assert_eq!(ids(ListFilter::default()), [s(1), s(2), p(web), p(other)]);
    let by_server = ListFilter { server: Some(ServerId(1)), ..Default::default() };
    assert_eq!(ids(by_server.clone()), [s(1), p(web)]);
    let processes_only = ListFilter { kind: Some(MemberKind::Process), ..by_server };
    assert_eq!(ids(processes_only), [p(web)]);
    let labelled = ListFilter { labels: [("app".to_string(), "web".to_string())].into(), ..Default::default() };
    assert_eq!(ids(labelled), [p(web)]);
    let draining = ListFilter { status: Some(MemberStatus::Draining), ..Default::default() };
    assert_eq!(ids(draining), []);
    let reply = client.machine.query(&Query::List { filter: ListFilter::default(), after: None, limit: 10 });
    assert_eq!(reply.revision, client.machine.revision());
}

/// Every page of `filter` at page size `limit`, through the query as a caller sends it.
fn all_pages(machine: &ClusterStateMachine, filter: &ListFilter, limit: u32) -> (Vec<MemberId>, usize) {
    let mut ids = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let reply = machine.query(&Query::List { filter: filter.clone(), after, limit });
        let frame = crate::codec::encode_frame(&reply, 4 << 20).expect("every page fits a frame");
        assert!(frame.len() <= crate::query::MAX_PAGE_BYTES + 1024, "a page of {} bytes", frame.len());
        let QueryResult::Members { servers, processes, next } = reply.result else { panic!("not members") };
        assert!(servers.len() + processes.len() <= limit.max(1) as usize);
        pages += 1;
        ids.extend(servers.iter().map(|s| MemberId::Server(s.id)));
        ids.extend(processes.iter().map(|p| MemberId::Process(p.id)));
        match next {
            Some(cursor) => {
                assert_eq!(ids.last(), Some(&cursor), "the cursor is the last member of the page");
                after = Some(cursor);
            }
            None => return (ids, pages),
        }
    }
}

#[test]
fn pages_of_a_list_join_into_the_whole_list_for_every_filter_and_page_size() {
    let mut client = Client::with(Limits { max_servers: 5, max_processes: 20, ..limits() });
    for id in [1, 2, 3] {
        client.register_server(id);
    }
    for i in 0..9u64 {
        let mut info = process_info("p", 1 + i % 3);
        if i % 2 == 0 {
            info.labels.insert("app".to_string(), "web".to_string());
        }
        assert!(client.run(Command::RegisterProcess { info }).is_ok());
    }
    let filters = [
        ListFilter::default(),
        ListFilter { server: Some(ServerId(2)), ..Default::default() },
        ListFilter { server: Some(ServerId(9)), ..Default::default() },
        ListFilter { kind: Some(MemberKind::Process), ..Default::default() },
        ListFilter { kind: Some(MemberKind::Server), ..Default::default() },
        ListFilter { labels: [("app".to_string(), "web".to_string())].into(), ..Default::default() },
        ListFilter { status: Some(MemberStatus::Draining), ..Default::default() },
    ];
    for filter in &filters {
        let (servers, processes) = client.machine.list(filter);
        let mut whole: Vec<MemberId> = servers.iter().map(|s| MemberId::Server(s.id)).collect();
        whole.extend(processes.iter().map(|p| MemberId::Process(p.id)));
        for limit in [0, 1, 2, 3, 5, 100] {
            let (paged, pages) = all_pages(&client.machine, filter, limit);
            assert_eq!(paged, whole, "{filter:?} in pages of {limit}");
            let per_page = limit.max(1) as usize;
            assert!(pages <= whole.len() / per_page + 1, "{filter:?}: {pages} pages of {limit}");
        }
    }
}

#[test]
fn a_page_stops_at_the_byte_bound_so_large_labels_never_cross_a_frame() {
    let mut client = Client::with(Limits::default());
    client.register_server(1);
    // 300 processes of about 33 KiB each (64 labels of 256 + 256 bytes): 10 MB in all,
    // which one answer could not carry in a 4 MiB frame.
    for i in 0..300u64 {
        let mut info = process_info(&format!("p{i}"), 1);
        for l in 0..64 {
            info.labels.insert(format!("{l:0>256}"), "v".repeat(256));
        }
        assert!(client.run(Command::RegisterProcess { info }).is_ok());
    }
    let filter = ListFilter { kind: Some(MemberKind::Process), ..Default::default() };
    let (ids, pages) = all_pages(&client.machine, &filter, u32::MAX);
    assert_eq!(ids.len(), 300);
    assert!(pages >= 9, "10 MB in pages of at most 1 MiB: {pages} pages");
    // The tombstones' answer is bounded the same way.
    client.leader(LeaderCommand::Expire { members: ids.iter().map(|id| (*id, 5_000)).collect() }).unwrap();
    let QueryResult::Tombstones(t) = client.machine.query(&Query::Tombstones { limit: u32::MAX }).result else {
        panic!("not tombstones")
    };
    assert!(!t.is_empty() && t.len() < 300, "{} tombstones in one answer", t.len());
    assert!(crate::query::encoded_bytes(&t) <= crate::query::MAX_PAGE_BYTES);
}

#[test]
fn a_hundred_thousand_processes_list_in_pages_that_each_fit_a_frame() {
    let mut client = Client::with(Limits::default());
    client.register_server(1);
    for i in 0..100_000u64 {
        let mut info = process_info("worker", 1);
        info.labels.insert("team".to_string(), format!("t{}", i % 10));
        assert!(client.run(Command::RegisterProcess { info }).is_ok());
    }
    let (ids, pages) = all_pages(&client.machine, &ListFilter::default(), 10_000);
    assert_eq!(ids.len(), 100_001);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    assert!(pages >= 11, "{pages} pages");
}

#[test]
fn token_pages_join_into_every_token_in_id_order() {
    let mut client = Client::with(Limits::default());
    for i in 0..50u8 {
        let command = Command::CreateToken {
            hash: crate::command::TokenHash([i; 32]),
            name: format!("t{i}"),
            role: crate::command::TokenRole::Read,
            expires_at_unix_ms: None,
        };
        assert!(client.run(command).is_ok());
    }
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let QueryResult::Tokens { tokens, next } = client.machine.query(&Query::Tokens { after, limit: 7 }).result
        else {
            panic!("not tokens")
        };
        assert!(!tokens.is_empty() && tokens.len() <= 7);
        ids.extend(tokens.iter().map(|t| t.id));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let (page, next) = client.machine.token_page(None, u32::MAX, 1);
    assert_eq!((page.len(), next), (1, Some(ids[0])), "the byte bound cuts a page to one token");
}

#[test]
fn kv_pages_name_the_next_key_and_stop_at_the_byte_bound() {
    let mut client = Client::with(Limits::default());
    let value = "v".repeat(64 * 1024);
    for i in 0..40 {
        client.run(kv_put(&format!("k{i:02}"), &value)).unwrap();
    }
    let mut keys = Vec::new();
    let mut start = "k".to_string();
    loop {
        let query = Query::KvRange { start: start.clone(), end: Some("l".to_string()), limit: 1_000 };
        let reply = client.machine.query(&query);
        crate::codec::encode_frame(&reply, 4 << 20).expect("a page fits a frame");
        let QueryResult::KvItems { items, next } = reply.result else { panic!("not items") };
        assert!(items.len() < 40, "64 KiB values: a page holds at most 1 MiB");
        keys.extend(items.into_iter().map(|(k, _)| k));
        match next {
            Some(key) => {
                assert!(keys.last().is_some_and(|last| *last < key));
                start = key;
            }
            None => break,
        }
    }
    assert_eq!(keys, (0..40).map(|i| format!("k{i:02}")).collect::<Vec<_>>());
    let first = client.machine.query(&Query::KvRange { start: String::new(), end: None, limit: 2 });
    assert!(matches!(first.result, QueryResult::KvItems { next: Some(ref k), .. } if k == "k02"), "{:?}", first.result);
}

#[test]
fn kv_range_is_half_open_limited_and_tolerates_inverted_bounds() {
    let mut client = Client::with(Limits { max_kv_keys: 10, ..limits() });
    for key in ["a", "b", "c", "d"] {
        client.run(kv_put(key, "v")).unwrap();
    }
    let range = |start: &str, end: Option<&str>, limit| {
        let query = Query::KvRange { start: start.to_string(), end: end.map(str::to_string), limit };
        match client.machine.query(&query).result {
            QueryResult::KvItems { items, .. } => items.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(range("b", Some("d"), 10), ["b", "c"]);
    assert_eq!(range("b", None, 10), ["b", "c", "d"]);
    assert_eq!(range("", None, 2), ["a", "b"]);
    assert_eq!(range("c", Some("b"), 10), Vec::<String>::new());
    assert_eq!(range("c", Some("c"), 10), Vec::<String>::new());
    assert_eq!(range("a", None, 0), Vec::<String>::new());
}

// ----- tombstones -----

#[test]
fn tombstones_are_bounded_by_count_newest_first() {
    let mut client = Client::with(Limits { max_servers: 10, ..limits() });
    for id in 1..=5 {
        client.register_server(id);
        client.run(Command::DeregisterServer { id: ServerId(id) }).unwrap();
    }
    let left: Vec<ServerId> = client
        .machine
        .tombstones()
        .map(|t| match &t.subject {
            TombstoneSubject::Server(s) => s.id,
            TombstoneSubject::Process(_) => panic!("no processes here"),
        })
        .collect();
    assert_eq!(left, [ServerId(5), ServerId(4), ServerId(3)]);
    let reply = client.machine.query(&Query::Tombstones { limit: 1 });
    assert!(matches!(reply.result, QueryResult::Tombstones(ref t) if t.len() == 1));
}

#[test]
fn tombstones_are_pruned_by_age_on_the_monotonic_clock() {
    let mut client = Client::with(Limits { max_servers: 10, ..limits() });
    client.now_ms = 10_000;
    client.register_server(1);
    client.run(Command::DeregisterServer { id: ServerId(1) }).unwrap();
    // A proposer with a clock behind: the state machine's clock does not go back, and
    // the tombstone is stamped with it.
    client.now_ms = 9_000;
    client.register_server(2);
    client.run(Command::DeregisterServer { id: ServerId(2) }).unwrap();
    assert_eq!(client.machine.clock_unix_ms(), 10_000);
    assert!(client.machine.tombstones().all(|t| t.left_at_unix_ms == 10_000));
    client.now_ms = 11_000;
    client.run(Command::Noop).unwrap();
    assert_eq!(client.machine.tombstones().count(), 2, "exactly max age old is kept");
    client.now_ms = 11_001;
    client.run(Command::Noop).unwrap();
    assert_eq!(client.machine.tombstones().count(), 0);
}

// ----- events -----

#[test]
fn event_history_is_bounded_and_says_when_it_was_compacted() {
    let mut client = Client::with(Limits { max_kv_keys: 10, ..limits() });
    for value in ["1", "2", "3", "4", "5", "6", "7"] {
        client.run(kv_put("k", value)).unwrap();
    }
    // Revisions: 1 is the session; puts are 2..=8; history keeps the last 5 (4..=8).
    assert_eq!(client.machine.events_after(3).unwrap().count(), 5);
    assert_eq!(client.machine.events_after(6).unwrap().count(), 2);
    assert_eq!(client.machine.events_after(8).unwrap().count(), 0);
    let error = client.machine.events_after(2).err().unwrap();
    assert_eq!((error.requested, error.oldest_available), (2, 3));
}

// ----- snapshots -----

fn busy_machine() -> ClusterStateMachine {
    let mut client = Client::new();
    client.register_server(1);
    client.register_process(1);
    client.run(kv_put("k", "v")).unwrap();
    client.run(Command::RegisterProcess { info: process_info("p", 9) }).unwrap_err();
    client.run(Command::DeregisterServer { id: ServerId(1) }).unwrap();
    client.machine
}

#[test]
fn snapshot_round_trips() {
    let machine = busy_machine();
    let bytes = machine.snapshot();
    let restored = ClusterStateMachine::restore(&bytes).unwrap();
    assert_eq!(restored.snapshot(), bytes);
    assert_eq!(restored.revision(), machine.revision());
    assert_eq!(restored.limits(), machine.limits());
}

#[test]
fn damaged_snapshots_give_typed_errors() {
    let bytes = busy_machine().snapshot();
    let restore = |bytes: &[u8]| ClusterStateMachine::restore(bytes).err();
    assert_eq!(restore(b""), Some(SnapshotError::BadMagic));
    assert_eq!(restore(b"ROSTER"), Some(SnapshotError::BadMagic));
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    assert_eq!(restore(&wrong_magic), Some(SnapshotError::BadMagic));
    assert!(matches!(restore(&bytes[..12]), Some(SnapshotError::Malformed(_))));
    assert!(matches!(restore(&bytes[..bytes.len() - 1]), Some(SnapshotError::Malformed(_))));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(restore(&flipped), Some(SnapshotError::ChecksumMismatch { .. })));
    let mut future = bytes.clone();
    let next = super::SNAPSHOT_FORMAT_VERSION + 1;
    future[8..10].copy_from_slice(&next.to_le_bytes());
    super::snapshot::tests_support::reseal(&mut future);
    let supported = super::SNAPSHOT_FORMAT_VERSION;
    assert_eq!(restore(&future), Some(SnapshotError::UnsupportedVersion { found: next, supported }));
    // Version 3 had no resources on process entries: refused, never misread.
    let mut before_process_resources = bytes.clone();
    before_process_resources[8] = 3;
    super::snapshot::tests_support::reseal(&mut before_process_resources);
    assert_eq!(restore(&before_process_resources), Some(SnapshotError::UnsupportedVersion { found: 3, supported }));
    // Version 1 had no drain flag on server entries: refused, never misread.
    let mut old = bytes.clone();
    old[8] = 1;
    super::snapshot::tests_support::reseal(&mut old);
    let error = restore(&old).unwrap();
    assert_eq!(error, SnapshotError::UnsupportedVersion { found: 1, supported });
    assert!(error.to_string().contains("version 1 is not supported"), "{error}");
    let mut trailing = bytes.clone();
    trailing.push(0);
    super::snapshot::tests_support::reseal(&mut trailing);
    assert!(matches!(restore(&trailing), Some(SnapshotError::Malformed(_))));
}

#[test]
fn a_sealed_but_inconsistent_snapshot_is_malformed() {
    // A process id at or beyond the next id to issue could collide later: refused.
    let mut machine = busy_machine();
    machine.next_process_id = 1;
    let bytes = super::snapshot::encode_unchecked(&machine);
    assert!(matches!(
        ClusterStateMachine::restore(&bytes),
        Err(SnapshotError::Malformed(reason)) if reason.contains("outside the issued range")
    ));
}

proptest::proptest! {
    /// No command is ever answered with another command's reply: requests on a few
    /// sessions, with sequences that repeat, skip and go back, each carrying one of a few
    /// commands. Whenever a reply is a stored one (the revision did not move and it is not
    /// a refusal), the command is the one that applied under that (session, seq).
    #[test]
    fn no_command_is_answered_with_another_commands_reply(
        requests in proptest::collection::vec((0u64..4, 0u64..5, 0u8..3, 0u64..3_000), 1..120),
    ) {
        let mut machine = ClusterStateMachine::new(limits());
        let mut applied: std::collections::BTreeMap<(SessionId, u64), Command> = Default::default();
        for (pick, seq, which, at) in requests {
            if pick == 0 {
                open(&mut machine, at);
                continue;
            }
            let session = SessionId(pick);
            let command = Command::KvPut { key: "k".into(), value: format!("v{which}") };
            let before = machine.revision();
            let proposal = Proposal { at_unix_ms: at, body: ProposalBody::Client { request: Request { session, seq, command: command.clone() }, by: SessionOwner::Node } };
            let reply = machine.apply(&proposal);
            if machine.revision() > before {
                applied.insert((session, seq), command);
            } else if reply.is_ok() {
                proptest::prop_assert_eq!(applied.get(&(session, seq)), Some(&command), "answered another command's reply");
            }
        }
    }
}
