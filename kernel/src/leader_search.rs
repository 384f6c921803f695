//! The client's search for the node that serves a request: where to send next, what each
//! answer or failure means, how long to pause, and when to give up. One engine for every
//! client request: the session queue's commands (`retry_queue.rs`) and the pool's calls
//! (`client/src/pool.rs`) both drive a [`LeaderSearch`]; the one record of who leads is
//! a [`LeaderRecord`], which the searches inform through [`LeaderNews`].
//!
//! Rules, in one place:
//! - **Where.** A search starts where the record says (the leader if known, else the
//!   rotation cursor). `NotLeader` naming another node goes there at once (and the record
//!   believes it); `NotLeader` naming no usable node, a failed connection and a timeout go
//!   to the next endpoint (and the record stops believing the failed node leads).
//!   `RetryLater`, and `NotLeader` naming the node itself (it is becoming leader), ask the
//!   same node again after a pause.
//! - **When.** Moving to another endpoint goes at once, until a whole round of endpoints
//!   was tried without an answer from a leader; then a *round pause*, capped exponential
//!   from `round_pause.first_ms` to `round_pause.max_ms`. Asking the same node again waits
//!   a *retry-later pause*. Pauses may carry full jitter, drawn from a seeded PRNG, so a
//!   run is a function of its seed.
//! - **Repeat or report.** A request that is not repeatable (a launch starts a program
//!   each time it is applied) is never sent again once it may have been delivered: a
//!   timeout or a connection lost after sending ends the search as [`SearchOutcome::Ambiguous`].
//!   A connection refused or not made was not delivered, so the next endpoint is tried.
//! - **Give up.** A search with a deadline ends there: [`SearchOutcome::NoLeader`] if some
//!   node answered (it is up but none leads), else [`SearchOutcome::Unreachable`]. When
//!   every attempt so far was refused outright (nothing listens anywhere) it ends after
//!   `refused_give_up_ms` already. A credential refused by a node ends it at once
//!   ([`SearchOutcome::Rejected`]): every node refuses it alike. A search without a
//!   deadline (the session queue's, whose commands wait out any outage) never ends but
//!   by an answer, and treats a refused credential as a node that is down (a restarted
//!   node may take it again).
//! - **Budget.** A repeatable request gives one attempt at most a third of its deadline
//!   (at least 100 ms), so a node that accepted the connection and then hung leaves time
//!   to try the others; a non-repeatable one may use all of it (it is sent once).
//!
//! Call order (sans-IO, like quinn-proto), after every input:
//!
//! ```text
//! handle_answer / handle_failure (for an attempt) / handle_timeout (at poll_timeout)
//! while let Some(n) = search.poll_news()     { record.apply(n, endpoint_count) }
//! if let Some(o) = search.outcome()          { the search is over }
//! while let Some(a) = search.poll_attempt(now) { send the request to a.endpoint, by a.deadline_ms }
//! sleep until poll_timeout()
//! ```

use crate::rng::Rng;
use std::collections::VecDeque;

/// An index into the driver's list of server endpoints. Indexes never change meaning;
/// the list only grows (leader hints name new addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(pub usize);

/// A repeatable request gives one attempt at most this share of its deadline ...
pub const ATTEMPT_SHARE_DIVISOR: u64 = 3;
/// ... but never less than this (unless the whole deadline is shorter), so a short call
/// (a heartbeat bounded by its interval) still survives one slow round trip.
pub const ATTEMPT_MIN_MS: u64 = 100;
/// A call whose every attempt was refused at once (ECONNREFUSED: nothing listens at any
/// endpoint) gives up after this long, not at its deadline: a node that is restarting
/// listens again within it, and a user who named the wrong port hears so within a second.
pub const REFUSED_GIVE_UP_MS: u64 = 1_000;
/// Pause before asking again a node that answered `RetryLater` (a new leader whose lease
/// is not ready yet, typically ready within one heartbeat).
pub const CALL_RETRY_LATER_PAUSE_MS: u64 = 50;
/// Pauses after a full round of nodes without a leader: they double from the first to the
/// last, so an election in progress is not flooded and a dead cluster is not spun on.
pub const CALL_ROUND_PAUSE_FIRST_MS: u64 = 20;
pub const CALL_ROUND_PAUSE_MAX_MS: u64 = 500;
/// Leader news kept until the driver polls them. The record is a belief that each news
/// replaces, so when more pile up the oldest are superseded and dropped.
const NEWS_MAX: usize = 16;

