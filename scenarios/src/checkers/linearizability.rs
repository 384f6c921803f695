//! Linearizability of a key/value history (Wing & Gong's search, with Lowe's memoisation,
//! as in Porcupine and Knossos; written here from the papers' description).
//!
//! The model is one register per key: `put`, `get`, `delete` and `cas` (compare-and-set,
//! answering whether it swapped and the value it found *before* the swap, as the kernel's
//! `KvCas` does). Every key starts absent. Operations on different keys commute, so the
//! history is checked key by key (P-compositionality, Horn & Kroening): a history is
//! linearizable iff each key's sub-history is.
//!
//! For one key, the search walks a list of call and return events sorted by time. It
//! tries to linearize, one after another, calls whose operation is consistent with the
//! register's current state; reaching a return event of an operation not linearized yet
//! means the last choice was wrong, so it backtracks. A cache of (set of linearized
//! operations, register state) already explored prunes repeats, which makes the search
//! polynomial for most real histories; the worst case stays exponential (many unknown
//! outcomes on one key; see the reductions on `fn search`), so it is bounded by a step budget
//! and gives up with [`Verdict::Unknown`] (never a pass) when it runs out.
//!
//! Time and ties: times are simulated milliseconds. Two events at the same millisecond are
//! taken as concurrent (calls sort before returns), so a clock too coarse to order them
//! never produces a false violation.
//!
//! Unknown outcomes: an operation whose client timed out or crashed may or may not have
//! taken effect. It gets a return event after every other event, so it can be linearized
//! at any point after its invocation; the search succeeds once every *completed*
//! operation is linearized, which covers "never took effect" (linearized after everything,
//! where nobody sees it). A `get` with an unknown outcome constrains nothing and is dropped.
//! A command the cluster *refused* (a typed error) took no effect: leave it out.
//!
//! Explanations: on a violation the key's history is shrunk to a small core. Every
//! shrinking step only *relaxes* the history (any linearization of the original yields one
//! of the relaxed history), so whatever still fails after them is a genuine contradiction
//! among the operations left:
//! 0. right cut at the search's frontier (the latest return it got stuck at), if that
//!    still fails, to bound the later searches;
//! 1. left cut at the latest `s` where it still fails: operations that returned before `s`
//!    are dropped, those pending at `s` become unknown, and the register may start absent
//!    or holding any value written by an operation invoked before `s`;
//! 2. right cut at the earliest return time `t` where it still fails: operations invoked
//!    after `t` are dropped, and those still pending at `t` become unknown;
//! 3. greedily turn each remaining completed operation into an unknown one, keeping the
//!    change if the history still fails.
//!
//! The left cut gallops in from the right end (short windows, cheap searches) and then
//! bisects, the right cut bisects (failing is monotone in each), so a long history shrinks
//! to the window around the contradiction in a logarithmic number of mostly short
//! searches, and the greedy pass works on that window only. The core is the completed
//! operations left: no order of them agrees with real time and the register, starting
//! from any state the operations before the window may have left, and granting that every
//! other operation took effect at any time after its invocation, or never. It is 1-minimal
//! (turning any one of them into an unknown makes the rest orderable) unless the shrink
//! budget ran out, which the explanation says.
//!
//! Both the search (with its pruning) and the cores are tested against a brute-force
//! enumeration of orders on small random histories.

use super::{CheckReport, Checker, Violation};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Who issued an operation; used only to name operations in explanations.
pub type ClientId = u64;

/// What a client asked of a key (`Cas` sets `new`, `None` deleting, only if the key holds
/// `expected`, `None` meaning absent), and what the cluster answered (`Cas` carries whether it
/// swapped and the value found before). The simulator's trace records exactly these.
pub use roster_sim::trace::{KvCall, KvOutput};

/// How an operation ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Returned {
        at_ms: u64,
        output: KvOutput,
    },
    /// Timed out, or the client crashed: it may have taken effect at any time after its
    /// invocation, or never.
    Unknown,
}

