//! Every path the HTTP listener serves. The list, with examples, is in README.md.

use super::{HttpState, MAX_BODY_BYTES, cluster, events, health, kv, members, metrics, page, reads};
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
        .route("/tombstones", get(reads::tombstones))
        .route("/kv", get(kv::range))
        .route("/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/events", get(events::events))
        .route("/launch", post(members::launch))
        .route("/sessions", post(cluster::open_session))
        .route("/nodes", post(cluster::add_node))
        .route("/nodes/{id}", delete(cluster::remove_node))
        .route("/nodes/{id}/replace", post(cluster::replace_node))
        .route("/leader/transfer", post(cluster::transfer_leader))
        .route("/tokens", get(cluster::tokens).post(cluster::create_token))
        .route("/tokens/{id}", delete(cluster::revoke_token));
    Router::new()
        .route("/", get(page::page))
        .nest("/v1", v1)
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> super::error::HttpError {
    super::error::HttpError::not_found(format!("no route {}: see README.md for the HTTP API", uri.path()))
}
