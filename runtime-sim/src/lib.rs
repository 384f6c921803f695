//! The simulated world: Roster's real node code (`roster_real::node::Node`) and its real
//! client library, run as separate machines under the madsim deterministic simulator,
//! with faults injected from madsim's seeded RNG and a trace recorded for the checkers.
//!
//! Only `trace` (pure data and its hash) is compiled in a normal build; the world itself
//! needs the simulated runtime: build with `RUSTFLAGS="--cfg madsim"` into its own target
//! directory (`CARGO_TARGET_DIR=target/madsim`).
//!
//! - `trace`: what a run recorded (client histories, Raft observations, liveness events),
//!   and the run's trace hash.
//! - `setup` (madsim only): the world's shape and timings, addresses, credentials and clock.
//! - `world` (madsim only): server and worker machines, their disks and probes, fault
//!   injection, and the sampler that watches every node.
//! - `workload` (madsim only): the key/value and process workers.
//! - `probe` (madsim only): the scripted CPU/memory probe of a simulated server.
//! - `disk_model` (madsim only): each server's disk latency (heavy-tailed, drawn from the
//!   seed), stalls and EIO faults.

pub mod trace;

#[cfg(madsim)]
pub mod disk_model;
#[cfg(madsim)]
pub mod probe;
#[cfg(madsim)]
pub mod setup;
#[cfg(madsim)]
pub mod workload;
#[cfg(madsim)]
pub mod world;
