//! The Roster node: openraft consensus over the kernel's state machine, durable storage,
//! TCP transport, the client API and library, and the `roster` binary's commands.

pub mod raft_types;
pub mod rt;
pub mod client;
pub mod network;
pub mod storage;
pub mod transport;
pub mod wire;
