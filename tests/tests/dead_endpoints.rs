//! A client pointed only at dead endpoints fails fast with a one-line error naming them.

use roster_tests::{TempDir, free_port, roster_bin};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn status_against_dead_endpoints_fails_fast_and_names_them() {
    let dir = TempDir::new("dead-endpoints");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "test-token-0123456789").expect("write token");
    let (a, b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let endpoints = format!("{a},{b}");

    let started = Instant::now();
    let out = Command::new(roster_bin())
        .args(["status", "--endpoints", &endpoints, "--timeout-ms", "2000"])
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("ROSTER_TOKEN")
        .env_remove("ROSTER_ENDPOINTS")
        .output()
        .expect("run roster status");
    let took = started.elapsed();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status {:?}, stderr: {stderr}", out.status);
    assert!(took < Duration::from_secs(5), "took {took:?} to give up; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "unexpected stdout: {}", String::from_utf8_lossy(&out.stdout));
    let msg = stderr.trim_end();
    assert_eq!(msg.lines().count(), 1, "expected a one-line message, got: {stderr}");
    assert!(msg.contains(&a) && msg.contains(&b), "message does not name both endpoints: {msg}");
}

/// A refused connection (nothing listens) is not a timeout: with a 30 s request timeout,
/// every client command still fails within about a second (`REFUSED_GIVE_UP_MS`; the
/// bound here is generous for a noisy machine) with the same clear message.
#[test]
fn commands_fail_fast_when_every_endpoint_refuses_the_connection() {
    let dir = TempDir::new("refused-endpoints");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "test-token-0123456789").expect("write token");
    let (a, b, c) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let endpoints = format!("{a},{b},{c}");
    for command in [&["status"][..], &["ls"], &["kv", "get", "k"], &["kv", "put", "k", "v"], &["tombstones"]] {
        let started = Instant::now();
        let out = Command::new(roster_bin())
            .args(command)
            .args(["--endpoints", &endpoints, "--timeout-ms", "30000"])
            .arg("--token-file")
            .arg(&token_file)
            .env_remove("ROSTER_TOKEN")
            .env_remove("ROSTER_ENDPOINTS")
            .output()
            .expect("run roster");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: exit status {:?}, stderr: {stderr}", out.status);
        assert!(took < Duration::from_secs(10), "{command:?} took {took:?}: a refusal was waited out; {stderr}");
        let msg = stderr.trim_end();
        assert_eq!(msg.lines().count(), 1, "{command:?}: expected a one-line message, got: {stderr}");
        assert!(msg.contains("cannot reach any Roster node"), "{command:?}: {msg}");
        assert!(msg.contains("refused"), "{command:?}: the message names the refusal: {msg}");
        assert!(msg.contains(&a) && msg.contains(&b) && msg.contains(&c), "{command:?}: names every endpoint: {msg}");
    }
}
