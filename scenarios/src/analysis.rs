//! From a run's trace to the checkers' inputs, and every checker run on them.
//!
//! Pure: a function of the trace and the bounds only, compiled in every build.

use crate::checkers::client_oracle::{self, CommandRef, QueueEvent, Queued, Write};
use crate::checkers::linearizability::{self, LinearizabilityConfig, Operation, Outcome};
use crate::checkers::liveness_bounds::{self, CrashedMember, HeartbeatDelivery, LeaderTenure, Removal, RemovalBounds};
use crate::checkers::raft_safety::{self, AppliedSample, CommitEvent, CommitObservation, LeaderObservation};
use crate::checkers::{CheckReport, Checker, Violation};
use roster_kernel::{MemberId, ServerId, SessionId};
use roster_sim::trace::{AppliedEvent, CommitSeen, HEARTBEAT_PRECISION_MS, KvCall, KvOp, KvOutput, OpEnd, Trace};
use std::collections::{BTreeMap, BTreeSet};

/// The timing promises a run is judged by.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// The leader's duty loop period (`roster_real::server::leader::TICK_MS`).
    pub check_period_ms: u64,
    /// Room between a leader's decision and the removal being observed.
    pub removal_slack_ms: u64,
    /// After a heal, something commits within this.
    pub progress_ms: u64,
    /// Commands submitted up to this long before the end must have been answered.
    pub delivery_settle_ms: u64,
    /// The sampler's period: a tenure lasts at least until its last sighting plus this.
    pub sample_every_ms: u64,
    /// A leader whose last quorum acknowledgement is older than this (the election
    /// timeout's lower bound) may be cut off or paused: it is not an available leader.
    pub leader_lease_ms: u64,
}

/// Runs every checker on `trace`.
pub fn check(trace: &Trace, bounds: &Bounds) -> CheckReport {
    let mut report = CheckReport::new();
    check_linearizability(trace, &mut report);
    check_raft(trace, &mut report);
    check_clients(trace, bounds, &mut report);
    check_liveness(trace, bounds, &mut report);
    report
}

fn check_linearizability(trace: &Trace, report: &mut CheckReport) {
    let history: Vec<Operation> = trace.kv_ops.iter().filter_map(to_operation).collect();
    match linearizability::check_history(&history, &LinearizabilityConfig::default()) {
        Ok(verdict) => verdict.record(report),
        Err(e) => report.record(
            Checker::Linearizability,
            [Violation::new(Checker::Linearizability, format!("the recorded history is malformed: {e}"))],
        ),
    }
}

/// A recorded operation as the linearizability checker sees it: refused commands and
/// unanswered reads are left out; unanswered commands may have taken effect.
fn to_operation(op: &KvOp) -> Option<Operation> {
    let is_read = matches!(op.call, KvCall::Get);
    let outcome = match &op.end {
        OpEnd::Refused { .. } => return None,
        OpEnd::Pending | OpEnd::Failed { .. } if is_read => return None,
        OpEnd::Pending | OpEnd::Failed { .. } => Outcome::Unknown,
        OpEnd::Returned { at_ms, output } => Outcome::Returned { at_ms: *at_ms, output: output.clone() },
    };
    Some(Operation {
        client: op.client,
        key: op.key.clone(),
        call: op.call.clone(),
        invoked_at_ms: op.invoked_at_ms,
        outcome,
    })
}

