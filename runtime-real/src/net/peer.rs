//! The Raft network: how this node reaches its peers. One persistent framed TCP (or
//! mutual TLS) connection per peer client, reconnected on failure; RPC deadlines from
//! openraft.

use crate::net::transport::{self, Connector, Reader, TransportError, Writer};
use crate::net::wire::{Channel, MAX_PEER_FRAME_BYTES, PeerRequest, PeerResponse, SNAPSHOT_CHUNK_BYTES};
use crate::raft::{LogId, NodeAddr, NodeId, TypeConfig};
use crate::rt::Timeout;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use std::future::Future;
use std::time::Duration;

/// The shortest deadline of one peer RPC (connect included).
pub const MIN_RPC_TIMEOUT_MS: u64 = 300;

/// Creates one `PeerClient` per target; openraft owns them.
pub struct PeerNetwork {
    pub self_id: NodeId,
    /// The peer key this node proves, with its cluster id (read at each connect: a node
    /// that is readmitted learns it after its clients were made).
    pub peer: roster_client::PeerAuth,
    /// Plain TCP, or TLS presenting this node's certificate (peers require one).
    pub connector: Connector,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            credential: roster_client::Credential::Peer(self.peer.clone()),
            connector: self.connector.clone(),
            conn: std::sync::Mutex::new(None),
            metrics: self.metrics.clone(),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    credential: roster_client::Credential,
    connector: Connector,
    /// madsim's `TcpStream` is not `Sync` and openraft needs `Sync`: the mutex provides
    /// it; `&mut self` methods reach inside with `get_mut`, so it is never locked.
    conn: std::sync::Mutex<Option<(Reader, Writer)>>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Why one RPC failed: before anything was sent (unreachable) or after (network).
enum RpcFailure {
    Unreachable(TransportError),
    Network(TransportError),
}

impl PeerClient {
    fn conn_mut(&mut self) -> &mut Option<(Reader, Writer)> {
        self.conn.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    async fn call(&mut self, req: &PeerRequest, ttl: Duration) -> Result<PeerResponse, RpcFailure> {
        // openraft gives AppendEntries its heartbeat interval (40 ms) as the deadline: on a
        // loaded machine a large batch or a scheduling hiccup would fail the RPC and tear
        // down a healthy connection. A quorum's other members keep the lease meanwhile.
        let ttl = ttl.max(Duration::from_millis(MIN_RPC_TIMEOUT_MS));
        let deadline = tokio::time::Instant::now() + ttl;
        // The connection is taken out for the exchange and put back only after a whole
        // answer was read. openraft may drop this future at any point (its heartbeat has a
        // deadline of its own): the connection then goes with it, instead of staying with
        // half a frame sent, or an answer still on its way that the next call would read
        // as its own (an old AppendEntries success taken for a new one).
        let mut conn = match self.conn_mut().take() {
            Some(conn) => conn,
            None => {
                let timeout_ms = ttl.as_millis() as u64;
                let (addr, credential) = (&self.addr, &self.credential);
                transport::connect(addr, credential, Channel::Raft, MAX_PEER_FRAME_BYTES, timeout_ms, &self.connector)
                    .await
                    .map_err(RpcFailure::Unreachable)?
            }
        };
        let addr = self.addr.clone();
        let sent_at = tokio::time::Instant::now();
        let exchange = async {
            let (r, w) = &mut conn;
            w.send(req).await?;
            r.recv::<PeerResponse>().await
        };
        let result = match Timeout::new(exchange, deadline).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr, timeout_ms: ttl.as_millis() as u64 }),
        };
        match result {
            Ok(resp) => {
                self.metrics.observe_peer_rtt(self.target, sent_at.elapsed());
                *self.conn_mut() = Some(conn);
                Ok(resp)
            }
            // The stream may hold half a frame now: it is dropped, the next call connects anew.
            Err(e) => Err(RpcFailure::Network(e)),
        }
    }

    fn rpc_error(&self, f: RpcFailure) -> RPCError<TypeConfig> {
        match f {
            RpcFailure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            RpcFailure::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected(&mut self, what: &str, got: PeerResponse) -> RPCError<TypeConfig> {
        *self.conn_mut() = None;
        let e = TransportError::Protocol(format!("{what} from node {}: unexpected reply {got:?}", self.target));
        RPCError::Network(NetworkError::new(&e))
    }
}

/// Room left in a peer frame for the request's enum tag and the frame header.
const FRAME_MARGIN_BYTES: usize = 64;

/// Keeps only as many of `rpc`'s entries as fit in `budget` encoded bytes (at least one;
/// a single larger entry is left to fail on its own) and returns the last kept entry's log
/// id if any were cut. openraft sends the rest next, after a `PartialSuccess`.
fn fit_in_frame(rpc: &mut AppendEntriesRequest<TypeConfig>, budget: usize) -> Option<LogId> {
    if rpc.entries.len() <= 1 || encoded_len(rpc) <= budget {
        return None;
    }
    let entries = std::mem::take(&mut rpc.entries);
    let mut used = encoded_len(rpc);
    let keep = entries
        .iter()
        .position(|e| {
            used += encoded_len(e);
            used > budget
        })
        .unwrap_or(entries.len())
        .max(1);
    rpc.entries = entries;
    if keep == rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|e| e.log_id)
}

