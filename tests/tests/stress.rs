//! Stress of the real binary: three `roster node` processes, 5,000 members heartbeating at
//! 1 Hz, concurrent puts from a few sessions and a `status` loop against the leader, for
//! about 30 s of full load. It is here to catch a leader that hangs or stalls — duties
//! shared under locks taken in opposite orders by status, heartbeats and applies can
//! deadlock a node's worker threads — so it asserts what a hang breaks, and no speed:
//! every status answers within 2 s (the bound), every heartbeat is answered
//! `HeartbeatOk` (within the client's default request deadline, 5 s: beyond it a beat is
//! hung, not slow), every registration and put succeeds, and no member is expired. It
//! prints its figures, beats answered later than one interval among them (a
//! `ProcessHandle` bounds a beat by the interval and would have counted those lost).
//!
//! The load runs in this process on the client library, shaped like `roster bench
//! heartbeats`: members need no session or connection of their own (a heartbeat is a
//! plain call to the leader, outside any session), so they share a few connections and
//! are beaten from a bounded number of lanes. Each member keeps a `ProcessHandle`'s
//! schedule — a beat right after its registration, then one per interval, a late one not
//! made up for — and a lane sends each beat at its time whether or not earlier ones were
//! answered (members are independent: one slow answer must not delay another member's
//! beat). Registrations spread over a few seconds, so the beats spread evenly over the
//! second. The first beats land while the leader's tracker has not caught up with the
//! registrations, so that burst (many applies, heartbeats that look the member up in the
//! record) runs under the status loop and the puts too. The longest gap between two
//! beats of one member, as sent, is kept: an expiry with every gap under the timeout is
//! the node's doing.
//!
//! The nodes run `NODE_WORKER_THREADS` runtime workers whatever the machine (through
//! `TOKIO_WORKER_THREADS`, which the binary's default runtime builder honours): a lock
//! cycle of three parties (status holding the applied state's read lock and wanting the
//! duties, a heartbeat or the duty loop holding the duties and wanting the read lock, an
//! apply queued for the write lock, which blocks new readers) needs three threads blocked
//! at once, which the default of one worker per core cannot form on a 2-core CI machine.
//! At 2841c1a, with 4 workers, it formed in about one run in three.

use roster_kernel::{
    Command, Departure, ListFilter, MemberId, MemberKind, ProcessId, ProcessInfo, Reply, ResourceAverage, ServerId,
    Tombstone, TombstoneSubject,
};
use roster_real::client::{
    Client, ClientError, ClientOptions, Cluster, DEFAULT_REQUEST_TIMEOUT_MS, RetryConfig, Session,
};
use roster_real::net::wire::Consistency;
use roster_tests::TestCluster;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const NODES: u64 = 3;
const NODE_WORKER_THREADS: &str = "4";
const MEMBERS: usize = 5_000;
/// The nodes' default heartbeat interval (timeout 3 s): members beat at 1 Hz.
const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// Lanes beating members, over this many connections (each a `Cluster`: one connection
/// per node); 5,000 members make ~625 beats a second per lane.
const HEARTBEAT_LANES: usize = 8;
const HEARTBEAT_CONNECTIONS: usize = 4;
/// Sessions registering members in parallel (their commands share Raft entries).
const REGISTER_SESSIONS: usize = 32;
/// Sessions putting keys, one put at a time each, with a pause between two puts: a steady
/// stream of applies (each takes the applied state's write lock) without spending the
/// shared 2 cores on raw put throughput.
const PUT_SESSIONS: usize = 4;
const PUT_PAUSE_MS: u64 = 2;
const PUT_VALUE_BYTES: usize = 100;
/// The requirement: a status that takes longer is a hang.
const STATUS_BOUND_MS: u64 = 2_000;
/// A status call's own deadline, well past the bound, so a slow status is measured rather
/// than cut off at the bound.
const STATUS_REQUEST_TIMEOUT_MS: u64 = 8_000;
/// Pause between two statuses (each lists all 5,000 members).
const STATUS_PAUSE_MS: u64 = 20;
/// Full load (every member registered and beating) lasts this long.
const LOAD_MS: u64 = 30_000;
/// Bounds that make the run stop by itself on a hung node: registration (4-14 s seen for
/// a healthy debug build on a busy 2-core machine), the wind-down of the put and status
/// tasks after the load (past a status call's deadline), the final reads (together), and
/// the lanes' last beats (past a beat's deadline). With the load they add up to under
/// `RUN_WITHIN_MS`, the guard around the whole run (cluster startup aside).
const REGISTER_WITHIN_MS: u64 = 30_000;
const WIND_DOWN_MS: u64 = 10_000;
const FINAL_READ_WITHIN_MS: u64 = 5_000;
const LANES_STOP_WITHIN_MS: u64 = 6_000;
const RUN_WITHIN_MS: u64 = 90_000;
/// Tombstones read at the end: more than the run can make.
const TOMBSTONE_LIMIT: u32 = 100_000;

