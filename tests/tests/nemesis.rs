//! The nemesis suite in CI mode: real nodes in network namespaces under every fault kind
//! once (partitions, one-way and bridge, SIGSTOP, kill -9 of one, the leader and all, a
//! full disk), the history checked by the simulator's checkers; about 2 minutes.
//!
//! Needs root, `ip` and `nft` (`.ci/run` installs iproute2 and nftables). Without them it
//! prints one line and passes as skipped, unless `ROSTER_NEMESIS_REQUIRED=1` (CI sets it),
//! where a skip is a failure.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// nextest stops a roster-tests test after 4 minutes; stop the run before, with SIGTERM,
/// so it cleans up after itself.
const RUN_WITHIN: Duration = Duration::from_secs(210);
const SEED: u64 = 2;

#[test]
fn every_fault_kind_once_and_every_checker_passes() {
    if let Some(why) = roster_tests::nemesis::missing_prerequisites() {
        let required = std::env::var("ROSTER_NEMESIS_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "nemesis: cannot run ({why}) but ROSTER_NEMESIS_REQUIRED=1");
        println!("nemesis: skipped: {why}");
        return;
    }
    // Fails (naming the build step) if the node binary is missing.
    let roster = roster_tests::roster_bin();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roster-nemesis"))
        .args(["--seed", &SEED.to_string()])
        .env("ROSTER_BIN", &roster)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start roster-nemesis");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for roster-nemesis") {
            break status;
        }
        if started.elapsed() > RUN_WITHIN {
            // SAFETY: kill(2) of our child; SIGTERM makes it remove namespaces and mounts.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
            panic!("roster-nemesis did not finish within {RUN_WITHIN:?}:\n{}", reader.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    let out = reader.join().unwrap_or_default();
    println!("{out}");
    assert!(status.success(), "nemesis run failed ({status}) after {:?}:\n{out}\n{stderr}", started.elapsed());
}
