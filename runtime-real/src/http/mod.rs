//! The HTTP/JSON API (`/v1/...`), health (`/livez`, `/readyz`) and the cluster web page
//! (`/`), on the node's own `http_listen` address.
//!
//! Not in the simulator build (axum runs on real tokio only). The handlers decide
//! nothing: each maps an HTTP request to the binary protocol's request and the answer
//! back. Writes, heartbeats, linearizable reads and membership go through the client
//! library `roster` uses (it finds the leader, so a follower forwards), and status and
//! events read this node's state with the same functions its binary protocol uses. The
//! simulator runs all of those, so it keeps covering every rule.
//!
//! Layout: `routes.rs` maps paths to handlers; `auth.rs` checks the bearer token;
//! `error.rs` turns every failure into a JSON error with its status; `reads.rs`,
//! `kv.rs`, `members.rs` and `cluster.rs` hold the handlers; `writes.rs` carries a
//! write exactly once (a client's session, or this node's); `events.rs` streams changes;
//! `health.rs` answers supervisors; `page.rs` serves the web page (`page.html`), which
//! reads the same API with the token its user enters.

mod auth;
mod cluster;
mod error;
mod events;
mod health;
mod kv;
mod logs;
mod members;
mod metrics;
mod page;
mod query;
mod reads;
mod routes;
mod writes;

use crate::server::api::Api;
use roster_client::{Client, ClientOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The JSON error HTTP answers for `e`; the CLI's `--json` prints the same.
pub fn client_error_view(e: roster_client::ClientError) -> crate::view::ErrorView {
    error::HttpError::from(e).view()
}

/// Largest request body; an HTTP write carries at most one command (a value is ≤ 64 KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Sessions a node keeps for writes that bring none of their own: each runs one command
/// at a time (the kernel's sessions are stop-and-wait), so several let writes overlap.
const NODE_SESSIONS: usize = 4;
/// How long one HTTP request may wait for the cluster before it is answered 503/504.
const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    inner: Arc<Inner>,
}

struct Inner {
    api: Arc<Api>,
    /// This node's sessions, for writes without a `Roster-Session` header, over one
    /// connection pool that also carries every other request.
    clients: Vec<Client>,
    next_client: AtomicUsize,
}

impl HttpState {
    /// `endpoints`: this node's advertised address first, then its peers; the client
    /// learns the leader's address from hints, so a node added later needs only its own.
    /// `connector`: how this node's own client reaches the nodes (TLS when it is on).
    pub fn new(
        api: Arc<Api>,
        endpoints: Vec<String>,
        peer: roster_client::PeerAuth,
        connector: roster_client::Connector,
    ) -> Result<Self, roster_client::ClientError> {
        // The token is not sent: this node's client proves the peer key, and each handler
        // checks its caller's bearer token first (`auth.rs`).
        let options = ClientOptions {
            endpoints,
            token: String::new(),
            connect_timeout_ms: roster_client::DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        };
        let cluster = roster_client::Cluster::for_node(options, connector, peer)?;
        let clients = (0..NODE_SESSIONS)
            .map(|_| Client::with_cluster(cluster.clone(), roster_client::RetryConfig::default(), rand::random()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpState { inner: Arc::new(Inner { api, clients, next_client: AtomicUsize::new(0) }) })
    }

    fn api(&self) -> &Arc<Api> {
        &self.inner.api
    }

    /// For reads and requests outside any session.
    fn client(&self) -> &Client {
        &self.inner.clients[0]
    }

    /// One of this node's sessions, in turn.
    fn session_client(&self) -> &Client {
        let i = self.inner.next_client.fetch_add(1, Ordering::Relaxed) % self.inner.clients.len();
        &self.inner.clients[i]
    }
}

/// Binds `addr` and serves until the process ends, HTTPS when `acceptor` has TLS on.
/// Returns the bound address (port 0 picks one).
pub async fn start(
    addr: &str,
    state: HttpState,
    acceptor: crate::tls::Acceptor,
) -> Result<std::net::SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, routes::router(state), acceptor));
    Ok(local)
}

/// How long a new HTTPS connection may take for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// How long a client may take to send a request's headers (a connection that dawdles
/// holds a slot: slowloris).
const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Connections served at once; one more is answered 503 and closed, so a flood of idle
/// connections cannot take the node's memory or file descriptors.
pub const MAX_CONNECTIONS: usize = 1_024;

/// The router on every accepted connection, through hyper's HTTP/1 server (axum::serve
/// takes plain TCP only and sets no header timeout): TLS first when it is on, a bound on
/// the headers' arrival, and a bound on connections.
async fn serve(listener: tokio::net::TcpListener, app: axum::Router, acceptor: crate::tls::Acceptor) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(tcp));
            continue;
        };
        let (app, acceptor) = (app.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let peer = peer.to_string();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
            let stream = match crate::rt::Timeout::new(acceptor.accept(tcp, &peer), deadline).await {
                Ok(Ok(crate::tls::Accepted::Stream(stream))) => stream,
                Ok(Ok(crate::tls::Accepted::Plaintext(tcp))) => return refuse_plain_http(tcp, &peer).await,
                Ok(Err(e)) => return tracing::warn!(%peer, "refused HTTPS connection: {e}"),
                Err(_) => return tracing::debug!(%peer, "HTTPS connection gave no TLS handshake in time"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}

/// Over `MAX_CONNECTIONS`: one 503 and close, without reading the request.
async fn refuse_busy(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"error\":{{\"kind\":\"busy\",\"message\":\"the node serves {MAX_CONNECTIONS} HTTP connections already: retry later\"}}}}\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tcp.write_all(answer.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

/// Plain HTTP on the HTTPS listener: one 400 that says to use https://, then close.
async fn refuse_plain_http(mut tcp: tokio::net::TcpStream, peer: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::warn!(%peer, "refused a plain HTTP connection: this listener speaks HTTPS only");
    let body = "400 Bad Request: this listener speaks HTTPS only (TLS is on): use https://\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    // The request is read first: closing on unread bytes resets the connection.
    let mut request = [0u8; 8 << 10];
    let read = tokio::time::timeout(std::time::Duration::from_millis(1_000), tcp.read(&mut request)).await;
    if matches!(read, Ok(Ok(_))) {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    }
}
