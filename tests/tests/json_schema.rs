//! One JSON schema (issue 21): the CLI's `--json` and the HTTP API give the same JSON
//! value for the same read of a real cluster — status, ls, get, tombstones, kv, watch and
//! errors — and neither leaks a Rust enum's shape. docs/json.md documents it.
//!
//! Two reads are compared once both were made at one revision (the cluster's state did
//! not change between them); only what legitimately differs between two moments is left
//! out: heartbeat ages, and the Raft indexes that entries changing no state move.

use roster_tests::{TestCluster, eventually, free_port};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Output;
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";

struct Both {
    c: TestCluster,
    http: BTreeMap<u64, u16>,
    agent: ureq::Agent,
}

impl Both {
    fn start() -> Both {
        let http: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
        let ports = http.clone();
        // Fixed resources and a long heartbeat timeout: the state stands still between
        // reads, so two reads meet at one revision; processes registered over HTTP stay.
        let c = TestCluster::start("json-schema", 3, move |id| {
            let listen = format!("127.0.0.1:{}", ports[&id]);
            let probe = "fixed:cpu=10,mem=1000000";
            ["--probe", probe, "--heartbeat-timeout-ms", "600000", "--http-listen", &listen].map(String::from).to_vec()
        });
        c.wait_leader(Duration::from_secs(20));
        c.wait_resources(3, Duration::from_secs(20));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Both { c, http, agent }
    }

    /// `roster ARGS --json` against every node: exit code and stdout as JSON.
    fn cli(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let out: Output = self.c.roster(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "roster {args:?} --json printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    /// An HTTP request to node 1 (a follower or the leader: it finds the leader itself).
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.http[&1]))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "application/json")
            .body(body.unwrap_or_default().as_bytes().to_vec())
            .expect("request");
        let mut response = self.agent.run(request).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}")))
    }

    /// The CLI's and HTTP's answers to one read, made at one revision (retried while
    /// something changed the state between them), each with its exit code or status.
    fn at_one_revision(&self, args: &[&str], path: &str) -> ((i32, Value), (u16, Value)) {
        eventually(Duration::from_secs(20), &format!("{args:?} and GET {path} at one revision"), || {
            let cli = self.cli(args);
            let http = self.http("GET", path, None);
            (revision(&cli.1).is_some() && revision(&cli.1) == revision(&http.1)).then_some((cli, http))
        })
    }

    /// Asserts that `roster ARGS --json` and `GET PATH` answer the same JSON value.
    fn agree(&self, args: &[&str], path: &str) -> Value {
        let ((code, cli), (status, http)) = self.at_one_revision(args, path);
        assert_eq!((code, status), (0, 200), "roster {args:?}: {cli}\nGET {path}: {http}");
        assert_eq!(cli, http, "roster {args:?} --json and GET {path} differ");
        no_rust_shapes(&cli);
        cli
    }
}

/// An object's keys, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// The revision a read was made at (an error carries it too).
fn revision(v: &Value) -> Option<u64> {
    v["revision"].as_u64().or_else(|| v["error"]["revision"].as_u64())
}

/// No key or string that is a Rust variant's name (`Online`, `Done`, `Process`, ...):
/// every key is snake_case, and an enum is a `type` in snake_case.
fn no_rust_shapes(v: &Value) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                // Label keys are the user's; everything else is ours.
                if k != "labels" {
                    assert!(
                        k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                        "key {k:?} in {v}"
                    );
                    no_rust_shapes(inner);
                }
            }
            for word in ["status", "type"] {
                if let Some(s) = map.get(word).and_then(Value::as_str) {
                    assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{word} {s:?} in {v}");
                }
            }
        }
        Value::Array(items) => items.iter().for_each(no_rust_shapes),
        Value::String(s) => {
            assert!(!matches!(s.as_str(), "Online" | "Draining" | "Deleted"), "a Rust variant {s:?}");
        }
        _ => {}
    }
}

/// The status without what differs between two moments: heartbeat ages, and the Raft
/// indexes (a leader's no-op entry moves them without a revision).
fn settled_status(mut s: Value) -> Value {
    let map = s.as_object_mut().expect("status is an object");
    map.remove("commit_index");
    map.remove("applied_index");
    for server in map.get_mut("servers").and_then(Value::as_array_mut).expect("servers") {
        let age = server.as_object_mut().expect("server").remove("heartbeat_age_ms");
        assert!(age.is_some(), "status lists each server's heartbeat age: {server}");
    }
    s
}

/// The event lines `GET /v1/events?after=AFTER` sends up to revision `through`.
fn http_events(both: &Both, after: u64, through: u64) -> Vec<Value> {
    let request = ureq::http::Request::builder()
        .uri(format!("http://127.0.0.1:{}/v1/events?after={after}", both.http[&1]))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(())
        .expect("request");
    let mut response = both.agent.run(request).expect("GET /v1/events");
    assert_eq!(response.status().as_u16(), 200);
    let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
    let mut events = Vec::new();
    while events.last().and_then(|e: &Value| e["revision"].as_u64()).is_none_or(|r| r < through) {
        let line = lines.next().expect("the stream ended early").expect("a line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v.get("progress").is_none() {
            events.push(v);
        }
    }
    events
}

