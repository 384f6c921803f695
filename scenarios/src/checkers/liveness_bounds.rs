//! Timing promises: dead members go, live members stay, a healed cluster moves again.
//!
//! - [`check_crash_removal`]: a crashed member is removed within timeout + one check
//!   period (+ slack) once a leader is available.
//! - [`check_false_expiry`]: a member whose heartbeats reach the leader is never removed.
//! - [`check_progress`]: after a heal, something commits within a bound.
//!
//! All times are the simulation's milliseconds. Windows that reach past the end of the
//! trace are not judged: a scenario must leave enough quiet time at its end.

use super::{Checker, Violation};
use roster_kernel::ids::MemberId;
use std::collections::{BTreeMap, BTreeSet};

/// The removal promise's parameters, as configured on the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalBounds {
    /// The heartbeat timeout (`LivenessConfig::timeout_ms`).
    pub timeout_ms: u64,
    /// How often the leader looks for expired members.
    pub check_period_ms: u64,
    /// Room for the removal to travel from the leader's decision to where it is observed
    /// (proposal, replication, commit, apply).
    pub slack_ms: u64,
}

impl RemovalBounds {
    /// How long after a leader is available (and the member dead) its removal may take.
    pub fn allowance_ms(&self) -> u64 {
        self.timeout_ms.saturating_add(self.check_period_ms).saturating_add(self.slack_ms)
    }
}

/// One leader's tenure, from election to loss of leadership (`None`: still leading at the
/// end). Give one tenure per leader and term, even back to back: a new leader grants every
/// member a full timeout of grace, so the clock restarts with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTenure {
    pub from_ms: u64,
    pub until_ms: Option<u64>,
}

/// A member that crashed (stopped heartbeating for good) and when, if ever, its removal
/// was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashedMember {
    pub member: MemberId,
    pub crashed_at_ms: u64,
    pub removed_at_ms: Option<u64>,
}

/// The time by which a member crashed at `crashed_at_ms` must be gone: with the first
/// tenure that, starting from `max(tenure start, crash)`, lasts a whole allowance, that
/// start plus the allowance. `None` if no tenure does so before `trace_end_ms`.
pub fn removal_deadline_ms(
    bounds: &RemovalBounds,
    crashed_at_ms: u64,
    tenures: &[LeaderTenure],
    trace_end_ms: u64,
) -> Option<u64> {
    let mut sorted = tenures.to_vec();
    sorted.sort_by_key(|t| t.from_ms);
    sorted.iter().find_map(|t| {
        let start = t.from_ms.max(crashed_at_ms);
        let deadline = start.saturating_add(bounds.allowance_ms());
        let lasts = t.until_ms.is_none_or(|until| until >= deadline);
        (lasts && deadline <= trace_end_ms).then_some(deadline)
    })
}

/// Every crashed member whose removal deadline ([`removal_deadline_ms`]) falls within the
/// trace was removed by it. Early removals are [`check_false_expiry`]'s business.
pub fn check_crash_removal(
    bounds: &RemovalBounds,
    crashes: &[CrashedMember],
    tenures: &[LeaderTenure],
    trace_end_ms: u64,
) -> Vec<Violation> {
    crashes
        .iter()
        .filter_map(|c| {
            let deadline = removal_deadline_ms(bounds, c.crashed_at_ms, tenures, trace_end_ms)?;
            let outcome = match c.removed_at_ms {
                Some(at) if at <= deadline => return None,
                Some(at) => format!("was removed only at {at} ms"),
                None => "was never removed".to_string(),
            };
            Some(Violation::new(
                Checker::CrashRemoval,
                format!(
                    "{} crashed at {} ms and {outcome}; with a leader available it was due by \
                     {deadline} ms (timeout {} + check period {} + slack {} ms)",
                    c.member, c.crashed_at_ms, bounds.timeout_ms, bounds.check_period_ms, bounds.slack_ms
                ),
            ))
        })
        .collect()
}

/// A heartbeat that reached the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatDelivery {
    pub member: MemberId,
    pub at_ms: u64,
}

/// An observed removal of a member by expiry (not a deregistration or operator delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    pub member: MemberId,
    pub at_ms: u64,
}

