//! openraft's state machine over the kernel's `ClusterStateMachine`, with snapshots in
//! their own files, and the applied state shared with the client API.
//!
//! The state machine itself lives in memory; snapshots are what is durable. On restart
//! the latest snapshot is restored and openraft re-applies the log from there up to the
//! committed log id (which the log store keeps).
//!
//! Snapshot bytes (`SnapshotData`, what the network ships to a follower whole) are
//! self-checking:
//!
//! ```text
//! magic "RSTRSNP1" | crc32 of everything after this field: u32 | meta_len: u32
//! | postcard(SnapshotMeta) | the kernel's own snapshot bytes (versioned, checksummed)
//! ```
//!
//! A snapshot file `snapshot-<n>.snap` (n = last applied index + 1, 0 for none) is
//! written as `snapshot.tmp`, fsynced, renamed, and the directory fsynced; then older
//! snapshot files are deleted.

use super::disk::Disk;
use super::{StorageError, on_disk};
use crate::raft::entry::BatchReplies;
use crate::raft::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::rt::OrderedWatch;
use futures::StreamExt;
use openraft::alias::SnapshotOf;
use openraft::entry::EntryPayload;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{LogIdOptionExt, OptionalSend};
use openraft_rt::{Watch, WatchReceiver, WatchSender};
use roster_kernel::{ClusterStateMachine, Limits, UnsealedSnapshot};
use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A whole snapshot, as built, stored, sent and installed.
pub type SnapshotData = Vec<u8>;
pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

const SNAPSHOT_MAGIC: [u8; 8] = *b"RSTRSNP1";
const SNAPSHOT_HEADER_BYTES: usize = SNAPSHOT_MAGIC.len() + 8;
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";

type AppliedSender = <OrderedWatch as Watch>::Sender<Applied>;
/// A receiver of `Applied` changes (see `SharedState::subscribe`).
pub type AppliedReceiver = <OrderedWatch as Watch>::Receiver<Applied>;

/// How far the state machine has applied the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Index of the last applied log entry (of any kind).
    pub log_index: Option<u64>,
    /// The kernel's revision (number of applied proposals).
    pub revision: u64,
}

/// The applied state: the kernel's state machine and where in the log it stands.
#[derive(Debug)]
pub struct AppliedState {
    pub kernel: ClusterStateMachine,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

impl AppliedState {
    fn applied(&self) -> Applied {
        Applied { log_index: self.last_applied.as_ref().map(|l| l.index), revision: self.kernel.revision() }
    }
}

/// The state shared between openraft (which applies) and the client API (which reads and
/// waits for progress).
pub struct SharedState {
    state: RwLock<AppliedState>,
    applied: AppliedSender,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState").field("applied", &self.applied()).finish()
    }
}

impl SharedState {
    fn new(state: AppliedState) -> SharedState {
        let (applied, _rx) = OrderedWatch::channel(state.applied());
        SharedState { state: RwLock::new(state), applied }
    }

    /// Read access to the applied state. Hold it briefly: applying waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // Applying never panics half way through an update (the kernel's `apply` is
        // total), so a poisoned lock still guards a consistent state.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the kernel's state machine under the read lock (keep `f` short).
    pub fn with_kernel<R>(&self, f: impl FnOnce(&ClusterStateMachine) -> R) -> R {
        f(&self.read().kernel)
    }

    /// How far the log has been applied.
    pub fn applied(&self) -> Applied {
        *self.applied.borrow_watched()
    }

    /// A receiver that wakes on every change of `applied()` (deterministic wake order).
    pub fn subscribe(&self) -> AppliedReceiver {
        self.applied.subscribe()
    }

    /// Waits until the log entry at `log_index` (or a later one) has been applied.
    pub async fn wait_applied(&self, log_index: u64) -> Applied {
        let mut rx = self.subscribe();
        loop {
            let now = *rx.borrow_and_update();
            if now.log_index.is_some_and(|i| i >= log_index) {
                return now;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable while we borrow it.
                return self.applied();
            }
        }
    }

    /// A consistent export of the applied state (see `Export`), for a backup.
    pub fn export(&self) -> Result<Export, StorageError> {
        let (meta, revision, unsealed) = {
            let st = self.read();
            let meta = SnapshotMeta { last_log_id: st.last_applied, last_membership: st.membership.clone() };
            let unsealed = begin_snapshot(&meta, &st.kernel)?;
            (meta, st.kernel.revision(), unsealed)
        };
        Ok(Export { meta, revision, data: seal_snapshot(unsealed) })
    }

