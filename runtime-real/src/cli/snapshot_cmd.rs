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

pub async fn run(args: SnapshotArgs, c: ClientArgs) -> Result<ExitCode, String> {
    match args.op {
        SnapshotOp::Save { file } => save(&file, &c).await,
        SnapshotOp::Restore { file, data_dir, id, peers } => restore(&file, &data_dir, id, peers.as_deref(), c.json),
    }
}

async fn save(file: &Path, c: &ClientArgs) -> Result<ExitCode, String> {
    let client = c.connect().await?;
    let mut download = client.snapshot().await.map_err(|e| e.to_string())?;
    let head = download.head;
    if head.total_bytes > backup_file::MAX_BACKUP_PAYLOAD_BYTES {
        return Err(format!(
            "the leader offers a snapshot of {} bytes, over the limit of {} bytes",
            head.total_bytes,
            backup_file::MAX_BACKUP_PAYLOAD_BYTES
        ));
    }
    // Grown as chunks arrive past the first 64 MiB: the announced size is not yet proven.
    let mut payload = Vec::with_capacity(usize::try_from(head.total_bytes.min(64 << 20)).unwrap_or(0));
    while let Some(chunk) = download.next_chunk().await.map_err(|e| format!("snapshot stream: {e}"))? {
        payload.extend_from_slice(&chunk);
    }
    drop(download);
    let crc32 = crc32fast::hash(&payload);
    if crc32 != head.crc32 {
        return Err(format!(
            "the snapshot arrived damaged (checksum {crc32:#010x}, the leader sent {:#010x}): nothing written; save again",
            head.crc32
        ));
    }
    // Every layer is checked now, so a backup that was written can be restored.
    let (meta, kernel) = verify_snapshot_data(&payload, "the received snapshot").map_err(|e| e.to_string())?;
    let last = meta.last_log_id.ok_or("the received snapshot has no log position: nothing written")?;
    if kernel.revision() != head.revision || last.index != head.last_log_index {
        return Err(format!(
            "the received snapshot holds revision {} at log index {}, the leader announced {} at {}: nothing written",
            kernel.revision(),
            last.index,
            head.revision,
            head.last_log_index
        ));
    }
    let header = BackupHeader {
        revision: head.revision,
        last_log_term: head.last_log_term,
        last_log_index: head.last_log_index,
        payload_bytes: head.total_bytes,
        payload_crc32: head.crc32,
    };
    backup_file::write_atomically(file, &backup_file::encode(&header, &payload)).map_err(|e| e.to_string())?;
    if c.json {
        let v = serde_json::json!({
            "file": file.display().to_string(),
            "revision": head.revision,
            "last_log_term": head.last_log_term,
            "last_log_index": head.last_log_index,
            "bytes": head.total_bytes,
            "crc32": head.crc32,
        });
        outln!("{}", serde_json::to_string_pretty(&v).map_err(|e| format!("cannot encode JSON: {e}"))?);
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

fn restore(file: &Path, data_dir: &Path, id: Option<u64>, peers: Option<&str>, json: bool) -> Result<ExitCode, String> {
    // Everything is checked before the directory is touched.
    let (header, payload) = backup_file::read(file).map_err(|e| e.to_string())?;
    let name = file.display().to_string();
    let damaged = |reason: String| backup_file::BackupFileError::Snapshot { file: name.clone(), reason }.to_string();
    let (meta, mut kernel) = verify_snapshot_data(&payload, "the snapshot").map_err(|e| damaged(e.to_string()))?;
    // A new cluster: its first leader seals an id of its own (see `server::cluster_id`).
    kernel.forget_cluster_id();
    let inconsistent = |what, header, found| {
        backup_file::BackupFileError::Inconsistent { file: name.clone(), what, header, found }.to_string()
    };
    let index = meta.last_log_id.map(|l| l.index).ok_or_else(|| damaged("it has no log position".into()))?;
    if index != header.last_log_index {
        return Err(inconsistent("log index", header.last_log_index, index));
    }
    if kernel.revision() != header.revision {
        return Err(inconsistent("revision", header.revision, kernel.revision()));
    }
    let peers: BTreeMap<u64, String> = match peers {
        Some(p) => parse_peers(p).map_err(|e| e.to_string())?,
        None => {
            let m = meta.last_membership.membership();
            let voters: BTreeSet<u64> = m.voter_ids().collect();
            m.nodes().filter(|(id, _)| voters.contains(id)).map(|(id, n)| (*id, n.addr.clone())).collect()
        }
    };
    if peers.is_empty() {
        return Err("no peers: give the new cluster with --peers 1=HOST:PORT,...".into());
    }
    if let Some(id) = id
        && !peers.contains_key(&id)
    {
        let ids: Vec<String> = peers.keys().map(u64::to_string).collect();
        return Err(format!("--id {id} is not one of the peers ({}): add it to --peers", ids.join(", ")));
    }
    check_empty(data_dir)?;

    let voters: BTreeSet<u64> = peers.keys().copied().collect();
    let nodes: BTreeMap<u64, NodeAddr> =
        peers.iter().map(|(id, addr)| (*id, NodeAddr { addr: addr.clone() })).collect();
    let membership = openraft::Membership::new(vec![voters], nodes).map_err(|e| format!("bad --peers: {e}"))?;
    let log_id = restored_log_id(index);
    let meta =
        SnapshotMeta { last_log_id: Some(log_id), last_membership: StoredMembership::new(Some(log_id), membership) };
    let disk = FsDisk::open(data_dir).map_err(|e| e.to_string())?;
    let snapshot = seed_snapshot(Arc::new(disk), &meta, &kernel).map_err(|e| e.to_string())?;

    let peers_text = peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
    if json {
        let v = serde_json::json!({
            "data_dir": data_dir.display().to_string(),
            "file": snapshot,
            "revision": header.revision,
            "last_log_index": index,
            "peers": peers,
        });
        outln!("{}", serde_json::to_string_pretty(&v).map_err(|e| format!("cannot encode JSON: {e}"))?);
    } else {
        outln!(
            "restored revision {} (log index {index}) into {} for a new cluster of {peers_text}; restore every node's \
             data directory from this file with the same --peers, then start each (`roster node --id N --data-dir DIR \
             --peers {peers_text}`)",
            header.revision,
            data_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The restored snapshot's position: the saved index in term 0 (see the module doc).
fn restored_log_id(index: u64) -> LogId {
    let leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, 0);
    LogId::new(leader, index)
}

/// A data directory to seed must not hold anything: it would mix two nodes' data.
fn check_empty(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(format!(
                "{} is not empty: restore seeds the data directory of a new node; give an absent or empty directory \
                 (move the old one aside first)",
                dir.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}
