//! `MemDisk`: an in-memory model of the `Disk` rules, for tests and the simulator (it is
//! not in the shipped binary: the `sim-disk` feature or `cfg(test)` builds it). It keeps,
//! per file, the synced contents plus the list of writes since, and per directory the
//! synced names plus the changes since, so a crash can keep any part of what was not
//! synced, as the caller decides or a seed it passes draws. It has no unseeded randomness,
//! clock or thread of its own.
//!
//! # Time and faults (`MemDisk::set_model`)
//!
//! Without a model every call is instant and an fsync is durable when it returns. With a
//! [`DiskModel`] (the simulator's, drawn from the run's seed) the disk behaves like one
//! queue-ordered device:
//! - every `write_at`, `set_len`, `sync_data` and `sync_dir` asks the model for its latency and
//!   whether it fails. The operation occupies the device from `max(now, device free)`
//!   for that long, so the operations of one node complete in issue order;
//! - an fsync that does not fail is *in flight* until its completion time: only then is
//!   what it covers durable. The caller learns that time through [`Disk::settle`], which
//!   every async caller (`storage::on_disk`) awaits before it reports anything durable;
//! - a power loss (`crash`) first completes the fsyncs whose time has come; everything
//!   issued after the first fsync still in flight never reached the device (its caller was
//!   still waiting), and of everything else not synced the crash model keeps what the
//!   caller asks: prefixes of each change list (`crash`, for tests that name a state), or
//!   what a page cache might have written back (`power_loss`, drawn from a seed: any
//!   subset of 4 KiB pages, each at any version since the last sync, torn between 512-byte
//!   sectors, with any length the file had);
//! - a failing write changes nothing and returns EIO. A failing fsync returns EIO and, as
//!   Linux does ("fsyncgate"), forgets the writes it covered: they stay readable but no
//!   later fsync makes them durable, so a caller that retries the fsync and trusts it
//!   loses data at the next crash.

use super::disk::{Disk, Settle, check_name, lock};
use roster_kernel::rng::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What `MemDisk::crash` asks the caller about: one thing with unsynced changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsynced<'a> {
    /// The directory has `ops` name changes (create, rename, remove) since its last sync.
    Dir { ops: usize },
    /// File `name` has `ops` writes or length changes since its last sync, `bytes` bytes
    /// written in all.
    File { name: &'a str, ops: usize, bytes: u64 },
}

/// How much of an unsynced change list survives a crash: the first `ops` changes whole,
/// then (for a file) the first `torn_bytes` bytes of the next write, if it is a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub ops: usize,
    pub torn_bytes: usize,
}

impl Keep {
    /// Everything unsynced is lost.
    pub const NONE: Keep = Keep { ops: 0, torn_bytes: 0 };
    /// Everything unsynced survives (the OS happened to write it all back).
    pub const ALL: Keep = Keep { ops: usize::MAX, torn_bytes: 0 };
}

/// One operation a [`DiskModel`] is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp<'a> {
    Write {
        name: &'a str,
        bytes: usize,
    },
    /// A length change (`set_len`, or `create` over an existing file): metadata only.
    SetLen {
        name: &'a str,
        len: u64,
    },
    SyncData {
        name: &'a str,
    },
    SyncDir,
}

/// What a [`DiskModel`] decided for one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    /// How long the operation occupies the device.
    pub latency: Duration,
    /// The operation fails with EIO (see the module docs for what a failed fsync forgets).
    pub fail: bool,
}

impl Draw {
    pub const INSTANT: Draw = Draw { latency: Duration::ZERO, fail: false };
}

/// Latency and faults of a simulated disk, decided per operation by the caller (the
/// simulator draws them from the run's seed). Called with the disk's lock held: keep it
/// short and never call back into the disk.
pub trait DiskModel: Send + 'static {
    fn draw(&mut self, op: DiskOp<'_>) -> Draw;
}

struct ModelSlot(Box<dyn DiskModel>);

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskModel")
    }
}

