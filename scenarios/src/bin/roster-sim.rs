//! `roster-sim`: runs Roster's fault scenarios under the deterministic simulator.
//!
//! ```text
//! roster-sim list
//! roster-sim run --scenario S --seed N [--trace]
//! roster-sim sweep --scenario S|all --seeds A..B [--jobs J]
//! roster-sim determinism --scenario S|all --seeds A..B [--jobs J]
//! roster-sim soak [--scenario S|all] --minutes M [--jobs J] [--first-seed N]
//! ```
//!
//! Only meaningful when built with `RUSTFLAGS="--cfg madsim"` (see `scripts/sim-suite`);
//! a normal build says so and exits 2.

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "roster-sim runs the simulated world and must be built with the madsim configuration:\n  \
         RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim cargo build --release -j2 -p roster-scenarios --bin roster-sim"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(sim::main());
}

#[cfg(madsim)]
mod sim {
    use clap::{Args, Parser, Subcommand};
    use roster_scenarios::checkers::ReportStatus;
    use roster_scenarios::runner::{self, RunOptions};
    use roster_scenarios::scenarios::{self, Scenario};
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    #[derive(Parser)]
    #[command(name = "roster-sim", about = "Roster's fault scenarios under the deterministic simulator")]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    /// Which scenarios and seeds a `sweep` or `determinism` covers.
    #[derive(Args)]
    struct SeedRange {
        /// A scenario name, or `all`.
        #[arg(long)]
        scenario: String,
        /// `A..B` (B excluded) or one seed.
        #[arg(long)]
        seeds: String,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[command(flatten)]
        phases: Phases,
    }