/// One client operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: ClientId,
    pub key: String,
    pub call: KvCall,
    pub invoked_at_ms: u64,
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: ", self.client)?;
        match &self.call {
            KvCall::Put { value } => write!(f, "put({:?}, {value:?})", self.key)?,
            KvCall::Get => write!(f, "get({:?})", self.key)?,
            KvCall::Cas { expected, new } => {
                write!(f, "cas({:?}, expected {expected:?}, new {new:?})", self.key)?;
            }
            KvCall::Delete => write!(f, "delete({:?})", self.key)?,
        }
        match &self.outcome {
            Outcome::Returned { at_ms, output } => {
                match output {
                    KvOutput::Done => write!(f, " -> done")?,
                    KvOutput::Value(v) => write!(f, " -> {v:?}")?,
                    KvOutput::Cas { swapped, current } => {
                        write!(f, " -> swapped {swapped}, found {current:?}")?;
                    }
                }
                write!(f, " [invoked {} ms, returned {at_ms} ms]", self.invoked_at_ms)
            }
            Outcome::Unknown => write!(f, " -> unknown [invoked {} ms, no answer]", self.invoked_at_ms),
        }
    }
}

/// A history that does not describe operations at all; a bug in the recorder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("operation #{index} ({operation}) has an answer of another kind of call")]
    OutputMismatch { index: usize, operation: String },
    #[error("operation #{index} returned at {returned_at_ms} ms, before its invocation at {invoked_at_ms} ms")]
    ReturnedBeforeInvoked { index: usize, invoked_at_ms: u64, returned_at_ms: u64 },
}

/// Step budgets. One step is one event visited by the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearizabilityConfig {
    /// Budget of the search of one key; past it the key's verdict is unknown.
    pub max_steps_per_key: u64,
    /// Budget of shrinking one violating key to a small core; past it the explanation
    /// names a larger, not minimised, set.
    pub max_shrink_steps_per_key: u64,
}

impl Default for LinearizabilityConfig {
    fn default() -> Self {
        LinearizabilityConfig { max_steps_per_key: 10_000_000, max_shrink_steps_per_key: 10_000_000 }
    }
}

/// The verdict on one key's sub-history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable {
        steps: u64,
    },
    Violation {
        /// Indices into the checked history of the operations that cannot be ordered.
        operations: Vec<usize>,
        /// Whether shrinking finished (the core is 1-minimal).
        minimal: bool,
        explanation: String,
    },
    /// The search ran out of steps.
    Unknown {
        steps: u64,
    },
}

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok {
        keys: usize,
        steps: u64,
    },
    /// The first violating key, in key order.
    Violation {
        key: String,
        operations: Vec<usize>,
        minimal: bool,
        explanation: String,
    },
    /// No key violates, but the search of `key` (the first such key) gave up.
    Unknown {
        key: String,
        steps: u64,
        explanation: String,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok { .. })
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation { .. })
    }

    /// Records this verdict under [`Checker::Linearizability`]: a violation as one, a
    /// search that gave up as inconclusive.
    pub fn record(&self, report: &mut CheckReport) {
        match self {
            Verdict::Ok { .. } => report.record(Checker::Linearizability, []),
            Verdict::Violation { explanation, .. } => {
                report.record(Checker::Linearizability, [Violation::new(Checker::Linearizability, explanation.clone())])
            }
            Verdict::Unknown { explanation, .. } => {
                report.record_inconclusive(Checker::Linearizability, explanation.clone());
            }
        }
    }
}