/// Failures of one kind of call, by the client error's variant: how many, and the first
/// message of each.
#[derive(Default)]
struct Failures(BTreeMap<String, (u64, String)>);

impl Failures {
    fn record(&mut self, e: &ClientError) {
        let debug = format!("{e:?}");
        let variant: String = debug.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        self.0.entry(variant).or_insert_with(|| (0, e.to_string())).0 += 1;
    }

    fn record_other(&mut self, kind: &str, message: String) {
        self.0.entry(kind.to_string()).or_insert_with(|| (0, message)).0 += 1;
    }

    fn merge(&mut self, other: Failures) {
        for (k, (n, first)) in other.0 {
            self.0.entry(k).or_insert_with(|| (0, first)).0 += n;
        }
    }

    fn count(&self) -> u64 {
        self.0.values().map(|(n, _)| n).sum()
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self.0.iter().map(|(k, (n, first))| format!("{n} × {k} (first: {first})")).collect();
        parts.join("; ")
    }
}

#[derive(Default)]
struct HeartbeatTally {
    ok: u64,
    refused: Failures,
    /// Round trips of answered beats, in µs.
    rtt_us: Vec<u32>,
    /// Answered `HeartbeatOk`, but after more than one interval.
    late: u64,
    /// Longest time between sending two beats of one member, and whose.
    max_gap: Duration,
    max_gap_member: Option<ProcessId>,
}

/// One heartbeat's outcome and round trip.
type Beat = (Result<(), ClientError>, Duration);

impl HeartbeatTally {
    fn record(&mut self, (answer, rtt): Beat) {
        match answer {
            Ok(()) => {
                self.ok += 1;
                self.late += u64::from(rtt > Duration::from_millis(HEARTBEAT_INTERVAL_MS));
                self.rtt_us.push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
            }
            Err(e) => self.refused.record(&e),
        }
    }

    fn record_joined(&mut self, done: Result<Beat, tokio::task::JoinError>) {
        match done {
            Ok(b) => self.record(b),
            Err(e) => self.refused.record_other("TaskFailed", e.to_string()),
        }
    }

    fn note_gap(&mut self, member: ProcessId, gap: Duration) {
        if gap > self.max_gap {
            (self.max_gap, self.max_gap_member) = (gap, Some(member));
        }
    }

    fn merge(&mut self, other: HeartbeatTally) {
        self.ok += other.ok;
        self.late += other.late;
        self.refused.merge(other.refused);
        self.rtt_us.extend(other.rtt_us);
        if other.max_gap > self.max_gap {
            (self.max_gap, self.max_gap_member) = (other.max_gap, other.max_gap_member);
        }
    }

    fn sent(&self) -> u64 {
        self.ok + self.refused.count()
    }
}

#[derive(Default)]
struct StatusTally {
    answered: u64,
    /// Longest call, answered or not.
    max: Duration,
    failed: Failures,
    /// Answers from a node that no longer led (the loop then looks for the leader again).
    leader_moves: u64,
}

#[derive(Default)]
struct PutTally {
    ok: u64,
    failed: Failures,
}

/// What the run saw; judged after the runtime is gone.
#[derive(Default)]
struct Figures {
    registered: usize,
    register_s: f64,
    register_failed: Failures,
    load_s: f64,
    /// From the lanes' start until they were told to stop.
    beating_s: f64,
    heartbeats: HeartbeatTally,
    puts: PutTally,
    status: StatusTally,
    first_leader: Option<u64>,
    first_term: u64,
    last_leader: Option<u64>,
    last_term: u64,
    /// Registered members missing from the final linearizable list.
    missing: Vec<ProcessId>,
    /// Tombstones of expired members (servers or processes), described.
    expired: Vec<String>,
    /// Final reads that failed.
    final_failed: Failures,
}

