//! openraft's log storage over the WAL, with group commit.
//!
//! Every entry not yet purged is kept in memory (a `BTreeMap` by index), so reads never
//! touch the disk. Writes go, in call order, through a bounded queue to one writer task
//! that owns the `Wal`. The writer takes every command queued at that moment, writes them
//! all, then makes them durable with ONE fsync and only then fires the waiting appends'
//! `IOFlushed` callbacks: concurrent appends share an fsync.
//!
//! openraft allows this: `RaftLogStorage::append` must make the entries readable before it
//! returns, and call the callback once they are persisted, "either before or after this
//! method returns"; openraft does not wait for the callback before the next `append`
//! (its `IOFlushed` watermark even tolerates out-of-order completion).
//!
//! Vote, truncate and purge are barriers: the writer first makes all earlier appends
//! durable (and acknowledges them), then performs the operation durably, then replies.
//! That keeps every write IO in call order, as `RaftLogStorage` requires.
//!
//! Determinism: on a `MemDisk` the writer does all its work inline on its own task (no
//! threads, clocks or randomness), so a simulated run is a function of its seed. On a
//! disk whose fsync blocks for real (`Disk::sync_blocks_thread`), fsyncs and the barrier
//! operations run on tokio's blocking pool so they do not stall a runtime worker; that
//! path is compiled out under `cfg(madsim)`.

use super::disk::Disk;
use super::wal::{self, EncodedBatch, Wal, WalOptions};
use super::{StorageError, on_disk};
use crate::metrics::Metrics;
use crate::raft::{Entry, LogId, TypeConfig, Vote};
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the writer; `append` waits for room beyond this (backpressure).
const WRITER_QUEUE_COMMANDS: usize = 1024;
/// Most entries `limited_get_log_entries` returns at once.
const MAX_READ_ENTRIES: u64 = 4096;

type Callback = IOFlushed<TypeConfig>;
type Reply = oneshot::Sender<Result<(), io::Error>>;

enum Command {
    Append { batch: EncodedBatch, done: Callback },
    Committed(LogId),
    SaveVote { vote: Vote, reply: Reply },
    TruncateAfter { last_kept: Option<u64>, reply: Reply },
    Purge { upto: LogId, reply: Reply },
    Flush { reply: Reply },
}

#[derive(Debug, Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry>,
    /// Encoded bytes of every entry appended since the store opened (never decreases).
    appended_bytes: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl LogMem {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries.last_key_value().map(|(_, e)| e.log_id).or(self.last_purged)
    }
}

#[derive(Debug, Default)]
struct Shared {
    mem: RwLock<LogMem>,
}

impl Shared {
    // No code below panics while holding the lock with `LogMem` half updated, so a
    // poisoned lock still guards consistent data.
    fn read(&self) -> RwLockReadGuard<'_, LogMem> {
        self.mem.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, LogMem> {
        self.mem.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// openraft's `RaftLogStorage`: the Raft log, vote and committed log id, durable in a WAL.
pub struct LogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
}

/// A read-only handle to the log (openraft gives one to each replication task).
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens the WAL on `disk` and starts the writer task (so: inside the runtime).
    pub fn open(disk: Arc<dyn Disk>, opts: WalOptions, metrics: Arc<Metrics>) -> Result<LogStore, StorageError> {
        let offload = disk.sync_blocks_thread();
        let (wal, recovered) = Wal::open(disk.clone(), opts)?;
        tracing::info!(
            entries = recovered.entries.len(),
            first = ?recovered.entries.first().map(|e| e.log_id.index),
            last = ?recovered.entries.last().map(|e| e.log_id.index),
            purged = ?recovered.last_purged.as_ref().map(|l| l.index),
            committed = ?recovered.committed.as_ref().map(|l| l.index),
            "Raft log opened"
        );
        // A vote read back from disk is never an established leadership. As leader this
        // node sent its entries to followers before its own fsync of them completed, and
        // a quorum of followers may have committed them; a power loss then takes them from
        // this log. Restored as leader of the same term (openraft's leader restore, on by
        // default), it would append different entries at those indexes under the same log
        // ids (found by the simulator's `failing-disk`, seed 1). As a follower it catches
        // up from the cluster, or wins a new term. The vote stays committed on disk, as in
        // openraft's own demotion: any later vote is greater than both forms.
        let vote = recovered.vote.map(|mut v| {
            v.committed = false;
            v
        });
        let mem = LogMem {
            entries: recovered.entries.into_iter().map(|e| (e.log_id.index, e)).collect(),
            appended_bytes: 0,
            vote,
            committed: recovered.committed,
            last_purged: recovered.last_purged,
        };
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_COMMANDS);
        tokio::spawn(run_writer(Arc::new(Mutex::new(wal)), disk, rx, offload, metrics));
        Ok(LogStore { shared: Arc::new(Shared { mem: RwLock::new(mem) }), tx })
    }

    /// A reader over the same log.
    pub fn reader(&self) -> LogReader {
        LogReader { shared: self.shared.clone() }
    }

    /// Waits until every write so far is durable.
    pub async fn flush(&mut self) -> Result<(), io::Error> {
        self.call(|reply| Command::Flush { reply }).await
    }

    async fn send(&self, cmd: Command) -> Result<(), io::Error> {
        self.tx.send(cmd).await.map_err(|_| writer_gone())
    }

    async fn call(&self, cmd: impl FnOnce(Reply) -> Command) -> Result<(), io::Error> {
        let (reply, rx) = oneshot::channel();
        self.send(cmd(reply)).await?;
        rx.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the Raft log's writer task has stopped")
}

