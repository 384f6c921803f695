//! `Client`: typed calls over a `Cluster` (connections, leader finding) and a `Session`
//! (exactly-once commands).
//!
//! Commands (registrations, puts, deletes, key/value writes) go through the session:
//! queued, applied once and in order, retried across leader changes. Reads, heartbeats,
//! status and membership changes are plain calls. Reads take a `Consistency`:
//! `Linearizable` (the leader confirms it still leads before answering; the usual
//! choice) or `Stale` (any node, possibly behind, still answers without a leader).

use crate::error::ClientError;
use crate::pool::{ClientOptions, Cluster, NodeReply, ResponseStream};
use crate::session::{Pending, Session};
use crate::timeout::Timeout;
use crate::watch::Watch;
use crate::wire::NodeId;
use crate::wire::{
    ClientRequest, ClientResponse, ClusterStatus, Consistency, LaunchRequest, OutputChunk, OutputRequest, SnapshotHead,
};
use roster_kernel::leader_search::SearchPolicy;
use roster_kernel::retry_queue::RetryConfig;
use roster_kernel::{
    Command, ListFilter, MemberId, ProcessEntry, ProcessId, ProcessPatch, Query, QueryReply, QueryResult, Reply,
    ResourceAverage, ServerEntry, ServerId, ServerInfo, ServerPatch, SessionId, SessionOwner, Tombstone,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Deadline of a remote launch: the leader waits up to ~20 s for the program to start
/// on its node and register (see `launch.rs`), so the usual request timeout is too short.
pub const LAUNCH_TIMEOUT_MS: u64 = 30_000;
/// How long `replace_node` waits for the leader's answer: above the leader's own bound on
/// the catch-up (`REPLACE_CATCH_UP_TIMEOUT_MS` on the node), so its error arrives first.
pub const REPLACE_TIMEOUT_MS: u64 = 40_000;
/// How long `add_node` waits: the leader's readmission of a starting node (5 s) and its
/// catch-up as a learner.
pub const ADD_NODE_TIMEOUT_MS: u64 = 30_000;

/// Members listed page by page (see `Client::list`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberList {
    /// Watch from here to follow every change after the list.
    pub revision: u64,
    pub servers: Vec<ServerEntry>,
    pub processes: Vec<ProcessEntry>,
}

/// Members asked of the node per page by `list` (the node's byte bound may cut a page
/// shorter).
pub const LIST_PAGE_LIMIT: u32 = 10_000;

/// One page of a member list.
#[derive(Clone, Debug)]
pub struct MemberPage {
    pub revision: u64,
    pub servers: Vec<ServerEntry>,
    pub processes: Vec<ProcessEntry>,
    /// Pass as `after` for the next page; `None`: the list ends here.
    pub next: Option<MemberId>,
}

/// One page of a key range.
#[derive(Clone, Debug)]
pub struct KvPage {
    pub revision: u64,
    pub items: Vec<(String, String)>,
    /// The key the next page starts at; `None`: the range ends here.
    pub next: Option<String>,
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    pub swapped: bool,
    /// The value found (before the swap, when it swapped).
    pub current: Option<String>,
    pub revision: u64,
}

/// A Roster client. Cheap to clone; clones share connections and the session.
#[derive(Clone, Debug)]
pub struct Client {
    cluster: Cluster,
    retry: RetryConfig,
    seed: u64,
    /// Opened by the first command, so read-only use (status, lists) needs no leader
    /// and writes nothing.
    session: Arc<OnceCell<Session>>,
}

impl Client {
    /// A client with the default retry configuration. Opens no connection yet: the
    /// first call connects, the first command opens the session. `seed` seeds the retry
    /// jitter; give each client its own.
    pub async fn connect(options: ClientOptions, seed: u64) -> Result<Client, ClientError> {
        Client::connect_with(options, RetryConfig::default(), seed).await
    }

    pub async fn connect_with(options: ClientOptions, retry: RetryConfig, seed: u64) -> Result<Client, ClientError> {
        retry.validate().map_err(ClientError::RetryConfig)?;
        Ok(Client { cluster: Cluster::new(options)?, retry, seed, session: Arc::new(OnceCell::new()) })
    }

