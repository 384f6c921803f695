//! CPU and memory use averaged over a sliding window, in bounded memory.
//!
//! The window is a ring of `window_ms / bucket_ms` buckets; each holds the sum and count
//! of the samples whose time fell in its `bucket_ms` slice. A sample costs O(1); memory is
//! fixed at construction whatever the sample rate. [`ResourceWindow::average`] averages
//! every sample in the buckets of the most recent `window_ms`: the bucket holding `now_ms`
//! and the `buckets - 1` before it. So the window's edge moves in steps of `bucket_ms`,
//! and the oldest sample counted is between `window_ms - bucket_ms` and `window_ms` old.
//!
//! Sums are integers (CPU in thousandths of a percent), so the average is exact up to the
//! final rounding to the nearest whole unit, and the same samples give the same average on
//! every platform.

use crate::model::ResourceAverage;

/// The resource window of the design: averages over the last minute.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
pub const DEFAULT_BUCKET_MS: u64 = 1_000;
/// Bound on the ring's size, so a misconfiguration cannot allocate without limit.
pub const MAX_BUCKETS: u64 = 86_400;
/// No machine has this much CPU (16384 cores); a larger reading is a probe bug.
pub const MAX_CPU_PERCENT: f32 = 1_638_400.0;
/// No machine has this much memory (16 PiB); a larger reading is a probe bug.
pub const MAX_MEM_BYTES: u64 = 1 << 54;

const CPU_MILLI_PER_PERCENT: u128 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowConfigError {
    #[error("resource bucket_ms is 0: set it to at least 1 (default 1000)")]
    ZeroBucket,
    #[error("resource window_ms is 0: set it to at least bucket_ms (default 60000)")]
    ZeroWindow,
    #[error("resource window_ms {window_ms} is not a multiple of bucket_ms {bucket_ms}")]
    NotAMultiple { window_ms: u64, bucket_ms: u64 },
    #[error(
        "resource window_ms {window_ms} / bucket_ms {bucket_ms} needs {buckets} buckets, over the limit of {max}: \
         use larger buckets"
    )]
    TooManyBuckets { window_ms: u64, bucket_ms: u64, buckets: u64, max: u64 },
}

/// Why a sample was refused. A refused sample changes nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error(
        "sample at {now_ms} ms is older than the last sample at {last_ms} ms: the driver's clock must be monotonic"
    )]
    OutOfOrder { now_ms: u64, last_ms: u64 },
    #[error("CPU sample {cpu_percent} is not a number")]
    CpuNotFinite { cpu_percent: f32 },
    #[error("CPU sample {cpu_percent}% is negative")]
    CpuNegative { cpu_percent: f32 },
    #[error("CPU sample {cpu_percent}% is over the plausible maximum of {max}%: the probe is broken")]
    CpuAbsurd { cpu_percent: f32, max: f32 },
    #[error("memory sample {mem_bytes_used} bytes is over the plausible maximum of {max} bytes: the probe is broken")]
    MemAbsurd { mem_bytes_used: u64, max: u64 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// `time_ms / bucket_ms` of the samples in it; meaningful only when `count > 0`.
    index: u64,
    count: u64,
    cpu_milli_sum: u128,
    mem_bytes_sum: u128,
}

#[derive(Clone, Debug)]
pub struct ResourceWindow {
    window_ms: u64,
    bucket_ms: u64,
    buckets: Vec<Bucket>,
    last_sample_ms: Option<u64>,
}

impl Default for ResourceWindow {
    fn default() -> Self {
        ResourceWindow::new(DEFAULT_WINDOW_MS, DEFAULT_BUCKET_MS).expect("the defaults are valid")
    }
}

