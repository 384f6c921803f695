//! Sessions and the Raft group's membership: what `roster member` does.

use super::HttpState;
use super::auth::Authorized;
use super::error::{HttpError, json_body};
use super::query::Params;
use crate::net::wire::ClientRequest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /v1/sessions`: a session for exactly-once writes (see `writes.rs`).
pub async fn open_session(
    auth: Authorized,
    State(state): State<HttpState>,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let owner = auth.may(&state, &ClientRequest::OpenSession).await?;
    Ok((StatusCode::CREATED, Json(super::writes::open_session(&state, owner).await?)))
}

/// `DELETE /v1/sessions/{id}`: ends a session the caller opened; answers the revision.
pub async fn close_session(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, HttpError> {
    let session = roster_kernel::SessionId(id);
    let owner = auth.may(&state, &ClientRequest::CloseSession { session }).await?;
    let revision = super::writes::close_session(&state, owner, id).await?;
    Ok(Json(serde_json::to_value(crate::view::WriteReply::Done { revision }).map_err(super::reads::internal)?))
}

/// `POST /v1/nodes`: `{"id": N, "addr": "HOST:PORT"}` adds a server node (learner, then voter).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub id: u64,
    pub addr: String,
}

pub async fn add_node(
    auth: Authorized,
    State(state): State<HttpState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let a: AddNode = json_body(body)?;
    crate::config::check_addr("addr", &a.addr).map_err(|e| HttpError::bad_request(e.to_string()))?;
    auth.may(&state, &ClientRequest::AddNode { id: a.id, addr: a.addr.clone() }).await?;
    state.client().add_node(a.id, a.addr).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `DELETE /v1/nodes/{id}`: removes a voter.
pub async fn remove_node(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, HttpError> {
    auth.may(&state, &ClientRequest::RemoveNode { id }).await?;
    state.client().remove_node(id).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/nodes/{id}/replace`: brings back a voter that lost its data.
pub async fn replace_node(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, HttpError> {
    auth.may(&state, &ClientRequest::ReplaceNode { id }).await?;
    state.client().replace_node(id).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/leader/transfer[?to=N]`: hands leadership over; answers the new leader.
pub async fn transfer_leader(
    auth: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["to"])?;
    let to = params.number::<u64>("to")?;
    auth.may(&state, &ClientRequest::TransferLeader { to }).await?;
    let leader = state.client().transfer_leader(to).await?;
    Ok(Json(json!({ "ok": true, "leader": leader })))
}

/// `GET /v1/tokens`: every token (id, name, role, expiry; never a secret). Admin only.
pub async fn tokens(
    auth: Authorized,
    State(state): State<HttpState>,
) -> Result<Json<crate::view::TokenList>, HttpError> {
    let query = roster_kernel::Query::Tokens { after: None, limit: 1 };
    let request = ClientRequest::Query { query, consistency: crate::net::wire::Consistency::Linearizable };
    auth.may(&state, &request).await?;
    let tokens = state.client().tokens().await?;
    Ok(Json(crate::view::TokenList { tokens: tokens.iter().map(crate::view::TokenView::from).collect() }))
}

/// `POST /v1/tokens`: `{"role": "admin|read|launch|agent|member", "name": "...",
/// "server": N (agent), "member": "process:N" (member), "ttl_ms": N}`. Answers the id and
/// the secret, which is shown this once and kept nowhere.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub role: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub server: Option<u64>,
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

pub async fn create_token(
    auth: Authorized,
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let c: CreateToken = json_body(body)?;
    let role = crate::server::authority::parse_role(&c.role, c.server, c.member.as_deref())
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let secret = crate::server::launch::new_secret();
    let name = c.name.unwrap_or_else(|| c.role.clone());
    let expires_at_unix_ms = c.ttl_ms.map(|ttl| crate::rt::clock::unix_ms().saturating_add(ttl));
    let hash = roster_client::token_hash(&secret);
    let command = roster_kernel::Command::CreateToken { hash, name, role, expires_at_unix_ms };
    let reply = super::writes::write(&state, &auth, &headers, command).await?;
    let roster_kernel::Reply::TokenCreated { id, revision } = reply else {
        return Err(HttpError::from(roster_client::ClientError::Protocol(format!(
            "expected TokenCreated, got {reply:?}"
        ))));
    };
    Ok((StatusCode::CREATED, Json(json!({ "id": id.0, "secret": secret, "revision": revision }))))
}

/// `DELETE /v1/tokens/{id}`: revokes a token on every node as the revocation applies.
pub async fn revoke_token(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let command = roster_kernel::Command::RevokeToken { id: roster_kernel::TokenId(id) };
    let reply = super::writes::write(&state, &auth, &headers, command).await?;
    Ok(Json(super::writes::reply_json(&reply)))
}
