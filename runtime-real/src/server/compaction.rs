//! Snapshots by log bytes as well as by entry count.
//!
//! openraft takes a snapshot every `snapshot_every_entries` log entries, and the log since
//! the last snapshot is held in memory. A log entry carries a batch of up to
//! `MAX_BATCH_PROPOSALS` commands, so entries alone do not bound that memory: this task
//! also asks for a snapshot once `snapshot_log_bytes` (config) have been appended since
//! the last one, whichever comes first.

use crate::server::Raft;
use crate::storage::LogReader;
use openraft_rt::WatchReceiver;
use std::time::Duration;

/// How often the appended bytes are looked at.
const CHECK_EVERY_MS: u64 = 250;

/// Runs until Raft stops; `after_bytes` appended since the last snapshot call for the next.
pub async fn run(raft: Raft, log: LogReader, after_bytes: u64) {
    let mut last_snapshot = raft.metrics().borrow_watched().snapshot;
    let mut baseline = log.appended_bytes();
    loop {
        tokio::time::sleep(Duration::from_millis(CHECK_EVERY_MS)).await;
        let (running, snapshot) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            (m.running_state.is_ok(), m.snapshot)
        };
        if !running {
            return;
        }
        let appended = log.appended_bytes();
        if snapshot != last_snapshot {
            // A snapshot was taken (by the entry count, or the one asked for below).
            last_snapshot = snapshot;
            baseline = appended;
            continue;
        }
        let since = appended.saturating_sub(baseline);
        if since >= after_bytes {
            tracing::info!(bytes = since, "log bytes since the last snapshot reached the bound: snapshot asked for");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // Not again until as many more bytes arrive, whether or not this one is built
            // (one may already be under way).
            baseline = appended;
        }
    }
}
