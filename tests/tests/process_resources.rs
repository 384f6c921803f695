//! Per-process resources: `roster run` samples its program's process tree and sends the
//! averages with its heartbeats; an HTTP heartbeat's `{"cpu_percent", "mem_bytes"}` is
//! recorded too; status, ls, get, HTTP and `/metrics` show them.

use roster_tests::{TestCluster, eventually, free_port, json, ok};
use serde_json::Value;
use std::time::Duration;

fn http_get(agent: &ureq::Agent, url: &str, token: &str) -> (u16, String) {
    let mut answer = agent.get(url).header("authorization", format!("Bearer {token}")).call().expect("GET");
    (answer.status().as_u16(), answer.body_mut().read_to_string().expect("body"))
}

#[test]
fn a_process_reports_its_own_cpu_and_memory_by_run_and_by_http() {
    let port = free_port();
    let c = TestCluster::start("process-resources", 1, move |_| {
        ["--http-listen".to_string(), format!("127.0.0.1:{port}"), "--probe".into(), "fixed:cpu=10,mem=1000000".into()]
            .to_vec()
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(1, Duration::from_secs(20));

    // A program that keeps a core busy: its tree's averages reach the record.
    let busy = "while :; do :; done";
    let mut run = c.spawn_client(&["run", "--name", "busy", "--resource-window-ms", "2000", "--", "sh", "-c", busy]);
    let entry = eventually(Duration::from_secs(20), "busy's resources in the record", || {
        let out = c.roster(&["get", "busy", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let r = &v["process"]["resources"];
        (r["cpu_percent_avg"].as_u64()? >= 20 && r["mem_bytes_used_avg"].as_u64()? > 0).then_some(v)
    });
    let id = entry["process"]["id"].as_u64().expect("id");
    let get = ok(&c.roster(&["get", "busy"]));
    assert!(get.lines().any(|l| l.starts_with("  cpu ") && l.contains("% (averaged)")), "{get}");
    let ls = ok(&c.roster(&["ls", "--kind", "processes"]));
    assert!(ls.contains(" cpu ") && !ls.contains("cpu - mem -"), "{ls}");
    // Status counts processes; `ls` lists them, each with its resources.
    let row = ls.lines().find(|l| l.contains(" busy ")).unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains('%') && row.contains("MiB"), "{row}");
    run.kill9();

    // An HTTP heartbeat's values are recorded, not dropped.
    let token = std::fs::read_to_string(&c.token_file).expect("token").trim().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = format!("http://127.0.0.1:{port}");
    let mut made = agent
        .post(format!("{base}/v1/processes"))
        .header("authorization", format!("Bearer {token}"))
        .send(r#"{"name":"py","server":1}"#)
        .expect("register");
    assert_eq!(made.status().as_u16(), 201);
    let made: Value = serde_json::from_str(&made.body_mut().read_to_string().expect("body")).expect("JSON");
    let py = made["id"].as_u64().expect("id");
    let beat = agent
        .put(format!("{base}/v1/processes/{py}/heartbeat"))
        .header("authorization", format!("Bearer {token}"))
        .send(r#"{"cpu_percent":5,"mem_bytes":1048576}"#)
        .expect("heartbeat");
    assert_eq!(beat.status().as_u16(), 200);
    let recorded = eventually(Duration::from_secs(10), "the HTTP heartbeat's resources", || {
        let (status, body) = http_get(&agent, &format!("{base}/v1/processes/{py}"), &token);
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && !v["process"]["resources"].is_null()).then_some(v)
    });
    assert_eq!(
        recorded["process"]["resources"],
        serde_json::json!({ "cpu_percent_avg": 5, "mem_bytes_used_avg": 1_048_576 }),
        "{recorded}"
    );

    // /metrics sums what the record holds over the processes that reported.
    let (_, metrics) = http_get(&agent, &format!("{base}/metrics"), &token);
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
    };
    assert!(value("roster_members_processes_reporting").is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(value("roster_members_processes_memory_bytes").is_some_and(|n| n >= 1_048_576.0), "{metrics}");
    let listed = json(&c.roster(&["ls", "--kind", "processes", "--json"]));
    let busy_listed = listed["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["id"] == id));
    assert!(busy_listed.is_none_or(|p| !p["resources"].is_null()), "{listed}");
}
