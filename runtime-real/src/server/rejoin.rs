//! A node with an empty data directory and the cluster around it: whether it may form a
//! new cluster (`check_peers`, asked of its peers before bootstrapping), how the leader
//! lets it back in (`readmit`), and `member replace` (demote, replicate from scratch,
//! wait for the catch-up, promote). The node's side is the vote gate (`vote_gate.rs`).

use crate::net::transport::Connector;
use crate::net::wire::{ClientRequest, ClientResponse, RequestError};
use crate::raft::NodeId;
use crate::server::Raft;
use openraft_rt::WatchReceiver;
use roster_kernel::formation::{Answer, CheckConfig, Decision, FormationCheck, PeerStatus, Start};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long the leader keeps asking a node to take replication again: long enough for a
/// node that was started just before `member add` to open its port.
const READMIT_TIMEOUT_MS: u64 = 5_000;
const READMIT_RETRY_MS: u64 = 100;
const CATCH_UP_POLL_MS: u64 = 50;

/// Asks the peers whether a cluster already runs, and decides whether this fresh start
/// (`me`) may form one: the rules are the kernel's (`roster_kernel::formation`); this only
/// sends its asks, every peer at once, and hands back the answers.
pub async fn check_peers(
    peers: &BTreeMap<NodeId, String>,
    me: Start,
    credential: &roster_client::Credential,
    connector: &Connector,
) -> Decision {
    drive_check(peers, me, CheckConfig::default(), |addr, timeout_ms| async move {
        match crate::server::relay::ask(&addr, credential, connector, ClientRequest::Status, timeout_ms).await {
            Ok(ClientResponse::Status(s)) => Answer::Status(peer_status(&s)),
            Ok(other) => {
                tracing::debug!(peer = addr, answer = ?other, "unexpected answer to the bootstrap check");
                Answer::NoAnswer
            }
            Err(e) => {
                tracing::debug!(peer = addr, error = %e, "peer did not answer the bootstrap check");
                Answer::NoAnswer
            }
        }
    })
    .await
}

/// Runs a `FormationCheck` over `peers` to its decision, asking each peer with `ask(addr,
/// timeout_ms)` (every ask of a pass at once, each bounded by the kernel's deadline).
async fn drive_check<F, Fut>(peers: &BTreeMap<NodeId, String>, me: Start, config: CheckConfig, ask: F) -> Decision
where
    F: Fn(String, u64) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    use futures::StreamExt;
    let origin = tokio::time::Instant::now();
    let now = || origin.elapsed().as_millis() as u64;
    let mut check = FormationCheck::new(now(), me, peers.keys().copied(), config);
    let mut pending = futures::stream::FuturesUnordered::new();
    loop {
        if let Some(decision) = check.decision() {
            return decision.clone();
        }
        for a in check.poll_asks(now()) {
            let addr = peers.get(&a.peer).cloned().unwrap_or_default();
            let until = origin + Duration::from_millis(a.until_ms);
            let asked = ask(addr, a.until_ms.saturating_sub(now()).max(1));
            pending
                .push(async move { (a.peer, crate::rt::Timeout::new(asked, until).await.unwrap_or(Answer::NoAnswer)) });
        }
        let wake = origin + Duration::from_millis(check.poll_timeout().unwrap_or(0));
        // Biased: an unbiased select draws from a thread-local RNG that the simulator
        // does not seed, and the order of polls would differ from run to run.
        tokio::select! {
            biased;
            Some((peer, answer)) = pending.next(), if !pending.is_empty() => check.handle_answer(now(), peer, answer),
            _ = tokio::time::sleep_until(wake) => check.handle_timeout(now()),
        }
    }
}

/// What formation reads of a peer's status.
fn peer_status(s: &crate::net::wire::ClusterStatus) -> PeerStatus {
    PeerStatus {
        deciding: s.deciding,
        formed_with: s.formed_with.iter().map(|&(node, incarnation)| Start { node, incarnation }).collect(),
        leader: s.leader,
        term: s.term,
        commit_index: s.commit_index,
    }
}

/// Tells node `id` at `addr` to take replication from this leader again (see the vote
/// gate), naming the leader's last log index as the point at which it may vote again.
/// A node that cannot be reached yet (still starting: `member add` often follows its
/// start at once) is asked again until the bound; readmission is idempotent. `cluster`
/// is this cluster's id, which the node adopts (one of another cluster refuses).
pub async fn readmit(
    raft: &Raft,
    leader: NodeId,
    credential: &roster_client::Credential,
    connector: &Connector,
    cluster: Option<u64>,
    id: NodeId,
    addr: &str,
) -> Result<u64, RequestError> {
    let last_log_index = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(READMIT_TIMEOUT_MS);
    let failed = |reason: String| RequestError::ReadmitFailed { node: id, reason };
    loop {
        let left_ms = deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64;
        let request = ClientRequest::Readmit { leader, last_log_index, cluster };
        let unreachable = match crate::rt::Timeout::new(
            crate::server::relay::ask(addr, credential, connector, request, left_ms.max(1)),
            deadline,
        )
        .await
        {
            Ok(Ok(ClientResponse::Done)) => return Ok(last_log_index),
            Ok(Ok(ClientResponse::Error(e))) => return Err(failed(e.to_string())),
            Ok(Ok(other)) => return Err(failed(format!("unexpected answer {other:?}"))),
            Ok(Err(e)) => format!("{addr}: {e}"),
            Err(_) => format!("{addr} did not answer"),
        };
        if tokio::time::Instant::now() + Duration::from_millis(READMIT_RETRY_MS) >= deadline {
            return Err(failed(format!("{unreachable} (asked for {READMIT_TIMEOUT_MS} ms)")));
        }
        tracing::debug!(node = id, error = %unreachable, "node not reachable yet; asking again");
        tokio::time::sleep(Duration::from_millis(READMIT_RETRY_MS)).await;
    }
}

