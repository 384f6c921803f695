//! One TCP (or TLS) connection to one node, carrying many requests at once.
//!
//! Each request goes out as a `ClientEnvelope` with a fresh id; a reader task matches
//! every `ClientResponseEnvelope` to its waiter by that id. A writer task owns the write
//! half, so a caller that gives up (timeout, dropped future) can never leave half a frame
//! on the stream. When the connection breaks, every request still waiting on it fails at
//! once with `ConnectionLost`, and the pool opens a new connection on the next use.

use crate::Timeout;
use crate::error::{ClientError, from_transport};
use crate::transport::{self, Reader, TransportError, Writer};
use crate::wire::{
    Channel, ClientEnvelope, ClientRequest, ClientResponse, ClientResponseEnvelope, MAX_CLIENT_FRAME_BYTES,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, mpsc, oneshot};

/// Requests waiting for an answer on one connection; one more is refused with `Busy`.
pub const MAX_IN_FLIGHT: usize = 4_096;
/// Frames queued for the writer task.
const OUTBOX_FRAMES: usize = 1_024;
/// Frames of one stream buffered for a consumer that has not read them yet; beyond it
/// the reader waits, and TCP pushes back on the node.
const STREAM_BUFFER: usize = 64;

/// The node's answer, or why there is none.
pub(crate) type Answer = Result<ClientResponse, ClientError>;

enum Waiter {
    Once(oneshot::Sender<Answer>),
    Stream(mpsc::Sender<Answer>),
}

struct State {
    /// Why the connection is unusable; set once.
    broken: Option<String>,
    pending: BTreeMap<u64, Waiter>,
    /// Frames read so far: a request that timed out while others were answered shows a
    /// slow request on a live connection, not a dead connection.
    frames_received: u64,
}

struct Shared {
    addr: String,
    state: Mutex<State>,
    /// Each has exactly one waiter (the reader task, the writer task), so `notify_one`
    /// keeps the signal even when it comes before the wait.
    stop_reader: Notify,
    stop_writer: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a single insert, remove or assignment, so a
        // panic elsewhere cannot leave it half-done: poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection broken and fails everything waiting on it.
    fn fail(&self, reason: String) {
        let pending = {
            let mut state = self.state();
            if state.broken.is_none() {
                state.broken = Some(reason.clone());
            }
            std::mem::take(&mut state.pending)
        };
        self.stop_reader.notify_one();
        self.stop_writer.notify_one();
        // BTreeMap order: waiters learn of the failure in request order, every run.
        for (_, waiter) in pending {
            let error = Err(ClientError::ConnectionLost { addr: self.addr.clone(), reason: reason.clone() });
            match waiter {
                Waiter::Once(tx) => {
                    let _ = tx.send(error);
                }
                Waiter::Stream(tx) => {
                    let _ = tx.try_send(error);
                }
            }
        }
    }

    /// Fails one request that could not be sent, leaving the connection as it is.
    fn fail_one(&self, id: u64, error: ClientError) {
        let waiter = self.state().pending.remove(&id);
        match waiter {
            Some(Waiter::Once(tx)) => {
                let _ = tx.send(Err(error));
            }
            Some(Waiter::Stream(tx)) => {
                let _ = tx.try_send(Err(error));
            }
            None => {}
        }
    }

    async fn deliver(&self, envelope: ClientResponseEnvelope) {
        let stream = {
            let mut state = self.state();
            state.frames_received += 1;
            match state.pending.get(&envelope.id) {
                Some(Waiter::Stream(tx)) => tx.clone(),
                Some(Waiter::Once(_)) => {
                    let Some(Waiter::Once(tx)) = state.pending.remove(&envelope.id) else {
                        unreachable!("the entry was just seen as a one-shot waiter")
                    };
                    let _ = tx.send(Ok(envelope.response));
                    return;
                }
                None => {
                    // The caller gave up (timeout) before the answer came.
                    tracing::debug!(addr = %self.addr, id = envelope.id, "answer for a request no one waits for");
                    return;
                }
            }
        };
        if stream.send(Ok(envelope.response)).await.is_err() {
            // The consumer dropped the stream.
            self.state().pending.remove(&envelope.id);
        }
    }
}

/// Removes a request's waiter if its caller stops waiting before the answer.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.state().pending.remove(&self.id);
    }
}

pub(crate) struct Conn {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<ClientEnvelope>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends both tasks, which closes the socket. A watch has no "stop" request: the
        // node ends the stream when its connection closes.
        self.shared.stop_reader.notify_one();
        self.shared.stop_writer.notify_one();
    }
}

