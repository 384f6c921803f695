//! The client's local queue: every accepted command is retried until the cluster answers.
//!
//! Exactly-once comes from two halves. The state machine remembers, per session, the last
//! applied sequence number and its reply, and answers a repeat with the stored reply. This
//! queue keeps its half: commands are sent one at a time (stop-and-wait), in submission
//! order, and every retry of a command carries the same `(session, seq)`, so however often
//! it is resent it is applied once.
//!
//! Where to send: to the endpoint believed to be the leader, else round-robin from a seeded
//! random start. A `NotLeader` answer redirects to its hint (or to the next endpoint); a
//! connection failure or timeout moves to the next endpoint; `RetryLater` (a new leader
//! whose lease is not ready yet) stays on the same endpoint.
//!
//! When to send: a retry that moves to a *different* endpoint goes at once, up to
//! `endpoint_count` such hops in a row; any other retry (same endpoint, or hops used up)
//! waits a capped exponential backoff with full jitter, drawn from a seeded PRNG:
//! `uniform(0 ..= min(max_backoff_ms, base_backoff_ms × 2^(k−1)))` for the k-th backoff
//! since the last reply. A reply resets both counts.
//!
//! Sequence numbers: [`RetryQueue::submit`] returns the command's *queue sequence number*
//! (1, 2, 3, … in submission order, never reused), which [`Completed::seq`] repeats. The
//! number on the wire ([`Request::seq`]) is the session's: the head command carries the
//! `next_seq` given to [`RetryQueue::set_session`], and each applied command advances it.
//! With one session started at `next_seq = 1` before any command completes, the two are
//! equal.
//!
//! Bounds: at most `max_queued` commands wait, are in flight, or sit completed but not yet
//! polled; one more is refused with [`QueueFull`], never dropped.
//!
//! Driver loop (sans-IO, like quinn-proto):
//!
//! ```text
//! on start:                  queue.set_session(session, 1)      // after OpenSession
//! on user command:           queue.submit(now, cmd)?
//! on response to `attempt`:  queue.handle_reply / handle_not_leader / handle_retry_later / handle_failure
//! at poll_timeout():         queue.handle_timeout(now)
//! then always:               while let Some(t) = queue.poll_transmit(now) { send t.request to t.endpoint }
//!                            while let Some(c) = queue.poll_completed() { hand c to its caller }
//! ```

use crate::command::{Command, CommandError, CommandResult, Request};
use crate::ids::SessionId;
use crate::rng::Rng;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Commands waiting, in flight, or completed but not yet polled.
    pub max_queued: usize,
    /// Upper bound of the first backoff.
    pub base_backoff_ms: u64,
    /// Upper bound of every backoff.
    pub max_backoff_ms: u64,
    /// How long an attempt may go unanswered before it counts as failed.
    pub request_timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_queued: 10_000, base_backoff_ms: 10, max_backoff_ms: 1_000, request_timeout_ms: 2_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryConfigError {
    #[error("retry queue max_queued is 0: it could accept no command; set it to at least 1 (default 10000)")]
    ZeroCapacity,
    #[error("retry base_backoff_ms is 0: set it to at least 1 (default 10)")]
    ZeroBaseBackoff,
    #[error("retry max_backoff_ms {max_backoff_ms} is under base_backoff_ms {base_backoff_ms}: raise max_backoff_ms")]
    BackoffRange { base_backoff_ms: u64, max_backoff_ms: u64 },
    #[error("retry request_timeout_ms is 0: set it to at least 1 (default 2000)")]
    ZeroRequestTimeout,
    #[error("the retry queue has no endpoint to send to: give the client at least one server address")]
    NoEndpoints,
}

impl RetryConfig {
    pub fn validate(&self) -> Result<(), RetryConfigError> {
        if self.max_queued == 0 {
            return Err(RetryConfigError::ZeroCapacity);
        }
        if self.base_backoff_ms == 0 {
            return Err(RetryConfigError::ZeroBaseBackoff);
        }
        if self.max_backoff_ms < self.base_backoff_ms {
            return Err(RetryConfigError::BackoffRange {
                base_backoff_ms: self.base_backoff_ms,
                max_backoff_ms: self.max_backoff_ms,
            });
        }
        if self.request_timeout_ms == 0 {
            return Err(RetryConfigError::ZeroRequestTimeout);
        }
        Ok(())
    }
}

/// An index into the driver's list of server endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(pub usize);

/// The queue is at its bound; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "client retry queue is full ({max_queued} commands waiting or unread): wait for completions, \
     poll them, or raise max_queued"
)]
pub struct QueueFull {
    pub max_queued: usize,
}

/// Why an attempt got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer in time (the driver's own timer, or the queue's request deadline).
    Timeout,
    /// The connection could not be made or broke before the answer.
    ConnectionFailed,
}

