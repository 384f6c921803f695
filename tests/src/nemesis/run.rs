//! One nemesis run: the cluster in namespaces, the workload, the seeded rounds of faults,
//! then the settle, the final state and every checker.
//!
//! A round applies its fault, holds it, heals it (restarts what it killed) and leaves
//! the cluster `QUIET_MS` to recover before the next. The full-disk round also checks
//! what only it can: the node stops with an error naming the file, the others keep
//! serving, and after the space is freed and the node restarted it catches up.

use super::NemesisError;
use super::faults::{FaultKind, Round, schedule};
use super::history::{Recorder, SharedRecorder};
use super::net::{self, Network, RunLock};
use super::nodes::{Nodes, node_addr};
use super::observer::{Observer, SAMPLE_EVERY_MS};
use super::report::{self, HarnessCheck};
use super::rng::SplitMix;
use super::workload::{self, Shared};
use roster_real::client::Client;
use roster_scenarios::analysis::{self, Bounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KV_SESSIONS: u64 = 4;
const MEMBER_SLOTS: u64 = 4;
/// The nodes' defaults (`roster node` without liveness flags).
const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
const HEARTBEAT_TIMEOUT_MS: u64 = 3_000;
/// After a heal, before the next round.
const QUIET_MS: u64 = 3_000;
/// Before the first round, and after the last before the workload stops.
const WARMUP_MS: u64 = 2_000;
const SETTLE_MS: u64 = 15_000;
/// A restarted node answers its status within this, or it failed to start.
const RESTART_WITHIN_MS: u64 = 15_000;
/// The full-disk round: how long the node may take to hit the full disk under the
/// filler load, and the others to serve and the node to catch up.
const DISK_STOP_WITHIN_MS: u64 = 40_000;
const OTHERS_SERVE_WITHIN_MS: u64 = 15_000;
const CATCH_UP_WITHIN_MS: u64 = 30_000;
/// The filler load's values: each log record this big, so a WAL segment fills fast.
const FILL_VALUE_BYTES: usize = 8 << 10;
const FILL_KEYS: u64 = 1_200;
/// CI mode: every fault kind once, in about 3 minutes in all.
pub const CI_ROUNDS: usize = FaultKind::ALL.len();

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: u64,
    /// Rounds to run (CI mode); with `minutes`, rounds until the time is up.
    pub rounds: usize,
    pub minutes: Option<u64>,
}

impl RunConfig {
    /// The command that repeats this run's schedule.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("target/debug/roster-nemesis --seed {} --nodes {}", self.seed, self.nodes);
        match self.minutes {
            Some(m) => cmd.push_str(&format!(" --minutes {m}")),
            None => cmd.push_str(&format!(" --rounds {}", self.rounds)),
        }
        cmd
    }
}

pub struct RunOutcome {
    pub passed: bool,
    pub table: String,
    pub elapsed: Duration,
}

/// Runs one nemesis run on a runtime of its own; cleans up whatever happens.
pub fn run(config: &RunConfig) -> Result<RunOutcome, NemesisError> {
    let _lock = RunLock::acquire()?;
    net::cleanup_leftovers();
    net::fresh_run_dir()?;
    super::on_own_runtime(run_async(config))?
}

/// The cluster, the network and the observer of a run, and what the harness checks
/// itself.
pub struct Harness {
    pub net: Network,
    pub nodes: Nodes,
    pub rec: SharedRecorder,
    pub observer: Observer,
    pub checks: Vec<HarnessCheck>,
}

impl Harness {
    /// Network, nodes (the last on a tmpfs when `with_disk`), observer and a leader.
    pub async fn start(n: u64, with_disk: bool) -> Result<Harness, NemesisError> {
        let ids: Vec<u64> = (1..=n).collect();
        let net = Network::create(&ids)?;
        let nodes = Nodes::start(&ids, with_disk.then_some(n))?;
        let rec = Recorder::new();
        let addrs: Vec<(u64, String)> = ids.iter().map(|id| (*id, node_addr(*id))).collect();
        let observer = Observer::start(rec.clone(), &addrs).await;
        let mut h = Harness { net, nodes, rec, observer, checks: Vec::new() };
        if h.observer.wait_leader(Duration::from_secs(30)).await.is_none() {
            return Err(NemesisError::Stuck(format!("no leader within 30 s of the start\n{}", h.log_tails())));
        }
        h.admit_late_starters(&ids).await?;
        Ok(h)
    }

