//! The HTTP/JSON API of a real 3-node cluster, driven with a plain HTTP client as any
//! language would: auth, key/value with compare-and-set, membership, exactly-once
//! sessions, the event stream with its progress lines, health, and the limits.

use roster_tests::{TestCluster, eventually, free_port};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";

struct Http {
    agent: ureq::Agent,
    base: BTreeMap<u64, String>,
}

/// Status and body (JSON when it parses, else a string).
struct Answer {
    status: u16,
    body: Value,
    revision_header: Option<String>,
}

impl Http {
    fn start(tag: &str) -> (TestCluster, Http) {
        let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
        let c = TestCluster::start(tag, 3, |id| vec!["--http-listen".into(), format!("127.0.0.1:{}", ports[&id])]);
        c.wait_leader(Duration::from_secs(20));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let base = ports.iter().map(|(id, p)| (*id, format!("http://127.0.0.1:{p}"))).collect();
        let http = Http { agent, base };
        eventually(Duration::from_secs(20), "3 servers registered", || {
            let servers = http.call("GET", 1, "/v1/servers", None).body["servers"].as_array().map(Vec::len);
            (servers == Some(3)).then_some(())
        });
        (c, http)
    }

    fn url(&self, node: u64, path: &str) -> String {
        format!("{}{path}", self.base[&node])
    }

    fn send(&self, method: &str, node: u64, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
        let request = ureq::http::Request::builder().method(method).uri(self.url(node, path));
        let request = headers.iter().fold(request, |r, (k, v)| r.header(*k, *v));
        let request = request.body(body.unwrap_or_default().to_vec()).expect("request");
        let mut response = self.agent.run(request).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let revision_header =
            response.headers().get("roster-revision").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.body_mut().read_to_string().expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body, revision_header }
    }

    fn call(&self, method: &str, node: u64, path: &str, body: Option<&str>) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        self.send(method, node, path, &[("authorization", &auth)], body.map(str::as_bytes))
    }
}

fn leader_and_follower(c: &TestCluster) -> (u64, u64) {
    let leader = c.leader();
    (leader, (1..=3).find(|id| *id != leader).expect("a follower"))
}

