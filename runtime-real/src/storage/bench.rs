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

// ----- a snapshot's memory peak -----
//
// The state of issue 19 item 4: 100,000 processes and 1 GiB of key/value data (16,384
// values of 64 KiB). Each figure runs in its own process (nextest runs one test per
// process; with `cargo test`, pass `--test-threads 1` and run them one at a time), since
// the peak (VmHWM) is the process's:
//
//   cargo nextest run --release -p roster-real --run-ignored only snapshot_peak -j1 --no-capture

const PEAK_PROCESSES: u64 = 100_000;
const PEAK_VALUES: u64 = 16_384;
const PEAK_VALUE_BYTES: usize = 64 * 1024;

fn peak_limits() -> roster_kernel::Limits {
    roster_kernel::Limits {
        max_processes: 1_000_000,
        // The budget is not what is measured here: one that holds the whole state.
        state_budget_bytes: 1 << 40,
        // A snapshot does not hold the event history: keep it small so it does not hide
        // the snapshot's own cost in the figures.
        event_history: 1_000,
        ..roster_kernel::Limits::default()
    }
}

/// A snapshot file of the state above, in a fresh directory; the machine is gone again.
fn seeded_peak_dir(name: &str) -> (std::path::PathBuf, Arc<dyn Disk>) {
    use roster_kernel::{ClusterStateMachine, Command, Proposal, ProposalBody, Request, SessionId};
    let mut machine = ClusterStateMachine::new(peak_limits());
    let mut at_unix_ms = 1;
    let mut propose = |machine: &mut ClusterStateMachine, body: ProposalBody| {
        at_unix_ms += 1;
        machine.apply(&Proposal { at_unix_ms, body }).expect("applies");
    };
    propose(&mut machine, ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node });
    let session = SessionId(1);
    let info = roster_kernel::ServerInfo {
        name: "node-1".into(),
        raft_addr: "10.0.0.1:7401".into(),
        api_addr: "10.0.0.1:7401".into(),
        started_at_unix_ms: 1,
        cpu_capacity_percent: 800,
        mem_capacity_bytes: 32 << 30,
    };
    let mut seq = 0;
    let mut client = |machine: &mut ClusterStateMachine, command: Command| {
        seq += 1;
        propose(
            machine,
            ProposalBody::Client { request: Request { session, seq, command }, by: roster_kernel::SessionOwner::Node },
        );
    };
    client(&mut machine, Command::RegisterServer { id: roster_kernel::ServerId(1), info });
    for n in 0..PEAK_PROCESSES {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_string(), format!("app-{}", n % 16));
        let info = roster_kernel::ProcessInfo {
            name: format!("worker-{n}"),
            server: roster_kernel::ServerId(1),
            service_host: "10.0.0.1".into(),
            service_port: Some(8000),
            started_at_unix_ms: 1,
            labels,
            reserved: Default::default(),
        };
        client(&mut machine, Command::RegisterProcess { info });
    }
    for n in 0..PEAK_VALUES {
        let mut value = format!("{n:06}-");
        value.extend(std::iter::repeat_n('v', PEAK_VALUE_BYTES - value.len()));
        client(&mut machine, Command::KvPut { key: format!("key-{n:06}"), value });
    }
    let dir = bench_dir(name);
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::open(&dir).expect("dir"));
    let meta = openraft::SnapshotMeta::default();
    super::state_machine::seed_snapshot(disk.clone(), &meta, &machine).expect("seeded");
    (dir, disk)
}

/// (VmRSS, VmHWM) of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).expect("field");
        let kib: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB");
        kib / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Frees what the allocator keeps, then starts the peak (VmHWM) again at today's RSS.
fn reset_peak() {
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs resets VmHWM");
}

/// `locked`: how long the applied state's read lock was held (applies wait that long).
fn report_peak(how: &str, base: f64, image_bytes: usize, locked: Duration) {
    let (_, peak) = rss_mib();
    report_peak_at(how, base, peak, image_bytes, locked);
}

fn report_peak_at(how: &str, base: f64, peak: f64, image_bytes: usize, locked: Duration) {
    let image = image_bytes as f64 / (1 << 20) as f64;
    println!(
        "{how}: state {base:.0} MiB RSS, image {image:.0} MiB, peak {peak:.0} MiB = state + {:.0} MiB ({:.2}x the state); \
         read lock held {:.0} ms",
        peak - base,
        peak / base,
        locked.as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "benchmark: see the comment above"]
fn snapshot_peak_copy_then_encode() {
    // What a snapshot did before: a copy of the state taken under the read lock, encoded
    // outside it into the kernel's image, then copied behind the file's header.
    let (dir, disk) = seeded_peak_dir("peak-copy");
    let bytes = disk
        .read(&disk.list().expect("list").into_iter().find(|n| n.starts_with("snapshot")).expect("file"))
        .expect("read");
    let (_, machine) = super::state_machine::verify_snapshot_data(&bytes, "bench").expect("restores");
    drop(bytes);
    reset_peak();
    let (base, _) = rss_mib();
    let started = Instant::now();
    let copy = machine.clone();
    let locked = started.elapsed();
    let image = copy.snapshot();
    let mut file = Vec::with_capacity(64 + image.len());
    file.extend_from_slice(&image);
    drop((copy, image));
    report_peak("copy, then encode", base, file.len(), locked);
    drop((machine, file));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "benchmark: see the comment above"]
fn snapshot_peak_encode_in_place() {
    // The shipped build: encoded under the read lock into the file's buffer.
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let (dir, disk) = seeded_peak_dir("peak-in-place");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut store = super::state_machine::StateMachineStore::open(disk, peak_limits()).expect("opens");
        reset_peak();
        let (base, _) = rss_mib();
        let snapshot = store.get_snapshot_builder().await.build_snapshot().await.expect("builds");
        // The lock is held while the image is written (not checksummed): timed alone,
        // after the build's figures, the way the build does it.
        let (_, peak_after_build) = rss_mib();
        let shared = store.shared();
        let st = shared.read();
        let started = Instant::now();
        let unsealed = st.kernel.snapshot_into(Vec::new());
        let locked = started.elapsed();
        drop(st);
        let image = unsealed.seal();
        assert!(snapshot.snapshot.ends_with(&image), "the file holds the same image behind its header");
        drop(image);
        report_peak_at("encode in place", base, peak_after_build, snapshot.snapshot.len(), locked);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
