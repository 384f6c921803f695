//! `roster snapshot save FILE` and `roster snapshot restore FILE --data-dir DIR`: a
//! backup of the cluster's state, and a new cluster seeded from it.
//!
//! Restore and openraft. A node's first start either initialises a cluster (openraft's
//! `initialize`, allowed only while the log, the vote and the state machine are all empty)
//! or waits to be added. A directory that already holds a state machine is neither: it is
//! a node that has applied up to its snapshot. So restore writes exactly what such a node
//! would have on disk and nothing else: one snapshot file whose metadata carries the
//! membership of the new cluster (`--peers`, or the saved cluster's voters). On start,
//! openraft reads the snapshot as applied and committed, purges the empty log up to it,
//! and the node is an initialised member that never calls `initialize` (`form_cluster`
//! finds it initialised). Every node restored from the same file with the same peers holds
//! the same log position and membership, so they elect a leader among themselves and
//! carry on from the saved revision.
//!
//! The snapshot's log id is rewritten to term 0 at the saved index: the new cluster has
//! no vote yet, so its first leader is elected in term 1, and its first entry (term 1,
//! index + 1) must come after the snapshot in openraft's log order, which compares terms
//! first. The kernel's state, revision and sessions are kept byte for byte, except the
//! cluster id, which the new cluster's first leader seals anew.

use super::ClientArgs;
use super::backup_file::{self, BackupHeader};
use super::failure::CliError;
use clap::{Args, Subcommand};
use openraft::vote::RaftLeaderIdExt;
use roster_real::config::parse_peers;
use roster_real::raft::{LogId, NodeAddr, SnapshotMeta, StoredMembership, TypeConfig};
use roster_real::storage::FsDisk;
use roster_real::storage::state_machine::{seed_snapshot, verify_snapshot_data};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    op: SnapshotOp,
}

#[derive(Subcommand, Debug)]
enum SnapshotOp {
    /// Save a consistent snapshot of the cluster's state from the leader to FILE
    /// (written atomically; prints the revision it holds).
    Save {
        /// Where to write the backup.
        file: PathBuf,
    },
    /// Seed the data directory of a node of a new cluster from FILE. Restore every node
    /// of the new cluster from the same file with the same --peers, then start them.
    Restore {
        /// A backup written by `roster snapshot save`.
        file: PathBuf,
        /// The new node's data directory: absent or empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// The node this directory is for; must be one of the peers.
        #[arg(long)]
        id: Option<u64>,
        /// The new cluster: 1=HOST:PORT,2=HOST:PORT,... (default: the saved cluster's voters).
        #[arg(long)]
        peers: Option<String>,
    },
}

/// A snapshot that did not arrive as the leader announced it: nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Over the size a backup file may hold: the leader's cluster outgrew the format.
    #[error("the leader offers a snapshot of {bytes} bytes, over the limit of {max} bytes")]
    TooLarge { bytes: u64, max: u64 },
    /// The bytes changed on the way (a transport or leader fault).
    #[error(
        "the snapshot arrived damaged (checksum {got:#010x}, the leader sent {sent:#010x}): nothing written; save again"
    )]
    Damaged { got: u32, sent: u32 },
    /// The snapshot itself does not decode (`verify_snapshot_data`).
    #[error("{0}")]
    Invalid(#[from] roster_real::storage::StorageError),
    /// A snapshot without a position cannot seed a node.
    #[error("the received snapshot has no log position: nothing written")]
    NoLogPosition,
    /// The contents are not what the leader announced (a different snapshot, or a bug).
    #[error(
        "the received snapshot holds revision {revision} at log index {index}, the leader announced \
         {announced_revision} at {announced_index}: nothing written"
    )]
    NotAnnounced { revision: u64, index: u64, announced_revision: u64, announced_index: u64 },
}

/// A restore that would not give a new node a clean start: nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Neither --peers nor the saved membership names a voter.
    #[error("no peers: give the new cluster with --peers 1=HOST:PORT,...")]
    NoPeers,
    /// The node restored must be one of the new cluster's voters.
    #[error("--id {id} is not one of the peers ({peers}): add it to --peers")]
    NotAPeer { id: u64, peers: String },
    /// The peers make no valid membership.
    #[error("bad --peers: {0}")]
    Membership(openraft::errors::MembershipError<u64>),
    /// Seeding a used directory would mix two nodes' data.
    #[error(
        "{} is not empty: restore seeds the data directory of a new node; give an absent or empty directory \
         (move the old one aside first)",
        dir.display()
    )]
    NotEmpty { dir: PathBuf },
}

pub async fn run(args: SnapshotArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    match args.op {
        SnapshotOp::Save { file } => save(&file, &c).await,
        SnapshotOp::Restore { file, data_dir, id, peers } => restore(&file, &data_dir, id, peers.as_deref(), c.json),
    }
}

