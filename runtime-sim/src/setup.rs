//! What every part of the simulated world agrees on: its shape and timings
//! (`WorldConfig`), the machines' addresses and credentials, and its clock.

use madsim::time::Instant;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

/// The cluster token every simulated machine uses.
pub const TOKEN: &str = "roster-sim-token";
/// The peer key every simulated node proves to the others.
pub const PEER_KEY: &str = "roster-sim-peer-key-of-at-least-32-bytes";
/// The port every server listens on (each server has its own IP).
pub const SERVER_PORT: u16 = 7000;
/// The shape of a world and the timing of its machines.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Voters the cluster forms with (ids 1..=servers).
    pub servers: u64,
    /// Extra server machines created empty (no initial peers), to be added later.
    pub spare_servers: u64,
    pub kv_workers: u64,
    pub process_workers: u64,
    /// Keys the key/value workers use (`k0`, `k1`, …).
    pub keys: u64,
    /// Pause between two operations of a key/value worker.
    pub kv_think_ms: Range<u64>,
    /// Lifetime of one registration of a process worker before it leaves or crashes;
    /// `None`: it stays registered for the whole run.
    pub process_life_ms: Option<Range<u64>>,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_every_entries: u64,
    /// How often the sampler looks at every node.
    pub sample_every_ms: u64,
    /// How often (at most) a node's whole state machine is hashed.
    pub state_hash_every_ms: u64,
    /// The network when no fault is active.
    pub base_latency_ms: Range<u64>,
    /// Servers' disks take time and can stall or fail (`disk_model`); off: every disk
    /// operation is instant and an fsync is durable when it returns.
    pub disk_model: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            servers: 5,
            spare_servers: 0,
            kv_workers: 12,
            process_workers: 8,
            keys: 12,
            kv_think_ms: 100..500,
            process_life_ms: None,
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: 3_000,
            // The shipped defaults: the simulator proves the timings users run.
            raft_heartbeat_ms: roster_real::config::defaults::raft_heartbeat_ms(),
            election_timeout_min_ms: roster_real::config::defaults::election_timeout_min_ms(),
            election_timeout_max_ms: roster_real::config::defaults::election_timeout_max_ms(),
            snapshot_every_entries: 2_000,
            sample_every_ms: 20,
            state_hash_every_ms: 200,
            base_latency_ms: 1..10,
            disk_model: true,
        }
    }
}

/// Server `id` (1..=250) is at 10.0.0.`id`.
pub fn server_ip(id: u64) -> IpAddr {
    assert!((1..=250).contains(&id), "server ids of the simulated world are 1..=250, not {id}");
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8))
}

pub fn server_addr(id: u64) -> String {
    format!("{}:{SERVER_PORT}", server_ip(id))
}

/// Simulated milliseconds since the world started; the same origin on every machine.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    origin: Instant,
}

impl SimClock {
    /// A clock whose zero is now.
    pub fn start() -> SimClock {
        SimClock { origin: Instant::now() }
    }

    pub fn now_ms(&self) -> u64 {
        Instant::now().saturating_duration_since(self.origin).as_millis() as u64
    }
}
