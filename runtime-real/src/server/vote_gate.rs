//! The vote gate, kept durable: the rules are the kernel's (`roster_kernel::vote_gate`);
//! this keeps the state in the marker file `no-vote` (written, fsynced, renamed, directory
//! fsynced), so a restart keeps it, and answers Raft's votes and appends by those rules.
//!
//! - Closed at start when the data directory was empty and the node did not bootstrap
//!   (no `--bootstrap`, or a peer reported a running cluster); closed in memory only while
//!   a fresh node decides whether to bootstrap.
//! - The leader readmits it (`member replace ID` or `member add ID ADDR`) after demoting
//!   it to learner and allowing openraft to replicate to it from scratch.
//! - Lifted (marker removed) once the node has applied the readmission target; only then
//!   may it vote, campaign and serve stale reads.

use crate::storage::{Disk, StorageError};
use roster_kernel::vote_gate::Closed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub const MARKER_FILE: &str = "no-vote";
const MARKER_TMP_FILE: &str = "no-vote.tmp";
const MARKER_HEADER: &str = "roster no-vote v1";

pub struct VoteGate {
    disk: Arc<dyn Disk>,
    closed: Mutex<Option<Closed>>,
    /// The first refused vote is logged with the reason; later ones at debug level.
    refusal_logged: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the state whole: a poisoned lock still holds it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(file: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { file: file.to_string(), source }
}

impl VoteGate {
    /// Reads the marker, if any: a node that was waiting stays waiting across restarts.
    pub fn open(disk: Arc<dyn Disk>) -> Result<VoteGate, StorageError> {
        let closed = if disk.exists(MARKER_FILE).map_err(io_err(MARKER_FILE))? {
            let bytes = disk.read(MARKER_FILE).map_err(io_err(MARKER_FILE))?;
            Some(parse_marker(&bytes)?)
        } else {
            None
        };
        Ok(VoteGate { disk, closed: Mutex::new(closed), refusal_logged: AtomicBool::new(false) })
    }

    /// Closes the gate in memory only: for the moments a fresh node spends deciding
    /// whether to bootstrap (nothing to forget if it crashes then: its directory is empty).
    pub fn close_provisionally(&self, reason: String) {
        *lock(&self.closed) = Some(Closed::new(reason));
    }

    /// Opens a gate closed only in memory (the node formed the cluster itself).
    pub fn open_provisional(&self) {
        *lock(&self.closed) = None;
    }

    // Each change below decides, writes the marker and updates the state under one hold of
    // the lock (no other lock is taken meanwhile, and nothing is awaited), so two changes
    // never interleave: a readmission racing a lift cannot close a lifted gate again, and
    // of two readmissions the higher target is the one kept.

    /// Closes the gate for good (until lifted), durably.
    pub fn close(&self, reason: String) -> Result<(), StorageError> {
        let mut state = lock(&self.closed);
        let closed = Closed::new(reason);
        self.persist(&closed)?;
        *state = Some(closed);
        Ok(())
    }

    /// The leader let this node back in: take replication; vote again once applied up
    /// to `target`. A no-op on an open gate.
    pub fn readmit(&self, target: u64) -> Result<(), StorageError> {
        let mut state = lock(&self.closed);
        let Some(closed) = state.as_ref().map(|c| c.readmitted(target)) else { return Ok(()) };
        self.persist(&closed)?;
        *state = Some(closed);
        Ok(())
    }

