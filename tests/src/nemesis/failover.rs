//! The failover figure: cycles of kill -9 of the leader under a steady write load (one
//! session, one put at a time, as `etcdbench avail` does for etcd), the write gap of each
//! cycle (the longest pause between two acknowledged puts around the kill), and no
//! acknowledged write lost (the client oracle on the recorded history). etcd runs the same
//! cycles beside it, in the same session: a 3-member cluster on loopback at its defaults,
//! its leader killed while `etcdbench avail` writes.

use super::NemesisError;
use super::history::SharedRecorder;
use super::net::{self, RunLock};
use super::report::{max_gap_ms, percentiles, write_acks_ms};
use super::run::{Harness, bounds};
use super::workload::client_options;
use roster_kernel::{Command, Reply};
use roster_real::client::Client;
use roster_scenarios::analysis;
use roster_scenarios::checkers::Checker;
use roster_sim::trace::{KvCall, KvOp, KvOutput, OpEnd};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Steady writes before each kill.
const STEADY_MS: u64 = 1_500;
/// Writes must resume within this after a kill.
const RESUME_WITHIN_MS: u64 = 20_000;
const CATCH_UP_WITHIN_MS: u64 = 20_000;
/// One `etcdbench avail` run per cycle: the kill comes `STEADY_MS` into it.
const ETCD_AVAIL_S: u64 = 5;
/// Ports of the etcd members (not etcd3.sh's, so the two never meet).
const ETCD_CLIENT_PORT: u16 = 24_790;
const ETCD_PEER_PORT: u16 = 24_800;
const ETCD_DIR: &str = "/tmp/rnem-etcd";

pub struct FailoverOutcome {
    pub passed: bool,
    pub table: String,
}

#[derive(Clone, Copy, Debug)]
struct Cycle {
    gap_ms: u64,
    /// Kill to the first sighting of a new leader confirmed by a quorum.
    elected_ms: Option<u64>,
}

pub fn run(cycles: usize, with_etcd: bool) -> Result<FailoverOutcome, NemesisError> {
    let _lock = RunLock::acquire()?;
    net::cleanup_leftovers();
    net::fresh_run_dir()?;
    let (roster, lost_check) = super::on_own_runtime(roster_cycles(cycles))??;
    let etcd = if with_etcd { Some(etcd_cycles(cycles)) } else { None };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "failover: {cycles} × kill -9 of the leader under a steady write load (one session, one put at a time)"
    );
    let _ = writeln!(out, "  {:<26} {:>9} {:>9} {:>9}", "write gap per cycle", "p50", "p99", "max");
    let line = |name: &str, gaps: &[u64]| match percentiles(gaps) {
        Some((p50, p99, max)) => format!("  {name:<26} {:>7} ms {:>6} ms {:>6} ms\n", p50, p99, max),
        None => format!("  {name:<26} (no cycles)\n"),
    };
    let gaps: Vec<u64> = roster.iter().map(|c| c.gap_ms).collect();
    out.push_str(&line("roster (3 nodes, netns)", &gaps));
    let elected: Vec<u64> = roster.iter().filter_map(|c| c.elected_ms).collect();
    out.push_str(&line("  of which: kill → elected", &elected));
    let mut passed = lost_check.is_ok();
    match &etcd {
        Some(Ok((version, etcd_gaps))) => {
            out.push_str(&line(&format!("etcd {version} (loopback)"), etcd_gaps));
            if let (Some(r), Some(e)) = (percentiles(&gaps), percentiles(etcd_gaps)) {
                let ratio = |a: u64, b: u64| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
                let _ = writeln!(
                    out,
                    "  {:<26} {:>9.2} {:>9.2} {:>9.2}",
                    "ratio roster / etcd",
                    ratio(r.0, e.0),
                    ratio(r.1, e.1),
                    ratio(r.2, e.2)
                );
            }
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "  etcd: not measured: {e}");
        }
        None => {}
    }
    match &lost_check {
        Ok(s) => {
            let _ = writeln!(out, "  acknowledged writes: {s}");
        }
        Err(s) => {
            let _ = writeln!(out, "  acknowledged writes: FAIL: {s}");
            passed = false;
        }
    }
    let per_cycle: Vec<String> = roster.iter().map(|c| c.gap_ms.to_string()).collect();
    let _ = writeln!(out, "  roster gaps (ms), by cycle: {}", per_cycle.join(" "));
    if let Some(Ok((_, g))) = &etcd {
        let per: Vec<String> = g.iter().map(|x| x.to_string()).collect();
        let _ = writeln!(out, "  etcd gaps (ms), by cycle: {}", per.join(" "));
    }
    Ok(FailoverOutcome { passed, table: out })
}

