//! `ClusterStateMachine`: the replicated record that Raft feeds, one committed proposal at
//! a time.
//!
//! `apply` is the only mutator and a pure function of the state and the proposal: it reads
//! no clock (time comes in as the proposer's `at_unix_ms`), draws no randomness and
//! iterates only ordered maps, so every replica that applies the same log holds the same
//! state and gives the same replies.
//!
//! Rules, in one place:
//! - Revision. Every applied proposal advances `revision` by exactly one: an opened
//!   session, a leader command, and a client command that passed the session gate (even if
//!   the command itself is refused: the refusal is its stored reply). A request the gate
//!   turns away (a duplicate, a stale or skipping sequence, an unknown session, sequence 0)
//!   changes nothing at all, not even the revision.
//! - Clock. The state machine's clock is the largest `at_unix_ms` applied so far, so it
//!   never runs backwards when leaders' clocks disagree. Tombstones are stamped with it
//!   and pruned by age against it at the start of every applied proposal.
//! - Events. Each visible change produces one `Event` carrying the proposal's revision;
//!   a batched leader command can produce several events with the same revision.
//!   Changes that change nothing (a patch that sets the values already there, a
//!   resource report equal to the stored one, a delete of an absent key) produce none.
//!   `KvPut` always produces one.
//! - Processes outlive their server's record: deregistering or expiring a server does not
//!   remove the processes it hosts; they expire on their own heartbeats. A process must
//!   name a known server only when it registers.
//! - Drain. `SetDrained` is an operator's flag on a live server entry, apart from the
//!   status the server reports of itself: re-registering (a restart) keeps it, a departure
//!   drops it with the entry. Placement (`placement.rs`) never chooses a drained server.
//! - Refusals are checked before anything changes: a refused command changes nothing but
//!   the revision and its session's stored reply. Sizes are checked first, then
//!   existence, then table limits, then the byte budget.
//! - Bytes. The state's bytes (kv, labels, event history, stored replies) are counted as
//!   they change, and a write that would take them past `state_budget_bytes` is refused;
//!   deletes and the cluster's own commands always pass (`budget.rs`).

mod budget;
mod crc32;
mod history;
mod limits;
mod paging;
mod session;
mod snapshot;
mod tokens;
mod tombstones;

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use budget::{ITEM_OVERHEAD_BYTES, StateBytes, StateUsage};
pub use history::EventsCompacted;
pub use limits::{DEFAULT_STATE_BUDGET_BYTES, Limits};
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SnapshotError, UnsealedSnapshot};
pub use tokens::{MAX_TOKEN_NAME_BYTES, MAX_TOKENS, MAX_TOKENS_PER_MEMBER};

use crate::command::{
    Command, CommandError, CommandResult, LeaderCommand, ProcessPatch, Proposal, ProposalBody, Query, Reply,
    ServerPatch, TokenHash, TokenId, TokenInfo, TokenRole,
};
use crate::event::Event;
use crate::event::EventKind;
use crate::ids::{MemberId, ProcessId, ServerId, SessionId};
use crate::model::{
    Departure, MemberStatus, ProcessEntry, ProcessInfo, ResourceAverage, ServerEntry, ServerInfo, Tombstone,
};
use crate::query::{MAX_PAGE_BYTES, QueryReply, QueryResult};
use history::{Change, EventHistory, HistoryBounds};
use limits::{KV_KEYS, PROCESSES, SERVERS};
use session::{Gate, SessionTable};
use std::collections::{BTreeMap, btree_map};
use std::ops::Bound;
use std::sync::Arc;
use tokens::TokenTable;
use tombstones::{DepartedEntry, StoredTombstone, TombstoneLog};

/// The replicated cluster record: servers, processes, a small key/value store, client
/// sessions, tombstones of departed members, and the recent change events.
#[derive(Clone, Debug)]
pub struct ClusterStateMachine {
    limits: Limits,
    /// Number of applied proposals.
    revision: u64,
    /// Largest proposal time applied so far (Unix ms).
    clock_unix_ms: u64,
    /// Id of the next process to register; ids are never reused.
    next_process_id: u64,
    // Entries sit behind `Arc` so the event history and tombstones share them instead of
    // copying, and so the maps' nodes stay small (inline entries made every node an
    // allocation of over a kilobyte).
    servers: BTreeMap<ServerId, Arc<ServerEntry>>,
    processes: BTreeMap<ProcessId, Arc<ProcessEntry>>,
    kv: BTreeMap<String, String>,
    sessions: SessionTable,
    tombstones: TombstoneLog,
    /// Credentials, by the hash of their secret.
    tokens: TokenTable,
    /// Not part of snapshots: a restored machine holds the events after its revision only.
    history: EventHistory,
    /// The cluster's id, once its first leader sealed it (`LeaderCommand::SealCluster`).
    cluster_id: Option<u64>,
    /// Bytes of `kv` (`budget::kv_entry_bytes` summed), kept as it changes.
    kv_bytes: u64,
    /// Bytes of the live processes' labels (`budget::labels_bytes` summed), kept as they change.
    labels_bytes: u64,
}

