//! What clients were promised, checked against what the cluster did.
//!
//! - [`check_acknowledged_writes`]: every acknowledged write is present in the final state
//!   (or was overwritten by a write that could have come after it).
//! - [`check_acknowledged_applied`]: every acknowledged command is in the applied stream.
//! - [`check_exactly_once`]: the applied stream applies each (session, seq) once, in order,
//!   without gaps — however often the client retried.
//! - [`check_delivery`]: every command a client queued (for instance while the cluster was
//!   unreachable) was eventually answered, in queue order.

use super::{Checker, Violation};
use roster_kernel::ids::SessionId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One command of a session: what exactly-once is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandRef {
    pub session: SessionId,
    pub seq: u64,
}

impl fmt::Display for CommandRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.session, self.seq)
    }
}

/// The effect of a write on one key: `value` `None` deletes it.
///
/// From the kernel's commands: `KvPut` sets, `KvDelete` deletes, a `KvCas` that swapped
/// sets its `new`; a `KvCas` that did not swap, and a command refused with an error,
/// wrote nothing and are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub command: CommandRef,
    pub key: String,
    pub value: Option<String>,
}

/// Every acknowledged write is present in `final_state`, unless something could have
/// overwritten it. Precisely, keys start absent, and for each key the final value (absent
/// counts as a value) must be one of these candidates:
/// - for each session with acknowledged writes to the key, its last one (highest seq):
///   a session's commands apply in seq order, so its earlier writes are surely
///   overwritten, but its last could be the last of all;
/// - each `unconfirmed` write (sent, never answered: may or may not have applied) to the
///   key whose seq is above every acknowledged seq of its session on that key (a lower one
///   applied, if at all, before that session's acknowledged write);
/// - absent, if no write to the key was acknowledged.
///
/// A key that holds a value nobody wrote is reported too. This is a necessary condition:
/// the order *across* sessions is the linearizability checker's business.
pub fn check_acknowledged_writes(
    acknowledged: &[Write],
    unconfirmed: &[Write],
    final_state: &BTreeMap<String, String>,
) -> Vec<Violation> {
    // key -> session -> last acknowledged (seq, value)
    let mut last_acked: BTreeMap<&str, BTreeMap<SessionId, (u64, &Option<String>)>> = BTreeMap::new();
    for w in acknowledged {
        let sessions = last_acked.entry(w.key.as_str()).or_default();
        let entry = sessions.entry(w.command.session).or_insert((w.command.seq, &w.value));
        if w.command.seq >= entry.0 {
            *entry = (w.command.seq, &w.value);
        }
    }
    let keys: BTreeSet<&str> = last_acked
        .keys()
        .copied()
        .chain(unconfirmed.iter().map(|w| w.key.as_str()))
        .chain(final_state.keys().map(String::as_str))
        .collect();
    let mut violations = Vec::new();
    for key in keys {
        let found = final_state.get(key).cloned();
        let sessions = last_acked.get(key);
        let mut candidates: BTreeSet<Option<String>> = BTreeSet::new();
        if let Some(sessions) = sessions {
            candidates.extend(sessions.values().map(|(_, v)| (*v).clone()));
        } else {
            candidates.insert(None);
        }
        for w in unconfirmed.iter().filter(|w| w.key == key) {
            let superseded = sessions
                .and_then(|s| s.get(&w.command.session))
                .is_some_and(|&(acked_seq, _)| w.command.seq < acked_seq);
            if !superseded {
                candidates.insert(w.value.clone());
            }
        }
        if candidates.contains(&found) {
            continue;
        }
        let detail = match sessions {
            Some(sessions) => {
                let writes = sessions
                    .iter()
                    .map(|(session, (seq, value))| format!("{session}#{seq} wrote {value:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "key {key:?} ends as {found:?}, but the last acknowledged writes to it were: \
                     {writes} (and no unconfirmed write could explain it): a write was lost"
                )
            }
            None => format!(
                "key {key:?} ends as {found:?}, a value no acknowledged or unconfirmed write \
                 set"
            ),
        };
        violations.push(Violation::new(Checker::AcknowledgedWrites, detail));
    }
    violations
}

/// Every acknowledged command appears in the applied stream (the commands the state
/// machine applied, in apply order).
pub fn check_acknowledged_applied(acknowledged: &[CommandRef], applied: &[CommandRef]) -> Vec<Violation> {
    let applied: BTreeSet<CommandRef> = applied.iter().copied().collect();
    let missing: BTreeSet<CommandRef> = acknowledged.iter().copied().filter(|c| !applied.contains(c)).collect();
    missing
        .into_iter()
        .map(|c| {
            Violation::new(Checker::AcknowledgedWrites, format!("{c} was acknowledged to its client but never applied"))
        })
        .collect()
}

/// The applied stream — every command the state machine *executed* (not the duplicates
/// it answered from its session table, not the ones it refused as stale or out of
/// sequence), in apply order, from the cluster's start — applies each session's
/// commands exactly once: seq 1, 2, 3, … with no repeat and no gap. Reported per session:
/// each repeat (a command applied twice), and each gap (commands skipped).
pub fn check_exactly_once(applied: &[CommandRef]) -> Vec<Violation> {
    let mut next: BTreeMap<SessionId, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for (position, c) in applied.iter().enumerate() {
        let expected = next.entry(c.session).or_insert(1);
        if c.seq < *expected {
            violations.push(Violation::new(
                Checker::ExactlyOnce,
                format!(
                    "{c} applied again at position {position} of the applied stream \
                     (the session was already at {})",
                    *expected - 1
                ),
            ));
        } else {
            if c.seq > *expected {
                violations.push(Violation::new(
                    Checker::ExactlyOnce,
                    format!(
                        "{c} applied at position {position} with seq {}..={} never applied \
                         before it",
                        *expected,
                        c.seq - 1
                    ),
                ));
            }
            *expected = c.seq + 1;
        }
    }
    violations
}

/// A command a client queued, identified by the client and its queue sequence number
/// (the kernel's `RetryQueue::submit` result; 1, 2, 3, … per client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Queued {
    pub client: u64,
    pub queue_seq: u64,
}