fn check_raft(trace: &Trace, report: &mut CheckReport) {
    let leaders: Vec<LeaderObservation> = trace
        .leaders
        .iter()
        .map(|l| LeaderObservation { node: ServerId(l.node), term: l.term, at_ms: l.at_ms })
        .collect();
    report.record(Checker::LeaderPerTerm, raft_safety::check_leader_per_term(&leaders));
    let commits: Vec<CommitObservation> = trace
        .commits
        .iter()
        .map(|c| CommitObservation {
            node: ServerId(c.node),
            at_ms: c.at_ms,
            event: match c.event {
                CommitSeen::Committed { index, term, entry_hash } => CommitEvent::Committed { index, term, entry_hash },
                CommitSeen::Restarted => CommitEvent::Restarted,
            },
        })
        .collect();
    report.record(Checker::CommittedEntries, raft_safety::check_committed_entries(&commits));
    let mut recovered = raft_safety::check_commits_recovered(&commits);
    recovered.extend(trace.start_failures.iter().map(|f| Violation::new(Checker::CommitsRecovered, f.clone())));
    report.record(Checker::CommitsRecovered, recovered);
    let samples: Vec<AppliedSample> = trace
        .applied
        .iter()
        .map(|a| AppliedSample {
            node: ServerId(a.node),
            at_ms: a.at_ms,
            applied_index: a.applied_index,
            state_hash: a.state_hash,
        })
        .collect();
    let mut agreement = raft_safety::check_state_machines(&samples);
    agreement.extend(
        trace
            .event_conflicts
            .iter()
            .map(|c| Violation::new(Checker::StateMachineAgreement, format!("nodes applied different events at {c}"))),
    );
    report.record(Checker::StateMachineAgreement, agreement);
}

/// The command a unique value `c<client>-<seq>` was written by.
fn parse_value(value: &str) -> Option<(u64, u64)> {
    let (client, seq) = value.strip_prefix('c')?.split_once('-')?;
    Some((client.parse().ok()?, seq.parse().ok()?))
}

fn command_ref(client: u64, seq: u64) -> CommandRef {
    CommandRef { session: SessionId(client), seq }
}

/// What a command wrote, if it wrote: `Some(value)` sets, `Some(None)` deletes.
fn written(op: &KvOp) -> Option<Option<String>> {
    match (&op.call, &op.end) {
        (KvCall::Put { value }, _) => Some(Some(value.clone())),
        (KvCall::Delete, _) => Some(None),
        (KvCall::Cas { new, .. }, OpEnd::Returned { output: KvOutput::Cas { swapped: true, .. }, .. }) => {
            Some(new.clone())
        }
        (KvCall::Cas { .. }, OpEnd::Returned { .. }) => None,
        (KvCall::Cas { new, .. }, _) => Some(new.clone()),
        (KvCall::Get, _) => None,
    }
}

fn check_clients(trace: &Trace, bounds: &Bounds, report: &mut CheckReport) {
    let mut acknowledged = Vec::new();
    let mut unconfirmed = Vec::new();
    for op in &trace.kv_ops {
        let (Some(seq), Some(value)) = (op.command_seq, written(op)) else { continue };
        let write = Write { command: command_ref(op.client, seq), key: op.key.clone(), value };
        match op.end {
            OpEnd::Returned { .. } => acknowledged.push(write),
            OpEnd::Pending | OpEnd::Failed { .. } => unconfirmed.push(write),
            OpEnd::Refused { .. } => {}
        }
    }
    let mut violations = client_oracle::check_acknowledged_writes(&acknowledged, &unconfirmed, &trace.final_kv);

    // The applied stream as far as unique values show it: puts, and compare-and-sets that
    // swapped in a value. Each client's visible commands are renumbered 1, 2, … so the
    // exactly-once checker sees no gap where a delete or a failed swap left no value.
    let mut visible: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut count: BTreeMap<u64, u64> = BTreeMap::new();
    let mut acknowledged_visible = Vec::new();
    for op in &trace.kv_ops {
        let Some(seq) = op.command_seq else { continue };
        let shows = match (&op.call, &op.end) {
            (_, OpEnd::Refused { .. }) => false,
            (KvCall::Put { .. }, _) => true,
            (KvCall::Cas { new: Some(_), .. }, OpEnd::Returned { output: KvOutput::Cas { swapped, .. }, .. }) => {
                *swapped
            }
            _ => false,
        };
        if shows {
            let n = count.entry(op.client).or_default();
            *n += 1;
            visible.insert((op.client, seq), *n);
            if matches!(op.end, OpEnd::Returned { .. }) {
                acknowledged_visible.push(command_ref(op.client, *n));
            }
        }
    }
    let applied: Vec<CommandRef> = trace
        .events
        .values()
        .filter_map(|e| match &e.event {
            AppliedEvent::KvPut { value, .. } => parse_value(value),
            _ => None,
        })
        .filter_map(|(client, seq)| visible.get(&(client, seq)).map(|n| command_ref(client, *n)))
        .collect();
    violations.extend(client_oracle::check_acknowledged_applied(&acknowledged_visible, &applied));
    report.record(Checker::AcknowledgedWrites, violations);
    report.record(Checker::ExactlyOnce, client_oracle::check_exactly_once(&applied));

    let mut submitted = Vec::new();
    let mut completed = Vec::new();
    for op in &trace.kv_ops {
        let Some(queue_seq) = op.queue_seq else { continue };
        let command = Queued { client: op.client, queue_seq };
        submitted.push(QueueEvent { command, at_ms: op.invoked_at_ms });
        if let OpEnd::Returned { at_ms, .. } | OpEnd::Refused { at_ms, .. } = op.end {
            completed.push(QueueEvent { command, at_ms });
        }
    }
    let required_by = trace.end_ms.saturating_sub(bounds.delivery_settle_ms);
    report.record(Checker::QueuedDelivery, client_oracle::check_delivery(&submitted, &completed, required_by));
}

