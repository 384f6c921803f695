//! Clients ride out a 5-second outage of the whole cluster (every node SIGKILLed, then
//! restarted on its data): a sequential session (`bench seq`) caught mid-run and a `roster
//! run` member carry on; every command is applied exactly once, the session's in order.
//! A new command started while nothing listens fails within about a second instead,
//! saying so (a refused connection is not a timeout), and applies nothing.

use roster_tests::{TestCluster, WatchStream, eventually, json, sigterm, which};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SEQ_COUNT: usize = 300;
const OUTAGE: Duration = Duration::from_secs(5);

fn kv_put_key(e: &Value) -> Option<(&str, &str)> {
    let p = &e["data"];
    (e["type"] == "kv_put").then_some(())?;
    Some((p["key"].as_str()?, p["value"].as_str()?))
}

#[test]
fn clients_survive_a_whole_cluster_outage_and_commands_apply_once_in_order() {
    let mut c = TestCluster::start("lc-outage", 3, |_| {
        ["--heartbeat-interval-ms", "500", "--heartbeat-timeout-ms", "1500"].map(String::from).to_vec()
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(3, Duration::from_secs(20));
    let start_rev = json(&c.roster(&["status", "--json"]))["revision"].as_u64().expect("revision");

    // A member that must outlive the outage.
    let sleep = which("sleep");
    let mut member = c.spawn_client(&["run", "--name", "w", "--heartbeat-interval-ms", "500", "--", &sleep, "60"]);
    let member_id = eventually(Duration::from_secs(10), "w registered", || {
        c.processes()?.iter().find(|p| p["info"]["name"] == "w").and_then(|p| p["id"].as_u64())
    });

    // One session putting bench/seq/00000000.. one at a time.
    let count = SEQ_COUNT.to_string();
    let mut bench =
        c.spawn_client(&["bench", "seq", "--count", &count, "--value-bytes", "8", "--timeout-ms", "30000", "--json"]);
    eventually(Duration::from_secs(15), "the bench to be under way", || {
        c.kv_get_at(&c.endpoints(), "bench/seq/00000010", false)
    });

    // Outage: every node SIGKILLed.
    for id in 1..=3 {
        c.kill9(id);
    }
    let down = Instant::now();
    // Puts started while nothing listens, each from its own process: each fails fast,
    // though it would wait 20 s for an answer.
    let mut puts = Vec::new();
    for i in 0..2 {
        let k = format!("outage/k{i}");
        let started = Instant::now();
        let out = c.run_to_end(&["kv", "put", &k, "v", "--timeout-ms", "20000"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "put of {k} while nothing listens: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "put of {k} waited out the refusals: {stderr}");
        assert!(stderr.contains("cannot reach any Roster node") && stderr.contains("refused"), "{stderr}");
        puts.push(k);
    }
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_leader(Duration::from_secs(20));
    let out = bench.wait_output(Duration::from_secs(60));
    assert!(out.status.success(), "bench seq: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("bench report is JSON");
    assert_eq!(report["failures"].as_u64(), Some(0), "bench puts failed across the outage: {report}");
    assert_eq!(report["ops"].as_u64(), Some(SEQ_COUNT as u64), "{report}");
    // One of its puts waited out the outage (so the outage did catch it mid-run).
    let max_ms = report["max_ms"].as_f64().expect("max_ms");
    assert!(max_ms >= (OUTAGE.as_millis() as f64) - 1_000.0, "no bench put spanned the outage: {report}");

    // Every change since before the outage: each put applied once, the session's in order.
    let mut watch = WatchStream::start(&c, Some(start_rev));
    let last = format!("bench/seq/{:08}", SEQ_COUNT - 1);
    watch.until(Duration::from_secs(20), &last, |e| kv_put_key(e).is_some_and(|(k, _)| k == last));
    let events = watch.stop();
    let revs: Vec<u64> = events.iter().map(|e| e["revision"].as_u64().expect("revision")).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "revisions not increasing: {revs:?}");
    let mut applied: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seq_order = Vec::new();
    for e in &events {
        if let Some((k, _)) = kv_put_key(e) {
            *applied.entry(k).or_default() += 1;
            if let Some(n) = k.strip_prefix("bench/seq/") {
                seq_order.push(n.parse::<usize>().expect("bench key number"));
            }
        }
    }
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    assert_eq!(seq_order, (0..SEQ_COUNT).collect::<Vec<_>>(), "the session's puts, once each and in order");
    for k in &puts {
        assert_eq!(applied.get(k.as_str()), None, "{k}, refused at the client, was applied");
    }

    // The member kept its identity through the outage and is still live after the
    // leader's grace period (a full timeout) has passed.
    std::thread::sleep(Duration::from_millis(2_500));
    let procs = c.processes().expect("ls");
    assert!(
        procs.iter().any(|p| p["id"].as_u64() == Some(member_id)),
        "member w (process {member_id}) did not survive the outage: {procs:?}\nwrapper: {}\n{}",
        member.kill_and_output(),
        c.logs()
    );
    sigterm(member.child());
    let out = member.wait_output(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(143), "w after SIGTERM: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("outage: bench {report}");
}