    impl SeedRange {
        /// Runs `f` on the chosen scenarios and seeds, or explains what is wrong with them.
        fn with(&self, f: impl FnOnce(&[&'static Scenario], std::ops::Range<u64>, usize, &Phases) -> i32) -> i32 {
            match (pick(&self.scenario), parse_seeds(&self.seeds)) {
                (Some(list), Some(seeds)) => f(&list, seeds, self.jobs.max(1), &self.phases),
                (None, _) => unknown(&self.scenario),
                (_, None) => bad_seeds(&self.seeds),
            }
        }
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Lists the scenarios.
        List,
        /// Runs one scenario with one seed; prints the checkers' report and the trace hash.
        Run {
            #[arg(long)]
            scenario: String,
            #[arg(long)]
            seed: u64,
            /// Also print the recorded trace.
            #[arg(long)]
            trace: bool,
            /// One tab-separated RESULT line for `sweep` instead of the report.
            #[arg(long, hide = true)]
            machine: bool,
            #[command(flatten)]
            phases: Phases,
        },
        /// Runs scenarios over a range of seeds, in child processes; prints a table.
        Sweep(SeedRange),
        /// Runs fresh seeds of every scenario (or one) for a given wall time, in child
        /// processes; prints the table, runs per minute and a replay command per failure.
        Soak {
            #[arg(long, default_value = "all")]
            scenario: String,
            #[arg(long)]
            minutes: f64,
            #[arg(long, default_value_t = 1)]
            jobs: usize,
            /// The first seed (default: drawn from the wall clock, and printed).
            #[arg(long)]
            first_seed: Option<u64>,
            #[command(flatten)]
            phases: Phases,
        },
        /// For each seed: two runs in separate processes must give the same trace hash, and
        /// madsim's own check (every RNG draw logged and compared) must pass.
        Determinism(SeedRange),
        /// madsim's determinism check of one run (used by `determinism`).
        #[command(hide = true)]
        MadsimCheck {
            #[arg(long)]
            scenario: String,
            #[arg(long)]
            seed: u64,
            #[command(flatten)]
            phases: Phases,
        },
    }

    /// Phase lengths in simulated ms.
    #[derive(Args, Clone, Debug)]
    struct Phases {
        #[arg(long, default_value_t = RunOptions::default().fault_ms)]
        fault_ms: u64,
        #[arg(long, default_value_t = RunOptions::default().settle_ms)]
        settle_ms: u64,
        #[arg(long, default_value_t = RunOptions::default().quiet_ms)]
        quiet_ms: u64,
        /// Key/value workers instead of the scenario's number.
        #[arg(long)]
        kv_workers: Option<u64>,
        /// Process workers instead of the scenario's number.
        #[arg(long)]
        process_workers: Option<u64>,
        /// The sampler's period instead of 20 ms.
        #[arg(long)]
        sample_ms: Option<u64>,
        /// Disks without latency or faults (to measure what the disk model costs).
        #[arg(long)]
        instant_disks: bool,
    }

    impl Phases {
        fn options(&self) -> RunOptions {
            RunOptions {
                fault_ms: self.fault_ms,
                settle_ms: self.settle_ms,
                quiet_ms: self.quiet_ms,
                kv_workers: self.kv_workers,
                process_workers: self.process_workers,
                sample_every_ms: self.sample_ms,
                instant_disks: self.instant_disks,
                ..RunOptions::default()
            }
        }

        fn args(&self) -> Vec<String> {
            let d = RunOptions::default();
            let mut out = Vec::new();
            for (flag, v, default) in [
                ("--fault-ms", self.fault_ms, d.fault_ms),
                ("--settle-ms", self.settle_ms, d.settle_ms),
                ("--quiet-ms", self.quiet_ms, d.quiet_ms),
            ] {
                if v != default {
                    out.push(flag.to_string());
                    out.push(v.to_string());
                }
            }
            for (flag, v) in [
                ("--kv-workers", self.kv_workers),
                ("--process-workers", self.process_workers),
                ("--sample-ms", self.sample_ms),
            ] {
                if let Some(v) = v {
                    out.push(flag.to_string());
                    out.push(v.to_string());
                }
            }
            if self.instant_disks {
                out.push("--instant-disks".to_string());
            }
            out
        }
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        match cli.command {
            Cmd::List => {
                for s in scenarios::ALL {
                    println!("{:<22} {}", s.name, s.about);
                }
                0
            }
            Cmd::Run { scenario, seed, trace, machine, phases } => match scenarios::find(&scenario) {
                Some(s) => run_one(s, seed, trace, machine, &phases),
                None => unknown(&scenario),
            },
            Cmd::Sweep(range) => range.with(sweep),
            Cmd::Soak { scenario, minutes, jobs, first_seed, phases } => match pick(&scenario) {
                Some(list) => {
                    // Fresh seeds: this is the harness, not a simulated path, so the wall
                    // clock may choose them; the first is printed for a repeat.
                    let first = first_seed.unwrap_or_else(|| {
                        let now =
                            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                        1_000_000 + now.as_secs() % 1_000_000_000
                    });
                    soak(&list, minutes, first, jobs.max(1), &phases)
                }
                None => unknown(&scenario),
            },
            Cmd::Determinism(range) => range.with(determinism),
            Cmd::MadsimCheck { scenario, seed, phases } => match scenarios::find(&scenario) {
                Some(s) => {
                    let hash = runner::check_determinism(s, seed, &phases.options());
                    println!("madsim determinism check passed: {} seed {seed}, trace hash {hash:016x}", s.name);
                    0
                }
                None => unknown(&scenario),
            },
        }
    }

    fn unknown(name: &str) -> i32 {
        let names: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
        eprintln!("unknown scenario {name:?}: choose one of {} (or `all` for sweep)", names.join(", "));
        2
    }

    fn bad_seeds(seeds: &str) -> i32 {
        eprintln!("invalid --seeds {seeds:?}: expected A..B (B excluded, A < B) or one number");
        2
    }

    fn pick(name: &str) -> Option<Vec<&'static Scenario>> {
        if name == "all" { Some(scenarios::ALL.iter().collect()) } else { scenarios::find(name).map(|s| vec![s]) }
    }

