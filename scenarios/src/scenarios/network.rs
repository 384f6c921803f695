//! Network faults: partitions, loss and latency, flapping links.

use super::{between, chance};
use roster_sim::world::World;

/// Isolates whoever leads for 2–6 s, heals, lets it settle 2–4 s; repeats.
pub async fn leader_partition(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        let leader = w.leader_or_random();
        w.partition(&[leader], false);
        w.sleep_ms(between(2_000..6_000)).await;
        w.heal_all();
        w.sleep_ms(between(2_000..4_000)).await;
    }
}

/// Loss of 1–10 % and latency up to 20–80 ms on every link, changing every 3–8 s.
pub async fn lossy_network(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        let max_latency = between(20..80);
        let loss = between(1..10) as f64 / 100.0;
        w.set_network(1..max_latency, loss);
        w.sleep_ms(between(3_000..8_000)).await;
    }
    w.heal_all();
}

/// A random minority (one or two of five) is cut off for 3–6 s; sometimes only one way.
pub async fn minority_partition(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let n = w.config.servers;
    while w.now_ms() < end {
        let size = between(1..(n - 1) / 2 + 1);
        let mut side = Vec::new();
        while (side.len() as u64) < size {
            let id = w.random_voter();
            if !side.contains(&id) {
                side.push(id);
            }
        }
        side.sort_unstable();
        w.partition(&side, chance(0.25));
        w.sleep_ms(between(3_000..6_000)).await;
        w.heal_all();
        w.sleep_ms(between(1_500..3_000)).await;
    }
}

/// Every 200–800 ms a random server link is cut (one way or both) or everything heals.
pub async fn flapping_links(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let n = w.config.servers;
    while w.now_ms() < end {
        if chance(0.2) {
            w.heal_all();
        } else {
            let a = between(1..n + 1);
            let b = between(1..n + 1);
            if a != b {
                w.cut(a, b, chance(0.5));
            }
        }
        w.sleep_ms(between(200..800)).await;
    }
    w.heal_all();
}