/// Encoded size (postcard). Sizing cannot fail for a type that encodes; if it did, the
/// send itself would say why.
fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(0)
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Entries that would not fit in one frame are left for the next call.
        let cut_after = fit_in_frame(&mut rpc, MAX_PEER_FRAME_BYTES - FRAME_MARGIN_BYTES);
        match self.call(&PeerRequest::Append(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Append(AppendEntriesResponse::Success)) if cut_after.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(cut_after))
            }
            Ok(PeerResponse::Append(resp)) => Ok(resp),
            Ok(PeerResponse::Failed(reason)) => Err(remote_failed(&reason)),
            Ok(other) => Err(self.unexpected("append", other)),
            Err(f) => Err(self.rpc_error(f)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let candidate_vote = rpc.vote;
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(resp)) => Ok(resp),
            Ok(PeerResponse::Failed(reason)) => Ok(vote_not_granted(self.target, candidate_vote, &reason)),
            Ok(other) => Err(self.unexpected("vote", other)),
            Err(RpcFailure::Unreachable(e)) => Ok(vote_not_granted(self.target, candidate_vote, &e.to_string())),
            Err(f) => Err(self.rpc_error(f)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let candidate_vote = rpc.vote;
        match self.call(&PeerRequest::PreVote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(resp)) => Ok(resp),
            Ok(PeerResponse::Failed(reason)) => Ok(vote_not_granted(self.target, candidate_vote, &reason)),
            Ok(other) => Err(self.unexpected("pre-vote", other)),
            Err(RpcFailure::Unreachable(e)) => Ok(vote_not_granted(self.target, candidate_vote, &e.to_string())),
            Err(f) => Err(self.rpc_error(f)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&PeerRequest::TransferLeader(req), option.hard_ttl()).await {
            Ok(PeerResponse::TransferLeader(resp)) => Ok(resp),
            Ok(PeerResponse::Failed(reason)) => Err(remote_failed(&reason)),
            Ok(other) => Err(self.unexpected("transfer-leader", other)),
            Err(f) => Err(self.rpc_error(f)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: openraft::alias::VoteOf<TypeConfig>,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let outcome = {
            let send = std::pin::pin!(self.send_snapshot(vote, snapshot, option.hard_ttl()));
            let cancel = std::pin::pin!(cancel);
            // `futures::future::select` polls the left future first: deterministic.
            match futures::future::select(cancel, send).await {
                futures::future::Either::Left((closed, _)) => Err(closed),
                futures::future::Either::Right((result, _)) => Ok(result),
            }
        };
        match outcome {
            Ok(result) => result,
            Err(closed) => {
                // Cancelled mid-stream: the receiver holds a partial snapshot; start over.
                *self.conn_mut() = None;
                Err(StreamingError::Closed(closed))
            }
        }
    }
}

impl PeerClient {
    async fn send_snapshot(
        &mut self,
        vote: openraft::alias::VoteOf<TypeConfig>,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>,
        ttl: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot;
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
            let last = end == data.len();
            let req = PeerRequest::SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                last,
            };
            let resp = self.call(&req, ttl).await.map_err(|f| match f {
                RpcFailure::Unreachable(e) => StreamingError::Unreachable(Unreachable::new(&e)),
                RpcFailure::Network(e) => StreamingError::Network(NetworkError::new(&e)),
            })?;
            match (resp, last) {
                (PeerResponse::ChunkAccepted, false) => offset = end,
                (PeerResponse::SnapshotInstalled(resp), true) => return Ok(resp),
                (PeerResponse::Failed(reason), _) => {
                    let e = TransportError::Protocol(reason);
                    return Err(StreamingError::Network(NetworkError::new(&e)));
                }
                (other, _) => {
                    *self.conn_mut() = None;
                    let e = TransportError::Protocol(format!("snapshot chunk: unexpected reply {other:?}"));
                    return Err(StreamingError::Network(NetworkError::new(&e)));
                }
            }
        }
    }
}

/// A peer that declined to handle a (pre-)vote request (a node that waits after an empty
/// start: see `server::vote_gate`), or that could not be connected to (not listening yet
/// while the members of a restarted cluster start), did not grant it. Said as a plain
/// rejection carrying the candidate's own vote, it counts against the quorum exactly as
/// the error did and changes nothing else in the candidate (openraft only adopts a higher
/// vote, or notes a longer log, from a rejection); but openraft does not log a normal
/// formation or start at WARN as a protocol violation or an unreachable node. A peer that
/// took the request and then failed or timed out is still an error.
fn vote_not_granted(target: NodeId, candidate_vote: crate::raft::Vote, reason: &str) -> VoteResponse<TypeConfig> {
    tracing::debug!(target, reason, "vote not granted: the peer declined or is not listening");
    VoteResponse::new(candidate_vote, None, false)
}