/// Whether pauses are spread at random below their cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the cap: one caller, nothing to spread apart.
    None,
    /// Uniform in `0..=cap`: many clients retrying the same cluster do not line up.
    Full,
}

/// A capped exponential pause: the k-th in a row has the cap
/// `min(max_ms, first_ms × 2^(k−1))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first_ms: u64,
    pub max_ms: u64,
    pub jitter: Jitter,
}

impl Backoff {
    /// The cap of the `k`-th pause in a row (k ≥ 1).
    pub fn cap_ms(&self, k: u32) -> u64 {
        let doublings = k.saturating_sub(1).min(63);
        self.first_ms.saturating_mul(1u64 << doublings).min(self.max_ms)
    }

    fn draw_ms(&self, k: u32, rng: &mut Rng) -> u64 {
        let cap = self.cap_ms(k);
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full => rng.up_to(cap),
        }
    }
}

/// How one search behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchPolicy {
    /// Only the leader serves the request: an answer means the node leads.
    pub leader_only: bool,
    /// The request may be sent again after it may have been delivered.
    pub repeatable: bool,
    /// The search ends this long after it started; `None`: never, but by an answer.
    pub give_up_after_ms: Option<u64>,
    /// How long one attempt may go unanswered.
    pub attempt_timeout_ms: u64,
    /// When every attempt was refused outright, end after this long; `None`: do not.
    pub refused_give_up_ms: Option<u64>,
    pub round_pause: Backoff,
    pub retry_later_pause: Backoff,
}

impl SearchPolicy {
    /// A pool call: one request within `timeout_ms` (at least 1), today's pauses, the
    /// attempt budget share for repeatable requests, and the fail-fast on refusals.
    pub fn call(timeout_ms: u64, leader_only: bool, repeatable: bool) -> SearchPolicy {
        let timeout_ms = timeout_ms.max(1);
        let attempt_timeout_ms = if repeatable {
            (timeout_ms / ATTEMPT_SHARE_DIVISOR).max(ATTEMPT_MIN_MS.min(timeout_ms)).max(1)
        } else {
            timeout_ms
        };
        SearchPolicy {
            leader_only,
            repeatable,
            give_up_after_ms: Some(timeout_ms),
            attempt_timeout_ms,
            refused_give_up_ms: Some(REFUSED_GIVE_UP_MS),
            round_pause: Backoff {
                first_ms: CALL_ROUND_PAUSE_FIRST_MS,
                max_ms: CALL_ROUND_PAUSE_MAX_MS,
                jitter: Jitter::None,
            },
            retry_later_pause: Backoff {
                first_ms: CALL_RETRY_LATER_PAUSE_MS,
                max_ms: CALL_RETRY_LATER_PAUSE_MS,
                jitter: Jitter::None,
            },
        }
    }

    /// The session queue's head command: never gives up, repeatable (its `(session, seq)`
    /// makes a repeat harmless), jittered pauses from `first_ms` to `max_ms`.
    pub fn session(attempt_timeout_ms: u64, first_ms: u64, max_ms: u64) -> SearchPolicy {
        let pause = Backoff { first_ms, max_ms, jitter: Jitter::Full };
        SearchPolicy {
            leader_only: true,
            repeatable: true,
            give_up_after_ms: None,
            attempt_timeout_ms,
            refused_give_up_ms: None,
            round_pause: pause,
            retry_later_pause: pause,
        }
    }

    fn check(&self) {
        assert!(self.attempt_timeout_ms >= 1, "an attempt needs at least 1 ms");
        for b in [self.round_pause, self.retry_later_pause] {
            assert!(b.first_ms >= 1 && b.max_ms >= b.first_ms, "pause range {b:?} is empty");
        }
    }
}

/// What a node answered to an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The node served the request (its answer may be an error of the request's own).
    Served,
    /// The node answered and turned the request away before any effect, on grounds that
    /// are not about leadership (the caller's credential): final, and says nothing of who
    /// leads.
    Declined,
    /// The node does not lead; it may name who does (an endpoint the driver mapped).
    NotLeader { hint: Option<EndpointId> },
    /// The node leads but cannot serve yet (its lease is not ready after an election).
    RetryLater,
}

/// Why an attempt got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens there (ECONNREFUSED): not delivered.
    Refused,
    /// The connection could not be made (no route, handshake timeout): not delivered.
    ConnectFailed,
    /// The connection broke after the request was sent: maybe delivered.
    Lost,
    /// No answer in time: maybe delivered.
    Timeout,
    /// The node refused the connection's credential (token, version, certificate): every
    /// node would do the same.
    Rejected,
}

