//! The CLI fits operators' habits: client options before or after the command, a help
//! text for every command and option, quiet exit on a closed pipe, one readable line per
//! watched event, and a plain answer to HTTP sent to the binary port.

use roster_tests::{TestCluster, eventually, json, ok, roster_bin};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// One node is a whole cluster: enough for the CLI, and cheap on a shared machine.
fn one_node(tag: &str) -> TestCluster {
    let c = TestCluster::start(tag, 1, |_| ["--probe", "fixed:cpu=10,mem=1000000"].map(String::from).to_vec());
    c.wait_leader(Duration::from_secs(20));
    c
}

/// `roster ARGS` exactly as given: no endpoints or token added, none in the environment.
fn roster_bare(args: &[&str]) -> Output {
    Command::new(roster_bin())
        .args(args)
        .env_remove("ROSTER_ENDPOINTS")
        .env_remove("ROSTER_TOKEN_FILE")
        .env_remove("ROSTER_TOKEN")
        .output()
        .expect("run roster")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn client_options_go_before_or_after_the_command() {
    let c = one_node("habits-opts");
    let e = c.endpoints();
    let t = c.token_file.to_str().expect("utf-8 path");

    let before =
        json(&roster_bare(&["--endpoints", &e, "--token-file", t, "--json", "--timeout-ms", "9000", "status"]));
    assert_eq!(before["leader"], 1, "{before}");
    let after = json(&roster_bare(&["status", "--endpoints", &e, "--token-file", t, "--json", "--timeout-ms", "9000"]));
    assert_eq!(after["leader"], 1, "{after}");

    // Spread over every level of a nested command, and with `=`.
    ok(&roster_bare(&["--endpoints", &e, "kv", "--token-file", t, "put", "greeting", "hello"]));
    let got = json(&roster_bare(&[&format!("--endpoints={e}"), "kv", "get", "greeting", "--json", "--token-file", t]));
    assert_eq!(got["value"], "hello", "{got}");

    // The environment still works, and a flag still overrides it.
    let env = |args: &[&str], endpoints: &str| {
        Command::new(roster_bin())
            .args(args)
            .env("ROSTER_ENDPOINTS", endpoints)
            .env("ROSTER_TOKEN_FILE", t)
            .env_remove("ROSTER_TOKEN")
            .output()
            .expect("run roster")
    };
    assert_eq!(json(&env(&["--json", "status"], &e))["leader"], 1);
    assert_eq!(json(&env(&["--endpoints", &e, "status", "--json"], "127.0.0.1:1"))["leader"], 1);

    // Before `--`, `run` takes them too; after it, they belong to the program.
    let out = env(&["--timeout-ms", "9000", "run", "--name", "echoer", "--", "echo", "--json"], &e);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "--json", "{}", stderr(&out));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn node_and_dev_refuse_client_options_by_name() {
    for args in
        [&["node", "--endpoints", "127.0.0.1:1", "--id", "1"][..], &["--json", "dev"], &["dev", "--token-file", "t"]]
    {
        let out = roster_bare(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("only client commands do"), "{args:?}: {}", stderr(&out));
    }
}

/// An entry of a help section ("  --flag <V>  text", "  name  text") with the
/// description on its line or, in clap's long layout, indented on the next.
fn described(lines: &[&str], i: usize) -> bool {
    let entry = lines[i].trim_start();
    if entry.split_once("  ").is_some_and(|(_, d)| !d.trim().is_empty()) {
        return true;
    }
    lines.get(i + 1).is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty())
}

/// Walks `roster PATH --help` and every command it lists; records what lacks a text.
fn walk_help(path: &mut Vec<String>, problems: &mut Vec<String>, visited: &mut usize) {
    *visited += 1;
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = roster_bare(&args);
    let text = ok(&out);
    let here = format!("roster {}", path.join(" ")).trim_end().to_string();
    let about = text.lines().next().unwrap_or_default();
    if about.trim().is_empty() || about.starts_with("Usage:") {
        problems.push(format!("{here}: no about line"));
    }
    if about.contains("Options every client command takes") {
        problems.push(format!("{here}: about line is the client options' text: {about:?}"));
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut section = "";
    let mut subcommands = Vec::new();
    let mut sibling_abouts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') {
            section = if line.ends_with(':') { line } else { "" };
            continue;
        }
        let entry = line.trim_start();
        // Only entries: two spaces, then the name; continuation lines are deeper.
        if section.is_empty() || line.starts_with("   ") || entry.is_empty() {
            continue;
        }
        let name = entry.split_whitespace().next().unwrap_or_default();
        if section == "Commands:" {
            if name == "help" {
                continue;
            }
            match entry.split_once("  ") {
                Some((_, d)) if !d.trim().is_empty() => sibling_abouts.push(d.trim().to_string()),
                _ => problems.push(format!("{here}: command {name} has no about text")),
            }
            subcommands.push(name.to_string());
        } else if !described(&lines, i) {
            problems.push(format!("{here}: {entry:?} ({section}) has no description"));
        }
    }
    let mut unique = sibling_abouts.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != sibling_abouts.len() {
        problems.push(format!("{here}: commands share an about text: {sibling_abouts:?}"));
    }
    for sub in subcommands {
        path.push(sub);
        walk_help(path, problems, visited);
        path.pop();
    }
}