    /// A node whose first start lost the bootstrap race (its peers formed the cluster,
    /// with it as a member, before it asked them) cannot tell itself from a node that lost
    /// its disk, so it waits for the operator (docs/operations.md, "Bootstrap"): do the operator's
    /// step, `member replace`, and say so.
    async fn admit_late_starters(&mut self, ids: &[u64]) -> Result<(), NemesisError> {
        for &id in ids {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(s) = self.observer.status_of(id).await {
                    break Some(s);
                }
                if tokio::time::Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let Some(waiting) = status.and_then(|s| s.waiting) else { continue };
            if !waiting.contains("a cluster already runs") {
                continue;
            }
            self.rec.fault(format!("start: node {id} lost the bootstrap race ({waiting}); member replace {id}"));
            let client = Client::connect(workload::client_options(&self.nodes.endpoints()), 0x4e91)
                .await
                .map_err(|e| NemesisError::Stuck(e.to_string()))?;
            client.replace_node(id).await.map_err(|e| {
                NemesisError::Stuck(format!("member replace {id} after the bootstrap race failed: {e}"))
            })?;
        }
        Ok(())
    }

    pub fn log_tails(&self) -> String {
        let mut s = String::new();
        for &id in &self.nodes.ids {
            s.push_str(&format!(
                "--- node {id} ({}) ---\n{}\n",
                self.nodes.log_path(id).display(),
                self.nodes.log_tail(id, 15)
            ));
        }
        s
    }

    /// The confirmed leader now, else a seeded node (a round needs a target anyway).
    async fn leader_or(&self, rng: &mut SplitMix) -> u64 {
        match self.observer.leader().await {
            Some(l) => l,
            None => rng.pick(&self.nodes.ids),
        }
    }

