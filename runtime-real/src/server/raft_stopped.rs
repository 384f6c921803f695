//! A node whose Raft core stopped (a fail-stopped log: a full disk, a failed fsync) must
//! not stay up. Its metrics freeze at their last values, so a stopped leader goes on
//! reporting itself leader: clients and members that follow its status or hints keep
//! sending it writes and heartbeats, which it can neither commit nor forward, while the
//! rest of the cluster elects a new leader and expires every member that kept talking to
//! the old one (found by the nemesis suite's full-disk fault on the leader). The process
//! exits instead, naming the cause; the others serve, and a restart recovers from what is
//! durable.

use crate::server::Raft;
use openraft_rt::WatchReceiver;

/// Returns once the Raft core has stopped, with why (the fatal error, which names the
/// file of a fail-stopped log).
pub async fn raft_stopped(raft: &Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the Raft core stopped".to_string();
        }
    }
}

/// Whether the Raft core has stopped (shut down, or fail-stopped): requests handed to it
/// now only fail.
pub fn has_stopped(raft: &Raft) -> bool {
    raft.metrics().borrow_watched().running_state.is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::node::Node;
    use crate::storage::{MemDisk, StorageOptions};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_disk_fails_reports_that_its_raft_stopped_naming_the_file() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = NodeConfig::new(1, addr.clone(), std::env::temp_dir().join("roster-raft-stopped-unused"));
        config.peers.insert(1, addr);
        config.bootstrap = true;
        config.token = Some("raft-stopped-test-token".into());
        config.peer_key = Some("raft-stopped-test-peer-key-0123456789".into());
        let disk = MemDisk::new();
        let probe = crate::probe::ProbeSpec::parse("fixed:cpu=1,mem=1").unwrap().build();
        let node = Node::start_with_storage(
            config,
            Arc::new(disk.clone()),
            probe,
            StorageOptions::for_mem(roster_kernel::Limits::default()),
        )
        .await
        .expect("node starts");
        node.raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leader").await.expect("leads");
        let stopped = tokio::spawn({
            let raft = node.raft.clone();
            async move { raft_stopped(&raft).await }
        });
        disk.set_failing(true);
        // The node's own agent writes (its registration, resources); one more to be sure.
        let proposal = roster_kernel::Proposal {
            at_unix_ms: 1,
            body: roster_kernel::ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node },
        };
        let _ = node.raft.client_write(crate::raft::entry::Batch::one(proposal)).await;
        let why = tokio::time::timeout(Duration::from_secs(10), stopped)
            .await
            .expect("the Raft core stops once its log fail-stops")
            .expect("the watcher task");
        assert!(why.contains("fail-stopped on wal-"), "the cause names the file: {why}");
    }
}
