//! The listener: accepts TCP connections (through TLS when it is on), authenticates the
//! caller in the handshake (a token, or the peer key's challenge and response), then
//! serves Raft RPCs to peers or the client API to clients, checking every request against
//! the caller's role. A bad frame closes only the connection it came on; the node keeps
//! serving everyone else.

use crate::net::transport::{self, Reader, TransportError, Writer};
use crate::net::wire::RequestError;
use crate::net::wire::{
    Auth, Channel, ClientEnvelope, ClientResponse, ClientResponseEnvelope, Hello, HelloReply, MAX_CLIENT_FRAME_BYTES,
    MAX_HELLO_BYTES, MAX_PEER_FRAME_BYTES, PeerProof, PeerRequest, PeerResponse,
};
use crate::raft::TypeConfig;
use crate::server::api::Api;
use crate::server::api::served::{Routed, route};
use crate::server::authority::Caller;
use crate::server::outbox::{CLIENT_OUTBOX, InFlight, Outgoing};
use crate::server::proposer::ReplyTo;
use crate::server::snapshot_receive::{ChunkTaken, MAX_PEER_SNAPSHOT_BYTES, SnapshotReceiver};
use crate::tls::{Accepted, Acceptor};
use roster_kernel::codec::CodecError;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT_MS: u64 = 5_000;
/// After answering an HTTP client, how long and how much of the rest of its request is
/// read and dropped before closing (closing on unread bytes resets the connection).
const HTTP_LINGER_MS: u64 = 1_000;
const HTTP_LINGER_BYTES: usize = 64 << 10;
/// Most responses gathered into one write.
const WRITE_BATCH: usize = 256;

/// Connections served at once on the binary port (peers, the node's own clients and
/// every client), at most. One more is refused with a clear hello reply and closed, so a
/// flood of idle connections cannot take the node's memory or file descriptors; the
/// node lowers it further when its open-files limit is small (`connection_cap`), so the
/// WAL's descriptors stay reserved.
pub const MAX_CONNECTIONS: usize = 4_096;
/// Descriptors kept free of connections: the WAL's segments, snapshots, the data files.
pub const RESERVED_FDS: u64 = 512;

/// The connection cap a node with `open_files` descriptors uses: what is left after the
/// reserve and the HTTP listener's own cap, at most `MAX_CONNECTIONS`.
pub fn connection_cap(open_files: u64, http_connections: u64) -> usize {
    let left = open_files.saturating_sub(RESERVED_FDS + http_connections);
    usize::try_from(left).unwrap_or(usize::MAX).clamp(16, MAX_CONNECTIONS)
}

