//! No answer can exceed a frame (4 MiB): a watch behind a burst of large values still
//! streams, and `status`, `ls` and the HTTP lists answer whatever the record holds, page
//! by page: 100,000 processes (about 45 MB of `ls --json`), and 200 processes of about
//! 33 KiB of labels each (6.6 MB, which one answer could not carry).

use roster_tests::{ChildGuard, TestCluster, eventually, free_port, json, ok, watch_events};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";
const BURST: usize = 200;
const VALUE_BYTES: usize = 64 * 1024;

/// One node with the HTTP API on; returns it and the HTTP base URL.
fn one_node(tag: &str) -> (TestCluster, String) {
    let port = free_port();
    let c = TestCluster::start(tag, 1, |_| {
        // Processes registered over HTTP here never heartbeat: a long timeout keeps them.
        ["--probe", "fixed:cpu=10,mem=1000000", "--heartbeat-timeout-ms", "600000", "--http-listen"]
            .map(String::from)
            .into_iter()
            .chain([format!("127.0.0.1:{port}")])
            .collect()
    });
    c.wait_leader(Duration::from_secs(20));
    (c, format!("http://127.0.0.1:{port}"))
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let mut response = agent
        .get(url)
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Runs `roster ARGS` from `BURST` processes at once; each must succeed.
fn burst(c: &TestCluster, args: impl Fn(usize) -> Vec<String>) {
    let children: Vec<_> = (0..BURST)
        .map(|i| {
            let args = args(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn roster")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "put {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_watch_survives_a_burst_of_large_values_and_sees_the_marker_after_it() {
    let (c, base) = one_node("fit-watch");
    let before = json(&c.roster(&["status", "--json"]))["revision"].as_u64().expect("revision");
    let count = (BURST + 1).to_string();
    let timeout = ["--timeout-ms", "30000"];
    // One watcher that runs through the burst, one started behind it.
    // Their output (13 MB each) goes to files: a pipe nobody reads would stall them.
    let watch = |name: &str, args: &[&str]| {
        let path = c.dir.0.join(name);
        let file = std::fs::File::create(&path).expect("create output file");
        let child = c.command(args).stdin(Stdio::null()).stdout(file).stderr(Stdio::piped()).spawn().expect("spawn");
        (ChildGuard(Some(child)), path)
    };
    let mut early =
        watch("early.out", &[&["watch", "--json", "--kind", "kv", "--count", &count][..], &timeout].concat());
    std::thread::sleep(Duration::from_millis(500));
    let value = "v".repeat(VALUE_BYTES);
    // A generous deadline: 200 clients at once load a small machine, and the test is
    // about the watches, not about how fast the puts go.
    burst(&c, |i| {
        vec!["kv".into(), "put".into(), format!("big-{i:03}"), value.clone(), "--timeout-ms".into(), "30000".into()]
    });
    let after = before.to_string();
    let mut late = watch(
        "late.out",
        &[&["watch", "--json", "--kind", "kv", "--after", &after, "--count", &count][..], &timeout].concat(),
    );
    ok(&c.roster(&["kv", "put", "marker", "after-the-burst"]));

    for (who, (child, path)) in [("running", &mut early), ("late", &mut late)] {
        let out = child.wait_output(Duration::from_secs(60));
        assert!(out.status.success(), "{who} watch: {}", String::from_utf8_lossy(&out.stderr));
        let events = watch_events(&std::fs::read(&*path).expect("watch output"));
        assert_eq!(events.len(), BURST + 1, "{who} watch saw {} events", events.len());
        let keys: std::collections::BTreeSet<String> =
            events[..BURST].iter().map(|e| e["data"]["key"].as_str().expect("a put").to_string()).collect();
        assert_eq!(keys.len(), BURST, "{who} watch: every put once");
        let last = &events[BURST]["data"];
        assert_eq!(last["key"], "marker", "{who} watch ends with the marker: {last}");
        assert_eq!(last["value"], "after-the-burst");
    }

    // The 13 MB of values list in pages over HTTP, each under a frame.
    let agent = roster_tests::http_agent();
    let mut keys = Vec::new();
    let mut start = "big-".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = get(&agent, &format!("{base}/v1/kv?start={start}&end=big.&limit=10000"));
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for item in page["items"].as_array().expect("items") {
            assert_eq!(item["value"].as_str().map(str::len), Some(VALUE_BYTES));
            keys.push(item["key"].as_str().expect("key").to_string());
        }
        match page["next"].as_str() {
            Some(next) => start = next.to_string(),
            None => break,
        }
    }
    assert_eq!(keys, (0..BURST).map(|i| format!("big-{i:03}")).collect::<Vec<_>>());
    assert!(pages >= 13, "{pages} pages for 13 MB");
}

/// Pages `/v1/processes` at `limit=10000`; returns the ids in order and the page count.
fn process_pages(agent: &ureq::Agent, base: &str) -> (Vec<u64>, usize) {
    let mut ids = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (code, page) = get(agent, &format!("{base}/v1/processes?limit=10000{after}"));
        assert_eq!(code, 200, "{page}");
        pages += 1;
        ids.extend(page["processes"].as_array().expect("processes").iter().map(|p| p["id"].as_u64().expect("id")));
        match page["next"].as_u64() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, each once");
    (ids, pages)
}

#[test]
fn status_ls_and_http_status_answer_with_a_hundred_thousand_processes() {
    const MEMBERS: usize = 100_000;
    let (c, base) = one_node("fit-100k");
    // The bench registers them over 64 sessions; an interval longer than the run means
    // none of them beats, and the node's 600 s timeout keeps them all.
    let bench = ok(&c.roster(&[
        "bench",
        "heartbeats",
        "--members",
        &MEMBERS.to_string(),
        "--duration-s",
        "0",
        "--interval-ms",
        "600000",
        "--timeout-ms",
        "30000",
    ]));
    let figures: Value = serde_json::from_str(bench.trim()).unwrap_or_else(|e| panic!("{e}: {bench}"));
    assert_eq!(figures["members"], MEMBERS, "{figures}");

    // status gives counts, not the processes: a small answer whatever the record holds.
    let text = ok(&c.roster(&["status"]));
    assert!(text.contains(&format!("processes: {MEMBERS} ({MEMBERS} online")), "{text}");
    assert!(text.len() < 4096, "status is a summary: {} bytes", text.len());
    let agent = roster_tests::http_agent();
    let (code, http_status) = get(&agent, &format!("{base}/v1/status"));
    assert_eq!(code, 200, "{http_status}");
    assert_eq!(http_status["processes"]["total"], MEMBERS);
    assert!(http_status.to_string().len() < 65_536, "/v1/status is a summary");

    // ls pages by itself: every process once, in both forms.
    let lines = ok(&c.roster(&["ls", "--kind", "processes"]));
    let names: std::collections::BTreeSet<&str> =
        lines.lines().filter_map(|l| l.split_whitespace().nth(1).filter(|n| n.starts_with("bench-"))).collect();
    assert_eq!(names.len(), MEMBERS, "{}", &lines[..300.min(lines.len())]);
    let listed = json(&c.roster(&["ls", "--kind", "processes", "--json"]));
    assert_eq!(listed["processes"].as_array().map(Vec::len), Some(MEMBERS));

    let (ids, pages) = process_pages(&agent, &base);
    assert_eq!(ids.len(), MEMBERS);
    assert_eq!(pages, MEMBERS / 10_000, "pages of 10,000");
}

#[test]
fn status_ls_and_the_http_lists_answer_when_the_processes_would_not_fit_a_frame() {
    let (c, base) = one_node("fit-lists");
    let agent = roster_tests::http_agent();
    eventually(Duration::from_secs(20), "the node registered as server 1", || {
        let (_, servers) = get(&agent, &format!("{base}/v1/servers"));
        (servers["servers"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    // 200 processes with 64 labels of 256 + 256 bytes each, registered 8 at a time.
    let labels: serde_json::Map<String, Value> =
        (0..64).map(|l| (format!("{l:0>256}"), Value::String("x".repeat(256)))).collect();
    let body = |i: usize| json!({ "name": format!("wide-{i}"), "server": 1, "labels": labels }).to_string();
    std::thread::scope(|s| {
        for lane in 0..8 {
            let (agent, base, body) = (&agent, &base, &body);
            s.spawn(move || {
                for i in (lane..BURST).step_by(8) {
                    let url = format!("{base}/v1/processes");
                    let mut response = agent
                        .post(&url)
                        .header("Authorization", &format!("Bearer {TOKEN}"))
                        .send(body(i).as_bytes())
                        .expect("POST /v1/processes");
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    assert_eq!(response.status().as_u16(), 201, "process {i}: {text}");
                }
            });
        }
    });

    let status = json(&c.roster(&["status", "--json"]));
    assert_eq!(status["processes"]["total"], BURST, "{}", status["processes"]);
    let text = ok(&c.roster(&["status"]));
    assert!(text.contains(&format!("processes: {BURST} ({BURST} online")), "{text}");

    let listed = json(&c.roster(&["ls", "--kind", "processes", "--json"]));
    let processes = listed["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), BURST);
    assert!(processes.iter().all(|p| p["info"]["labels"].as_object().map(|l| l.len()) == Some(64)));
    let lines = ok(&c.roster(&["ls", "--kind", "processes"]));
    assert_eq!(lines.lines().filter(|l| l.starts_with("process-")).count(), BURST, "{}", &lines[..200]);
    // The whole record, servers first.
    let everything = json(&c.roster(&["ls", "--json"]));
    assert_eq!(everything["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(everything["processes"].as_array().map(Vec::len), Some(BURST));

    let (code, http_status) = get(&agent, &format!("{base}/v1/status"));
    assert_eq!(code, 200, "{http_status}");
    assert_eq!(http_status["processes"]["total"], BURST);
    let (ids, pages) = process_pages(&agent, &base);
    assert_eq!(ids.len(), BURST);
    assert!(pages >= 6, "6.6 MB in pages of 1 MiB: {pages} pages");
    let (code, refused) = get(&agent, &format!("{base}/v1/processes?limit=0"));
    assert_eq!(code, 400, "{refused}");

    // Every CLI connection above ended on the node too (its task, and its place under the
    // connection cap); what stays open is the HTTP API's own pooled connection.
    eventually(Duration::from_secs(10), "the CLI's connections closed on the node", || {
        let mut response = agent.get(format!("{base}/metrics")).call().ok()?;
        let text = response.body_mut().read_to_string().ok()?;
        let open: f64 = text.lines().find_map(|l| l.strip_prefix("roster_client_connections "))?.trim().parse().ok()?;
        (open <= 2.0).then_some(())
    });
}
