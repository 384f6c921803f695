//! A launched job's output: `roster launch` says where it goes, and `roster logs` (and
//! `GET /v1/processes/{id}/logs`) read it from any node, whole, as a tail, or followed
//! until the job ends; a process Roster did not launch, and a `read` credential, are
//! refused by name.

use roster_tests::{TestCluster, eventually, free_port, json, ok, which};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Output;
use std::time::Duration;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_launched_jobs_output_is_read_from_any_node_whole_tailed_or_followed() {
    let shell = std::fs::canonicalize(which("sh")).expect("sh").display().to_string();
    let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let allowed = shell.clone();
    let c = TestCluster::start("launch-output", 3, move |id| {
        vec!["--launch-allow".into(), allowed.clone(), "--http-listen".into(), format!("127.0.0.1:{}", ports[&id])]
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(3, Duration::from_secs(20));

    let go = c.dir.0.join("go");
    let script = format!(
        "echo line 1; echo line 2; echo line 3 >&2; while [ ! -e '{}' ]; do sleep 0.05; done; echo line 4",
        go.display()
    );
    let out = c.run_to_end(&["launch", "--name", "job", "--", &shell, "-c", &script]);
    let said = ok(&out);
    let output_line = said.lines().find(|l| l.starts_with("output: ")).unwrap_or_else(|| panic!("{said}"));
    let file = output_line["output: ".len()..].split(" on server-").next().expect("a path");
    assert!(file.contains("/launched/job-") && file.ends_with(".log"), "{output_line}");
    let id: u64 =
        said.split("as process-").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect("id");
    eventually(Duration::from_secs(10), "the job's first lines in its file", || {
        std::fs::read_to_string(file).ok().filter(|t| t.contains("line 3")).map(|_| ())
    });

    // From every node, the same output (stdout and stderr together), read where it runs.
    for node in 1..=3 {
        let whole = ok(&c.roster_at(&c.endpoints_of(&[node]), &["logs", "job"]));
        assert!(whole.contains("line 1\nline 2\nline 3\n"), "via node {node}: {whole}");
    }
    assert_eq!(ok(&c.roster(&["logs", &format!("process:{id}"), "--tail", "2"])), "line 2\nline 3\n");

    // Over HTTP: the bytes as they are, and where they sit in the file.
    let token = std::fs::read_to_string(&c.token_file).expect("token");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut answer = agent
        .get(format!("http://127.0.0.1:{}/v1/processes/{id}/logs?tail=1", ports_of(&c, 2)))
        .header("authorization", format!("Bearer {}", token.trim()))
        .call()
        .expect("GET logs");
    assert_eq!(answer.status().as_u16(), 200);
    let next = answer.headers().get("roster-output-next").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(answer.body_mut().read_to_string().expect("body"), "line 3\n");
    assert_eq!(next, Some((std::fs::metadata(file).expect("file").len()).to_string()));

    // Followed: what comes later shows, and the follow ends once the job has left.
    let mut follow = c.spawn_client(&["logs", "job", "--follow"]);
    let mut lines = BufReader::new(follow.child().stdout.take().expect("stdout")).lines();
    for want in ["line 1", "line 2", "line 3"] {
        assert_eq!(lines.next().expect("a line").expect("read"), want);
    }
    std::fs::write(&go, "").expect("let the job end");
    assert_eq!(lines.next().expect("a line").expect("read"), "line 4");
    let end = follow.wait_output(Duration::from_secs(20));
    assert!(end.status.success(), "{}", stderr(&end));
    // Ended and deregistered: still readable by name while its tombstone is kept.
    assert!(ok(&c.roster(&["logs", "job"])).contains("line 4\n"));

    // A read credential may not; a launch credential may.
    let read = json(&c.roster(&["token", "create", "--role", "read", "--json"]))["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let launch = json(&c.roster(&["token", "create", "--role", "launch", "--json"]))["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let as_token = |secret: &str| {
        c.command(&["logs", &format!("process-{id}")])
            .env_remove("ROSTER_TOKEN_FILE")
            .env("ROSTER_TOKEN", secret)
            .output()
            .expect("run")
    };
    let refused = as_token(&read);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("a read credential may not read a launched process's output"),
        "{}",
        stderr(&refused)
    );
    assert!(ok(&as_token(&launch)).contains("line 4"));

    // A process that was not launched has no output here, and says why.
    let mut plain = c.spawn_client(&["run", "--name", "plain", "--", "sleep", "600"]);
    eventually(Duration::from_secs(10), "plain registered", || {
        c.processes()?.iter().any(|p| p["info"]["name"] == "plain").then_some(())
    });
    let out = c.roster(&["logs", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("was not launched by Roster"), "{}", stderr(&out));
    plain.kill9();
}

/// The HTTP port of node `id`, from its command line.
fn ports_of(c: &TestCluster, id: u64) -> u16 {
    let args = &c.nodes[&id].extra_args;
    let at = args.iter().position(|a| a == "--http-listen").expect("--http-listen");
    args[at + 1].rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}