pub async fn serve(listener: TcpListener, api: Arc<Api>, acceptor: Acceptor, cap: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tokio::spawn(refuse_busy(stream));
                    continue;
                };
                let api = api.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = serve_connection(stream, api, acceptor).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(tcp: TcpStream, api: Arc<Api>, acceptor: Acceptor) -> Result<(), TransportError> {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    // The TLS handshake and the hello share one deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(HELLO_TIMEOUT_MS);
    let timed_out = || TransportError::Timeout { addr: peer.clone(), timeout_ms: HELLO_TIMEOUT_MS };
    let accepted = crate::rt::Timeout::new(acceptor.accept(tcp, &peer), deadline).await.map_err(|_| timed_out())?;
    let stream = match accepted {
        Ok(Accepted::Stream(stream)) => stream,
        Ok(Accepted::Plaintext(tcp)) => return refuse_plaintext(tcp, &peer, deadline).await,
        Err(e @ TransportError::Tls { .. }) => {
            tracing::warn!(%peer, "refused connection: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let certified = stream.peer_certified();
    // Until the caller is authenticated, only a hello-sized frame is read.
    let (mut r, mut w) = transport::framed(stream, MAX_HELLO_BYTES);
    let hello = crate::rt::Timeout::new(r.recv::<Hello>(), deadline).await.map_err(|_| timed_out())?;
    let hello = match hello {
        Ok(h) => h,
        Err(e) => return end_before_hello(&mut r, &mut w, &peer, e).await,
    };
    let caller =
        match authenticate(&mut r, &mut w, &api, &acceptor, certified, hello.auth, hello.channel, deadline).await {
            Ok(caller) => caller,
            Err(HandshakeEnd::Refused(reason)) => {
                tracing::warn!(%peer, channel = ?hello.channel, "refused connection: {reason}");
                let _ = w.send(&HelloReply::Refused { reason }).await;
                return Ok(());
            }
            // A peer stopping (or restarting) while it connects: nothing to refuse.
            Err(HandshakeEnd::PeerLeft(e)) => {
                tracing::debug!(%peer, channel = ?hello.channel, error = %e, "peer left during the handshake");
                return Ok(());
            }
        };
    match (caller, hello.channel) {
        (Caller::Node(from), Channel::Raft) => {
            r.set_max_frame_bytes(MAX_PEER_FRAME_BYTES);
            w.set_max_frame_bytes(MAX_PEER_FRAME_BYTES);
            serve_peer(r, w, api, from).await
        }
        (caller, _) => {
            r.set_max_frame_bytes(MAX_CLIENT_FRAME_BYTES);
            w.set_max_frame_bytes(MAX_CLIENT_FRAME_BYTES);
            serve_client(r, w, api, peer, caller).await
        }
    }
}

/// How a handshake ended without a caller.
enum HandshakeEnd {
    /// The caller is refused, for this reason (sent to it, and logged).
    Refused(String),
    /// The caller closed the connection before it answered the challenge.
    PeerLeft(TransportError),
}

impl From<String> for HandshakeEnd {
    fn from(reason: String) -> Self {
        HandshakeEnd::Refused(reason)
    }
}

impl From<crate::server::authority::Refusal> for HandshakeEnd {
    fn from(refusal: crate::server::authority::Refusal) -> Self {
        HandshakeEnd::Refused(refusal.to_string())
    }
}

impl From<&str> for HandshakeEnd {
    fn from(reason: &str) -> Self {
        HandshakeEnd::Refused(reason.to_string())
    }
}

/// Proves who the caller is, answering `Welcome` on success; `Err` is the reason it is
/// refused (sent to it, and logged), or that it left. A token never opens a Raft connection: only the peer
/// key does, and with TLS on only with a certificate from the cluster's CA as well.
#[allow(clippy::too_many_arguments)] // one handshake's state, passed once
async fn authenticate(
    r: &mut transport::Reader,
    w: &mut transport::Writer,
    api: &Api,
    acceptor: &Acceptor,
    certified: bool,
    auth: Auth,
    channel: Channel,
    deadline: tokio::time::Instant,
) -> Result<Caller, HandshakeEnd> {
    let node = api.node_id();
    match auth {
        Auth::Token(_) if channel == Channel::Raft => Err("a token never opens a peer (Raft) connection: nodes prove \
                                                          the cluster's peer key (peer_key_file)"
            .into()),
        Auth::Token(token) => {
            let (caller, standing) = api.credentials().authenticate(&token, crate::rt::clock::unix_ms())?;
            let role = standing.principal.to_string();
            w.send(&HelloReply::Welcome { node, role }).await.map_err(HandshakeEnd::PeerLeft)?;
            Ok(caller)
        }
        Auth::Peer { from, cluster, nonce } => {
            if acceptor.is_tls() && !certified {
                // Mutual TLS between peers: the peer key alone does not admit one.
                return Err("peer connections need a certificate signed by the cluster's CA (the node's tls_cert \
                            and tls_key)"
                    .into());
            }
            let key = api.peer_key();
            let mine = crate::rt::random_bytes();
            let proof = key.accepting_proof(&nonce, &mine, from, node);
            w.send(&HelloReply::Challenge { node, nonce: mine, proof }).await.map_err(HandshakeEnd::PeerLeft)?;
            let answer = match crate::rt::Timeout::new(r.recv::<PeerProof>(), deadline).await {
                Err(_) => return Err("no answer to the peer challenge in time".into()),
                Ok(Err(e @ (TransportError::Closed | TransportError::Io(_)))) => return Err(HandshakeEnd::PeerLeft(e)),
                Ok(Err(e)) => return Err(format!("bad answer to the peer challenge: {e}").into()),
                Ok(Ok(answer)) => answer,
            };
            if !key.verify_connecting(&answer.proof, &nonce, &mine, from, node) {
                return Err(format!("a caller naming itself node {from} does not hold this cluster's peer key").into());
            }
            if let Some(reason) = api.identity().refuse_peer(from, cluster, crate::rt::clock::unix_ms()) {
                return Err(reason.into());
            }
            if channel == Channel::Raft && !api.is_member_or_unformed(from) {
                return Err(format!(
                    "node {from} is not in this cluster's membership: add it first (roster member add {from} ADDR)"
                )
                .into());
            }
            w.send(&HelloReply::Welcome { node, role: "node".into() }).await.map_err(HandshakeEnd::PeerLeft)?;
            Ok(Caller::Node(from))
        }
    }
}

/// Past `MAX_CONNECTIONS`: a refusal in the hello's place, then close.
async fn refuse_busy(tcp: TcpStream) {
    let (_, mut w) = transport::framed(tcp, MAX_HELLO_BYTES);
    let reason = "node busy: it serves as many connections as it may (its connection cap); retry shortly".to_string();
    let refusal = HelloReply::Refused { reason };
    let _ = crate::rt::Timeout::new(
        w.send(&refusal),
        tokio::time::Instant::now() + std::time::Duration::from_millis(1_000),
    )
    .await;
}

/// A connection whose hello did not come or did not parse: answered as well as it can
/// be (an HTTP request gets an HTTP answer, a TLS client a refusal it can read), then closed.
async fn end_before_hello(r: &mut Reader, w: &mut Writer, peer: &str, e: TransportError) -> Result<(), TransportError> {
    match e {
        e @ TransportError::HttpRequest { .. } => {
            tracing::warn!(%peer, "refused connection: {e}");
            answer_http(r, w, &e).await;
            Ok(())
        }
        e @ TransportError::TlsOnPlainPort => {
            // Any plain answer tells a TLS client that this side does not speak TLS (it
            // reads it as a bad record); its unread handshake is drained first, so that
            // closing sends no reset that could destroy the answer.
            tracing::warn!(%peer, "refused connection: {e}");
            let _ = w.send(&HelloReply::Refused { reason: e.to_string() }).await;
            let _ = crate::rt::Timeout::new(
                r.discard_until_closed(HTTP_LINGER_BYTES),
                tokio::time::Instant::now() + std::time::Duration::from_millis(HTTP_LINGER_MS),
            )
            .await;
            Ok(())
        }
        // Gone before it said hello (a peer or client that stopped while connecting).
        e @ (TransportError::Closed | TransportError::Io(_)) => {
            tracing::debug!(%peer, error = %e, "connection ended before its hello");
            Ok(())
        }
        e => {
            tracing::warn!(%peer, error = %e, "refused connection: bad handshake");
            let _ = w.send(&HelloReply::Refused { reason: format!("bad handshake: {e}") }).await;
            Err(e)
        }
    }
}

async fn serve_peer(mut r: Reader, mut w: Writer, api: Arc<Api>, from: u64) -> Result<(), TransportError> {
    let raft = api.raft().clone();
    let node = api.node_id();
    // A snapshot arriving in chunks; dropped if the connection ends before the last one.
    let mut snapshot = SnapshotReceiver::new(MAX_PEER_SNAPSHOT_BYTES);
    loop {
        let req = match r.recv::<PeerRequest>().await {
            Ok(req) => req,
            Err(TransportError::Closed) => return Ok(()),
            // A peer that stopped or restarted resets its connections: no fault of the frames.
            Err(e @ TransportError::Io(_)) => {
                tracing::debug!(peer = from, error = %e, "peer connection ended");
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(peer = from, error = %e, "closing peer connection: bad frame");
                return Err(e);
            }
        };
        let gate = api.vote_gate();
        let refusal = match &req {
            PeerRequest::Vote(_) | PeerRequest::PreVote(_) => gate.refuse_vote(node, from),
            PeerRequest::Append(_) | PeerRequest::SnapshotChunk { .. } => gate.refuse_replication(node),
            PeerRequest::TransferLeader(_) => gate.refuse_vote(node, from),
        };
        // A node that is stopping (a clean stop, while the others still run) answers so
        // itself: openraft logs a request to a stopped core as an ERROR.
        let pass = api.peer_intake().enter().await;
        let stopping = pass.is_none() || crate::server::raft_stopped::has_stopped(&raft);
        let refusal = refusal.or_else(|| stopping.then(|| format!("node {node} is stopping")));
        if let Some(reason) = refusal {
            w.send(&PeerResponse::Failed(reason)).await?;
            continue;
        }
        let resp = answer_peer(&raft, &mut snapshot, req, from).await;
        w.send(&resp).await?;
    }
}

/// What Raft answers a peer's request (one that the vote gate and the intake let through).
async fn answer_peer(
    raft: &crate::server::Raft,
    snapshot: &mut SnapshotReceiver,
    req: PeerRequest,
    from: u64,
) -> PeerResponse {
    match req {
        PeerRequest::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(resp) => PeerResponse::Append(resp),
            Err(e) => PeerResponse::Failed(e.to_string()),
        },
        PeerRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(resp) => PeerResponse::Vote(resp),
            Err(e) => PeerResponse::Failed(e.to_string()),
        },
        PeerRequest::PreVote(rpc) => match raft.pre_vote(rpc).await {
            Ok(resp) => PeerResponse::Vote(resp),
            Err(e) => PeerResponse::Failed(e.to_string()),
        },
        PeerRequest::TransferLeader(rpc) => match raft.handle_transfer_leader(rpc).await {
            Ok(resp) => PeerResponse::TransferLeader(resp),
            Err(e) => PeerResponse::Failed(e.to_string()),
        },
        PeerRequest::SnapshotChunk { vote, meta, offset, data, last } => {
            let current = openraft_rt::WatchReceiver::borrow_watched(&raft.metrics()).vote;
            // A snapshot is named by the last log entry it holds.
            let id = format!("{:?}", meta.last_log_id);
            match snapshot.take(&vote, &current, &id, offset, &data, last) {
                Ok(ChunkTaken::Buffered) => PeerResponse::ChunkAccepted,
                Ok(ChunkTaken::Complete(data)) => {
                    let snapshot = openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data };
                    match raft.install_full_snapshot(vote, snapshot).await {
                        Ok(resp) => PeerResponse::SnapshotInstalled(resp),
                        Err(e) => PeerResponse::Failed(e.to_string()),
                    }
                }
                Err(refused) => {
                    tracing::warn!(peer = from, "refused a snapshot chunk: {refused}");
                    PeerResponse::Failed(refused.to_string())
                }
            }
        }
    }
}

