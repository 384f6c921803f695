//! `Watch`: change events in revision order, resumed from the last received revision
//! whenever the stream's connection breaks, on whichever node answers.

use crate::error::ClientError;
use crate::pool::{Cluster, ResponseStream};
use crate::wire::{ClientRequest, ClientResponse};
use roster_kernel::Event;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Pauses before reopening a stream that broke: doubling from the first to the last,
/// back to the first once events flow again, so a node that accepts and then drops
/// connections is not hammered.
const REOPEN_PAUSE_FIRST_MS: u64 = 20;
const REOPEN_PAUSE_MAX_MS: u64 = 1_000;

/// A stream of change events. `next` returns them one at a time; a broken connection is
/// reopened (on the same node or another) from the last revision received, and events
/// already received are never returned twice.
pub struct Watch {
    cluster: Cluster,
    /// Highest revision received, returned or buffered: where a reopened stream resumes.
    received: u64,
    buffered: VecDeque<Event>,
    stream: Option<ResponseStream>,
    /// Where the next stream is opened.
    endpoint: usize,
    reopen_pause_ms: u64,
    /// The stream broke: pause before reopening.
    broke: bool,
}

impl Watch {
    /// Opens a stream of the events after `after_revision`.
    pub(crate) async fn open(cluster: Cluster, after_revision: u64) -> Result<Watch, ClientError> {
        let endpoint = cluster.first_choice();
        let mut watch = Watch {
            cluster,
            received: after_revision,
            buffered: VecDeque::new(),
            stream: None,
            endpoint,
            reopen_pause_ms: REOPEN_PAUSE_FIRST_MS,
            broke: false,
        };
        watch.reopen().await?;
        Ok(watch)
    }

    /// The highest revision received so far (the starting revision before any event).
    pub fn last_revision(&self) -> u64 {
        self.received
    }

    /// The next event. Waits as long as nothing changes. Errors: `WatchCompacted` when
    /// the node no longer keeps the revisions needed to resume (list again, then watch
    /// from the list's revision); `Unreachable` when no node took the stream within the
    /// request timeout (calling `next` again tries again from the same revision).
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Ok(event);
            }
            if self.stream.is_none() {
                self.reopen().await?;
            }
            let stream = self.stream.as_mut().expect("opened above");
            let answer = stream.next().await;
            match answer {
                Ok(ClientResponse::Events(events)) => {
                    self.reopen_pause_ms = REOPEN_PAUSE_FIRST_MS;
                    self.accept(events);
                }
                Ok(ClientResponse::WatchCompacted { oldest_available }) => {
                    self.stream = None;
                    return Err(ClientError::WatchCompacted { requested: self.received, oldest_available });
                }
                Ok(ClientResponse::Error(e)) => {
                    self.stream = None;
                    return Err(ClientError::Server(e));
                }
                Ok(ClientResponse::NotLeader { .. } | ClientResponse::RetryLater(_)) => self.lose("node declined"),
                Ok(other) => {
                    self.stream = None;
                    return Err(ClientError::Protocol(format!("unexpected answer on a watch stream: {other:?}")));
                }
                Err(e) => self.lose(&e.to_string()),
            }
        }
    }

    /// The events as a `futures::Stream`; it ends after a `WatchCompacted` error.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Event, ClientError>> {
        futures::stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            match watch.next().await {
                Ok(event) => Some((Ok(event), Some(watch))),
                Err(e @ ClientError::WatchCompacted { .. }) => Some((Err(e), None)),
                Err(e) => Some((Err(e), Some(watch))),
            }
        })
    }

    /// Buffers the events newer than any received; a resumed stream may repeat some.
    fn accept(&mut self, events: Vec<Event>) {
        for event in events {
            if event.revision > self.received {
                self.received = event.revision;
                self.buffered.push_back(event);
            }
        }
    }

    fn lose(&mut self, reason: &str) {
        if let Some(stream) = self.stream.take() {
            tracing::info!(addr = stream.addr(), after_revision = self.received, reason, "watch stream lost; resuming");
        }
        self.broke = true;
        self.endpoint = self.cluster.next_endpoint(self.endpoint);
    }

    /// Opens a stream from `received` on the first node that takes it, within the
    /// request timeout.
    async fn reopen(&mut self) -> Result<(), ClientError> {
        if self.broke {
            tokio::time::sleep(Duration::from_millis(self.reopen_pause_ms)).await;
            self.reopen_pause_ms = (self.reopen_pause_ms * 2).min(REOPEN_PAUSE_MAX_MS);
            self.broke = false;
        }
        let deadline = Instant::now() + Duration::from_millis(self.cluster.request_timeout_ms());
        let mut tried: Vec<String> = Vec::new();
        let mut failures_in_round = 0usize;
        loop {
            let request = ClientRequest::Watch { after_revision: self.received };
            let addr = self.cluster.endpoint_addr(self.endpoint).unwrap_or_default();
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            match self.cluster.stream(self.endpoint, request).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    return Ok(());
                }
                Err(e @ ClientError::Rejected { .. }) => return Err(e),
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Err(ClientError::Unreachable { endpoints: tried, last_error: e.to_string() });
                    }
                    self.endpoint = self.cluster.next_endpoint(self.endpoint);
                    failures_in_round += 1;
                    if failures_in_round >= self.cluster.endpoint_count() {
                        failures_in_round = 0;
                        let pause = Duration::from_millis(self.reopen_pause_ms);
                        tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                        self.reopen_pause_ms = (self.reopen_pause_ms * 2).min(REOPEN_PAUSE_MAX_MS);
                    }
                }
            }
        }
    }
}
