//! The run table: faults applied, operations, each checker's verdict, the harness's own
//! checks, and the write gap at every leader change.

use super::faults::FaultKind;
use super::workload::Shared;
use roster_scenarios::checkers::{CheckReport, Checker};
use roster_sim::trace::{KvCall, OpEnd, Trace};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// A check only the harness can make (the full-disk round's).
#[derive(Clone, Debug)]
pub struct HarnessCheck {
    pub name: &'static str,
    /// What was seen, either way.
    pub result: Result<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ops: usize,
    pub by_call: BTreeMap<&'static str, usize>,
    pub returned: usize,
    pub failed: usize,
    pub refused: usize,
    pub unknown: usize,
    pub registered: u64,
    pub left: u64,
    pub crashed: u64,
    pub lost: u64,
    pub heartbeats: usize,
    pub sightings: usize,
    pub events: usize,
    pub states: usize,
}

impl Stats {
    pub fn of(trace: &Trace, shared: &Shared, states: usize) -> Stats {
        let mut s = Stats { ops: trace.kv_ops.len(), states, ..Stats::default() };
        for op in &trace.kv_ops {
            let call = match op.call {
                KvCall::Put { .. } => "put",
                KvCall::Get => "get",
                KvCall::Cas { .. } => "cas",
                KvCall::Delete => "delete",
            };
            *s.by_call.entry(call).or_default() += 1;
            match op.end {
                OpEnd::Returned { .. } => s.returned += 1,
                OpEnd::Failed { .. } => s.failed += 1,
                OpEnd::Refused { .. } => s.refused += 1,
                OpEnd::Pending => s.unknown += 1,
            }
        }
        s.registered = shared.members_registered.load(Ordering::Relaxed);
        s.left = shared.members_left.load(Ordering::Relaxed);
        s.crashed = shared.members_crashed.load(Ordering::Relaxed);
        s.lost = shared.members_lost.load(Ordering::Relaxed);
        s.heartbeats = trace.heartbeats.len();
        s.sightings = trace.leaders.len();
        s.events = trace.events.len();
        s
    }
}

/// Return times of acknowledged commands, sorted: when writes went through.
pub fn write_acks_ms(trace: &Trace) -> Vec<u64> {
    let mut acks: Vec<u64> = trace
        .kv_ops
        .iter()
        .filter(|op| op.command_seq.is_some())
        .filter_map(|op| match op.end {
            OpEnd::Returned { at_ms, .. } => Some(at_ms),
            _ => None,
        })
        .collect();
    acks.sort_unstable();
    acks
}

/// The longest gap between two consecutive acknowledgements in `[from_ms, to_ms]`
/// (the edges count as acknowledgements only if one lies outside: a gap that spans an
/// edge is measured from the last acknowledgement before it).
pub fn max_gap_ms(acks: &[u64], from_ms: u64, to_ms: u64) -> Option<u64> {
    let first = acks.partition_point(|&a| a < from_ms).saturating_sub(1);
    let last = acks.partition_point(|&a| a <= to_ms).min(acks.len().saturating_sub(1));
    acks.get(first..=last)?.windows(2).map(|w| w[1] - w[0]).max()
}

/// Leader changes: the first confirmed sighting of each new (term, node), in time order.
pub fn leader_changes(trace: &Trace) -> Vec<(u64, u64, u64)> {
    let mut sightings: Vec<_> = trace.leaders.iter().filter(|l| l.quorum_ack_age_ms.is_some()).collect();
    sightings.sort_by_key(|l| l.at_ms);
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for l in sightings {
        if out.last().is_none_or(|&(_, term, node)| (term, node) != (l.term, l.node))
            && !out.iter().any(|&(_, t, n)| (t, n) == (l.term, l.node))
        {
            out.push((l.at_ms, l.term, l.node));
        }
    }
    out
}

/// p50, p99, max of `values` (nearest rank).
pub fn percentiles(values: &[u64]) -> Option<(u64, u64, u64)> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = |p: f64| v[(((p * v.len() as f64).ceil() as usize).max(1) - 1).min(v.len() - 1)];
    (!v.is_empty()).then(|| (rank(0.50), rank(0.99), *v.last().unwrap_or(&0)))
}

/// A soak's table lists the first faults only.
const MAX_FAULT_LINES: usize = 40;

