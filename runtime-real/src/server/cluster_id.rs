//! The cluster's identity: which cluster a data directory, and so a node, belongs to.
//!
//! - Made once, when the initial members bootstrap: a stable hash of the initial members
//!   (ids and addresses) and the cluster token, so every initial member computes the same
//!   id on its own (etcd derives its cluster id from `--initial-cluster` and its token the
//!   same way). Two clusters differ in their members or their token.
//! - Kept in the data directory (`cluster-id`, fsynced), so it outlives restarts.
//! - A node added later (`member add`, `member replace`) is given it by the leader that
//!   readmits it.
//! - Every peer hello carries it; a node refuses a peer of another cluster, naming both
//!   ids, so a node started with another cluster's data directory or peer list never
//!   votes or replicates here. A node that does not know its id yet (a fresh node, or a
//!   directory written before the id existed) is let through: the vote gate covers it.

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

/// The id of a cluster bootstrapped with `peers` under `peer_key`: the first 64 bits of a
/// SHA-256 over them, so every initial member computes the same id on its own, and the id
/// reveals nothing of the key (an FNV hash of the token did: a weak token could be found
/// from a status line).
pub fn derive(peers: &BTreeMap<NodeId, String>, peer_key: &roster_client::PeerKey) -> ClusterId {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"roster-cluster v2");
    for (id, addr) in peers {
        h.update(id.to_le_bytes());
        h.update(addr.as_bytes());
        h.update([0]);
    }
    h.update(peer_key.fingerprint());
    let digest = h.finalize();
    ClusterId(u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes")))
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

    fn peers(port: u16) -> BTreeMap<NodeId, String> {
        (1..=3).map(|id| (id, format!("127.0.0.1:{}", port + id as u16))).collect()
    }

    #[test]
    fn initial_members_agree_and_other_clusters_differ() {
        let key = |k: &str| roster_client::PeerKey::parse(&k.repeat(32)).unwrap();
        assert_eq!(derive(&peers(7400), &key("t")), derive(&peers(7400), &key("t")));
        assert_ne!(derive(&peers(7400), &key("t")), derive(&peers(7500), &key("t")));
        assert_ne!(derive(&peers(7400), &key("t")), derive(&peers(7400), &key("u")));
    }

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
