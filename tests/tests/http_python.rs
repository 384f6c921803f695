//! The HTTP API from another language: `examples/member.py` (Python's standard library
//! only) registers a process, heartbeats it and deregisters it with its exit status.

use roster_tests::{TestCluster, free_port, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_python_example_registers_heartbeats_and_leaves() {
    let http_port = free_port();
    let c = TestCluster::start("http-python", 3, |id| {
        if id == 2 { vec!["--http-listen".into(), format!("127.0.0.1:{http_port}")] } else { vec![] }
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(3, Duration::from_secs(30));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/member.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--url", &format!("http://127.0.0.1:{http_port}"), "--token-file"])
        .arg(&c.token_file)
        .args(["--server", "3", "--name", "py-worker", "--port", "9000", "--beats", "3", "--interval-s", "0.2"])
        .args(["--exit-status", "7"])
        .output()
        .expect("python3 must be installed to run the Python example (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "member.py failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("registered process-"), "{stdout}");
    assert_eq!(stdout.matches("heartbeat ").count(), 3, "{stdout}");
    assert!(stdout.contains("deregistered process-"), "{stdout}");

    // The cluster saw it leave with its exit status, through the binary protocol too.
    let listed = json(&c.roster(&["ls", "--json"]));
    let names: Vec<&str> =
        listed["processes"].as_array().unwrap().iter().filter_map(|p| p["info"]["name"].as_str()).collect();
    assert!(!names.contains(&"py-worker"), "{listed}");
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let mut answer = agent
        .get(format!("http://127.0.0.1:{http_port}/v1/tombstones"))
        .header("authorization", "Bearer test-token-0123456789")
        .call()
        .expect("tombstones");
    let tombstones: serde_json::Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    let left = tombstones["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t.to_string().contains("py-worker"))
        .unwrap_or_else(|| panic!("no tombstone of py-worker in {tombstones}"));
    assert_eq!(left["departure"], serde_json::json!({ "type": "deregistered", "exit_status": 7 }), "{left}");
}
