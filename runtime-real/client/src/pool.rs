//! `Cluster`: the client's connections to the nodes and its one record of the leader.
//!
//! One multiplexed connection per node, opened on first use and reopened on the next use
//! after it breaks. `request` talks to one given node; `call_leader` and `call_any` find a
//! node that serves, within one overall deadline; `stream` opens a dedicated connection
//! for a watch, closed when the stream is dropped.
//!
//! Which node to ask next, what an answer or a failure means, how long to pause and when
//! to give up is the kernel's `LeaderSearch` to decide (`roster_kernel::leader_search`);
//! a call here only moves bytes: it sends each attempt the search asks for, tells it what
//! came back, sleeps until its timer, and puts what it learned about the leader into the
//! `LeaderRecord`, the client's only record of who leads (sessions inform it too).

use crate::Timeout;
use crate::conn::{Answer, Conn};
use crate::endpoints::EndpointTable;
use crate::error::ClientError;
use crate::transport::Connector;
use crate::wire::{ClientRequest, ClientResponse};
use roster_kernel::leader_search::{
    Answer as SearchAnswer, EndpointId, Failure, LeaderNews, LeaderRecord, LeaderSearch, SearchOutcome, SearchPolicy,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;

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
    /// The addresses, by endpoint index.
    table: EndpointTable,
    /// Who leads, by endpoint index: the client's one record of it.
    record: LeaderRecord,
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
            .field("leader", &state.record.leader())
            .field("request_timeout_ms", &self.inner.request_timeout_ms)
            .finish()
    }
}

/// What one attempt of a search got back from the node.
pub(crate) enum NodeReply<T> {
    /// The node served the request.
    Served(T),
    /// The node does not lead; it may name who does.
    NotLeader(Option<(crate::wire::NodeId, String)>),
    /// The node leads but cannot serve yet.
    RetryLater(String),
}

