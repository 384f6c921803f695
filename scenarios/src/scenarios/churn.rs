//! Member churn: processes that come and go, and paused processes.

use super::{between, chance};
use roster_sim::world::{World, WorldConfig};

/// Shorter process lives and more process workers.
pub fn churn_config(c: &mut WorldConfig) {
    c.process_workers = 12;
    c.kv_workers = 8;
    c.process_life_ms = Some(2_000..8_000);
}

/// The workers churn by themselves (see `churn_config`); the network stays healthy so
/// every removal must be on time and no live process may be expired.
pub async fn process_churn(w: &mut World, fault_ms: u64) {
    w.sleep_ms(fault_ms).await;
}

/// A random process worker's machine is paused for a short time (under the timeout minus
/// one interval: it must stay) or a long one (over timeout plus two intervals: it must go).
pub async fn paused_member(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let workers = w.process_worker_indexes();
    let (interval, timeout) = (w.config.heartbeat_interval_ms, w.config.heartbeat_timeout_ms);
    while w.now_ms() < end {
        let index = workers[between(0..workers.len() as u64) as usize];
        let pause = if chance(0.5) {
            between(200..timeout - interval - 300)
        } else {
            between(timeout + 2 * interval + 500..timeout + 4 * interval)
        };
        w.pause_worker(index);
        w.sleep_ms(pause).await;
        w.resume_worker(index);
        w.sleep_ms(between(500..1_500)).await;
    }
    w.heal_all();
}
