//! A client connection's outbox: the answers waiting for its writer, and the bounds on
//! what one connection may have in flight.
//!
//! - Every request holds a place in the outbox (`CLIENT_OUTBOX` in all) from when it is
//!   read until its answer is written: with every place taken, the reader stops reading
//!   the connection.
//! - A large answer (a page of a list, a status, watch events, a snapshot piece: up to
//!   about 1 MiB each) also holds one of `MAX_BULK_QUEUED` bulk places until it is
//!   written, so a client that asks and never reads holds at most that many large answers
//!   in the node's memory, not an outbox full of them. A read waits for its bulk place
//!   before it runs; a stream waits before each frame.
//! - At most `MAX_STREAMS_PER_CONNECTION` streams (watches, snapshot downloads) at once;
//!   one more is refused.

use crate::net::wire::{ClientResponseEnvelope, RequestError};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Requests in flight on one client connection, and answers waiting to be written.
pub const CLIENT_OUTBOX: usize = 1_024;
/// Large answers queued on one connection and not yet written, at most (each up to about
/// a page, 1 MiB): the node's memory for one connection's answers stays near 16 MiB.
pub const MAX_BULK_QUEUED: usize = 16;
/// Streams (watches, snapshot downloads) open on one client connection at once: each is
/// a task that lives as long as the client wants, so they are counted apart from the
/// outbox's places. One more is refused with `TooManyStreams`.
pub const MAX_STREAMS_PER_CONNECTION: usize = 16;

/// One answer for the writer, with the bulk place it holds until it is written.
#[derive(Debug)]
pub struct Outgoing {
    pub env: ClientResponseEnvelope,
    pub bulk: Option<OwnedSemaphorePermit>,
}

impl Outgoing {
    pub fn small(env: ClientResponseEnvelope) -> Self {
        Outgoing { env, bulk: None }
    }
}

/// What one client connection may have in flight (see the module's header).
pub struct InFlight {
    tx: mpsc::Sender<Outgoing>,
    bulk: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

impl InFlight {
    pub fn new(tx: mpsc::Sender<Outgoing>) -> Self {
        InFlight {
            tx,
            bulk: Arc::new(Semaphore::new(MAX_BULK_QUEUED)),
            streams: Arc::new(Semaphore::new(MAX_STREAMS_PER_CONNECTION)),
        }
    }

    /// The next request's place in the outbox; waits while every place is taken (the
    /// reader stops reading meanwhile). `None`: the writer is gone.
    pub async fn reserve(&self) -> Option<mpsc::OwnedPermit<Outgoing>> {
        self.tx.clone().reserve_owned().await.ok()
    }

    /// A bulk place for a large answer; waits while `MAX_BULK_QUEUED` are unwritten.
    pub async fn reserve_bulk(&self) -> OwnedSemaphorePermit {
        self.bulk.clone().acquire_owned().await.expect("the bulk semaphore is never closed")
    }

    /// A place for one more stream, held while it runs; refused past the bound.
    pub fn open_stream(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        self.streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| RequestError::TooManyStreams { max: MAX_STREAMS_PER_CONNECTION })
    }

    /// Where one request's answers go, given its outbox place (and bulk place, for a read).
    pub fn outbox(&self, slot: mpsc::OwnedPermit<Outgoing>, bulk: Option<OwnedSemaphorePermit>) -> Outbox {
        Outbox { slot: Some((slot, bulk)), tx: self.tx.clone(), bulk_places: self.bulk.clone() }
    }
}

/// Where one request's answers go: its reserved place in the outbox for the first, then
/// (streams only) the outbox itself, each frame with a bulk place.
pub struct Outbox {
    slot: Option<(mpsc::OwnedPermit<Outgoing>, Option<OwnedSemaphorePermit>)>,
    tx: mpsc::Sender<Outgoing>,
    bulk_places: Arc<Semaphore>,
}

