//! The Rust client library of Roster: used by the `roster` CLI, by server nodes to
//! register themselves, by `roster run`, by benchmarks and by the simulator.
//!
//! - [`Cluster`] (`pool.rs`): one multiplexed connection per node, leader finding.
//! - [`Session`] (`session.rs`): exactly-once commands through the kernel's retry queue.
//! - [`Client`] (`api.rs`): typed calls over both; [`ProcessHandle`] keeps a registered
//!   process alive; [`Watch`] follows change events across reconnects.
//!
//! Determinism: no OS threads, no unseeded randomness (seeds come from the caller), time
//! only from `tokio::time` (simulated under madsim), ordered maps only, and every
//! `select!` is `biased`.

mod conn;
mod endpoints;
mod error;
mod pool;

pub use conn::MAX_IN_FLIGHT;
pub use endpoints::MAX_ENDPOINTS;
pub use error::ClientError;
pub use pool::{ClientOptions, Cluster, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, ResponseStream};