/// No member is expired while it was heartbeating. The leader expires a member only when
/// its last heartbeat is more than `timeout_ms` old at the decision, and the decision is at
/// most `slack_ms` before the removal is observed at `R`; so a heartbeat delivered in
/// `[R − timeout_ms, R − slack_ms]` proves the removal false. (With `slack_ms ≥
/// timeout_ms` that window is empty and nothing can be proven.)
pub fn check_false_expiry(
    timeout_ms: u64,
    slack_ms: u64,
    heartbeats: &[HeartbeatDelivery],
    removals: &[Removal],
) -> Vec<Violation> {
    let mut delivered: BTreeMap<MemberId, BTreeSet<u64>> = BTreeMap::new();
    for h in heartbeats {
        delivered.entry(h.member).or_default().insert(h.at_ms);
    }
    removals
        .iter()
        .filter_map(|r| {
            let from = r.at_ms.saturating_sub(timeout_ms);
            let to = r.at_ms.checked_sub(slack_ms)?;
            if from > to {
                return None;
            }
            let last = delivered.get(&r.member)?.range(from..=to).next_back()?;
            Some(Violation::new(
                Checker::FalseExpiry,
                format!(
                    "{} was removed at {} ms although a heartbeat from it reached the leader at \
                     {last} ms, within the {timeout_ms} ms timeout (slack {slack_ms} ms)",
                    r.member, r.at_ms
                ),
            ))
        })
        .collect()
}

