//! The fault kinds and the seeded schedule. A schedule is a list of rounds, each one
//! fault with its targets chosen by role at apply time (the leader, a minority, ...) and
//! its hold time from the seed.

use super::rng::SplitMix;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// The leader cut from every other node, both ways.
    IsolateLeader,
    /// A random minority cut from the majority.
    MinorityMajority,
    /// Packets from the leader to one follower dropped, the other way delivered.
    OneWay,
    /// A sees B, B sees C, A does not see C (5 nodes: two groups joined by one node).
    Bridge,
    /// SIGSTOP of a node (the leader or another), SIGCONT after the hold.
    Pause,
    /// kill -9 of a random node, restarted after the hold.
    KillOne,
    /// kill -9 of the leader, restarted after the hold.
    KillLeader,
    /// kill -9 of every node at once, all restarted after the hold.
    KillAll,
    /// The tmpfs data directory of one node filled up under a write load; freed, the node
    /// restarted, and it must catch up.
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::IsolateLeader,
        FaultKind::MinorityMajority,
        FaultKind::OneWay,
        FaultKind::Bridge,
        FaultKind::Pause,
        FaultKind::KillOne,
        FaultKind::KillLeader,
        FaultKind::KillAll,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::MinorityMajority => "minority-majority",
            FaultKind::OneWay => "one-way",
            FaultKind::Bridge => "bridge",
            FaultKind::Pause => "pause",
            FaultKind::KillOne => "kill-one",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillAll => "kill-all",
            FaultKind::DiskFull => "disk-full",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One round of the schedule.
#[derive(Clone, Debug)]
pub struct Round {
    pub kind: FaultKind,
    /// How long the fault holds before it is healed.
    pub hold_ms: u64,
    /// Seeds the round's own choices (which minority, which node to pause).
    pub seed: u64,
}

/// Hold times: long enough to trigger elections (400–800 ms) and expiries (3 s) in
/// some rounds, short enough for several rounds in CI.
const HOLD_MS: (u64, u64) = (1_500, 6_000);

/// The schedule of a seed: every kind once in a seeded order, then seeded picks (the
/// full disk at most every fourth round: it takes longest), for `rounds` rounds.
pub fn schedule(seed: u64, rounds: usize) -> Vec<Round> {
    let mut rng = SplitMix::new(seed);
    let mut kinds = FaultKind::ALL.to_vec();
    rng.shuffle(&mut kinds);
    let mut out = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let kind = if i < kinds.len() {
            kinds[i]
        } else {
            loop {
                let k = rng.pick(&FaultKind::ALL);
                let recent_disk = out.iter().rev().take(3).any(|r: &Round| r.kind == FaultKind::DiskFull);
                if k != FaultKind::DiskFull || !recent_disk {
                    break k;
                }
            }
        };
        out.push(Round { kind, hold_ms: rng.range(HOLD_MS.0, HOLD_MS.1), seed: rng.next_u64() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind_first() {
        let a = schedule(42, 20);
        let b = schedule(42, 20);
        assert_eq!(
            a.iter().map(|r| (r.kind, r.hold_ms)).collect::<Vec<_>>(),
            b.iter().map(|r| (r.kind, r.hold_ms)).collect::<Vec<_>>()
        );
        let mut first: Vec<FaultKind> = a[..FaultKind::ALL.len()].iter().map(|r| r.kind).collect();
        first.sort();
        assert_eq!(first, FaultKind::ALL.to_vec());
        assert_ne!(
            schedule(43, 9).iter().map(|r| r.kind).collect::<Vec<_>>(),
            a[..9].iter().map(|r| r.kind).collect::<Vec<_>>()
        );
    }
}