impl ResourceWindow {
    /// `window_ms` must be a positive multiple of `bucket_ms`, with at most
    /// [`MAX_BUCKETS`] buckets.
    pub fn new(window_ms: u64, bucket_ms: u64) -> Result<Self, WindowConfigError> {
        if bucket_ms == 0 {
            return Err(WindowConfigError::ZeroBucket);
        }
        if window_ms == 0 {
            return Err(WindowConfigError::ZeroWindow);
        }
        if !window_ms.is_multiple_of(bucket_ms) {
            return Err(WindowConfigError::NotAMultiple { window_ms, bucket_ms });
        }
        let buckets = window_ms / bucket_ms;
        if buckets > MAX_BUCKETS {
            return Err(WindowConfigError::TooManyBuckets { window_ms, bucket_ms, buckets, max: MAX_BUCKETS });
        }
        let count = usize::try_from(buckets).expect("MAX_BUCKETS fits in usize");
        Ok(ResourceWindow { window_ms, bucket_ms, buckets: vec![Bucket::default(); count], last_sample_ms: None })
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub fn bucket_ms(&self) -> u64 {
        self.bucket_ms
    }

    pub fn last_sample_ms(&self) -> Option<u64> {
        self.last_sample_ms
    }

    /// Adds one reading taken at `now_ms`: CPU in percent of one core (a machine with n
    /// cores reads up to n × 100), memory in bytes. Samples must come in time order
    /// (equal times are fine).
    pub fn handle_sample(&mut self, now_ms: u64, cpu_percent: f32, mem_bytes_used: u64) -> Result<(), SampleError> {
        if let Some(last_ms) = self.last_sample_ms
            && now_ms < last_ms
        {
            return Err(SampleError::OutOfOrder { now_ms, last_ms });
        }
        let cpu_milli = cpu_milli(cpu_percent)?;
        if mem_bytes_used > MAX_MEM_BYTES {
            return Err(SampleError::MemAbsurd { mem_bytes_used, max: MAX_MEM_BYTES });
        }
        let index = now_ms / self.bucket_ms;
        let slot = self.slot(index);
        let bucket = &mut self.buckets[slot];
        if bucket.count == 0 || bucket.index != index {
            // The slot holds a bucket a whole window old (or nothing): reuse it.
            assert!(bucket.count == 0 || bucket.index < index, "resource window: bucket from the future");
            *bucket = Bucket { index, ..Bucket::default() };
        }
        // Cannot overflow: each term is < 2^54, and a u128 holds 2^74 of them.
        bucket.count += 1;
        bucket.cpu_milli_sum += u128::from(cpu_milli);
        bucket.mem_bytes_sum += u128::from(mem_bytes_used);
        self.last_sample_ms = Some(now_ms);
        Ok(())
    }

    /// The average of the samples in the window ending at `now_ms`, rounded to the
    /// nearest whole percent and byte; `None` when the window holds no sample.
    pub fn average(&self, now_ms: u64) -> Option<ResourceAverage> {
        let (count, cpu_milli_sum, mem_bytes_sum) = self.sums(now_ms);
        if count == 0 {
            return None;
        }
        let count = u128::from(count);
        let cpu = rounded_div(cpu_milli_sum, count * CPU_MILLI_PER_PERCENT);
        let mem = rounded_div(mem_bytes_sum, count);
        // Each is an average of values bounded by MAX_CPU_PERCENT / MAX_MEM_BYTES.
        Some(ResourceAverage {
            cpu_percent_avg: u32::try_from(cpu).expect("average CPU is bounded by MAX_CPU_PERCENT"),
            mem_bytes_used_avg: u64::try_from(mem).expect("average memory is bounded by MAX_MEM_BYTES"),
        })
    }

    /// How many samples the window ending at `now_ms` holds.
    pub fn sample_count(&self, now_ms: u64) -> u64 {
        self.sums(now_ms).0
    }

    /// Forgets every sample (e.g. after the probe restarts).
    pub fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.last_sample_ms = None;
    }

