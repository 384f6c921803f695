//! Power losses: followers, leaders, one at a time, all at once.

use super::{between, chance};
use roster_sim::world::World;

/// Half the kills wait (up to this long) for an fsync in flight on the victim, so the
/// power loss lands between "written" and "durable".
const MID_FSYNC_WAIT_MS: u64 = 300;

/// An fsync in flight this long is stalled (the slowest normal fsync takes 100 ms).
const STALLED_FSYNC_MS: u64 = 150;

/// Kills `id`, half the time at a moment its disk has an fsync in flight.
pub(crate) async fn kill(w: &mut World, id: u64) {
    if chance(0.5) {
        w.kill_server_mid_fsync(id, MID_FSYNC_WAIT_MS).await;
    } else {
        w.kill_server(id);
    }
}

/// A follower is killed for 1–5 s, then restarted; 2–4 s of calm; repeat.
pub async fn follower_crash_restart(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        let victim = random_follower(w);
        kill(w, victim).await;
        w.sleep_ms(between(1_000..5_000)).await;
        w.heal_all();
        w.sleep_ms(between(2_000..4_000)).await;
    }
}

/// The leader is killed, restarted 1–3 s later; 2–3 s of calm; repeat.
pub async fn leader_crash_loop(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        let victim = w.leader_or_random();
        kill(w, victim).await;
        w.sleep_ms(between(1_000..3_000)).await;
        w.heal_all();
        w.sleep_ms(between(2_000..3_000)).await;
    }
}

/// Servers 1..=n in turn: killed, restarted 0.5–2 s later, 2–3 s before the next.
pub async fn rolling_restart(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let mut next = 1;
    while w.now_ms() < end {
        kill(w, next).await;
        w.sleep_ms(between(500..2_000)).await;
        w.heal_all();
        w.sleep_ms(between(2_000..3_000)).await;
        next = next % w.config.servers + 1;
    }
}

/// Every server dies within a few ms of the others (each, half the time, at the first
/// moment within 5 ms that it has an fsync in flight); or, half the rounds, every disk is
/// slow (fsyncs stall for 0.2–3 s) for 0.5–2 s and then the power goes everywhere at once,
/// at the first moment (within 4 s) the leader's disk has had an fsync stalled for 150 ms:
/// writes that were only written, not yet durable, anywhere are at stake. 1–3 s later all restart; 4–6 s of
/// calm; repeat.
pub async fn full_cluster_restart(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    while w.now_ms() < end {
        if chance(0.5) {
            for id in w.voter_ids() {
                w.slow_disk(id);
            }
            w.sleep_ms(between(500..2_000)).await;
            let leader = w.leader_or_random();
            w.await_fsync_in_flight(leader, STALLED_FSYNC_MS, 4_000).await;
            for id in w.voter_ids() {
                w.kill_server(id);
            }
        } else {
            for id in w.voter_ids() {
                if chance(0.5) {
                    w.kill_server_mid_fsync(id, 5).await;
                } else {
                    w.kill_server(id);
                    w.sleep_ms(between(0..5)).await;
                }
            }
        }
        w.sleep_ms(between(1_000..3_000)).await;
        w.heal_all();
        w.sleep_ms(between(4_000..6_000)).await;
    }
}

/// A voter drawn at random that is not the current leader (drawn again until it is not).
fn random_follower(w: &World) -> u64 {
    let leader = w.leader();
    let mut victim = w.random_voter();
    while Some(victim) == leader {
        victim = w.random_voter();
    }
    victim
}
