//! The cluster's identity: which cluster a data directory, and so a node, belongs to.
//!
//! - Drawn once, at random, by the first leader of a new cluster, and sealed into the
//!   replicated record (`LeaderCommand::SealCluster`, the kernel's leader duties, rule 7):
//!   the first seal applied stays, and every node adopts it when it applies it. Two
//!   clusters formed from the same peers and key get different ids, and the id reveals
//!   nothing of any secret.
//! - Kept in the data directory (`cluster-id`, fsynced), so it outlives restarts. A node
//!   whose directory holds an id offers that one (a cluster formed before ids were
//!   sealed keeps the id it had).
//! - A node added later (`member add`, `member replace`) is given it by the leader that
//!   readmits it, and then applies the same seal.
//! - A backup restored into a new cluster forgets the id (`roster snapshot restore`): its
//!   first leader seals a new one.
//! - Every peer hello carries it; a node refuses a peer of another cluster, naming both
//!   ids, so a node started with another cluster's data directory or peer list never
//!   votes or replicates here. A node that does not know its id yet (a fresh node, or a
//!   cluster whose first leader has not sealed yet) is let through: the vote gate covers it.

use crate::raft::NodeId;
use crate::storage::{Disk, StorageError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const FILE: &str = "cluster-id";
const TMP_FILE: &str = "cluster-id.tmp";
const HEADER: &str = "roster cluster id v1";
/// A peer of another cluster retries at every RPC: its refusal is logged this seldom.
const REFUSAL_LOG_EVERY_MS: u64 = 60_000;

/// A cluster id, shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterId(pub u64);

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The id this node would seal a new cluster with: the one its data directory holds, or
/// a fresh random one (seeded in simulation).
pub fn offer(identity: &Identity) -> u64 {
    identity
        .get()
        .map_or_else(|| u64::from_le_bytes(crate::rt::random_bytes()[..8].try_into().expect("8 bytes")), |id| id.0)
}

/// Adopts the id the record holds once a leader sealed it, for as long as the node runs.
/// A record sealed with another cluster's id than this directory's is named once: the
/// node goes on, and its peers' hellos tell which cluster each belongs to.
pub async fn adopt_when_sealed(
    raft: crate::server::Raft,
    shared: Arc<crate::storage::SharedState>,
    identity: Arc<Identity>,
) {
    use openraft_rt::WatchReceiver;
    let mut metrics = raft.metrics();
    let mut named = false;
    loop {
        if let Some(sealed) = shared.with_kernel(|k| k.cluster_id()).map(ClusterId)
            && identity.get() != Some(sealed)
        {
            match identity.adopt(sealed, "the replicated record") {
                Ok(()) => identity.settled().await,
                Err(e) if !named => {
                    named = true;
                    tracing::error!(error = %e, "this node's data directory and the cluster it applies disagree");
                }
                Err(_) => {}
            }
        }
        // The record is read again on each change of the node's Raft metrics (every
        // apply is one).
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this data directory belongs to cluster {stored}, not to cluster {offered} (the one {by} names): \
         it was started with another cluster's data directory or peers"
    )]
    Mismatch { stored: ClusterId, offered: ClusterId, by: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The id this node holds, if any, and the durable file behind it.
pub struct Identity {
    disk: Arc<dyn Disk>,
    id: Mutex<Option<ClusterId>>,
    /// When a peer of another cluster was last logged (ms on the node's clock), per peer.
    refusals_logged: Mutex<BTreeMap<NodeId, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the state whole: a poisoned lock still holds it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(file: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { file: file.to_string(), source }
}

impl Identity {
    /// Reads the id the data directory holds, if any.
    pub fn open(disk: Arc<dyn Disk>) -> Result<Identity, StorageError> {
        let id = if disk.exists(FILE).map_err(io_err(FILE))? {
            Some(parse(&disk.read(FILE).map_err(io_err(FILE))?)?)
        } else {
            None
        };
        Ok(Identity { disk, id: Mutex::new(id), refusals_logged: Mutex::new(BTreeMap::new()) })
    }

    pub fn get(&self) -> Option<ClusterId> {
        *lock(&self.id)
    }

    /// Takes `offered` as this node's cluster (named by `by`: "the bootstrap", "leader 1"):
    /// durably when the node has none yet, a no-op when it is the same, refused when the
    /// node belongs to another cluster.
    pub fn adopt(&self, offered: ClusterId, by: &str) -> Result<(), IdentityError> {
        let mut id = lock(&self.id);
        match *id {
            Some(stored) if stored == offered => Ok(()),
            Some(stored) => Err(IdentityError::Mismatch { stored, offered, by: by.to_string() }),
            None => {
                self.persist(offered)?;
                *id = Some(offered);
                tracing::info!(cluster = %offered, by, "this node belongs to cluster {offered}");
                Ok(())
            }
        }
    }

    /// Why a peer hello from `from` naming `theirs` is refused, or `None` to accept it.
    pub fn refuse_peer(&self, from: NodeId, theirs: Option<u64>, now_ms: u64) -> Option<String> {
        let (Some(mine), Some(theirs)) = (self.get(), theirs.map(ClusterId)) else { return None };
        if mine == theirs {
            return None;
        }
        let reason = format!(
            "node {from} belongs to cluster {theirs}, this node to cluster {mine}: it was started with another \
             cluster's data directory or peers; its messages are refused"
        );
        let mut logged = lock(&self.refusals_logged);
        let due = logged.get(&from).is_none_or(|at| now_ms.saturating_sub(*at) >= REFUSAL_LOG_EVERY_MS);
        if due {
            logged.insert(from, now_ms);
            tracing::warn!(peer = from, "{reason}");
        }
        Some(reason)
    }

    fn persist(&self, id: ClusterId) -> Result<(), StorageError> {
        crate::storage::replace_file(&*self.disk, TMP_FILE, FILE, format!("{HEADER}\n{id}\n").as_bytes())
    }

    /// Resolves once the id file is durable (a simulated disk takes time; see
    /// `storage::settled`). Await it after `adopt` before acting on the id.
    pub async fn settled(&self) {
        crate::storage::settled(&*self.disk).await
    }
}

fn parse(bytes: &[u8]) -> Result<ClusterId, StorageError> {
    let corrupt =
        |reason: &str| StorageError::Corrupt { file: FILE.to_string(), offset: 0, reason: reason.to_string() };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(corrupt("bad header"));
    }
    let hex = lines.next().ok_or_else(|| corrupt("no id line"))?;
    if hex.len() != 16 {
        return Err(corrupt("the id is not 16 hex digits"));
    }
    u64::from_str_radix(hex, 16).map(ClusterId).map_err(|_| corrupt("the id is not 16 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDisk;

    #[test]
    fn the_id_survives_a_restart_and_another_is_refused() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let identity = Identity::open(disk.clone()).unwrap();
        assert_eq!(identity.get(), None);
        assert_eq!(identity.refuse_peer(2, Some(5), 0), None, "a node without an id lets peers in");
        identity.adopt(ClusterId(7), "the bootstrap").unwrap();
        let identity = Identity::open(disk.clone()).unwrap();
        assert_eq!(identity.get(), Some(ClusterId(7)));
        identity.adopt(ClusterId(7), "leader 1").unwrap();
        let e = identity.adopt(ClusterId(8), "leader 2").unwrap_err().to_string();
        assert!(e.contains("0000000000000007") && e.contains("0000000000000008") && e.contains("leader 2"), "{e}");
        assert_eq!(identity.refuse_peer(2, Some(7), 0), None);
        assert_eq!(identity.refuse_peer(2, None, 0), None, "a peer without an id is let in");
        let reason = identity.refuse_peer(2, Some(8), 0).expect("another cluster is refused");
        assert!(reason.contains("node 2 belongs to cluster 0000000000000008"), "{reason}");
    }

    #[test]
    fn a_damaged_file_is_named() {
        let disk = MemDisk::new();
        disk.create(FILE).unwrap();
        disk.write_at(FILE, 0, b"roster cluster id v1\nxyz\n").unwrap();
        let e = Identity::open(Arc::new(disk)).err().expect("refused").to_string();
        assert!(e.contains(FILE), "{e}");
    }
}