/// Why `entries` cannot follow what the log holds, if they cannot.
fn check_follows(mem: &LogMem, entries: &[Entry]) -> Result<(), StorageError> {
    let mut last = mem.last_log_id();
    let mut have_entry = !mem.entries.is_empty();
    for e in entries {
        let expected = last.as_ref().map(|l| l.index + 1);
        let older_leader = have_entry && last.as_ref().is_some_and(|l| e.log_id.leader_id < l.leader_id);
        if expected.is_some_and(|x| x != e.log_id.index) || older_leader {
            return Err(StorageError::OutOfOrder { log_id: e.log_id.to_string(), expected });
        }
        last = Some(e.log_id);
        have_entry = true;
    }
    Ok(())
}

fn read_range<RB: RangeBounds<u64>>(mem: &LogMem, range: &RB, limit: u64) -> Vec<Entry> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Vec::new(),
        },
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Bound::Included(*e),
        Bound::Excluded(e) => Bound::Excluded(*e),
        Bound::Unbounded => Bound::Unbounded,
    };
    let empty = match end {
        Bound::Included(e) => start > e,
        Bound::Excluded(e) => start >= e,
        Bound::Unbounded => false,
    };
    if empty {
        return Vec::new();
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    mem.entries.range((Bound::Included(start), end)).take(limit).map(|(_, e)| e.clone()).collect()
}

impl LogReader {
    /// Encoded bytes of every entry appended since the store opened; the log held in
    /// memory grows by as much until a snapshot lets it be purged.
    pub fn appended_bytes(&self) -> u64 {
        self.shared.read().appended_bytes
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(read_range(&self.shared.read(), &range, u64::MAX))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.read().vote)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        Ok(read_range(&self.shared.read(), &(start..end), MAX_READ_ENTRIES))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader().try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader().read_vote().await
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        self.reader().limited_get_log_entries(start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = self.shared.read();
        Ok(LogState { last_purged_log_id: mem.last_purged, last_log_id: mem.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let v = *vote;
        self.call(|reply| Command::SaveVote { vote: v, reply }).await?;
        self.shared.write().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.shared.write().committed = committed;
        match committed {
            Some(c) => self.send(Command::Committed(c)).await,
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.read().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: Callback) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Encoding here, on the caller's task, keeps the writer's turn short.
        let batch = wal::encode_entries(&entries)?;
        {
            let mut mem = self.shared.write();
            check_follows(&mem, &entries)?;
            mem.appended_bytes += batch.bytes_len() as u64;
            for e in entries {
                mem.entries.insert(e.log_id.index, e);
            }
        }
        self.send(Command::Append { batch, done: callback }).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let last_kept = last_log_id.as_ref().map(|l| l.index);
        {
            let mut mem = self.shared.write();
            match last_kept {
                Some(i) => drop(mem.entries.split_off(&(i + 1))),
                None => mem.entries.clear(),
            }
        }
        self.call(|reply| Command::TruncateAfter { last_kept, reply }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut mem = self.shared.write();
            if mem.last_purged.as_ref() >= Some(&log_id) {
                return Ok(());
            }
            mem.entries = mem.entries.split_off(&(log_id.index + 1));
            mem.last_purged = Some(log_id);
        }
        self.call(|reply| Command::Purge { upto: log_id, reply }).await
    }
}

// ----- the writer task -----

struct Writer {
    wal: Arc<Mutex<Wal>>,
    disk: Arc<dyn Disk>,
    offload: bool,
    /// Callbacks of appends written but not yet fsynced.
    waiting: Vec<Callback>,
    /// Set by the first failure (a `StorageError::FailStop` naming the file); every later
    /// write is refused with it. Fail-stop: after a failed write or fsync nothing says what
    /// reached the disk, so nothing is retried and nothing more is acknowledged.
    failed: Option<StorageError>,
    /// `roster_disk_wal_fsync_duration_seconds`.
    metrics: Arc<Metrics>,
}

impl Writer {
    fn wal(&self) -> std::sync::MutexGuard<'_, Wal> {
        // The WAL is used by one task at a time; a panic inside it poisons nothing we
        // rely on, because `failed` is set right after and the WAL is never used again.
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&mut self, e: &StorageError) {
        let stop = e.fail_stop();
        if matches!(e, StorageError::RuntimeStopping) {
            // The end of a clean stop, not a failure: said, but not as an error.
            tracing::info!(error = %e, "Raft log storage stopped with the runtime; refusing further writes");
        } else {
            tracing::error!(error = %stop, "Raft log storage failed; refusing further writes");
        }
        for cb in self.waiting.drain(..) {
            cb.io_completed(Err(stop.fail_stop().into_io()));
        }
        self.failed = Some(stop);
    }

    fn refusal(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|e| e.fail_stop().into_io())
    }

