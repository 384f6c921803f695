//! Backups: `roster snapshot save` streams the leader's applied state, a bounded number
//! at a time.

use super::reads::linearize;
use crate::net::wire::{
    ClientResponse, ClientResponseEnvelope, RequestError, SNAPSHOT_STREAM_CHUNK_BYTES, SnapshotHead,
};
use crate::raft::NodeId;
use crate::server::Raft;
use crate::server::leadership;
use crate::server::outbox::Outbox;
use crate::storage::SharedState;
use std::sync::Arc;

/// Snapshot exports a node makes at once for `roster snapshot save`, at most: each holds
/// an encoded copy of the whole state while it streams, so a caller that asks again and
/// again cannot multiply the node's memory. One more is refused with `SnapshotsBusy`.
pub const MAX_SNAPSHOT_EXPORTS: usize = 2;

/// The places for snapshot exports on this node.
#[derive(Clone)]
pub struct SnapshotExports(Arc<tokio::sync::Semaphore>);

impl Default for SnapshotExports {
    fn default() -> Self {
        SnapshotExports(Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOT_EXPORTS)))
    }
}

impl SnapshotExports {
    /// A place for one export, held until it is dropped; `SnapshotsBusy` when all are taken.
    pub fn try_start(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RequestError> {
        self.0.clone().try_acquire_owned().map_err(|_| RequestError::SnapshotsBusy { max: MAX_SNAPSHOT_EXPORTS })
    }
}

pub struct Backups {
    id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    exports: SnapshotExports,
}

impl Backups {
    pub fn new(id: NodeId, raft: Raft, shared: Arc<SharedState>) -> Backups {
        Backups { id, raft, shared, exports: SnapshotExports::default() }
    }

    /// A backup: on the leader, after a read-index round (so the state holds every write
    /// acknowledged before the request), the applied state as snapshot bytes, streamed in
    /// chunks on request `id` after a head that says what they hold and how to check them.
    pub async fn stream(&self, id: u64, mut outbox: Outbox) {
        // Held until the last chunk is queued: the export lives that long.
        let _place = match self.exports.try_start() {
            Ok(place) => place,
            Err(error) => {
                let _ = outbox.send(ClientResponseEnvelope { id, response: ClientResponse::Error(error) }).await;
                return;
            }
        };
        let export = match self.export().await {
            Ok(export) => export,
            Err(response) => {
                let _ = outbox.send(ClientResponseEnvelope { id, response }).await;
                return;
            }
        };
        let Some(last) = export.meta.last_log_id else {
            let reason = "nothing is applied yet".to_string();
            let response = ClientResponse::Error(RequestError::SnapshotFailed { reason });
            let _ = outbox.send(ClientResponseEnvelope { id, response }).await;
            return;
        };
        let head = SnapshotHead {
            revision: export.revision,
            last_log_term: last.committed_leader_id().term,
            last_log_index: last.index,
            total_bytes: export.data.len() as u64,
            crc32: crc32fast::hash(&export.data),
        };
        tracing::info!(revision = head.revision, bytes = head.total_bytes, "streaming a snapshot for a backup");
        if outbox.send(ClientResponseEnvelope { id, response: ClientResponse::SnapshotBegin(head) }).await.is_err() {
            return;
        }
        for chunk in export.data.chunks(SNAPSHOT_STREAM_CHUNK_BYTES) {
            let response = ClientResponse::SnapshotChunk(chunk.to_vec());
            // A closed connection ends the stream: the client went away.
            if outbox.send(ClientResponseEnvelope { id, response }).await.is_err() {
                return;
            }
        }
    }

    async fn export(&self) -> Result<crate::storage::state_machine::Export, ClientResponse> {
        if !self.raft.is_leader() {
            return Err(leadership::not_leader(&self.raft, self.id).await);
        }
        linearize(&self.raft, self.id).await?;
        self.shared.export().map_err(|e| ClientResponse::Error(RequestError::SnapshotFailed { reason: e.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_SNAPSHOT_EXPORTS, SnapshotExports};
    use crate::net::wire::RequestError;

    #[test]
    fn snapshot_exports_past_the_bound_are_refused_until_one_ends() {
        let exports = SnapshotExports::default();
        let held: Vec<_> = (0..MAX_SNAPSHOT_EXPORTS).map(|_| exports.try_start().expect("a place")).collect();
        let refused = exports.try_start().expect_err("past the bound");
        assert_eq!(refused, RequestError::SnapshotsBusy { max: MAX_SNAPSHOT_EXPORTS });
        assert!(refused.to_string().contains("retry when one has finished"), "{refused}");
        drop(held);
        assert!(exports.try_start().is_ok(), "a finished export frees its place");
    }
}
