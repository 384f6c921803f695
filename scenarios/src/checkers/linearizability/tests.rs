use super::*;
use proptest::prelude::*;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn done(invoked: u64, returned: u64, client: ClientId, key: &str, call: KvCall, output: KvOutput) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        call,
        invoked_at_ms: invoked,
        outcome: Outcome::Returned { at_ms: returned, output },
    }
}

fn put(client: ClientId, key: &str, value: &str, invoked: u64, returned: u64) -> Operation {
    let call = KvCall::Put { value: value.to_string() };
    done(invoked, returned, client, key, call, KvOutput::Done)
}

fn get(client: ClientId, key: &str, seen: Option<&str>, invoked: u64, returned: u64) -> Operation {
    let output = KvOutput::Value(seen.map(str::to_string));
    done(invoked, returned, client, key, KvCall::Get, output)
}

fn delete(client: ClientId, key: &str, invoked: u64, returned: u64) -> Operation {
    done(invoked, returned, client, key, KvCall::Delete, KvOutput::Done)
}

#[allow(clippy::too_many_arguments)]
fn cas(
    client: ClientId,
    key: &str,
    expected: Option<&str>,
    new: Option<&str>,
    invoked: u64,
    returned: u64,
    swapped: bool,
    current: Option<&str>,
) -> Operation {
    let call = KvCall::Cas { expected: expected.map(str::to_string), new: new.map(str::to_string) };
    let output = KvOutput::Cas { swapped, current: current.map(str::to_string) };
    done(invoked, returned, client, key, call, output)
}

fn unanswered(mut op: Operation) -> Operation {
    op.outcome = Outcome::Unknown;
    op
}

fn check(history: &[Operation]) -> Verdict {
    check_history(history, &LinearizabilityConfig::default()).expect("well-formed history")
}

fn assert_ok(history: &[Operation]) {
    let verdict = check(history);
    assert!(verdict.is_ok(), "expected linearizable, got {verdict:?}");
}

/// Asserts a violation on `key` whose core is exactly `core` (history indices).
fn assert_violation(history: &[Operation], key: &str, core: &[usize]) -> String {
    match check(history) {
        Verdict::Violation { key: k, operations, minimal, explanation } => {
            assert_eq!(k, key, "{explanation}");
            assert!(minimal, "{explanation}");
            assert_eq!(operations, core, "{explanation}");
            for index in core {
                assert!(explanation.contains(&format!("#{index} ")), "{explanation}");
            }
            explanation
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check(&[]), Verdict::Ok { keys: 0, steps: 0 });
}

#[test]
fn sequential_history_passes() {
    assert_ok(&[
        get(1, "k", None, 0, 1),
        put(1, "k", "a", 2, 3),
        get(2, "k", Some("a"), 4, 5),
        cas(2, "k", Some("a"), Some("b"), 6, 7, true, Some("a")),
        cas(1, "k", Some("a"), Some("c"), 8, 9, false, Some("b")),
        get(1, "k", Some("b"), 10, 11),
        cas(3, "k", Some("b"), None, 12, 13, true, Some("b")),
        get(3, "k", None, 14, 15),
        cas(3, "k", None, Some("d"), 16, 17, true, None),
        delete(1, "k", 18, 19),
        get(2, "k", None, 20, 21),
    ]);
}

#[test]
fn concurrent_overlapping_history_passes() {
    // The writes overlap; the first read fixes b before 8, the second needs a after it,
    // which fits because put(a) is still pending when b takes effect.
    assert_ok(&[
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 5, 15),
        get(3, "k", Some("b"), 6, 8),
        get(3, "k", Some("a"), 12, 20),
    ]);
    // Two CASes race from the same value: exactly one wins, whichever order.
    assert_ok(&[
        put(1, "k", "0", 0, 1),
        cas(1, "k", Some("0"), Some("1"), 10, 20, false, Some("2")),
        cas(2, "k", Some("0"), Some("2"), 11, 21, true, Some("0")),
        get(3, "k", Some("2"), 22, 23),
    ]);
}

#[test]
fn events_at_the_same_millisecond_are_concurrent() {
    assert_ok(&[put(1, "k", "a", 0, 10), get(2, "k", None, 10, 12)]);
}