async fn serve_client(
    mut r: Reader,
    w: Writer,
    api: Arc<Api>,
    peer: String,
    caller: Caller,
) -> Result<(), TransportError> {
    let _open = crate::metrics::Open::new(&api.metrics().client_connections);
    let (tx, rx) = mpsc::channel::<Outgoing>(CLIENT_OUTBOX);
    let writer = tokio::spawn(write_answers(w, rx, peer.clone()));
    let in_flight = InFlight::new(tx.clone());
    let result = loop {
        // A writer that ended (the socket failed) can answer nothing more: stop reading.
        let env = tokio::select! {
            biased;
            () = tx.closed() => break Ok(()),
            env = r.recv::<ClientEnvelope>() => env,
        };
        let env = match env {
            Ok(env) => env,
            Err(TransportError::Closed) => break Ok(()),
            // A client that exits, or drops a connection with bytes unread, resets it: the
            // socket is gone, no fault of the frames, and nothing can be answered on it.
            Err(TransportError::Io(io)) if is_hang_up(&io) => {
                tracing::debug!(%peer, error = %io, "client connection ended");
                break Err(TransportError::Io(io));
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing client connection: bad frame");
                let msg = ClientResponse::Error(crate::net::wire::RequestError::BadFrame { reason: e.to_string() });
                let _ = tx.send(Outgoing::small(ClientResponseEnvelope { id: 0, response: msg })).await;
                break Err(e);
            }
        };
        // Every request holds its answer's place in the outbox from here until it is
        // answered: with every place spoken for (`CLIENT_OUTBOX` requests in flight on this
        // connection), reading stops until one is answered.
        let Some(slot) = in_flight.reserve().await else { break Ok(()) };
        serve_request(&api, &caller, &in_flight, slot, env, &peer).await;
    };
    // The writer ends once every sender is gone (answers in progress keep theirs).
    drop(in_flight);
    drop(tx);
    // Let queued responses (including the error above) reach the client before closing.
    let _ = writer.await;
    result
}

