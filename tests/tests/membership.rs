//! Membership changes under a write load: add a 4th node, remove a follower; the voter set
//! follows and no acknowledged write is lost.

use roster_tests::{TestCluster, WriteLoad, eventually, ok};
use std::process::Stdio;
use std::time::Duration;

fn voter_ids(status: &serde_json::Value) -> Vec<u64> {
    let mut ids: Vec<u64> = status["voters"]
        .as_array()
        .expect("voters array")
        .iter()
        .map(|v| v["id"].as_u64().expect("voter id"))
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn add_a_node_then_remove_a_follower_under_load() {
    let mut c = TestCluster::start("membership", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    for i in 0..10 {
        ok(&c.roster(&["kv", "put", &format!("before{i}"), &format!("b{i}")]));
    }
    let addr4 = c.plan_process(4, vec![]);

    let load = WriteLoad::start(&c, &c.endpoints_of(&[1, 2, 3]), "load");
    load.wait_more(3, Duration::from_secs(20));

    // `member add` is typed while the new node is still starting: the leader waits for it.
    let add = c
        .command_at(&c.endpoints_of(&[1, 2, 3]), &["member", "add", "4", &addr4])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run member add");
    std::thread::sleep(Duration::from_millis(1_000));
    c.spawn(4);
    ok(&add.wait_with_output().expect("member add output"));
    let s = eventually(Duration::from_secs(20), "node 4 among the voters", || {
        let s = c.status_at(&c.endpoints_of(&[1, 2, 3]))?;
        (voter_ids(&s) == vec![1, 2, 3, 4]).then_some(s)
    });
    let addr_of_4 = s["voters"].as_array().unwrap().iter().find(|v| v["id"] == 4).map(|v| v["addr"].clone());
    assert_eq!(addr_of_4.as_ref().and_then(|a| a.as_str()), Some(addr4.as_str()), "{s}");
    // The new node has the data written before it joined.
    let ep4 = c.endpoints_of(&[4]);
    eventually(Duration::from_secs(20), "node 4 to have the earlier writes", || {
        (c.kv_get_at(&ep4, "before9", true).as_deref() == Some("b9")).then_some(())
    });
    load.wait_more(3, Duration::from_secs(20));

    // Remove a follower (never the leader) among the initial nodes.
    let leader = c.leader();
    let gone = (1..=3).find(|id| *id != leader).expect("a follower");
    ok(&c.roster(&["member", "remove", &gone.to_string(), "--timeout-ms", "20000"]));
    let mut expected: Vec<u64> = (1..=4).filter(|id| *id != gone).collect();
    expected.sort_unstable();
    let remaining = c.endpoints_of(&expected);
    eventually(Duration::from_secs(20), "the voter set without the removed node", || {
        let s = c.status_at(&remaining)?;
        (voter_ids(&s) == expected && s["leader"].as_u64().is_some_and(|l| l != gone)).then_some(())
    });
    load.wait_more(3, Duration::from_secs(30));
    let acked = load.finish();

    // Writes still go through with the removed node stopped.
    c.kill9(gone);
    ok(&c.roster_at(&remaining, &["kv", "put", "after", "done"]));

    for i in 0..10 {
        let got =
            eventually(Duration::from_secs(10), "a read", || c.kv_lookup_at(&remaining, &format!("before{i}"), false));
        assert_eq!(got, Some(format!("b{i}")), "before{i} lost\n{}", c.logs());
    }
    for (k, v) in &acked {
        let got = eventually(Duration::from_secs(10), "a read", || c.kv_lookup_at(&remaining, k, false));
        assert_eq!(got.as_deref(), Some(v.as_str()), "acknowledged write {k}={v} lost\n{}", c.logs());
    }
    eventually(Duration::from_secs(10), "node 4 to have the last write", || {
        (c.kv_get_at(&ep4, "after", true).as_deref() == Some("done")).then_some(())
    });
}