    /// One fsync for everything written; then the waiting appends are acknowledged.
    async fn flush(&mut self) {
        if self.failed.is_some() || (self.waiting.is_empty() && !self.wal().needs_sync()) {
            return;
        }
        let wal = self.wal.clone();
        let started = tokio::time::Instant::now();
        let result = on_disk(&*self.disk, self.offload, move || wal.lock().unwrap_or_else(|e| e.into_inner()).sync())
            .await
            .and_then(|r| r);
        match result {
            Ok(()) => {
                self.metrics.wal_fsync.observe(started.elapsed().as_secs_f64());
                for cb in self.waiting.drain(..) {
                    cb.io_completed(Ok(()));
                }
            }
            Err(e) => self.fail(&e),
        }
    }

    /// A barrier: earlier appends are made durable first, then `op` runs, durably.
    async fn barrier(&mut self, reply: Reply, op: impl FnOnce(&mut Wal) -> Result<(), StorageError> + Send + 'static) {
        self.flush().await;
        if let Some(e) = self.refusal() {
            let _ = reply.send(Err(e));
            return;
        }
        let wal = self.wal.clone();
        let result = on_disk(&*self.disk, self.offload, move || op(&mut wal.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .and_then(|r| r);
        match result {
            Ok(()) => {
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                self.fail(&e);
                let _ = reply.send(Err(e.fail_stop().into_io()));
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append { mut batch, done } => {
                if let Some(e) = self.refusal() {
                    done.io_completed(Err(e));
                    return;
                }
                let written = self.wal().append(&mut batch);
                match written {
                    Ok(()) => self.waiting.push(done),
                    Err(e) => {
                        self.waiting.push(done);
                        self.fail(&e);
                    }
                }
            }
            Command::Committed(log_id) => {
                if self.failed.is_none() {
                    let written = self.wal().save_committed(&log_id);
                    if let Err(e) = written {
                        self.fail(&e);
                    }
                }
            }
            Command::SaveVote { vote, reply } => self.barrier(reply, move |wal| wal.save_vote(&vote)).await,
            Command::TruncateAfter { last_kept, reply } => {
                self.barrier(reply, move |wal| wal.truncate_after(last_kept)).await
            }
            Command::Purge { upto, reply } => self.barrier(reply, move |wal| wal.purge(&upto)).await,
            Command::Flush { reply } => self.barrier(reply, |_| Ok(())).await,
        }
    }
}

async fn run_writer(
    wal: Arc<Mutex<Wal>>,
    disk: Arc<dyn Disk>,
    mut rx: mpsc::Receiver<Command>,
    offload: bool,
    metrics: Arc<Metrics>,
) {
    let mut writer = Writer { wal, disk, offload, waiting: Vec::new(), failed: None, metrics };
    while let Some(first) = rx.recv().await {
        // Group commit: take everything queued right now, then fsync once.
        writer.handle(first).await;
        while let Ok(cmd) = rx.try_recv() {
            writer.handle(cmd).await;
        }
        writer.flush().await;
    }
    // The store was dropped: finish what was written, so nothing acknowledged is lost
    // and nobody waits forever.
    writer.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::FsDisk;
    use crate::storage::mem_disk::{Keep, MemDisk};
    use crate::storage::wal::tests::{ent, lid};
    use openraft::type_config::TypeConfigExt;

    fn mem_store(disk: &MemDisk) -> LogStore {
        LogStore::open(Arc::new(disk.clone()), WalOptions::for_mem(), Default::default()).unwrap()
    }

    type Flushed = openraft::alias::OneshotReceiverOf<TypeConfig, Result<(), io::Error>>;

    /// Appends; the receiver reports when the callback fires.
    async fn append_start(store: &mut LogStore, entries: Vec<Entry>) -> Flushed {
        let (tx, rx) = TypeConfig::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx
    }

    async fn flushed(rx: Flushed) -> Result<(), io::Error> {
        rx.await.expect("the callback fires")
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        flushed(append_start(store, entries).await).await.unwrap();
    }

    async fn all(store: &mut LogStore) -> Vec<Entry> {
        store.try_get_log_entries(..).await.unwrap()
    }

    #[tokio::test]
    async fn append_read_and_reopen() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        let entries: Vec<Entry> = (1..=20).map(|i| ent(1, i)).collect();
        append(&mut store, entries[..10].to_vec()).await;
        append(&mut store, entries[10..].to_vec()).await;
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        store.save_committed(Some(lid(1, 15))).await.unwrap();
        store.flush().await.unwrap();

        assert_eq!(all(&mut store).await, entries);
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(5..8).await.unwrap(), entries[4..7].to_vec());
        assert_eq!(reader.try_get_log_entries(5..=5).await.unwrap(), entries[4..5].to_vec());
        assert!(reader.try_get_log_entries(8..8).await.unwrap().is_empty());
        assert!(reader.try_get_log_entries(30..).await.unwrap().is_empty());
        assert_eq!(reader.limited_get_log_entries(1, 3).await.unwrap(), entries[..2].to_vec());
        let state = store.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, Some(lid(1, 20))));
        drop(store);

