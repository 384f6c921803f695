//! Unit tests of the guard alone; the policy as the leader applies it is pinned by the
//! property tests in `leader_duties/expiry_tests.rs`.

use super::*;

const TIMEOUT_MS: u64 = 3_000;
const INTERVAL_MS: u64 = 1_000;

fn guard() -> ExpiryGuard {
    ExpiryGuard::new(ExpiryGuardConfig::default(), TIMEOUT_MS, INTERVAL_MS).unwrap()
}

#[test]
fn config_errors_name_their_values() {
    assert_eq!(ExpiryGuardConfig::default().validate(), Ok(()));
    let long = ExpiryGuardConfig { brake_hold_ms: 1_001, ..ExpiryGuardConfig::default() };
    let err = long.validate().unwrap_err();
    assert_eq!(err, ExpiryGuardConfigError::HoldTooLong { hold_ms: 1_001 });
    assert!(err.to_string().contains("1001") && err.to_string().contains("1000"), "{err}");
    for share_permille in [0, 1_000] {
        let c = ExpiryGuardConfig { brake_share_permille: share_permille, ..ExpiryGuardConfig::default() };
        assert_eq!(c.validate(), Err(ExpiryGuardConfigError::ShareOutOfRange { share_permille }));
    }
    let at_most = ExpiryGuardConfig { brake_hold_ms: MAX_BRAKE_HOLD_MS, ..ExpiryGuardConfig::default() };
    assert!(ExpiryGuard::new(at_most, TIMEOUT_MS, INTERVAL_MS).is_ok());
}

#[test]
fn a_punctual_leader_gets_no_grace() {
    let mut g = guard();
    for t in (0..10_000).step_by(50) {
        g.handle_lateness(t, t % LATENESS_TOLERANCE_MS);
        assert_eq!(g.lateness_grace_ms(t), 0);
    }
    assert_eq!(g.poll_timeout(), None, "nothing kept, nothing to wake for");
}

#[test]
fn lateness_counts_for_one_timeout_at_least_and_nine_eighths_at_most() {
    let mut g = guard();
    g.handle_lateness(10_000, 400);
    g.handle_lateness(10_500, 200);
    assert_eq!(g.lateness_grace_ms(10_500), 400, "the largest report in the window");
    assert_eq!(g.lateness_grace_ms(13_000), 400, "still within one timeout");
    let leaves = g.poll_timeout().unwrap();
    assert!((13_001..=13_375).contains(&leaves), "leaves within an eighth after the timeout: {leaves}");
    g.prune(leaves);
    assert_eq!(g.lateness_grace_ms(leaves), 200, "the 400 left; the 200 reported later stays");
    g.prune(14_000);
    assert_eq!(g.lateness_grace_ms(14_000), 0);
    assert_eq!(g.poll_timeout(), None);
}

#[test]
fn grace_is_capped_at_one_timeout() {
    let mut g = guard();
    g.handle_lateness(5_000, 60_000);
    assert_eq!(g.lateness_grace_ms(5_000), TIMEOUT_MS);
    assert_eq!(g.kept_grace_ms(), TIMEOUT_MS);
}

#[test]
fn a_clock_stepping_back_loses_no_report() {
    let mut g = guard();
    g.handle_lateness(10_000, 100);
    g.handle_lateness(9_000, 500);
    assert_eq!(g.lateness_grace_ms(10_000), 500);
}

#[test]
fn the_windows_stay_bounded() {
    let mut g = guard();
    for t in (0..100_000).step_by(7) {
        g.handle_lateness(t, 50 + t % 300);
        g.handle_expired(t, 1);
        assert!(g.lateness.len() <= 9 && g.expired.len() <= 9);
    }
}

#[test]
fn the_brake_holds_for_more_than_a_third_of_at_least_fifty() {
    let mut g = guard();
    assert!(!g.judge(0, 49, 49), "49 members: believable whatever the share");
    assert!(!g.judge(0, 99, 32), "32 of 99 is under a third");
    assert_eq!(g.hold_ms(), 0);
    assert!(g.judge(100, 99, 34), "34 of 99 is over a third");
    let alarm = g.brake().unwrap();
    assert_eq!((alarm.since_ms, alarm.suspects, alarm.members, alarm.hold_ms), (100, 34, 99, 750));
    assert_eq!(g.hold_ms(), 750);
    assert!(!g.needs_reading(150) && g.needs_reading(200));
    assert_eq!(g.poll_timeout(), Some(200));
    assert!(g.judge(200, 99, 40));
    assert_eq!(g.brake().unwrap().since_ms, 100, "still the same alarm");
    assert!(g.judge(300, 99, 5), "believable again, but a hold has not passed: still held");
    assert_eq!(g.brake().unwrap().suspects, 5, "the alarm shows the last reading");
    assert!(g.judge(949, 99, 5));
    assert!(!g.judge(950, 99, 5), "a hold after the last unbelievable reading: the alarm falls");
    assert_eq!((g.brake(), g.hold_ms(), g.needs_reading(1_000)), (None, 0, false));
}

#[test]
fn members_expired_within_the_window_count_as_suspects() {
    let mut g = guard();
    // 40 of 100 expired a moment ago; of the 60 left, none silent: 40 of 100 suspects.
    g.handle_expired(1_000, 40);
    assert_eq!(g.expired_recently(1_000), 40);
    assert!(g.judge(1_000, 60, 0));
    let alarm = g.brake().unwrap();
    assert_eq!((alarm.suspects, alarm.members), (40, 100));
    // A timeout (and an eighth) later they are history.
    g.prune(4_400);
    assert_eq!(g.expired_recently(4_400), 0);
    assert!(!g.judge(4_400, 60, 0), "and the hold after the last unbelievable reading passed");
}

#[test]
fn a_new_tenure_forgets_the_brake_and_expiries_but_not_lateness() {
    let mut g = guard();
    g.handle_lateness(1_000, 300);
    g.handle_expired(1_000, 80);
    assert!(g.judge(1_000, 20, 0));
    g.handle_new_tenure();
    assert_eq!((g.brake(), g.expired_recently(1_000), g.lateness_grace_ms(1_000)), (None, 0, 300));
}