/// One request on a client connection, holding its answer's `slot`: checked against the
/// caller as it stands now (a token revoked since the hello is refused from here on; a
/// refusal applies nothing), then handed to the proposer (writes, answered through the
/// slot: no task per write) or served in a task of its own.
async fn serve_request(
    api: &Arc<Api>,
    caller: &Caller,
    in_flight: &InFlight,
    slot: mpsc::OwnedPermit<Outgoing>,
    env: ClientEnvelope,
    peer: &str,
) {
    let refuse = |slot: mpsc::OwnedPermit<Outgoing>, error| {
        slot.send(Outgoing::small(ClientResponseEnvelope { id: env.id, response: ClientResponse::Error(error) }));
    };
    let (sees_credentials, owner) = match api.admit(caller, &env.request) {
        Ok(admitted) => {
            if let Some(audit) = admitted.audit {
                api.record_audit(audit).await;
            }
            (admitted.sees_credentials, admitted.owner)
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "refused a request");
            return refuse(slot, error);
        }
    };
    let request = match route(env.request, owner) {
        Ok(Routed::Write(body)) => return api.submit(body, ReplyTo::Connection { id: env.id, slot }).await,
        Ok(Routed::Serve(request)) => request,
        Err(error) => return refuse(slot, error),
    };
    let stream = match request.is_stream().then(|| in_flight.open_stream()).transpose() {
        Ok(place) => place,
        Err(error) => return refuse(slot, error),
    };
    // A read whose answer may be large waits for a bulk place (reading stops meanwhile)
    // and holds it until its answer is written.
    let bulk = if request.is_bulk_read() { Some(in_flight.reserve_bulk().await) } else { None };
    let api = api.clone();
    let outbox = in_flight.outbox(slot, bulk);
    tokio::spawn(async move {
        let _stream = stream;
        api.handle(env.id, request, outbox, sees_credentials).await
    });
}

