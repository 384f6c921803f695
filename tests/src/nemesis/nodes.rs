//! The node processes of a run: `roster node` in its own namespace (entered with
//! setns(2) between fork and exec), data directories and logs under the run directory,
//! one node's data directory on a small tmpfs for the full-disk fault.

use super::net::{self, RUN_DIR, TMPFS_SOURCE};
use super::{NemesisError, io_error};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Every node listens here, on its own address.
pub const NODE_PORT: u16 = 7000;
/// The full-disk node's data directory: room for its WAL segments (8 MiB each,
/// preallocated) and snapshots, small enough to fill in a moment.
pub const TMPFS_SIZE_MB: u64 = 64;
pub const TOKEN: &str = "nemesis-token-0123456789";

pub fn node_addr(id: u64) -> String {
    format!("{}:{NODE_PORT}", net::node_ip(id))
}

struct NodeProc {
    child: Option<Child>,
    paused: bool,
}

pub struct Nodes {
    pub ids: Vec<u64>,
    dir: PathBuf,
    token_file: PathBuf,
    peers: String,
    /// The node whose data directory is a tmpfs, if any.
    pub disk_node: Option<u64>,
    procs: BTreeMap<u64, NodeProc>,
}

impl Nodes {
    /// Starts nodes `ids` (one initial cluster) in their namespaces; `disk_node`'s data
    /// directory is mounted as a tmpfs first.
    pub fn start(ids: &[u64], disk_node: Option<u64>) -> Result<Nodes, NemesisError> {
        let dir = Path::new(RUN_DIR).to_path_buf();
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN).map_err(io_error("writing the token file"))?;
        std::fs::write(dir.join("peer-key"), crate::TEST_PEER_KEY).map_err(io_error("writing the peer key"))?;
        let peers = ids.iter().map(|id| format!("{id}={}", node_addr(*id))).collect::<Vec<_>>().join(",");
        let mut nodes = Nodes { ids: ids.to_vec(), dir, token_file, peers, disk_node, procs: BTreeMap::new() };
        if let Some(id) = disk_node {
            let data = nodes.data_dir(id);
            std::fs::create_dir_all(&data).map_err(io_error(format!("creating {}", data.display())))?;
            let size = format!("size={TMPFS_SIZE_MB}m");
            net::sh("mount", &["-t", "tmpfs", "-o", &size, TMPFS_SOURCE, &data.to_string_lossy()])?;
        }
        for &id in ids {
            nodes.spawn(id)?;
        }
        Ok(nodes)
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.ids.iter().map(|id| node_addr(*id)).collect()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.procs.get(&id).is_some_and(|p| p.child.is_some())
    }

    /// (Re)starts node `id` with its data directory, in its namespace.
    pub fn spawn(&mut self, id: u64) -> Result<(), NemesisError> {
        let ns_path = format!("/var/run/netns/{}", net::netns_name(id));
        let ns = std::fs::File::open(&ns_path).map_err(io_error(format!("opening {ns_path}")))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .map_err(io_error("opening a node log"))?;
        let mut cmd = Command::new(crate::roster_bin());
        cmd.arg("node")
            .args(["--id", &id.to_string(), "--listen", &node_addr(id)])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--token-file")
            .arg(&self.token_file)
            .args(["--peers", &self.peers, "--bootstrap"])
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let fd = ns.as_raw_fd();
        // SAFETY: setns(2) only, between fork and exec; `ns` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_error(format!("starting node {id}")))?;
        drop(ns);
        self.procs.insert(id, NodeProc { child: Some(child), paused: false });
        Ok(())
    }

    /// SIGKILL and reap (a paused node too).
    pub fn kill9(&mut self, id: u64) {
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            p.paused = false;
        }
    }

    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP);
        if let Some(p) = self.procs.get_mut(&id) {
            p.paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
        if let Some(p) = self.procs.get_mut(&id) {
            p.paused = false;
        }
    }

    /// Resumes every paused node.
    pub fn resume_all(&mut self) {
        let paused: Vec<u64> = self.procs.iter().filter(|(_, p)| p.paused).map(|(id, _)| *id).collect();
        for id in paused {
            self.resume(id);
        }
    }

    /// Whether the node exited by itself (reaped if so); `Some(status)` then.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let p = self.procs.get_mut(&id)?;
        let status = p.child.as_mut()?.try_wait().ok().flatten()?;
        p.child = None;
        Some(status)
    }

    fn signal(&self, id: u64, signal: i32) {
        if let Some(c) = self.procs.get(&id).and_then(|p| p.child.as_ref()) {
            // SAFETY: kill(2) of a child we started and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Fills the tmpfs data directory of the disk node until the kernel says ENOSPC;
    /// returns the filler's path and size.
    pub fn fill_disk(&self) -> Result<(PathBuf, u64), NemesisError> {
        use std::io::Write as _;
        let id = self.disk_node.ok_or_else(|| NemesisError::Stuck("no node has a tmpfs data directory".into()))?;
        let path = self.data_dir(id).join("nemesis-filler");
        let mut file = std::fs::File::create(&path).map_err(io_error(format!("creating {}", path.display())))?;
        let chunk = vec![0xa5u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(NemesisError::Io { what: format!("filling {}", path.display()), source: e }),
            }
        }
        let _ = file.sync_all();
        Ok((path, written))
    }

    /// Frees what `fill_disk` took.
    pub fn free_disk(&self) {
        if let Some(id) = self.disk_node {
            let _ = std::fs::remove_file(self.data_dir(id).join("nemesis-filler"));
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
        if let Some(id) = self.disk_node {
            let _ = net::sh("umount", &["-l", &self.data_dir(id).to_string_lossy()]);
        }
    }
}
