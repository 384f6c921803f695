//! The network layer: framing and the handshake (`transport`), every message on the wire
//! (`wire`), and openraft's network over it (`peer`). It knows no handlers: requests
//! that arrive are served by `server::dispatch`.

pub mod peer;
pub use roster_client::transport;
pub mod wire;
