//! Durable-append figures for the WAL on a real disk (`FsDisk`). Ignored by default; run:
//!
//! ```text
//! cargo test --release -p roster-real --lib storage::bench -- --ignored --nocapture
//! ```
//!
//! Set `ROSTER_BENCH_DIR` to measure a particular file system (default: the system temp
//! dir). Figures are wall-clock and machine-dependent: compare ratios, not absolutes.

use super::disk::{Disk, FsDisk};
use super::log_store::LogStore;
use super::wal::tests::ent;
use super::wal::{Wal, WalOptions, encode_entries};
use crate::raft::{Entry, TypeConfig};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SINGLE_APPENDS: u64 = 3000;
const BATCHES: u64 = 300;
const BATCH_ENTRIES: u64 = 64;
const IN_FLIGHT: u64 = 16;

type Flushed = openraft::alias::OneshotReceiverOf<TypeConfig, Result<(), std::io::Error>>;

/// An `FsDisk` that counts its fsyncs and the time spent in them.
struct Counting {
    fs: FsDisk,
    syncs: AtomicU64,
    sync_ns: AtomicU64,
}

impl Counting {
    fn open(dir: &std::path::Path) -> Arc<Counting> {
        Arc::new(Counting { fs: FsDisk::open(dir).expect("dir"), syncs: AtomicU64::new(0), sync_ns: AtomicU64::new(0) })
    }

    /// (fsyncs, mean µs per fsync) since the last call.
    fn take(&self) -> (u64, f64) {
        let n = self.syncs.swap(0, Ordering::Relaxed);
        let ns = self.sync_ns.swap(0, Ordering::Relaxed);
        (n, if n == 0 { 0.0 } else { ns as f64 / n as f64 / 1e3 })
    }
}

impl Disk for Counting {
    fn create(&self, name: &str) -> io::Result<()> {
        self.fs.create(name)
    }
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fs.write_at(name, offset, data)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.fs.read(name)
    }
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.fs.read_at(name, offset, len)
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        self.fs.len(name)
    }
    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.fs.set_len(name, len)
    }
    fn sync_data(&self, name: &str) -> io::Result<()> {
        let t = Instant::now();
        let r = self.fs.sync_data(name);
        self.sync_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        r
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.fs.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.fs.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.fs.list()
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.fs.sync_dir()
    }
    fn sync_blocks_thread(&self) -> bool {
        true
    }
}

fn fsyncs(disk: &Counting) -> String {
    let (n, mean_us) = disk.take();
    format!("[{n} fsyncs, mean {mean_us:.0} µs]")
}

fn bench_dir(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("ROSTER_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("roster-wal-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, mut lat: Vec<Duration>, disk: &Counting) {
    lat.sort();
    println!(
        "{what}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs (n = {}) {}",
        percentile(&lat, 0.50).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        lat.last().expect("samples").as_secs_f64() * 1e6,
        lat.len(),
        fsyncs(disk)
    );
}

async fn durable_append(store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.expect("append");
    rx.await.expect("callback").expect("durable");
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn wal_durable_append_figures() {
    let entry_bytes = encode_entries(&[ent(1, 1)]).expect("encodes").bytes_len();
    println!("record size: {entry_bytes} bytes per entry (8 MiB pre-zeroed segments)");
    bare_wal_figures();
    log_store_figures();
}

/// The bare WAL, on this thread: write + fdatasync per append.
fn bare_wal_figures() {
    let dir = bench_dir("wal");
    let disk = Counting::open(&dir);
    let (mut wal, _) = Wal::open(disk.clone(), WalOptions::for_fs()).expect("open");
    disk.take();
    let mut lat = Vec::new();
    for i in 0..SINGLE_APPENDS {
        let mut batch = encode_entries(&[ent(1, i)]).expect("encodes");
        let t = Instant::now();
        wal.append(&mut batch).expect("append");
        wal.sync().expect("sync");
        lat.push(t.elapsed());
    }
    report("Wal, 1-entry append + sync", lat, &disk);
    let t = Instant::now();
    for b in 0..BATCHES {
        let first = SINGLE_APPENDS + b * BATCH_ENTRIES;
        let mut batch =
            encode_entries(&(first..first + BATCH_ENTRIES).map(|i| ent(1, i)).collect::<Vec<_>>()).expect("encodes");
        wal.append(&mut batch).expect("append");
        wal.sync().expect("sync");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Wal, 64-entry batches + sync: {:.0} entries/s {}",
        (BATCHES * BATCH_ENTRIES) as f64 / secs,
        fsyncs(&disk)
    );
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Through LogStore (openraft's interface): queue, writer task, fsync on the blocking
/// pool, callback. Timed from `append` to the callback.
fn log_store_figures() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = bench_dir("store");
        let disk = Counting::open(&dir);
        let mut store = LogStore::open(disk.clone(), WalOptions::for_fs(), Default::default()).expect("open");
        disk.take();
        let mut lat = Vec::new();
        for i in 0..SINGLE_APPENDS {
            let t = Instant::now();
            durable_append(&mut store, vec![ent(1, i)]).await;
            lat.push(t.elapsed());
        }
        report("LogStore, 1-entry durable append", lat, &disk);

        let mut next = SINGLE_APPENDS;
        let t = Instant::now();
        for _ in 0..BATCHES {
            durable_append(&mut store, (next..next + BATCH_ENTRIES).map(|i| ent(1, i)).collect()).await;
            next += BATCH_ENTRIES;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "LogStore, 64-entry batches: {:.0} entries/s {}",
            (BATCHES * BATCH_ENTRIES) as f64 / secs,
            fsyncs(&disk)
        );

        group_commit_figures(&mut store, &disk, next).await;
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Group commit: IN_FLIGHT single-entry appends kept outstanding, from index `next`.
async fn group_commit_figures(store: &mut LogStore, disk: &Counting, mut next: u64) {
    let syncs_from = Instant::now();
    let mut waiting: std::collections::VecDeque<Flushed> = std::collections::VecDeque::new();
    let total = SINGLE_APPENDS;
    for _ in 0..total {
        if waiting.len() as u64 == IN_FLIGHT {
            let rx = waiting.pop_front().expect("one");
            rx.await.expect("callback").expect("durable");
        }
        let (tx, rx) = TypeConfig::oneshot();
        store.append(vec![ent(1, next)], IOFlushed::signal(tx)).await.expect("append");
        next += 1;
        waiting.push_back(rx);
    }
    for rx in waiting {
        rx.await.expect("callback").expect("durable");
    }
    let secs = syncs_from.elapsed().as_secs_f64();
    println!(
        "LogStore, 1-entry appends with {IN_FLIGHT} in flight (group commit): {:.0} entries/s {}",
        total as f64 / secs,
        fsyncs(disk)
    );
}
