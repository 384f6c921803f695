//! The Roster node: openraft consensus over the kernel's state machine, durable storage,
//! TCP transport, the client API and library, and the `roster` binary's commands.

//!
//! Layers, lowest first (each uses only those before it; docs/design.md has the table):
//! - leaves: `metrics` (the node's Prometheus metrics), `probe` (what a server measures
//!   of its machine), `rt` (the async runtime glue: openraft's `AsyncRuntime`, an
//!   ordered watch, the clock);
//! - `raft`: openraft's type configuration and the log entry payload;
//! - `config`: a node's settings (over `raft` and `probe`);
//! - `storage`: the WAL, vote and snapshots over a `Disk`;
//! - `client` (the `roster-client` crate, re-exported): the client library, framing and
//!   the client wire messages; it depends on the kernel alone;
//! - `net`: the peer messages and openraft's network over the client crate's framing;
//! - `tls`: the node's TLS acceptor and connector (plain TCP in the simulator);
//! - `server`: request dispatch, the API, the proposer, the leader driver, the server
//!   agent, launch, compaction, and a node's place in its cluster;
//! - `http` (not in the simulator build): the HTTP/JSON API and health endpoints, over
//!   the client library and the server's API;
//! - `view`: the JSON schema the CLI's `--json` and HTTP share (over the kernel's types);
//! - `node`: wires a node together; `cli` (in the binary): the `roster` commands.

pub use roster_client as client;
pub mod config;
#[cfg(not(madsim))]
pub mod http;
pub mod metrics;
pub mod net;
pub mod node;
pub mod probe;
pub mod raft;
pub mod rt;
pub mod server;
pub mod storage;
pub mod tls;
pub mod view;
