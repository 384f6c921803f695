//! Property tests: the state machine against a deliberately naive model (vectors and
//! linear scans, no indexes), over random proposal sequences with duplicates, retries,
//! stale and skipping sequences, evictions, refusals and clocks that run backwards;
//! snapshot round trips; and corrupted snapshots.

use super::{ClusterStateMachine, Limits, SnapshotError};
use crate::command::{
    Command, CommandError, CommandResult, LeaderCommand, ListFilter, ProcessPatch, Proposal, ProposalBody, Query,
    Reply, Request, ServerPatch, SessionOwner, TokenHash, TokenId, TokenInfo, TokenRole,
};
use crate::event::{Event, EventKind};
use crate::ids::{MemberId, ProcessId, ServerId, SessionId};
use crate::model::{
    Departure, Labels, MemberStatus, ProcessEntry, ProcessInfo, ResourceAverage, ServerEntry, ServerInfo, Tombstone,
    TombstoneSubject,
};
use crate::query::QueryResult;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::collections::BTreeMap;

/// Small limits, so that every bound is hit often.
fn small_limits() -> Limits {
    Limits {
        max_sessions: 3,
        max_servers: 3,
        max_processes: 4,
        max_kv_keys: 3,
        max_key_bytes: 4,
        max_value_bytes: 6,
        max_name_bytes: 5,
        max_labels: 2,
        max_label_bytes: 3,
        tombstone_max_count: 4,
        tombstone_max_age_ms: 300,
        event_history: 8,
        session_idle_ms: 1_000,
        // Never reached here: budget.rs's tests hit it.
        state_budget_bytes: 1 << 30,
    }
}

// ----- the model -----

/// The command without the start time a node stamps: what makes two requests the same.
fn unstamped(command: &Command) -> Command {
    let mut command = command.clone();
    match &mut command {
        Command::RegisterProcess { info } => info.started_at_unix_ms = 0,
        Command::RegisterServer { info, .. } => info.started_at_unix_ms = 0,
        _ => {}
    }
    command
}

struct ModelSession {
    id: SessionId,
    owner: SessionOwner,
    last_seq: u64,
    last_rev: u64,
    last_reply: Option<CommandResult>,
    /// The last applied command itself, compared whole on a duplicate.
    last_command: Option<Command>,
    last_used: u64,
}

/// The rules, written as plainly as possible.
struct Model {
    limits: Limits,
    revision: u64,
    clock: u64,
    next_process: u64,
    next_session: u64,
    servers: Vec<ServerEntry>,
    processes: Vec<ProcessEntry>,
    kv: Vec<(String, String)>,
    sessions: Vec<ModelSession>,
    /// Oldest first.
    tombstones: Vec<Tombstone>,
    /// Every event ever, unbounded.
    events: Vec<Event>,
    next_token: u64,
    /// In id order.
    tokens: Vec<(TokenHash, TokenInfo)>,
    /// The first id sealed.
    cluster_id: Option<u64>,
}

fn too_large(what: &str, len: usize, max: usize) -> CommandError {
    CommandError::TooLarge { what: what.to_string(), len, max }
}

fn invalid_empty(field: &str) -> CommandError {
    CommandError::InvalidField { field: field.to_string(), reason: "must not be empty".to_string() }
}

impl Model {
    fn new(limits: Limits) -> Self {
        Model {
            limits,
            revision: 0,
            clock: 0,
            next_process: 1,
            next_session: 1,
            servers: Vec::new(),
            processes: Vec::new(),
            kv: Vec::new(),
            sessions: Vec::new(),
            tombstones: Vec::new(),
            events: Vec::new(),
            next_token: 1,
            tokens: Vec::new(),
            cluster_id: None,
        }
    }

    fn last_seq(&self, id: SessionId) -> Option<u64> {
        self.sessions.iter().find(|s| s.id == id).map(|s| s.last_seq)
    }

    /// The index of `session` if `by` may use it.
    fn session_of(&self, session: SessionId, by: SessionOwner) -> Result<usize, CommandError> {
        let Some(index) = self.sessions.iter().position(|s| s.id == session) else {
            if session.0 >= 1 && session.0 < self.next_session {
                return Err(CommandError::SessionExpired(session));
            }
            return Err(CommandError::UnknownSession(session));
        };
        if self.sessions[index].owner != by {
            return Err(CommandError::NotYourSession(session));
        }
        Ok(index)
    }

    fn drop_idle_sessions(&mut self) {
        let (clock, idle) = (self.clock, self.limits.session_idle_ms);
        self.sessions.retain(|s| clock - s.last_used <= idle);
    }

    fn begin(&mut self, at: u64) {
        self.revision += 1;
        self.clock = self.clock.max(at);
        let (clock, max_age) = (self.clock, self.limits.tombstone_max_age_ms);
        self.tombstones.retain(|t| clock - t.left_at_unix_ms <= max_age);
    }

    fn event(&mut self, kind: EventKind) {
        self.events.push(Event { revision: self.revision, kind });
    }

