//! Every path the HTTP listener serves. The list, with examples, is in docs/http.md.

use super::{HttpState, MAX_BODY_BYTES, cluster, events, health, kv, logs, members, metrics, page, reads};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

pub fn router(state: HttpState) -> Router {
    let v1 = Router::new()
        .route("/status", get(reads::status))
        .route("/servers", get(reads::servers))
        .route("/servers/{id}", get(reads::server).patch(members::patch_server).delete(members::delete_server))
        .route("/servers/{id}/drain", post(members::drain_server))
        .route("/servers/{id}/undrain", post(members::undrain_server))
        .route("/processes", get(reads::processes).post(members::register))
        .route("/processes/{id}", get(reads::process).patch(members::patch_process).delete(members::deregister))
        .route("/processes/{id}/heartbeat", put(members::heartbeat))
        .route("/processes/{id}/logs", get(logs::logs))
        .route("/tombstones", get(reads::tombstones))
        .route("/kv", get(kv::range))
        .route("/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/events", get(events::events))
        .route("/launch", post(members::launch))
        .route("/sessions", post(cluster::open_session))
        .route("/sessions/{id}", delete(cluster::close_session))
        .route("/nodes", post(cluster::add_node))
        .route("/nodes/{id}", delete(cluster::remove_node))
        .route("/nodes/{id}/replace", post(cluster::replace_node))
        .route("/leader/transfer", post(cluster::transfer_leader))
        .route("/tokens", get(cluster::tokens).post(cluster::create_token))
        .route("/tokens/{id}", delete(cluster::revoke_token))
        .layer(axum::middleware::map_response(super::error::json_errors));
    Router::new()
        .route("/", get(page::page))
        .nest("/v1", v1)
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(state)
}

/// Bytes of an announced oversized body read and dropped before the 413 goes out: a
/// client still sending when the connection closes on unread bytes would get a reset
/// instead of the answer.
const OVERSIZED_DRAIN_BYTES: u64 = 8 << 20;
/// How long that draining may take.
const OVERSIZED_DRAIN_MS: u64 = 2_000;

/// A body whose `Content-Length` is over the limit is refused with a 413 naming the limit,
/// after its bytes were read (up to a bound) so that the client gets to read the answer.
async fn refuse_oversized(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = announced.filter(|len| *len > MAX_BODY_BYTES as u64) else {
        return next.run(request).await;
    };
    if len <= OVERSIZED_DRAIN_BYTES {
        // Read and dropped chunk by chunk: nothing of it is kept.
        let drain = async {
            use futures::StreamExt;
            let mut chunks = request.into_body().into_data_stream();
            let mut seen = 0u64;
            while let Some(Ok(chunk)) = chunks.next().await {
                seen += chunk.len() as u64;
                if seen >= OVERSIZED_DRAIN_BYTES {
                    break;
                }
            }
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(OVERSIZED_DRAIN_MS);
        let _ = crate::rt::Timeout::new(drain, deadline).await;
    }
    super::error::HttpError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body of {len} bytes is over the limit of {MAX_BODY_BYTES} bytes"),
    )
    .into_response()
}

async fn not_found(uri: axum::http::Uri) -> super::error::HttpError {
    super::error::HttpError::not_found(format!("no route {}: see docs/http.md for the HTTP API", uri.path()))
}