#[test]
fn every_command_and_option_has_a_help_text() {
    let mut problems = Vec::new();
    let mut visited = 0;
    walk_help(&mut Vec::new(), &mut problems, &mut visited);
    assert!(visited > 20, "walked only {visited} commands");
    assert!(problems.is_empty(), "help texts missing:\n{}", problems.join("\n"));

    let kv = ok(&roster_bare(&["kv", "--help"]));
    for op in ["get", "put", "del", "cas"] {
        let line = kv.lines().find(|l| l.trim_start().starts_with(&format!("{op} "))).unwrap_or_default();
        assert!(line.split_whitespace().count() > 2, "kv {op} undescribed in:\n{kv}");
    }
    let run = ok(&roster_bare(&["run", "--help"]));
    assert!(run.lines().any(|l| l.contains("--reserve-cpu")), "{run}");
    // Client options are listed where they apply and nowhere else.
    assert!(ok(&roster_bare(&["status", "--help"])).contains("--endpoints"));
    assert!(!ok(&roster_bare(&["node", "--help"])).contains("--endpoints"));
}

/// Runs `roster ARGS` (aimed at `c`) with stdout a pipe whose read end is closed before
/// it starts, as after `| head -0` or `| grep -q` has what it wanted.
fn into_closed_pipe(c: &TestCluster, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = c.command(args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).spawn().expect("spawn");
    // Bounded: a command that ignored the closed pipe would fail here, not hang the run.
    roster_tests::ChildGuard(Some(child)).wait_output(Duration::from_secs(30))
}