#[test]
fn kv_auth_errors_limits_and_health_over_http() {
    let (c, http) = Http::start("http-kv");
    let (_, follower) = leader_and_follower(&c);

    // Auth: missing is 401, wrong is 403, both JSON errors with a kind.
    let none = http.send("GET", 1, "/v1/status", &[], None);
    assert_eq!((none.status, none.body["error"]["kind"].as_str()), (401, Some("unauthorized")), "{}", none.body);
    let wrong = http.send("GET", 1, "/v1/status", &[("authorization", "Bearer nope")], None);
    assert_eq!((wrong.status, wrong.body["error"]["kind"].as_str()), (403, Some("forbidden")), "{}", wrong.body);

    // A write sent to a follower is forwarded to the leader; every node reads it.
    let put = http.call("PUT", follower, "/v1/kv/app/greeting", Some("hello world"));
    assert_eq!(put.status, 200, "{}", put.body);
    let rev = put.body["revision"].as_u64().expect("revision");
    for node in 1..=3 {
        let got = http.call("GET", node, "/v1/kv/app/greeting", None);
        assert_eq!((got.status, got.body.as_str()), (200, Some("hello world")), "node {node}");
        assert!(got.revision_header.and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| r >= rev));
    }
    let stale = http.call("GET", follower, "/v1/kv/app/greeting?stale", None);
    assert_eq!(stale.status, 200);

    // Compare-and-set: a wrong expectation is 409 with what the key holds.
    let lost = http.call("PUT", 1, "/v1/kv/app/greeting?cas=bye", Some("x"));
    assert_eq!((lost.status, lost.body["error"]["kind"].as_str()), (409, Some("cas_failed")), "{}", lost.body);
    assert_eq!(lost.body["error"]["current"], "hello world");
    let won = http.call("PUT", 2, "/v1/kv/app/greeting?cas=hello%20world", Some("hi"));
    assert_eq!((won.status, won.body["swapped"].as_bool()), (200, Some(true)), "{}", won.body);
    let create = http.call("PUT", 3, "/v1/kv/app/fresh?absent", Some("1"));
    assert_eq!(create.status, 200, "{}", create.body);
    let again = http.call("PUT", 3, "/v1/kv/app/fresh?absent", Some("2"));
    assert_eq!(again.status, 409, "{}", again.body);

    // Range, delete, not found.
    let range = http.call("GET", 1, "/v1/kv?start=app/&end=app0", None);
    let keys: Vec<&str> = range.body["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["app/fresh", "app/greeting"], "{}", range.body);
    assert_eq!(http.call("DELETE", follower, "/v1/kv/app/fresh", None).status, 200);
    let gone = http.call("GET", 1, "/v1/kv/app/fresh", None);
    assert_eq!((gone.status, gone.body["error"]["kind"].as_str()), (404, Some("not_found")), "{}", gone.body);

    // Bad input is named: unknown parameter, non-UTF-8 value, oversized body, no route.
    let typo = http.call("GET", 1, "/v1/kv/a?stlae", None);
    assert_eq!(typo.status, 400);
    assert!(typo.body["error"]["message"].as_str().unwrap().contains("stlae"), "{}", typo.body);
    let auth = format!("Bearer {TOKEN}");
    let binary = http.send("PUT", 1, "/v1/kv/bin", &[("authorization", &auth)], Some(&[0xff, 0xfe]));
    assert!(binary.status == 400 && binary.body["error"]["message"].as_str().unwrap().contains("UTF-8"));
    let huge = vec![b'x'; 2 << 20];
    let too_large = http.send("PUT", 1, "/v1/kv/big", &[("authorization", &auth)], Some(&huge));
    assert_eq!((too_large.status, too_large.body["error"]["kind"].as_str()), (413, Some("too_large")));
    let value_too_large = http.call("PUT", 1, "/v1/kv/big", Some(&"v".repeat(100 << 10)));
    assert_eq!(value_too_large.status, 413, "{}", value_too_large.body);
    assert_eq!(http.call("GET", 1, "/v1/nothing", None).status, 404);
    assert_eq!(http.call("PATCH", 1, "/v1/processes/1", Some("{\"nme\": 1}")).status, 400);
    // An id that is not a number is refused in the same JSON shape as every other error.
    let abc = http.call("GET", 1, "/v1/processes/abc", None);
    assert_eq!((abc.status, abc.body["error"]["kind"].as_str()), (400, Some("bad_request")), "{}", abc.body);
    assert!(abc.body["error"]["message"].as_str().is_some_and(|m| m.contains("abc")), "{}", abc.body);

    // Health needs no token; status shows the leader's view with heartbeat ages.
    for node in 1..=3 {
        assert_eq!(http.send("GET", node, "/livez", &[], None).status, 200);
        let ready = eventually(Duration::from_secs(10), "readyz", || {
            let r = http.send("GET", node, "/readyz", &[], None);
            (r.status == 200).then_some(r)
        });
        assert_eq!(ready.body["ready"], true);
    }
    let status = http.call("GET", follower, "/v1/status", None);
    assert_eq!(status.body["leader"], status.body["node"], "the leader's view: {}", status.body);
    assert_eq!(status.body["servers"].as_array().map(Vec::len), Some(3));
    let local = http.call("GET", follower, "/v1/status?local", None);
    assert_eq!(local.body["node"], follower);

    // Prometheus can scrape every node, without a token; the leader committed the writes.
    let leader = status.body["leader"].as_u64().unwrap();
    let sample = |text: &str, series: &str| -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    for node in 1..=3 {
        let scrape = http.send("GET", node, "/metrics", &[], None);
        let text = scrape.body.as_str().expect("text").to_string();
        assert_eq!(scrape.status, 200);
        assert_eq!(sample(&text, "roster_server_has_leader"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "roster_server_is_leader"), Some(if node == leader { 1.0 } else { 0.0 }));
        assert_eq!(sample(&text, "roster_members_count{kind=\"server\",status=\"online\"}"), Some(3.0), "{text}");
        if node == leader {
            assert!(sample(&text, "roster_server_proposals_committed_total").unwrap() >= 8.0, "{text}");
            assert!(sample(&text, "roster_client_request_duration_seconds_count{op=\"submit\"}").unwrap() >= 8.0);
            assert!(sample(&text, "roster_members_heartbeats_total{result=\"accepted\"}").unwrap() >= 1.0);
            for series in ["roster_disk_wal_fsync_duration_seconds_count", "roster_server_apply_duration_seconds_count"]
            {
                assert!(sample(&text, series).unwrap_or(0.0) >= 8.0, "{series} in {text}");
            }
            // The leader replicates to each follower.
            for to in (1..=3).filter(|id| *id != leader) {
                let rtt = format!("roster_network_peer_round_trip_time_seconds_count{{To=\"{to}\"}}");
                assert!(sample(&text, &rtt).unwrap_or(0.0) >= 1.0, "{rtt} in {text}");
            }
        }
    }
}