async fn save(file: &Path, c: &ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let mut download = client.snapshot().await?;
    let head = download.head;
    if head.total_bytes > backup_file::MAX_BACKUP_PAYLOAD_BYTES {
        return Err(SaveError::TooLarge { bytes: head.total_bytes, max: backup_file::MAX_BACKUP_PAYLOAD_BYTES }.into());
    }
    // Grown as chunks arrive past the first 64 MiB: the announced size is not yet proven.
    let mut payload = Vec::with_capacity(usize::try_from(head.total_bytes.min(64 << 20)).unwrap_or(0));
    let streaming = |source| CliError::Step { doing: "snapshot stream".into(), source };
    while let Some(chunk) = download.next_chunk().await.map_err(streaming)? {
        payload.extend_from_slice(&chunk);
    }
    drop(download);
    let crc32 = crc32fast::hash(&payload);
    if crc32 != head.crc32 {
        return Err(SaveError::Damaged { got: crc32, sent: head.crc32 }.into());
    }
    // Every layer is checked now, so a backup that was written can be restored.
    let (meta, kernel) = verify_snapshot_data(&payload, "the received snapshot").map_err(SaveError::from)?;
    let last = meta.last_log_id.ok_or(SaveError::NoLogPosition)?;
    if kernel.revision() != head.revision || last.index != head.last_log_index {
        return Err(SaveError::NotAnnounced {
            revision: kernel.revision(),
            index: last.index,
            announced_revision: head.revision,
            announced_index: head.last_log_index,
        }
        .into());
    }
    let header = BackupHeader {
        revision: head.revision,
        last_log_term: head.last_log_term,
        last_log_index: head.last_log_index,
        payload_bytes: head.total_bytes,
        payload_crc32: head.crc32,
    };
    backup_file::write_atomically(file, &backup_file::encode(&header, &payload))?;
    if c.json {
        let v = serde_json::json!({
            "file": file.display().to_string(),
            "revision": head.revision,
            "last_log_term": head.last_log_term,
            "last_log_index": head.last_log_index,
            "bytes": head.total_bytes,
            "crc32": head.crc32,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "saved revision {} (log index {}, term {}; {} bytes) to {}",
            head.revision,
            head.last_log_index,
            head.last_log_term,
            head.total_bytes,
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn restore(
    file: &Path,
    data_dir: &Path,
    id: Option<u64>,
    peers: Option<&str>,
    json: bool,
) -> Result<ExitCode, CliError> {
    // Everything is checked before the directory is touched.
    let (header, payload) = backup_file::read(file)?;
    let name = file.display().to_string();
    let damaged = |reason: String| backup_file::BackupFileError::Snapshot { file: name.clone(), reason };
    let (meta, mut kernel) = verify_snapshot_data(&payload, "the snapshot").map_err(|e| damaged(e.to_string()))?;
    // A new cluster: its first leader seals an id of its own (see `server::cluster_id`).
    kernel.forget_cluster_id();
    let inconsistent =
        |what, header, found| backup_file::BackupFileError::Inconsistent { file: name.clone(), what, header, found };
    let index = meta.last_log_id.map(|l| l.index).ok_or_else(|| damaged("it has no log position".into()))?;
    if index != header.last_log_index {
        return Err(inconsistent("log index", header.last_log_index, index).into());
    }
    if kernel.revision() != header.revision {
        return Err(inconsistent("revision", header.revision, kernel.revision()).into());
    }
    let peers = restored_peers(peers, &meta, id)?;
    check_empty(data_dir)?;

    let voters: BTreeSet<u64> = peers.keys().copied().collect();
    let nodes: BTreeMap<u64, NodeAddr> =
        peers.iter().map(|(id, addr)| (*id, NodeAddr { addr: addr.clone() })).collect();
    let membership = openraft::Membership::new(vec![voters], nodes).map_err(RestoreError::Membership)?;
    let log_id = restored_log_id(index);
    let meta =
        SnapshotMeta { last_log_id: Some(log_id), last_membership: StoredMembership::new(Some(log_id), membership) };
    let disk = FsDisk::open(data_dir).map_err(|source| CliError::File {
        action: "open the data directory",
        path: data_dir.to_path_buf(),
        source,
    })?;
    let snapshot = seed_snapshot(Arc::new(disk), &meta, &kernel)?;

    print_restored(data_dir, &snapshot, &header, index, &peers, json)?;
    Ok(ExitCode::SUCCESS)
}

/// The new cluster's voters: `--peers`, else the snapshot's own voters; `id` must be one.
fn restored_peers(
    peers: Option<&str>,
    meta: &SnapshotMeta,
    id: Option<u64>,
) -> Result<BTreeMap<u64, String>, CliError> {
    let peers: BTreeMap<u64, String> = match peers {
        Some(p) => parse_peers(p)?,
        None => {
            let m = meta.last_membership.membership();
            let voters: BTreeSet<u64> = m.voter_ids().collect();
            m.nodes().filter(|(id, _)| voters.contains(id)).map(|(id, n)| (*id, n.addr.clone())).collect()
        }
    };
    if peers.is_empty() {
        return Err(RestoreError::NoPeers.into());
    }
    if let Some(id) = id
        && !peers.contains_key(&id)
    {
        let ids: Vec<String> = peers.keys().map(u64::to_string).collect();
        return Err(RestoreError::NotAPeer { id, peers: ids.join(", ") }.into());
    }
    Ok(peers)
}

/// What was restored where, and how to start the new cluster.
fn print_restored(
    data_dir: &Path,
    snapshot: &str,
    header: &BackupHeader,
    index: u64,
    peers: &BTreeMap<u64, String>,
    json: bool,
) -> Result<(), CliError> {
    let peers_text = peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
    if json {
        let v = serde_json::json!({
            "data_dir": data_dir.display().to_string(),
            "file": snapshot,
            "revision": header.revision,
            "last_log_index": index,
            "peers": peers,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "restored revision {} (log index {index}) into {} for a new cluster of {peers_text}; restore every node's \
             data directory from this file with the same --peers, then start each (`roster node --id N --data-dir DIR \
             --peers {peers_text}`)",
            header.revision,
            data_dir.display()
        );
    }
    Ok(())
}

/// The restored snapshot's position: the saved index in term 0 (see the module doc).
fn restored_log_id(index: u64) -> LogId {
    let leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, 0);
    LogId::new(leader, index)
}

/// A data directory to seed must not hold anything: it would mix two nodes' data.
fn check_empty(dir: &Path) -> Result<(), CliError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(RestoreError::NotEmpty { dir: dir.to_path_buf() }.into()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CliError::File { action: "read", path: dir.to_path_buf(), source }),
    }
}
