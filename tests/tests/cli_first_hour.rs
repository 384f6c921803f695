//! The CLI habits a first hour with Roster expects (issue 21): ids read back as they
//! print, members by name, values from stdin or a file, `kv ls`, `member list`, exit
//! statuses a readiness script can trust (`status`, `health`), a watch that outlives an
//! outage and ends with its reader, secret files of mode 0600, and JSON HTTP errors.

use roster_tests::{TestCluster, eventually, json, ok};
use std::io::{BufRead, BufReader, Write};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn one_node(tag: &str) -> TestCluster {
    let c = TestCluster::start(tag, 1, |_| ["--probe", "fixed:cpu=10,mem=1000000"].map(String::from).to_vec());
    c.wait_leader(Duration::from_secs(20));
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {}", stderr(out));
    stderr(out)
}

/// `roster run --name NAME -- sleep 600` in the background, once registered: its id.
fn member(c: &TestCluster, name: &str) -> (roster_tests::ChildGuard, u64) {
    let child = c.spawn_client(&["run", "--name", name, "--", "sleep", "600"]);
    let registered = eventually(Duration::from_secs(10), &format!("{name} registered"), || {
        let all = c.processes()?;
        let mine: Vec<u64> =
            all.iter().filter(|p| p["info"]["name"] == name).filter_map(|p| p["id"].as_u64()).collect();
        mine.into_iter().max()
    });
    (child, registered)
}

#[test]
fn ids_read_back_as_they_print_and_members_are_found_by_name() {
    let c = one_node("first-ids");
    let (_api, api) = member(&c, "api");
    let (_web_a, web_a) = member(&c, "web");
    let (_web_b, web_b) = member(&c, "web");

    // `ls` prints ids as the event lines do; each spelling reads back.
    let ls = ok(&c.roster(&["ls", "--kind", "processes"]));
    let printed = format!("process-{api}");
    assert!(ls.lines().any(|l| l.starts_with(&printed) && l.contains(" api ")), "{ls}");
    let by_dash = ok(&c.roster(&["get", &printed]));
    assert!(by_dash.starts_with(&format!("process-{api}  api\n")), "{by_dash}");
    assert_eq!(ok(&c.roster(&["get", &format!("process:{api}")])), by_dash);
    assert_eq!(ok(&c.roster(&["get", "api"])), by_dash, "by name");
    assert!(ok(&c.roster(&["get", "node-1"])).starts_with("server-1  node-1\n"));

    // A name two members share is refused, naming both; it is never guessed.
    let shared = failed(&c.roster(&["get", "web"]));
    assert!(shared.contains(&format!("process-{web_a}")) && shared.contains(&format!("process-{web_b}")), "{shared}");
    assert!(shared.contains("give the id"), "{shared}");
    let none = failed(&c.roster(&["get", "nosuch"]));
    assert!(none.contains("\"nosuch\"") && none.contains("process-ID"), "{none}");
    let bad = failed(&c.roster(&["get", "process-x"]));
    assert!(bad.contains("\"process-x\""), "{bad}");

    // Writes take a name too.
    ok(&c.roster(&["put", "api", "--label", "tier=front"]));
    let labelled = json(&c.roster(&["get", &format!("process-{api}"), "--json"]));
    assert_eq!(labelled["process"]["info"]["labels"]["tier"], "front", "{labelled}");
}

