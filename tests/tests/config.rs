//! Bad configuration is refused at start with one line naming the field and the value.

use roster_tests::{TempDir, roster_bin};
use std::process::Command;

/// `--id 1 --listen 127.0.0.1:0 --data-dir <dir>/d` followed by `extra`.
fn node_with(extra: &[&str], dir: &TempDir) -> (Option<i32>, String) {
    let data = dir.0.join("d");
    let mut args = vec!["--id", "1", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    node(&args, dir)
}

fn node(args: &[&str], dir: &TempDir) -> (Option<i32>, String) {
    let token = dir.0.join("token");
    std::fs::write(&token, "t0ken").expect("write token");
    std::fs::write(dir.0.join("peer-key"), roster_tests::TEST_PEER_KEY).expect("write peer key");
    let out = Command::new(roster_bin())
        .arg("node")
        .args(args)
        .arg("--token-file")
        .arg(&token)
        .output()
        .expect("run roster node");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_listen_address_is_named() {
    let dir = TempDir::new("cfg-listen");
    let data = dir.0.join("d");
    let (code, err) = node(&["--id", "1", "--listen", "no-port", "--data-dir", data.to_str().expect("utf8")], &dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("listen") && err.contains("no-port"), "{err}");
}

#[test]
fn short_heartbeat_timeout_names_both_values() {
    let dir = TempDir::new("cfg-timeout");
    let (code, err) = node_with(&["--heartbeat-interval-ms", "1000", "--heartbeat-timeout-ms", "2500"], &dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("2500") && err.contains("1000"), "{err}");
}

#[test]
fn unknown_config_key_is_named() {
    let dir = TempDir::new("cfg-toml");
    let file = dir.0.join("roster.toml");
    let data = dir.0.join("d");
    std::fs::write(
        &file,
        format!("id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nheartbeat_ms = 5\n", data.to_str().expect("utf8")),
    )
    .expect("write config");
    let (code, err) = node(&["--config", file.to_str().expect("utf8")], &dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("heartbeat_ms"), "{err}");
}

#[test]
fn peers_without_this_node_are_refused() {
    let dir = TempDir::new("cfg-peers");
    let (code, err) = node_with(&["--peers", "2=127.0.0.1:1,3=127.0.0.1:2"], &dir);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("peers"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(roster_bin()).args(["kv", "frobnicate"]).output().expect("run roster");
    assert_eq!(out.status.code(), Some(2));
}
