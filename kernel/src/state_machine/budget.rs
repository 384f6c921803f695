//! The byte budget of the replicated state (`Limits::state_budget_bytes`), like etcd's
//! quota and its NOSPACE alarm.
//!
//! Rules, in one place:
//! - What counts. Four parts, each an exact running count kept by `apply`: the key/value
//!   store, the labels of live processes, the event history, and the replies stored for
//!   sessions. Every item costs its payload bytes (the strings it holds) plus
//!   [`ITEM_OVERHEAD_BYTES`] for its slot in a map or queue. The sizes are functions of
//!   replicated values only, so every replica, and every replay of the log, counts the
//!   same bytes at the same revision.
//! - The history's count survives a snapshot. A snapshot carries the history's ledger (the
//!   revision and size of each event it holds), not the events, so a restored machine
//!   counts and evicts exactly as the machine it was taken from.
//! - Caps within the budget. The event history holds at most a quarter of the budget and
//!   the stored replies at most an eighth; past that, the oldest events, and the least
//!   recently used sessions, are dropped first. Without the caps a history full of old
//!   events would hold the budget forever, since only new events push old ones out.
//! - What is refused. A put of a key (`KvPut`, a swapping `KvCas`), registering a process
//!   and a patch that adds label bytes are refused with `CommandError::OverBudget` when the
//!   bytes in use plus what the write would add (its entry's growth and its event) exceed
//!   the budget. The refusal is decided in `apply`, before anything changes, from counts
//!   that every replica shares, so every replica and every replay refuses the same writes.
//! - What always passes. Deletes, deregistrations, expiries, resource reports (heartbeats),
//!   server registrations, drains, tokens and audit records are never refused for bytes:
//!   they are how an operator frees room or how the cluster keeps running. Their events
//!   and replies may take the count past the budget; the caps above bound that.
//! - The alarm. It is on while the largest write the limits allow would be refused
//!   ([`Limits::largest_write_bytes`]): writes may fail until something is deleted.

use super::history::Change;
use super::limits::Limits;
use super::tombstones::DepartedEntry;
use crate::command::{CommandError, CommandResult, Reply};
use crate::event::EventKind;
use crate::model::{Labels, ProcessEntry, ServerEntry};
use serde::{Deserialize, Serialize};

/// What each item costs beside its payload: roughly a map node or queue slot.
pub const ITEM_OVERHEAD_BYTES: u64 = 32;

/// The bytes the replicated state uses, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBytes {
    /// Keys and values.
    pub kv: u64,
    /// The event history that watchers resume from.
    pub events: u64,
    /// Replies stored for sessions (exactly-once retries).
    pub replies: u64,
    /// Labels of live processes.
    pub labels: u64,
}

impl StateBytes {
    pub fn total(&self) -> u64 {
        self.kv + self.events + self.replies + self.labels
    }
}

impl std::fmt::Display for StateBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kv {} B, events {} B, replies {} B, labels {} B", self.kv, self.events, self.replies, self.labels)
    }
}

/// The budget, what uses it, and whether the alarm is on: what status and `/metrics` show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateUsage {
    pub budget_bytes: u64,
    pub used: StateBytes,
    /// The largest allowed write would be refused now.
    pub alarm: bool,
}

fn len(text: &str) -> u64 {
    text.len() as u64
}

/// One key/value entry.
pub(crate) fn kv_entry_bytes(key: &str, value: &str) -> u64 {
    ITEM_OVERHEAD_BYTES + len(key) + len(value)
}

/// The labels of one process.
pub(crate) fn labels_bytes(labels: &Labels) -> u64 {
    labels.iter().map(|(key, value)| ITEM_OVERHEAD_BYTES + len(key) + len(value)).sum()
}

/// What merging `patch` into `current` changes the labels' bytes by.
pub(crate) fn labels_growth(current: &Labels, patch: &std::collections::BTreeMap<String, Option<String>>) -> i64 {
    let entry = |key: &str, value: &str| (ITEM_OVERHEAD_BYTES + len(key) + len(value)) as i64;
    patch
        .iter()
        .map(|(key, value)| {
            let before = current.get(key).map_or(0, |old| entry(key, old));
            let after = value.as_deref().map_or(0, |new| entry(key, new));
            after - before
        })
        .sum()
}