impl ClusterStateMachine {
    /// An empty state machine at revision 0.
    ///
    /// # Panics
    /// If `limits.check()` fails (`max_sessions` of 0): a configuration bug.
    pub fn new(limits: Limits) -> Self {
        if let Err(reason) = limits.check() {
            panic!("invalid state machine limits: {reason}");
        }
        ClusterStateMachine {
            limits,
            revision: 0,
            clock_unix_ms: 0,
            next_process_id: 1,
            servers: BTreeMap::new(),
            processes: BTreeMap::new(),
            kv: BTreeMap::new(),
            sessions: SessionTable::new(),
            tombstones: TombstoneLog::default(),
            tokens: TokenTable::default(),
            history: EventHistory::starting_at(0),
            cluster_id: None,
            kv_bytes: 0,
            labels_bytes: 0,
        }
    }

    /// Applies one committed proposal and returns its reply. The only mutator.
    pub fn apply(&mut self, proposal: &Proposal) -> CommandResult {
        let reply = match &proposal.body {
            ProposalBody::OpenSession { owner } => {
                let revision = self.begin(proposal.at_unix_ms);
                self.sessions.expire_idle(self.clock_unix_ms, self.limits.session_idle_ms);
                let (session, _evicted) =
                    self.sessions.open(*owner, revision, self.clock_unix_ms, self.limits.max_sessions);
                Ok(Reply::SessionOpened { session })
            }
            ProposalBody::CloseSession { session, by } => {
                // A refused close changes nothing, so the revision does not move.
                self.sessions.close(*session, *by)?;
                let revision = self.begin(proposal.at_unix_ms);
                self.sessions.expire_idle(self.clock_unix_ms, self.limits.session_idle_ms);
                Ok(Reply::Done { revision })
            }
            ProposalBody::Client { request, by } => match self.sessions.gate(request, *by) {
                Gate::Duplicate(stored) => return stored.clone(),
                Gate::Refuse(error) => return Err(error),
                Gate::Apply => {
                    let revision = self.begin(proposal.at_unix_ms);
                    let reply = self.execute(&request.command, revision);
                    let max_reply_bytes = self.limits.session_reply_bytes();
                    self.sessions.record(request, revision, self.clock_unix_ms, reply.clone(), max_reply_bytes);
                    // Only where the revision moves, so equal revisions mean equal states.
                    self.sessions.expire_idle(self.clock_unix_ms, self.limits.session_idle_ms);
                    reply
                }
            },
            ProposalBody::Leader(command) => {
                let revision = self.begin(proposal.at_unix_ms);
                self.execute_leader(command, revision)
            }
            ProposalBody::Audit(record) => {
                let revision = self.begin(proposal.at_unix_ms);
                let mut record = record.clone();
                truncate_utf8(&mut record.by, self.limits.max_name_bytes);
                truncate_utf8(&mut record.role, self.limits.max_name_bytes);
                truncate_utf8(&mut record.action, AUDIT_ACTION_MAX_BYTES);
                self.emit(revision, Change::Other(Box::new(EventKind::Audit(record))));
                Ok(Reply::Done { revision })
            }
        };
        self.debug_check_bounds();
        reply
    }

    /// Answers a read at the current revision.
    pub fn query(&self, query: &Query) -> QueryReply {
        let result = match query {
            Query::GetServer(id) => QueryResult::Server(self.get_server(*id).cloned()),
            Query::GetProcess(id) => QueryResult::Process(self.get_process(*id).cloned()),
            Query::List { filter, after, limit } => {
                let (servers, processes, next) = self.list_page(filter, *after, *limit, MAX_PAGE_BYTES);
                QueryResult::Members {
                    servers: servers.into_iter().cloned().collect(),
                    processes: processes.into_iter().cloned().collect(),
                    next,
                }
            }
            Query::KvGet { key } => QueryResult::KvValue(self.kv.get(key).cloned()),
            Query::KvRange { start, end, limit } => {
                let (items, next) = self.kv_page(start, end.as_deref(), *limit, MAX_PAGE_BYTES);
                QueryResult::KvItems { items, next }
            }
            Query::Tombstones { limit } => QueryResult::Tombstones(self.tombstone_page(*limit)),
            Query::Tokens { after, limit } => {
                let (tokens, next) = self.token_page(*after, *limit, MAX_PAGE_BYTES);
                QueryResult::Tokens { tokens, next }
            }
        };
        QueryReply { revision: self.revision, result }
    }

