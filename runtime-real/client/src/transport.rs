//! Framed connections over TCP with the kernel's codec: one write per frame, nodelay on,
//! frame size bounded both ways.

use roster_kernel::codec::{self, CodecError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
}

/// Reads whole frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes before this offset are consumed; compacted lazily so that a burst of many
    /// small frames costs one copy, not one shift of the whole buffer per frame.
    start: usize,
    max_frame_bytes: usize,
}

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: usize) -> Self {
        FrameReader { inner, buf: Vec::with_capacity(READ_CHUNK_BYTES), start: 0, max_frame_bytes }
    }

    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    /// The next message, or `Closed` at a clean end of stream between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, TransportError> {
        loop {
            if let Some((msg, used)) = codec::decode_frame::<T>(&self.buf[self.start..], self.max_frame_bytes)? {
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
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                if !self.buf.is_empty() {
                    codec::check_eof(&self.buf)?;
                }
                return Err(TransportError::Closed);
            }
        }
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

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), TransportError> {
        let frame = codec::encode_frame(msg, self.max_frame_bytes)?;
        self.inner.write_all(&frame).await?;
        // madsim's simulated stream sends only on flush; real TCP's flush is a no-op.
        self.inner.flush().await?;
        Ok(())
    }
}

pub type Reader = FrameReader<tokio::io::ReadHalf<TcpStream>>;
pub type Writer = FrameWriter<tokio::io::WriteHalf<TcpStream>>;

/// Splits a connected stream into framed halves.
pub fn framed(stream: TcpStream, max_frame_bytes: usize) -> (Reader, Writer) {
    // Nagle + delayed ACK cost ~40 ms per RPC in the prototype.
    let _ = stream.set_nodelay(true);
    let (r, w) = tokio::io::split(stream);
    (FrameReader::new(r, max_frame_bytes), FrameWriter::new(w, max_frame_bytes))
}

/// Connects with a deadline, says hello and checks the answer.
pub async fn connect(
    addr: &str,
    hello: &crate::wire::Hello,
    max_frame_bytes: usize,
    timeout_ms: u64,
) -> Result<(Reader, Writer), TransportError> {
    let deadline = std::time::Duration::from_millis(timeout_ms);
    let handshake = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect { addr: addr.to_string(), source })?;
        let (mut r, mut w) = framed(stream, max_frame_bytes);
        w.send(hello).await?;
        match r.recv::<crate::wire::HelloReply>().await? {
            crate::wire::HelloReply::Welcome { .. } => Ok((r, w)),
            crate::wire::HelloReply::Refused { reason } => {
                Err(TransportError::Refused { addr: addr.to_string(), reason })
            }
        }
    };
    match crate::Timeout::new(handshake, tokio::time::Instant::now() + deadline).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Timeout { addr: addr.to_string(), timeout_ms }),
    }
}
