use super::*;
use proptest::prelude::*;

fn call(timeout_ms: u64, repeatable: bool) -> SearchPolicy {
    SearchPolicy::call(timeout_ms, true, repeatable)
}

fn search(policy: SearchPolicy, endpoints: usize) -> LeaderSearch {
    LeaderSearch::new(0, policy, EndpointId(0), endpoints, 1)
}

fn news(s: &mut LeaderSearch) -> Vec<LeaderNews> {
    std::iter::from_fn(|| s.poll_news()).collect()
}

#[test]
fn a_served_answer_ends_the_search_and_names_the_leader() {
    let mut s = search(call(5_000, true), 3);
    let a = s.poll_attempt(0).unwrap();
    assert_eq!((a.endpoint, a.deadline_ms), (EndpointId(0), 5_000 / ATTEMPT_SHARE_DIVISOR));
    assert_eq!(s.poll_attempt(0), None, "one attempt at a time");
    s.handle_answer(3, a.attempt, Answer::Served);
    assert_eq!(s.outcome(), Some(SearchOutcome::Answered { endpoint: EndpointId(0) }));
    assert_eq!(news(&mut s), vec![LeaderNews::Leads(EndpointId(0))]);
    assert_eq!(s.poll_attempt(3), None, "an ended search sends nothing");
}

#[test]
fn a_node_that_serves_anyone_is_not_taken_for_the_leader() {
    let mut s = LeaderSearch::new(0, SearchPolicy::call(1_000, false, true), EndpointId(1), 2, 1);
    let a = s.poll_attempt(0).unwrap();
    s.handle_answer(1, a.attempt, Answer::Served);
    assert_eq!(news(&mut s), vec![]);
}

#[test]
fn a_non_repeatable_request_gets_the_whole_deadline_and_a_repeatable_one_a_share() {
    assert_eq!(call(5_000, false).attempt_timeout_ms, 5_000);
    assert_eq!(call(5_000, true).attempt_timeout_ms, 1_666);
    assert_eq!(call(150, true).attempt_timeout_ms, ATTEMPT_MIN_MS, "never under the minimum");
    assert_eq!(call(40, true).attempt_timeout_ms, 40, "unless the whole call is shorter");
}

#[test]
fn a_hint_is_followed_at_once_and_believed() {
    let mut s = search(call(5_000, true), 3);
    let a = s.poll_attempt(0).unwrap();
    s.handle_answer(1, a.attempt, Answer::NotLeader { hint: Some(EndpointId(2)) });
    assert_eq!(news(&mut s), vec![LeaderNews::Leads(EndpointId(2))]);
    let b = s.poll_attempt(1).unwrap();
    assert_eq!(b.endpoint, EndpointId(2));
}

#[test]
fn a_hint_beyond_the_list_counts_as_none_until_the_list_grows() {
    let mut s = search(call(5_000, true), 2);
    let a = s.poll_attempt(0).unwrap();
    s.handle_answer(0, a.attempt, Answer::NotLeader { hint: Some(EndpointId(5)) });
    assert_eq!(news(&mut s), vec![LeaderNews::Demoted(EndpointId(0))]);
    let b = s.poll_attempt(0).unwrap();
    assert_eq!(b.endpoint, EndpointId(1), "rotates instead");
    s.handle_endpoint_count(3);
    s.handle_answer(0, b.attempt, Answer::NotLeader { hint: Some(EndpointId(2)) });
    assert_eq!(s.poll_attempt(0).unwrap().endpoint, EndpointId(2));
}