    /// Number of applied proposals; the revision every event and reply refers to.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The replicated byte budget (`LeaderCommand::SetStateBudget`).
    pub fn state_budget_bytes(&self) -> u64 {
        self.limits.state_budget_bytes
    }

    /// The cluster's id, once sealed.
    pub fn cluster_id(&self) -> Option<u64> {
        self.cluster_id
    }

    /// Forgets the id, for a backup that seeds a new cluster: its first leader seals one
    /// of its own, so a restored cluster is never taken for the one it was saved from.
    pub fn forget_cluster_id(&mut self) {
        self.cluster_id = None;
    }

    /// Largest proposal time applied so far (Unix ms); tombstone ages are measured to it.
    pub fn clock_unix_ms(&self) -> u64 {
        self.clock_unix_ms
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The bytes the state uses, by part: exact running counts, the same on every replica
    /// at the same revision.
    pub fn state_bytes(&self) -> StateBytes {
        StateBytes {
            kv: self.kv_bytes,
            events: self.history.bytes(),
            replies: self.sessions.reply_bytes(),
            labels: self.labels_bytes,
        }
    }

    /// The budget, what uses it, and whether its alarm is on (status, `/metrics`, `/readyz`).
    pub fn state_usage(&self) -> StateUsage {
        let used = self.state_bytes();
        StateUsage { budget_bytes: self.limits.state_budget_bytes, used, alarm: budget::alarm(&self.limits, used) }
    }

    /// The state's bytes counted again from scratch, item by item: `state_bytes` must
    /// always equal it. O(size).
    pub fn recount_state_bytes(&self) -> Result<StateBytes, String> {
        Ok(StateBytes {
            kv: self.kv.iter().map(|(key, value)| budget::kv_entry_bytes(key, value)).sum(),
            events: self.history.recount_bytes()?,
            replies: self.sessions.recount_reply_bytes(),
            labels: self.processes.values().map(|entry| budget::labels_bytes(&entry.info.labels)).sum(),
        })
    }

    /// The events with a revision above `revision`, oldest first, each built as it is
    /// read; `Err` if the bounded history no longer holds all of them (re-read the state,
    /// then resume after the revision that read returned).
    pub fn events_after(&self, revision: u64) -> Result<impl DoubleEndedIterator<Item = Event> + '_, EventsCompacted> {
        self.history.after(revision)
    }

