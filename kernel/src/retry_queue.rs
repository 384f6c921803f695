//! The client's local queue: every accepted command is retried until the cluster answers.
//!
//! Exactly-once comes from two halves. The state machine remembers, per session, the last
//! applied sequence number and its reply, and answers a repeat with the stored reply. This
//! queue keeps its half: commands are sent one at a time (stop-and-wait), in submission
//! order, and every retry of a command carries the same `(session, seq)`, so however often
//! it is resent it is applied once.
//!
//! Where and when to send is the [`LeaderSearch`]'s to decide (`leader_search.rs`: hints,
//! rotation, pauses, jitter), under [`SearchPolicy::session`]: it never gives up, and the
//! head is repeatable. Each reply starts the search over for the next command, at the node
//! that answered. What the search learns about the leader comes out of
//! [`RetryQueue::poll_news`], for the driver's one record of the leader.
//!
//! When to open a session: when the cluster refused the session itself (unknown or
//! evicted, or out of step) and commands wait. [`RetryQueue::poll_open_session`] says when
//! to start an open; a failed open pauses (capped exponential from `base_backoff_ms` to
//! `max_backoff_ms`, jittered) before the next.
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
//! on more endpoints learned: queue.handle_endpoint_count(n)
//! before polling:            queue.handle_first_choice(record.first_choice())
//! on response to `attempt`:  queue.handle_reply / handle_rejected / handle_not_leader / handle_retry_later / handle_failure
//! on a session open's end:   queue.handle_session_opened(session) / handle_session_open_failed(now)
//! at poll_timeout():         queue.handle_timeout(now)
//! then always:               while let Some(n) = queue.poll_news() { record.apply(n) }
//!                            if queue.poll_open_session(now) { open a session }
//!                            while let Some(t) = queue.poll_transmit(now) { send t.request to t.endpoint }
//!                            while let Some(c) = queue.poll_completed() { hand c to its caller }
//! ```

use crate::command::{Command, CommandError, CommandResult, Request};
use crate::ids::SessionId;
use crate::leader_search::{Answer, Backoff, Jitter, LeaderSearch, SearchPolicy};
pub use crate::leader_search::{EndpointId, Failure, LeaderNews};
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

    fn search_policy(&self) -> SearchPolicy {
        SearchPolicy::session(self.request_timeout_ms, self.base_backoff_ms, self.max_backoff_ms)
    }

    fn open_backoff(&self) -> Backoff {
        Backoff { first_ms: self.base_backoff_ms, max_ms: self.max_backoff_ms, jitter: Jitter::Full }
    }
}

/// The queue is at its bound; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "client retry queue is full ({max_queued} commands waiting or unread): wait for completions, \
     poll them, or raise max_queued"
)]
pub struct QueueFull {
    pub max_queued: usize,
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

/// Where a session open stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    Idle,
    /// The driver is opening one; no second open starts.
    InProgress,
    /// The last open failed: the next waits until then.
    PausedUntil {
        until_ms: u64,
    },
}

#[derive(Clone, Debug)]
pub struct RetryQueue {
    config: RetryConfig,
    /// The head command's search; started over for each command.
    search: LeaderSearch,
    rng: Rng,
    session: Option<SessionId>,
    /// The session sequence number the head carries.
    next_wire_seq: u64,
    queue: VecDeque<Queued>,
    completed: VecDeque<Completed>,
    next_seq: u64,
    opening: Opening,
    /// Failed opens in a row: the open pause's exponent.
    failed_opens: u32,
}

