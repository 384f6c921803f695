//! The crash states of the shipped storage, enumerated (after ALICE, "All File Systems Are
//! Not Created Equal", OSDI 2014).
//!
//! A workload runs the shipped log store and state machine over a [`RecordingDisk`] on a
//! real temporary directory: appends with group commit, committed-index saves, vote saves,
//! a truncation and a new branch, a purge, segment rollovers and a snapshot install. The
//! recording disk logs every create, write, set_len, fsync, rename, directory fsync and
//! remove, and, between them, what the workload had been promised at that moment (an
//! append's callback fired, a vote save returned, ...).
//!
//! From the log, the crash states a POSIX file system allows at each point between two
//! operations are built:
//! - every prefix of the operations (all unsynced changes kept), and none of them kept;
//! - any subset of the 4 KiB pages written since their file's last fsync, later pages
//!   without earlier ones included, with or without the file's new length;
//! - any prefix of the name changes since the last directory fsync, independently of the
//!   data: a rename lands before its file's data where no fsync ordered them;
//! - torn sectors: one kept page holding only some of its 512-byte sectors.
//!
//! Where a point has more states than its budget, they are sampled with a seeded RNG (the
//! seed is printed; `ROSTER_CRASH_SEED` replays it). Each state is opened with the shipped
//! code and layout (`Wal::open`, the state machine's `open`), and must:
//! - open: never refuse;
//! - keep every acknowledged entry, vote, committed index, purge and snapshot;
//! - never show an entry that was never written, or one from a truncated branch;
//! - open the same way again after a crash that keeps nothing unsynced (repairs are
//!   durable).
//!
//! `ROSTER_CRASH_STATES=long` raises the budgets (a run by hand, minutes); CI runs the
//! default, about a minute in a debug build.

use super::disk::{Disk, FsDisk};
use super::log_store::LogStore;
use super::mem_disk::{DirOp, Keep, MemDisk};
use super::state_machine::StateMachineStore;
use super::wal::{Recovered, Wal, WalOptions};
use crate::raft::entry::Batch;
use crate::raft::{Entry, LogId, TypeConfig, Vote};
use crate::storage::wal::tests::lid;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use roster_kernel::rng::Rng;
use roster_kernel::{Command, Limits, Proposal, ProposalBody, Request, SessionId};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PAGE_BYTES: usize = 4096;
const SECTOR_BYTES: usize = 512;
const SECTORS_PER_PAGE: u32 = (PAGE_BYTES / SECTOR_BYTES) as u32;
/// The seed CI uses unless `ROSTER_CRASH_SEED` says otherwise.
const CI_SEED: u64 = 20;
/// Failures listed in a test's panic message, at most.
const MAX_FAILURES_SHOWN: usize = 8;

// ---------------------------------------------------------------------------------------
// The recording disk
// ---------------------------------------------------------------------------------------

/// One file-system call of the workload.
#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Write { name: String, offset: u64, data: Vec<u8> },
    SetLen { name: String, len: u64 },
    SyncData(String),
    Rename { from: String, to: String },
    Remove(String),
    SyncDir,
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Create(n) => format!("create {n}"),
            Op::Write { name, offset, data } => format!("write {name} @{offset} +{}", data.len()),
            Op::SetLen { name, len } => format!("set_len {name} {len}"),
            Op::SyncData(n) => format!("fsync {n}"),
            Op::Rename { from, to } => format!("rename {from} -> {to}"),
            Op::Remove(n) => format!("remove {n}"),
            Op::SyncDir => "fsync dir".to_string(),
        }
    }
}

/// What a crash must keep: everything the workload was told is durable, up to here.
#[derive(Clone, Debug, Default)]
struct Promised {
    /// Acknowledged entries not since given up (by a truncation or purge requested).
    entries: BTreeMap<u64, LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Entries of branches whose truncation completed: never to be seen again.
    truncated: BTreeSet<LogId>,
    /// The last log index of the latest snapshot installed.
    snapshot_index: Option<u64>,
}

