//! What the harness sees of the cluster besides its own operations, recorded in the
//! simulator's terms:
//!
//! - a sampler per node: its status every `SAMPLE_EVERY_MS`; a node that calls itself
//!   leader is probed with a linearizable read sent to it alone, and it counts as an
//!   available leader (`quorum_ack_age_ms = Some(0)`) only if a quorum confirms it right
//!   then; the highest commit index seen gives the commit times (for progress);
//! - a watcher per node: its applied event stream (puts, deletes, expiries), so an event
//!   is observed at the first node that applies it, and two nodes that applied different
//!   events at one revision are a conflict;
//! - at the end, the workload's keys as the leader holds them, and every node's whole
//!   key/value state with the revision it was read at (equal revisions must hold equal
//!   states).
//!
//! Not observable from outside: the Raft log's entries (the simulator hashes them), so
//! `committed-entries` has no input here; `commits-recovered` gets the nodes that failed
//! to come back.

use super::history::SharedRecorder;
use super::workload::{KEY_END, KEY_PREFIX, client_options};
use roster_kernel::{Departure, EventKind, Query, QueryResult};
use roster_real::client::wire::{ClientRequest, ClientResponse, Consistency};
use roster_real::client::{Client, ClientOptions, Cluster};
use roster_sim::trace::{AppliedEvent, AppliedRec, LeaderSeen, fnv1a};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const SAMPLE_EVERY_MS: u64 = 200;
/// Deadline of one status or probe: a slower answer is no sighting.
const SAMPLE_TIMEOUT_MS: u64 = 400;
const WATCH_REOPEN_MS: u64 = 200;
/// More keys than any run writes.
const RANGE_LIMIT: u32 = 1_000_000;
/// The probe reads a key nobody writes.
const PROBE_KEY: &str = "nemesis/probe";

pub fn observer_options(endpoints: &[String]) -> ClientOptions {
    ClientOptions { connect_timeout_ms: 300, request_timeout_ms: SAMPLE_TIMEOUT_MS, ..client_options(endpoints) }
}

/// The observer's tasks; aborted on drop.
pub struct Observer {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub client: Client,
    /// node id -> endpoint index in `client`'s cluster.
    pub endpoints: BTreeMap<u64, usize>,
    max_commit: Arc<AtomicU64>,
}

impl Observer {
    pub async fn start(rec: SharedRecorder, nodes: &[(u64, String)]) -> Observer {
        let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
        let client = Client::connect(observer_options(&addrs), 0x0b5e).await.expect("observer options are valid");
        let endpoints: BTreeMap<u64, usize> = nodes
            .iter()
            .map(|(id, addr)| (*id, client.cluster().endpoint_for(addr).expect("an initial endpoint")))
            .collect();
        let max_commit = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (&node, &endpoint) in &endpoints {
            tasks.push(tokio::spawn(sample(client.clone(), node, endpoint, rec.clone(), max_commit.clone())));
            tasks.push(tokio::spawn(watch(client.cluster().clone(), node, endpoint, rec.clone())));
        }
        Observer { tasks, client, endpoints, max_commit }
    }

    pub fn max_commit(&self) -> u64 {
        self.max_commit.load(Ordering::Relaxed)
    }

    /// Node `id`'s status, if it answers in time.
    pub async fn status_of(&self, id: u64) -> Option<roster_real::client::wire::ClusterStatus> {
        self.client.status_of(*self.endpoints.get(&id)?).await.ok()
    }

    /// The node that leads with a quorum's confirmation now, if any.
    pub async fn leader(&self) -> Option<u64> {
        for (&id, &endpoint) in &self.endpoints {
            if let Some(s) = self.client.status_of(endpoint).await.ok()
                && s.leader == Some(s.node)
                && probe(self.client.cluster(), endpoint).await
            {
                return Some(id);
            }
        }
        None
    }

