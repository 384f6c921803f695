//! The Raft log on disk: a segmented, append-only write-ahead log, plus a small meta file
//! for the vote, the committed log id and the purge marker.
//!
//! Record layout (little endian), every record starting at a multiple of 8 bytes:
//!
//! ```text
//! len: u32 | crc: u32 = crc32(len bytes ++ body) | body: postcard(WalRecord), len bytes | zero pad to 8
//! ```
//!
//! A record is an `Entry` or a `Committed` marker. Segments are files `wal-<seq>.log`;
//! appends go to the last one, which rolls over at `segment_bytes`. Segments may be
//! pre-filled with zeros (`preallocate`), so that an fsync of an append only flushes data,
//! not the file's size; a zero length word then marks the end of the records.
//!
//! Opening scans every segment. A record that fails its checksum at the TAIL of the last
//! segment (nothing valid after it) is a write torn by a crash: it was never synced, so
//! never acknowledged, and it is cut with a warning. A bad record anywhere else (a valid
//! one follows it, or it sits in an earlier segment, which is always fully synced before
//! the next one is written) is corruption of acknowledged data: opening stops with
//! `StorageError::Corrupt` naming the file and offset, and nothing is applied.
//!
//! `truncate_after` cuts the segment holding the first removed entry at that entry's
//! offset (and deletes later segments); `purge` records the purge marker in the meta file
//! and deletes whole segments below it. Both are durable when they return.
//!
//! The meta file is replaced atomically: write `wal.meta.tmp`, fsync, rename, fsync the
//! directory. The committed log id is also written as a `Committed` record into the log
//! stream (made durable by the next group fsync), so advancing it costs no extra fsync;
//! the larger of the two wins on open.

use super::StorageError;
use super::disk::Disk;
use crate::raft::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// Largest record body; a larger entry is refused with `StorageError::RecordTooLarge`.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
const HEADER_BYTES: usize = 8;
const ALIGN_BYTES: usize = 8;
const META_FILE: &str = "wal.meta";
const META_TMP_FILE: &str = "wal.meta.tmp";
/// The last byte is the log format: 2 since entries hold batches of proposals.
const META_MAGIC: [u8; 8] = *b"RSTWMET2";
/// Format 1 (one proposal per entry), written by Roster before batching.
const OLD_META_MAGIC: [u8; 8] = *b"RSTWMET1";
const META_HEADER_BYTES: usize = META_MAGIC.len() + 8;
const ZERO_CHUNK_BYTES: usize = 1 << 20;
const MIN_SEGMENT_BYTES: u64 = 4096;

/// How the WAL lays out its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment rolls over once the next record would pass this size (a single larger
    /// record gets a segment of its own).
    pub segment_bytes: u64,
    /// Fill each new segment with zeros up to `segment_bytes` and fsync it before use, so
    /// later fsyncs of appends need not update the file size. Use on real disks.
    pub preallocate: bool,
}

impl WalOptions {
    /// For a real disk: 8 MiB pre-zeroed segments.
    pub fn for_fs() -> WalOptions {
        WalOptions { segment_bytes: 8 << 20, preallocate: true }
    }

    /// For an in-memory disk: no pre-zeroing (it would only cost memory).
    #[cfg(any(test, feature = "sim-disk"))]
    pub fn for_mem() -> WalOptions {
        WalOptions { segment_bytes: 1 << 20, preallocate: false }
    }

