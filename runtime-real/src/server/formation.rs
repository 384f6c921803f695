//! What this node's start knows of the first formation, for its status answers: its
//! incarnation, whether it is still deciding, and the peers it saw deciding when it
//! formed the cluster. The rules that use them are the kernel's
//! (`roster_kernel::formation`); `rejoin::check_peers` drives them.

use crate::raft::NodeId;
use std::sync::Mutex;

/// What this node's start knows of the first formation.
pub struct Formation {
    incarnation: u64,
    state: Mutex<State>,
}

struct State {
    deciding: bool,
    formed_with: Vec<(NodeId, u64)>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Every critical section leaves the state whole: a poisoned lock still holds it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Formation {
    /// `deciding`: this start found no vote and no log and decides whether to bootstrap.
    pub fn new(incarnation: u64, deciding: bool) -> Formation {
        Formation { incarnation, state: Mutex::new(State { deciding, formed_with: Vec::new() }) }
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This start's incarnation while it decides whether to bootstrap.
    pub fn deciding(&self) -> Option<u64> {
        lock(&self.state).deciding.then_some(self.incarnation)
    }

    /// The peers (with their incarnations) seen deciding when this node formed the cluster.
    pub fn formed_with(&self) -> Vec<(NodeId, u64)> {
        lock(&self.state).formed_with.clone()
    }

    /// The decision is made: `formed_with` the deciding peers when this node forms the
    /// cluster, empty when it waits instead.
    pub fn decided(&self, formed_with: Vec<(NodeId, u64)>) {
        let mut state = lock(&self.state);
        state.deciding = false;
        state.formed_with = formed_with;
    }
}

/// A number for this start of the process, different from every earlier start of this
/// node: wall-clock milliseconds, mixed with the process id outside the simulator (where
/// every simulated start has its own simulated time).
pub fn new_incarnation() -> u64 {
    let ms = crate::rt::clock::unix_ms();
    #[cfg(not(madsim))]
    let ms = (ms << 20) ^ u64::from(std::process::id());
    ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_ends_deciding_and_keeps_who_was_seen() {
        let f = Formation::new(42, true);
        assert_eq!(f.deciding(), Some(42));
        f.decided(vec![(2, 7)]);
        assert_eq!((f.deciding(), f.formed_with()), (None, vec![(2, 7)]));
        assert_eq!(Formation::new(42, false).deciding(), None);
    }
}
