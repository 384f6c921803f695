use super::*;
use proptest::prelude::*;

const ME: Start = Start { node: 1, incarnation: 5 };

fn config() -> CheckConfig {
    CheckConfig::default()
}

fn running(leader: NodeId) -> PeerStatus {
    PeerStatus { leader: Some(leader), term: 4, commit_index: Some(37), ..PeerStatus::default() }
}

fn deciding(incarnation: u64) -> PeerStatus {
    PeerStatus { deciding: Some(incarnation), ..PeerStatus::default() }
}

/// Drives `check` to its decision. `answer(peer, pass, asked_at)` gives each ask's answer
/// and when it arrives (`None`: never).
fn drive(
    check: FormationCheck,
    start_ms: u64,
    answer: impl FnMut(NodeId, u32, u64) -> Option<(u64, Answer)>,
) -> (u64, Decision) {
    let (at, decision, _) = drive_hearing(check, start_ms, answer);
    (at, decision)
}

/// `drive`, also returning every status the check was given.
fn drive_hearing(
    mut check: FormationCheck,
    start_ms: u64,
    mut answer: impl FnMut(NodeId, u32, u64) -> Option<(u64, Answer)>,
) -> (u64, Decision, Vec<PeerStatus>) {
    let mut heard = Vec::new();
    let mut now = start_ms;
    let mut pass = 0;
    let mut due: Vec<(u64, NodeId, Answer)> = Vec::new();
    for _ in 0..10_000 {
        if let Some(d) = check.decision() {
            return (now, d.clone(), heard);
        }
        let asks = check.poll_asks(now);
        if !asks.is_empty() {
            pass += 1;
        }
        for ask in asks {
            if let Some((at, a)) = answer(ask.peer, pass, now)
                && at < ask.until_ms
            {
                due.push((at.max(now), ask.peer, a));
            }
        }
        due.sort_by_key(|(at, peer, _)| (*at, *peer));
        let wake = check.poll_timeout().expect("undecided checks have a timeout");
        match due.first() {
            Some((at, _, _)) if *at <= wake => {
                let (at, peer, a) = due.remove(0);
                now = at;
                if let Answer::Status(s) = &a {
                    heard.push(s.clone());
                }
                check.handle_answer(now, peer, a);
            }
            _ => {
                now = now.max(wake);
                due.clear();
                check.handle_timeout(now);
            }
        }
    }
    panic!("the check never decided");
}

#[test]
fn one_silent_peer_does_not_starve_the_others() {
    // Peer 2 is powered off (its asks never come back); peer 3 runs the cluster. Asked one
    // after another with the whole budget each, peer 3 was never asked and the node formed
    // a cluster of its own. Asked together, peer 3's answer is heard at once.
    let check = FormationCheck::new(0, ME, [1, 2, 3], config());
    let (at, decision) = drive(check, 0, |peer, _, now| (peer == 3).then(|| (now + 2, Answer::Status(running(3)))));
    let Decision::Wait { running } = decision else { panic!("must wait, got {decision:?}") };
    assert_eq!((running.peer, running.leader), (3, Some(3)));
    assert!(at <= config().budget_ms, "decided at {at}");
}

#[test]
fn a_pass_that_hears_nobody_does_not_forget_a_running_cluster() {
    // Peer 2 answers "running" in the first pass only, peer 3 never: the later passes hear
    // nobody, and the verdict still waits.
    let check = FormationCheck::new(0, ME, [2, 3], config());
    let (_, decision) =
        drive(check, 0, |peer, pass, now| (peer == 2 && pass == 1).then(|| (now + 1, Answer::Status(running(2)))));
    assert!(matches!(decision, Decision::Wait { .. }), "{decision:?}");
}