    fn apply(&mut self, proposal: &Proposal) -> CommandResult {
        match &proposal.body {
            ProposalBody::OpenSession { owner } => {
                self.begin(proposal.at_unix_ms);
                self.drop_idle_sessions();
                if self.sessions.len() >= self.limits.max_sessions {
                    let lru = (0..self.sessions.len())
                        .min_by_key(|&i| (self.sessions[i].last_rev, self.sessions[i].id))
                        .unwrap();
                    self.sessions.remove(lru);
                }
                let id = SessionId(self.next_session);
                self.next_session += 1;
                let last_used = self.clock;
                self.sessions.push(ModelSession {
                    id,
                    owner: *owner,
                    last_seq: 0,
                    last_rev: self.revision,
                    last_reply: None,
                    last_command: None,
                    last_used,
                });
                Ok(Reply::SessionOpened { session: id })
            }
            ProposalBody::CloseSession { session, by } => {
                let index = self.session_of(*session, *by)?;
                self.sessions.remove(index);
                self.begin(proposal.at_unix_ms);
                self.drop_idle_sessions();
                Ok(Reply::Done { revision: self.revision })
            }
            ProposalBody::Client { request, by } => {
                if request.seq == 0 {
                    return Err(CommandError::InvalidField {
                        field: "seq".to_string(),
                        reason: "sequence numbers start at 1".to_string(),
                    });
                }
                let index = self.session_of(request.session, *by)?;
                let last = self.sessions[index].last_seq;
                let (session, seq) = (request.session, request.seq);
                if seq == last + 1 {
                    self.begin(proposal.at_unix_ms);
                    let reply = self.command(&request.command);
                    let clock = self.clock;
                    let record = &mut self.sessions[index];
                    record.last_seq = seq;
                    record.last_rev = self.revision;
                    record.last_reply = Some(reply.clone());
                    record.last_command = Some(request.command.clone());
                    record.last_used = clock;
                    self.drop_idle_sessions();
                    reply
                } else if seq == last {
                    if self.sessions[index].last_command.as_ref().map(unstamped) != Some(unstamped(&request.command)) {
                        return Err(CommandError::SequenceReused { session, seq });
                    }
                    self.sessions[index].last_reply.clone().unwrap()
                } else if seq < last {
                    Err(CommandError::StaleSequence { session, seq, last })
                } else {
                    Err(CommandError::SequenceGap { session, seq, last })
                }
            }
            ProposalBody::Leader(command) => {
                self.begin(proposal.at_unix_ms);
                let mut count = 0;
                match command {
                    LeaderCommand::Expire { members } => {
                        for (member, silent_for_ms) in members {
                            let departure = Departure::Expired { silent_for_ms: *silent_for_ms };
                            if self.depart(*member, departure) {
                                count += 1;
                            }
                        }
                    }
                    LeaderCommand::ReportResources { reports } => {
                        for (id, average) in reports {
                            count += self.report_server(*id, *average);
                        }
                    }
                    LeaderCommand::ReportMemberResources { reports } => {
                        for (member, average) in reports {
                            count += match member {
                                MemberId::Server(id) => self.report_server(*id, *average),
                                MemberId::Process(id) => self.report_process(*id, *average),
                            };
                        }
                    }
                    LeaderCommand::SealCluster { id } => {
                        if self.cluster_id.is_none() {
                            self.cluster_id = Some(*id);
                            count += 1;
                        }
                    }
                    LeaderCommand::SetStateBudget { .. } => {
                        unreachable!("the generator proposes no budget: budget_tests.rs drives it")
                    }
                }
                Ok(Reply::Applied { count, revision: self.revision })
            }
            ProposalBody::Audit(record) => {
                self.begin(proposal.at_unix_ms);
                self.event(EventKind::Audit(record.clone()));
                Ok(Reply::Done { revision: self.revision })
            }
        }
    }

    /// A server's averages: 1 if the server is in the record (an event if they changed).
    fn report_server(&mut self, id: ServerId, average: ResourceAverage) -> u32 {
        let Some(i) = self.servers.iter().position(|s| s.id == id) else {
            return 0;
        };
        if self.servers[i].resources != Some(average) {
            self.servers[i].resources = Some(average);
            self.servers[i].updated_rev = self.revision;
            let entry = self.servers[i].clone();
            self.event(EventKind::ServerUpdated(entry));
        }
        1
    }

    /// A process's averages, as a server's.
    fn report_process(&mut self, id: ProcessId, average: ResourceAverage) -> u32 {
        let Some(i) = self.processes.iter().position(|p| p.id == id) else {
            return 0;
        };
        if self.processes[i].resources != Some(average) {
            self.processes[i].resources = Some(average);
            self.processes[i].updated_rev = self.revision;
            let entry = self.processes[i].clone();
            self.event(EventKind::ProcessUpdated(entry));
        }
        1
    }

    fn depart(&mut self, member: MemberId, departure: Departure) -> bool {
        let subject = match member {
            MemberId::Server(id) => match self.servers.iter().position(|s| s.id == id) {
                Some(i) => TombstoneSubject::Server(self.servers.remove(i)),
                None => return false,
            },
            MemberId::Process(id) => match self.processes.iter().position(|p| p.id == id) {
                Some(i) => TombstoneSubject::Process(self.processes.remove(i)),
                None => return false,
            },
        };
        let tombstone = Tombstone { subject, departure, left_at_unix_ms: self.clock, left_rev: self.revision };
        self.event(EventKind::Departed { member, tombstone: tombstone.clone() });
        self.tombstones.push(tombstone);
        while self.tombstones.len() > self.limits.tombstone_max_count {
            self.tombstones.remove(0);
        }
        self.tokens.retain(|(_, info)| info.role != TokenRole::Member(member));
        true
    }

    fn check_text(&self, what: &str, text: &str, max: usize) -> Result<(), CommandError> {
        if text.len() > max { Err(too_large(what, text.len(), max)) } else { Ok(()) }
    }

    fn check_name(&self, what: &str, text: &str) -> Result<(), CommandError> {
        if text.is_empty() {
            return Err(invalid_empty(what));
        }
        self.check_text(what, text, self.limits.max_name_bytes)
    }