#[test]
fn a_node_naming_itself_is_asked_again_after_the_retry_later_pause() {
    let mut s = search(call(5_000, true), 3);
    let a = s.poll_attempt(0).unwrap();
    s.handle_answer(0, a.attempt, Answer::NotLeader { hint: Some(EndpointId(0)) });
    assert_eq!(news(&mut s), vec![LeaderNews::Leads(EndpointId(0))]);
    assert_eq!(s.poll_attempt(0), None);
    assert_eq!(s.poll_timeout(), Some(CALL_RETRY_LATER_PAUSE_MS));
    s.handle_timeout(CALL_RETRY_LATER_PAUSE_MS);
    assert_eq!(s.poll_attempt(CALL_RETRY_LATER_PAUSE_MS).unwrap().endpoint, EndpointId(0));
}

#[test]
fn retry_later_pauses_on_the_same_node_without_counting_a_round() {
    let mut s = search(call(5_000, true), 1);
    let mut now = 0;
    for _ in 0..5 {
        let a = s.poll_attempt(now).unwrap();
        assert_eq!(a.endpoint, EndpointId(0));
        s.handle_answer(now, a.attempt, Answer::RetryLater);
        assert_eq!(s.poll_timeout(), Some(now + CALL_RETRY_LATER_PAUSE_MS), "a fixed pause for calls");
        now += CALL_RETRY_LATER_PAUSE_MS;
        s.handle_timeout(now);
    }
}

#[test]
fn round_pauses_double_from_20_to_500_ms() {
    let mut s = search(call(60_000, true), 2);
    let mut now = 0;
    let mut pauses = Vec::new();
    for _ in 0..16 {
        let a = s.poll_attempt(now).unwrap();
        s.handle_answer(now, a.attempt, Answer::NotLeader { hint: None });
        if let Some(until) = s.poll_timeout() {
            pauses.push(until - now);
            now = until;
            s.handle_timeout(now);
        }
    }
    assert_eq!(pauses, vec![20, 40, 80, 160, 320, 500, 500, 500], "one pause per round of two endpoints");
}

