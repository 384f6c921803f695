//! Tombstones of departed members, bounded by count and by age.
//!
//! Zeppelin kept OFFLINE entries forever; here a departure leaves a tombstone that is
//! dropped once there are more than `tombstone_max_count` newer ones or once it is older
//! than `tombstone_max_age_ms`. Age is measured against the state machine's clock: the
//! largest proposal time applied so far, so pruning is a function of the log alone.
//!
//! A tombstone keeps the departed entry by `Arc`: the same allocation the table held and
//! that the departure event shares, so a departure copies no entry.

use crate::ids::MemberId;
use crate::model::{Departure, ProcessEntry, ServerEntry, Tombstone, TombstoneSubject};
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DepartedEntry {
    Server(Arc<ServerEntry>),
    Process(Arc<ProcessEntry>),
}

/// A tombstone as held: `Tombstone` with its entry shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredTombstone {
    pub(crate) subject: DepartedEntry,
    pub(crate) departure: Departure,
    pub(crate) left_at_unix_ms: u64,
    pub(crate) left_rev: u64,
}

impl StoredTombstone {
    pub(crate) fn member(&self) -> MemberId {
        match &self.subject {
            DepartedEntry::Server(entry) => MemberId::Server(entry.id),
            DepartedEntry::Process(entry) => MemberId::Process(entry.id),
        }
    }

    /// The tombstone as the shared types spell it (copies the entry).
    pub(crate) fn to_tombstone(&self) -> Tombstone {
        let subject = match &self.subject {
            DepartedEntry::Server(entry) => TombstoneSubject::Server(ServerEntry::clone(entry)),
            DepartedEntry::Process(entry) => TombstoneSubject::Process(ProcessEntry::clone(entry)),
        };
        Tombstone {
            subject,
            departure: self.departure.clone(),
            left_at_unix_ms: self.left_at_unix_ms,
            left_rev: self.left_rev,
        }
    }

    pub(crate) fn from_tombstone(tombstone: Tombstone) -> Self {
        let subject = match tombstone.subject {
            TombstoneSubject::Server(entry) => DepartedEntry::Server(Arc::new(entry)),
            TombstoneSubject::Process(entry) => DepartedEntry::Process(Arc::new(entry)),
        };
        StoredTombstone {
            subject,
            departure: tombstone.departure,
            left_at_unix_ms: tombstone.left_at_unix_ms,
            left_rev: tombstone.left_rev,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TombstoneLog {
    /// Oldest first. `left_at_unix_ms` and `left_rev` never decrease front to back,
    /// because tombstones are stamped with the state machine's monotonic clock.
    entries: VecDeque<Arc<StoredTombstone>>,
}

impl TombstoneLog {
    pub(crate) fn from_oldest_first(entries: VecDeque<Arc<StoredTombstone>>) -> Self {
        TombstoneLog { entries }
    }

    pub(crate) fn oldest_first(&self) -> impl ExactSizeIterator<Item = &StoredTombstone> {
        self.entries.iter().map(|tombstone| &**tombstone)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn newest_first(&self) -> impl Iterator<Item = &StoredTombstone> {
        self.entries.iter().rev().map(|tombstone| &**tombstone)
    }

    /// Adds the newest tombstone, dropping the oldest beyond `max_count`.
    pub(crate) fn push(&mut self, tombstone: Arc<StoredTombstone>, max_count: usize) {
        if let Some(newest) = self.entries.back() {
            assert!(newest.left_at_unix_ms <= tombstone.left_at_unix_ms, "clock is monotonic");
            assert!(newest.left_rev <= tombstone.left_rev, "revisions only grow");
        }
        self.entries.push_back(tombstone);
        while self.entries.len() > max_count {
            self.entries.pop_front();
        }
    }

    /// Drops tombstones older than `max_age_ms` at `now_unix_ms`.
    pub(crate) fn prune(&mut self, now_unix_ms: u64, max_age_ms: u64) {
        while let Some(oldest) = self.entries.front() {
            if now_unix_ms.saturating_sub(oldest.left_at_unix_ms) <= max_age_ms {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// Checks order and bounds against the state machine's clock and revision.
    pub(crate) fn check(
        &self,
        now_unix_ms: u64,
        revision: u64,
        max_count: usize,
        max_age_ms: u64,
    ) -> Result<(), String> {
        if self.entries.len() > max_count {
            return Err(format!("{} tombstones exceed the limit {max_count}", self.entries.len()));
        }
        let mut previous: Option<&StoredTombstone> = None;
        for tombstone in self.oldest_first() {
            if let Some(previous) = previous
                && (previous.left_at_unix_ms > tombstone.left_at_unix_ms || previous.left_rev > tombstone.left_rev)
            {
                return Err("tombstones are out of order".to_string());
            }
            if tombstone.left_rev > revision || tombstone.left_at_unix_ms > now_unix_ms {
                return Err("a tombstone is newer than the state".to_string());
            }
            if now_unix_ms - tombstone.left_at_unix_ms > max_age_ms {
                return Err("a tombstone is older than the age limit".to_string());
            }
            previous = Some(tombstone);
        }
        Ok(())
    }
}
