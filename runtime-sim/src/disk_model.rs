//! How slow and how faulty a simulated server's disk is: the `DiskModel` the world gives
//! each server's `MemDisk` (see `roster_real::storage::mem_disk` for what latency and a
//! failure mean there).
//!
//! # The distribution, per server
//!
//! At world start each server draws a profile from the run's seed:
//! - `fsync_median_us`, log-uniform in 200 µs – 2 ms (a fast NVMe with a write cache to a
//!   slow cloud volume);
//! - an fsync (of a file or of the directory) then takes `median × e^(σ·Z)` with
//!   `Z ~ N(0, 1)` and `σ = 0.5` (the body: p50 = median, p99 ≈ 3.2 × median), except that
//!   one fsync in 100 comes from a Pareto tail instead: `x_min = 4 × median`, `α = 1.3`,
//!   capped at 100 ms (p99.9 of all fsyncs is then ~15–40 × the median, as measured on
//!   shared cloud disks);
//! - a write goes to the page cache: 2 µs plus 1 ns per byte, times `e^(0.3·Z)`; a length
//!   change (`set_len`) is an inode update there: 2 µs times `e^(0.3·Z)`. Either can fail
//!   as a write (`FailOn::NextWrite`).
//!
//! Faults, switched on and off by scenarios through [`DiskFaults`]:
//! - **stalls** (`slow-disk`): while on, an fsync issued after the next stall time stalls
//!   for 0.2–3 s (uniform); the next stall time is 0.5–4 s after that stall ends;
//! - **EIO** (`failing-disk`): armed for the node's next write or next fsync, which then
//!   fails; one shot.
//!
//! Every draw comes from the model's own splitmix64 stream, seeded from madsim's RNG when
//! the server is created, so a node's disk draws do not depend on how other machines'
//! draws interleave with it, and a run stays a function of its seed.

use madsim::time::Instant;
use roster_real::storage::{DiskModel, DiskOp, Draw};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const FSYNC_MEDIAN_US: (f64, f64) = (200.0, 2_000.0);
const FSYNC_SIGMA: f64 = 0.5;
const TAIL_EVERY: u64 = 100;
const TAIL_XMIN_MEDIANS: f64 = 4.0;
const TAIL_ALPHA: f64 = 1.3;
const TAIL_CAP_US: f64 = 100_000.0;
const WRITE_BASE_NS: f64 = 2_000.0;
const WRITE_NS_PER_BYTE: f64 = 1.0;
const WRITE_SIGMA: f64 = 0.3;
/// How long a stall holds an fsync.
pub const STALL_MS: (u64, u64) = (200, 3_000);
/// Time from the end of one stall to the next, while the disk is slow.
pub const STALL_GAP_MS: (u64, u64) = (500, 4_000);

/// The model's draws: the kernel's SplitMix64 stream (`roster_kernel::rng::Rng`), with the
/// shapes a disk model needs on top.
#[derive(Clone, Debug)]
pub struct SplitMix(roster_kernel::rng::Rng);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(roster_kernel::rng::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Which operation an armed EIO hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    NextWrite,
    NextFsync,
}

/// The faults a scenario has switched on for one server's disk.
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// Fsyncs stall now and then while set.
    pub slow: bool,
    /// The next operation of this kind fails with EIO (then disarms).
    pub fail: Option<FailOn>,
    /// What the armed EIO hit, once it has (for the world's notes).
    pub failed_op: Option<String>,
}

/// Shared between the world (which switches faults) and the server's disk model.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch(Arc<Mutex<DiskFaults>>);

impl FaultSwitch {
    pub fn lock(&self) -> MutexGuard<'_, DiskFaults> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One server's disk: its profile, its random stream and its fault switches.
pub struct SimDiskModel {
    rng: SplitMix,
    fsync_median_us: f64,
    fsyncs: u64,
    faults: FaultSwitch,
    next_stall_at: Option<Instant>,
}

impl SimDiskModel {
    /// Draws the profile from `seed`.
    pub fn new(seed: u64, faults: FaultSwitch) -> SimDiskModel {
        let mut rng = SplitMix::new(seed);
        let (lo, hi) = FSYNC_MEDIAN_US;
        let fsync_median_us = (lo.ln() + rng.unit() * (hi.ln() - lo.ln())).exp();
        SimDiskModel { rng, fsync_median_us, fsyncs: 0, faults, next_stall_at: None }
    }

