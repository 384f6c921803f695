//! Harness for black-box tests: real `roster` processes on free loopback ports, each
//! test in its own temporary directory, everything killed when the harness drops.
//!
//! The binary is found at `$ROSTER_BIN`, else `<workspace>/target/debug/roster`
//! (`scripts/test` builds it first).

// Real processes, namespaces and a multi-threaded runtime: not in the simulator build.
#[cfg(not(madsim))]
pub mod nemesis;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn roster_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROSTER_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug").join("roster");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p roster-real --bin roster` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("roster-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    pub initial: bool,
}

/// The peer key of every test cluster (`peer-key` beside its token file).
pub const TEST_PEER_KEY: &str = "test-peer-key-0123456789abcdef0123456789";

pub struct TestCluster {
    pub dir: TempDir,
    pub token_file: PathBuf,
    pub nodes: BTreeMap<u64, NodeProc>,
    peers: String,
    /// Set in every node process, restarts included.
    node_env: Vec<(String, String)>,
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) as one initial cluster; `extra(id)` adds flags per node.
    pub fn start(tag: &str, n: u64, extra: impl Fn(u64) -> Vec<String>) -> Self {
        Self::start_with_env(tag, n, &[], extra)
    }

    /// Like `start`, with environment variables `env` set in every node process (e.g.
    /// `TOKIO_WORKER_THREADS`).
    pub fn start_with_env(tag: &str, n: u64, env: &[(&str, &str)], extra: impl Fn(u64) -> Vec<String>) -> Self {
        Self::start_all_but(tag, n, &[], env, extra)
    }

    /// Like `start_with_env`, but the initial members in `late` are not started yet: the
    /// test starts them with `spawn` when it wants.
    pub fn start_all_but(
        tag: &str,
        n: u64,
        late: &[u64],
        env: &[(&str, &str)],
        extra: impl Fn(u64) -> Vec<String>,
    ) -> Self {
        let dir = TempDir::new(tag);
        let token_file = dir.0.join("token");
        std::fs::write(&token_file, "test-token-0123456789").expect("write token");
        // The peer key nodes prove to each other, found beside the token file. Both are
        // secrets: readable by their owner only, as a node expects (it warns otherwise).
        std::fs::write(dir.0.join("peer-key"), TEST_PEER_KEY).expect("write peer key");
        for secret in [token_file.clone(), dir.0.join("peer-key")] {
            std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod 600");
        }
        let addrs: BTreeMap<u64, String> = (1..=n).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let peers = addrs.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        let node_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut c = TestCluster { dir, token_file, nodes: BTreeMap::new(), peers, node_env };
        for (id, addr) in addrs {
            c.nodes.insert(id, NodeProc { id, addr, child: None, extra_args: extra(id), initial: true });
            if !late.contains(&id) {
                c.spawn(id);
            }
        }
        c
    }

    /// Waits until every node reports one cluster id (sealed by the first leader) and
    /// returns it.
    pub fn wait_cluster_id(&self, within: Duration) -> String {
        eventually(within, "one cluster id on every node", || {
            let ids: Vec<Option<String>> = self
                .nodes
                .keys()
                .map(|id| {
                    self.status_at(&self.endpoints_of(&[*id]))
                        .and_then(|s| s["cluster_id"].as_str().map(str::to_string))
                })
                .collect();
            (ids.iter().all(Option::is_some) && ids.windows(2).all(|w| w[0] == w[1])).then(|| ids[0].clone())?
        })
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.0.join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.0.join(format!("node-{id}.log"))
    }

    /// (Re)starts node `id` with the same data directory and flags.
    pub fn spawn(&mut self, id: u64) {
        let node = self.nodes.get(&id).expect("known node");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id)).expect("open log");
        let mut cmd = Command::new(roster_bin());
        cmd.arg("node")
            .args(["--id", &id.to_string(), "--listen", &node.addr])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--token-file")
            .arg(&self.token_file)
            .args(&node.extra_args)
            .env("RUST_LOG", "info,openraft=warn")
            .envs(self.node_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        if node.initial {
            cmd.args(["--peers", &self.peers, "--bootstrap"]);
        }
        let child = cmd.spawn().expect("spawn roster node");
        self.nodes.get_mut(&id).expect("known node").child = Some(child);
    }

    /// Adds a node that is not an initial member (for `member add`).
    pub fn add_process(&mut self, id: u64, extra_args: Vec<String>) -> String {
        let addr = self.plan_process(id, extra_args);
        self.spawn(id);
        addr
    }

    /// Names a node that is not an initial member, with its address, without starting it
    /// (`spawn` starts it).
    pub fn plan_process(&mut self, id: u64, extra_args: Vec<String>) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        self.nodes.insert(id, NodeProc { id, addr: addr.clone(), child: None, extra_args, initial: false });
        addr
    }

    pub fn endpoints(&self) -> String {
        self.nodes.values().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",")
    }

    pub fn endpoints_of(&self, ids: &[u64]) -> String {
        ids.iter().map(|id| self.nodes[id].addr.clone()).collect::<Vec<_>>().join(",")
    }

    /// Runs a client command against every node.
    pub fn roster(&self, args: &[&str]) -> Output {
        self.roster_at(&self.endpoints(), args)
    }

    pub fn roster_at(&self, endpoints: &str, args: &[&str]) -> Output {
        Command::new(roster_bin())
            .args(args)
            .args(["--endpoints", endpoints])
            .arg("--token-file")
            .arg(&self.token_file)
            .env_remove("ROSTER_TOKEN")
            .output()
            .expect("run roster client command")
    }

    /// `status --json`, retried until it answers with a leader or the deadline passes.
    pub fn wait_leader(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.roster(&["status", "--json"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
                if v["leader"].is_u64() {
                    return v;
                }
                last = String::from_utf8_lossy(&out.stdout).into_owned();
            } else {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no leader within {within:?}; last: {last}\n{}", self.logs());
    }

    pub fn leader(&self) -> u64 {
        self.wait_leader(Duration::from_secs(20))["leader"].as_u64().expect("leader id")
    }

    /// SIGKILL: no goodbye.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the graceful exit.
    pub fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        let mut c = self.nodes.get_mut(&id).and_then(|n| n.child.take()).expect("node running");
        sigterm(&c);
        c.wait().expect("wait for node")
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for id in self.nodes.keys() {
            let text = std::fs::read_to_string(self.log_path(*id)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            s.push_str(&format!("--- node {id} (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on a pid we own.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Asserts a command succeeded and returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}): stdout={} stderr={}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}

/// An HTTP client for the tests: a status other than 2xx is an answer to check, not an
/// error, and every request gives up after 30 s.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Polls `f` until it returns `Some`, or panics with `what` once `within` has passed.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl TestCluster {
    /// `kv get KEY [--stale]` against the given endpoints: the value, or `None` when the
    /// key is absent or the command failed (no leader, node down).
    pub fn kv_get_at(&self, endpoints: &str, key: &str, stale: bool) -> Option<String> {
        self.kv_lookup_at(endpoints, key, stale).flatten()
    }

    /// `kv get KEY --json [--stale]`: `None` when the command failed, `Some(None)` when the
    /// cluster answered that the key is absent, `Some(Some(value))` otherwise.
    pub fn kv_lookup_at(&self, endpoints: &str, key: &str, stale: bool) -> Option<Option<String>> {
        let mut args = vec!["kv", "get", key, "--json"];
        if stale {
            args.push("--stale");
        }
        let out = self.roster_at(endpoints, &args);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        if out.status.success() {
            return Some(Some(v["value"].as_str()?.to_owned()));
        }
        // An absent key is the error `not_found` (exit 1); any other error is a failure.
        (v["error"]["kind"] == "not_found").then_some(None)
    }

    /// `status --json` against the given endpoints, if it answers (with or without a
    /// leader: `status` prints the status, then exits 1 when none is known).
    pub fn status_at(&self, endpoints: &str) -> Option<Value> {
        let out = self.roster_at(endpoints, &["status", "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The whole log file of node `id`.
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }
}

/// A background write load: `kv put <prefix><i> v<i>` in a loop until stopped, each put a
/// separate client process; remembers which puts were acknowledged (exit 0).
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<(String, String)>>>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WriteLoad {
    pub fn start(cluster: &TestCluster, endpoints: &str, prefix: &str) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let acked = std::sync::Arc::new(AtomicUsize::new(0));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let token_file = cluster.token_file.clone();
        let endpoints = endpoints.to_owned();
        let prefix = prefix.to_owned();
        let handle = std::thread::spawn(move || {
            let mut ok = Vec::new();
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                let (k, v) = (format!("{prefix}{i}"), format!("v{i}"));
                let out = Command::new(roster_bin())
                    .args(["kv", "put", &k, &v, "--timeout-ms", "3000", "--endpoints", &endpoints])
                    .arg("--token-file")
                    .arg(&token_file)
                    .env_remove("ROSTER_TOKEN")
                    .output()
                    .expect("run roster kv put");
                if out.status.success() {
                    ok.push((k, v));
                    acked2.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
            ok
        });
        WriteLoad { stop, handle: Some(handle), acked }
    }

    /// How many puts were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` more puts than now have been acknowledged (bounded by `within`).
    pub fn wait_more(&self, n: usize, within: Duration) {
        let target = self.acked() + n;
        eventually(within, &format!("{n} more acknowledged puts"), || (self.acked() >= target).then_some(()));
    }

    /// Stops the loop and returns the acknowledged (key, value) pairs.
    pub fn finish(mut self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.take().expect("running").join().expect("write load thread")
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, for long-running client
/// commands such as `roster run` and `roster watch`.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned")
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child still owned").id()
    }

    /// SIGKILL and reap: no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL (if still running) and everything it wrote to its pipes, for diagnostics.
    pub fn kill_and_output(&mut self) -> String {
        let Some(mut c) = self.0.take() else { return "(already reaped)".into() };
        let _ = c.kill();
        match c.wait_with_output() {
            Ok(o) => format!(
                "{:?}\nstdout: {}\nstderr: {}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("cannot collect output: {e}"),
        }
    }

    /// Waits (bounded) for the child to exit on its own and returns its output; panics
    /// (after killing it) when `within` passes first. Stdout/stderr are read only if piped.
    pub fn wait_output(&mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        loop {
            let c = self.0.as_mut().expect("child still owned");
            match c.try_wait().expect("try_wait") {
                Some(_) => return self.0.take().expect("child").wait_with_output().expect("collect output"),
                None if Instant::now() >= deadline => {
                    self.kill9();
                    panic!("child did not exit within {within:?}");
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl TestCluster {
    /// A `roster ARGS` command aimed at every node through the environment
    /// (`ROSTER_ENDPOINTS`, `ROSTER_TOKEN_FILE`), so `ARGS` may end with `-- CMD ...`.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_at(&self.endpoints(), args)
    }

    pub fn command_at(&self, endpoints: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(roster_bin());
        cmd.args(args)
            .env("ROSTER_ENDPOINTS", endpoints)
            .env("ROSTER_TOKEN_FILE", &self.token_file)
            .env_remove("ROSTER_TOKEN")
            .env("RUST_LOG", "info");
        cmd
    }

    /// Runs `command(args)` to completion (for args ending in `-- CMD ...`).
    pub fn run_to_end(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run roster command")
    }

    /// Spawns `command(args)` in the background with stdout and stderr piped.
    pub fn spawn_client(&self, args: &[&str]) -> ChildGuard {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn roster client");
        ChildGuard(Some(child))
    }

    /// `status --json` once `n` servers are registered and each has averaged resources in
    /// the record (so placement sees the pinned probe values, not an idle server).
    pub fn wait_resources(&self, n: usize, within: Duration) -> Value {
        eventually(within, &format!("{n} servers with resources in status"), || {
            let s = self.status_at(&self.endpoints())?;
            let servers = s["servers"].as_array()?;
            (servers.len() == n && servers.iter().all(|e| !e["resources"].is_null())).then_some(s)
        })
    }

    /// The processes listed by `ls --kind processes --json`, or `None` if it failed.
    pub fn processes(&self) -> Option<Vec<Value>> {
        let out = self.roster(&["ls", "--kind", "processes", "--json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["processes"].as_array().cloned()
    }
}

/// Parses `watch --json` output: one event per line.
pub fn watch_events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {l}")))
        .collect()
}

/// The absolute path of a program found on `PATH` (e.g. `sleep`).
pub fn which(program: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(program);
        if p.is_file() {
            // Not canonicalized: a multi-call binary (coreutils) dispatches on its name.
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("{program} not found on PATH");
}

/// The direct children of process `pid` (Linux, from /proc), e.g. the program a killed
/// `roster run` wrapper left behind.
pub fn child_pids(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILL to a pid we started (directly or through a wrapper).
pub fn kill_pid(pid: u32) {
    // SAFETY: plain kill(2).
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A `roster watch --json` running in the background; its events are read on a thread.
pub struct WatchStream {
    guard: ChildGuard,
    rx: std::sync::mpsc::Receiver<Value>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl WatchStream {
    /// `watch --json [--after REV]` (no count: runs until dropped).
    pub fn start(cluster: &TestCluster, after: Option<u64>) -> Self {
        let after = after.map(|a| a.to_string());
        let mut args = vec!["watch", "--json", "--timeout-ms", "20000"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let mut guard = cluster.spawn_client(&args);
        let stdout = guard.child().stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        WatchStream { guard, rx, seen: Vec::new() }
    }

    /// Reads events until one satisfies `pred` (returned), or panics after `within`.
    pub fn until(&mut self, within: Duration, what: &str, pred: impl FnMut(&Value) -> bool) -> Value {
        self.try_until(within, pred).unwrap_or_else(|| {
            let seen: Vec<String> = self.seen.iter().map(Value::to_string).collect();
            panic!("watch: no event matching {what} within {within:?}; seen:\n{}", seen.join("\n"))
        })
    }

    /// Reads events until one satisfies `pred`; `None` once `within` has passed.
    pub fn try_until(&mut self, within: Duration, mut pred: impl FnMut(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.rx.recv_timeout(left).ok()?;
            self.seen.push(v.clone());
            if pred(&v) {
                return Some(v);
            }
        }
    }

    pub fn stop(mut self) -> Vec<Value> {
        self.guard.kill9();
        self.seen
    }
}

/// For a `departed` event of process `id`: its departure (`{"type": "expired", ..}` or
/// `{"type": "deregistered", "exit_status": N}`); `None` for any other event.
pub fn process_departure(event: &Value, id: u64) -> Option<Value> {
    let member = &event["data"]["member"];
    (event["type"] == "departed" && member["type"] == "process" && member["id"].as_u64() == Some(id))
        .then(|| event["data"]["departure"].clone())
}

/// For a `process_registered` event: the process entry, if its name is `name`.
pub fn process_registered<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    let p = &event["data"];
    (event["type"] == "process_registered" && p["info"]["name"].as_str() == Some(name)).then_some(p)
}

impl TestCluster {
    /// `status --json` once `n` servers have registered themselves (a `roster run` without
    /// `--server-id` claims the node it reaches as its host, which must be registered).
    /// On a timeout it panics with every node's log, to say which server did not register.
    pub fn wait_servers(&self, n: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status_at(&self.endpoints());
            if let Some(s) = s.as_ref().filter(|s| s["servers"].as_array().is_some_and(|a| a.len() == n)) {
                return s.clone();
            }
            if Instant::now() >= deadline {
                panic!("{n} servers not registered within {within:?}; last status: {s:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether process `pid` exists and has not exited (a zombie counts as exited).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// This machine's memory, in bytes (`MemTotal` of /proc/meminfo).
pub fn mem_total_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}