    /// A client with a session of its own over `cluster`'s connections (shared with
    /// every other client made from it).
    pub fn with_cluster(cluster: Cluster, retry: RetryConfig, seed: u64) -> Result<Client, ClientError> {
        retry.validate().map_err(ClientError::RetryConfig)?;
        Ok(Client { cluster, retry, seed, session: Arc::new(OnceCell::new()) })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The session, opened now if it is not yet.
    pub async fn session(&self) -> Result<&Session, ClientError> {
        self.session.get_or_try_init(|| Session::open(self.cluster.clone(), self.retry, self.seed)).await
    }

    /// Waits until every queued command is answered, then stops the session.
    pub async fn close(&self) {
        if let Some(session) = self.session.get() {
            session.close().await;
        }
    }

    // ---- commands (exactly once, in order) ----

    /// Queues `command` and returns at once with a future of its answer.
    pub async fn submit(&self, command: Command) -> Result<Pending, ClientError> {
        self.session().await?.submit(command)
    }

    /// Queues `command` on an already open session, without waiting (for `Drop`).
    pub(crate) fn submit_now(&self, command: Command) -> Result<Pending, ClientError> {
        match self.session.get() {
            Some(session) => session.submit(command),
            None => Err(ClientError::Closed("no session was opened".into())),
        }
    }

    /// Runs `command` and waits for the answer; a refusal is `ClientError::Refused`.
    pub async fn execute(&self, command: Command) -> Result<Reply, ClientError> {
        self.session().await?.execute(command).await
    }

    /// Opens a session that the caller manages itself (the HTTP API's clients do), as
    /// opposed to this client's own, which `execute` opens and numbers.
    pub async fn open_session(&self) -> Result<SessionId, ClientError> {
        self.open_session_as(None).await
    }

    /// A node's open for a caller it authenticated (`owner`): the session is that caller's.
    pub async fn open_session_for(&self, owner: SessionOwner) -> Result<SessionId, ClientError> {
        self.open_session_as(Some(owner)).await
    }

    async fn open_session_as(&self, owner: Option<SessionOwner>) -> Result<SessionId, ClientError> {
        match self.cluster.call_leader(on_behalf(owner, ClientRequest::OpenSession)).await? {
            ClientResponse::SessionOpened(id) => Ok(id),
            other => Err(unexpected("SessionOpened", other)),
        }
    }

    /// Ends a session of this client's credential (or of `owner`'s, for a node passing
    /// it on). A retry that finds it closed already is `SessionExpired`.
    pub async fn close_session(&self, session: SessionId, owner: Option<SessionOwner>) -> Result<u64, ClientError> {
        let request = on_behalf(owner, ClientRequest::CloseSession { session });
        match self.cluster.call_leader(request).await? {
            ClientResponse::Applied(reply) => done(reply.map_err(ClientError::Refused)?),
            other => Err(unexpected("Applied", other)),
        }
    }

    /// Runs `command` as command `seq` of a session from `open_session`. The caller sends
    /// one command at a time, numbered from 1; repeating the same `(session, seq)` after
    /// a lost answer returns the stored reply instead of applying the command twice.
    /// `owner` is for a node passing on a caller's command (see `open_session_for`).
    pub async fn execute_in(
        &self,
        session: SessionId,
        seq: u64,
        command: Command,
        owner: Option<SessionOwner>,
    ) -> Result<Reply, ClientError> {
        let request = on_behalf(owner, ClientRequest::Submit(roster_kernel::Request { session, seq, command }));
        match self.cluster.call_leader(request).await? {
            ClientResponse::Applied(Ok(reply)) => Ok(reply),
            other => Err(unexpected("Applied", other)),
        }
    }

    /// Registers this server (or re-registers it after a restart). Returns the revision.
    pub async fn register_server(&self, id: ServerId, info: ServerInfo) -> Result<u64, ClientError> {
        done(self.execute(Command::RegisterServer { id, info }).await?)
    }

    pub async fn deregister_server(&self, id: ServerId) -> Result<u64, ClientError> {
        done(self.execute(Command::DeregisterServer { id }).await?)
    }

    /// Creates or patches a server entry (creates only when `create` is given).
    pub async fn put_server(
        &self,
        id: ServerId,
        patch: ServerPatch,
        create: Option<ServerInfo>,
    ) -> Result<u64, ClientError> {
        done(self.execute(Command::PutServer { id, patch, create }).await?)
    }

    pub async fn put_process(&self, id: ProcessId, patch: ProcessPatch) -> Result<u64, ClientError> {
        done(self.execute(Command::PutProcess { id, patch }).await?)
    }

    /// Removes a member (operator action); it leaves a `Deleted` tombstone.
    pub async fn delete(&self, member: MemberId) -> Result<u64, ClientError> {
        done(self.execute(Command::Delete { member }).await?)
    }

    pub async fn kv_put(&self, key: impl Into<String>, value: impl Into<String>) -> Result<u64, ClientError> {
        done(self.execute(Command::KvPut { key: key.into(), value: value.into() }).await?)
    }

    pub async fn kv_delete(&self, key: impl Into<String>) -> Result<u64, ClientError> {
        done(self.execute(Command::KvDelete { key: key.into() }).await?)
    }

    /// Sets `key` to `new` (deletes it when `None`) only if it now holds `expected`
    /// (`None`: absent).
    pub async fn kv_cas(
        &self,
        key: impl Into<String>,
        expected: Option<String>,
        new: Option<String>,
    ) -> Result<CasOutcome, ClientError> {
        match self.execute(Command::KvCas { key: key.into(), expected, new }).await? {
            Reply::Cas { swapped, current, revision } => Ok(CasOutcome { swapped, current, revision }),
            other => Err(unexpected_reply("Cas", &other)),
        }
    }

    /// Drains server `id` (placement stops choosing it; it stays a member) or, with
    /// `drained = false`, ends its drain. Returns the revision.
    pub async fn set_drained(&self, id: ServerId, drained: bool) -> Result<u64, ClientError> {
        done(self.execute(Command::SetDrained { id, drained }).await?)
    }

    // ---- credentials ----

    /// Records a token whose secret is `secret` (only its SHA-256 reaches the cluster).
    /// The caller makes the secret: high entropy, e.g. 32 random bytes as hex.
    pub async fn create_token(
        &self,
        secret: &str,
        name: impl Into<String>,
        role: roster_kernel::TokenRole,
        expires_at_unix_ms: Option<u64>,
    ) -> Result<roster_kernel::TokenId, ClientError> {
        let hash = crate::peer_auth::token_hash(secret);
        match self.execute(Command::CreateToken { hash, name: name.into(), role, expires_at_unix_ms }).await? {
            Reply::TokenCreated { id, .. } => Ok(id),
            other => Err(unexpected_reply("TokenCreated", &other)),
        }
    }

    /// Forgets a token: every node refuses it once the revocation is applied there.
    pub async fn revoke_token(&self, id: roster_kernel::TokenId) -> Result<u64, ClientError> {
        done(self.execute(Command::RevokeToken { id }).await?)
    }

    /// Every token the cluster knows (never a secret), read page by page.
    pub async fn tokens(&self) -> Result<Vec<roster_kernel::TokenInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let query = Query::Tokens { after, limit: LIST_PAGE_LIMIT };
            match self.query(query, Consistency::Linearizable).await?.result {
                QueryResult::Tokens { tokens, next } => {
                    all.extend(tokens);
                    match next {
                        Some(next) => after = Some(next),
                        None => return Ok(all),
                    }
                }
                other => return Err(unexpected_result("Tokens", &other)),
            }
        }
    }

    // ---- liveness ----

    /// "Alive", to the leader; servers attach their averaged resources.
    pub async fn heartbeat(&self, member: MemberId, resources: Option<ResourceAverage>) -> Result<(), ClientError> {
        match self.cluster.call_leader(ClientRequest::Heartbeat { member, resources }).await? {
            ClientResponse::HeartbeatOk => Ok(()),
            other => Err(unexpected("HeartbeatOk", other)),
        }
    }

    // ---- reads ----

    /// Any query, with the revision it was read at.
    pub async fn query(&self, query: Query, consistency: Consistency) -> Result<QueryReply, ClientError> {
        let request = ClientRequest::Query { query, consistency };
        let answer = match consistency {
            Consistency::Linearizable => self.cluster.call_leader(request).await?,
            Consistency::Stale => self.cluster.call_any(request).await?,
        };
        match answer {
            ClientResponse::Query(reply) => Ok(reply),
            other => Err(unexpected("Query", other)),
        }
    }

    pub async fn get_server(&self, id: ServerId, consistency: Consistency) -> Result<Option<ServerEntry>, ClientError> {
        match self.query(Query::GetServer(id), consistency).await?.result {
            QueryResult::Server(entry) => Ok(entry),
            other => Err(unexpected_result("Server", &other)),
        }
    }

    pub async fn get_process(
        &self,
        id: ProcessId,
        consistency: Consistency,
    ) -> Result<Option<ProcessEntry>, ClientError> {
        match self.query(Query::GetProcess(id), consistency).await?.result {
            QueryResult::Process(entry) => Ok(entry),
            other => Err(unexpected_result("Process", &other)),
        }
    }

    /// Every member `filter` matches, read page by page (`list_page`); `revision` is the
    /// first page's. Each page is read at its own revision: a member that joins or leaves
    /// while the pages are read may be missed or listed in its old state, so watch from
    /// `revision` to follow every change.
    pub async fn list(&self, filter: ListFilter, consistency: Consistency) -> Result<MemberList, ClientError> {
        let mut all: Option<MemberList> = None;
        let mut after = None;
        loop {
            let page = self.list_page(filter.clone(), after, LIST_PAGE_LIMIT, consistency).await?;
            let list = all.get_or_insert_with(|| MemberList { revision: page.revision, ..MemberList::default() });
            list.servers.extend(page.servers);
            list.processes.extend(page.processes);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all.expect("set above")),
            }
        }
    }

    /// One page of the members `filter` matches after `after`: at most `limit` of them,
    /// and at most what fits the node's page (`roster_kernel::MAX_PAGE_BYTES`).
    pub async fn list_page(
        &self,
        filter: ListFilter,
        after: Option<MemberId>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<MemberPage, ClientError> {
        let reply = self.query(Query::List { filter, after, limit }, consistency).await?;
        match reply.result {
            QueryResult::Members { servers, processes, next } => {
                Ok(MemberPage { revision: reply.revision, servers, processes, next })
            }
            other => Err(unexpected_result("Members", &other)),
        }
    }

    /// Departed members, newest first as the node keeps them, at most `limit`.
    pub async fn tombstones(&self, limit: u32, consistency: Consistency) -> Result<Vec<Tombstone>, ClientError> {
        match self.query(Query::Tombstones { limit }, consistency).await?.result {
            QueryResult::Tombstones(t) => Ok(t),
            other => Err(unexpected_result("Tombstones", &other)),
        }
    }

    pub async fn kv_get(
        &self,
        key: impl Into<String>,
        consistency: Consistency,
    ) -> Result<Option<String>, ClientError> {
        match self.query(Query::KvGet { key: key.into() }, consistency).await?.result {
            QueryResult::KvValue(v) => Ok(v),
            other => Err(unexpected_result("KvValue", &other)),
        }
    }

    /// Keys in `[start, end)` (`end = None`: to the last key), at most `limit`, read page
    /// by page (each page at its own revision).
    pub async fn kv_range(
        &self,
        start: impl Into<String>,
        end: Option<String>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<Vec<(String, String)>, ClientError> {
        let mut items = Vec::new();
        let mut start = start.into();
        loop {
            let left = limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX));
            if left == 0 {
                return Ok(items);
            }
            let page = self.kv_page(start, end.clone(), left, consistency).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => start = next,
                None => return Ok(items),
            }
        }
    }

    /// One page of keys in `[start, end)`: at most `limit`, and at most what fits the
    /// node's page; `next` is the key the next page starts at.
    pub async fn kv_page(
        &self,
        start: impl Into<String>,
        end: Option<String>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<KvPage, ClientError> {
        let reply = self.query(Query::KvRange { start: start.into(), end, limit }, consistency).await?;
        match reply.result {
            QueryResult::KvItems { items, next } => Ok(KvPage { revision: reply.revision, items, next }),
            other => Err(unexpected_result("KvItems", &other)),
        }
    }

    /// Change events after `after_revision`, resumed across reconnects.
    pub async fn watch(&self, after_revision: u64) -> Result<Watch, ClientError> {
        Watch::open(self.cluster.clone(), after_revision).await
    }

    // ---- cluster ----

    /// Opens a snapshot stream on the leader (found as `call_leader` finds it, by the
    /// kernel's `LeaderSearch`, within the request timeout): its head says what it holds;
    /// `SnapshotDownload::next_chunk` returns the bytes.
    pub async fn snapshot(&self) -> Result<SnapshotDownload, ClientError> {
        let timeout_ms = self.cluster.request_timeout_ms();
        // Asking for a snapshot changes nothing: it may be asked again.
        let policy = SearchPolicy::call(timeout_ms, true, true);
        let cluster = &self.cluster;
        let (head, stream) = cluster
            .search(policy, |endpoint, deadline| async move {
                let opened = Timeout::new(
                    async {
                        let mut stream = cluster.stream(endpoint, ClientRequest::Snapshot).await?;
                        let first = stream.next().await?;
                        Ok::<_, ClientError>((stream, first))
                    },
                    deadline,
                )
                .await;
                let addr = || cluster.endpoint_addr(endpoint).unwrap_or_default();
                match opened {
                    Err(_elapsed) => Err(ClientError::Timeout { addr: addr(), timeout_ms }),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok((stream, ClientResponse::SnapshotBegin(head)))) => Ok(NodeReply::Served((head, stream))),
                    Ok(Ok((_, ClientResponse::NotLeader { leader }))) => Ok(NodeReply::NotLeader(leader)),
                    Ok(Ok((_, ClientResponse::RetryLater(reason)))) => Ok(NodeReply::RetryLater(reason.to_string())),
                    Ok(Ok((_, other))) => Err(unexpected("SnapshotBegin", other)),
                }
            })
            .await?;
        Ok(SnapshotDownload { head, stream, received: 0, chunk_timeout_ms: timeout_ms })
    }

    /// The cluster as seen by the leader if one answers, else by any node.
    /// Prefers the leader's view: only the leader knows heartbeat ages.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let first = status(self.cluster.call_any(ClientRequest::Status).await?)?;
        let leader_addr = match first.leader {
            Some(l) if l != first.node => first.voters.iter().find(|(id, _)| *id == l).map(|(_, a)| a.clone()),
            _ => None,
        };
        let Some(addr) = leader_addr else { return Ok(first) };
        let index =
            (0..self.cluster.endpoint_count()).find(|i| self.cluster.endpoint_addr(*i).as_deref() == Some(&addr));
        match index {
            Some(i) => Ok(self.status_of(i).await.unwrap_or(first)),
            None => Ok(first),
        }
    }

    /// The cluster as seen by one node.
    pub async fn status_of(&self, endpoint: usize) -> Result<ClusterStatus, ClientError> {
        status(self.cluster.request(endpoint, ClientRequest::Status).await?)
    }

    /// Adds a server node to the Raft group (as a learner, then a voter). Waits up to
    /// `ADD_NODE_TIMEOUT_MS` (or the request timeout, if longer): the leader first waits
    /// for a node that is still starting, then for its catch-up.
    pub async fn add_node(&self, id: NodeId, addr: impl Into<String>) -> Result<(), ClientError> {
        let timeout_ms = ADD_NODE_TIMEOUT_MS.max(self.cluster.request_timeout_ms());
        let request = ClientRequest::AddNode { id, addr: addr.into() };
        match self.cluster.call_leader_within(request, timeout_ms).await? {
            ClientResponse::Done => Ok(()),
            other => Err(unexpected("Done", other)),
        }
    }

    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClientError> {
        match self.cluster.call_leader(ClientRequest::RemoveNode { id }).await? {
            ClientResponse::Done => Ok(()),
            other => Err(unexpected("Done", other)),
        }
    }

    /// Brings back voter `id` after it lost its data (demoted, caught up as a learner,
    /// promoted again). Waits up to `REPLACE_TIMEOUT_MS` (or the request timeout, if longer).
    pub async fn replace_node(&self, id: NodeId) -> Result<(), ClientError> {
        let timeout_ms = REPLACE_TIMEOUT_MS.max(self.cluster.request_timeout_ms());
        match self.cluster.call_leader_within(ClientRequest::ReplaceNode { id }, timeout_ms).await? {
            ClientResponse::Done => Ok(()),
            other => Err(unexpected("Done", other)),
        }
    }

    /// Hands leadership to voter `to`, or to the most up-to-date voter; returns the new
    /// leader once Raft reports it.
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId, ClientError> {
        match self.cluster.call_leader(ClientRequest::TransferLeader { to }).await? {
            ClientResponse::LeaderTransferred { leader } => Ok(leader),
            other => Err(unexpected("LeaderTransferred", other)),
        }
    }

    /// Places a new worker on the idlest server and starts it there; returns where it
    /// runs and its process id. Not repeated on an ambiguous failure (it would start a
    /// second copy): an unclear outcome is `ClientError::Ambiguous`.
    pub async fn launch(&self, request: LaunchRequest) -> Result<(ServerId, ProcessId), ClientError> {
        self.launch_started(request).await.map(|l| (l.server, l.process))
    }

    /// `launch`, and the file on the chosen server the job's output goes to (empty when a
    /// node of an older version answered without it).
    pub async fn launch_started(&self, request: LaunchRequest) -> Result<LaunchStarted, ClientError> {
        let timeout_ms = LAUNCH_TIMEOUT_MS.max(self.cluster.request_timeout_ms());
        match self.cluster.call_leader_within(ClientRequest::Launch(request), timeout_ms).await? {
            ClientResponse::LaunchStarted { server, process, output_file } => {
                Ok(LaunchStarted { server, process, output_file })
            }
            ClientResponse::Launched { server, process } => {
                Ok(LaunchStarted { server, process, output_file: String::new() })
            }
            other => Err(unexpected("LaunchStarted", other)),
        }
    }

    /// A piece of a launched process's output (at most `MAX_OUTPUT_READ_BYTES`), read on
    /// the node that runs it. Any node takes the request; a read changes nothing.
    pub async fn output(&self, request: OutputRequest) -> Result<OutputChunk, ClientError> {
        match self.cluster.call_any(ClientRequest::Output(request)).await? {
            ClientResponse::Output(chunk) => Ok(chunk),
            other => Err(unexpected("Output", other)),
        }
    }
}

