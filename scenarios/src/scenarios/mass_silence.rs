//! Mass silence: a share of the members too large to believe falls silent at once, first
//! briefly (their machines cut off from the network, a partition that heals within the
//! expiry brake's hold: nobody may be expired, and the brake's alarm must rise), then for
//! good (every process worker's machine paused past the timeout, a mass crash: everyone
//! removed within the timeout + 1 s, which the crash-removal checker holds them to).
//!
//! The expiry brake needs at least 50 members (`ExpiryGuardConfig::default`), so this
//! world has 60 process workers besides the 5 servers.

use super::between;
use roster_sim::world::{World, WorldConfig};

/// Enough members for the brake, fewer key/value workers to keep the run cheap.
pub fn mass_silence_config(c: &mut WorldConfig) {
    c.process_workers = 60;
    c.kv_workers = 4;
}

/// How long the brief silence lasts: longer than timeout − interval + 300 ms, so the
/// members last heard earliest come due (and the brake must hold) before it ends; shorter
/// than timeout + hold − interval − 300 ms, so that every member's silence, as the leader
/// sees it, ends within the brake's cover (hold 750 ms; its last heartbeat was at most
/// one interval before the cut). A member whose next heartbeat comes later than one
/// interval after the heal is not judged by the checker.
fn brief_silence_ms(w: &World) -> std::ops::Range<u64> {
    let (interval, timeout) = (w.config.heartbeat_interval_ms, w.config.heartbeat_timeout_ms);
    let hold = roster_kernel::ExpiryGuardConfig::default().brake_hold_ms;
    timeout - interval + 300..timeout + hold - interval - 300
}

pub async fn mass_silence(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let (interval, timeout) = (w.config.heartbeat_interval_ms, w.config.heartbeat_timeout_ms);
    let mut workers = w.process_worker_indexes();
    // Members: the servers and the process workers. More than a third of them, chosen by
    // the seed, go silent together.
    let members = workers.len() as u64 + w.config.servers;
    let share = between(members / 3 + 2..workers.len() as u64 * 2 / 3);
    let mut silent = Vec::new();
    while (silent.len() as u64) < share {
        let i = between(0..workers.len() as u64) as usize;
        silent.push(workers.swap_remove(i));
    }
    silent.sort_unstable();

    let from_ms = w.now_ms();
    w.clog_workers(&silent);
    w.sleep_ms(between(brief_silence_ms(w))).await;
    w.unclog_workers(&silent);
    w.record_mass_silence(&silent, from_ms);

    // Past the brake's window (a timeout after the last expiry or silence), every worker
    // goes silent for good: a mass crash, recorded as such on resume.
    w.sleep_ms(timeout + 2 * interval).await;
    let all = w.process_worker_indexes();
    for &i in &all {
        w.pause_worker(i);
    }
    w.sleep_ms(timeout + 2 * interval + 1_500).await;
    for &i in &all {
        w.resume_worker(i);
    }
    let left = end.saturating_sub(w.now_ms());
    w.sleep_ms(left).await;
}
