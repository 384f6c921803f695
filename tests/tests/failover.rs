//! The leader dies (SIGKILL) under a steady write load: a new leader takes over and no
//! acknowledged write is lost.

use roster_tests::{TestCluster, WriteLoad, eventually};
use std::time::Duration;

#[test]
fn leader_kill_loses_no_acknowledged_write() {
    let mut c = TestCluster::start("failover", 3, |_| vec![]);
    let old = c.leader();
    let old_term = c.status_at(&c.endpoints_of(&[old])).expect("the leader's status")["term"].as_u64().unwrap();
    let load = WriteLoad::start(&c, &c.endpoints(), "k");
    load.wait_more(5, Duration::from_secs(20));

    c.kill9(old);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let ep = c.endpoints_of(&survivors);
    let new = eventually(Duration::from_secs(20), "a new leader among the survivors", || {
        c.status_at(&ep).filter(|s| s["leader"].as_u64().is_some_and(|l| l != old))
    });
    // An election, not a stale answer: every survivor follows the new leader in a later term.
    for id in &survivors {
        let s = eventually(Duration::from_secs(10), "each survivor to follow the new leader", || {
            c.status_at(&c.endpoints_of(&[*id])).filter(|s| s["leader"] == new["leader"])
        });
        assert!(s["term"].as_u64().unwrap() > old_term, "node {id} is still in term {old_term}: {s}");
    }

    // Writes go through again after the failover.
    load.wait_more(5, Duration::from_secs(30));
    let acked = load.finish();
    assert!(acked.len() >= 10, "only {} puts acknowledged", acked.len());

    for (k, v) in &acked {
        let got = eventually(Duration::from_secs(10), &format!("a linearizable read of {k}"), || {
            c.kv_lookup_at(&ep, k, false)
        });
        assert_eq!(got.as_deref(), Some(v.as_str()), "acknowledged write {k}={v} lost\n{}", c.logs());
    }
}
