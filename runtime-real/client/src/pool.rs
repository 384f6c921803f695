//! `Cluster`: the client's connections to the nodes and its knowledge of the leader.
//!
//! One multiplexed connection per node, opened on first use and reopened on the next use
//! after it breaks. `request` talks to one given node; `call_leader` finds the leader
//! (known leader first, then the other nodes in turn, following `NotLeader` hints and
//! waiting out `RetryLater`) within one overall deadline; `stream` opens a dedicated
//! connection for a watch, closed when the stream is dropped.

use crate::Timeout;
use crate::conn::{Answer, Conn};
use crate::endpoints::EndpointTable;
use crate::error::ClientError;
use crate::transport::Connector;
use crate::wire::{ClientRequest, ClientResponse};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// A call gives one node at most this share of its deadline (when the request may be
/// repeated safely), so a node that accepted the connection and then hung leaves time to
/// try the others.
const ATTEMPT_SHARE_DIVISOR: u64 = 3;
/// ... but never less than this (unless the whole call has less), so a short call (a
/// heartbeat bounded by its interval) still survives one slow round trip.
const ATTEMPT_MIN_MS: u64 = 100;
/// Pause before asking again a node that answered `RetryLater` (a new leader whose lease
/// is not ready yet, typically ready within one heartbeat).
const RETRY_LATER_PAUSE_MS: u64 = 50;
/// Pauses after a full round of nodes without a leader: they double from the first to the
/// last, so an election in progress is not flooded and a dead cluster is not spun on.
const ROUND_PAUSE_FIRST_MS: u64 = 20;
const ROUND_PAUSE_MAX_MS: u64 = 500;
/// A call whose every attempt was refused at once (ECONNREFUSED: nothing listens at any
/// endpoint) gives up after this long, not at its deadline: a node that is restarting
/// listens again within it, and a user who named the wrong port hears so within a second.
/// A refusal is not a timeout. Watches and `roster run` keep retrying in loops of their
/// own.
pub const REFUSED_GIVE_UP_MS: u64 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Node addresses, `HOST:PORT`; more are learned from leader hints.
    pub endpoints: Vec<String>,
    /// The cluster token every connection presents.
    pub token: String,
    /// Deadline of one TCP connect and handshake.
    pub connect_timeout_ms: u64,
    /// Deadline of one call: `request` to one node, or `call_leader` over all of them.
    pub request_timeout_ms: u64,
}

