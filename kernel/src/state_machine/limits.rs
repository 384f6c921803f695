//! Bounds on everything the replicated record holds, and the size checks a command
//! must pass before it may change anything.
//!
//! Limits are part of the replicated behaviour (they decide which commands are refused),
//! so every replica must run with the same ones; they travel inside snapshots for that
//! reason.

use super::AUDIT_ACTION_MAX_BYTES;
use super::budget::ITEM_OVERHEAD_BYTES;
use super::tokens::MAX_TOKEN_NAME_BYTES;
use crate::command::CommandError;
use crate::model::{Labels, ProcessInfo, ServerInfo};
use serde::{Deserialize, Serialize};

/// Bounds of the state machine's tables and of the sizes of what goes in them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Open client sessions; opening one more evicts the least recently used.
    pub max_sessions: usize,
    pub max_servers: usize,
    pub max_processes: usize,
    pub max_kv_keys: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Names, and also host strings and addresses (`raft_addr`, `api_addr`,
    /// `service_host`).
    pub max_name_bytes: usize,
    /// Labels on one process.
    pub max_labels: usize,
    /// Bytes of one label key, and of one label value.
    pub max_label_bytes: usize,
    pub tombstone_max_count: usize,
    /// Tombstones older than this (against the newest proposal time seen) are pruned.
    pub tombstone_max_age_ms: u64,
    /// Events kept for watchers to resume from.
    pub event_history: usize,
    /// A session unused for this long (against the newest proposal time seen) is dropped;
    /// a retry on it is answered `SessionExpired`.
    pub session_idle_ms: u64,
    /// Bytes the replicated state may hold: keys and values, labels, the event history and
    /// stored replies (see `budget.rs`). The history gets at most a quarter of it and the
    /// stored replies at most an eighth.
    pub state_budget_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 100_000,
            max_servers: 10_000,
            max_processes: 1_000_000,
            max_kv_keys: 1_000_000,
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
            max_name_bytes: 256,
            max_labels: 64,
            max_label_bytes: 256,
            tombstone_max_count: 10_000,
            tombstone_max_age_ms: 24 * 60 * 60 * 1000,
            event_history: 100_000,
            session_idle_ms: 24 * 60 * 60 * 1000,
            state_budget_bytes: DEFAULT_STATE_BUDGET_BYTES,
        }
    }
}

impl Limits {
    /// Why these limits cannot run a state machine, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        // Opening a session must always succeed (by evicting), so at least one must fit.
        if self.max_sessions == 0 {
            return Err("max_sessions must be at least 1".to_string());
        }
        // A session must outlive one round trip of its own command.
        if self.session_idle_ms < 1_000 {
            return Err("session_idle_ms must be at least 1000".to_string());
        }
        // The largest event and the largest reply must fit their caps, so eviction always
        // makes room for the newest one.
        let (event, reply) = (self.largest_event_bytes(), self.largest_reply_bytes());
        if self.event_history_bytes() < event || self.session_reply_bytes() < reply {
            return Err(format!(
                "state_budget_bytes {} is too small for these limits: a quarter of it must hold the largest event \
                 ({event} bytes) and an eighth the largest stored reply ({reply} bytes); raise it to at least {}",
                self.state_budget_bytes,
                self.min_state_budget_bytes()
            ));
        }
        Ok(())
    }

    /// Bytes the event history may hold: a quarter of the budget.
    pub fn event_history_bytes(&self) -> u64 {
        self.state_budget_bytes / 4
    }

    /// Bytes the sessions' stored replies may hold: an eighth of the budget.
    pub fn session_reply_bytes(&self) -> u64 {
        self.state_budget_bytes / 8
    }

    /// The smallest budget these limits can run with.
    pub fn min_state_budget_bytes(&self) -> u64 {
        (4 * self.largest_event_bytes()).max(8 * self.largest_reply_bytes())
    }

    /// The most one event can cost: a put of the longest key and value, a process with
    /// the most and longest labels, or an audit record.
    pub(crate) fn largest_event_bytes(&self) -> u64 {
        let (name, label) = (self.max_name_bytes as u64, self.max_label_bytes as u64);
        let kv = (self.max_key_bytes + self.max_value_bytes) as u64;
        let process = 2 * name + self.max_labels as u64 * (ITEM_OVERHEAD_BYTES + 2 * label);
        let audit = 2 * name + AUDIT_ACTION_MAX_BYTES as u64;
        let token = MAX_TOKEN_NAME_BYTES as u64;
        ITEM_OVERHEAD_BYTES + kv.max(process).max(3 * name).max(audit).max(token)
    }

    /// The most one stored reply can cost: a swap's current value, or a refusal's text
    /// (short constant strings, bounded here generously).
    pub(crate) fn largest_reply_bytes(&self) -> u64 {
        ITEM_OVERHEAD_BYTES + (self.max_value_bytes as u64).max(REFUSAL_TEXT_BYTES)
    }

    /// The most one refusable write adds: its entry and its event.
    pub fn largest_write_bytes(&self) -> u64 {
        let kv = ITEM_OVERHEAD_BYTES + (self.max_key_bytes + self.max_value_bytes) as u64;
        let labels = self.max_labels as u64 * (ITEM_OVERHEAD_BYTES + 2 * self.max_label_bytes as u64);
        kv.max(labels) + self.largest_event_bytes()
    }
}

/// The default budget, 512 MiB: a quarter of etcd's default 2 GiB quota, because Roster
/// holds the whole state in memory on every node, and a snapshot (a copy of the state,
/// then its encoding) peaks at about three times it; see docs/budget.md.
pub const DEFAULT_STATE_BUDGET_BYTES: u64 = 512 * 1024 * 1024;

