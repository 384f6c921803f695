//! The simulated world (filled by the simulation issue).