#[test]
fn unknown_outcomes_may_take_effect_late_or_never() {
    // Took effect, late.
    assert_ok(&[
        put(1, "k", "a", 0, 10),
        unanswered(put(2, "k", "b", 5, 0)),
        get(3, "k", Some("a"), 20, 30),
        get(3, "k", Some("b"), 40, 50),
    ]);
    // Never took effect.
    assert_ok(&[
        put(1, "k", "a", 0, 10),
        unanswered(put(2, "k", "b", 5, 0)),
        unanswered(cas(2, "k", Some("a"), None, 6, 0, false, None)),
        get(3, "k", Some("a"), 20, 30),
    ]);
    // An unknown CAS that swapped, seen by a later read.
    assert_ok(&[
        put(1, "k", "a", 0, 10),
        unanswered(cas(2, "k", Some("a"), Some("c"), 11, 0, false, None)),
        get(3, "k", Some("c"), 20, 30),
        unanswered(get(3, "k", Some("zzz"), 31, 0)),
    ]);
}

#[test]
fn stale_read_after_a_completed_write_fails() {
    let explanation = assert_violation(
        &[put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 30), get(3, "k", Some("a"), 40, 50)],
        "k",
        &[1, 2],
    );
    assert!(
        explanation.starts_with(
            "key \"k\": no order of these 2 operation(s) agrees with real time and a \
             register, with the key holding, at 11 ms, whatever the operations that \
             completed before then may have left"
        ),
        "{explanation}"
    );
}

#[test]
fn lost_update_with_cas_fails() {
    // Both clients swapped from "0": one update was lost. The put alone is not in the
    // core: even if it may take effect at any time, it does so once.
    assert_violation(
        &[
            put(1, "k", "0", 0, 5),
            cas(1, "k", Some("0"), Some("1"), 10, 20, true, Some("0")),
            cas(2, "k", Some("0"), Some("2"), 12, 22, true, Some("0")),
            get(3, "k", Some("2"), 30, 31),
        ],
        "k",
        &[1, 2],
    );
}

#[test]
fn read_of_a_value_never_written_fails_alone() {
    assert_violation(
        &[
            put(1, "k", "a", 0, 10),
            get(2, "k", Some("a"), 11, 12),
            get(2, "k", Some("ghost"), 13, 14),
            put(1, "k", "b", 15, 16),
        ],
        "k",
        &[2],
    );
}

#[test]
fn read_before_the_write_was_invoked_fails_even_if_the_write_is_unknown() {
    assert_violation(
        &[put(1, "k", "a", 0, 10), get(2, "k", Some("b"), 20, 30), unanswered(put(3, "k", "b", 50, 0))],
        "k",
        &[1],
    );
}

#[test]
fn two_readers_seeing_writes_in_opposite_orders_fail() {
    assert_violation(
        &[
            put(1, "k", "1", 0, 100),
            put(2, "k", "2", 0, 100),
            get(3, "k", Some("1"), 10, 20),
            get(3, "k", Some("2"), 30, 40),
            get(4, "k", Some("2"), 10, 20),
            get(4, "k", Some("1"), 30, 40),
        ],
        "k",
        &[2, 3, 4, 5],
    );
}

#[test]
fn cas_reporting_a_wrong_current_value_fails() {
    assert_violation(&[put(1, "k", "a", 0, 1), cas(2, "k", Some("b"), Some("c"), 2, 3, false, Some("b"))], "k", &[1]);
}

#[test]
fn keys_are_checked_independently_and_the_violating_key_is_named() {
    let history = [
        put(1, "good", "a", 0, 10),
        put(1, "bad", "a", 0, 10),
        get(2, "good", Some("a"), 11, 12),
        put(2, "bad", "b", 11, 12),
        get(3, "bad", Some("a"), 13, 14),
    ];
    assert_violation(&history, "bad", &[3, 4]);
    let by_key = check_by_key(&history, &LinearizabilityConfig::default()).unwrap();
    assert!(matches!(by_key["good"], KeyVerdict::Linearizable { .. }));
    assert!(matches!(by_key["bad"], KeyVerdict::Violation { .. }));
}

#[test]
fn a_search_out_of_steps_is_unknown_not_ok() {
    let mut history: Vec<Operation> = (0..12).map(|i| put(i, "k", &i.to_string(), 0, 100)).collect();
    history.push(get(99, "k", Some("none of them"), 200, 201));
    let config = LinearizabilityConfig { max_steps_per_key: 20, max_shrink_steps_per_key: 1_000 };
    match check_history(&history, &config).unwrap() {
        Verdict::Unknown { key, steps, explanation } => {
            assert_eq!(key, "k");
            assert_eq!(steps, 20);
            assert!(explanation.contains("max_steps_per_key = 20"), "{explanation}");
        }
        other => panic!("expected unknown, got {other:?}"),
    }
    // With the default budget the same history is decided.
    assert!(check(&history).is_violation());
}