    fn check_server_info(&self, info: &ServerInfo) -> Result<(), CommandError> {
        self.check_name("server name", &info.name)?;
        self.check_text("raft_addr", &info.raft_addr, self.limits.max_name_bytes)?;
        self.check_text("api_addr", &info.api_addr, self.limits.max_name_bytes)
    }

    fn check_label(&self, key: &str, value: Option<&String>) -> Result<(), CommandError> {
        if key.is_empty() {
            return Err(invalid_empty("label key"));
        }
        self.check_text("label key", key, self.limits.max_label_bytes)?;
        match value {
            Some(value) => self.check_text("label value", value, self.limits.max_label_bytes),
            None => Ok(()),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), CommandError> {
        if key.is_empty() {
            return Err(invalid_empty("key"));
        }
        self.check_text("key", key, self.limits.max_key_bytes)
    }

    fn kv_set(&mut self, key: &str, value: &str) -> Result<(), CommandError> {
        match self.kv.iter().position(|(k, _)| k == key) {
            Some(i) => self.kv[i].1 = value.to_string(),
            None => {
                if self.kv.len() >= self.limits.max_kv_keys {
                    return Err(CommandError::TableFull { what: "kv keys".to_string(), count: self.kv.len() });
                }
                self.kv.push((key.to_string(), value.to_string()));
            }
        }
        self.event(EventKind::KvPut { key: key.to_string(), value: value.to_string() });
        Ok(())
    }

    fn kv_remove(&mut self, key: &str) {
        if let Some(i) = self.kv.iter().position(|(k, _)| k == key) {
            self.kv.remove(i);
            self.event(EventKind::KvDeleted { key: key.to_string() });
        }
    }

    fn patch_server(entry: &mut ServerEntry, patch: &ServerPatch) -> bool {
        let before = (entry.info.clone(), entry.status);
        if let Some(v) = &patch.name {
            entry.info.name = v.clone();
        }
        if let Some(v) = &patch.raft_addr {
            entry.info.raft_addr = v.clone();
        }
        if let Some(v) = &patch.api_addr {
            entry.info.api_addr = v.clone();
        }
        if let Some(v) = patch.cpu_capacity_percent {
            entry.info.cpu_capacity_percent = v;
        }
        if let Some(v) = patch.mem_capacity_bytes {
            entry.info.mem_capacity_bytes = v;
        }
        if let Some(v) = patch.status {
            entry.status = v;
        }
        before != (entry.info.clone(), entry.status)
    }

    fn command(&mut self, command: &Command) -> CommandResult {
        let revision = self.revision;
        let done = Ok(Reply::Done { revision });
        match command {
            Command::RegisterServer { id, info } => {
                self.check_server_info(info)?;
                if let Some(entry) = self.servers.iter_mut().find(|s| s.id == *id) {
                    entry.info = info.clone();
                    entry.status = MemberStatus::Online;
                    entry.updated_rev = revision;
                    let entry = entry.clone();
                    self.event(EventKind::ServerUpdated(entry));
                } else {
                    if self.servers.len() >= self.limits.max_servers {
                        return Err(CommandError::TableFull { what: "servers".to_string(), count: self.servers.len() });
                    }
                    let entry = ServerEntry {
                        id: *id,
                        info: info.clone(),
                        status: MemberStatus::Online,
                        drained: false,
                        resources: None,
                        registered_rev: revision,
                        updated_rev: revision,
                    };
                    self.servers.push(entry.clone());
                    self.event(EventKind::ServerRegistered(entry));
                }
                done
            }
            Command::DeregisterServer { id } => {
                let departure = Departure::Deregistered { exit_status: None };
                if self.depart(MemberId::Server(*id), departure) {
                    done
                } else {
                    Err(CommandError::UnknownMember(MemberId::Server(*id)))
                }
            }
            Command::RegisterProcess { info } => {
                self.check_name("process name", &info.name)?;
                self.check_text("service_host", &info.service_host, self.limits.max_name_bytes)?;
                for (key, value) in &info.labels {
                    self.check_label(key, Some(value))?;
                }
                if info.labels.len() > self.limits.max_labels {
                    return Err(too_large("labels", info.labels.len(), self.limits.max_labels));
                }
                if !self.servers.iter().any(|s| s.id == info.server) {
                    return Err(CommandError::UnknownServer(info.server));
                }
                if self.processes.len() >= self.limits.max_processes {
                    return Err(CommandError::TableFull { what: "processes".to_string(), count: self.processes.len() });
                }
                let id = ProcessId(self.next_process);
                self.next_process += 1;
                let entry = ProcessEntry {
                    id,
                    info: info.clone(),
                    status: MemberStatus::Online,
                    resources: None,
                    registered_rev: revision,
                    updated_rev: revision,
                };
                self.processes.push(entry.clone());
                self.event(EventKind::ProcessRegistered(entry));
                Ok(Reply::ProcessRegistered { id, revision })
            }
            Command::DeregisterProcess { id, exit_status } => {
                let departure = Departure::Deregistered { exit_status: *exit_status };
                if self.depart(MemberId::Process(*id), departure) {
                    done
                } else {
                    Err(CommandError::UnknownMember(MemberId::Process(*id)))
                }
            }
            Command::PutServer { id, patch, create } => {
                if let Some(name) = &patch.name {
                    self.check_name("server name", name)?;
                }
                if let Some(addr) = &patch.raft_addr {
                    self.check_text("raft_addr", addr, self.limits.max_name_bytes)?;
                }
                if let Some(addr) = &patch.api_addr {
                    self.check_text("api_addr", addr, self.limits.max_name_bytes)?;
                }
                if let Some(entry) = self.servers.iter_mut().find(|s| s.id == *id) {
                    if Self::patch_server(entry, patch) {
                        entry.updated_rev = revision;
                        let entry = entry.clone();
                        self.event(EventKind::ServerUpdated(entry));
                    }
                    return done;
                }
                let Some(info) = create else {
                    return Err(CommandError::UnknownMember(MemberId::Server(*id)));
                };
                self.check_server_info(info)?;
                if self.servers.len() >= self.limits.max_servers {
                    return Err(CommandError::TableFull { what: "servers".to_string(), count: self.servers.len() });
                }
                let mut entry = ServerEntry {
                    id: *id,
                    info: info.clone(),
                    status: MemberStatus::Online,
                    drained: false,
                    resources: None,
                    registered_rev: revision,
                    updated_rev: revision,
                };
                Self::patch_server(&mut entry, patch);
                self.servers.push(entry.clone());
                self.event(EventKind::ServerRegistered(entry));
                done
            }
            Command::PutProcess { id, patch } => {
                let Some(index) = self.processes.iter().position(|p| p.id == *id) else {
                    return Err(CommandError::UnknownMember(MemberId::Process(*id)));
                };
                if let Some(name) = &patch.name {
                    self.check_name("process name", name)?;
                }
                if let Some(host) = &patch.service_host {
                    self.check_text("service_host", host, self.limits.max_name_bytes)?;
                }
                let mut merged = self.processes[index].info.labels.clone();
                for (key, value) in &patch.labels {
                    self.check_label(key, value.as_ref())?;
                    match value {
                        Some(value) => merged.insert(key.clone(), value.clone()),
                        None => merged.remove(key),
                    };
                }
                if merged.len() > self.limits.max_labels {
                    return Err(too_large("labels", merged.len(), self.limits.max_labels));
                }
                let entry = &mut self.processes[index];
                let before = entry.clone();
                if let Some(v) = &patch.name {
                    entry.info.name = v.clone();
                }
                if let Some(v) = &patch.service_host {
                    entry.info.service_host = v.clone();
                }
                if let Some(v) = patch.service_port {
                    entry.info.service_port = v;
                }
                if let Some(v) = patch.status {
                    entry.status = v;
                }
                entry.info.labels = merged;
                if *entry != before {
                    entry.updated_rev = revision;
                    let entry = entry.clone();
                    self.event(EventKind::ProcessUpdated(entry));
                }
                done
            }
            Command::Delete { member } => {
                if self.depart(*member, Departure::Deleted) {
                    done
                } else {
                    Err(CommandError::UnknownMember(*member))
                }
            }
            Command::KvPut { key, value } => {
                self.check_key(key)?;
                self.check_text("value", value, self.limits.max_value_bytes)?;
                self.kv_set(key, value)?;
                done
            }
            Command::KvDelete { key } => {
                self.check_key(key)?;
                self.kv_remove(key);
                done
            }
            Command::KvCas { key, expected, new } => {
                self.check_key(key)?;
                if let Some(value) = new {
                    self.check_text("value", value, self.limits.max_value_bytes)?;
                }
                let current = self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                if current != *expected {
                    return Ok(Reply::Cas { swapped: false, current, revision });
                }
                match new {
                    Some(value) => self.kv_set(key, value)?,
                    None => self.kv_remove(key),
                }
                Ok(Reply::Cas { swapped: true, current, revision })
            }
            Command::Noop => done,
            Command::CreateToken { hash, name, role, expires_at_unix_ms } => {
                if name.len() > super::MAX_TOKEN_NAME_BYTES {
                    return Err(too_large("token name", name.len(), super::MAX_TOKEN_NAME_BYTES));
                }
                if self.tokens.iter().any(|(h, _)| h == hash) {
                    return Err(CommandError::DuplicateToken);
                }
                if let TokenRole::Member(member) = role {
                    let held = self.tokens.iter().filter(|(_, info)| info.role == *role).count();
                    if held >= super::MAX_TOKENS_PER_MEMBER {
                        return Err(CommandError::TableFull { what: format!("tokens of {member}"), count: held });
                    }
                    let live = match member {
                        MemberId::Server(id) => self.servers.iter().any(|s| s.id == *id),
                        MemberId::Process(id) => self.processes.iter().any(|p| p.id == *id),
                    };
                    if !live {
                        return Err(CommandError::UnknownMember(*member));
                    }
                }
                let id = TokenId(self.next_token);
                self.next_token += 1;
                let info = TokenInfo {
                    id,
                    name: name.clone(),
                    role: *role,
                    expires_at_unix_ms: *expires_at_unix_ms,
                    created_rev: revision,
                };
                self.tokens.push((*hash, info.clone()));
                self.event(EventKind::TokenCreated(info));
                Ok(Reply::TokenCreated { id, revision })
            }
            Command::RevokeToken { id } => {
                let Some(i) = self.tokens.iter().position(|(_, info)| info.id == *id) else {
                    return Err(CommandError::UnknownToken(*id));
                };
                let (_, info) = self.tokens.remove(i);
                self.event(EventKind::TokenRevoked { id: *id, name: info.name });
                done
            }
            Command::SetDrained { id, drained } => {
                let Some(entry) = self.servers.iter_mut().find(|s| s.id == *id) else {
                    return Err(CommandError::UnknownMember(MemberId::Server(*id)));
                };
                if entry.drained != *drained {
                    entry.drained = *drained;
                    entry.updated_rev = revision;
                    let entry = entry.clone();
                    self.event(EventKind::ServerUpdated(entry));
                }
                done
            }
        }
    }
}

// ----- generators -----

fn name() -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(""), 8 => Just("a"), 8 => Just("srv"), 1 => Just("toolong")].prop_map(String::from)
}

