//! The proposer: gathers the client commands that arrive together into one Raft entry.
//!
//! `MAX_BATCHES_IN_FLIGHT` workers take proposals from one bounded queue. An idle worker
//! takes whatever is queued at once as one batch (a lone command waits for nothing). When
//! every worker waits on Raft, new proposals queue up and leave together with the next
//! free one: the busier the node, the larger the batches, and openraft's per-entry work
//! is shared among more commands.
//!
//! Answers go straight to the client connection a command came on, so no task waits per
//! command. A batch that fails as a whole (this node no longer leads, Raft shut down)
//! gives every command in it the same answer.

use crate::metrics::Metrics;
use crate::net::wire::{ClientResponse, ClientResponseEnvelope, RequestError, Unavailable};
use crate::raft::entry::{Batch, BatchReplies};
use crate::raft::{NodeId, TypeConfig};
use crate::server::Raft;
use crate::server::leadership::Redirect;
use openraft::error::{ClientWriteError, RaftError};
use roster_kernel::{CommandResult, Proposal, ProposalBody, Reply};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

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
/// How often one batch may wait for a leader and be proposed again (a follower that wins
/// the election meanwhile, then waits for its lease) before its refusal is answered.
const MAX_REDIRECTS: u32 = 3;

/// Where the answer to one proposal goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A slot reserved in a client connection's outbox, for the answer under the
    /// request's id: answering never waits, and a client that stops reading its answers
    /// stops being read once its outbox is spoken for.
    Connection { id: u64, slot: mpsc::OwnedPermit<crate::server::outbox::Outgoing> },
    /// A caller awaiting it.
    Caller(oneshot::Sender<ClientResponse>),
}

#[derive(Debug)]
struct Pending {
    body: ProposalBody,
    /// Encoded size, counted against `MAX_BATCH_BYTES`.
    bytes: usize,
    reply: ReplyTo,
    /// When it was submitted: its answer's latency is measured from here.
    queued_at: tokio::time::Instant,
}

/// The handle the client API submits through; the workers end when every handle is dropped.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer").field("queued", &(QUEUE_PROPOSALS - self.tx.capacity())).finish()
    }
}

impl Proposer {
    /// Starts the batching workers for `raft` on node `node`.
    pub fn start(node: NodeId, raft: Raft, metrics: Arc<Metrics>) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_PROPOSALS);
        let queue = Arc::new(Mutex::new(Queue { rx, carried: None }));
        for _ in 0..MAX_BATCHES_IN_FLIGHT {
            tokio::spawn(worker(node, raft.clone(), queue.clone(), metrics.clone()));
        }
        Proposer { tx, metrics }
    }

    /// Queues `body` for the next batch; the answer goes to `reply` once the batch has
    /// been committed and applied (or has failed). Waits while the queue is full.
    pub async fn submit(&self, body: ProposalBody, reply: ReplyTo) {
        let bytes = postcard::experimental::serialized_size(&body).unwrap_or(MAX_BATCH_BYTES);
        self.metrics.proposals_pending.inc();
        let queued_at = tokio::time::Instant::now();
        if let Err(mpsc::error::SendError(p)) = self.tx.send(Pending { body, bytes, reply, queued_at }).await {
            // The node is shutting down.
            self.metrics.proposals_pending.dec();
            deliver(p.reply, ClientResponse::RetryLater(Unavailable::ShuttingDown));
        }
    }

    /// Proposes `body` and waits for its answer.
    pub async fn write(&self, body: ProposalBody) -> ClientResponse {
        let (tx, rx) = oneshot::channel();
        self.submit(body, ReplyTo::Caller(tx)).await;
        rx.await.unwrap_or(ClientResponse::RetryLater(Unavailable::ShuttingDown))
    }
}

/// The queue the workers take batches from, one worker at a time.
struct Queue {
    rx: mpsc::Receiver<Pending>,
    /// A proposal that would have pushed the previous batch past its byte bound.
    carried: Option<Pending>,
}