#[test]
fn members_sessions_and_events_over_http() {
    let (c, http) = Http::start("http-members");
    let (_, follower) = leader_and_follower(&c);
    let auth = format!("Bearer {TOKEN}");

    // Follow the events from now, as NDJSON, on a follower.
    let start = http.call("GET", follower, "/v1/status?local", None).body["revision"].as_u64().unwrap();
    let request = ureq::http::Request::builder()
        .uri(http.url(follower, &format!("/v1/events?after={start}")))
        .header("authorization", &auth)
        .body(())
        .unwrap();
    let stream = http.agent.run(request).expect("open events");
    assert_eq!(stream.status().as_u16(), 200);
    let mut lines = BufReader::new(stream.into_body().into_reader()).lines();

    // Register, heartbeat, patch, deregister a process.
    let body = json!({ "name": "web", "server": 1, "port": 8080, "labels": { "team": "a" } }).to_string();
    let reg = http.call("POST", follower, "/v1/processes", Some(&body));
    assert_eq!(reg.status, 201, "{}", reg.body);
    let id = reg.body["id"].as_u64().unwrap();
    let beat = http.call("PUT", follower, &format!("/v1/processes/{id}/heartbeat"), None);
    assert_eq!(beat.status, 200, "{}", beat.body);
    let beat =
        http.call("PUT", 1, &format!("/v1/processes/{id}/heartbeat"), Some("{\"cpu_percent\":5,\"mem_bytes\":1000}"));
    assert_eq!(beat.status, 200, "{}", beat.body);
    let patched = http.call("PATCH", 2, &format!("/v1/processes/{id}"), Some("{\"labels\": {\"team\": \"b\"}}"));
    assert_eq!(patched.status, 200, "{}", patched.body);
    let listed = http.call("GET", 3, "/v1/processes?label=team=b&server=1", None);
    assert_eq!(listed.body["processes"][0]["id"], id, "{}", listed.body);
    assert_eq!(http.call("GET", 3, "/v1/processes?label=team=a", None).body["processes"], json!([]));
    assert_eq!(http.call("GET", 3, &format!("/v1/processes/{id}"), None).body["process"]["info"]["name"], "web");
    assert_eq!(http.call("GET", 3, "/v1/servers/1", None).body["server"]["id"], 1);
    assert_eq!(http.call("GET", 3, "/v1/servers", None).body["servers"].as_array().map(Vec::len), Some(3));
    let left = http.call("DELETE", follower, &format!("/v1/processes/{id}?exit=3"), None);
    assert_eq!(left.status, 200, "{}", left.body);
    let unknown = http.call("PUT", follower, &format!("/v1/processes/{id}/heartbeat"), None);
    assert_eq!((unknown.status, unknown.body["error"]["kind"].as_str()), (404, Some("unknown_member")));
    let tombstones = http.call("GET", 2, "/v1/tombstones", None);
    let departure = &tombstones.body["tombstones"][0]["departure"];
    assert_eq!(departure, &json!({ "type": "deregistered", "exit_status": 3 }), "{}", tombstones.body);

    // The stream showed each change in order, with a readable line.
    let mut seen = Vec::new();
    let mut resource_reports = Vec::new();
    while seen.len() < 3 {
        let line: Value = serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON line");
        if line.get("progress").is_some() || line["type"] == "server_updated" {
            continue;
        }
        // The heartbeat's resources, recorded by the leader: an update of those alone.
        if line["type"] == "process_updated" && line["data"]["info"]["labels"]["team"] == "a" {
            resource_reports.push(line["data"]["resources"].clone());
            continue;
        }
        assert!(line["revision"].as_u64().unwrap() > start);
        seen.push((line["type"].as_str().unwrap().to_string(), line["text"].as_str().unwrap().to_string()));
    }
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, vec!["process_registered", "process_updated", "departed"], "{seen:?}");
    assert_eq!(resource_reports, vec![json!({ "cpu_percent_avg": 5, "mem_bytes_used_avg": 1000 })], "{seen:?}");
    assert!(seen[0].1.contains("web") && seen[0].1.contains("8080"), "{seen:?}");
    // Idle, the stream says how far it is current.
    let progress = loop {
        let line: Value = serde_json::from_str(&lines.next().expect("a line").expect("read")).unwrap();
        if let Some(p) = line.get("progress") {
            break p["revision"].as_u64().unwrap();
        }
    };
    assert!(progress >= left.body["revision"].as_u64().unwrap());

    // Exactly once with a session: the same (session, seq) twice registers one process.
    let session = http.call("POST", follower, "/v1/sessions", None).body["session"].as_u64().expect("session");
    let (s, one) = (session.to_string(), "1".to_string());
    let headers = [("authorization", auth.as_str()), ("roster-session", s.as_str()), ("roster-seq", one.as_str())];
    let body = json!({ "name": "once", "server": 2 }).to_string();
    let first = http.send("POST", follower, "/v1/processes", &headers, Some(body.as_bytes()));
    let repeat = http.send("POST", 1, "/v1/processes", &headers, Some(body.as_bytes()));
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body, repeat.body, "a repeat answers the stored reply");
    let once = http.call("GET", 1, "/v1/processes?server=2", None).body["processes"].clone();
    assert_eq!(once.as_array().unwrap().iter().filter(|p| p["info"]["name"] == "once").count(), 1, "{once}");
    let skip = [("authorization", auth.as_str()), ("roster-session", s.as_str()), ("roster-seq", "5")];
    let gap = http.send("DELETE", 1, "/v1/kv/x", &skip, None);
    assert_eq!((gap.status, gap.body["error"]["kind"].as_str()), (409, Some("sequence_gap")), "{}", gap.body);

    // A session is its opener's: another credential (an admin too) can neither use nor
    // close it, and sees nothing of it; its owner closes it, and a retry on it after that
    // is told the command may have applied.
    let other = http.call("POST", 1, "/v1/tokens", Some(r#"{"role":"admin","name":"other"}"#));
    assert_eq!(other.status, 201, "{}", other.body);
    let other = format!("Bearer {}", other.body["secret"].as_str().expect("secret"));
    let two = "2".to_string();
    let theirs = [("authorization", other.as_str()), ("roster-session", s.as_str()), ("roster-seq", one.as_str())];
    let stolen = http.send("POST", follower, "/v1/processes", &theirs, Some(body.as_bytes()));
    assert_eq!(
        (stolen.status, stolen.body["error"]["kind"].as_str()),
        (403, Some("not_your_session")),
        "{}",
        stolen.body
    );
    assert!(stolen.body.get("id").is_none(), "the stored reply is not shown: {}", stolen.body);
    let close = format!("/v1/sessions/{session}");
    let refused = http.send("DELETE", 1, &close, &[("authorization", other.as_str())], None);
    assert_eq!((refused.status, refused.body["error"]["kind"].as_str()), (403, Some("not_your_session")));
    let mine = [("authorization", auth.as_str()), ("roster-session", s.as_str()), ("roster-seq", two.as_str())];
    assert_eq!(http.send("PUT", 1, "/v1/kv/owned", &mine, Some(b"yes")).status, 200, "the owner goes on");
    let closed = http.call("DELETE", follower, &close, None);
    assert!(closed.status == 200 && closed.body["revision"].as_u64().is_some(), "{}", closed.body);
    let after = http.send("PUT", 1, "/v1/kv/owned", &mine, Some(b"yes"));
    assert_eq!((after.status, after.body["error"]["kind"].as_str()), (504, Some("ambiguous")), "{}", after.body);

    // A watch from a revision that is not yet compacted works from the start; the
    // stream's errors are JSON like the rest.
    let bad = http.call("GET", 1, "/v1/events?after=x", None);
    assert_eq!(bad.status, 400);
}