impl RetryQueue {
    pub fn new(config: RetryConfig, endpoint_count: usize, seed: u64) -> Result<Self, RetryConfigError> {
        config.validate()?;
        if endpoint_count == 0 {
            return Err(RetryConfigError::NoEndpoints);
        }
        let mut rng = Rng::new(seed);
        // A random first endpoint, so many clients do not all start on the same server.
        let start = EndpointId(index(rng.below(endpoint_count as u64)));
        let search = LeaderSearch::new(0, config.search_policy(), start, endpoint_count, rng.next_u64());
        Ok(RetryQueue {
            config,
            search,
            rng,
            session: None,
            next_wire_seq: 1,
            queue: VecDeque::new(),
            completed: VecDeque::new(),
            next_seq: 1,
            opening: Opening::Idle,
            failed_opens: 0,
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

    /// Where the head goes next (or went, while in flight).
    pub fn target(&self) -> EndpointId {
        self.search.target()
    }

    pub fn endpoint_count(&self) -> usize {
        self.search.endpoint_count()
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
        self.search.in_flight().is_some()
    }

    /// Whether `attempt` is the one outstanding (answers to others are ignored).
    pub fn is_current(&self, attempt: u64) -> bool {
        self.search.is_current(attempt)
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
        self.search.abandon();
    }

    /// Tells the queue where the leader is, learned elsewhere (the driver's record).
    /// Takes effect from the next attempt; an attempt in flight is left alone.
    pub fn handle_leader_hint(&mut self, leader: EndpointId) {
        self.search.handle_leader_hint(leader);
    }

    /// The driver's record of the leader says a search starts at `start`: the next
    /// command's search does, if it has not sent anything yet (a search under way keeps
    /// its course; it tells the record what it learns).
    pub fn handle_first_choice(&mut self, start: EndpointId) {
        if self.search.attempts_sent() == 0 {
            self.search.handle_leader_hint(start);
        }
    }

    /// The driver learned more endpoints (leader hints named new addresses).
    pub fn handle_endpoint_count(&mut self, endpoint_count: usize) {
        self.search.handle_endpoint_count(endpoint_count);
    }

    /// Queues `command` behind every earlier one and returns its queue sequence number.
    pub fn submit(&mut self, now_ms: u64, command: Command) -> Result<u64, QueueFull> {
        if self.queue.len() + self.completed.len() >= self.config.max_queued {
            return Err(QueueFull { max_queued: self.config.max_queued });
        }
        if self.queue.is_empty() && !self.in_flight() {
            // A new head: its search starts now, where the last one ended.
            self.search.restart(now_ms);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Queued { seq, command, submitted_at_ms: now_ms });
        Ok(seq)
    }

    /// The next attempt to send, if the head may go now. At most one is ever outstanding.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        let session = self.session?;
        let head = self.queue.front()?;
        let a = self.search.poll_attempt(now_ms)?;
        let request = Request { session, seq: self.next_wire_seq, command: head.command.clone() };
        Some(Transmit { attempt: a.attempt, endpoint: a.endpoint, request })
    }

    /// What the search learned about the leader, for the driver's record.
    pub fn poll_news(&mut self) -> Option<LeaderNews> {
        self.search.poll_news()
    }

    /// Whether to start opening a session now (the driver reports its end with
    /// `handle_session_opened` or `handle_session_open_failed`). True once per open.
    pub fn poll_open_session(&mut self, now_ms: u64) -> bool {
        if !self.needs_session() || self.queue.is_empty() {
            return false;
        }
        let may = match self.opening {
            Opening::Idle => true,
            Opening::InProgress => false,
            Opening::PausedUntil { until_ms } => now_ms >= until_ms,
        };
        if may {
            self.opening = Opening::InProgress;
        }
        may
    }

    /// A session open ended with `session`: the commands go under it, from sequence 1.
    pub fn handle_session_opened(&mut self, session: SessionId) {
        self.opening = Opening::Idle;
        self.failed_opens = 0;
        if self.needs_session() {
            self.set_session(session, 1);
        }
    }

    /// A session open failed: the next waits a pause.
    pub fn handle_session_open_failed(&mut self, now_ms: u64) {
        self.failed_opens = self.failed_opens.saturating_add(1);
        let backoff = self.config.open_backoff();
        let cap = backoff.cap_ms(self.failed_opens);
        let pause_ms = self.rng.up_to(cap);
        self.opening = Opening::PausedUntil { until_ms: now_ms.saturating_add(pause_ms) };
    }

    /// The cluster applied the command sent as `attempt` (or refused it deterministically,
    /// which is an answer too): the head is complete. Answers to other attempts are ignored.
    ///
    /// A refusal of the session itself (unknown or evicted session, stale or skipping
    /// sequence) completes the head with that error, since whether an earlier attempt was
    /// applied cannot be known, and holds the rest until a new session is set.
    pub fn handle_reply(&mut self, now_ms: u64, attempt: u64, result: CommandResult) {
        if !self.search.is_current(attempt) {
            return;
        }
        // Whoever answered has the log: it is (or just was) the leader.
        self.search.handle_answer(now_ms, attempt, Answer::Served);
        if self.refuses_session(&result) {
            self.session = None;
        } else {
            self.next_wire_seq += 1;
        }
        self.complete_head(now_ms, result);
    }

    /// The node turned the command sent as `attempt` away before the log (the caller may
    /// not send it): the head completes with `error` and is never resent, and the session's
    /// sequence does not move, since nothing was applied. Answers to other attempts are
    /// ignored.
    pub fn handle_rejected(&mut self, now_ms: u64, attempt: u64, error: CommandError) {
        if !self.search.is_current(attempt) {
            return;
        }
        self.search.handle_answer(now_ms, attempt, Answer::Declined);
        self.complete_head(now_ms, Err(error));
    }

    /// The endpoint is not the leader; it may know who is.
    pub fn handle_not_leader(&mut self, now_ms: u64, attempt: u64, leader_hint: Option<EndpointId>) {
        self.search.handle_answer(now_ms, attempt, Answer::NotLeader { hint: leader_hint });
    }

    /// The endpoint is the leader but cannot serve yet (e.g. its lease is not ready after
    /// an election): the same endpoint again, after a pause.
    pub fn handle_retry_later(&mut self, now_ms: u64, attempt: u64) {
        self.search.handle_answer(now_ms, attempt, Answer::RetryLater);
    }

    /// The attempt got no answer. The command may still have been applied; the retry's
    /// `(session, seq)` makes that harmless.
    pub fn handle_failure(&mut self, now_ms: u64, attempt: u64, failure: Failure) {
        self.search.handle_failure(now_ms, attempt, failure);
        debug_assert!(self.search.outcome().is_none(), "a session search ends only by an answer");
    }

    /// Fires the request deadline of the attempt in flight (as a [`Failure::Timeout`]),
    /// ends a pause that is over, and ends a session open's pause.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.search.handle_timeout(now_ms);
        if let Opening::PausedUntil { until_ms } = self.opening
            && now_ms >= until_ms
        {
            self.opening = Opening::Idle;
        }
    }

    /// When to call `handle_timeout`: the request deadline, the end of a pause, or the end
    /// of a session open's pause. `None` when none runs (call the polls after every
    /// input instead).
    pub fn poll_timeout(&self) -> Option<u64> {
        let open = match self.opening {
            Opening::PausedUntil { until_ms } if self.needs_session() && !self.queue.is_empty() => Some(until_ms),
            _ => None,
        };
        let search = if self.queue.is_empty() { None } else { self.search.poll_timeout() };
        match (open, search) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next completed command, in submission order.
    pub fn poll_completed(&mut self) -> Option<Completed> {
        self.completed.pop_front()
    }

    fn complete_head(&mut self, now_ms: u64, result: CommandResult) {
        let head = self.queue.pop_front().expect("an attempt in flight has a head command");
        // The next command's search starts at the node that answered.
        self.search.restart(now_ms);
        self.completed.push_back(Completed {
            seq: head.seq,
            result,
            submitted_at_ms: head.submitted_at_ms,
            completed_at_ms: now_ms,
        });
        debug_assert!(self.queue.len() + self.completed.len() <= self.config.max_queued);
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
    use crate::leader_search::LeaderRecord;
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

    fn news(q: &mut RetryQueue) -> Vec<LeaderNews> {
        std::iter::from_fn(|| q.poll_news()).collect()
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
        q.handle_failure(0, t1.attempt, Failure::ConnectFailed);
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
        news(&mut q);
        q.handle_reply(6, t2.attempt, done(1));
        assert_eq!(news(&mut q), vec![LeaderNews::Leads(t2.endpoint)]);
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
        assert_eq!(news(&mut q), vec![LeaderNews::Leads(other)]);
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.endpoint, other, "goes to the hint at once");
        // An out-of-range hint counts as none: rotate.
        q.handle_not_leader(0, t.attempt, Some(EndpointId(99)));
        assert_eq!(news(&mut q), vec![LeaderNews::Demoted(other)]);
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.endpoint, EndpointId((other.0 + 1) % 3));
        // A node naming itself is becoming leader: the same node, after a pause.
        q.handle_not_leader(0, t.attempt, Some(t.endpoint));
        let until = q.poll_timeout().unwrap();
        q.handle_timeout(until);
        let t = q.poll_transmit(until).unwrap();
        assert_eq!(t.endpoint, EndpointId((other.0 + 1) % 3), "a hint naming itself is asked again");
        q.handle_not_leader(until, t.attempt, None);
        // A third move in a round of three endpoints: the next retry waits.
        let again = q.poll_timeout().expect("a round of three misses pauses");
        assert!(again - until <= 10, "first round pause is at most base_backoff_ms, got {}", again - until);
        if again > until {
            assert_eq!(q.poll_transmit(until), None);
        }
        q.handle_timeout(again);
        assert!(q.poll_transmit(again).is_some());
    }

    #[test]
    fn retry_later_stays_and_backoff_is_capped_exponential() {
        let mut q = queue(2);
        q.submit(0, put(1)).unwrap();
        let mut now = 0;
        let mut t = q.poll_transmit(now).unwrap();
        let endpoint = t.endpoint;
        let mut caps_seen = Vec::new();
        for k in 1..=8u32 {
            assert_eq!(t.endpoint, endpoint, "retry-later keeps the endpoint");
            news(&mut q);
            q.handle_retry_later(now, t.attempt);
            assert_eq!(news(&mut q), vec![LeaderNews::Leads(t.endpoint)]);
            let until = q.poll_timeout().unwrap();
            let cap = (10u64 << (k - 1)).min(80);
            assert!(until - now <= cap, "backoff {} over cap {cap}", until - now);
            caps_seen.push(cap);
            if until > now {
                assert_eq!(q.poll_transmit(until - 1), None, "not before the pause ends");
            }
            now = until;
            q.handle_timeout(now);
            t = q.poll_transmit(now).unwrap();
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
        news(&mut q);
        q.handle_failure(150, t3.attempt, Failure::Timeout);
        assert_eq!(news(&mut q), vec![LeaderNews::Demoted(t3.endpoint)]);
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
        assert_eq!(q.target(), EndpointId(2));
        q.submit(0, put(1)).unwrap();
        assert_eq!(q.poll_transmit(0).unwrap().endpoint, EndpointId(2));
    }

    #[test]
    fn the_record_places_only_a_search_that_has_not_started() {
        let mut q = queue(3);
        q.handle_first_choice(EndpointId(1));
        q.submit(0, put(1)).unwrap();
        let t = q.poll_transmit(0).unwrap();
        assert_eq!(t.endpoint, EndpointId(1));
        q.handle_failure(0, t.attempt, Failure::Refused);
        q.handle_first_choice(EndpointId(1));
        assert_eq!(q.poll_transmit(0).unwrap().endpoint, EndpointId(2), "a search under way keeps its course");
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
        /// Processed; the answer is lost and the client hears nothing.
        LoseAnswer,
        /// Processed; the connection breaks before the answer.
        Break,
        /// Processed and also left in the network, to arrive again.
        Duplicate,
        /// Never reaches the server: nothing listens there.
        Refused,
        /// Never reaches the server: the connection cannot be made.
        NoConnect,
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
        Deliver {
            pick: usize,
            fate: Fate,
            hint: Hint,
        },
        NewLeader(Option<usize>),
        LeaseReady,
        PollCompleted,
        DriverTimeout,
        /// The driver learns one more endpoint (a hint named a new address).
        Learn,
        /// Another of the client's calls told the one record of the leader who leads.
        RecordLearns(usize),
        /// The cluster evicts the client's session.
        Evict,
        /// The session open the queue asked for ends (opened, or failed).
        OpenEnds(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let fate = prop_oneof![
            6 => Just(Fate::Answer),
            1 => Just(Fate::LoseAnswer),
            1 => Just(Fate::Break),
            1 => Just(Fate::Duplicate),
            1 => Just(Fate::Refused),
            1 => Just(Fate::NoConnect),
            1 => Just(Fate::Drop),
        ];
        let hint = prop_oneof![3 => Just(Hint::Right), 1 => Just(Hint::None), 1 => (0usize..6).prop_map(Hint::Wrong)];
        prop_oneof![
            4 => Just(Op::Submit),
            3 => (0u64..300).prop_map(Op::Advance),
            8 => (any::<usize>(), fate, hint).prop_map(|(pick, fate, hint)| Op::Deliver { pick, fate, hint }),
            1 => proptest::option::of(0usize..5).prop_map(Op::NewLeader),
            1 => Just(Op::LeaseReady),
            2 => Just(Op::PollCompleted),
            1 => Just(Op::DriverTimeout),
            1 => Just(Op::Learn),
            1 => (0usize..6).prop_map(Op::RecordLearns),
            1 => Just(Op::Evict),
            2 => any::<bool>().prop_map(Op::OpenEnds),
        ]
    }

    enum Answer {
        Reply(CommandResult),
        Declined(CommandError),
        NotLeader(Option<EndpointId>),
        RetryLater,
    }

    /// The state machine's memory of one session: its last applied sequence number, the
    /// command it carried and the reply.
    type SessionMemory = (u64, Option<Command>, CommandResult);

    struct Cluster {
        endpoints: usize,
        leader: Option<usize>,
        lease_ready: bool,
        /// Live sessions (the state machine's dedup); an evicted one is gone.
        sessions: BTreeMap<SessionId, SessionMemory>,
        /// Commands in the order applied.
        applied: Vec<Command>,
    }

    fn forbidden() -> crate::command::Forbidden {
        crate::command::Forbidden { role: "read".into(), action: "put under secret/".into() }
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
            // The caller's role may not write under secret/: turned away before the log.
            if matches!(&request.command, Command::KvPut { key, .. } if key.starts_with("secret/")) {
                return Answer::Declined(CommandError::Forbidden(forbidden()));
            }
            let session = request.session;
            let Some((last, last_command, last_reply)) = self.sessions.get(&session).cloned() else {
                return Answer::Reply(Err(CommandError::SessionExpired(session)));
            };
            let reply = if request.seq == last + 1 {
                let result = if matches!(&request.command, Command::KvDelete { .. }) {
                    // Refused in the log, deterministically; it still uses its seq.
                    Err(CommandError::InvalidField { field: "key".to_string(), reason: "refused".to_string() })
                } else {
                    self.applied.push(request.command.clone());
                    done(self.applied.len() as u64)
                };
                self.sessions.insert(session, (request.seq, Some(request.command.clone()), result.clone()));
                result
            } else if request.seq == last && last_command.as_ref() == Some(&request.command) {
                last_reply
            } else if request.seq == last {
                Err(CommandError::SequenceReused { session, seq: request.seq })
            } else if request.seq < last {
                Err(CommandError::StaleSequence { session, seq: request.seq, last })
            } else {
                Err(CommandError::SequenceGap { session, seq: request.seq, last })
            };
            Answer::Reply(reply)
        }
    }

    /// Command `i`: every third a delete the log refuses, every fifth (of the rest) a put
    /// the node turns away, the others puts that apply.
    fn command(i: u64) -> Command {
        if i.is_multiple_of(3) {
            Command::KvDelete { key: format!("k{i}") }
        } else if i % 5 == 1 {
            Command::KvPut { key: format!("secret/{i}"), value: String::new() }
        } else {
            put(i)
        }
    }

    fn is_forbidden(c: &Command) -> bool {
        matches!(c, Command::KvPut { key, .. } if key.starts_with("secret/"))
    }

    fn answer(q: &mut RetryQueue, now: u64, attempt: u64, a: Answer) {
        match a {
            Answer::Reply(r) => q.handle_reply(now, attempt, r),
            Answer::Declined(e) => q.handle_rejected(now, attempt, e),
            Answer::NotLeader(h) => q.handle_not_leader(now, attempt, h),
            Answer::RetryLater => q.handle_retry_later(now, attempt),
        }
    }

    /// The driver's part between inputs: the news into the one record of the leader, the
    /// record's first choice back into the queue, then the queue's transmits. Checks that
    /// commands go out in submission order, so none is ever sent again once the one after
    /// it went (a refused or answered command is never resent).
    struct Driver {
        record: LeaderRecord,
        /// Submission index (into `accepted`) of the last command transmitted.
        last_sent: Option<usize>,
        /// A session open the queue asked for is under way.
        opening: bool,
        next_session: u64,
        /// Commands a node turned away (answering the attempt in flight).
        turned_away: Vec<Command>,
    }

    impl Driver {
        fn poll(
            &mut self,
            q: &mut RetryQueue,
            now: u64,
            accepted: &[(u64, Command)],
            net: &mut Vec<Transmit>,
        ) -> Result<(), TestCaseError> {
            while let Some(n) = q.poll_news() {
                self.record.apply(n, q.endpoint_count());
            }
            q.handle_first_choice(self.record.first_choice());
            if q.poll_open_session(now) {
                prop_assert!(!self.opening, "a second open while one is under way");
                self.opening = true;
            }
            while let Some(t) = q.poll_transmit(now) {
                prop_assert_eq!(Some(t.request.session), q.session());
                prop_assert!(t.endpoint.0 < q.endpoint_count());
                let index = accepted.iter().position(|(_, c)| *c == t.request.command);
                let Some(index) = index else { return Err(TestCaseError::fail("sent a command never accepted")) };
                prop_assert!(
                    self.last_sent.is_none_or(|last| index >= last),
                    "command {} resent after a later one",
                    index
                );
                prop_assert!(!self.turned_away.contains(&t.request.command), "a command turned away was resent");
                self.last_sent = Some(index);
                net.push(t);
            }
            Ok(())
        }

        /// Tells the queue what the node answered to `t`.
        fn answer(&mut self, q: &mut RetryQueue, now: u64, t: &Transmit, a: Answer) {
            if matches!(a, Answer::Declined(_)) && q.is_current(t.attempt) {
                self.turned_away.push(t.request.command.clone());
            }
            answer(q, now, t.attempt, a);
        }

        fn open_ends(&mut self, q: &mut RetryQueue, cluster: &mut Cluster, now: u64, ok: bool) {
            if !std::mem::take(&mut self.opening) {
                return;
            }
            if ok {
                let session = SessionId(self.next_session);
                self.next_session += 1;
                cluster.sessions.insert(session, (0, None, done(0)));
                q.handle_session_opened(session);
            } else {
                q.handle_session_open_failed(now);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Across leader changes, refusals, lost answers, timeouts, a growing endpoint list,
        /// a record of the leader that other calls also inform, and session evictions, then
        /// a working network: every accepted command completes once, in order, with the
        /// cluster's answer; each is applied at most once, in order, and exactly once unless
        /// its completion reports why not (turned away, or its session lost); a command the
        /// node turned away is never resent; the retries on a working network are bounded;
        /// the queue never exceeds its bound.
        #[test]
        fn exactly_once_in_order_or_reported(endpoints in 1usize..5, max_queued in 1usize..6, seed: u64,
                                             session_late in any::<bool>(),
                                             ops in proptest::collection::vec(op(), 0..150)) {
            let cfg = RetryConfig { max_queued, base_backoff_ms: 5, max_backoff_ms: 200, request_timeout_ms: 150 };
            let mut q = RetryQueue::new(cfg, endpoints, seed).unwrap();
            let mut cluster = Cluster { endpoints, leader: Some(0), lease_ready: true,
                                        sessions: BTreeMap::new(), applied: Vec::new() };
            let mut driver = Driver { record: LeaderRecord::starting_at(EndpointId(0)), last_sent: None,
                                      opening: false, next_session: 12, turned_away: Vec::new() };
            if !session_late {
                cluster.sessions.insert(SessionId(11), (0, None, done(0)));
                q.set_session(SessionId(11), 1);
            }
            let mut now = 0u64;
            let mut net: Vec<Transmit> = Vec::new();
            let mut accepted: Vec<(u64, Command)> = Vec::new();
            let mut completed: Vec<Completed> = Vec::new();
            let mut evictions = 0usize;
            let mut n = 0u64;

            let check_bound = |q: &RetryQueue| q.len() + q.completed_len() <= max_queued;

            for op in ops {
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
                            Fate::Refused => q.handle_failure(now, t.attempt, Failure::Refused),
                            Fate::NoConnect => q.handle_failure(now, t.attempt, Failure::ConnectFailed),
                            Fate::Drop => {}
                            Fate::LoseAnswer => { cluster.serve(t.endpoint.0, &t.request, hint); }
                            Fate::Break => {
                                cluster.serve(t.endpoint.0, &t.request, hint);
                                q.handle_failure(now, t.attempt, Failure::Lost);
                            }
                            Fate::Answer | Fate::Duplicate => {
                                let a = cluster.serve(t.endpoint.0, &t.request, hint);
                                driver.answer(&mut q, now, &t, a);
                            }
                        }
                    }
                    Op::NewLeader(l) => {
                        cluster.leader = l.filter(|l| *l < cluster.endpoints);
                        cluster.lease_ready = false;
                    }
                    Op::LeaseReady => cluster.lease_ready = true,
                    Op::PollCompleted => completed.extend(std::iter::from_fn(|| q.poll_completed())),
                    Op::Learn => {
                        if cluster.endpoints < 6 {
                            cluster.endpoints += 1;
                            q.handle_endpoint_count(cluster.endpoints);
                        }
                    }
                    Op::RecordLearns(e) => driver.record.apply(LeaderNews::Leads(EndpointId(e)), q.endpoint_count()),
                    Op::Evict => {
                        if let Some(s) = q.session() && cluster.sessions.remove(&s).is_some() { evictions += 1; }
                    }
                    Op::OpenEnds(ok) => driver.open_ends(&mut q, &mut cluster, now, ok),
                    Op::DriverTimeout => {
                        // The transport gave up on the newest outstanding attempt.
                        if let Some(t) = net.last() { q.handle_failure(now, t.attempt, Failure::Timeout); }
                    }
                }
                driver.poll(&mut q, now, &accepted, &mut net)?;
                prop_assert!(check_bound(&q));
            }

            // The network heals: a stable leader with a ready lease; stale traffic drains.
            cluster.leader = Some(endpoints - 1);
            cluster.lease_ready = true;
            for t in std::mem::take(&mut net) {
                let a = cluster.serve(t.endpoint.0, &t.request, Hint::Right);
                driver.answer(&mut q, now, &t, a);
            }
            let mut rounds = 0;
            let mut attempts = 0usize;
            loop {
                driver.open_ends(&mut q, &mut cluster, now, true);
                driver.poll(&mut q, now, &accepted, &mut net)?;
                completed.extend(std::iter::from_fn(|| q.poll_completed()));
                prop_assert!(check_bound(&q));
                if q.is_empty() { break; }
                rounds += 1;
                prop_assert!(rounds < 10_000, "no progress on a working network");
                if net.is_empty() && !driver.opening {
                    let at = q.poll_timeout().expect("work left, so a timer runs");
                    prop_assert!(at >= now);
                    now = at;
                    q.handle_timeout(now);
                }
                for t in std::mem::take(&mut net) {
                    attempts += 1;
                    let a = cluster.serve(t.endpoint.0, &t.request, Hint::Right);
                    driver.answer(&mut q, now, &t, a);
                }
            }
            // Bounded retries: a few attempts per command on a working network (a search
            // may sweep the endpoints once and follow one hint; a session refusal opens a
            // new session and moves on).
            prop_assert!(attempts <= (accepted.len() + 1) * (cluster.endpoints + 2),
                         "{} attempts for {} commands", attempts, accepted.len());

            // An evicted session costs the command it was carrying, not the ones after it.
            let lost = completed.iter().filter(|c| matches!(c.result, Err(CommandError::SessionExpired(_)))).count();
            prop_assert!(lost <= evictions, "{} commands reported lost to {} evictions", lost, evictions);
            // Every accepted command completed once, in order.
            let seqs: Vec<u64> = completed.iter().map(|c| c.seq).collect();
            let want: Vec<u64> = accepted.iter().map(|(s, _)| *s).collect();
            prop_assert_eq!(seqs, want);
            // The cluster applied accepted puts only, in submission order, each at most once.
            let positions: Vec<usize> = cluster.applied.iter()
                .map(|a| accepted.iter().position(|(_, c)| c == a).expect("applied a command never accepted"))
                .collect();
            prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "applied out of order or twice: {:?}", positions);
            // Each completion carries the cluster's answer for its command, and says why a
            // command that applies was not applied.
            for (c, (_, cmd)) in completed.iter().zip(&accepted) {
                let applied = cluster.applied.contains(cmd);
                let lost_session = matches!(c.result, Err(CommandError::SessionExpired(_)));
                prop_assert!(!lost_session || evictions > 0, "{:?} without an eviction", c.result);
                match cmd {
                    _ if is_forbidden(cmd) => {
                        prop_assert_eq!(&c.result, &Err(CommandError::Forbidden(forbidden())));
                        prop_assert!(!applied);
                    }
                    Command::KvDelete { .. } => {
                        let refused = matches!(c.result, Err(CommandError::InvalidField { .. }));
                        prop_assert!(refused || lost_session, "{:?}", c.result);
                    }
                    _ => match &c.result {
                        Ok(Reply::Done { revision }) => prop_assert_eq!(&cluster.applied[*revision as usize - 1], cmd),
                        Err(CommandError::SessionExpired(_)) => {}
                        other => prop_assert!(false, "{:?} for {:?}", other, cmd),
                    },
                }
                if evictions == 0 && matches!(cmd, Command::KvPut { .. }) && !is_forbidden(cmd) {
                    prop_assert!(applied, "{:?} never applied", cmd);
                }
            }
        }
    }
}