/// Where a launched job runs, and where its output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchStarted {
    pub server: ServerId,
    pub process: ProcessId,
    /// The file on `server` that holds the job's stdout and stderr.
    pub output_file: String,
}

/// A snapshot arriving from the leader: `head` first, then the bytes in order. The
/// stream's connection is its own and closes when this is dropped.
pub struct SnapshotDownload {
    pub head: SnapshotHead,
    stream: ResponseStream,
    received: u64,
    /// Longest wait for one chunk.
    chunk_timeout_ms: u64,
}

impl SnapshotDownload {
    /// The next piece, or `None` once `head.total_bytes` have come. More bytes than the
    /// head announced, or an empty piece, is a protocol error; the checksum is the
    /// caller's to verify over the whole (`head.crc32`).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        if self.received == self.head.total_bytes {
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_millis(self.chunk_timeout_ms);
        let addr = self.stream.addr().to_string();
        let answer = Timeout::new(self.stream.next(), deadline)
            .await
            .map_err(|_| ClientError::Timeout { addr: addr.clone(), timeout_ms: self.chunk_timeout_ms })??;
        let chunk = match answer {
            ClientResponse::SnapshotChunk(chunk) => chunk,
            other => return Err(unexpected("SnapshotChunk", other)),
        };
        let left = self.head.total_bytes - self.received;
        if chunk.is_empty() || chunk.len() as u64 > left {
            return Err(ClientError::Protocol(format!(
                "snapshot chunk of {} bytes from {addr} with {left} of {} bytes left",
                chunk.len(),
                self.head.total_bytes
            )));
        }
        self.received += chunk.len() as u64;
        Ok(Some(chunk))
    }
}