/// An allowance for the text a stored refusal carries (field names and reasons).
const REFUSAL_TEXT_BYTES: u64 = 256;

// The names that refusals carry.
pub(crate) const SERVER_NAME: &str = "server name";
pub(crate) const PROCESS_NAME: &str = "process name";
pub(crate) const RAFT_ADDR: &str = "raft_addr";
pub(crate) const API_ADDR: &str = "api_addr";
pub(crate) const SERVICE_HOST: &str = "service_host";
pub(crate) const KEY: &str = "key";
pub(crate) const VALUE: &str = "value";
pub(crate) const LABEL_KEY: &str = "label key";
pub(crate) const LABEL_VALUE: &str = "label value";
pub(crate) const LABELS: &str = "labels";
pub(crate) const SEQ: &str = "seq";
pub(crate) const SERVERS: &str = "servers";
pub(crate) const PROCESSES: &str = "processes";
pub(crate) const KV_KEYS: &str = "kv keys";

fn too_large(what: &str, len: usize, max: usize) -> CommandError {
    CommandError::TooLarge { what: what.to_string(), len, max }
}

fn empty(field: &str) -> CommandError {
    CommandError::InvalidField { field: field.to_string(), reason: "must not be empty".to_string() }
}

fn check_len(what: &str, text: &str, max: usize) -> Result<(), CommandError> {
    if text.len() > max {
        return Err(too_large(what, text.len(), max));
    }
    Ok(())
}

/// A name: not empty, at most `max_name_bytes`.
fn check_name(what: &str, text: &str, limits: &Limits) -> Result<(), CommandError> {
    if text.is_empty() {
        return Err(empty(what));
    }
    check_len(what, text, limits.max_name_bytes)
}

impl Limits {
    pub(crate) fn check_server_info(&self, info: &ServerInfo) -> Result<(), CommandError> {
        check_name(SERVER_NAME, &info.name, self)?;
        check_len(RAFT_ADDR, &info.raft_addr, self.max_name_bytes)?;
        check_len(API_ADDR, &info.api_addr, self.max_name_bytes)
    }

    pub(crate) fn check_server_patch(&self, patch: &crate::command::ServerPatch) -> Result<(), CommandError> {
        if let Some(name) = &patch.name {
            check_name(SERVER_NAME, name, self)?;
        }
        if let Some(addr) = &patch.raft_addr {
            check_len(RAFT_ADDR, addr, self.max_name_bytes)?;
        }
        if let Some(addr) = &patch.api_addr {
            check_len(API_ADDR, addr, self.max_name_bytes)?;
        }
        Ok(())
    }

    pub(crate) fn check_process_info(&self, info: &ProcessInfo) -> Result<(), CommandError> {
        check_name(PROCESS_NAME, &info.name, self)?;
        check_len(SERVICE_HOST, &info.service_host, self.max_name_bytes)?;
        self.check_labels(&info.labels)
    }

    fn check_label(&self, key: &str, value: Option<&str>) -> Result<(), CommandError> {
        if key.is_empty() {
            return Err(empty(LABEL_KEY));
        }
        check_len(LABEL_KEY, key, self.max_label_bytes)?;
        if let Some(value) = value {
            check_len(LABEL_VALUE, value, self.max_label_bytes)?;
        }
        Ok(())
    }

    pub(crate) fn check_labels(&self, labels: &Labels) -> Result<(), CommandError> {
        for (key, value) in labels {
            self.check_label(key, Some(value))?;
        }
        if labels.len() > self.max_labels {
            return Err(too_large(LABELS, labels.len(), self.max_labels));
        }
        Ok(())
    }

    /// Checks a process patch against the labels it would merge into.
    pub(crate) fn check_process_patch(
        &self,
        patch: &crate::command::ProcessPatch,
        current: &Labels,
    ) -> Result<(), CommandError> {
        if let Some(name) = &patch.name {
            check_name(PROCESS_NAME, name, self)?;
        }
        if let Some(host) = &patch.service_host {
            check_len(SERVICE_HOST, host, self.max_name_bytes)?;
        }
        let mut count = current.len();
        for (key, value) in &patch.labels {
            self.check_label(key, value.as_deref())?;
            match (value.is_some(), current.contains_key(key)) {
                (true, false) => count += 1,
                (false, true) => count -= 1,
                _ => {}
            }
        }
        if count > self.max_labels {
            return Err(too_large(LABELS, count, self.max_labels));
        }
        Ok(())
    }

    pub(crate) fn check_key(&self, key: &str) -> Result<(), CommandError> {
        if key.is_empty() {
            return Err(empty(KEY));
        }
        check_len(KEY, key, self.max_key_bytes)
    }

    pub(crate) fn check_value(&self, value: &str) -> Result<(), CommandError> {
        check_len(VALUE, value, self.max_value_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_usable() {
        assert_eq!(Limits::default().check(), Ok(()));
        let zero = Limits { max_sessions: 0, ..Limits::default() };
        assert!(zero.check().is_err());
    }

    #[test]
    fn a_budget_too_small_for_the_largest_event_or_reply_is_refused() {
        let limits = Limits::default();
        let min = limits.min_state_budget_bytes();
        assert_eq!(Limits { state_budget_bytes: min, ..limits.clone() }.check(), Ok(()));
        let error = Limits { state_budget_bytes: min - 1, ..limits }.check().unwrap_err();
        assert!(error.contains(&format!("at least {min}")), "{error}");
        assert!(DEFAULT_STATE_BUDGET_BYTES >= 100 * min, "the default leaves room for many writes");
    }
}
