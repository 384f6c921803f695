//! `roster dev`, the README's first command: three nodes in one process form a cluster,
//! serve, stop cleanly on a signal, and form it again from their data on the next start,
//! logging no WARN or ERROR on the way.

use roster_tests::{ChildGuard, TempDir, eventually, free_port, roster_bin, sigterm};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

fn dev(data: &std::path::Path, base: u16, http: u16, launch_allow: &str) -> ChildGuard {
    let child = Command::new(roster_bin())
        .args(["dev", "--status-every-s", "0", "--base-port", &base.to_string(), "--http-base-port"])
        .arg(http.to_string())
        .args(["--launch-allow", launch_allow])
        .arg("--data-dir")
        .arg(data)
        // The defaults a newcomer gets: no log filter, no NO_COLOR, stderr not a terminal.
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start roster dev");
    ChildGuard(Some(child))
}

/// `roster status --json` against the dev cluster, once it has a leader, three voters and
/// three registered servers, and the node asked does not wait.
fn formed(data: &std::path::Path, endpoints: &str) -> Option<Value> {
    let out = Command::new(roster_bin())
        .args(["status", "--json", "--endpoints", endpoints, "--timeout-ms", "2000", "--token-file"])
        .arg(data.join("token"))
        .output()
        .ok()?;
    let s: Value = serde_json::from_slice(&out.stdout).ok()?;
    let voters = s["voters"].as_array()?.len();
    let servers = s["servers"].as_array()?.len();
    (s["leader"].is_u64() && voters == 3 && servers == 3 && s["waiting"].is_null()).then_some(s)
}

#[test]
fn dev_refuses_a_launch_allow_that_is_not_an_absolute_path() {
    let dir = TempDir::new("dev-allow");
    let out = Command::new(roster_bin())
        .args(["dev", "--launch-allow", "sh", "--data-dir"])
        .arg(dir.0.join("data"))
        .output()
        .expect("run roster dev");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--launch-allow sh: not an absolute path") && err.contains("command -v sh"), "{err}");
}

#[test]
fn dev_forms_a_cluster_stops_on_a_signal_and_forms_it_again_from_its_data() {
    let dir = TempDir::new("dev");
    let data = dir.0.join("roster-data");
    // Three consecutive free ports for the nodes, three for HTTP.
    let (base, http) = loop {
        let (b, h) = (free_port(), free_port());
        let free = |p: u16| (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok());
        if b < u16::MAX - 3 && h < u16::MAX - 3 && b.abs_diff(h) > 3 && free(b) && free(h) {
            break (b, h);
        }
    };
    let endpoints = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",");
    // Allowed by a path with a symlink in it (`/bin` is one on Debian): dev allows the
    // canonical path, which a launch then names.
    let shell = roster_tests::which("sh");
    let canonical = std::fs::canonicalize(&shell).expect("sh").display().to_string();
    let mut first_cluster: Option<String> = None;
    for start in ["first", "second"] {
        let mut node = dev(&data, base, http, &shell);
        eventually(Duration::from_secs(30), &format!("the {start} dev start to form a cluster"), || {
            formed(&data, &endpoints)
        });
        let launch = Command::new(roster_bin())
            .args(["launch", "--name", "hello", "--endpoints", &endpoints, "--token-file"])
            .arg(data.join("token"))
            .args(["--", &canonical, "-c", "echo hello"])
            .output()
            .expect("roster launch");
        let said = String::from_utf8_lossy(&launch.stdout);
        assert!(launch.status.success(), "{said}{}", String::from_utf8_lossy(&launch.stderr));
        assert!(said.contains("output: ") && said.contains("/launched/hello-"), "{said}");
        for n in 0..3 {
            let one = format!("127.0.0.1:{}", base + n);
            let s = eventually(Duration::from_secs(10), "every node in good standing, its cluster id sealed", || {
                formed(&data, &one).filter(|s| s["cluster_id"].is_string())
            });
            // The second start forms the cluster again from its data: the same cluster,
            // not a new one with a new id.
            let cluster = s["cluster_id"].as_str().map(str::to_string);
            assert_eq!(
                first_cluster.get_or_insert_with(|| cluster.clone().unwrap_or_default()).as_str(),
                cluster.as_deref().unwrap_or_default(),
                "{start} start: {s}"
            );
        }
        sigterm(node.child());
        let out = node.wait_output(Duration::from_secs(30));
        assert!(out.status.success(), "roster dev ended with {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        // A normal start (the first forms the cluster, the second restarts it) and a clean
        // stop log nothing an operator must act on, and no colour codes into a pipe.
        let log = String::from_utf8_lossy(&out.stderr);
        let alarming: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
        assert!(alarming.is_empty(), "the {start} start and stop logged:\n{}", alarming.join("\n"));
        assert!(!log.contains('\u{1b}'), "colour codes in a piped log: {log}");
        assert!(log.contains("node stopped"), "{log}");
    }
}
