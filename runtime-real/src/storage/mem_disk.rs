//! `MemDisk`: an in-memory model of the `Disk` rules, for tests and the simulator (it is
//! not in the shipped binary: the `sim-disk` feature or `cfg(test)` builds it). It keeps,
//! per file, the synced contents plus the list of writes since, and per directory the
//! synced names plus the changes since, so `crash` can drop (or tear) any suffix of what
//! was not synced, as a caller's seeded RNG decides. It has no randomness, clock or thread
//! of its own.
//!
//! # Time and faults (`MemDisk::set_model`)
//!
//! Without a model every call is instant and an fsync is durable when it returns. With a
//! [`DiskModel`] (the simulator's, drawn from the run's seed) the disk behaves like one
//! queue-ordered device:
//! - every `write_at`, `sync_data` and `sync_dir` asks the model for its latency and
//!   whether it fails. The operation occupies the device from `max(now, device free)`
//!   for that long, so the operations of one node complete in issue order;
//! - an fsync that does not fail is *in flight* until its completion time: only then is
//!   what it covers durable. The caller learns that time through [`Disk::settle`], which
//!   every async caller (`storage::on_disk`) awaits before it reports anything durable;
//! - a power loss (`crash`) first completes the fsyncs whose time has come; everything
//!   issued after the first fsync still in flight never reached the device (its caller was
//!   still waiting), and of everything else not synced the crash model keeps nothing,
//!   everything or a torn prefix, per file;
//! - a failing write changes nothing and returns EIO. A failing fsync returns EIO and, as
//!   Linux does ("fsyncgate"), forgets the writes it covered: they stay readable but no
//!   later fsync makes them durable, so a caller that retries the fsync and trusts it
//!   loses data at the next crash.

use super::disk::{Disk, Settle, check_name, lock};
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
    Write { name: &'a str, bytes: usize },
    SyncData { name: &'a str },
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
        if let DataOp::Write { data, .. } = &op {
            self.book(DiskOp::Write { name, bytes: data.len() })?;
        }
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
    /// reached the device (module docs).
    pub fn crash(&self, mut fate: impl FnMut(Unsynced<'_>) -> Keep) {
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
            let keep = fate(Unsynced::Dir { ops: st.dir_pending.len() });
            for p in st.dir_pending.iter().take(keep.ops) {
                p.op.apply(&mut names);
            }
        }
        st.names = names;
        st.synced_names = st.names.clone();
        st.dir_pending.clear();
        for (name, id) in &st.names {
            let inode = st.inodes.get_mut(id).expect("every linked name has an inode");
            let mut contents = inode.synced.clone();
            if !inode.pending.is_empty() {
                let bytes = inode.pending.iter().map(|p| p.op.bytes()).sum();
                let keep = fate(Unsynced::File { name, ops: inode.pending.len(), bytes });
                for p in inode.pending.iter().take(keep.ops) {
                    p.op.apply(&mut contents, None);
                }
                if keep.ops < inode.pending.len() && keep.torn_bytes > 0 {
                    inode.pending[keep.ops].op.apply(&mut contents, Some(keep.torn_bytes));
                }
                inode.synced = contents.clone();
            }
            // Also for a file with nothing pending: writes a failed fsync forgot, or that
            // were issued after an fsync still in flight, are gone.
            inode.current = contents;
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