#[test]
fn a_leader_under_5000_members_puts_and_status_neither_hangs_nor_expires_anyone() {
    let c =
        TestCluster::start_with_env("stress", NODES, &[("TOKIO_WORKER_THREADS", NODE_WORKER_THREADS)], |_| Vec::new());
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(NODES as usize, Duration::from_secs(20));
    let token = std::fs::read_to_string(&c.token_file).expect("read the test token");
    let endpoints: Vec<String> = c.endpoints().split(',').map(str::to_owned).collect();
    let options = |request_timeout_ms| ClientOptions {
        endpoints: endpoints.clone(),
        token: token.trim().to_owned(),
        connect_timeout_ms: 1_000,
        request_timeout_ms,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the test's runtime");
    let started = std::time::Instant::now();
    let figures = rt.block_on(async { tokio::time::timeout(Duration::from_millis(RUN_WITHIN_MS), run(options)).await });
    // Tasks still waiting on a hung node must not keep the test alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    let wall_s = started.elapsed().as_secs_f64();
    let f = match figures {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => panic!("the stress run could not start: {e}\n{}", c.logs()),
        Err(_) => panic!("the stress run did not finish within {RUN_WITHIN_MS} ms\n{}", c.logs()),
    };
    print_figures(&f, wall_s);

    // Every broken promise at once: a hung leader breaks several, and the first alone
    // (say, registrations refused because the hung node's server entry expired) would
    // hide the cause.
    let mut broken = Vec::new();
    if f.status.max >= Duration::from_millis(STATUS_BOUND_MS) || f.status.failed.count() > 0 {
        broken.push(format!(
            "status hung: longest call {} ms (bound {STATUS_BOUND_MS} ms); failures: {}",
            f.status.max.as_millis(),
            f.status.failed.describe()
        ));
    }
    if f.heartbeats.refused.count() > 0 {
        broken.push(format!("heartbeats not answered HeartbeatOk: {}", f.heartbeats.refused.describe()));
    }
    if !f.expired.is_empty() {
        broken.push(format!(
            "members expired (longest gap between two beats of one member, as sent: {} ms): {:?}",
            f.heartbeats.max_gap.as_millis(),
            f.expired
        ));
    }
    if f.registered != MEMBERS || f.register_failed.count() > 0 {
        broken.push(format!(
            "{} of {MEMBERS} members registered; failures: {}",
            f.registered,
            f.register_failed.describe()
        ));
    }
    if f.puts.failed.count() > 0 {
        broken.push(format!("puts failed: {}", f.puts.failed.describe()));
    }
    if f.final_failed.count() > 0 {
        broken.push(format!("final reads failed: {}", f.final_failed.describe()));
    }
    if !f.missing.is_empty() {
        broken.push(format!("registered members missing from the list: {:?}", f.missing));
    }
    assert!(broken.is_empty(), "{}\n{}", broken.join("\n"), c.logs());
}

async fn run(options: impl Fn(u64) -> ClientOptions) -> Result<Figures, ClientError> {
    let mut f = Figures::default();
    let commands = Cluster::new(options(DEFAULT_REQUEST_TIMEOUT_MS))?;
    // Heartbeats with the client's default deadline: past it a beat is hung.
    let mut beat_clients = Vec::new();
    for i in 0..HEARTBEAT_CONNECTIONS {
        beat_clients.push(Client::connect(options(DEFAULT_REQUEST_TIMEOUT_MS), i as u64).await?);
    }
    let status_client = Client::connect(options(STATUS_REQUEST_TIMEOUT_MS), 100).await?;
    let first = status_client.status().await?;
    (f.first_leader, f.first_term) = (first.leader, first.term);

    let load_running = Arc::new(AtomicBool::new(true));
    let beating = Arc::new(AtomicBool::new(true));
    // Status and puts run from before the first registration: the registration burst is
    // the busiest moment for the leader's locks.
    let status_task = tokio::spawn(status_loop(status_client.clone(), load_running.clone()));
    let mut put_tasks = Vec::new();
    for s in 0..PUT_SESSIONS {
        let session = Session::open(commands.clone(), RetryConfig::default(), 1_000 + s as u64).await?;
        put_tasks.push(tokio::spawn(put_loop(session, s, load_running.clone())));
    }
    let lanes: Vec<Joining> = (0..HEARTBEAT_LANES).map(|_| Arc::default()).collect();
    let beating_start = Instant::now();
    let mut lane_tasks = Vec::new();
    for (l, joining) in lanes.iter().enumerate() {
        let client = beat_clients[l % HEARTBEAT_CONNECTIONS].clone();
        lane_tasks.push(tokio::spawn(heartbeat_lane(client, joining.clone(), beating.clone())));
    }

    let register_start = Instant::now();
    let mut register_tasks = Vec::new();
    for w in 0..REGISTER_SESSIONS {
        let session = Session::open(commands.clone(), RetryConfig::default(), 2_000 + w as u64).await?;
        let client = beat_clients[w % HEARTBEAT_CONNECTIONS].clone();
        register_tasks.push(tokio::spawn(register(session, client, w, lanes.clone())));
    }
    let mut registered = BTreeSet::new();
    let register_deadline = register_start + Duration::from_millis(REGISTER_WITHIN_MS);
    for t in register_tasks {
        match tokio::time::timeout_at(register_deadline, t).await {
            Ok(Ok((ids, failed, beats))) => {
                registered.extend(ids);
                f.register_failed.merge(failed);
                f.heartbeats.merge(beats);
            }
            Ok(Err(e)) => f.register_failed.record_other("TaskFailed", e.to_string()),
            Err(_) => f.register_failed.record_other("NotDone", format!("not done within {REGISTER_WITHIN_MS} ms")),
        }
    }
    f.registered = registered.len();
    f.register_s = register_start.elapsed().as_secs_f64();

    let load_start = Instant::now();
    tokio::time::sleep(Duration::from_millis(LOAD_MS)).await;
    f.load_s = load_start.elapsed().as_secs_f64();

    // Puts and status stop; members keep beating through the final reads (a member that
    // stops beating is rightly expired).
    load_running.store(false, Ordering::Relaxed);
    let wind_down = Instant::now() + Duration::from_millis(WIND_DOWN_MS);
    match tokio::time::timeout_at(wind_down, status_task).await {
        Ok(Ok(tally)) => f.status = tally,
        Ok(Err(e)) => f.status.failed.record_other("TaskFailed", e.to_string()),
        Err(_) => f
            .status
            .failed
            .record_other("NotDone", format!("a status still unanswered {WIND_DOWN_MS} ms after the load")),
    }
    for t in put_tasks {
        match tokio::time::timeout_at(wind_down, t).await {
            Ok(Ok(tally)) => {
                f.puts.ok += tally.ok;
                f.puts.failed.merge(tally.failed);
            }
            Ok(Err(e)) => f.puts.failed.record_other("TaskFailed", e.to_string()),
            Err(_) => f
                .puts
                .failed
                .record_other("NotDone", format!("a put still unanswered {WIND_DOWN_MS} ms after the load")),
        }
    }
    final_reads(&status_client, &registered, &mut f).await;

    beating.store(false, Ordering::Relaxed);
    f.beating_s = beating_start.elapsed().as_secs_f64();
    let lanes_stop = Instant::now() + Duration::from_millis(LANES_STOP_WITHIN_MS);
    for t in lane_tasks {
        match tokio::time::timeout_at(lanes_stop, t).await {
            Ok(Ok(tally)) => f.heartbeats.merge(tally),
            Ok(Err(e)) => f.heartbeats.refused.record_other("TaskFailed", e.to_string()),
            Err(_) => f
                .heartbeats
                .refused
                .record_other("NotDone", format!("a lane still beating {LANES_STOP_WITHIN_MS} ms after stop")),
        }
    }
    Ok(f)
}

/// Members a lane takes on, each with when its first beat was sent.
type Joining = Arc<Mutex<Vec<(ProcessId, Instant)>>>;

/// Registers members `worker`, `worker + REGISTER_SESSIONS`, ... one after another on its
/// own session; each beats once as soon as the cluster answers (without holding up the
/// next registration), then joins its lane.
async fn register(
    session: Session,
    beat_client: Client,
    worker: usize,
    lanes: Vec<Joining>,
) -> (Vec<ProcessId>, Failures, HeartbeatTally) {
    let mut ids = Vec::new();
    let mut failed = Failures::default();
    let mut beats = HeartbeatTally::default();
    let mut first_beats: tokio::task::JoinSet<Beat> = tokio::task::JoinSet::new();
    for i in (worker..MEMBERS).step_by(REGISTER_SESSIONS) {
        let info = ProcessInfo {
            name: format!("stress-{i}"),
            server: ServerId(1 + i as u64 % NODES),
            service_host: "127.0.0.1".into(),
            service_port: None,
            started_at_unix_ms: roster_real::rt::clock::unix_ms(),
            labels: Default::default(),
            reserved: ResourceAverage::default(),
        };
        match session.execute(Command::RegisterProcess { info }).await {
            Ok(Reply::ProcessRegistered { id, .. }) => {
                first_beats.spawn(beat(beat_client.clone(), id));
                lock(&lanes[i % HEARTBEAT_LANES]).push((id, Instant::now()));
                ids.push(id);
            }
            Ok(other) => failed.record_other("UnexpectedReply", format!("{other:?}")),
            Err(e) => failed.record(&e),
        }
        while let Some(done) = first_beats.try_join_next() {
            beats.record_joined(done);
        }
    }
    while let Some(done) = first_beats.join_next().await {
        beats.record_joined(done);
    }
    (ids, failed, beats)
}

/// One heartbeat of `id` through the client's heartbeat call (bounded by the client's
/// request timeout).
async fn beat(client: Client, id: ProcessId) -> Beat {
    let sent_at = Instant::now();
    let answer = client.heartbeat(MemberId::Process(id), None).await;
    (answer, sent_at.elapsed())
}

/// Beats each member of the lane on its own schedule until told to stop; a beat goes out
/// at its time even while earlier ones still wait for their answers.
async fn heartbeat_lane(client: Client, joining: Joining, beating: Arc<AtomicBool>) -> HeartbeatTally {
    let interval = Duration::from_millis(HEARTBEAT_INTERVAL_MS);
    let mut tally = HeartbeatTally::default();
    // (when the member's next beat is due, member), and when its last beat was sent.
    let mut schedule: BTreeSet<(Instant, ProcessId)> = BTreeSet::new();
    let mut last_sent: BTreeMap<ProcessId, Instant> = BTreeMap::new();
    let mut in_flight: tokio::task::JoinSet<Beat> = tokio::task::JoinSet::new();
    while beating.load(Ordering::Relaxed) {
        for (id, sent_at) in lock(&joining).drain(..) {
            schedule.insert((sent_at + interval, id));
            last_sent.insert(id, sent_at);
        }
        // With nobody to beat yet, look for newcomers again shortly.
        let due = schedule.first().map_or_else(|| Instant::now() + Duration::from_millis(10), |(at, _)| *at);
        tokio::select! {
            biased;
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => tally.record_joined(done),
            _ = tokio::time::sleep_until(due) => {
                let Some((at, id)) = schedule.pop_first() else { continue };
                let now = Instant::now();
                if let Some(previous) = last_sent.insert(id, now) {
                    tally.note_gap(id, now - previous);
                }
                in_flight.spawn(beat(client.clone(), id));
                // As a `ProcessHandle`: the next beat one interval after this one was due,
                // or now if that has passed (no burst to catch up).
                schedule.insert(((at + interval).max(now), id));
            }
        }
    }
    // Each beat is bounded by the client's request timeout.
    while let Some(done) = in_flight.join_next().await {
        tally.record_joined(done);
    }
    tally
}

/// Puts `stress/put/<session>/<n>` one at a time until the load stops.
async fn put_loop(session: Session, index: usize, running: Arc<AtomicBool>) -> PutTally {
    let mut tally = PutTally::default();
    let value = "x".repeat(PUT_VALUE_BYTES);
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) {
        let command = Command::KvPut { key: format!("stress/put/{index}/{n}"), value: value.clone() };
        match session.execute(command).await {
            Ok(_) => tally.ok += 1,
            Err(e) => tally.failed.record(&e),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(PUT_PAUSE_MS)).await;
    }
    tally
}