fn addr() -> impl Strategy<Value = String> {
    prop_oneof![8 => Just("h:1"), 2 => Just(""), 1 => Just("toolong:1")].prop_map(String::from)
}

fn status() -> impl Strategy<Value = MemberStatus> {
    prop_oneof![Just(MemberStatus::Online), Just(MemberStatus::Draining)]
}

fn server_id() -> impl Strategy<Value = ServerId> {
    (0u64..4).prop_map(ServerId)
}

fn process_id() -> impl Strategy<Value = ProcessId> {
    (0u64..10).prop_map(ProcessId)
}

fn member() -> impl Strategy<Value = MemberId> {
    prop_oneof![server_id().prop_map(MemberId::Server), process_id().prop_map(MemberId::Process)]
}

fn label_text() -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(""), 6 => Just("k"), 6 => Just("l"), 6 => Just("m"), 1 => Just("long")].prop_map(String::from)
}

fn labels() -> impl Strategy<Value = Labels> {
    btree_map(label_text(), label_text(), 0..3)
}

fn server_info() -> impl Strategy<Value = ServerInfo> {
    (name(), addr(), addr(), 0u32..3, 0u64..3).prop_map(|(name, raft, api, cpu, mem)| ServerInfo {
        name,
        raft_addr: raft,
        api_addr: api,
        started_at_unix_ms: 7,
        cpu_capacity_percent: cpu * 100,
        mem_capacity_bytes: mem << 20,
    })
}

