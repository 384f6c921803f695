//! Rule 9 (no mass false expiry) as the leader applies it, driven step by step with a
//! plain record whose expiries are committed at once: unit tests, and property tests of
//! the three promises (`expiry_guard.rs`):
//! (a) a member heard within `timeout_ms` + the leader's reported lateness is never expired;
//! (b) a member silent past `timeout_ms` + lateness + 1 s is always gone, even when all go
//!     silent at once;
//! (c) when an unbelievable share goes silent at once, the alarm rises and none of them is
//!     expired before the brake's hold.

use super::tests::{INTERVAL_MS, TIMEOUT_MS, TestRecord, config, expired, leader, p};
use super::*;
use crate::expiry_guard::{LATENESS_TOLERANCE_MS, MAX_BRAKE_HOLD_MS};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The default hold (`ExpiryGuardConfig::default`).
const HOLD_MS: u64 = 750;
/// `ceil(TIMEOUT_MS / 8)`: the guard's bucket; a report counts for less than nine of them.
const BUCKET_MS: u64 = TIMEOUT_MS.div_ceil(8);

/// A leader (term 1 from `0`) over members `p(1..=n)`, with what the test saw.
struct Harness {
    d: LeaderDuties,
    record: TestRecord,
    /// When the leader last heard each member still in the record (0: the grace's start).
    heard: BTreeMap<MemberId, u64>,
    /// Lateness fed, as `(at_ms, late_ms)`.
    lateness: Vec<(u64, u64)>,
}

impl Harness {
    fn new(n: u64) -> Harness {
        let members: Vec<MemberId> = (1..=n).map(p).collect();
        let record = TestRecord::with(&members);
        let mut d = LeaderDuties::new(config(4_096)).unwrap();
        d.handle_tick(0, leader(1), &record);
        Harness { d, record, heard: members.iter().map(|m| (*m, 0)).collect(), lateness: Vec::new() }
    }

    fn heartbeat(&mut self, now_ms: u64, m: MemberId) {
        let verdict = self.d.handle_heartbeat(now_ms, leader(1), m, None, &self.record);
        match verdict {
            HeartbeatVerdict::Accepted => {
                self.heard.insert(m, now_ms);
            }
            HeartbeatVerdict::UnknownMember(_) => assert!(!self.heard.contains_key(&m)),
            other => panic!("a leader holding its lease answered {other:?}"),
        }
    }

    fn late(&mut self, now_ms: u64, late_ms: u64) {
        self.d.handle_lateness(now_ms, late_ms);
        self.lateness.push((now_ms, late_ms));
    }

    /// One turn of the driver at `now_ms`: every proposal committed at once. Returns the
    /// members expired, each with how long the leader had not heard it.
    fn turn(&mut self, now_ms: u64) -> Vec<(MemberId, u64)> {
        self.d.handle_tick(now_ms, leader(1), &self.record);
        let mut gone = Vec::new();
        while let Some(proposal) = self.d.poll_proposal(now_ms) {
            for m in expired(&proposal) {
                let heard = self.heard.remove(&m).expect("an expired member was in the record");
                gone.push((m, now_ms - heard));
            }
            self.record.apply(&proposal.command);
            self.d.handle_proposal_result(now_ms, proposal.id, ProposalOutcome::Committed);
        }
        self.d.handle_tick(now_ms, leader(1), &self.record);
        gone
    }

    /// The largest lateness reported within the last timeout: the least grace promised.
    fn grace_at_least_ms(&self, now_ms: u64) -> u64 {
        self.grace_over(|at| now_ms - at <= TIMEOUT_MS, now_ms)
    }

    /// The largest lateness that may still count (within nine buckets): the most grace.
    fn grace_at_most_ms(&self, now_ms: u64) -> u64 {
        self.grace_over(|at| now_ms - at < 9 * BUCKET_MS, now_ms)
    }

