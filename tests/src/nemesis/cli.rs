//! The command line of `roster-nemesis` (`src/bin/roster-nemesis.rs`): the real binary
//! under real faults, in network namespaces, its history checked by the simulator's
//! checkers (see `roster_tests::nemesis`).
//!
//! Modes: CI (the default: every fault kind once, about 3 minutes), soak (`--minutes N`),
//! and the failover figure (`--failover-cycles N`, beside etcd). Needs root, `ip` and
//! `nft`; without them it says so in one line and exits 0.

use crate::nemesis::{self, failover, net, run};
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "roster-nemesis", about = "Jepsen-style faults on real roster nodes in network namespaces")]
struct Args {
    /// Seed of the fault schedule (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Fault rounds (CI mode runs every fault kind once).
    #[arg(long, default_value_t = run::CI_ROUNDS)]
    rounds: usize,
    /// Soak mode: rounds until this many minutes have passed.
    #[arg(long)]
    minutes: Option<u64>,
    /// Instead: the failover figure, this many kill -9 cycles of the leader, beside etcd.
    #[arg(long)]
    failover_cycles: Option<usize>,
    /// With --failover-cycles: Roster only.
    #[arg(long)]
    no_etcd: bool,
    /// A shorter CI mode for development: 5 rounds.
    #[arg(long)]
    quick: bool,
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// On SIGINT or SIGTERM: remove every namespace, process, rule and mount of the suite
/// (by its name prefix) if this run holds the run lock, then exit 130. The handler only sets a flag; a thread does the
/// work.
fn install_cleanup_on_signal() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::thread::spawn(|| {
        loop {
            if SIGNALLED.load(Ordering::SeqCst) {
                // A run still waiting for the lock owns nothing yet: what exists is another run's.
                if net::RunLock::held() {
                    eprintln!("nemesis: interrupted; cleaning up namespaces, processes, nft tables and mounts");
                    net::cleanup_leftovers();
                } else {
                    eprintln!("nemesis: interrupted while waiting for another run; nothing of ours to clean up");
                }
                std::process::exit(130);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

pub fn main() {
    let args = Args::parse();
    if args.nodes != 3 && args.nodes != 5 {
        eprintln!("nemesis: --nodes {} is not supported: use 3 or 5", args.nodes);
        std::process::exit(2);
    }
    if let Some(why) = nemesis::missing_prerequisites() {
        println!("nemesis: skipped: {why}");
        return;
    }
    install_cleanup_on_signal();
    if let Some(cycles) = args.failover_cycles {
        match failover::run(cycles, !args.no_etcd) {
            Ok(outcome) => {
                println!("{}", outcome.table);
                std::process::exit(if outcome.passed { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("nemesis: the failover run could not complete: {e}");
                std::process::exit(2);
            }
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
            % 1_000_000
    });
    let config = run::RunConfig {
        seed,
        nodes: args.nodes,
        rounds: if args.quick { 5 } else { args.rounds },
        minutes: args.minutes,
    };
    println!("nemesis: seed {seed}; repeat with: {}", config.replay_command());
    match run::run(&config) {
        Ok(outcome) => {
            println!("{}", outcome.table);
            println!(
                "nemesis: {} in {:.0} s",
                if outcome.passed { "PASSED" } else { "FAILED" },
                outcome.elapsed.as_secs_f64()
            );
            std::process::exit(if outcome.passed { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("nemesis: the run could not complete: {e}\nrepeat with: {}", config.replay_command());
            std::process::exit(2);
        }
    }
}
