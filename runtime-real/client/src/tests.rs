//! The client against fake nodes on 127.0.0.1 (see `fake_server.rs`).

use crate::fake_server::{FakeCluster, TOKEN};
use crate::wire::{ClientRequest, ClientResponse};
use crate::{Client, ClientError, ClientOptions, Cluster, ProcessHandle, RetryConfig, Session};
use roster_kernel::{Command, MemberId, ProcessInfo, Reply, ResourceAverage, ServerId};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

fn options(endpoints: Vec<String>) -> ClientOptions {
    ClientOptions { endpoints, token: TOKEN.into(), connect_timeout_ms: 500, request_timeout_ms: 2_000 }
}

fn retry() -> RetryConfig {
    RetryConfig { max_queued: 64, base_backoff_ms: 5, max_backoff_ms: 50, request_timeout_ms: 500 }
}

fn put(i: usize) -> Command {
    Command::KvPut { key: format!("k{i}"), value: format!("v{i}") }
}

/// An address where nothing listens: bound, then closed.
async fn dead_addr() -> String {
    let l = tokio::net::TcpListener::bind(crate::fake_server::local_addr()).await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn commands_apply_once_in_order_through_redirects_lost_answers_and_a_new_leader() {
    // Three nodes, B leads; the client knows only A. A redirects to B, which the client
    // learns; B's answer to command 3 is lost with its connection; after command 6 the
    // leadership moves to C, which the client has never heard of.
    let fake = FakeCluster::start(3, Some(1)).await;
    {
        let mut s = fake.state();
        s.drop_answer_at.insert(3);
        s.move_leader_at.insert(6, 2);
        s.drop_answer_at.insert(8);
        s.retry_later_once = true;
    }
    let cluster = Cluster::new(options(vec![fake.addr(0)])).unwrap();
    let session = Session::open(cluster.clone(), retry(), 7).await.unwrap();
    assert_eq!(cluster.endpoint_count(), 2, "B was learned from A's hint");

    let pending: Vec<_> = (1..=10).map(|i| session.submit(put(i)).unwrap()).collect();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.seq(), i as u64 + 1);
        let answer = tokio::time::timeout(Duration::from_secs(10), p).await.expect("answered in time");
        assert_eq!(answer, Ok(Ok(Reply::Done { revision: i as u64 + 1 })));
    }

    {
        let s = fake.state();
        let applied: Vec<Command> = s.applied.iter().map(|(_, _, c)| c.clone()).collect();
        assert_eq!(applied, (1..=10).map(put).collect::<Vec<_>>(), "each once, in submission order");
        let seqs: Vec<u64> = s.applied.iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
        assert!(s.duplicates >= 2, "the lost answers were recovered from the dedup record");
        assert!(s.drop_answer_at.is_empty() && s.move_leader_at.is_empty() && !s.retry_later_once, "every fault fired");
        assert!(s.submits_seen.iter().any(|(node, _)| *node == 2), "C took commands after the move");
        assert_eq!(cluster.endpoint_count(), 3, "C was learned from B's hint");
        assert_eq!(cluster.leader(), Some(2));
    }
    session.close().await;
    assert!(matches!(session.submit(put(11)), Err(ClientError::Closed(_))));
}

