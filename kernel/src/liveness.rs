//! Heartbeat timeouts, judged by the leader on its own clock.
//!
//! Heartbeats are leader soft state (as in Consul, Nomad and etcd leases): the leader
//! notes when *it* received each heartbeat, in the `now_ms` its driver supplies, and never
//! looks at a reporter's timestamp. A member silent for longer than `timeout_ms` is
//! reported by [`Liveness::poll_expired`]; the leader then proposes its removal through
//! Raft, so membership transitions are in the log and heartbeats are not.
//!
//! A new leader knows nothing about when members were last heard, so
//! [`Liveness::handle_became_leader`] gives every member a full timeout of grace from the
//! moment of election (Zeppelin judged everyone on stale times after a leader change).
//!
//! Cost: a heartbeat is O(log n) (one map lookup, one index removal, one insertion);
//! finding the next deadline is O(log n); expiring k members is O(k log n). The deadline
//! index is a `BTreeSet<(deadline_ms, MemberId)>`, so order (and thus every output) is
//! deterministic.
//!
//! Driver loop on the leader:
//!
//! ```text
//! on heartbeat from m:      liveness.handle_heartbeat(now, m)
//! on register applied:      liveness.handle_member_added(now, m)
//! on removal applied:       liveness.handle_member_removed(m)
//! at poll_timeout():        propose Expire { members: liveness.poll_expired(now) }
//! ```

use crate::ids::{MemberId, ServerId};
use std::collections::{BTreeMap, BTreeSet};

/// How often members heartbeat and how long the leader waits before expiring one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig { interval_ms: 1_000, timeout_ms: 3_000 }
    }
}

/// A timeout must cover at least this many heartbeat intervals, so that two lost or
/// delayed heartbeats in a row do not remove a live member.
pub const MIN_INTERVALS_PER_TIMEOUT: u64 = 3;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LivenessConfigError {
    #[error("heartbeat interval is 0 ms: set interval_ms to at least 1 (default 1000)")]
    ZeroInterval,
    #[error("heartbeat timeout is 0 ms: set timeout_ms to at least 3 × interval_ms (default 3000)")]
    ZeroTimeout,
    #[error(
        "heartbeat timeout {timeout_ms} ms is under 3 × the heartbeat interval {interval_ms} ms: \
         raise timeout_ms to at least {} or lower interval_ms",
        interval_ms.saturating_mul(MIN_INTERVALS_PER_TIMEOUT)
    )]
    TimeoutTooShort { timeout_ms: u64, interval_ms: u64 },
}

impl LivenessConfig {
    pub fn validate(&self) -> Result<(), LivenessConfigError> {
        if self.interval_ms == 0 {
            return Err(LivenessConfigError::ZeroInterval);
        }
        if self.timeout_ms == 0 {
            return Err(LivenessConfigError::ZeroTimeout);
        }
        if self.timeout_ms < self.interval_ms.saturating_mul(MIN_INTERVALS_PER_TIMEOUT) {
            return Err(LivenessConfigError::TimeoutTooShort {
                timeout_ms: self.timeout_ms,
                interval_ms: self.interval_ms,
            });
        }
        Ok(())
    }
}

/// A heartbeat from a member the leader does not track: the member should register
/// (again), or the heartbeat reached a node that is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("heartbeat from unknown {member}: it is not registered with this leader; register it again")]
pub struct UnknownMember {
    pub member: MemberId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    /// When this leader last heard the member, or when its grace began.
    heard_ms: u64,
    /// Reported by `poll_expired` and not heard since: out of the deadline index.
    pending: bool,
}

/// The leader's heartbeat tracker. Inert (tracks nobody) unless this node is leader.
#[derive(Clone, Debug)]
pub struct Liveness {
    config: LivenessConfig,
    leader: bool,
    members: BTreeMap<MemberId, Tracked>,
    /// `(first ms at which the member counts as expired, member)` for every tracked member
    /// that is not pending.
    deadlines: BTreeSet<(u64, MemberId)>,
}