impl Failure {
    /// Whether the request may have reached the node.
    pub fn maybe_delivered(self) -> bool {
        matches!(self, Failure::Lost | Failure::Timeout)
    }
}

/// What a search learned about the leader, for the [`LeaderRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderNews {
    /// This endpoint leads (it served as leader, or a node named it).
    Leads(EndpointId),
    /// This endpoint failed or said it does not lead.
    Demoted(EndpointId),
}

/// Send the request to `endpoint`; report its answer or failure with `attempt`. An
/// answer after `deadline_ms` is a [`Failure::Timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u64,
    pub endpoint: EndpointId,
    pub deadline_ms: u64,
}

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchOutcome {
    /// A node answered (`Served` or `Declined`); the driver holds the answer.
    Answered { endpoint: EndpointId },
    /// Nodes answered, but none led, by the deadline.
    NoLeader { waited_ms: u64 },
    /// No node answered: by the deadline, or every one refused the connection.
    Unreachable,
    /// A non-repeatable request may have been delivered to `endpoint`; not resent.
    Ambiguous { endpoint: EndpointId, failure: Failure },
    /// The node refused the credential; every node would.
    Rejected { endpoint: EndpointId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Ready,
    InFlight { attempt: u64, endpoint: EndpointId, deadline_ms: u64 },
    Paused { until_ms: u64 },
    Over(SearchOutcome),
}

/// One request's search for a node that serves it. See the module header.
#[derive(Clone, Debug)]
pub struct LeaderSearch {
    policy: SearchPolicy,
    rng: Rng,
    endpoint_count: usize,
    started_ms: u64,
    phase: Phase,
    /// Where the next attempt goes.
    target: EndpointId,
    next_attempt: u64,
    /// Moves to another endpoint since the last round pause.
    misses: usize,
    round_pauses: u32,
    retry_later_pauses: u32,
    /// Some node answered: it is up, so a deadline means "no leader", not "unreachable".
    answered: bool,
    /// Every attempt so far was refused outright.
    all_refused: bool,
    /// Endpoints asked, in order, once each (for the caller's error message).
    tried: Vec<EndpointId>,
    /// Attempts sent in this search.
    attempts_sent: u64,
    news: VecDeque<LeaderNews>,
}

impl LeaderSearch {
    /// A search starting at `start` (the record's [`LeaderRecord::first_choice`]) over
    /// `endpoint_count` endpoints (at least 1); `seed` draws the jitter.
    pub fn new(now_ms: u64, policy: SearchPolicy, start: EndpointId, endpoint_count: usize, seed: u64) -> Self {
        policy.check();
        assert!(endpoint_count >= 1, "a search needs at least one endpoint");
        assert!(start.0 < endpoint_count, "start {start:?} is not among {endpoint_count} endpoints");
        LeaderSearch {
            policy,
            rng: Rng::new(seed),
            endpoint_count,
            started_ms: now_ms,
            phase: Phase::Ready,
            target: start,
            next_attempt: 1,
            misses: 0,
            round_pauses: 0,
            retry_later_pauses: 0,
            answered: false,
            all_refused: true,
            tried: Vec::new(),
            attempts_sent: 0,
            news: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> &SearchPolicy {
        &self.policy
    }

    /// Where the next attempt goes (the endpoint of the one in flight, while it is).
    pub fn target(&self) -> EndpointId {
        match self.phase {
            Phase::InFlight { endpoint, .. } => endpoint,
            _ => self.target,
        }
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    /// Endpoints asked in this search, each once, in the order first asked.
    pub fn tried(&self) -> &[EndpointId] {
        &self.tried
    }

    /// Attempts sent in this search.
    pub fn attempts_sent(&self) -> u64 {
        self.attempts_sent
    }

    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Whether `attempt` is the one in flight (answers to others are ignored).
    pub fn is_current(&self, attempt: u64) -> bool {
        self.in_flight() == Some(attempt)
    }

    /// The attempt in flight, if one is.
    pub fn in_flight(&self) -> Option<u64> {
        match self.phase {
            Phase::InFlight { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    /// How the search ended, once it has.
    pub fn outcome(&self) -> Option<SearchOutcome> {
        match self.phase {
            Phase::Over(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// The driver learned more endpoints (the list only grows).
    pub fn handle_endpoint_count(&mut self, endpoint_count: usize) {
        assert!(
            endpoint_count >= self.endpoint_count,
            "the endpoint list only grows: {} → {endpoint_count}",
            self.endpoint_count
        );
        self.endpoint_count = endpoint_count;
    }

    /// The driver learned elsewhere who leads: the next attempt goes there (an attempt in
    /// flight is left alone; an endpoint beyond the list is ignored).
    pub fn handle_leader_hint(&mut self, leader: EndpointId) {
        if leader.0 < self.endpoint_count && self.in_flight().is_none() {
            self.target = leader;
        }
    }

    /// Starts the search over for the next request (the session queue's next command),
    /// at the endpoint that answered the last one. Pauses and counts start afresh.
    pub fn restart(&mut self, now_ms: u64) {
        debug_assert!(self.in_flight().is_none(), "restart with an attempt in flight");
        self.started_ms = now_ms;
        self.phase = Phase::Ready;
        self.misses = 0;
        self.round_pauses = 0;
        self.retry_later_pauses = 0;
        self.answered = false;
        self.all_refused = true;
        self.tried.clear();
        self.attempts_sent = 0;
    }

    /// Abandons the attempt in flight (its answer will be ignored); the same endpoint is
    /// asked again by the next attempt.
    pub fn abandon(&mut self) {
        if let Phase::InFlight { endpoint, .. } = self.phase {
            self.target = endpoint;
            self.phase = Phase::Ready;
        }
    }

    /// The next attempt, when one may go now. At most one is ever in flight.
    pub fn poll_attempt(&mut self, now_ms: u64) -> Option<Attempt> {
        if let Phase::Paused { until_ms } = self.phase
            && now_ms >= until_ms
        {
            self.phase = Phase::Ready;
        }
        if self.phase != Phase::Ready {
            return None;
        }
        if let Some(deadline_ms) = self.give_up_at_ms()
            && now_ms >= deadline_ms
        {
            self.give_up(now_ms);
            return None;
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.attempts_sent += 1;
        let endpoint = self.target;
        if !self.tried.contains(&endpoint) {
            self.tried.push(endpoint);
        }
        let mut deadline_ms = now_ms.saturating_add(self.policy.attempt_timeout_ms);
        if let Some(give_up_ms) = self.give_up_at_ms() {
            deadline_ms = deadline_ms.min(give_up_ms);
        }
        self.phase = Phase::InFlight { attempt, endpoint, deadline_ms };
        Some(Attempt { attempt, endpoint, deadline_ms })
    }

    /// When to call `handle_timeout`: the attempt's deadline or the end of a pause.
    /// `None` while an attempt may go now (call `poll_attempt`) or the search is over.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::InFlight { deadline_ms, .. } => Some(deadline_ms),
            Phase::Paused { until_ms } => Some(until_ms),
            Phase::Ready | Phase::Over(_) => None,
        }
    }

    /// What the search learned about the leader since the last poll, oldest first.
    pub fn poll_news(&mut self) -> Option<LeaderNews> {
        self.news.pop_front()
    }

    /// Fires the deadline of the attempt in flight (as [`Failure::Timeout`]), ends a pause
    /// that is over, and gives up at the search's deadline.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.phase {
            Phase::InFlight { attempt, deadline_ms, .. } if now_ms >= deadline_ms => {
                self.handle_failure(now_ms, attempt, Failure::Timeout);
            }
            Phase::Paused { until_ms } if now_ms >= until_ms => self.phase = Phase::Ready,
            _ => {}
        }
        if self.phase == Phase::Ready
            && let Some(deadline_ms) = self.give_up_at_ms()
            && now_ms >= deadline_ms
        {
            self.give_up(now_ms);
        }
    }

    /// The node answered `attempt`. Answers to other attempts are ignored.
    pub fn handle_answer(&mut self, now_ms: u64, attempt: u64, answer: Answer) {
        let Some(from) = self.current_endpoint(attempt) else {
            return;
        };
        match answer {
            Answer::Served => {
                if self.policy.leader_only {
                    self.tell(LeaderNews::Leads(from));
                }
                self.target = from;
                self.phase = Phase::Over(SearchOutcome::Answered { endpoint: from });
            }
            Answer::Declined => {
                self.target = from;
                self.phase = Phase::Over(SearchOutcome::Answered { endpoint: from });
            }
            Answer::NotLeader { hint } => {
                self.answered = true;
                self.all_refused = false;
                match hint.filter(|h| h.0 < self.endpoint_count) {
                    Some(hint) if hint != from => {
                        self.tell(LeaderNews::Leads(hint));
                        self.move_to(now_ms, hint);
                    }
                    // A node naming itself while refusing is becoming leader: ask again.
                    Some(_) => {
                        self.tell(LeaderNews::Leads(from));
                        self.pause_retry_later(now_ms, from);
                    }
                    None => {
                        self.tell(LeaderNews::Demoted(from));
                        let next = self.next_after(from);
                        self.move_to(now_ms, next);
                    }
                }
            }
            Answer::RetryLater => {
                self.answered = true;
                self.all_refused = false;
                if self.policy.leader_only {
                    self.tell(LeaderNews::Leads(from));
                }
                self.pause_retry_later(now_ms, from);
            }
        }
    }

    /// `attempt` got no answer. Failures of other attempts are ignored.
    pub fn handle_failure(&mut self, now_ms: u64, attempt: u64, failure: Failure) {
        let Some(from) = self.current_endpoint(attempt) else {
            return;
        };
        let deadline = self.policy.give_up_after_ms.is_some();
        if failure == Failure::Rejected && deadline {
            self.phase = Phase::Over(SearchOutcome::Rejected { endpoint: from });
            return;
        }
        self.tell(LeaderNews::Demoted(from));
        if failure.maybe_delivered() && !self.policy.repeatable {
            self.phase = Phase::Over(SearchOutcome::Ambiguous { endpoint: from, failure });
            return;
        }
        self.all_refused &= failure == Failure::Refused && !self.answered;
        if self.all_refused
            && let Some(refused_ms) = self.policy.refused_give_up_ms
            && now_ms.saturating_sub(self.started_ms) >= refused_ms
        {
            self.phase = Phase::Over(SearchOutcome::Unreachable);
            return;
        }
        let next = self.next_after(from);
        self.move_to(now_ms, next);
    }

    fn current_endpoint(&self, attempt: u64) -> Option<EndpointId> {
        match self.phase {
            Phase::InFlight { attempt: current, endpoint, .. } if current == attempt => Some(endpoint),
            _ => None,
        }
    }

    fn give_up_at_ms(&self) -> Option<u64> {
        self.policy.give_up_after_ms.map(|after| self.started_ms.saturating_add(after))
    }

    fn give_up(&mut self, now_ms: u64) {
        let outcome = if self.answered {
            SearchOutcome::NoLeader { waited_ms: now_ms.saturating_sub(self.started_ms) }
        } else {
            SearchOutcome::Unreachable
        };
        self.phase = Phase::Over(outcome);
    }

    fn next_after(&self, from: EndpointId) -> EndpointId {
        EndpointId((from.0 + 1) % self.endpoint_count)
    }

    /// Goes to another endpoint: at once, unless a whole round went by without a leader.
    fn move_to(&mut self, now_ms: u64, to: EndpointId) {
        self.target = to;
        self.misses += 1;
        if self.misses < self.endpoint_count {
            self.phase = Phase::Ready;
            return;
        }
        self.misses = 0;
        self.round_pauses = self.round_pauses.saturating_add(1);
        let pause_ms = self.policy.round_pause.draw_ms(self.round_pauses, &mut self.rng);
        self.pause(now_ms, pause_ms);
    }

    fn pause_retry_later(&mut self, now_ms: u64, at: EndpointId) {
        self.target = at;
        self.retry_later_pauses = self.retry_later_pauses.saturating_add(1);
        let pause_ms = self.policy.retry_later_pause.draw_ms(self.retry_later_pauses, &mut self.rng);
        self.pause(now_ms, pause_ms);
    }

    /// A pause ends by the search's deadline at the latest.
    fn pause(&mut self, now_ms: u64, pause_ms: u64) {
        let mut until_ms = now_ms.saturating_add(pause_ms);
        if let Some(give_up_ms) = self.give_up_at_ms() {
            until_ms = until_ms.min(give_up_ms);
        }
        // A zero pause (jitter drew 0) is still a pause: the next attempt goes at the next
        // poll, and the timer says so.
        self.phase = Phase::Paused { until_ms };
    }

    fn tell(&mut self, news: LeaderNews) {
        if self.news.len() == NEWS_MAX {
            self.news.pop_front();
        }
        self.news.push_back(news);
    }
}

/// The client's one record of the leader: which endpoint leads, as far as it knows, and
/// where a search starts when it knows none. Searches inform it with [`LeaderNews`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaderRecord {
    leader: Option<EndpointId>,
    /// Where a search without a known leader starts; moves past endpoints that fail, so
    /// successive calls do not all begin at a dead first endpoint.
    cursor: EndpointId,
}

impl LeaderRecord {
    /// A record knowing no leader, starting at `cursor`.
    pub fn starting_at(cursor: EndpointId) -> Self {
        LeaderRecord { leader: None, cursor }
    }

    pub fn leader(&self) -> Option<EndpointId> {
        self.leader
    }

    /// Where a search starts: the leader if known, else the rotation cursor.
    pub fn first_choice(&self) -> EndpointId {
        self.leader.unwrap_or(self.cursor)
    }

    /// Takes in one news, over `endpoint_count` endpoints. News naming an endpoint the
    /// record cannot know (beyond the count) is ignored.
    pub fn apply(&mut self, news: LeaderNews, endpoint_count: usize) {
        match news {
            LeaderNews::Leads(e) if e.0 < endpoint_count => {
                self.leader = Some(e);
                self.cursor = e;
            }
            LeaderNews::Demoted(e) if e.0 < endpoint_count => {
                if self.leader == Some(e) {
                    self.leader = None;
                }
                if self.cursor == e {
                    self.cursor = EndpointId((e.0 + 1) % endpoint_count);
                }
            }
            LeaderNews::Leads(_) | LeaderNews::Demoted(_) => {}
        }
    }
}

/// Pauses before a broken stream (a watch) is opened again: they double from the first to
/// the last while streams keep breaking, and start over once events flow, so a node that
/// accepts and then drops streams is not hammered.
pub const STREAM_REOPEN_PAUSE_FIRST_MS: u64 = 20;
pub const STREAM_REOPEN_PAUSE_MAX_MS: u64 = 1_000;

/// When and where a long-lived stream (a watch) is opened again after it broke. Opening
/// it is a search like any call's ([`StreamResume::policy`]: any node serves it, asking
/// again is harmless); this decides the pause before that search and where it starts.
///
/// ```text
/// on events received:            resume.handle_flowing()
/// on the stream lost/declined:   resume.handle_broken(endpoint)
/// before reopening:              sleep resume.pause_ms(), then search from
///                                resume.start(record.first_choice(), endpoint_count)
/// on a stream opened:            resume.handle_opened()
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamResume {
    pause: Backoff,
    /// Streams broken since events last flowed: the pause's exponent.
    breaks: u32,
    /// The stream broke and no other has opened since: pause before the next.
    broken: bool,
    /// Where the last stream broke: the next search starts past it.
    broken_at: Option<EndpointId>,
}

impl Default for StreamResume {
    fn default() -> Self {
        StreamResume::new()
    }
}

impl StreamResume {
    pub fn new() -> Self {
        StreamResume {
            pause: Backoff {
                first_ms: STREAM_REOPEN_PAUSE_FIRST_MS,
                max_ms: STREAM_REOPEN_PAUSE_MAX_MS,
                jitter: Jitter::None,
            },
            breaks: 0,
            broken: false,
            broken_at: None,
        }
    }

    /// The search that opens a stream within `timeout_ms`: any node serves it, and opening
    /// it again is harmless (it resumes from the last revision received).
    pub fn policy(timeout_ms: u64) -> SearchPolicy {
        SearchPolicy::call(timeout_ms, false, true)
    }

    /// Events came on the stream: the next break pauses the first pause again.
    pub fn handle_flowing(&mut self) {
        self.breaks = 0;
    }

    /// The stream on `endpoint` broke, or the node declined it.
    pub fn handle_broken(&mut self, endpoint: EndpointId) {
        self.breaks = self.breaks.saturating_add(1);
        self.broken = true;
        self.broken_at = Some(endpoint);
    }

    /// A stream opened: no pause until one breaks again.
    pub fn handle_opened(&mut self) {
        self.broken = false;
    }

    /// How long to wait before the next open: nothing unless a stream broke since the
    /// last one opened.
    pub fn pause_ms(&self) -> u64 {
        if self.broken { self.pause.cap_ms(self.breaks) } else { 0 }
    }

    /// Where the next open's search starts: where the record of the leader says, unless
    /// that is the node whose stream just broke; then the one after it.
    pub fn start(&self, first_choice: EndpointId, endpoint_count: usize) -> EndpointId {
        assert!(endpoint_count >= 1, "a stream needs at least one endpoint");
        let first = if first_choice.0 < endpoint_count { first_choice } else { EndpointId(0) };
        match self.broken_at {
            Some(at) if self.broken && at == first => EndpointId((at.0 + 1) % endpoint_count),
            _ => first,
        }
    }
}

#[cfg(test)]
mod tests;
