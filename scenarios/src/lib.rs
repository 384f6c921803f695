//! Scenarios and checkers of the deterministic simulation.
//!
//! The checkers are pure functions over recorded histories and traces: no clock, no
//! randomness, no I/O, and only ordered collections, so a run's verdict is a function of
//! its trace alone.

pub mod checkers;