/// Checks a whole history: every key, reporting the first violating key, else the first
/// key whose search gave up, else `Ok`.
pub fn check_history(history: &[Operation], config: &LinearizabilityConfig) -> Result<Verdict, HistoryError> {
    let by_key = check_by_key(history, config)?;
    let keys = by_key.len();
    let mut steps: u64 = 0;
    let mut gave_up: Option<(String, u64)> = None;
    let violating = by_key.values().filter(|v| matches!(v, KeyVerdict::Violation { .. })).count();
    for (key, verdict) in by_key {
        match verdict {
            KeyVerdict::Linearizable { steps: s } => steps = steps.saturating_add(s),
            KeyVerdict::Violation { operations, minimal, mut explanation } => {
                if violating > 1 {
                    explanation.push_str(&format!("\n({} other key(s) also fail)", violating - 1));
                }
                return Ok(Verdict::Violation { key, operations, minimal, explanation });
            }
            KeyVerdict::Unknown { steps: s } => {
                if gave_up.is_none() {
                    gave_up = Some((key, s));
                }
            }
        }
    }
    Ok(match gave_up {
        Some((key, steps)) => Verdict::Unknown {
            explanation: format!(
                "key {key:?}: the search gave up after {steps} steps \
                 (max_steps_per_key = {}); raise it or record a shorter history",
                config.max_steps_per_key
            ),
            key,
            steps,
        },
        None => Verdict::Ok { keys, steps },
    })
}

/// Checks every key of a history on its own.
pub fn check_by_key(
    history: &[Operation],
    config: &LinearizabilityConfig,
) -> Result<BTreeMap<String, KeyVerdict>, HistoryError> {
    validate(history)?;
    let mut keys: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        keys.entry(op.key.as_str()).or_default().push(index);
    }
    Ok(keys
        .into_iter()
        .map(|(key, indices)| {
            let verdict = check_key(history, key, &indices, config);
            (key.to_string(), verdict)
        })
        .collect())
}

fn validate(history: &[Operation]) -> Result<(), HistoryError> {
    for (index, op) in history.iter().enumerate() {
        let Outcome::Returned { at_ms, output } = &op.outcome else {
            continue;
        };
        let matches = matches!(
            (&op.call, output),
            (KvCall::Put { .. } | KvCall::Delete, KvOutput::Done)
                | (KvCall::Get, KvOutput::Value(_))
                | (KvCall::Cas { .. }, KvOutput::Cas { .. })
        );
        if !matches {
            return Err(HistoryError::OutputMismatch { index, operation: op.to_string() });
        }
        if *at_ms < op.invoked_at_ms {
            return Err(HistoryError::ReturnedBeforeInvoked {
                index,
                invoked_at_ms: op.invoked_at_ms,
                returned_at_ms: *at_ms,
            });
        }
    }
    Ok(())
}

/// A register value, interned per key so that states are small and cheap to compare.
type Value = u32;
/// The register: absent or holding a value.
type State = Option<Value>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ModelOp {
    Put(Value),
    Delete,
    Get(State),
    Cas {
        expected: State,
        new: State,
        /// `None` when the outcome is unknown.
        observed: Option<(bool, State)>,
    },
}

impl ModelOp {
    /// Whether the operation sets the register without looking at it.
    fn is_blind(self) -> bool {
        matches!(self, ModelOp::Put(_) | ModelOp::Delete)
    }

    /// The register's state after this operation, or `None` if the operation's observed
    /// answer is impossible in `state`.
    fn step(self, state: State) -> Option<State> {
        match self {
            ModelOp::Put(v) => Some(Some(v)),
            ModelOp::Delete => Some(None),
            ModelOp::Get(seen) => (seen == state).then_some(state),
            ModelOp::Cas { expected, new, observed } => {
                let swaps = state == expected;
                if let Some((swapped, current)) = observed
                    && (swapped != swaps || current != state)
                {
                    return None;
                }
                Some(if swaps { new } else { state })
            }
        }
    }
}

/// One operation of a key's sub-history, in model form.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index into the checked history.
    index: usize,
    invoked_at_ms: u64,
    /// `None`: unknown outcome.
    returned_at_ms: Option<u64>,
    op: ModelOp,
}