impl ClientOptions {
    /// Options with the default timeouts.
    pub fn new(endpoints: Vec<String>, token: impl Into<String>) -> Self {
        ClientOptions {
            endpoints,
            token: token.into(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        for (field, value) in
            [("connect_timeout_ms", self.connect_timeout_ms), ("request_timeout_ms", self.request_timeout_ms)]
        {
            if value == 0 {
                return Err(ClientError::InvalidOption {
                    field,
                    value: "0".into(),
                    reason: "set it to at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// Connections to a Roster cluster. Cheap to clone; clones share connections and leader
/// knowledge.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    credential: crate::peer_auth::Credential,
    /// Plain TCP, or TLS: every connection of this client is made the same way.
    connector: Connector,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    state: Mutex<State>,
    next_request_id: AtomicU64,
}

struct State {
    table: EndpointTable,
    /// One per endpoint, same index.
    slots: Vec<Arc<Slot>>,
}

/// The pooled connection of one endpoint. The async lock makes concurrent first users
/// share one connect instead of racing several.
#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Cluster")
            .field("endpoints", &state.table.addrs())
            .field("leader", &state.table.leader())
            .field("request_timeout_ms", &self.inner.request_timeout_ms)
            .finish()
    }
}

/// Which node a call wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Only the leader serves it (writes, heartbeats, linearizable reads, membership).
    Leader,
    /// Any node serves it (stale reads, status); the leader is tried first when known.
    Any,
}

/// What one attempt in a call amounted to.
enum Step {
    Done(ClientResponse),
    /// Ask this endpoint next, at once.
    Redirect(usize),
    /// Ask the same endpoint again after a pause.
    Again(String),
    /// Ask the next endpoint; `answered` if the node answered (without leading),
    /// `refused` if nothing listened there.
    Next {
        reason: String,
        answered: bool,
        refused: bool,
    },
    Fail(ClientError),
}

impl Cluster {
    /// Connections over plain TCP.
    pub fn new(options: ClientOptions) -> Result<Cluster, ClientError> {
        Cluster::with_connector(options, Connector::Plain)
    }

    /// Connections made by `connector` (TLS, where the build has it).
    pub fn with_connector(options: ClientOptions, connector: Connector) -> Result<Cluster, ClientError> {
        let credential = crate::peer_auth::Credential::Token(options.token.clone());
        Cluster::with_credential(options, connector, credential)
    }

    /// A node's own connections to the cluster: they prove the peer key instead of a
    /// token (`options.token` is not sent).
    pub fn for_node(
        options: ClientOptions,
        connector: Connector,
        peer: crate::peer_auth::PeerAuth,
    ) -> Result<Cluster, ClientError> {
        Cluster::with_credential(options, connector, crate::peer_auth::Credential::Peer(peer))
    }

    fn with_credential(
        options: ClientOptions,
        connector: Connector,
        credential: crate::peer_auth::Credential,
    ) -> Result<Cluster, ClientError> {
        options.validate()?;
        let table = EndpointTable::new(options.endpoints)?;
        let slots = (0..table.len()).map(|_| Arc::new(Slot::default())).collect();
        Ok(Cluster {
            inner: Arc::new(Inner {
                credential,
                connector,
                connect_timeout_ms: options.connect_timeout_ms,
                request_timeout_ms: options.request_timeout_ms,
                state: Mutex::new(State { table, slots }),
                next_request_id: AtomicU64::new(1),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Updates under this lock are single assignments or pushes; poisoning is ignored.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request_timeout_ms(&self) -> u64 {
        self.inner.request_timeout_ms
    }

    pub fn connect_timeout_ms(&self) -> u64 {
        self.inner.connect_timeout_ms
    }

    /// Every known address, by endpoint index.
    pub fn endpoints(&self) -> Vec<String> {
        self.state().table.addrs().to_vec()
    }

    pub fn endpoint_count(&self) -> usize {
        self.state().table.len()
    }

    pub fn endpoint_addr(&self, endpoint: usize) -> Option<String> {
        let state = self.state();
        (endpoint < state.table.len()).then(|| state.table.addr(endpoint).to_string())
    }

    /// The endpoint believed to be the leader.
    pub fn leader(&self) -> Option<usize> {
        self.state().table.leader()
    }

    /// The endpoint index of `addr`, added as a new endpoint if unknown.
    pub fn endpoint_for(&self, addr: &str) -> Result<usize, ClientError> {
        let mut state = self.state();
        let index = state.table.learn(addr)?;
        if index == state.slots.len() {
            state.slots.push(Arc::new(Slot::default()));
        }
        debug_assert_eq!(state.slots.len(), state.table.len());
        Ok(index)
    }

    /// Follows a `NotLeader` hint: the hinted node's endpoint, now believed the leader.
    pub(crate) fn follow_hint(&self, hint: &Option<(crate::wire::NodeId, String)>) -> Option<usize> {
        let (node, addr) = hint.as_ref()?;
        match self.endpoint_for(addr) {
            Ok(index) => {
                self.note_leader(index);
                Some(index)
            }
            Err(e) => {
                tracing::warn!(node, %addr, error = %e, "leader hint not followed");
                None
            }
        }
    }

    /// Where a call starts: the known leader, else the rotation cursor.
    pub(crate) fn first_choice(&self) -> usize {
        self.state().table.first_choice()
    }

    pub(crate) fn next_endpoint(&self, endpoint: usize) -> usize {
        self.state().table.next_after(endpoint)
    }

    pub(crate) fn note_leader(&self, endpoint: usize) {
        self.state().table.note_leader(endpoint);
    }

    pub(crate) fn demote(&self, endpoint: usize) {
        self.state().table.demote(endpoint);
    }

    /// Sends `request` to one node and waits for its answer, within the request timeout.
    /// `NotLeader` and `RetryLater` come back as answers.
    pub async fn request(&self, endpoint: usize, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        self.request_within(endpoint, request, self.inner.request_timeout_ms).await
    }

    /// `request` with its own deadline.
    pub async fn request_within(
        &self,
        endpoint: usize,
        request: ClientRequest,
        timeout_ms: u64,
    ) -> Result<ClientResponse, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        self.attempt(endpoint, request, deadline).await
    }

    /// Sends `request` (a `Watch`) to one node on a connection of its own, and returns
    /// the answers as they come. Dropping the stream closes the connection, which is how
    /// a node learns the watch is over.
    pub async fn stream(&self, endpoint: usize, request: ClientRequest) -> Result<ResponseStream, ClientError> {
        let addr = self.addr_of(endpoint)?;
        let connect_ms = self.inner.connect_timeout_ms.min(self.inner.request_timeout_ms);
        let conn = Conn::open(&addr, &self.inner.credential, &self.inner.connector, connect_ms).await?;
        let rx = conn.start_stream(self.next_id(), request)?;
        Ok(ResponseStream { conn, rx })
    }

    /// Sends `request` to the leader, finding it first if needed, within the request
    /// timeout. Fails with `Unreachable` (no node answered), `NoLeader` (nodes answered
    /// but none led) or the leader's own answer's error.
    pub async fn call_leader(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        self.call(Target::Leader, request, self.inner.request_timeout_ms).await
    }

    /// `call_leader` with its own overall deadline.
    pub async fn call_leader_within(
        &self,
        request: ClientRequest,
        timeout_ms: u64,
    ) -> Result<ClientResponse, ClientError> {
        self.call(Target::Leader, request, timeout_ms).await
    }

    /// Sends `request` to any node that answers: the known leader first, then the others
    /// in turn. For reads that need not be linearizable, and status.
    pub async fn call_any(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        self.call(Target::Any, request, self.inner.request_timeout_ms).await
    }

    fn next_id(&self) -> u64 {
        self.inner.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    fn addr_of(&self, endpoint: usize) -> Result<String, ClientError> {
        let state = self.state();
        if endpoint >= state.table.len() {
            return Err(ClientError::InvalidOption {
                field: "endpoint",
                value: endpoint.to_string(),
                reason: format!("the client knows {} endpoints (0..{})", state.table.len(), state.table.len()),
            });
        }
        Ok(state.table.addr(endpoint).to_string())
    }

    async fn attempt(&self, endpoint: usize, request: ClientRequest, deadline: Instant) -> Answer {
        let (addr, slot) = {
            let state = self.state();
            if endpoint >= state.table.len() {
                drop(state);
                return Err(self.addr_of(endpoint).expect_err("out of range"));
            }
            (state.table.addr(endpoint).to_string(), state.slots[endpoint].clone())
        };
        let conn = self.connection(&addr, &slot, deadline).await?;
        let timeout_ms = ms_until(deadline).max(1);
        conn.call(self.next_id(), request, deadline, timeout_ms).await
    }

    async fn connection(&self, addr: &str, slot: &Slot, deadline: Instant) -> Result<Arc<Conn>, ClientError> {
        let timeout = || ClientError::Timeout { addr: addr.to_string(), timeout_ms: ms_until(deadline) };
        let mut guard = Timeout::new(slot.conn.lock(), deadline).await.map_err(|_| timeout())?;
        if let Some(conn) = guard.as_ref()
            && !conn.is_broken()
        {
            return Ok(conn.clone());
        }
        *guard = None;
        let remaining_ms = ms_until(deadline);
        if remaining_ms == 0 {
            return Err(timeout());
        }
        let conn = Conn::open(
            addr,
            &self.inner.credential,
            &self.inner.connector,
            self.inner.connect_timeout_ms.min(remaining_ms),
        )
        .await?;
        let conn = Arc::new(conn);
        debug_assert_eq!(conn.addr(), addr);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn call(&self, target: Target, request: ClientRequest, timeout_ms: u64) -> Answer {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(timeout_ms);
        let repeatable = is_repeatable(&request);
        let attempt_budget_ms = if repeatable {
            (timeout_ms / ATTEMPT_SHARE_DIVISOR).max(ATTEMPT_MIN_MS.min(timeout_ms)).max(1)
        } else {
            timeout_ms
        };
        let mut endpoint = self.state().table.first_choice();
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = String::from("no attempt was made (zero timeout)");
        // Whether any node answered at all: decides between "unreachable" and "no leader".
        let mut answered = false;
        // Whether every attempt so far found nothing listening.
        let mut all_refused = true;
        let mut misses = 0usize;
        let mut round_pause_ms = ROUND_PAUSE_FIRST_MS;
        loop {
            if misses >= self.endpoint_count() {
                misses = 0;
                sleep_until_or(deadline, round_pause_ms).await;
                round_pause_ms = (round_pause_ms * 2).min(ROUND_PAUSE_MAX_MS);
            }
            if ms_until(deadline) == 0 {
                let waited_ms = ms_since(start);
                return Err(if answered {
                    ClientError::NoLeader { endpoints: tried, waited_ms, last_error }
                } else {
                    ClientError::Unreachable { endpoints: tried, last_error }
                });
            }
            let addr = self.addr_of(endpoint)?;
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            let attempt_deadline = deadline.min(Instant::now() + Duration::from_millis(attempt_budget_ms));
            let answer = self.attempt(endpoint, request.clone(), attempt_deadline).await;
            match self.judge(target, endpoint, &addr, repeatable, answer) {
                Step::Done(response) => return Ok(response),
                Step::Fail(error) => return Err(error),
                Step::Redirect(to) => {
                    answered = true;
                    all_refused = false;
                    last_error = format!("{addr} is not the leader; it named {}", self.addr_of(to)?);
                    misses += 1;
                    endpoint = to;
                }
                Step::Again(reason) => {
                    answered = true;
                    all_refused = false;
                    last_error = format!("{addr}: {reason}");
                    sleep_until_or(deadline, RETRY_LATER_PAUSE_MS).await;
                }
                Step::Next { reason, answered: a, refused } => {
                    answered |= a;
                    all_refused &= refused && !answered;
                    last_error = reason;
                    misses += 1;
                    if all_refused && ms_since(start) >= REFUSED_GIVE_UP_MS {
                        return Err(ClientError::Unreachable { endpoints: tried, last_error });
                    }
                    endpoint = self.state().table.next_after(endpoint);
                }
            }
        }
    }

    /// Decides what one attempt's answer means for the call; updates leader knowledge.
    fn judge(&self, target: Target, endpoint: usize, addr: &str, repeatable: bool, answer: Answer) -> Step {
        match answer {
            Ok(ClientResponse::NotLeader { leader }) => match self.follow_hint(&leader) {
                Some(to) if to != endpoint => Step::Redirect(to),
                // A node naming itself while refusing: it is becoming leader; ask again.
                Some(_) => Step::Again("names itself leader but is not ready".into()),
                None => {
                    self.demote(endpoint);
                    Step::Next {
                        reason: format!("{addr} is not the leader and knows none"),
                        answered: true,
                        refused: false,
                    }
                }
            },
            Ok(ClientResponse::RetryLater(reason)) => {
                if target == Target::Leader {
                    self.note_leader(endpoint);
                }
                Step::Again(reason.to_string())
            }
            Ok(response) => {
                if target == Target::Leader {
                    self.note_leader(endpoint);
                }
                Step::Done(response)
            }
            // A wrong token, version or certificate is refused by every node alike: say so
            // at once.
            Err(e @ (ClientError::Rejected { .. } | ClientError::Tls { .. })) => Step::Fail(e),
            Err(e) if e.is_transport() => {
                self.demote(endpoint);
                let sent = matches!(e, ClientError::Timeout { .. } | ClientError::ConnectionLost { .. });
                if sent && !repeatable {
                    return Step::Fail(ClientError::Ambiguous { addr: addr.to_string(), reason: e.to_string() });
                }
                let refused = matches!(e, ClientError::ConnectRefused { .. });
                Step::Next { reason: e.to_string(), answered: false, refused }
            }
            Err(e) => Step::Fail(e),
        }
    }
}

/// Whether a request may be sent again after it may already have been processed.
/// Launching twice starts two programs; removing a node twice reports an error for a
/// removal that worked; a second leadership transfer may move leadership again.
/// Everything else is a read, a heartbeat, or a change that is the same when repeated (a
/// repeated session open leaves an unused session behind, which the cluster evicts in
/// time: cheaper than failing the open).
fn is_repeatable(request: &ClientRequest) -> bool {
    !matches!(
        request,
        ClientRequest::Launch(_)
            | ClientRequest::StartLocal(_)
            | ClientRequest::RemoveNode { .. }
            | ClientRequest::TransferLeader { .. }
    )
}

fn ms_until(deadline: Instant) -> u64 {
    u64::try_from(deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX)
}

fn ms_since(start: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

async fn sleep_until_or(deadline: Instant, pause_ms: u64) {
    tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(pause_ms))).await;
}

/// The answers to one streaming request, on a connection of its own.
pub struct ResponseStream {
    conn: Conn,
    rx: mpsc::Receiver<Answer>,
}

impl ResponseStream {
    pub fn addr(&self) -> &str {
        self.conn.addr()
    }

    /// The next answer; `ConnectionLost` once the connection ends.
    pub async fn next(&mut self) -> Result<ClientResponse, ClientError> {
        match self.rx.recv().await {
            Some(answer) => answer,
            None => Err(ClientError::ConnectionLost {
                addr: self.conn.addr().to_string(),
                reason: "the stream ended".into(),
            }),
        }
    }
}