#[test]
fn fresh_peers_mean_form_and_the_deciding_ones_are_named() {
    let check = FormationCheck::new(100, ME, [1, 2, 3], config());
    let (at, decision) = drive(check, 100, |peer, _, now| {
        let status = if peer == 2 { deciding(77) } else { PeerStatus::default() };
        Some((now + 3, Answer::Status(status)))
    });
    // One pass heard everyone: decided at once, not at the budget.
    assert_eq!(at, 103);
    assert_eq!(decision, Decision::Form { formed_with: vec![Start { node: 2, incarnation: 77 }] });
}

#[test]
fn a_formed_cluster_that_never_had_a_quorum_is_not_running() {
    let alone = PeerStatus { term: 1, ..PeerStatus::default() };
    assert!(!alone.knows_a_running_cluster());
    let between_leaders = PeerStatus { term: 6, commit_index: Some(40), ..PeerStatus::default() };
    assert!(between_leaders.knows_a_running_cluster());
    let check = FormationCheck::new(0, ME, [2], config());
    let (_, decision) = drive(check, 0, |_, _, now| Some((now, Answer::Status(alone.clone()))));
    assert_eq!(decision, Decision::Form { formed_with: vec![] });
}

#[test]
fn a_cluster_formed_while_this_start_decided_is_joined_but_not_by_a_later_start() {
    let formed = PeerStatus { formed_with: vec![ME, Start { node: 3, incarnation: 9 }], ..running(2) };
    let answers = move |peer: NodeId| match peer {
        2 => formed.clone(),
        4 => deciding(8),
        _ => PeerStatus::default(),
    };
    let (_, decision) =
        drive(FormationCheck::new(0, ME, [2, 3, 4], config()), 0, |p, _, now| Some((now, Answer::Status(answers(p)))));
    assert_eq!(decision, Decision::Join { by: 2, formed_with: vec![Start { node: 4, incarnation: 8 }] });
    // The same node restarted (a new incarnation, perhaps with a lost disk): waits.
    let later = Start { node: 1, incarnation: 6 };
    let (_, decision) = drive(FormationCheck::new(0, later, [2, 3, 4], config()), 0, |p, _, now| {
        Some((now, Answer::Status(answers(p))))
    });
    assert!(matches!(decision, Decision::Wait { running: Running { peer: 2, .. } }), "{decision:?}");
}

#[test]
fn nobody_answering_forms_at_the_budget_and_a_lone_node_at_once() {
    let (at, decision) = drive(FormationCheck::new(50, ME, [2, 3], config()), 50, |_, _, _| None);
    assert_eq!(decision, Decision::Form { formed_with: vec![] });
    assert!(at <= 50 + config().budget_ms, "{at}");
    assert!(at + config().retry_ms >= 50 + config().budget_ms, "it asked until the budget: {at}");
    let lone = FormationCheck::new(0, ME, [1], config());
    assert_eq!(lone.decision(), Some(&Decision::Form { formed_with: vec![] }));
}

#[test]
fn answers_outside_the_pass_are_ignored() {
    let mut check = FormationCheck::new(0, ME, [2, 3], config());
    check.handle_answer(0, 2, Answer::Status(running(2)));
    assert_eq!(check.poll_asks(0).len(), 2);
    check.handle_answer(1, 9, Answer::Status(running(9)));
    check.handle_answer(1, 2, Answer::Status(PeerStatus::default()));
    check.handle_answer(2, 2, Answer::Status(running(2)));
    check.handle_answer(3, 3, Answer::Status(PeerStatus::default()));
    assert_eq!(check.decision(), Some(&Decision::Form { formed_with: vec![] }));
}

// ---- Property tests ----

/// One peer's behaviour in a check: its answer in each pass, with a delay (ms), or silence.
fn arb_answer() -> impl Strategy<Value = Option<(u64, PeerStatus)>> {
    let status = prop_oneof![
        Just(PeerStatus::default()),
        (1u64..100).prop_map(deciding),
        (1u64..5).prop_map(running),
        Just(PeerStatus { term: 3, commit_index: Some(0), ..PeerStatus::default() }),
        Just(PeerStatus { formed_with: vec![ME], ..running(2) }),
    ];
    prop_oneof![1 => Just(None), 3 => (0u64..700, status).prop_map(Some)]
}

