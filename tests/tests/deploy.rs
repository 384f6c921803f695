//! The operations kit in `deploy/`: the alert rules pass `promtool` (syntax and their own
//! unit tests), the systemd unit passes `systemd-analyze verify`, and three nodes started
//! from the example config file serve every series the dashboard and the rules use.

use roster_tests::{TempDir, free_port, roster_bin, which};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run(cmd: &mut Command, what: &str, install: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what} ({e}): install {install} (.ci/run does)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy_dir().join("prometheus");
    let checked = run(
        Command::new("promtool").args(["check", "rules", "roster-rules.yml"]).current_dir(&dir),
        "promtool check rules",
        "Debian's prometheus package",
    );
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = run(
        Command::new("promtool").args(["test", "rules", "roster-rules.test.yml"]).current_dir(&dir),
        "promtool test rules",
        "Debian's prometheus package",
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy_dir().join("roster.service")).expect("deploy/roster.service");
    for line in [
        "User=roster",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/roster",
        "PrivateTmp=yes",
        "LimitNOFILE=",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "deploy/roster.service lacks {line}");
    }
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let tmp = TempDir::new("unit");
    let copy = tmp.0.join("roster.service");
    let bin = roster_bin();
    std::fs::write(&copy, unit.replace("/usr/local/bin/roster", &bin.display().to_string())).expect("write unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect(
        "systemd-analyze must be installed to verify deploy/roster.service (Debian's systemd; .ci/run installs it)",
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{text}");
    // Warnings about the unit itself (unknown keys, bad values) do not fail verify: refuse them here.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("roster.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about the unit:\n{}", ours.join("\n"));
}

/// Nodes started from configuration files; killed on drop.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http_get(agent: &ureq::Agent, url: &str) -> Option<(u16, String)> {
    let mut answer = agent.get(url).header("authorization", "Bearer test-token-0123456789").call().ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.body_mut().read_to_string().ok()?))
}

/// Every `roster_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("roster_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Label names in `by (...)` clauses, and in selectors as `name="`.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let after = &rest[at + 4..];
        let close = after.find(')').expect("a closed by (...)");
        labels.extend(after[..close].split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
        rest = &after[close..];
    }
    for part in expr.split(['{', ',']) {
        if let Some((name, _)) = part.split_once("=\"").or_else(|| part.split_once("=~\"")) {
            labels.insert(name.trim().to_string());
        }
    }
    labels
}

/// Every query of the dashboard and the rules.
fn exprs() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/roster-dashboard.json")).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("a target's expr").to_string());
        }
    }
    assert!(out.len() >= 20, "the dashboard has {} queries", out.len());
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/roster-rules.yml")).expect("the rules");
    let mut in_expr = false;
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(e) = t.strip_prefix("expr:") {
            in_expr = e.trim() == "|";
            out.push(e.trim().trim_start_matches('|').to_string());
        } else if in_expr && line.starts_with("          ") && !t.starts_with('#') {
            out.last_mut().expect("an expr").push_str(t);
        } else {
            in_expr = false;
        }
    }
    out
}

#[test]
fn nodes_from_the_example_config_serve_every_series_the_dashboard_and_rules_use() {
    let tmp = TempDir::new("deploy-config");
    std::fs::write(tmp.0.join("token"), "test-token-0123456789").expect("token");
    std::fs::write(tmp.0.join("peer-key"), roster_tests::TEST_PEER_KEY).expect("peer key");
    let example = std::fs::read_to_string(deploy_dir().join("roster.toml")).expect("deploy/roster.toml");
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let sleep = which("sleep");
    let mut nodes = Nodes(Vec::new());
    for n in 1..=3usize {
        // The example is node 1 of 10.0.0.1..3; node N changes id and its own addresses.
        let mut config = example.replace("id = 1", &format!("id = {n}"));
        for k in 1..=3usize {
            config = config
                .replace(&format!("10.0.0.{k}:7401"), &format!("127.0.0.1:{}", raft[k - 1]))
                .replace(&format!("10.0.0.{k}:7501"), &format!("127.0.0.1:{}", http[k - 1]));
        }
        config = config
            .replace(&format!("listen = \"127.0.0.1:{}\"", raft[0]), &format!("listen = \"127.0.0.1:{}\"", raft[n - 1]))
            .replace(
                &format!("http_listen = \"127.0.0.1:{}\"", http[0]),
                &format!("http_listen = \"127.0.0.1:{}\"", http[n - 1]),
            )
            .replace("/var/lib/roster", &tmp.0.join(format!("node-{n}")).display().to_string())
            .replace("/etc/roster/token", &tmp.0.join("token").display().to_string());
        config.push_str(&format!("launch_allow = [\"{sleep}\"]\nprobe = \"fixed:cpu=10,mem=1000000000\"\n"));
        assert!(!config.contains("10.0.0."), "an address of the example was not replaced:\n{config}");
        let path = tmp.0.join(format!("node-{n}.toml"));
        std::fs::write(&path, &config).expect("write config");
        let log = std::fs::File::create(tmp.0.join(format!("node-{n}.log"))).expect("log");
        nodes.0.push(
            Command::new(roster_bin())
                .arg("node")
                .arg("--config")
                .arg(&path)
                .env("RUST_LOG", "info,openraft=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start a node"),
        );
    }
    let logs = || {
        (1..=3)
            .map(|n| std::fs::read_to_string(tmp.0.join(format!("node-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(40);
    for port in &http {
        while http_get(&agent, &format!("http://127.0.0.1:{port}/readyz")).map(|a| a.0) != Some(200) {
            assert!(Instant::now() < deadline, "node on {port} not ready within 40 s:\n{}", logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Series that appear once something happened: servers registered (heartbeats), a launch.
    while !http.iter().any(|p| {
        http_get(&agent, &format!("http://127.0.0.1:{p}/metrics"))
            .is_some_and(|(_, m)| m.contains("roster_members_heartbeats_total{result=\"accepted\"}"))
    }) {
        assert!(Instant::now() < deadline, "no accepted heartbeat within 40 s:\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let launched = agent
        .post(format!("http://127.0.0.1:{}/v1/launch", http[0]))
        .header("authorization", "Bearer test-token-0123456789")
        .send(format!("{{\"name\":\"probe-job\",\"program\":\"{sleep}\",\"args\":[\"30\"]}}"))
        .expect("launch");
    assert_eq!(launched.status().as_u16(), 201, "launch failed:\n{}", logs());

    let mut samples = String::new();
    for port in &http {
        let (status, text) = http_get(&agent, &format!("http://127.0.0.1:{port}/metrics")).expect("scrape");
        assert_eq!(status, 200);
        samples.extend(text.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")));
    }
    let served = metric_names(&samples);
    let mut used = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for e in exprs() {
        used.extend(metric_names(&e));
        labels.extend(label_names(&e));
    }
    assert!(used.len() >= 15, "too few metric names found in the dashboard and rules: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !served.contains(*n)).collect();
    assert!(missing.is_empty(), "the dashboard or rules use series no node serves: {missing:?}\nserved: {served:?}");
    // Labels a scrape adds (job, instance) or histograms carry (le) aside, every label is a node's.
    for label in labels.iter().filter(|l| !["job", "instance", "le"].contains(&l.as_str())) {
        assert!(samples.contains(&format!("{label}=\"")), "no series has the label {label:?} the queries use");
    }
    println!("{} series names and labels {labels:?} checked against 3 live nodes", used.len());
}
