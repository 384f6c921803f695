//! One simulated run: a fresh madsim runtime seeded with the run's seed, a world shaped
//! by the scenario, its fault phase between a warm-up and a heal, settle and quiet phase,
//! then every checker on the trace.

use crate::analysis::{self, Bounds};
use crate::checkers::CheckReport;
use crate::scenarios::Scenario;
use roster_sim::trace::Trace;
use roster_sim::world::{World, WorldConfig};
use std::sync::Mutex;
use std::time::Duration;

/// Phase lengths, in simulated milliseconds.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Before the first fault: the cluster forms, servers and processes register.
    pub warmup_ms: u64,
    pub fault_ms: u64,
    /// After the heal, with the workload still running.
    pub settle_ms: u64,
    /// After the workload stops: long enough for a silent member's removal to be due.
    pub quiet_ms: u64,
    /// Replace the scenario's number of key/value workers.
    pub kv_workers: Option<u64>,
    /// Replace the scenario's number of process workers.
    pub process_workers: Option<u64>,
    /// Replace the sampler's period.
    pub sample_every_ms: Option<u64>,
    /// Instant disks (no latency, stalls or EIO; an fsync is durable when it returns), to
    /// measure what the disk model costs. Scenarios that inject disk faults then inject none.
    pub instant_disks: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            warmup_ms: 3_000,
            fault_ms: 20_000,
            settle_ms: 8_000,
            quiet_ms: 6_000,
            kv_workers: None,
            process_workers: None,
            sample_every_ms: None,
            instant_disks: false,
        }
    }
}

pub struct RunOutcome {
    pub report: CheckReport,
    pub trace_hash: u64,
    pub sim_ms: u64,
    pub wall_ms: u64,
    pub trace: Trace,
}

/// The leader's duty loop period (`roster_real::server::leader`'s `TICK_MS`).
const LEADER_TICK_MS: u64 = 50;

pub fn bounds(config: &WorldConfig, opts: &RunOptions) -> Bounds {
    Bounds {
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        heartbeat_timeout_ms: config.heartbeat_timeout_ms,
        check_period_ms: LEADER_TICK_MS,
        removal_slack_ms: 1_000,
        progress_ms: 5_000,
        delivery_settle_ms: opts.quiet_ms.saturating_sub(1_000),
        sample_every_ms: config.sample_every_ms,
        leader_lease_ms: config.election_timeout_min_ms,
    }
}

pub fn world_config(scenario: &Scenario, opts: &RunOptions) -> WorldConfig {
    let mut config = WorldConfig::default();
    (scenario.configure)(&mut config);
    config.kv_workers = opts.kv_workers.unwrap_or(config.kv_workers);
    config.process_workers = opts.process_workers.unwrap_or(config.process_workers);
    config.sample_every_ms = opts.sample_every_ms.unwrap_or(config.sample_every_ms);
    config.disk_model &= !opts.instant_disks;
    config
}

/// Runs `scenario` with `seed` in a fresh runtime on this thread.
pub fn run(scenario: &'static Scenario, seed: u64, opts: &RunOptions) -> RunOutcome {
    let config = world_config(scenario, opts);
    let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let total_ms = opts.warmup_ms + opts.fault_ms + opts.settle_ms + opts.quiet_ms;
    // A run that hangs (a fault phase that never ends) fails loudly instead.
    rt.set_time_limit(Duration::from_millis(total_ms * 3 + 60_000));
    let wall = std::time::Instant::now();
    let trace = rt.block_on(drive(scenario, config.clone(), opts.clone()));
    let wall_ms = wall.elapsed().as_millis() as u64;
    drop(rt);
    let report = analysis::check(&trace, &bounds(&config, opts));
    RunOutcome { report, trace_hash: trace.hash(), sim_ms: trace.end_ms, wall_ms, trace }
}

async fn drive(scenario: &'static Scenario, config: WorldConfig, opts: RunOptions) -> Trace {
    let mut world = World::start(config);
    world.sleep_ms(opts.warmup_ms).await;
    (scenario.faults)(&mut world, opts.fault_ms).await;
    world.heal_all();
    world.sleep_ms(opts.settle_ms).await;
    world.quiet();
    world.sleep_ms(opts.quiet_ms).await;
    world.finish()
}

/// What `check_determinism` runs: it takes a plain `fn`, so the scenario and options
/// travel through this slot.
static DETERMINISM_RUN: Mutex<Option<(&'static Scenario, RunOptions)>> = Mutex::new(None);

fn determinism_body() -> std::pin::Pin<Box<dyn std::future::Future<Output = u64>>> {
    let (scenario, opts) = DETERMINISM_RUN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("check_determinism set the scenario first");
    Box::pin(async move {
        let config = world_config(scenario, &opts);
        drive(scenario, config, opts).await.hash()
    })
}

/// madsim's own determinism check: runs the seed twice (in two threads), logging every
/// draw from the RNG the first time and comparing the second run against the log; panics
/// at the first divergence. Returns the trace hash.
pub fn check_determinism(scenario: &'static Scenario, seed: u64, opts: &RunOptions) -> u64 {
    *DETERMINISM_RUN.lock().unwrap_or_else(|e| e.into_inner()) = Some((scenario, opts.clone()));
    madsim::runtime::Runtime::check_determinism(seed, madsim::Config::default(), determinism_body)
}
