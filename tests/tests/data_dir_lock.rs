//! A second node process on a running node's data directory is refused at start, naming
//! the directory and the process that holds it, and the running node is untouched.

use roster_tests::{ChildGuard, TestCluster, ok, roster_bin};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_second_process_on_a_data_directory_is_refused_naming_the_holder() {
    let c = TestCluster::start("data-dir-lock", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let data = c.data_dir(1);
    let second = Command::new(roster_bin())
        .args(["node", "--id", "1", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--token-file")
        .arg(&c.token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second node");
    let out = ChildGuard(Some(second)).wait_output(Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second node started on a data directory in use: {stderr}");
    let holder = c.nodes[&1].child.as_ref().expect("node 1 runs").id();
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains(&holder.to_string()),
        "the refusal should name {} and pid {holder}: {stderr}",
        data.display()
    );
    // The running node was not disturbed: it still serves and writes.
    ok(&c.roster_at(&c.nodes[&1].addr, &["kv", "put", "still", "here"]));
}
