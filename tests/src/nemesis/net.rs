//! The network of a run: one namespace per node (`rnem-n<ID>`), each with a veth pair
//! whose host end (`rnem-h<ID>`) is a port of the bridge `rnem-br` in the root namespace.
//! The bridge holds `10.77.0.254`, the address the workload talks from; node `ID` is
//! `10.77.0.<ID>`. Partitions are nft drop rules on the input hook of the receiving
//! node's namespace (table `inet rnem`), so the root namespace always reaches every node.
//!
//! Everything is named by the fixed prefix `rnem`, so a run removes the leftovers of a
//! crashed one before it starts ([`cleanup_leftovers`]), and a signal handler can remove
//! them without knowing the run. A lock file keeps two runs on one machine apart.

use super::{NemesisError, io_error};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const PREFIX: &str = "rnem";
pub const BRIDGE: &str = "rnem-br";
/// The workload's address, on the bridge.
pub const HOST_ADDR: &str = "10.77.0.254";
/// Where a run keeps its data directories, logs and the tmpfs mount.
pub const RUN_DIR: &str = "/tmp/rnem-run";
/// The tmpfs source name, so a leftover mount is found by it.
pub const TMPFS_SOURCE: &str = "rnem-disk";
const LOCK_FILE: &str = "/tmp/rnem.lock";
/// The nft table every node namespace holds.
const TABLE: &str = "rnem";

pub fn netns_name(id: u64) -> String {
    format!("{PREFIX}-n{id}")
}

pub fn node_ip(id: u64) -> String {
    format!("10.77.0.{id}")
}

/// Runs a system command; its stderr in the error.
pub fn sh(program: &str, args: &[&str]) -> Result<String, NemesisError> {
    sh_with_input(program, args, None)
}

pub fn sh_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NemesisError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NemesisError::Command { command: command.clone(), stderr: e.to_string() })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(io_error(format!("writing the input of `{command}`")))?;
    }
    let out = child.wait_with_output().map_err(io_error(format!("waiting for `{command}`")))?;
    if !out.status.success() {
        return Err(NemesisError::Command { command, stderr: String::from_utf8_lossy(&out.stderr).into_owned() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Held for the whole run: a second run waits for the first instead of removing its
/// namespaces as leftovers. The file is kept open only for its lock.
pub struct RunLock(#[allow(dead_code)] std::fs::File);

impl RunLock {
    pub fn acquire() -> Result<RunLock, NemesisError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .map_err(io_error(format!("opening {LOCK_FILE}")))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("nemesis: another run holds {LOCK_FILE}; waiting for it to finish");
            // SAFETY: as above, blocking this time.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(NemesisError::Io {
                    what: format!("locking {LOCK_FILE}"),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        LOCK_HELD.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(RunLock(file))
    }

    /// Whether this process holds the run lock: only then are the suite's namespaces and
    /// processes its own to remove on a signal (while it waits, they are another run's).
    pub fn held() -> bool {
        LOCK_HELD.load(std::sync::atomic::Ordering::SeqCst)
    }
}

static LOCK_HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Drop for RunLock {
    fn drop(&mut self) {
        LOCK_HELD.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Removes whatever a run (this one, or a crashed one) left: processes in our
/// namespaces (SIGKILL, which also ends stopped ones), the namespaces, the bridge, tmpfs
/// mounts (the run directory, with the nodes' logs, stays until the next run). Best effort, never fails: it also runs in a signal
/// handler and in `Drop`.
pub fn cleanup_leftovers() {
    let namespaces = sh("ip", &["netns", "list"]).unwrap_or_default();
    for ns in namespaces.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(PREFIX)) {
        let pids = sh("ip", &["netns", "pids", ns]).unwrap_or_default();
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) of a process in a namespace this suite owns.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = sh("ip", &["netns", "del", ns]);
    }
    let links = sh("ip", &["-o", "link", "show"]).unwrap_or_default();
    for link in links.lines().filter_map(|l| l.split(':').nth(1)).map(|n| n.trim().split('@').next().unwrap_or("")) {
        if link.starts_with(PREFIX) {
            let _ = sh("ip", &["link", "del", link]);
        }
    }
    for mount in tmpfs_mounts() {
        let _ = sh("umount", &["-l", &mount]);
    }
}

/// Mount points of our tmpfs (by source name, or under the run directory).
fn tmpfs_mounts() -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (source, point) = (f.next()?, f.next()?);
            (source == TMPFS_SOURCE || point.starts_with(RUN_DIR)).then(|| point.to_string())
        })
        .collect()
}