    /// Lifts the gate if the node has applied up to its readmission target; true if it
    /// was lifted now.
    pub fn lift_if_caught_up(&self, applied_index: Option<u64>) -> Result<bool, StorageError> {
        let mut state = lock(&self.closed);
        if !state.as_ref().is_some_and(|closed| closed.lifts(applied_index)) {
            return Ok(false);
        }
        match self.disk.remove(MARKER_FILE) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(MARKER_FILE)(e)),
        }
        self.disk.sync_dir().map_err(io_err("the data directory"))?;
        *state = None;
        Ok(true)
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.closed).is_some()
    }

    /// Why this node does not vote yet, with its progress; `None` when it does.
    pub fn waiting(&self, applied_index: Option<u64>) -> Option<String> {
        lock(&self.closed).as_ref().map(|closed| closed.waiting(applied_index))
    }

    /// The reason to refuse a vote (or pre-vote) from `from`, or `None` to let it through.
    pub fn refuse_vote(&self, node: u64, from: u64) -> Option<String> {
        let closed = lock(&self.closed).clone()?;
        let reason = closed.refuse_vote(node).to_string();
        if !self.refusal_logged.swap(true, Ordering::Relaxed) {
            // INFO: every new cluster's members refuse votes while they decide whether to
            // form it; a node that lost its disk says so at WARN at its start (`node.rs`).
            tracing::info!(candidate = from, "refusing to vote: {}", closed.reason);
        } else {
            tracing::debug!(candidate = from, "refusing to vote");
        }
        Some(reason)
    }

    /// The reason to refuse replication, or `None` to take it (gate open or readmitted).
    pub fn refuse_replication(&self, node: u64) -> Option<String> {
        lock(&self.closed).as_ref()?.refuse_replication(node).map(|refusal| refusal.to_string())
    }

    fn persist(&self, closed: &Closed) -> Result<(), StorageError> {
        let target = closed.readmit_target.map_or("none".to_string(), |t| t.to_string());
        let text = format!("{MARKER_HEADER}\nreadmit {target}\n{}\n", closed.reason.replace('\n', " "));
        crate::storage::replace_file(&*self.disk, MARKER_TMP_FILE, MARKER_FILE, text.as_bytes())
    }

    /// Resolves once the marker's last change is durable (a simulated disk takes time;
    /// see `storage::settled`). Await it after a change before acting on it.
    pub async fn settled(&self) {
        crate::storage::settled(&*self.disk).await
    }
}

fn parse_marker(bytes: &[u8]) -> Result<Closed, StorageError> {
    let corrupt =
        |reason: &str| StorageError::Corrupt { file: MARKER_FILE.to_string(), offset: 0, reason: reason.to_string() };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_HEADER) {
        return Err(corrupt("bad header"));
    }
    let target = lines.next().and_then(|l| l.strip_prefix("readmit ")).ok_or_else(|| corrupt("no readmit line"))?;
    let readmit_target = match target {
        "none" => None,
        t => Some(t.parse::<u64>().map_err(|_| corrupt("bad readmit index"))?),
    };
    let reason = lines.next().unwrap_or("").to_string();
    Ok(Closed { reason, readmit_target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDisk;

    #[test]
    fn a_closed_gate_survives_a_restart_and_lifts_only_at_its_target() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let gate = VoteGate::open(disk.clone()).unwrap();
        gate.close("lost its disk".into()).unwrap();
        assert!(gate.refuse_replication(3).is_some());
        let gate = VoteGate::open(disk.clone()).unwrap();
        assert!(gate.refuse_vote(3, 1).is_some());
        gate.readmit(40).unwrap();
        assert!(gate.refuse_replication(3).is_none());
        assert!(!gate.lift_if_caught_up(Some(39)).unwrap());
        let gate = VoteGate::open(disk.clone()).unwrap();
        assert!(gate.refuse_vote(3, 1).is_some(), "readmitted, not caught up: still no vote");
        assert!(gate.lift_if_caught_up(Some(40)).unwrap());
        assert!(gate.refuse_vote(3, 1).is_none());
        assert!(VoteGate::open(disk).unwrap().waiting(None).is_none());
    }

    #[test]
    fn a_provisional_closure_is_not_persisted() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let gate = VoteGate::open(disk.clone()).unwrap();
        gate.close_provisionally("deciding".into());
        assert!(gate.is_closed());
        assert!(!VoteGate::open(disk).unwrap().is_closed());
    }
}
