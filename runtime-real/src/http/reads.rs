//! Reads: status, servers, processes, tombstones. Linearizable unless `?stale`.

use super::HttpState;
use super::auth::Authorized;
use super::error::HttpError;
use super::query::Params;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use roster_kernel::{ListFilter, MemberKind, MemberStatus, ProcessId, Query, QueryResult, ServerId};
use serde_json::{Value, json};

/// Most tombstones one request returns (the cluster keeps a bounded history anyway).
const MAX_TOMBSTONES: u32 = 1_000;

/// `GET /v1/status`: the leader's view (it alone knows heartbeat ages) when it answers,
/// else the first node's; `?local` for this node's own view.
pub async fn status(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["local"])?;
    let status = if params.flag("local")? { state.api().status().await } else { state.client().status().await? };
    Ok(Json(serde_json::to_value(status).map_err(internal)?))
}

/// `GET /v1/servers?label=K=V&status=online|draining[&stale]`.
pub async fn servers(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["label", "status", "stale"])?;
    let filter = ListFilter { kind: Some(MemberKind::Server), ..filter(&params)? };
    let list = state.client().list(filter, params.consistency()?).await?;
    Ok(Json(json!({ "revision": list.revision, "servers": list.servers })))
}

/// `GET /v1/processes?server=ID&label=K=V&status=online|draining[&stale]`.
pub async fn processes(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["server", "label", "status", "stale"])?;
    let filter = ListFilter {
        kind: Some(MemberKind::Process),
        server: params.number::<u64>("server")?.map(ServerId),
        ..filter(&params)?
    };
    let list = state.client().list(filter, params.consistency()?).await?;
    Ok(Json(json!({ "revision": list.revision, "processes": list.processes })))
}

/// `GET /v1/servers/{id}`.
pub async fn server(
    _: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["stale"])?;
    let reply = state.client().query(Query::GetServer(ServerId(id)), params.consistency()?).await?;
    match reply.result {
        QueryResult::Server(Some(entry)) => Ok(Json(json!({ "revision": reply.revision, "server": entry }))),
        QueryResult::Server(None) => Err(HttpError::not_found(format!("{} is not in the cluster", ServerId(id)))),
        other => Err(unexpected(&other)),
    }
}

/// `GET /v1/processes/{id}`.
pub async fn process(
    _: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["stale"])?;
    let reply = state.client().query(Query::GetProcess(ProcessId(id)), params.consistency()?).await?;
    match reply.result {
        QueryResult::Process(Some(entry)) => Ok(Json(json!({ "revision": reply.revision, "process": entry }))),
        QueryResult::Process(None) => Err(HttpError::not_found(format!("{} is not in the cluster", ProcessId(id)))),
        other => Err(unexpected(&other)),
    }
}

/// `GET /v1/tombstones?limit=N`: departed members, how and when they left.
pub async fn tombstones(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["limit", "stale"])?;
    let limit = params.number::<u32>("limit")?.unwrap_or(100);
    if limit > MAX_TOMBSTONES {
        return Err(HttpError::bad_request(format!("?limit={limit} is over the most, {MAX_TOMBSTONES}")));
    }
    let reply = state.client().query(Query::Tombstones { limit }, params.consistency()?).await?;
    match reply.result {
        QueryResult::Tombstones(t) => Ok(Json(json!({ "revision": reply.revision, "tombstones": t }))),
        other => Err(unexpected(&other)),
    }
}

/// The `label` and `status` parameters every list takes.
fn filter(params: &Params) -> Result<ListFilter, HttpError> {
    let mut filter = ListFilter::default();
    for label in params.all("label") {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| HttpError::bad_request(format!("?label={label}: expected KEY=VALUE")))?;
        filter.labels.insert(k.to_string(), v.to_string());
    }
    filter.status = match params.get("status") {
        None => None,
        Some("online") => Some(MemberStatus::Online),
        Some("draining") => Some(MemberStatus::Draining),
        Some(other) => return Err(HttpError::bad_request(format!("?status={other}: expected online or draining"))),
    };
    Ok(filter)
}

pub fn internal(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

pub fn unexpected(result: &QueryResult) -> HttpError {
    internal(format!("the node answered a different query: {result:?}"))
}
