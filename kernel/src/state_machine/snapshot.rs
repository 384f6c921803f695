//! Snapshots: a versioned, checksummed postcard image of the replicated state.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "ROSTERSM" (8) | version u16 | payload length u64 | crc32 u32 | payload
//! ```
//!
//! The crc covers the version, the length and the payload, so any damage after the magic
//! is reported as a checksum mismatch before anything is decoded. A decoded payload is
//! then checked like any record read back (ordering, ranges, limits, every invariant of
//! the state machine), so even bytes with a valid checksum cannot build a state that
//! `apply` could not have built. Restoring never panics on any input.
//!
//! The event history's events are not part of a snapshot (they are a cache for watchers),
//! but its ledger is: the revision and size of each event held, so a restored machine
//! counts the history's bytes against the budget and evicts exactly as the machine it was
//! taken from (`budget.rs`).

use super::ClusterStateMachine;
use super::budget;
use super::crc32::Crc32;
use super::history::EventHistory;
use super::limits::Limits;
use super::session::{SessionRecord, SessionTable};
use super::tokens::{TokenRecord, TokenTable};
use super::tombstones::{DepartedEntry, StoredTombstone, TombstoneLog};
use crate::command::{CommandResult, SessionOwner};
use crate::command::{TokenHash, TokenInfo};
use crate::ids::{ProcessId, ServerId, SessionId};
use crate::model::{Departure, ProcessEntry, ServerEntry, Tombstone};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// The format `snapshot` writes and `restore` reads; any other version is refused.
///
/// - 1: the first format.
/// - 2: server entries carry `drained` (an operator's drain, `Command::SetDrained`).
/// - 3: the tokens (hashes of their secrets, names, roles).
/// - 4: the cluster's id (`LeaderCommand::SealCluster`); process entries carry
///   `resources` (their averaged CPU and memory).
/// - 5: sessions keep their last command's digest and their last use; the limits hold
///   `session_idle_ms`.
/// - 6: the limits hold `state_budget_bytes`; the event history's ledger (revision and
///   size of each event held).
/// - 7: sessions keep the credential that opened them (`SessionOwner`).
pub const SNAPSHOT_FORMAT_VERSION: u16 = 7;

const MAGIC: [u8; 8] = *b"ROSTERSM";
const VERSION_AT: usize = MAGIC.len();
const LENGTH_AT: usize = VERSION_AT + 2;
const CRC_AT: usize = LENGTH_AT + 8;
const HEADER_LEN: usize = CRC_AT + 4;

/// Why snapshot bytes could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a Roster state machine snapshot (bad magic bytes)")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported (this build reads version {supported}); restore it with a matching build"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error(
        "snapshot checksum mismatch (header {expected:#010x}, content {actual:#010x}): the snapshot is corrupt; fetch it again"
    )]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

fn malformed(reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(reason.into())
}

// ----- the payload -----

#[derive(Serialize)]
struct SessionOut<'a> {
    id: SessionId,
    owner: SessionOwner,
    last_seq: u64,
    last_rev: u64,
    last_reply: Option<&'a CommandResult>,
    last_digest: u64,
    last_used_ms: u64,
}

#[derive(Deserialize)]
struct SessionIn {
    id: SessionId,
    owner: SessionOwner,
    last_seq: u64,
    last_rev: u64,
    last_reply: Option<CommandResult>,
    last_digest: u64,
    last_used_ms: u64,
}

/// Serialises an ordered map's values (entries carry their own ids) as a sequence.
struct Values<'a, K, V>(&'a BTreeMap<K, Arc<V>>);

impl<K, V: Serialize> Serialize for Values<'_, K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.values().map(|entry| &**entry))
    }
}

/// `TombstoneSubject`, borrowed: serialises exactly as the owned type.
#[derive(Serialize)]
enum SubjectRef<'a> {
    Server(&'a ServerEntry),
    Process(&'a ProcessEntry),
}

/// `Tombstone`, borrowed: serialises exactly as the owned type, which `restore` reads.
#[derive(Serialize)]
struct TombstoneRef<'a> {
    subject: SubjectRef<'a>,
    departure: &'a Departure,
    left_at_unix_ms: u64,
    left_rev: u64,
}

/// Serialises tombstones oldest first.
struct Tombstones<'a>(&'a TombstoneLog);

impl Serialize for Tombstones<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.oldest_first().map(|tombstone| TombstoneRef {
            subject: match &tombstone.subject {
                DepartedEntry::Server(entry) => SubjectRef::Server(entry),
                DepartedEntry::Process(entry) => SubjectRef::Process(entry),
            },
            departure: &tombstone.departure,
            left_at_unix_ms: tombstone.left_at_unix_ms,
            left_rev: tombstone.left_rev,
        }))
    }
}

/// Serialises the key/value store as a sequence of pairs, in key order.
struct Pairs<'a>(&'a BTreeMap<String, String>);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

struct Sessions<'a>(&'a SessionTable);

