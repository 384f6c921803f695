//! The state budget (`state_budget_bytes`): a cluster with a small budget fills to it,
//! refuses the next write with one line that names the budget and what uses it (and 507
//! over HTTP), shows the alarm in status, `/metrics` and `/readyz`, takes deletes, writes
//! on, and restarted at the budget starts and serves, having refused exactly the same
//! writes again on replay.

use roster_tests::{TestCluster, eventually, free_port, json, ok};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// 1 MiB: about 25 values of 30 kB beside a quarter for the event history.
const BUDGET: u64 = 1 << 20;
const VALUE_BYTES: usize = 30_000;
/// What one value counts: its key (`fill/NNN`), its value, and an item's overhead.
const ENTRY_BYTES: u64 = roster_kernel::state_machine::ITEM_OVERHEAD_BYTES + 8 + VALUE_BYTES as u64;
const TOKEN: &str = "test-token-0123456789";

fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    try_call(agent, method, url, body).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `call`, with a failure to reach the node as an error (a restarted node opens its HTTP
/// port a moment after its Raft port).
fn try_call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> Result<(u16, String), ureq::Error> {
    let auth = format!("Bearer {TOKEN}");
    let mut response = match (method, body) {
        ("PUT", Some(body)) => agent.put(url).header("Authorization", &auth).send(body),
        ("GET", None) => agent.get(url).header("Authorization", &auth).call(),
        _ => panic!("unused method {method}"),
    }?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// The keys under `fill/` with their values' lengths, through node `base`'s HTTP API.
fn filled(agent: &ureq::Agent, base: &str) -> BTreeMap<String, usize> {
    let (code, text) = call(agent, "GET", &format!("{base}/v1/kv?start=fill/&end=fill0&limit=1000"), None);
    assert_eq!(code, 200, "{text}");
    let page: Value = serde_json::from_str(&text).expect("JSON");
    assert!(page["next"].is_null(), "one page holds them");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| (item["key"].as_str().expect("key").to_string(), item["value"].as_str().expect("value").len()))
        .collect()
}

/// Puts values under new keys from `first` on until one is refused; the number put and
/// the refusal's stderr.
fn fill(c: &TestCluster, first: usize) -> (usize, String) {
    let value = "x".repeat(VALUE_BYTES);
    for i in first.. {
        let out = c.roster(&["kv", "put", &format!("fill/{i:03}"), &value]);
        if !out.status.success() {
            return (i - first, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        assert!(i < first + 200, "the budget was never reached");
    }
    unreachable!("the loop returns at the first refusal")
}

fn status_of(c: &TestCluster, id: u64) -> Value {
    json(&c.roster_at(&c.endpoints_of(&[id]), &["status", "--json"]))
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_full_budget_refuses_writes_takes_deletes_and_survives_a_restart() {
    let dir = roster_tests::TempDir::new("state-budget-config");
    let config = dir.0.join("node.toml");
    // id, listen and data_dir are required in a file; the harness's flags override them.
    // Snapshots every few entries, so that the restart below restores one (with the
    // history's ledger) and replays the log after it.
    std::fs::write(
        &config,
        format!(
            "id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"unused\"\nstate_budget_bytes = {BUDGET}\n\
             snapshot_every_entries = 16\n"
        ),
    )
    .expect("write config");
    let http_ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let mut c = TestCluster::start("state-budget", 3, |id| {
        vec![
            "--config".into(),
            config.display().to_string(),
            "--http-listen".into(),
            format!("127.0.0.1:{}", http_ports[&id]),
        ]
    });
    c.wait_leader(Duration::from_secs(20));
    let base = |id: u64| format!("http://127.0.0.1:{}", http_ports[&id]);
    let agent = roster_tests::http_agent();

    // Fill to the budget: the refusal is one line naming the budget and its parts.
    let (put, refusal) = fill(&c, 0);
    assert!(put >= 10, "only {put} values fit in {BUDGET} bytes");
    let line = refusal.trim();
    eprintln!("{put} values of {VALUE_BYTES} bytes fit a budget of {BUDGET}; the next: {line}");
    assert_eq!(line.lines().count(), 1, "one line: {refusal}");
    for part in ["state budget full", &format!("{BUDGET}-byte budget"), "kv ", "events ", "replies ", "labels "] {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
    let status = status_of(&c, 1);
    assert_eq!(status["state"]["budget_bytes"], BUDGET, "{status}");
    assert_eq!(status["state"]["alarm"], true, "{status}");
    let used_kv = status["state"]["used"]["kv"].as_u64().expect("kv bytes");
    assert_eq!(used_kv, put as u64 * ENTRY_BYTES, "{status}");
    // Every node counted the same bytes.
    for id in [2, 3] {
        let other = eventually(Duration::from_secs(10), "the same kv bytes on every node", || {
            let s = status_of(&c, id);
            (s["state"]["used"]["kv"] == status["state"]["used"]["kv"]).then_some(s)
        });
        assert_eq!(other["state"]["alarm"], true);
    }
    let text = ok(&c.roster(&["status"]));
    assert!(text.contains(&format!("of {BUDGET} bytes")) && text.contains("ALARM state budget"), "{text}");

    // HTTP: 507 with the error shape; the alarm in /metrics and /readyz (still ready:
    // the deletes that clear it must reach the nodes).
    let (code, body) = call(&agent, "PUT", &format!("{}/v1/kv/over", base(1)), Some(&"y".repeat(VALUE_BYTES)));
    assert_eq!(code, 507, "{body}");
    let error: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(error["error"]["kind"], "over_budget", "{body}");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("state budget full")), "{body}");
    assert_eq!(error["error"]["budget_bytes"], BUDGET, "{body}");
    assert_eq!(error["error"]["used"]["kv"], used_kv, "{body}");
    assert!(error["error"]["needed_bytes"].as_u64().is_some_and(|n| n > 2 * VALUE_BYTES as u64), "{body}");
    let (code, metrics) = call(&agent, "GET", &format!("{}/metrics", base(2)), None);
    assert_eq!(code, 200);
    assert_eq!(metric(&metrics, "roster_state_alarm"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "roster_state_budget_bytes"), Some(BUDGET as f64));
    assert_eq!(metric(&metrics, "roster_state_bytes{part=\"kv\"}"), Some(used_kv as f64));
    let (code, ready) = call(&agent, "GET", &format!("{}/readyz", base(3)), None);
    assert_eq!(code, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).expect("JSON");
    assert_eq!(ready["alarms"][0]["kind"], "state_budget", "{ready}");

    // Deletes pass at the budget, and writes go on.
    for i in 0..5 {
        ok(&c.roster(&["kv", "del", &format!("fill/{i:03}")]));
    }
    let (put_again, _) = fill(&c, 100);
    assert!(put_again >= 4, "deleting 5 values made room for {put_again}");
    let before = filled(&agent, &base(1));
    assert_eq!(before.len(), put - 5 + put_again);

    // A full restart at the budget: every node replays its log, refuses what it refused
    // before, and serves.
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_leader(Duration::from_secs(30));
    for id in 1..=3 {
        assert!(c.log_of(id).contains("state machine restored from snapshot"), "node {id} replayed no snapshot");
        let after = eventually(Duration::from_secs(20), "the node to serve its HTTP API again", || {
            let ready = try_call(&agent, "GET", &format!("{}/readyz", base(id)), None);
            ready.is_ok_and(|(code, _)| code == 200).then(|| filled(&agent, &base(id)))
        });
        assert_eq!(after, before, "node {id} holds other values after its replay");
        let status = status_of(&c, id);
        assert_eq!(status["state"]["used"]["kv"], before.len() as u64 * ENTRY_BYTES, "{status}");
        assert_eq!(status["state"]["alarm"], true, "{status}");
    }
    let out = c.roster(&["kv", "put", "over", &"y".repeat(VALUE_BYTES)]);
    assert!(!out.status.success(), "still at the budget after the restart");
    assert!(String::from_utf8_lossy(&out.stderr).contains("state budget full"));
    ok(&c.roster(&["kv", "del", "fill/100"]));
    ok(&c.roster(&["kv", "put", "after-restart", "small"]));
    assert_eq!(c.kv_get_at(&c.endpoints(), "after-restart", false).as_deref(), Some("small"));
}
