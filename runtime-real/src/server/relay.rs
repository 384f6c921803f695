//! One client request from this node to another, on a connection of its own: the
//! bootstrap check's and readmission's asks, a forwarded launch, a forwarded output read.

use crate::net::transport::{Connector, TransportError};
use crate::net::wire::{
    Channel, ClientEnvelope, ClientRequest, ClientResponse, ClientResponseEnvelope, MAX_CLIENT_FRAME_BYTES,
    RequestError,
};
use std::time::Duration;

/// How long a forward's connect and handshake may take, at most.
const FORWARD_CONNECT_MS: u64 = 2_000;

/// Sends `request` to `addr` and waits for its one answer; `connect_timeout_ms` bounds the
/// connect and handshake only (the caller bounds the whole).
pub async fn ask(
    addr: &str,
    credential: &roster_client::Credential,
    connector: &Connector,
    request: ClientRequest,
    connect_timeout_ms: u64,
) -> Result<ClientResponse, TransportError> {
    let (mut r, mut w) = crate::net::transport::connect(
        addr,
        credential,
        Channel::Client,
        MAX_CLIENT_FRAME_BYTES,
        connect_timeout_ms,
        connector,
    )
    .await?;
    w.send(&ClientEnvelope { id: 1, request }).await?;
    let env = r.recv::<ClientResponseEnvelope>().await?;
    Ok(env.response)
}

/// `ask`, bounded by `timeout_ms` in all, relaying the answer: a failure is the caller's
/// typed error naming the node.
pub async fn forward(
    addr: &str,
    credential: &roster_client::Credential,
    connector: &Connector,
    request: ClientRequest,
    timeout_ms: u64,
) -> ClientResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let exchange = ask(addr, credential, connector, request, FORWARD_CONNECT_MS.min(timeout_ms).max(1));
    match crate::rt::Timeout::new(exchange, deadline).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            ClientResponse::Error(RequestError::ForwardFailed { addr: addr.to_string(), reason: e.to_string() })
        }
        Err(_) => ClientResponse::Error(RequestError::ForwardTimeout { addr: addr.to_string() }),
    }
}
