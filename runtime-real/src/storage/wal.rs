//! The Raft log on disk: a segmented, append-only write-ahead log, plus a small meta file
//! for the vote, the committed log id, the purge marker and the durable point.
//!
//! Log format 3. Segments are files `wal-<seq>.log`; appends go to the last one, which
//! rolls over at `segment_bytes`. Each segment starts with a header, then records, each
//! starting at a multiple of 8 bytes (little endian):
//!
//! ```text
//! segment header (32 bytes): "RSTWSEG3" | seq: u64 | salt: u64 | crc32 of the 24 bytes before: u32 | 0: u32
//! record header (32 bytes):  "RWR3" | len: u32 | index: u64 | durable: u64 | body_crc: u32 | header_crc: u32
//! then body: postcard(WalRecord), len bytes | zero pad to 8
//! ```
//!
//! - `index` is the entry's index (for a `Committed` record, the committed index); it must
//!   match the body.
//! - `durable` is 1 + the highest entry index whose fsync had completed when the record
//!   was written (0: none): a record that survives proves every entry up to there was
//!   durable, and so acknowledged or acknowledgeable.
//! - `header_crc` covers the segment's random `salt` and the header's first 28 bytes.
//!   Client bytes inside a record body can therefore never pass for a record, even
//!   crafted to: the salt is never sent anywhere.
//!
//! A record is an `Entry` or a `Committed` marker. Segments may be pre-filled with zeros
//! (`preallocate`), so that an fsync of an append only flushes data, not the file's size; a
//! zeroed header then marks the end of the records.
//!
//! # Recovery
//!
//! Opening scans every segment. Every segment but the last was fully synced before the
//! next one was created, so damage in one is corruption. In the last segment, the first
//! bad record ends the log; what follows is judged against the *durable point*: the
//! highest `durable` of any record found (also whole records after the damage, which the
//! salt makes trustworthy) and the meta file's `durable_through`.
//! - The damaged entry lies beyond the durable point: it was never acknowledged. A crash
//!   during a group commit leaves exactly that (a page cache writes pages back in any
//!   order, so a later page may be on disk without an earlier one). It is cut, and the log
//!   says what was cut and why.
//! - The damaged entry lies at or below the durable point: acknowledged data is damaged.
//!   Opening stops with `StorageError::Corrupt` naming the file and offset.
//!
//! A last segment with no header and nothing but zeros is a crash inside its creation: it
//! is removed. Opening then fsyncs the directory, the meta file and the last segment, so
//! that what it read (perhaps only from the page cache, after a process crash) is durable
//! before any new record claims so.
//!
//! `truncate_after` cuts the segment holding the first removed entry at that entry's
//! offset (and deletes later segments); `purge` records the purge marker in the meta file
//! and deletes whole segments below it. Both are durable when they return. While a
//! truncation cuts, a small file `wal.cut` (segment seq and offset, crc) names the cut,
//! and open finishes a cut it finds: a power loss can keep any subset of the zeroed pages,
//! and old records left after a zeroed one would pass for acknowledged data damaged.
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
const RECORD_MAGIC: [u8; 4] = *b"RWR3";
const HEADER_BYTES: usize = 32;
/// The part of a record header its `header_crc` covers.
const HEADER_SEALED_BYTES: usize = 28;
const ALIGN_BYTES: usize = 8;
const SEGMENT_MAGIC: [u8; 8] = *b"RSTWSEG3";
const SEGMENT_HEADER_BYTES: usize = 32;
const META_FILE: &str = "wal.meta";
const META_TMP_FILE: &str = "wal.meta.tmp";
/// The last byte is the log format: 3 since records carry a salted header.
const META_MAGIC: [u8; 8] = *b"RSTWMET3";
/// Formats 1 (one proposal per entry) and 2 (unsalted 8-byte record headers), written by
/// older Roster builds.
const OLD_META_MAGICS: [([u8; 8], u32); 2] = [(*b"RSTWMET1", 1), (*b"RSTWMET2", 2)];
const META_HEADER_BYTES: usize = META_MAGIC.len() + 8;
/// Names the cut a truncation is making while it makes it (see `truncate_after`).
const CUT_FILE: &str = "wal.cut";
const CUT_TMP_FILE: &str = "wal.cut.tmp";
const CUT_MAGIC: [u8; 8] = *b"RSTWCUT3";
/// magic | seq: u64 | offset: u64 | crc32 of the 24 bytes before: u32
const CUT_FILE_BYTES: usize = 28;
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
    /// Every entry up to this index was durable when the file was written (never above
    /// the log's last entry: a truncation below it lowers it first). Not the committed
    /// index: that can run ahead of this node's own log (a follower learns it with the
    /// entries, an installed snapshot sets it), so it proves nothing about these files.
    pub durable_through: Option<u64>,
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
        encode_record(&mut batch.bytes, &WalRecordRef::Entry(entry), entry.log_id.index)?;
        batch.records.push(EncodedRecord { range: start..batch.bytes.len(), log_id: entry.log_id });
    }
    Ok(batch)
}

