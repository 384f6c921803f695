//! A watch started before the fact sees a member's whole life, in order: two `roster run`
//! wrappers register, one is SIGKILLed and expires, the other's program exits and it
//! deregisters with the exit status; revisions strictly increase.

use roster_tests::{TestCluster, child_pids, kill_pid, process_departure, process_registered, watch_events, which};
use serde_json::json;
use std::time::Duration;

#[test]
fn watch_sees_register_expire_and_deregister_in_order() {
    // Pinned probes: once written, server averages do not change, so the watch sees only
    // the process events below.
    let c = TestCluster::start("lc-watch", 3, |_| {
        ["--heartbeat-interval-ms", "500", "--heartbeat-timeout-ms", "1500", "--probe", "fixed:cpu=10,mem=1000000"]
            .map(String::from)
            .to_vec()
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_resources(3, Duration::from_secs(20));

    let mut watch = c.spawn_client(&["watch", "--json", "--count", "4", "--timeout-ms", "20000"]);
    // The watch starts from the revision current when it connects: give it a moment.
    std::thread::sleep(Duration::from_millis(500));

    let sleep = which("sleep");
    let mut doomed = c.spawn_client(&["run", "--name", "doomed", "--heartbeat-interval-ms", "500", "--", &sleep, "30"]);
    roster_tests::eventually(Duration::from_secs(10), "doomed registered", || {
        c.processes()?.iter().any(|p| p["info"]["name"] == "doomed").then_some(())
    });
    let go = c.dir.0.join("go");
    let script = format!("while [ ! -e '{}' ]; do sleep 0.05; done; exit 3", go.display());
    let mut finisher =
        c.spawn_client(&["run", "--name", "finisher", "--heartbeat-interval-ms", "500", "--", "sh", "-c", &script]);
    roster_tests::eventually(Duration::from_secs(10), "finisher registered", || {
        c.processes()?.iter().any(|p| p["info"]["name"] == "finisher").then_some(())
    });

    let orphans = child_pids(doomed.id());
    doomed.kill9();
    for pid in orphans {
        kill_pid(pid);
    }
    roster_tests::eventually(Duration::from_secs(10), "doomed expired", || {
        (!c.processes()?.iter().any(|p| p["info"]["name"] == "doomed")).then_some(())
    });
    std::fs::write(&go, "").expect("signal the finisher");
    let out = finisher.wait_output(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3), "finisher: {}", String::from_utf8_lossy(&out.stderr));

    let out = watch.wait_output(Duration::from_secs(10));
    assert!(out.status.success(), "watch: {}", String::from_utf8_lossy(&out.stderr));
    let events = watch_events(&out.stdout);
    assert_eq!(events.len(), 4, "{events:#?}");
    let revs: Vec<u64> = events.iter().map(|e| e["revision"].as_u64().expect("revision")).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "revisions not increasing: {revs:?}");

    let doomed_id = process_registered(&events[0], "doomed").unwrap_or_else(|| panic!("first: {}", events[0]))["id"]
        .as_u64()
        .expect("id");
    let finisher_id =
        process_registered(&events[1], "finisher").unwrap_or_else(|| panic!("second: {}", events[1]))["id"]
            .as_u64()
            .expect("id");
    let expired = process_departure(&events[2], doomed_id).unwrap_or_else(|| panic!("third: {}", events[2]));
    assert_eq!(expired["type"], "expired", "doomed should have expired: {}", events[2]);
    assert_eq!(
        process_departure(&events[3], finisher_id),
        Some(json!({"type": "deregistered", "exit_status": 3})),
        "fourth: {}",
        events[3]
    );
}
