//! The named fault scenarios. Each shapes its world (`configure`) and drives a fault
//! phase (`faults`) of a given length; the runner (`crate::runner`) wraps it in a warm-up
//! before and a heal, settle and quiet phase after, so the checkers' windows close.
//!
//! Every random choice comes from madsim's seeded RNG (`madsim::rand::thread_rng`).

use roster_sim::world::{World, WorldConfig};
use std::future::Future;
use std::pin::Pin;

mod churn;
mod crashes;
mod disk_loss;
mod disks;
mod mass_silence;
mod membership;
mod network;
mod random;

/// The fault phase of a scenario, given the world and its length in simulated ms.
pub type Faults = for<'a> fn(&'a mut World, u64) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub configure: fn(&mut WorldConfig),
    pub faults: Faults,
}

fn keep_default(_: &mut WorldConfig) {}

/// Every scenario, in the order `all` runs them.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "leader-partition",
        about: "the leader is cut off from every other server, again and again",
        configure: keep_default,
        faults: |w, ms| Box::pin(network::leader_partition(w, ms)),
    },
    Scenario {
        name: "follower-crash-restart",
        about: "a follower loses power (unsynced writes may be lost) and comes back",
        configure: keep_default,
        faults: |w, ms| Box::pin(crashes::follower_crash_restart(w, ms)),
    },
    Scenario {
        name: "lossy-network",
        about: "every link drops packets and has long, variable latency",
        configure: keep_default,
        faults: |w, ms| Box::pin(network::lossy_network(w, ms)),
    },
    Scenario {
        name: "paused-member",
        about: "process workers pause shorter than the timeout (must stay) or longer (must go)",
        configure: keep_default,
        faults: |w, ms| Box::pin(churn::paused_member(w, ms)),
    },
    Scenario {
        name: "process-churn",
        about: "processes register, heartbeat, then leave or crash, continuously",
        configure: churn::churn_config,
        faults: |w, ms| Box::pin(churn::process_churn(w, ms)),
    },
    Scenario {
        name: "minority-partition",
        about: "one or two servers are cut off from the majority",
        configure: keep_default,
        faults: |w, ms| Box::pin(network::minority_partition(w, ms)),
    },
    Scenario {
        name: "flapping-links",
        about: "random links between servers go down and up (one-way or both) every few hundred ms",
        configure: keep_default,
        faults: |w, ms| Box::pin(network::flapping_links(w, ms)),
    },
    Scenario {
        name: "leader-crash-loop",
        about: "whoever leads loses power, restarts, and the next leader does too",
        configure: keep_default,
        faults: |w, ms| Box::pin(crashes::leader_crash_loop(w, ms)),
    },
    Scenario {
        name: "rolling-restart",
        about: "every server in turn is killed and restarted",
        configure: keep_default,
        faults: |w, ms| Box::pin(crashes::rolling_restart(w, ms)),
    },
    Scenario {
        name: "full-cluster-restart",
        about: "every server loses power at once and the cluster restarts from its disks",
        configure: keep_default,
        faults: |w, ms| Box::pin(crashes::full_cluster_restart(w, ms)),
    },
    Scenario {
        name: "disk-loss",
        about: "3 servers: a follower lags, the other loses its disk and restarts empty, the leader goes: \
                the lagging one can be elected only by the empty one's vote; the empty one is replaced",
        configure: disk_loss::disk_loss_config,
        faults: |w, ms| Box::pin(disk_loss::disk_loss(w, ms)),
    },
    Scenario {
        name: "slow-disk",
        about: "one to three servers' fsyncs stall for 0.2-3 s now and then (the leader's half the time)",
        configure: keep_default,
        faults: |w, ms| Box::pin(disks::slow_disk(w, ms)),
    },
    Scenario {
        name: "failing-disk",
        about: "a server's next write or fsync fails with EIO: its log fail-stops, it is power-cycled and recovers",
        configure: keep_default,
        faults: |w, ms| Box::pin(disks::failing_disk(w, ms)),
    },
    Scenario {
        name: "membership-change",
        about: "a spare server is added as a voter, an old one removed and added back",
        configure: membership::membership_config,
        faults: |w, ms| Box::pin(membership::membership_change(w, ms)),
    },
    Scenario {
        name: "mass-silence",
        about: "more than a third of 65 members fall silent at once, first within the expiry brake's hold \
                (none may go; the alarm rises), then for good (all gone within the timeout + 1 s)",
        configure: mass_silence::mass_silence_config,
        faults: |w, ms| Box::pin(mass_silence::mass_silence(w, ms)),
    },
    Scenario {
        name: "random",
        about: "a seeded mix of every fault above (slow and failing disks too), plus paused and clogged servers",
        configure: keep_default,
        faults: |w, ms| Box::pin(random::random_faults(w, ms)),
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// A uniform draw from `range` (madsim's seeded RNG).
pub(crate) fn between(range: std::ops::Range<u64>) -> u64 {
    use madsim::rand::Rng;
    madsim::rand::thread_rng().gen_range(range)
}

/// True with probability `p`.
pub(crate) fn chance(p: f64) -> bool {
    use madsim::rand::Rng;
    madsim::rand::thread_rng().gen_bool(p)
}
