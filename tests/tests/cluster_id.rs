//! The cluster identity: every node of a cluster shows the same id, and a node started
//! with another cluster's data directory at a member's address is refused by the
//! members (and refuses them), naming both clusters; the cluster goes on serving.

use roster_tests::{ChildGuard, TestCluster, eventually, ok, roster_bin};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_node_of_another_cluster_is_refused_by_name() {
    let mut a = TestCluster::start("cid-a", 3, |_| vec![]);
    let mut b = TestCluster::start("cid-b", 3, |_| vec![]);
    a.wait_leader(Duration::from_secs(20));
    b.wait_leader(Duration::from_secs(20));
    let id_a = a.wait_cluster_id(Duration::from_secs(10));
    let id_b = b.wait_cluster_id(Duration::from_secs(10));
    assert_ne!(id_a, id_b, "two clusters, two ids");
    assert!(ok(&a.roster(&["status"])).contains(&format!("cluster: {id_a}")));
    ok(&b.roster(&["kv", "put", "only-in-b", "x"]));

    // Node 3 of A is replaced, at its address, by B's node 3 and its data directory.
    let leader = a.leader();
    let victim = (1..=3).rev().find(|id| *id != leader).expect("a follower");
    a.kill9(victim);
    b.kill9(victim);
    let log = a.dir.0.join("foreign.log");
    // Guarded: a failed assertion below must not leave it running.
    let mut foreign = ChildGuard(Some(
        Command::new(roster_bin())
            .arg("node")
            .args(["--id", &victim.to_string(), "--listen", &a.nodes[&victim].addr])
            .arg("--data-dir")
            .arg(b.data_dir(victim))
            .arg("--token-file")
            .arg(&a.token_file)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the foreign node"),
    ));
    let refusal = eventually(Duration::from_secs(15), "the foreign node to refuse A's leader", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().find(|l| l.contains("belongs to cluster")).map(str::to_string)
    });
    assert!(refusal.contains(&id_a) && refusal.contains(&id_b), "both clusters named: {refusal}");

    // A goes on with its two other nodes; nothing of B's reaches it.
    let rest: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    ok(&a.roster_at(&a.endpoints_of(&rest), &["kv", "put", "after", "1"]));
    assert_eq!(a.kv_lookup_at(&a.endpoints_of(&rest), "only-in-b", false), Some(None));
    let foreign_status =
        eventually(Duration::from_secs(10), "the foreign node's status", || a.status_at(&a.endpoints_of(&[victim])));
    assert_eq!(foreign_status["cluster_id"].as_str(), Some(id_b.as_str()), "{foreign_status}");
    foreign.kill9();
}

/// The id is drawn at random by the first leader: the same members with the same key,
/// formed again from empty directories, are another cluster with another id.
#[test]
fn the_same_peers_and_key_formed_again_get_a_new_id() {
    let mut c = TestCluster::start("cid-again", 3, |_| vec![]);
    let first = c.wait_cluster_id(Duration::from_secs(20));
    for id in 1..=3 {
        c.kill9(id);
        std::fs::remove_dir_all(c.data_dir(id)).expect("wipe the data directory");
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    let second = c.wait_cluster_id(Duration::from_secs(20));
    assert_ne!(first, second, "a new formation draws a new id");
    assert_eq!(first.len(), 16, "{first}");
}