/// Appends `record` with the header fields known now (magic, length, index, body crc);
/// `seal_header` completes it when it is written, into a known segment.
fn encode_record(buf: &mut Vec<u8>, record: &WalRecordRef<'_>, index: u64) -> Result<(), StorageError> {
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
    let body_crc = crc32fast::hash(&buf[start + HEADER_BYTES..]);
    let header = &mut buf[start..start + HEADER_BYTES];
    header[0..4].copy_from_slice(&RECORD_MAGIC);
    header[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    header[8..16].copy_from_slice(&index.to_le_bytes());
    header[24..28].copy_from_slice(&body_crc.to_le_bytes());
    buf.resize(start + align(HEADER_BYTES + body_len), 0);
    Ok(())
}

/// Completes a record header for the segment salted `salt`, written when every entry up
/// to `durable_through` is durable.
fn seal_header(header: &mut [u8], salt: u64, durable_through: Option<u64>) {
    let durable = durable_through.map_or(0, |i| i.saturating_add(1));
    header[16..24].copy_from_slice(&durable.to_le_bytes());
    let crc = header_crc(salt, &header[..HEADER_SEALED_BYTES]);
    header[HEADER_SEALED_BYTES..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

fn header_crc(salt: u64, sealed: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(sealed);
    h.finalize()
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// A record found whole, with both checksums matching.
#[derive(Clone, Debug)]
struct FoundRecord {
    offset: usize,
    body: Range<usize>,
    index: u64,
    /// The writer's durable point when it wrote the record.
    durable_through: Option<u64>,
    next: usize,
}

/// The record starting at `off` in a segment salted `salt`, if one is there whole and
/// both its checksums match.
fn record_at(bytes: &[u8], off: usize, salt: u64) -> Option<FoundRecord> {
    let header = bytes.get(off..off.checked_add(HEADER_BYTES)?)?;
    if header[0..4] != RECORD_MAGIC
        || header_crc(salt, &header[..HEADER_SEALED_BYTES]) != le_u32(&header[HEADER_SEALED_BYTES..])
    {
        return None;
    }
    let len = le_u32(&header[4..8]) as usize;
    if len == 0 || len > MAX_RECORD_BYTES {
        return None;
    }
    let next = off.checked_add(align(HEADER_BYTES + len))?;
    if next > bytes.len() {
        return None;
    }
    let body = off + HEADER_BYTES..off + HEADER_BYTES + len;
    if crc32fast::hash(&bytes[body.clone()]) != le_u32(&header[24..28]) {
        return None;
    }
    let durable_through = le_u64(&header[16..24]).checked_sub(1);
    Some(FoundRecord { offset: off, body, index: le_u64(&header[8..16]), durable_through, next })
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
    /// The records from the segment header on, up to the first that is not whole.
    records: Vec<FoundRecord>,
    /// Where those records end.
    end: usize,
    /// Where the last non-zero byte after `end` ends, if any: the extent of the damage.
    garbage_end: Option<usize>,
    /// Whole records after the damage. Never part of the log; their `durable_through`
    /// still says how far the log was durable when they were written.
    after_garbage: Vec<FoundRecord>,
}

fn scan(bytes: &[u8], salt: u64) -> Scan {
    let mut records = Vec::new();
    let mut off = SEGMENT_HEADER_BYTES;
    while let Some(rec) = record_at(bytes, off, salt) {
        off = rec.next;
        records.push(rec);
    }
    let end = off.min(bytes.len());
    let garbage_end = last_nonzero(&bytes[end..]).map(|p| end + p + 1);
    let mut after_garbage = Vec::new();
    if garbage_end.is_some() {
        let mut at = end + ALIGN_BYTES;
        while at + HEADER_BYTES <= bytes.len() {
            match record_at(bytes, at, salt) {
                Some(rec) => {
                    at = rec.next;
                    after_garbage.push(rec);
                }
                None => at += ALIGN_BYTES,
            }
        }
    }
    Scan { records, end, garbage_end, after_garbage }
}

/// The position of the last non-zero byte of `bytes`. Every open looks past a segment's
/// last record for damage, and a segment is mostly preallocated zeros (8 MiB), so this
/// ORs 64-byte blocks (a loop the compiler vectorises) and looks at single bytes only in
/// the block that holds the answer: a byte-at-a-time `rposition` over the zeros was 37% of
/// the instructions of a simulated run with full-cluster restarts (scripts/sim-cost).
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK_BYTES: usize = 64;
    let whole = bytes.len() - bytes.len() % BLOCK_BYTES;
    if let Some(p) = bytes[whole..].iter().rposition(|b| *b != 0) {
        return Some(whole + p);
    }
    let (i, block) = bytes[..whole]
        .chunks_exact(BLOCK_BYTES)
        .enumerate()
        .rev()
        .find(|(_, b)| b.iter().fold(0, |acc, x| acc | x) != 0)?;
    let p = block.iter().rposition(|b| *b != 0).expect("the block has a non-zero byte");
    Some(i * BLOCK_BYTES + p)
}

/// What a segment's first bytes say.
enum SegmentHeader {
    Valid {
        salt: u64,
    },
    /// Zeros (or nothing): the segment's creation never reached its header.
    Absent,
    Invalid(String),
}

fn encode_cut_mark(seq: u64, offset: u64) -> [u8; CUT_FILE_BYTES] {
    let mut m = [0u8; CUT_FILE_BYTES];
    m[0..8].copy_from_slice(&CUT_MAGIC);
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m[16..24].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&m[..24]);
    m[24..28].copy_from_slice(&crc.to_le_bytes());
    m
}

/// The segment and offset a cut mark names.
fn decode_cut_mark(bytes: &[u8]) -> Result<(u64, u64), String> {
    if bytes.len() != CUT_FILE_BYTES || bytes[0..8] != CUT_MAGIC {
        return Err("not a WAL cut mark".to_string());
    }
    if crc32fast::hash(&bytes[..24]) != le_u32(&bytes[24..28]) {
        return Err("cut mark checksum mismatch".to_string());
    }
    Ok((le_u64(&bytes[8..16]), le_u64(&bytes[16..24])))
}

fn to_index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn encode_segment_header(seq: u64, salt: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn parse_segment_header(bytes: &[u8], seq: u64) -> SegmentHeader {
    let head = &bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)];
    if head.iter().all(|b| *b == 0) {
        return SegmentHeader::Absent;
    }
    if head.len() < SEGMENT_HEADER_BYTES || head[0..8] != SEGMENT_MAGIC {
        return SegmentHeader::Invalid(
            "no log format 3 segment header (written by an older Roster, whose log this build cannot read, or \
             damaged)"
                .to_string(),
        );
    }
    if crc32fast::hash(&head[..24]) != le_u32(&head[24..28]) {
        return SegmentHeader::Invalid("segment header checksum mismatch".to_string());
    }
    let found = le_u64(&head[8..16]);
    if found != seq {
        return SegmentHeader::Invalid(format!("segment header names segment {found}, not {seq}"));
    }
    SegmentHeader::Valid { salt: le_u64(&head[16..24]) }
}

/// A salt for a new segment: from the OS, or from the simulator's seeded RNG.
fn new_salt() -> u64 {
    crate::rt::rng_seed()
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
    /// Mixed into every record header's checksum (see the module docs).
    salt: u64,
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
    /// Every entry up to this index is durable (its fsync completed); stamped into each
    /// record written.
    durable_through: Option<u64>,
    /// During `open`: the highest durable point any record or the meta file claims.
    durable_claimed: Option<u64>,
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
            durable_through: None,
            durable_claimed: meta.durable_through,
            meta,
            dirty: BTreeSet::new(),
            scratch: Vec::new(),
        };
        let seqs = wal.finish_interrupted_cut(&names, seqs)?;
        let mut entries = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            wal.load_segment(*seq, i + 1 == seqs.len(), &mut entries)?;
        }
        wal.drop_purged_segments()?;
        if wal.segments.is_empty() {
            let seq = seqs.last().map_or(1, |s| s + 1);
            wal.create_segment(seq)?;
        }
        // What was read may have come from the page cache only (a process crash, no power
        // loss): make it durable before any record says it is.
        wal.disk.sync_dir().map_err(io_err("the data directory"))?;
        if wal.disk.exists(META_FILE).map_err(io_err(META_FILE))? {
            wal.disk.sync_data(META_FILE).map_err(io_err(META_FILE))?;
        }
        let last = wal.active_seq();
        let last_name = wal.segments[&last].name.clone();
        wal.disk.sync_data(&last_name).map_err(io_err(&last_name))?;
        wal.durable_through = wal.positions.last_key_value().map(|(i, _)| *i);
        let recovered =
            Recovered { entries, vote: wal.meta.vote, committed: wal.committed, last_purged: wal.meta.last_purged };
        Ok((wal, recovered))
    }

    fn load_segment(&mut self, seq: u64, is_last: bool, entries: &mut Vec<Entry>) -> Result<(), StorageError> {
        let name = segment_name(seq);
        let bytes = self.disk.read(&name).map_err(io_err(&name))?;
        let corrupt =
            |offset: usize, reason: String| StorageError::Corrupt { file: name.clone(), offset: offset as u64, reason };
        let salt = match parse_segment_header(&bytes, seq) {
            SegmentHeader::Valid { salt } => salt,
            SegmentHeader::Absent if is_last => {
                // Created, but the crash came before its header was durable: it never held
                // a record.
                tracing::warn!(file = %name, "WAL segment never initialised (a crash during its creation); removing it");
                self.disk.remove(&name).map_err(io_err(&name))?;
                return Ok(());
            }
            SegmentHeader::Absent => {
                return Err(corrupt(0, "segment header missing in a segment that is not the last".into()));
            }
            SegmentHeader::Invalid(reason) => return Err(corrupt(0, reason)),
        };
        let scan = scan(&bytes, salt);
        if scan.garbage_end.is_some() && !is_last {
            return Err(corrupt(scan.end, "bad record in a segment that is not the last".into()));
        }
        let mut max_index = None;
        for rec in &scan.records {
            self.durable_claimed = self.durable_claimed.max(rec.durable_through);
            let record = decode_record(&bytes[rec.body.clone()])
                .map_err(|e| corrupt(rec.offset, format!("record passes its checksums but does not decode: {e}")))?;
            match record {
                WalRecord::Committed(log_id) => {
                    if self.committed < Some(log_id) {
                        self.committed = Some(log_id);
                    }
                }
                WalRecord::Entry(entry) => {
                    let index = entry.log_id.index;
                    if index != rec.index {
                        return Err(corrupt(
                            rec.offset,
                            format!("record header says entry {} but holds entry {index}", rec.index),
                        ));
                    }
                    max_index = max_index.max(Some(index));
                    if let Err(reason) = self.check_next(&entry.log_id) {
                        let purged = self.meta.last_purged.as_ref().is_some_and(|p| index <= p.index);
                        if self.positions.is_empty() && purged {
                            // Purged but not yet deleted with its segment.
                            continue;
                        }
                        return Err(corrupt(rec.offset, reason));
                    }
                    let position = Position { seq, offset: rec.offset as u64, log_id: entry.log_id };
                    self.positions.insert(index, position);
                    entries.push(*entry);
                }
            }
        }
        if let Some(garbage_end) = scan.garbage_end {
            self.judge_damage(&name, &scan, garbage_end)?;
        }
        self.segments.insert(seq, Segment { name, salt, write_offset: scan.end as u64, max_index });
        Ok(())
    }

    /// Damage at `scan.end` of the last segment: cut if it lies beyond the durable point
    /// (never acknowledged), refuse if not (see the module docs).
    fn judge_damage(&mut self, name: &str, scan: &Scan, garbage_end: usize) -> Result<(), StorageError> {
        let after_max = scan.after_garbage.iter().filter_map(|r| r.durable_through).max();
        let durable = self.durable_claimed.max(after_max);
        let next = self.last_log_id().map_or(0, |l| l.index + 1);
        if let Some(durable) = durable
            && next <= durable
        {
            return Err(StorageError::Corrupt {
                file: name.to_string(),
                offset: scan.end as u64,
                reason: format!(
                    "bad record where entry {next} belongs, but every entry through {durable} was durable (its fsync \
                     had completed), so this is damage to acknowledged data, not a write torn by a crash"
                ),
            });
        }
        let dropped = match (scan.after_garbage.first(), scan.after_garbage.last()) {
            (Some(first), Some(last)) => format!(
                "{} whole records after it (indexes {} to {}) go with it",
                scan.after_garbage.len(),
                first.index,
                last.index
            ),
            _ => "no whole record follows it".to_string(),
        };
        let durable = durable.map_or("no entry".to_string(), |d| format!("entries through {d}"));
        tracing::warn!(
            file = %name,
            offset = scan.end,
            bytes = garbage_end - scan.end,
            first_index_cut = next,
            "WAL tail torn by a crash: cutting bytes {}..{garbage_end} of {name}, from where entry {next} belongs; \
             only {durable} were durable, so nothing cut was acknowledged; {dropped}",
            scan.end
        );
        self.cut(name, scan.end as u64, garbage_end as u64)
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

    /// Finishes a truncation's cut that a crash interrupted (`truncate_after` left its
    /// mark): removes the segments after the cut one, makes the cut one read as "no
    /// records" from the cut on, then removes the mark. Returns the segments left.
    fn finish_interrupted_cut(&mut self, names: &[String], mut seqs: Vec<u64>) -> Result<Vec<u64>, StorageError> {
        if names.iter().any(|n| n == CUT_TMP_FILE) {
            // The mark never reached its rename, so the truncation had not begun.
            self.disk.remove(CUT_TMP_FILE).map_err(io_err(CUT_TMP_FILE))?;
        }
        if !names.iter().any(|n| n == CUT_FILE) {
            return Ok(seqs);
        }
        let bytes = self.disk.read(CUT_FILE).map_err(io_err(CUT_FILE))?;
        let (seq, offset) = decode_cut_mark(&bytes).map_err(|reason| StorageError::Corrupt {
            file: CUT_FILE.to_string(),
            offset: 0,
            reason,
        })?;
        let later: Vec<u64> = seqs.iter().copied().filter(|s| *s > seq).collect();
        for s in &later {
            let name = segment_name(*s);
            self.disk.remove(&name).map_err(io_err(&name))?;
        }
        seqs.retain(|s| *s <= seq);
        if !later.is_empty() {
            self.disk.sync_dir().map_err(io_err("the data directory"))?;
        }
        let name = segment_name(seq);
        let mut end = None;
        if seqs.contains(&seq) {
            let contents = self.disk.read(&name).map_err(io_err(&name))?;
            let from = to_index(offset).min(contents.len());
            end = last_nonzero(&contents[from..]).map(|p| (from + p + 1) as u64);
        }
        if let Some(end) = end {
            tracing::warn!(
                file = %name,
                "a crash interrupted a log truncation: cutting bytes {offset}..{end} of {name} as it was cutting them"
            );
            self.cut(&name, offset, end)?;
        }
        self.disk.remove(CUT_FILE).map_err(io_err(CUT_FILE))?;
        self.disk.sync_dir().map_err(io_err("the data directory"))?;
        Ok(seqs)
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
        let salt = new_salt();
        self.disk.create(&name).map_err(io_err(&name))?;
        if self.opts.preallocate {
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut at = SEGMENT_HEADER_BYTES as u64;
            while at < self.opts.segment_bytes {
                let n = (self.opts.segment_bytes - at).min(ZERO_CHUNK_BYTES as u64);
                self.disk.write_at(&name, at, &zeros[..n as usize]).map_err(io_err(&name))?;
                at += n;
            }
        }
        self.disk.write_at(&name, 0, &encode_segment_header(seq, salt)).map_err(io_err(&name))?;
        // The header must be durable before any record: records cannot be checked without
        // its salt, and a segment without one reads as never used.
        self.disk.sync_data(&name).map_err(io_err(&name))?;
        // The new name must be durable before any record in it is acknowledged.
        self.disk.sync_dir().map_err(io_err("the data directory"))?;
        self.segments.insert(seq, Segment { name, salt, write_offset: SEGMENT_HEADER_BYTES as u64, max_index: None });
        Ok(())
    }

    fn active_seq(&self) -> u64 {
        *self.segments.keys().next_back().expect("the WAL always has a segment")
    }

    /// Rolls to a new segment if `record_bytes` more would overfill the active one.
    fn make_room(&mut self, record_bytes: u64) -> Result<(), StorageError> {
        let seq = self.active_seq();
        let seg = &self.segments[&seq];
        let empty = seg.write_offset == SEGMENT_HEADER_BYTES as u64;
        if empty || seg.write_offset + record_bytes <= self.opts.segment_bytes {
            return Ok(());
        }
        // Every segment but the last is fully synced: then a bad record in one of them
        // can only be corruption, never a torn write.
        if self.dirty.remove(&seq) {
            self.disk.sync_data(&seg.name).map_err(io_err(&seg.name))?;
        }
        // Earlier segments are synced too: everything so far is durable.
        self.durable_through = self.positions.last_key_value().map(|(i, _)| *i);
        self.create_segment(seq + 1)
    }

    /// Writes the records of `batch` (durable after the next `sync`), completing their
    /// headers for the segment they land in.
    pub fn append(&mut self, batch: &mut EncodedBatch) -> Result<(), StorageError> {
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
            for rec in &batch.records[i..j] {
                let header = &mut batch.bytes[rec.range.start..rec.range.start + HEADER_BYTES];
                seal_header(header, seg.salt, self.durable_through);
                debug_assert!(
                    record_at(&batch.bytes[rec.range.clone()], 0, seg.salt)
                        .is_some_and(|r| r.index == rec.log_id.index),
                    "a sealed record must read back"
                );
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
        encode_record(&mut buf, &WalRecordRef::Committed(&committed), committed.index)?;
        let result = self.write_raw(&mut buf);
        self.scratch = buf;
        result
    }

    /// Writes one encoded record, sealing its header.
    fn write_raw(&mut self, bytes: &mut [u8]) -> Result<(), StorageError> {
        self.make_room(bytes.len() as u64)?;
        let seq = self.active_seq();
        let seg = self.segments.get_mut(&seq).expect("active segment");
        seal_header(&mut bytes[..HEADER_BYTES], seg.salt, self.durable_through);
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
        self.durable_through = self.positions.last_key_value().map(|(i, _)| *i);
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
        // The durable point must never lie above the log: a new branch at these indexes
        // is not durable yet. Lowered on disk first, so no crash leaves it above.
        if self.meta.durable_through > last_kept {
            let mut meta = self.meta.clone();
            meta.durable_through = last_kept;
            meta.committed = self.committed;
            self.write_meta(meta)?;
        }
        self.durable_through = self.durable_through.min(last_kept);
        // A power loss inside the cut below can keep any subset of its zeroed pages: old
        // records after a zeroed one would then claim, with a valid salt, that the entries
        // they follow were durable, and open would refuse the log as damaged. The mark
        // names the cut until it is durable, and open finishes it.
        let mark = encode_cut_mark(pos.seq, pos.offset);
        super::replace_file(&*self.disk, CUT_TMP_FILE, CUT_FILE, &mark)?;
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
        self.disk.remove(CUT_FILE).map_err(io_err(CUT_FILE))?;
        self.disk.sync_dir().map_err(io_err("the data directory"))?;
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
        meta.durable_through = self.durable_through;
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
        meta.durable_through = self.durable_through;
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
    if let Some((_, format)) = OLD_META_MAGICS.iter().find(|(magic, _)| bytes.starts_with(magic)) {
        return Err(corrupt(0, &format!("log format {format}, written by an older Roster; this build reads format 3")));
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
            Batch::one(Proposal {
                at_unix_ms: 1_000 + index,
                body: ProposalBody::Client { request, by: roster_kernel::SessionOwner::Node },
            }),
        )
    }

    fn opts(preallocate: bool) -> WalOptions {
        WalOptions { segment_bytes: 4096, preallocate }
    }

    fn open(disk: &MemDisk, preallocate: bool) -> Result<(Wal, Recovered), StorageError> {
        Wal::open(Arc::new(disk.clone()), opts(preallocate))
    }

    fn append(wal: &mut Wal, entries: &[Entry]) {
        wal.append(&mut encode_entries(entries).unwrap()).unwrap();
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

    /// A `MemDisk` that loses its power at the first segment fsync after `armed` is set:
    /// that fsync and every change after it never reach the disk (the caller, unaware,
    /// is told they succeeded).
    struct PowerGoesAtSegmentFsync {
        disk: MemDisk,
        armed: std::sync::atomic::AtomicBool,
        off: std::sync::atomic::AtomicBool,
    }

    impl PowerGoesAtSegmentFsync {
        fn off(&self) -> bool {
            self.off.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    impl Disk for PowerGoesAtSegmentFsync {
        fn create(&self, name: &str) -> io::Result<()> {
            if self.off() { Ok(()) } else { self.disk.create(name) }
        }
        fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
            if self.off() { Ok(()) } else { self.disk.write_at(name, offset, data) }
        }
        fn read(&self, name: &str) -> io::Result<Vec<u8>> {
            self.disk.read(name)
        }
        fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            self.disk.read_at(name, offset, len)
        }
        fn len(&self, name: &str) -> io::Result<u64> {
            self.disk.len(name)
        }
        fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
            if self.off() { Ok(()) } else { self.disk.set_len(name, len) }
        }
        fn sync_data(&self, name: &str) -> io::Result<()> {
            if name.starts_with("wal-") && self.armed.load(std::sync::atomic::Ordering::Relaxed) {
                self.off.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if self.off() { Ok(()) } else { self.disk.sync_data(name) }
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            if self.off() { Ok(()) } else { self.disk.rename(from, to) }
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            if self.off() { Ok(()) } else { self.disk.remove(name) }
        }
        fn list(&self) -> io::Result<Vec<String>> {
            self.disk.list()
        }
        fn sync_dir(&self) -> io::Result<()> {
            if self.off() { Ok(()) } else { self.disk.sync_dir() }
        }
    }

    #[test]
    fn a_power_loss_during_a_truncation_keeps_every_entry_before_it_and_opens() {
        let opts = WalOptions { segment_bytes: 64 << 10, preallocate: true };
        let entries: Vec<Entry> = (0..200).map(|i| ent(1, i)).collect();
        for seed in 0..64 {
            let disk = MemDisk::new();
            let wrapped = Arc::new(PowerGoesAtSegmentFsync {
                disk: disk.clone(),
                armed: Default::default(),
                off: Default::default(),
            });
            let (mut wal, _) = Wal::open(wrapped.clone(), opts.clone()).unwrap();
            for e in &entries {
                append(&mut wal, std::slice::from_ref(e));
                wal.sync().unwrap();
            }
            wrapped.armed.store(true, std::sync::atomic::Ordering::Relaxed);
            wal.truncate_after(Some(20)).unwrap();
            drop(wal);
            disk.power_loss(seed);
            let (_, rec) = Wal::open(Arc::new(disk.clone()), opts.clone())
                .unwrap_or_else(|e| panic!("seed {seed}: a crash inside a truncation must not stop the node: {e}"));
            let got = indexes(&rec);
            assert!(got.len() >= 21, "seed {seed}: acknowledged entries lost: {got:?}");
            assert!(got.iter().copied().eq(0..got.len() as u64), "seed {seed}: a gap: {got:?}");
        }
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
        let gap = wal.append(&mut encode_entries(&[ent(2, 3)]).unwrap());
        assert!(matches!(gap, Err(StorageError::OutOfOrder { expected: Some(2), .. })), "{gap:?}");
        let older = wal.append(&mut encode_entries(&[ent(1, 2)]).unwrap());
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
    fn damage_below_the_durable_point_is_refused_naming_file_offset_and_the_way_out() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, false).unwrap();
        append(&mut wal, &(0..3).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.sync().unwrap();
        // Written after entries 0..=2 were durable: these records say so.
        append(&mut wal, &(3..5).map(|i| ent(1, i)).collect::<Vec<_>>());
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
        assert!(msg.contains("move the data directory aside") && msg.contains("roster member replace"), "{msg}");
    }

    /// The issue's power cut: one group commit spans several pages, and the page cache
    /// wrote a later one back without an earlier one (zeros where a record was).
    #[test]
    fn damage_beyond_the_durable_point_is_cut_even_with_whole_records_after_it() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, true).unwrap();
        append(&mut wal, &(0..5).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.sync().unwrap();
        append(&mut wal, &(5..30).map(|i| ent(1, i)).collect::<Vec<_>>());
        drop(wal);
        let (file, offset) = record_of(&disk, 7);
        disk.write_at(&file, offset, &[0u8; 200]).unwrap();
        let (mut wal, rec) = open(&disk, true).unwrap();
        assert_eq!(indexes(&rec), (0..7).collect::<Vec<_>>());
        // The cut is durable and the log goes on from there.
        append(&mut wal, &[ent(2, 7)]);
        wal.sync().unwrap();
        drop(wal);
        disk.crash(|_| Keep::NONE);
        let (_, rec) = open(&disk, true).unwrap();
        assert_eq!(indexes(&rec), (0..8).collect::<Vec<_>>());
        assert_eq!(rec.entries[7], ent(2, 7));
    }

    #[test]
    fn a_record_sealed_with_another_salt_is_not_a_record() {
        let mut batch = encode_entries(&[ent(1, 10)]).unwrap();
        seal_header(&mut batch.bytes[..HEADER_BYTES], 7, Some(3));
        let found = record_at(&batch.bytes, 0, 7).expect("reads back with its own salt");
        assert_eq!((found.index, found.durable_through), (10, Some(3)));
        assert!(record_at(&batch.bytes, 0, 8).is_none());
    }

    /// Bytes that look like a whole record, claiming everything durable, found after the
    /// damage (as client bytes inside a torn record could): without this segment's salt
    /// they are garbage, and the tail is cut, not refused.
    #[test]
    fn a_forged_record_after_the_damage_cannot_make_recovery_refuse() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, true).unwrap();
        append(&mut wal, &(0..5).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.sync().unwrap();
        append(&mut wal, &(5..10).map(|i| ent(1, i)).collect::<Vec<_>>());
        let end = wal.segments.values().next_back().unwrap().write_offset;
        drop(wal);
        let (file, offset) = record_of(&disk, 6);
        let mut forged = encode_entries(&[ent(1, 1_000)]).unwrap();
        seal_header(&mut forged.bytes[..HEADER_BYTES], 0, Some(999));
        disk.write_at(&file, end, &forged.bytes).unwrap();
        disk.write_at(&file, offset, &[0xAB; 16]).unwrap();
        let (_, rec) = open(&disk, true).unwrap();
        assert_eq!(indexes(&rec), (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn a_segment_whose_creation_never_reached_its_header_is_removed() {
        let disk = MemDisk::new();
        let (mut wal, _) = open(&disk, true).unwrap();
        append(&mut wal, &(0..3).map(|i| ent(1, i)).collect::<Vec<_>>());
        wal.sync().unwrap();
        drop(wal);
        let next = segment_name(2);
        disk.create(&next).unwrap();
        disk.write_at(&next, 100, &[0u8; 4000]).unwrap();
        let (wal, rec) = open(&disk, true).unwrap();
        assert_eq!(indexes(&rec), vec![0, 1, 2]);
        assert_eq!(wal.segment_names(), vec![segment_name(1)]);
    }

    #[test]
    fn a_log_of_an_older_format_is_refused_naming_it() {
        let disk = MemDisk::new();
        let name = segment_name(1);
        disk.create(&name).unwrap();
        // A format 2 record header: len | crc, then a body.
        disk.write_at(&name, 0, &[24, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
        let err = open(&disk, true).unwrap_err();
        assert!(matches!(&err, StorageError::Corrupt { file, offset: 0, .. } if *file == name), "{err:?}");
        assert!(err.to_string().contains("older Roster"), "{err}");
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
        let mut batch = encode_entries(&[ent(1, 5)]).unwrap();
        let seg = wal.segments.values().next_back().unwrap();
        seal_header(&mut batch.bytes[..HEADER_BYTES], seg.salt, None);
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
            assert!(wal.append(&mut encode_entries(&[ent(2, 40)]).unwrap()).is_err());
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
        disk.write_at(META_FILE, 0, &OLD_META_MAGICS[0].0).unwrap();
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

        /// Zeros with a few non-zero bytes anywhere, block edges included.
        #[test]
        fn last_nonzero_matches_a_byte_by_byte_search(
            len in 0usize..600,
            marks in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..4),
        ) {
            let mut bytes = vec![0u8; len];
            if len > 0 {
                for (at, value) in marks {
                    bytes[at.index(len)] = value;
                }
            }
            prop_assert_eq!(last_nonzero(&bytes), bytes.iter().rposition(|b| *b != 0));
        }
    }
}