/// Tenures of available leaders: runs of consecutive sightings of one (leader, term) with
/// a quorum acknowledgement within the lease. A cut-off or paused leader still calls itself
/// leader, but nobody can reach it through Raft, so its sightings end the run. A run seen
/// in the last samples of the trace is taken to go on.
fn tenures(trace: &Trace, bounds: &Bounds) -> Vec<LeaderTenure> {
    // (term, node) -> runs of (first, last) sighting
    let mut runs: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    let gap_ms = 2 * bounds.sample_every_ms;
    for l in &trace.leaders {
        let available = l.quorum_ack_age_ms.is_some_and(|age| age < bounds.leader_lease_ms);
        if !available {
            continue;
        }
        let list = runs.entry((l.term, l.node)).or_default();
        match list.last_mut() {
            Some(run) if l.at_ms <= run.1 + gap_ms => run.1 = l.at_ms,
            _ => list.push((l.at_ms, l.at_ms)),
        }
    }
    let last_sample = trace.leaders.iter().map(|l| l.at_ms).max().unwrap_or(0);
    runs.values()
        .flatten()
        .map(|&(from, last)| LeaderTenure {
            from_ms: from,
            until_ms: (last + gap_ms < last_sample.max(trace.end_ms.saturating_sub(100)))
                .then_some(last + bounds.sample_every_ms),
        })
        .collect()
}