/// Send `request` to `endpoint`; report the outcome with `attempt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub attempt: u64,
    pub endpoint: EndpointId,
    pub request: Request,
}

/// A command's final answer from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// The queue sequence number `submit` returned.
    pub seq: u64,
    pub result: CommandResult,
    pub submitted_at_ms: u64,
    pub completed_at_ms: u64,
}

#[derive(Clone, Debug)]
struct Queued {
    seq: u64,
    command: Command,
    submitted_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The head (if any) may be sent now, to `target`.
    Ready,
    /// The head was sent as `attempt`; no other attempt is answered.
    InFlight { attempt: u64, endpoint: EndpointId, deadline_ms: u64 },
    /// The head waits until `until_ms`, then goes to `target`.
    Backoff { until_ms: u64 },
}

#[derive(Clone, Debug)]
pub struct RetryQueue {
    config: RetryConfig,
    endpoint_count: usize,
    rng: Rng,
    session: Option<SessionId>,
    /// The session sequence number the head carries.
    next_wire_seq: u64,
    queue: VecDeque<Queued>,
    completed: VecDeque<Completed>,
    next_seq: u64,
    next_attempt: u64,
    phase: Phase,
    target: EndpointId,
    known_leader: Option<EndpointId>,
    /// Backoffs taken since the last reply: the exponent.
    backoffs: u32,
    /// Retries sent at once, to another endpoint, since the last reply or backoff.
    hops: usize,
}

impl RetryQueue {
    pub fn new(config: RetryConfig, endpoint_count: usize, seed: u64) -> Result<Self, RetryConfigError> {
        config.validate()?;
        if endpoint_count == 0 {
            return Err(RetryConfigError::NoEndpoints);
        }
        let mut rng = Rng::new(seed);
        // A random first endpoint, so many clients do not all start on the same server.
        let target = EndpointId(index(rng.below(endpoint_count as u64)));
        Ok(RetryQueue {
            config,
            endpoint_count,
            rng,
            session: None,
            next_wire_seq: 1,
            queue: VecDeque::new(),
            completed: VecDeque::new(),
            next_seq: 1,
            next_attempt: 1,
            phase: Phase::Ready,
            target,
            known_leader: None,
            backoffs: 0,
            hops: 0,
        })
    }

    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Commands waiting or in flight (not those completed and unpolled).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Completed commands not yet taken with `poll_completed`.
    pub fn completed_len(&self) -> usize {
        self.completed.len()
    }

    pub fn known_leader(&self) -> Option<EndpointId> {
        self.known_leader
    }

    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// The session sequence number the next command to be applied will carry.
    pub fn next_wire_seq(&self) -> u64 {
        self.next_wire_seq
    }

    /// True until `set_session` is called, and again after the cluster refused the session
    /// itself (unknown or evicted, or out of step): open a session and call `set_session`.
    pub fn needs_session(&self) -> bool {
        self.session.is_none()
    }

