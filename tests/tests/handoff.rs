//! Graceful leadership hand-off: `roster member transfer-leader`, and a leader that is
//! asked to stop (SIGTERM) hands leadership over before it leaves, so a rolling restart of
//! every node under a steady write load loses no acknowledged write and expires nobody.

use roster_tests::{TestCluster, WriteLoad, eventually, json};
use std::time::Duration;

#[test]
fn transfer_leader_moves_leadership_to_the_named_voter() {
    let c = TestCluster::start("handoff-transfer", 3, |_| vec![]);
    let old = c.leader();
    let old_term = c.status_at(&c.endpoints_of(&[old])).expect("the leader's status")["term"].as_u64().unwrap();
    let to = (1..=3).find(|id| *id != old).expect("another voter");
    let out = c.roster(&["member", "transfer-leader", "--to", &to.to_string(), "--json"]);
    assert_eq!(json(&out)["leader"].as_u64(), Some(to), "{}", c.logs());
    // The old leader itself follows the new one, in a later term: it stepped down.
    let seen_by_old = eventually(Duration::from_secs(10), "the old leader to name the new one", || {
        c.status_at(&c.endpoints_of(&[old])).filter(|s| s["leader"].as_u64() == Some(to))
    });
    assert!(seen_by_old["term"].as_u64().unwrap() > old_term, "no new term: {seen_by_old}");

    // A target that is not a voter is refused with the reason, and leadership stays.
    let out = c.roster(&["member", "transfer-leader", "--to", "9"]);
    assert!(!out.status.success(), "transfer to a non-voter succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node 9") && err.contains("not a voter"), "unclear refusal: {err}");
    assert_eq!(c.leader(), to);
}

#[test]
fn rolling_restart_hands_leadership_over_and_loses_nothing() {
    let mut c = TestCluster::start("handoff-rolling", 3, |_| vec![]);
    c.leader();
    let mut canary = c.spawn_client(&["run", "--name", "canary", "--", "sleep", "600"]);
    eventually(Duration::from_secs(20), "the canary to register", || {
        c.processes()?.iter().any(|p| p["info"]["name"] == "canary").then_some(())
    });
    let load = WriteLoad::start(&c, &c.endpoints(), "roll-");
    load.wait_more(3, Duration::from_secs(20));

    let mut handed_over = 0;
    for id in 1..=3u64 {
        let was_leader = c.leader() == id;
        let status = c.stop(id);
        assert!(status.success(), "node {id} did not stop cleanly: {status}\n{}", c.logs());
        if was_leader {
            let log = c.log_of(id);
            assert!(log.contains("leadership handed over"), "leader {id} stopped without a hand-off:\n{log}");
            handed_over += 1;
        }
        c.spawn(id);
        let addr = c.nodes[&id].addr.clone();
        eventually(Duration::from_secs(20), &format!("node {id} to be back and applying"), || {
            c.status_at(&addr)?["applied_index"].as_u64()
        });
        load.wait_more(3, Duration::from_secs(30));
    }
    assert!(handed_over >= 1, "no leader was stopped: the test did not exercise a hand-off");

    let acked = load.finish();
    let ep = c.endpoints();
    for (k, v) in &acked {
        let got = eventually(Duration::from_secs(10), &format!("a linearizable read of {k}"), || {
            c.kv_lookup_at(&ep, k, false)
        });
        assert_eq!(got.as_deref(), Some(v.as_str()), "acknowledged write {k}={v} lost\n{}", c.logs());
    }
    // The canary heartbeated throughout: it is still a member, and not in the tombstones.
    let procs = c.processes().expect("ls");
    assert!(procs.iter().any(|p| p["info"]["name"] == "canary"), "the live canary was expired\n{}", c.logs());
    assert!(canary.child().try_wait().expect("canary status").is_none(), "the canary's wrapper ended");
}
