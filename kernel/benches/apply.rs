//! Throughput of `ClusterStateMachine::apply`, and snapshot/restore time.
//!
//! `cargo bench -p roster-kernel --bench apply`
//!
//! Each mix applies a batch of pre-built client proposals to a copy of a machine that
//! holds `entries` members (1% servers, the rest processes), round after round, and
//! reports applied commands per second. A plain `BTreeMap<u64, u64>` insert loop of the
//! same count, on a map of the same size, runs alongside as a yardstick, so the ratio
//! can be compared across machines. Only this file reads a clock; the kernel never does.

use roster_kernel::{
    ClusterStateMachine, Command, LeaderCommand, Limits, ProcessId, ProcessInfo, ProcessPatch, Proposal, ProposalBody,
    Reply, Request, ResourceAverage, ServerId, ServerInfo, SessionId, SessionOwner,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Target: applied commands per second with 100k entries in the table.
const TARGET_APPLIES_PER_S: f64 = 2_000_000.0;
/// Target: snapshot time of 100k members.
const TARGET_SNAPSHOT: Duration = Duration::from_millis(100);
/// Commands measured per mix and size, across rounds.
const COMMANDS_PER_MIX: usize = 400_000;
const SESSIONS: u64 = 1_000;

/// The system allocator, counting allocations so the table can show how many each
/// command costs (a figure that, unlike time, other load on the machine cannot skew).
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// SplitMix64: a seeded generator, so every run measures the same work.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn limits() -> Limits {
    Limits {
        max_processes: 10_000_000,
        max_servers: 100_000,
        // Experiments: `ROSTER_BENCH_EVENT_HISTORY=0` to see the cost of the history.
        event_history: std::env::var("ROSTER_BENCH_EVENT_HISTORY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Limits::default().event_history),
        // The bench measures applying, not refusals: a budget it never reaches.
        state_budget_bytes: 1 << 40,
        ..Limits::default()
    }
}

fn server_info(id: u64) -> ServerInfo {
    ServerInfo {
        name: format!("node-{id}"),
        raft_addr: format!("10.0.{}.{}:7000", id / 256, id % 256),
        api_addr: format!("10.0.{}.{}:7001", id / 256, id % 256),
        started_at_unix_ms: 1_700_000_000_000,
        cpu_capacity_percent: 800,
        mem_capacity_bytes: 32 << 30,
    }
}

fn process_info(n: u64, server: u64) -> ProcessInfo {
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), format!("app-{}", n % 16));
    labels.insert("team".to_string(), format!("team-{}", n % 4));
    ProcessInfo {
        name: format!("worker-{n}"),
        server: ServerId(server),
        service_host: "10.0.0.1".to_string(),
        service_port: Some(8000 + (n % 1000) as u16),
        started_at_unix_ms: 1_700_000_000_000,
        labels,
        reserved: ResourceAverage::default(),
    }
}

/// Issues client proposals round-robin over the sessions, in sequence.
struct Proposer {
    next_seq: Vec<u64>,
    turn: usize,
    now_ms: u64,
}

impl Proposer {
    fn client(&mut self, command: Command) -> Proposal {
        let index = self.turn % self.next_seq.len();
        self.turn += 1;
        let seq = self.next_seq[index];
        self.next_seq[index] += 1;
        self.now_ms += 1;
        let request = Request { session: SessionId(index as u64 + 1), seq, command };
        Proposal { at_unix_ms: self.now_ms, body: ProposalBody::Client { request, by: SessionOwner::Node } }
    }

    fn leader(&mut self, command: LeaderCommand) -> Proposal {
        self.now_ms += 1;
        Proposal { at_unix_ms: self.now_ms, body: ProposalBody::Leader(command) }
    }
}

/// A machine with `entries` members and `SESSIONS` open sessions, and what the bench
/// needs to keep proposing valid commands to it.
struct Bench {
    machine: ClusterStateMachine,
    proposer: Proposer,
    servers: u64,
    /// Live processes, in no particular order.
    live: Vec<ProcessId>,
    entries: usize,
    rng: Rng,
}

impl Bench {
    fn new(entries: usize, seed: u64) -> Self {
        let mut machine = ClusterStateMachine::new(limits());
        let proposer = Proposer { next_seq: vec![1; SESSIONS as usize], turn: 0, now_ms: 1 };
        for _ in 0..SESSIONS {
            let open = Proposal { at_unix_ms: 1, body: ProposalBody::OpenSession { owner: SessionOwner::Node } };
            machine.apply(&open).expect("open session");
        }
        let servers = (entries as u64 / 100).max(1);
        let mut bench = Bench { machine, proposer, servers, live: Vec::new(), entries, rng: Rng(seed) };
        for id in 0..servers {
            let command = Command::RegisterServer { id: ServerId(id), info: server_info(id) };
            bench.machine.apply(&bench.proposer.client(command)).expect("register server");
        }
        bench.rebalance();
        bench
    }

    fn members(&self) -> usize {
        self.machine.server_count() + self.machine.process_count()
    }

