//! Launch refusals are clear and start nothing: a program off the allow-list is named in
//! the error together with the allow-list setting; a requirement no server can meet says
//! that no server fits, with what was asked and the best on offer. `roster_launches_total`
//! counts each launch once, by how it ended: where the program was to start, or on the
//! leader when no server fits.

use roster_tests::{TestCluster, free_port, json, which};
use std::collections::BTreeMap;
use std::time::Duration;

/// `roster_launches_total{result="RESULT"}` of each node's `/metrics` (absent: `None`).
fn launches(http: &BTreeMap<u64, u16>, result: &str) -> BTreeMap<u64, Option<u64>> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let series = format!("roster_launches_total{{result=\"{result}\"}} ");
    http.iter()
        .map(|(id, port)| {
            let text = agent
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .call()
                .expect("GET /metrics")
                .body_mut()
                .read_to_string()
                .expect("metrics text");
            (*id, text.lines().find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok()))
        })
        .collect()
}

#[test]
fn launch_refusals_are_clear_and_start_nothing() {
    let sleep = which("sleep");
    let allowed = sleep.clone();
    let http: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let ports = http.clone();
    let c = TestCluster::start("lc-launch", 3, move |id| {
        let probe = "fixed:cpu=10,mem=1000000";
        let listen = format!("127.0.0.1:{}", ports[&id]);
        ["--launch-allow", &allowed, "--probe", probe, "--http-listen", &listen].map(String::from).to_vec()
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_resources(3, Duration::from_secs(20));
    // Before any launch, every node exports every result, at 0.
    for result in ["started", "not_allowed", "failed", "no_placement"] {
        assert!(launches(&http, result).values().all(|v| *v == Some(0)), "{result}: {:?}", launches(&http, result));
    }

    // Not on the allow-list.
    let other = which("true");
    let out = c.run_to_end(&["launch", "--name", "nope", "--", &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "launch of {other} off the allow-list succeeded: {err}");
    assert!(
        err.contains(&other) && err.contains("allow-list") && err.contains("--launch-allow"),
        "the refusal should name the program and the allow-list: {err}"
    );

    // More memory than any server has.
    let huge = (1u64 << 62).to_string();
    let out = c.run_to_end(&["launch", "--name", "big", "--require-mem", &huge, "--", &sleep, "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an impossible --require-mem was placed: {err}");
    assert!(
        err.contains("none of the 3 online servers")
            && err.contains(&format!("{huge} bytes of free memory"))
            && err.contains("ask for less"),
        "the refusal should say no server fits and what was asked: {err}"
    );

    // Neither started anything.
    let procs = c.processes().expect("ls");
    assert!(procs.is_empty(), "refused launches left processes: {procs:?}");
    let launched = c.dir.0.join("node-1").join("launched");
    assert!(!launched.exists() || std::fs::read_dir(&launched).map(|d| d.count()).unwrap_or(0) == 0);

    // The allow-listed program with a requirement that fits does start (sanity).
    let out = c.run_to_end(&["launch", "--name", "ok", "--require-mem", "1000", "--json", "--", &sleep, "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started_on = json(&out)["server"].as_u64().expect("the server it started on");

    // Each launch counted once: the refusal of the allow-list and the start where the
    // program was to run, the placement that found no server on the leader.
    let total = |result: &str| launches(&http, result).values().map(|v| v.unwrap_or(0)).sum::<u64>();
    assert_eq!(total("not_allowed"), 1, "{:?}", launches(&http, "not_allowed"));
    assert_eq!(total("no_placement"), 1, "{:?}", launches(&http, "no_placement"));
    assert_eq!(launches(&http, "no_placement")[&c.leader()], Some(1));
    assert_eq!(total("started"), 1, "{:?}", launches(&http, "started"));
    assert_eq!(launches(&http, "started")[&started_on], Some(1), "counted where it started");
    assert_eq!(total("failed"), 0);
}