pub struct Table<'a> {
    pub title: String,
    pub faults: &'a [FaultKind],
    pub trace: &'a Trace,
    pub check: &'a CheckReport,
    pub harness: &'a [HarnessCheck],
    pub stats: &'a Stats,
}

fn verdict(check: &CheckReport, trace: &Trace, c: Checker) -> String {
    if c == Checker::CommittedEntries && trace.commits.is_empty() {
        return "n/a (the Raft log is not observable from outside)".into();
    }
    let n = check.violation_count(c);
    if n > 0 {
        return format!("FAIL {n}");
    }
    if check.inconclusive().iter().any(|(k, _)| *k == c) {
        return "INCONCLUSIVE".into();
    }
    if check.has_run(c) { "ok".into() } else { "not run".into() }
}

pub fn table(t: &Table<'_>) -> String {
    let mut out = String::new();
    let s = t.stats;
    let _ = writeln!(out, "{}", t.title);
    let mut counts: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for k in t.faults {
        *counts.entry(*k).or_default() += 1;
    }
    let faults: Vec<String> = counts.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    let _ = writeln!(out, "  {:<30} {}", "faults", faults.join(", "));
    for (at, what) in t.trace.faults.iter().take(MAX_FAULT_LINES) {
        let _ = writeln!(out, "    {:>7.1} s  {what}", *at as f64 / 1000.0);
    }
    if t.trace.faults.len() > MAX_FAULT_LINES {
        let _ = writeln!(out, "    ... and {} more", t.trace.faults.len() - MAX_FAULT_LINES);
    }
    let calls: Vec<String> = s.by_call.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        out,
        "  {:<30} {} ({}): {} answered, {} failed, {} refused, {} unknown",
        "kv operations",
        s.ops,
        calls.join(", "),
        s.returned,
        s.failed,
        s.refused,
        s.unknown
    );
    let _ = writeln!(
        out,
        "  {:<30} {} registered, {} left, {} crashed, {} lost (expired or removed); {} heartbeats acked",
        "process members", s.registered, s.left, s.crashed, s.lost, s.heartbeats
    );
    let _ = writeln!(
        out,
        "  {:<30} {} leader sightings, {} applied events, {} node states compared",
        "observed", s.sightings, s.events, s.states
    );
    for c in Checker::ALL {
        let _ = writeln!(out, "  {:<30} {}", c.name(), verdict(t.check, t.trace, c));
    }
    for h in t.harness {
        let v = match &h.result {
            Ok(seen) => format!("ok: {seen}"),
            Err(why) => format!("FAIL: {why}"),
        };
        let _ = writeln!(out, "  {:<30} {v}", h.name);
    }
    for v in t.check.violations().iter().take(8) {
        let detail: String = v.detail.chars().take(400).collect();
        let _ = writeln!(out, "  - [{}] {detail}", v.checker);
    }
    for (c, note) in t.check.inconclusive() {
        let _ = writeln!(out, "  - [{c}] inconclusive: {note}");
    }
    let acks = write_acks_ms(t.trace);
    let changes = leader_changes(t.trace);
    let _ =
        writeln!(out, "  leader changes and the write gap around each (longest pause between acknowledged writes):");
    let mut gaps = Vec::new();
    for (i, &(at, term, node)) in changes.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(out, "    {:>7.1} s  term {term:<3} node {node}  (first leader)", at as f64 / 1000.0);
            continue;
        }
        let gap = max_gap_ms(&acks, at.saturating_sub(3_000), at + 500);
        if let Some(g) = gap {
            gaps.push(g);
        }
        let g = gap.map_or("-".to_string(), |g| format!("{:.3} s", g as f64 / 1000.0));
        let _ = writeln!(out, "    {:>7.1} s  term {term:<3} node {node}  write gap {g}", at as f64 / 1000.0);
    }
    if let Some((p50, p99, max)) = percentiles(&gaps) {
        let _ = writeln!(
            out,
            "    write gap at leader changes: p50 {p50} ms, p99 {p99} ms, max {max} ms over {}",
            gaps.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_spanning_an_edge_counts_from_the_last_ack_before_it() {
        let acks = [0, 100, 200, 1_500, 1_600];
        assert_eq!(max_gap_ms(&acks, 300, 2_000), Some(1_300));
        assert_eq!(max_gap_ms(&acks, 0, 150), Some(100));
        assert_eq!(max_gap_ms(&[], 0, 10), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentiles(&[5, 1, 3]), Some((3, 5, 5)));
        assert_eq!(percentiles(&[]), None);
    }
}
