//! `roster bench heartbeats` as a generator: every member is registered and then beats on
//! its own schedule, from its registration until the steady time after the last one. How
//! fast any of it goes is a benchmark's business (`scripts/measure C`), not a test's.

use roster_tests::{TestCluster, ok};
use serde_json::Value;
use std::time::Duration;

#[test]
fn bench_heartbeats_beats_every_member_from_its_registration_on() {
    const MEMBERS: u64 = 40;
    // A long timeout keeps every member registered for the count at the end.
    let c = TestCluster::start("bench-hb", 1, |_| vec!["--heartbeat-timeout-ms".into(), "600000".into()]);
    c.wait_leader(Duration::from_secs(20));
    let out = ok(&c.roster(&[
        "bench",
        "heartbeats",
        "--members",
        &MEMBERS.to_string(),
        "--duration-s",
        "2",
        "--interval-ms",
        "200",
        "--connections",
        "1",
        "--timeout-ms",
        "30000",
    ]));
    let figures: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(figures["members"], MEMBERS, "{figures}");
    assert_eq!(figures["failed"], 0, "{figures}");
    // A member beats at its registration + k × 200 ms (k ≥ 1) for as long as that is before
    // 2 s after the last registration: at least 9 beats each, however late they were sent.
    let answered = figures["heartbeats_ok"].as_u64().expect("heartbeats_ok")
        + figures["false_expiries"].as_u64().expect("false_expiries");
    assert!(answered >= MEMBERS * 9, "{answered} heartbeats for {MEMBERS} members: {figures}");
    let status: Value = serde_json::from_str(&ok(&c.roster(&["status", "--json"]))).expect("status --json");
    assert_eq!(status["processes"]["total"], MEMBERS, "every member registered once");
}
