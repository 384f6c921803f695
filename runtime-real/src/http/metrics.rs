//! `GET /metrics`: the node's metrics (`crate::metrics`) in the Prometheus text format.
//! No token, like etcd's: the figures name no keys, values or members.

use super::HttpState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let api = state.api();
    let text = api.metrics().encode(&api.scrape());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
