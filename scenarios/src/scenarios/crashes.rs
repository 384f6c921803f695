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

/// A follower loses power and its disk: it restarts empty (with --bootstrap, as an initial
/// member does, so it must notice the running cluster), waits 1–3 s without voting, and is
/// brought back by `member replace`; 2–4 s of calm; repeat. A replace can fail (a leader
/// change mid-way); its node then stays a learner or waits, and is replaced again first
/// thing in every later round and at the end, so that no victim is left out of the quorum.
pub async fn disk_loss(w: &mut World, fault_ms: u64) {
    let end = w.now_ms() + fault_ms;
    let mut unreplaced: Vec<u64> = Vec::new();
    while w.now_ms() < end {
        replace_each(w, &mut unreplaced).await;
        let victim = random_follower(w);
        w.kill_server(victim);
        w.wipe_disk(victim);
        w.sleep_ms(between(500..1_500)).await;
        w.heal_all();
        w.sleep_ms(between(1_000..3_000)).await;
        unreplaced.push(victim);
        replace_each(w, &mut unreplaced).await;
        w.sleep_ms(between(2_000..4_000)).await;
    }
    replace_each(w, &mut unreplaced).await;
}

/// `member replace` of every node in `nodes`, up to three tries each; keeps those it could
/// not bring back.
async fn replace_each(w: &mut World, nodes: &mut Vec<u64>) {
    let mut left = Vec::new();
    for &id in nodes.iter() {
        let mut done = false;
        for _ in 0..3 {
            if w.replace_voter(id).await.is_ok() {
                done = true;
                break;
            }
            w.sleep_ms(500).await;
        }
        if !done {
            left.push(id);
        }
    }
    *nodes = left;
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