    fn check(&self) -> Result<(), StorageError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(StorageError::InvalidOptions(format!(
                "segment_bytes {} is below the minimum of {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
enum WalRecord {
    Entry(Box<Entry>),
    Committed(LogId),
}

/// Serializes exactly like `WalRecord` (same variants, same order) without owning.
#[derive(Serialize)]
enum WalRecordRef<'a> {
    Entry(&'a Entry),
    Committed(&'a LogId),
}

/// What the meta file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
}

/// What `Wal::open` found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Entries after the purge marker, in index order, consecutive.
    pub entries: Vec<Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
}

/// Entries encoded as WAL records, ready to write. Built by `encode_entries` (which may
/// run on the caller's task) and written by `Wal::append`.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    records: Vec<EncodedRecord>,
}

#[derive(Debug)]
struct EncodedRecord {
    range: Range<usize>,
    log_id: LogId,
}

impl EncodedBatch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes the batch takes in the log.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Encodes `entries` as WAL records.
pub fn encode_entries(entries: &[Entry]) -> Result<EncodedBatch, StorageError> {
    let mut batch = EncodedBatch::default();
    for entry in entries {
        let start = batch.bytes.len();
        encode_record(&mut batch.bytes, &WalRecordRef::Entry(entry))?;
        batch.records.push(EncodedRecord { range: start..batch.bytes.len(), log_id: entry.log_id });
    }
    Ok(batch)
}

fn encode_record(buf: &mut Vec<u8>, record: &WalRecordRef<'_>) -> Result<(), StorageError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_BYTES]);
    if let Err(e) = postcard::to_io(record, &mut *buf) {
        buf.truncate(start);
        return Err(StorageError::Encode { what: "a log record".into(), reason: e.to_string() });
    }
    let body_len = buf.len() - start - HEADER_BYTES;
    if body_len == 0 || body_len > MAX_RECORD_BYTES {
        buf.truncate(start);
        return Err(StorageError::RecordTooLarge { len: body_len, max: MAX_RECORD_BYTES });
    }
    let len_bytes = (body_len as u32).to_le_bytes();
    let crc = record_crc(len_bytes, &buf[start + HEADER_BYTES..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf.resize(start + align(HEADER_BYTES + body_len), 0);
    debug_assert!(record_at(buf, start).is_some(), "an encoded record must read back");
    Ok(())
}

fn record_crc(len_bytes: [u8; 4], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(body);
    h.finalize()
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// The record starting at `off`, if one is there whole and its checksum matches:
/// (its body, the offset of the next record).
fn record_at(bytes: &[u8], off: usize) -> Option<(Range<usize>, usize)> {
    let header = bytes.get(off..off.checked_add(HEADER_BYTES)?)?;
    let len_bytes: [u8; 4] = header[0..4].try_into().expect("4 bytes");
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_RECORD_BYTES {
        return None;
    }
    let next = off + align(HEADER_BYTES + len);
    if next > bytes.len() {
        return None;
    }
    let body = off + HEADER_BYTES..off + HEADER_BYTES + len;
    (record_crc(len_bytes, &bytes[body.clone()]) == crc).then_some((body, next))
}

fn decode_record(body: &[u8]) -> Result<WalRecord, postcard::Error> {
    let (record, rest) = postcard::take_from_bytes::<WalRecord>(body)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok(record)
}

/// One segment's records as scanned.
struct Scan {
    records: Vec<(usize, Range<usize>)>,
    /// Where the valid records end.
    end: usize,
    /// Whether anything but zeros follows `end`.
    garbage_after_end: bool,
    /// A valid record found after garbage: proof that the garbage is not a torn tail.
    valid_after_garbage: Option<usize>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut off = 0;
    while let Some((body, next)) = record_at(bytes, off) {
        records.push((off, body));
        off = next;
    }
    let garbage_after_end = bytes[off..].iter().any(|b| *b != 0);
    let valid_after_garbage = if garbage_after_end {
        (off + ALIGN_BYTES..bytes.len())
            .step_by(ALIGN_BYTES)
            .find(|at| record_at(bytes, *at).is_some_and(|(body, _)| decode_record(&bytes[body]).is_ok()))
    } else {
        None
    };
    Scan { records, end: off, garbage_after_end, valid_after_garbage }
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_err(file: &str) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { file: file.to_string(), source }
}

#[derive(Debug)]
struct Segment {
    name: String,
    /// Where the next record goes.
    write_offset: u64,
    /// Highest entry index stored in it (including purged ones), if any.
    max_index: Option<u64>,
}

#[derive(Clone, Debug)]
struct Position {
    seq: u64,
    offset: u64,
    log_id: LogId,
}

/// The write-ahead log. Synchronous and single-owner: the log store's writer task owns it.
pub struct Wal {
    disk: Arc<dyn Disk>,
    opts: WalOptions,
    segments: BTreeMap<u64, Segment>,
    /// Every present (not purged) entry's place, by index.
    positions: BTreeMap<u64, Position>,
    meta: WalMeta,
    committed: Option<LogId>,
    /// Segments written since their last fsync.
    dirty: BTreeSet<u64>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("segments", &self.segments.len())
            .field("entries", &self.positions.len())
            .field("meta", &self.meta)
            .finish()
    }
}

impl Wal {
    /// Opens (or creates) the WAL on `disk`, cutting a torn tail and refusing corruption.
    pub fn open(disk: Arc<dyn Disk>, opts: WalOptions) -> Result<(Wal, Recovered), StorageError> {
        opts.check()?;
        let names = disk.list().map_err(io_err("the data directory"))?;
        if names.iter().any(|n| n == META_TMP_FILE) {
            // A meta write that never reached its rename: the old meta file stands.
            disk.remove(META_TMP_FILE).map_err(io_err(META_TMP_FILE))?;
        }
        let meta = if names.iter().any(|n| n == META_FILE) { read_meta(&*disk)? } else { WalMeta::default() };
        let seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();

        let mut wal = Wal {
            disk,
            opts,
            segments: BTreeMap::new(),
            positions: BTreeMap::new(),
            committed: meta.committed,
            meta,
            dirty: BTreeSet::new(),
            scratch: Vec::new(),
        };
        let mut entries = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            wal.load_segment(*seq, i + 1 == seqs.len(), &mut entries)?;
        }
        wal.drop_purged_segments()?;
        if wal.segments.is_empty() {
            let seq = seqs.last().map_or(1, |s| s + 1);
            wal.create_segment(seq)?;
        }
        let recovered =
            Recovered { entries, vote: wal.meta.vote, committed: wal.committed, last_purged: wal.meta.last_purged };
        Ok((wal, recovered))
    }

    fn load_segment(&mut self, seq: u64, is_last: bool, entries: &mut Vec<Entry>) -> Result<(), StorageError> {
        let name = segment_name(seq);
        let bytes = self.disk.read(&name).map_err(io_err(&name))?;
        let scan = scan(&bytes);
        let corrupt =
            |offset: usize, reason: String| StorageError::Corrupt { file: name.clone(), offset: offset as u64, reason };
        if let Some(valid) = scan.valid_after_garbage {
            return Err(corrupt(scan.end, format!("bad record followed by a valid record at offset {valid}")));
        }
        if scan.garbage_after_end && !is_last {
            return Err(corrupt(scan.end, "bad record in a segment that is not the last".into()));
        }
        let mut max_index = None;
        for (offset, body) in &scan.records {
            let record = decode_record(&bytes[body.clone()])
                .map_err(|e| corrupt(*offset, format!("record passes its checksum but does not decode: {e}")))?;
            match record {
                WalRecord::Committed(log_id) => {
                    if self.committed < Some(log_id) {
                        self.committed = Some(log_id);
                    }
                }
                WalRecord::Entry(entry) => {
                    let index = entry.log_id.index;
                    max_index = max_index.max(Some(index));
                    if let Err(reason) = self.check_next(&entry.log_id) {
                        let purged = self.meta.last_purged.as_ref().is_some_and(|p| index <= p.index);
                        if self.positions.is_empty() && purged {
                            // Purged but not yet deleted with its segment.
                            continue;
                        }
                        return Err(corrupt(*offset, reason));
                    }
                    let position = Position { seq, offset: *offset as u64, log_id: entry.log_id };
                    self.positions.insert(index, position);
                    entries.push(*entry);
                }
            }
        }
        if scan.garbage_after_end {
            tracing::warn!(
                file = %name,
                offset = scan.end,
                "WAL tail torn by a crash (unacknowledged writes); cutting it"
            );
            let garbage_end = bytes.iter().rposition(|b| *b != 0).map_or(scan.end, |p| p + 1);
            self.cut(&name, scan.end as u64, garbage_end as u64)?;
        }
        self.segments.insert(seq, Segment { name, write_offset: scan.end as u64, max_index });
        Ok(())
    }

    /// Whether `log_id` may be the next entry: the index right after the last entry (or
    /// the purge marker), and a leader no older than the last entry's.
    fn check_next(&self, log_id: &LogId) -> Result<(), String> {
        let last = self.positions.last_key_value().map(|(_, p)| &p.log_id);
        let expected = last.or(self.meta.last_purged.as_ref()).map(|l| l.index + 1);
        if let Some(expected) = expected
            && log_id.index != expected
        {
            return Err(format!("entry index {} where {expected} was expected", log_id.index));
        }
        if let Some(last) = last
            && log_id.leader_id < last.leader_id
        {
            return Err(format!("entry {log_id} has an older leader than the entry before it ({last})"));
        }
        Ok(())
    }

    /// Makes `[offset, old_len)` of `name` read as "no records", durably.
    fn cut(&self, name: &str, offset: u64, old_len: u64) -> Result<(), StorageError> {
        if self.opts.preallocate {
            // Keep the file's allocated size: overwrite with zeros instead of shrinking.
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut at = offset;
            while at < old_len {
                let n = (old_len - at).min(ZERO_CHUNK_BYTES as u64);
                self.disk.write_at(name, at, &zeros[..n as usize]).map_err(io_err(name))?;
                at += n;
            }
        } else {
            self.disk.set_len(name, offset).map_err(io_err(name))?;
        }
        self.disk.sync_data(name).map_err(io_err(name))
    }

    /// Deletes leading segments that hold only purged entries (never the last one).
    fn drop_purged_segments(&mut self) -> Result<(), StorageError> {
        let Some(purged) = self.meta.last_purged else {
            return Ok(());
        };
        let last_seq = self.segments.keys().next_back().copied();
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, seg)| Some(**seq) != last_seq && seg.max_index.is_none_or(|m| m <= purged.index))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &doomed {
            let seg = self.segments.remove(seq).expect("listed above");
            self.dirty.remove(seq);
            self.disk.remove(&seg.name).map_err(io_err(&seg.name))?;
        }
        if !doomed.is_empty() {
            self.disk.sync_dir().map_err(io_err("the data directory"))?;
        }
        Ok(())
    }

    fn create_segment(&mut self, seq: u64) -> Result<(), StorageError> {
        let name = segment_name(seq);
        self.disk.create(&name).map_err(io_err(&name))?;
        if self.opts.preallocate {
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut at = 0;
            while at < self.opts.segment_bytes {
                let n = (self.opts.segment_bytes - at).min(ZERO_CHUNK_BYTES as u64);
                self.disk.write_at(&name, at, &zeros[..n as usize]).map_err(io_err(&name))?;
                at += n;
            }
            self.disk.sync_data(&name).map_err(io_err(&name))?;
        }
        // The new name must be durable before any record in it is acknowledged.
        self.disk.sync_dir().map_err(io_err("the data directory"))?;
        self.segments.insert(seq, Segment { name, write_offset: 0, max_index: None });
        Ok(())
    }

    fn active_seq(&self) -> u64 {
        *self.segments.keys().next_back().expect("the WAL always has a segment")
    }

    /// Rolls to a new segment if `record_bytes` more would overfill the active one.
    fn make_room(&mut self, record_bytes: u64) -> Result<(), StorageError> {
        let seq = self.active_seq();
        let seg = &self.segments[&seq];
        if seg.write_offset == 0 || seg.write_offset + record_bytes <= self.opts.segment_bytes {
            return Ok(());
        }
        // Every segment but the last is fully synced: then a bad record in one of them
        // can only be corruption, never a torn write.
        if self.dirty.remove(&seq) {
            self.disk.sync_data(&seg.name).map_err(io_err(&seg.name))?;
        }
        self.create_segment(seq + 1)
    }

    /// Writes the records of `batch` (durable after the next `sync`).
    pub fn append(&mut self, batch: &EncodedBatch) -> Result<(), StorageError> {
        let mut last = self.positions.last_key_value().map(|(_, p)| p.log_id);
        for rec in &batch.records {
            let expected = last.as_ref().or(self.meta.last_purged.as_ref()).map(|l| l.index + 1);
            let out_of_order = expected.is_some_and(|e| e != rec.log_id.index)
                || last.as_ref().is_some_and(|l| rec.log_id.leader_id < l.leader_id);
            if out_of_order {
                return Err(StorageError::OutOfOrder { log_id: rec.log_id.to_string(), expected });
            }
            last = Some(rec.log_id);
        }
        let mut i = 0;
        while i < batch.records.len() {
            self.make_room(batch.records[i].range.len() as u64)?;
            let seq = self.active_seq();
            let seg = self.segments.get_mut(&seq).expect("active segment");
            let start = seg.write_offset;
            // As many records as fit in this segment, in one write.
            let mut j = i + 1;
            while j < batch.records.len()
                && batch.records[j].range.end - batch.records[i].range.start + start as usize
                    <= self.opts.segment_bytes as usize
            {
                j += 1;
            }
            let bytes = &batch.bytes[batch.records[i].range.start..batch.records[j - 1].range.end];
            self.disk.write_at(&seg.name, start, bytes).map_err(io_err(&seg.name))?;
            seg.write_offset += bytes.len() as u64;
            for rec in &batch.records[i..j] {
                let offset = start + (rec.range.start - batch.records[i].range.start) as u64;
                seg.max_index = seg.max_index.max(Some(rec.log_id.index));
                self.positions.insert(rec.log_id.index, Position { seq, offset, log_id: rec.log_id });
            }
            self.dirty.insert(seq);
            i = j;
        }
        Ok(())
    }

    /// Records the committed log id in the log stream (durable with the next sync).
    pub fn save_committed(&mut self, committed: &LogId) -> Result<(), StorageError> {
        if self.committed.as_ref() >= Some(committed) {
            return Ok(());
        }
        self.committed = Some(*committed);
        self.write_committed_record()
    }

    fn write_committed_record(&mut self) -> Result<(), StorageError> {
        let Some(committed) = self.committed else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        encode_record(&mut buf, &WalRecordRef::Committed(&committed))?;
        let result = self.write_raw(&buf);
        self.scratch = buf;
        result
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.make_room(bytes.len() as u64)?;
        let seq = self.active_seq();
        let seg = self.segments.get_mut(&seq).expect("active segment");
        self.disk.write_at(&seg.name, seg.write_offset, bytes).map_err(io_err(&seg.name))?;
        seg.write_offset += bytes.len() as u64;
        self.dirty.insert(seq);
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        while let Some(seq) = self.dirty.first().copied() {
            let name = &self.segments[&seq].name;
            self.disk.sync_data(name).map_err(io_err(name))?;
            self.dirty.remove(&seq);
        }
        Ok(())
    }

    /// Whether writes are waiting for `sync`.
    pub fn needs_sync(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Removes every entry after `last_kept` (all of them for `None`), durably (with every
    /// write before it).
    pub fn truncate_after(&mut self, last_kept: Option<u64>) -> Result<(), StorageError> {
        // Like every durable operation here, first makes the writes before it durable, so
        // a crash never keeps a later operation but loses an earlier one.
        self.sync()?;
        let first_cut = last_kept.map_or(0, |i| i + 1);
        let Some((_, pos)) = self.positions.range(first_cut..).next() else {
            return Ok(());
        };
        let pos = pos.clone();
        // Later segments go first: a crash between the two steps then leaves a shorter
        // but gap-free log, never a cut segment followed by old entries.
        let later: Vec<u64> = self.segments.range(pos.seq + 1..).map(|(s, _)| *s).collect();
        for seq in &later {
            let seg = self.segments.remove(seq).expect("listed above");
            self.dirty.remove(seq);
            self.disk.remove(&seg.name).map_err(io_err(&seg.name))?;
        }
        if !later.is_empty() {
            self.disk.sync_dir().map_err(io_err("the data directory"))?;
        }
        let seg = &self.segments[&pos.seq];
        let name = seg.name.clone();
        let old_end = seg.write_offset;
        self.cut(&name, pos.offset, old_end)?;
        self.dirty.remove(&pos.seq);
        self.positions.split_off(&pos.log_id.index);
        let max_index = self.positions.last_key_value().filter(|(_, p)| p.seq == pos.seq).map(|(i, _)| *i);
        let seg = self.segments.get_mut(&pos.seq).expect("still there");
        seg.write_offset = pos.offset;
        seg.max_index = max_index;
        // The cut may have removed the latest Committed record.
        self.write_committed_record()
    }

    /// Removes every entry up to and including `upto`, durably (the marker goes to the
    /// meta file first; whole segments below it are then deleted).
    pub fn purge(&mut self, upto: &LogId) -> Result<(), StorageError> {
        if self.meta.last_purged.as_ref() >= Some(upto) {
            return Ok(());
        }
        self.sync()?;
        let mut meta = self.meta.clone();
        meta.last_purged = Some(*upto);
        meta.committed = self.committed;
        self.write_meta(meta)?;
        self.positions = self.positions.split_off(&(upto.index + 1));
        self.drop_purged_segments()
    }

    /// Stores the vote, durably (with every write before it).
    pub fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.sync()?;
        let mut meta = self.meta.clone();
        meta.vote = Some(*vote);
        meta.committed = self.committed;
        self.write_meta(meta)
    }

    fn write_meta(&mut self, meta: WalMeta) -> Result<(), StorageError> {
        let body = postcard::to_allocvec(&meta)
            .map_err(|e| StorageError::Encode { what: "the WAL meta file".into(), reason: e.to_string() })?;
        let mut file = Vec::with_capacity(META_HEADER_BYTES + body.len());
        file.extend_from_slice(&META_MAGIC);
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        file.extend_from_slice(&body);
        let disk = &self.disk;
        disk.create(META_TMP_FILE).map_err(io_err(META_TMP_FILE))?;
        disk.write_at(META_TMP_FILE, 0, &file).map_err(io_err(META_TMP_FILE))?;
        disk.sync_data(META_TMP_FILE).map_err(io_err(META_TMP_FILE))?;
        disk.rename(META_TMP_FILE, META_FILE).map_err(io_err(META_FILE))?;
        disk.sync_dir().map_err(io_err("the data directory"))?;
        self.meta = meta;
        Ok(())
    }

    /// The last entry's id, or the purge marker when no entry is left.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.positions.last_key_value().map(|(_, p)| p.log_id).or(self.meta.last_purged)
    }

    pub fn last_purged(&self) -> Option<&LogId> {
        self.meta.last_purged.as_ref()
    }

    pub fn vote(&self) -> Option<&Vote> {
        self.meta.vote.as_ref()
    }

    pub fn committed(&self) -> Option<&LogId> {
        self.committed.as_ref()
    }

    /// Segment file names, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.values().map(|s| s.name.clone()).collect()
    }
}

