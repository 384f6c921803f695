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
    pub fn new(api: Arc<Api>, endpoints: Vec<String>, token: String) -> Result<Self, roster_client::ClientError> {
        let options = ClientOptions {
            endpoints,
            token,
            connect_timeout_ms: roster_client::DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        };
        let cluster = roster_client::Cluster::new(options)?;
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

/// Binds `addr` and serves until the process ends. Returns the bound address (port 0
/// picks one).
pub async fn start(addr: &str, state: HttpState) -> Result<std::net::SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = routes::router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP listener stopped");
        }
    });
    Ok(local)
}