/// The connection is gone: nothing more can be answered on it.
#[derive(Debug)]
pub struct OutboxClosed;

impl Outbox {
    /// Sends the request's answer (or a stream's next frame): the first through its
    /// reserved place, the next ones each waiting for room and a bulk place.
    pub async fn send(&mut self, env: ClientResponseEnvelope) -> Result<(), OutboxClosed> {
        match self.slot.take() {
            Some((slot, bulk)) => {
                slot.send(Outgoing { env, bulk });
                Ok(())
            }
            None => {
                let bulk = self.bulk_places.clone().acquire_owned().await.map_err(|_| OutboxClosed)?;
                self.tx.send(Outgoing { env, bulk: Some(bulk) }).await.map_err(|_| OutboxClosed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CLIENT_OUTBOX, InFlight, MAX_BULK_QUEUED, MAX_STREAMS_PER_CONNECTION, Outgoing};
    use crate::net::wire::{ClientResponse, ClientResponseEnvelope, RequestError};
    use std::time::Duration;
    use tokio::sync::mpsc;

    const WAIT: Duration = Duration::from_millis(50);

    fn done(id: u64) -> ClientResponseEnvelope {
        ClientResponseEnvelope { id, response: ClientResponse::Done }
    }

    #[tokio::test]
    async fn a_connection_holds_at_most_its_outbox_of_requests_in_flight() {
        let (tx, _rx) = mpsc::channel::<Outgoing>(CLIENT_OUTBOX);
        let in_flight = InFlight::new(tx);
        let mut places = Vec::new();
        for _ in 0..CLIENT_OUTBOX {
            places.push(in_flight.reserve().await.expect("a free place"));
        }
        assert!(tokio::time::timeout(WAIT, in_flight.reserve()).await.is_err(), "the next request waits");
        // A request answered (or given up) frees its place once the answer leaves the outbox.
        drop(places.pop());
        let next = tokio::time::timeout(WAIT, in_flight.reserve()).await;
        assert!(next.is_ok_and(|place| place.is_some()), "a freed place takes the next request");
    }

    #[tokio::test]
    async fn large_answers_hold_a_bulk_place_until_written() {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(CLIENT_OUTBOX);
        let in_flight = InFlight::new(tx);
        // Reads answered but not written: each keeps its bulk place in the queue.
        for id in 0..MAX_BULK_QUEUED as u64 {
            let slot = in_flight.reserve().await.expect("a place");
            let bulk = in_flight.reserve_bulk().await;
            in_flight.outbox(slot, Some(bulk)).send(done(id)).await.expect("queued");
        }
        assert!(tokio::time::timeout(WAIT, in_flight.reserve_bulk()).await.is_err(), "the next read waits");
        // A stream's next frame waits too (its first went through its reserved place).
        let mut stream = in_flight.outbox(in_flight.reserve().await.expect("a place"), None);
        stream.send(done(100)).await.expect("the first frame");
        assert!(tokio::time::timeout(WAIT, stream.send(done(101))).await.is_err(), "the next frame waits");
        // The writer writes one: its place is free again.
        let written = rx.recv().await.expect("queued");
        assert!(written.bulk.is_some());
        drop(written);
        assert!(tokio::time::timeout(WAIT, in_flight.reserve_bulk()).await.is_ok());
    }

    #[tokio::test]
    async fn streams_past_the_bound_are_refused_until_one_ends() {
        let (tx, _rx) = mpsc::channel::<Outgoing>(CLIENT_OUTBOX);
        let in_flight = InFlight::new(tx);
        let open: Vec<_> =
            (0..MAX_STREAMS_PER_CONNECTION).map(|_| in_flight.open_stream().expect("a stream place")).collect();
        let refused = in_flight.open_stream().expect_err("past the bound");
        assert_eq!(refused, RequestError::TooManyStreams { max: MAX_STREAMS_PER_CONNECTION });
        drop(open);
        assert!(in_flight.open_stream().is_ok());
    }
}