    fn sums(&self, now_ms: u64) -> (u64, u128, u128) {
        let newest = now_ms / self.bucket_ms;
        let span = self.buckets.len() as u64;
        let mut totals = (0u64, 0u128, 0u128);
        for b in &self.buckets {
            if b.count > 0 && b.index <= newest && newest - b.index < span {
                totals.0 += b.count;
                totals.1 += b.cpu_milli_sum;
                totals.2 += b.mem_bytes_sum;
            }
        }
        totals
    }

    fn slot(&self, index: u64) -> usize {
        // The remainder is below `buckets.len()`, which is a usize.
        (index % self.buckets.len() as u64) as usize
    }
}

/// A CPU reading in thousandths of a percent, after checking it is plausible.
fn cpu_milli(cpu_percent: f32) -> Result<u64, SampleError> {
    if !cpu_percent.is_finite() {
        return Err(SampleError::CpuNotFinite { cpu_percent });
    }
    if cpu_percent < 0.0 {
        return Err(SampleError::CpuNegative { cpu_percent });
    }
    if cpu_percent > MAX_CPU_PERCENT {
        return Err(SampleError::CpuAbsurd { cpu_percent, max: MAX_CPU_PERCENT });
    }
    // In range 0..=1.6e9 after scaling: the cast is exact for the rounded value.
    Ok((f64::from(cpu_percent) * 1_000.0).round() as u64)
}