#[test]
fn a_closed_pipe_ends_a_command_quietly_with_status_0() {
    let c = one_node("habits-pipe");
    ok(&c.roster(&["kv", "put", "k", "v"]));
    for args in
        [&["ls", "--json"][..], &["status"], &["kv", "get", "k"], &["watch", "--after", "0", "--timeout-ms", "20000"]]
    {
        let out = into_closed_pipe(&c, args);
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("Broken pipe"), "{args:?}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}

/// `watch --after 0 ARGS` to its end (ARGS must hold a `--count`), its lines.
fn watched(c: &TestCluster, args: &[&str]) -> Vec<String> {
    let mut all = vec!["watch", "--after", "0", "--timeout-ms", "20000"];
    all.extend_from_slice(args);
    let mut child = c.spawn_client(&all);
    let out = child.wait_output(Duration::from_secs(30));
    ok(&out).lines().map(str::to_string).collect()
}

#[test]
fn watch_prints_one_readable_line_per_event_and_filters() {
    let c = one_node("habits-watch");
    c.wait_resources(1, Duration::from_secs(20));
    // After the first resource report, so the stream holds one to hide.
    ok(&c.roster(&["put", "server:1", "--name", "alpha"]));
    ok(&c.roster(&["kv", "put", "greeting", "hello"]));
    ok(&c.roster(&["kv", "del", "greeting"]));
    let go = c.dir.0.join("go");
    let script = format!("while [ ! -e '{}' ]; do sleep 0.05; done; exit 3", go.display());
    let mut web =
        c.spawn_client(&["run", "--name", "web", "--port", "8080", "--label", "team=a", "--", "sh", "-c", &script]);
    eventually(Duration::from_secs(10), "web registered", || {
        c.processes()?.iter().any(|p| p["info"]["name"] == "web").then_some(())
    });
    std::fs::write(&go, "").expect("let web end");
    assert_eq!(web.wait_output(Duration::from_secs(10)).status.code(), Some(3));

    let kv = watched(&c, &["--kind", "kv", "--count", "2"]);
    assert!(kv[0].starts_with("rev ") && kv[0].ends_with("  kv put greeting = hello"), "{kv:?}");
    assert!(kv[1].ends_with("  kv del greeting"), "{kv:?}");

    let web = watched(&c, &["--kind", "process", "--name", "web", "--count", "2"]);
    let registered = regex_like(&web[0], "  process web (process-", ") registered on alpha, port 8080, team=a");
    assert!(registered, "{web:?}");
    assert!(
        web[1].contains("  process web (process-") && web[1].ends_with(") on alpha deregistered, exit status 3"),
        "{web:?}"
    );

    // The resource report between the registration and the rename is hidden by default.
    let servers = watched(&c, &["--kind", "server", "--count", "2"]);
    assert!(servers[0].contains("  server node-1 (server-1) registered at "), "{servers:?}");
    assert!(servers[1].contains("  server alpha (server-1) updated: online"), "{servers:?}");
    let with_reports = watched(&c, &["--kind", "server", "--resources", "--count", "3"]);
    assert!(
        with_reports[1].contains("  server node-1 (server-1) updated: online")
            && with_reports[1].contains("cpu 10% of"),
        "{with_reports:?}"
    );
    assert!(with_reports[2].contains("  server alpha (server-1) updated"), "{with_reports:?}");

    // --json keeps the whole event, one object per line, through the same filters.
    let events = watched(&c, &["--kind", "kv", "--json", "--count", "2"]);
    let events: Vec<serde_json::Value> = events.iter().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(events[0]["type"], "kv_put", "{events:?}");
    assert_eq!(events[0]["data"], serde_json::json!({"key": "greeting", "value": "hello"}), "{events:?}");
    assert!(events[1]["type"] == "kv_deleted" && events[1]["revision"].is_u64(), "{events:?}");
}

/// `line` holds `before`, then digits, then ends with `after`.
fn regex_like(line: &str, before: &str, after: &str) -> bool {
    let Some((_, rest)) = line.split_once(before) else { return false };
    let Some(digits) = rest.strip_suffix(after) else { return false };
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

#[test]
fn http_on_the_binary_port_gets_a_plain_400_naming_the_protocol() {
    let c = one_node("habits-http");
    let mut s = TcpStream::connect(&c.nodes[&1].addr).expect("connect");
    // A safety net for a node that never answers, not a timing assertion.
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: roster\r\n\r\n").expect("send a request");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("the node answers, then closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("binary protocol") && answer.contains("http_listen"), "{answer}");

    // The node still serves everyone else, and said what happened in one line.
    assert_eq!(json(&c.roster(&["status", "--json"]))["leader"], 1);
    let line = eventually(Duration::from_secs(10), "a log line about HTTP", || {
        c.log_of(1).lines().find(|l| l.contains("HTTP request")).map(str::to_string)
    });
    assert!(line.contains("binary protocol") && line.contains("http_listen"), "{line}");
    assert!(!c.log_of(1).contains("max_frame_bytes"), "{}", c.log_of(1));
}

#[test]
fn get_prints_fields_one_per_line_and_tombstones_say_how_members_left() {
    let c = one_node("habits-get");
    eventually(Duration::from_secs(20), "the server registered", || {
        c.roster(&["get", "server:1"]).status.success().then_some(())
    });
    let server = ok(&c.roster(&["get", "server:1"]));
    assert!(server.starts_with("server-1  node-1\n"), "{server}");
    assert!(server.contains("  status      Online\n") && server.contains("  cpu         "), "{server}");
    assert!(!server.contains("ServerEntry") && !server.contains('{'), "no debug dump: {server}");

    assert_eq!(ok(&c.roster(&["tombstones"])).trim(), "no member has left yet");
    let out = c.run_to_end(&["run", "--name", "short", "--", "sh", "-c", "sleep 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let departed = eventually(Duration::from_secs(10), "the tombstone", || {
        let text = ok(&c.roster(&["tombstones"]));
        text.contains("short").then_some(text)
    });
    let line = departed.lines().find(|l| l.contains("short")).expect("a line");
    assert!(line.starts_with("rev ") && line.contains("exit status 0") && line.ends_with("UTC)"), "{line}");
    let as_json = json(&c.roster(&["tombstones", "--json", "--limit", "1"]));
    let departure = &as_json["tombstones"][0]["departure"];
    assert_eq!(departure, &serde_json::json!({ "type": "deregistered", "exit_status": 0 }), "{as_json}");
}
