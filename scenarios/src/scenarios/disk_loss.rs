//! A server loses its disk, in the two situations where its vote, or its acknowledgement,
//! would lose committed writes.
//!
//! Three servers. A server that lost its disk forgot every entry it acknowledged and every
//! term it promised; the vote gate (`roster_real::server::vote_gate`) makes it refuse
//! votes and appends until a leader has readmitted it (`member replace`), and votes only
//! once it has caught up. Each round builds one of the two situations the gate is for:
//!
//! - election (`election_round`): C lags while writes commit on L and B; B loses its disk;
//!   L goes away. Were B to vote, C (lacking those writes) would lead, and overwrite L's
//!   log when L came back. With the gate, nobody leads until L is back, and then L does.
//! - stale leader (`stale_leader_round`): X, cut off, still thinks it leads in an old
//!   term and holds writes it cannot commit; Y and B committed other writes at the same
//!   indexes in a newer term; B loses its disk and is in touch with X alone. Were B to take
//!   X's appends, X would commit (and acknowledge) its writes with B's help, and Y would
//!   overwrite them at the heal. With the gate, X commits nothing.
//!
//! So the acknowledged-writes and committed-entries checkers see a lost write if, and
//! only if, the empty node votes or takes appends before its readmission
//! (scenarios/README.md lists both planted bugs and the seeds that catch each).

use super::{between, chance};
use roster_sim::world::{World, WorldConfig};

/// Servers in the world of this scenario: with three, B is C's only possible voter.
pub const SERVERS: u64 = 3;

/// Three servers; the default workload.
pub fn disk_loss_config(config: &mut WorldConfig) {
    config.servers = SERVERS;
}

/// How long a round waits for a leader before it sets up its fault anyway.
const LEADER_WAIT_MS: u64 = 3_000;
/// How long a round waits for the empty server to finish starting. It asks its peers
/// whether a cluster runs (`rejoin::PEER_CHECK_TIMEOUT_MS`, 2 s, when a peer is
/// unreachable), then closes its vote gate for good.
const START_WAIT_MS: u64 = 5_000;
const POLL_MS: u64 = 50;

/// How C falls behind.
#[derive(Clone, Copy, Debug)]
enum Lag {
    /// Cut off from both other servers, both ways.
    CutOff,
    /// Hears neither other server (its own messages still reach them: its pre-votes are
    /// refused, since L leads).
    Deaf,
    /// Powered off; restarted from its own (durable, older) log when L goes away.
    PoweredOff,
}

/// How L goes away.
#[derive(Clone, Copy, Debug)]
enum LeaderGone {
    /// Power loss; restarted at the heal.
    Killed,
    /// Cut off from C and B: it still thinks it leads, holding the committed entries and
    /// writes it cannot commit.
    CutOff,
}

/// Rounds, each of one of two kinds (seeded), each ending with everything healed, the
/// empty server brought back by `member replace`, and 2–3 s of calm. A replace can fail
/// (a leader change mid-way); its node then stays a learner or waits, and is replaced
/// again first thing in every later round and at the end, so that no victim is left out
/// of the quorum.
pub async fn disk_loss(w: &mut World, fault_ms: u64) {
    assert_eq!(w.config.servers, SERVERS, "disk-loss sets up its faults with exactly three servers");
    let end = w.now_ms() + fault_ms;
    let mut unreplaced: Vec<u64> = Vec::new();
    while w.now_ms() < end {
        replace_each(w, &mut unreplaced).await;
        let victim = if chance(0.5) { election_round(w).await } else { stale_leader_round(w).await };
        if !unreplaced.contains(&victim) {
            unreplaced.push(victim);
        }
        w.heal_all();
        w.sleep_ms(between(1_000..2_000)).await;
        replace_each(w, &mut unreplaced).await;
        w.sleep_ms(between(2_000..3_000)).await;
    }
    replace_each(w, &mut unreplaced).await;
}

/// The vote gate's round. C falls behind (one of `Lag`) for 1–3 s while writes commit on
/// L and B; B loses power and its disk and restarts empty (with `--bootstrap`, as an
/// initial member does: it must notice the running cluster); once it has started, L goes
/// away (one of `LeaderGone`) and C is in touch with B alone for 1.5–3 s. Only B's vote
/// can elect C. Returns B.
async fn election_round(w: &mut World) -> u64 {
    let leader = await_leader(w).await;
    let (lagging, victim) = followers_of(w, leader);
    let lag = match between(0..3) {
        0 => Lag::CutOff,
        1 => Lag::Deaf,
        _ => Lag::PoweredOff,
    };
    fall_behind(w, lagging, victim, leader, lag).await;
    w.sleep_ms(between(1_000..3_000)).await;

    lose_disk(w, victim).await;

    match if chance(0.5) { LeaderGone::Killed } else { LeaderGone::CutOff } {
        LeaderGone::Killed => {
            super::crashes::kill(w, leader).await;
            w.reconnect_all();
        }
        LeaderGone::CutOff => {
            w.reconnect_all();
            w.partition(&[leader], false);
        }
    }
    if matches!(lag, Lag::PoweredOff) {
        w.restart_server(lagging);
    }
    w.sleep_ms(between(1_500..3_000)).await;
    victim
}

