//! Durable storage: the Raft log (own WAL), vote, committed index and snapshots, over a
//! `Disk` trait so the simulator can plug in a simulated disk.
//!
//! - `disk`: the `Disk` trait and `FsDisk` (std::fs); `mem_disk`: `MemDisk` (in memory,
//!   crashable; tests and the simulator only, feature `sim-disk`).
//! - `wal`: the segmented write-ahead log and its meta file.
//! - `log_store`: openraft's `RaftLogStorage` over the WAL, with group commit.
//! - `state_machine`: openraft's `RaftStateMachine` over the kernel's state machine, with
//!   snapshots in their own files, and the state shared with the client API.
//!
//! `open` is the one entry point a node calls.

pub mod disk;
pub mod log_store;
#[cfg(any(test, feature = "sim-disk"))]
pub mod mem_disk;
pub mod state_machine;
pub mod wal;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod crash_states;

pub use disk::{Disk, FsDisk};
pub use log_store::{LogReader, LogStore};
#[cfg(any(test, feature = "sim-disk"))]
pub use mem_disk::{DiskModel, DiskOp, Draw, Keep, MemDisk, PowerLoss, Unsynced};
pub use state_machine::{
    Applied, AppliedReceiver, AppliedState, SharedState, Snapshot, SnapshotData, StateMachineStore,
};
pub use wal::WalOptions;

use roster_kernel::Limits;
use std::io;
use std::sync::Arc;

/// A storage failure. Corruption names the file and offset; it is never repaired
/// silently (only damage beyond the durable point, which was never acknowledged, is cut
/// on open, with a warning that says what and why).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O on {file} failed: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{file} is corrupt at offset {offset}: {reason}. Acknowledged data is damaged, so the node refuses to start \
         rather than serve from it: move the data directory aside (keep it for inspection), then run `roster member \
         replace <this node's id>` and start the node on an empty directory: it rejoins from its peers"
    )]
    Corrupt { file: String, offset: u64, reason: String },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error("a log record of {len} bytes is over the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("log entry {log_id} appended out of order (expected index {expected:?}, no older leader)")]
    OutOfOrder { log_id: String, expected: Option<u64> },
    #[error("invalid storage options: {0}")]
    InvalidOptions(String),
    #[error("storage has failed earlier and refuses further writes: {0}")]
    Failed(String),
    /// Disk work was cancelled because the process's runtime is shutting down (a clean
    /// stop ends with it): no failure of the disk, but nothing after it is acknowledged.
    #[error("storage I/O was cancelled: the node's runtime is stopping")]
    RuntimeStopping,
    /// The log's first write or fsync that failed; the log acknowledges nothing after it.
    #[error(
        "the Raft log fail-stopped on {file}: {reason}. Nothing after it is acknowledged and no write is retried \
         (a failed fsync says nothing about what reached the disk); check the disk, then restart the node: it \
         recovers from what is durable"
    )]
    FailStop { file: String, reason: String },
}

