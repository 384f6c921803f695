//! The Rust client library of Roster: used by the `roster` CLI, by server nodes to
//! register themselves, by `roster run`, by benchmarks and by the simulator.
//!
//! - [`Cluster`] (`pool.rs`): one multiplexed connection per node, leader finding.
//! - [`Session`] (`session.rs`): exactly-once commands through the kernel's retry queue.
//! - [`Client`] (`api.rs`): typed calls over both; [`ProcessHandle`] (`process.rs`) keeps
//!   a registered process alive; [`Watch`] (`watch.rs`) follows change events across
//!   reconnects.
//!
//! Determinism: no OS threads, no unseeded randomness (seeds come from the caller), time
//! only from `tokio::time` (simulated under madsim), ordered maps only, and every
//! `select!` is `biased`.

mod api;
mod conn;
pub mod describe;
mod endpoints;
mod error;
pub mod peer_auth;
mod pool;
mod process;
mod session;
mod timeout;
#[cfg(not(madsim))]
pub mod tls;
pub mod transport;
mod watch;
pub mod wire;

#[cfg(test)]
mod fake_server;
#[cfg(test)]
mod tests;

pub use api::{
    CasOutcome, Client, KvPage, LAUNCH_TIMEOUT_MS, LIST_PAGE_LIMIT, LaunchStarted, MemberList, MemberPage,
    REPLACE_TIMEOUT_MS, SnapshotDownload,
};
pub use conn::MAX_IN_FLIGHT;
pub use endpoints::MAX_ENDPOINTS;
pub use error::ClientError;
pub use peer_auth::{Credential, PeerAuth, PeerKey, token_hash};
pub use pool::{ClientOptions, Cluster, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, ResponseStream};
pub use process::ProcessHandle;
pub use roster_kernel::retry_queue::RetryConfig;
pub use session::{LINGER_AFTER_DROP_MS, Pending, Session};
pub use timeout::{Elapsed, Timeout};
#[cfg(not(madsim))]
pub use tls::{ClientTls, TlsError, TlsFiles};
pub use transport::Connector;
pub use watch::Watch;