/// The namespaces and bridge of one run; removed on drop.
pub struct Network {
    pub ids: Vec<u64>,
    /// (from, to): packets from `from` are dropped on arrival at `to`.
    blocked: BTreeSet<(u64, u64)>,
}

impl Network {
    /// Creates the bridge and one namespace per node, each with an empty nft table.
    pub fn create(ids: &[u64]) -> Result<Network, NemesisError> {
        let net = Network { ids: ids.to_vec(), blocked: BTreeSet::new() };
        sh("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        // Bridged frames must not meet the root namespace's iptables (a host firewall
        // with a FORWARD policy of DROP would partition everything); older kernels lack
        // the option, which is fine.
        let _ = sh("ip", &["link", "set", BRIDGE, "type", "bridge", "nf_call_iptables", "0"]);
        sh("ip", &["addr", "add", &format!("{HOST_ADDR}/24"), "dev", BRIDGE])?;
        sh("ip", &["link", "set", BRIDGE, "up"])?;
        for &id in ids {
            let ns = netns_name(id);
            let (host, peer) = (format!("{PREFIX}-h{id}"), format!("{PREFIX}-p{id}"));
            sh("ip", &["netns", "add", &ns])?;
            sh("ip", &["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            sh("ip", &["link", "set", &peer, "netns", &ns])?;
            sh("ip", &["link", "set", &host, "master", BRIDGE, "up"])?;
            sh("ip", &["-n", &ns, "addr", "add", &format!("{}/24", node_ip(id)), "dev", &peer])?;
            sh("ip", &["-n", &ns, "link", "set", &peer, "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            net.apply(id)?;
        }
        Ok(net)
    }

    /// Drops packets from `from` on arrival at `to` (one way).
    pub fn block(&mut self, from: u64, to: u64) -> Result<(), NemesisError> {
        if from != to && self.blocked.insert((from, to)) {
            self.apply(to)?;
        }
        Ok(())
    }

    /// Cuts `a` and `b` apart both ways.
    pub fn cut(&mut self, a: u64, b: u64) -> Result<(), NemesisError> {
        self.block(a, b)?;
        self.block(b, a)
    }

    /// Cuts every node of `side` from every node not in it.
    pub fn split(&mut self, side: &[u64]) -> Result<(), NemesisError> {
        let others: Vec<u64> = self.ids.iter().copied().filter(|id| !side.contains(id)).collect();
        for &a in side {
            for &b in &others {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Removes every drop rule.
    pub fn heal(&mut self) -> Result<(), NemesisError> {
        let touched: BTreeSet<u64> = self.blocked.iter().map(|&(_, to)| to).collect();
        self.blocked.clear();
        for id in touched {
            self.apply(id)?;
        }
        Ok(())
    }

    pub fn blocked(&self) -> &BTreeSet<(u64, u64)> {
        &self.blocked
    }

    /// Replaces node `id`'s table with the rules for what it must not receive, in one
    /// nft transaction.
    fn apply(&self, id: u64) -> Result<(), NemesisError> {
        let sources: Vec<String> =
            self.blocked.iter().filter(|&&(_, to)| to == id).map(|&(from, _)| node_ip(from)).collect();
        let rule =
            if sources.is_empty() { String::new() } else { format!("ip saddr {{ {} }} drop", sources.join(", ")) };
        let ruleset = format!(
            "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n\
             table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {rule}\n  }}\n}}\n"
        );
        sh_with_input("ip", &["netns", "exec", &netns_name(id), "nft", "-f", "-"], Some(&ruleset)).map(|_| ())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        cleanup_leftovers();
    }
}

/// `RUN_DIR`, fresh.
pub fn fresh_run_dir() -> Result<PathBuf, NemesisError> {
    let dir = Path::new(RUN_DIR).to_path_buf();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    Ok(dir)
}