fn server_payload(entry: &ServerEntry) -> u64 {
    len(&entry.info.name) + len(&entry.info.raft_addr) + len(&entry.info.api_addr)
}

fn process_payload(entry: &ProcessEntry) -> u64 {
    len(&entry.info.name) + len(&entry.info.service_host) + labels_bytes(&entry.info.labels)
}

/// The event of a process with this name, host and bytes of labels.
pub(crate) fn process_event_bytes(name: &str, service_host: &str, labels_bytes: u64) -> u64 {
    ITEM_OVERHEAD_BYTES + len(name) + len(service_host) + labels_bytes
}

fn kind_payload(kind: &EventKind) -> u64 {
    match kind {
        EventKind::ServerRegistered(entry) | EventKind::ServerUpdated(entry) => server_payload(entry),
        EventKind::ProcessRegistered(entry) | EventKind::ProcessUpdated(entry) => process_payload(entry),
        EventKind::Departed { tombstone, .. } => match &tombstone.subject {
            crate::model::TombstoneSubject::Server(entry) => server_payload(entry),
            crate::model::TombstoneSubject::Process(entry) => process_payload(entry),
        },
        EventKind::KvPut { key, value } => len(key) + len(value),
        EventKind::KvDeleted { key } => len(key),
        EventKind::TokenCreated(info) => len(&info.name),
        EventKind::TokenRevoked { name, .. } => len(name),
        EventKind::Audit(record) => len(&record.by) + len(&record.role) + len(&record.action),
    }
}

/// One event in the history.
pub(crate) fn change_bytes(change: &Change) -> u64 {
    let payload = match change {
        Change::ServerRegistered(entry) | Change::ServerUpdated(entry) => server_payload(entry),
        Change::ProcessRegistered(entry) | Change::ProcessUpdated(entry) => process_payload(entry),
        Change::Departed(tombstone) => match &tombstone.subject {
            DepartedEntry::Server(entry) => server_payload(entry),
            DepartedEntry::Process(entry) => process_payload(entry),
        },
        Change::KvPut { key, value } => len(key) + len(value),
        Change::KvDeleted { key } => len(key),
        Change::Other(kind) => kind_payload(kind),
    };
    ITEM_OVERHEAD_BYTES + payload
}

/// One stored reply.
pub(crate) fn reply_bytes(reply: &CommandResult) -> u64 {
    let payload = match reply {
        Ok(Reply::Cas { current: Some(value), .. }) => len(value),
        Ok(_) => 0,
        Err(error) => error_payload(error),
    };
    ITEM_OVERHEAD_BYTES + payload
}

fn error_payload(error: &CommandError) -> u64 {
    match error {
        CommandError::TooLarge { what, .. } | CommandError::TableFull { what, .. } => len(what),
        CommandError::InvalidField { field, reason } => len(field) + len(reason),
        CommandError::Forbidden(forbidden) => len(&forbidden.role) + len(&forbidden.action),
        CommandError::Unauthenticated { reason } => len(reason),
        CommandError::UnknownMember(_)
        | CommandError::UnknownSession(_)
        | CommandError::StaleSequence { .. }
        | CommandError::SequenceGap { .. }
        | CommandError::UnknownServer(_)
        | CommandError::UnknownToken(_)
        | CommandError::DuplicateToken
        | CommandError::SequenceReused { .. }
        | CommandError::SessionExpired(_)
        | CommandError::NotYourSession(_)
        | CommandError::OverBudget { .. } => 0,
    }
}

/// Refuses a write that would add `needed_bytes` to `used` past the budget.
pub(crate) fn check_room(limits: &Limits, used: StateBytes, needed_bytes: u64) -> Result<(), CommandError> {
    if used.total().saturating_add(needed_bytes) > limits.state_budget_bytes {
        return Err(CommandError::OverBudget { budget_bytes: limits.state_budget_bytes, used, needed_bytes });
    }
    Ok(())
}

/// Whether the largest write the limits allow would be refused at `used`.
pub(crate) fn alarm(limits: &Limits, used: StateBytes) -> bool {
    used.total().saturating_add(limits.largest_write_bytes()) > limits.state_budget_bytes
}