fn process_info() -> impl Strategy<Value = ProcessInfo> {
    (name(), server_id(), addr(), proptest::option::of(0u16..3), labels()).prop_map(
        |(name, server, host, port, labels)| ProcessInfo {
            name,
            server,
            service_host: host,
            service_port: port,
            started_at_unix_ms: 9,
            labels,
            reserved: ResourceAverage::default(),
        },
    )
}

fn server_patch() -> impl Strategy<Value = ServerPatch> {
    (
        proptest::option::of(name()),
        proptest::option::of(addr()),
        proptest::option::of(addr()),
        proptest::option::of(0u32..3),
        proptest::option::of(status()),
    )
        .prop_map(|(name, raft_addr, api_addr, cpu, status)| ServerPatch {
            name,
            raft_addr,
            api_addr,
            cpu_capacity_percent: cpu.map(|c| c * 100),
            mem_capacity_bytes: None,
            status,
        })
}

fn process_patch() -> impl Strategy<Value = ProcessPatch> {
    (
        proptest::option::of(name()),
        proptest::option::of(addr()),
        proptest::option::of(proptest::option::of(0u16..3)),
        proptest::option::of(status()),
        btree_map(label_text(), proptest::option::of(label_text()), 0..3),
    )
        .prop_map(|(name, service_host, service_port, status, labels)| ProcessPatch {
            name,
            service_host,
            service_port,
            status,
            labels,
        })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(""),
        6 => Just("a"),
        6 => Just("b"),
        6 => Just("c"),
        6 => Just("dd"),
        1 => Just("toolong"),
    ]
    .prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(""), 6 => Just("x"), 6 => Just("yy"), 1 => Just("waytoolong")].prop_map(String::from)
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (server_id(), server_info()).prop_map(|(id, info)| Command::RegisterServer { id, info }),
        1 => server_id().prop_map(|id| Command::DeregisterServer { id }),
        3 => process_info().prop_map(|info| Command::RegisterProcess { info }),
        1 => (process_id(), proptest::option::of(-1i32..2))
            .prop_map(|(id, exit_status)| Command::DeregisterProcess { id, exit_status }),
        2 => (server_id(), server_patch(), proptest::option::of(server_info()))
            .prop_map(|(id, patch, create)| Command::PutServer { id, patch, create }),
        2 => (process_id(), process_patch()).prop_map(|(id, patch)| Command::PutProcess { id, patch }),
        1 => member().prop_map(|member| Command::Delete { member }),
        2 => (key(), value()).prop_map(|(key, value)| Command::KvPut { key, value }),
        1 => key().prop_map(|key| Command::KvDelete { key }),
        2 => (key(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(key, expected, new)| Command::KvCas { key, expected, new }),
        1 => Just(Command::Noop),
        2 => (server_id(), any::<bool>()).prop_map(|(id, drained)| Command::SetDrained { id, drained }),
        1 => (0u8..6, name(), token_role(), proptest::option::of(0u64..5000)).prop_map(
            |(hash, name, role, expires_at_unix_ms)| Command::CreateToken {
                hash: TokenHash([hash; 32]),
                name,
                role,
                expires_at_unix_ms
            }
        ),
        1 => (0u64..5).prop_map(|id| Command::RevokeToken { id: TokenId(id) }),
    ]
}

fn token_role() -> impl Strategy<Value = TokenRole> {
    prop_oneof![
        1 => Just(TokenRole::Admin),
        1 => Just(TokenRole::Read),
        1 => server_id().prop_map(TokenRole::Agent),
        3 => member().prop_map(TokenRole::Member),
    ]
}

fn leader_command() -> impl Strategy<Value = LeaderCommand> {
    let average = (0u32..2, 0u64..2)
        .prop_map(|(cpu, mem)| ResourceAverage { cpu_percent_avg: cpu * 50, mem_bytes_used_avg: mem * 100 });
    prop_oneof![
        vec((member(), 0u64..5000), 0..4).prop_map(|members| LeaderCommand::Expire { members }),
        vec((server_id(), average.clone()), 0..3).prop_map(|reports| LeaderCommand::ReportResources { reports }),
        vec((member(), average), 0..3).prop_map(|reports| LeaderCommand::ReportMemberResources { reports }),
        (1u64..4).prop_map(|id| LeaderCommand::SealCluster { id }),
    ]
}

