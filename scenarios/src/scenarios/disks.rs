//! Disks as bad as real ones: fsyncs that stall for seconds, writes and fsyncs that fail.
//! (Every scenario runs on disks with heavy-tailed latency; see `roster_sim::disk_model`.)

use super::{between, chance};
use roster_sim::disk_model::FailOn;
use roster_sim::world::World;

/// One to three servers (the leader half the time) get a slow disk, whose fsyncs stall for
/// 0.2–3 s now and then, for 2–8 s; then 1–3 s of calm; repeat. Three slow disks of five
/// stall commits too, so the leader cannot commit for seconds (its lease holds meanwhile:
/// heartbeat replies do not wait for a disk; see scenarios/README.md).
pub async fn slow_disk(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        let mut victims = Vec::new();
        if chance(0.5) {
            victims.push(w.leader_or_random());
        }
        let extra = between(0..3);
        while victims.len() < 1 + extra as usize {
            let v = w.random_voter();
            if !victims.contains(&v) {
                victims.push(v);
            }
        }
        for v in &victims {
            w.slow_disk(*v);
        }
        w.sleep_ms(between(2_000..8_000)).await;
        w.heal_all();
        w.sleep_ms(between(1_000..3_000)).await;
    }
}

/// A server's disk (the leader's half the time) fails its next write or fsync with EIO:
/// its log fail-stops (nothing more acknowledged, nothing retried) and its node stops.
/// 1–3 s later the machine is power-cycled and the node recovers from what is durable;
/// 2–4 s of calm; repeat.
pub async fn failing_disk(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        let victim = if chance(0.5) { w.leader_or_random() } else { w.random_voter() };
        w.fail_disk(victim, if chance(0.5) { FailOn::NextWrite } else { FailOn::NextFsync });
        w.sleep_ms(between(1_000..3_000)).await;
        w.heal_all();
        w.sleep_ms(between(2_000..4_000)).await;
    }
}