fn check_liveness(trace: &Trace, bounds: &Bounds, report: &mut CheckReport) {
    // Removals when they were observed (for crash removal) and when the leader decided
    // them (for false expiry: the decision may wait long for its commit on a slow network).
    let removals: Vec<Removal> = trace
        .events
        .values()
        .filter_map(|e| match e.event {
            AppliedEvent::Expired { member, .. } => Some(Removal { member, at_ms: e.at_ms }),
            _ => None,
        })
        .collect();
    let decisions: Vec<Removal> = trace
        .events
        .values()
        .filter_map(|e| match e.event {
            AppliedEvent::Expired { member, decided_unix_ms } => {
                Some(Removal { member, at_ms: decided_unix_ms.saturating_sub(trace.origin_unix_ms) })
            }
            _ => None,
        })
        .collect();
    let first_removal = |member: MemberId, after_ms: u64| {
        removals.iter().filter(|r| r.member == member && r.at_ms >= after_ms).map(|r| r.at_ms).min()
    };
    let removal_bounds = RemovalBounds {
        timeout_ms: bounds.heartbeat_timeout_ms,
        check_period_ms: bounds.check_period_ms,
        slack_ms: bounds.removal_slack_ms,
    };
    let tenures = tenures(trace, bounds);
    let mut crash_violations = Vec::new();
    for c in &trace.crashes {
        let crashed =
            CrashedMember { member: c.member, crashed_at_ms: c.at_ms, removed_at_ms: first_removal(c.member, c.at_ms) };
        let end = c.revived_at_ms.unwrap_or(trace.end_ms).min(trace.end_ms);
        crash_violations.extend(liveness_bounds::check_crash_removal(&removal_bounds, &[crashed], &tenures, end));
    }
    report.record(Checker::CrashRemoval, crash_violations);

    let heartbeats: Vec<HeartbeatDelivery> =
        trace.heartbeats.iter().map(|h| HeartbeatDelivery { member: h.member, at_ms: h.at_ms }).collect();
    // A recorded heartbeat reached the leader within HEARTBEAT_PRECISION_MS before its
    // record: shrinking the window by as much keeps every finding sound.
    // At its decision the leader had heard nothing for a whole timeout: a heartbeat it
    // answered within the timeout before the decision proves the removal false. Slack 0:
    // the decision time is the leader's own.
    let mut false_expiry = liveness_bounds::check_false_expiry(
        bounds.heartbeat_timeout_ms.saturating_sub(HEARTBEAT_PRECISION_MS),
        0,
        &heartbeats,
        &decisions,
    );
    false_expiry.extend(check_short_silences(trace, bounds, &heartbeats, &decisions));
    report.record(Checker::FalseExpiry, false_expiry);
    report.record(Checker::ExpiryBrake, check_mass_silences(trace, bounds, &heartbeats, &decisions));

    report.record(
        Checker::Progress,
        liveness_bounds::check_progress(&trace.heals_ms, &trace.commit_times_ms, bounds.progress_ms, trace.end_ms),
    );
}

/// A mass silence (`MassSilence`: more than a third of the members, silent together for
/// less than the timeout + the brake's hold) raises the brake's alarm while it lasts (or
/// within half a second after), and none of its members healthy right before and right
/// after, whose silence as the leader heard it was under the timeout + the hold, is
/// expired for it.
fn check_mass_silences(
    trace: &Trace,
    bounds: &Bounds,
    heartbeats: &[HeartbeatDelivery],
    removals: &[Removal],
) -> Vec<Violation> {
    let hold_ms = roster_kernel::ExpiryGuardConfig::default().brake_hold_ms;
    let mut by_member: BTreeMap<MemberId, BTreeSet<u64>> = BTreeMap::new();
    for h in heartbeats {
        by_member.entry(h.member).or_default().insert(h.at_ms);
    }
    let reach = bounds.heartbeat_interval_ms + HEARTBEAT_PRECISION_MS;
    let mut violations = Vec::new();
    for s in &trace.mass_silences {
        let alarm_until_ms = s.until_ms + 500;
        if !trace.brake_seen_ms.iter().any(|at| (s.from_ms..=alarm_until_ms).contains(at))
            && alarm_until_ms <= trace.end_ms
        {
            violations.push(Violation::new(
                Checker::ExpiryBrake,
                format!(
                    "{} members were silent together from {} to {} ms, and no leader was seen with the expiry \
                     brake's alarm on by {alarm_until_ms} ms",
                    s.members.len(),
                    s.from_ms,
                    s.until_ms
                ),
            ));
        }
        for member in &s.members {
            let Some(beats) = by_member.get(member) else { continue };
            let (Some(&before), Some(&after)) =
                (beats.range(..=s.from_ms).next_back(), beats.range(s.until_ms..).next())
            else {
                continue;
            };
            let healthy = before + reach >= s.from_ms && after <= s.until_ms + reach;
            let gap = after - before + HEARTBEAT_PRECISION_MS;
            if !healthy || gap >= bounds.heartbeat_timeout_ms + hold_ms {
                continue;
            }
            if let Some(r) = removals.iter().find(|r| r.member == *member && r.at_ms >= before && r.at_ms <= after) {
                violations.push(Violation::new(
                    Checker::ExpiryBrake,
                    format!(
                        "{member} was expired at {} ms although it was silent only from {before} to {after} ms, \
                         with {} members together ({}..{} ms): under the {} ms timeout + the brake's {hold_ms} ms",
                        r.at_ms,
                        s.members.len(),
                        s.from_ms,
                        s.until_ms,
                        bounds.heartbeat_timeout_ms
                    ),
                ));
            }
        }
    }
    violations
}

