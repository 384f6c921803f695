//! Reads: queries of the applied state (linearizable through a read-index round, or
//! stale from this node once it has caught up) and watches of its change stream.

use super::watch::{WATCH_FRAME_BYTES, WatchStep, watch_frames, watch_step};
use crate::net::wire::{ClientResponse, ClientResponseEnvelope, Consistency, Unavailable};
use crate::raft::NodeId;
use crate::server::Raft;
use crate::server::leadership;
use crate::server::outbox::Outbox;
use crate::server::vote_gate::VoteGate;
use crate::storage::SharedState;
use openraft::ReadPolicy;
use openraft_rt::WatchReceiver;
use std::sync::Arc;

pub struct Reads {
    id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    vote_gate: Arc<VoteGate>,
}

impl Reads {
    pub fn new(id: NodeId, raft: Raft, shared: Arc<SharedState>, vote_gate: Arc<VoteGate>) -> Reads {
        Reads { id, raft, shared, vote_gate }
    }

    /// The applied state, for the HTTP event stream (which shares `watch_step`).
    pub fn applied(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// A stale read is refused while this node has not caught up (the vote gate says
    /// why); a linearizable one waits for a read-index round, or names the leader.
    pub async fn query(&self, query: roster_kernel::Query, consistency: Consistency) -> ClientResponse {
        let applied = self.raft.metrics().borrow_watched().last_applied.map(|l| l.index);
        let waiting = if consistency == Consistency::Stale { self.vote_gate.waiting(applied) } else { None };
        if let Some(reason) = waiting {
            return ClientResponse::RetryLater(Unavailable::NotCaughtUp { reason });
        }
        if consistency == Consistency::Linearizable
            && let Err(resp) = linearize(&self.raft, self.id).await
        {
            return resp;
        }
        ClientResponse::Query(crate::storage::with_kernel(&self.shared, |sm| sm.query(&query)))
    }

    /// Streams the events after `after_revision` on request `id` until the client goes
    /// or the history it needs was compacted; `sees` as in `watch_step`.
    pub async fn watch(&self, id: u64, after_revision: u64, mut outbox: Outbox, sees: bool) {
        let mut seen = after_revision;
        let mut changes = self.shared.subscribe();
        loop {
            let response = match watch_step(&self.shared, seen, sees) {
                WatchStep::Current { .. } => {
                    if changes.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                WatchStep::Events { events, through } => {
                    seen = through;
                    for response in watch_frames(events, WATCH_FRAME_BYTES) {
                        if outbox.send(ClientResponseEnvelope { id, response }).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                WatchStep::Compacted { oldest_available } => ClientResponse::WatchCompacted { oldest_available },
            };
            let end = matches!(response, ClientResponse::WatchCompacted { .. });
            if outbox.send(ClientResponseEnvelope { id, response }).await.is_err() || end {
                return;
            }
        }
    }
}

/// A read-index round: `Ok` once this node's applied state holds every write
/// acknowledged before the call; else the answer that sends the caller on.
pub async fn linearize(raft: &Raft, node: NodeId) -> Result<(), ClientResponse> {
    match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.forward_to_leader() {
            Some(f) => leadership::forward_response(raft, node, f),
            None => ClientResponse::RetryLater(Unavailable::ReadNotConfirmed { reason: e.to_string() }),
        }),
    }
}