        disk.crash(|_| Keep::NONE);
        let mut store = mem_store(&disk);
        assert_eq!(all(&mut store).await, entries);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 15)));
    }

    #[tokio::test]
    async fn acknowledged_appends_survive_a_crash() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        append(&mut store, (0..5).map(|i| ent(1, i)).collect()).await;
        // Crash before the writer runs again: the next append is lost, the first is not.
        let pending = append_start(&mut store, vec![ent(1, 5)]).await;
        drop(pending);
        disk.crash(|_| Keep::NONE);
        let mut reopened = mem_store(&disk);
        let got: Vec<u64> = all(&mut reopened).await.iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        drop(store);
    }

    #[tokio::test]
    async fn concurrent_appends_share_one_fsync() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        append(&mut store, vec![ent(1, 0)]).await;
        let before = disk.sync_count();
        let mut waiting = Vec::new();
        for i in 1..=50 {
            // openraft may append again before the previous callback fired.
            waiting.push(append_start(&mut store, vec![ent(1, i)]).await);
        }
        for w in waiting {
            flushed(w).await.unwrap();
        }
        let syncs = disk.sync_count() - before;
        assert_eq!(syncs, 1, "50 queued appends must share one fsync");
        // Everything acknowledged is durable.
        disk.crash(|_| Keep::NONE);
        let mut reopened = mem_store(&disk);
        assert_eq!(all(&mut reopened).await.len(), 51);
    }

    #[tokio::test]
    async fn truncate_and_purge_through_the_store() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        append(&mut store, (0..30).map(|i| ent(1, i)).collect()).await;
        let reader_before = store.get_log_reader().await;
        store.truncate_after(Some(lid(1, 19))).await.unwrap();
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(lid(1, 19)));
        append(&mut store, (20..25).map(|i| ent(2, i)).collect()).await;
        store.purge(lid(1, 9)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(lid(1, 9)), Some(lid(2, 24))));
        // Readers share the store's view.
        let mut r = reader_before.clone();
        let got: Vec<u64> = r.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (10..25).collect::<Vec<_>>());
        // A gap is refused before anything is written.
        let (tx, _rx) = TypeConfig::oneshot();
        assert!(store.append(vec![ent(2, 30)], IOFlushed::signal(tx)).await.is_err());
        drop(store);
        let mut store = mem_store(&disk);
        let got: Vec<u64> = all(&mut store).await.iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, (10..25).collect::<Vec<_>>());
        assert_eq!(store.get_log_state().await.unwrap().last_purged_log_id, Some(lid(1, 9)));
        // Purging past the end empties the log; the marker becomes the last log id.
        store.purge(lid(2, 40)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(lid(2, 40)), Some(lid(2, 40))));
        append(&mut store, vec![ent(3, 41)]).await;
    }

    #[tokio::test]
    async fn a_failing_disk_fails_the_store() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        append(&mut store, vec![ent(1, 0)]).await;
        disk.set_failing(true);
        let result = flushed(append_start(&mut store, vec![ent(1, 1)]).await).await;
        assert!(result.is_err(), "an unsynced append must not be acknowledged");
        disk.set_failing(false);
        // Once failed, always failed: openraft stops the node rather than trust the log.
        assert!(store.save_vote(&Vote::new(2, 1)).await.is_err());
        let result = flushed(append_start(&mut store, vec![ent(1, 2)]).await).await;
        assert!(result.is_err());
    }

    /// Fsyncs take `latency_ms`; the `fail_at`-th fsync (from 1) fails.
    struct SlowFsync {
        fsyncs: u32,
        fail_at: Option<u32>,
        latency_ms: u64,
    }

    impl crate::storage::DiskModel for SlowFsync {
        fn draw(&mut self, op: crate::storage::DiskOp<'_>) -> crate::storage::Draw {
            if let crate::storage::DiskOp::Write { .. } = op {
                return crate::storage::Draw::INSTANT;
            }
            self.fsyncs += 1;
            let latency = std::time::Duration::from_millis(self.latency_ms);
            crate::storage::Draw { latency, fail: self.fail_at == Some(self.fsyncs) }
        }
    }

    #[tokio::test]
    async fn an_append_is_acknowledged_only_once_its_fsync_completed() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        append(&mut store, vec![ent(1, 0)]).await;
        // A second-long fsync, looked at after 5 ms: a busy machine's late wake-up still
        // lands well inside it.
        disk.set_model(Box::new(SlowFsync { fsyncs: 0, fail_at: None, latency_ms: 1_000 }));
        let mut pending = append_start(&mut store, vec![ent(1, 1)]).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(pending.try_recv().is_err(), "acknowledged while its fsync was in flight");
        flushed(pending).await.unwrap();
        disk.crash(|_| Keep::NONE);
        let mut reopened = mem_store(&disk);
        assert_eq!(all(&mut reopened).await.len(), 2);
        drop(store);
    }

    #[tokio::test]
    async fn a_failed_fsync_fail_stops_the_log_naming_the_file() {
        let disk = MemDisk::new();
        let mut store = mem_store(&disk);
        disk.set_model(Box::new(SlowFsync { fsyncs: 0, fail_at: Some(2), latency_ms: 20 }));
        append(&mut store, vec![ent(1, 0)]).await;
        let err = flushed(append_start(&mut store, vec![ent(1, 1)]).await).await.unwrap_err();
        let typed = StorageError::find_in(&err).expect("a typed storage error");
        assert!(matches!(typed, StorageError::FailStop { file, .. } if file.starts_with("wal-")), "{typed:?}");
        // Nothing is retried: the next fsync would succeed, but the log stays stopped.
        assert!(store.save_vote(&Vote::new(2, 1)).await.is_err());
        let err = flushed(append_start(&mut store, vec![ent(1, 2)]).await).await.unwrap_err();
        assert!(err.to_string().contains("fail-stopped on wal-"), "{err}");
        drop(store);
        // After a power cycle the log is what was durable: the first entry only.
        disk.crash(|_| Keep::ALL);
        let mut reopened = mem_store(&disk);
        let got: Vec<u64> = all(&mut reopened).await.iter().map(|e| e.log_id.index).collect();
        assert_eq!(got, vec![0]);
    }

    #[tokio::test]
    async fn fs_disk_store_round_trip() {
        let dir = crate::storage::test_dir("fs_log_store");
        let opts = WalOptions { segment_bytes: 64 << 10, preallocate: true };
        let entries: Vec<Entry> = (0..3000).map(|i| ent(1 + i / 1000, i)).collect();
        let disk = Arc::new(FsDisk::open(&dir).unwrap());
        {
            let mut store = LogStore::open(disk.clone(), opts.clone(), Default::default()).unwrap();
            for chunk in entries.chunks(64) {
                append(&mut store, chunk.to_vec()).await;
            }
            store.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
            store.truncate_after(Some(lid(3, 2899))).await.unwrap();
            store.purge(lid(1, 499)).await.unwrap();
        }
        // The writer task holds the disk, and with it the directory's lock, until it ends.
        for _ in 0..1_000 {
            if Arc::strong_count(&disk) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(Arc::strong_count(&disk), 1, "the writer task ended with the store");
        drop(disk);
        let mut store = LogStore::open(Arc::new(FsDisk::open(&dir).unwrap()), opts, Default::default()).unwrap();
        assert_eq!(all(&mut store).await, entries[500..2900].to_vec());
        // Read back, a leader's vote is not an established leadership (see `open`).
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