proptest! {
    /// Against a naive model: the decision follows from every answer heard in any pass,
    /// in time; it never forms when a running cluster that does not name this start was
    /// heard; and it decides within the budget.
    #[test]
    fn the_decision_follows_every_answer_heard(
        script in proptest::collection::vec(proptest::collection::vec(arb_answer(), 1..30), 1..5),
    ) {
        let peers: Vec<NodeId> = (2..2 + script.len() as u64).collect();
        let check = FormationCheck::new(0, ME, peers.iter().copied(), config());
        let (at, decision, heard) = drive_hearing(check, 0, |peer, pass, now| {
            let answers = &script[(peer - 2) as usize];
            let (delay, status) = answers[(pass as usize - 1) % answers.len()].clone()?;
            Some((now + delay, Answer::Status(status)))
        });
        prop_assert!(at <= config().budget_ms, "decided at {}", at);
        let named = heard.iter().any(|s| s.formed_with.contains(&ME));
        let running = heard.iter().any(|s| s.knows_a_running_cluster() && !s.formed_with.contains(&ME));
        match &decision {
            Decision::Join { .. } => prop_assert!(named),
            Decision::Wait { .. } => prop_assert!(running && !named),
            Decision::Form { .. } => prop_assert!(!running && !named, "formed although it heard {:?}", heard),
        }
    }

    /// Members started together (up to half the budget apart, in any order) on a working
    /// network all form one cluster: none is left waiting for `member replace`, and none
    /// forms while a cluster that never saw it deciding runs.
    #[test]
    fn members_started_together_form_one_cluster(
        offsets in proptest::collection::vec(0u64..1_000, 2..6),
        latency in 1u64..40,
        election_ms in 150u64..400,
    ) {
        let outcome = run_cluster(&offsets, latency, election_ms);
        for (node, (decision, _)) in outcome.iter().enumerate() {
            prop_assert!(!matches!(decision, Decision::Wait { .. }), "node {} waits: {:?}", node + 1, outcome);
        }
    }

    /// Members started at any times: a node that forms without being named does so on
    /// answers at most one ask old, so it never forms beside a cluster that it could have
    /// heard running (asked one after another, the answers could be the whole budget old).
    #[test]
    fn no_node_forms_beside_a_running_cluster(
        offsets in proptest::collection::vec(0u64..8_000, 2..6),
        latency in 1u64..40,
        election_ms in 150u64..400,
    ) {
        let outcome = run_cluster(&offsets, latency, election_ms);
        let running_at = running_since(&outcome, offsets.len(), election_ms);
        for (i, (decision, decided_at)) in outcome.iter().enumerate() {
            let me = Start { node: i as u64 + 1, incarnation: 1000 + i as u64 };
            let named = outcome.iter().any(|(d, _)| formed_with(d).contains(&me));
            if let (Decision::Form { .. }, Some(since)) = (decision, running_at) {
                prop_assert!(*decided_at < since + config().ask_timeout_ms + 2 * latency || named, "node {} formed at {} beside a cluster running since {}: {:?}", i + 1, decided_at, since, outcome);
            }
        }
    }
}

fn formed_with(d: &Decision) -> &[Start] {
    match d {
        Decision::Form { formed_with } | Decision::Join { formed_with, .. } => formed_with,
        Decision::Wait { .. } => &[],
    }
}

/// When a quorum of the nodes had formed, plus an election: the cluster then runs.
fn running_since(outcome: &[(Decision, u64)], n: usize, election_ms: u64) -> Option<u64> {
    let mut formed: Vec<u64> =
        outcome.iter().filter(|(d, _)| !matches!(d, Decision::Wait { .. })).map(|(_, at)| *at).collect();
    formed.sort();
    formed.get(n / 2).map(|at| at + election_ms)
}

