//! The backup file `roster snapshot save` writes and `roster snapshot restore` reads.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "ROSTERBK" (8) | format version u16 | revision u64 | last log term u64
//! | last log index u64 | payload length u64 | payload crc32 u32 | header crc32 u32
//! | payload: the node's snapshot bytes (their own header, Raft metadata and the
//!   kernel's versioned, checksummed image)
//! ```
//!
//! The header crc covers every header byte before it, so a damaged header is told apart
//! from a damaged or truncated payload, and each error names the file and the problem.
//! `parse` checks all of it before anything is decoded; the caller then checks the
//! payload's own layers (`storage::state_machine::verify_snapshot_data`).

use std::path::Path;

/// The format this build writes and reads; any other is refused.
pub const BACKUP_FORMAT_VERSION: u16 = 1;
/// Largest snapshot a backup holds: far above what the state machine's limits allow, so
/// it only stops a damaged length from asking for an absurd allocation.
pub const MAX_BACKUP_PAYLOAD_BYTES: u64 = 8 << 30;

const MAGIC: [u8; 8] = *b"ROSTERBK";
pub const HEADER_BYTES: usize = 8 + 2 + 8 + 8 + 8 + 8 + 4 + 4;
const HEADER_CRC_AT: usize = HEADER_BYTES - 4;

/// What a backup's header says of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    pub revision: u64,
    pub last_log_term: u64,
    pub last_log_index: u64,
    pub payload_bytes: u64,
    pub payload_crc32: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error(
        "{file} is {len} bytes, shorter than the {HEADER_BYTES}-byte backup header: truncated, or not a Roster backup"
    )]
    TooShort { file: String, len: u64 },
    #[error("{file} is not a Roster backup (bad magic bytes; expected a file written by `roster snapshot save`)")]
    BadMagic { file: String },
    #[error("{file}: backup header checksum mismatch: the header is corrupt; use another copy of the backup")]
    HeaderChecksum { file: String },
    #[error(
        "{file} is backup format version {found}; this build reads version {supported}: restore it with a matching build"
    )]
    UnsupportedVersion { file: String, found: u16, supported: u16 },
    #[error("{file}: the header claims a {len}-byte snapshot, over the limit of {max} bytes: the header is corrupt")]
    TooLarge { file: String, len: u64, max: u64 },
    #[error(
        "{file} is truncated: the header promises {expected} snapshot bytes but {actual} are present; use a complete copy, or save the snapshot again"
    )]
    Truncated { file: String, expected: u64, actual: u64 },
    #[error("{file} has {extra} bytes after the snapshot: it is damaged or not a Roster backup")]
    TrailingBytes { file: String, extra: u64 },
    #[error(
        "{file} is corrupt: snapshot checksum mismatch (header {expected:#010x}, content {actual:#010x}); use another copy of the backup"
    )]
    ChecksumMismatch { file: String, expected: u32, actual: u32 },
    #[error("{file} holds a damaged snapshot: {reason}")]
    Snapshot { file: String, reason: String },
    #[error("{file}: the header says {what} {header}, the snapshot in it holds {found}: the file is inconsistent")]
    Inconsistent { file: String, what: &'static str, header: u64, found: u64 },
}

/// The whole file: header, then `payload`.
pub fn encode(header: &BackupHeader, payload: &[u8]) -> Vec<u8> {
    assert_eq!(header.payload_bytes, payload.len() as u64, "the header describes the payload");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&header.revision.to_le_bytes());
    out.extend_from_slice(&header.last_log_term.to_le_bytes());
    out.extend_from_slice(&header.last_log_index.to_le_bytes());
    out.extend_from_slice(&header.payload_bytes.to_le_bytes());
    out.extend_from_slice(&header.payload_crc32.to_le_bytes());
    let crc = crc32fast::hash(&out[..HEADER_CRC_AT]);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_BYTES);
    out.extend_from_slice(payload);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the header and the payload's length and checksum; returns the header and the
