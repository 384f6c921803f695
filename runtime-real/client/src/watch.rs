//! `Watch`: change events in revision order, resumed from the last received revision
//! whenever the stream's connection breaks, on whichever node answers.
//!
//! When to reopen, after what pause and where is the kernel's to decide
//! (`StreamResume`, and the `LeaderSearch` that finds a node to take the stream); this
//! only moves the events and keeps the revisions straight.

use crate::error::ClientError;
use crate::pool::{Cluster, NodeReply, ResponseStream};
use crate::timeout::Timeout;
use crate::wire::{ClientRequest, ClientResponse};
use roster_kernel::Event;
use roster_kernel::leader_search::{EndpointId, StreamResume};
use std::collections::VecDeque;
use std::time::Duration;

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
    /// The endpoint the current stream is on.
    endpoint: usize,
    resume: StreamResume,
}

impl Watch {
    /// Opens a stream of the events after `after_revision`.
    pub(crate) async fn open(cluster: Cluster, after_revision: u64) -> Result<Watch, ClientError> {
        let mut watch = Watch {
            cluster,
            received: after_revision,
            partial: None,
            offered: 0,
            buffered: VecDeque::new(),
            stream: None,
            endpoint: 0,
            resume: StreamResume::new(),
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
    /// request timeout, or every node refused the connection for a second (calling `next`
    /// again tries again from the same revision).
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
                    self.resume.handle_flowing();
                    self.accept(events, true);
                }
                Ok(ClientResponse::EventsPart(events)) => {
                    self.resume.handle_flowing();
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
        self.resume.handle_broken(EndpointId(self.endpoint));
    }

    /// Opens a stream from `received` on the first node that takes it, within the
    /// request timeout: after the pause and from the endpoint `StreamResume` says, by
    /// the kernel's search.
    async fn reopen(&mut self) -> Result<(), ClientError> {
        self.offered = 0;
        let pause_ms = self.resume.pause_ms();
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        let timeout_ms = self.cluster.request_timeout_ms();
        let (count, first_choice) = self.cluster.search_start();
        let first = self.resume.start(first_choice, count);
        let request = ClientRequest::Watch { after_revision: self.received };
        let cluster = &self.cluster;
        let (endpoint, stream) = cluster
            .search_from(StreamResume::policy(timeout_ms), first, |endpoint, deadline| {
                let request = request.clone();
                async move {
                    match Timeout::new(cluster.stream(endpoint, request), deadline).await {
                        Ok(opened) => opened.map(|stream| NodeReply::Served((endpoint, stream))),
                        Err(_elapsed) => Err(ClientError::Timeout {
                            addr: cluster.endpoint_addr(endpoint).unwrap_or_default(),
                            timeout_ms,
                        }),
                    }
                }
            })
            .await?;
        self.resume.handle_opened();
        self.endpoint = endpoint;
        self.stream = Some(stream);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Watch;
    use crate::pool::{ClientOptions, Cluster};
    use roster_kernel::leader_search::StreamResume;
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
            resume: StreamResume::new(),
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
