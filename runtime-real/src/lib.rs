//! The Roster node: openraft consensus over the kernel's state machine, durable storage,
//! TCP transport, the client API and library, and the `roster` binary's commands.

pub mod agent;
pub mod api;
pub mod batch;
pub mod client;
pub mod clock;
pub mod compaction;
pub mod config;
pub mod launch;
pub mod leader;
pub mod network;
pub mod node;
pub mod probe;
pub mod proposer;
pub mod raft_types;
pub mod rt;
pub mod server;
pub mod storage;
pub mod transport;
pub mod wire;