    /// Whether an attempt is outstanding.
    pub fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. })
    }

    /// Sets the session the commands go under, and the sequence number the next one
    /// carries (1 for a fresh session). Until a session is set nothing is transmitted.
    ///
    /// Setting the same session and number again changes nothing. Setting another while an
    /// attempt is in flight abandons that attempt (its answer will be ignored) and resends
    /// the head under the new session: only do that when the old session is gone, since a
    /// command the old session may have applied would be applied again.
    pub fn set_session(&mut self, session: SessionId, next_seq: u64) {
        assert!(next_seq >= 1, "session sequence numbers start at 1, got 0");
        if self.session == Some(session) && self.next_wire_seq == next_seq {
            return;
        }
        self.session = Some(session);
        self.next_wire_seq = next_seq;
        if let Phase::InFlight { .. } = self.phase {
            self.phase = Phase::Ready;
        }
    }

    /// Tells the queue where the leader is, learned elsewhere (e.g. from cluster metadata).
    /// Takes effect from the next attempt; an attempt in flight is left alone.
    pub fn handle_leader_hint(&mut self, leader: EndpointId) {
        if leader.0 < self.endpoint_count {
            self.known_leader = Some(leader);
            self.target = leader;
        }
    }

    /// Queues `command` behind every earlier one and returns its queue sequence number.
    pub fn submit(&mut self, now_ms: u64, command: Command) -> Result<u64, QueueFull> {
        if self.queue.len() + self.completed.len() >= self.config.max_queued {
            return Err(QueueFull { max_queued: self.config.max_queued });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Queued { seq, command, submitted_at_ms: now_ms });
        Ok(seq)
    }

    /// The next attempt to send, if the head may go now. At most one is ever outstanding.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        if let Phase::Backoff { until_ms } = self.phase
            && now_ms >= until_ms
        {
            self.phase = Phase::Ready;
        }
        if self.phase != Phase::Ready {
            return None;
        }
        let session = self.session?;
        let head = self.queue.front()?;
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let endpoint = self.target;
        self.phase =
            Phase::InFlight { attempt, endpoint, deadline_ms: now_ms.saturating_add(self.config.request_timeout_ms) };
        let request = Request { session, seq: self.next_wire_seq, command: head.command.clone() };
        Some(Transmit { attempt, endpoint, request })
    }

    /// The cluster applied the command sent as `attempt` (or refused it deterministically,
    /// which is an answer too): the head is complete. Answers to other attempts are ignored.
    ///
    /// A refusal of the session itself (unknown or evicted session, stale or skipping
    /// sequence) completes the head with that error, since whether an earlier attempt was
    /// applied cannot be known, and holds the rest until `set_session` is called again.
    pub fn handle_reply(&mut self, now_ms: u64, attempt: u64, result: CommandResult) {
        let Some(endpoint) = self.current(attempt) else {
            return;
        };
        let head = self.queue.pop_front().expect("an attempt in flight has a head command");
        self.phase = Phase::Ready;
        self.backoffs = 0;
        self.hops = 0;
        // Whoever answered has the log: it is (or just was) the leader.
        self.known_leader = Some(endpoint);
        self.target = endpoint;
        if self.refuses_session(&result) {
            self.session = None;
        } else {
            self.next_wire_seq += 1;
        }
        self.completed.push_back(Completed {
            seq: head.seq,
            result,
            submitted_at_ms: head.submitted_at_ms,
            completed_at_ms: now_ms,
        });
        debug_assert!(self.queue.len() + self.completed.len() <= self.config.max_queued);
    }

    /// The node turned the command sent as `attempt` away before the log (the caller may
    /// not send it): the head completes with `error` and is never resent, and the session's
    /// sequence does not move, since nothing was applied. Answers to other attempts are
    /// ignored.
    pub fn handle_rejected(&mut self, now_ms: u64, attempt: u64, error: CommandError) {
        if self.current(attempt).is_none() {
            return;
        }
        let head = self.queue.pop_front().expect("an attempt in flight has a head command");
        self.phase = Phase::Ready;
        self.backoffs = 0;
        self.hops = 0;
        self.completed.push_back(Completed {
            seq: head.seq,
            result: Err(error),
            submitted_at_ms: head.submitted_at_ms,
            completed_at_ms: now_ms,
        });
    }

    /// The endpoint is not the leader; it may know who is. Goes to the hint at once, or
    /// (without a usable hint) to the next endpoint.
    pub fn handle_not_leader(&mut self, now_ms: u64, attempt: u64, leader_hint: Option<EndpointId>) {
        let Some(from) = self.current(attempt) else {
            return;
        };
        match leader_hint.filter(|hint| hint.0 < self.endpoint_count && *hint != from) {
            Some(hint) => {
                self.known_leader = Some(hint);
                self.target = hint;
            }
            None => {
                self.known_leader = None;
                self.target = self.next_endpoint(from);
            }
        }
        self.schedule_retry(now_ms, from);
    }

    /// The endpoint is the leader but cannot serve yet (e.g. its lease is not ready after
    /// an election): the same endpoint again, after a backoff.
    pub fn handle_retry_later(&mut self, now_ms: u64, attempt: u64) {
        let Some(from) = self.current(attempt) else {
            return;
        };
        self.known_leader = Some(from);
        self.target = from;
        self.schedule_retry(now_ms, from);
    }

    /// The attempt got no answer: tries the next endpoint. The command may still have been
    /// applied; the retry's `(session, seq)` makes that harmless.
    pub fn handle_failure(&mut self, now_ms: u64, attempt: u64, failure: Failure) {
        let Some(from) = self.current(attempt) else {
            return;
        };
        // Both kinds are handled alike: the endpoint may be down or cut off.
        let (Failure::Timeout | Failure::ConnectionFailed) = failure;
        if self.known_leader == Some(from) {
            self.known_leader = None;
        }
        self.target = self.next_endpoint(from);
        self.schedule_retry(now_ms, from);
    }

    /// Fires the request deadline of the attempt in flight (as a [`Failure::Timeout`]) and
    /// ends a backoff that is over.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.phase {
            Phase::InFlight { attempt, deadline_ms, .. } if now_ms >= deadline_ms => {
                self.handle_failure(now_ms, attempt, Failure::Timeout);
            }
            Phase::Backoff { until_ms } if now_ms >= until_ms => self.phase = Phase::Ready,
            _ => {}
        }
    }

    /// When to call `handle_timeout`: the request deadline or the end of the backoff.
    /// `None` when neither runs (call `poll_transmit` after every input instead).
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::InFlight { deadline_ms, .. } => Some(deadline_ms),
            Phase::Backoff { until_ms } => Some(until_ms),
            Phase::Ready => None,
        }
    }

    /// The next completed command, in submission order.
    pub fn poll_completed(&mut self) -> Option<Completed> {
        self.completed.pop_front()
    }

    /// The endpoint of the attempt in flight, if `attempt` is it.
    fn current(&self, attempt: u64) -> Option<EndpointId> {
        match self.phase {
            Phase::InFlight { attempt: current, endpoint, .. } if current == attempt => Some(endpoint),
            _ => None,
        }
    }

    fn next_endpoint(&self, from: EndpointId) -> EndpointId {
        EndpointId((from.0 + 1) % self.endpoint_count)
    }

    /// Decides when the head goes again, to `self.target`.
    fn schedule_retry(&mut self, now_ms: u64, from: EndpointId) {
        if self.target != from && self.hops < self.endpoint_count {
            self.hops += 1;
            self.phase = Phase::Ready;
            return;
        }
        self.hops = 0;
        self.backoffs = self.backoffs.saturating_add(1);
        let delay_ms = self.rng.up_to(self.backoff_cap_ms());
        self.phase = Phase::Backoff { until_ms: now_ms.saturating_add(delay_ms) };
    }

    /// `min(max_backoff_ms, base_backoff_ms × 2^(backoffs − 1))`.
    fn backoff_cap_ms(&self) -> u64 {
        let doublings = self.backoffs.saturating_sub(1).min(63);
        self.config.base_backoff_ms.saturating_mul(1u64 << doublings).min(self.config.max_backoff_ms)
    }

    fn refuses_session(&self, result: &CommandResult) -> bool {
        let Some(ours) = self.session else {
            return false;
        };
        match result {
            Err(CommandError::UnknownSession(session))
            | Err(CommandError::SessionExpired(session))
            | Err(CommandError::SequenceReused { session, .. })
            | Err(CommandError::StaleSequence { session, .. })
            | Err(CommandError::SequenceGap { session, .. }) => *session == ours,
            _ => false,
        }
    }
}