/// Calls status on the leader, one call at a time, until the load stops; every call is
/// timed, including those that look for the leader.
async fn status_loop(client: Client, running: Arc<AtomicBool>) -> StatusTally {
    let mut tally = StatusTally::default();
    let mut leader_endpoint: Option<usize> = None;
    while running.load(Ordering::Relaxed) {
        let started = Instant::now();
        match leader_endpoint {
            None => match client.status().await {
                Ok(s) => {
                    tally.answered += 1;
                    leader_endpoint = leader_of(&client, &s);
                }
                Err(e) => tally.failed.record(&e),
            },
            Some(endpoint) => match client.status_of(endpoint).await {
                Ok(s) if s.leader == Some(s.node) => tally.answered += 1,
                Ok(_) => {
                    tally.answered += 1;
                    tally.leader_moves += 1;
                    leader_endpoint = None;
                }
                Err(e) => {
                    tally.failed.record(&e);
                    leader_endpoint = None;
                }
            },
        }
        tally.max = tally.max.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(STATUS_PAUSE_MS)).await;
    }
    tally
}

/// The endpoint index of the leader a status names, if it names one.
fn leader_of(client: &Client, status: &roster_real::net::wire::ClusterStatus) -> Option<usize> {
    let leader = status.leader?;
    let (_, addr) = status.voters.iter().find(|(id, _)| *id == leader)?;
    client.cluster().endpoint_for(addr).ok()
}