/// An operation, resolved against the model's state when it runs.
#[derive(Clone, Debug)]
enum Op {
    /// Opens a session for `OWNERS[owner]`.
    Open {
        owner: usize,
    },
    /// A client command at sequence `last + delta` on an open session (`pick` below 4:
    /// the pick-th newest, wrapping) or on one that is likely evicted (`pick` of 4), made
    /// with the session's own credential, or with `OWNERS[stranger]` when that is given.
    Client {
        pick: u64,
        delta: i64,
        command: Box<Command>,
        stranger: Option<usize>,
    },
    /// Closes a session picked as for `Client`, with its credential or a stranger's.
    Close {
        pick: u64,
        stranger: Option<usize>,
    },
    /// Proposes the previous client proposal again, unchanged.
    Retry,
    Leader(LeaderCommand),
    Audit,
}

fn op() -> impl Strategy<Value = Op> {
    let delta = prop_oneof![8 => Just(1i64), 2 => Just(0i64), 1 => Just(-1i64), 1 => Just(2i64), 1 => Just(-5i64)];
    let stranger = prop_oneof![19 => Just(None), 1 => (0..OWNERS.len()).prop_map(Some)];
    // Closes are rare: a closed session's later commands are all refused.
    prop_oneof![
        4 => (0..OWNERS.len()).prop_map(|owner| Op::Open { owner }),
        48 => (0u64..5, delta, command(), stranger.clone())
            .prop_map(|(pick, delta, command, stranger)| Op::Client { pick, delta, command: Box::new(command), stranger }),
        1 => (0u64..5, stranger).prop_map(|(pick, stranger)| Op::Close { pick, stranger }),
        8 => Just(Op::Retry),
        8 => leader_command().prop_map(Op::Leader),
        4 => Just(Op::Audit),
    ]
}

/// Operations, each with a clock step that is sometimes negative (a new leader's clock
/// behind the old one's).
/// The credentials sessions are opened with.
const OWNERS: [SessionOwner; 3] = [SessionOwner::Node, SessionOwner::Bootstrap, SessionOwner::Token(TokenId(4))];

fn ops(max: usize) -> impl Strategy<Value = Vec<(Op, i64)>> {
    vec((op(), -30i64..60), 0..max)
}

/// Turns operations into proposals against the model's sessions, applying each to the
/// model as it goes; returns the proposals and the model's replies.
struct Driver {
    model: Model,
    now: u64,
    last_client: Option<Proposal>,
}

impl Driver {
    fn new(limits: Limits) -> Self {
        Driver { model: Model::new(limits), now: 1_000, last_client: None }
    }

    fn proposal(&mut self, op: &Op, step: i64) -> Proposal {
        self.now = self.now.saturating_add_signed(step);
        let body = match op {
            Op::Open { owner } => ProposalBody::OpenSession { owner: OWNERS[*owner] },
            Op::Client { pick, delta, command, stranger } => {
                let (session, by) = self.pick(*pick, *stranger);
                let last = self.model.last_seq(session).unwrap_or(0) as i64;
                let seq = (last + delta).max(0) as u64;
                ProposalBody::Client { request: Request { session, seq, command: Command::clone(command) }, by }
            }
            Op::Close { pick, stranger } => {
                let (session, by) = self.pick(*pick, *stranger);
                ProposalBody::CloseSession { session, by }
            }
            Op::Retry => match &self.last_client {
                Some(previous) => previous.body.clone(),
                None => ProposalBody::OpenSession { owner: SessionOwner::Node },
            },
            Op::Leader(command) => ProposalBody::Leader(command.clone()),
            Op::Audit => ProposalBody::Audit(crate::command::AuditRecord {
                by: "ops".into(),
                role: "admin".into(),
                action: "remove node 3".into(),
            }),
        };
        let proposal = Proposal { at_unix_ms: self.now, body };
        if matches!(proposal.body, ProposalBody::Client { .. }) {
            self.last_client = Some(proposal.clone());
        }
        proposal
    }

    /// A session (`pick` as for `Op::Client`) and the credential a request on it is made
    /// with: its owner's, or the stranger's (who may be its owner after all).
    fn pick(&self, pick: u64, stranger: Option<usize>) -> (SessionId, SessionOwner) {
        let open = &self.model.sessions;
        let (session, owner) = if pick < 4 && !open.is_empty() {
            let chosen = &open[open.len() - 1 - (pick as usize % open.len())];
            (chosen.id, chosen.owner)
        } else {
            (SessionId(self.model.next_session.saturating_sub(4)), SessionOwner::Node)
        };
        (session, stranger.map_or(owner, |i| OWNERS[i]))
    }
}

// ----- comparisons -----

fn sorted_servers(model: &Model) -> Vec<ServerEntry> {
    let mut servers = model.servers.clone();
    servers.sort_by_key(|s| s.id);
    servers
}

fn sorted_processes(model: &Model) -> Vec<ProcessEntry> {
    let mut processes = model.processes.clone();
    processes.sort_by_key(|p| p.id);
    processes
}

fn everything(machine: &ClusterStateMachine) -> Vec<QueryResult> {
    let queries = [
        Query::List { filter: ListFilter::default(), after: None, limit: u32::MAX },
        Query::KvRange { start: String::new(), end: None, limit: u32::MAX },
        Query::Tombstones { limit: u32::MAX },
        Query::Tokens { after: None, limit: u32::MAX },
    ];
    queries.iter().map(|q| machine.query(q).result).collect()
}

