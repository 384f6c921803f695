//! A Jepsen-style nemesis suite for the real `roster` binary (issue 11).
//!
//! Real `roster node` processes, each in its own network namespace, joined by veth pairs
//! to a bridge; a seeded schedule of faults (nft partitions, SIGSTOP, kill -9, a full
//! disk); a workload on the real client library in this process (the root namespace,
//! which reaches every node); and the history it records checked by the simulator's own
//! checkers (`roster_scenarios::analysis::check` on a `roster_sim::trace::Trace`).
//!
//! - `net`: namespaces, bridge, nft rules, cleanup by name prefix, the run lock.
//! - `nodes`: the node processes, their signals, the tmpfs data directory.
//! - `faults`: the fault kinds and the seeded schedule.
//! - `history`: the one monotonic clock and the shared trace.
//! - `workload`: key/value sessions and process members.
//! - `observer`: leader sampler, per-node event watchers, the final state.
//! - `report`: the run table and write gaps.
//! - `run`: one nemesis run (CI or soak mode); `failover`: the 50-cycle figure beside etcd.

pub mod cli;
pub mod failover;
pub mod faults;
pub mod history;
pub mod net;
pub mod nodes;
pub mod observer;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;

use std::fmt;

/// Why a run could not be carried out (as opposed to a run that found a violation).
#[derive(Debug)]
pub enum NemesisError {
    /// A system command (`ip`, `nft`, `mount`) failed.
    Command { command: String, stderr: String },
    /// Local I/O of the harness itself.
    Io { what: String, source: std::io::Error },
    /// The cluster did not reach a state the harness waits for.
    Stuck(String),
}

impl fmt::Display for NemesisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NemesisError::Command { command, stderr } => {
                write!(f, "`{command}` failed: {}", stderr.trim())
            }
            NemesisError::Io { what, source } => write!(f, "{what}: {source}"),
            NemesisError::Stuck(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for NemesisError {}

/// Runs `work` to its end on a multi-threaded runtime of its own (two workers, as the
/// machines here have two cores), then gives that runtime's tasks 2 s to stop.
pub fn on_own_runtime<F: std::future::Future>(work: F) -> Result<F::Output, NemesisError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_error("building the tokio runtime"))?;
    let out = rt.block_on(work);
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(out)
}

pub fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NemesisError {
    let what = what.into();
    move |source| NemesisError::Io { what, source }
}

/// Why this machine cannot run the suite (`None`: it can): root, `ip` and `nft`.
pub fn missing_prerequisites() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces, nft and tmpfs mounts need root)".into());
    }
    for (program, arg) in [("ip", "-V"), ("nft", "--version"), ("mount", "--version")] {
        let ok = std::process::Command::new(program)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("`{program}` is missing (apt-get install iproute2 nftables)"));
        }
    }
    None
}
