//! Checkers run on every simulated run, and the report that gathers their findings.
//!
//! Each checker is a pure function from a recorded history or trace to a list of
//! [`Violation`]s (empty when the property holds). The linearizability checker can also
//! give up within its step budget; that is recorded as *inconclusive*, which is not a pass.
//! A driver calls the checkers it has inputs for and feeds every result into one
//! [`CheckReport`], whose [`CheckReport::summary`] fits on one screen.

pub mod client_oracle;
pub mod linearizability;
pub mod liveness_bounds;
pub mod raft_safety;

use std::collections::BTreeMap;
use std::fmt;

/// Which property a finding is about. The order here is the order of the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    /// The key/value history has a linearization ([`linearizability`]).
    Linearizability,
    /// At most one leader per term ([`raft_safety::check_leader_per_term`]).
    LeaderPerTerm,
    /// Committed entries agree across nodes and times, their terms never decrease with the
    /// index, and a node's commit index only moves back across a restart
    /// ([`raft_safety::check_committed_entries`]).
    CommittedEntries,
    /// After a restart, a node's commit index comes back to where it was
    /// ([`raft_safety::check_commits_recovered`]).
    CommitsRecovered,
    /// Equal applied index implies equal state ([`raft_safety::check_state_machines`]).
    StateMachineAgreement,
    /// Acknowledged writes survive into the final state and the applied stream
    /// ([`client_oracle::check_acknowledged_writes`], [`client_oracle::check_acknowledged_applied`]).
    AcknowledgedWrites,
    /// Every command is applied once, in order, without gaps ([`client_oracle::check_exactly_once`]).
    ExactlyOnce,
    /// Every queued command is eventually answered ([`client_oracle::check_delivery`]).
    QueuedDelivery,
    /// A crashed member is removed in time ([`liveness_bounds::check_crash_removal`]).
    CrashRemoval,
    /// A member heartbeating over a working path is never removed
    /// ([`liveness_bounds::check_false_expiry`]).
    FalseExpiry,
    /// After a heal the cluster commits again in time ([`liveness_bounds::check_progress`]).
    Progress,
    /// A mass silence within the expiry brake's hold raises the alarm and loses nobody
    /// (`analysis::check_mass_silences`).
    ExpiryBrake,
}

impl Checker {
    pub const ALL: [Checker; 12] = [
        Checker::Linearizability,
        Checker::LeaderPerTerm,
        Checker::CommittedEntries,
        Checker::CommitsRecovered,
        Checker::StateMachineAgreement,
        Checker::AcknowledgedWrites,
        Checker::ExactlyOnce,
        Checker::QueuedDelivery,
        Checker::CrashRemoval,
        Checker::FalseExpiry,
        Checker::Progress,
        Checker::ExpiryBrake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Checker::Linearizability => "linearizability",
            Checker::LeaderPerTerm => "leader-per-term",
            Checker::CommittedEntries => "committed-entries",
            Checker::CommitsRecovered => "commits-recovered",
            Checker::StateMachineAgreement => "state-machine-agreement",
            Checker::AcknowledgedWrites => "acknowledged-writes",
            Checker::ExactlyOnce => "exactly-once",
            Checker::QueuedDelivery => "queued-delivery",
            Checker::CrashRemoval => "crash-removal",
            Checker::FalseExpiry => "false-expiry",
            Checker::Progress => "progress",
            Checker::ExpiryBrake => "expiry-brake",
        }
    }
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken property, said in words a reader of a failing run can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    pub detail: String,
}

impl Violation {
    pub fn new(checker: Checker, detail: impl Into<String>) -> Self {
        Violation { checker, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.checker, self.detail)
    }
}

/// The overall verdict of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportStatus {
    /// Every checker that ran found nothing, and none gave up.
    Passed,
    /// No violation, but at least one checker gave up (a step budget ran out).
    Inconclusive,
    /// At least one violation.
    Failed,
}

