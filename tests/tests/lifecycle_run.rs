//! `roster run` as a member's whole life: it exits with its program's status and leaves a
//! Deregistered tombstone carrying it; a wrapper killed with SIGKILL stops heartbeating and
//! its member expires within timeout + one interval; a program that cannot start gives 127;
//! a wrapper whose registration is refused fails and does not leave its program running.

use roster_tests::{
    TestCluster, WatchStream, child_pids, json, kill_pid, process_departure, process_registered, which,
};
use serde_json::json;
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 1_500;

fn cluster(tag: &str) -> TestCluster {
    let c = TestCluster::start(tag, 3, |_| {
        ["--heartbeat-interval-ms", "500", "--heartbeat-timeout-ms", "1500"].map(String::from).to_vec()
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(3, Duration::from_secs(20));
    c
}

fn revision(c: &TestCluster) -> u64 {
    json(&c.roster(&["status", "--json"]))["revision"].as_u64().expect("revision")
}

#[test]
fn run_exits_with_the_program_status_and_deregisters_with_it() {
    let c = cluster("lc-run-exit");
    let mut watch = WatchStream::start(&c, Some(revision(&c)));
    let started = Instant::now();
    let out = c.run_to_end(&[
        "run",
        "--name",
        "seven",
        "--heartbeat-interval-ms",
        "500",
        "--",
        "sh",
        "-c",
        "sleep 1; exit 7",
    ]);
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(7),
        "roster run should exit with the program's status; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "run took {took:?}");

    let reg =
        watch.until(Duration::from_secs(10), "ProcessRegistered seven", |e| process_registered(e, "seven").is_some());
    let id = reg["data"]["id"].as_u64().expect("process id");
    let dep = watch.until(Duration::from_secs(10), "Departed seven", |e| process_departure(e, id).is_some());
    assert_eq!(process_departure(&dep, id), Some(json!({"type": "deregistered", "exit_status": 7})), "{dep}");
    assert!(dep["revision"].as_u64() > reg["revision"].as_u64(), "{reg} then {dep}");
    // Gone from the live record.
    let procs = c.processes().expect("ls");
    assert!(procs.iter().all(|p| p["id"].as_u64() != Some(id)), "process {id} still listed: {procs:?}");
    watch.stop();
}

#[test]
fn killed_wrapper_expires_within_timeout_plus_one_interval() {
    let c = cluster("lc-run-kill");
    let mut watch = WatchStream::start(&c, Some(revision(&c)));
    let sleep = which("sleep");
    let mut run = c.spawn_client(&["run", "--name", "victim", "--heartbeat-interval-ms", "500", "--", &sleep, "30"]);
    let Some(reg) = watch.try_until(Duration::from_secs(10), |e| process_registered(e, "victim").is_some()) else {
        panic!(
            "victim not registered within 10 s; wrapper: {}\nwatch saw {:?}\n{}",
            run.kill_and_output(),
            watch.seen,
            c.logs()
        );
    };
    let id = reg["data"]["id"].as_u64().expect("process id");
    // Let it heartbeat for a while: it must stay.
    std::thread::sleep(Duration::from_millis(2 * TIMEOUT_MS));
    assert!(
        c.processes().expect("ls").iter().any(|p| p["id"].as_u64() == Some(id)),
        "a heartbeating member was dropped\n{}",
        c.logs()
    );

    let orphans = child_pids(run.id());
    run.kill9();
    let killed = Instant::now();
    for pid in orphans {
        kill_pid(pid);
    }
    let gone = loop {
        let listed = c.processes().map(|ps| ps.iter().any(|p| p["id"].as_u64() == Some(id)));
        if listed == Some(false) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "process {id} still listed 10 s after its wrapper died");
        std::thread::sleep(Duration::from_millis(25));
    };
    // Its last heartbeat went out at most one interval before the kill, and the leader
    // expires it once it has been silent for the timeout.
    let bound = Duration::from_millis(TIMEOUT_MS + INTERVAL_MS + 700);
    let floor = Duration::from_millis(TIMEOUT_MS - INTERVAL_MS - 200);
    assert!(gone <= bound, "expired {gone:?} after the kill, bound {bound:?}\n{}", c.logs());
    assert!(gone >= floor, "expired only {gone:?} after the kill: sooner than the timeout allows");

    let dep = watch.until(Duration::from_secs(5), "Departed victim", |e| process_departure(e, id).is_some());
    let departure = process_departure(&dep, id).expect("departure");
    assert_eq!(departure["type"], "expired", "tombstone should say expired: {dep}");
    eprintln!("expired {gone:?} after SIGKILL (timeout {TIMEOUT_MS} ms, interval {INTERVAL_MS} ms)");
    watch.stop();
}

#[test]
fn run_of_a_missing_program_exits_127_and_registers_nothing() {
    let c = cluster("lc-run-missing");
    let missing = c.dir.0.join("no-such-program");
    let missing = missing.to_str().expect("utf-8 path");
    let out = c.run_to_end(&["run", "--name", "ghost", "--", missing, "arg"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot start") && stderr.contains(missing) && stderr.contains("No such file"),
        "unclear message: {stderr}"
    );
    let procs = c.processes().expect("ls");
    assert!(procs.iter().all(|p| p["info"]["name"].as_str() != Some("ghost")), "{procs:?}");
}

/// A refused registration fails the wrapper before the program starts: nothing runs
/// unwatched, and nothing is left registered.
#[test]
fn refused_registration_fails_before_the_program_starts() {
    let c = cluster("lc-run-refused");
    let pid_file = c.dir.0.join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
    let started = Instant::now();
    // Server 99 does not exist, so the registration is refused.
    let out = c.run_to_end(&["run", "--name", "stray", "--server-id", "99", "--", "sh", "-c", &script]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a refused registration should fail the wrapper: {stderr}");
    assert!(stderr.contains("stray") && stderr.contains("server-99"), "unclear message: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!pid_file.exists(), "the program ran although its registration was refused");
    let procs = c.processes().expect("ls");
    assert!(procs.iter().all(|p| p["info"]["name"].as_str() != Some("stray")), "{procs:?}");
}
