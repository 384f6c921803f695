//! The bounded history of change events that watchers resume from.
//!
//! All events of one proposal carry that proposal's revision, so revisions in the history
//! never decrease but may repeat (a batched expiry departs several members at once). A
//! watcher resumes "after revision R" and gets every event with a larger revision, or
//! learns that some of them were already dropped and it must re-read the state.
//!
//! Entries are held by `Arc`, shared with the tables and tombstones: recording a
//! registration or a departure copies nothing, and an `Event` is built only when a
//! watcher reads it. An update still copies the entry once (copy-on-write in the
//! table), because the history must keep the version before it.

use super::tombstones::StoredTombstone;
use crate::event::{Event, EventKind};
use crate::model::{ProcessEntry, ServerEntry};
use std::collections::VecDeque;
use std::sync::Arc;

/// Events after `requested` were partly dropped from the bounded history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "events after revision {requested} are compacted; re-read the state and resume from a revision of at least {oldest_available}"
)]
pub struct EventsCompacted {
    pub requested: u64,
    /// The smallest revision that `events_after` still accepts.
    pub oldest_available: u64,
}

/// `EventKind` with entries shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    ServerRegistered(Arc<ServerEntry>),
    ServerUpdated(Arc<ServerEntry>),
    ProcessRegistered(Arc<ProcessEntry>),
    ProcessUpdated(Arc<ProcessEntry>),
    Departed(Arc<StoredTombstone>),
    KvPut { key: String, value: String },
    KvDeleted { key: String },
    Other(Box<EventKind>),
}

impl Change {
    fn to_kind(&self) -> EventKind {
        match self {
            Change::ServerRegistered(entry) => EventKind::ServerRegistered(ServerEntry::clone(entry)),
            Change::ServerUpdated(entry) => EventKind::ServerUpdated(ServerEntry::clone(entry)),
            Change::ProcessRegistered(entry) => EventKind::ProcessRegistered(ProcessEntry::clone(entry)),
            Change::ProcessUpdated(entry) => EventKind::ProcessUpdated(ProcessEntry::clone(entry)),
            Change::Departed(tombstone) => {
                EventKind::Departed { member: tombstone.member(), tombstone: tombstone.to_tombstone() }
            }
            Change::KvPut { key, value } => EventKind::KvPut { key: key.clone(), value: value.clone() },
            Change::KvDeleted { key } => EventKind::KvDeleted { key: key.clone() },
            Change::Other(kind) => EventKind::clone(kind),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Recorded {
    revision: u64,
    /// What it counts against the budget (`budget::change_bytes`).
    bytes: u64,
    /// `None` for an event known by its size only: a restored machine holds the ledger of
    /// the history it was taken from, so it evicts and counts as that machine did, but not
    /// the events (they are all at or below its floor, so no watcher reads them).
    change: Option<Change>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventHistory {
    /// Oldest first.
    events: VecDeque<Recorded>,
    /// Every event with a revision above this one is still held.
    floor: u64,
    /// Sum of `bytes` over `events`.
    bytes: u64,
}

/// Most events, and most bytes, the history holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryBounds {
    pub(crate) max_events: usize,
    pub(crate) max_bytes: u64,
}

impl EventHistory {
    /// An empty history that holds everything after `floor`.
    pub(crate) fn starting_at(floor: u64) -> Self {
        EventHistory { events: VecDeque::new(), floor, bytes: 0 }
    }

    /// A history known by its ledger only (`(revision, bytes)` oldest first), all at or
    /// below `floor`: what a snapshot restores. `Err` names what is inconsistent.
    pub(crate) fn from_ledger(floor: u64, ledger: Vec<(u64, u64)>) -> Result<Self, String> {
        let mut history = EventHistory::starting_at(floor);
        for (revision, bytes) in ledger {
            if revision > floor {
                return Err(format!("history ledger holds revision {revision} after the snapshot's {floor}"));
            }
            if history.events.back().is_some_and(|newest| newest.revision > revision) {
                return Err(format!("history ledger out of order at revision {revision}"));
            }
            if bytes < super::budget::ITEM_OVERHEAD_BYTES {
                return Err(format!("history ledger entry at revision {revision} is {bytes} bytes, under one item"));
            }
            history.bytes = history.bytes.checked_add(bytes).ok_or("history ledger bytes overflow")?;
            history.events.push_back(Recorded { revision, bytes, change: None });
        }
        Ok(history)
    }

    /// `(revision, bytes)` of every event held, oldest first.
    pub(crate) fn ledger(&self) -> impl ExactSizeIterator<Item = (u64, u64)> + '_ {
        self.events.iter().map(|recorded| (recorded.revision, recorded.bytes))
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// What the events held count against the budget.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sum of every event's size, recounted from the events (a ghost counts its
    /// ledger size): the running count must equal it.
    pub(crate) fn recount_bytes(&self) -> Result<u64, String> {
        let mut total = 0;
        for recorded in &self.events {
            if let Some(change) = &recorded.change
                && super::budget::change_bytes(change) != recorded.bytes
            {
                return Err(format!("event at revision {} has a stale size", recorded.revision));
            }
            total += recorded.bytes;
        }
        Ok(total)
    }

    /// Appends an event, first dropping the oldest ones until it fits both bounds.
    pub(crate) fn push(&mut self, revision: u64, change: Change, bounds: HistoryBounds) {
        if let Some(newest) = self.events.back() {
            assert!(newest.revision <= revision, "events arrive in revision order");
        }
        if bounds.max_events == 0 {
            self.floor = revision;
            return;
        }
        let bytes = super::budget::change_bytes(&change);
        assert!(bytes <= bounds.max_bytes, "Limits::check makes room for the largest event");
        while self.events.len() >= bounds.max_events || self.bytes + bytes > bounds.max_bytes {
            let dropped = self.events.pop_front().expect("over a bound, so not empty");
            self.bytes -= dropped.bytes;
            // A ghost is at or below the floor already.
            self.floor = self.floor.max(dropped.revision);
        }
        self.bytes += bytes;
        self.events.push_back(Recorded { revision, bytes, change: Some(change) });
    }

    /// Drops the oldest events until the rest hold at most `max_bytes` (a smaller budget).
    pub(crate) fn trim(&mut self, max_bytes: u64) {
        while self.bytes > max_bytes {
            let dropped = self.events.pop_front().expect("bytes are held, so not empty");
            self.bytes -= dropped.bytes;
            self.floor = self.floor.max(dropped.revision);
        }
    }

    /// The events after `revision`, oldest first, built as they are read.
    pub(crate) fn after(&self, revision: u64) -> Result<impl DoubleEndedIterator<Item = Event> + '_, EventsCompacted> {
        if revision < self.floor {
            return Err(EventsCompacted { requested: revision, oldest_available: self.floor });
        }
        let start = self.events.partition_point(|event| event.revision <= revision);
        Ok(self.events.range(start..).map(|recorded| Event {
            revision: recorded.revision,
            kind: recorded.change.as_ref().expect("events above the floor are held whole").to_kind(),
        }))
    }
}