impl Conn {
    /// Connects, says hello with the credential, and starts the reader and writer.
    pub(crate) async fn open(
        addr: &str,
        credential: &crate::peer_auth::Credential,
        connector: &transport::Connector,
        connect_timeout_ms: u64,
    ) -> Result<Conn, ClientError> {
        let (reader, writer) = transport::connect(
            addr,
            credential,
            Channel::Client,
            MAX_CLIENT_FRAME_BYTES,
            connect_timeout_ms,
            connector,
        )
        .await
        .map_err(|e| from_transport(addr, e))?;
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            state: Mutex::new(State { broken: None, pending: BTreeMap::new(), frames_received: 0 }),
            stop_reader: Notify::new(),
            stop_writer: Notify::new(),
        });
        let (outbox, rx) = mpsc::channel(OUTBOX_FRAMES);
        tokio::spawn(write_loop(shared.clone(), writer, rx));
        tokio::spawn(read_loop(shared.clone(), reader));
        Ok(Conn { shared, outbox })
    }

    pub(crate) fn addr(&self) -> &str {
        &self.shared.addr
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.shared.state().broken.is_some()
    }

    /// Sends `request` and waits for its answer until `deadline`.
    ///
    /// At the deadline the request is abandoned; if nothing at all arrived on the
    /// connection since it was sent, the connection is presumed dead and broken too, since
    /// TCP may take minutes to notice a partition or a paused node.
    pub(crate) async fn call(
        &self,
        id: u64,
        request: ClientRequest,
        deadline: tokio::time::Instant,
        timeout_ms: u64,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        let seen = self.start(id, request, Waiter::Once(tx))?;
        let guard = PendingGuard { shared: &self.shared, id };
        let answer = Timeout::new(rx, deadline).await;
        drop(guard);
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.lost("the connection closed before the answer")),
            Err(_) => {
                let silent = self.shared.state().frames_received == seen;
                if silent {
                    self.shared.fail(format!("no frame arrived within {timeout_ms} ms"));
                }
                Err(ClientError::Timeout { addr: self.shared.addr.clone(), timeout_ms })
            }
        }
    }

    /// Sends `request` and returns every answer with its id, until the connection ends.
    pub(crate) fn start_stream(&self, id: u64, request: ClientRequest) -> Result<mpsc::Receiver<Answer>, ClientError> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.start(id, request, Waiter::Stream(tx))?;
        Ok(rx)
    }

    /// Registers the waiter, then queues the frame; returns the frame count at that time.
    fn start(&self, id: u64, request: ClientRequest, waiter: Waiter) -> Result<u64, ClientError> {
        let permit = match self.outbox.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                return Err(ClientError::Busy { addr: self.shared.addr.clone(), in_flight: OUTBOX_FRAMES });
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(self.lost("the writer stopped")),
        };
        let seen = {
            let mut state = self.shared.state();
            if let Some(reason) = &state.broken {
                return Err(ClientError::ConnectionLost { addr: self.shared.addr.clone(), reason: reason.clone() });
            }
            if state.pending.len() >= MAX_IN_FLIGHT {
                return Err(ClientError::Busy { addr: self.shared.addr.clone(), in_flight: MAX_IN_FLIGHT });
            }
            let previous = state.pending.insert(id, waiter);
            assert!(previous.is_none(), "request id {id} reused on one connection");
            state.frames_received
        };
        permit.send(ClientEnvelope { id, request });
        Ok(seen)
    }

    fn lost(&self, fallback: &str) -> ClientError {
        let reason = self.shared.state().broken.clone().unwrap_or_else(|| fallback.to_string());
        ClientError::ConnectionLost { addr: self.shared.addr.clone(), reason }
    }
}

async fn write_loop(shared: Arc<Shared>, mut writer: Writer, mut rx: mpsc::Receiver<ClientEnvelope>) {
    let mut frames = Vec::new();
    loop {
        let envelope = tokio::select! {
            biased;
            _ = shared.stop_writer.notified() => return,
            next = rx.recv() => match next {
                Some(envelope) => envelope,
                None => return,
            },
        };
        // Everything already queued goes out in the same write.
        let mut next = Some(envelope);
        let mut count = 0;
        while let Some(envelope) = next.take() {
            match writer.encode(&envelope) {
                Ok(frame) => frames.extend_from_slice(&frame),
                // Encoding failed before anything was written: only this request is lost.
                Err(e) => shared.fail_one(envelope.id, ClientError::NotSent(e.to_string())),
            }
            count += 1;
            if count < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if frames.is_empty() {
            continue;
        }
        if let Err(e) = writer.send_encoded(&frames).await {
            shared.fail(format!("write failed: {e}"));
            return;
        }
        frames.clear();
    }
}

/// Most requests gathered into one write.
const WRITE_BATCH: usize = 256;

async fn read_loop(shared: Arc<Shared>, mut reader: Reader) {
    let reason = loop {
        let frame = tokio::select! {
            biased;
            _ = shared.stop_reader.notified() => break "closed by this client".to_string(),
            frame = reader.recv::<ClientResponseEnvelope>() => frame,
        };
        match frame {
            Ok(envelope) => shared.deliver(envelope).await,
            Err(TransportError::Closed) => break "closed by the node".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    shared.fail(reason);
}
