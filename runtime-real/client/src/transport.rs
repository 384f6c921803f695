//! Framed connections over TCP, or TLS over TCP, with the kernel's codec: one write per
//! frame, nodelay on, frame size bounded both ways.
//!
//! [`Stream`] is either; everything above it (framing, the handshake, the client's and the
//! node's connections) has one code path. The simulator build has no TLS variant.

use roster_kernel::codec::{self, CodecError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connection to {addr} timed out after {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Codec(#[from] CodecError),
    #[error("connection closed by the other side")]
    Closed,
    #[error("refused by {addr}: {reason}")]
    Refused { addr: String, reason: String },
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The first bytes of the stream are an HTTP request line, not a frame.
    #[error(
        "got an HTTP request ({method} ...) on the binary port: this port speaks Roster's binary protocol; \
         the HTTP API is on the node's http_listen address (off by default for `roster node`)"
    )]
    HttpRequest { method: String },
    /// The first bytes of the stream are an HTTP status line: the address is an HTTP listener.
    #[error(
        "got an HTTP answer: this address is an HTTP listener, not a node's binary port; \
         give the node's listen address (--listen), not its http_listen address"
    )]
    HttpResponse,
    /// The TLS handshake, or a TLS error right after it (the node refusing this side's
    /// certificate), named in words.
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    /// The first bytes of the stream are a TLS handshake, on a port that has TLS off.
    #[error(
        "got a TLS handshake, but TLS is off on this node: connect without --tls-ca, or give the node \
         tls_cert, tls_key and tls_ca"
    )]
    TlsOnPlainPort,
}

/// A connection: plain TCP, or TLS over TCP (client or server side).
pub enum Stream {
    Plain(TcpStream),
    #[cfg(not(madsim))]
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(not(madsim))]
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the other side presented a certificate that the CA verified.
    pub fn peer_certified(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(not(madsim))]
            Stream::Tls(s) => s.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(not(madsim))]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(not(madsim))]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(not(madsim))]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(not(madsim))]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a connection to a node is made: plain TCP, or TLS verified against a CA.
#[derive(Clone, Debug, Default)]
pub enum Connector {
    #[default]
    Plain,
    #[cfg(not(madsim))]
    Tls(crate::tls::ClientTls),
}

impl Connector {
    /// Wraps a connected socket; for TLS, runs the handshake, verifying the node's
    /// certificate for the host part of `addr`.
    async fn secure(&self, addr: &str, tcp: TcpStream) -> Result<Stream, TransportError> {
        let _ = addr; // only TLS names the host
        match self {
            Connector::Plain => Ok(Stream::Plain(tcp)),
            #[cfg(not(madsim))]
            Connector::Tls(tls) => {
                let (config, files) = tls.current();
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                    TransportError::Tls { addr: addr.to_string(), reason: format!("{host:?} is not a host name: {e}") }
                })?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_failure(addr, &files, e))?;
                Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(stream))))
            }
        }
    }

    /// Names a TLS error that surfaced after the handshake (in TLS 1.3 the node checks
    /// this side's certificate after the client considers the handshake done).
    fn explain(&self, addr: &str, e: TransportError) -> TransportError {
        match (self, e) {
            #[cfg(not(madsim))]
            (Connector::Tls(tls), TransportError::Io(io)) => tls_failure(addr, &tls.current().1, io),
            #[cfg(not(madsim))]
            (Connector::Tls(_), TransportError::Codec(_) | TransportError::Closed) => TransportError::Tls {
                addr: addr.to_string(),
                reason: "the node closed the connection during the handshake (see its log for why)".into(),
            },
            (_, e) => {
                let _ = addr;
                e
            }
        }
    }
}

#[cfg(not(madsim))]
fn tls_failure(addr: &str, files: &crate::tls::TlsFiles, e: std::io::Error) -> TransportError {
    match crate::tls::rustls_error(&e) {
        Some(tls) => {
            TransportError::Tls { addr: addr.to_string(), reason: crate::tls::describe_client_failure(tls, files) }
        }
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => TransportError::Tls {
            addr: addr.to_string(),
            reason: "the node closed the connection during the handshake (see its log for why)".into(),
        },
        None => TransportError::Io(e),
    }
}