/// Which node a call wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Only the leader serves it (writes, heartbeats, linearizable reads, membership).
    Leader,
    /// Any node serves it (stale reads, status); the leader is tried first when known.
    Any,
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
                state: Mutex::new(State { table, record: LeaderRecord::default(), slots }),
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
        self.state().record.leader().map(|e| e.0)
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

    /// Maps a `NotLeader` hint to an endpoint index, learning its address if new. `None`
    /// without a hint, or when its address cannot be kept.
    pub(crate) fn hint_endpoint(&self, hint: &Option<(crate::wire::NodeId, String)>) -> Option<usize> {
        let (node, addr) = hint.as_ref()?;
        match self.endpoint_for(addr) {
            Ok(index) => Some(index),
            Err(e) => {
                tracing::warn!(node, %addr, error = %e, "leader hint not followed");
                None
            }
        }
    }

    /// How many endpoints there are and where a search starts (the record's first
    /// choice: the known leader, else the rotation cursor), read together.
    pub(crate) fn search_start(&self) -> (usize, EndpointId) {
        let state = self.state();
        (state.table.len(), state.record.first_choice())
    }

    /// Puts what a search learned into the record of the leader.
    pub(crate) fn apply_news(&self, news: impl IntoIterator<Item = LeaderNews>) {
        let mut state = self.state();
        let count = state.table.len();
        for n in news {
            state.record.apply(n, count);
        }
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

    /// One call, driven by the kernel's `LeaderSearch` (see `search`).
    async fn call(&self, target: Target, request: ClientRequest, timeout_ms: u64) -> Answer {
        let policy = SearchPolicy::call(timeout_ms, target == Target::Leader, request.repeatable());
        self.search(policy, |endpoint, deadline| {
            let request = request.clone();
            async move {
                Ok(match self.attempt(endpoint, request, deadline).await? {
                    ClientResponse::NotLeader { leader } => NodeReply::NotLeader(leader),
                    ClientResponse::RetryLater(reason) => NodeReply::RetryLater(reason.to_string()),
                    response => NodeReply::Served(response),
                })
            }
        })
        .await
    }

    /// Finds a node that serves under `policy`: this loop only sends the attempts the
    /// kernel's `LeaderSearch` asks for (`attempt(endpoint, deadline)`), tells it what
    /// came back, sleeps until its timer, and puts what it learned into the record of the
    /// leader. Its time is the milliseconds since the search started.
    pub(crate) async fn search<T, F, Fut>(&self, policy: SearchPolicy, attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(usize, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<NodeReply<T>, ClientError>>,
    {
        let (_, first) = self.search_start();
        self.search_from(policy, first, attempt).await
    }

    /// `search`, starting at `first` (an endpoint the kernel chose, e.g. a stream's
    /// `StreamResume::start`).
    pub(crate) async fn search_from<T, F, Fut>(
        &self,
        policy: SearchPolicy,
        first: EndpointId,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(usize, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<NodeReply<T>, ClientError>>,
    {
        let start = Instant::now();
        let count = self.endpoint_count();
        // No jitter in a call's pauses: the seed draws nothing.
        let mut search = LeaderSearch::new(0, policy, first, count, 0);
        let mut last_error = String::from("no attempt was made (zero timeout)");
        // The last failure the search may end on (Ambiguous, Rejected), as it came.
        let mut last_failure: Option<ClientError> = None;
        let mut served: Option<T> = None;
        loop {
            self.apply_news(std::iter::from_fn(|| search.poll_news()));
            if let Some(outcome) = search.outcome() {
                return self.search_result(outcome, &search, served, last_failure, last_error);
            }
            if let Some(a) = search.poll_attempt(ms_since(start)) {
                let endpoint = a.endpoint.0;
                let addr = self.addr_of(endpoint)?;
                let reply = attempt(endpoint, start + Duration::from_millis(a.deadline_ms)).await;
                let now_ms = ms_since(start);
                match reply {
                    Ok(NodeReply::NotLeader(leader)) => {
                        let hint = self.hint_endpoint(&leader);
                        search.handle_endpoint_count(self.endpoint_count());
                        last_error = self.not_leader_error(&addr, endpoint, hint)?;
                        let hint = hint.map(EndpointId);
                        search.handle_answer(now_ms, a.attempt, SearchAnswer::NotLeader { hint });
                    }
                    Ok(NodeReply::RetryLater(reason)) => {
                        last_error = format!("{addr}: {reason}");
                        search.handle_answer(now_ms, a.attempt, SearchAnswer::RetryLater);
                    }
                    Ok(NodeReply::Served(value)) => {
                        served = Some(value);
                        search.handle_answer(now_ms, a.attempt, SearchAnswer::Served);
                    }
                    Err(e) => match failure_of(&e) {
                        Some(failure) => {
                            last_error = e.to_string();
                            last_failure = Some(e);
                            search.handle_failure(now_ms, a.attempt, failure);
                        }
                        // Not about the path to a node (a request too large to send, an
                        // answer that makes no sense): no other node would do better.
                        None => return Err(e),
                    },
                }
                continue;
            }
            match search.poll_timeout() {
                Some(at_ms) => {
                    tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
                    search.handle_timeout(ms_since(start));
                }
                // The search ended as it was polled (its deadline passed).
                None => debug_assert!(search.outcome().is_some(), "a search neither over nor waiting"),
            }
        }
    }

    /// What a node that is not the leader said, naming the leader it pointed to.
    fn not_leader_error(&self, addr: &str, endpoint: usize, hint: Option<usize>) -> Result<String, ClientError> {
        Ok(match hint {
            Some(to) if to != endpoint => format!("{addr} is not the leader; it named {}", self.addr_of(to)?),
            Some(_) => format!("{addr}: names itself leader but is not ready"),
            None => format!("{addr} is not the leader and knows none"),
        })
    }

    /// The result from how a search ended.
    fn search_result<T>(
        &self,
        outcome: SearchOutcome,
        search: &LeaderSearch,
        served: Option<T>,
        last_failure: Option<ClientError>,
        last_error: String,
    ) -> Result<T, ClientError> {
        let tried = || -> Vec<String> { search.tried().iter().filter_map(|e| self.endpoint_addr(e.0)).collect() };
        match outcome {
            SearchOutcome::Answered { .. } => {
                Ok(served.expect("the search ends answered only when a node served the request"))
            }
            SearchOutcome::NoLeader { waited_ms } => {
                Err(ClientError::NoLeader { endpoints: tried(), waited_ms, last_error })
            }
            SearchOutcome::Unreachable => Err(ClientError::Unreachable { endpoints: tried(), last_error }),
            SearchOutcome::Ambiguous { endpoint, .. } => Err(ClientError::Ambiguous {
                addr: self.endpoint_addr(endpoint.0).unwrap_or_default(),
                reason: last_failure.map_or(last_error, |e| e.to_string()),
            }),
            SearchOutcome::Rejected { endpoint } => Err(last_failure.unwrap_or_else(|| ClientError::Rejected {
                addr: self.endpoint_addr(endpoint.0).unwrap_or_default(),
                reason: last_error,
            })),
        }
    }
}

/// What a failed attempt means to the search; `None` for errors that are not about the
/// path to a node.
pub(crate) fn failure_of(error: &ClientError) -> Option<Failure> {
    match error {
        // A wrong token, version or certificate is refused by every node alike.
        ClientError::Rejected { .. } | ClientError::Tls { .. } => Some(Failure::Rejected),
        ClientError::ConnectRefused { .. } => Some(Failure::Refused),
        // Not sent: the connection was not made, or had no room for one more request.
        ClientError::Connect { .. } | ClientError::Busy { .. } => Some(Failure::ConnectFailed),
        ClientError::ConnectionLost { .. } => Some(Failure::Lost),
        ClientError::Timeout { .. } => Some(Failure::Timeout),
        _ => None,
    }
}

fn ms_until(deadline: Instant) -> u64 {
    u64::try_from(deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX)
}

fn ms_since(start: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
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