    /// Restarts `id` and waits (bounded) for it to answer; a node that does not is a
    /// start failure (`commits-recovered`).
    pub async fn restart(&mut self, id: u64) {
        if let Err(e) = self.nodes.spawn(id) {
            let at = self.rec.now_ms();
            self.rec.trace().record_start_failure(at, format!("node {id} could not be started: {e}"));
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(RESTART_WITHIN_MS);
        while tokio::time::Instant::now() < deadline {
            if self.observer.status_of(id).await.is_some() {
                return;
            }
            if let Some(status) = self.nodes.exited(id) {
                let at = self.rec.now_ms();
                let tail = self.nodes.log_tail(id, 5);
                self.rec
                    .trace()
                    .record_start_failure(at, format!("node {id} exited ({status}) after its restart: {tail}"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at = self.rec.now_ms();
        self.rec
            .trace()
            .record_start_failure(at, format!("node {id} did not answer within {RESTART_WITHIN_MS} ms of its restart"));
    }

    fn heal_network(&mut self) -> Result<(), NemesisError> {
        self.net.heal()?;
        self.nodes.resume_all();
        Ok(())
    }

    /// Applies one round's fault, holds it, heals it.
    async fn round(&mut self, round: &Round) -> Result<(), NemesisError> {
        let mut rng = SplitMix::new(round.seed);
        let ids = self.nodes.ids.clone();
        let hold = Duration::from_millis(round.hold_ms);
        match round.kind {
            FaultKind::IsolateLeader => {
                let l = self.leader_or(&mut rng).await;
                self.net.split(&[l])?;
                self.rec.fault(format!("isolate-leader: node {l} cut from the others for {} ms", round.hold_ms));
                tokio::time::sleep(hold).await;
                self.heal_network()?;
            }
            FaultKind::MinorityMajority => {
                let mut order = ids.clone();
                rng.shuffle(&mut order);
                let minority: Vec<u64> = order[..(ids.len() - 1) / 2].to_vec();
                self.net.split(&minority)?;
                self.rec.fault(format!("minority-majority: {minority:?} cut from the rest for {} ms", round.hold_ms));
                tokio::time::sleep(hold).await;
                self.heal_network()?;
            }
            FaultKind::OneWay => {
                let l = self.leader_or(&mut rng).await;
                let followers: Vec<u64> = ids.iter().copied().filter(|&i| i != l).collect();
                let targets = if rng.chance(50) { followers.clone() } else { vec![rng.pick(&followers)] };
                for &f in &targets {
                    self.net.block(l, f)?;
                }
                self.rec.fault(format!(
                    "one-way: packets from leader {l} to {targets:?} dropped (the other way delivered) for {} ms",
                    round.hold_ms
                ));
                tokio::time::sleep(hold).await;
                self.heal_network()?;
            }
            FaultKind::Bridge => {
                let mut order = ids.clone();
                rng.shuffle(&mut order);
                let bridge = order[0];
                let half = (order.len() - 1) / 2;
                let (a, c) = order[1..].split_at(half);
                for &x in a {
                    for &y in c {
                        self.net.cut(x, y)?;
                    }
                }
                self.rec.fault(format!(
                    "bridge: {a:?} and {c:?} cannot see each other, node {bridge} sees both, for {} ms",
                    round.hold_ms
                ));
                tokio::time::sleep(hold).await;
                self.heal_network()?;
            }
            FaultKind::Pause => {
                let target = if rng.chance(50) { self.leader_or(&mut rng).await } else { rng.pick(&ids) };
                self.nodes.pause(target);
                self.rec.fault(format!("pause: SIGSTOP node {target} for {} ms", round.hold_ms));
                tokio::time::sleep(hold).await;
                self.nodes.resume(target);
            }
            FaultKind::KillOne | FaultKind::KillLeader => {
                let target =
                    if round.kind == FaultKind::KillLeader { self.leader_or(&mut rng).await } else { rng.pick(&ids) };
                self.nodes.kill9(target);
                self.rec.fault(format!("{}: kill -9 node {target}, restarted after {} ms", round.kind, round.hold_ms));
                tokio::time::sleep(hold).await;
                self.restart(target).await;
            }
            FaultKind::KillAll => {
                for &id in &ids {
                    self.nodes.kill9(id);
                }
                self.rec.fault(format!("kill-all: kill -9 every node, all restarted after {} ms", round.hold_ms));
                tokio::time::sleep(hold).await;
                for &id in &ids {
                    if let Err(e) = self.nodes.spawn(id) {
                        let at = self.rec.now_ms();
                        self.rec.trace().record_start_failure(at, format!("node {id} could not be started: {e}"));
                    }
                }
                for &id in &ids {
                    // Already spawned: wait for each to answer.
                    self.wait_answers(id).await;
                }
            }
            FaultKind::DiskFull => self.disk_full(&mut rng).await?,
        }
        let at = self.rec.now_ms();
        self.rec.trace().record_heal(at);
        Ok(())
    }

    async fn wait_answers(&mut self, id: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(RESTART_WITHIN_MS);
        while tokio::time::Instant::now() < deadline {
            if self.observer.status_of(id).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at = self.rec.now_ms();
        self.rec
            .trace()
            .record_start_failure(at, format!("node {id} did not answer within {RESTART_WITHIN_MS} ms of its restart"));
    }

    /// Fill, load until the node stops, check the others serve, free, restart, catch up.
    async fn disk_full(&mut self, rng: &mut SplitMix) -> Result<(), NemesisError> {
        let Some(d) = self.nodes.disk_node else { return Ok(()) };
        // Half the time the full disk is the leader's: the harder case (it must step
        // aside, not keep calling itself leader).
        if rng.chance(50) && self.observer.leader().await != Some(d) {
            let moved = self.observer.client.transfer_leader(Some(d)).await;
            self.rec.fault(format!("disk-full: leadership moved to node {d} first ({moved:?})"));
        }
        let (_, filled) = self.nodes.fill_disk()?;
        self.rec.fault(format!(
            "disk-full: node {d}'s tmpfs data directory filled ({} MiB) under a load of 8 KiB puts",
            filled >> 20
        ));
        let before = self.nodes.log(d).len();
        let stop = Arc::new(AtomicBool::new(false));
        let endpoints = self.nodes.endpoints();
        let fillers: Vec<_> = (0..2).map(|i| tokio::spawn(fill_load(endpoints.clone(), stop.clone(), i))).collect();
        let started = Instant::now();
        let mut stop_line = None;
        while started.elapsed() < Duration::from_millis(DISK_STOP_WITHIN_MS) {
            let log = self.nodes.log(d);
            if let Some(line) = log[before.min(log.len())..].lines().find(|l| l.contains("fail-stopped on")) {
                stop_line = Some(line.to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stopped_after_ms = started.elapsed().as_millis();
        let names_file = stop_line.as_deref().and_then(named_file);
        self.checks.push(HarnessCheck {
            name: "disk-full-stops-naming-file",
            result: match (&stop_line, &names_file) {
                (Some(_), Some(file)) => Ok(format!("node {d} stopped after {stopped_after_ms} ms naming {file}")),
                (Some(line), None) => Err(format!("node {d} stopped without naming the file: {line}")),
                (None, _) => Err(format!(
                    "node {d} did not report a fail-stop within {DISK_STOP_WITHIN_MS} ms of its disk filling up\n{}",
                    self.nodes.log_tail(d, 10)
                )),
            },
        });
        if stop_line.is_some() {
            self.rec.fault(format!("disk-full: node {d} fail-stopped after {stopped_after_ms} ms"));
        }
        // The others keep serving: puts through the other nodes alone.
        let others: Vec<String> = self.nodes.ids.iter().filter(|&&i| i != d).map(|&i| node_addr(i)).collect();
        let served = others_serve(&others).await;
        self.checks.push(HarnessCheck { name: "disk-full-others-serve", result: served });
        stop.store(true, Ordering::Relaxed);
        for f in fillers {
            f.abort();
        }
        self.nodes.free_disk();
        self.nodes.kill9(d);
        self.rec.fault(format!("disk-full: space freed, node {d} restarted"));
        self.restart(d).await;
        let target = self.observer.max_commit();
        let started = Instant::now();
        let mut caught_up = Err(format!("node {d} did not reach commit index {target} within {CATCH_UP_WITHIN_MS} ms"));
        while started.elapsed() < Duration::from_millis(CATCH_UP_WITHIN_MS) {
            if let Some(s) = self.observer.status_of(d).await
                && s.applied_index.is_some_and(|a| a >= target)
            {
                caught_up = Ok(format!(
                    "node {d} applied index {target} {} ms after its restart",
                    started.elapsed().as_millis()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.checks.push(HarnessCheck { name: "disk-full-catches-up", result: caught_up });
        Ok(())
    }
}

/// The file a fail-stop line names: the word after "fail-stopped on ".
fn named_file(line: &str) -> Option<String> {
    let rest = line.split("fail-stopped on ").nth(1)?;
    let file: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ':' && *c != '"').collect();
    (!file.is_empty()).then_some(file)
}

/// 8 KiB puts to a fixed set of keys (outside the workload's), one at a time, until
/// stopped; not part of the history (their values are not `c<client>-<seq>`).
async fn fill_load(endpoints: Vec<String>, stop: Arc<AtomicBool>, index: u64) {
    let Ok(client) = Client::connect(workload::client_options(&endpoints), 0xf111 + index).await else { return };
    let value = "f".repeat(FILL_VALUE_BYTES);
    let mut i = index;
    while !stop.load(Ordering::Relaxed) {
        let _ = client.kv_put(format!("fill/{}", i % FILL_KEYS), value.clone()).await;
        i += 2;
    }
}

async fn others_serve(endpoints: &[String]) -> Result<String, String> {
    let client = Client::connect(workload::client_options(endpoints), 0x07e5).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut acked = 0;
    let mut last_error = String::new();
    while started.elapsed() < Duration::from_millis(OTHERS_SERVE_WITHIN_MS) {
        let put = tokio::time::timeout(Duration::from_secs(3), client.kv_put(format!("serve/{acked}"), "x")).await;
        match put {
            Ok(Ok(_)) => acked += 1,
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "a put took over 3 s".into(),
        }
        if acked >= 3 {
            return Ok(format!("3 puts through the other nodes in {} ms", started.elapsed().as_millis()));
        }
    }
    Err(format!("only {acked} puts through the other nodes within {OTHERS_SERVE_WITHIN_MS} ms; last: {last_error}"))
}

/// A history with nothing in it passes every checker: a run whose workload could not
/// reach the cluster, or whose observer saw no node, fails here instead.
fn enough_to_judge(stats: &report::Stats) -> Result<String, String> {
    let seen = format!(
        "{} operations answered, {} heartbeats acknowledged, {} leader sightings, {} state samples",
        stats.returned, stats.heartbeats, stats.sightings, stats.states
    );
    if stats.returned > 0 && stats.heartbeats > 0 && stats.sightings > 0 && stats.states > 0 {
        Ok(seen)
    } else {
        Err(format!("{seen}: too little for the checkers to judge"))
    }
}

pub fn bounds() -> Bounds {
    Bounds {
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS,
        check_period_ms: roster_real::server::leader::TICK_MS,
        // Proposal, replication, apply and the watch stream to the harness.
        removal_slack_ms: 1_000,
        progress_ms: 10_000,
        delivery_settle_ms: SETTLE_MS - 2_000,
        sample_every_ms: SAMPLE_EVERY_MS,
        // A sighting counts as an available leader only with a confirmation by a quorum
        // at that very sample (`quorum_ack_age_ms = Some(0)`).
        leader_lease_ms: 1,
    }
}

async fn run_async(config: &RunConfig) -> Result<RunOutcome, NemesisError> {
    let started = Instant::now();
    let mut h = Harness::start(config.nodes, true).await?;
    let shared = Arc::new(Shared {
        recorder: h.rec.clone(),
        stop: AtomicBool::new(false),
        round: AtomicU64::new(0),
        members_registered: AtomicU64::new(0),
        members_left: AtomicU64::new(0),
        members_crashed: AtomicU64::new(0),
        members_lost: AtomicU64::new(0),
        endpoints: h.nodes.endpoints(),
        servers: config.nodes,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
    });
    let mut seeds = SplitMix::new(config.seed ^ 0x5eed);
    let mut workers = Vec::new();
    for i in 0..KV_SESSIONS {
        workers.push(tokio::spawn(workload::kv_session(shared.clone(), i + 1, seeds.next_u64())));
    }
    for i in 0..MEMBER_SLOTS {
        workers.push(tokio::spawn(workload::member_slot(shared.clone(), i, seeds.next_u64())));
    }
    tokio::time::sleep(Duration::from_millis(WARMUP_MS)).await;

    let deadline = config.minutes.map(|m| started + Duration::from_secs(m * 60));
    let rounds = match deadline {
        Some(_) => schedule(config.seed, 100_000),
        None => schedule(config.seed, config.rounds),
    };
    let mut applied = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        shared.round.store(i as u64 + 1, Ordering::Relaxed);
        println!(
            "--- round {} of {}: {} ---",
            i + 1,
            if deadline.is_some() { "∞".to_string() } else { rounds.len().to_string() },
            round.kind
        );
        if let Err(e) = h.round(round).await {
            // Heal whatever is left before giving up on the run.
            let _ = h.heal_network();
            return Err(e);
        }
        applied.push(round.kind);
        tokio::time::sleep(Duration::from_millis(QUIET_MS)).await;
    }
    tokio::time::sleep(Duration::from_millis(WARMUP_MS)).await;

    // Stop: no new operations; live members leave; answers still due come in.
    shared.stop.store(true, Ordering::Relaxed);
    let settle_until = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    for w in workers.iter_mut() {
        let _ = tokio::time::timeout_at(settle_until, w).await;
    }
    for w in &workers {
        w.abort();
    }
    tokio::time::sleep_until(settle_until).await;
    let recorded_states = h.observer.record_states(&h.rec).await;
    let (final_kv, revision) = match h.observer.final_kv(Duration::from_secs(10)).await {
        Some(v) => v,
        None => return Err(NemesisError::Stuck(format!("no leader answered the final read\n{}", h.log_tails()))),
    };
    let end_ms = h.rec.now_ms();
    h.rec.trace().record_end(end_ms, final_kv, revision);
    let trace = h.rec.trace().clone();
    let check = analysis::check(&trace, &bounds());
    let stats = report::Stats::of(&trace, &shared, recorded_states);
    h.checks.push(HarnessCheck { name: "enough-to-judge", result: enough_to_judge(&stats) });
    let passed = check.passed() && h.checks.iter().all(|c| c.result.is_ok());
    let elapsed = started.elapsed();
    let table = report::table(&report::Table {
        title: format!(
            "nemesis run: seed {} · {} nodes · {} rounds · {:.0} s",
            config.seed,
            config.nodes,
            applied.len(),
            elapsed.as_secs_f64()
        ),
        faults: &applied,
        trace: &trace,
        check: &check,
        harness: &h.checks,
        stats: &stats,
    });
    let mut table = table;
    if !passed {
        table.push_str(&format!(
            "\nFAILED. Repeat this schedule with:\n  {}\nnode logs: {}\n{}",
            config.replay_command(),
            net::RUN_DIR,
            h.log_tails()
        ));
    }
    Ok(RunOutcome { passed, table, elapsed })
}
