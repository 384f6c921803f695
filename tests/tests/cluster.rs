//! Three nodes form a cluster, elect a leader and replicate a write to every node.

use roster_tests::{TestCluster, eventually, json, ok};
use std::time::Duration;

#[test]
fn three_nodes_elect_a_leader_and_replicate() {
    let c = TestCluster::start("cluster", 3, |_| vec![]);
    let status = c.wait_leader(Duration::from_secs(20));
    let leader = status["leader"].as_u64().expect("leader id");
    assert!((1..=3).contains(&leader), "leader {leader} is not one of the nodes: {status}");

    ok(&c.roster(&["kv", "put", "greeting", "hello"]));
    // Linearizable read through any endpoint.
    assert_eq!(c.kv_get_at(&c.endpoints(), "greeting", false).as_deref(), Some("hello"));

    // Every node, asked alone for a stale (local) read, eventually has the value.
    for id in 1..=3u64 {
        let ep = c.endpoints_of(&[id]);
        eventually(Duration::from_secs(10), &format!("node {id} to have greeting=hello"), || {
            (c.kv_get_at(&ep, "greeting", true).as_deref() == Some("hello")).then_some(())
        });
    }

    // Status: 3 voters, and all 3 servers registered.
    let status = eventually(Duration::from_secs(15), "3 voters and 3 servers in status", || {
        let s = json(&c.roster(&["status", "--json"]));
        let voters = s["voters"].as_array().map_or(0, Vec::len);
        let servers = s["servers"].as_array().map_or(0, Vec::len);
        (voters == 3 && servers == 3).then_some(s)
    });
    let mut voter_ids: Vec<u64> =
        status["voters"].as_array().unwrap().iter().map(|v| v["id"].as_u64().expect("voter id")).collect();
    voter_ids.sort_unstable();
    assert_eq!(voter_ids, vec![1, 2, 3], "{status}");
    let mut server_ids: Vec<u64> =
        status["servers"].as_array().unwrap().iter().map(|s| s["id"].as_u64().expect("server id")).collect();
    server_ids.sort_unstable();
    assert_eq!(server_ids, vec![1, 2, 3], "{status}");
    for (id, addr) in
        status["voters"].as_array().unwrap().iter().map(|v| (v["id"].as_u64().unwrap(), v["addr"].clone()))
    {
        assert_eq!(addr.as_str(), Some(c.nodes[&id].addr.as_str()), "voter {id} address: {status}");
    }
}