/// With members still beating, together: every registered member is listed, no tombstone
/// says expired, and who leads now.
async fn final_reads(client: &Client, registered: &BTreeSet<ProcessId>, f: &mut Figures) {
    let within = Duration::from_millis(FINAL_READ_WITHIN_MS);
    let not_done = || format!("not answered within {FINAL_READ_WITHIN_MS} ms");
    let filter = ListFilter { kind: Some(MemberKind::Process), ..Default::default() };
    let (list, tombstones, status) = tokio::join!(
        tokio::time::timeout(within, client.list(filter, Consistency::Linearizable)),
        tokio::time::timeout(within, client.tombstones(TOMBSTONE_LIMIT, Consistency::Linearizable)),
        tokio::time::timeout(within, client.status()),
    );
    match list {
        Ok(Ok(list)) => {
            let listed: BTreeSet<ProcessId> = list.processes.iter().map(|p| p.id).collect();
            f.missing = registered.difference(&listed).copied().collect();
        }
        Ok(Err(e)) => f.final_failed.record(&e),
        Err(_) => f.final_failed.record_other("ListNotDone", not_done()),
    }
    match tombstones {
        Ok(Ok(tombstones)) => f.expired = tombstones.iter().filter_map(expired).collect(),
        Ok(Err(e)) => f.final_failed.record(&e),
        Err(_) => f.final_failed.record_other("TombstonesNotDone", not_done()),
    }
    match status {
        Ok(Ok(s)) => (f.last_leader, f.last_term) = (s.leader, s.term),
        Ok(Err(e)) => f.final_failed.record(&e),
        Err(_) => f.final_failed.record_other("StatusNotDone", not_done()),
    }
}

