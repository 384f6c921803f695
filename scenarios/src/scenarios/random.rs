//! A seeded mix of every fault.

use super::{between, chance};
use roster_sim::disk_model::FailOn;
use roster_sim::world::World;

/// Each step picks one fault at random, holds it 0.5–5 s, and heals with probability 0.6
/// (otherwise the next fault piles on); everything heals at the end.
pub async fn random_faults(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let n = w.config.servers;
    let workers = w.process_worker_indexes();
    while w.now_ms() < end {
        match between(0..11) {
            0 => {
                let leader = w.leader_or_random();
                w.partition(&[leader], chance(0.3));
            }
            1 => {
                let a = w.random_voter();
                let b = w.random_voter();
                if a != b {
                    w.partition(&[a, b], chance(0.3));
                }
            }
            2 => {
                let (a, b) = (between(1..n + 1), between(1..n + 1));
                if a != b {
                    w.cut(a, b, chance(0.5));
                }
            }
            3 => w.set_network(1..between(10..100), between(0..8) as f64 / 100.0),
            4 => {
                let victim = w.leader_or_random();
                super::crashes::kill(w, victim).await;
            }
            5 => {
                let victim = w.random_voter();
                super::crashes::kill(w, victim).await;
            }
            6 => {
                let victim = w.leader_or_random();
                w.pause_server(victim);
            }
            7 => {
                let victim = w.random_voter();
                w.clog_server(victim);
            }
            8 => {
                let victim = if chance(0.5) { w.leader_or_random() } else { w.random_voter() };
                w.slow_disk(victim);
            }
            9 => {
                let victim = w.random_voter();
                w.fail_disk(victim, if chance(0.5) { FailOn::NextWrite } else { FailOn::NextFsync });
            }
            _ => {
                if !workers.is_empty() {
                    let index = workers[between(0..workers.len() as u64) as usize];
                    w.pause_worker(index);
                }
            }
        }
        w.sleep_ms(between(500..5_000)).await;
        if chance(0.6) {
            w.heal_all();
            w.sleep_ms(between(1_000..3_000)).await;
        }
    }
    w.heal_all();
}