enum Event {
    Op(Op),
    Promise(Arc<Promised>),
}

type Flushed = openraft::alias::OneshotReceiverOf<TypeConfig, Result<(), io::Error>>;

/// An append whose callback has not fired yet.
struct Waiting {
    flushed: Flushed,
    entries: Vec<LogId>,
    /// The committed index sent before the append: durable with it.
    committed: Option<LogId>,
}

#[derive(Default)]
struct Recording {
    events: Vec<Event>,
    waiting: Vec<Waiting>,
    promised: Promised,
}

impl Recording {
    /// Records what acknowledgements fired since the last call. Called before every
    /// operation, so an acknowledgement lands before the first operation that follows it
    /// (an acknowledgement before its fsync lands before the fsync).
    fn poll_acks(&mut self) {
        let mut changed = false;
        let mut still = Vec::new();
        for mut w in std::mem::take(&mut self.waiting) {
            match w.flushed.try_recv() {
                Ok(Ok(())) => {
                    for l in &w.entries {
                        self.promised.entries.insert(l.index, *l);
                    }
                    self.promised.committed = self.promised.committed.max(w.committed);
                    changed = true;
                }
                Ok(Err(e)) => panic!("the workload's append failed: {e}"),
                Err(_) => still.push(w),
            }
        }
        self.waiting = still;
        if changed {
            self.events.push(Event::Promise(Arc::new(self.promised.clone())));
        }
    }
}

/// A `Disk` that performs each call on `inner` and logs it. Its calls stay on the calling
/// task (`sync_blocks_thread` false), so the log is in the order the storage issued them.
struct RecordingDisk {
    inner: Arc<dyn Disk>,
    rec: Mutex<Recording>,
}

impl RecordingDisk {
    fn new(inner: Arc<dyn Disk>) -> RecordingDisk {
        RecordingDisk { inner, rec: Mutex::new(Recording::default()) }
    }

    fn log(&self, op: Op) {
        let mut rec = super::disk::lock(&self.rec);
        rec.poll_acks();
        rec.events.push(Event::Op(op));
    }

    fn wait_for(&self, w: Waiting) {
        super::disk::lock(&self.rec).waiting.push(w);
    }

    /// Changes the promise, as of now.
    fn promise(&self, f: impl FnOnce(&mut Promised)) {
        let mut rec = super::disk::lock(&self.rec);
        rec.poll_acks();
        f(&mut rec.promised);
        let p = Arc::new(rec.promised.clone());
        rec.events.push(Event::Promise(p));
    }

    fn take_events(&self) -> Vec<Event> {
        let mut rec = super::disk::lock(&self.rec);
        rec.poll_acks();
        assert!(rec.waiting.is_empty(), "every append of the workload was acknowledged");
        std::mem::take(&mut rec.events)
    }
}

impl Disk for RecordingDisk {
    fn create(&self, name: &str) -> io::Result<()> {
        self.log(Op::Create(name.to_string()));
        self.inner.create(name)
    }
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.log(Op::Write { name: name.to_string(), offset, data: data.to_vec() });
        self.inner.write_at(name, offset, data)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(name, offset, len)
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        self.inner.len(name)
    }
    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.log(Op::SetLen { name: name.to_string(), len });
        self.inner.set_len(name, len)
    }
    fn sync_data(&self, name: &str) -> io::Result<()> {
        self.log(Op::SyncData(name.to_string()));
        self.inner.sync_data(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.log(Op::Rename { from: from.to_string(), to: to.to_string() });
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.log(Op::Remove(name.to_string()));
        self.inner.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.log(Op::SyncDir);
        self.inner.sync_dir()
    }
}

// ---------------------------------------------------------------------------------------
// Replaying the log into crash states
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Image {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Pages written (or cut) since the last fsync.
    dirty: BTreeSet<usize>,
}