#[tokio::test]
async fn commands_wait_out_a_whole_cluster_outage() {
    let fake = FakeCluster::start(2, Some(0)).await;
    let client = Client::connect_with(options(vec![fake.addr(0), fake.addr(1)]), retry(), 1).await.unwrap();
    assert_eq!(client.kv_put("a", "1").await, Ok(1));
    fake.state().down.extend([0, 1]);
    let pending = client.submit(put(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.state().applied.len() == 1, "nothing applied while every node is down");
    {
        let mut s = fake.state();
        s.down.clear();
        s.leader = Some(1);
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("delivered after the outage");
    assert_eq!(answer, Ok(Ok(Reply::Done { revision: 2 })));
    assert_eq!(fake.state().applied.len(), 2);
    client.close().await;
}

#[tokio::test]
async fn an_evicted_session_is_reopened_after_failed_opens_and_later_commands_continue() {
    let fake = FakeCluster::start(1, Some(0)).await;
    {
        let mut s = fake.state();
        s.forget_sessions_at.insert(2);
    }
    let cluster = Cluster::new(options(vec![fake.addr(0)])).unwrap();
    let session = Session::open(cluster, retry(), 11).await.unwrap();
    let first = session.session_id().unwrap();
    fake.state().fail_opens = 2;
    let pending: Vec<_> = (1..=4).map(|i| session.submit(put(i)).unwrap()).collect();
    let mut answers = Vec::new();
    for p in pending {
        answers.push(tokio::time::timeout(Duration::from_secs(10), p).await.expect("answered in time"));
    }
    assert_eq!(answers[0], Ok(Ok(Reply::Done { revision: 1 })));
    assert_eq!(answers[1], Ok(Ok(Reply::Done { revision: 2 })));
    // Whether an earlier attempt of the third was applied cannot be known: it is
    // reported, not resent under the new session.
    assert_eq!(answers[2], Ok(Err(roster_kernel::CommandError::UnknownSession(first))));
    assert_eq!(answers[3], Ok(Ok(Reply::Done { revision: 3 })));
    let s = fake.state();
    assert_eq!(s.opens_seen, 1 + 2 + 1, "the first open, two refused, then the one that worked");
    assert_ne!(s.applied[2].0, first, "the fourth went under the new session");
    assert_eq!(s.applied[2].1, 1, "from sequence 1");
}

#[tokio::test]
async fn a_call_that_only_meets_refused_connections_gives_up_long_before_its_deadline() {
    let dead = vec![dead_addr().await, dead_addr().await];
    let mut opts = options(dead.clone());
    opts.request_timeout_ms = 60_000;
    let cluster = Cluster::new(opts).unwrap();
    let start = Instant::now();
    let error = cluster.call_any(ClientRequest::Status).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(roster_kernel::leader_search::REFUSED_GIVE_UP_MS),
        "gave up at once: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "a refusal was waited out like a timeout: {elapsed:?}");
    match &error {
        ClientError::Unreachable { endpoints, last_error } => {
            assert_eq!(endpoints, &dead);
            assert!(last_error.contains("cannot connect"), "{last_error}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn call_leader_against_dead_endpoints_names_them_within_its_timeout() {
    let dead = vec![dead_addr().await, dead_addr().await];
    let mut opts = options(dead.clone());
    opts.request_timeout_ms = 400;
    let cluster = Cluster::new(opts).unwrap();
    let start = Instant::now();
    let error = cluster.call_leader(ClientRequest::OpenSession).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(1_500), "took {elapsed:?}");
    match &error {
        ClientError::Unreachable { endpoints, last_error } => {
            assert_eq!(endpoints, &dead);
            assert!(last_error.contains("cannot connect"), "{last_error}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&dead[0]) && message.contains(&dead[1]), "{message}");
}

#[tokio::test]
async fn call_leader_skips_a_hung_node_and_remembers_the_leader() {
    let fake = FakeCluster::start(2, Some(1)).await;
    fake.state().hung.insert(0);
    let mut opts = options(vec![fake.addr(0), fake.addr(1)]);
    opts.request_timeout_ms = 900;
    let cluster = Cluster::new(opts).unwrap();
    let answer = cluster.call_leader(ClientRequest::OpenSession).await.unwrap();
    assert!(matches!(answer, ClientResponse::SessionOpened(_)), "{answer:?}");
    assert_eq!(cluster.leader(), Some(1));
    // The next call goes straight to the leader.
    let start = Instant::now();
    cluster.call_leader(ClientRequest::OpenSession).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn no_leader_is_told_apart_from_unreachable() {
    let fake = FakeCluster::start(2, None).await;
    let mut opts = options(vec![fake.addr(0), fake.addr(1)]);
    opts.request_timeout_ms = 300;
    let cluster = Cluster::new(opts).unwrap();
    let error = cluster.call_leader(ClientRequest::OpenSession).await.unwrap_err();
    assert!(matches!(&error, ClientError::NoLeader { endpoints, .. } if endpoints.len() == 2), "{error:?}");
}

#[tokio::test]
async fn a_wrong_token_is_reported_at_once() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let mut opts = options(vec![fake.addr(0)]);
    opts.token = "wrong".into();
    let cluster = Cluster::new(opts).unwrap();
    let error = cluster.call_leader(ClientRequest::Status).await.unwrap_err();
    assert!(matches!(&error, ClientError::Rejected { reason, .. } if reason.contains("token")), "{error:?}");
}

#[tokio::test]
async fn a_full_queue_refuses_with_its_bound() {
    let fake = FakeCluster::start(1, Some(0)).await;
    fake.state().black_hole_submits = true;
    let cluster = Cluster::new(options(vec![fake.addr(0)])).unwrap();
    let config = RetryConfig { max_queued: 2, ..retry() };
    let session = Session::open(cluster, config, 3).await.unwrap();
    let _a = session.submit(put(1)).unwrap();
    let _b = session.submit(put(2)).unwrap();
    assert_eq!(session.submit(put(3)).err(), Some(ClientError::QueueFull { max: 2 }));
    assert_eq!(session.queued(), 2);
}

#[tokio::test]
async fn a_dropped_session_still_delivers_fire_and_forget_commands() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let cluster = Cluster::new(options(vec![fake.addr(0)])).unwrap();
    let session = Session::open(cluster, retry(), 5).await.unwrap();
    drop(session.submit(put(1)).unwrap());
    drop(session);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.state().applied.is_empty() {
        assert!(Instant::now() < deadline, "the queued command was not delivered after the drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn watch_resumes_after_a_lost_connection_and_reports_compaction() {
    let fake = FakeCluster::start(2, Some(0)).await;
    for i in 0..5 {
        fake.push_event(&format!("k{i}"));
    }
    // The first stream breaks after revision 2.
    fake.state().drop_watch_after.insert(2);
    let client = Client::connect(options(vec![fake.addr(0), fake.addr(1)]), 1).await.unwrap();
    let mut watch = client.watch(0).await.unwrap();
    let mut revisions = Vec::new();
    for _ in 0..5 {
        revisions.push(watch.next().await.unwrap().revision);
    }
    fake.push_event("later");
    revisions.push(tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().revision);
    assert_eq!(revisions, vec![1, 2, 3, 4, 5, 6], "each event once, in order");
    assert_eq!(fake.state().watches, vec![0, 2], "resumed from the last revision received");
    assert_eq!(watch.last_revision(), 6);

    fake.state().compacted_through = 10;
    let error = client.watch(3).await.unwrap().next().await.unwrap_err();
    assert_eq!(error, ClientError::WatchCompacted { requested: 3, oldest_available: 11 });
}

fn process_info() -> ProcessInfo {
    ProcessInfo {
        name: "worker".into(),
        server: ServerId(1),
        service_host: "127.0.0.1".into(),
        service_port: None,
        started_at_unix_ms: 0,
        labels: Default::default(),
        reserved: ResourceAverage::default(),
    }
}

#[tokio::test]
async fn a_process_heartbeats_until_closed_and_deregisters_with_its_exit_status() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let client = Client::connect_with(options(vec![fake.addr(0)]), retry(), 2).await.unwrap();
    let handle = ProcessHandle::register(&client, process_info(), 50).await.unwrap();
    let member = handle.member();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beats = fake.state().heartbeats.iter().filter(|m| **m == member).count();
    assert!(beats >= 3, "{beats} heartbeats in 500 ms at a 50 ms interval");
    handle.close(Some(3)).await.unwrap();
    let beats_at_close = {
        let s = fake.state();
        assert_eq!(s.deregistered, vec![(roster_kernel::ProcessId(1), Some(3))]);
        s.heartbeats.len()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.state().heartbeats.len(), beats_at_close, "no heartbeat after close");
}

#[tokio::test]
async fn an_expired_process_stops_heartbeating_and_says_so() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let client = Client::connect_with(options(vec![fake.addr(0)]), retry(), 2).await.unwrap();
    let mut handle = ProcessHandle::register(&client, process_info(), 50).await.unwrap();
    let member = handle.member();
    fake.state().members.remove(&member);
    let error = tokio::time::timeout(Duration::from_secs(5), handle.lost()).await.unwrap();
    assert_eq!(error, ClientError::UnknownMember(member));
    assert!(handle.is_lost());
    // Closing a process the cluster already removed is not an error.
    handle.close(None).await.unwrap();
    assert_eq!(client.heartbeat(member, None).await, Err(ClientError::UnknownMember(member)));
}

#[tokio::test]
async fn a_dropped_process_handle_deregisters_best_effort() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let client = Client::connect_with(options(vec![fake.addr(0)]), retry(), 2).await.unwrap();
    let handle = ProcessHandle::register(&client, process_info(), 1_000).await.unwrap();
    let id = handle.id();
    drop(handle);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.state().deregistered.is_empty() {
        assert!(Instant::now() < deadline, "no deregistration after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.state().deregistered, vec![(id, None)]);
}

#[tokio::test]
async fn status_answers_without_a_leader() {
    let fake = FakeCluster::start(2, None).await;
    let client = Client::connect(options(vec![dead_addr().await, fake.addr(1)]), 1).await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.node, 2);
    assert_eq!(status.leader, None);
    assert!(client.heartbeat(MemberId::Server(ServerId(1)), None).await.is_err());
}

#[tokio::test]
async fn the_observer_hears_every_acknowledged_heartbeat_with_when_it_went_and_came_back() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let client = Client::connect_with(options(vec![fake.addr(0)]), retry(), 2).await.unwrap();
    let Reply::ProcessRegistered { id, .. } =
        client.execute(Command::RegisterProcess { info: process_info() }).await.unwrap()
    else {
        panic!("not registered");
    };
    let acks = Arc::new(Mutex::new(Vec::new()));
    let observed = acks.clone();
    let handle = crate::ProcessHandle::start_observed(client.clone(), id, 50, move |member, sent_at, acked_at| {
        observed.lock().unwrap().push((member, sent_at, acked_at));
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.close(None).await.unwrap();
    let acks = acks.lock().unwrap().clone();
    let delivered = fake.state().heartbeats.iter().filter(|m| **m == MemberId::Process(id)).count();
    assert!(acks.len() >= 3, "{} acknowledged heartbeats in 500 ms at a 50 ms interval", acks.len());
    // The last may have reached the fake node as the handle closed, unanswered.
    assert!(acks.len() == delivered || acks.len() + 1 == delivered, "{} observed, {delivered} delivered", acks.len());
    assert!(acks.iter().all(|(m, sent, acked)| *m == MemberId::Process(id) && sent <= acked));
    assert!(acks.windows(2).all(|w| w[0].2 <= w[1].1), "one heartbeat at a time, in order");
}

#[tokio::test]
async fn an_abandoned_process_falls_silent_but_stays_registered() {
    let fake = FakeCluster::start(1, Some(0)).await;
    let client = Client::connect_with(options(vec![fake.addr(0)]), retry(), 2).await.unwrap();
    let handle = ProcessHandle::register(&client, process_info(), 50).await.unwrap();
    let member = handle.member();
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.abandon().await;
    drop(client);
    // A heartbeat already on the wire may still land.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let beats_at_abandon = fake.state().heartbeats.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = fake.state();
    assert!(beats_at_abandon >= 2, "{beats_at_abandon} heartbeats before abandoning");
    assert_eq!(s.heartbeats.len(), beats_at_abandon, "no heartbeat after abandon");
    assert!(s.deregistered.is_empty(), "abandoning deregisters nothing: {:?}", s.deregistered);
    assert!(s.members.contains(&member));
}
