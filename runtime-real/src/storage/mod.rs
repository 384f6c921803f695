//! Durable storage: the Raft log (own WAL), vote, committed index and snapshots, over a
//! `Disk` trait so the simulator can plug in a simulated disk.
//!
//! - `disk`: the `Disk` trait, `FsDisk` (std::fs) and `MemDisk` (in memory, crashable).
//! - `wal`: the segmented write-ahead log and its meta file.
//! - `log_store`: openraft's `RaftLogStorage` over the WAL, with group commit.
//! - `state_machine`: openraft's `RaftStateMachine` over the kernel's state machine, with
//!   snapshots in their own files, and the state shared with the client API.
//!
//! `open` is the one entry point a node calls.

pub mod disk;
pub mod log_store;
pub mod state_machine;
pub mod wal;

pub use disk::{Disk, FsDisk, Keep, MemDisk, Unsynced};
pub use log_store::{LogReader, LogStore};
pub use state_machine::{
    Applied, AppliedReceiver, AppliedState, SharedState, Snapshot, SnapshotData, StateMachineStore,
};
pub use wal::WalOptions;

use roster_kernel::Limits;
use std::io;
use std::sync::Arc;

/// A storage failure. Corruption names the file and offset; it is never repaired
/// silently (only a torn tail, which was never acknowledged, is cut on open).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O on {file} failed: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{file} is corrupt at offset {offset}: {reason}. Acknowledged data is damaged; move the data directory aside and let the node rejoin from its peers"
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
    pub fn for_mem(limits: Limits) -> StorageOptions {
        StorageOptions { wal: WalOptions::for_mem(), limits }
    }
}

/// Opens the node's storage on `disk`: the log store (WAL, vote, committed) and the state
/// machine (restored from the latest snapshot, if any). Must run inside the runtime: it
/// spawns the log's writer task.
pub async fn open(disk: Arc<dyn Disk>, opts: StorageOptions) -> Result<(LogStore, StateMachineStore), StorageError> {
    let sm = StateMachineStore::open(disk.clone(), opts.limits)?;
    let log = LogStore::open(disk, opts.wal)?;
    Ok((log, sm))
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
    f(&shared.read().kernel)
}
