//! Server drain on a real cluster: the idlest server, once drained (`roster server drain`),
//! is passed over by placement while it stays a member and heartbeats; a launch that only
//! it could take is refused with a message that says so; `status`, `ls` and `--json` show
//! the flag; the HTTP API drains and undrains the same way; undrained, it is chosen again.

use roster_tests::{TestCluster, eventually, free_port, json, mem_total_bytes, ok, which};
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";

fn server_entry(c: &TestCluster, id: u64) -> Value {
    let v = json(&c.roster(&["ls", "--kind", "servers", "--json"]));
    v["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["id"].as_u64() == Some(id))
        .unwrap_or_else(|| panic!("server {id} not listed: {v}"))
        .clone()
}

fn http_post(port: u16, path: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body(Vec::new())
        .expect("request");
    let mut response = agent.run(request).unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn a_drained_server_is_passed_over_and_a_launch_only_it_fits_is_refused() {
    let sleep = which("sleep");
    let mem = mem_total_bytes();
    let http_port = free_port();
    // Node 1 is the idlest and alone has most of its memory free; nodes 2 and 3 have a
    // tenth free.
    let sleep2 = sleep.clone();
    let c = TestCluster::start("drain", 3, move |id| {
        let used = if id == 1 { mem / 10 } else { mem / 10 * 9 };
        let mut args = vec![
            "--probe".into(),
            format!("fixed:cpu=0,mem={used}"),
            "--launch-allow".into(),
            sleep2.clone(),
            "--heartbeat-interval-ms".into(),
            "500".into(),
            // Beats every 500 ms bring resource averages in quickly; the timeout stays
            // generous, so a busy machine does not expire a live server.
            "--heartbeat-timeout-ms".into(),
            "3000".into(),
        ];
        if id == 1 {
            args.extend(["--http-listen".into(), format!("127.0.0.1:{http_port}")]);
        }
        args
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_resources(3, Duration::from_secs(20));
    let launch = |c: &TestCluster, name: &str, require_mem: Option<u64>| {
        let require = require_mem.map(|m| m.to_string());
        let mut args = vec!["launch", "--name", name, "--json", "--timeout-ms", "20000"];
        if let Some(r) = &require {
            args.extend(["--require-mem", r.as_str()]);
        }
        args.extend(["--", sleep.as_str(), "60"]);
        c.run_to_end(&args)
    };

    // Undrained, the idlest server takes the launch.
    let v = json(&launch(&c, "before", None));
    assert_eq!(v["server"].as_u64(), Some(1), "{v}");

    let drained = json(&c.roster(&["server", "drain", "1", "--json"]));
    assert_eq!(drained["drained"], Value::Bool(true), "{drained}");
    assert_eq!(server_entry(&c, 1)["drained"], Value::Bool(true));
    assert_eq!(server_entry(&c, 2)["drained"], Value::Bool(false));
    let text = ok(&c.roster(&["status"]));
    assert!(text.lines().any(|l| l.contains("node-1") && l.contains("Online,drained")), "{text}");
    let ls = ok(&c.roster(&["ls", "--kind", "servers"]));
    assert!(ls.lines().any(|l| l.starts_with("server-1 ") && l.contains("drained")), "{ls}");
    let status = json(&c.roster(&["status", "--json"]));
    let s1 = status["servers"].as_array().unwrap().iter().find(|s| s["id"] == 1).unwrap().clone();
    assert_eq!(s1["drained"], Value::Bool(true), "{s1}");

    // Placed elsewhere, several times over.
    for i in 0..3 {
        let v = json(&launch(&c, &format!("after{i}"), None));
        let server = v["server"].as_u64().expect("placed");
        assert_ne!(server, 1, "launch {i} placed on the drained server: {v}\n{}", c.logs());
    }

    // Only the drained server has this much memory free: refused, saying so.
    let need = mem / 2;
    let out = launch(&c, "big", Some(need));
    assert!(!out.status.success(), "a launch only a drained server fits must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only drained servers have"), "{stderr}");
    assert!(stderr.contains("server-1"), "{stderr}");
    assert!(stderr.contains("roster server undrain"), "{stderr}");

    // Still a member, still heartbeating: not expired over more than a timeout.
    std::thread::sleep(Duration::from_secs(4));
    let entry = server_entry(&c, 1);
    assert_eq!((entry["status"].as_str(), entry["drained"].as_bool()), (Some("online"), Some(true)), "{entry}");

    // The HTTP API undrains (and drains) with the same command.
    let (code, body) = http_post(http_port, "/v1/servers/1/undrain");
    assert_eq!(code, 200, "{body}");
    assert!(body["revision"].is_u64(), "{body}");
    assert_eq!(server_entry(&c, 1)["drained"], Value::Bool(false));
    let v = json(&launch(&c, "big-again", Some(need)));
    assert_eq!(v["server"].as_u64(), Some(1), "{v}");
    let (code, body) = http_post(http_port, "/v1/servers/1/drain");
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(5), "drained over HTTP", || {
        (server_entry(&c, 1)["drained"] == Value::Bool(true)).then_some(())
    });
    let (code, body) = http_post(http_port, "/v1/servers/99/drain");
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["kind"], "unknown_member", "{body}");
    let out = c.roster(&["server", "undrain", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown server-99"), "{out:?}");
}