fn status(answer: ClientResponse) -> Result<ClusterStatus, ClientError> {
    match answer {
        ClientResponse::Status(status) => Ok(*status),
        other => Err(unexpected("Status", other)),
    }
}

fn done(reply: Reply) -> Result<u64, ClientError> {
    match reply {
        Reply::Done { revision } => Ok(revision),
        other => Err(unexpected_reply("Done", &other)),
    }
}

/// An answer that is not the one wanted: the node's own error, or a protocol mismatch.
fn unexpected(wanted: &str, answer: ClientResponse) -> ClientError {
    match answer {
        ClientResponse::Error(e) => ClientError::Server(e),
        ClientResponse::UnknownMember(member) => ClientError::UnknownMember(member),
        ClientResponse::Applied(Err(refusal)) => ClientError::Refused(refusal),
        other => ClientError::Protocol(format!("expected {wanted}, got {}", response_name(&other))),
    }
}

pub(crate) fn unexpected_reply(wanted: &str, reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("expected reply {wanted}, got {reply:?}"))
}

fn unexpected_result(wanted: &str, result: &QueryResult) -> ClientError {
    let got = match result {
        QueryResult::Server(_) => "Server",
        QueryResult::Process(_) => "Process",
        QueryResult::Members { .. } => "Members",
        QueryResult::KvValue(_) => "KvValue",
        QueryResult::KvItems { .. } => "KvItems",
        QueryResult::Tombstones(_) => "Tombstones",
        QueryResult::Tokens { .. } => "Tokens",
    };
    ClientError::Protocol(format!("expected query result {wanted}, got {got}"))
}