    fn publish(&self, applied: Applied) {
        self.applied.send_if_modified(|cur| {
            let changed = *cur != applied;
            *cur = applied;
            changed
        });
    }
}

/// openraft's `RaftStateMachine` (and `RaftSnapshotBuilder`: a clone builds snapshots).
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    snapshots: Arc<SnapshotFiles>,
    /// `roster_server_apply_duration_seconds`.
    metrics: Arc<crate::metrics::Metrics>,
}

/// The snapshot files; one writer at a time (a build may race an install).
struct SnapshotFiles {
    disk: Arc<dyn Disk>,
    /// Run file work on the blocking pool (a real disk); see `on_disk`.
    offload: bool,
    /// Meta and file name of the current snapshot.
    current: Mutex<Option<(SnapshotMeta, String)>>,
}

fn io_err(file: &str) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { file: file.to_string(), source }
}

fn snapshot_file_name(meta: &SnapshotMeta) -> String {
    format!("snapshot-{:020}.snap", meta.last_log_id.next_index())
}

fn is_snapshot_file(name: &str) -> bool {
    name.strip_prefix("snapshot-")
        .and_then(|s| s.strip_suffix(".snap"))
        .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Encodes a snapshot: our header around the kernel's bytes.
/// The snapshot file's bytes: header, `meta`, and the kernel's image written straight
/// after them into the same buffer (a large state is never held twice as bytes).
fn encode_snapshot(meta: &SnapshotMeta, kernel: &ClusterStateMachine) -> Result<SnapshotData, StorageError> {
    Ok(seal_snapshot(begin_snapshot(meta, kernel)?))
}

/// `encode_snapshot`'s part that reads the state (under its lock): every byte written,
/// no checksum computed yet.
fn begin_snapshot(meta: &SnapshotMeta, kernel: &ClusterStateMachine) -> Result<UnsealedSnapshot, StorageError> {
    let meta_bytes = postcard::to_allocvec(meta)
        .map_err(|e| StorageError::Encode { what: "snapshot metadata".into(), reason: e.to_string() })?;
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + meta_bytes.len() + 64 * 1024);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    Ok(kernel.snapshot_into(out))
}

/// `encode_snapshot`'s part that needs no lock: the kernel image's checksum, then ours.
fn seal_snapshot(unsealed: UnsealedSnapshot) -> SnapshotData {
    let mut out = unsealed.seal();
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Splits snapshot bytes into their meta and the kernel's bytes, checking everything.
fn decode_snapshot<'a>(bytes: &'a [u8], file: &str) -> Result<(SnapshotMeta, &'a [u8]), StorageError> {
    let corrupt =
        |offset: usize, reason: String| StorageError::Corrupt { file: file.to_string(), offset: offset as u64, reason };
    if bytes.len() < SNAPSHOT_HEADER_BYTES || bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "not a Roster snapshot (bad magic or too short)".into()));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[12..]) != crc {
        return Err(corrupt(8, "snapshot checksum mismatch".into()));
    }
    let meta_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let meta_end = SNAPSHOT_HEADER_BYTES
        .checked_add(meta_len)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| corrupt(12, "metadata length past the end".into()))?;
    let meta: SnapshotMeta = postcard::from_bytes(&bytes[SNAPSHOT_HEADER_BYTES..meta_end])
        .map_err(|e| corrupt(SNAPSHOT_HEADER_BYTES, format!("metadata does not decode: {e}")))?;
    Ok((meta, &bytes[meta_end..]))
}

fn restore_kernel(kernel: &[u8], file: &str, offset: usize) -> Result<ClusterStateMachine, StorageError> {
    ClusterStateMachine::restore(kernel).map_err(|e| StorageError::Corrupt {
        file: file.to_string(),
        offset: offset as u64,
        reason: format!("state machine snapshot: {e}"),
    })
}

/// A consistent image of the applied state for a backup (`roster snapshot save`): the
/// snapshot bytes a node would store or ship, taken under one read lock.
#[derive(Debug)]
pub struct Export {
    pub meta: SnapshotMeta,
    /// The kernel's revision in it.
    pub revision: u64,
    pub data: SnapshotData,
}

