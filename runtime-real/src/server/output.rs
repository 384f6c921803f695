//! The output of launched programs: a launched job's stdout and stderr go to one file on
//! the node that runs it (`DATA_DIR/launched/NAME-LAUNCH_ID.log`, see `launch.rs`), and
//! `roster logs` / `GET /v1/processes/{id}/logs` read it from there.
//!
//! Rules, in one place:
//! - Any node takes a read and forwards it to the node that runs (or ran) the process,
//!   found in the applied record: the live entries first, then the recent departures (a
//!   finished job's output stays readable while its tombstone is kept).
//! - Only a process Roster launched has an output file: one without the launch label is
//!   refused (`NotLaunched`), naming why.
//! - The file is found by the launch id alone (digits and dashes, checked), inside this
//!   node's own `launched/` directory: no name or label a caller may change leads the node
//!   to read another file.
//! - One read returns at most `MAX_OUTPUT_READ_BYTES`; a caller pages on with the offset.

use crate::net::wire::{
    ClientRequest, ClientResponse, MAX_OUTPUT_READ_BYTES, OutputChunk, OutputFrom, OutputRequest, RequestError,
};
use crate::server::{Raft, leadership};
use crate::storage::SharedState;
use roster_kernel::{ProcessEntry, ProcessId, ServerId, TombstoneSubject};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long a forwarded read may take.
const FORWARD_TIMEOUT_MS: u64 = 5_000;

/// Label that ties a registered process to the launch that started it (its output file).
pub const LAUNCH_LABEL: &str = "roster.launch-id";

pub struct OutputSource {
    node: u64,
    raft: Raft,
    shared: Arc<SharedState>,
    /// The launched jobs' output files (`launch.rs` writes them).
    log_dir: PathBuf,
    /// This node's credential (the peer key), to forward a read to the host.
    credential: roster_client::Credential,
    connector: crate::net::transport::Connector,
}

impl OutputSource {
    pub fn new(
        node: u64,
        raft: Raft,
        shared: Arc<SharedState>,
        log_dir: PathBuf,
        credential: roster_client::Credential,
        connector: crate::net::transport::Connector,
    ) -> Self {
        OutputSource { node, raft, shared, log_dir, credential, connector }
    }

    /// On any node: read here if this node runs the process, else forward to the one that does.
    pub async fn read(&self, req: OutputRequest) -> ClientResponse {
        let Some((entry, _)) = self.find(req.process) else {
            return ClientResponse::Error(RequestError::UnknownProcess { process: req.process });
        };
        if entry.info.server.0 == self.node {
            return self.read_local(req);
        }
        let server = entry.info.server;
        let Some(addr) = leadership::node_addr(&self.raft, server.0) else {
            return ClientResponse::Error(RequestError::NoAddress { server });
        };
        crate::server::relay::forward(
            &addr,
            &self.credential,
            &self.connector,
            ClientRequest::LocalOutput(req),
            FORWARD_TIMEOUT_MS,
        )
        .await
    }

    /// On the node that runs the process: read its output file.
    pub fn read_local(&self, req: OutputRequest) -> ClientResponse {
        let process = req.process;
        let Some((entry, left)) = self.find(process) else {
            return ClientResponse::Error(RequestError::UnknownProcess { process });
        };
        let unreadable = |reason: String| RequestError::OutputUnreadable { process, node: self.node, reason };
        let Some(launch_id) = entry.info.labels.get(LAUNCH_LABEL) else {
            return ClientResponse::Error(RequestError::NotLaunched { process });
        };
        if entry.info.server.0 != self.node {
            return ClientResponse::Error(unreadable(format!("it runs on {}, not here", entry.info.server)));
        }
        let file = match find_output_file(&self.log_dir, launch_id) {
            Ok(file) => file,
            Err(e) => return ClientResponse::Error(unreadable(e.to_string())),
        };
        match read_piece(&file, req.from) {
            Ok((offset, data, size_bytes)) => ClientResponse::Output(OutputChunk {
                server: ServerId(self.node),
                file: file.display().to_string(),
                offset,
                data,
                size_bytes,
                process_left: left,
            }),
            Err(e) => ClientResponse::Error(unreadable(format!("{}: {e}", file.display()))),
        }
    }

    /// The process's entry as last known, and whether it has left (a tombstone).
    fn find(&self, process: ProcessId) -> Option<(ProcessEntry, bool)> {
        crate::storage::with_kernel(&self.shared, |sm| {
            if let Some(entry) = sm.get_process(process) {
                return Some((entry.clone(), false));
            }
            sm.tombstones().find_map(|t| match t.subject {
                TombstoneSubject::Process(entry) if entry.id == process => Some((entry, true)),
                _ => None,
            })
        })
    }
}

