//! The Java client (`clients/java`, JDK and Debian's Jackson only) against a real 3-node
//! cluster: the test compiles it with `javac` and runs its check program
//! (`clients/java/test/.../ClientCheck.java`), one mode per test, driving the cluster
//! around it (kill -9 of the JVM, every node down, a leader killed mid-stream). The Java
//! side checks what it can see (answers, events, values); this side checks what the
//! cluster recorded.

use roster_tests::{TestCluster, free_port, json, mem_total_bytes, which};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Debian's Jackson (`libjackson2-databind-java`), the client's one dependency.
const JACKSON_JARS: [&str; 3] = [
    "/usr/share/java/jackson-databind.jar",
    "/usr/share/java/jackson-core.jar",
    "/usr/share/java/jackson-annotations.jar",
];

fn classpath(extra: &Path) -> String {
    let mut parts: Vec<String> = JACKSON_JARS.iter().map(|s| s.to_string()).collect();
    parts.push(extra.display().to_string());
    parts.join(":")
}

/// Compiles the client and its check program into `out`; prints how long javac took.
fn compile(out: &Path) -> PathBuf {
    for jar in JACKSON_JARS {
        assert!(Path::new(jar).exists(), "{jar} is missing: install Debian's libjackson2-databind-java (.ci/run does)");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/java");
    let mut sources = Vec::new();
    for dir in ["src", "test"] {
        collect_java(&root.join(dir), &mut sources);
    }
    assert!(sources.len() > 10, "expected the client's sources under {}, found {sources:?}", root.display());
    let classes = out.join("classes");
    std::fs::create_dir_all(&classes).expect("create the classes directory");
    let started = Instant::now();
    let result = Command::new("javac")
        .args(["--release", "17", "-Xlint:all,-try", "-Werror", "-encoding", "UTF-8", "-cp"])
        .arg(classpath(&classes))
        .arg("-d")
        .arg(&classes)
        .args(&sources)
        .output()
        .expect("javac must be installed to build the Java client (.ci/run installs default-jdk-headless)");
    assert!(
        result.status.success(),
        "javac failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    println!("javac built {} Java sources in {:.1} s", sources.len(), started.elapsed().as_secs_f64());
    classes
}

fn collect_java(dir: &Path, into: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_java(&path, into);
        } else if path.extension().is_some_and(|e| e == "java") {
            into.push(path);
        }
    }
}

/// A 3-node cluster, each node serving HTTP; launches may start `sleep`.
fn cluster(tag: &str) -> (TestCluster, Vec<String>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let sleep = which("sleep");
    let mem = mem_total_bytes() / 2;
    let http = ports.clone();
    let c = TestCluster::start(tag, 3, move |id| {
        vec![
            "--http-listen".into(),
            format!("127.0.0.1:{}", http[(id - 1) as usize]),
            "--launch-allow".into(),
            sleep.clone(),
            "--probe".into(),
            format!("fixed:cpu=10,mem={mem}"),
        ]
    });
    c.wait_leader(Duration::from_secs(20));
    c.wait_servers(3, Duration::from_secs(30));
    let urls = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    (c, urls)
}

/// The JVM running the check program, its output read line by line.
struct Jvm {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Jvm {
    fn start(classes: &Path, args: &[&str]) -> Jvm {
        let mut child = Command::new("java")
            .arg("-cp")
            .arg(classpath(classes))
            .arg("dev.roster.client.ClientCheck")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("java must be installed to run the Java client (.ci/run installs default-jdk-headless)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Jvm { child, stdin, lines, seen: Vec::new() }
    }

    /// The first line from now on that starts with `prefix`; panics with everything seen
    /// when the program fails, ends or takes longer than `within`.
    fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    assert!(
                        !line.starts_with("FAIL"),
                        "the Java check failed: {line}\nall output:\n{}",
                        self.seen.join("\n")
                    );
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {prefix:?} from the JVM within {within:?}; output:\n{}", self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the JVM ended before printing {prefix:?}; output:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the JVM");
        stdin.flush().expect("flush to the JVM");
    }