impl StorageError {
    /// The fail-stop this error causes in the log: names the file it happened on.
    pub fn fail_stop(&self) -> StorageError {
        let file = match self {
            StorageError::Io { file, .. }
            | StorageError::Corrupt { file, .. }
            | StorageError::FailStop { file, .. } => file.clone(),
            _ => "the Raft log".to_string(),
        };
        let reason = match self {
            StorageError::FailStop { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        StorageError::FailStop { file, reason }
    }

    /// The `StorageError` inside an `io::Error` made by `into_io` (openraft hands storage
    /// errors back as `io::Error`s): lets a node tell a fail-stop from other failures.
    pub fn find_in(e: &io::Error) -> Option<&StorageError> {
        e.get_ref()?.downcast_ref::<StorageError>()
    }

    /// An `io::Error` that carries this error, typed (see `find_in`).
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            StorageError::Io { source, .. } => source.kind(),
            StorageError::Corrupt { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        match e {
            StorageError::Io { file, source } => io::Error::new(source.kind(), format!("{file}: {source}")),
            StorageError::Corrupt { .. } => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Everything `open` needs besides the disk, spelled out at the call site.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    pub wal: WalOptions,
    /// The state machine's limits for a fresh start (a snapshot carries its own).
    pub limits: Limits,
}

impl StorageOptions {
    /// For a real disk (`FsDisk`).
    pub fn for_fs(limits: Limits) -> StorageOptions {
        StorageOptions { wal: WalOptions::for_fs(), limits }
    }

    /// For an in-memory disk (`MemDisk`, tests and the simulator).
    #[cfg(any(test, feature = "sim-disk"))]
    pub fn for_mem(limits: Limits) -> StorageOptions {
        StorageOptions { wal: WalOptions::for_mem(), limits }
    }
}

/// Replaces the small file `name` with `bytes` atomically and durably: written to `tmp`,
/// fsynced, renamed over `name`, the directory fsynced; then read back, so that what
/// decides a node's behaviour after a restart is known to read as written. On a disk
/// whose operations take time (the simulator's), await [`settled`] before treating the
/// file as durable.
pub fn replace_file(disk: &dyn Disk, tmp: &str, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let io = |file: &str| {
        let file = file.to_string();
        move |source| StorageError::Io { file, source }
    };
    disk.create(tmp).map_err(io(tmp))?;
    disk.write_at(tmp, 0, bytes).map_err(io(tmp))?;
    disk.sync_data(tmp).map_err(io(tmp))?;
    disk.rename(tmp, name).map_err(io(name))?;
    disk.sync_dir().map_err(io("the data directory"))?;
    if disk.read(name).map_err(io(name))? != bytes {
        return Err(StorageError::Corrupt {
            file: name.to_string(),
            offset: 0,
            reason: "does not read back as written".to_string(),
        });
    }
    Ok(())
}

/// Resolves once everything issued on `disk` so far has completed (at once on a real
/// disk, whose calls return when done; see `Disk::settle`).
pub async fn settled(disk: &dyn Disk) {
    if let Some(done) = disk.settle() {
        done.await;
    }
}

/// Opens the node's storage on `disk`: the log store (WAL, vote, committed) and the state
/// machine (restored from the latest snapshot, if any). Must run inside the runtime: it
/// spawns the log's writer task.
/// `metrics` times each fsync of the log and each apply.
pub async fn open(
    disk: Arc<dyn Disk>,
    opts: StorageOptions,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let sm = StateMachineStore::open(disk.clone(), opts.limits)?.with_metrics(metrics.clone());
    let log = LogStore::open(disk.clone(), opts.wal, metrics)?;
    // What opening cut or created is durable before anything is served.
    settled(&*disk).await;
    Ok((log, sm))
}

/// Runs `f` where disk work belongs: inline on the calling task for an in-memory disk
/// (deterministic under the simulator), on tokio's blocking pool when the disk's fsync
/// really blocks the thread (`Disk::sync_blocks_thread`), so a runtime worker is not
/// stalled. The blocking pool is compiled out under `cfg(madsim)`. Returns only once the
/// disk has completed the work (`Disk::settle`: a simulated fsync takes simulated time and
/// is durable only at its end), so a caller may report what `f` synced as durable.
pub(crate) async fn on_disk<R: Send + 'static>(
    disk: &dyn Disk,
    offload: bool,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, StorageError> {
    #[cfg(not(madsim))]
    if offload {
        // A blocking task is cancelled only when the runtime shuts down before it ran.
        return tokio::task::spawn_blocking(f).await.map_err(|e| {
            if e.is_cancelled() {
                StorageError::RuntimeStopping
            } else {
                StorageError::Failed(format!("a storage I/O task died: {e}"))
            }
        });
    }
    #[cfg(madsim)]
    let _ = offload;
    let r = f();
    settled(disk).await;
    Ok(r)
}

/// A fresh, empty directory under the system temp dir for one test.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("roster-storage-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `f` on the applied kernel state under the read lock; keep `f` short.
pub fn with_kernel<R>(shared: &SharedState, f: impl FnOnce(&roster_kernel::ClusterStateMachine) -> R) -> R {
    shared.with_kernel(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::entry::Batch;
    use crate::raft::{Entry, TypeConfig, Vote};
    use crate::storage::wal::tests::lid;
    use openraft::entry::RaftEntry;
    use openraft::storage::{IOFlushed, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine, StorageHelper};
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;
    use roster_kernel::{Proposal, ProposalBody};

    fn sto_err(e: StorageError) -> openraft::StorageError<TypeConfig> {
        openraft::StorageError::read(TypeConfig::err_from_error(&e))
    }

    struct MemBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, MemDisk> for MemBuilder {
        async fn build(&self) -> Result<(MemDisk, LogStore, StateMachineStore), openraft::StorageError<TypeConfig>> {
            let disk = MemDisk::new();
            let (log, sm) =
                open(Arc::new(disk.clone()), StorageOptions::for_mem(Limits::default()), Default::default())
                    .await
                    .map_err(sto_err)?;
            Ok((disk, log, sm))
        }
    }

    /// Deletes its directory when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct FsBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FsBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), openraft::StorageError<TypeConfig>> {
            let dir = TempDir(test_dir("suite"));
            let disk =
                FsDisk::open(&dir.0).map_err(|e| openraft::StorageError::read(TypeConfig::err_from_error(&e)))?;
            let opts = StorageOptions {
                wal: WalOptions { segment_bytes: 64 << 10, preallocate: true },
                limits: Limits::default(),
            };
            let (log, sm) = open(Arc::new(disk), opts, Default::default()).await.map_err(sto_err)?;
            Ok((dir, log, sm))
        }
    }

    #[tokio::test]
    async fn openraft_storage_suite_on_mem_disk() {
        Suite::test_all(MemBuilder).await.unwrap();
    }

    #[tokio::test]
    async fn openraft_storage_suite_on_fs_disk() {
        Suite::test_all(FsBuilder).await.unwrap();
    }

    fn open_session(term: u64, index: u64) -> Entry {
        Entry::new_normal(
            lid(term, index),
            Batch::one(Proposal {
                at_unix_ms: index,
                body: ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node },
            }),
        )
    }

    /// A node restart: the state machine comes back from its snapshot and openraft
    /// re-applies the log up to the saved committed log id.
    #[tokio::test]
    async fn restart_recovers_state_from_snapshot_and_log() {
        let disk = MemDisk::new();
        let opts = StorageOptions::for_mem(Limits::default());
        let entries: Vec<Entry> = (1..=30).map(|i| open_session(1, i)).collect();
        {
            let (mut log, mut sm) = open(Arc::new(disk.clone()), opts.clone(), Default::default()).await.unwrap();
            log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            let (tx, rx) = TypeConfig::oneshot();
            log.append(entries.clone(), IOFlushed::signal(tx)).await.unwrap();
            rx.await.unwrap().unwrap();
            let apply = |upto: usize| futures::stream::iter(entries[..upto].iter().cloned().map(|e| Ok((e, None))));
            sm.apply(apply(10)).await.unwrap();
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            log.purge(lid(1, 5)).await.unwrap();
            log.save_committed(Some(lid(1, 25))).await.unwrap();
            log.flush().await.unwrap();
        }
        disk.crash(|_| Keep::NONE);
        let (mut log, mut sm) = open(Arc::new(disk.clone()), opts, Default::default()).await.unwrap();
        assert_eq!(sm.shared().applied().log_index, Some(10), "restored from the snapshot");
        let state = StorageHelper::new(&mut log, &mut sm).with_id(1).get_initial_state().await.unwrap();
        assert_eq!(state.vote_ref().leader_id().term, 1);
        assert_eq!(sm.shared().applied(), Applied { log_index: Some(25), revision: 25 });
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(lid(1, 25)));
        let last = log.get_log_state().await.unwrap().last_log_id;
        assert_eq!(last, Some(lid(1, 30)));
    }
}