    /// Every live server and process; the leader's liveness tracker is seeded from it.
    pub fn members(&self) -> impl Iterator<Item = MemberId> + '_ {
        let servers = self.servers.keys().map(|id| MemberId::Server(*id));
        servers.chain(self.processes.keys().map(|id| MemberId::Process(*id)))
    }

    /// Whether `member` is live in the record.
    pub fn contains_member(&self, member: MemberId) -> bool {
        match member {
            MemberId::Server(id) => self.get_server(id).is_some(),
            MemberId::Process(id) => self.get_process(id).is_some(),
        }
    }

    /// Servers in id order.
    pub fn servers(&self) -> impl Iterator<Item = &ServerEntry> + '_ {
        self.servers.values().map(|entry| &**entry)
    }

    /// Processes in id order.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessEntry> + '_ {
        self.processes.values().map(|entry| &**entry)
    }

    pub fn get_server(&self, id: ServerId) -> Option<&ServerEntry> {
        self.servers.get(&id).map(|entry| &**entry)
    }

    pub fn get_process(&self, id: ProcessId) -> Option<&ProcessEntry> {
        self.processes.get(&id).map(|entry| &**entry)
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    pub fn kv_get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }

    pub fn kv_len(&self) -> usize {
        self.kv.len()
    }

    /// Keys in `[start, end)` in key order, at most `limit` of them; `end = None` runs to
    /// the last key, and an `end` at or before `start` gives nothing.
    pub fn kv_range<'a>(
        &'a self,
        start: &'a str,
        end: Option<&'a str>,
        limit: u32,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        // BTreeMap::range panics on an inverted range, so an empty one stands in for it.
        let upper = match end {
            Some(end) if end <= start => Bound::Excluded(start),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        self.kv
            .range::<str, _>((Bound::Included(start), upper))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// Tombstones, newest first, each built as it is read.
    pub fn tombstones(&self) -> impl Iterator<Item = Tombstone> + '_ {
        self.tombstones.newest_first().map(StoredTombstone::to_tombstone)
    }

    /// The credential whose secret hashes to `hash`, if the cluster knows it.
    pub fn token_by_hash(&self, hash: &TokenHash) -> Option<&TokenInfo> {
        self.tokens.get_by_hash(hash)
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sequence of the last applied command of `session` (0 before the first), or `None`
    /// if the session is unknown or was evicted.
    pub fn session_last_seq(&self, session: SessionId) -> Option<u64> {
        self.sessions.get(session).map(|record| record.last_seq)
    }

    /// A versioned, checksummed image of the replicated state (not the event history).
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode_into(self, Vec::with_capacity(64 * 1024)).seal()
    }

    /// `snapshot`, appended to `out` and not yet checksummed: a caller that wraps the
    /// image in its own header writes both into one buffer (no second copy of a large
    /// state), and seals it after releasing whatever lock guards this machine.
    pub fn snapshot_into(&self, out: Vec<u8>) -> UnsealedSnapshot {
        snapshot::encode_into(self, out)
    }

    /// The state machine a `snapshot` was taken of; it gives the same replies to the same
    /// proposals. Its event history starts empty at the snapshot's revision.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        snapshot::decode(bytes)
    }

    /// Checks every invariant of the record; `Err` names the first one broken. O(size):
    /// `restore` and tests call it, `apply` checks only what it touched.
    pub fn check_invariants(&self) -> Result<(), String> {
        let limits = &self.limits;
        limits.check()?;
        if self.servers.len() > limits.max_servers {
            return Err(format!("{} servers exceed the limit", self.servers.len()));
        }
        if self.processes.len() > limits.max_processes {
            return Err(format!("{} processes exceed the limit", self.processes.len()));
        }
        if self.kv.len() > limits.max_kv_keys {
            return Err(format!("{} keys exceed the limit", self.kv.len()));
        }
        let revs_ok = |registered: u64, updated: u64| registered <= updated && updated <= self.revision;
        for (id, entry) in &self.servers {
            if entry.id != *id || !revs_ok(entry.registered_rev, entry.updated_rev) {
                return Err(format!("{id} is inconsistent"));
            }
        }
        for (id, entry) in &self.processes {
            if entry.id != *id || !revs_ok(entry.registered_rev, entry.updated_rev) {
                return Err(format!("{id} is inconsistent"));
            }
            if id.0 == 0 || id.0 >= self.next_process_id {
                return Err(format!("{id} is outside the issued range"));
            }
        }
        self.sessions.check(self.revision, limits.max_sessions)?;
        self.tokens.check()?;
        for record in self.tokens.records() {
            if let TokenRole::Member(member) = record.info.role
                && !self.contains_member(member)
            {
                return Err(format!("{} outlives its {member}", record.info.id));
            }
        }
        self.tombstones.check(
            self.clock_unix_ms,
            self.revision,
            limits.tombstone_max_count,
            limits.tombstone_max_age_ms,
        )?;
        if self.history.len() > limits.event_history {
            return Err("event history exceeds its limit".to_string());
        }
        let recounted = self.recount_state_bytes()?;
        if recounted != self.state_bytes() {
            return Err(format!("state bytes counted as {} but a recount finds {recounted}", self.state_bytes()));
        }
        if recounted.events > limits.event_history_bytes() {
            return Err(format!("event history holds {} bytes, over its cap", recounted.events));
        }
        if recounted.replies > limits.session_reply_bytes() {
            return Err(format!("stored replies hold {} bytes, over their cap", recounted.replies));
        }
        Ok(())
    }

    // ----- applying -----

    /// Starts an applied proposal: the next revision, the clock, age-based pruning.
    fn begin(&mut self, at_unix_ms: u64) -> u64 {
        self.revision += 1;
        self.clock_unix_ms = self.clock_unix_ms.max(at_unix_ms);
        self.tombstones.prune(self.clock_unix_ms, self.limits.tombstone_max_age_ms);
        self.revision
    }

    fn debug_check_bounds(&self) {
        let limits = &self.limits;
        debug_assert!(self.servers.len() <= limits.max_servers);
        debug_assert!(self.processes.len() <= limits.max_processes);
        debug_assert!(self.kv.len() <= limits.max_kv_keys);
        debug_assert!(self.sessions.len() <= limits.max_sessions);
        debug_assert!(self.tombstones.len() <= limits.tombstone_max_count);
        debug_assert!(self.history.len() <= limits.event_history);
    }

    fn emit(&mut self, revision: u64, change: Change) {
        debug_assert_eq!(revision, self.revision, "events carry the revision being applied");
        let bounds =
            HistoryBounds { max_events: self.limits.event_history, max_bytes: self.limits.event_history_bytes() };
        self.history.push(revision, change, bounds);
    }

    fn execute(&mut self, command: &Command, revision: u64) -> CommandResult {
        match command {
            Command::RegisterServer { id, info } => self.register_server(*id, info, revision),
            Command::DeregisterServer { id } => {
                let departure = Departure::Deregistered { exit_status: None };
                self.depart_or_refuse(MemberId::Server(*id), departure, revision)
            }
            Command::RegisterProcess { info } => self.register_process(info, revision),
            Command::DeregisterProcess { id, exit_status } => {
                let departure = Departure::Deregistered { exit_status: *exit_status };
                self.depart_or_refuse(MemberId::Process(*id), departure, revision)
            }
            Command::PutServer { id, patch, create } => self.put_server(*id, patch, create.as_ref(), revision),
            Command::PutProcess { id, patch } => self.put_process(*id, patch, revision),
            Command::Delete { member } => self.depart_or_refuse(*member, Departure::Deleted, revision),
            Command::KvPut { key, value } => self.kv_put(key, value, revision),
            Command::KvDelete { key } => self.kv_delete(key, revision),
            Command::KvCas { key, expected, new } => self.kv_cas(key, expected.as_deref(), new.as_ref(), revision),
            Command::Noop => Ok(Reply::Done { revision }),
            Command::SetDrained { id, drained } => self.set_drained(*id, *drained, revision),
            Command::CreateToken { hash, name, role, expires_at_unix_ms } => {
                self.create_token(*hash, name, *role, *expires_at_unix_ms, revision)
            }
            Command::RevokeToken { id } => self.revoke_token(*id, revision),
        }
    }

    fn execute_leader(&mut self, command: &LeaderCommand, revision: u64) -> CommandResult {
        let mut count: usize = 0;
        match command {
            LeaderCommand::Expire { members } => {
                for &(member, silent_for_ms) in members {
                    let departure = Departure::Expired { silent_for_ms };
                    if self.depart(member, departure, revision) {
                        count += 1;
                    }
                }
            }
            LeaderCommand::ReportResources { reports } => {
                for (id, average) in reports {
                    if self.report_resources(*id, *average, revision) {
                        count += 1;
                    }
                }
            }
            LeaderCommand::ReportMemberResources { reports } => {
                for (member, average) in reports {
                    let recorded = match member {
                        MemberId::Server(id) => self.report_resources(*id, *average, revision),
                        MemberId::Process(id) => self.report_process_resources(*id, *average, revision),
                    };
                    if recorded {
                        count += 1;
                    }
                }
            }
            LeaderCommand::SealCluster { id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(*id);
                    count = 1;
                }
            }
            LeaderCommand::SetStateBudget { bytes } => {
                let limits = Limits { state_budget_bytes: *bytes, ..self.limits.clone() };
                if *bytes != self.limits.state_budget_bytes && limits.check().is_ok() {
                    self.limits = limits;
                    self.history.trim(self.limits.event_history_bytes());
                    self.sessions.trim(self.limits.session_reply_bytes());
                    count = 1;
                }
            }
        }
        Ok(Reply::Applied { count: u32::try_from(count).unwrap_or(u32::MAX), revision })
    }

    fn register_server(&mut self, id: ServerId, info: &ServerInfo, revision: u64) -> CommandResult {
        self.limits.check_server_info(info)?;
        if let Some(slot) = self.servers.get_mut(&id) {
            // A restart: same id, fresh info, online again; its resources stay until the
            // leader reports new ones, and an operator's drain stays until undrained.
            let entry = Arc::make_mut(slot);
            entry.info.clone_from(info);
            entry.status = MemberStatus::Online;
            entry.updated_rev = revision;
            let change = Change::ServerUpdated(Arc::clone(slot));
            self.emit(revision, change);
        } else {
            self.check_room_for_server()?;
            self.insert_server(new_server(id, info.clone(), revision), revision);
        }
        Ok(Reply::Done { revision })
    }

    fn put_server(
        &mut self,
        id: ServerId,
        patch: &ServerPatch,
        create: Option<&ServerInfo>,
        revision: u64,
    ) -> CommandResult {
        self.limits.check_server_patch(patch)?;
        if let Some(slot) = self.servers.get_mut(&id) {
            // Copy-on-write only when something changes: the history may share the entry.
            if server_patch_changes(slot, patch) {
                let entry = Arc::make_mut(slot);
                patch_server(entry, patch);
                entry.updated_rev = revision;
                let change = Change::ServerUpdated(Arc::clone(slot));
                self.emit(revision, change);
            }
            return Ok(Reply::Done { revision });
        }
        let Some(info) = create else {
            return Err(CommandError::UnknownMember(MemberId::Server(id)));
        };
        self.limits.check_server_info(info)?;
        self.check_room_for_server()?;
        let mut entry = new_server(id, info.clone(), revision);
        patch_server(&mut entry, patch);
        self.insert_server(entry, revision);
        Ok(Reply::Done { revision })
    }

    fn set_drained(&mut self, id: ServerId, drained: bool, revision: u64) -> CommandResult {
        let Some(slot) = self.servers.get_mut(&id) else {
            return Err(CommandError::UnknownMember(MemberId::Server(id)));
        };
        if slot.drained != drained {
            let entry = Arc::make_mut(slot);
            entry.drained = drained;
            entry.updated_rev = revision;
            let change = Change::ServerUpdated(Arc::clone(slot));
            self.emit(revision, change);
        }
        Ok(Reply::Done { revision })
    }

    fn check_room_for_server(&self) -> Result<(), CommandError> {
        if self.servers.len() >= self.limits.max_servers {
            return Err(CommandError::TableFull { what: SERVERS.to_string(), count: self.servers.len() });
        }
        Ok(())
    }

    fn insert_server(&mut self, entry: ServerEntry, revision: u64) {
        let entry = Arc::new(entry);
        let previous = self.servers.insert(entry.id, Arc::clone(&entry));
        assert!(previous.is_none(), "insert_server is for new servers only");
        self.emit(revision, Change::ServerRegistered(entry));
    }

    fn register_process(&mut self, info: &ProcessInfo, revision: u64) -> CommandResult {
        self.limits.check_process_info(info)?;
        if !self.servers.contains_key(&info.server) {
            return Err(CommandError::UnknownServer(info.server));
        }
        if self.processes.len() >= self.limits.max_processes {
            return Err(CommandError::TableFull { what: PROCESSES.to_string(), count: self.processes.len() });
        }
        let labels = budget::labels_bytes(&info.labels);
        let event = budget::process_event_bytes(&info.name, &info.service_host, labels);
        budget::check_room(&self.limits, self.state_bytes(), labels + event)?;
        self.labels_bytes += labels;
        let id = ProcessId(self.next_process_id);
        self.next_process_id += 1;
        let entry = Arc::new(ProcessEntry {
            id,
            info: info.clone(),
            status: MemberStatus::Online,
            resources: None,
            registered_rev: revision,
            updated_rev: revision,
        });
        let previous = self.processes.insert(id, Arc::clone(&entry));
        assert!(previous.is_none(), "process ids are never reused");
        self.emit(revision, Change::ProcessRegistered(entry));
        Ok(Reply::ProcessRegistered { id, revision })
    }

    fn put_process(&mut self, id: ProcessId, patch: &ProcessPatch, revision: u64) -> CommandResult {
        let Some(current) = self.processes.get(&id) else {
            return Err(CommandError::UnknownMember(MemberId::Process(id)));
        };
        // Checked against the labels it merges into, so existence comes first here.
        self.limits.check_process_patch(patch, &current.info.labels)?;
        // Only a patch that adds label bytes can be refused for the budget: a status, a
        // name or a removed label always passes.
        let growth = budget::labels_growth(&current.info.labels, &patch.labels);
        if growth > 0 {
            let name = patch.name.as_deref().unwrap_or(&current.info.name);
            let host = patch.service_host.as_deref().unwrap_or(&current.info.service_host);
            let labels = budget::labels_bytes(&current.info.labels) + growth.unsigned_abs();
            let event = budget::process_event_bytes(name, host, labels);
            budget::check_room(&self.limits, self.state_bytes(), growth.unsigned_abs() + event)?;
        }
        let slot = self.processes.get_mut(&id).expect("found above");
        if process_patch_changes(slot, patch) {
            self.labels_bytes = self.labels_bytes.checked_add_signed(growth).expect("labels counted on the way in");
            let entry = Arc::make_mut(slot);
            patch_process(entry, patch);
            entry.updated_rev = revision;
            debug_assert!(entry.info.labels.len() <= self.limits.max_labels);
            let change = Change::ProcessUpdated(Arc::clone(slot));
            self.emit(revision, change);
        }
        Ok(Reply::Done { revision })
    }

    fn report_resources(&mut self, id: ServerId, average: ResourceAverage, revision: u64) -> bool {
        let Some(slot) = self.servers.get_mut(&id) else {
            return false;
        };
        if slot.resources != Some(average) {
            let entry = Arc::make_mut(slot);
            entry.resources = Some(average);
            entry.updated_rev = revision;
            let change = Change::ServerUpdated(Arc::clone(slot));
            self.emit(revision, change);
        }
        true
    }

    fn report_process_resources(&mut self, id: ProcessId, average: ResourceAverage, revision: u64) -> bool {
        let Some(slot) = self.processes.get_mut(&id) else {
            return false;
        };
        if slot.resources != Some(average) {
            let entry = Arc::make_mut(slot);
            entry.resources = Some(average);
            entry.updated_rev = revision;
            let change = Change::ProcessUpdated(Arc::clone(slot));
            self.emit(revision, change);
        }
        true
    }

    fn depart_or_refuse(&mut self, member: MemberId, departure: Departure, revision: u64) -> CommandResult {
        if !self.depart(member, departure, revision) {
            return Err(CommandError::UnknownMember(member));
        }
        Ok(Reply::Done { revision })
    }

    /// Removes `member` if present, leaving a tombstone; false if it was not there.
    fn depart(&mut self, member: MemberId, departure: Departure, revision: u64) -> bool {
        let subject = match member {
            MemberId::Server(id) => match self.servers.remove(&id) {
                Some(entry) => DepartedEntry::Server(entry),
                None => return false,
            },
            MemberId::Process(id) => match self.processes.remove(&id) {
                Some(entry) => {
                    self.labels_bytes -= budget::labels_bytes(&entry.info.labels);
                    DepartedEntry::Process(entry)
                }
                None => return false,
            },
        };
        let tombstone =
            Arc::new(StoredTombstone { subject, departure, left_at_unix_ms: self.clock_unix_ms, left_rev: revision });
        self.emit(revision, Change::Departed(Arc::clone(&tombstone)));
        self.tombstones.push(tombstone, self.limits.tombstone_max_count);
        // A member's credentials leave with it: a wrapper that outlives its member can
        // speak for nothing. The departure's event says so; the tokens get none of their own.
        self.tokens.remove_member(member);
        true
    }

    fn create_token(
        &mut self,
        hash: TokenHash,
        name: &str,
        role: TokenRole,
        expires_at_unix_ms: Option<u64>,
        revision: u64,
    ) -> CommandResult {
        self.tokens.check_new(&hash, name, role)?;
        match role {
            TokenRole::Member(member) if !self.contains_member(member) => {
                return Err(CommandError::UnknownMember(member));
            }
            _ => {}
        }
        let info = self.tokens.insert(hash, name, role, expires_at_unix_ms, revision);
        let id = info.id;
        self.emit(revision, Change::Other(Box::new(EventKind::TokenCreated(info))));
        Ok(Reply::TokenCreated { id, revision })
    }

    fn revoke_token(&mut self, id: TokenId, revision: u64) -> CommandResult {
        let info = self.tokens.remove(id).ok_or(CommandError::UnknownToken(id))?;
        self.emit(revision, Change::Other(Box::new(EventKind::TokenRevoked { id, name: info.name })));
        Ok(Reply::Done { revision })
    }

    fn kv_put(&mut self, key: &str, value: &str, revision: u64) -> CommandResult {
        self.limits.check_key(key)?;
        self.limits.check_value(value)?;
        // One search of the map whether the key is new or not: a search of a large map
        // costs more than copying the key.
        let room = self.check_room_for_key();
        let used = self.state_bytes();
        let new_bytes = budget::kv_entry_bytes(key, value);
        match self.kv.entry(key.to_string()) {
            btree_map::Entry::Occupied(mut slot) => {
                let old_bytes = budget::kv_entry_bytes(key, slot.get());
                budget::check_room(&self.limits, used, put_cost(old_bytes, new_bytes))?;
                self.kv_bytes = self.kv_bytes - old_bytes + new_bytes;
                value.clone_into(slot.get_mut());
            }
            btree_map::Entry::Vacant(slot) => {
                room?;
                budget::check_room(&self.limits, used, put_cost(0, new_bytes))?;
                self.kv_bytes += new_bytes;
                slot.insert(value.to_string());
            }
        }
        self.emit(revision, Change::KvPut { key: key.to_string(), value: value.to_string() });
        Ok(Reply::Done { revision })
    }

    fn kv_delete(&mut self, key: &str, revision: u64) -> CommandResult {
        self.limits.check_key(key)?;
        if let Some(old) = self.kv.remove(key) {
            self.kv_bytes -= budget::kv_entry_bytes(key, &old);
            self.emit(revision, Change::KvDeleted { key: key.to_string() });
        }
        Ok(Reply::Done { revision })
    }

    fn kv_cas(&mut self, key: &str, expected: Option<&str>, new: Option<&String>, revision: u64) -> CommandResult {
        self.limits.check_key(key)?;
        if let Some(value) = new {
            self.limits.check_value(value)?;
        }
        let current = self.kv.get(key).cloned();
        if current.as_deref() != expected {
            return Ok(Reply::Cas { swapped: false, current, revision });
        }
        match new {
            Some(value) => {
                if current.is_none() {
                    self.check_room_for_key()?;
                }
                let old_bytes = current.as_deref().map_or(0, |old| budget::kv_entry_bytes(key, old));
                let new_bytes = budget::kv_entry_bytes(key, value);
                budget::check_room(&self.limits, self.state_bytes(), put_cost(old_bytes, new_bytes))?;
                self.kv_bytes = self.kv_bytes - old_bytes + new_bytes;
                self.kv.insert(key.to_string(), value.clone());
                self.emit(revision, Change::KvPut { key: key.to_string(), value: value.clone() });
            }
            None => {
                if let Some(old) = self.kv.remove(key) {
                    self.kv_bytes -= budget::kv_entry_bytes(key, &old);
                    self.emit(revision, Change::KvDeleted { key: key.to_string() });
                }
            }
        }
        Ok(Reply::Cas { swapped: true, current, revision })
    }

    fn check_room_for_key(&self) -> Result<(), CommandError> {
        if self.kv.len() >= self.limits.max_kv_keys {
            return Err(CommandError::TableFull { what: KV_KEYS.to_string(), count: self.kv.len() });
        }
        Ok(())
    }
}