#[test]
fn session_pauses_are_jittered_below_the_cap_and_the_same_for_the_same_seed() {
    let run = |seed| {
        let mut s = LeaderSearch::new(0, SearchPolicy::session(100, 10, 80), EndpointId(0), 1, seed);
        let mut now = 0;
        let mut pauses = Vec::new();
        for k in 1..=10u32 {
            let a = s.poll_attempt(now).unwrap();
            s.handle_answer(now, a.attempt, Answer::RetryLater);
            let pause = s.poll_timeout().map_or(0, |t| t - now);
            assert!(pause <= Backoff { first_ms: 10, max_ms: 80, jitter: Jitter::Full }.cap_ms(k));
            pauses.push(pause);
            now += pause;
            s.handle_timeout(now);
        }
        pauses
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn a_maybe_delivered_non_repeatable_request_is_reported_ambiguous_and_never_resent() {
    for failure in [Failure::Timeout, Failure::Lost] {
        let mut s = search(call(5_000, false), 3);
        let a = s.poll_attempt(0).unwrap();
        s.handle_failure(10, a.attempt, failure);
        assert_eq!(s.outcome(), Some(SearchOutcome::Ambiguous { endpoint: EndpointId(0), failure }));
        assert_eq!(s.poll_attempt(10), None);
        assert_eq!(s.poll_timeout(), None);
    }
}

#[test]
fn a_not_delivered_non_repeatable_request_tries_the_next_node() {
    for failure in [Failure::Refused, Failure::ConnectFailed] {
        let mut s = search(call(5_000, false), 3);
        let a = s.poll_attempt(0).unwrap();
        s.handle_failure(10, a.attempt, failure);
        assert_eq!(s.outcome(), None);
        assert_eq!(news(&mut s), vec![LeaderNews::Demoted(EndpointId(0))]);
        assert_eq!(s.poll_attempt(10).unwrap().endpoint, EndpointId(1));
    }
}

#[test]
fn the_search_times_out_its_own_attempt() {
    let mut s = search(call(5_000, false), 2);
    let a = s.poll_attempt(0).unwrap();
    assert_eq!(s.poll_timeout(), Some(5_000));
    s.handle_timeout(4_999);
    assert!(s.is_current(a.attempt));
    s.handle_timeout(5_000);
    assert_eq!(s.outcome(), Some(SearchOutcome::Ambiguous { endpoint: EndpointId(0), failure: Failure::Timeout }));
}

#[test]
fn every_node_refusing_fails_fast_as_unreachable() {
    let mut s = search(call(5_000, true), 3);
    let mut now = 0;
    loop {
        if let Some(a) = s.poll_attempt(now) {
            now += 1;
            s.handle_failure(now, a.attempt, Failure::Refused);
        } else if let Some(t) = s.poll_timeout() {
            now = t;
            s.handle_timeout(now);
        } else {
            break;
        }
    }
    assert_eq!(s.outcome(), Some(SearchOutcome::Unreachable));
    assert!((REFUSED_GIVE_UP_MS..REFUSED_GIVE_UP_MS + CALL_ROUND_PAUSE_MAX_MS + 3).contains(&now), "ended at {now}");
    assert_eq!(s.tried(), &[EndpointId(0), EndpointId(1), EndpointId(2)]);
}

#[test]
fn a_node_that_answered_turns_the_deadline_into_no_leader() {
    let mut s = search(call(300, true), 2);
    let mut now = 0;
    let mut first = true;
    loop {
        if let Some(a) = s.poll_attempt(now) {
            if first {
                s.handle_answer(now, a.attempt, Answer::NotLeader { hint: None });
                first = false;
            } else {
                now = a.deadline_ms;
                s.handle_timeout(now);
            }
        } else if let Some(t) = s.poll_timeout() {
            now = t;
            s.handle_timeout(now);
        } else {
            break;
        }
    }
    assert_eq!(s.outcome(), Some(SearchOutcome::NoLeader { waited_ms: 300 }));
    // Without any answer it is Unreachable.
    let mut s = search(call(300, true), 2);
    let mut now = 0;
    while s.outcome().is_none() {
        if let Some(a) = s.poll_attempt(now) {
            now = a.deadline_ms;
        } else if let Some(t) = s.poll_timeout() {
            now = t;
        }
        s.handle_timeout(now);
    }
    assert_eq!(s.outcome(), Some(SearchOutcome::Unreachable));
}

#[test]
fn a_rejected_credential_ends_a_call_but_not_a_session_search() {
    let mut s = search(call(5_000, true), 3);
    let a = s.poll_attempt(0).unwrap();
    s.handle_failure(0, a.attempt, Failure::Rejected);
    assert_eq!(s.outcome(), Some(SearchOutcome::Rejected { endpoint: EndpointId(0) }));
    let mut s = LeaderSearch::new(0, SearchPolicy::session(100, 10, 80), EndpointId(0), 3, 1);
    let a = s.poll_attempt(0).unwrap();
    s.handle_failure(0, a.attempt, Failure::Rejected);
    assert_eq!(s.outcome(), None);
    assert_eq!(s.poll_attempt(0).unwrap().endpoint, EndpointId(1));
}

#[test]
fn answers_to_other_attempts_are_ignored() {
    let mut s = search(call(5_000, true), 3);
    let a = s.poll_attempt(0).unwrap();
    s.handle_failure(0, a.attempt, Failure::ConnectFailed);
    let b = s.poll_attempt(0).unwrap();
    s.handle_answer(1, a.attempt, Answer::Served);
    s.handle_failure(1, a.attempt, Failure::Timeout);
    assert!(s.is_current(b.attempt));
    assert_eq!(s.outcome(), None);
}

#[test]
fn the_record_follows_the_news() {
    let mut r = LeaderRecord::starting_at(EndpointId(0));
    assert_eq!(r.first_choice(), EndpointId(0));
    r.apply(LeaderNews::Demoted(EndpointId(0)), 3);
    assert_eq!(r.first_choice(), EndpointId(1), "a failed endpoint is not first next time");
    r.apply(LeaderNews::Leads(EndpointId(2)), 3);
    assert_eq!((r.leader(), r.first_choice()), (Some(EndpointId(2)), EndpointId(2)));
    r.apply(LeaderNews::Demoted(EndpointId(1)), 3);
    assert_eq!(r.leader(), Some(EndpointId(2)), "demoting another endpoint keeps the leader");
    r.apply(LeaderNews::Demoted(EndpointId(2)), 3);
    assert_eq!((r.leader(), r.first_choice()), (None, EndpointId(0)), "wraps around");
    r.apply(LeaderNews::Leads(EndpointId(7)), 3);
    assert_eq!(r.leader(), None, "an endpoint the record cannot know is ignored");
}

#[test]
fn a_broken_stream_pauses_doubling_until_events_flow_and_resumes_past_the_broken_node() {
    let mut r = StreamResume::new();
    assert_eq!(r.pause_ms(), 0, "the first open does not wait");
    assert_eq!(r.start(EndpointId(1), 3), EndpointId(1), "it starts where the record says");
    let mut pauses = Vec::new();
    for _ in 0..8 {
        r.handle_broken(EndpointId(1));
        pauses.push(r.pause_ms());
        assert_eq!(r.start(EndpointId(1), 3), EndpointId(2), "not at the node whose stream broke");
        assert_eq!(r.start(EndpointId(0), 3), EndpointId(0), "the record moved on: follow it");
        r.handle_opened();
        assert_eq!(r.pause_ms(), 0, "an open stream has nothing to wait for");
    }
    assert_eq!(pauses, [20, 40, 80, 160, 320, 640, 1_000, 1_000]);
    r.handle_flowing();
    r.handle_broken(EndpointId(2));
    assert_eq!(r.pause_ms(), 20, "events flowed: pauses start over");
    assert_eq!(r.start(EndpointId(2), 3), EndpointId(0), "wraps around");
    assert_eq!(r.start(EndpointId(9), 3), EndpointId(0), "a first choice beyond the list starts at 0");
    let p = StreamResume::policy(3_000);
    assert!(!p.leader_only && p.repeatable, "{p:?}");
}

// ---- A naive cluster under arbitrary faults ----

/// What happens to one attempt.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Reaches the node; its answer comes back.
    Answer,
    /// Reaches the node (a leader applies it); the connection breaks before the answer.
    LoseAnswer,
    /// Lost on the way in; the client hears nothing until the attempt's deadline.
    Drop,
    /// The connection cannot be made.
    ConnectFails,
}

#[derive(Clone, Debug)]
enum Event {
    Attempt(Fate, bool),
    NewLeader(Option<usize>),
    Down(usize),
    Up(usize),
    LeaseReady,
    Learn,
    Wait(u64),
}

fn event() -> impl Strategy<Value = Event> {
    let fate = prop_oneof![
        5 => Just(Fate::Answer),
        1 => Just(Fate::LoseAnswer),
        1 => Just(Fate::Drop),
        1 => Just(Fate::ConnectFails),
    ];
    prop_oneof![
        10 => (fate, any::<bool>()).prop_map(|(f, h)| Event::Attempt(f, h)),
        1 => proptest::option::of(0usize..6).prop_map(Event::NewLeader),
        1 => (0usize..6).prop_map(Event::Down),
        2 => (0usize..6).prop_map(Event::Up),
        1 => Just(Event::LeaseReady),
        1 => Just(Event::Learn),
        1 => (0u64..400).prop_map(Event::Wait),
    ]
}

/// Who leads, which nodes are up, and what the cluster applied.
struct Model {
    /// Nodes the client may know of; it starts knowing `known` of them.
    nodes: usize,
    known: usize,
    leader: Option<usize>,
    up: Vec<bool>,
    lease_ready: bool,
    /// Request numbers, in the order the leader applied them.
    applied: Vec<usize>,
}

impl Model {
    /// Delivers request `id` to `node`: what the node answers (having applied it, if it
    /// leads and its lease is ready).
    fn deliver(&mut self, node: usize, id: usize, honest_hint: bool) -> Answer {
        if self.leader != Some(node) {
            let hint = if honest_hint { self.leader.map(EndpointId) } else { None };
            return Answer::NotLeader { hint };
        }
        if !self.lease_ready {
            return Answer::RetryLater;
        }
        self.applied.push(id);
        Answer::Served
    }
}

const TIMEOUT_MS: u64 = 2_000;

/// Runs request `id` to its end under `events` (cycled), and returns its outcome and the
/// number of attempts it sent.
fn run_one(
    model: &mut Model,
    record: &mut LeaderRecord,
    now: &mut u64,
    id: usize,
    repeatable: bool,
    events: &mut impl Iterator<Item = Event>,
) -> Result<(SearchOutcome, u64), TestCaseError> {
    let policy = SearchPolicy::call(TIMEOUT_MS, true, repeatable);
    let mut s = LeaderSearch::new(*now, policy, record.first_choice(), model.known, id as u64);
    // Attempts that may have reached the node, and whether any was sent after one did.
    let mut maybe_delivered = false;
    let mut steps = 0;
    loop {
        steps += 1;
        prop_assert!(steps < 100_000, "the search never ended");
        while let Some(n) = s.poll_news() {
            record.apply(n, model.known);
        }
        if let Some(outcome) = s.outcome() {
            return Ok((outcome, s.attempts_sent()));
        }
        let Some(a) = s.poll_attempt(*now) else {
            if s.outcome().is_some() {
                continue; // it gave up at its deadline
            }
            let at = s.poll_timeout().expect("a search not over has a timer or an attempt");
            prop_assert!(at >= *now);
            *now = at;
            s.handle_timeout(*now);
            continue;
        };
        prop_assert!(repeatable || !maybe_delivered, "a maybe-delivered request was sent again");
        prop_assert!(a.endpoint.0 < model.known);
        prop_assert!(a.deadline_ms > *now && a.deadline_ms <= s.started_ms() + TIMEOUT_MS);
        // Cluster changes happen between attempts.
        let mut changes = 0;
        let fate = loop {
            changes += 1;
            if changes > 1_000 {
                // The events hold no attempt fate: the request is lost.
                break (Fate::Drop, false);
            }
            match events.next().expect("cycled") {
                Event::Attempt(fate, hint) => break (fate, hint),
                Event::NewLeader(l) => {
                    model.leader = l.filter(|l| *l < model.nodes);
                    model.lease_ready = false;
                }
                Event::Down(n) => model.up[n % model.nodes] = false,
                Event::Up(n) => model.up[n % model.nodes] = true,
                Event::LeaseReady => model.lease_ready = true,
                Event::Learn => {
                    if model.known < model.nodes {
                        model.known += 1;
                        s.handle_endpoint_count(model.known);
                    }
                }
                Event::Wait(ms) => {
                    // The clock runs; the search's own timer fires at the attempt's deadline.
                    *now = (*now + ms).min(a.deadline_ms);
                    if *now >= a.deadline_ms {
                        break (Fate::Drop, false);
                    }
                }
            }
        };
        let node = a.endpoint.0;
        match fate {
            (_, _) if !model.up[node] => s.handle_failure(*now, a.attempt, Failure::Refused),
            (Fate::ConnectFails, _) => s.handle_failure(*now, a.attempt, Failure::ConnectFailed),
            (Fate::Drop, _) => {
                *now = (*now).max(a.deadline_ms);
                maybe_delivered = true;
                s.handle_timeout(*now);
            }
            (Fate::LoseAnswer, hint) => {
                model.deliver(node, id, hint);
                maybe_delivered = true;
                s.handle_failure(*now, a.attempt, Failure::Lost);
            }
            (Fate::Answer, hint) => {
                let answer = model.deliver(node, id, hint);
                // A hint names a node by its index; one the client does not know yet
                // cannot be followed (the driver could not map its address).
                let answer = match answer {
                    Answer::NotLeader { hint: Some(h) } if h.0 >= model.known => Answer::NotLeader { hint: None },
                    other => other,
                };
                s.handle_answer(*now, a.attempt, answer);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Across leader changes, nodes going down and up, lost answers, dropped requests and
    /// a growing endpoint list: every request ends within its deadline with a bounded
    /// number of attempts; a non-repeatable request is applied at most once, is never
    /// resent once it may have been delivered, and is applied exactly when it is reported
    /// answered (or it is reported ambiguous); requests are applied in order; and on a
    /// healthy cluster the next request is answered by the leader, which the record names.
    #[test]
    fn requests_are_answered_once_in_order_or_reported(
        nodes in 1usize..6, known_at_start in 1usize..6, requests in 1usize..12,
        repeatable in proptest::collection::vec(any::<bool>(), 12),
        events in proptest::collection::vec(event(), 1..60),
    ) {
        let known = known_at_start.min(nodes);
        let mut model = Model { nodes, known, leader: Some(0), up: vec![true; nodes], lease_ready: true, applied: Vec::new() };
        let mut record = LeaderRecord::starting_at(EndpointId(0));
        let mut now = 0u64;
        let mut events = events.into_iter().cycle();
        let mut answered: Vec<usize> = Vec::new();
        for (id, &repeatable) in repeatable.iter().enumerate().take(requests) {
            let start = now;
            let (outcome, attempts) = run_one(&mut model, &mut record, &mut now, id, repeatable, &mut events)?;
            prop_assert!(now <= start + TIMEOUT_MS, "ended at {} ms, after its deadline", now - start);
            // Between two pauses at most a round of endpoints goes at once, and every
            // pause is at least 20 ms; an attempt that times out takes its budget.
            let bound = (nodes as u64 + 1) * (TIMEOUT_MS / CALL_ROUND_PAUSE_FIRST_MS + 2);
            prop_assert!(attempts <= bound, "{} attempts", attempts);
            let applied = model.applied.iter().filter(|a| **a == id).count();
            match outcome {
                SearchOutcome::Answered { endpoint } => {
                    prop_assert_eq!(record.leader(), Some(endpoint));
                    prop_assert!(applied >= 1);
                    if !repeatable { prop_assert_eq!(applied, 1); }
                    answered.push(id);
                }
                SearchOutcome::Ambiguous { failure, .. } => {
                    prop_assert!(!repeatable);
                    prop_assert!(failure.maybe_delivered());
                    prop_assert!(applied <= 1);
                }
                SearchOutcome::NoLeader { .. } | SearchOutcome::Unreachable => {
                    if !repeatable { prop_assert!(applied <= 1); }
                }
                SearchOutcome::Rejected { .. } => prop_assert!(false, "nobody rejected a credential"),
            }
        }
        // Applied in request order: each request's copies come before the next's.
        let mut sorted = model.applied.clone();
        sorted.sort();
        prop_assert_eq!(&model.applied, &sorted);

        // A healthy cluster: the next request is answered by the leader.
        model.leader = Some(nodes - 1);
        model.lease_ready = true;
        model.up = vec![true; nodes];
        let healthy = vec![Event::Attempt(Fate::Answer, true)];
        let mut healthy = healthy.into_iter().cycle();
        let (outcome, _) = run_one(&mut model, &mut record, &mut now, requests, false, &mut healthy)?;
        if nodes - 1 < model.known {
            prop_assert_eq!(outcome, SearchOutcome::Answered { endpoint: EndpointId(nodes - 1) });
        } else {
            // The leader's address is unknown to the client: nodes answer, none leads.
            let no_leader = matches!(outcome, SearchOutcome::NoLeader { .. });
            prop_assert!(no_leader, "{:?}", outcome);
        }
    }
}