    fn grace_over(&self, within: impl Fn(u64) -> bool, now_ms: u64) -> u64 {
        let late = self
            .lateness
            .iter()
            .filter(|(at, late)| *at <= now_ms && within(*at) && *late > LATENESS_TOLERANCE_MS)
            .map(|(_, late)| *late)
            .max()
            .unwrap_or(0);
        late.min(TIMEOUT_MS)
    }
}

// ----- unit tests -----

#[test]
fn a_punctual_leader_expires_on_time_as_before() {
    let mut h = Harness::new(100);
    for t in (0..=TIMEOUT_MS).step_by(10) {
        h.late(t, t % (LATENESS_TOLERANCE_MS + 1));
        if t % INTERVAL_MS == 0 {
            for n in 11..=100 {
                h.heartbeat(t, p(n));
            }
        }
        assert!(h.turn(t).is_empty(), "nobody silent past the timeout at {t}");
    }
    let gone = h.turn(TIMEOUT_MS + 1);
    assert_eq!(gone.iter().map(|(m, _)| *m).collect::<Vec<_>>(), (1..=10).map(p).collect::<Vec<_>>());
    assert!(h.d.expiry_status(TIMEOUT_MS + 1).brake.is_none(), "10 of 100 is believable");
}

#[test]
fn the_leaders_lateness_extends_the_grace_by_as_much() {
    let mut h = Harness::new(3);
    h.late(290, 250);
    assert_eq!(h.d.expiry_status(290).lateness_grace_ms, 250);
    assert_eq!(h.d.poll_timeout(), Some(TIMEOUT_MS + 1 + 250));
    assert!(h.turn(TIMEOUT_MS + 250).is_empty());
    assert_eq!(h.turn(TIMEOUT_MS + 251).len(), 3);
}

#[test]
fn lateness_past_a_timeout_extends_it_by_one_timeout_only() {
    let mut h = Harness::new(3);
    h.late(299, 60_000);
    assert_eq!(h.d.expiry_status(299).lateness_grace_ms, TIMEOUT_MS);
    assert!(h.turn(2 * TIMEOUT_MS).is_empty());
    assert_eq!(h.turn(2 * TIMEOUT_MS + 1).len(), 3);
}

#[test]
fn lateness_is_forgotten_once_its_window_passes() {
    let mut h = Harness::new(3);
    h.late(0, 250);
    // The report counts for a timeout at least, nine buckets (342 ms) at most.
    assert_eq!(h.d.expiry_status(TIMEOUT_MS).lateness_grace_ms, 250);
    assert_eq!(h.d.poll_timeout(), Some(9 * BUCKET_MS), "wakes when the grace shrinks");
    for t in (0..9 * BUCKET_MS).step_by(100) {
        h.heartbeat(t, p(1));
        h.heartbeat(t, p(2));
    }
    assert!(h.turn(9 * BUCKET_MS - 1).is_empty());
    assert_eq!(h.turn(9 * BUCKET_MS), vec![(p(3), 9 * BUCKET_MS)], "due at once without the grace");
    assert_eq!(h.d.expiry_status(9 * BUCKET_MS).lateness_grace_ms, 0);
}

#[test]
fn a_mass_silence_is_braked_with_the_alarm_then_removed_within_a_second() {
    let mut h = Harness::new(90);
    for n in 61..=90 {
        h.heartbeat(200, p(n));
    }
    // p(1..=60) silent since 0: 60 of 90 due at 301.
    assert!(h.turn(TIMEOUT_MS + 1).is_empty(), "held by the brake");
    let alarm = h.d.expiry_status(TIMEOUT_MS + 1).brake.expect("the alarm is on");
    assert_eq!((alarm.since_ms, alarm.suspects, alarm.members, alarm.hold_ms), (TIMEOUT_MS + 1, 60, 90, HOLD_MS));
    assert_eq!(h.d.poll_timeout(), Some(TIMEOUT_MS + 1 + 100), "read again while it holds");
    for n in 61..=90 {
        h.heartbeat(400, p(n));
        h.heartbeat(800, p(n));
    }
    assert!(h.turn(TIMEOUT_MS + HOLD_MS).is_empty());
    let gone = h.turn(TIMEOUT_MS + 1 + HOLD_MS);
    assert_eq!(gone.len(), 60);
    assert!(gone.iter().all(|(_, silent)| *silent == TIMEOUT_MS + 1 + HOLD_MS));
    // Their expiry counts for a timeout window: the alarm stays on, then falls.
    assert!(h.d.expiry_status(TIMEOUT_MS + 1 + HOLD_MS).brake.is_some());
    for t in (1_100..=2_300).step_by(100) {
        for n in 61..=90 {
            h.heartbeat(t, p(n));
        }
        assert!(h.turn(t).is_empty());
    }
    assert!(h.d.expiry_status(2_300).brake.is_none(), "the window and a hold passed: believable again");
}