/// The one writer of a client connection: answers in the order they were queued, each
/// burst in one write. An answer that cannot be encoded (over the frame limit) is
/// replaced by a typed error for its request, and the connection goes on; a socket that
/// fails ends the writer, which the reader sees (`tx.closed()`), and is logged.
async fn write_answers(mut w: Writer, mut rx: mpsc::Receiver<Outgoing>, peer: String) {
    let mut batch = Vec::new();
    let mut frames = Vec::new();
    // Bulk places of the answers in `frames`, freed once they are written.
    let mut places = Vec::new();
    while let Some(out) = rx.recv().await {
        batch.push(out);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        frames.clear();
        for Outgoing { env, bulk } in batch.drain(..) {
            places.extend(bulk);
            match w.encode(&env) {
                Ok(frame) => frames.extend_from_slice(&frame),
                Err(e) => {
                    let refusal = unencodable(env.id, &env.response, &e);
                    tracing::warn!(%peer, id = env.id, "answer replaced by an error: {refusal}");
                    let frame =
                        w.encode(&ClientResponseEnvelope { id: env.id, response: ClientResponse::Error(refusal) });
                    match frame {
                        Ok(frame) => frames.extend_from_slice(&frame),
                        Err(e) => {
                            tracing::error!(%peer, id = env.id, error = %e, "cannot encode even the error: closing");
                            return;
                        }
                    }
                }
            }
        }
        if let Err(e) = w.send_encoded(&frames).await {
            tracing::info!(%peer, error = %e, "client connection's writer ended: the socket failed");
            return;
        }
        places.clear();
    }
}