impl Queue {
    /// Waits for a proposal, then takes whatever else is queued, within the bounds.
    /// `None` once every `Proposer` handle is gone.
    async fn next_batch(&mut self) -> Option<Vec<Pending>> {
        let first = match self.carried.take() {
            Some(p) => p,
            None => self.rx.recv().await?,
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_PROPOSALS {
            let Ok(next) = self.rx.try_recv() else { break };
            if bytes + next.bytes > MAX_BATCH_BYTES {
                self.carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        Some(batch)
    }
}

/// One of `MAX_BATCHES_IN_FLIGHT` workers: takes a batch, proposes it, answers, repeats.
/// While every worker waits on Raft, proposals gather in the queue for the next batch.
async fn worker(node: NodeId, raft: Raft, queue: Arc<Mutex<Queue>>, metrics: Arc<Metrics>) {
    loop {
        // The lock is held while waiting for the first proposal: the other idle workers
        // wait behind it (fairly, so the order is the same every run).
        let Some(batch) = queue.lock().await.next_batch().await else { return };
        let count = batch.len() as u64;
        let queued_at: Vec<tokio::time::Instant> = batch.iter().map(|p| p.queued_at).collect();
        let committed = propose(node, &raft, batch).await;
        for at in queued_at {
            metrics.observe_request("submit", at.elapsed());
        }
        metrics.proposals_pending.dec_by(count as i64);
        if committed {
            metrics.proposals_committed.inc_by(count)
        } else {
            metrics.proposals_failed.inc_by(count)
        };
    }
}

/// Proposes one batch and answers each of its commands; whether it was committed.
async fn propose(node: NodeId, raft: &Raft, pending: Vec<Pending>) -> bool {
    let at_unix_ms = crate::rt::clock::unix_ms();
    let mut replies = Vec::with_capacity(pending.len());
    let mut proposals = Vec::with_capacity(pending.len());
    for p in pending {
        let opens_session = matches!(p.body, ProposalBody::OpenSession { .. });
        proposals.push(Proposal { at_unix_ms, body: p.body });
        replies.push((p.reply, opens_session));
    }
    let batch = Batch::new(proposals).expect("a batch starts with one proposal");
    // A refused batch was never appended (Raft checks leadership first), so proposing it
    // again cannot apply it twice; client commands are deduplicated by session anyway.
    let mut redirects = 0;
    let response = loop {
        match raft.client_write(batch.clone()).await {
            Ok(resp) => {
                answer_each(replies, resp.data);
                return true;
            }
            Err(e) => match e.forward_to_leader() {
                Some(f) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    match crate::server::leadership::redirect(raft, node, f).await {
                        Redirect::Again => continue,
                        Redirect::Answer(response) => break response,
                    }
                }
                _ => break write_error(node, raft, &e),
            },
        }
    };
    for (reply, _) in replies {
        deliver(reply, response.clone());
    }
    false
}

fn answer_each(replies: Vec<(ReplyTo, bool)>, results: BatchReplies) {
    debug_assert_eq!(replies.len(), results.len(), "one reply per proposal");
    let mut results = results.into_iter();
    for (reply, opens_session) in replies {
        let response = match results.next() {
            Some(result) => applied(result, opens_session),
            None => ClientResponse::Error(RequestError::NoReply),
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
fn write_error(node: NodeId, raft: &Raft, e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ClientResponse {
    match e.forward_to_leader() {
        Some(f) => crate::server::leadership::forward_response(raft, node, f),
        None => ClientResponse::Error(RequestError::WriteFailed { reason: e.to_string() }),
    }
}

fn deliver(reply: ReplyTo, response: ClientResponse) {
    match reply {
        ReplyTo::Caller(tx) => {
            // The caller may have given up; nothing to do then.
            let _ = tx.send(response);
        }
        ReplyTo::Connection { id, slot } => {
            // Dropped if the connection has closed meanwhile.
            slot.send(crate::server::outbox::Outgoing::small(ClientResponseEnvelope { id, response }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::{Command, Request, SessionId};

    fn put(seq: u64, value_bytes: usize) -> Pending {
        let command = Command::KvPut { key: format!("k{seq}"), value: "v".repeat(value_bytes) };
        let body = ProposalBody::Client {
            request: Request { session: SessionId(1), seq, command },
            by: roster_kernel::SessionOwner::Node,
        };
        let bytes = postcard::experimental::serialized_size(&body).unwrap();
        let (tx, _rx) = oneshot::channel();
        Pending { body, bytes, reply: ReplyTo::Caller(tx), queued_at: tokio::time::Instant::now() }
    }

    fn seqs(batch: &[Pending]) -> Vec<u64> {
        batch
            .iter()
            .map(|p| match &p.body {
                ProposalBody::Client { request: r, .. } => r.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn queue(items: Vec<Pending>) -> (mpsc::Sender<Pending>, Queue) {
        let (tx, rx) = mpsc::channel(QUEUE_PROPOSALS);
        for p in items {
            tx.try_send(p).expect("room");
        }
        (tx, Queue { rx, carried: None })
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_in_order_up_to_the_count() {
        let n = MAX_BATCH_PROPOSALS as u64 + 10;
        let (_tx, mut q) = queue((1..=n).map(|i| put(i, 10)).collect());
        let first = q.next_batch().await.unwrap();
        assert_eq!(seqs(&first), (1..=MAX_BATCH_PROPOSALS as u64).collect::<Vec<_>>());
        let rest = q.next_batch().await.unwrap();
        assert_eq!(seqs(&rest), (MAX_BATCH_PROPOSALS as u64 + 1..=n).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_proposal_past_the_byte_bound_opens_the_next_batch() {
        let big = MAX_BATCH_BYTES / 3;
        let (_tx, mut q) = queue((1..=4).map(|i| put(i, big)).collect());
        let first = q.next_batch().await.unwrap();
        assert_eq!(seqs(&first), vec![1, 2]);
        assert!(first.iter().map(|p| p.bytes).sum::<usize>() <= MAX_BATCH_BYTES);
        assert_eq!(seqs(&q.next_batch().await.unwrap()), vec![3, 4]);
    }

    #[tokio::test]
    async fn a_proposal_larger_than_the_bound_goes_alone() {
        let (_tx, mut q) = queue(vec![put(1, 10), put(2, MAX_BATCH_BYTES + 1), put(3, 10)]);
        assert_eq!(seqs(&q.next_batch().await.unwrap()), vec![1]);
        assert_eq!(seqs(&q.next_batch().await.unwrap()), vec![2]);
        assert_eq!(seqs(&q.next_batch().await.unwrap()), vec![3]);
    }

    #[tokio::test]
    async fn the_queue_ends_when_every_handle_is_gone() {
        let (tx, mut q) = queue(vec![put(1, 10)]);
        drop(tx);
        assert_eq!(seqs(&q.next_batch().await.unwrap()), vec![1]);
        assert!(q.next_batch().await.is_none());
    }

    #[test]
    fn only_a_session_opening_answers_with_the_session() {
        let opened = Ok(Reply::SessionOpened { session: SessionId(9) });
        assert!(matches!(applied(opened.clone(), true), ClientResponse::SessionOpened(SessionId(9))));
        assert!(matches!(applied(opened, false), ClientResponse::Applied(Ok(Reply::SessionOpened { .. }))));
    }
}