/// The variant's name: enough to say what came, without printing a whole status.
fn response_name(answer: &ClientResponse) -> &'static str {
    match answer {
        ClientResponse::SessionOpened(_) => "SessionOpened",
        ClientResponse::Applied(_) => "Applied",
        ClientResponse::Query(_) => "Query",
        ClientResponse::HeartbeatOk => "HeartbeatOk",
        ClientResponse::UnknownMember(_) => "UnknownMember",
        ClientResponse::Events(_) => "Events",
        ClientResponse::EventsPart(_) => "EventsPart",
        ClientResponse::WatchCompacted { .. } => "WatchCompacted",
        ClientResponse::Status(_) => "Status",
        ClientResponse::Launched { .. } => "Launched",
        ClientResponse::LaunchStarted { .. } => "LaunchStarted",
        ClientResponse::Output(_) => "Output",
        ClientResponse::SnapshotBegin(_) => "SnapshotBegin",
        ClientResponse::SnapshotChunk(_) => "SnapshotChunk",
        ClientResponse::Done => "Done",
        ClientResponse::LeaderTransferred { .. } => "LeaderTransferred",
        ClientResponse::NotLeader { .. } => "NotLeader",
        ClientResponse::RetryLater(_) => "RetryLater",
        ClientResponse::Error(_) => "Error",
    }
}

/// `request` as is, or passed on for `owner`.
fn on_behalf(owner: Option<SessionOwner>, request: ClientRequest) -> ClientRequest {
    match owner {
        Some(owner) => ClientRequest::OnBehalf { owner, request: Box::new(request) },
        None => request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RequestError;

    #[test]
    fn unexpected_answers_become_the_right_error() {
        assert_eq!(
            unexpected("Done", ClientResponse::Error(RequestError::NoReply)),
            ClientError::Server(RequestError::NoReply)
        );
        let member = MemberId::Process(ProcessId(4));
        assert_eq!(
            unexpected("HeartbeatOk", ClientResponse::UnknownMember(member)),
            ClientError::UnknownMember(member)
        );
        let e = unexpected("Status", ClientResponse::HeartbeatOk);
        assert_eq!(e, ClientError::Protocol("expected Status, got HeartbeatOk".into()));
        assert_eq!(done(Reply::Done { revision: 7 }), Ok(7));
        assert!(matches!(done(Reply::Applied { count: 1, revision: 2 }), Err(ClientError::Protocol(_))));
    }
}