/// A member paused for less than the timeout, healthy right before and right after, must
/// not be expired around its pause: no leader heard it silent for a whole timeout.
fn check_short_silences(
    trace: &Trace,
    bounds: &Bounds,
    heartbeats: &[HeartbeatDelivery],
    removals: &[Removal],
) -> Vec<Violation> {
    let mut by_member: BTreeMap<MemberId, BTreeSet<u64>> = BTreeMap::new();
    for h in heartbeats {
        by_member.entry(h.member).or_default().insert(h.at_ms);
    }
    let reach = bounds.heartbeat_interval_ms + HEARTBEAT_PRECISION_MS;
    let mut violations = Vec::new();
    for s in &trace.short_silences {
        let Some(beats) = by_member.get(&s.member) else { continue };
        let (Some(&before), Some(&after)) = (beats.range(..=s.from_ms).next_back(), beats.range(s.until_ms..).next())
        else {
            continue;
        };
        let healthy = before + reach >= s.from_ms && after <= s.until_ms + reach;
        let gap = after - before + HEARTBEAT_PRECISION_MS;
        if !healthy || gap >= bounds.heartbeat_timeout_ms {
            continue;
        }
        if let Some(r) = removals.iter().find(|r| r.member == s.member && r.at_ms >= before && r.at_ms <= after) {
            violations.push(Violation::new(
                Checker::FalseExpiry,
                format!(
                    "{} was expired at {} ms although it was silent only from {before} to {after} ms \
                     (paused {}..{} ms), under the {} ms timeout",
                    s.member, r.at_ms, s.from_ms, s.until_ms, bounds.heartbeat_timeout_ms
                ),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::ProcessId;
    use roster_sim::trace::{CrashRec, HeartbeatRec, LeaderSeen, ShortSilence};

    const BOUNDS: Bounds = Bounds {
        heartbeat_interval_ms: 1_000,
        heartbeat_timeout_ms: 3_000,
        check_period_ms: 50,
        removal_slack_ms: 1_000,
        progress_ms: 5_000,
        delivery_settle_ms: 5_000,
        sample_every_ms: 20,
        leader_lease_ms: 400,
    };

    fn op(client: u64, seq: u64, call: KvCall, invoked: u64, end: OpEnd) -> KvOp {
        KvOp {
            client,
            command_seq: (!matches!(call, KvCall::Get)).then_some(seq),
            queue_seq: (!matches!(call, KvCall::Get)).then_some(seq),
            key: "k".into(),
            call,
            invoked_at_ms: invoked,
            end,
        }
    }

    fn put(v: &str) -> KvCall {
        KvCall::Put { value: v.into() }
    }

    fn done(at_ms: u64) -> OpEnd {
        OpEnd::Returned { at_ms, output: KvOutput::Done }
    }

    #[test]
    fn a_stale_read_and_a_lost_write_are_found() {
        let mut t = Trace::new();
        t.record_op_invoked(op(1, 1, put("c1-1"), 0, done(10)));
        t.record_op_invoked(op(2, 0, KvCall::Get, 20, OpEnd::Returned { at_ms: 30, output: KvOutput::Value(None) }));
        t.record_end(100, BTreeMap::new(), 5);
        let report = check(&t, &BOUNDS);
        assert_eq!(report.violation_count(Checker::Linearizability), 1, "{report}");
        assert_eq!(report.violation_count(Checker::AcknowledgedWrites), 2, "{report}");
    }

    #[test]
    fn a_write_applied_twice_is_found_and_a_clean_history_passes() {
        let mut t = Trace::new();
        t.record_op_invoked(op(1, 1, put("c1-1"), 0, done(10)));
        t.record_op_invoked(op(1, 2, KvCall::Delete, 11, done(20)));
        t.record_op_invoked(op(1, 3, put("c1-3"), 21, done(30)));
        let ev = |v: &str| AppliedEvent::KvPut { key: "k".into(), value: v.into() };
        t.record_event(1, 0, ev("c1-1"), 1, 10);
        t.record_event(2, 0, AppliedEvent::KvDeleted { key: "k".into() }, 1, 20);
        t.record_event(3, 0, ev("c1-3"), 1, 30);
        let mut kv = BTreeMap::new();
        kv.insert("k".to_string(), "c1-3".to_string());
        let mut clean = t.clone();
        clean.record_end(100, kv.clone(), 3);
        let report = check(&clean, &BOUNDS);
        assert!(report.passed(), "{report}");
        t.record_event(4, 0, ev("c1-1"), 2, 40);
        t.record_end(100, kv, 4);
        let report = check(&t, &BOUNDS);
        assert_eq!(report.violation_count(Checker::ExactlyOnce), 1, "{report}");
    }

    #[test]
    fn a_crashed_process_must_go_and_a_beating_one_must_stay() {
        let member = MemberId::Process(ProcessId(7));
        let mut t = Trace::new();
        for at in (0..=10_000).step_by(20) {
            t.record_leader(LeaderSeen { node: 1, term: 2, at_ms: at, quorum_ack_age_ms: Some(30) });
        }
        for at in (100..=2_100).step_by(1_000) {
            t.record_heartbeat(HeartbeatRec { member, at_ms: at });
        }
        t.record_crash(CrashRec { member, at_ms: 2_200, revived_at_ms: None });
        t.record_end(10_000, BTreeMap::new(), 0);
        assert_eq!(check(&t, &BOUNDS).violation_count(Checker::CrashRemoval), 1, "never removed");
        let mut early = t.clone();
        early.record_event(1, 0, AppliedEvent::Expired { member, decided_unix_ms: 3_400 }, 1, 3_500);
        let report = check(&early, &BOUNDS);
        assert_eq!(report.violation_count(Checker::FalseExpiry), 1, "{report}");
        assert_eq!(report.violation_count(Checker::CrashRemoval), 0, "{report}");
        let mut on_time = t;
        on_time.record_event(1, 0, AppliedEvent::Expired { member, decided_unix_ms: 5_300 }, 1, 5_400);
        assert!(check(&on_time, &BOUNDS).passed(), "{}", check(&on_time, &BOUNDS));
    }

    #[test]
    fn a_member_paused_under_the_timeout_must_not_be_expired() {
        let member = MemberId::Process(ProcessId(3));
        let mut t = Trace::new();
        for at in [1_000, 2_000, 3_000, 4_600, 5_600] {
            t.record_heartbeat(HeartbeatRec { member, at_ms: at });
        }
        t.record_short_silence(ShortSilence { member, from_ms: 3_100, until_ms: 4_500 });
        t.record_end(10_000, BTreeMap::new(), 0);
        assert!(check(&t, &BOUNDS).passed(), "{}", check(&t, &BOUNDS));
        // Removed while paused: the heartbeat at 3 000 ms proves it (plain check), and so
        // does the pause, which was shorter than the timeout (pause check).
        t.record_event(1, 0, AppliedEvent::Expired { member, decided_unix_ms: 4_250 }, 1, 4_300);
        let report = check(&t, &BOUNDS);
        assert_eq!(report.violation_count(Checker::FalseExpiry), 2, "{report}");
        assert!(report.violations().iter().any(|v| v.detail.contains("paused 3100..4500")), "{report}");
    }
}