fn check_key(history: &[Operation], key: &str, indices: &[usize], config: &LinearizabilityConfig) -> KeyVerdict {
    let ops = model_ops(history, indices);
    let (outcome, steps) = search(&ops, None, config.max_steps_per_key);
    match outcome {
        Search::Linearizable => KeyVerdict::Linearizable { steps },
        Search::GaveUp => KeyVerdict::Unknown { steps },
        Search::NotLinearizable { frontier_ms } => {
            let (core, minimal, relaxation) = shrink(&ops, frontier_ms, config.max_shrink_steps_per_key);
            let explanation = explain(history, key, &ops, &core, minimal, &relaxation);
            KeyVerdict::Violation { operations: core, minimal, explanation }
        }
    }
}

/// The key's operations in model form, values interned in order of first appearance.
fn model_ops(history: &[Operation], indices: &[usize]) -> Vec<KeyOp> {
    let mut interned: BTreeMap<&str, Value> = BTreeMap::new();
    let mut ops = Vec::with_capacity(indices.len());
    for &index in indices {
        let op = &history[index];
        let (returned_at_ms, output) = match &op.outcome {
            Outcome::Returned { at_ms, output } => (Some(*at_ms), Some(output)),
            Outcome::Unknown => (None, None),
        };
        let model = match (&op.call, output) {
            (KvCall::Put { value }, _) => ModelOp::Put(intern(&mut interned, value)),
            (KvCall::Delete, _) => ModelOp::Delete,
            // An unanswered read constrains nothing.
            (KvCall::Get, None) => continue,
            (KvCall::Get, Some(KvOutput::Value(v))) => ModelOp::Get(intern_opt(&mut interned, v)),
            (KvCall::Cas { expected, new }, output) => {
                let observed = match output {
                    Some(KvOutput::Cas { swapped, current }) => Some((*swapped, intern_opt(&mut interned, current))),
                    _ => None,
                };
                ModelOp::Cas {
                    expected: intern_opt(&mut interned, expected),
                    new: intern_opt(&mut interned, new),
                    observed,
                }
            }
            (KvCall::Get, Some(_)) => unreachable!("validated: a get is answered with a value"),
        };
        ops.push(KeyOp { index, invoked_at_ms: op.invoked_at_ms, returned_at_ms, op: model });
    }
    ops
}

fn intern<'a>(interned: &mut BTreeMap<&'a str, Value>, value: &'a str) -> Value {
    let next = Value::try_from(interned.len()).expect("fewer than 2^32 values per key");
    *interned.entry(value).or_insert(next)
}

fn intern_opt<'a>(interned: &mut BTreeMap<&'a str, Value>, value: &'a Option<String>) -> State {
    value.as_deref().map(|v| intern(interned, v))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Search {
    Linearizable,
    /// `frontier_ms`: the latest return the search ever got stuck at; the contradiction
    /// is usually just before it.
    NotLinearizable {
        frontier_ms: u64,
    },
    GaveUp,
}

const NIL: usize = usize::MAX;