/// A model of `n` nodes started at `offsets`, each running its check against the others'
/// statuses as they are when an ask arrives (`latency` each way). A node deciding says
/// so; one that formed names those it saw deciding; once a quorum formed and an election
/// passed, every formed node knows a leader. Returns each node's decision and its time.
fn run_cluster(offsets: &[u64], latency: u64, election_ms: u64) -> Vec<(Decision, u64)> {
    let n = offsets.len();
    let ids: Vec<NodeId> = (1..=n as u64).collect();
    let me = |i: usize| Start { node: i as u64 + 1, incarnation: 1000 + i as u64 };
    let mut checks: Vec<Option<FormationCheck>> = vec![None; n];
    let mut decided: Vec<Option<(Decision, u64)>> = vec![None; n];
    // (arrival time, asker, peer, answer)
    let mut in_flight: Vec<(u64, usize, NodeId, Answer)> = Vec::new();
    let mut now = 0;
    loop {
        for i in 0..n {
            if checks[i].is_none() && decided[i].is_none() && offsets[i] <= now {
                checks[i] = Some(FormationCheck::new(now, me(i), ids.iter().copied(), config()));
            }
        }
        let running_at = {
            let done: Vec<(Decision, u64)> = decided.iter().flatten().cloned().collect();
            running_since(&done, n, election_ms)
        };
        // The status of node `p` (index) as it is at `at`.
        let status_of = |p: usize, at: u64, checks: &[Option<FormationCheck>], decided: &[Option<(Decision, u64)>]| {
            if offsets[p] > at {
                return Answer::NoAnswer;
            }
            match (&decided[p], &checks[p]) {
                (Some((d, _)), _) if !matches!(d, Decision::Wait { .. }) => {
                    let leader = running_at.filter(|since| *since <= at).map(|_| 1);
                    Answer::Status(PeerStatus {
                        formed_with: formed_with(d).to_vec(),
                        leader,
                        term: 1,
                        commit_index: leader.map(|_| 1),
                        deciding: None,
                    })
                }
                (Some(_), _) => Answer::Status(PeerStatus::default()),
                (None, Some(_)) => Answer::Status(deciding(me(p).incarnation)),
                (None, None) => Answer::NoAnswer,
            }
        };
        for i in 0..n {
            let Some(check) = checks[i].as_mut() else { continue };
            for ask in check.poll_asks(now) {
                let p = (ask.peer - 1) as usize;
                // The peer answers as it is when the ask arrives; the answer comes back later.
                let answer = status_of(p, now + latency, &checks, &decided);
                if answer != Answer::NoAnswer && now + 2 * latency < ask.until_ms {
                    in_flight.push((now + 2 * latency, i, ask.peer, answer));
                }
            }
        }
        in_flight.sort_by_key(|(at, i, p, _)| (*at, *i, *p));
        let mut next = u64::MAX;
        for i in 0..n {
            if let Some(c) = &checks[i]
                && let Some(t) = c.poll_timeout()
            {
                next = next.min(t);
            }
            if checks[i].is_none() && decided[i].is_none() {
                next = next.min(offsets[i]);
            }
        }
        if let Some((at, _, _, _)) = in_flight.first() {
            next = next.min(*at);
        }
        if next == u64::MAX {
            return decided.into_iter().map(|d| d.expect("every node decided")).collect();
        }
        now = now.max(next);
        while in_flight.first().is_some_and(|(at, ..)| *at <= now) {
            let (_, i, peer, answer) = in_flight.remove(0);
            if let Some(c) = checks[i].as_mut() {
                c.handle_answer(now, peer, answer);
            }
        }
        for i in 0..n {
            if let Some(c) = checks[i].as_mut() {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
                if let Some(d) = c.decision() {
                    decided[i] = Some((d.clone(), now));
                    checks[i] = None;
                }
            }
        }
    }
}