#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl DataOp {
    fn apply(&self, buf: &mut Vec<u8>, torn_bytes: Option<usize>) {
        match self {
            DataOp::Write { offset, data } => {
                let data = match torn_bytes {
                    Some(n) => &data[..n.min(data.len())],
                    None => &data[..],
                };
                write_into(buf, *offset, data);
            }
            // A length change is one metadata update: it happens whole or not at all.
            DataOp::SetLen(len) if torn_bytes.is_none() => buf.resize(to_usize(*len), 0),
            DataOp::SetLen(_) => {}
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            DataOp::Write { data, .. } => data.len() as u64,
            DataOp::SetLen(_) => 0,
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("MemDisk file offsets fit in memory")
}

fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = to_usize(offset);
    let end = start + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

/// A change not yet durable, with its place in the disk's issue order.
#[derive(Clone, Debug)]
struct Pending<T> {
    seq: u64,
    op: T,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    current: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<Pending<DataOp>>,
}

#[derive(Clone, Debug)]
pub(crate) enum DirOp {
    Link { name: String, inode: u64 },
    Rename { from: String, to: String },
    Remove { name: String },
}

impl DirOp {
    pub(crate) fn apply(&self, names: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link { name, inode } => {
                names.insert(name.clone(), *inode);
            }
            DirOp::Rename { from, to } => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
            DirOp::Remove { name } => {
                names.remove(name);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SyncTarget {
    File(u64),
    Dir,
}

/// An fsync issued but not yet complete: it covers the target's changes issued before it.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    target: SyncTarget,
    issued_at: Instant,
    done_at: Instant,
}

#[derive(Debug, Default)]
struct MemState {
    names: BTreeMap<String, u64>,
    synced_names: BTreeMap<String, u64>,
    dir_pending: Vec<Pending<DirOp>>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Issue order of every change and fsync.
    next_seq: u64,
    syncs: u64,
    /// Every change fails with an I/O error while set (an injected EIO).
    failing: bool,
    model: Option<ModelSlot>,
    /// Fsyncs not yet complete, in issue (= completion) order.
    in_flight: VecDeque<InFlight>,
    /// When the device has finished everything issued so far.
    device_free_at: Option<Instant>,
}

impl MemState {
    fn check_failing(&self) -> io::Result<()> {
        if self.failing {
            return Err(io::Error::other("injected I/O failure (MemDisk::set_failing)"));
        }
        Ok(())
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn inode(&self, name: &str) -> io::Result<&Inode> {
        check_name(name)?;
        self.names.get(name).and_then(|i| self.inodes.get(i)).ok_or_else(|| not_found(name))
    }

    fn inode_id(&self, name: &str) -> io::Result<u64> {
        check_name(name)?;
        self.names.get(name).copied().ok_or_else(|| not_found(name))
    }

    fn inode_mut(&mut self, name: &str) -> io::Result<&mut Inode> {
        let id = self.inode_id(name)?;
        Ok(self.inodes.get_mut(&id).expect("every linked name has an inode"))
    }

    /// Asks the model about `op` and books the device for it. `Ok(None)`: no model, the
    /// operation is instant. `Ok(Some(done_at))`: it completes then. `Err`: it fails.
    fn book(&mut self, op: DiskOp<'_>) -> io::Result<Option<Instant>> {
        let Some(model) = self.model.as_mut() else {
            return Ok(None);
        };
        let draw = model.0.draw(op);
        if draw.fail {
            let what = match op {
                DiskOp::Write { name, .. } => format!("write to {name}"),
                DiskOp::SetLen { name, len } => format!("set_len({len}) of {name}"),
                DiskOp::SyncData { name } => format!("fsync of {name}"),
                DiskOp::SyncDir => "fsync of the data directory".to_string(),
            };
            return Err(io::Error::other(format!("{what}: Input/output error (os error 5, injected EIO)")));
        }
        let now = Instant::now();
        let start = self.device_free_at.map_or(now, |t| t.max(now));
        let done_at = start + draw.latency;
        self.device_free_at = Some(done_at);
        Ok(Some(done_at))
    }

    fn data_op(&mut self, name: &str, op: DataOp) -> io::Result<()> {
        self.check_failing()?;
        let id = self.inode_id(name)?;
        match &op {
            DataOp::Write { data, .. } => self.book(DiskOp::Write { name, bytes: data.len() })?,
            DataOp::SetLen(len) => self.book(DiskOp::SetLen { name, len: *len })?,
        };
        let seq = self.seq();
        let inode = self.inodes.get_mut(&id).expect("every linked name has an inode");
        op.apply(&mut inode.current, None);
        inode.pending.push(Pending { seq, op });
        Ok(())
    }

    fn dir_op(&mut self, op: DirOp) {
        let seq = self.seq();
        op.apply(&mut self.names);
        self.dir_pending.push(Pending { seq, op });
    }

    /// Makes `target`'s changes issued before `seq` durable.
    fn commit(&mut self, target: SyncTarget, seq: u64) {
        match target {
            SyncTarget::File(id) => {
                let Some(inode) = self.inodes.get_mut(&id) else { return };
                let n = inode.pending.iter().take_while(|p| p.seq < seq).count();
                // Replaying the (usually few, small) pending changes onto the durable copy
                // gives `current` without copying the whole file on every sync.
                for p in inode.pending.drain(..n) {
                    p.op.apply(&mut inode.synced, None);
                }
            }
            SyncTarget::Dir => {
                let n = self.dir_pending.iter().take_while(|p| p.seq < seq).count();
                for p in self.dir_pending.drain(..n) {
                    p.op.apply(&mut self.synced_names);
                }
                self.collect_garbage();
            }
        }
    }

    /// A failed fsync: the changes it covered are forgotten (readable, never durable),
    /// except those an earlier fsync of the same target still in flight covers: that one
    /// will succeed, and its caller is told so.
    fn forget(&mut self, target: SyncTarget, seq: u64) {
        let covered = self.in_flight.iter().filter(|f| f.target == target).map(|f| f.seq).max().unwrap_or(0);
        let keep = |p: u64| p >= seq || p < covered;
        match target {
            SyncTarget::File(id) => {
                if let Some(inode) = self.inodes.get_mut(&id) {
                    inode.pending.retain(|p| keep(p.seq));
                }
            }
            SyncTarget::Dir => self.dir_pending.retain(|p| keep(p.seq)),
        }
    }

    fn sync(&mut self, target: SyncTarget, op: DiskOp<'_>) -> io::Result<()> {
        self.check_failing()?;
        self.syncs += 1;
        let seq = self.seq();
        match self.book(op) {
            Ok(None) => self.commit(target, seq),
            Ok(Some(done_at)) => {
                let issued_at = Instant::now();
                self.in_flight.push_back(InFlight { seq, target, issued_at, done_at })
            }
            Err(e) => {
                self.forget(target, seq);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Completes every fsync whose time has come.
    fn advance(&mut self, now: Instant) {
        while let Some(f) = self.in_flight.front().copied() {
            if f.done_at > now {
                break;
            }
            self.in_flight.pop_front();
            self.commit(f.target, f.seq);
        }
    }

    /// Drops inodes no name (current or synced) refers to.
    fn collect_garbage(&mut self) {
        let names = &self.names;
        let synced = &self.synced_names;
        let pending = &self.dir_pending;
        self.inodes.retain(|id, _| {
            names.values().any(|i| i == id)
                || synced.values().any(|i| i == id)
                || pending.iter().any(|p| matches!(&p.op, DirOp::Link { inode, .. } if inode == id))
        });
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

/// The unit a page cache writes back: a power loss keeps or loses whole pages.
pub const PAGE_BYTES: u64 = 4096;
/// The unit a device writes atomically: a page written back when the power goes may be
/// torn between sectors, never inside one.
pub const SECTOR_BYTES: usize = 512;

/// What `MemDisk::power_loss` did, for the caller's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Unsynced name changes (create, rename, remove) lost.
    pub dir_ops_lost: usize,
    /// Files that had unsynced changes.
    pub files_unsynced: usize,
    /// Pages with unsynced changes, in all files.
    pub pages_unsynced: usize,
    /// Of those, pages left at an older version than the newest.
    pub pages_lost: usize,
    /// Of those, pages torn between two versions, sector by sector.
    pub pages_torn: usize,
    /// Files left at an older length than the newest.
    pub lengths_lost: usize,
}

/// What a power loss keeps, as `MemDisk::crash_with` asks it.
trait CrashFate {
    /// How many of the directory's `ops` unsynced name changes survive, in order.
    fn dir_ops_kept(&mut self, ops: usize) -> usize;
    /// What file `name`, durably `synced`, holds after the crash, given its unsynced changes.
    fn file_contents(&mut self, name: &str, synced: &[u8], pending: &[Pending<DataOp>]) -> Vec<u8>;
}

/// `MemDisk::crash`: prefixes of each change list, as the caller names them.
struct PrefixFate<F>(F);

impl<F: FnMut(Unsynced<'_>) -> Keep> CrashFate for PrefixFate<F> {
    fn dir_ops_kept(&mut self, ops: usize) -> usize {
        (self.0)(Unsynced::Dir { ops }).ops
    }

    fn file_contents(&mut self, name: &str, synced: &[u8], pending: &[Pending<DataOp>]) -> Vec<u8> {
        let mut contents = synced.to_vec();
        let bytes = pending.iter().map(|p| p.op.bytes()).sum();
        let keep = (self.0)(Unsynced::File { name, ops: pending.len(), bytes });
        for p in pending.iter().take(keep.ops) {
            p.op.apply(&mut contents, None);
        }
        if keep.ops < pending.len() && keep.torn_bytes > 0 {
            pending[keep.ops].op.apply(&mut contents, Some(keep.torn_bytes));
        }
        contents
    }
}

/// `MemDisk::power_loss`: pages, sectors and lengths drawn from a seeded stream.
struct PageFate {
    rng: Rng,
    tally: PowerLoss,
}

/// How much of one change list a power loss keeps.
#[derive(Clone, Copy)]
enum Extent {
    All,
    Nothing,
    Some,
}

fn draw_extent(rng: &mut Rng) -> Extent {
    match rng.below(4) {
        0 => Extent::All,
        1 => Extent::Nothing,
        _ => Extent::Some,
    }
}

impl CrashFate for PageFate {
    fn dir_ops_kept(&mut self, ops: usize) -> usize {
        let kept = match draw_extent(&mut self.rng) {
            Extent::All => ops,
            Extent::Nothing => 0,
            Extent::Some => to_usize(self.rng.up_to(ops as u64)),
        };
        self.tally.dir_ops_lost += ops - kept;
        kept
    }

    fn file_contents(&mut self, _name: &str, synced: &[u8], pending: &[Pending<DataOp>]) -> Vec<u8> {
        let ops: Vec<&DataOp> = pending.iter().map(|p| &p.op).collect();
        surviving_pages(synced, &ops, &mut self.rng, &mut self.tally)
    }
}

/// The pages of a file whose bytes `op` changes, given the file's length before it.
fn pages_touched(op: &DataOp, len_before: u64) -> std::ops::Range<u64> {
    let (start, end) = match op {
        DataOp::Write { offset, data } => (*offset, offset + data.len() as u64),
        DataOp::SetLen(len) => (*len.min(&len_before), *len.max(&len_before)),
    };
    if start == end { 0..0 } else { start / PAGE_BYTES..end.div_ceil(PAGE_BYTES) }
}

/// Applies `op` to page `page`, held in `buf` (`PAGE_BYTES`, zeros past the file's end).
fn apply_to_page(op: &DataOp, page: u64, buf: &mut [u8]) {
    let page_start = page * PAGE_BYTES;
    let page_end = page_start + PAGE_BYTES;
    match op {
        DataOp::Write { offset, data } => {
            let start = (*offset).max(page_start);
            let end = (offset + data.len() as u64).min(page_end);
            if start < end {
                let src = &data[to_usize(start - offset)..to_usize(end - offset)];
                buf[to_usize(start - page_start)..to_usize(end - page_start)].copy_from_slice(src);
            }
        }
        // Bytes past a new end are gone; if the file grows again they read as zeros.
        DataOp::SetLen(len) => {
            let from = (*len).clamp(page_start, page_end);
            buf[to_usize(from - page_start)..].fill(0);
        }
    }
}

/// One unsynced page: which version of it survives (0: the durable one, k: as it was after
/// the k-th change touching it), and, if torn, the older version its other sectors keep.
struct PageDraw {
    version: u32,
    torn_from: Option<u32>,
    buf: Vec<u8>,
    older: Option<Vec<u8>>,
    applied: u32,
}

/// A file's contents after a power loss, `synced` being what was durable and `ops` its
/// unsynced changes in order (see `MemDisk::power_loss`). Pure but for `rng`.
fn surviving_pages(synced: &[u8], ops: &[&DataOp], rng: &mut Rng, tally: &mut PowerLoss) -> Vec<u8> {
    tally.files_unsynced += 1;
    // Lengths the file had, and how many changes touched each page.
    let mut lens = vec![synced.len() as u64];
    let mut touches: BTreeMap<u64, u32> = BTreeMap::new();
    for op in ops {
        let before = *lens.last().expect("starts with the durable length");
        for page in pages_touched(op, before) {
            *touches.entry(page).or_default() += 1;
        }
        lens.push(match op {
            DataOp::Write { offset, data } => before.max(offset + data.len() as u64),
            DataOp::SetLen(len) => *len,
        });
    }
    tally.pages_unsynced += touches.len();
    let newest_len = *lens.last().expect("starts with the durable length");
    let extent = draw_extent(rng);
    let len = match extent {
        Extent::All => newest_len,
        Extent::Nothing => lens[0],
        Extent::Some => lens[to_usize(rng.below(lens.len() as u64))],
    };
    if len != newest_len {
        tally.lengths_lost += 1;
    }
    let mut draws: BTreeMap<u64, PageDraw> = BTreeMap::new();
    for (&page, &count) in &touches {
        draws.insert(page, draw_page(synced, page, count, extent, rng, tally));
    }
    // Replay each page up to its drawn version, keeping the older one a torn page needs.
    let mut before = lens[0];
    for (op, after) in ops.iter().zip(&lens[1..]) {
        for page in pages_touched(op, before) {
            let d = draws.get_mut(&page).expect("counted above");
            if d.applied < d.version {
                apply_to_page(op, page, &mut d.buf);
                d.applied += 1;
                if d.torn_from == Some(d.applied) {
                    d.older = Some(d.buf.clone());
                }
            }
        }
        before = *after;
    }
    assemble(synced, draws, len, rng)
}

/// How far page `page` (touched by `count` unsynced changes) survives: every change, none,
/// or some, and whether it is torn between two versions (sector by sector).
fn draw_page(synced: &[u8], page: u64, count: u32, extent: Extent, rng: &mut Rng, tally: &mut PowerLoss) -> PageDraw {
    let (version, torn_from) = match extent {
        Extent::All => (count, None),
        Extent::Nothing => (0, None),
        Extent::Some => {
            let version = rng.up_to(u64::from(count)) as u32;
            let torn = version > 0 && rng.below(4) == 0;
            (version, torn.then(|| rng.below(u64::from(version)) as u32))
        }
    };
    tally.pages_lost += usize::from(version < count);
    tally.pages_torn += usize::from(torn_from.is_some());
    let mut buf = vec![0u8; PAGE_BYTES as usize];
    let start = to_usize(page * PAGE_BYTES).min(synced.len());
    let end = to_usize((page + 1) * PAGE_BYTES).min(synced.len());
    buf[..end - start].copy_from_slice(&synced[start..end]);
    let older = (torn_from == Some(0)).then(|| buf.clone());
    PageDraw { version, torn_from, buf, older, applied: 0 }
}

/// The file after the loss: the durable bytes, each replayed page over them (a torn one
/// mixing its two versions by sector), cut to the surviving length `len`.
fn assemble(synced: &[u8], draws: BTreeMap<u64, PageDraw>, len: u64, rng: &mut Rng) -> Vec<u8> {
    let mut out = synced.to_vec();
    for (page, d) in draws {
        let start = page * PAGE_BYTES;
        if start >= len {
            break;
        }
        debug_assert_eq!(d.applied, d.version, "page {page} replayed to its drawn version");
        let mut bytes = d.buf;
        if let Some(older) = d.older {
            for (sector, old) in bytes.chunks_mut(SECTOR_BYTES).zip(older.chunks(SECTOR_BYTES)) {
                if rng.below(2) == 0 {
                    sector.copy_from_slice(old);
                }
            }
        }
        let end = to_usize(start) + bytes.len();
        if out.len() < end {
            out.resize(end, 0);
        }
        out[to_usize(start)..end].copy_from_slice(&bytes);
    }
    out.resize(to_usize(len), 0);
    out
}

/// An in-memory `Disk` that models what a crash keeps. Cloning shares the same disk, so
/// a simulated node can be torn down and reopened on the same contents.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
}

impl MemDisk {
    /// The name `crash_losing` passes for the directory itself.
    pub const DIR: &'static str = ".";

    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// A disk holding `files`, names and contents all durable.
    pub fn with_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> MemDisk {
        let disk = MemDisk::new();
        {
            let mut s = lock(&disk.state);
            for (name, data) in files {
                s.next_inode += 1;
                let id = s.next_inode;
                s.inodes.insert(id, Inode { current: data.clone(), synced: data, pending: Vec::new() });
                s.names.insert(name.clone(), id);
                s.synced_names.insert(name, id);
            }
        }
        disk
    }

    /// Gives every later operation a latency and a chance to fail (module docs). Fsyncs
    /// issued before stay as they were.
    pub fn set_model(&self, model: Box<dyn DiskModel>) {
        lock(&self.state).model = Some(ModelSlot(model));
    }

    /// Completes every fsync in flight now, whatever its time (for a disk whose machine
    /// is off, such as one the simulator wipes).
    pub fn complete_in_flight(&self) {
        let mut s = lock(&self.state);
        while let Some(f) = s.in_flight.pop_front() {
            s.commit(f.target, f.seq);
        }
        s.device_free_at = None;
    }

    /// Simulates a power loss: everything not synced is lost, except what `fate` keeps.
    /// `fate` is asked first about the directory, then about each surviving file in name
    /// order, so a seeded caller gets the same result every run. With a model, fsyncs
    /// still in flight did not complete, and what was issued after the first of them never
    /// reached the device (module docs). This keeps prefixes of each change list, which
    /// tests can name exactly; `power_loss` keeps what a page cache would.
    pub fn crash(&self, fate: impl FnMut(Unsynced<'_>) -> Keep) {
        self.crash_with(&mut PrefixFate(fate));
    }

    /// Simulates a power loss as a page cache and a journaling file system have it, drawn
    /// from `seed` (the simulator passes one from its seeded RNG):
    /// - the directory keeps a prefix of its unsynced name changes (the journal commits
    ///   them in order), independently of the files' data, so a rename can land before the
    ///   data it names;
    /// - each file keeps any subset of its unsynced 4 KiB pages, each page at any version
    ///   it had since the last sync (written back at any moment), and a page may be torn:
    ///   each 512-byte sector from that version or from an older one;
    /// - each file's length is any length it had since the last sync (the size is
    ///   metadata, written apart from the data); bytes past a kept page read as zeros.
    ///
    /// Per file (and for the directory), a quarter of draws keep everything and a quarter
    /// nothing, so both extremes come up often. Fsyncs in flight are as for `crash`.
    pub fn power_loss(&self, seed: u64) -> PowerLoss {
        let mut fate = PageFate { rng: Rng::new(seed), tally: PowerLoss::default() };
        self.crash_with(&mut fate);
        fate.tally
    }

    /// The common part of `crash` and `power_loss`: completes the fsyncs whose time has
    /// come, drops what was issued after one still in flight, then asks `fate`, the
    /// directory first, then each surviving file with unsynced changes in name order.
    fn crash_with(&self, fate: &mut dyn CrashFate) {
        let mut s = lock(&self.state);
        let st = &mut *s;
        if st.model.is_some() {
            st.advance(Instant::now());
        }
        if let Some(first) = st.in_flight.front().map(|f| f.seq) {
            st.dir_pending.retain(|p| p.seq < first);
            for inode in st.inodes.values_mut() {
                inode.pending.retain(|p| p.seq < first);
            }
        }
        st.in_flight.clear();
        st.device_free_at = None;
        let mut names = st.synced_names.clone();
        if !st.dir_pending.is_empty() {
            let kept = fate.dir_ops_kept(st.dir_pending.len()).min(st.dir_pending.len());
            for p in st.dir_pending.iter().take(kept) {
                p.op.apply(&mut names);
            }
        }
        st.names = names;
        st.synced_names = st.names.clone();
        st.dir_pending.clear();
        for (name, id) in &st.names {
            let inode = st.inodes.get_mut(id).expect("every linked name has an inode");
            if !inode.pending.is_empty() {
                inode.synced = fate.file_contents(name, &inode.synced, &inode.pending);
            }
            // Also for a file with nothing pending: writes a failed fsync forgot, or that
            // were issued after an fsync still in flight, are gone.
            inode.current = inode.synced.clone();
            inode.pending.clear();
        }
        // Files not linked by a durable name are gone, and their pending writes with them.
        st.collect_garbage();
    }

    /// `crash` with a yes/no per file: `lose(name)` true drops all of that file's unsynced
    /// writes, false keeps them all. The directory is asked as `MemDisk::DIR`.
    pub fn crash_losing(&self, mut lose: impl FnMut(&str) -> bool) {
        self.crash(|u| {
            let name = match u {
                Unsynced::Dir { .. } => MemDisk::DIR,
                Unsynced::File { name, .. } => name,
            };
            if lose(name) { Keep::NONE } else { Keep::ALL }
        })
    }

    /// Simulates media corruption: flips the bits of one byte, in both the current and
    /// the durable contents.
    pub fn corrupt_byte(&self, name: &str, offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        let inode = s.inode_mut(name)?;
        let at = to_usize(offset);
        if at >= inode.current.len() || at >= inode.synced.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: offset {offset} past the end")));
        }
        inode.current[at] ^= 0xff;
        inode.synced[at] ^= 0xff;
        Ok(())
    }

    /// While `on`, every change (write, sync, create, rename, remove) fails with an I/O
    /// error, as a dying disk would; reads still work.
    pub fn set_failing(&self, on: bool) {
        lock(&self.state).failing = on;
    }

    /// How long the oldest fsync in flight (issued, not yet complete) has been waiting, if
    /// one is: a power loss now lands between "written" and "durable".
    pub fn fsync_in_flight_for(&self) -> Option<std::time::Duration> {
        let mut s = lock(&self.state);
        s.model.as_ref()?;
        let now = Instant::now();
        s.advance(now);
        s.in_flight.front().map(|f| now.saturating_duration_since(f.issued_at))
    }

    /// Number of `sync_data` and `sync_dir` calls so far (for tests of group commit).
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }
}

impl Disk for MemDisk {
    fn create(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut s = lock(&self.state);
        s.check_failing()?;
        if s.names.contains_key(name) {
            return s.data_op(name, DataOp::SetLen(0));
        }
        s.next_inode += 1;
        let inode = s.next_inode;
        s.inodes.insert(inode, Inode::default());
        s.dir_op(DirOp::Link { name: name.to_string(), inode });
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        lock(&self.state).data_op(name, DataOp::Write { offset, data: data.to_vec() })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        Ok(lock(&self.state).inode(name)?.current.clone())
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        let current = &s.inode(name)?.current;
        let start = to_usize(offset);
        match start.checked_add(len) {
            Some(end) if end <= current.len() => Ok(current[start..end].to_vec()),
            _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name}: read past the end"))),
        }
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(lock(&self.state).inode(name)?.current.len() as u64)
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        lock(&self.state).data_op(name, DataOp::SetLen(len))
    }

    fn sync_data(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        let id = s.inode_id(name)?;
        s.sync(SyncTarget::File(id), DiskOp::SyncData { name })?;
        if s.model.is_none() {
            let inode = &s.inodes[&id];
            debug_assert_eq!(inode.synced.len(), inode.current.len(), "synced copy diverged from the file");
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(to)?;
        let mut s = lock(&self.state);
        s.check_failing()?;
        s.inode(from)?;
        s.dir_op(DirOp::Rename { from: from.to_string(), to: to.to_string() });
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.check_failing()?;
        s.inode(name)?;
        s.dir_op(DirOp::Remove { name: name.to_string() });
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.state).names.keys().cloned().collect())
    }

    fn sync_dir(&self) -> io::Result<()> {
        lock(&self.state).sync(SyncTarget::Dir, DiskOp::SyncDir)
    }

    fn settle(&self) -> Option<Settle> {
        let mut s = lock(&self.state);
        s.model.as_ref()?;
        let now = Instant::now();
        s.advance(now);
        let until = s.device_free_at.filter(|t| *t > now)?;
        let state = self.state.clone();
        Some(Box::pin(async move {
            tokio::time::sleep_until(until).await;
            lock(&state).advance(Instant::now());
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn contents(d: &dyn Disk, name: &str) -> Vec<u8> {
        d.read(name).expect("file exists")
    }

    #[test]
    fn unsynced_writes_and_names_are_lost_on_crash() {
        let d = MemDisk::new();
        d.create("a").unwrap();
        d.write_at("a", 0, b"hello").unwrap();
        d.sync_data("a").unwrap();
        d.sync_dir().unwrap();
        d.write_at("a", 5, b" world").unwrap();
        d.create("b").unwrap();
        d.write_at("b", 0, b"x").unwrap();
        d.sync_data("b").unwrap(); // data synced, name not
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "a"), b"hello");
        assert_eq!(d.list().unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn crash_can_keep_a_prefix_and_tear_the_next_write() {
        let d = MemDisk::new();
        d.create("a").unwrap();
        d.sync_dir().unwrap();
        d.write_at("a", 0, b"abc").unwrap();
        d.write_at("a", 3, b"defg").unwrap();
        d.write_at("a", 7, b"hij").unwrap();
        let mut asked = Vec::new();
        d.crash(|u| {
            asked.push(format!("{u:?}"));
            Keep { ops: 1, torn_bytes: 2 }
        });
        assert_eq!(asked, vec!["File { name: \"a\", ops: 3, bytes: 10 }".to_string()]);
        assert_eq!(contents(&d, "a"), b"abcde");
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let d = MemDisk::new();
        d.create("meta").unwrap();
        d.write_at("meta", 0, b"old").unwrap();
        d.sync_data("meta").unwrap();
        d.sync_dir().unwrap();
        d.create("meta.tmp").unwrap();
        d.write_at("meta.tmp", 0, b"new").unwrap();
        d.sync_data("meta.tmp").unwrap();
        d.rename("meta.tmp", "meta").unwrap();
        assert_eq!(contents(&d, "meta"), b"new");
        let keep_dir = d.clone();
        d.crash_losing(|name| name == MemDisk::DIR);
        assert_eq!(contents(&keep_dir, "meta"), b"old");
        assert_eq!(d.list().unwrap(), vec!["meta".to_string()]);

        d.create("meta.tmp").unwrap();
        d.write_at("meta.tmp", 0, b"new").unwrap();
        d.sync_data("meta.tmp").unwrap();
        d.rename("meta.tmp", "meta").unwrap();
        d.sync_dir().unwrap();
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "meta"), b"new");
    }

    /// Every operation takes `latency`; the `fail_at`-th call (from 1) fails.
    struct Fixed {
        latency: std::time::Duration,
        calls: u32,
        fail_at: Option<u32>,
    }

    impl DiskModel for Fixed {
        fn draw(&mut self, _: DiskOp<'_>) -> Draw {
            self.calls += 1;
            Draw { latency: self.latency, fail: self.fail_at == Some(self.calls) }
        }
    }

    fn slow_disk(latency_ms: u64, fail_at: Option<u32>) -> MemDisk {
        let d = MemDisk::new();
        d.create("a").unwrap();
        d.sync_dir().unwrap();
        let latency = std::time::Duration::from_millis(latency_ms);
        d.set_model(Box::new(Fixed { latency, calls: 0, fail_at }));
        d
    }

    #[tokio::test]
    async fn an_fsync_in_flight_is_not_durable_until_it_completes() {
        // Half a second per fsync: the crash below, issued right after, lands inside it even
        // when a busy machine preempts this thread.
        let d = slow_disk(500, None);
        d.write_at("a", 0, b"hello").unwrap();
        d.sync_data("a").unwrap();
        let settle = d.settle().expect("the fsync takes time");
        // Power lost while the fsync is in flight: the write may or may not have made it.
        let before = d.clone();
        let snapshot = lock(&before.state).inodes.clone();
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "a"), b"");
        // Same again, but the fsync completes first.
        lock(&d.state).inodes = snapshot;
        d.write_at("a", 0, b"hello").unwrap();
        d.sync_data("a").unwrap();
        d.settle().expect("in flight").await;
        drop(settle);
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "a"), b"hello");
    }

    #[tokio::test]
    async fn what_follows_an_fsync_in_flight_never_reached_the_disk() {
        let d = slow_disk(500, None);
        d.write_at("a", 0, b"old").unwrap();
        d.sync_data("a").unwrap();
        d.settle().expect("in flight").await;
        // A meta-style replace, all issued at once: the fsync of the temp file is still in
        // flight when the power goes, so the rename after it was never issued.
        d.create("t").unwrap();
        d.write_at("t", 0, b"new").unwrap();
        d.sync_data("t").unwrap();
        d.rename("t", "a").unwrap();
        d.sync_dir().unwrap();
        d.crash(|_| Keep::ALL);
        assert_eq!(contents(&d, "a"), b"old", "the rename must not outrun the fsync before it");
    }

    #[tokio::test]
    async fn a_failed_fsync_forgets_the_writes_it_covered() {
        // Calls: write (1), fsync (2, fails), fsync (3).
        let d = slow_disk(1, Some(2));
        d.write_at("a", 0, b"data").unwrap();
        let err = d.sync_data("a").unwrap_err();
        assert!(err.to_string().contains("fsync of a"), "{err}");
        assert_eq!(contents(&d, "a"), b"data", "still readable from the page cache");
        // A retried fsync "succeeds", but the data is gone at the next power loss.
        d.sync_data("a").unwrap();
        d.settle().expect("in flight").await;
        d.crash(|_| Keep::ALL);
        assert_eq!(contents(&d, "a"), b"");
    }

    #[tokio::test]
    async fn a_failed_fsync_leaves_what_an_earlier_fsync_in_flight_covers() {
        // Calls: write (1), fsync (2, in flight), write (3), fsync (4, fails).
        let d = slow_disk(50, Some(4));
        d.write_at("a", 0, b"first").unwrap();
        d.sync_data("a").unwrap();
        d.write_at("a", 5, b"+second").unwrap();
        assert!(d.sync_data("a").is_err());
        // The first fsync succeeds, and its caller was told so: what it covered is durable.
        d.settle().expect("in flight").await;
        d.crash(|_| Keep::NONE);
        assert_eq!(contents(&d, "a"), b"first");
    }

    /// A disk holding `a`: `len` durable bytes of 0xAA.
    fn durable_file(len: usize) -> MemDisk {
        MemDisk::with_files([("a".to_string(), vec![0xAA; len])])
    }

    /// Runs `power_loss` on copies of one disk for seeds `0..n`, giving each result.
    fn power_losses(n: u64, setup: impl Fn(&MemDisk)) -> Vec<(PowerLoss, Vec<u8>)> {
        (0..n)
            .map(|seed| {
                let d = durable_file(2 * PAGE_BYTES as usize);
                setup(&d);
                let tally = d.power_loss(seed);
                (tally, contents(&d, "a"))
            })
            .collect()
    }

    #[test]
    fn a_power_loss_can_keep_a_later_page_without_an_earlier_one() {
        let page = PAGE_BYTES as usize;
        let runs = power_losses(64, |d| {
            d.write_at("a", 0, &vec![1; page]).unwrap();
            d.write_at("a", PAGE_BYTES, &vec![2; page]).unwrap();
        });
        let state = |c: &Vec<u8>| (c[0], c[page]);
        let seen: BTreeSet<(u8, u8)> = runs.iter().map(|(_, c)| state(c)).collect();
        // Nothing, everything, the prefix, and the second write without the first.
        assert_eq!(seen, BTreeSet::from([(0xAA, 0xAA), (1, 2), (1, 0xAA), (0xAA, 2)]));
    }

    #[test]
    fn a_power_loss_can_tear_a_page_between_sectors_never_inside_one() {
        let page = PAGE_BYTES as usize;
        let runs = power_losses(200, |d| d.write_at("a", 0, &vec![1; page]).unwrap());
        let mut torn = 0;
        for (tally, c) in &runs {
            let sectors: Vec<u8> = c[..page]
                .chunks(SECTOR_BYTES)
                .map(|s| {
                    assert!(s.iter().all(|b| *b == s[0]), "a sector is written whole");
                    s[0]
                })
                .collect();
            if sectors.contains(&1) && sectors.contains(&0xAA) {
                torn += 1;
                assert_eq!(tally.pages_torn, 1);
            }
        }
        assert!(torn > 0, "no seed in 200 tore the page");
    }

    #[test]
    fn a_power_loss_can_keep_the_data_without_the_new_length_and_the_length_without_the_data() {
        let page = PAGE_BYTES as usize;
        // An append past the durable end: the size is metadata, written apart from the data.
        let runs = power_losses(64, |d| d.write_at("a", 2 * PAGE_BYTES, &vec![3; page]).unwrap());
        let seen: BTreeSet<(usize, Option<u8>)> =
            runs.iter().map(|(_, c)| (c.len(), c.get(2 * page).copied())).collect();
        assert_eq!(seen, BTreeSet::from([(2 * page, None), (3 * page, Some(0)), (3 * page, Some(3))]));
    }

    #[test]
    fn a_power_loss_is_a_function_of_its_seed() {
        let setup = |d: &MemDisk| {
            for i in 0..20u64 {
                d.write_at("a", i * 700, &[i as u8; 900]).unwrap();
            }
            d.create("b").unwrap();
            d.set_len("a", 5000).unwrap();
        };
        let runs = power_losses(32, setup);
        assert_eq!(runs, power_losses(32, setup));
        let distinct: BTreeSet<&Vec<u8>> = runs.iter().map(|(_, c)| c).collect();
        assert!(distinct.len() > 8, "32 seeds gave only {} outcomes", distinct.len());
    }

    /// A change for the property test: a write (offset, length, byte) or a new length.
    fn arb_op() -> impl proptest::strategy::Strategy<Value = DataOp> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0u64..20_000, 1usize..9_000, any::<u8>())
                .prop_map(|(offset, len, b)| DataOp::Write { offset, data: vec![b; len] }),
            1 => (0u64..24_000).prop_map(DataOp::SetLen),
        ]
    }

    proptest::proptest! {
        /// The naive model: every version the file had since its last sync, whole. A power
        /// loss leaves one of their lengths, and every sector as one of them had it.
        #[test]
        fn every_sector_after_a_power_loss_is_one_the_file_held_since_its_last_sync(
            synced_len in 0usize..12_000,
            ops in proptest::collection::vec(arb_op(), 1..12),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let synced: Vec<u8> = (0..synced_len).map(|i| (i % 251) as u8 | 1).collect();
            let mut versions = vec![synced.clone()];
            for op in &ops {
                let mut next = versions.last().unwrap().clone();
                op.apply(&mut next, None);
                versions.push(next);
            }
            let refs: Vec<&DataOp> = ops.iter().collect();
            let mut tally = PowerLoss::default();
            let out = surviving_pages(&synced, &refs, &mut Rng::new(seed), &mut tally);
            proptest::prop_assert!(versions.iter().any(|v| v.len() == out.len()), "length {}", out.len());
            let sector_of = |v: &[u8], at: usize, n: usize| -> Vec<u8> {
                (at..at + n).map(|i| v.get(i).copied().unwrap_or(0)).collect()
            };
            for at in (0..out.len()).step_by(SECTOR_BYTES) {
                let n = SECTOR_BYTES.min(out.len() - at);
                let got = &out[at..at + n];
                proptest::prop_assert!(
                    versions.iter().any(|v| sector_of(v, at, n) == got),
                    "sector at {at} matches no version the file had"
                );
            }
            if tally.pages_lost == 0 && tally.pages_torn == 0 && tally.lengths_lost == 0 {
                proptest::prop_assert_eq!(&out, versions.last().unwrap());
            }
        }
    }

    #[tokio::test]
    async fn a_length_change_occupies_the_device_and_can_fail() {
        // Calls: set_len (1), set_len (2, fails).
        let d = slow_disk(500, Some(2));
        d.set_len("a", 100).unwrap();
        assert!(d.settle().is_some(), "the length change occupies the device");
        let err = d.set_len("a", 200).unwrap_err();
        assert!(err.to_string().contains("set_len(200) of a"), "{err}");
        assert_eq!(d.len("a").unwrap(), 100, "a failed length change changes nothing");
    }

    #[test]
    fn set_len_and_reads() {
        let d = MemDisk::new();
        d.create("f").unwrap();
        d.write_at("f", 4, b"zz").unwrap();
        assert_eq!(contents(&d, "f"), b"\0\0\0\0zz");
        d.set_len("f", 2).unwrap();
        assert_eq!(d.len("f").unwrap(), 2);
        assert!(d.read_at("f", 1, 2).is_err());
        assert_eq!(d.read_at("f", 0, 2).unwrap(), b"\0\0");
        assert!(d.exists("f").unwrap());
        assert!(!d.exists("g").unwrap());
        assert!(d.create("a/b").is_err());
    }
}