fn read_meta(disk: &dyn Disk) -> Result<WalMeta, StorageError> {
    let bytes = disk.read(META_FILE).map_err(io_err(META_FILE))?;
    let corrupt = |offset: usize, reason: &str| StorageError::Corrupt {
        file: META_FILE.to_string(),
        offset: offset as u64,
        reason: reason.to_string(),
    };
    if bytes.starts_with(&OLD_META_MAGIC) {
        return Err(corrupt(
            0,
            "log format 1, written by an older Roster; this build reads format 2: move the data directory away and let the node catch up from its peers",
        ));
    }
    if bytes.len() < META_HEADER_BYTES || bytes[..META_MAGIC.len()] != META_MAGIC {
        return Err(corrupt(0, "not a WAL meta file (bad magic or too short)"));
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let body =
        bytes.get(META_HEADER_BYTES..META_HEADER_BYTES + len).ok_or_else(|| corrupt(8, "length past the end"))?;
    if crc32fast::hash(body) != crc {
        return Err(corrupt(META_HEADER_BYTES, "checksum mismatch"));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(META_HEADER_BYTES, &format!("does not decode: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::raft::entry::Batch;
    use crate::storage::mem_disk::{Keep, MemDisk, Unsynced};
    use openraft::entry::RaftEntry;
    use proptest::prelude::*;
    use roster_kernel::{Command, Proposal, ProposalBody, Request, SessionId};

    pub(crate) fn lid(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<crate::raft::TypeConfig>(term, 1, index)
    }

    /// A normal entry of some 70 bytes (a blank one every 5th, for variety).
    pub(crate) fn ent(term: u64, index: u64) -> Entry {
        if index % 5 == 4 {
            return Entry::new_blank(lid(term, index));
        }
        let command = Command::KvPut { key: format!("key-{index}"), value: format!("{index:040}") };
        let request = Request { session: SessionId(1), seq: index + 1, command };
        Entry::new_normal(
            lid(term, index),
            Batch::one(Proposal { at_unix_ms: 1_000 + index, body: ProposalBody::Client(request) }),
        )
    }

    fn opts(preallocate: bool) -> WalOptions {
        WalOptions { segment_bytes: 4096, preallocate }
    }

    fn open(disk: &MemDisk, preallocate: bool) -> Result<(Wal, Recovered), StorageError> {
        Wal::open(Arc::new(disk.clone()), opts(preallocate))
    }

    fn append(wal: &mut Wal, entries: &[Entry]) {
        wal.append(&encode_entries(entries).unwrap()).unwrap();
    }

    fn indexes(r: &Recovered) -> Vec<u64> {
        r.entries.iter().map(|e| e.log_id.index).collect()
    }

    /// Offset and length of the record of entry `index` (via a fresh open).
    fn record_of(disk: &MemDisk, index: u64) -> (String, u64) {
        let (wal, _) = open(disk, false).unwrap();
        let p = &wal.positions[&index];
        (wal.segments[&p.seq].name.clone(), p.offset)
    }

    #[test]
    fn round_trip_and_reopen() {
        for preallocate in [false, true] {
            let disk = MemDisk::new();
            let (mut wal, rec) = open(&disk, preallocate).unwrap();
            assert!(rec.entries.is_empty() && rec.vote.is_none());
            let entries: Vec<Entry> = (0..100).map(|i| ent(1 + i / 40, i)).collect();
            for chunk in entries.chunks(7) {
                append(&mut wal, chunk);
            }
            wal.save_vote(&Vote::new_committed(3, 1)).unwrap();
            wal.save_committed(&lid(2, 60)).unwrap();
            wal.sync().unwrap();
            assert!(wal.segment_names().len() > 1, "4 KiB segments must roll");
            assert_eq!(wal.last_log_id(), Some(lid(3, 99)));
            drop(wal);
            let (wal, rec) = open(&disk, preallocate).unwrap();
            assert_eq!(rec.entries, entries);
            assert_eq!(rec.vote, Some(Vote::new_committed(3, 1)));
            assert_eq!(rec.committed, Some(lid(2, 60)));
            assert_eq!(wal.last_log_id(), Some(lid(3, 99)));
        }
    }

    #[test]
    fn out_of_order_appends_are_refused() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        append(&mut wal, &[ent(2, 0), ent(2, 1)]);
        let gap = wal.append(&encode_entries(&[ent(2, 3)]).unwrap());
        assert!(matches!(gap, Err(StorageError::OutOfOrder { expected: Some(2), .. })), "{gap:?}");
        let older = wal.append(&encode_entries(&[ent(1, 2)]).unwrap());
        assert!(matches!(older, Err(StorageError::OutOfOrder { .. })), "{older:?}");
    }

    #[test]
    fn torn_tail_cut_mid_record() {
        for preallocate in [false, true] {
            let disk = MemDisk::new();
            let (mut wal, _) = open(&disk, preallocate).unwrap();
            append(&mut wal, &(0..10).map(|i| ent(1, i)).collect::<Vec<_>>());
            wal.sync().unwrap();
            drop(wal);
            let (file, offset) = record_of(&disk, 9);
            // The last record half written: cut the file (or zero it) in its middle.
            if preallocate {
                disk.write_at(&file, offset + 9, &[0u8; 64]).unwrap();
            } else {
                disk.set_len(&file, offset + 9).unwrap();
            }
            let (mut wal, rec) = open(&disk, preallocate).unwrap();
            assert_eq!(indexes(&rec), (0..9).collect::<Vec<_>>());
            // Appending after the cut works and survives another reopen.
            append(&mut wal, &[ent(2, 9), ent(2, 10)]);
            wal.sync().unwrap();
            drop(wal);
            let (_, rec) = open(&disk, preallocate).unwrap();
            assert_eq!(indexes(&rec), (0..11).collect::<Vec<_>>());
            assert_eq!(rec.entries[9], ent(2, 9));
        }
    }

    #[test]
    fn flipped_byte_in_last_record_is_cut() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        append(&mut wal, &(0..5).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.sync().unwrap();
        drop(wal);
        let (file, offset) = record_of(&disk, 4);
        disk.corrupt_byte(&file, offset + 9).unwrap();
        let (_, rec) = open(&disk, false).unwrap();
        assert_eq!(indexes(&rec), vec![0, 1, 2, 3]);
    }

    #[test]
    fn corruption_before_the_tail_is_refused() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        append(&mut wal, &(0..5).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.sync().unwrap();
        drop(wal);
        let (file, offset) = record_of(&disk, 2);
        disk.corrupt_byte(&file, offset + 10).unwrap();
        let err = open(&disk, false).unwrap_err();
        match &err {
            StorageError::Corrupt { file: f, offset: o, .. } => {
                assert_eq!((f.as_str(), *o), (file.as_str(), offset));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&file) && msg.contains(&format!("offset {offset}")), "{msg}");
    }

    #[test]
    fn corruption_in_an_earlier_segment_is_refused() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        let entries: Vec<Entry> = (0..200).map(|i| ent(1, i)).collect();
        append(&mut wal, &entries);
        wal.sync().unwrap();
        let first = wal.segment_names()[0].clone();
        drop(wal);
        // The LAST record of the first segment: a tail there is still not a torn tail.
        let (wal, _) = open(&disk, false).unwrap();
        let last_in_first = wal.positions.values().filter(|p| p.seq == 1).map(|p| p.offset).max().unwrap();
        drop(wal);
        disk.corrupt_byte(&first, last_in_first + 9).unwrap();
        let err = open(&disk, false).unwrap_err();
        assert!(
            matches!(&err, StorageError::Corrupt { file, offset, .. } if *file == first && *offset == last_in_first),
            "{err:?}"
        );
    }

    #[test]
    fn index_gap_is_refused() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        append(&mut wal, &(0..3).map(|i| ent(1, i)).collect::<Vec<_>>());
        // Smuggle in a record the WAL would refuse to append: index 5 after 2.
        let batch = encode_entries(&[ent(1, 5)]).unwrap();
        let seg = wal.segments.values().next_back().unwrap();
        disk.write_at(&seg.name, seg.write_offset, &batch.bytes).unwrap();
        disk.sync_data(&seg.name).unwrap();
        drop(wal);
        let err = open(&disk, false).unwrap_err();
        assert!(matches!(&err, StorageError::Corrupt { reason, .. } if reason.contains("index 5")), "{err:?}");
    }

    #[test]
    fn truncate_and_purge_survive_reopen() {
        for preallocate in [false, true] {
            let disk = MemDisk::new();
            let (mut wal, _) = open(&disk, preallocate).unwrap();
            append(&mut wal, &(0..150).map(|i| ent(1, i)).collect::<Vec<_>>());
            wal.save_committed(&lid(1, 20)).unwrap();
            let segments_before = wal.segment_names().len();
            wal.truncate_after(Some(29)).unwrap();
            assert!(wal.segment_names().len() < segments_before, "later segments deleted");
            append(&mut wal, &(30..40).map(|i| ent(2, i)).collect::<Vec<_>>());
            wal.purge(&lid(1, 9)).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (mut wal, rec) = open(&disk, preallocate).unwrap();
            assert_eq!(indexes(&rec), (10..40).collect::<Vec<_>>());
            assert_eq!(rec.entries[19], ent(1, 29));
            assert_eq!(rec.entries[20], ent(2, 30));
            assert_eq!(rec.last_purged, Some(lid(1, 9)));
            assert_eq!(rec.committed, Some(lid(1, 20)), "re-written after the cut");
            // Purge everything, past the end: the next entry follows the marker.
            wal.purge(&lid(2, 50)).unwrap();
            assert_eq!(wal.last_log_id(), Some(lid(2, 50)));
            assert!(wal.append(&encode_entries(&[ent(2, 40)]).unwrap()).is_err());
            append(&mut wal, &[ent(3, 51)]);
            wal.sync().unwrap();
            drop(wal);
            let (wal, rec) = open(&disk, preallocate).unwrap();
            assert_eq!(indexes(&rec), vec![51]);
            assert_eq!(wal.segment_names().len(), 1, "purged segments are deleted");
            // Truncating everything leaves an empty log that accepts the next index only.
            let (mut wal, _) = open(&disk, preallocate).unwrap();
            wal.truncate_after(None).unwrap();
            assert_eq!(wal.last_log_id(), Some(lid(2, 50)));
            drop(wal);
            let (_, rec) = open(&disk, preallocate).unwrap();
            assert!(rec.entries.is_empty());
        }
    }

    #[test]
    fn vote_and_committed_persist() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        append(&mut wal, &(0..5).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.save_vote(&Vote::new(1, 2)).unwrap();
        wal.save_committed(&lid(1, 3)).unwrap();
        wal.save_committed(&lid(1, 2)).unwrap(); // never goes back
        wal.sync().unwrap();
        drop(wal);
        let (mut wal, rec) = open(&disk, false).unwrap();
        assert_eq!((rec.vote, rec.committed), (Some(Vote::new(1, 2)), Some(lid(1, 3))));
        wal.save_vote(&Vote::new_committed(2, 2)).unwrap();
        drop(wal);
        // The vote is durable without any `sync`: even a crash keeps it.
        disk.crash(|_| Keep::NONE);
        let (_, rec) = open(&disk, false).unwrap();
        assert_eq!(rec.vote, Some(Vote::new_committed(2, 2)));
        // A torn meta write (only the temp file) leaves the old meta standing.
        disk.create(META_TMP_FILE).unwrap();
        disk.write_at(META_TMP_FILE, 0, b"RSTW").unwrap();
        let (_, rec) = open(&disk, false).unwrap();
        assert_eq!(rec.vote, Some(Vote::new_committed(2, 2)));
        assert!(!disk.exists(META_TMP_FILE).unwrap());
        // A corrupt meta file is refused.
        disk.corrupt_byte(META_FILE, 20).unwrap();
        assert!(matches!(open(&disk, false), Err(StorageError::Corrupt { file, .. }) if file == META_FILE));
        // A log of the older format is named as such, not misread.
        disk.write_at(META_FILE, 0, &OLD_META_MAGIC).unwrap();
        let err = open(&disk, false).unwrap_err();
        assert!(err.to_string().contains("log format 1"), "{err}");
    }

    #[test]
    fn crash_losing_unsynced_data_keeps_the_synced_prefix() {
        for preallocate in [false, true] {
            let disk = MemDisk::new();
            let (mut wal, _) = open(&disk, preallocate).unwrap();
            append(&mut wal, &(0..50).map(|i| ent(1, i)).collect::<Vec<_>>());
            wal.sync().unwrap();
            append(&mut wal, &(50..60).map(|i| ent(1, i)).collect::<Vec<_>>());
            drop(wal);
            disk.crash(|_| Keep::NONE);
            let (mut wal, rec) = open(&disk, preallocate).unwrap();
            assert_eq!(indexes(&rec), (0..50).collect::<Vec<_>>());
            // Now tear the unsynced write in the middle of a record.
            append(&mut wal, &(50..60).map(|i| ent(2, i)).collect::<Vec<_>>());
            drop(wal);
            disk.crash(|u| match u {
                Unsynced::File { .. } => Keep { ops: 0, torn_bytes: 300 },
                Unsynced::Dir { .. } => Keep::ALL,
            });
            let (_, rec) = open(&disk, preallocate).unwrap();
            let got = indexes(&rec);
            assert!(got.len() > 50 && got.len() < 60, "a torn batch keeps some whole records: {got:?}");
            assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
        }
    }

    /// A tiny deterministic RNG for crash fates (splitmix64).
    struct Mix(u64);
    impl Mix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(u64),
        NewTerm,
        TruncateBack(u64),
        Purge(u64),
        PurgePastEnd(u64),
        Sync,
        Reopen,
        Crash(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u64..6).prop_map(Op::Append),
            1 => Just(Op::NewTerm),
            1 => (0u64..6).prop_map(Op::TruncateBack),
            1 => (0u64..6).prop_map(Op::Purge),
            1 => (1u64..3).prop_map(Op::PurgePastEnd),
            2 => Just(Op::Sync),
            1 => Just(Op::Reopen),
            1 => any::<u64>().prop_map(Op::Crash),
        ]
    }

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Model {
        entries: BTreeMap<u64, Entry>,
        purged: Option<LogId>,
    }

    impl Model {
        fn last(&self) -> Option<LogId> {
            self.entries.values().next_back().map(|e| e.log_id).or(self.purged)
        }
    }

    fn check_recovered(rec: &Recovered, model: &Model) {
        assert_eq!(rec.last_purged, model.purged);
        let got: BTreeMap<u64, Entry> = rec.entries.iter().map(|e| (e.log_id.index, e.clone())).collect();
        assert_eq!(got, model.entries);
    }

    fn run_ops(ops: Vec<Op>, preallocate: bool) {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, preallocate).unwrap();
        let mut model = Model::default();
        let mut durable = Model::default();
        let mut term = 1;
        for op in ops {
            match op {
                Op::Append(n) => {
                    let next = model.last().map_or(0, |l| l.index + 1);
                    let term_now = term.max(model.last().map_or(0, |l| l.leader_id.term));
                    let batch: Vec<Entry> = (next..next + n).map(|i| ent(term_now, i)).collect();
                    append(&mut wal, &batch);
                    model.entries.extend(batch.into_iter().map(|e| (e.log_id.index, e)));
                }
                Op::NewTerm => term += 1,
                Op::TruncateBack(k) => {
                    let Some(last) = model.entries.keys().next_back().copied() else { continue };
                    let keep = last.checked_sub(k);
                    let keep = keep.filter(|k| model.entries.contains_key(k));
                    wal.truncate_after(keep).unwrap();
                    match keep {
                        Some(k) => drop(model.entries.split_off(&(k + 1))),
                        None => model.entries.clear(),
                    }
                    durable = model.clone();
                }
                Op::Purge(k) => {
                    let Some((&first, _)) = model.entries.first_key_value() else { continue };
                    let Some(e) = model.entries.get(&(first + k)) else { continue };
                    let upto = e.log_id;
                    wal.purge(&upto).unwrap();
                    model.entries = model.entries.split_off(&(upto.index + 1));
                    model.purged = Some(upto);
                    durable = model.clone();
                }
                Op::PurgePastEnd(k) => {
                    let last = model.last().map_or(0, |l| l.index);
                    let upto = lid(term.max(model.last().map_or(0, |l| l.leader_id.term)), last + k);
                    wal.purge(&upto).unwrap();
                    model.entries.clear();
                    model.purged = Some(upto);
                    durable = model.clone();
                }
                Op::Sync => {
                    wal.sync().unwrap();
                    durable = model.clone();
                }
                Op::Reopen => {
                    wal.sync().unwrap();
                    drop(wal);
                    let (w, rec) = open(&disk, preallocate).unwrap();
                    check_recovered(&rec, &model);
                    wal = w;
                    durable = model.clone();
                }
                Op::Crash(seed) => {
                    drop(wal);
                    let mut rng = Mix(seed);
                    disk.crash(|u| match u {
                        Unsynced::Dir { ops } => Keep { ops: (rng.next() % (ops as u64 + 1)) as usize, torn_bytes: 0 },
                        Unsynced::File { ops, .. } => Keep {
                            ops: (rng.next() % (ops as u64 + 1)) as usize,
                            torn_bytes: (rng.next() % 80) as usize,
                        },
                    });
                    let (w, rec) = open(&disk, preallocate).unwrap();
                    // Everything synced survives; anything more is a prefix of what was written.
                    assert_eq!(rec.last_purged, model.purged);
                    let got: BTreeMap<u64, Entry> = rec.entries.iter().map(|e| (e.log_id.index, e.clone())).collect();
                    for (i, e) in &durable.entries {
                        assert_eq!(got.get(i), Some(e), "synced entry {i} lost");
                    }
                    for (i, e) in &got {
                        assert_eq!(model.entries.get(i), Some(e), "entry {i} was never written");
                    }
                    model.entries = got;
                    durable = model.clone();
                    wal = w;
                }
            }
        }
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = open(&disk, preallocate).unwrap();
        check_recovered(&rec, &model);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn wal_matches_a_btreemap_model(ops in proptest::collection::vec(op(), 1..80), preallocate: bool) {
            run_ops(ops, preallocate);
        }
    }
}