/// How HTTP begins: the first four bytes of each request method (and of HTTP/2's
/// preface), read as a frame length they would claim over a gigabyte.
const HTTP_REQUEST_STARTS: [&[u8; 4]; 10] =
    [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI "];
/// How an HTTP answer begins (`HTTP/1.1 400 ...`).
const HTTP_RESPONSE_START: &[u8; 4] = b"HTTP";

/// How a TLS handshake begins: a handshake record (22) of TLS major version 3. A frame's
/// first byte is the top byte of its length, 0 for every frame under 16 MiB.
const TLS_RECORD_START: [u8; 2] = [0x16, 0x03];

/// Names HTTP, or TLS, at the start of a stream, from its first four bytes. Only the start
/// is checked: after the first frame, the same bytes are a length like any other.
fn http_at_start(first: &[u8]) -> Option<TransportError> {
    if first.get(..2) == Some(&TLS_RECORD_START[..]) {
        return Some(TransportError::TlsOnPlainPort);
    }
    let head: &[u8; 4] = first.get(..4)?.try_into().ok()?;
    if head == HTTP_RESPONSE_START {
        return Some(TransportError::HttpResponse);
    }
    if !HTTP_REQUEST_STARTS.contains(&head) {
        return None;
    }
    let method: String = first.iter().take(8).take_while(|b| b.is_ascii_uppercase()).map(|&b| b as char).collect();
    Some(TransportError::HttpRequest { method })
}

/// Reads whole frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes before this offset are consumed; compacted lazily so that a burst of many
    /// small frames costs one copy, not one shift of the whole buffer per frame.
    start: usize,
    max_frame_bytes: usize,
    /// No frame has been read yet: the first bytes may still turn out to be HTTP.
    at_stream_start: bool,
}

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
            start: 0,
            max_frame_bytes,
            at_stream_start: true,
        }
    }

    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    /// The next message, or `Closed` at a clean end of stream between frames.
    ///
    /// An HTTP request or answer at the start of the stream is `HttpRequest` /
    /// `HttpResponse`, not an oversized frame: someone pointed HTTP at the binary port.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, TransportError> {
        loop {
            if self.at_stream_start
                && let Some(e) = http_at_start(&self.buf[self.start..])
            {
                return Err(e);
            }
            if let Some((msg, used)) = codec::decode_frame::<T>(&self.buf[self.start..], self.max_frame_bytes)? {
                self.at_stream_start = false;
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(msg);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            let n = match self.inner.read_buf(&mut self.buf).await {
                Ok(n) => n,
                // TLS reports a peer that closed without a close_notify as an error. The
                // framing still catches a cut: between frames it is an end like TCP's.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if !self.buf.is_empty() {
                    codec::check_eof(&self.buf)?;
                }
                return Err(TransportError::Closed);
            }
        }
    }

    /// Reads and drops what the other side still sends, until it closes or `max_bytes`
    /// have come. Before closing on a client that spoke another protocol: closing with
    /// unread bytes makes TCP send a reset, which can destroy the answer in flight.
    pub async fn discard_until_closed(&mut self, max_bytes: usize) -> Result<(), TransportError> {
        let mut dropped = self.buf.len() - self.start;
        self.buf.clear();
        self.start = 0;
        while dropped < max_bytes {
            self.buf.reserve(READ_CHUNK_BYTES);
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                break;
            }
            dropped += n;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Writes whole frames, each in one write.
pub struct FrameWriter<W> {
    inner: W,
    max_frame_bytes: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, max_frame_bytes: usize) -> Self {
        FrameWriter { inner, max_frame_bytes }
    }

    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    /// Sends several messages with one write (and one flush): under load this turns a
    /// syscall per response into a syscall per burst.
    pub async fn send_batch<T: Serialize>(&mut self, msgs: &[T]) -> Result<(), TransportError> {
        let mut out = Vec::new();
        for m in msgs {
            out.extend_from_slice(&codec::encode_frame(m, self.max_frame_bytes)?);
        }
        self.inner.write_all(&out).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Encodes one frame without sending it (to check it alone, then send many at once).
    pub fn encode<T: Serialize>(&self, msg: &T) -> Result<Vec<u8>, TransportError> {
        Ok(codec::encode_frame(msg, self.max_frame_bytes)?)
    }

    /// Writes frames made by `encode`, in one write.
    pub async fn send_encoded(&mut self, frames: &[u8]) -> Result<(), TransportError> {
        self.inner.write_all(frames).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Writes bytes that are not a frame (a plain answer to a client that spoke another
    /// protocol), then ends this direction of the stream.
    pub async fn send_unframed_and_close(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.inner.write_all(bytes).await?;
        self.inner.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), TransportError> {
        let frame = codec::encode_frame(msg, self.max_frame_bytes)?;
        self.inner.write_all(&frame).await?;
        // madsim's simulated stream sends only on flush; real TCP's flush is a no-op.
        self.inner.flush().await?;
        Ok(())
    }
}

pub type Reader = FrameReader<tokio::io::ReadHalf<Stream>>;
pub type Writer = FrameWriter<tokio::io::WriteHalf<Stream>>;

/// Splits a connected stream into framed halves.
pub fn framed(stream: impl Into<Stream>, max_frame_bytes: usize) -> (Reader, Writer) {
    let stream = stream.into();
    set_nodelay(stream.tcp());
    let (r, w) = tokio::io::split(stream);
    (FrameReader::new(r, max_frame_bytes), FrameWriter::new(w, max_frame_bytes))
}

/// Nagle + delayed ACK cost ~40 ms per RPC in the prototype.
pub fn set_nodelay(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// Connects with a deadline (TLS handshake included), says hello and checks the answer.
pub async fn connect(
    addr: &str,
    credential: &crate::peer_auth::Credential,
    channel: crate::wire::Channel,
    max_frame_bytes: usize,
    timeout_ms: u64,
    connector: &Connector,
) -> Result<(Reader, Writer), TransportError> {
    let deadline = std::time::Duration::from_millis(timeout_ms);
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect { addr: addr.to_string(), source })?;
        set_nodelay(&tcp);
        let stream = connector.secure(addr, tcp).await?;
        let (mut r, mut w) = framed(stream, max_frame_bytes);
        hello(&mut r, &mut w, addr, credential, channel).await.map_err(|e| connector.explain(addr, e))?;
        Ok((r, w))
    };
    match crate::Timeout::new(handshake, tokio::time::Instant::now() + deadline).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Timeout { addr: addr.to_string(), timeout_ms }),
    }
}