/// Wing–Gong search with memoisation over `ops`, from register state `initial`; returns
/// the outcome and the steps used.
///
/// Events live in a doubly linked list (call of op `i` is node `2i`, its return `2i+1`,
/// the head sentinel is node `2n`). Linearizing an operation unlinks both its events;
/// backtracking relinks them in reverse order (dancing links), so no list is ever copied.
///
/// Unknown outcomes make the plain search exponential (every subset of them could have
/// taken effect at every point), so two things keep it in check:
/// - at each point, completed calls are tried before unknown ones, so the search first
///   explores what needs no unknown operation at all;
/// - the cache is by subsumption, not equality: a configuration (completed operations
///   linearized, state, unknown operations linearized) is skipped if one with the same
///   completed set and state, and a *subset* of its unknown operations, was already
///   explored. Unknown operations not yet linearized can still be linearized later or
///   never, so fewer used means every continuation of the new configuration is also one
///   of the old: skipping it loses nothing. (With no unknown outcomes this is the usual
///   exact cache.) The start is in the cache, so an unknown operation that changes
///   nothing is never linearized;
/// - an unknown operation is never directly followed by a blind write (put or delete):
///   nothing could observe its effect, so that order is the same as the unknown one
///   taking effect after everything (never), which the search covers from the
///   configuration before it; an unknown operation is only worth linearizing right
///   before a read or a compare-and-set;
/// - unknown operations with the same effect are used in invocation order: once both are
///   invoked they are interchangeable, and the earlier one is available whenever the
///   later one is.
fn search(ops: &[KeyOp], initial: State, max_steps: u64) -> (Search, u64) {
    let n = ops.len();
    let head = 2 * n;
    let (order, mut next, mut prev) = event_list(ops);
    let words = n.div_ceil(64);
    let any_unknown = ops.iter().any(|op| op.returned_at_ms.is_none());
    let group_prev = same_effect_predecessors(ops, &order);
    let mut completed = vec![0u64; words];
    let mut unknown = vec![0u64; words];
    // (completed set, state) -> minimal unknown sets explored with it.
    let mut cache: BTreeMap<(Vec<u64>, State), Vec<Vec<u64>>> = BTreeMap::new();
    // The start is explored too: an unknown operation that changes nothing is dominated.
    cache.insert((completed.clone(), initial), vec![unknown.clone()]);
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = initial;
    let mut entry = next[head];
    // Which calls this pass over the current window tries: completed ones, then unknown.
    let mut trying_unknown = false;
    // Whether the last operation linearized is an unknown one, after which no blind
    // write may follow (see above).
    let mut after_unknown = false;
    let mut steps: u64 = 0;
    let mut frontier_ms: u64 = 0;

    loop {
        if entry == NIL {
            // Every event is linearized.
            return (Search::Linearizable, steps);
        }
        steps += 1;
        if steps > max_steps {
            return (Search::GaveUp, max_steps);
        }
        let i = entry / 2;
        let is_unknown = ops[i].returned_at_ms.is_none();
        if entry.is_multiple_of(2) {
            let skip = is_unknown != trying_unknown
                || (after_unknown && ops[i].op.is_blind())
                || group_prev[i].is_some_and(|p| unknown[p / 64] & (1 << (p % 64)) == 0);
            if skip {
                entry = next[entry];
                continue;
            }
            let mut advanced = false;
            if let Some(after) = ops[i].op.step(state) {
                let set = if is_unknown { &mut unknown } else { &mut completed };
                set_bit(set, i, true);
                let seen = cache.entry((completed.clone(), after)).or_default();
                steps = steps.saturating_add(seen.len() as u64);
                if seen.iter().any(|old| is_subset(old, &unknown)) {
                    let set = if is_unknown { &mut unknown } else { &mut completed };
                    set_bit(set, i, false);
                } else {
                    seen.retain(|old| !is_subset(&unknown, old));
                    seen.push(unknown.clone());
                    stack.push((entry, state));
                    state = after;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, entry + 1);
                    entry = next[head];
                    trying_unknown = false;
                    after_unknown = is_unknown;
                    advanced = true;
                }
            }
            if !advanced {
                entry = next[entry];
            }
        } else {
            // The first return event still in the list. If it is an unknown outcome's,
            // every completed operation has been linearized.
            if is_unknown {
                return (Search::Linearizable, steps);
            }
            if !trying_unknown && any_unknown {
                trying_unknown = true;
                entry = next[head];
                continue;
            }
            frontier_ms = frontier_ms.max(ops[i].returned_at_ms.unwrap_or(0));
            let Some((call, before)) = stack.pop() else {
                return (Search::NotLinearizable { frontier_ms }, steps);
            };
            let j = call / 2;
            let was_unknown = ops[j].returned_at_ms.is_none();
            let set = if was_unknown { &mut unknown } else { &mut completed };
            set_bit(set, j, false);
            state = before;
            relink(&mut next, &mut prev, call + 1);
            relink(&mut next, &mut prev, call);
            entry = next[call];
            trying_unknown = was_unknown;
            after_unknown = stack.last().is_some_and(|&(top, _)| ops[top / 2].returned_at_ms.is_none());
        }
    }
}

