//! A node that lost its disk: killed, its data directory wiped, restarted with the same
//! id, peers and --bootstrap. It must not form a cluster of its own, vote or serve stale
//! data, and must say why; `roster member replace ID` brings it back with every write.

use roster_tests::{TestCluster, eventually, ok};
use std::time::Duration;

#[test]
fn a_follower_that_lost_its_disk_waits_without_voting_until_replaced() {
    let mut c = TestCluster::start("disk-loss", 3, |_| vec![]);
    let leader = c.leader();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for k in &keys {
        ok(&c.roster(&["kv", "put", k, &format!("v-{k}")]));
    }
    let lost = (1..=3).find(|id| *id != leader).expect("a follower");
    let lost_ep = c.endpoints_of(&[lost]);
    eventually(Duration::from_secs(10), "the follower applied every write", || {
        (c.kv_get_at(&lost_ep, "k19", true).as_deref() == Some("v-k19")).then_some(())
    });

    c.kill9(lost);
    std::fs::remove_dir_all(c.data_dir(lost)).expect("wipe the data directory");
    // The log file is appended to across restarts: look only at what follows.
    let log_before = c.log_of(lost).len();
    c.spawn(lost);

    // It says why it waits, in its log and in its status.
    let status = eventually(Duration::from_secs(10), "the wiped node answers status with a reason", || {
        // (It says "deciding whether to bootstrap" while it asks its peers.)
        c.status_at(&lost_ep).filter(|s| s["waiting"].as_str().is_some_and(|w| w.contains("member replace")))
    });
    let waiting = status["waiting"].as_str().expect("waiting reason").to_string();
    assert!(waiting.contains("a cluster already runs"), "status says why: {waiting}");
    assert!(waiting.contains("member replace"), "status says what to do: {waiting}");
    let log = c.log_of(lost)[log_before..].to_string();
    assert!(!log.contains("cluster initialised"), "a wiped node must not bootstrap again:\n{log}");
    assert!(log.contains("not bootstrapping"), "its log says why:\n{log}");
    // A restart does not forget it (the marker in its data directory).
    c.kill9(lost);
    let log_before = c.log_of(lost).len();
    c.spawn(lost);
    eventually(Duration::from_secs(10), "the restarted node still waits", || {
        c.status_at(&lost_ep).filter(|s| s["waiting"].as_str().is_some_and(|w| w.contains("member replace")))
    });
    let log = c.log_of(lost)[log_before..].to_string();
    assert!(!log.contains("cluster initialised"), "a restart of a waiting node must not bootstrap:\n{log}");
    // No stale data from an empty node.
    assert_eq!(c.kv_lookup_at(&lost_ep, "k0", true), None, "a wiped node serves no stale reads");

    // Its vote is refused even when asked: take the leader down, and the two left must
    // not elect anyone (the wiped node holds none of the log).
    c.kill9(leader);
    eventually(Duration::from_secs(15), "the wiped node to refuse a vote, saying why", || {
        c.log_of(lost).contains("refusing to vote").then_some(())
    });
    let others = c.endpoints_of(&[lost, (1..=3).find(|id| *id != leader && *id != lost).unwrap()]);
    let s = c.status_at(&others);
    assert!(
        s.as_ref().is_none_or(|s| !s["leader"].is_u64() || s["leader"].as_u64() == Some(leader)),
        "no new leader may be elected with the wiped node's vote: {s:?}"
    );
    c.spawn(leader);
    // (The wiped node takes no replication, so it does not know the leader: ask the others.)
    let healthy = c.endpoints_of(&[leader, (1..=3).find(|id| *id != leader && *id != lost).unwrap()]);
    eventually(Duration::from_secs(20), "a leader among the healthy nodes", || {
        c.status_at(&healthy).filter(|s| s["leader"].is_u64())
    });

    let out = c.roster_at(&healthy, &["member", "replace", &lost.to_string(), "--json"]);
    ok(&out);
    let status = eventually(Duration::from_secs(20), "the replaced node caught up and votes again", || {
        c.status_at(&lost_ep).filter(|s| s["waiting"].is_null() && s["applied_index"].is_u64())
    });
    let voters: Vec<u64> = status["voters"].as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert!(voters.contains(&lost), "replaced node is a voter again: {status}");
    for k in &keys {
        assert_eq!(c.kv_get_at(&lost_ep, k, true).as_deref(), Some(format!("v-{k}").as_str()), "stale read of {k}");
    }
}

#[test]
fn a_node_with_an_empty_directory_and_no_bootstrap_says_it_waits() {
    let mut c = TestCluster::start("no-bootstrap", 3, |_| vec![]);
    c.leader();
    let addr = c.add_process(4, vec![]);
    let ep = c.endpoints_of(&[4]);
    let status = eventually(Duration::from_secs(10), "the new node answers status", || {
        c.status_at(&ep).filter(|s| s["waiting"].as_str().is_some_and(|w| w.contains("member add")))
    });
    assert!(status["waiting"].as_str().unwrap().contains("without --bootstrap"), "{status}");
    ok(&c.roster_at(&c.endpoints_of(&[1, 2, 3]), &["member", "add", "4", &addr]));
    eventually(Duration::from_secs(20), "the added node caught up and votes", || {
        c.status_at(&ep).filter(|s| s["waiting"].is_null())
    });
}

/// Initial members started a moment apart (as by hand, or a slow machine) form the cluster
/// together: the late one is seen deciding by the others' bootstrap check and joins the
/// formation instead of waiting for `member replace`.
#[test]
fn an_initial_member_started_a_moment_late_joins_the_formation() {
    let mut c = TestCluster::start_all_but("late-initial", 3, &[3], &[], |_| vec![]);
    // Late enough that the others would have formed without it; within their check's 2 s.
    std::thread::sleep(Duration::from_millis(800));
    c.spawn(3);
    let ep = c.endpoints_of(&[3]);
    let status = eventually(Duration::from_secs(20), "the late member to apply as a voter in good standing", || {
        c.status_at(&ep).filter(|s| s["applied_index"].as_u64().is_some() && s["waiting"].is_null())
    });
    let voters: Vec<u64> = status["voters"].as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(voters, vec![1, 2, 3], "{status}");
    ok(&c.roster_at(&c.endpoints_of(&[1, 2]), &["kv", "put", "after-formation", "1"]));
    eventually(Duration::from_secs(10), "the late member to apply the put", || {
        (c.kv_get_at(&ep, "after-formation", true).as_deref() == Some("1")).then_some(())
    });
    let log = c.log_of(3);
    assert!(!log.contains("not bootstrapping"), "the late member must not wait for member replace:\n{log}");
}

#[test]
fn replace_refuses_unknown_ids() {
    let c = TestCluster::start("replace-errors", 3, |_| vec![]);
    c.leader();
    let out = c.roster(&["member", "replace", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a member"), "{err}");
}
