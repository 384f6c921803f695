//! Launch refusals are clear and start nothing: a program off the allow-list is named in
//! the error together with the allow-list setting; a requirement no server can meet says
//! that no server fits, with what was asked and the best on offer.

use roster_tests::{TestCluster, which};
use std::time::Duration;

#[test]
fn launch_refusals_are_clear_and_start_nothing() {
    let sleep = which("sleep");
    let allowed = sleep.clone();
    let c = TestCluster::start("lc-launch", 3, move |_| {
        vec!["--launch-allow".into(), allowed.clone(), "--probe".into(), "fixed:cpu=10,mem=1000000".into()]
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_resources(3, Duration::from_secs(20));

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
}