impl Liveness {
    pub fn new(config: LivenessConfig) -> Result<Self, LivenessConfigError> {
        config.validate()?;
        Ok(Liveness { config, leader: false, members: BTreeMap::new(), deadlines: BTreeSet::new() })
    }

    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Members tracked, pending ones included.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, member: MemberId) -> bool {
        self.members.contains_key(&member)
    }

    /// Reported by `poll_expired` and not heard from since.
    pub fn is_pending(&self, member: MemberId) -> bool {
        self.members.get(&member).is_some_and(|t| t.pending)
    }

    /// How long the member has been silent as this leader sees it (since its last
    /// heartbeat, or since its grace began).
    pub fn silent_for_ms(&self, now_ms: u64, member: MemberId) -> Option<u64> {
        self.members.get(&member).map(|t| now_ms.saturating_sub(t.heard_ms))
    }

    /// Starts tracking `members` (everyone in the replicated record), each with a full
    /// timeout of grace from `now_ms`. Replaces whatever was tracked before.
    pub fn handle_became_leader(&mut self, now_ms: u64, members: impl IntoIterator<Item = MemberId>) {
        self.members.clear();
        self.deadlines.clear();
        self.leader = true;
        for member in members {
            self.track(now_ms, member);
        }
        self.check_invariants();
    }

    /// Gives every tracked member a full timeout of grace from `now_ms` (members heard
    /// later keep their time), pending ones included: they are judged again from scratch.
    /// For a leader that could not reach a quorum for a while and so cannot tell a silent
    /// member from one whose heartbeats went elsewhere.
    pub fn handle_grace(&mut self, now_ms: u64) {
        let members: Vec<MemberId> = self.members.keys().copied().collect();
        for member in members {
            self.track(now_ms, member);
        }
        self.check_invariants();
    }

    /// Forgets everything: a follower judges nobody.
    pub fn handle_stepped_down(&mut self) {
        self.leader = false;
        self.members.clear();
        self.deadlines.clear();
    }

    /// A member joined (its registration was applied): a full timeout from `now_ms`.
    /// Re-adding a tracked member counts as hearing from it. Ignored when not leader: a
    /// new leader learns every member in `handle_became_leader`.
    pub fn handle_member_added(&mut self, now_ms: u64, member: MemberId) {
        if !self.leader {
            return;
        }
        self.track(now_ms, member);
    }

    /// A member left the record (deregistered, expired or deleted). Unknown members are
    /// ignored: removal is idempotent. Returns whether it was pending (reported by
    /// `poll_expired` and not heard since): its removal was most likely that expiry.
    pub fn handle_member_removed(&mut self, member: MemberId) -> bool {
        match self.members.remove(&member) {
            Some(old) if !old.pending => {
                let removed = self.deadlines.remove(&(self.deadline_ms(old.heard_ms), member));
                assert!(removed, "liveness: {member} tracked but missing from the deadline index");
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Records a heartbeat received at `now_ms` (the leader's clock). A pending member
    /// heard again is no longer pending and will be reported again if it falls silent.
    pub fn handle_heartbeat(&mut self, now_ms: u64, member: MemberId) -> Result<(), UnknownMember> {
        if !self.members.contains_key(&member) {
            return Err(UnknownMember { member });
        }
        self.track(now_ms, member);
        Ok(())
    }

    /// Members silent for longer than `timeout_ms` at `now_ms`, each with how long it has
    /// been silent, in deadline order. Each is reported once and then marked pending until
    /// it is removed or heard again.
    pub fn poll_expired(&mut self, now_ms: u64) -> Vec<(MemberId, u64)> {
        self.poll_expired_up_to(now_ms, usize::MAX)
    }

    /// As [`Liveness::poll_expired`], but at most `max_count` members, so a proposal stays
    /// within the state machine's batch limit; call again for the rest.
    pub fn poll_expired_up_to(&mut self, now_ms: u64, max_count: usize) -> Vec<(MemberId, u64)> {
        self.poll_expired_with_grace(now_ms, 0, max_count)
    }

    /// As [`Liveness::poll_expired_up_to`], but only members silent for longer than
    /// `timeout_ms + grace_ms` (the expiry guard's grace: `expiry_guard.rs`).
    pub fn poll_expired_with_grace(&mut self, now_ms: u64, grace_ms: u64, max_count: usize) -> Vec<(MemberId, u64)> {
        let mut expired = Vec::new();
        while expired.len() < max_count {
            let Some(&(deadline_ms, member)) = self.deadlines.first() else {
                break;
            };
            if deadline_ms.saturating_add(grace_ms) > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let tracked = self.members.get_mut(&member).expect("indexed member is tracked");
            assert!(!tracked.pending, "liveness: pending {member} still in the deadline index");
            tracked.pending = true;
            let silent_for_ms = now_ms.saturating_sub(tracked.heard_ms);
            // Only a deadline saturated at u64::MAX can come due without the full timeout.
            assert!(
                silent_for_ms > self.config.timeout_ms.saturating_add(grace_ms) || deadline_ms == u64::MAX,
                "liveness: {member} expired early"
            );
            expired.push((member, silent_for_ms));
        }
        expired
    }

    /// Members silent at `now_ms` for longer than `silent_ms` (at most `timeout_ms`),
    /// pending ones included. O(k) in the members counted.
    pub fn count_silent_over(&self, now_ms: u64, silent_ms: u64) -> usize {
        assert!(silent_ms <= self.config.timeout_ms, "liveness: count silent over {silent_ms} ms is past the timeout");
        // silent > silent_ms <=> heard < now - silent_ms <=> deadline <= now - silent_ms + timeout.
        let last_deadline_ms = now_ms.saturating_add(self.config.timeout_ms - silent_ms);
        let indexed = match last_deadline_ms.checked_add(1) {
            // The least member id sorts first, so this bound excludes the next deadline's.
            Some(next_ms) => self.deadlines.range(..(next_ms, MemberId::Server(ServerId(0)))).count(),
            None => self.deadlines.len(),
        };
        indexed + self.pending_count()
    }

    /// Members reported by `poll_expired` and not heard from since.
    pub fn pending_count(&self) -> usize {
        self.members.len() - self.deadlines.len()
    }

    /// When the next member may expire: call `poll_expired` then. `None` when there is
    /// nobody to judge (not leader, nobody tracked, or everyone already pending).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// A member heard at `heard_ms` is expired from this instant on: silent for strictly
    /// more than `timeout_ms`.
    fn deadline_ms(&self, heard_ms: u64) -> u64 {
        heard_ms.saturating_add(self.config.timeout_ms).saturating_add(1)
    }

    /// Sets `member` as heard at `now_ms` (never earlier than it was already heard, so a
    /// driver clock that steps back cannot shorten anyone's time).
    fn track(&mut self, now_ms: u64, member: MemberId) {
        let heard_ms = match self.members.get(&member) {
            Some(old) => {
                if !old.pending {
                    let removed = self.deadlines.remove(&(self.deadline_ms(old.heard_ms), member));
                    assert!(removed, "liveness: {member} tracked but missing from the deadline index");
                }
                old.heard_ms.max(now_ms)
            }
            None => now_ms,
        };
        self.members.insert(member, Tracked { heard_ms, pending: false });
        self.deadlines.insert((self.deadline_ms(heard_ms), member));
    }

    /// The whole index against the members: O(n), so only the operations that are O(n)
    /// anyway run it (a per-member check would make registering n members quadratic).
    /// `track` and `handle_member_removed` check the one member they touch.
    fn check_invariants(&self) {
        let active = self.members.values().filter(|t| !t.pending).count();
        assert_eq!(active, self.deadlines.len(), "liveness: deadline index out of step");
        assert!(self.leader || self.members.is_empty(), "liveness: a follower tracks members");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ProcessId, ServerId};
    use proptest::prelude::*;

    fn p(n: u64) -> MemberId {
        MemberId::Process(ProcessId(n))
    }

    fn leader(now_ms: u64, members: &[MemberId]) -> Liveness {
        let mut l = Liveness::new(LivenessConfig::default()).unwrap();
        l.handle_became_leader(now_ms, members.iter().copied());
        l
    }

    #[test]
    fn config_errors_name_their_values() {
        assert_eq!(LivenessConfig::default().validate(), Ok(()));
        let err = LivenessConfig { interval_ms: 1_000, timeout_ms: 2_999 }.validate().unwrap_err();
        assert_eq!(err, LivenessConfigError::TimeoutTooShort { timeout_ms: 2_999, interval_ms: 1_000 });
        let msg = err.to_string();
        assert!(msg.contains("2999") && msg.contains("1000") && msg.contains("3000"), "{msg}");
        assert_eq!(
            LivenessConfig { interval_ms: 0, timeout_ms: 3_000 }.validate(),
            Err(LivenessConfigError::ZeroInterval)
        );
        assert_eq!(LivenessConfig { interval_ms: 1, timeout_ms: 0 }.validate(), Err(LivenessConfigError::ZeroTimeout));
        assert!(Liveness::new(LivenessConfig { interval_ms: u64::MAX, timeout_ms: u64::MAX - 1 }).is_err());
        assert!(Liveness::new(LivenessConfig { interval_ms: 10, timeout_ms: 30 }).is_ok());
    }

    #[test]
    fn unknown_member_heartbeat_is_an_error() {
        let mut l = leader(0, &[p(1)]);
        assert_eq!(l.handle_heartbeat(5, p(2)), Err(UnknownMember { member: p(2) }));
        assert!(UnknownMember { member: p(2) }.to_string().contains("process-2"));
        let mut follower = Liveness::new(LivenessConfig::default()).unwrap();
        assert!(follower.handle_heartbeat(5, p(1)).is_err());
        follower.handle_member_added(5, p(1));
        assert!(follower.is_empty());
        assert_eq!(follower.poll_timeout(), None);
    }

    #[test]
    fn grace_after_election_then_expiry_once() {
        let mut l = leader(10_000, &[p(1), MemberId::Server(ServerId(1))]);
        assert!(l.is_leader());
        assert_eq!(l.poll_timeout(), Some(13_001));
        assert!(l.poll_expired(13_000).is_empty());
        let expired = l.poll_expired(13_001);
        assert_eq!(expired, vec![(MemberId::Server(ServerId(1)), 3_001), (p(1), 3_001)]);
        assert!(l.is_pending(p(1)));
        assert!(l.poll_expired(20_000).is_empty(), "reported once");
        assert_eq!(l.poll_timeout(), None);
        // Heard again: no longer pending, judged afresh.
        l.handle_heartbeat(20_000, p(1)).unwrap();
        assert!(!l.is_pending(p(1)));
        assert_eq!(l.poll_timeout(), Some(23_001));
        l.handle_member_removed(MemberId::Server(ServerId(1)));
        l.handle_member_removed(MemberId::Server(ServerId(1)));
        assert_eq!(l.len(), 1);
        l.handle_stepped_down();
        assert!(!l.is_leader() && l.is_empty() && l.poll_timeout().is_none());
    }

    #[test]
    fn silent_counts_and_grace_see_the_same_silence() {
        let mut l = leader(0, &[p(1), p(2), p(3), p(4)]);
        l.handle_heartbeat(1_000, p(2)).unwrap();
        l.handle_heartbeat(2_500, p(3)).unwrap();
        // At 3_000: p(1) and p(4) silent 3_000, p(2) 2_000, p(3) 500.
        assert_eq!(l.count_silent_over(3_000, 2_000), 2, "strictly more than 2000 ms");
        assert_eq!(l.count_silent_over(3_000, 1_999), 3);
        assert_eq!(l.count_silent_over(3_000, 0), 4);
        assert_eq!(l.count_silent_over(3_000, 3_000), 0);
        assert!(l.poll_expired_with_grace(3_500, 500, usize::MAX).is_empty(), "3500 ms is not over 3000 + 500");
        assert_eq!(l.poll_expired_with_grace(3_501, 500, usize::MAX), vec![(p(1), 3_501), (p(4), 3_501)]);
        assert_eq!(l.pending_count(), 2);
        assert_eq!(l.count_silent_over(3_501, 2_000), 3, "pending members are silent too");
        assert!(l.handle_member_removed(p(1)), "removed while pending");
        assert!(!l.handle_member_removed(p(2)));
        assert!(!l.handle_member_removed(p(2)), "unknown: not pending");
    }

    #[test]
    fn bounded_batches() {
        let members: Vec<_> = (0..10).map(p).collect();
        let mut l = leader(0, &members);
        assert_eq!(l.poll_expired_up_to(5_000, 4).len(), 4);
        assert_eq!(l.poll_expired_up_to(5_000, 4).len(), 4);
        assert_eq!(l.poll_expired_up_to(5_000, 4).len(), 2);
    }

    #[test]
    fn ten_thousand_members() {
        let members: Vec<_> = (0..10_000).map(p).collect();
        let mut l = leader(0, &members);
        for round in 1..=5u64 {
            for (i, m) in members.iter().enumerate() {
                if i % 100 != 0 {
                    l.handle_heartbeat(round * 1_000, *m).unwrap();
                }
            }
        }
        let expired = l.poll_expired(5_000);
        assert_eq!(expired.len(), 100);
        assert!(
            expired
                .iter()
                .all(|(m, silent)| matches!(m, MemberId::Process(ProcessId(n)) if n % 100 == 0) && *silent == 5_000)
        );
        assert_eq!(l.poll_timeout(), Some(8_001));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Advance(u64),
        Heartbeat(u64),
        Add(u64),
        Remove(u64),
        Poll,
        Reelect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..1_500).prop_map(Op::Advance),
            4 => (0u64..8).prop_map(Op::Heartbeat),
            1 => (0u64..8).prop_map(Op::Add),
            1 => (0u64..8).prop_map(Op::Remove),
            3 => Just(Op::Poll),
            1 => Just(Op::Reelect),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Against a naive model: nobody heard within the timeout (or within grace) is ever
        /// expired, everyone silent past it is expired at the first poll after, once.
        #[test]
        fn matches_naive_model(interval_ms in 1u64..500, extra_ms in 0u64..1_000,
                               initial in proptest::collection::btree_set(0u64..8, 0..8),
                               ops in proptest::collection::vec(op(), 0..120)) {
            let timeout_ms = interval_ms * 3 + extra_ms;
            let mut l = Liveness::new(LivenessConfig { interval_ms, timeout_ms }).unwrap();
            let mut now = 1_000u64;
            // model: member -> (heard_ms, pending)
            let mut model: BTreeMap<u64, (u64, bool)> = initial.iter().map(|&m| (m, (now, false))).collect();
            l.handle_became_leader(now, initial.iter().map(|&m| p(m)));
            for op in ops {
                match op {
                    Op::Advance(d) => now += d,
                    Op::Heartbeat(m) => {
                        let r = l.handle_heartbeat(now, p(m));
                        prop_assert_eq!(r.is_ok(), model.contains_key(&m));
                        if let Some(e) = model.get_mut(&m) { *e = (now, false); }
                    }
                    Op::Add(m) => { l.handle_member_added(now, p(m)); model.insert(m, (now, false)); }
                    Op::Remove(m) => { l.handle_member_removed(p(m)); model.remove(&m); }
                    Op::Reelect => {
                        l.handle_stepped_down();
                        l.handle_became_leader(now, model.keys().map(|&m| p(m)));
                        for e in model.values_mut() { *e = (now, false); }
                    }
                    Op::Poll => {
                        let got = l.poll_expired(now);
                        let mut want = Vec::new();
                        for (&m, e) in model.iter_mut() {
                            if !e.1 && now - e.0 > timeout_ms {
                                want.push((p(m), now - e.0));
                                e.1 = true;
                            }
                        }
                        let mut got_sorted = got.clone();
                        got_sorted.sort();
                        prop_assert_eq!(got_sorted, want);
                        for (m, silent) in &got {
                            prop_assert!(*silent > timeout_ms, "{} expired after {} ms", m, silent);
                        }
                    }
                }
                prop_assert_eq!(l.len(), model.len());
                l.check_invariants();
                // The timer never sleeps past a due expiry.
                let due = model.values().filter(|e| !e.1).map(|e| e.0 + timeout_ms + 1).min();
                prop_assert_eq!(l.poll_timeout(), due);
            }
        }
    }
}
