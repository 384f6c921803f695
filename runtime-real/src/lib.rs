//! The Roster node: openraft consensus over the kernel's state machine, durable storage,
//! TCP transport, the client API and library, and the `roster` binary's commands.

//!
//! Layers, lowest first (each uses only those before it):
//! - `rt`: the async runtime glue (openraft's `AsyncRuntime`, an ordered watch, the clock);
//! - `raft`: openraft's type configuration and the log entry payload;
//! - `storage`: the WAL, vote and snapshots over a `Disk`;
//! - `net`: framing, wire messages, openraft's network;
//! - `client`: the client library (wire and runtime glue only);
//! - `server`: request dispatch, the API, the proposer, the leader driver, the server
//!   agent, launch, compaction;
//! - `node`: wires a node together; `config`: its settings; `cli` (in the binary): the
//!   `roster` commands.

pub mod client;
pub mod config;
pub mod net;
pub mod node;
pub mod raft;
pub mod rt;
pub mod server;
pub mod storage;
