//! What a program under `roster run` uses: the CPU and memory of its process tree (the
//! program and every process under it, as an interpreter's workers), sampled through
//! sysinfo and averaged over the resource window, as a server's probe does for the
//! machine (`server/probe.rs`).

use roster_kernel::ResourceAverage;
use roster_kernel::resource_window::ResourceWindow;
use std::collections::{BTreeMap, BTreeSet};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Samples are taken this often (as a server's).
pub const SAMPLE_EVERY_MS: u64 = 1_000;

/// Most processes one sample counts in a tree: a fork bomb under `roster run` must not
/// make the wrapper's own walk unbounded.
pub const MAX_TREE_PROCESSES: usize = 4_096;

/// One reading of a process tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TreeSample {
    /// Percent of one core, summed over the tree.
    pub cpu_percent: f32,
    /// Resident memory, summed over the tree.
    pub mem_bytes: u64,
    pub processes: usize,
}

pub struct TreeProbe {
    root: Pid,
    sys: System,
}

impl TreeProbe {
    pub fn new(root_pid: u32) -> Self {
        TreeProbe { root: Pid::from_u32(root_pid), sys: System::new() }
    }

    /// The tree's use now (CPU since the previous sample; the first reads 0).
    pub fn sample(&mut self) -> TreeSample {
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        self.sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        // Parents and readings in pid order: the same tree sums the same way every time.
        let readings: BTreeMap<u32, (Option<u32>, f32, u64)> = self
            .sys
            .processes()
            .iter()
            .map(|(pid, p)| (pid.as_u32(), (p.parent().map(Pid::as_u32), p.cpu_usage(), p.memory())))
            .collect();
        let members = tree_of(self.root.as_u32(), &readings);
        let (cpu_percent, mem_bytes) = members
            .iter()
            .filter_map(|pid| readings.get(pid))
            .fold((0.0f32, 0u64), |(cpu, mem), (_, c, m)| (cpu + c.max(0.0), mem.saturating_add(*m)));
        TreeSample { cpu_percent, mem_bytes, processes: members.len() }
    }
}

/// `root` and every process under it (at most `MAX_TREE_PROCESSES`), from each process's
/// parent. Pure, so a test can hand it any table.
fn tree_of(root: u32, readings: &BTreeMap<u32, (Option<u32>, f32, u64)>) -> BTreeSet<u32> {
    let mut members = BTreeSet::new();
    if !readings.contains_key(&root) {
        return members;
    }
    members.insert(root);
    // Grow by whole generations until nothing new joins; bounded by the table and the cap.
    loop {
        let before = members.len();
        for (pid, (parent, _, _)) in readings {
            if members.len() >= MAX_TREE_PROCESSES {
                return members;
            }
            if parent.is_some_and(|p| members.contains(&p)) {
                members.insert(*pid);
            }
        }
        if members.len() == before {
            return members;
        }
    }
}

/// Samples the tree into a window; `average` is what heartbeats carry.
pub struct TreeWindow {
    probe: TreeProbe,
    window: ResourceWindow,
}

impl TreeWindow {
    pub fn new(root_pid: u32, window: ResourceWindow) -> Self {
        TreeWindow { probe: TreeProbe::new(root_pid), window }
    }

    /// Takes one sample at `now_ms` (monotonic) and returns the average over the window.
    pub fn sample(&mut self, now_ms: u64) -> Option<ResourceAverage> {
        let s = self.probe.sample();
        if let Err(e) = self.window.handle_sample(now_ms, s.cpu_percent, s.mem_bytes) {
            tracing::debug!(error = %e, "process tree sample rejected");
        }
        self.window.average(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_the_root_and_everything_under_it_and_nothing_else() {
        let table: BTreeMap<u32, (Option<u32>, f32, u64)> = [
            (1, (None, 0.0, 1)),
            (10, (Some(1), 5.0, 100)),
            (11, (Some(10), 1.0, 10)),
            // A grandchild listed before its parent still joins.
            (5, (Some(12), 1.0, 10)),
            (12, (Some(10), 1.0, 10)),
            (20, (Some(1), 9.0, 999)),
        ]
        .into();
        assert_eq!(tree_of(10, &table), [5, 10, 11, 12].into());
        assert!(tree_of(99, &table).is_empty(), "a root that is gone has no tree");
    }

    #[test]
    fn this_process_reads_its_own_memory() {
        let mut probe = TreeProbe::new(std::process::id());
        let s = probe.sample();
        assert!(s.processes >= 1 && s.mem_bytes > 0, "{s:?}");
    }
}