/// `roster watch --json ARGS --after AFTER --count COUNT`: its lines.
fn cli_events(both: &Both, after: u64, count: usize, args: &[&str]) -> Vec<Value> {
    let (after, count) = (after.to_string(), count.to_string());
    let mut all = vec!["watch", "--json", "--after", &after, "--count", &count, "--timeout-ms", "20000"];
    all.extend_from_slice(args);
    let out = both.c.roster(&all);
    assert!(out.status.success(), "watch: {}", String::from_utf8_lossy(&out.stderr));
    roster_tests::watch_events(&out.stdout)
}

#[test]
fn the_cli_and_http_print_the_same_json_for_every_read() {
    let both = Both::start();
    let start = both.cli(&["status"]).1["revision"].as_u64().expect("revision");

    // Writes from both sides answer the same shape: the reply's fields alone.
    let (_, put) = both.cli(&["kv", "put", "app/a", "1"]);
    let (code, put_http) = both.http("PUT", "/v1/kv/app/b", Some("2"));
    assert_eq!(code, 200, "{put_http}");
    assert!(keys(&put) == ["revision"] && put["revision"].is_u64(), "{put}");
    assert_eq!(keys(&put_http), ["revision"], "{put_http}");
    both.cli(&["kv", "put", "app/c", "3"]);
    let (_, deleted) = both.cli(&["kv", "del", "app/c"]);
    assert_eq!(keys(&deleted), ["revision"], "{deleted}");

    // Keys and values.
    let value = both.agree(&["kv", "get", "app/a"], "/v1/kv/app/a");
    assert_eq!(value["value"], "1");
    let listed = both.agree(&["kv", "ls", "app/"], "/v1/kv?start=app/&end=app0");
    assert_eq!(listed["items"], json!([{ "key": "app/a", "value": "1" }, { "key": "app/b", "value": "2" }]));
    let page = both.agree(&["kv", "ls", "app/", "--limit", "1"], "/v1/kv?start=app/&end=app0&limit=1");
    assert_eq!(page["next"], "app/b", "{page}");
    // An absent key is the same error from both: the CLI exits 1, HTTP answers 404.
    let ((code, cli), (status, http)) = both.at_one_revision(&["kv", "get", "nosuch"], "/v1/kv/nosuch");
    assert_eq!((code, status), (1, 404));
    assert_eq!(cli, http, "the absent key's error");
    assert_eq!(cli["error"]["kind"], "not_found");

    // Members: two processes registered over HTTP, one of them with labels and a port.
    let register = |name: &str, extra: &str| {
        let body = format!(r#"{{"name": "{name}", "server": 2{extra}}}"#);
        let (code, reply) = both.http("POST", "/v1/processes", Some(&body));
        assert_eq!(code, 201, "{reply}");
        assert_eq!(keys(&reply), ["id", "revision"], "{reply}");
        reply["id"].as_u64().expect("id")
    };
    let web = register("web", r#", "port": 8080, "labels": {"tier": "front"}"#);
    let batch = register("batch", "");
    let leaving = register("leaving", "");

    let servers = both.agree(&["ls", "--kind", "servers"], "/v1/servers");
    assert_eq!(servers["servers"].as_array().map(Vec::len), Some(3), "{servers}");
    assert_eq!(servers["servers"][1]["info"]["name"], "node-2", "{servers}");
    assert_eq!(servers["servers"][1]["status"], "online", "the filters' word");
    let processes = both.agree(&["ls", "--kind", "processes"], "/v1/processes");
    assert_eq!(processes["processes"].as_array().map(Vec::len), Some(3), "{processes}");
    assert_eq!(processes["next"], Value::Null);
    both.agree(&["ls", "--kind", "processes", "--status", "online"], "/v1/processes?status=online");
    both.agree(&["ls", "--kind", "processes", "--label", "tier=front"], "/v1/processes?label=tier=front");
    // Both lists at once hold what each page holds, at the same paths.
    let ((_, all), _) = both.at_one_revision(&["ls"], "/v1/processes");
    assert_eq!(all["servers"], servers["servers"], "a server is the same object in ls and ls --kind");
    assert_eq!(all["processes"], processes["processes"]);

    let server = both.agree(&["get", "server-2"], "/v1/servers/2");
    assert_eq!(server["server"], servers["servers"][1], "get's server is ls's");
    let process = both.agree(&["get", "web"], &format!("/v1/processes/{web}"));
    assert_eq!(process["process"]["info"]["labels"], json!({ "tier": "front" }));
    assert_eq!(process["process"]["info"]["service_port"], 8080);
    // A member that is not there: the same kind and revision (the wording may differ).
    let ((code, cli), (status, http)) = both.at_one_revision(&["get", "process-999"], "/v1/processes/999");
    assert_eq!((code, status), (1, 404));
    assert_eq!((&cli["error"]["kind"], revision(&cli)), (&http["error"]["kind"], revision(&http)), "{cli} {http}");
    assert_eq!(cli["error"]["kind"], "not_found");

    // Status: a server has the same shape, at the same path, as in ls.
    let ((code, cli), (status, _)) = both.at_one_revision(&["status"], "/v1/status");
    assert_eq!((code, status), (0, 200));
    no_rust_shapes(&cli);
    let listed_server = &servers["servers"][1];
    let status_server = cli["servers"].as_array().unwrap().iter().find(|s| s["id"] == 2).expect("server 2").clone();
    assert_eq!(status_server["info"]["name"], listed_server["info"]["name"]);
    assert_eq!(settled_status(cli.clone())["servers"][1], *listed_server, "status's server is ls's");
    assert_eq!(cli["processes"], json!({ "total": 3, "online": 3, "draining": 0 }), "{cli}");
    assert!(cli["voters"].as_array().unwrap().iter().all(|v| v["id"].is_u64() && v["addr"].is_string()), "{cli}");
    // Both name the same node when they ask the same one.
    let leader = cli["leader"].as_u64().expect("leader");
    let leader_addr = both.c.nodes[&leader].addr.clone();
    let leader_http = both.http[&leader];
    eventually(Duration::from_secs(20), "status from the leader, at one revision", || {
        let (_, cli) = {
            let out = both.c.roster_at(&leader_addr, &["status", "--json"]);
            (out.status.code(), serde_json::from_slice::<Value>(&out.stdout).ok()?)
        };
        let mut response = both
            .agent
            .get(format!("http://127.0.0.1:{leader_http}/v1/status"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .call()
            .ok()?;
        let http: Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
        (cli["revision"] == http["revision"]).then(|| {
            assert_eq!(settled_status(cli), settled_status(http), "status from the CLI and HTTP");
        })
    });

    // Tombstones: one deregistered with its exit status (HTTP), one deleted (CLI).
    let (code, gone) = both.http("DELETE", &format!("/v1/processes/{batch}?exit=3"), None);
    assert_eq!(code, 200, "{gone}");
    let (_, deleted) = both.cli(&["del", &format!("process-{leaving}")]);
    assert!(deleted["revision"].is_u64(), "{deleted}");
    let tombstones = both.agree(&["tombstones", "--limit", "20"], "/v1/tombstones?limit=20");
    let departures: Vec<(&Value, &Value, &Value)> = tombstones["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (&t["member"]["type"], &t["member"]["info"]["name"], &t["departure"]))
        .collect();
    assert_eq!(
        departures,
        [
            (&json!("process"), &json!("leaving"), &json!({ "type": "deleted" })),
            (&json!("process"), &json!("batch"), &json!({ "type": "deregistered", "exit_status": 3 })),
        ],
        "{tombstones}"
    );

    // Watch: every event since the start, as HTTP streams it. The CLI leaves out the
    // credentials' events (each registration minted no token here, but be exact).
    let end = both.cli(&["status"]).1["revision"].as_u64().expect("revision");
    let streamed = http_events(&both, start, end);
    let shown: Vec<Value> = streamed
        .iter()
        .filter(|e| !matches!(e["type"].as_str(), Some("token_created" | "token_revoked" | "audit")))
        .cloned()
        .collect();
    let watched = cli_events(&both, start, shown.len(), &["--resources"]);
    assert_eq!(watched, shown, "roster watch --json and GET /v1/events differ");
    for e in &watched {
        no_rust_shapes(e);
        assert_eq!(keys(e), ["data", "revision", "text", "type"], "{e}");
    }
    let types: Vec<&str> = watched.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in ["kv_put", "kv_deleted", "process_registered", "departed"] {
        assert!(types.contains(&t), "no {t} event among {types:?}");
    }
    // The departure event's data is the tombstone as listed.
    let departed = watched.iter().rfind(|e| e["type"] == "departed").expect("a departure");
    assert_eq!(departed["data"], tombstones["tombstones"][0], "{departed}");
    // A refused launch is the same error from both (no program is allowed here).
    // (`--json` before `--`: after it, everything is the program's command line.)
    let out = both.c.run_to_end(&["launch", "--name", "nope", "--json", "--", "/bin/true"]);
    let cli: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("launch --json printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let code = out.status.code().unwrap_or(-1);
    let (status, http) = both.http("POST", "/v1/launch", Some(r#"{"name": "nope", "program": "/bin/true"}"#));
    assert_eq!(code, 1, "{cli}");
    assert!(status >= 400, "{http}");
    assert_eq!(cli["error"]["kind"], http["error"]["kind"], "{cli} {http}");
    assert_eq!(keys(&cli["error"]), keys(&http["error"]), "{cli} {http}");

    // Through a filter, the CLI's lines are HTTP's lines of that kind.
    let kv: Vec<Value> =
        shown.iter().filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("kv_"))).cloned().collect();
    assert_eq!(cli_events(&both, start, kv.len(), &["--kind", "kv"]), kv);
}