/// The typed error that stands in for an answer `e` kept from being encoded.
fn unencodable(id: u64, response: &ClientResponse, e: &TransportError) -> RequestError {
    let request = format!("request {id} ({})", answer_kind(response));
    match e {
        TransportError::Codec(CodecError::Oversized { len, max }) => {
            RequestError::AnswerTooLarge { request, bytes: *len, max_bytes: *max }
        }
        other => RequestError::AnswerUnencodable { request, reason: other.to_string() },
    }
}

/// What an answer was, for the error that replaces it.
fn answer_kind(response: &ClientResponse) -> &'static str {
    match response {
        ClientResponse::Query(_) => "a query's answer",
        ClientResponse::Events(_) => "watch events",
        ClientResponse::Status(_) => "a status",
        ClientResponse::Applied(_) => "a write's reply",
        ClientResponse::SnapshotChunk(_) | ClientResponse::SnapshotBegin(_) => "a snapshot piece",
        _ => "an answer",
    }
}

/// A client that spoke plain TCP to a node with TLS on: its hello is read (closing on
/// unread bytes would reset the connection and lose the answer), then refused in a plain
/// frame that it can read, saying what to do.
async fn refuse_plaintext(tcp: TcpStream, peer: &str, deadline: tokio::time::Instant) -> Result<(), TransportError> {
    let (mut r, mut w) = transport::framed(tcp, MAX_HELLO_BYTES);
    let hello = crate::rt::Timeout::new(r.recv::<Hello>(), deadline).await;
    if let Ok(Err(e @ TransportError::HttpRequest { .. })) = &hello {
        tracing::warn!(%peer, "refused a plaintext connection: TLS is on here, and {e}");
        answer_http(&mut r, &mut w, e).await;
        return Ok(());
    }
    tracing::warn!(%peer, "refused a plaintext connection: TLS is on here (tls_cert, tls_key, tls_ca)");
    let reason = "this node requires TLS: give the cluster's CA with --tls-ca FILE (or ROSTER_TLS_CA)".to_string();
    let _ = w.send(&HelloReply::Refused { reason }).await;
    Ok(())
}

/// A plain HTTP/1.1 400 for a client that sent HTTP to the binary port, saying where the
/// HTTP API is; then the connection closes.
async fn answer_http(r: &mut Reader, w: &mut Writer, e: &TransportError) {
    let head_only = matches!(e, TransportError::HttpRequest { method } if method == "HEAD");
    let answer = http_refusal(head_only);
    if w.send_unframed_and_close(answer.as_bytes()).await.is_err() {
        return;
    }
    let _ = crate::rt::Timeout::new(
        r.discard_until_closed(HTTP_LINGER_BYTES),
        tokio::time::Instant::now() + std::time::Duration::from_millis(HTTP_LINGER_MS),
    )
    .await;
}

fn http_refusal(head_only: bool) -> String {
    let body = "400 Bad Request: this port speaks Roster's binary protocol (for nodes, the roster CLI and the \
                client library), not HTTP.\nThe HTTP API is on the node's http_listen address, which is off by \
                default for `roster node`.\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body }
    )
}

