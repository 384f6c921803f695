//! Scenarios and checkers (filled by the simulation issue).
