//! `roster bench`: durable writes and heartbeat scale against a running cluster.
//! A benchmark prints figures; it asserts nothing about speed.

use super::ClientArgs;
use super::failure::CliError;
use clap::{Args, Subcommand};
use roster_kernel::retry_queue::RetryConfig;
use roster_kernel::{Command, MemberId, ProcessId, ProcessInfo, Reply, ResourceAverage, ServerId};
use roster_real::client::{ClientOptions, Cluster, Session};
use roster_real::net::wire::{ClientRequest, ClientResponse};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// One client, one durable put at a time.
    Seq {
        /// Puts to make.
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        /// Size of each value.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
    },
    /// CLIENTS sessions over CONNECTIONS connections, each one put at a time.
    Conc {
        /// Puts to make, over all sessions.
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        /// Sessions, each with one put in flight.
        #[arg(long, default_value_t = 100)]
        clients: u64,
        /// TCP connections per node the sessions share.
        #[arg(long, default_value_t = 10)]
        connections: u64,
        /// Size of each value.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
    },
    /// Register MEMBERS processes and heartbeat each at the interval for DURATION seconds.
    Heartbeats {
        /// Processes to register.
        #[arg(long, default_value_t = 10_000)]
        members: u64,
        /// How long to heartbeat them.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Heartbeat interval of each member.
        #[arg(long, default_value_t = 1_000)]
        interval_ms: u64,
        /// TCP connections per node the members share.
        #[arg(long, default_value_t = 4)]
        connections: u64,
        /// Host server the members claim.
        #[arg(long, default_value_t = 1)]
        server_id: u64,
    },
    /// Continuous durable puts for DURATION seconds from SESSIONS sessions (one put at a
    /// time each), while the leader is killed or handed over meanwhile: the longest gap
    /// between two acknowledged puts, and the gap around each leader change seen.
    Avail {
        /// How long to keep putting.
        #[arg(long, default_value_t = 30)]
        duration_s: u64,
        /// Sessions, each with one put in flight.
        #[arg(long, default_value_t = 1)]
        sessions: u64,
        /// Size of each value.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// How often the leader is looked up, to date leader changes.
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        /// Each session overwrites this many keys in turn, so a long run (a soak) keeps
        /// the store's size flat; 0 writes a new key every time.
        #[arg(long, default_value_t = 0)]
        keys: u64,
    },
    /// Time until every process member is gone (run right after killing a heartbeats bench).
    ExpiryWatch {
        /// Only count processes with this name prefix.
        #[arg(long, default_value = "bench-")]
        prefix: String,
        /// Give up after this long.
        #[arg(long, default_value_t = 60)]
        max_s: u64,
    },
}

pub async fn run(args: BenchArgs, client: ClientArgs) -> Result<ExitCode, CliError> {
    match args.mode {
        Mode::Seq { count, value_bytes } => seq(count, value_bytes, client).await,
        Mode::Conc { count, clients, connections, value_bytes } => {
            conc(count, clients, connections, value_bytes, client).await
        }
        Mode::Heartbeats { members, duration_s, interval_ms, connections, server_id } => {
            heartbeats(members, duration_s, interval_ms, connections, server_id, client).await
        }
        Mode::ExpiryWatch { prefix, max_s } => expiry_watch(prefix, max_s, client).await,
        Mode::Avail { duration_s, sessions, value_bytes, poll_ms, keys } => {
            avail(duration_s, sessions, value_bytes, poll_ms, keys, client).await
        }
    }
}

fn options(c: &ClientArgs) -> Result<ClientOptions, CliError> {
    Ok(ClientOptions {
        endpoints: c.endpoints.clone(),
        token: c.token()?,
        connect_timeout_ms: 2_000,
        request_timeout_ms: c.timeout_ms.max(5_000),
    })
}

