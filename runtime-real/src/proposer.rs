//! The proposer: gathers the client commands that arrive together into one Raft entry.
//!
//! One task takes proposals from a bounded queue. While fewer than
//! `MAX_BATCHES_IN_FLIGHT` batches await their commit, whatever is queued goes out at
//! once as one batch (a lone command waits for nothing). When that many are in flight,
//! new proposals queue up and leave together when one completes: the busier the node,
//! the larger the batches, and openraft's per-entry work is shared among more commands.
//!
//! Answers go straight to the client connection a command came on, so no task waits per
//! command. A batch that fails as a whole (this node no longer leads, Raft shut down)
//! gives every command in it the same answer.

use crate::batch::{Batch, BatchReplies};
use crate::raft_types::{NodeId, Raft, TypeConfig};
use crate::wire::{ClientResponse, ClientResponseEnvelope};
use openraft::error::{ClientWriteError, RaftError};
use roster_kernel::{CommandResult, Proposal, ProposalBody, Reply};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Most proposals in one batch.
pub const MAX_BATCH_PROPOSALS: usize = 256;
/// A batch closes once its proposals reach this many encoded bytes; a single larger
/// proposal makes a batch of its own.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Batches proposed and not yet answered; beyond it, proposals gather for the next one.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Proposals waiting for a batch; beyond it, submitting waits (back-pressure on the
/// connection the command came on).
pub const QUEUE_PROPOSALS: usize = 4 * MAX_BATCH_PROPOSALS;

/// Where the answer to one proposal goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A client connection's outbox, under the request's id.
    Connection { id: u64, tx: mpsc::Sender<ClientResponseEnvelope> },
    /// A caller awaiting it.
    Caller(oneshot::Sender<ClientResponse>),
}

#[derive(Debug)]
struct Pending {
    body: ProposalBody,
    /// Encoded size, counted against `MAX_BATCH_BYTES`.
    bytes: usize,
    reply: ReplyTo,
}

/// The handle the client API submits through; the batching task ends when it is dropped.
#[derive(Clone, Debug)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching task for `raft` on node `node`.
    pub fn start(node: NodeId, raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_PROPOSALS);
        tokio::spawn(run(node, raft, rx));
        Proposer { tx }
    }

    /// Queues `body` for the next batch; the answer goes to `reply` once the batch has
    /// been committed and applied (or has failed). Waits while the queue is full.
    pub async fn submit(&self, body: ProposalBody, reply: ReplyTo) {
        let bytes = postcard::experimental::serialized_size(&body).unwrap_or(MAX_BATCH_BYTES);
        if let Err(mpsc::error::SendError(p)) = self.tx.send(Pending { body, bytes, reply }).await {
            // The node is shutting down.
            deliver(p.reply, ClientResponse::Error("write failed: the node is shutting down".into()));
        }
    }

    /// Proposes `body` and waits for its answer.
    pub async fn write(&self, body: ProposalBody) -> ClientResponse {
        let (tx, rx) = oneshot::channel();
        self.submit(body, ReplyTo::Caller(tx)).await;
        rx.await.unwrap_or_else(|_| ClientResponse::Error("write failed: the node is shutting down".into()))
    }
}

async fn run(node: NodeId, raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    // A proposal that would have pushed the previous batch past its byte bound.
    let mut carried: Option<Pending> = None;
    loop {
        // Wait for a slot first: meanwhile the queue fills and the next batch grows.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_PROPOSALS {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        tokio::spawn(propose(node, raft.clone(), batch, permit));
    }
}

/// Proposes one batch and answers each of its commands.
async fn propose(node: NodeId, raft: Raft, pending: Vec<Pending>, _permit: OwnedSemaphorePermit) {
    let at_unix_ms = crate::clock::unix_ms();
    let mut replies = Vec::with_capacity(pending.len());
    let mut proposals = Vec::with_capacity(pending.len());
    for p in pending {
        let opens_session = matches!(p.body, ProposalBody::OpenSession);
        proposals.push(Proposal { at_unix_ms, body: p.body });
        replies.push((p.reply, opens_session));
    }
    let batch = Batch::new(proposals).expect("a batch starts with one proposal");
    match raft.client_write(batch).await {
        Ok(resp) => answer_each(replies, resp.data),
        Err(e) => {
            let response = write_error(node, &e);
            for (reply, _) in replies {
                deliver(reply, response.clone());
            }
        }
    }
}

fn answer_each(replies: Vec<(ReplyTo, bool)>, results: BatchReplies) {
    debug_assert_eq!(replies.len(), results.len(), "one reply per proposal");
    let mut results = results.into_iter();
    for (reply, opens_session) in replies {
        let response = match results.next() {
            Some(result) => applied(result, opens_session),
            None => ClientResponse::Error("write failed: the state machine gave no reply for this command".into()),
        };
        deliver(reply, response);
    }
}

/// The answer to a committed and applied proposal.
fn applied(result: CommandResult, opens_session: bool) -> ClientResponse {
    match result {
        Ok(Reply::SessionOpened { session }) if opens_session => ClientResponse::SessionOpened(session),
        other => ClientResponse::Applied(other),
    }
}

/// The answer to every proposal of a batch Raft refused.
pub(crate) fn write_error(node: NodeId, e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ClientResponse {
    match e.forward_to_leader() {
        Some(f) => crate::api::forward_response(node, f),
        None => ClientResponse::Error(format!("write failed: {e}")),
    }
}

fn deliver(reply: ReplyTo, response: ClientResponse) {
    match reply {
        ReplyTo::Caller(tx) => {
            // The caller may have given up; nothing to do then.
            let _ = tx.send(response);
        }
        ReplyTo::Connection { id, tx } => match tx.try_send(ClientResponseEnvelope { id, response }) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            // A client that does not read its answers must not hold up the others in this
            // batch: wait for room on a task of its own.
            Err(mpsc::error::TrySendError::Full(env)) => {
                tokio::spawn(async move {
                    let _ = tx.send(env).await;
                });
            }
        },
    }
}
