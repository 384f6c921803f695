//! The bounded history of change events that watchers resume from.
//!
//! All events of one proposal carry that proposal's revision, so revisions in the history
//! never decrease but may repeat (a batched expiry departs several members at once). A
//! watcher resumes "after revision R" and gets every event with a larger revision, or
//! learns that some of them were already dropped and it must re-read the state.

use crate::event::Event;
use std::collections::VecDeque;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventHistory {
    /// Oldest first.
    events: VecDeque<Event>,
    /// Every event with a revision above this one is still held.
    floor: u64,
}

impl EventHistory {
    /// An empty history that holds everything after `floor`.
    pub(crate) fn starting_at(floor: u64) -> Self {
        EventHistory {
            events: VecDeque::new(),
            floor,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn push(&mut self, event: Event, max_events: usize) {
        if let Some(newest) = self.events.back() {
            assert!(
                newest.revision <= event.revision,
                "events arrive in revision order"
            );
        }
        if max_events == 0 {
            self.floor = event.revision;
            return;
        }
        if self.events.len() >= max_events {
            let dropped = self
                .events
                .pop_front()
                .expect("history is full, so not empty");
            self.floor = dropped.revision;
        }
        self.events.push_back(event);
    }

    pub(crate) fn after(
        &self,
        revision: u64,
    ) -> Result<std::collections::vec_deque::Iter<'_, Event>, EventsCompacted> {
        if revision < self.floor {
            return Err(EventsCompacted {
                requested: revision,
                oldest_available: self.floor,
            });
        }
        let start = self
            .events
            .partition_point(|event| event.revision <= revision);
        Ok(self.events.range(start..))
    }
}