/// Percentile of sorted microsecond latencies.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(label: &str, mut lat_us: Vec<u64>, elapsed: Duration, failures: u64, json: bool) {
    lat_us.sort_unstable();
    let ops = lat_us.len() as f64 / elapsed.as_secs_f64();
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "mode": label, "ops": lat_us.len(), "failures": failures, "seconds": elapsed.as_secs_f64(),
                "ops_per_s": ops, "p50_ms": pct(&lat_us, 0.5), "p99_ms": pct(&lat_us, 0.99),
                "p999_ms": pct(&lat_us, 0.999), "max_ms": pct(&lat_us, 1.0),
            })
        );
    } else {
        outln!(
            "{label}: {} puts in {:.2} s = {:.0} ops/s; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; failures {failures}",
            lat_us.len(),
            elapsed.as_secs_f64(),
            ops,
            pct(&lat_us, 0.5),
            pct(&lat_us, 0.99),
            pct(&lat_us, 0.999),
            pct(&lat_us, 1.0)
        );
    }
}

async fn seq(count: u64, value_bytes: usize, c: ClientArgs) -> Result<ExitCode, CliError> {
    let cluster = Cluster::with_connector(options(&c)?, c.connector()?)?;
    let session = Session::open(cluster, RetryConfig::default(), rand::random()).await?;
    let value = "x".repeat(value_bytes);
    // Warm up the connection and the leader's path.
    for i in 0..20 {
        session.execute(Command::KvPut { key: format!("bench/warm/{i}"), value: value.clone() }).await?;
    }
    let mut lat = Vec::with_capacity(count as usize);
    let mut failures = 0;
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        match session.execute(Command::KvPut { key: format!("bench/seq/{i:08}"), value: value.clone() }).await {
            Ok(_) => lat.push(t.elapsed().as_micros() as u64),
            Err(_) => failures += 1,
        }
    }
    report("seq", lat, start.elapsed(), failures, c.json);
    Ok(ExitCode::SUCCESS)
}

async fn conc(
    count: u64,
    clients: u64,
    connections: u64,
    value_bytes: usize,
    c: ClientArgs,
) -> Result<ExitCode, CliError> {
    if clients == 0 || connections == 0 {
        return Err(CliError::Usage("--clients and --connections must be at least 1".into()));
    }
    let (opts, connector) = (options(&c)?, c.connector()?);
    let pools: Vec<Cluster> =
        (0..connections).map(|_| Cluster::with_connector(opts.clone(), connector.clone())).collect::<Result<_, _>>()?;
    let mut sessions = Vec::new();
    for i in 0..clients {
        let pool = pools[(i % connections) as usize].clone();
        sessions.push(Session::open(pool, RetryConfig::default(), rand::random()).await?);
    }
    let per = count / clients;
    let value = "x".repeat(value_bytes);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, s) in sessions.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            let mut failures = 0u64;
            for j in 0..per {
                let t = Instant::now();
                match s.execute(Command::KvPut { key: format!("bench/conc/{i}/{j}"), value: value.clone() }).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(_) => failures += 1,
                }
            }
            (lat, failures)
        }));
    }
    let mut all = Vec::with_capacity(count as usize);
    let mut failures = 0;
    for t in tasks {
        let (lat, f) = t.await?;
        all.extend(lat);
        failures += f;
    }
    report(&format!("conc clients={clients} connections={connections}"), all, start.elapsed(), failures, c.json);
    Ok(ExitCode::SUCCESS)
}