#[test]
fn the_brake_falls_when_the_silent_are_heard_again_and_nobody_is_lost() {
    let mut h = Harness::new(100);
    for n in 51..=100 {
        h.heartbeat(250, p(n));
    }
    assert!(h.turn(TIMEOUT_MS + 1).is_empty());
    assert!(h.d.expiry_status(TIMEOUT_MS + 1).brake.is_some());
    // Their heartbeats were only queued: they arrive within the hold, some later than
    // others; those still silent stay held although the share is believable again.
    for n in 11..=100 {
        h.heartbeat(700, p(n));
    }
    assert!(h.turn(800).is_empty());
    assert!(h.d.expiry_status(800).brake.is_some(), "held for a hold after the last unbelievable reading");
    for n in 1..=10 {
        h.heartbeat(1_000, p(n));
    }
    for t in (1_000..=1_200).step_by(100) {
        for n in 1..=100 {
            h.heartbeat(t, p(n));
        }
        assert!(h.turn(t).is_empty());
    }
    assert!(h.d.expiry_status(1_200).brake.is_none());
    assert_eq!(h.heard.len(), 100);
}

#[test]
fn a_new_term_starts_without_the_brake() {
    let mut h = Harness::new(60);
    assert!(h.turn(TIMEOUT_MS + 1).is_empty());
    assert!(h.d.expiry_status(TIMEOUT_MS + 1).brake.is_some());
    h.d.handle_tick(TIMEOUT_MS + 2, leader(2), &h.record);
    assert!(h.d.expiry_status(TIMEOUT_MS + 2).brake.is_none());
    h.d.handle_tick(TIMEOUT_MS + 3, Role::Follower, &h.record);
    assert!(h.d.expiry_status(TIMEOUT_MS + 3).brake.is_none());
}

#[test]
fn the_hold_is_within_the_promise() {
    const { assert!(HOLD_MS <= MAX_BRAKE_HOLD_MS) };
    assert_eq!(crate::expiry_guard::ExpiryGuardConfig::default().brake_hold_ms, HOLD_MS);
    let mut c = config(8);
    c.expiry_guard.brake_hold_ms = MAX_BRAKE_HOLD_MS + 1;
    assert!(matches!(LeaderDuties::new(c), Err(DutiesConfigError::ExpiryGuard(_))));
}