/// The revision after which the model's bounded history still holds every event.
fn model_floor(model: &Model) -> u64 {
    let kept = model.limits.event_history;
    let dropped = model.events.len().saturating_sub(kept);
    if dropped == 0 { 0 } else { model.events[dropped - 1].revision }
}

fn assert_same(machine: &ClusterStateMachine, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(machine.revision(), model.revision);
    prop_assert_eq!(machine.check_invariants(), Ok(()));
    prop_assert_eq!(machine.cluster_id(), model.cluster_id);
    let mut kv = model.kv.clone();
    kv.sort();
    let mut tombstones = model.tombstones.clone();
    tombstones.reverse();
    let expected = vec![
        QueryResult::Members { servers: sorted_servers(model), processes: sorted_processes(model), next: None },
        QueryResult::KvItems { items: kv, next: None },
        QueryResult::Tombstones(tombstones),
        QueryResult::Tokens { tokens: model.tokens.iter().map(|(_, info)| info.clone()).collect(), next: None },
    ];
    prop_assert_eq!(everything(machine), expected);
    for id in 0..model.next_session + 1 {
        prop_assert_eq!(machine.session_last_seq(SessionId(id)), model.last_seq(SessionId(id)));
    }
    let members: Vec<MemberId> = machine.members().collect();
    let mut expected_members: Vec<MemberId> = model.servers.iter().map(|s| MemberId::Server(s.id)).collect();
    expected_members.sort();
    let mut processes: Vec<MemberId> = model.processes.iter().map(|p| MemberId::Process(p.id)).collect();
    processes.sort();
    expected_members.extend(processes);
    prop_assert_eq!(members, expected_members);
    Ok(())
}

fn assert_events(machine: &ClusterStateMachine, model: &Model) -> Result<(), TestCaseError> {
    let floor = model_floor(model);
    for revision in 0..=model.revision {
        match machine.events_after(revision) {
            Ok(events) => {
                prop_assert!(revision >= floor, "history claims events it dropped");
                let got: Vec<Event> = events.collect();
                let want: Vec<&Event> = model.events.iter().filter(|e| e.revision > revision).collect();
                prop_assert_eq!(got.iter().collect::<Vec<_>>(), want);
            }
            Err(compacted) => {
                prop_assert!(revision < floor);
                prop_assert_eq!(compacted.requested, revision);
                prop_assert_eq!(compacted.oldest_available, floor);
            }
        }
    }
    Ok(())
}