/// What a put adds: its entry's growth, and its event (which holds the key and value, so
/// it costs what the new entry does).
fn put_cost(old_bytes: u64, new_bytes: u64) -> u64 {
    new_bytes.saturating_sub(old_bytes) + new_bytes
}

/// Longest action text an audit record keeps.
const AUDIT_ACTION_MAX_BYTES: usize = 1_024;

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn new_server(id: ServerId, info: ServerInfo, revision: u64) -> ServerEntry {
    ServerEntry {
        id,
        info,
        status: MemberStatus::Online,
        drained: false,
        resources: None,
        registered_rev: revision,
        updated_rev: revision,
    }
}

/// Whether `value` is given and differs from `slot`.
fn differs<T: PartialEq>(slot: &T, value: &Option<T>) -> bool {
    matches!(value, Some(value) if value != slot)
}

/// Whether merging `patch` would change `entry`.
fn server_patch_changes(entry: &ServerEntry, patch: &ServerPatch) -> bool {
    let info = &entry.info;
    differs(&info.name, &patch.name)
        || differs(&info.raft_addr, &patch.raft_addr)
        || differs(&info.api_addr, &patch.api_addr)
        || differs(&info.cpu_capacity_percent, &patch.cpu_capacity_percent)
        || differs(&info.mem_capacity_bytes, &patch.mem_capacity_bytes)
        || differs(&entry.status, &patch.status)
}