    /// Waits for a clean exit (status 0) within `within`.
    fn finish(mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("wait for the JVM") {
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                assert!(status.success(), "the Java check exited with {status}:\n{}", self.seen.join("\n"));
                return std::mem::take(&mut self.seen);
            }
            assert!(Instant::now() < deadline, "the JVM still runs after {within:?}:\n{}", self.seen.join("\n"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_after(line: &str, prefix: &str) -> u64 {
    line.strip_prefix(prefix)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected {prefix:?} and a number, got {line:?}"))
}

/// The tombstone of the process named `name`, once there is one.
fn tombstone_of(c: &TestCluster, name: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let out = c.roster(&["tombstones", "--json"]);
        if out.status.success() {
            let all = json(&out);
            let found = all["tombstones"].as_array().and_then(|list| {
                list.iter()
                    .find(|t| t["member"]["type"] == "process" && t["member"]["info"]["name"].as_str() == Some(name))
                    .cloned()
            });
            if let Some(t) = found {
                return t;
            }
        }
        assert!(Instant::now() < deadline, "no tombstone of {name} within {within:?}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_java_client_registers_heartbeats_reads_writes_launches_and_leaves() {
    let (c, urls) = cluster("java-member");
    let classes = compile(&c.dir.0);
    let token = c.token_file.display().to_string();
    let mut jvm = Jvm::start(&classes, &["member", &urls.join(","), &token, "2", &which("sleep")]);
    let id = id_after(&jvm.expect("registered ", Duration::from_secs(30)), "registered ");
    jvm.expect("heartbeats ", Duration::from_secs(15));
    jvm.expect("labels ok", Duration::from_secs(10));
    let cas = jvm.expect("cas_failed ", Duration::from_secs(20));
    assert!(cas.contains("not swapped"), "the server's message is kept: {cas}");
    jvm.expect("kv ok", Duration::from_secs(20));
    let wrong = jvm.expect("wrong token ", Duration::from_secs(10));
    assert!(wrong.contains("forbidden") || wrong.contains("unauthorized"), "{wrong}");
    let unknown = jvm.expect("unknown member ", Duration::from_secs(10));
    assert!(unknown.contains(&"999999".to_string()), "the message names the process: {unknown}");
    jvm.expect("unknown server ", Duration::from_secs(10));
    jvm.expect("events ok", Duration::from_secs(15));
    jvm.expect("launched process ", Duration::from_secs(20));
    assert_eq!(id_after(&jvm.expect("deregistered ", Duration::from_secs(20)), "deregistered "), id);
    jvm.finish(Duration::from_secs(15));

    let t = tombstone_of(&c, "java-interpreter", Duration::from_secs(10));
    assert_eq!(t["departure"], serde_json::json!({ "type": "deregistered", "exit_status": 3 }), "{t}");
}

#[test]
fn a_killed_jvm_is_expired() {
    let (c, urls) = cluster("java-kill9");
    let classes = compile(&c.dir.0);
    let token = c.token_file.display().to_string();
    let mut jvm = Jvm::start(&classes, &["stay", &urls.join(","), &token, "1"]);
    jvm.expect("registered ", Duration::from_secs(30));
    // Heartbeats arrive: two reports with a rising count.
    let first = id_after(&jvm.expect("heartbeats ", Duration::from_secs(10)), "heartbeats ");
    let second = id_after(&jvm.expect("heartbeats ", Duration::from_secs(10)), "heartbeats ");
    assert!(second > first && first > 0, "heartbeats did not rise: {first} then {second}");
    let killed_at = Instant::now();
    jvm.kill9();
    let t = tombstone_of(&c, "java-stay", Duration::from_secs(20));
    assert_eq!(t["departure"]["type"], "expired", "a kill -9 is an expiry, not a goodbye: {t}");
    println!("expired {:.1} s after kill -9", killed_at.elapsed().as_secs_f64());
}

#[test]
fn writes_queued_while_every_node_is_down_apply_once_when_it_is_back() {
    let (mut c, urls) = cluster("java-outage");
    let classes = compile(&c.dir.0);
    let token = c.token_file.display().to_string();
    let mut jvm = Jvm::start(&classes, &["outage", &urls.join(","), &token, "40", "50"]);
    jvm.expect("ready ", Duration::from_secs(30));
    for id in 1..=3 {
        c.kill9(id);
    }
    jvm.tell("go");
    assert_eq!(jvm.expect("queued ", Duration::from_secs(10)), "queued 40 rejected 10");
    let full = jvm.expect("queue full: ", Duration::from_secs(5));
    assert!(full.contains("retry queue is full (40 of 40") && full.contains("not queued"), "{full}");
    // A second later the queue still holds them all, and says why: no node answers.
    let pending = jvm.expect("pending 40", Duration::from_secs(10));
    assert!(pending.contains("no answer from"), "{pending}");
    jvm.expect("waiting", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    for id in 1..=3 {
        c.spawn(id);
    }
    jvm.expect("answered 40", Duration::from_secs(100));
    jvm.expect("events exactly once: 40", Duration::from_secs(30));
    jvm.expect("delivered 40", Duration::from_secs(10));
    jvm.finish(Duration::from_secs(40));
    let value = json(&c.roster(&["kv", "get", "outage/counter", "--json"]));
    assert_eq!(value["value"], "40", "{value}");
}

#[test]
fn a_leader_change_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let (mut c, urls) = cluster("java-failover");
    let classes = compile(&c.dir.0);
    let token = c.token_file.display().to_string();
    // The client talks to the leader first, so the kill breaks its writes and its event stream.
    let leader = c.leader();
    let mut ordered = vec![urls[(leader - 1) as usize].clone()];
    ordered.extend(urls.iter().enumerate().filter(|(i, _)| *i as u64 != leader - 1).map(|(_, u)| u.clone()));
    let term_before = c.wait_leader(Duration::from_secs(10))["term"].as_u64().expect("term");
    let mut jvm = Jvm::start(&classes, &["stream", &ordered.join(","), &token, "400"]);
    jvm.expect("ready ", Duration::from_secs(30));
    jvm.expect("acked 100", Duration::from_secs(60));
    c.kill9(leader);
    std::thread::sleep(Duration::from_secs(1));
    c.spawn(leader);
    let reconnects = jvm.expect("stream events ok", Duration::from_secs(120));
    assert!(
        !reconnects.ends_with("reconnects 0"),
        "the event stream on the killed leader must have resumed: {reconnects}"
    );
    jvm.expect("events exactly once: 400", Duration::from_secs(30));
    jvm.expect("delivered 400", Duration::from_secs(10));
    jvm.finish(Duration::from_secs(40));
    let after = c.wait_leader(Duration::from_secs(20));
    assert!(after["term"].as_u64().expect("term") > term_before, "no leader change happened: {after}");
}