fn remote_failed(reason: &str) -> RPCError<TypeConfig> {
    let e = TransportError::Protocol(format!("peer could not handle the request: {reason}"));
    RPCError::Unreachable(Unreachable::new(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::entry::Batch;
    use crate::raft::{Entry, Vote};
    use crate::storage::wal::tests::lid;
    use openraft::entry::RaftEntry;
    use roster_kernel::{Command, Proposal, ProposalBody, Request, SessionId};

    /// An entry of about `value_bytes` encoded bytes.
    fn entry(index: u64, value_bytes: usize) -> Entry {
        let command = Command::KvPut { key: format!("k{index}"), value: "v".repeat(value_bytes) };
        let request = Request { session: SessionId(1), seq: index, command };
        Entry::new_normal(
            lid(1, index),
            Batch::one(Proposal {
                at_unix_ms: 0,
                body: ProposalBody::Client { request, by: roster_kernel::SessionOwner::Node },
            }),
        )
    }

    fn request(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: sizes.iter().enumerate().map(|(i, &n)| entry(i as u64 + 1, n)).collect(),
            leader_commit: None,
        }
    }

    /// A peer that answers request N with `Failed("answer N")`, the first one late.
    async fn numbering_peer() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (mut r, mut w) = transport::framed(stream, MAX_PEER_FRAME_BYTES);
                if accept_peer(&mut r, &mut w).await.is_err() {
                    continue;
                }
                while r.recv::<PeerRequest>().await.is_ok() {
                    n += 1;
                    if n == 1 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    if w.send(&PeerResponse::Failed(format!("answer {n}"))).await.is_err() {
                        break;
                    }
                }
            }
        });
        (addr, task)
    }

    fn test_key() -> roster_client::PeerKey {
        roster_client::PeerKey::parse("a-test-peer-key-of-more-than-32-bytes").unwrap()
    }

    /// The accepting side of the peer handshake, as node 2.
    async fn accept_peer(r: &mut transport::Reader, w: &mut transport::Writer) -> Result<(), TransportError> {
        use roster_client::wire::{Auth, Hello, HelloReply, PeerProof};
        let Hello { auth: Auth::Peer { from, nonce, .. }, .. } = r.recv::<Hello>().await? else {
            return Err(TransportError::Protocol("not a peer".into()));
        };
        let mine = [9u8; 32];
        let proof = test_key().accepting_proof(&nonce, &mine, from, 2);
        w.send(&HelloReply::Challenge { node: 2, nonce: mine, proof }).await?;
        let answer = r.recv::<PeerProof>().await?;
        assert!(test_key().verify_connecting(&answer.proof, &nonce, &mine, from, 2));
        w.send(&HelloReply::Welcome { node: 2, role: "node".into() }).await
    }

    #[tokio::test]
    async fn an_answer_to_a_dropped_call_is_never_taken_for_the_next_ones() {
        let (addr, server) = numbering_peer().await;
        let mut client = PeerClient {
            target: 2,
            addr,
            credential: roster_client::Credential::Peer(roster_client::PeerAuth {
                key: test_key(),
                from: 1,
                cluster: std::sync::Arc::new(|| None),
                nonces: std::sync::Arc::new(|| [1u8; 32]),
            }),
            connector: Connector::Plain,
            conn: std::sync::Mutex::new(None),
            metrics: Default::default(),
        };
        let vote = PeerRequest::PreVote(VoteRequest::new(Vote::new(1, 1), None));
        // openraft's heartbeat gives up on its own deadline, dropping the call mid-exchange.
        let first = tokio::time::timeout(Duration::from_millis(50), client.call(&vote, Duration::from_secs(5))).await;
        assert!(first.is_err(), "the first call is dropped before its (late) answer");
        tokio::time::sleep(Duration::from_millis(300)).await;
        match client.call(&vote, Duration::from_secs(5)).await {
            Ok(PeerResponse::Failed(answer)) => assert_ne!(answer, "answer 1", "read the dropped call's answer"),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => panic!("the second call failed"),
        }
        server.abort();
    }

    #[test]
    fn entries_that_fit_are_all_sent() {
        let mut rpc = request(&[100, 100, 100]);
        assert_eq!(fit_in_frame(&mut rpc, 10_000), None);
        assert_eq!(rpc.entries.len(), 3);
    }

    #[test]
    fn entries_past_the_budget_are_left_for_the_next_call() {
        let mut rpc = request(&[1_000, 1_000, 1_000, 1_000]);
        assert_eq!(fit_in_frame(&mut rpc, 2_500), Some(lid(1, 2)));
        assert_eq!(rpc.entries.len(), 2);
        assert!(encoded_len(&rpc) <= 2_500);
    }

    #[test]
    fn a_single_large_entry_is_still_sent_alone() {
        let mut rpc = request(&[5_000, 10]);
        assert_eq!(fit_in_frame(&mut rpc, 1_000), Some(lid(1, 1)));
        assert_eq!(rpc.entries.len(), 1);
        let mut alone = request(&[5_000]);
        assert_eq!(fit_in_frame(&mut alone, 1_000), None);
        assert_eq!(alone.entries.len(), 1);
    }
}
