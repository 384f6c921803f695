//! Scenarios and checkers of the deterministic simulation.
//!
//! The checkers are pure functions over recorded histories and traces: no clock, no
//! randomness, no I/O, and only ordered collections, so a run's verdict is a function of
//! its trace alone. `analysis` turns a run's trace (`roster_sim::trace::Trace`) into the
//! checkers' inputs and runs them all.
//!
//! The scenarios and the runner need the simulated runtime: they are compiled only under
//! `--cfg madsim` (see the `roster-sim` binary and `scripts/sim-suite`).

pub mod analysis;
pub mod checkers;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod scenarios;