/// Checks snapshot bytes from outside the node (a backup) whole, writing nothing: our
/// header and checksum, the metadata, the kernel's own versioned, checksummed image and
/// every invariant of the state it builds. `what` names the source in errors.
pub fn verify_snapshot_data(bytes: &[u8], what: &str) -> Result<(SnapshotMeta, ClusterStateMachine), StorageError> {
    let (meta, kernel) = decode_snapshot(bytes, what)?;
    let machine = restore_kernel(kernel, what, bytes.len() - kernel.len())?;
    Ok((meta, machine))
}

/// Seeds a new node's empty data directory with `kernel` as its only snapshot, at `meta`
/// (written as the node writes its own: temp file, fsync, rename, fsync of the
/// directory). The node's first start restores it as if it had taken it itself. Returns
/// the file's name.
pub fn seed_snapshot(
    disk: Arc<dyn Disk>,
    meta: &SnapshotMeta,
    kernel: &ClusterStateMachine,
) -> Result<String, StorageError> {
    let data = encode_snapshot(meta, kernel)?;
    let files = SnapshotFiles { offload: false, disk, current: Mutex::new(None) };
    let stored = files.store(meta, &data)?;
    assert!(stored, "a directory without a current snapshot takes any snapshot");
    Ok(snapshot_file_name(meta))
}

impl SnapshotFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SnapshotMeta, String)>> {
        // Updated only after the file work succeeded: never half-written.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Durably stores `data` as the current snapshot unless a newer one is already
    /// current; deletes older snapshot files. Returns whether it was stored.
    fn store(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<bool, StorageError> {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|(m, _)| m.last_log_id > meta.last_log_id) {
            return Ok(false);
        }
        let disk = &self.disk;
        let name = snapshot_file_name(meta);
        disk.create(SNAPSHOT_TMP_FILE).map_err(io_err(SNAPSHOT_TMP_FILE))?;
        disk.write_at(SNAPSHOT_TMP_FILE, 0, data).map_err(io_err(SNAPSHOT_TMP_FILE))?;
        disk.sync_data(SNAPSHOT_TMP_FILE).map_err(io_err(SNAPSHOT_TMP_FILE))?;
        disk.rename(SNAPSHOT_TMP_FILE, &name).map_err(io_err(&name))?;
        disk.sync_dir().map_err(io_err("the data directory"))?;
        *current = Some((meta.clone(), name.clone()));
        self.remove_others(&name)?;
        Ok(true)
    }

    fn remove_others(&self, keep: &str) -> Result<(), StorageError> {
        let names = self.disk.list().map_err(io_err("the data directory"))?;
        let mut removed = false;
        for name in names.iter().filter(|n| (is_snapshot_file(n) && *n != keep) || *n == SNAPSHOT_TMP_FILE) {
            self.disk.remove(name).map_err(io_err(name))?;
            removed = true;
        }
        if removed {
            self.disk.sync_dir().map_err(io_err("the data directory"))?;
        }
        Ok(())
    }

    fn read_current(&self) -> Result<Option<Snapshot>, StorageError> {
        let current = self.lock();
        let Some((meta, name)) = current.as_ref() else {
            return Ok(None);
        };
        let data = self.disk.read(name).map_err(io_err(name))?;
        let (file_meta, _) = decode_snapshot(&data, name)?;
        if &file_meta != meta {
            return Err(StorageError::Corrupt {
                file: name.clone(),
                offset: SNAPSHOT_HEADER_BYTES as u64,
                reason: format!("holds snapshot {file_meta:?}, expected {meta:?}"),
            });
        }
        Ok(Some(Snapshot { meta: meta.clone(), snapshot: data }))
    }
}

