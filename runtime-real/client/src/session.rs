//! `Session`: exactly-once commands. A background task drives the kernel's sans-IO
//! `RetryQueue` (the "local message queue retried by a separate commit thread" of the
//! design): commands wait in submission order, go to the leader one at a time under the
//! session's `(session, seq)`, and are retried with backoff across leader changes and
//! whole-cluster outages until the cluster answers; the state machine's dedup makes the
//! retries harmless, so each command is applied once, in order.
//!
//! The queue decides everything about retrying (where, when, what an answer means, when
//! to open a new session: its `LeaderSearch`); this driver only moves bytes. After every
//! input:
//!
//! ```text
//! handle_first_choice <- the Cluster's record of the leader (read before the queue's lock)
//! poll_completed    -> resolve the caller's Pending
//! poll_news         -> into the Cluster's record of the leader (after the queue's lock is released)
//! poll_open_session -> open a new session (the cluster evicted or refused the old one)
//! poll_transmit     -> send Submit(request) to the endpoint; its answer comes back as an input
//! poll_timeout      -> sleep until then, or until an answer or a new command arrives
//! ```
//!
//! Endpoint indexes are the `Cluster`'s. A leader hint naming a node not known yet adds
//! its address to the `Cluster` first, then tells the queue the list grew.

use crate::error::ClientError;
use crate::pool::Cluster;
use crate::wire::{ClientRequest, ClientResponse, RequestError};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use roster_kernel::retry_queue::{EndpointId, Failure, LeaderNews, QueueFull, RetryConfig, RetryQueue, Transmit};
use roster_kernel::{Command, CommandError, CommandResult, Reply, SessionId};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

/// After the last `Session` handle and `Pending` are dropped without `close`, the driver
/// keeps delivering what is queued (e.g. a deregistration submitted from a `Drop`) for
/// at most this long, then fails the rest.
pub const LINGER_AFTER_DROP_MS: u64 = 10_000;
/// Sessions opened by `open_for_queue` tasks, travelling to the driver.
const OUTCOME_BUFFER: usize = 64;

/// A command's answer, or why the session could not get one.
type CommandAnswer = Result<CommandResult, ClientError>;

/// Exactly-once command submission to a cluster. Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    handle: Arc<HandleGuard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("session", &self.session_id()).field("queued", &self.queued()).finish()
    }
}

/// A submitted command's answer, once the cluster has applied (or refused) it.
/// Outer error: the session stopped before an answer; inner: the cluster's answer.
pub struct Pending {
    seq: u64,
    rx: oneshot::Receiver<CommandAnswer>,
    /// Keeps the session's driver running while someone waits for an answer.
    _handle: Arc<HandleGuard>,
}

impl Pending {
    /// The command's place in submission order (1, 2, …).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Future for Pending {
    type Output = Result<CommandResult, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err(ClientError::Closed("the session stopped before the command was answered".into())))
        })
    }
}

struct Shared {
    cluster: Cluster,
    core: Mutex<Core>,
    /// New command or lifecycle change; the driver is its only waiter.
    wake: Notify,
    start: Instant,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Open,
    /// `close` was called: no new commands; ends when the queue is empty.
    Closing,
    /// Every handle is gone: ends when the queue is empty or at `linger_until_ms`.
    Dropped {
        linger_until_ms: u64,
    },
}

struct Waiting {
    reply: oneshot::Sender<CommandAnswer>,
}

struct Core {
    queue: RetryQueue,
    /// By queue sequence number: every command waiting, in flight or completed-unpolled.
    waiting: BTreeMap<u64, Waiting>,
    lifecycle: Lifecycle,
}

/// Something the driver learned from a task.
enum Outcome {
    Answer { attempt: u64, endpoint: usize, answer: Result<ClientResponse, ClientError> },
    SessionOpened(Result<SessionId, ClientError>),
}

/// What one driver step decided, to do outside the lock.
struct Step {
    transmits: Vec<Transmit>,
    open_session: bool,
    wake_at_ms: Option<u64>,
    exit: bool,
}