/// Why a launched process's output file cannot be found; the caller reads the text.
#[derive(Debug, thiserror::Error)]
enum OutputFileError {
    /// The label was set by hand, not by a launch: it must not name a path.
    #[error("its launch label {label:?} is not a launch id")]
    NotALaunchId { label: String },
    /// The directory of launched output could not be listed.
    #[error("cannot list {}: {source}", dir.display())]
    List { dir: PathBuf, source: std::io::Error },
    /// The file is gone (removed by hand, or the data directory was replaced).
    #[error("no output file of launch {launch_id} in {} (removed?)", dir.display())]
    Missing { launch_id: String, dir: PathBuf },
}

/// The output file of launch `launch_id` in `dir`: the one file named `*-LAUNCH_ID.log`.
fn find_output_file(dir: &Path, launch_id: &str) -> Result<PathBuf, OutputFileError> {
    // A launch id is `NODE-UNIX_MS-SEQ`; anything else was not written by a launch.
    let well_formed = launch_id.split('-').count() == 3
        && launch_id.split('-').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(OutputFileError::NotALaunchId { label: launch_id.to_string() });
    }
    let suffix = format!("-{launch_id}.log");
    let listing = |source| OutputFileError::List { dir: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        if entry.file_name().to_str().is_some_and(|name| name.ends_with(&suffix)) {
            return Ok(entry.path());
        }
    }
    Err(OutputFileError::Missing { launch_id: launch_id.to_string(), dir: dir.to_path_buf() })
}

/// The piece of `file` that `from` names, at most `MAX_OUTPUT_READ_BYTES`: its offset,
/// its bytes, and the file's size.
fn read_piece(file: &Path, from: OutputFrom) -> std::io::Result<(u64, Vec<u8>, u64)> {
    let mut f = std::fs::File::open(file)?;
    let size = f.metadata()?.len();
    let (start, len) = match from {
        OutputFrom::Offset(offset) => {
            let start = offset.min(size);
            (start, (size - start).min(MAX_OUTPUT_READ_BYTES))
        }
        OutputFrom::TailLines(_) => {
            let len = size.min(MAX_OUTPUT_READ_BYTES);
            (size - len, len)
        }
    };
    f.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(len).read_to_end(&mut data)?;
    match from {
        OutputFrom::Offset(_) => Ok((start, data, size)),
        OutputFrom::TailLines(lines) => {
            let cut = tail_start(&data, lines);
            Ok((start + cut as u64, data.split_off(cut), size))
        }
    }
}

/// Where the last `lines` lines of `data` begin (a last line without a newline counts).
fn tail_start(data: &[u8], lines: u32) -> usize {
    if lines == 0 {
        return data.len();
    }
    // A newline that ends the data closes the last line; it does not begin a new one.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0u32;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_lines_with_or_without_a_final_newline() {
        assert_eq!(&b"a\nb\nc\n"[tail_start(b"a\nb\nc\n", 2)..], b"b\nc\n");
        assert_eq!(&b"a\nb\nc"[tail_start(b"a\nb\nc", 2)..], b"b\nc");
        assert_eq!(tail_start(b"a\nb\n", 5), 0, "fewer lines than asked: all of them");
        assert_eq!(tail_start(b"a\nb\n", 0), 4, "no lines: nothing");
        assert_eq!(tail_start(b"", 3), 0);
    }

    #[test]
    fn a_read_is_bounded_and_pages_on_from_its_offset() {
        let dir = std::env::temp_dir().join(format!("roster-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("job-1-2-3.log");
        let size = MAX_OUTPUT_READ_BYTES + 10;
        std::fs::write(&file, vec![b'x'; size as usize]).expect("write");
        let (offset, data, seen) = read_piece(&file, OutputFrom::Offset(0)).expect("read");
        assert_eq!((offset, data.len() as u64, seen), (0, MAX_OUTPUT_READ_BYTES, size));
        let (offset, data, _) = read_piece(&file, OutputFrom::Offset(MAX_OUTPUT_READ_BYTES)).expect("read on");
        assert_eq!((offset, data.len()), (MAX_OUTPUT_READ_BYTES, 10));
        let (offset, data, _) = read_piece(&file, OutputFrom::Offset(size + 5)).expect("past the end");
        assert_eq!((offset, data.len()), (size, 0));
        let (_, tail, _) = read_piece(&file, OutputFrom::TailLines(3)).expect("tail");
        assert_eq!(tail.len() as u64, MAX_OUTPUT_READ_BYTES, "one long line: the bound");
        assert_eq!(find_output_file(&dir, "1-2-3").ok(), Some(file.clone()));
        assert!(matches!(find_output_file(&dir, "../1-2-3"), Err(OutputFileError::NotALaunchId { .. })));
        assert!(matches!(find_output_file(&dir, "1-2"), Err(OutputFileError::NotALaunchId { .. })));
        assert!(matches!(find_output_file(&dir, "1-2-4"), Err(OutputFileError::Missing { .. })));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