/// One session putting unique keys one at a time, recorded for the client oracle.
async fn writer(rec: SharedRecorder, endpoints: Vec<String>, stop: Arc<AtomicBool>) {
    let Ok(client) = Client::connect(client_options(&endpoints), 0xfa11).await else { return };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let (key, value) = (format!("k/f/{seq:06}"), format!("c1-{seq}"));
        let invoked = rec.now_ms();
        let pending = match client.submit(Command::KvPut { key: key.clone(), value: value.clone() }).await {
            Ok(p) => p,
            Err(_) => {
                seq -= 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let index = rec.trace().record_op_invoked(KvOp {
            client: 1,
            command_seq: Some(seq),
            queue_seq: Some(pending.seq()),
            key,
            call: KvCall::Put { value },
            invoked_at_ms: invoked,
            end: OpEnd::Pending,
        });
        let at_ms_of = |rec: &SharedRecorder| rec.now_ms();
        let end = match pending.await {
            Ok(Ok(Reply::Done { .. })) => OpEnd::Returned { at_ms: at_ms_of(&rec), output: KvOutput::Done },
            Ok(Ok(other)) => OpEnd::Failed { at_ms: at_ms_of(&rec), reason: format!("unexpected reply {other:?}") },
            Ok(Err(refusal)) => OpEnd::Refused { at_ms: at_ms_of(&rec), reason: refusal.to_string() },
            Err(e) => OpEnd::Failed { at_ms: at_ms_of(&rec), reason: e.to_string() },
        };
        rec.trace().record_op_end(index, end);
    }
}

fn last_ack_ms(rec: &SharedRecorder) -> Option<u64> {
    write_acks_ms(&rec.trace()).last().copied()
}

async fn roster_cycles(cycles: usize) -> Result<(Vec<Cycle>, Result<String, String>), NemesisError> {
    let mut h = Harness::start(3, false).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writer(h.rec.clone(), h.nodes.endpoints(), stop.clone()));
    let mut out = Vec::new();
    for i in 0..cycles {
        tokio::time::sleep(Duration::from_millis(STEADY_MS)).await;
        let Some(leader) = h.observer.wait_leader(Duration::from_secs(10)).await else {
            return Err(NemesisError::Stuck(format!("cycle {}: no leader\n{}", i + 1, h.log_tails())));
        };
        let killed_at = h.rec.now_ms();
        h.nodes.kill9(leader);
        let started = Instant::now();
        let resumed_at = loop {
            if let Some(a) = last_ack_ms(&h.rec)
                && a > killed_at
            {
                break a;
            }
            if started.elapsed() > Duration::from_millis(RESUME_WITHIN_MS) {
                return Err(NemesisError::Stuck(format!(
                    "cycle {}: no write acknowledged within {RESUME_WITHIN_MS} ms of killing leader {leader}\n{}",
                    i + 1,
                    h.log_tails()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let gap = max_gap_ms(&write_acks_ms(&h.rec.trace()), killed_at, resumed_at).unwrap_or(0);
        let elected_ms = h
            .rec
            .trace()
            .leaders
            .iter()
            .filter(|l| l.at_ms > killed_at && l.node != leader && l.quorum_ack_age_ms.is_some())
            .map(|l| l.at_ms - killed_at)
            .min();
        println!(
            "cycle {:>2}: killed leader {leader}; write gap {gap} ms; new leader confirmed after {}",
            i + 1,
            elected_ms.map_or("-".into(), |e| format!("{e} ms"))
        );
        out.push(Cycle { gap_ms: gap, elected_ms });
        h.restart(leader).await;
        let target = h.observer.max_commit();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(CATCH_UP_WITHIN_MS) {
            if let Some(s) = h.observer.status_of(leader).await
                && s.applied_index.is_some_and(|a| a >= target)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let (final_kv, revision) = h
        .observer
        .final_kv(Duration::from_secs(10))
        .await
        .ok_or_else(|| NemesisError::Stuck(format!("no leader answered the final read\n{}", h.log_tails())))?;
    let end_ms = h.rec.now_ms();
    h.rec.trace().record_end(end_ms, final_kv, revision);
    let trace = h.rec.trace().clone();
    let check = analysis::check(&trace, &bounds());
    let acked = write_acks_ms(&trace).len();
    let lost = check.violation_count(Checker::AcknowledgedWrites);
    let verdict = if lost == 0 && check.violation_count(Checker::ExactlyOnce) == 0 {
        Ok(format!("{acked} acknowledged, 0 lost, none applied twice (acknowledged-writes, exactly-once: ok)"))
    } else {
        Err(format!("{acked} acknowledged; {}", check.summary()))
    };
    Ok((out, verdict))
}

// ----- etcd beside it -----

struct Etcd {
    dir: PathBuf,
    members: Vec<Option<Child>>,
}

impl Etcd {
    fn client_url(i: usize) -> String {
        format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT + 1 + i as u16)
    }

    fn endpoints() -> String {
        (0..3).map(Etcd::client_url).collect::<Vec<_>>().join(",")
    }

    fn start() -> Result<Etcd, String> {
        let dir = Path::new(ETCD_DIR).to_path_buf();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut etcd = Etcd { dir, members: vec![None, None, None] };
        for i in 0..3 {
            etcd.spawn(i, "new")?;
        }
        etcd.wait_healthy(None)?;
        Ok(etcd)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let cluster = (0..3)
            .map(|j| format!("m{}=http://127.0.0.1:{}", j + 1, ETCD_PEER_PORT + 1 + j as u16))
            .collect::<Vec<_>>()
            .join(",");
        let peer = format!("http://127.0.0.1:{}", ETCD_PEER_PORT + 1 + i as u16);
        let log = self.dir.join(format!("m{}.log", i + 1));
        let child = Proc::new("etcd")
            .args(["--name", &format!("m{}", i + 1)])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{}", i + 1)))
            .args(["--listen-client-urls", &Etcd::client_url(i), "--advertise-client-urls", &Etcd::client_url(i)])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster, "--initial-cluster-token", "rnem-failover"])
            .args(["--initial-cluster-state", state, "--logger", "zap"])
            .arg("--log-outputs")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting etcd (apt-get install etcd-server etcd-client): {e}"))?;
        self.members[i] = Some(child);
        Ok(())
    }

    fn wait_healthy(&self, only: Option<usize>) -> Result<(), String> {
        let eps = match only {
            Some(i) => Etcd::client_url(i),
            None => Etcd::endpoints(),
        };
        for _ in 0..100 {
            let ok = Proc::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &eps, "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("etcd at {eps} did not become healthy within 10 s; see {}", self.dir.display()))
    }

    /// The index of the member that leads now.
    fn leader(&self) -> Result<usize, String> {
        let out = Proc::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &Etcd::endpoints(), "endpoint", "status", "-w", "json"])
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("etcdctl endpoint status is not JSON: {e}"))?;
        for (i, ep) in v.as_array().into_iter().flatten().enumerate() {
            let status = &ep["Status"];
            if status["header"]["member_id"] == status["leader"] {
                let endpoint = ep["Endpoint"].as_str().unwrap_or_default();
                return Ok((0..3).find(|j| Etcd::client_url(*j) == endpoint).unwrap_or(i));
            }
        }
        Err("etcdctl endpoint status names no leader".into())
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill9(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn etcdbench() -> PathBuf {
    if let Ok(p) = std::env::var("ETCDBENCH") {
        return PathBuf::from(p);
    }
    let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    Path::new(&tmp).join("roster-peer-etcd/target/release/etcdbench")
}

/// `max_gap=1.225s` of an `etcdbench avail` line, in ms.
fn parse_avail_gap_ms(out: &str) -> Option<u64> {
    let rest = out.split("max_gap=").nth(1)?;
    let secs: f64 = rest.split('s').next()?.parse().ok()?;
    Some((secs * 1000.0).round() as u64)
}

fn etcd_cycles(cycles: usize) -> Result<(String, Vec<u64>), String> {
    let bench = etcdbench();
    if !bench.exists() {
        return Err(format!("{} not found: run /work/shared/peers/etcd/setup.sh (or set ETCDBENCH)", bench.display()));
    }
    let version = Proc::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mut etcd = Etcd::start()?;
    let mut gaps = Vec::new();
    for i in 0..cycles {
        let avail = Proc::new(&bench)
            .args(["avail", &Etcd::endpoints(), &ETCD_AVAIL_S.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bench.display()))?;
        std::thread::sleep(Duration::from_millis(STEADY_MS));
        let leader = etcd.leader()?;
        etcd.kill9(leader);
        let out = avail.wait_with_output().map_err(|e| format!("etcdbench: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let gap = parse_avail_gap_ms(&text).ok_or_else(|| format!("etcdbench avail printed no max_gap: {text}"))?;
        println!("etcd cycle {:>2}: killed m{}; write gap {gap} ms", i + 1, leader + 1);
        gaps.push(gap);
        etcd.spawn(leader, "existing")?;
        etcd.wait_healthy(Some(leader))?;
        etcd.wait_healthy(None)?;
    }
    Ok((version, gaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_etcdbench_avail() {
        assert_eq!(parse_avail_gap_ms("avail: ok=10 err=2 max_gap=1.225s starting at t=1.500s"), Some(1225));
        assert_eq!(parse_avail_gap_ms("nothing"), None);
    }
}