/// The file system as the log so far left it: durable and current contents per file.
#[derive(Default)]
struct Replay {
    images: BTreeMap<u64, Image>,
    next_inode: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    dir_pending: Vec<DirOp>,
}

fn pages(offset: usize, len: usize) -> std::ops::RangeInclusive<usize> {
    offset / PAGE_BYTES..=(offset + len.max(1) - 1) / PAGE_BYTES
}

impl Replay {
    fn image(&mut self, name: &str) -> &mut Image {
        let id = self.names.get(name).unwrap_or_else(|| panic!("the log uses {name} before creating it"));
        self.images.get_mut(id).expect("every name has an image")
    }

    fn set_len(image: &mut Image, len: usize) {
        let old = image.current.len();
        image.current.resize(len, 0);
        image.dirty.extend(pages(old.min(len), old.max(len) - old.min(len)));
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(name) => {
                if self.names.contains_key(name) {
                    Replay::set_len(self.image(name), 0);
                } else {
                    self.next_inode += 1;
                    let inode = self.next_inode;
                    self.images.insert(inode, Image::default());
                    let link = DirOp::Link { name: name.clone(), inode };
                    link.apply(&mut self.names);
                    self.dir_pending.push(link);
                }
            }
            Op::Write { name, offset, data } => {
                let image = self.image(name);
                let start = *offset as usize;
                if image.current.len() < start + data.len() {
                    image.current.resize(start + data.len(), 0);
                }
                image.current[start..start + data.len()].copy_from_slice(data);
                image.dirty.extend(pages(start, data.len()));
            }
            Op::SetLen { name, len } => Replay::set_len(self.image(name), *len as usize),
            Op::SyncData(name) => {
                let image = self.image(name);
                let len = image.current.len();
                image.durable.resize(len, 0);
                for p in std::mem::take(&mut image.dirty) {
                    let range = (p * PAGE_BYTES).min(len)..((p + 1) * PAGE_BYTES).min(len);
                    image.durable[range.clone()].copy_from_slice(&image.current[range]);
                }
            }
            Op::Rename { from, to } => {
                let op = DirOp::Rename { from: from.clone(), to: to.clone() };
                op.apply(&mut self.names);
                self.dir_pending.push(op);
            }
            Op::Remove(name) => {
                let op = DirOp::Remove { name: name.clone() };
                op.apply(&mut self.names);
                self.dir_pending.push(op);
            }
            Op::SyncDir => {
                for op in self.dir_pending.drain(..) {
                    op.apply(&mut self.durable_names);
                }
            }
        }
    }

    /// The unsynced pages, in (inode, page) order.
    fn dirty_pages(&self) -> Vec<(u64, usize)> {
        self.images.iter().flat_map(|(id, im)| im.dirty.iter().map(move |p| (*id, *p))).collect()
    }

    /// The files of the crash state `choice` describes.
    fn crash_state(&self, choice: &Choice) -> BTreeMap<String, Vec<u8>> {
        let mut names = self.durable_names.clone();
        for op in &self.dir_pending[..choice.dir_ops] {
            op.apply(&mut names);
        }
        let mut files = BTreeMap::new();
        for (name, id) in names {
            let image = &self.images[&id];
            let mut data = image.durable.clone();
            if choice.new_len.contains(&id) {
                data.resize(image.current.len(), 0);
            }
            // A page written back past the file's durable length stays invisible.
            let len = data.len().min(image.current.len());
            for p in &image.dirty {
                let range = (p * PAGE_BYTES).min(len)..((p + 1) * PAGE_BYTES).min(len);
                if choice.pages.contains(&(id, *p)) {
                    data[range.clone()].copy_from_slice(&image.current[range]);
                } else if let Some((tid, tp, mask)) = choice.torn
                    && (tid, tp) == (id, *p)
                {
                    for s in 0..SECTORS_PER_PAGE as usize {
                        if mask & (1 << s) != 0 {
                            let at = range.start + s * SECTOR_BYTES;
                            let sector = at.min(range.end)..(at + SECTOR_BYTES).min(range.end);
                            data[sector.clone()].copy_from_slice(&image.current[sector]);
                        }
                    }
                }
            }
            files.insert(name, data);
        }
        files
    }
}