/// Every operation's invocation (node `2i`) and return (node `2i + 1`) in time order, as
/// a doubly linked list from the head node `2n`: unknown outcomes return after everything.
fn event_list(ops: &[KeyOp]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let n = ops.len();
    let head = 2 * n;
    let mut order: Vec<usize> = (0..2 * n).collect();
    order.sort_by_key(|&node| {
        let op = &ops[node / 2];
        let is_return = node % 2 == 1;
        match (is_return, op.returned_at_ms) {
            (false, _) => (0u8, op.invoked_at_ms, 0u8, node),
            (true, Some(at)) => (0, at, 1, node),
            // Unknown outcomes return after everything.
            (true, None) => (1, 0, 1, node),
        }
    });
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &node in &order {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    (order, next, prev)
}

/// For each unknown operation, the previous one (in invocation order) with the same effect.
fn same_effect_predecessors(ops: &[KeyOp], order: &[usize]) -> Vec<Option<usize>> {
    let mut group_prev: Vec<Option<usize>> = vec![None; ops.len()];
    let mut group_last: BTreeMap<ModelOp, usize> = BTreeMap::new();
    for &node in order.iter().filter(|&&node| node % 2 == 0) {
        let i = node / 2;
        if ops[i].returned_at_ms.is_none() {
            group_prev[i] = group_last.insert(ops[i].op, i);
        }
    }
    group_prev
}

/// Takes `node` out of the event list (it stays linked to its neighbours, for `relink`).
fn unlink(next: &mut [usize], prev: &mut [usize], node: usize) {
    next[prev[node]] = next[node];
    if next[node] != NIL {
        prev[next[node]] = prev[node];
    }
}

/// Puts back a node `unlink` took out, in its old place.
fn relink(next: &mut [usize], prev: &mut [usize], node: usize) {
    next[prev[node]] = node;
    if next[node] != NIL {
        prev[next[node]] = node;
    }
}

fn set_bit(set: &mut [u64], i: usize, on: bool) {
    if on {
        set[i / 64] |= 1 << (i % 64);
    } else {
        set[i / 64] &= !(1 << (i % 64));
    }
}

/// Whether every bit of `small` is in `large`.
fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

/// How a key's history is relaxed while shrinking. Each field only ever weakens the
/// history (any linearization of the original yields one of the relaxed history), so a
/// relaxed history that still fails shows a contradiction among what is left.
#[derive(Clone, Debug)]
struct Relaxation {
    /// Left cut `s`: operations that returned before `s` are dropped, those invoked before
    /// `s` and still pending at it become unknown, and the register may start absent or
    /// holding any value written by an operation invoked before `s`.
    from_ms: Option<u64>,
    /// Right cut `t`: operations invoked after `t` are dropped, and those still pending at
    /// `t` become unknown.
    cut_ms: Option<u64>,
    /// Operations (positions in the key's list) made unknown one by one.
    relaxed: Vec<bool>,
}

impl Relaxation {
    fn none(len: usize) -> Self {
        Relaxation { from_ms: None, cut_ms: None, relaxed: vec![false; len] }
    }

    /// The relaxed operations (unknown reads dropped), and the initial states to try.
    fn apply(&self, ops: &[KeyOp]) -> (Vec<KeyOp>, Vec<State>) {
        let mut out = Vec::with_capacity(ops.len());
        for (k, op) in ops.iter().enumerate() {
            if self.cut_ms.is_some_and(|cut| op.invoked_at_ms > cut) {
                continue;
            }
            let from = self.from_ms.unwrap_or(0);
            if op.returned_at_ms.is_some_and(|at| at < from) {
                continue;
            }
            let pending_at_cut = match (self.cut_ms, op.returned_at_ms) {
                (Some(cut), Some(at)) => at > cut,
                _ => false,
            };
            let pending_at_from = op.invoked_at_ms < from;
            let mut op = *op;
            if self.relaxed[k] || pending_at_cut || pending_at_from {
                op.returned_at_ms = None;
                match &mut op.op {
                    ModelOp::Get(_) => continue,
                    ModelOp::Cas { observed, .. } => *observed = None,
                    ModelOp::Put(_) | ModelOp::Delete => {}
                }
            }
            out.push(op);
        }
        let initials = match self.from_ms {
            None => vec![None],
            Some(from) => {
                let mut states: BTreeSet<State> = BTreeSet::from([None]);
                for op in ops.iter().filter(|op| op.invoked_at_ms < from) {
                    match op.op {
                        ModelOp::Put(v) => {
                            states.insert(Some(v));
                        }
                        ModelOp::Cas { new, .. } => {
                            states.insert(new);
                        }
                        ModelOp::Delete | ModelOp::Get(_) => {}
                    }
                }
                states.into_iter().collect()
            }
        };
        (out, initials)
    }
}

/// Shrinks a non-linearizable `ops` to a core of completed operations that still cannot
/// be ordered (see the module documentation). Returns the core's history indices, whether
/// shrinking finished, and the relaxation that produced it.
fn shrink(ops: &[KeyOp], frontier_ms: u64, max_steps: u64) -> (Vec<usize>, bool, Relaxation) {
    let mut shrinker = Shrinker { ops, budget: max_steps, minimal: true };
    let mut relaxation = Relaxation::none(ops.len());
    let returns: Vec<u64> =
        ops.iter().filter_map(|op| op.returned_at_ms).collect::<BTreeSet<u64>>().into_iter().collect();
    shrinker.cut_at_frontier(&mut relaxation, frontier_ms);
    shrinker.latest_left_cut(&mut relaxation, &returns);
    shrinker.earliest_right_cut(&mut relaxation, &returns);
    shrinker.relax_each(&mut relaxation);
    let (left, _) = relaxation.apply(ops);
    let core = left.into_iter().filter(|op| op.returned_at_ms.is_some()).map(|op| op.index).collect();
    (core, shrinker.minimal, relaxation)
}

/// The shrinking steps' shared search budget; `minimal` turns false when it runs out (the
/// steps after that keep what they have).
struct Shrinker<'a> {
    ops: &'a [KeyOp],
    budget: u64,
    minimal: bool,
}