/// Whether merging `patch` would change `entry`.
fn process_patch_changes(entry: &ProcessEntry, patch: &ProcessPatch) -> bool {
    let info = &entry.info;
    differs(&info.name, &patch.name)
        || differs(&info.service_host, &patch.service_host)
        || differs(&info.service_port, &patch.service_port)
        || differs(&entry.status, &patch.status)
        || patch.labels.iter().any(|(key, value)| info.labels.get(key) != value.as_ref())
}

/// Sets `slot` to `value` if one is given, reusing `slot`'s allocation.
fn set_field<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        slot.clone_from(value);
    }
}

/// Merges `patch` into `entry`.
fn patch_server(entry: &mut ServerEntry, patch: &ServerPatch) {
    let info = &mut entry.info;
    set_field(&mut info.name, &patch.name);
    set_field(&mut info.raft_addr, &patch.raft_addr);
    set_field(&mut info.api_addr, &patch.api_addr);
    set_field(&mut info.cpu_capacity_percent, &patch.cpu_capacity_percent);
    set_field(&mut info.mem_capacity_bytes, &patch.mem_capacity_bytes);
    set_field(&mut entry.status, &patch.status);
}

/// Merges `patch` into `entry`, labels key by key (`None` removes one).
fn patch_process(entry: &mut ProcessEntry, patch: &ProcessPatch) {
    let info = &mut entry.info;
    set_field(&mut info.name, &patch.name);
    set_field(&mut info.service_host, &patch.service_host);
    set_field(&mut info.service_port, &patch.service_port);
    set_field(&mut entry.status, &patch.status);
    for (key, value) in &patch.labels {
        match (value, info.labels.get_mut(key)) {
            (Some(value), Some(slot)) => slot.clone_from(value),
            (Some(value), None) => {
                info.labels.insert(key.clone(), value.clone());
            }
            (None, _) => {
                info.labels.remove(key);
            }
        }
    }
}