    /// Registers or deregisters processes until the machine holds `entries` members.
    fn rebalance(&mut self) {
        while self.members() < self.entries {
            let proposal = self.register();
            self.apply_and_track(&proposal);
        }
        while self.members() > self.entries {
            let proposal = self.delete();
            self.apply_and_track(&proposal);
        }
    }

    fn register(&mut self) -> Proposal {
        let n = self.rng.next();
        let info = process_info(n, n % self.servers);
        self.proposer.client(Command::RegisterProcess { info })
    }

    fn delete(&mut self) -> Proposal {
        let index = self.rng.below(self.live.len() as u64) as usize;
        let id = self.live.swap_remove(index);
        self.proposer.client(Command::DeregisterProcess { id, exit_status: Some(0) })
    }

    fn proposal(&mut self, kind: Kind) -> Proposal {
        match kind {
            Kind::Register => self.register(),
            Kind::Put => {
                let id = self.live[self.rng.below(self.live.len() as u64) as usize];
                let mut patch = ProcessPatch::default();
                let app = format!("app-{}", self.rng.below(16));
                patch.labels.insert("app".to_string(), Some(app));
                patch.service_port = Some(Some(self.rng.below(60_000) as u16));
                self.proposer.client(Command::PutProcess { id, patch })
            }
            Kind::Report => {
                let average = ResourceAverage {
                    cpu_percent_avg: self.rng.below(800) as u32,
                    mem_bytes_used_avg: self.rng.below(32 << 30),
                };
                let reports = vec![(ServerId(self.rng.below(self.servers)), average)];
                self.proposer.leader(LeaderCommand::ReportResources { reports })
            }
            Kind::Delete => self.delete(),
        }
    }