impl Serialize for Sessions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.records().map(|(id, record)| SessionOut {
            id: *id,
            owner: record.owner,
            last_seq: record.last_seq,
            last_rev: record.last_rev,
            last_reply: record.last_reply.as_ref(),
            last_digest: record.last_digest,
            last_used_ms: record.last_used_ms,
        }))
    }
}

#[derive(Serialize)]
struct BodyOut<'a> {
    limits: &'a Limits,
    revision: u64,
    clock_unix_ms: u64,
    next_process_id: u64,
    next_session_id: u64,
    servers: Values<'a, ServerId, ServerEntry>,
    processes: Values<'a, ProcessId, ProcessEntry>,
    kv: Pairs<'a>,
    sessions: Sessions<'a>,
    /// Oldest first.
    tombstones: Tombstones<'a>,
    next_token_id: u64,
    tokens: Tokens<'a>,
    cluster_id: Option<u64>,
    history: Ledger<'a>,
}

/// The history's ledger, oldest first, as (revision step from the one before, bytes):
/// revisions never decrease, so the steps are small varints.
struct Ledger<'a>(&'a EventHistory);

impl Serialize for Ledger<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut previous = 0;
        serializer.collect_seq(self.0.ledger().map(|(revision, bytes)| {
            let step = revision - previous;
            previous = revision;
            (step, bytes)
        }))
    }
}

struct Tokens<'a>(&'a TokenTable);

impl Serialize for Tokens<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.records().map(|record| (&record.hash, &record.info)))
    }
}

#[derive(Deserialize)]
struct BodyIn {
    limits: Limits,
    revision: u64,
    clock_unix_ms: u64,
    next_process_id: u64,
    next_session_id: u64,
    servers: Vec<ServerEntry>,
    processes: Vec<ProcessEntry>,
    kv: Vec<(String, String)>,
    sessions: Vec<SessionIn>,
    tombstones: VecDeque<Tombstone>,
    next_token_id: u64,
    tokens: Vec<(TokenHash, TokenInfo)>,
    cluster_id: Option<u64>,
    history: Vec<(u64, u64)>,
}

/// postcard output into a `Vec` that already holds the header, copying slices whole.
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

// ----- encode and decode -----

/// Appends the image of `machine` to `out` (its header starts at `out.len()`).
pub(super) fn encode_into(machine: &ClusterStateMachine, out: Vec<u8>) -> UnsealedSnapshot {
    debug_assert_eq!(machine.check_invariants(), Ok(()), "only a sound state is written");
    encode_unchecked_into(machine, out)
}

/// A snapshot image written but not yet checksummed, so that the checksum (a pass over
/// every byte) can run after the state's lock is released. Its bytes can only be had
/// through `seal`.
#[must_use = "an image is only usable once sealed"]
pub struct UnsealedSnapshot {
    bytes: Vec<u8>,
    /// Where the image starts in `bytes` (a caller's header may come first).
    base: usize,
}

impl UnsealedSnapshot {
    /// Writes the image's checksum; the bytes, with whatever the caller put before them.
    pub fn seal(mut self) -> Vec<u8> {
        let image = &mut self.bytes[self.base..];
        let crc = checksum(image);
        image[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        self.bytes
    }
}

/// `encode` without the debug check, so tests can write unsound states.
#[cfg(test)]
pub(super) fn encode_unchecked(machine: &ClusterStateMachine) -> Vec<u8> {
    encode_unchecked_into(machine, Vec::with_capacity(HEADER_LEN + 64 * 1024)).seal()
}

fn encode_unchecked_into(machine: &ClusterStateMachine, mut out: Vec<u8>) -> UnsealedSnapshot {
    let body = BodyOut {
        limits: &machine.limits,
        revision: machine.revision,
        clock_unix_ms: machine.clock_unix_ms,
        next_process_id: machine.next_process_id,
        next_session_id: machine.sessions.next_id(),
        servers: Values(&machine.servers),
        processes: Values(&machine.processes),
        kv: Pairs(&machine.kv),
        sessions: Sessions(&machine.sessions),
        tombstones: Tombstones(&machine.tombstones),
        next_token_id: machine.tokens.next_id(),
        tokens: Tokens(&machine.tokens),
        cluster_id: machine.cluster_id,
        history: Ledger(&machine.history),
    };
    let base = out.len();
    out.extend_from_slice(&MAGIC);
    out.resize(base + HEADER_LEN, 0);
    // Every sequence above has an exact length and everything goes to memory, so postcard
    // has nothing to fail on.
    let mut out = postcard::serialize_with_flavor(&body, VecFlavor(out))
        .expect("serialising a state machine to memory cannot fail");
    let image = &mut out[base..];
    let payload_len = (image.len() - HEADER_LEN) as u64;
    image[VERSION_AT..LENGTH_AT].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    image[LENGTH_AT..CRC_AT].copy_from_slice(&payload_len.to_le_bytes());
    UnsealedSnapshot { bytes: out, base }
}

/// The crc of everything after the magic except the crc field itself.
fn checksum(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(&bytes[VERSION_AT..CRC_AT]);
    crc.update(&bytes[HEADER_LEN..]);
    crc.finish()
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[at..at + N]);
    array
}