struct HandleGuard {
    shared: Arc<Shared>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        let now_ms = self.shared.now_ms();
        {
            let mut core = self.shared.core();
            if core.lifecycle == Lifecycle::Open {
                core.lifecycle = Lifecycle::Dropped { linger_until_ms: now_ms.saturating_add(LINGER_AFTER_DROP_MS) };
            }
        }
        self.shared.wake.notify_one();
    }
}

impl Session {
    /// Opens a session on the cluster (through the leader) and starts its driver.
    /// `seed` seeds the retry jitter; pass a different one per client.
    pub async fn open(cluster: Cluster, config: RetryConfig, seed: u64) -> Result<Session, ClientError> {
        config.validate().map_err(ClientError::RetryConfig)?;
        let session = open_session(&cluster).await?;
        let mut queue = RetryQueue::new(config, cluster.endpoint_count(), seed).map_err(ClientError::RetryConfig)?;
        queue.set_session(session, 1);
        let shared = Arc::new(Shared {
            cluster,
            core: Mutex::new(Core { queue, waiting: BTreeMap::new(), lifecycle: Lifecycle::Open }),
            wake: Notify::new(),
            start: Instant::now(),
            driver: Mutex::new(None),
        });
        let (outcome_tx, outcome_rx) = mpsc::channel(OUTCOME_BUFFER);
        let driver = tokio::spawn(drive(shared.clone(), outcome_tx, outcome_rx));
        *shared.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(driver);
        tracing::debug!(%session, "client session open");
        Ok(Session { handle: Arc::new(HandleGuard { shared: shared.clone() }), shared })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// The session commands currently go under; `None` while a new one is being opened.
    pub fn session_id(&self) -> Option<SessionId> {
        self.shared.core().queue.session()
    }

    /// Commands accepted and not yet answered.
    pub fn queued(&self) -> usize {
        self.shared.core().waiting.len()
    }

    /// Queues `command` behind every earlier one. Never drops it: at the queue's bound it
    /// is refused with `QueueFull`. Submission order is application order.
    pub fn submit(&self, command: Command) -> Result<Pending, ClientError> {
        let now_ms = self.shared.now_ms();
        let (tx, rx) = oneshot::channel();
        let seq = {
            let mut core = self.shared.core();
            if core.lifecycle != Lifecycle::Open {
                return Err(ClientError::Closed("close() was called".into()));
            }
            let seq = core
                .queue
                .submit(now_ms, command)
                .map_err(|QueueFull { max_queued }| ClientError::QueueFull { max: max_queued })?;
            let previous = core.waiting.insert(seq, Waiting { reply: tx });
            assert!(previous.is_none(), "queue sequence {seq} issued twice");
            seq
        };
        self.shared.wake.notify_one();
        Ok(Pending { seq, rx, _handle: self.handle.clone() })
    }

    /// Submits `command` and waits for the cluster's answer; a refusal becomes
    /// `ClientError::Refused`.
    pub async fn execute(&self, command: Command) -> Result<Reply, ClientError> {
        match self.submit(command)?.await? {
            Ok(reply) => Ok(reply),
            Err(refusal) => Err(ClientError::Refused(refusal)),
        }
    }

    /// Stops taking commands, waits until every queued one is answered (however long
    /// the cluster takes: bound it with a timeout if needed), then stops the driver.
    pub async fn close(&self) {
        {
            let mut core = self.shared.core();
            core.lifecycle = Lifecycle::Closing;
        }
        self.shared.wake.notify_one();
        let driver = self.shared.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(driver) = driver
            && let Err(e) = driver.await
        {
            tracing::error!(error = %e, "client session driver failed");
        }
    }
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        // Every update under this lock completes before the lock is released (no await
        // inside), so a panic cannot leave it half-done: poisoning is ignored.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the session started, on tokio's clock (madsim's in simulation).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Drains the queue's outputs and decides what to do next.
    fn step(&self) -> Step {
        let now_ms = self.now_ms();
        // The cluster's record first (its lock), then the queue (the session's).
        let (endpoint_count, first_choice) = self.cluster.search_start();
        let mut core = self.core();
        core.queue.handle_endpoint_count(endpoint_count);
        core.queue.handle_first_choice(first_choice);
        core.resolve_completed();
        let open_session = core.queue.poll_open_session(now_ms);
        let transmits: Vec<Transmit> = std::iter::from_fn(|| core.queue.poll_transmit(now_ms)).collect();
        debug_assert_eq!(core.waiting.len(), core.queue.len(), "one waiter per queued command");
        let mut wake_at_ms = core.queue.poll_timeout();
        let exit = match core.lifecycle {
            Lifecycle::Open => false,
            Lifecycle::Closing => core.waiting.is_empty(),
            Lifecycle::Dropped { linger_until_ms } => {
                if !core.waiting.is_empty() && now_ms >= linger_until_ms {
                    tracing::warn!(
                        commands = core.waiting.len(),
                        "client session dropped: undelivered commands abandoned after {LINGER_AFTER_DROP_MS} ms"
                    );
                    core.fail_all("the session was dropped before the command was delivered");
                }
                wake_at_ms = Some(wake_at_ms.map_or(linger_until_ms, |t| t.min(linger_until_ms)));
                core.waiting.is_empty()
            }
        };
        Step { transmits, open_session, wake_at_ms, exit }
    }

    /// Moves what the queue learned about the leader into the cluster's record. Called
    /// with the queue's lock released: the two locks are never held together.
    fn tell_cluster(&self, news: Vec<LeaderNews>) {
        if !news.is_empty() {
            self.cluster.apply_news(news);
        }
    }

    fn handle_timeout(&self) {
        let now_ms = self.now_ms();
        let news = {
            let mut core = self.core();
            core.queue.handle_timeout(now_ms);
            core.news()
        };
        self.tell_cluster(news);
    }

    fn apply(&self, outcome: Outcome) {
        let now_ms = self.now_ms();
        // A hint's address goes into the cluster's list first (its lock), so the queue
        // only ever sees indexes the list has.
        let hint = match &outcome {
            Outcome::Answer { answer: Ok(ClientResponse::NotLeader { leader }), .. } => {
                self.cluster.hint_endpoint(leader)
            }
            _ => None,
        };
        let endpoint_count = self.cluster.endpoint_count();
        let news = {
            let mut core = self.core();
            core.queue.handle_endpoint_count(endpoint_count);
            match outcome {
                Outcome::SessionOpened(Ok(session)) => {
                    if core.queue.needs_session() {
                        tracing::info!(%session, "client session reopened; queued commands continue under it");
                    }
                    core.queue.handle_session_opened(session);
                }
                Outcome::SessionOpened(Err(e)) => {
                    tracing::warn!(error = %e, "cannot open a new client session; retrying");
                    core.queue.handle_session_open_failed(now_ms);
                }
                Outcome::Answer { attempt, endpoint, answer } => {
                    answer_to_queue(&mut core.queue, now_ms, attempt, endpoint, hint, answer);
                }
            }
            core.news()
        };
        self.tell_cluster(news);
    }
}

/// Tells the queue what came back for `attempt` (`hint`: the `NotLeader` hint's endpoint).
fn answer_to_queue(
    queue: &mut RetryQueue,
    now_ms: u64,
    attempt: u64,
    endpoint: usize,
    hint: Option<usize>,
    answer: Result<ClientResponse, ClientError>,
) {
    match answer {
        Ok(ClientResponse::Applied(result)) => queue.handle_reply(now_ms, attempt, result),
        Ok(ClientResponse::NotLeader { .. }) => queue.handle_not_leader(now_ms, attempt, hint.map(EndpointId)),
        Ok(ClientResponse::RetryLater(_)) => queue.handle_retry_later(now_ms, attempt),
        // Refused for the caller's credential: resending cannot help, and nothing applied.
        Ok(ClientResponse::Error(RequestError::Forbidden { role, action })) => {
            let refusal = roster_kernel::Forbidden { role, action };
            queue.handle_rejected(now_ms, attempt, CommandError::Forbidden(refusal));
        }
        Ok(ClientResponse::Error(RequestError::Unauthenticated { reason })) => {
            queue.handle_rejected(now_ms, attempt, CommandError::Unauthenticated { reason });
        }
        Ok(other) => {
            // The node could not take the command (e.g. shutting down) and may or may not
            // have applied it: the same `(session, seq)` elsewhere is harmless.
            tracing::warn!(endpoint, answer = ?other, "unexpected answer to a command; retrying");
            queue.handle_failure(now_ms, attempt, Failure::Lost);
        }
        Err(e) => {
            tracing::debug!(endpoint, error = %e, "command attempt failed; retrying");
            // An error not about the path to a node is retried like a lost connection:
            // the command waits out whatever it is, as it waits out an outage.
            let failure = crate::pool::failure_of(&e).unwrap_or(Failure::Lost);
            queue.handle_failure(now_ms, attempt, failure);
        }
    }
}

impl Core {
    fn resolve_completed(&mut self) {
        while let Some(done) = self.queue.poll_completed() {
            let waiting = self.waiting.remove(&done.seq);
            assert!(waiting.is_some(), "completed command {} had no waiter", done.seq);
            if let Some(waiting) = waiting {
                // A dropped Pending (fire-and-forget) is fine.
                let _ = waiting.reply.send(Ok(done.result));
            }
        }
    }