#[test]
fn shrinking_out_of_budget_says_so() {
    let history = [put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 30), get(3, "k", Some("a"), 40, 50)];
    let config = LinearizabilityConfig { max_steps_per_key: 1_000, max_shrink_steps_per_key: 1 };
    match check_history(&history, &config).unwrap() {
        Verdict::Violation { minimal, operations, explanation, .. } => {
            assert!(!minimal);
            assert_eq!(operations, vec![0, 1, 2]);
            assert!(explanation.contains("not minimised"), "{explanation}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn malformed_histories_are_errors() {
    let mut wrong = put(1, "k", "a", 0, 1);
    wrong.outcome = Outcome::Returned { at_ms: 1, output: KvOutput::Value(None) };
    let config = LinearizabilityConfig::default();
    assert!(matches!(
        check_history(&[get(1, "k", None, 0, 1), wrong], &config),
        Err(HistoryError::OutputMismatch { index: 1, .. })
    ));
    assert_eq!(
        check_history(&[get(1, "k", None, 5, 4)], &config),
        Err(HistoryError::ReturnedBeforeInvoked { index: 0, invoked_at_ms: 5, returned_at_ms: 4 })
    );
}

/// A few thousand overlapping operations over a handful of keys stay fast.
#[test]
fn a_long_concurrent_history_is_checked_quickly() {
    let history = execute(&long_plan(3_000, 4), 0);
    match check(&history) {
        Verdict::Ok { keys, steps } => {
            assert_eq!(keys, 4);
            assert!(steps < 200_000, "{steps} steps");
        }
        other => panic!("{other:?}"),
    }
}

/// Shrinking a long violating history lands on a small window around the contradiction.
#[test]
fn a_long_violating_history_shrinks_to_a_small_core() {
    for (spread, to_ghost) in [(0, false), (2, true)] {
        let mut history = execute(&long_plan(3_000, 3), spread);
        let index = mutate(&mut history, 1_234, to_ghost).expect("the plan has reads");
        match check(&history) {
            Verdict::Violation { key, operations, minimal, explanation } => {
                assert_eq!(key, history[index].key);
                assert!(minimal, "{explanation}");
                assert!(operations.contains(&index), "{explanation}");
                assert!(operations.len() <= 4, "{explanation}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A deterministic pseudo-random plan (an LCG: tests only, no global randomness).
fn long_plan(len: usize, keys: u64) -> Vec<Planned> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    (0..len)
        .map(|_| Planned {
            key: next(keys) as u8,
            kind: next(5) as u8,
            a: next(4) as u8,
            b: next(4) as u8,
            gap_ms: 1 + next(3),
            before_ms: next(15),
            after_ms: next(15),
            fate: if next(20) == 0 { Fate::UnknownApplied } else { Fate::Known },
        })
        .collect()
}

/// One generated operation, applied at a point after its predecessor.
#[derive(Clone, Debug)]
struct Planned {
    key: u8,
    /// 0 put, 1 get, 2 cas, 3 delete, 4 get.
    kind: u8,
    a: u8,
    b: u8,
    gap_ms: u64,
    before_ms: u64,
    after_ms: u64,
    fate: Fate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Known,
    /// Took effect, but the client never heard.
    UnknownApplied,
    /// Never took effect, and the client never heard.
    UnknownLost,
}

fn value(v: u8) -> Option<String> {
    (v > 0).then(|| format!("v{v}"))
}

/// Executes `plan` one operation at a time on a map, at strictly increasing points, and
/// records each operation with an interval around its point (`spread` 0: no overlap).
fn execute(plan: &[Planned], spread_scale: u64) -> Vec<Operation> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut point_ms: u64 = 1_000;
    let mut history = Vec::new();
    for (client, p) in plan.iter().enumerate() {
        point_ms += p.gap_ms * (2 * spread_scale + 1) + if spread_scale == 0 { 0 } else { 1 };
        let key = format!("k{}", p.key);
        let current = map.get(&key).cloned();
        let (call, output, effect): (KvCall, KvOutput, Option<Option<String>>) = match p.kind {
            0 => {
                let v = value(p.a.max(1)).unwrap();
                (KvCall::Put { value: v.clone() }, KvOutput::Done, Some(Some(v)))
            }
            2 => {
                let (expected, new) = (value(p.a), value(p.b));
                let swapped = current == expected;
                let call = KvCall::Cas { expected, new: new.clone() };
                let output = KvOutput::Cas { swapped, current: current.clone() };
                (call, output, swapped.then_some(new))
            }
            3 => (KvCall::Delete, KvOutput::Done, Some(None)),
            _ => (KvCall::Get, KvOutput::Value(current.clone()), None),
        };
        if p.fate != Fate::UnknownLost
            && let Some(effect) = effect
        {
            match effect {
                Some(v) => map.insert(key.clone(), v),
                None => map.remove(&key),
            };
        }
        let outcome = match p.fate {
            Fate::Known => Outcome::Returned { at_ms: point_ms + p.after_ms * spread_scale, output },
            Fate::UnknownApplied | Fate::UnknownLost => Outcome::Unknown,
        };
        history.push(Operation {
            client: client as u64 % 7,
            key,
            call,
            invoked_at_ms: point_ms - p.before_ms * spread_scale,
            outcome,
        });
    }
    history
}

fn planned(max_keys: u8, unknowns: bool) -> impl Strategy<Value = Planned> {
    let fate = if unknowns {
        prop_oneof![
            6 => Just(Fate::Known),
            1 => Just(Fate::UnknownApplied),
            1 => Just(Fate::UnknownLost),
        ]
        .boxed()
    } else {
        Just(Fate::Known).boxed()
    };
    (0..max_keys, 0u8..5, 0u8..4, 0u8..4, 1u64..4, 0u64..6, 0u64..6, fate).prop_map(
        |(key, kind, a, b, gap_ms, before_ms, after_ms, fate)| Planned {
            key,
            kind,
            a,
            b,
            gap_ms,
            before_ms,
            after_ms,
            fate,
        },
    )
}

/// Changes the answer of the `pick`-th answered get or cas; `None` if there is none.
fn mutate(history: &mut [Operation], pick: usize, to_ghost: bool) -> Option<usize> {
    let answered: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, op)| match &op.outcome {
            Outcome::Returned { output, .. } => {
                if to_ghost {
                    matches!(output, KvOutput::Value(_))
                } else {
                    !matches!(output, KvOutput::Done)
                }
            }
            Outcome::Unknown => false,
        })
        .map(|(i, _)| i)
        .collect();
    let index = *answered.get(pick % answered.len().max(1))?;
    let Outcome::Returned { output, .. } = &mut history[index].outcome else { unreachable!() };
    let other = |v: &Option<String>| -> Option<String> {
        if to_ghost {
            s("never written")
        } else {
            match v.as_deref() {
                None => value(1),
                Some("v1") => value(2),
                Some(_) => None,
            }
        }
    };
    match output {
        KvOutput::Value(v) => *v = other(v),
        KvOutput::Cas { swapped, current } => {
            if pick.is_multiple_of(2) {
                *swapped = !*swapped;
            } else {
                *current = other(current);
            }
        }
        KvOutput::Done => unreachable!(),
    }
    Some(index)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Executed histories with overlapping intervals and unknown outcomes pass.
    #[test]
    fn executed_histories_pass(plan in prop::collection::vec(planned(3, true), 0..40), spread in 0u64..4) {
        let history = execute(&plan, spread);
        let verdict = check(&history);
        prop_assert!(verdict.is_ok(), "{:?}\n{:#?}", verdict, history);
    }

    /// Sequential histories have one linearization: any changed answer is caught.
    #[test]
    fn sequential_histories_with_a_changed_answer_fail(
        plan in prop::collection::vec(planned(2, false), 1..30),
        pick in 0usize..1_000,
    ) {
        let mut history = execute(&plan, 0);
        prop_assert!(check(&history).is_ok());
        if let Some(index) = mutate(&mut history, pick, false) {
            let verdict = check(&history);
            match &verdict {
                Verdict::Violation { key, operations, minimal, .. } => {
                    prop_assert_eq!(key, &history[index].key);
                    prop_assert!(*minimal);
                    prop_assert!(operations.contains(&index), "{:?}", verdict);
                }
                other => prop_assert!(false, "{:?}\n{:#?}", other, history),
            }
        }
    }

    /// In overlapping histories, a read of a value never written is caught, alone.
    #[test]
    fn overlapping_histories_with_a_ghost_read_fail(
        plan in prop::collection::vec(planned(3, true), 1..40),
        spread in 1u64..4,
        pick in 0usize..1_000,
    ) {
        let mut history = execute(&plan, spread);
        if let Some(index) = mutate(&mut history, pick, true) {
            let verdict = check(&history);
            match verdict {
                Verdict::Violation { operations, minimal, .. } => {
                    prop_assert!(minimal);
                    prop_assert_eq!(operations, vec![index]);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

/// Reference: every subset of the unknown writes, in every order that respects real time.
fn brute_force(ops: &[KeyOp], initial: State) -> bool {
    let completed: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].returned_at_ms.is_some()).collect();
    let unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].returned_at_ms.is_none()).collect();
    // `a` must come before `b`.
    let precedes = |a: usize, b: usize| ops[a].returned_at_ms.is_some_and(|at| at < ops[b].invoked_at_ms);
    fn orders(
        ops: &[KeyOp],
        chosen: &[usize],
        placed: &mut Vec<usize>,
        state: State,
        precedes: &dyn Fn(usize, usize) -> bool,
    ) -> bool {
        if placed.len() == chosen.len() {
            return true;
        }
        for &b in chosen {
            if placed.contains(&b) {
                continue;
            }
            let ready = chosen.iter().all(|&a| a == b || placed.contains(&a) || !precedes(a, b));
            if !ready {
                continue;
            }
            if let Some(after) = ops[b].op.step(state) {
                placed.push(b);
                if orders(ops, chosen, placed, after, precedes) {
                    return true;
                }
                placed.pop();
            }
        }
        false
    }
    (0u32..1 << unknown.len()).any(|mask| {
        let mut chosen = completed.clone();
        chosen.extend((0..unknown.len()).filter(|k| mask & (1 << k) != 0).map(|k| unknown[k]));
        orders(ops, &chosen, &mut Vec::new(), initial, &precedes)
    })
}

fn random_op() -> impl Strategy<Value = Operation> {
    let v = || prop_oneof![Just(None), Just(s("1")), Just(s("2"))];
    (0u8..4, v(), v(), v(), any::<bool>(), 0u64..12, 0u64..6, prop::bool::weighted(0.25)).prop_map(
        |(kind, a, b, c, swapped, invoked, len, unknown)| {
            let (call, output) = match kind {
                0 => (KvCall::Put { value: a.unwrap_or_else(|| "1".to_string()) }, KvOutput::Done),
                1 => (KvCall::Get, KvOutput::Value(a)),
                2 => (KvCall::Cas { expected: a, new: b }, KvOutput::Cas { swapped, current: c }),
                _ => (KvCall::Delete, KvOutput::Done),
            };
            let outcome = if unknown { Outcome::Unknown } else { Outcome::Returned { at_ms: invoked + len, output } };
            Operation { client: 1, key: "k".to_string(), call, invoked_at_ms: invoked, outcome }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The pruned search agrees with brute force, from any initial state, on random
    /// small histories (random answers: some linearizable, most not).
    #[test]
    fn search_agrees_with_brute_force(
        history in prop::collection::vec(random_op(), 1..7),
        initial in prop_oneof![Just(None), Just(Some(0u32)), Just(Some(1u32))],
    ) {
        let indices: Vec<usize> = (0..history.len()).collect();
        let ops = model_ops(&history, &indices);
        let initial = initial.filter(|&v| (v as usize) < ops.len());
        let (outcome, _) = search(&ops, initial, u64::MAX);
        let expected = brute_force(&ops, initial);
        prop_assert_eq!(outcome == Search::Linearizable, expected, "{:#?}", history);
    }

    /// A reported core really fails (by brute force, from every initial state its
    /// relaxation allows), and is 1-minimal: relaxing any one of its operations passes.
    #[test]
    fn shrunk_cores_fail_and_are_minimal(history in prop::collection::vec(random_op(), 1..7)) {
        let indices: Vec<usize> = (0..history.len()).collect();
        let ops = model_ops(&history, &indices);
        let (outcome, _) = search(&ops, None, u64::MAX);
        if let Search::NotLinearizable { frontier_ms } = outcome {
            let (core, minimal, relaxation) = shrink(&ops, frontier_ms, u64::MAX);
            prop_assert!(minimal);
            prop_assert!(!core.is_empty());
            let (relaxed, initials) = relaxation.apply(&ops);
            prop_assert!(initials.iter().all(|&i| !brute_force(&relaxed, i)), "{:#?}", history);
            for &index in &core {
                let mut more = relaxation.clone();
                more.relaxed[ops.iter().position(|op| op.index == index).unwrap()] = true;
                let (relaxed, initials) = more.apply(&ops);
                prop_assert!(
                    initials.iter().any(|&i| brute_force(&relaxed, i)),
                    "#{} {:#?}", index, history
                );
            }
        }
    }
}