/// Which unsynced changes a crash state keeps.
#[derive(Clone, Debug, Default)]
struct Choice {
    /// How many of the pending name changes, in order.
    dir_ops: usize,
    /// Whole pages kept.
    pages: BTreeSet<(u64, usize)>,
    /// Files whose new length was kept.
    new_len: BTreeSet<u64>,
    /// A page not in `pages` of which the sectors in the mask were kept.
    torn: Option<(u64, usize, u8)>,
}

impl Choice {
    fn describe(&self, dirty: usize) -> String {
        format!(
            "{} name changes, {} of {dirty} unsynced pages, new length of {:?}{}",
            self.dir_ops,
            self.pages.len(),
            self.new_len,
            self.torn.map_or(String::new(), |(i, p, m)| format!(", torn page {p} of inode {i} (sectors {m:08b})"))
        )
    }
}

/// The crash states to check at one point: all of them when the budget allows, else the
/// two extremes and a seeded sample.
fn choices(replay: &Replay, budget: usize, rng: &mut Rng) -> (Vec<Choice>, bool) {
    let dirty = replay.dirty_pages();
    let len_changed: Vec<u64> =
        replay.images.iter().filter(|(_, im)| im.durable.len() != im.current.len()).map(|(id, _)| *id).collect();
    let dir = replay.dir_pending.len();
    let all = Choice {
        dir_ops: dir,
        pages: dirty.iter().copied().collect(),
        new_len: len_changed.iter().copied().collect(),
        torn: None,
    };
    let bits = dirty.len() + len_changed.len();
    let exhaustive = bits < 16 && (1usize << bits) * (dir + 1) <= budget;
    if exhaustive {
        let mut out = Vec::new();
        for dir_ops in 0..=dir {
            for mask in 0..1u64 << bits {
                let pages = dirty.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, p)| *p).collect();
                let new_len = len_changed
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << (dirty.len() + i)) != 0)
                    .map(|(_, id)| *id)
                    .collect();
                out.push(Choice { dir_ops, pages, new_len, torn: None });
            }
        }
        return (out, true);
    }
    let mut out = vec![Choice::default(), all];
    while out.len() < budget {
        let mut c = Choice { dir_ops: rng.up_to(dir as u64) as usize, ..Choice::default() };
        // Sometimes most pages, sometimes few: a uniform subset almost always keeps half.
        let keep_per_256 = rng.up_to(256);
        for p in &dirty {
            if rng.below(256) < keep_per_256 {
                c.pages.insert(*p);
            }
        }
        for id in &len_changed {
            if rng.below(2) == 0 {
                c.new_len.insert(*id);
            }
        }
        let lost: Vec<&(u64, usize)> = dirty.iter().filter(|p| !c.pages.contains(p)).collect();
        if !lost.is_empty() && rng.below(3) == 0 {
            let (id, page) = *lost[rng.below(lost.len() as u64) as usize];
            c.torn = Some((id, page, (rng.below(254) + 1) as u8));
        }
        out.push(c);
    }
    (out, false)
}

// ---------------------------------------------------------------------------------------
// Checking one state
// ---------------------------------------------------------------------------------------

/// Everything the workload ever wrote: what a recovered log may hold.
#[derive(Default)]
struct History {
    written: BTreeMap<LogId, Entry>,
    votes: Vec<Vote>,
}

