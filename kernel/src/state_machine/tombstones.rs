//! Tombstones of departed members, bounded by count and by age.
//!
//! Zeppelin kept OFFLINE entries forever; here a departure leaves a tombstone that is
//! dropped once there are more than `tombstone_max_count` newer ones or once it is older
//! than `tombstone_max_age_ms`. Age is measured against the state machine's clock: the
//! largest proposal time applied so far, so pruning is a function of the log alone.

use crate::model::Tombstone;
use std::collections::VecDeque;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TombstoneLog {
    /// Oldest first. `left_at_unix_ms` and `left_rev` never decrease front to back,
    /// because tombstones are stamped with the state machine's monotonic clock.
    entries: VecDeque<Tombstone>,
}

impl TombstoneLog {
    pub(crate) fn from_oldest_first(entries: VecDeque<Tombstone>) -> Self {
        TombstoneLog { entries }
    }

    pub(crate) fn oldest_first(&self) -> &VecDeque<Tombstone> {
        &self.entries
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn newest_first(&self) -> impl Iterator<Item = &Tombstone> {
        self.entries.iter().rev()
    }

    /// Adds the newest tombstone, dropping the oldest beyond `max_count`.
    pub(crate) fn push(&mut self, tombstone: Tombstone, max_count: usize) {
        if let Some(newest) = self.entries.back() {
            assert!(
                newest.left_at_unix_ms <= tombstone.left_at_unix_ms,
                "clock is monotonic"
            );
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
            return Err(format!(
                "{} tombstones exceed the limit {max_count}",
                self.entries.len()
            ));
        }
        let mut previous: Option<&Tombstone> = None;
        for tombstone in &self.entries {
            if let Some(previous) = previous
                && (previous.left_at_unix_ms > tombstone.left_at_unix_ms
                    || previous.left_rev > tombstone.left_rev)
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