/// `num / den` rounded to nearest, halves up.
fn rounded_div(num: u128, den: u128) -> u128 {
    (num + den / 2) / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn config_errors() {
        assert_eq!(ResourceWindow::new(60_000, 0).unwrap_err(), WindowConfigError::ZeroBucket);
        assert_eq!(ResourceWindow::new(0, 1_000).unwrap_err(), WindowConfigError::ZeroWindow);
        assert_eq!(
            ResourceWindow::new(60_000, 7_000).unwrap_err(),
            WindowConfigError::NotAMultiple { window_ms: 60_000, bucket_ms: 7_000 }
        );
        let err = ResourceWindow::new(u64::MAX - u64::MAX % 2, 2).unwrap_err();
        assert!(matches!(err, WindowConfigError::TooManyBuckets { .. }));
        assert!(err.to_string().contains("larger buckets"));
        let w = ResourceWindow::default();
        assert_eq!((w.window_ms(), w.bucket_ms()), (60_000, 1_000));
    }

    #[test]
    fn sample_errors() {
        let mut w = ResourceWindow::default();
        assert!(matches!(w.handle_sample(0, f32::NAN, 0), Err(SampleError::CpuNotFinite { .. })));
        assert!(matches!(w.handle_sample(0, f32::INFINITY, 0), Err(SampleError::CpuNotFinite { .. })));
        assert_eq!(w.handle_sample(0, -0.5, 0), Err(SampleError::CpuNegative { cpu_percent: -0.5 }));
        assert_eq!(w.handle_sample(0, 2e6, 0), Err(SampleError::CpuAbsurd { cpu_percent: 2e6, max: MAX_CPU_PERCENT }));
        assert_eq!(
            w.handle_sample(0, 1.0, u64::MAX),
            Err(SampleError::MemAbsurd { mem_bytes_used: u64::MAX, max: MAX_MEM_BYTES })
        );
        assert_eq!(w.average(0), None, "refused samples change nothing");
        w.handle_sample(500, 10.0, 100).unwrap();
        w.handle_sample(500, 20.0, 200).unwrap();
        let err = w.handle_sample(499, 10.0, 100).unwrap_err();
        assert_eq!(err, SampleError::OutOfOrder { now_ms: 499, last_ms: 500 });
        assert!(err.to_string().contains("499") && err.to_string().contains("500"));
        assert_eq!(w.average(500), Some(ResourceAverage { cpu_percent_avg: 15, mem_bytes_used_avg: 150 }));
        // Extremes are accepted.
        w.handle_sample(600, MAX_CPU_PERCENT, MAX_MEM_BYTES).unwrap();
        assert!(w.average(600).is_some());
    }

    #[test]
    fn window_slides_by_buckets() {
        let mut w = ResourceWindow::new(3_000, 1_000).unwrap();
        w.handle_sample(0, 90.0, 900).unwrap();
        w.handle_sample(1_500, 30.0, 300).unwrap();
        assert_eq!(w.average(2_999).unwrap().cpu_percent_avg, 60);
        // At 3000 the bucket [0, 1000) leaves the window.
        assert_eq!(w.average(3_000).unwrap().cpu_percent_avg, 30);
        assert_eq!(w.sample_count(3_000), 1);
        assert_eq!(w.average(3_999).unwrap().mem_bytes_used_avg, 300);
        assert_eq!(w.average(4_000), None);
        // A sample long after reuses slots holding old buckets.
        w.handle_sample(10_000, 12.4, 7).unwrap();
        assert_eq!(w.average(10_000), Some(ResourceAverage { cpu_percent_avg: 12, mem_bytes_used_avg: 7 }));
        w.clear();
        assert_eq!((w.average(10_000), w.last_sample_ms()), (None, None));
        w.handle_sample(1, 0.5, 0).unwrap();
        assert_eq!(w.average(1).unwrap().cpu_percent_avg, 1, "halves round up");
    }

    #[test]
    fn memory_is_bounded_by_buckets() {
        let mut w = ResourceWindow::new(10_000, 1_000).unwrap();
        for t in 0..100_000u64 {
            w.handle_sample(t, 50.0, 1 << 30).unwrap();
        }
        assert_eq!(w.buckets.len(), 10);
        assert_eq!(w.sample_count(99_999), 10_000);
        assert_eq!(w.average(99_999), Some(ResourceAverage { cpu_percent_avg: 50, mem_bytes_used_avg: 1 << 30 }));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Against a naive average of every kept sample whose bucket is in the window.
        #[test]
        fn matches_naive_average(bucket_ms in 1u64..500, buckets in 1u64..20,
                                 samples in proptest::collection::vec((0u64..700, 0.0f32..6_400.0, 0u64..(1 << 40)), 0..80),
                                 probes in proptest::collection::vec(0u64..2_000, 1..8)) {
            let window_ms = bucket_ms * buckets;
            let mut w = ResourceWindow::new(window_ms, bucket_ms).unwrap();
            let mut kept: Vec<(u64, f32, u64)> = Vec::new();
            let mut now = 0u64;
            let mut probes = probes.into_iter();
            for (step, cpu, mem) in samples {
                now += step;
                w.handle_sample(now, cpu, mem).unwrap();
                kept.push((now, cpu, mem));
                if step % 3 == 0 && let Some(ahead) = probes.next() {
                    let at = now + ahead;
                    let in_window: Vec<_> = kept.iter()
                        .filter(|(t, _, _)| at / bucket_ms - t / bucket_ms < buckets)
                        .collect();
                    let naive = if in_window.is_empty() { None } else {
                        let n = in_window.len() as f64;
                        let cpu: f64 = in_window.iter().map(|s| f64::from(s.1)).sum::<f64>() / n;
                        let mem: f64 = in_window.iter().map(|s| s.2 as f64).sum::<f64>() / n;
                        Some((cpu, mem))
                    };
                    match (w.average(at), naive) {
                        (None, None) => {}
                        (Some(got), Some((cpu, mem))) => {
                            prop_assert!((f64::from(got.cpu_percent_avg) - cpu).abs() <= 0.5 + 1e-3,
                                "cpu {} vs {}", got.cpu_percent_avg, cpu);
                            prop_assert!((got.mem_bytes_used_avg as f64 - mem).abs() <= 0.5 + mem * 1e-12,
                                "mem {} vs {}", got.mem_bytes_used_avg, mem);
                        }
                        (got, want) => prop_assert!(false, "window {:?} vs naive {:?}", got, want),
                    }
                    prop_assert_eq!(w.sample_count(at), in_window.len() as u64);
                }
            }
        }
    }
}
