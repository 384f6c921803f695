//! Sessions and the Raft group's membership: what `roster member` does.

use super::HttpState;
use super::auth::Authorized;
use super::error::{HttpError, json_body};
use super::query::Params;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /v1/sessions`: a session for exactly-once writes (see `writes.rs`).
pub async fn open_session(
    _: Authorized,
    State(state): State<HttpState>,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    Ok((StatusCode::CREATED, Json(super::writes::open_session(&state).await?)))
}

/// `POST /v1/nodes`: `{"id": N, "addr": "HOST:PORT"}` adds a server node (learner, then voter).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub id: u64,
    pub addr: String,
}

pub async fn add_node(
    _: Authorized,
    State(state): State<HttpState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let a: AddNode = json_body(body)?;
    crate::config::check_addr("addr", &a.addr).map_err(|e| HttpError::bad_request(e.to_string()))?;
    state.client().add_node(a.id, a.addr).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `DELETE /v1/nodes/{id}`: removes a voter.
pub async fn remove_node(
    _: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, HttpError> {
    state.client().remove_node(id).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/nodes/{id}/replace`: brings back a voter that lost its data.
pub async fn replace_node(
    _: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, HttpError> {
    state.client().replace_node(id).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/leader/transfer[?to=N]`: hands leadership over; answers the new leader.
pub async fn transfer_leader(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["to"])?;
    let leader = state.client().transfer_leader(params.number::<u64>("to")?).await?;
    Ok(Json(json!({ "ok": true, "leader": leader })))
}