pub(super) fn decode(bytes: &[u8]) -> Result<ClusterStateMachine, SnapshotError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(malformed(format!("{} bytes is shorter than the {HEADER_LEN}-byte header", bytes.len())));
    }
    let payload_len = u64::from_le_bytes(read_array(bytes, LENGTH_AT));
    let actual_len = (bytes.len() - HEADER_LEN) as u64;
    if payload_len != actual_len {
        return Err(malformed(format!("header says {payload_len} payload bytes, {actual_len} are present")));
    }
    let expected = u32::from_le_bytes(read_array(bytes, CRC_AT));
    let actual = checksum(bytes);
    if expected != actual {
        return Err(SnapshotError::ChecksumMismatch { expected, actual });
    }
    let version = u16::from_le_bytes(read_array(bytes, VERSION_AT));
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version, supported: SNAPSHOT_FORMAT_VERSION });
    }
    let (body, rest): (BodyIn, &[u8]) = postcard::take_from_bytes(&bytes[HEADER_LEN..])
        .map_err(|error| malformed(format!("payload does not decode: {error}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes follow the payload", rest.len())));
    }
    build(body)
}

/// Builds an ordered map from entries that must be in strictly increasing key order.
fn ordered<K: Ord + Copy + std::fmt::Debug, V>(
    entries: Vec<V>,
    key: impl Fn(&V) -> K,
    what: &str,
) -> Result<BTreeMap<K, Arc<V>>, SnapshotError> {
    if let Some(pair) = entries.windows(2).find(|pair| key(&pair[0]) >= key(&pair[1])) {
        return Err(malformed(format!("{what} out of order at {:?}", key(&pair[1]))));
    }
    // Sorted input, so this is a linear bulk build.
    Ok(entries.into_iter().map(|entry| (key(&entry), Arc::new(entry))).collect())
}

fn build(body: BodyIn) -> Result<ClusterStateMachine, SnapshotError> {
    body.limits.check().map_err(malformed)?;
    if let Some(pair) = body.kv.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
        return Err(malformed(format!("keys out of order at {:?}", pair[1].0)));
    }
    let kv: BTreeMap<String, String> = body.kv.into_iter().collect();
    for (key, value) in &kv {
        body.limits.check_key(key).map_err(|error| malformed(error.to_string()))?;
        body.limits.check_value(value).map_err(|error| malformed(error.to_string()))?;
    }
    let records = body.sessions.into_iter().map(|session| {
        let SessionIn { id, owner, last_seq, last_rev, last_reply, last_digest, last_used_ms } = session;
        (id, SessionRecord { owner, last_seq, last_rev, last_reply, last_digest, last_used_ms })
    });
    let sessions = SessionTable::from_parts(body.next_session_id, records).map_err(malformed)?;
    let mut tokens = TokenTable::default();
    tokens.set_next_id(body.next_token_id);
    for (hash, info) in body.tokens {
        let id = info.id;
        if !tokens.restore_one(TokenRecord { hash, info }) {
            return Err(malformed(format!("{id} or its hash appears twice")));
        }
    }
    let mut revision = 0u64;
    let mut ledger = Vec::with_capacity(body.history.len());
    for (step, bytes) in body.history {
        revision = revision.checked_add(step).ok_or_else(|| malformed("history ledger revisions overflow"))?;
        ledger.push((revision, bytes));
    }
    let history = EventHistory::from_ledger(body.revision, ledger).map_err(malformed)?;
    let kv_bytes = kv.iter().map(|(key, value)| budget::kv_entry_bytes(key, value)).sum();
    let processes = ordered(body.processes, |entry| entry.id, "processes")?;
    let labels_bytes = processes.values().map(|entry| budget::labels_bytes(&entry.info.labels)).sum();
    let machine = ClusterStateMachine {
        servers: ordered(body.servers, |entry| entry.id, "servers")?,
        processes,
        kv,
        sessions,
        tombstones: TombstoneLog::from_oldest_first(
            body.tombstones.into_iter().map(|tombstone| Arc::new(StoredTombstone::from_tombstone(tombstone))).collect(),
        ),
        tokens,
        history,
        kv_bytes,
        labels_bytes,
        cluster_id: body.cluster_id,
        limits: body.limits,
        revision: body.revision,
        clock_unix_ms: body.clock_unix_ms,
        next_process_id: body.next_process_id,
    };
    machine.check_invariants().map_err(malformed)?;
    Ok(machine)
}

#[cfg(test)]
pub(super) mod tests_support {
    use super::{CRC_AT, HEADER_LEN, LENGTH_AT, checksum};

    /// Rewrites the length and crc fields of `bytes` to match its payload, so tests can
    /// hand `restore` damaged content that passes the checksum.
    pub(crate) fn reseal(bytes: &mut [u8]) {
        let payload_len = (bytes.len() - HEADER_LEN) as u64;
        bytes[LENGTH_AT..CRC_AT].copy_from_slice(&payload_len.to_le_bytes());
        let crc = checksum(bytes);
        bytes[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
}