async fn heartbeats(
    members: u64,
    duration_s: u64,
    interval_ms: u64,
    connections: u64,
    server_id: u64,
    c: ClientArgs,
) -> Result<ExitCode, CliError> {
    let (opts, connector) = (options(&c)?, c.connector()?);
    let pools: Vec<Cluster> = (0..connections.max(1))
        .map(|_| Cluster::with_connector(opts.clone(), connector.clone()))
        .collect::<Result<_, _>>()?;
    eprintln!("heartbeat bench pid {}: registering {members} members", std::process::id());
    // Each lane registers its share of the members over its own session and beats each
    // one from its own registration on, as a fleet of real workers does: no member waits
    // for the others to be registered before its first beat.
    let start = Instant::now();
    let lanes = connections.max(1) * 16;
    let schedule = Schedule { interval: Duration::from_millis(interval_ms), steady: Duration::from_secs(duration_s) };
    let (mut registrars, mut beaters) = (Vec::new(), Vec::new());
    for lane in 0..lanes {
        let pool = pools[lane as usize % pools.len()].clone();
        let (joined_tx, joined_rx) = tokio::sync::mpsc::channel(1024);
        let mine = (lane..members).step_by(lanes as usize);
        registrars.push(tokio::spawn(register_lane(pool.clone(), mine, server_id, joined_tx)));
        beaters.push(tokio::spawn(beat_lane(pool, joined_rx, schedule)));
    }
    let mut registered = 0;
    for r in registrars {
        registered += r.await??;
    }
    eprintln!("registered {registered} members in {:.1} s", start.elapsed().as_secs_f64());
    let mut total = LaneFigures::default();
    for b in beaters {
        total.add(b.await?);
    }
    total.rtt_us.sort_unstable();
    total.late_us.sort_unstable();
    let secs = start.elapsed().as_secs_f64();
    let (rtt, late) = (&total.rtt_us, &total.late_us);
    let line = serde_json::json!({
        "members": registered, "seconds": secs, "heartbeats_ok": total.ok,
        "heartbeats_per_s": total.ok as f64 / secs, "false_expiries": total.unknown, "failed": total.failed,
        "rtt_p50_ms": pct(rtt, 0.5), "rtt_p99_ms": pct(rtt, 0.99), "rtt_max_ms": pct(rtt, 1.0),
        "send_late_p50_ms": pct(late, 0.5), "send_late_p99_ms": pct(late, 0.99), "send_late_max_ms": pct(late, 1.0),
    });
    outln!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Registers the processes numbered `mine` on `server_id`, one at a time over one
/// session, and hands each id to its lane's beater as soon as it is registered. Returns
/// how many were registered.
async fn register_lane(
    pool: Cluster,
    mine: impl Iterator<Item = u64>,
    server_id: u64,
    joined: tokio::sync::mpsc::Sender<ProcessId>,
) -> Result<u64, CliError> {
    let s = Session::open(pool, RetryConfig::default(), rand::random()).await?;
    let mut count = 0;
    for i in mine {
        let info = ProcessInfo {
            name: format!("bench-{i}"),
            server: ServerId(server_id),
            service_host: "127.0.0.1".into(),
            service_port: None,
            started_at_unix_ms: roster_real::rt::clock::unix_ms(),
            labels: Default::default(),
            reserved: ResourceAverage::default(),
        };
        match s.execute(Command::RegisterProcess { info }).await? {
            Reply::ProcessRegistered { id, .. } => {
                // The beater ends only after this sender is dropped, so it is listening.
                let _ = joined.send(id).await;
                count += 1;
            }
            other => return Err(CliError::unexpected("registering a process", &other)),
        }
    }
    Ok(count)
}

/// Heartbeats one lane keeps in flight: a lane sends on schedule while earlier answers
/// are outstanding, so one slow answer does not make the sends after it late (the bench
/// measures the cluster, and says how late it was itself).
const LANE_IN_FLIGHT: usize = 64;

/// What one lane saw: answers by kind, round trips, and how late each send was against
/// its schedule (a member's gap between beats is the interval plus that lateness).
#[derive(Default)]
struct LaneFigures {
    ok: u64,
    unknown: u64,
    failed: u64,
    rtt_us: Vec<u64>,
    late_us: Vec<u64>,
}

impl LaneFigures {
    fn add(&mut self, other: LaneFigures) {
        self.ok += other.ok;
        self.unknown += other.unknown;
        self.failed += other.failed;
        self.rtt_us.extend(other.rtt_us);
        self.late_us.extend(other.late_us);
    }

    fn count(&mut self, (answer, rtt): (Result<ClientResponse, roster_real::client::ClientError>, Duration)) {
        match answer {
            Ok(ClientResponse::HeartbeatOk) => {
                self.ok += 1;
                self.rtt_us.push(rtt.as_micros() as u64);
            }
            Ok(ClientResponse::UnknownMember(_)) => self.unknown += 1,
            _ => self.failed += 1,
        }
    }
}

/// When a lane beats: each member once per `interval`, its first beat one interval after
/// its registration, for `steady` after the lane's last registration.
#[derive(Clone, Copy)]
struct Schedule {
    interval: Duration,
    steady: Duration,
}

/// Beats each member that `joined` hands over on its own schedule, until the schedule ends.
async fn beat_lane(
    pool: Cluster,
    mut joined: tokio::sync::mpsc::Receiver<ProcessId>,
    schedule: Schedule,
) -> LaneFigures {
    use futures::StreamExt;
    let mut figures = LaneFigures::default();
    // Members by when each beats next, soonest first.
    let mut due: BinaryHeap<Reverse<(Instant, ProcessId)>> = BinaryHeap::new();
    let mut end: Option<Instant> = None;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        let next = due.peek().map(|Reverse((at, _))| *at);
        if let Some(end) = end
            && next.is_none_or(|at| at >= end)
        {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                figures.count(done);
                continue;
            }
            member = joined.recv(), if end.is_none() => {
                match member {
                    Some(id) => due.push(Reverse((Instant::now() + schedule.interval, id))),
                    None => end = Some(Instant::now() + schedule.steady),
                }
                continue;
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()),
                if next.is_some() && in_flight.len() < LANE_IN_FLIGHT => {}
        }
        let Reverse((at, id)) = due.pop().expect("the sleep waited for the first member due");
        let sent = Instant::now();
        figures.late_us.push(sent.saturating_duration_since(at).as_micros() as u64);
        due.push(Reverse((at + schedule.interval, id)));
        let pool = pool.clone();
        let member = MemberId::Process(id);
        in_flight.push(async move {
            let answer = pool.call_leader(ClientRequest::Heartbeat { member, resources: None }).await;
            (answer, sent.elapsed())
        });
    }
    while let Some(done) = in_flight.next().await {
        figures.count(done);
    }
    figures
}