impl Shrinker<'_> {
    /// Some(true): fails from every initial state. Some(false): orderable. None: out of
    /// budget.
    fn fails(&mut self, relaxation: &Relaxation) -> Option<bool> {
        let (candidate, initials) = relaxation.apply(self.ops);
        for initial in initials {
            let (outcome, steps) = search(&candidate, initial, self.budget);
            self.budget = self.budget.saturating_sub(steps);
            match outcome {
                Search::NotLinearizable { .. } => {}
                Search::Linearizable => return Some(false),
                Search::GaveUp => return None,
            }
        }
        Some(true)
    }

    /// Step 0: the search got stuck at `frontier_ms`: a right cut there usually still fails,
    /// and bounds every later search to the part of the history that matters.
    fn cut_at_frontier(&mut self, relaxation: &mut Relaxation, frontier_ms: u64) {
        relaxation.cut_ms = Some(frontier_ms);
        match self.fails(relaxation) {
            Some(true) => {}
            Some(false) => relaxation.cut_ms = None,
            None => {
                relaxation.cut_ms = None;
                self.minimal = false;
            }
        }
    }

    /// Step 1: the latest left cut that still fails (failing only stops as it moves right),
    /// just after a return so that the operation returning then is dropped. Probes gallop
    /// in from the right end, where windows are short and searches cheap, then bisect.
    /// Candidate k (1..=len) cuts at froms[k - 1]; candidate 0 is no cut (known to fail).
    fn latest_left_cut(&mut self, relaxation: &mut Relaxation, returns: &[u64]) {
        let froms: Vec<u64> = returns
            .iter()
            .filter(|&&at| relaxation.cut_ms.is_none_or(|cut| at < cut))
            .map(|&at| at.saturating_add(1))
            .collect();
        let probe = |this: &mut Self, relaxation: &mut Relaxation, k: usize| -> Option<bool> {
            relaxation.from_ms = k.checked_sub(1).map(|i| froms[i]);
            this.fails(relaxation)
        };
        // Invariant: candidate `lo` fails, candidates above `hi` do not.
        let (mut lo, mut hi) = (0usize, froms.len());
        let mut stride = 1usize;
        while self.minimal && lo < hi {
            let k = hi + 1 - stride.min(hi);
            match probe(self, relaxation, k) {
                Some(true) => {
                    lo = k;
                    break;
                }
                Some(false) => hi = k - 1,
                None => self.minimal = false,
            }
            stride = stride.saturating_mul(2);
        }
        while self.minimal && lo < hi {
            let k = lo + (hi - lo).div_ceil(2);
            match probe(self, relaxation, k) {
                Some(true) => lo = k,
                Some(false) => hi = k - 1,
                None => self.minimal = false,
            }
        }
        relaxation.from_ms = lo.checked_sub(1).map(|i| froms[i]);
    }

    /// Step 2: the earliest right cut that still fails (failing only grows with the cut),
    /// among the returns inside the window.
    fn earliest_right_cut(&mut self, relaxation: &mut Relaxation, returns: &[u64]) {
        let cuts: Vec<u64> = returns
            .iter()
            .copied()
            .filter(|&at| relaxation.from_ms.is_none_or(|from| at >= from))
            .filter(|&at| relaxation.cut_ms.is_none_or(|cut| at < cut))
            .collect();
        // Invariant: cutting at cuts[hi] fails (hi == len: the cut so far, known to fail).
        let known_cut = relaxation.cut_ms;
        let (mut lo, mut hi) = (0usize, cuts.len());
        while self.minimal && lo < hi {
            let mid = lo + (hi - lo) / 2;
            relaxation.cut_ms = Some(cuts[mid]);
            match self.fails(relaxation) {
                Some(true) => hi = mid,
                Some(false) => lo = mid + 1,
                None => self.minimal = false,
            }
        }
        relaxation.cut_ms = cuts.get(hi).copied().or(known_cut);
    }

    /// Step 3: greedily relax every completed operation left.
    fn relax_each(&mut self, relaxation: &mut Relaxation) {
        if !self.minimal {
            return;
        }
        let ops = self.ops;
        for k in 0..ops.len() {
            let (kept, _) = relaxation.apply(ops);
            if !kept.iter().any(|op| op.index == ops[k].index && op.returned_at_ms.is_some()) {
                continue;
            }
            relaxation.relaxed[k] = true;
            match self.fails(relaxation) {
                Some(true) => {}
                Some(false) => relaxation.relaxed[k] = false,
                None => {
                    relaxation.relaxed[k] = false;
                    self.minimal = false;
                    break;
                }
            }
        }
    }
}

fn explain(
    history: &[Operation],
    key: &str,
    ops: &[KeyOp],
    core: &[usize],
    minimal: bool,
    relaxation: &Relaxation,
) -> String {
    let unknown = ops.iter().filter(|op| op.returned_at_ms.is_none()).count();
    let start = match relaxation.from_ms {
        None => "the key starting absent".to_string(),
        Some(from) => format!(
            "the key holding, at {from} ms, whatever the operations that completed before \
             then may have left (absent or any value written before then)"
        ),
    };
    let mut text = format!(
        "key {key:?}: no order of these {} operation(s) agrees with real time and a register, \
         with {start}, and granting that every other operation took effect at any time \
         after its invocation, or never ({} of the key's {} operation(s) were unanswered)",
        core.len(),
        unknown,
        ops.len()
    );
    if !minimal {
        text.push_str(" [not minimised: the shrink step budget ran out]");
    }
    for &index in core {
        text.push_str(&format!("\n  #{index} {}", history[index]));
    }
    text
}

#[cfg(test)]
mod tests;