#[test]
fn kv_takes_values_from_stdin_or_a_file_and_lists_by_prefix() {
    let c = one_node("first-kv");
    // Over the ~128 KiB a single argument may hold would not even start; 60 KiB of text
    // from stdin is under the cluster's 64 KiB limit.
    let big = "x".repeat(60 << 10);
    let mut put =
        c.command(&["kv", "put", "app/big", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    put.stdin.take().expect("stdin").write_all(big.as_bytes()).expect("write stdin");
    let out = put.wait_with_output().expect("kv put -");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ok(&c.roster(&["kv", "get", "app/big"])).trim_end(), big);

    let file = c.dir.0.join("value.txt");
    std::fs::write(&file, "from a file").expect("write value file");
    ok(&c.roster(&["kv", "put", "app/file", "--file", file.to_str().expect("utf-8")]));
    assert_eq!(ok(&c.roster(&["kv", "get", "app/file"])).trim(), "from a file");
    // Over the cluster's limit: refused by the cluster, naming it.
    std::fs::write(&file, "y".repeat(100 << 10)).expect("write value file");
    let refused = failed(&c.roster(&["kv", "put", "app/huge", "--file", file.to_str().expect("utf-8")]));
    assert!(refused.contains("65536") || refused.contains("64 KiB"), "{refused}");
    std::fs::write(&file, b"\xff\xfe").expect("write value file");
    assert!(failed(&c.roster(&["kv", "put", "k", "--file", file.to_str().expect("utf-8")])).contains("UTF-8"));

    ok(&c.roster(&["kv", "put", "apples", "1"]));
    ok(&c.roster(&["kv", "put", "b", "2"]));
    let keys = ok(&c.roster(&["kv", "ls", "app/", "--keys-only"]));
    assert_eq!(keys.lines().collect::<Vec<_>>(), ["app/big", "app/file"], "only the prefix, in order");
    let all = ok(&c.roster(&["kv", "ls", "--keys-only"]));
    assert_eq!(all.lines().collect::<Vec<_>>(), ["app/big", "app/file", "apples", "b"]);
    let lines = ok(&c.roster(&["kv", "ls", "b"]));
    assert_eq!(lines.trim(), "b = 2");
    let as_json = json(&c.roster(&["kv", "ls", "app", "--limit", "2", "--json"]));
    let items = as_json["items"].as_array().expect("items");
    assert_eq!((items.len(), &items[1]["key"]), (2, &serde_json::json!("app/file")), "{as_json}");
    assert!(as_json["revision"].is_u64(), "{as_json}");
    // The limit cut the listing short: `next` says where the rest starts.
    assert_eq!(as_json["next"], "apples", "{as_json}");
}

#[test]
fn member_list_names_each_raft_member_and_the_leader() {
    let c = one_node("first-members");
    let list = json(&c.roster(&["member", "list", "--json"]));
    assert_eq!(list, serde_json::json!([{ "id": 1, "addr": c.nodes[&1].addr, "role": "voter", "leader": true }]));
    let text = ok(&c.roster(&["member", "list"]));
    let row = text.lines().nth(1).expect("a row");
    assert!(row.starts_with("1 ") && row.contains(&c.nodes[&1].addr) && row.contains("voter") && row.ends_with("yes"));
}

#[test]
fn status_and_health_exit_1_when_there_is_no_leader() {
    let mut c = TestCluster::start("first-health", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let healthy = ok(&c.roster(&["health"]));
    assert_eq!(healthy.lines().filter(|l| l.contains(" is healthy: took ")).count(), 3, "{healthy}");
    let as_json = json(&c.roster(&["health", "--json"]));
    assert!(as_json.as_array().expect("list").iter().all(|e| e["health"] == true && e["error"].is_null()));

    let leader = c.leader();
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    c.kill9(others[0]);
    // One node down: health names it, says why, and fails; status still has a leader.
    let out = c.roster(&["health", "--timeout-ms", "2000"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let down = text.lines().find(|l| l.starts_with(&c.nodes[&others[0]].addr)).expect("a line for the dead node");
    assert!(down.contains(" is unhealthy: took ") && down.contains("error: "), "{down}");
    assert_eq!(text.lines().filter(|l| l.contains(" is healthy")).count(), 2, "{text}");
    ok(&c.roster(&["status"]));

    // No quorum: the survivor (a follower: openraft's leader keeps naming itself until a
    // newer term reaches it) soon knows no leader; status prints it and exits 1.
    c.kill9(leader);
    let survivor = c.endpoints_of(&[others[1]]);
    let out = eventually(Duration::from_secs(20), "the survivor to know no leader", || {
        let out = c.roster_at(&survivor, &["status", "--json", "--timeout-ms", "2000"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        s["leader"].is_null().then_some(out)
    });
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no leader"), "{}", stderr(&out));
    let health = c.roster_at(&survivor, &["health", "--timeout-ms", "2000"]);
    assert_eq!(health.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&health.stdout).contains("knows no leader"), "{health:?}");
}

#[test]
fn watch_outlives_an_outage_and_resumes_after_its_last_revision() {
    let mut c = one_node("first-watch-outage");
    let mut watch = c.spawn_client(&["watch", "--kind", "kv", "--count", "2", "--timeout-ms", "2000"]);
    let mut stdout = BufReader::new(watch.child().stdout.take().expect("stdout"));
    // Put until one shows: the watch is open (a put before it opened would not show).
    let first = eventually(Duration::from_secs(20), "the watch to show a put", || {
        ok(&c.roster(&["kv", "put", "before", "1"]));
        let mut line = String::new();
        stdout.read_line(&mut line).ok()?;
        (!line.is_empty()).then_some(line)
    });
    assert!(first.trim_end().ends_with("kv put before = 1"), "{first}");
    c.kill9(1);
    // Well past the request timeout (2 s), at which the watch used to give up.
    std::thread::sleep(Duration::from_secs(5));
    c.spawn(1);
    c.wait_leader(Duration::from_secs(20));
    let put = c.roster(&["kv", "put", "after", "2"]);
    assert!(put.status.success(), "{}\n{}", stderr(&put), c.logs());
    let mut second = String::new();
    stdout.read_line(&mut second).expect("the second line");
    assert!(second.trim_end().ends_with("kv put after = 2"), "{second}");
    let out = watch.wait_output(Duration::from_secs(10));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("retrying from revision"), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed after revision"), "{}", stderr(&out));

    // --outage-timeout-s bounds the wait.
    let mut bounded =
        c.spawn_client(&["watch", "--kind", "kv", "--after", "0", "--outage-timeout-s", "1", "--timeout-ms", "1000"]);
    let mut line = String::new();
    // Kept open to the end: a watch whose reader is gone ends at once, with status 0.
    let mut bounded_out = BufReader::new(bounded.child().stdout.take().expect("stdout"));
    bounded_out.read_line(&mut line).expect("the first put");
    assert!(line.trim_end().ends_with("kv put before = 1"), "{line}");
    c.kill9(1);
    let out = bounded.wait_output(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--outage-timeout-s"), "{}", stderr(&out));
    drop(bounded_out);
}

#[test]
fn watch_ends_as_soon_as_its_reader_is_gone() {
    let c = one_node("first-watch-pipe");
    let mut watch = c.spawn_client(&["watch", "--kind", "kv"]);
    let stdout = watch.child().stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    ok(&c.roster(&["kv", "put", "one", "1"]));
    let mut line = String::new();
    reader.read_line(&mut line).expect("one line");
    assert!(line.trim_end().ends_with("kv put one = 1"), "{line}");
    // The reader goes away (as `head -1` does) and no event follows: the watch ends anyway.
    drop(reader);
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = watch.child().try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = exited.unwrap_or_else(|| panic!("watch still runs with nobody reading: {}", watch.kill_and_output()));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_new_key_file_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = roster_tests::TempDir::new("first-new-key");
    let path = dir.0.join("token");
    let out = std::process::Command::new(roster_tests::roster_bin())
        .args(["token", "new-key", "--out"])
        .arg(&path)
        .output()
        .expect("run roster");
    ok(&out);
    let mode = std::fs::metadata(&path).expect("the key file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&path).expect("read").trim().len() >= 32);
    let again = std::process::Command::new(roster_tests::roster_bin())
        .args(["token", "new-key", "--out"])
        .arg(&path)
        .output()
        .expect("run roster");
    assert!(failed(&again).contains("never overwritten"), "{}", stderr(&again));
}