    /// Waits (bounded) for a leader confirmed by a quorum.
    pub async fn wait_leader(&self, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The workload's keys as a leader holds them (a linearizable range read).
    pub async fn final_kv(&self, within: Duration) -> Option<(BTreeMap<String, String>, u64)> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let query = Query::KvRange { start: KEY_PREFIX.into(), end: Some(KEY_END.into()), limit: RANGE_LIMIT };
            if let Ok(reply) = self.client.query(query, Consistency::Linearizable).await
                // One page holds the workload's keys (small values); a cut page would
                // not be one revision's state.
                && let QueryResult::KvItems { items, next: None } = reply.result
            {
                return Some((items.into_iter().collect(), reply.revision));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Every node's key/value state under the workload's prefix (the full-disk filler's
    /// values would not fit in one frame), read from it alone, with its revision, into
    /// the trace (`state-machine-agreement` compares equal revisions).
    pub async fn record_states(&self, rec: &SharedRecorder) -> usize {
        let mut recorded = 0;
        for (&node, &endpoint) in &self.endpoints {
            let query = Query::KvRange { start: KEY_PREFIX.into(), end: Some(KEY_END.into()), limit: RANGE_LIMIT };
            let request = ClientRequest::Query { query, consistency: Consistency::Stale };
            let Ok(ClientResponse::Query(reply)) = self.client.cluster().request(endpoint, request).await else {
                continue;
            };
            let QueryResult::KvItems { items, next: None } = reply.result else { continue };
            let mut bytes = Vec::new();
            for (k, v) in &items {
                bytes.extend_from_slice(&(k.len() as u64).to_le_bytes());
                bytes.extend_from_slice(k.as_bytes());
                bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
                bytes.extend_from_slice(v.as_bytes());
            }
            let at_ms = rec.now_ms();
            rec.trace().record_applied(AppliedRec {
                node,
                at_ms,
                applied_index: reply.revision,
                state_hash: fnv1a(&bytes),
            });
            recorded += 1;
        }
        recorded
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A linearizable read sent to `endpoint` alone: answered only by a leader a quorum
/// still follows.
async fn probe(cluster: &Cluster, endpoint: usize) -> bool {
    let request =
        ClientRequest::Query { query: Query::KvGet { key: PROBE_KEY.into() }, consistency: Consistency::Linearizable };
    matches!(cluster.request(endpoint, request).await, Ok(ClientResponse::Query(_)))
}

async fn sample(client: Client, node: u64, endpoint: usize, rec: SharedRecorder, max_commit: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(Duration::from_millis(SAMPLE_EVERY_MS)).await;
        let Ok(s) = client.status_of(endpoint).await else { continue };
        if s.leader == Some(s.node) {
            let confirmed = probe(client.cluster(), endpoint).await;
            let at_ms = rec.now_ms();
            rec.trace().record_leader(LeaderSeen {
                node,
                term: s.term,
                at_ms,
                quorum_ack_age_ms: confirmed.then_some(0),
            });
        }
        if let Some(c) = s.commit_index
            && max_commit.fetch_max(c, Ordering::Relaxed) < c
        {
            let at_ms = rec.now_ms();
            rec.trace().record_commit_time(at_ms);
        }
    }
}

fn applied_event(kind: &EventKind) -> AppliedEvent {
    match kind {
        EventKind::KvPut { key, value } => AppliedEvent::KvPut { key: key.clone(), value: value.clone() },
        EventKind::KvDeleted { key } => AppliedEvent::KvDeleted { key: key.clone() },
        EventKind::Departed { member, tombstone } if matches!(tombstone.departure, Departure::Expired { .. }) => {
            AppliedEvent::Expired { member: *member, decided_unix_ms: tombstone.left_at_unix_ms }
        }
        _ => AppliedEvent::Other,
    }
}

/// Node `node`'s applied events, from its own stream, resumed after the last revision
/// seen whenever the connection breaks (kill, restart).
async fn watch(cluster: Cluster, node: u64, endpoint: usize, rec: SharedRecorder) {
    let mut seen = 0u64;
    let mut position = 0u32;
    loop {
        let request = ClientRequest::Watch { after_revision: seen };
        let mut stream = match cluster.stream(endpoint, request).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(WATCH_REOPEN_MS)).await;
                continue;
            }
        };
        loop {
            match stream.next().await {
                Ok(ClientResponse::Events(events) | ClientResponse::EventsPart(events)) => {
                    let at_ms = rec.now_ms();
                    let mut trace = rec.trace();
                    let from = seen;
                    for e in events.into_iter().filter(|e| e.revision >= from) {
                        if e.revision == seen && seen != 0 {
                            // A resumed stream starts after `seen`; the same revision
                            // again is the next event of one batched command.
                            position += 1;
                        } else {
                            position = 0;
                        }
                        seen = e.revision;
                        trace.record_event(e.revision, position, applied_event(&e.kind), node, at_ms);
                    }
                }
                Ok(ClientResponse::WatchCompacted { oldest_available }) => {
                    rec.fault(format!("node {node}'s event history no longer reaches revision {seen} (oldest {oldest_available}); its events before are not observed"));
                    seen = oldest_available.saturating_sub(1);
                    position = 0;
                    break;
                }
                Ok(_) | Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(WATCH_REOPEN_MS)).await;
    }
}