/// The member a tombstone names, if it was expired.
fn expired(t: &Tombstone) -> Option<String> {
    let Departure::Expired { silent_for_ms } = t.departure else { return None };
    let who = match &t.subject {
        TombstoneSubject::Server(e) => format!("server {}", e.id),
        TombstoneSubject::Process(e) => format!("process {} ({})", e.id, e.info.name),
    };
    Some(format!("{who} silent {silent_for_ms} ms"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

fn print_figures(f: &Figures, wall_s: f64) {
    let mut rtt = f.heartbeats.rtt_us.clone();
    rtt.sort_unstable();
    let hb = &f.heartbeats;
    println!(
        "stress: {NODES} nodes, {MEMBERS} members at 1 Hz over {HEARTBEAT_LANES} lanes / {HEARTBEAT_CONNECTIONS} connections, \
         {PUT_SESSIONS} put sessions, status on the leader every {STATUS_PAUSE_MS} ms"
    );
    println!(
        "registration: {} members in {:.1} s; failures: {}",
        f.registered,
        f.register_s,
        f.register_failed.describe()
    );
    println!(
        "heartbeats: {} sent in {:.1} s ({:.0}/s), {} ok ({} of them after more than {HEARTBEAT_INTERVAL_MS} ms), \
         {} refused: {}; rtt p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         longest gap between two beats of one member {} ms ({:?})",
        hb.sent(),
        f.beating_s,
        hb.sent() as f64 / f.beating_s.max(f64::EPSILON),
        hb.ok,
        hb.late,
        hb.refused.count(),
        hb.refused.describe(),
        percentile_ms(&rtt, 0.5),
        percentile_ms(&rtt, 0.99),
        percentile_ms(&rtt, 1.0),
        hb.max_gap.as_millis(),
        hb.max_gap_member
    );
    println!("puts: {} done; failures: {}", f.puts.ok, f.puts.failed.describe());
    println!(
        "status: {} answered, longest {} ms (bound {STATUS_BOUND_MS} ms), leader moves {}; failures: {}",
        f.status.answered,
        f.status.max.as_millis(),
        f.status.leader_moves,
        f.status.failed.describe()
    );
    println!(
        "leader: {:?} (term {}) at the start, {:?} (term {}) at the end; full load {:.1} s",
        f.first_leader, f.first_term, f.last_leader, f.last_term, f.load_s
    );
    println!(
        "end: {} expired, {} registered members missing from the list; final read failures: {}; wall time {wall_s:.1} s",
        f.expired.len(),
        f.missing.len(),
        f.final_failed.describe()
    );
}