impl fmt::Display for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} command {}", self.client, self.queue_seq)
    }
}

/// A queued command was submitted (accepted by the queue, not refused as full) or
/// completed (answered: a reply or a refusal) at `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueEvent {
    pub command: Queued,
    pub at_ms: u64,
}

/// Every command submitted at or before `required_by_ms` is completed by the end of the
/// trace (queued commands survive unreachable clusters and leader changes); no command
/// completes twice, before its submission, or without one; and each client's commands
/// complete in queue order (the queue is stop-and-wait). Choose `required_by_ms` as the
/// trace's end minus a settle period long enough for the last submissions to get through
/// a healed cluster.
pub fn check_delivery(submitted: &[QueueEvent], completed: &[QueueEvent], required_by_ms: u64) -> Vec<Violation> {
    let mut violations = Vec::new();
    let v = |detail: String| Violation::new(Checker::QueuedDelivery, detail);
    let mut submitted_at: BTreeMap<Queued, u64> = BTreeMap::new();
    for s in submitted {
        if submitted_at.insert(s.command, s.at_ms).is_some() {
            violations.push(v(format!("{} submitted twice", s.command)));
        }
    }
    let mut completed_at: BTreeMap<Queued, u64> = BTreeMap::new();
    let mut last_completed: BTreeMap<u64, u64> = BTreeMap::new();
    for c in completed {
        let q = c.command;
        if let Some(&first) = completed_at.get(&q) {
            violations.push(v(format!("{q} completed twice (at {first} ms and {} ms)", c.at_ms)));
            continue;
        }
        completed_at.insert(q, c.at_ms);
        match submitted_at.get(&q) {
            None => violations.push(v(format!("{q} completed at {} ms but was never submitted", c.at_ms))),
            Some(&at) if c.at_ms < at => {
                violations.push(v(format!("{q} completed at {} ms, before its submission at {at} ms", c.at_ms)))
            }
            Some(_) => {}
        }
        if let Some(&before) = last_completed.get(&q.client)
            && q.queue_seq < before
        {
            violations.push(v(format!(
                "{q} completed at {} ms after command {before} of the same client: out of \
                 queue order",
                c.at_ms
            )));
        }
        let last = last_completed.entry(q.client).or_insert(q.queue_seq);
        *last = (*last).max(q.queue_seq);
    }
    for (q, &at) in &submitted_at {
        if at <= required_by_ms && !completed_at.contains_key(q) {
            violations.push(v(format!("{q} submitted at {at} ms was never completed")));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(session: u64, seq: u64) -> CommandRef {
        CommandRef { session: SessionId(session), seq }
    }

    fn w(session: u64, seq: u64, key: &str, value: Option<&str>) -> Write {
        Write { command: c(session, seq), key: key.to_string(), value: value.map(str::to_string) }
    }

    fn state(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn acknowledged_writes_present_or_plausibly_overwritten_pass() {
        let acked = [
            w(1, 1, "a", Some("1")),
            w(1, 2, "a", Some("2")),
            w(2, 1, "a", Some("x")),
            w(1, 3, "b", Some("b1")),
            w(2, 2, "gone", Some("g")),
            w(2, 3, "gone", None),
        ];
        let unconfirmed = [w(3, 1, "c", Some("maybe")), w(3, 2, "d", Some("maybe"))];
        // "a": session 1's last (2) or session 2's (x); "c" applied, "d" did not.
        assert!(
            check_acknowledged_writes(&acked, &unconfirmed, &state(&[("a", "2"), ("b", "b1"), ("c", "maybe")]))
                .is_empty()
        );
        assert!(check_acknowledged_writes(&acked, &unconfirmed, &state(&[("a", "x"), ("b", "b1")])).is_empty());
        // An unconfirmed later write of session 1 may have overwritten its acknowledged one.
        let later = [w(1, 4, "b", None)];
        assert!(check_acknowledged_writes(&acked, &later, &state(&[("a", "2")])).is_empty());
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let acked = [w(1, 1, "a", Some("1")), w(1, 2, "a", Some("2")), w(1, 3, "b", Some("b"))];
        // An unconfirmed write *before* the acknowledged one cannot explain an old value.
        let unconfirmed = [w(1, 1, "a", Some("1"))];
        let v = check_acknowledged_writes(&acked, &unconfirmed, &state(&[("a", "1")]));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.checker == Checker::AcknowledgedWrites));
        assert_eq!(
            v[0].detail,
            "key \"a\" ends as Some(\"1\"), but the last acknowledged writes to it were: \
             session-1#2 wrote Some(\"2\") (and no unconfirmed write could explain it): a \
             write was lost"
        );
        assert!(v[1].detail.starts_with("key \"b\" ends as None"), "{v:?}");
    }

    #[test]
    fn a_value_nobody_wrote_fails() {
        let v = check_acknowledged_writes(&[], &[w(1, 1, "a", Some("1"))], &state(&[("a", "2")]));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].detail, "key \"a\" ends as Some(\"2\"), a value no acknowledged or unconfirmed write set");
        assert!(check_acknowledged_writes(&[], &[w(1, 1, "a", Some("1"))], &state(&[])).is_empty());
    }

    #[test]
    fn acknowledged_but_never_applied_fails() {
        let applied = [c(1, 1), c(1, 2)];
        assert!(check_acknowledged_applied(&[c(1, 2)], &applied).is_empty());
        let v = check_acknowledged_applied(&[c(1, 2), c(1, 3), c(1, 3)], &applied);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].detail, "session-1#3 was acknowledged to its client but never applied");
    }

    #[test]
    fn in_order_gap_free_streams_pass() {
        let applied = [c(1, 1), c(2, 1), c(1, 2), c(2, 2), c(1, 3)];
        assert!(check_exactly_once(&applied).is_empty());
        assert!(check_exactly_once(&[]).is_empty());
    }

    #[test]
    fn a_retry_applied_twice_fails() {
        let v = check_exactly_once(&[c(1, 1), c(1, 2), c(1, 2), c(1, 3)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::ExactlyOnce);
        assert_eq!(
            v[0].detail,
            "session-1#2 applied again at position 2 of the applied stream (the session was \
             already at 2)"
        );
    }

    #[test]
    fn a_gap_fails() {
        let v = check_exactly_once(&[c(7, 1), c(7, 4), c(7, 5), c(8, 2)]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].detail, "session-7#4 applied at position 1 with seq 2..=3 never applied before it");
        assert!(v[1].detail.starts_with("session-8#2"), "{v:?}");
    }

    fn q(client: u64, queue_seq: u64, at_ms: u64) -> QueueEvent {
        QueueEvent { command: Queued { client, queue_seq }, at_ms }
    }

    #[test]
    fn commands_queued_during_an_outage_delivered_later_pass() {
        let submitted = [q(1, 1, 100), q(1, 2, 110), q(2, 1, 120), q(1, 3, 990)];
        let completed = [q(1, 1, 500), q(2, 1, 505), q(1, 2, 510)];
        // Command 3 was submitted inside the settle period: not required.
        assert!(check_delivery(&submitted, &completed, 900).is_empty());
    }

    #[test]
    fn an_undelivered_queued_command_fails() {
        let submitted = [q(1, 1, 100), q(1, 2, 110)];
        let completed = [q(1, 1, 500)];
        let v = check_delivery(&submitted, &completed, 900);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, Checker::QueuedDelivery);
        assert_eq!(v[0].detail, "client 1 command 2 submitted at 110 ms was never completed");
    }

    #[test]
    fn completions_out_of_order_twice_early_or_unsubmitted_fail() {
        let submitted = [q(1, 1, 100), q(1, 2, 110)];
        let completed = [q(1, 2, 200), q(1, 1, 50), q(1, 2, 210), q(9, 1, 300)];
        let v = check_delivery(&submitted, &completed, 900);
        let details: Vec<&str> = v.iter().map(|v| v.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "client 1 command 1 completed at 50 ms, before its submission at 100 ms",
                "client 1 command 1 completed at 50 ms after command 2 of the same client: out \
                 of queue order",
                "client 1 command 2 completed twice (at 200 ms and 210 ms)",
                "client 9 command 1 completed at 300 ms but was never submitted",
            ]
        );
    }
}