fn run_both(machine: &mut ClusterStateMachine, driver: &mut Driver, ops: &[(Op, i64)]) -> Result<(), TestCaseError> {
    for (op, step) in ops {
        let proposal = driver.proposal(op, *step);
        let expected = driver.model.apply(&proposal);
        let got = machine.apply(&proposal);
        prop_assert_eq!(&got, &expected, "reply to {}", proposal);
        assert_same(machine, &driver.model)?;
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn machine_matches_model(ops in ops(60)) {
        let mut machine = ClusterStateMachine::new(small_limits());
        let mut driver = Driver::new(small_limits());
        run_both(&mut machine, &mut driver, &ops)?;
        assert_events(&machine, &driver.model)?;
    }

    #[test]
    fn restored_snapshot_answers_and_continues_identically(
        before in ops(40),
        after in ops(30),
    ) {
        let mut machine = ClusterStateMachine::new(small_limits());
        let mut driver = Driver::new(small_limits());
        run_both(&mut machine, &mut driver, &before)?;
        let bytes = machine.snapshot();
        let mut restored = ClusterStateMachine::restore(&bytes).expect("own snapshot restores");
        prop_assert_eq!(restored.snapshot(), bytes.clone(), "restore then snapshot is identity");
        prop_assert_eq!(everything(&restored), everything(&machine));
        assert_same(&restored, &driver.model)?;
        prop_assert_eq!(restored.events_after(machine.revision()).map(|e| e.count()), Ok(0));
        if machine.revision() > 0 {
            prop_assert!(restored.events_after(machine.revision() - 1).is_err());
        }
        // The same following proposals get the same replies from both.
        for (op, step) in &after {
            let proposal = driver.proposal(op, *step);
            let expected = driver.model.apply(&proposal);
            prop_assert_eq!(&machine.apply(&proposal), &expected);
            prop_assert_eq!(&restored.apply(&proposal), &expected);
        }
        prop_assert_eq!(restored.snapshot(), machine.snapshot());
        assert_same(&restored, &driver.model)?;
    }

    #[test]
    fn arbitrary_bytes_never_restore(bytes in vec(any::<u8>(), 0..300)) {
        let result = ClusterStateMachine::restore(&bytes);
        prop_assert!(result.is_err());
        if !bytes.starts_with(b"ROSTERSM") {
            prop_assert_eq!(result.err(), Some(SnapshotError::BadMagic));
        }
    }

    #[test]
    fn arbitrary_payload_behind_a_valid_header_never_panics(
        ops in ops(20),
        payload in vec(any::<u8>(), 0..300),
    ) {
        let mut machine = ClusterStateMachine::new(small_limits());
        let mut driver = Driver::new(small_limits());
        run_both(&mut machine, &mut driver, &ops)?;
        // Keep the header, replace the payload, and make length and crc agree with it.
        let mut bytes = machine.snapshot()[..22].to_vec();
        bytes.extend_from_slice(&payload);
        super::snapshot::tests_support::reseal(&mut bytes);
        if let Ok(restored) = ClusterStateMachine::restore(&bytes) {
            prop_assert_eq!(restored.check_invariants(), Ok(()));
        }
    }

    #[test]
    fn any_bit_flip_is_detected(ops in ops(30), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut machine = ClusterStateMachine::new(small_limits());
        let mut driver = Driver::new(small_limits());
        run_both(&mut machine, &mut driver, &ops)?;
        let mut bytes = machine.snapshot();
        let at = position.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let error = ClusterStateMachine::restore(&bytes).err();
        match at {
            0..8 => prop_assert_eq!(error, Some(SnapshotError::BadMagic)),
            10..18 => prop_assert!(matches!(error, Some(SnapshotError::Malformed(_))), "{:?}", error),
            _ => prop_assert!(
                matches!(error, Some(SnapshotError::ChecksumMismatch { .. })),
                "{:?}",
                error
            ),
        }
    }

    #[test]
    fn flipped_bytes_with_a_fixed_checksum_never_panic(
        ops in ops(30),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut machine = ClusterStateMachine::new(small_limits());
        let mut driver = Driver::new(small_limits());
        run_both(&mut machine, &mut driver, &ops)?;
        let mut bytes = machine.snapshot();
        let payload_len = bytes.len() - 22;
        for (position, xor) in flips {
            let at = 22 + position.index(payload_len);
            bytes[at] ^= xor;
        }
        super::snapshot::tests_support::reseal(&mut bytes);
        if let Ok(restored) = ClusterStateMachine::restore(&bytes) {
            prop_assert_eq!(restored.check_invariants(), Ok(()));
            let again = ClusterStateMachine::restore(&restored.snapshot());
            prop_assert!(again.is_ok());
        }
    }

    #[test]
    fn truncated_snapshots_are_refused(ops in ops(30), keep in any::<prop::sample::Index>()) {
        let mut machine = ClusterStateMachine::new(small_limits());
        let mut driver = Driver::new(small_limits());
        run_both(&mut machine, &mut driver, &ops)?;
        let bytes = machine.snapshot();
        let keep = keep.index(bytes.len());
        prop_assert!(ClusterStateMachine::restore(&bytes[..keep]).is_err());
    }

    #[test]
    fn replicas_fed_the_same_log_stay_identical(ops in ops(60)) {
        // Determinism, including session eviction: two machines, one log, same bytes.
        let mut driver = Driver::new(small_limits());
        let mut a = ClusterStateMachine::new(small_limits());
        let mut b = ClusterStateMachine::new(small_limits());
        for (op, step) in &ops {
            let proposal = driver.proposal(op, *step);
            let _ = driver.model.apply(&proposal);
            prop_assert_eq!(a.apply(&proposal), b.apply(&proposal));
        }
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }
}

#[test]
fn model_limits_are_hit() {
    // Guards the generators: a long random run must reach each table bound.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = ops(300);
    let mut hit: BTreeMap<&str, bool> = BTreeMap::new();
    for _ in 0..100 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut driver = Driver::new(small_limits());
        for (op, step) in &ops {
            let proposal = driver.proposal(op, *step);
            let tokens_before = driver.model.tokens.len();
            let reply = driver.model.apply(&proposal);
            let model = &driver.model;
            *hit.entry("sessions full").or_default() |= model.sessions.len() == 3;
            *hit.entry("servers full").or_default() |= model.servers.len() == 3;
            *hit.entry("processes full").or_default() |= model.processes.len() == 4;
            *hit.entry("kv full").or_default() |= model.kv.len() == 3;
            *hit.entry("tombstones full").or_default() |= model.tombstones.len() == 4;
            // A stored reply: the same pair again with the same command (a retry).
            *hit.entry("duplicate").or_default() |= matches!(op, Op::Client { delta: 0, .. } | Op::Retry)
                && reply.as_ref().is_ok_and(|r| !matches!(r, Reply::SessionOpened { .. }));
            *hit.entry("process registered").or_default() |= matches!(reply, Ok(Reply::ProcessRegistered { .. }));
            *hit.entry("cas swapped").or_default() |= matches!(reply, Ok(Reply::Cas { swapped: true, .. }));
            *hit.entry("cas refused").or_default() |= matches!(reply, Ok(Reply::Cas { swapped: false, .. }));
            *hit.entry("table full").or_default() |= matches!(reply, Err(CommandError::TableFull { .. }));
            *hit.entry("too large").or_default() |= matches!(reply, Err(CommandError::TooLarge { .. }));
            *hit.entry("stale").or_default() |= matches!(reply, Err(CommandError::StaleSequence { .. }));
            *hit.entry("gap").or_default() |= matches!(reply, Err(CommandError::SequenceGap { .. }));
            *hit.entry("expired").or_default() |= matches!(reply, Ok(Reply::Applied { count: 1.., .. }));
            *hit.entry("tombstone aged out").or_default() |= model.tombstones.len() < 4
                && model.tombstones.first().is_some_and(|t| t.left_rev > 1)
                && model.events.iter().filter(|e| matches!(e.kind, EventKind::Departed { .. })).count() > 4;
            *hit.entry("token created").or_default() |= matches!(reply, Ok(Reply::TokenCreated { .. }));
            *hit.entry("member token dropped").or_default() |=
                matches!(op, Op::Leader(_)) && model.tokens.len() < tokens_before;
            *hit.entry("evicted").or_default() |=
                model.next_session > 1 && matches!(reply, Err(CommandError::SessionExpired(SessionId(1))));
            *hit.entry("sequence reused").or_default() |= matches!(reply, Err(CommandError::SequenceReused { .. }));
            *hit.entry("not your session").or_default() |= matches!(reply, Err(CommandError::NotYourSession(_)));
            *hit.entry("session closed").or_default() |= matches!(op, Op::Close { .. }) && reply.is_ok();
        }
    }
    for (what, was_hit) in hit {
        assert!(was_hit, "{what} never happened");
    }
}