    pub fn fsync_median_us(&self) -> f64 {
        self.fsync_median_us
    }

    fn fsync_us(&mut self) -> f64 {
        self.fsyncs += 1;
        let z = self.rng.normal();
        let tail = self.rng.next_u64().is_multiple_of(TAIL_EVERY);
        if tail {
            let x_min = TAIL_XMIN_MEDIANS * self.fsync_median_us;
            (x_min / self.rng.unit().powf(1.0 / TAIL_ALPHA)).min(TAIL_CAP_US)
        } else {
            self.fsync_median_us * (FSYNC_SIGMA * z).exp()
        }
    }

    /// A stall for the fsync issued now, if one is due.
    fn stall(&mut self, slow: bool) -> Option<Duration> {
        if !slow {
            self.next_stall_at = None;
            return None;
        }
        let now = Instant::now();
        let at = *self.next_stall_at.get_or_insert_with(|| now + Duration::from_millis(self.rng.between(STALL_GAP_MS)));
        if now < at {
            return None;
        }
        let stall = Duration::from_millis(self.rng.between(STALL_MS));
        self.next_stall_at = Some(now + stall + Duration::from_millis(self.rng.between(STALL_GAP_MS)));
        Some(stall)
    }
}

impl DiskModel for SimDiskModel {
    fn draw(&mut self, op: DiskOp<'_>) -> Draw {
        let switch = self.faults.clone();
        let mut faults = switch.lock();
        let (is_fsync, latency) = match op {
            DiskOp::Write { bytes, .. } => {
                let ns = (WRITE_BASE_NS + WRITE_NS_PER_BYTE * bytes as f64) * (WRITE_SIGMA * self.rng.normal()).exp();
                (false, Duration::from_nanos(ns as u64))
            }
            // A length change updates the inode in the page cache: a write's fixed cost.
            DiskOp::SetLen { .. } => {
                let ns = WRITE_BASE_NS * (WRITE_SIGMA * self.rng.normal()).exp();
                (false, Duration::from_nanos(ns as u64))
            }
            DiskOp::SyncData { .. } | DiskOp::SyncDir => {
                let us = self.fsync_us();
                let base = Duration::from_micros(us as u64);
                (true, base + self.stall(faults.slow).unwrap_or(Duration::ZERO))
            }
        };
        let fail = match faults.fail {
            Some(FailOn::NextWrite) => !is_fsync,
            Some(FailOn::NextFsync) => is_fsync,
            None => false,
        };
        if fail {
            faults.fail = None;
            faults.failed_op = Some(format!("{op:?}"));
        }
        Draw { latency, fail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_change_costs_a_writes_fixed_time_and_fails_as_a_write() {
        let faults = FaultSwitch::default();
        let mut m = SimDiskModel::new(7, faults.clone());
        let draws: Vec<Draw> = (0..1000).map(|_| m.draw(DiskOp::SetLen { name: "wal-1.log", len: 4096 })).collect();
        let mean_ns = draws.iter().map(|d| d.latency.as_nanos() as f64).sum::<f64>() / 1000.0;
        assert!(mean_ns > 0.8 * WRITE_BASE_NS && mean_ns < 1.5 * WRITE_BASE_NS, "mean {mean_ns} ns");
        assert!(draws.iter().all(|d| !d.fail));
        faults.lock().fail = Some(FailOn::NextWrite);
        assert!(m.draw(DiskOp::SetLen { name: "wal-1.log", len: 0 }).fail);
        assert!(faults.lock().fail.is_none(), "one shot");
    }

    #[test]
    fn fsync_latency_has_a_heavy_tail() {
        let mut m = SimDiskModel::new(7, FaultSwitch::default());
        let mut v: Vec<f64> = (0..100_000).map(|_| m.fsync_us()).collect();
        v.sort_by(f64::total_cmp);
        let median = m.fsync_median_us();
        let (p50, p99, p999) = (v[50_000], v[99_000], v[99_900]);
        assert!((p50 / median - 1.0).abs() < 0.1, "p50 {p50} vs median {median}");
        assert!(p99 > 2.5 * median && p99 < 6.0 * median, "p99 {p99} vs median {median}");
        assert!(p999 > 10.0 * median, "p99.9 {p999} vs median {median}");
        assert!(v[v.len() - 1] <= TAIL_CAP_US);
    }
}