    /// Applies a proposal the bench built; every one of them must succeed.
    fn apply_and_track(&mut self, proposal: &Proposal) {
        match self.machine.apply(proposal) {
            Ok(Reply::ProcessRegistered { id, .. }) => self.live.push(id),
            Ok(Reply::Done { .. } | Reply::Applied { .. }) => {}
            other => panic!("{proposal} was refused: {other:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Register,
    Put,
    Report,
    Delete,
}

/// Proposals are built (untimed) and applied (timed) this many at a time, as a node
/// applies a batch of entries it has just decoded.
const CHUNK: usize = 1_000;

/// Wall-clock and on-CPU time of what was measured. Other builds share this machine's
/// two cores, so wall time can be inflated; the thread's CPU time (from the kernel's
/// scheduler statistics, where available) is what the rates are computed from.
#[derive(Clone, Copy, Default)]
struct Timing {
    wall: Duration,
    cpu: Duration,
    allocations: u64,
}

impl Timing {
    fn add(&mut self, other: Timing) {
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.allocations += other.allocations;
    }

    fn ns_per(&self, count: usize) -> f64 {
        self.cpu.as_nanos() as f64 / count as f64
    }

    fn per_second(&self, count: usize) -> f64 {
        count as f64 / self.cpu.as_secs_f64()
    }

    fn wall_per_second(&self, count: usize) -> f64 {
        count as f64 / self.wall.as_secs_f64()
    }
}

/// This thread's time on a CPU so far, from `/proc/thread-self/schedstat` (Linux); wall
/// time stands in where that is unavailable.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, Timing) {
    let cpu_before = thread_cpu_time();
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let value = work();
    let wall = started.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let cpu = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall,
    };
    (value, Timing { wall, cpu, allocations })
}

struct Row {
    mix: &'static str,
    entries: usize,
    commands: usize,
    apply: Timing,
    baseline: Timing,
}

fn measure_mix(mix: &'static str, kinds: &[Kind], entries: usize, seed: u64) -> Row {
    let mut bench = Bench::new(entries, seed);
    let mut apply = Timing::default();
    let mut commands = 0;
    let mut chunk = Vec::with_capacity(CHUNK);
    while commands < COMMANDS_PER_MIX {
        chunk.clear();
        for i in 0..CHUNK {
            let proposal = bench.proposal(kinds[(commands + i) % kinds.len()]);
            chunk.push(proposal);
        }
        let ((), timing) = timed(|| {
            for proposal in &chunk {
                bench.apply_and_track(proposal);
            }
        });
        apply.add(timing);
        commands += CHUNK;
        // Untimed: back to `entries` members, so a register or delete mix measures a
        // table of the stated size throughout.
        bench.rebalance();
    }
    black_box(&bench.machine);
    let baseline = btree_baseline(entries, commands, &mut bench.rng);
    Row { mix, entries, commands, apply, baseline }
}

/// Inserting `count` random keys into a map that starts with `entries` keys.
fn btree_baseline(entries: usize, count: usize, rng: &mut Rng) -> Timing {
    let mut map: BTreeMap<u64, u64> = (0..entries as u64).map(|k| (k << 20, k)).collect();
    let keys: Vec<u64> = (0..count).map(|_| rng.next()).collect();
    let ((), timing) = timed(|| {
        for &key in &keys {
            map.insert(key, key);
        }
    });
    black_box(&map);
    timing
}

fn median(mut samples: Vec<Timing>) -> Timing {
    samples.sort_by_key(|timing| timing.cpu);
    samples[samples.len() / 2]
}

fn main() {
    // `cargo bench ... -- put 10000` measures only the rows of mix "put" at 10000
    // entries; `-- snapshot` only the snapshot; no filter, everything.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let snapshot_wanted = filters.is_empty() || filters.iter().any(|f| f == "snapshot");
    let wanted = |mix: &str, entries: usize| {
        let entries = entries.to_string();
        filters.is_empty() || (!snapshot_wanted && filters.iter().all(|f| *f == mix || *f == entries))
    };
    let mut rng = Rng(0x5EED);
    let worst_at_100k = apply_rows(&mut rng, wanted);
    if !snapshot_wanted {
        return;
    }
    let snapshot = snapshot_and_restore(&mut rng);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if worst_at_100k.is_finite() {
        println!(
            "target >= {:.0} applies/s at 100k entries: slowest mix {:.0}/s, {}",
            TARGET_APPLIES_PER_S,
            worst_at_100k,
            verdict(worst_at_100k >= TARGET_APPLIES_PER_S)
        );
    }
    println!(
        "target snapshot of 100k members <= {} ms: {:.1} ms, {}",
        TARGET_SNAPSHOT.as_millis(),
        snapshot.cpu.as_secs_f64() * 1e3,
        verdict(snapshot.cpu <= TARGET_SNAPSHOT)
    );
}

/// The table of apply rates, one row per wanted (mix, entries); the slowest rate at 100k
/// entries (infinity if none was measured).
fn apply_rows(rng: &mut Rng, wanted: impl Fn(&str, usize) -> bool) -> f64 {
    let mixes: [(&str, &[Kind]); 5] = [
        ("register", &[Kind::Register]),
        ("put", &[Kind::Put]),
        ("report", &[Kind::Report]),
        ("delete", &[Kind::Delete]),
        ("mixed", &[Kind::Register, Kind::Put, Kind::Report, Kind::Delete]),
    ];
    let history = limits().event_history;
    println!(
        "roster-kernel apply bench: {COMMANDS_PER_MIX} client commands per row over {SESSIONS} sessions, \
         event history {history}; rates per second of thread CPU time"
    );
    println!();
    println!(
        "{:<9} {:>8} {:>9} {:>8} {:>11} {:>11} {:>11} {:>14} {:>15}",
        "mix",
        "entries",
        "commands",
        "ns/cmd",
        "cmds/s",
        "wall cmds/s",
        "allocs/cmd",
        "BTreeMap ins/s",
        "apply/BTreeMap"
    );
    let mut worst_at_100k = f64::INFINITY;
    for entries in [10_000, 100_000] {
        for (mix, kinds) in mixes {
            if !wanted(mix, entries) {
                continue;
            }
            let row = measure_mix(mix, kinds, entries, rng.next());
            let rate = row.apply.per_second(row.commands);
            if row.entries == 100_000 {
                worst_at_100k = worst_at_100k.min(rate);
            }
            println!(
                "{:<9} {:>8} {:>9} {:>8.0} {:>11.0} {:>11.0} {:>11.1} {:>14.0} {:>14.1}x",
                row.mix,
                row.entries,
                row.commands,
                row.apply.ns_per(row.commands),
                rate,
                row.apply.wall_per_second(row.commands),
                row.apply.allocations as f64 / row.commands as f64,
                row.baseline.per_second(row.commands),
                row.apply.cpu.as_secs_f64() / row.baseline.cpu.as_secs_f64(),
            );
        }
    }
    println!("(apply/BTreeMap: time to apply the commands / time to insert as many u64 keys into a BTreeMap)");
    println!();
    worst_at_100k
}

/// Snapshots and restores a machine of 100k members five times; prints and returns the
/// median snapshot timing.
fn snapshot_and_restore(rng: &mut Rng) -> Timing {
    let machine = Bench::new(100_000, rng.next()).machine;
    let mut snapshot_times = Vec::new();
    let mut restore_times = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..5 {
        let (snapshot, timing) = timed(|| machine.snapshot());
        snapshot_times.push(timing);
        let (restored, timing) = timed(|| ClusterStateMachine::restore(&snapshot).expect("own snapshot restores"));
        restore_times.push(timing);
        assert_eq!(restored.revision(), machine.revision());
        black_box(restored);
        bytes = snapshot;
    }
    let (snapshot, restore) = (median(snapshot_times), median(restore_times));
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    println!(
        "snapshot of {} members: {:.1} ms CPU ({:.1} ms wall), {:.1} MiB; restore: {:.1} ms CPU ({:.1} ms wall); median of 5",
        machine.server_count() + machine.process_count(),
        ms(snapshot.cpu),
        ms(snapshot.wall),
        bytes.len() as f64 / (1 << 20) as f64,
        ms(restore.cpu),
        ms(restore.wall),
    );
    println!();
    snapshot
}
