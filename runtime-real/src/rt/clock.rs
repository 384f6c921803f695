//! Time for the node: a monotonic millisecond count for every rule (the kernel's `now_ms`),
//! and Unix time only for display fields (start times, tombstone times).
//!
//! Both read tokio's clock, which is madsim's simulated clock under `cfg(madsim)`; madsim
//! also intercepts the OS clock behind `SystemTime`, so simulated runs stay deterministic.

use std::time::Duration;

/// Milliseconds since this clock was made; never goes back.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock { origin: tokio::time::Instant::now() }
    }

    pub fn now_ms(&self) -> u64 {
        tokio::time::Instant::now().saturating_duration_since(self.origin).as_millis() as u64
    }

    pub async fn sleep_until_ms(&self, at_ms: u64) {
        tokio::time::sleep_until(self.origin + Duration::from_millis(at_ms)).await;
    }
}

/// Wall-clock Unix time in milliseconds, for display, tombstone ages and log rate limits
/// (where a clock step costs at most one log line too many or too few) only.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