impl StateMachineStore {
    /// Opens the state machine on `disk`: restored from the latest snapshot file if there
    /// is one, else empty with `limits`.
    pub fn open(disk: Arc<dyn Disk>, limits: Limits) -> Result<StateMachineStore, StorageError> {
        let names = disk.list().map_err(io_err("the data directory"))?;
        let latest = names.iter().filter(|n| is_snapshot_file(n)).max().cloned();
        let files = SnapshotFiles { offload: disk.sync_blocks_thread(), disk, current: Mutex::new(None) };
        let state = match &latest {
            None => AppliedState {
                kernel: ClusterStateMachine::new(limits),
                last_applied: None,
                membership: StoredMembership::default(),
            },
            Some(name) => {
                let data = files.disk.read(name).map_err(io_err(name))?;
                let (meta, kernel) = decode_snapshot(&data, name)?;
                let kernel = restore_kernel(kernel, name, data.len() - kernel.len())?;
                tracing::info!(file = %name, last_log_id = ?meta.last_log_id, revision = kernel.revision(), "state machine restored from snapshot");
                *files.lock() = Some((meta.clone(), name.clone()));
                AppliedState { kernel, last_applied: meta.last_log_id, membership: meta.last_membership.clone() }
            }
        };
        // Leftovers of an interrupted snapshot write, or older snapshots not yet deleted.
        files.remove_others(latest.as_deref().unwrap_or(""))?;
        Ok(StateMachineStore {
            shared: Arc::new(SharedState::new(state)),
            snapshots: Arc::new(files),
            metrics: Default::default(),
        })
    }

    /// Times each apply into the node's `metrics` (a fresh store counts into its own).
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> StateMachineStore {
        StateMachineStore { metrics, ..self }
    }

    /// The applied state, shared with the client API.
    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    /// Applies one entry: each proposal of a normal entry in order, with the kernel's
    /// reply to each; other entries have no replies.
    fn apply_entry(&self, entry: &Entry) -> BatchReplies {
        let started = tokio::time::Instant::now();
        let mut st = self.shared.write();
        let replies = match &entry.payload {
            EntryPayload::Normal(batch) => batch.proposals().iter().map(|p| st.kernel.apply(p)).collect(),
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(m) => {
                st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Vec::new()
            }
        };
        debug_assert!(st.last_applied < Some(entry.log_id), "log entries apply in order");
        st.last_applied = Some(entry.log_id);
        let applied = st.applied();
        drop(st);
        self.shared.publish(applied);
        self.metrics.apply.observe(started.elapsed().as_secs_f64());
        replies
    }