/// The trade-off in figures (docs/operations.md, "Mass expiry"), at the shipped timings
/// (1 s interval, 3 s timeout): 5 servers and 60 processes heartbeating at phases spread
/// over the second. Processes `1..=cut` are cut off from `5_000` for `cut_ms` (a heartbeat
/// goes out the instant the cut heals), or for good (`None`, a mass crash). Returns how
/// many of them were expired, the latest silence at which one was, and whether the alarm
/// rose.
fn cut_off(hold_ms: u64, cut: u64, cut_ms: Option<u64>) -> (usize, u64, bool) {
    let liveness = LivenessConfig { interval_ms: 1_000, timeout_ms: 3_000 };
    let mut config = DutiesConfig::new(liveness);
    config.expiry_guard.brake_hold_ms = hold_ms;
    let members: Vec<MemberId> =
        (1..=60).map(p).chain((1..=5).map(|n| MemberId::Server(crate::ids::ServerId(n)))).collect();
    let mut record = TestRecord::with(&members);
    let mut d = LeaderDuties::new(config).unwrap();
    let (mut expired, mut latest_ms, mut alarm) = (0, 0, false);
    let cut_until_ms = cut_ms.map_or(u64::MAX, |ms| 5_000 + ms);
    for t in 0..15_000u64 {
        for (i, m) in members.iter().enumerate() {
            let phase = t % 1_000 == (i as u64 * 367) % 1_000;
            let cut_off = matches!(m, MemberId::Process(crate::ids::ProcessId(n)) if *n <= cut);
            let silent = cut_off && (5_000..cut_until_ms).contains(&t);
            if (phase && !silent) || (cut_off && t == cut_until_ms) {
                let _ = d.handle_heartbeat(t, leader(1), *m, None, &record);
            }
        }
        d.handle_tick(t, leader(1), &record);
        while let Some(proposal) = d.poll_proposal(t) {
            if let LeaderCommand::Expire { members } = &proposal.command {
                expired += members.len();
                latest_ms = members.iter().map(|(_, silent)| *silent).max().unwrap_or(0).max(latest_ms);
            }
            record.apply(&proposal.command);
            d.handle_proposal_result(t, proposal.id, ProposalOutcome::Committed);
        }
        alarm |= d.expiry_status(t).brake.is_some();
    }
    (expired, latest_ms, alarm)
}

#[test]
fn a_cut_that_heals_within_the_hold_loses_nobody_where_no_brake_loses_a_third() {
    // 30 of 65 members cut off for 2.4 s: as the leader hears it, each is silent 2.4 to
    // 3.4 s.
    let braked = cut_off(HOLD_MS, 30, Some(2_400));
    assert_eq!(braked, (0, 0, true), "spared, with the alarm");
    let (lost, _, _) = cut_off(0, 30, Some(2_400));
    assert!((8..=14).contains(&lost), "without the hold, those heard more than 600 ms before the cut go: {lost}");
    // A smaller share is believable: no brake, as before.
    let (lost, _, alarm) = cut_off(HOLD_MS, 15, Some(2_400));
    assert!(!alarm && (3..=7).contains(&lost), "{lost} {alarm}");
}

#[test]
fn a_real_mass_crash_is_removed_within_the_timeout_and_the_hold() {
    let (removed, latest_ms, alarm) = cut_off(HOLD_MS, 60, None);
    assert_eq!((removed, alarm), (60, true));
    assert_eq!(latest_ms, 3_000 + 1 + HOLD_MS, "each one the timeout and the hold after it was last heard");
    let (removed, latest_ms, _) = cut_off(0, 60, None);
    assert_eq!((removed, latest_ms), (60, 3_001), "without the brake: the timeout alone");
}

// ----- property tests -----

/// A member: its heartbeat phase, the most its heartbeats are delayed on the way (a
/// queue, a slow network), and when it crashes, if it does.
fn member_plan() -> impl Strategy<Value = (u64, u64, Option<u64>)> {
    (0..INTERVAL_MS, 0u64..500, proptest::option::of(0u64..3_000))
}