/// Whether a read failed because the other side went away (reset, aborted, or closed in
/// the middle of a frame), rather than because of what it sent.
fn is_hang_up(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::{MAX_CONNECTIONS, RESERVED_FDS, connection_cap, http_refusal, is_hang_up, write_answers};
    use crate::net::transport;
    use crate::net::wire::{ClientResponse, ClientResponseEnvelope, MAX_CLIENT_FRAME_BYTES, RequestError};
    use crate::server::outbox::{CLIENT_OUTBOX, Outgoing};
    use tokio::sync::mpsc;

    #[test]
    fn a_client_that_went_away_is_no_bad_frame() {
        use std::io::{Error, ErrorKind};
        for kind in
            [ErrorKind::ConnectionReset, ErrorKind::ConnectionAborted, ErrorKind::BrokenPipe, ErrorKind::UnexpectedEof]
        {
            assert!(is_hang_up(&Error::from(kind)), "{kind:?} is the other side leaving");
        }
        // Garbled bytes (a TLS record that does not decrypt) are still a fault worth a warning.
        assert!(!is_hang_up(&Error::from(ErrorKind::InvalidData)));
    }

    #[tokio::test]
    async fn the_writer_never_dies_silently() {
        // The request after an answer too large for a frame is still answered, and the
        // answer too large becomes a typed error for its own request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await.expect("connect") });
        let (server, _) = listener.accept().await.expect("accept");
        let client = client.await.expect("connected");
        let (_, w) = transport::framed(server, MAX_CLIENT_FRAME_BYTES);
        let (mut r, _w) = transport::framed(client, MAX_CLIENT_FRAME_BYTES);
        let (tx, rx) = mpsc::channel(CLIENT_OUTBOX);
        let writer = tokio::spawn(write_answers(w, rx, "test".into()));
        let huge = ClientResponse::SnapshotChunk(vec![7; MAX_CLIENT_FRAME_BYTES + 1]);
        tx.send(Outgoing::small(ClientResponseEnvelope { id: 1, response: huge })).await.expect("queued");
        tx.send(Outgoing::small(ClientResponseEnvelope { id: 2, response: ClientResponse::Done }))
            .await
            .expect("queued");
        let first: ClientResponseEnvelope = r.recv().await.expect("an answer for request 1");
        assert_eq!(first.id, 1);
        match first.response {
            ClientResponse::Error(RequestError::AnswerTooLarge { bytes, max_bytes, .. }) => {
                assert!(bytes > max_bytes && max_bytes == MAX_CLIENT_FRAME_BYTES, "{bytes} {max_bytes}");
            }
            other => panic!("expected AnswerTooLarge, got {other:?}"),
        }
        let second: ClientResponseEnvelope = r.recv().await.expect("the connection goes on");
        assert!(second.id == 2 && matches!(second.response, ClientResponse::Done), "{second:?}");
        // A socket that fails ends the writer, and the sending side sees it closed.
        drop(r);
        drop(_w);
        let mut sent = 0;
        while tx.send(Outgoing::small(ClientResponseEnvelope { id: 3, response: ClientResponse::Done })).await.is_ok() {
            sent += 1;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert!(sent < 100_000, "the writer never ended");
        }
        writer.await.expect("the writer ended without a panic");
        assert!(tx.is_closed());
    }

    #[test]
    fn the_connection_cap_leaves_the_reserve_free() {
        assert_eq!(connection_cap(1 << 20, 1024), MAX_CONNECTIONS);
        assert_eq!(connection_cap(4096, 1024), (4096 - 1024 - RESERVED_FDS) as usize);
        assert_eq!(connection_cap(256, 1024), 16, "a tiny limit still serves a few");
    }

    #[test]
    fn the_http_refusal_is_a_whole_http_answer_naming_the_binary_protocol() {
        let answer = http_refusal(false);
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert!(body.contains("binary protocol") && body.contains("http_listen"), "{body}");
        let head_only = http_refusal(true);
        assert!(head_only.ends_with("\r\n\r\n") && head_only.contains(&format!("Content-Length: {}", body.len())));
    }
}