/// payload. `file` names the file in errors.
pub fn parse<'a>(bytes: &'a [u8], file: &str) -> Result<(BackupHeader, &'a [u8]), BackupFileError> {
    let file = file.to_string();
    if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupFileError::BadMagic { file });
    }
    if bytes.len() < HEADER_BYTES {
        return Err(BackupFileError::TooShort { file, len: bytes.len() as u64 });
    }
    if crc32fast::hash(&bytes[..HEADER_CRC_AT]) != u32_at(bytes, HEADER_CRC_AT) {
        return Err(BackupFileError::HeaderChecksum { file });
    }
    let found = u16::from_le_bytes([bytes[8], bytes[9]]);
    if found != BACKUP_FORMAT_VERSION {
        return Err(BackupFileError::UnsupportedVersion { file, found, supported: BACKUP_FORMAT_VERSION });
    }
    let header = BackupHeader {
        revision: u64_at(bytes, 10),
        last_log_term: u64_at(bytes, 18),
        last_log_index: u64_at(bytes, 26),
        payload_bytes: u64_at(bytes, 34),
        payload_crc32: u32_at(bytes, 42),
    };
    if header.payload_bytes > MAX_BACKUP_PAYLOAD_BYTES {
        return Err(BackupFileError::TooLarge { file, len: header.payload_bytes, max: MAX_BACKUP_PAYLOAD_BYTES });
    }
    let payload = &bytes[HEADER_BYTES..];
    let actual = payload.len() as u64;
    if actual < header.payload_bytes {
        return Err(BackupFileError::Truncated { file, expected: header.payload_bytes, actual });
    }
    if actual > header.payload_bytes {
        return Err(BackupFileError::TrailingBytes { file, extra: actual - header.payload_bytes });
    }
    let actual = crc32fast::hash(payload);
    if actual != header.payload_crc32 {
        return Err(BackupFileError::ChecksumMismatch { file, expected: header.payload_crc32, actual });
    }
    Ok((header, payload))
}

/// Reads `path` whole (bounded by the largest backup) and `parse`s it.
pub fn read(path: &Path) -> Result<(BackupHeader, Vec<u8>), BackupFileError> {
    let file = path.display().to_string();
    let io = |source| BackupFileError::Io { file: file.clone(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let max = MAX_BACKUP_PAYLOAD_BYTES + HEADER_BYTES as u64;
    if len > max {
        return Err(BackupFileError::TooLarge { file, len, max });
    }
    let mut bytes = std::fs::read(path).map_err(io)?;
    let (header, payload) = parse(&bytes, &file)?;
    let payload_at = bytes.len() - payload.len();
    bytes.drain(..payload_at);
    Ok((header, bytes))
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename over
/// `path`, fsync of the directory. Nothing is left at `path` if it fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BackupFileError> {
    use std::io::Write;
    let file = path.display().to_string();
    let io = |source| BackupFileError::Io { file: file.clone(), source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| BackupFileError::Io {
        file: file.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let payload = b"a node's snapshot bytes".to_vec();
        let header = BackupHeader {
            revision: 42,
            last_log_term: 3,
            last_log_index: 57,
            payload_bytes: payload.len() as u64,
            payload_crc32: crc32fast::hash(&payload),
        };
        encode(&header, &payload)
    }

    #[test]
    fn a_backup_round_trips() {
        let bytes = sample();
        let (header, payload) = parse(&bytes, "b").unwrap();
        assert_eq!((header.revision, header.last_log_term, header.last_log_index), (42, 3, 57));
        assert_eq!(payload, b"a node's snapshot bytes");
    }

    #[test]
    fn every_damage_is_named() {
        let bytes = sample();
        let err = |b: &[u8]| parse(b, "f.bak").unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).contains("f.bak is truncated"), "{}", err(&bytes[..bytes.len() - 1]));
        assert!(err(&bytes[..20]).contains("shorter than the 50-byte backup header"));
        assert!(err(b"ROSTERSMxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").contains("not a Roster backup"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(err(&flipped).contains("snapshot checksum mismatch"), "{}", err(&flipped));
        let mut header = bytes.clone();
        header[12] ^= 1;
        assert!(err(&header).contains("header checksum mismatch"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(err(&longer).contains("1 bytes after the snapshot"));
        let mut future = bytes.clone();
        future[8] = 9;
        let crc = crc32fast::hash(&future[..HEADER_CRC_AT]);
        future[HEADER_CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        assert!(err(&future).contains("backup format version 9; this build reads version 1"));
    }
}