impl fmt::Display for ReportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportStatus::Passed => "PASSED",
            ReportStatus::Inconclusive => "INCONCLUSIVE",
            ReportStatus::Failed => "FAILED",
        })
    }
}

#[derive(Clone, Debug, Default)]
struct CheckerState {
    violations: usize,
    inconclusive: Vec<String>,
}

/// Results of every checker of one run.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Checkers that ran, with their counts; a checker absent here did not run.
    ran: BTreeMap<Checker, CheckerState>,
    /// All violations, in the order they were recorded.
    violations: Vec<Violation>,
}

/// How many violation details the summary prints before "and N more".
pub const SUMMARY_MAX_DETAILS: usize = 8;
/// How many characters of one detail line the summary prints.
pub const SUMMARY_MAX_DETAIL_CHARS: usize = 300;

impl CheckReport {
    pub fn new() -> Self {
        CheckReport::default()
    }

    /// Records that `checker` ran and found `violations` (possibly none).
    ///
    /// # Panics
    /// If a violation names another checker: that is a bug in the caller.
    pub fn record(&mut self, checker: Checker, violations: impl IntoIterator<Item = Violation>) {
        let state = self.ran.entry(checker).or_default();
        for violation in violations {
            assert_eq!(violation.checker, checker, "a violation of {} recorded as {checker}", violation.checker);
            state.violations += 1;
            self.violations.push(violation);
        }
    }

    /// Records that `checker` ran but could not decide (e.g. a step budget ran out).
    pub fn record_inconclusive(&mut self, checker: Checker, note: impl Into<String>) {
        self.ran.entry(checker).or_default().inconclusive.push(note.into());
    }

    pub fn status(&self) -> ReportStatus {
        if !self.violations.is_empty() {
            ReportStatus::Failed
        } else if self.ran.values().any(|s| !s.inconclusive.is_empty()) {
            ReportStatus::Inconclusive
        } else {
            ReportStatus::Passed
        }
    }