    async fn build(&self) -> Result<Snapshot, StorageError> {
        // Written under the read lock (applies wait for it), straight from the applied
        // state: a copy of the state to encode outside the lock would take about as long
        // to make (a deep copy of every string, where encoding copies them into one
        // buffer), and the copy is what made a snapshot's peak about three times the
        // state. The peak is now the state plus its image. The checksums and the file work
        // run after the lock, beside the runtime's workers (see `on_disk`).
        let (meta, unsealed) = {
            let st = self.shared.read();
            let meta = SnapshotMeta { last_log_id: st.last_applied, last_membership: st.membership.clone() };
            let unsealed = begin_snapshot(&meta, &st.kernel)?;
            (meta, unsealed)
        };
        let files = self.snapshots.clone();
        let (stored, meta, data) = on_disk(&*self.snapshots.disk, self.snapshots.offload, move || {
            let data = seal_snapshot(unsealed);
            files.store(&meta, &data).map(|stored| (stored, meta, data))
        })
        .await??;
        if stored {
            tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "snapshot taken");
        }
        Ok(Snapshot { meta, snapshot: data })
    }

    async fn install(&self, meta: &SnapshotMeta, data: SnapshotData) -> Result<(), StorageError> {
        let what = "received snapshot";
        let (file_meta, kernel_bytes) = decode_snapshot(&data, what)?;
        if &file_meta != meta {
            return Err(StorageError::Corrupt {
                file: what.into(),
                offset: SNAPSHOT_HEADER_BYTES as u64,
                reason: format!("holds snapshot {file_meta:?} but was installed as {meta:?}"),
            });
        }
        let kernel = restore_kernel(kernel_bytes, what, data.len() - kernel_bytes.len())?;
        let files = self.snapshots.clone();
        let stored_meta = meta.clone();
        on_disk(&*self.snapshots.disk, self.snapshots.offload, move || files.store(&stored_meta, &data)).await??;
        let applied = {
            let mut st = self.shared.write();
            *st = AppliedState { kernel, last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
            st.applied()
        };
        self.shared.publish(applied);
        tracing::info!(last_log_id = ?meta.last_log_id, revision = applied.revision, "snapshot installed");
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        Ok(self.build().await?)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.shared.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let replies = self.apply_entry(&entry);
            if let Some(responder) = responder {
                responder.send(replies);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<StateMachineStore> {
        Some(self.clone())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        Ok(self.install(meta, snapshot).await?)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.snapshots.read_current()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::entry::Batch;
    use crate::storage::mem_disk::MemDisk;
    use crate::storage::wal::tests::lid;
    use openraft::Membership;
    use openraft::entry::RaftEntry;
    use roster_kernel::{Proposal, ProposalBody};
    use std::collections::BTreeSet;

    fn open_session(term: u64, index: u64) -> Entry {
        Entry::new_normal(
            lid(term, index),
            Batch::one(Proposal {
                at_unix_ms: 5_000 + index,
                body: ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node },
            }),
        )
    }

    fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
        let voters: BTreeSet<u64> = voters.iter().copied().collect();
        Entry::new_membership(lid(term, index), Membership::new_with_defaults(vec![voters], []))
    }

    async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
        sm.apply(futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.unwrap();
    }

    fn store(disk: &MemDisk) -> StateMachineStore {
        StateMachineStore::open(Arc::new(disk.clone()), Limits::default()).unwrap()
    }

    fn snapshot_files(disk: &MemDisk) -> Vec<String> {
        disk.list().unwrap().into_iter().filter(|n| n.starts_with("snapshot")).collect()
    }

    /// A batch applies its proposals in order, each with its own revision and reply, as
    /// one log entry.
    #[tokio::test]
    async fn a_batch_applies_each_proposal_in_order() {
        let sm = store(&MemDisk::new());
        let open = |at| Proposal {
            at_unix_ms: at,
            body: ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node },
        };
        let batch = Batch::new(vec![open(1), open(2), open(3)]).unwrap();
        let replies = sm.apply_entry(&Entry::new_normal(lid(1, 1), batch));
        let sessions: Vec<u64> = replies
            .iter()
            .map(|r| match r {
                Ok(roster_kernel::Reply::SessionOpened { session }) => session.0,
                other => panic!("expected a session, got {other:?}"),
            })
            .collect();
        assert_eq!(sessions.len(), 3);
        assert!(sessions[0] < sessions[1] && sessions[1] < sessions[2], "applied in order: {sessions:?}");
        assert_eq!(sm.shared().applied(), Applied { log_index: Some(1), revision: 3 });
        assert!(sm.apply_entry(&Entry::new_blank(lid(1, 2))).is_empty(), "a blank entry has no replies");
    }

    #[tokio::test]
    async fn apply_snapshot_and_restore() {
        let disk = MemDisk::new();
        let mut sm = store(&disk);
        assert_eq!(sm.applied_state().await.unwrap(), (None, StoredMembership::default()));
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        apply(&mut sm, vec![Entry::new_blank(lid(1, 1)), membership(1, 2, &[1, 2, 3])]).await;
        apply(&mut sm, (3..10).map(|i| open_session(1, i)).collect()).await;
        let shared = sm.shared();
        assert_eq!(shared.applied(), Applied { log_index: Some(9), revision: 7 });
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(lid(1, 9)));
        assert_eq!(mem.log_id(), &Some(lid(1, 2)));

        let mut builder = sm.try_create_snapshot_builder(true).await.unwrap();
        let snap = builder.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(1, 9)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!((current.meta.clone(), current.snapshot.clone()), (snap.meta.clone(), snap.snapshot.clone()));

        // A later snapshot replaces the earlier file.
        apply(&mut sm, vec![open_session(2, 10)]).await;
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot_files(&disk), vec![format!("snapshot-{:020}.snap", 11)]);

        // Reopen: the state machine comes back from the latest snapshot.
        disk.crash(|_| crate::storage::mem_disk::Keep::NONE);
        let mut sm2 = store(&disk);
        assert_eq!(sm2.applied_state().await.unwrap(), sm.applied_state().await.unwrap());
        assert_eq!(sm2.shared().applied(), Applied { log_index: Some(10), revision: 8 });
        assert_eq!(sm2.shared().with_kernel(|k| k.session_count()), 8);
    }

    #[tokio::test]
    async fn install_snapshot_replaces_state_and_files() {
        let leader_disk = MemDisk::new();
        let mut leader = store(&leader_disk);
        apply(&mut leader, vec![membership(1, 1, &[1, 2])]).await;
        apply(&mut leader, (2..6).map(|i| open_session(1, i)).collect()).await;
        let snap = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();

        let disk = MemDisk::new();
        let mut follower = store(&disk);
        apply(&mut follower, vec![open_session(1, 1)]).await;
        follower.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut rx = follower.shared().subscribe();
        follower.install_snapshot(&snap.meta, snap.snapshot.clone()).await.unwrap();
        assert_eq!(follower.applied_state().await.unwrap(), leader.applied_state().await.unwrap());
        assert_eq!(*rx.borrow_and_update(), Applied { log_index: Some(5), revision: 4 });
        assert_eq!(snapshot_files(&disk), vec![format!("snapshot-{:020}.snap", 6)]);
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);

        // Bytes that do not match the metadata they come with are refused, state untouched.
        let mut other = snap.meta.clone();
        other.last_log_id = Some(lid(1, 4));
        assert!(follower.install_snapshot(&other, snap.snapshot.clone()).await.is_err());
        let mut torn = snap.snapshot.clone();
        torn.truncate(torn.len() - 3);
        assert!(follower.install_snapshot(&snap.meta, torn).await.is_err());
        assert_eq!(follower.shared().applied().log_index, Some(5));
    }

    #[tokio::test]
    async fn corrupt_snapshot_file_is_refused_on_open() {
        let disk = MemDisk::new();
        let mut sm = store(&disk);
        apply(&mut sm, (1..4).map(|i| open_session(1, i)).collect()).await;
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let name = snapshot_files(&disk).remove(0);
        disk.corrupt_byte(&name, 40).unwrap();
        match StateMachineStore::open(Arc::new(disk.clone()), Limits::default()) {
            Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, name),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a corrupt snapshot must not open"),
        }
    }

    /// A backup's export, checked and seeded into an empty directory, opens as the same
    /// state at the metadata it was seeded with.
    #[tokio::test]
    async fn an_export_seeds_a_new_directory() {
        let mut sm = store(&MemDisk::new());
        apply(&mut sm, vec![membership(1, 1, &[1, 2])]).await;
        apply(&mut sm, (2..6).map(|i| open_session(3, i)).collect()).await;
        let export = sm.shared().export().unwrap();
        assert_eq!((export.meta.last_log_id, export.revision), (Some(lid(3, 5)), 4));
        let (meta, kernel) = verify_snapshot_data(&export.data, "backup").unwrap();
        assert_eq!(meta, export.meta);
        let mut torn = export.data.clone();
        torn.truncate(torn.len() - 1);
        assert!(matches!(verify_snapshot_data(&torn, "backup"), Err(StorageError::Corrupt { .. })));

        let disk = MemDisk::new();
        let seeded = SnapshotMeta { last_log_id: Some(lid(0, 5)), last_membership: meta.last_membership.clone() };
        let name = seed_snapshot(Arc::new(disk.clone()), &seeded, &kernel).unwrap();
        assert_eq!(snapshot_files(&disk), vec![name]);
        let mut reopened = store(&disk);
        assert_eq!(reopened.applied_state().await.unwrap(), (Some(lid(0, 5)), meta.last_membership));
        assert_eq!(reopened.shared().applied(), Applied { log_index: Some(5), revision: 4 });
    }

    #[tokio::test]
    async fn leftover_temp_file_is_removed() {
        let disk = MemDisk::new();
        disk.create(SNAPSHOT_TMP_FILE).unwrap();
        disk.write_at(SNAPSHOT_TMP_FILE, 0, b"half a snapshot").unwrap();
        let sm = store(&disk);
        assert!(snapshot_files(&disk).is_empty());
        assert_eq!(sm.shared().applied(), Applied::default());
    }

    #[tokio::test]
    async fn wait_applied_wakes_on_progress() {
        let disk = MemDisk::new();
        let mut sm = store(&disk);
        let shared = sm.shared();
        let waiter = tokio::spawn(async move { shared.wait_applied(3).await });
        tokio::task::yield_now().await;
        apply(&mut sm, vec![open_session(1, 1), open_session(1, 2)]).await;
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        apply(&mut sm, vec![open_session(1, 3)]).await;
        assert_eq!(waiter.await.unwrap(), Applied { log_index: Some(3), revision: 3 });
    }
}