fn index(value: u64) -> usize {
    usize::try_from(value).expect("below endpoint_count, which is a usize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Reply;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn put(i: u64) -> Command {
        Command::KvPut { key: format!("k{i}"), value: format!("v{i}") }
    }

    fn done(revision: u64) -> CommandResult {
        Ok(Reply::Done { revision })
    }

    fn config() -> RetryConfig {
        RetryConfig { max_queued: 4, base_backoff_ms: 10, max_backoff_ms: 80, request_timeout_ms: 100 }
    }

    fn queue(endpoints: usize) -> RetryQueue {
        let mut q = RetryQueue::new(config(), endpoints, 1).unwrap();
        q.set_session(SessionId(7), 1);
        q
    }

    #[test]
    fn config_errors() {
        assert_eq!(RetryConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut RetryConfig)| {
            let mut c = RetryConfig::default();
            f(&mut c);
            RetryQueue::new(c, 1, 0).unwrap_err()
        };
        assert_eq!(bad(|c| c.max_queued = 0), RetryConfigError::ZeroCapacity);
        assert_eq!(bad(|c| c.base_backoff_ms = 0), RetryConfigError::ZeroBaseBackoff);
        assert_eq!(
            bad(|c| c.max_backoff_ms = 5),
            RetryConfigError::BackoffRange { base_backoff_ms: 10, max_backoff_ms: 5 }
        );
        assert_eq!(bad(|c| c.request_timeout_ms = 0), RetryConfigError::ZeroRequestTimeout);
        assert_eq!(RetryQueue::new(RetryConfig::default(), 0, 0).unwrap_err(), RetryConfigError::NoEndpoints);
        assert!(RetryConfigError::BackoffRange { base_backoff_ms: 10, max_backoff_ms: 5 }.to_string().contains("5"));
    }

    #[test]
    fn a_rejected_command_is_never_resent_and_the_next_takes_its_sequence() {
        let mut q = queue(3);
        q.submit(0, put(1)).unwrap();
        q.submit(0, put(2)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.request.seq, 1);
        let forbidden = crate::command::Forbidden { role: "read".into(), action: "put key \"k1\"".into() };
        q.handle_rejected(5, t.attempt, CommandError::Forbidden(forbidden.clone()));
        let c = q.poll_completed().unwrap();
        assert_eq!((c.seq, c.result), (1, Err(CommandError::Forbidden(forbidden))));
        let next = q.poll_transmit(5).unwrap();
        assert_eq!(next.request.command, put(2), "the rejected command is not sent again");
        assert_eq!(next.request.seq, 1, "nothing was applied: the session's sequence did not move");
        q.handle_rejected(6, t.attempt, CommandError::Unauthenticated { reason: "stale".into() });
        assert!(q.in_flight(), "an answer to an old attempt is ignored");
    }

    #[test]
    fn nothing_goes_before_a_session() {
        let mut q = RetryQueue::new(config(), 3, 1).unwrap();
        assert!(q.needs_session());
        assert_eq!(q.submit(0, put(1)), Ok(1));
        assert_eq!(q.poll_transmit(0), None);
        q.set_session(SessionId(3), 5);
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.request, Request { session: SessionId(3), seq: 5, command: put(1) });
        assert!(q.in_flight());
        assert_eq!(q.poll_transmit(0), None, "stop-and-wait");
    }

    #[test]
    fn full_queue_refuses_and_counts_unpolled_completions() {
        let mut q = queue(1);
        for i in 1..=4 {
            assert_eq!(q.submit(0, put(i)), Ok(i));
        }
        let err = q.submit(0, put(5)).unwrap_err();
        assert_eq!(err, QueueFull { max_queued: 4 });
        assert!(err.to_string().contains("4 commands"));
        let t = q.poll_transmit(0).unwrap();
        q.handle_reply(1, t.attempt, done(1));
        assert_eq!(q.len(), 3);
        assert_eq!(q.submit(1, put(5)), Err(QueueFull { max_queued: 4 }), "an unpolled completion holds its place");
        let c = q.poll_completed().unwrap();
        assert_eq!((c.seq, c.result, c.submitted_at_ms, c.completed_at_ms), (1, done(1), 0, 1));
        assert_eq!(q.submit(1, put(5)), Ok(5));
    }

    #[test]
    fn same_session_seq_on_every_retry_and_stale_answers_ignored() {
        let mut q = queue(3);
        q.submit(0, put(1)).unwrap();
        q.submit(0, put(2)).unwrap();
        let t1 = q.poll_transmit(0).unwrap();
        q.handle_failure(0, t1.attempt, Failure::ConnectionFailed);
        let t2 = q.poll_transmit(0).unwrap();
        assert_ne!(t2.endpoint, t1.endpoint, "rotates after a failure");
        assert_eq!(t2.request, t1.request);
        // The first attempt's late reply is stale.
        q.handle_reply(5, t1.attempt, done(1));
        q.handle_not_leader(5, t1.attempt, None);
        q.handle_retry_later(5, t1.attempt);
        q.handle_failure(5, t1.attempt, Failure::Timeout);
        assert!(q.in_flight());
        assert_eq!(q.poll_completed(), None);
        q.handle_reply(6, t2.attempt, done(1));
        assert_eq!(q.known_leader(), Some(t2.endpoint));
        let t3 = q.poll_transmit(6).unwrap();
        assert_eq!((t3.endpoint, t3.request.seq, t3.request.command.clone()), (t2.endpoint, 2, put(2)));
        // An answer to a finished attempt does nothing either.
        q.handle_reply(7, t2.attempt, done(9));
        assert_eq!(q.poll_completed().map(|c| c.seq), Some(1));
        assert_eq!(q.poll_completed(), None);
    }

    #[test]
    fn follows_hints_and_backs_off_after_a_sweep() {
        let mut q = queue(3);
        q.submit(0, put(1)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        let other = EndpointId((t.endpoint.0 + 1) % 3);
        q.handle_not_leader(0, t.attempt, Some(other));
        assert_eq!(q.known_leader(), Some(other));
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.endpoint, other, "goes to the hint at once");
        // Out-of-range and self-pointing hints count as none: rotate.
        q.handle_not_leader(0, t.attempt, Some(EndpointId(99)));
        assert_eq!(q.known_leader(), None);
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.endpoint, EndpointId((other.0 + 1) % 3));
        q.handle_not_leader(0, t.attempt, Some(t.endpoint));
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.endpoint, EndpointId((other.0 + 2) % 3), "a hint naming itself counts as none");
        q.handle_not_leader(0, t.attempt, None);
        // Three hops used: the next retry waits.
        assert_eq!(q.poll_transmit(0), None);
        let until = q.poll_timeout().unwrap();
        assert!(until <= 10, "first backoff is at most base_backoff_ms, got {until}");
        q.handle_timeout(until);
        assert!(q.poll_transmit(until).is_some());
    }

    #[test]
    fn retry_later_stays_and_backoff_is_capped_exponential() {
        let mut q = queue(2);
        q.submit(0, put(1)).unwrap();
        let mut now = 0;
        let mut endpoint = None;
        let mut caps_seen = Vec::new();
        for k in 1..=8u32 {
            let t = q.poll_transmit(now).unwrap();
            if let Some(e) = endpoint {
                assert_eq!(t.endpoint, e, "retry-later keeps the endpoint");
            }
            endpoint = Some(t.endpoint);
            q.handle_retry_later(now, t.attempt);
            assert_eq!(q.known_leader(), endpoint);
            let until = q.poll_timeout().unwrap();
            let cap = (10u64 << (k - 1)).min(80);
            assert!(until - now <= cap, "backoff {} over cap {cap}", until - now);
            caps_seen.push(cap);
            assert_eq!(q.poll_transmit(until.saturating_sub(1).max(now)).is_some(), until == now);
            if until == now {
                // Zero jitter: it already went; answer it to keep the loop in step.
                continue;
            }
            now = until;
        }
        assert_eq!(caps_seen.last(), Some(&80));
    }

    #[test]
    fn request_deadline_fires_as_timeout() {
        let mut q = queue(2);
        q.submit(0, put(1)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(q.poll_timeout(), Some(100));
        q.handle_timeout(99);
        assert!(q.in_flight());
        q.handle_timeout(100);
        let t2 = q.poll_transmit(100).unwrap();
        assert_ne!(t2.attempt, t.attempt);
        assert_ne!(t2.endpoint, t.endpoint);
        // A timeout on the known leader forgets it.
        q.handle_reply(101, t2.attempt, done(1));
        q.submit(101, put(2)).unwrap();
        let t3 = q.poll_transmit(101).unwrap();
        q.handle_failure(150, t3.attempt, Failure::Timeout);
        assert_eq!(q.known_leader(), None);
        assert_eq!(q.poll_timeout(), None, "a hop to the other endpoint needs no timer");
    }

    #[test]
    fn a_refusal_completes_the_head() {
        let mut q = queue(1);
        q.submit(0, put(1)).unwrap();
        q.submit(0, put(2)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        let refusal = Err(CommandError::UnknownMember(crate::ids::MemberId::Server(crate::ids::ServerId(4))));
        q.handle_reply(1, t.attempt, refusal.clone());
        assert_eq!(q.poll_completed().unwrap().result, refusal);
        assert_eq!(q.poll_transmit(1).unwrap().request.seq, 2, "an applied refusal uses its sequence number");
    }

    #[test]
    fn session_refusal_holds_the_rest_until_a_new_session() {
        let mut q = queue(1);
        q.submit(0, put(1)).unwrap();
        q.submit(0, put(2)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        q.handle_reply(1, t.attempt, Err(CommandError::UnknownSession(SessionId(7))));
        assert!(q.needs_session());
        assert_eq!(q.poll_completed().unwrap().result, Err(CommandError::UnknownSession(SessionId(7))));
        assert_eq!(q.poll_transmit(1), None);
        q.set_session(SessionId(8), 1);
        let t = q.poll_transmit(1).unwrap();
        assert_eq!(t.request, Request { session: SessionId(8), seq: 1, command: put(2) });
        // A gap refusal for another session is an ordinary answer.
        q.handle_reply(2, t.attempt, Err(CommandError::SequenceGap { session: SessionId(1), seq: 1, last: 0 }));
        assert!(!q.needs_session());
    }

    #[test]
    fn changing_session_abandons_the_attempt() {
        let mut q = queue(1);
        q.submit(0, put(1)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        q.set_session(SessionId(7), 1);
        assert!(q.in_flight(), "the same session again changes nothing");
        q.set_session(SessionId(9), 1);
        assert!(!q.in_flight());
        q.handle_reply(1, t.attempt, done(1));
        assert_eq!(q.poll_completed(), None, "the abandoned attempt's answer is ignored");
        let t2 = q.poll_transmit(1).unwrap();
        assert_eq!(t2.request.session, SessionId(9));
    }

    #[test]
    fn leader_hint_from_outside() {
        let mut q = queue(3);
        q.handle_leader_hint(EndpointId(2));
        q.handle_leader_hint(EndpointId(3));
        assert_eq!(q.known_leader(), Some(EndpointId(2)));
        q.submit(0, put(1)).unwrap();
        assert_eq!(q.poll_transmit(0).unwrap().endpoint, EndpointId(2));
    }

    #[test]
    #[should_panic(expected = "start at 1")]
    fn sequence_zero_is_a_driver_bug() {
        queue(1).set_session(SessionId(1), 0);
    }

    // ---- A fake cluster under arbitrary faults ----

    /// What the cluster does with one delivered request.
    #[derive(Clone, Copy, Debug)]
    enum Fate {
        /// Processed; the answer reaches the client.
        Answer,
        /// Processed; the answer is lost.
        LoseAnswer,
        /// Processed and also left in the network, to arrive again.
        Duplicate,
        /// Never reaches the server; the client sees a connection failure.
        Refused,
        /// Lost on the way in; the client hears nothing.
        Drop,
    }

    #[derive(Clone, Copy, Debug)]
    enum Hint {
        Right,
        None,
        Wrong(usize),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Submit,
        Advance(u64),
        Deliver { pick: usize, fate: Fate, hint: Hint },
        NewLeader(Option<usize>),
        LeaseReady,
        PollCompleted,
        DriverTimeout,
    }

    fn op() -> impl Strategy<Value = Op> {
        let fate = prop_oneof![
            4 => Just(Fate::Answer),
            1 => Just(Fate::LoseAnswer),
            1 => Just(Fate::Duplicate),
            1 => Just(Fate::Refused),
            1 => Just(Fate::Drop),
        ];
        let hint = prop_oneof![3 => Just(Hint::Right), 1 => Just(Hint::None), 1 => (0usize..6).prop_map(Hint::Wrong)];
        prop_oneof![
            3 => Just(Op::Submit),
            3 => (0u64..300).prop_map(Op::Advance),
            6 => (any::<usize>(), fate, hint).prop_map(|(pick, fate, hint)| Op::Deliver { pick, fate, hint }),
            1 => proptest::option::of(0usize..5).prop_map(Op::NewLeader),
            1 => Just(Op::LeaseReady),
            2 => Just(Op::PollCompleted),
            1 => Just(Op::DriverTimeout),
        ]
    }

    enum Answer {
        Reply(CommandResult),
        NotLeader(Option<EndpointId>),
        RetryLater,
    }

    struct Cluster {
        endpoints: usize,
        leader: Option<usize>,
        lease_ready: bool,
        /// Per session: last applied seq and its reply (the state machine's dedup).
        sessions: BTreeMap<SessionId, (u64, CommandResult)>,
        /// Commands in the order applied.
        applied: Vec<Command>,
    }

    impl Cluster {
        fn serve(&mut self, endpoint: usize, request: &Request, hint: Hint) -> Answer {
            if self.leader != Some(endpoint) {
                return Answer::NotLeader(match hint {
                    Hint::Right => self.leader.map(EndpointId),
                    Hint::None => None,
                    Hint::Wrong(e) => Some(EndpointId(e)),
                });
            }
            if !self.lease_ready {
                return Answer::RetryLater;
            }
            let (last, last_reply) = self.sessions.entry(request.session).or_insert((0, done(0))).clone();
            let reply = if request.seq == last + 1 {
                // Every third command is refused deterministically; it still uses its seq.
                let result = if matches!(&request.command, Command::KvDelete { .. }) {
                    Err(CommandError::InvalidField { field: "key".to_string(), reason: "refused".to_string() })
                } else {
                    self.applied.push(request.command.clone());
                    done(self.applied.len() as u64)
                };
                self.sessions.insert(request.session, (request.seq, result.clone()));
                result
            } else if request.seq == last {
                last_reply
            } else if request.seq < last {
                Err(CommandError::StaleSequence { session: request.session, seq: request.seq, last })
            } else {
                Err(CommandError::SequenceGap { session: request.session, seq: request.seq, last })
            };
            Answer::Reply(reply)
        }
    }

    fn command(i: u64) -> Command {
        if i.is_multiple_of(3) { Command::KvDelete { key: format!("k{i}") } } else { put(i) }
    }

    fn answer(q: &mut RetryQueue, now: u64, attempt: u64, a: Answer) {
        match a {
            Answer::Reply(r) => q.handle_reply(now, attempt, r),
            Answer::NotLeader(h) => q.handle_not_leader(now, attempt, h),
            Answer::RetryLater => q.handle_retry_later(now, attempt),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Under arbitrary faults, then a working network: every accepted command is
        /// delivered, in order, exactly once; the queue never exceeds its bound.
        #[test]
        fn exactly_once_in_order(endpoints in 1usize..5, max_queued in 1usize..6, seed: u64,
                                 session_late in any::<bool>(),
                                 ops in proptest::collection::vec(op(), 0..150)) {
            let cfg = RetryConfig { max_queued, base_backoff_ms: 5, max_backoff_ms: 200, request_timeout_ms: 150 };
            let mut q = RetryQueue::new(cfg, endpoints, seed).unwrap();
            let session = SessionId(11);
            if !session_late { q.set_session(session, 1); }
            let mut cluster = Cluster { endpoints, leader: Some(0), lease_ready: true,
                                        sessions: BTreeMap::new(), applied: Vec::new() };
            let mut now = 0u64;
            let mut net: Vec<Transmit> = Vec::new();
            let mut accepted: Vec<(u64, Command)> = Vec::new();
            let mut completed: Vec<Completed> = Vec::new();
            let mut n = 0u64;

            let check_bound = |q: &RetryQueue| q.len() + q.completed_len() <= max_queued;

            for (step, op) in ops.into_iter().enumerate() {
                if session_late && step == 20 { q.set_session(session, 1); }
                match op {
                    Op::Submit => {
                        n += 1;
                        let full = q.len() + q.completed_len() == max_queued;
                        match q.submit(now, command(n)) {
                            Ok(seq) => { prop_assert!(!full); accepted.push((seq, command(n))); }
                            Err(e) => { prop_assert!(full); prop_assert_eq!(e, QueueFull { max_queued }); }
                        }
                    }
                    Op::Advance(d) => {
                        now += d;
                        if q.poll_timeout().is_some_and(|t| t <= now) { q.handle_timeout(now); }
                    }
                    Op::Deliver { pick, fate, hint } => {
                        if net.is_empty() { continue; }
                        let i = pick % net.len();
                        let t = if matches!(fate, Fate::Duplicate) { net[i].clone() } else { net.remove(i) };
                        match fate {
                            Fate::Refused => q.handle_failure(now, t.attempt, Failure::ConnectionFailed),
                            Fate::Drop => {}
                            Fate::LoseAnswer => { cluster.serve(t.endpoint.0, &t.request, hint); }
                            Fate::Answer | Fate::Duplicate => {
                                let a = cluster.serve(t.endpoint.0, &t.request, hint);
                                answer(&mut q, now, t.attempt, a);
                            }
                        }
                    }
                    Op::NewLeader(l) => {
                        cluster.leader = l.filter(|l| *l < cluster.endpoints);
                        cluster.lease_ready = false;
                    }
                    Op::LeaseReady => cluster.lease_ready = true,
                    Op::PollCompleted => completed.extend(std::iter::from_fn(|| q.poll_completed())),
                    Op::DriverTimeout => {
                        // The transport gave up on the newest outstanding attempt.
                        if let Some(t) = net.last() { q.handle_failure(now, t.attempt, Failure::Timeout); }
                    }
                }
                while let Some(t) = q.poll_transmit(now) {
                    prop_assert_eq!(t.request.session, session);
                    net.push(t);
                }
                prop_assert!(check_bound(&q));
            }
            if q.needs_session() { q.set_session(session, 1); }

            // The network heals: a stable leader with a ready lease; stale traffic drains.
            cluster.leader = Some(endpoints - 1);
            cluster.lease_ready = true;
            for t in net.drain(..) {
                let a = cluster.serve(t.endpoint.0, &t.request, Hint::Right);
                answer(&mut q, now, t.attempt, a);
            }
            let mut rounds = 0;
            while !q.is_empty() {
                rounds += 1;
                prop_assert!(rounds < 10_000, "no progress on a working network");
                if let Some(t) = q.poll_transmit(now) {
                    let a = cluster.serve(t.endpoint.0, &t.request, Hint::Right);
                    answer(&mut q, now, t.attempt, a);
                } else {
                    let at = q.poll_timeout().expect("work left, so a timer runs");
                    prop_assert!(at >= now);
                    now = at;
                    q.handle_timeout(now);
                }
                completed.extend(std::iter::from_fn(|| q.poll_completed()));
                prop_assert!(check_bound(&q));
            }
            completed.extend(std::iter::from_fn(|| q.poll_completed()));
            prop_assert!(rounds <= 4 * (accepted.len() + 1) * (endpoints + 2) + 64,
                         "{} rounds for {} commands", rounds, accepted.len());

            // Every accepted command completed once, in order.
            let seqs: Vec<u64> = completed.iter().map(|c| c.seq).collect();
            let want: Vec<u64> = accepted.iter().map(|(s, _)| *s).collect();
            prop_assert_eq!(seqs, want);
            // The cluster applied exactly the accepted puts, in order, once each.
            let puts: Vec<Command> = accepted.iter().map(|(_, c)| c.clone())
                .filter(|c| matches!(c, Command::KvPut { .. })).collect();
            prop_assert_eq!(&cluster.applied, &puts);
            // Each completion carries the cluster's answer for its command.
            for (c, (_, cmd)) in completed.iter().zip(&accepted) {
                match cmd {
                    Command::KvDelete { .. } => {
                        let refused = matches!(c.result, Err(CommandError::InvalidField { .. }));
                        prop_assert!(refused, "{:?}", c.result);
                    }
                    _ => {
                        let Ok(Reply::Done { revision }) = c.result else { panic!("{:?}", c.result) };
                        prop_assert_eq!(&cluster.applied[revision as usize - 1], cmd);
                    }
                }
            }
            prop_assert_eq!(q.next_wire_seq(), accepted.len() as u64 + 1);
        }
    }
}