    pub fn passed(&self) -> bool {
        self.status() == ReportStatus::Passed
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn has_run(&self, checker: Checker) -> bool {
        self.ran.contains_key(&checker)
    }

    pub fn violation_count(&self, checker: Checker) -> usize {
        self.ran.get(&checker).map_or(0, |s| s.violations)
    }

    /// Violations per checker, for the checkers that ran (zero counts included).
    pub fn violation_counts(&self) -> BTreeMap<Checker, usize> {
        self.ran.iter().map(|(&checker, s)| (checker, s.violations)).collect()
    }

    /// Notes of the checkers that gave up, in checker order.
    pub fn inconclusive(&self) -> Vec<(Checker, &str)> {
        self.ran.iter().flat_map(|(&c, s)| s.inconclusive.iter().map(move |n| (c, n.as_str()))).collect()
    }

    /// A one-screen summary: the verdict, one line per checker, and the first few findings.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let failing = self.ran.values().filter(|s| s.violations > 0).count();
        let gave_up = self.ran.values().filter(|s| !s.inconclusive.is_empty()).count();
        let _ = writeln!(
            out,
            "checks {}: {} violation(s) in {} of {} checker(s) run; {} inconclusive",
            self.status(),
            self.violations.len(),
            failing,
            self.ran.len(),
            gave_up
        );
        for checker in Checker::ALL {
            let line = match self.ran.get(&checker) {
                None => "not run".to_string(),
                Some(s) if s.violations > 0 => format!("FAIL {}", s.violations),
                Some(s) if !s.inconclusive.is_empty() => "INCONCLUSIVE".to_string(),
                Some(_) => "ok".to_string(),
            };
            let _ = writeln!(out, "  {:<24} {line}", checker.name());
        }
        let findings: Vec<String> = self
            .violations
            .iter()
            .map(ToString::to_string)
            .chain(self.inconclusive().into_iter().map(|(c, note)| format!("[{c}] inconclusive: {note}")))
            .collect();
        for finding in findings.iter().take(SUMMARY_MAX_DETAILS) {
            let _ = writeln!(out, "  - {}", one_line(finding, SUMMARY_MAX_DETAIL_CHARS));
        }
        if findings.len() > SUMMARY_MAX_DETAILS {
            let _ = writeln!(out, "  ... and {} more", findings.len() - SUMMARY_MAX_DETAILS);
        }
        out
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// `text` on one line (line breaks become " | "), cut to `max_chars` characters.
fn one_line(text: &str, max_chars: usize) -> String {
    let joined = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
    if joined.chars().count() <= max_chars {
        return joined;
    }
    let mut cut: String = joined.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_report_passes_and_lists_every_checker_as_not_run() {
        let report = CheckReport::new();
        assert_eq!(report.status(), ReportStatus::Passed);
        let summary = report.summary();
        for checker in Checker::ALL {
            assert!(summary.contains(checker.name()), "{summary}");
        }
        assert_eq!(summary.matches("not run").count(), Checker::ALL.len());
    }

    #[test]
    fn counts_violations_by_checker_and_fails() {
        let mut report = CheckReport::new();
        report.record(Checker::LeaderPerTerm, Vec::new());
        report.record(
            Checker::ExactlyOnce,
            vec![
                Violation::new(Checker::ExactlyOnce, "session-1 seq 2 applied twice"),
                Violation::new(Checker::ExactlyOnce, "session-2 seq 5 applied twice"),
            ],
        );
        report.record(Checker::ExactlyOnce, vec![Violation::new(Checker::ExactlyOnce, "session-3 gap")]);
        assert_eq!(report.status(), ReportStatus::Failed);
        assert!(!report.passed());
        assert_eq!(report.violation_count(Checker::ExactlyOnce), 3);
        assert_eq!(report.violation_count(Checker::LeaderPerTerm), 0);
        assert!(report.has_run(Checker::LeaderPerTerm));
        assert!(!report.has_run(Checker::Progress));
        let counts = report.violation_counts();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&Checker::ExactlyOnce], 3);
        let summary = report.summary();
        assert!(summary.starts_with("checks FAILED: 3 violation(s) in 1 of 2"), "{summary}");
        assert!(summary.contains("exactly-once             FAIL 3"), "{summary}");
        assert!(summary.contains("leader-per-term          ok"), "{summary}");
        assert!(summary.contains("session-2 seq 5 applied twice"), "{summary}");
    }

    #[test]
    fn inconclusive_is_not_a_pass_but_a_violation_wins() {
        let mut report = CheckReport::new();
        report.record_inconclusive(Checker::Linearizability, "gave up on key a");
        assert_eq!(report.status(), ReportStatus::Inconclusive);
        assert!(!report.passed());
        assert!(report.summary().contains("INCONCLUSIVE"));
        report.record(Checker::Progress, vec![Violation::new(Checker::Progress, "no commit")]);
        assert_eq!(report.status(), ReportStatus::Failed);
    }

    #[test]
    fn summary_stays_on_one_screen() {
        let mut report = CheckReport::new();
        let long = "x".repeat(5_000);
        report.record(
            Checker::StateMachineAgreement,
            (0..100).map(|i| Violation::new(Checker::StateMachineAgreement, format!("{i}\n{long}"))),
        );
        let summary = report.summary();
        let lines: Vec<&str> = summary.lines().collect();
        assert!(lines.len() <= 1 + Checker::ALL.len() + SUMMARY_MAX_DETAILS + 1);
        assert!(lines.iter().all(|l| l.chars().count() <= SUMMARY_MAX_DETAIL_CHARS + 40));
        assert!(summary.contains("... and 92 more"), "{summary}");
    }

    #[test]
    #[should_panic(expected = "recorded as")]
    fn recording_under_the_wrong_checker_is_a_bug() {
        let mut report = CheckReport::new();
        report.record(Checker::Progress, vec![Violation::new(Checker::ExactlyOnce, "x")]);
    }
}