/// The replication gate's round: a leader of an old term, cut off, meets B after B forgot
/// the newer term it had promised to.
///
/// B is cut off and the leader loses power and restarts at once, so that the other two
/// elect X in a new term while B is away (X has never heard from B, so it will replicate
/// to B from scratch). Writes commit on X and Y for 1–2 s. Then X is cut off (it still
/// thinks it leads, and appends the writes sent to it without committing them) and B is
/// back: Y and B elect Y in a newer term and commit writes for 1.5–3 s, at the indexes
/// where X holds its uncommitted ones. Then Y is cut off, and B loses power and its disk
/// and restarts empty, in touch with X alone, for 1.5–3 s after it has started. B no
/// longer knows Y's term: were it to take X's appends, X would commit its writes (and
/// acknowledge them) with B's help, and Y would overwrite them at the heal. Returns B.
async fn stale_leader_round(w: &mut World) -> u64 {
    let first = await_leader(w).await;
    let (_, victim) = followers_of(w, first);
    w.partition(&[victim], false);
    super::crashes::kill(w, first).await;
    w.restart_server(first);
    let old = await_leader_other_than(w, victim).await;
    w.sleep_ms(between(1_000..2_000)).await;

    w.reconnect_all();
    w.partition(&[old], false);
    let newer = await_leader_other_than(w, old).await;
    w.sleep_ms(between(1_500..3_000)).await;

    // In one instant: B loses power before a message of X's can reach it (it would answer
    // with Y's newer term and depose X), and restarts in touch with X alone, so that it
    // hears of no term newer than X's.
    w.reconnect_all();
    w.partition(&[newer], false);
    lose_disk(w, victim).await;
    w.sleep_ms(between(1_500..3_000)).await;
    victim
}

/// `id` loses power and its disk, and restarts empty; waits until it has started (then
/// it has decided, from its peers' answers, whether a cluster runs), and 0–0.5 s more.
async fn lose_disk(w: &mut World, id: u64) {
    w.kill_server(id);
    w.wipe_disk(id);
    w.restart_server(id);
    await_started(w, id).await;
    w.sleep_ms(between(0..500)).await;
}

/// Puts `lagging` out of reach of the leader's appends, in the way `lag` says.
async fn fall_behind(w: &mut World, lagging: u64, other: u64, leader: u64, lag: Lag) {
    match lag {
        Lag::CutOff => w.partition(&[lagging], false),
        Lag::Deaf => {
            w.cut(leader, lagging, true);
            w.cut(other, lagging, true);
        }
        Lag::PoweredOff => super::crashes::kill(w, lagging).await,
    }
}

/// The leader, waited for up to `LEADER_WAIT_MS`; a random voter if none came.
async fn await_leader(w: &World) -> u64 {
    await_leader_except(w, None).await
}

/// A leader other than `not` (a server that is cut off may still think it leads), waited
/// for up to `LEADER_WAIT_MS`; a random voter other than `not` if none came.
async fn await_leader_other_than(w: &World, not: u64) -> u64 {
    await_leader_except(w, Some(not)).await
}

async fn await_leader_except(w: &World, not: Option<u64>) -> u64 {
    let until = w.now_ms() + LEADER_WAIT_MS;
    while w.now_ms() < until {
        if let Some(l) = w.leader().filter(|l| Some(*l) != not) {
            return l;
        }
        w.sleep_ms(POLL_MS).await;
    }
    let mut id = w.random_voter();
    while Some(id) == not {
        id = w.random_voter();
    }
    id
}

/// Waits (up to `START_WAIT_MS`) until `id` has finished starting: only then has it
/// decided, from what its peers told it, not to form a cluster of its own.
async fn await_started(w: &World, id: u64) {
    let until = w.now_ms() + START_WAIT_MS;
    while !w.has_started(id) && w.now_ms() < until {
        w.sleep_ms(POLL_MS).await;
    }
}

/// The two servers other than `leader`, in a seeded order: (the one that falls behind,
/// the one that loses its disk).
fn followers_of(w: &World, leader: u64) -> (u64, u64) {
    let others: Vec<u64> = w.voter_ids().into_iter().filter(|id| *id != leader).collect();
    assert_eq!(others.len(), 2, "three servers: a leader and two followers");
    if chance(0.5) { (others[0], others[1]) } else { (others[1], others[0]) }
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