fn check_recovered(rec: &Recovered, promised: &Promised, history: &History) -> Result<(), String> {
    for e in &rec.entries {
        match history.written.get(&e.log_id) {
            Some(w) if w == e => {}
            Some(_) => return Err(format!("entry {} reads back different from what was written", e.log_id)),
            None => return Err(format!("entry {} was never written", e.log_id)),
        }
        if promised.truncated.contains(&e.log_id) {
            return Err(format!("entry {} is from a branch whose truncation completed", e.log_id));
        }
    }
    if rec.last_purged < promised.purged {
        return Err(format!("purge marker {:?} is behind the completed purge {:?}", rec.last_purged, promised.purged));
    }
    let purged_index = rec.last_purged.map(|l| l.index);
    let got: BTreeMap<u64, LogId> = rec.entries.iter().map(|e| (e.log_id.index, e.log_id)).collect();
    for (i, l) in &promised.entries {
        if purged_index.is_some_and(|p| *i <= p) {
            continue;
        }
        if got.get(i) != Some(l) {
            return Err(format!("acknowledged entry {l} lost (found {:?} at index {i})", got.get(i)));
        }
    }
    if let Some(v) = promised.vote {
        let kept = rec.vote.is_some_and(|r| r.partial_cmp(&v).is_some_and(|o| o.is_ge()));
        if !kept {
            return Err(format!("vote {v} was saved but {:?} came back", rec.vote));
        }
    }
    if let Some(r) = rec.vote
        && !history.votes.contains(&r)
    {
        return Err(format!("vote {r} was never saved"));
    }
    if rec.committed < promised.committed {
        return Err(format!(
            "committed index {:?} is behind the durable one {:?}",
            rec.committed.map(|c| c.index),
            promised.committed.map(|c| c.index)
        ));
    }
    Ok(())
}