    fn parse_seeds(s: &str) -> Option<std::ops::Range<u64>> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                (a < b).then_some(a..b)
            }
            None => {
                let a: u64 = s.trim().parse().ok()?;
                Some(a..a + 1)
            }
        }
    }

    fn replay_command(scenario: &str, seed: u64, phases: &Phases) -> String {
        let mut cmd = format!("roster-sim run --scenario {scenario} --seed {seed}");
        for a in phases.args() {
            cmd.push(' ');
            cmd.push_str(&a);
        }
        cmd
    }

    fn run_one(scenario: &'static Scenario, seed: u64, trace: bool, machine: bool, phases: &Phases) -> i32 {
        let outcome = runner::run(scenario, seed, &phases.options());
        let status = outcome.report.status();
        if machine {
            let counts: Vec<String> =
                outcome.report.violation_counts().iter().map(|(c, n)| format!("{}={n}", c.name())).collect();
            println!(
                "RESULT\t{}\t{seed}\t{status}\t{:016x}\t{}\t{}\t{}",
                scenario.name,
                outcome.trace_hash,
                outcome.sim_ms,
                outcome.wall_ms,
                counts.join(",")
            );
            if status != ReportStatus::Passed {
                for line in outcome.report.summary().lines().filter(|l| l.starts_with("  - ")) {
                    println!("DETAIL\t{line}");
                }
            }
        } else {
            if trace {
                print!("{}", outcome.trace.render());
            }
            println!("scenario {} seed {seed}", scenario.name);
            print!("{}", outcome.report.summary());
            let t = &outcome.trace;
            println!(
                "recorded: {} faults, {} kv operations, {} leader sightings, {} commit observations, \
                 {} state hashes, {} applied events, {} heartbeats, {} crashed members, {} short pauses",
                t.faults.len(),
                t.kv_ops.len(),
                t.leaders.len(),
                t.commits.len(),
                t.applied.len(),
                t.events.len(),
                t.heartbeats.len(),
                t.crashes.len(),
                t.short_silences.len()
            );
            println!(
                "simulated {:.1} s in {:.2} s wall ({:.0}x real time)",
                outcome.sim_ms as f64 / 1000.0,
                outcome.wall_ms as f64 / 1000.0,
                speed(outcome.sim_ms, outcome.wall_ms)
            );
            println!("trace hash {:016x}", outcome.trace_hash);
            if status == ReportStatus::Failed {
                println!("replay: {}", replay_command(scenario.name, seed, phases));
            }
        }
        match status {
            ReportStatus::Passed => 0,
            ReportStatus::Inconclusive => 3,
            ReportStatus::Failed => 1,
        }
    }

    fn speed(sim_ms: u64, wall_ms: u64) -> f64 {
        sim_ms as f64 / wall_ms.max(1) as f64
    }

    /// One child's verdict.
    struct ChildResult {
        scenario: &'static str,
        seed: u64,
        status: String,
        hash: String,
        sim_ms: u64,
        wall_ms: u64,
        counts: BTreeMap<String, usize>,
        details: Vec<String>,
    }

    fn spawn_run(scenario: &str, seed: u64, phases: &Phases) -> std::io::Result<Child> {
        let exe = std::env::current_exe()?;
        Command::new(exe)
            .args(["run", "--machine", "--scenario", scenario, "--seed", &seed.to_string()])
            .args(phases.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }

    fn collect(scenario: &'static str, seed: u64, child: Child) -> ChildResult {
        let mut r = ChildResult {
            scenario,
            seed,
            status: "CRASHED".into(),
            hash: String::new(),
            sim_ms: 0,
            wall_ms: 0,
            counts: BTreeMap::new(),
            details: Vec::new(),
        };
        let output = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => {
                r.details.push(format!("could not wait for the run: {e}"));
                return r;
            }
        };
        for line in BufReader::new(&output.stdout[..]).lines().map_while(Result::ok) {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["RESULT", _, _, status, hash, sim, wall, counts] => {
                    r.status = status.to_string();
                    r.hash = hash.to_string();
                    r.sim_ms = sim.parse().unwrap_or(0);
                    r.wall_ms = wall.parse().unwrap_or(0);
                    for c in counts.split(',').filter(|c| !c.is_empty()) {
                        if let Some((name, n)) = c.split_once('=') {
                            r.counts.insert(name.to_string(), n.parse().unwrap_or(0));
                        }
                    }
                }
                ["DETAIL", d] => r.details.push(d.trim().to_string()),
                _ => {}
            }
        }
        if r.status == "CRASHED" {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let panic = stderr.lines().find(|l| l.contains("panicked")).unwrap_or("no RESULT line").to_string();
            r.details.push(format!("run crashed ({}): {panic}", output.status));
        }
        r
    }

    /// Runs every (scenario, seed) in child processes, `jobs` at a time, in order.
    fn run_all(runs: &[(&'static Scenario, u64)], jobs: usize, phases: &Phases) -> Vec<ChildResult> {
        run_each(runs.iter().copied(), Some(runs.len()), jobs, phases)
    }

    /// Runs what `runs` yields (asked only when a job is free), `jobs` at a time.
    fn run_each(
        mut runs: impl Iterator<Item = (&'static Scenario, u64)>,
        total: Option<usize>,
        jobs: usize,
        phases: &Phases,
    ) -> Vec<ChildResult> {
        let mut results = Vec::new();
        let mut running: std::collections::VecDeque<(&'static str, u64, Child)> = Default::default();
        let mut more = true;
        let total = total.map_or("?".to_string(), |t| t.to_string());
        while more || !running.is_empty() {
            while more && running.len() < jobs {
                let Some((s, seed)) = runs.next() else {
                    more = false;
                    break;
                };
                match spawn_run(s.name, seed, phases) {
                    Ok(child) => running.push_back((s.name, seed, child)),
                    Err(e) => {
                        eprintln!("cannot start a run: {e}");
                        std::process::exit(2);
                    }
                }
            }
            if let Some((name, seed, child)) = running.pop_front() {
                let r = collect(name, seed, child);
                eprintln!(
                    "[{}/{total}] {:<22} seed {:<5} {:<12} sim {:>5.1} s wall {:>5.2} s{}",
                    results.len() + 1,
                    r.scenario,
                    r.seed,
                    r.status,
                    r.sim_ms as f64 / 1000.0,
                    r.wall_ms as f64 / 1000.0,
                    if r.status == "PASSED" {
                        String::new()
                    } else {
                        format!("  replay: {}", replay_command(r.scenario, r.seed, phases))
                    }
                );
                let _ = std::io::stderr().flush();
                results.push(r);
            }
        }
        results
    }

    /// Fresh seeds for `minutes` of wall time: every scenario of `list` in turn, seeds
    /// counting up from `first_seed`; then the sweep's table, the throughput and a replay
    /// command per failure.
    fn soak(list: &[&'static Scenario], minutes: f64, first_seed: u64, jobs: usize, phases: &Phases) -> i32 {
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_secs_f64(minutes.max(0.0) * 60.0);
        eprintln!(
            "soak: {} scenario(s), seeds from {first_seed}, {minutes} min, {jobs} job(s); repeat with --first-seed {first_seed}",
            list.len()
        );
        let n = list.len() as u64;
        let runs =
            (0u64..).map_while(|i| (Instant::now() < deadline).then(|| (list[(i % n) as usize], first_seed + i / n)));
        let results = run_each(runs, None, jobs, phases);
        let elapsed = started.elapsed().as_secs_f64();
        let rc = print_table(list, &results, elapsed, jobs, phases);
        let last = results.iter().map(|r| r.seed).max().unwrap_or(first_seed);
        println!(
            "soak: {:.1} runs/min ({:.1} per job), seeds {first_seed}..={last}",
            results.len() as f64 * 60.0 / elapsed.max(1e-3),
            results.len() as f64 * 60.0 / elapsed.max(1e-3) / jobs as f64
        );
        rc
    }

    fn sweep(list: &[&'static Scenario], seeds: std::ops::Range<u64>, jobs: usize, phases: &Phases) -> i32 {
        let started = Instant::now();
        let runs: Vec<(&'static Scenario, u64)> =
            list.iter().flat_map(|s| seeds.clone().map(move |seed| (*s, seed))).collect();
        let results = run_all(&runs, jobs, phases);
        print_table(list, &results, started.elapsed().as_secs_f64(), jobs, phases)
    }

    /// The table of a sweep or soak, then every failure with its replay command; 0 if
    /// every run passed.
    fn print_table(
        list: &[&'static Scenario],
        results: &[ChildResult],
        elapsed: f64,
        jobs: usize,
        phases: &Phases,
    ) -> i32 {
        println!();
        println!(
            "{:<22} {:>5} {:>6} {:>6} {:>8} {:>8} {:>7}  violations by checker",
            "scenario", "runs", "failed", "incon", "sim s", "wall s", "sim/wall"
        );
        let mut bad = 0;
        let (mut all_sim, mut all_wall) = (0u64, 0u64);
        for s in list {
            let rs: Vec<&ChildResult> = results.iter().filter(|r| r.scenario == s.name).collect();
            let failed = rs.iter().filter(|r| r.status == "FAILED" || r.status == "CRASHED").count();
            let incon = rs.iter().filter(|r| r.status == "INCONCLUSIVE").count();
            bad += failed + incon;
            let sim: u64 = rs.iter().map(|r| r.sim_ms).sum();
            let wall: u64 = rs.iter().map(|r| r.wall_ms).sum();
            all_sim += sim;
            all_wall += wall;
            let mut by: BTreeMap<String, usize> = BTreeMap::new();
            for r in &rs {
                for (c, n) in &r.counts {
                    if *n > 0 {
                        *by.entry(c.clone()).or_default() += *n;
                    }
                }
                if r.status == "CRASHED" {
                    *by.entry("crashed".into()).or_default() += 1;
                }
            }
            let by = if by.is_empty() {
                "-".to_string()
            } else {
                by.iter().map(|(c, n)| format!("{c}={n}")).collect::<Vec<_>>().join(" ")
            };
            println!(
                "{:<22} {:>5} {:>6} {:>6} {:>8.1} {:>8.1} {:>7.0}x  {by}",
                s.name,
                rs.len(),
                failed,
                incon,
                sim as f64 / 1000.0,
                wall as f64 / 1000.0,
                speed(sim, wall)
            );
        }
        println!(
            "total: {} runs, {bad} not passed; {:.0} simulated s in {:.0} s of run time ({:.0}x per core), {elapsed:.0} s elapsed with {jobs} job(s)",
            results.len(),
            all_sim as f64 / 1000.0,
            all_wall as f64 / 1000.0,
            speed(all_sim, all_wall)
        );
        let failing: Vec<&ChildResult> = results.iter().filter(|r| r.status != "PASSED").collect();
        for r in failing.iter().take(20) {
            println!("\n{} seed {}: {}", r.scenario, r.seed, r.status);
            for d in r.details.iter().take(6) {
                println!("  {d}");
            }
            println!("  replay: {}", replay_command(r.scenario, r.seed, phases));
        }
        if bad == 0 { 0 } else { 1 }
    }

    fn determinism(list: &[&'static Scenario], seeds: std::ops::Range<u64>, jobs: usize, phases: &Phases) -> i32 {
        // Two runs of every seed in separate processes: same trace hash.
        let runs: Vec<(&'static Scenario, u64)> =
            list.iter().flat_map(|s| seeds.clone().flat_map(move |seed| [(*s, seed), (*s, seed)])).collect();
        let results = run_all(&runs, jobs, phases);
        let mut bad = 0;
        for pair in results.chunks(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.hash.is_empty() || a.hash != b.hash {
                bad += 1;
                println!("NONDETERMINISTIC {} seed {}: trace hash {} then {}", a.scenario, a.seed, a.hash, b.hash);
            } else {
                println!("same hash       {} seed {}: {}", a.scenario, a.seed, a.hash);
            }
        }
        // Runs in one process must not leak state into each other (tokio's process-global
        // RNG counter did, before the ordered watch): the first seed, run again after
        // another seed in this same process, gives the hash its own process gave.
        if seeds.end - seeds.start >= 2 {
            for s in list {
                let (a, b) = (seeds.start, seeds.start + 1);
                let first = results.iter().find(|r| r.scenario == s.name && r.seed == a).map(|r| r.hash.clone());
                runner::run(s, b, &phases.options());
                let again = format!("{:016x}", runner::run(s, a, &phases.options()).trace_hash);
                if first.as_deref() == Some(again.as_str()) {
                    println!("in-process ok   {} seed {a} after seed {b}: {again}", s.name);
                } else {
                    bad += 1;
                    println!(
                        "LEAK            {} seed {a} after seed {b} in one process: {again}, alone {first:?}",
                        s.name
                    );
                }
            }
        }
        bad += madsim_checks(list, seeds, jobs, phases);
        println!("determinism: {bad} problem(s)");
        if bad == 0 { 0 } else { 1 }
    }

    /// madsim's check, one child per seed (it panics at the first divergence), `jobs` at a
    /// time, reported in order; the number that failed.
    fn madsim_checks(list: &[&'static Scenario], seeds: std::ops::Range<u64>, jobs: usize, phases: &Phases) -> i32 {
        let mut bad = 0;
        let checks: Vec<(&'static Scenario, u64)> =
            list.iter().flat_map(|s| seeds.clone().map(move |seed| (*s, seed))).collect();
        let exe = std::env::current_exe().expect("own path");
        for batch in checks.chunks(jobs.max(1)) {
            let children: Vec<_> = batch
                .iter()
                .map(|(s, seed)| {
                    Command::new(&exe)
                        .args(["madsim-check", "--scenario", s.name, "--seed", &seed.to_string()])
                        .args(phases.args())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                })
                .collect();
            for ((s, seed), child) in batch.iter().zip(children) {
                match child.and_then(|c| c.wait_with_output()) {
                    Ok(o) if o.status.success() => println!("madsim check ok  {} seed {seed}", s.name),
                    Ok(o) => {
                        bad += 1;
                        let stderr = String::from_utf8_lossy(&o.stderr);
                        let why = stderr.lines().find(|l| l.contains("panicked") || l.contains("non-determinism"));
                        println!("MADSIM CHECK FAILED {} seed {seed}: {}", s.name, why.unwrap_or("(no message)"));
                    }
                    Err(e) => {
                        bad += 1;
                        println!("cannot run the madsim check: {e}");
                    }
                }
            }
        }
        bad
    }
}