async fn expiry_watch(prefix: String, max_s: u64, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let start = Instant::now();
    let mut first_gone: Option<f64> = None;
    let initial = count_members(&client, &prefix).await?;
    loop {
        let n = count_members(&client, &prefix).await?;
        let t = start.elapsed().as_secs_f64();
        if n < initial && first_gone.is_none() {
            first_gone = Some(t);
        }
        if n == 0 {
            outln!("{}", serde_json::json!({ "initial": initial, "first_gone_s": first_gone, "all_gone_s": t }));
            return Ok(ExitCode::SUCCESS);
        }
        if t > max_s as f64 {
            return Err(CliError::NotExpired { left: n, initial, waited_s: max_s });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count_members(client: &roster_real::client::Client, prefix: &str) -> Result<usize, CliError> {
    let filter = roster_kernel::ListFilter { kind: Some(roster_kernel::MemberKind::Process), ..Default::default() };
    let consistency = roster_real::net::wire::Consistency::Linearizable;
    let listed = client.list(filter, consistency).await?;
    Ok(listed.processes.iter().filter(|p| p.info.name.starts_with(prefix)).count())
}

/// A leader change as the poller saw it: when, and who led before and after.
struct LeaderChange {
    at: Duration,
    from: Option<u64>,
    to: Option<u64>,
}

async fn avail(
    duration_s: u64,
    sessions: u64,
    value_bytes: usize,
    poll_ms: u64,
    keys: u64,
    c: ClientArgs,
) -> Result<ExitCode, CliError> {
    if sessions == 0 || duration_s == 0 {
        return Err(CliError::Usage("--sessions and --duration-s must be at least 1".into()));
    }
    let (opts, connector) = (options(&c)?, c.connector()?);
    let mut writers = Vec::new();
    for _ in 0..sessions {
        let cluster = Cluster::with_connector(opts.clone(), connector.clone())?;
        writers.push(Session::open(cluster, RetryConfig::default(), rand::random()).await?);
    }
    // Status goes through a connection of its own, so a slow status never delays a put.
    let watcher = Cluster::with_connector(opts, connector)
        .and_then(|pool| roster_real::client::Client::with_cluster(pool, RetryConfig::default(), rand::random()))?;
    let value = "x".repeat(value_bytes);
    let start = Instant::now();
    let end = start + Duration::from_secs(duration_s);
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(put_until(s, i, keys, value.clone(), start, end)))
        .collect();
    let changes = watch_leader(&watcher, start, end, poll_ms).await;
    let mut acks = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (a, f) = t.await?;
        acks.extend(a);
        failures += f;
    }
    acks.sort_unstable();
    let gaps = AckGaps::new(&acks, Duration::from_secs(duration_s), poll_ms);
    let longest = gaps.longest();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if c.json {
        let per_change: Vec<serde_json::Value> = changes
            .iter()
            .map(|ch| {
                let gap = ms(gaps.at(ch.at));
                serde_json::json!({"at_s": ch.at.as_secs_f64(), "from": ch.from, "to": ch.to, "gap_ms": gap})
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "mode": "avail", "ops": acks.len(), "failures": failures, "seconds": duration_s,
                "max_gap_ms": ms(longest.1.saturating_sub(longest.0)), "max_gap_at_s": longest.0.as_secs_f64(),
                "leader_changes": per_change,
            })
        );
    } else {
        outln!(
            "avail: {} puts in {duration_s} s from {sessions} session(s), {failures} failed; longest gap {:.1} ms at {:.2} s",
            acks.len(),
            ms(longest.1.saturating_sub(longest.0)),
            longest.0.as_secs_f64()
        );
        for ch in &changes {
            let (at, gap) = (ch.at.as_secs_f64(), ms(gaps.at(ch.at)));
            outln!("  leader {:?} -> {:?} seen at {at:.2} s: write gap {gap:.1} ms", ch.from, ch.to);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One session's puts, one at a time, until `end` (over `keys` keys in turn, or a new key
/// each time for 0): when each was acknowledged (since `start`), and how many failed.
async fn put_until(
    s: Session,
    i: usize,
    keys: u64,
    value: String,
    start: Instant,
    end: Instant,
) -> (Vec<Duration>, u64) {
    let (mut acks, mut failures, mut j) = (Vec::new(), 0u64, 0u64);
    while Instant::now() < end {
        let key = if keys == 0 { j } else { j % keys };
        match s.execute(Command::KvPut { key: format!("bench/avail/{i}/{key}"), value: value.clone() }).await {
            Ok(_) => acks.push(start.elapsed()),
            Err(_) => failures += 1,
        }
        j += 1;
    }
    (acks, failures)
}

/// Polls the leader every `poll_ms` until `end`; every change seen, with when.
async fn watch_leader(
    watcher: &roster_real::client::Client,
    start: Instant,
    end: Instant,
    poll_ms: u64,
) -> Vec<LeaderChange> {
    let mut changes: Vec<LeaderChange> = Vec::new();
    let mut leader: Option<u64> = None;
    while Instant::now() < end {
        let poll = tokio::time::timeout(Duration::from_millis(poll_ms.max(1) * 10), watcher.status()).await;
        if let Ok(Ok(status)) = poll
            && status.leader.is_some()
            && status.leader != leader
        {
            if leader.is_some() {
                changes.push(LeaderChange { at: start.elapsed(), from: leader, to: status.leader });
            }
            leader = status.leader;
        }
        tokio::time::sleep(Duration::from_millis(poll_ms.max(1))).await;
    }
    changes
}

/// The gaps between consecutive acknowledgements, from the start and to the end too.
struct AckGaps {
    gaps: Vec<(Duration, Duration)>,
    poll_ms: u64,
}

impl AckGaps {
    fn new(sorted_acks: &[Duration], duration: Duration, poll_ms: u64) -> AckGaps {
        let mut edges = vec![Duration::ZERO];
        edges.extend(sorted_acks.iter().copied());
        let last = sorted_acks.last().copied().unwrap_or_default();
        edges.push(last.max(duration));
        AckGaps { gaps: edges.windows(2).map(|w| (w[0], w[1])).collect(), poll_ms }
    }

    fn longest(&self) -> (Duration, Duration) {
        self.gaps.iter().copied().max_by_key(|(a, b)| b.saturating_sub(*a)).unwrap_or_default()
    }

    /// The gap a change seen at `at` falls in: the last ack before it to the first after.
    /// The poller sees a change after it happened, so the gap that ends just before the
    /// sighting counts when the sighting itself falls between two quick acks.
    fn at(&self, at: Duration) -> Duration {
        self.gaps
            .iter()
            .filter(|(a, b)| *b + Duration::from_millis(self.poll_ms * 10) >= at && *a <= at)
            .map(|(a, b)| b.saturating_sub(*a))
            .max()
            .unwrap_or_default()
    }
}
