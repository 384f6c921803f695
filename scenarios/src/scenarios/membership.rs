//! Raft membership changes under load.

use super::between;
use roster_sim::world::{World, WorldConfig};

/// One spare server (id `servers + 1`), created powered off.
pub fn membership_config(c: &mut WorldConfig) {
    c.spare_servers = 1;
}

/// Starts the spare and adds it as a voter, removes a random old follower, adds it back;
/// the spare is then removed again. Each change waits 2–4 s.
pub async fn membership_change(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let spare = w.config.servers + 1;
    w.restart_server(spare);
    w.sleep_ms(between(500..1_500)).await;
    while w.now_ms() < end {
        let _ = w.add_voter(spare).await;
        w.sleep_ms(between(2_000..4_000)).await;
        let leader = w.leader();
        let mut victim = w.random_voter();
        while Some(victim) == leader {
            victim = w.random_voter();
        }
        let _ = w.remove_voter(victim).await;
        w.sleep_ms(between(2_000..4_000)).await;
        let _ = w.add_voter(victim).await;
        w.sleep_ms(between(2_000..4_000)).await;
        let _ = w.remove_voter(spare).await;
        w.sleep_ms(between(2_000..4_000)).await;
    }
}