fn check_state(
    files: BTreeMap<String, Vec<u8>>,
    opts: &WalOptions,
    promised: &Promised,
    history: &History,
) -> Result<(), String> {
    let disk = MemDisk::with_files(files);
    let (wal, rec) = Wal::open(Arc::new(disk.clone()), opts.clone()).map_err(|e| format!("refused to open: {e}"))?;
    drop(wal);
    check_recovered(&rec, promised, history)?;
    let sm = StateMachineStore::open(Arc::new(disk.clone()), Limits::default())
        .map_err(|e| format!("the state machine refused to open: {e}"))?;
    let applied = sm.shared().applied().log_index;
    if applied < promised.snapshot_index {
        return Err(format!("installed snapshot through {:?} lost: restored {applied:?}", promised.snapshot_index));
    }
    // Whatever opening repaired is durable: a crash right after changes nothing.
    disk.crash(|_| Keep::NONE);
    let (_, again) = Wal::open(Arc::new(disk), opts.clone()).map_err(|e| format!("refused a second open: {e}"))?;
    if again.entries != rec.entries || again.vote != rec.vote || again.last_purged != rec.last_purged {
        return Err(
            "a second open after a crash found a different log: the first open's repair was not durable".to_string()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Enumerating
// ---------------------------------------------------------------------------------------

struct Figures {
    ops: usize,
    points: usize,
    exhaustive_points: usize,
    states: usize,
    failures: Vec<String>,
    failed_states: usize,
}

fn enumerate(events: &[Event], opts: &WalOptions, history: &History, budget: usize, seed: u64) -> Figures {
    let mut rng = Rng::new(seed);
    let mut replay = Replay::default();
    let mut promised = Arc::new(Promised::default());
    let mut figures =
        Figures { ops: 0, points: 0, exhaustive_points: 0, states: 0, failures: Vec::new(), failed_states: 0 };
    let mut last_op: Option<&Op> = None;
    let mut check_point = |replay: &Replay, promised: &Promised, last_op: Option<&Op>, figures: &mut Figures| {
        let Some(last_op) = last_op else { return };
        let (choices, exhaustive) = choices(replay, budget, &mut rng);
        figures.points += 1;
        figures.exhaustive_points += usize::from(exhaustive);
        let dirty = replay.dirty_pages().len();
        for c in choices {
            figures.states += 1;
            if let Err(why) = check_state(replay.crash_state(&c), opts, promised, history) {
                figures.failed_states += 1;
                if figures.failures.len() < MAX_FAILURES_SHOWN {
                    figures.failures.push(format!(
                        "after op {} ({}), keeping {}: {why}",
                        figures.ops,
                        last_op.describe(),
                        c.describe(dirty)
                    ));
                }
            }
        }
    };
    for event in events {
        match event {
            Event::Promise(p) => promised = p.clone(),
            Event::Op(op) => {
                check_point(&replay, &promised, last_op, &mut figures);
                replay.apply(op);
                figures.ops += 1;
                last_op = Some(op);
            }
        }
    }
    check_point(&replay, &promised, last_op, &mut figures);
    figures
}

// ---------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------

/// An entry whose value takes `value_bytes`, so a group commit spans several pages.
fn big_entry(term: u64, index: u64, value_bytes: usize) -> Entry {
    let value = format!("{index}-{}", "v".repeat(value_bytes));
    let command = Command::KvPut { key: format!("key-{index}"), value };
    let request = Request { session: SessionId(1), seq: index, command };
    Entry::new_normal(
        lid(term, index),
        Batch::one(Proposal {
            at_unix_ms: 1_000 + index,
            body: ProposalBody::Client { request, by: roster_kernel::SessionOwner::Node },
        }),
    )
}

struct Workload {
    disk: Arc<RecordingDisk>,
    log: LogStore,
    sm: StateMachineStore,
    history: History,
    /// The entries appended on the current branch.
    branch: BTreeMap<u64, LogId>,
    next_index: u64,
    term: u64,
    committed: Option<LogId>,
    value_bytes: usize,
}

impl Workload {
    fn open(disk: Arc<RecordingDisk>, opts: &WalOptions, value_bytes: usize) -> Workload {
        let sm = StateMachineStore::open(disk.clone(), Limits::default()).expect("state machine opens");
        let log = LogStore::open(disk.clone(), opts.clone(), Default::default()).expect("log opens");
        Workload {
            disk,
            log,
            sm,
            history: History::default(),
            branch: BTreeMap::new(),
            next_index: 1,
            term: 1,
            committed: None,
            value_bytes,
        }
    }

    /// One group commit: `appends` appends of `per_append` entries queued together, then
    /// all their acknowledgements awaited.
    async fn group_commit(&mut self, appends: usize, per_append: usize) {
        for _ in 0..appends {
            let entries: Vec<Entry> =
                (0..per_append as u64).map(|k| big_entry(self.term, self.next_index + k, self.value_bytes)).collect();
            self.next_index += per_append as u64;
            for e in &entries {
                self.history.written.insert(e.log_id, e.clone());
                self.branch.insert(e.log_id.index, e.log_id);
            }
            let ids = entries.iter().map(|e| e.log_id).collect();
            let (tx, rx) = TypeConfig::oneshot();
            // Registered before the append is queued: its acknowledgement cannot be missed.
            self.disk.wait_for(Waiting { flushed: rx, entries: ids, committed: self.committed });
            self.log.append(entries, IOFlushed::signal(tx)).await.expect("append accepted");
        }
        // A barrier: returns once every append before it is acknowledged.
        self.log.flush().await.expect("flush");
    }

    async fn save_committed(&mut self, index: u64) {
        let Some(l) = self.branch.get(&index).copied() else { return };
        if self.committed >= Some(l) {
            return;
        }
        self.committed = Some(l);
        self.log.save_committed(Some(l)).await.expect("save committed");
    }

    async fn save_vote(&mut self, vote: Vote) {
        self.history.votes.push(vote);
        self.log.save_vote(&vote).await.expect("save vote");
        self.disk.promise(|p| p.vote = Some(vote));
    }

    async fn truncate_after(&mut self, last_kept: u64) {
        let removed: Vec<LogId> = self.branch.split_off(&(last_kept + 1)).into_values().collect();
        self.next_index = last_kept + 1;
        // Asked for: no longer owed. Done: never to be seen again.
        self.disk.promise(|p| drop(p.entries.split_off(&(last_kept + 1))));
        self.log.truncate_after(Some(self.branch[&last_kept])).await.expect("truncate");
        self.disk.promise(|p| p.truncated.extend(removed));
    }

    async fn purge(&mut self, upto: LogId) {
        self.disk.promise(|p| p.entries = p.entries.split_off(&(upto.index + 1)));
        self.log.purge(upto).await.expect("purge");
        self.branch = self.branch.split_off(&(upto.index + 1));
        self.disk.promise(|p| p.purged = Some(upto));
    }

    /// As a follower installs a leader's snapshot: the state machine takes it, then the log
    /// is purged through it (past its end) and continues after it.
    async fn install_snapshot(&mut self, through: u64) {
        let leader_disk = MemDisk::new();
        let mut leader = StateMachineStore::open(Arc::new(leader_disk), Limits::default()).expect("opens");
        let sessions = (1..=through).map(|i| {
            let e = Entry::new_normal(
                lid(self.term, i),
                Batch::one(Proposal {
                    at_unix_ms: 5_000 + i,
                    body: ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node },
                }),
            );
            Ok((e, None))
        });
        leader.apply(futures::stream::iter(sessions)).await.expect("leader applies");
        let snap = leader.get_snapshot_builder().await.build_snapshot().await.expect("snapshot builds");
        self.sm.install_snapshot(&snap.meta, snap.snapshot).await.expect("snapshot installs");
        self.disk.promise(|p| p.snapshot_index = Some(through));
        self.purge(lid(self.term, through)).await;
        self.next_index = through + 1;
        self.committed = Some(lid(self.term, through));
        self.log.save_committed(self.committed).await.expect("save committed");
    }
}

/// The workload over a recording disk on a fresh directory: its events and history.
async fn record_workload(
    name: &str,
    opts: &WalOptions,
    value_bytes: usize,
    rounds: u64,
    per_append: usize,
) -> (Vec<Event>, History) {
    let dir = super::test_dir(name);
    let disk = Arc::new(RecordingDisk::new(Arc::new(FsDisk::open(&dir).expect("temp dir"))));
    let mut w = Workload::open(disk.clone(), opts, value_bytes);
    w.save_vote(Vote::new(1, 1)).await;
    w.save_vote(Vote::new_committed(1, 1)).await;
    for round in 0..rounds {
        w.group_commit(1 + (round % 3) as usize, per_append).await;
        if round % 3 == 2 {
            let c = w.next_index - 1 - per_append as u64;
            w.save_committed(c).await;
        }
        if round == rounds / 3 {
            // A new leader: its vote, then a conflicting branch replaces the uncommitted tail.
            w.save_vote(Vote::new(2, 2)).await;
            w.save_vote(Vote::new_committed(2, 2)).await;
            let keep = w.committed.map_or(1, |c| c.index).max(w.next_index.saturating_sub(4));
            w.truncate_after(keep).await;
            w.term = 2;
        }
        if round == rounds / 2 {
            let upto = w.committed.expect("something committed by now");
            w.purge(upto).await;
        }
        if round == 2 * rounds / 3 {
            w.term = 3;
            w.save_vote(Vote::new_committed(3, 1)).await;
            let through = w.next_index + 5;
            w.install_snapshot(through).await;
        }
    }
    let Workload { log, sm, history, .. } = w;
    drop((log, sm));
    // The writer task ends with the store: let it, so its last operations are recorded.
    for _ in 0..1_000 {
        if Arc::strong_count(&disk) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let events = disk.take_events();
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
    (events, history)
}

fn seed_from_env() -> u64 {
    match std::env::var("ROSTER_CRASH_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("ROSTER_CRASH_SEED={s:?} is not a u64")),
        Err(_) if long_mode() => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(CI_SEED),
        Err(_) => CI_SEED,
    }
}

fn long_mode() -> bool {
    std::env::var("ROSTER_CRASH_STATES").is_ok_and(|v| v == "long")
}

async fn run(name: &str, opts: WalOptions, value_bytes: usize, rounds: u64, per_append: usize, budget: usize) {
    let seed = seed_from_env();
    let started = Instant::now();
    let (events, history) = record_workload(name, &opts, value_bytes, rounds, per_append).await;
    let recorded = started.elapsed();
    let f = enumerate(&events, &opts, &history, budget, seed);
    eprintln!(
        "crash states, workload {name} (segments {} bytes, preallocated {}): {} operations, {} crash points \
         ({} enumerated exhaustively), {} states checked, {} failed; seed {seed} (ROSTER_CRASH_SEED to replay); \
         recorded in {recorded:.1?}, checked in {:.1?}",
        opts.segment_bytes,
        opts.preallocate,
        f.ops,
        f.points,
        f.exhaustive_points,
        f.states,
        f.failed_states,
        started.elapsed() - recorded,
    );
    assert!(
        f.failures.is_empty(),
        "{} of {} crash states of workload {name} broke a promise (seed {seed}); the first:\n{}",
        f.failed_states,
        f.states,
        f.failures.join("\n")
    );
}

/// The shipped layout, segments shrunk to 64 KiB so the workload rolls over several times.
#[tokio::test]
async fn every_crash_state_of_the_shipped_wal_keeps_what_was_acknowledged() {
    let budget = if long_mode() { 2_000 } else { 96 };
    let opts = WalOptions { segment_bytes: 64 << 10, ..WalOptions::for_fs() };
    run("small-segments", opts, 900, 24, 4, budget).await;
}

/// `WalOptions::for_fs()` exactly (8 MiB segments), with large entries so it rolls over.
#[tokio::test]
async fn every_crash_state_of_the_for_fs_layout_keeps_what_was_acknowledged() {
    let budget = if long_mode() { 24 } else { 2 };
    run("for-fs", WalOptions::for_fs(), 256 << 10, 8, 4, budget).await;
}

#[test]
fn replay_builds_later_pages_without_earlier_ones_and_renames_before_data() {
    let mut r = Replay::default();
    for op in [
        Op::Create("a".into()),
        Op::SyncDir,
        Op::Write { name: "a".into(), offset: 0, data: vec![1; 3 * PAGE_BYTES] },
        Op::Create("t".into()),
        Op::Write { name: "t".into(), offset: 0, data: vec![7; 10] },
        Op::Rename { from: "t".into(), to: "m".into() },
    ] {
        r.apply(&op);
    }
    let a = *r.names.get("a").unwrap();
    let t = *r.names.get("m").unwrap();
    // Page 2 of `a` and the rename, without page 0 or the renamed file's data.
    let c = Choice { dir_ops: 2, pages: [(a, 2)].into(), new_len: [a].into(), torn: None };
    let files = r.crash_state(&c);
    let got = &files["a"];
    assert_eq!(got.len(), 3 * PAGE_BYTES);
    assert!(got[..2 * PAGE_BYTES].iter().all(|b| *b == 0) && got[2 * PAGE_BYTES..].iter().all(|b| *b == 1));
    assert_eq!(files.get("m"), Some(&Vec::new()), "renamed, its data not on disk");
    assert!(!files.contains_key("t"));
    // A torn page keeps only the chosen sectors.
    let c = Choice { dir_ops: 0, pages: BTreeSet::new(), new_len: [a].into(), torn: Some((a, 1, 0b0000_0010)) };
    let files = r.crash_state(&c);
    let page1 = &files["a"][PAGE_BYTES..2 * PAGE_BYTES];
    assert!(page1[..SECTOR_BYTES].iter().all(|b| *b == 0));
    assert!(page1[SECTOR_BYTES..2 * SECTOR_BYTES].iter().all(|b| *b == 1));
    assert!(page1[2 * SECTOR_BYTES..].iter().all(|b| *b == 0));
    assert!(!files.contains_key("m"), "no name change kept");
    let _ = t;
}