/// `member replace ID` on the leader: carries out the kernel's plan
/// (`roster_kernel::membership::plan_replace`). Errors name the node and what to do.
pub async fn replace(
    raft: &Raft,
    leader: NodeId,
    credential: &roster_client::Credential,
    connector: &Connector,
    cluster: Option<u64>,
    id: NodeId,
) -> Result<(), RequestError> {
    use roster_kernel::membership::{ReplaceStep, plan_replace};
    let (addr, voters, learners) = {
        let m = raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let addr = membership.get_node(&id).map(|n| n.addr.clone());
        (
            addr,
            membership.voter_ids().collect::<BTreeSet<NodeId>>(),
            membership.learner_ids().collect::<BTreeSet<NodeId>>(),
        )
    };
    let steps = plan_replace(&voters, &learners, leader, id)?;
    let addr = addr.ok_or(RequestError::UnknownNode { node: id })?;
    // Once demoted the node is a learner: a failure says so, and what brings it back.
    let still_learner = |reason: String| RequestError::ReadmitFailed {
        node: id,
        reason: format!(
            "{reason}; node {id} stays a learner (not counted in the quorum) until `roster member replace {id}` \
             succeeds"
        ),
    };
    let mut target = 0;
    for step in steps {
        match step {
            ReplaceStep::Demote { voters } => {
                // Kept as a learner (retain): the leader goes on replicating to it.
                raft.change_membership(voters, true)
                    .await
                    .map_err(|e| RequestError::MembershipChange { reason: e.to_string() })?;
                tracing::info!(node = id, "replacing node: demoted to learner");
            }
            ReplaceStep::AllowRevert => match raft.trigger().allow_next_revert(&id, true).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(still_learner(e.to_string())),
                Err(e) => return Err(still_learner(e.to_string())),
            },
            ReplaceStep::Readmit => {
                target =
                    readmit(raft, leader, credential, connector, cluster, id, &addr).await.map_err(|e| match e {
                        RequestError::ReadmitFailed { reason, .. } => still_learner(reason),
                        other => other,
                    })?;
                tracing::info!(node = id, target, "replacing node: readmitted, catching up as learner");
            }
            ReplaceStep::CatchUp { timeout_ms } => wait_caught_up(raft, id, target, timeout_ms).await?,
            ReplaceStep::Promote { voters } => {
                raft.change_membership(voters, false)
                    .await
                    .map_err(|e| RequestError::MembershipChange { reason: e.to_string() })?;
                tracing::info!(node = id, "replacing node: caught up and promoted to voter");
            }
        }
    }
    Ok(())
}

/// Until the leader's replication to `id` has matched `target`, bounded.
async fn wait_caught_up(raft: &Raft, id: NodeId, target: u64, timeout_ms: u64) -> Result<(), RequestError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let matched = {
            let m = raft.metrics().borrow_watched().clone();
            m.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten().map(|l| l.index)
        };
        if matched.is_some_and(|i| i >= target) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RequestError::CatchUpTimedOut { node: id, timeout_ms, matched, target });
        }
        tokio::time::sleep(Duration::from_millis(CATCH_UP_POLL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::formation::Running;

    fn running() -> PeerStatus {
        PeerStatus { leader: Some(3), term: 4, commit_index: Some(37), ..PeerStatus::default() }
    }

    /// The check with a short budget, over peers 2 (powered off: its asks never come back)
    /// and 3 (runs the cluster and answers at once). Asked one after another, each with the
    /// whole remaining budget, peer 2 used it all, peer 3 was never asked, and a wiped node
    /// formed a cluster of its own beside the running one.
    #[tokio::test]
    async fn one_silent_peer_does_not_starve_the_check() {
        let peers: BTreeMap<NodeId, String> =
            [(1, "one"), (2, "two"), (3, "three")].into_iter().map(|(id, addr)| (id, addr.to_string())).collect();
        let config = CheckConfig { budget_ms: 600, ask_timeout_ms: 150, retry_ms: 20 };
        let me = Start { node: 1, incarnation: 5 };
        let decision = drive_check(&peers, me, config, |addr, _| async move {
            match addr.as_str() {
                "three" => Answer::Status(running()),
                _ => std::future::pending().await,
            }
        })
        .await;
        let Decision::Wait { running: Running { peer, leader, .. } } = decision else {
            panic!("a wiped node must not form beside a running cluster: {decision:?}")
        };
        assert_eq!((peer, leader), (3, Some(3)));
    }
}
