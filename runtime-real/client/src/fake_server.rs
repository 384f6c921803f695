//! A tiny fake Roster cluster for the client's tests: nodes on 127.0.0.1 that speak the
//! wire protocol and apply commands with the state machine's exactly-once rule (last
//! sequence and reply per session), without Raft. Faults are switched on in its state.

use crate::transport::{self, Reader, Writer};
use crate::wire::{
    ClientEnvelope, ClientRequest, ClientResponse, ClientResponseEnvelope, ClusterStatus, Hello, HelloReply,
    MAX_CLIENT_FRAME_BYTES, RequestError, Unavailable,
};
use roster_kernel::{
    Command, CommandError, CommandResult, Event, EventKind, MemberId, ProcessId, Reply, Request, SessionId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub(crate) const TOKEN: &str = "test-token";

/// Where to bind a test listener. The OS picks a free port; under madsim, whose loopback
/// hands out the same low ports to listeners and to connecting sockets alike, ports come
/// from a range no client socket reaches.
pub(crate) fn local_addr() -> String {
    #[cfg(madsim)]
    {
        static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(20_000);
        format!("127.0.0.1:{}", NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
    #[cfg(not(madsim))]
    {
        "127.0.0.1:0".to_string()
    }
}

#[derive(Default)]
pub(crate) struct FakeState {
    pub(crate) addrs: Vec<String>,
    pub(crate) leader: Option<usize>,
    /// Nodes that close every connection right after accepting it.
    pub(crate) down: BTreeSet<usize>,
    /// Nodes that read requests and never answer.
    pub(crate) hung: BTreeSet<usize>,
    /// The leader never answers a `Submit` (nor applies it).
    pub(crate) black_hole_submits: bool,
    /// After applying the command that makes `applied` this long, close the connection
    /// instead of answering.
    pub(crate) drop_answer_at: BTreeSet<usize>,
    /// After applying the command that makes `applied` this long, move the leadership.
    pub(crate) move_leader_at: BTreeMap<usize, usize>,
    /// Answer the first `Submit` the leader sees with `RetryLater` (a fresh leader).
    pub(crate) retry_later_once: bool,
    /// After applying the command that makes `applied` this long, forget every session
    /// (as a cluster evicts idle sessions).
    pub(crate) forget_sessions_at: BTreeSet<usize>,
    /// Refuse this many `OpenSession`s (with an error) before opening any.
    pub(crate) fail_opens: usize,
    /// `OpenSession`s the leader received.
    pub(crate) opens_seen: usize,
    next_session: u64,
    sessions: BTreeMap<SessionId, (u64, CommandResult)>,
    /// Commands in the order applied.
    pub(crate) applied: Vec<(SessionId, u64, Command)>,
    /// Submits answered from the dedup record instead of applied again.
    pub(crate) duplicates: usize,
    /// (node, request) of every Submit received.
    pub(crate) submits_seen: Vec<(usize, Request)>,
    pub(crate) members: BTreeSet<MemberId>,
    next_process: u64,
    pub(crate) heartbeats: Vec<MemberId>,
    pub(crate) deregistered: Vec<(ProcessId, Option<i32>)>,
    pub(crate) events: Vec<Event>,
    /// Revisions at or below this are no longer kept for watches.
    pub(crate) compacted_through: u64,
    /// `after_revision` of every watch opened.
    pub(crate) watches: Vec<u64>,
    /// Close a watch connection after sending the event with this revision.
    pub(crate) drop_watch_after: BTreeSet<u64>,
}

pub(crate) struct FakeCluster {
    state: Arc<Mutex<FakeState>>,
    changed: Arc<Notify>,
}

impl FakeCluster {
    /// Starts `nodes` nodes, led by `leader`.
    pub(crate) async fn start(nodes: usize, leader: Option<usize>) -> FakeCluster {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..nodes {
            let l = TcpListener::bind(local_addr()).await.expect("bind a local port");
            addrs.push(l.local_addr().expect("bound").to_string());
            listeners.push(l);
        }
        let state =
            Arc::new(Mutex::new(FakeState { addrs, leader, next_session: 1, next_process: 1, ..Default::default() }));
        let changed = Arc::new(Notify::new());
        for (node, listener) in listeners.into_iter().enumerate() {
            tokio::spawn(accept_loop(node, listener, state.clone(), changed.clone()));
        }
        FakeCluster { state, changed }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    pub(crate) fn addr(&self, node: usize) -> String {
        self.state().addrs[node].clone()
    }

    /// Appends an event and wakes the watches.
    pub(crate) fn push_event(&self, key: &str) {
        {
            let mut s = self.state();
            let revision = s.events.last().map_or(0, |e| e.revision) + 1;
            s.events.push(Event { revision, kind: EventKind::KvPut { key: key.into(), value: "v".into() } });
        }
        self.changed.notify_waiters();
    }
}

async fn accept_loop(node: usize, listener: TcpListener, state: Arc<Mutex<FakeState>>, changed: Arc<Notify>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        if state.lock().unwrap().down.contains(&node) {
            drop(stream);
            continue;
        }
        let (r, w) = transport::framed(stream, MAX_CLIENT_FRAME_BYTES);
        tokio::spawn(serve(node, r, w, state.clone(), changed.clone()));
    }
}

/// What to do after a request.
enum Then {
    Answer(ClientResponse),
    Silence,
    Hangup,
    Watch(u64),
}

async fn serve(node: usize, mut r: Reader, mut w: Writer, state: Arc<Mutex<FakeState>>, changed: Arc<Notify>) {
    let Ok(hello) = r.recv::<Hello>().await else { return };
    if !matches!(&hello.auth, crate::wire::Auth::Token(t) if t == TOKEN) {
        let _ = w.send(&HelloReply::Refused { reason: "wrong cluster token".into() }).await;
        return;
    }
    if w.send(&HelloReply::Welcome { node: node as u64 + 1, role: "admin".into() }).await.is_err() {
        return;
    }
    loop {
        let Ok(envelope) = r.recv::<ClientEnvelope>().await else { return };
        let then = handle(node, envelope.request, &mut state.lock().unwrap());
        match then {
            Then::Answer(response) => {
                if w.send(&ClientResponseEnvelope { id: envelope.id, response }).await.is_err() {
                    return;
                }
            }
            Then::Silence => {}
            Then::Hangup => return,
            Then::Watch(after) => {
                watch(envelope.id, after, w, &state, &changed).await;
                return;
            }
        }
    }
}

async fn watch(id: u64, after: u64, mut w: Writer, state: &Mutex<FakeState>, changed: &Notify) {
    let mut seen = after;
    loop {
        let notified = changed.notified();
        let (response, hangup) = {
            let s = state.lock().unwrap();
            if seen < s.compacted_through {
                (Some(ClientResponse::WatchCompacted { oldest_available: s.compacted_through + 1 }), true)
            } else {
                let events: Vec<Event> = s.events.iter().filter(|e| e.revision > seen).take(2).cloned().collect();
                let hangup = events.iter().any(|e| s.drop_watch_after.contains(&e.revision));
                if let Some(last) = events.last() {
                    seen = last.revision;
                }
                ((!events.is_empty()).then_some(ClientResponse::Events(events)), hangup)
            }
        };
        match response {
            Some(response) => {
                if w.send(&ClientResponseEnvelope { id, response }).await.is_err() || hangup {
                    return;
                }
            }
            None => notified.await,
        }
    }
}

fn not_leader(s: &FakeState) -> ClientResponse {
    ClientResponse::NotLeader { leader: s.leader.map(|l| (l as u64 + 1, s.addrs[l].clone())) }
}

fn handle(node: usize, request: ClientRequest, s: &mut FakeState) -> Then {
    if s.down.contains(&node) {
        return Then::Hangup;
    }
    if s.hung.contains(&node) {
        return Then::Silence;
    }
    let leads = s.leader == Some(node);
    match request {
        ClientRequest::Watch { after_revision } => {
            s.watches.push(after_revision);
            Then::Watch(after_revision)
        }
        ClientRequest::Status => Then::Answer(ClientResponse::Status(Box::new(ClusterStatus {
            node: node as u64 + 1,
            leader: s.leader.map(|l| l as u64 + 1),
            term: 1,
            revision: s.applied.len() as u64,
            ..ClusterStatus::default()
        }))),
        _ if !leads => Then::Answer(not_leader(s)),
        ClientRequest::OpenSession => {
            s.opens_seen += 1;
            if s.fail_opens > 0 {
                s.fail_opens -= 1;
                return Then::Answer(ClientResponse::Error(RequestError::NoReply));
            }
            let session = SessionId(s.next_session);
            s.next_session += 1;
            s.sessions.insert(session, (0, Ok(Reply::Done { revision: 0 })));
            Then::Answer(ClientResponse::SessionOpened(session))
        }
        ClientRequest::Heartbeat { member, .. } => {
            if s.members.contains(&member) {
                s.heartbeats.push(member);
                Then::Answer(ClientResponse::HeartbeatOk)
            } else {
                Then::Answer(ClientResponse::UnknownMember(member))
            }
        }
        ClientRequest::Submit(request) => submit(node, request, s),
        other => Then::Answer(ClientResponse::Error(RequestError::Unsupported { request: format!("{other:?}") })),
    }
}

fn submit(node: usize, request: Request, s: &mut FakeState) -> Then {
    s.submits_seen.push((node, request.clone()));
    if s.black_hole_submits {
        return Then::Silence;
    }
    if s.retry_later_once {
        s.retry_later_once = false;
        return Then::Answer(ClientResponse::RetryLater(Unavailable::LeaderNotReady));
    }
    let Some((last, last_reply)) = s.sessions.get(&request.session).cloned() else {
        return Then::Answer(ClientResponse::Applied(Err(CommandError::UnknownSession(request.session))));
    };
    let (session, seq) = (request.session, request.seq);
    if seq == last {
        s.duplicates += 1;
        return Then::Answer(ClientResponse::Applied(last_reply));
    }
    if seq != last + 1 {
        let error = if seq < last {
            CommandError::StaleSequence { session, seq, last }
        } else {
            CommandError::SequenceGap { session, seq, last }
        };
        return Then::Answer(ClientResponse::Applied(Err(error)));
    }
    let revision = s.applied.len() as u64 + 1;
    let result = apply(s, &request.command, revision);
    s.applied.push((session, seq, request.command));
    s.sessions.insert(session, (seq, result.clone()));
    let count = s.applied.len();
    if s.forget_sessions_at.remove(&count) {
        s.sessions.clear();
    }
    if let Some(to) = s.move_leader_at.remove(&count) {
        s.leader = Some(to);
    }
    if s.drop_answer_at.remove(&count) {
        return Then::Hangup;
    }
    Then::Answer(ClientResponse::Applied(result))
}

fn apply(s: &mut FakeState, command: &Command, revision: u64) -> CommandResult {
    match command {
        Command::RegisterProcess { .. } => {
            let id = ProcessId(s.next_process);
            s.next_process += 1;
            s.members.insert(MemberId::Process(id));
            Ok(Reply::ProcessRegistered { id, revision })
        }
        Command::DeregisterProcess { id, exit_status } => {
            if !s.members.remove(&MemberId::Process(*id)) {
                return Err(CommandError::UnknownMember(MemberId::Process(*id)));
            }
            s.deregistered.push((*id, *exit_status));
            Ok(Reply::Done { revision })
        }
        _ => Ok(Reply::Done { revision }),
    }
}