const STEP_MS: u64 = 10;
const END_MS: u64 = 6_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// (a) and (b): whatever the delays, crashes and the leader's lateness, a member is
    /// expired only when silent past the timeout plus the lateness reported within the
    /// last timeout, and never stays silent past the timeout plus the lateness that may
    /// still count plus 1 s.
    #[test]
    fn lateness_extends_the_grace_and_the_silent_are_still_removed(
        plans in proptest::collection::vec(member_plan(), 1..=120),
        lateness in proptest::collection::vec((0..END_MS, 0u64..700), 0..20),
    ) {
        let mut h = Harness::new(plans.len() as u64);
        let mut deliveries: BTreeMap<u64, Vec<MemberId>> = BTreeMap::new();
        for (i, (phase_ms, jitter_max_ms, crash_ms)) in plans.iter().enumerate() {
            let i = i as u64;
            for k in 0.. {
                let sent_ms = phase_ms + k * INTERVAL_MS;
                if sent_ms >= END_MS || crash_ms.is_some_and(|c| sent_ms >= c) {
                    break;
                }
                let jitter_ms = (i * 7_919 + k * 104_729) % (jitter_max_ms + 1);
                deliveries.entry((sent_ms + jitter_ms).div_ceil(STEP_MS) * STEP_MS).or_default().push(p(i + 1));
            }
        }
        let mut reports: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (at_ms, late_ms) in &lateness {
            reports.entry(at_ms.div_ceil(STEP_MS) * STEP_MS).or_default().push(*late_ms);
        }
        for t in (0..=END_MS).step_by(STEP_MS as usize) {
            for late_ms in reports.get(&t).into_iter().flatten() {
                h.late(t, *late_ms);
            }
            for m in deliveries.get(&t).into_iter().flatten() {
                h.heartbeat(t, *m);
            }
            let at_least_ms = h.grace_at_least_ms(t);
            for (m, silent_ms) in h.turn(t) {
                prop_assert!(silent_ms > TIMEOUT_MS + at_least_ms,
                    "{} expired at {} after {} ms silent; grace at least {}", m, t, silent_ms, at_least_ms);
            }
            let at_most_ms = h.grace_at_most_ms(t);
            for (m, heard_ms) in &h.heard {
                prop_assert!(t - heard_ms <= TIMEOUT_MS + at_most_ms + 1_000,
                    "{} still in the record at {} after {} ms silent; grace at most {}", m, t, t - heard_ms, at_most_ms);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// (b) and (c): an unbelievable share (more than a third of 50 or more) silent at the
    /// same instant raises the alarm at once; none of them is expired before the hold,
    /// all are gone within the timeout + 1 s, and no live member is expired.
    #[test]
    fn an_unbelievable_share_silent_at_once_is_braked_then_removed(
        (n, silent) in (50u64..=150).prop_flat_map(|n| {
            (Just(n), (n / 3 + 1..=n).prop_flat_map(move |k| {
                proptest::sample::subsequence((1..=n).collect::<Vec<u64>>(), k as usize)
            }))
        }),
        offset_ms in 0u64..200,
    ) {
        let silent: BTreeSet<MemberId> = silent.into_iter().map(p).collect();
        let mut h = Harness::new(n);
        let crash_ms = 1_000 + offset_ms;
        let mut first_alarm_ms = None;
        for t in 0..=crash_ms + 2_000 {
            for m in 1..=n {
                let live = !silent.contains(&p(m)) || t <= crash_ms;
                if live && (t + m * 37) % INTERVAL_MS == 0 || t == crash_ms && silent.contains(&p(m)) {
                    h.heartbeat(t, p(m));
                }
            }
            for (m, _) in h.turn(t) {
                prop_assert!(silent.contains(&m), "live {} expired at {}", m, t);
                prop_assert!(t > crash_ms + TIMEOUT_MS + HOLD_MS, "{} expired at {} before the hold", m, t);
            }
            let alarm = h.d.expiry_status(t).brake;
            if t > crash_ms + TIMEOUT_MS && t <= crash_ms + TIMEOUT_MS + HOLD_MS {
                prop_assert!(alarm.is_some(), "no alarm at {}", t);
                first_alarm_ms.get_or_insert(t);
            }
            if t > crash_ms + TIMEOUT_MS + 1_000 {
                prop_assert!(silent.iter().all(|m| !h.heard.contains_key(m)), "silent members left at {}", t);
            }
        }
        prop_assert_eq!(first_alarm_ms, Some(crash_ms + TIMEOUT_MS + 1));
        prop_assert_eq!(h.heard.len() as u64, n - silent.len() as u64);
    }
}