    fn fail_all(&mut self, reason: &str) {
        for (_, waiting) in std::mem::take(&mut self.waiting) {
            let _ = waiting.reply.send(Err(ClientError::Closed(reason.to_string())));
        }
    }

    /// What the queue learned about the leader since the last call.
    fn news(&mut self) -> Vec<LeaderNews> {
        std::iter::from_fn(|| self.queue.poll_news()).collect()
    }
}

async fn drive(shared: Arc<Shared>, outcome_tx: mpsc::Sender<Outcome>, mut outcomes: mpsc::Receiver<Outcome>) {
    // Attempts run inside this task (no task per command): their answers wake the driver
    // directly. Usually one at a time; a retry may overlap an attempt that timed out.
    let mut attempts: FuturesUnordered<Pin<Box<dyn Future<Output = Outcome> + Send>>> = FuturesUnordered::new();
    loop {
        let step = shared.step();
        let timeout_ms = shared.core().queue.config().request_timeout_ms;
        for transmit in step.transmits {
            attempts.push(Box::pin(send_command(shared.cluster.clone(), transmit, timeout_ms)));
        }
        if step.open_session {
            tokio::spawn(open_for_queue(shared.cluster.clone(), outcome_tx.clone()));
        }
        if step.exit {
            return;
        }
        let wake_at = step.wake_at_ms.map(|ms| shared.start + Duration::from_millis(ms));
        tokio::select! {
            biased;
            Some(outcome) = attempts.next(), if !attempts.is_empty() => shared.apply(outcome),
            Some(outcome) = outcomes.recv() => shared.apply(outcome),
            _ = shared.wake.notified() => {}
            _ = sleep_until(wake_at) => shared.handle_timeout(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One attempt: `Submit` to the queue's chosen endpoint, within the queue's deadline.
async fn send_command(cluster: Cluster, transmit: Transmit, timeout_ms: u64) -> Outcome {
    let endpoint = transmit.endpoint.0;
    let answer = cluster.request_within(endpoint, ClientRequest::Submit(transmit.request), timeout_ms).await;
    Outcome::Answer { attempt: transmit.attempt, endpoint, answer }
}

/// One session open the queue asked for; the queue decides whether and when to try again.
async fn open_for_queue(cluster: Cluster, tx: mpsc::Sender<Outcome>) {
    let opened = open_session(&cluster).await;
    // The driver may be gone (the session ended): nobody needs the session then.
    let _ = tx.send(Outcome::SessionOpened(opened)).await;
}

async fn open_session(cluster: &Cluster) -> Result<SessionId, ClientError> {
    match cluster.call_leader(ClientRequest::OpenSession).await? {
        ClientResponse::SessionOpened(session) => Ok(session),
        ClientResponse::Applied(Ok(Reply::SessionOpened { session })) => Ok(session),
        ClientResponse::Applied(Err(refusal)) => Err(ClientError::Refused(refusal)),
        ClientResponse::Error(e) => Err(ClientError::Server(e)),
        other => Err(ClientError::Protocol(format!("expected SessionOpened, got {other:?}"))),
    }
}