/// The connecting side of the handshake: a token, or the peer key's challenge and
/// response (the accepting node must prove the key first).
async fn hello(
    r: &mut Reader,
    w: &mut Writer,
    addr: &str,
    credential: &crate::peer_auth::Credential,
    channel: crate::wire::Channel,
) -> Result<(), TransportError> {
    use crate::peer_auth::Credential;
    use crate::wire::{Auth, Hello, HelloReply, PeerProof};
    let refused = |reason: String| TransportError::Refused { addr: addr.to_string(), reason };
    let (auth, peer) = match credential {
        Credential::Token(token) => (Auth::Token(token.clone()), None),
        Credential::Peer(peer) => {
            let nonce = (peer.nonces)();
            (Auth::Peer { from: peer.from, cluster: (peer.cluster)(), nonce }, Some((peer, nonce)))
        }
    };
    w.send(&Hello { auth, channel }).await?;
    match (r.recv::<HelloReply>().await?, peer) {
        (HelloReply::Welcome { .. }, None) => Ok(()),
        (HelloReply::Refused { reason }, _) => Err(refused(reason)),
        (HelloReply::Challenge { node, nonce: theirs, proof }, Some((peer, mine))) => {
            if !peer.key.verify_accepting(&proof, &mine, &theirs, peer.from, node) {
                return Err(refused(format!("node {node} does not hold this cluster's peer key")));
            }
            let proof = peer.key.connecting_proof(&mine, &theirs, peer.from, node);
            w.send(&PeerProof { proof }).await?;
            match r.recv::<HelloReply>().await? {
                HelloReply::Welcome { .. } => Ok(()),
                HelloReply::Refused { reason } => Err(refused(reason)),
                HelloReply::Challenge { .. } => Err(TransportError::Protocol("a second peer challenge".into())),
            }
        }
        (HelloReply::Welcome { .. }, Some(_)) => {
            Err(TransportError::Protocol("welcomed as a peer without proving the peer key".into()))
        }
        (HelloReply::Challenge { .. }, None) => {
            Err(TransportError::Protocol("a peer challenge answered a token's hello".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first_message(bytes: &[u8]) -> Result<String, TransportError> {
        FrameReader::new(bytes, 1 << 20).recv::<String>().await
    }

    #[tokio::test]
    async fn an_http_request_at_the_start_is_named_not_an_oversized_frame() {
        for (request, method) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET"),
            ("POST /v1/kv HTTP/1.1\r\n", "POST"),
            ("DELETE /v1/kv/a HTTP/1.1\r\n", "DELETE"),
            ("OPTIONS * HTTP/1.1\r\n", "OPTIONS"),
        ] {
            match first_message(request.as_bytes()).await {
                Err(TransportError::HttpRequest { method: m }) => assert_eq!(m, method),
                other => panic!("{request:?}: {other:?}"),
            }
        }
        let e = first_message(b"GET / HTTP/1.1\r\n\r\n").await.unwrap_err().to_string();
        assert!(e.contains("binary protocol") && e.contains("http_listen"), "{e}");
    }

    #[tokio::test]
    async fn an_http_answer_at_the_start_is_named() {
        let got = first_message(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        assert!(matches!(got, Err(TransportError::HttpResponse)), "{got:?}");
    }

    #[tokio::test]
    async fn other_bad_starts_are_still_frame_errors() {
        let got = first_message(&[0xff, 0xff, 0xff, 0xff, 3]).await;
        assert!(matches!(got, Err(TransportError::Codec(CodecError::Oversized { .. }))), "{got:?}");
        let got = first_message(b"GE").await;
        assert!(matches!(got, Err(TransportError::Codec(CodecError::Truncated { .. }))), "{got:?}");
    }

    #[tokio::test]
    async fn after_the_first_frame_the_same_bytes_are_a_length_like_any_other() {
        let mut bytes = codec::encode_frame(&"hello".to_string(), 1 << 20).expect("encode");
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let mut r = FrameReader::new(&bytes[..], 1 << 20);
        assert_eq!(r.recv::<String>().await.expect("first frame"), "hello");
        let got = r.recv::<String>().await;
        assert!(matches!(got, Err(TransportError::Codec(CodecError::Oversized { .. }))), "{got:?}");
    }
}
