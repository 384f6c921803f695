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
    change: Change,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventHistory {
    /// Oldest first.
    events: VecDeque<Recorded>,
    /// Every event with a revision above this one is still held.
    floor: u64,
}

impl EventHistory {
    /// An empty history that holds everything after `floor`.
    pub(crate) fn starting_at(floor: u64) -> Self {
        EventHistory { events: VecDeque::new(), floor }
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn push(&mut self, revision: u64, change: Change, max_events: usize) {
        if let Some(newest) = self.events.back() {
            assert!(newest.revision <= revision, "events arrive in revision order");
        }
        if max_events == 0 {
            self.floor = revision;
            return;
        }
        if self.events.len() >= max_events {
            let dropped = self.events.pop_front().expect("history is full, so not empty");
            self.floor = dropped.revision;
        }
        self.events.push_back(Recorded { revision, change });
    }

    /// The events after `revision`, oldest first, built as they are read.
    pub(crate) fn after(&self, revision: u64) -> Result<impl DoubleEndedIterator<Item = Event> + '_, EventsCompacted> {
        if revision < self.floor {
            return Err(EventsCompacted { requested: revision, oldest_available: self.floor });
        }
        let start = self.events.partition_point(|event| event.revision <= revision);
        Ok(self
            .events
            .range(start..)
            .map(|recorded| Event { revision: recorded.revision, kind: recorded.change.to_kind() }))
    }
}
