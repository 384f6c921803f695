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
    /// Highest revision received whole, returned or buffered: where a reopened stream
    /// resumes.
    received: u64,
    /// A revision above `received` whose first events came (`EventsPart`, or an `Events`
    /// being taken), and how many of its events were taken: a resumed stream sends the
    /// revision again from its start, and those are skipped.
    partial: Option<(u64, usize)>,
    /// Events of the `partial` revision offered on the current stream.
    offered: usize,
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
            partial: None,
            offered: 0,
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
                    self.accept(events, true);
                }
                Ok(ClientResponse::EventsPart(events)) => {
                    self.reopen_pause_ms = REOPEN_PAUSE_FIRST_MS;
                    self.accept(events, false);
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

    /// Buffers the events not yet taken; a resumed stream may repeat some. `closes`: the
    /// batch ends on a whole revision (`Events`), so its last revision is received whole.
    fn accept(&mut self, events: Vec<Event>, closes: bool) {
        for event in events {
            if event.revision <= self.received {
                continue;
            }
            let (revision, taken) = self.partial.get_or_insert((event.revision, 0));
            if event.revision != *revision {
                // A later revision: the one before was whole.
                self.received = self.received.max(*revision);
                *revision = event.revision;
                *taken = 0;
                self.offered = 0;
            }
            self.offered += 1;
            if self.offered > *taken {
                *taken += 1;
                self.buffered.push_back(event);
            }
        }
        if closes {
            if let Some((revision, _)) = self.partial.take() {
                self.received = self.received.max(revision);
            }
            self.offered = 0;
        }
    }

    fn lose(&mut self, reason: &str) {
        // The next stream sends the partial revision again from its start.
        self.offered = 0;
        if let Some(stream) = self.stream.take() {
            tracing::info!(addr = stream.addr(), after_revision = self.received, reason, "watch stream lost; resuming");
        }
        self.broke = true;
        self.endpoint = self.cluster.next_endpoint(self.endpoint);
    }

    /// Opens a stream from `received` on the first node that takes it, within the
    /// request timeout.
    async fn reopen(&mut self) -> Result<(), ClientError> {
        self.offered = 0;
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

#[cfg(test)]
mod tests {
    use super::Watch;
    use crate::pool::{ClientOptions, Cluster};
    use roster_kernel::{Event, EventKind};
    use std::collections::VecDeque;

    fn watch() -> Watch {
        let cluster = Cluster::new(ClientOptions::new(vec!["127.0.0.1:1".into()], "t")).expect("options");
        Watch {
            cluster,
            received: 0,
            partial: None,
            offered: 0,
            buffered: VecDeque::new(),
            stream: None,
            endpoint: 0,
            reopen_pause_ms: 0,
            broke: false,
        }
    }

    fn ev(revision: u64, n: u32) -> Event {
        Event { revision, kind: EventKind::KvDeleted { key: format!("{revision}.{n}") } }
    }

    fn taken(w: &mut Watch) -> Vec<(u64, String)> {
        w.buffered
            .drain(..)
            .map(|e| match e.kind {
                EventKind::KvDeleted { key } => (e.revision, key),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_revision_in_parts_is_received_whole_only_when_closed() {
        let mut w = watch();
        w.accept(vec![ev(1, 0), ev(2, 0)], false);
        assert_eq!(w.last_revision(), 1, "revision 2 is not closed yet");
        w.accept(vec![ev(2, 1)], false);
        w.accept(vec![ev(2, 2), ev(3, 0)], true);
        assert_eq!(w.last_revision(), 3);
        let keys: Vec<String> = taken(&mut w).into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys, ["1.0", "2.0", "2.1", "2.2", "3.0"]);
    }

    #[test]
    fn a_stream_broken_inside_a_revision_resumes_before_it_without_repeating_events() {
        let mut w = watch();
        w.received = 4;
        w.accept(vec![ev(5, 0), ev(5, 1)], false);
        w.lose("test");
        assert_eq!(w.last_revision(), 4, "the resumed stream asks from before revision 5");
        // The node sends revision 5 again from its start.
        w.accept(vec![ev(5, 0), ev(5, 1)], false);
        w.accept(vec![ev(5, 2), ev(6, 0)], true);
        let keys: Vec<String> = taken(&mut w).into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys, ["5.0", "5.1", "5.2", "6.0"]);
        assert_eq!(w.last_revision(), 6);
        // Whole revisions repeated by a resumed stream are dropped as before.
        w.accept(vec![ev(6, 0), ev(7, 0)], true);
        assert_eq!(taken(&mut w), [(7, "7.0".to_string())]);
    }
}