/// After each heal at `H`, some entry commits in `[H, H + bound_ms]`. Heals whose window
/// ends after `trace_end_ms` are not judged.
pub fn check_progress(heals_ms: &[u64], commits_ms: &[u64], bound_ms: u64, trace_end_ms: u64) -> Vec<Violation> {
    let commits: BTreeSet<u64> = commits_ms.iter().copied().collect();
    heals_ms
        .iter()
        .filter_map(|&heal| {
            let by = heal.saturating_add(bound_ms);
            if by > trace_end_ms || commits.range(heal..=by).next().is_some() {
                return None;
            }
            let next = match commits.range(heal..).next() {
                Some(at) => format!("the next commit came at {at} ms"),
                None => "nothing committed after it".to_string(),
            };
            Some(Violation::new(
                Checker::Progress,
                format!("no commit within {bound_ms} ms of the heal at {heal} ms: {next}"),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::ids::{ProcessId, ServerId};

    const BOUNDS: RemovalBounds = RemovalBounds { timeout_ms: 3_000, check_period_ms: 500, slack_ms: 200 };

    fn p(id: u64) -> MemberId {
        MemberId::Process(ProcessId(id))
    }

    fn tenure(from_ms: u64, until_ms: Option<u64>) -> LeaderTenure {
        LeaderTenure { from_ms, until_ms }
    }

    fn crash(id: u64, crashed_at_ms: u64, removed_at_ms: Option<u64>) -> CrashedMember {
        CrashedMember { member: p(id), crashed_at_ms, removed_at_ms }
    }

    #[test]
    fn the_deadline_waits_for_a_tenure_that_lasts() {
        let tenures = [tenure(0, Some(2_000)), tenure(2_500, Some(5_000)), tenure(6_000, None)];
        // Stable leader: crash + allowance.
        assert_eq!(removal_deadline_ms(&BOUNDS, 100, &[tenure(0, None)], 100_000), Some(3_800));
        // The first two tenures end too soon; the third starts the clock.
        assert_eq!(removal_deadline_ms(&BOUNDS, 1_000, &tenures, 100_000), Some(9_700));
        // Past the end of the trace: not judged.
        assert_eq!(removal_deadline_ms(&BOUNDS, 1_000, &tenures, 9_699), None);
        assert_eq!(removal_deadline_ms(&BOUNDS, 1_000, &[], 100_000), None);
        // A tenure exactly as long as needed counts.
        assert_eq!(removal_deadline_ms(&BOUNDS, 0, &[tenure(0, Some(3_700))], 100_000), Some(3_700));
    }

    #[test]
    fn timely_removals_pass() {
        let tenures = [tenure(0, Some(2_000)), tenure(2_500, None)];
        let crashes = [
            crash(1, 1_000, Some(6_200)),
            // Never removed, but no leader lasted long enough before the end.
            crash(2, 9_000, None),
        ];
        assert!(check_crash_removal(&BOUNDS, &crashes, &tenures, 10_000).is_empty());
    }

    #[test]
    fn late_or_missing_removals_fail() {
        let tenures = [tenure(0, None)];
        let crashes = [crash(1, 1_000, Some(4_701)), crash(2, 1_000, None)];
        let v = check_crash_removal(&BOUNDS, &crashes, &tenures, 10_000);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.checker == Checker::CrashRemoval));
        assert_eq!(
            v[0].detail,
            "process-1 crashed at 1000 ms and was removed only at 4701 ms; with a leader \
             available it was due by 4700 ms (timeout 3000 + check period 500 + slack 200 ms)"
        );
        assert!(v[1].detail.contains("process-2 crashed at 1000 ms and was never removed"));
    }

    fn hb(id: u64, at_ms: u64) -> HeartbeatDelivery {
        HeartbeatDelivery { member: p(id), at_ms }
    }

    #[test]
    fn removal_after_the_heartbeats_stopped_passes() {
        let heartbeats = [hb(1, 1_000), hb(1, 2_000), hb(2, 9_900)];
        // Last heartbeat at 2000; removal observed at 5200 (decided after 5000).
        let removals = [Removal { member: p(1), at_ms: 5_200 }];
        assert!(check_false_expiry(3_000, 200, &heartbeats, &removals).is_empty());
        // A heartbeat within the slack before the observed removal proves nothing.
        let removals = [Removal { member: p(1), at_ms: 2_150 }];
        assert!(check_false_expiry(3_000, 200, &[hb(1, 2_000)], &removals).is_empty());
    }

    #[test]
    fn removal_of_a_heartbeating_member_fails() {
        let heartbeats = [hb(1, 1_000), hb(1, 2_000), hb(1, 3_000), hb(2, 3_000)];
        let removals = [Removal { member: p(1), at_ms: 3_500 }];
        let v = check_false_expiry(3_000, 200, &heartbeats, &removals);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::FalseExpiry);
        assert_eq!(
            v[0].detail,
            "process-1 was removed at 3500 ms although a heartbeat from it reached the leader \
             at 3000 ms, within the 3000 ms timeout (slack 200 ms)"
        );
        // Exactly `timeout` old is still within it: the leader expires only past it.
        let server = MemberId::Server(ServerId(4));
        let v = check_false_expiry(
            3_000,
            0,
            &[HeartbeatDelivery { member: server, at_ms: 1_000 }],
            &[Removal { member: server, at_ms: 4_000 }],
        );
        assert_eq!(v.len(), 1, "{v:?}");
    }

    /// The etcd failure (issues 15247, 12528): a leader stuck on its disk hears nothing for
    /// a while, and when it comes back judges every member on the stale times and expires
    /// them, although their heartbeats reached it (or were waiting for it) all along.
    #[test]
    fn an_expiry_by_a_leader_back_from_a_stall_is_flagged() {
        // Member 1 heartbeats every second throughout; the leader's disk stalls from 2000
        // to 6000 ms, and right after it the member is removed.
        let heartbeats: Vec<HeartbeatDelivery> = (1..=9).map(|s| hb(1, s * 1_000)).collect();
        let removals = [Removal { member: p(1), at_ms: 6_100 }];
        let v = check_false_expiry(3_000, 200, &heartbeats, &removals);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("reached the leader at 5000 ms"), "{}", v[0].detail);
    }

    #[test]
    fn progress_after_a_heal_passes() {
        assert!(check_progress(&[1_000, 5_000], &[200, 1_800, 5_000], 1_000, 10_000).is_empty());
        // The window runs past the end: not judged.
        assert!(check_progress(&[9_500], &[], 1_000, 10_000).is_empty());
    }

    #[test]
    fn no_commit_after_a_heal_fails() {
        let v = check_progress(&[1_000, 5_000], &[900, 2_001], 1_000, 10_000);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].checker, Checker::Progress);
        assert_eq!(v[0].detail, "no commit within 1000 ms of the heal at 1000 ms: the next commit came at 2001 ms");
        assert_eq!(v[1].detail, "no commit within 1000 ms of the heal at 5000 ms: nothing committed after it");
    }
}
