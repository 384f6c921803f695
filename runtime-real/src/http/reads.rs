//! Reads: status, servers, processes, tombstones. Linearizable unless `?stale`.

use super::HttpState;
use super::auth::Authorized;
use super::error::HttpError;
use super::query::Params;
use crate::view;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use roster_kernel::{ListFilter, MemberId, MemberKind, MemberStatus, ProcessId, Query, QueryResult, ServerId};

/// Members in one page of `/v1/servers` or `/v1/processes` unless `?limit` says (the
/// node's byte bound, 1 MiB, may cut a page shorter), and the most `?limit` may ask.
const DEFAULT_PAGE_LIMIT: u32 = 1_000;
const MAX_PAGE_LIMIT: u32 = 10_000;

/// Most tombstones one request returns (the cluster keeps a bounded history anyway).
const MAX_TOMBSTONES: u32 = 1_000;

/// `GET /v1/status`: the leader's view (it alone knows heartbeat ages) when it answers,
/// else the first node's; `?local` for this node's own view.
pub async fn status(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<view::StatusView>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["local"])?;
    let status = if params.flag("local")? { state.api().status().await } else { state.client().status().await? };
    Ok(Json(view::StatusView::from(&status)))
}

/// `GET /v1/servers?label=K=V&status=online|draining&limit=N&after=ID[&stale]`: one page,
/// in id order; `next` is the `after` of the next page, `null` at the end.
pub async fn servers(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<view::ServerPage>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["label", "status", "stale", "limit", "after"])?;
    let filter = ListFilter { kind: Some(MemberKind::Server), ..filter(&params)? };
    let (after, limit) = page(&params)?;
    let page = state
        .client()
        .list_page(filter, after.map(|id| MemberId::Server(ServerId(id))), limit, params.consistency()?)
        .await?;
    let next = page.next.map(|id| match id {
        MemberId::Server(id) => id.0,
        MemberId::Process(id) => id.0,
    });
    let servers = page.servers.iter().map(view::ServerView::from).collect();
    Ok(Json(view::ServerPage { revision: page.revision, servers, next }))
}

/// `GET /v1/processes?server=ID&label=K=V&status=online|draining&limit=N&after=ID[&stale]`:
/// one page, in id order; `next` is the `after` of the next page, `null` at the end.
pub async fn processes(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<view::ProcessPage>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["server", "label", "status", "stale", "limit", "after"])?;
    let filter = ListFilter {
        kind: Some(MemberKind::Process),
        server: params.number::<u64>("server")?.map(ServerId),
        ..filter(&params)?
    };
    let (after, limit) = page(&params)?;
    let after = after.map(|id| MemberId::Process(ProcessId(id)));
    let page = state.client().list_page(filter, after, limit, params.consistency()?).await?;
    let next = page.next.map(|id| match id {
        MemberId::Server(id) => id.0,
        MemberId::Process(id) => id.0,
    });
    let processes = page.processes.iter().map(view::ProcessView::from).collect();
    Ok(Json(view::ProcessPage { revision: page.revision, processes, next }))
}

/// The `after` and `limit` parameters of a member list: a page of at most `limit`
/// (default `DEFAULT_PAGE_LIMIT`, at most `MAX_PAGE_LIMIT`) after id `after`.
fn page(params: &Params) -> Result<(Option<u64>, u32), HttpError> {
    let limit = params.number::<u32>("limit")?.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(HttpError::bad_request(format!("?limit={limit} must be 1 to {MAX_PAGE_LIMIT}")));
    }
    Ok((params.number::<u64>("after")?, limit))
}

/// `GET /v1/servers/{id}`.
pub async fn server(
    _: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
) -> Result<Json<view::OneServer>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["stale"])?;
    let reply = state.client().query(Query::GetServer(ServerId(id)), params.consistency()?).await?;
    match reply.result {
        QueryResult::Server(Some(entry)) => {
            Ok(Json(view::OneServer { revision: reply.revision, server: view::ServerView::from(&entry) }))
        }
        QueryResult::Server(None) => Err(HttpError::not_found(format!("{} is not in the cluster", ServerId(id)))
            .with_details(serde_json::json!({ "revision": reply.revision }))),
        other => Err(unexpected(&other)),
    }
}

/// `GET /v1/processes/{id}`.
pub async fn process(
    _: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
) -> Result<Json<view::OneProcess>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["stale"])?;
    let reply = state.client().query(Query::GetProcess(ProcessId(id)), params.consistency()?).await?;
    match reply.result {
        QueryResult::Process(Some(entry)) => {
            Ok(Json(view::OneProcess { revision: reply.revision, process: view::ProcessView::from(&entry) }))
        }
        QueryResult::Process(None) => Err(HttpError::not_found(format!("{} is not in the cluster", ProcessId(id)))
            .with_details(serde_json::json!({ "revision": reply.revision }))),
        other => Err(unexpected(&other)),
    }
}

/// `GET /v1/tombstones?limit=N`: departed members, how and when they left.
pub async fn tombstones(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<view::Tombstones>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["limit", "stale"])?;
    let limit = params.number::<u32>("limit")?.unwrap_or(100);
    if limit > MAX_TOMBSTONES {
        return Err(HttpError::bad_request(format!("?limit={limit} is over the most, {MAX_TOMBSTONES}")));
    }
    let reply = state.client().query(Query::Tombstones { limit }, params.consistency()?).await?;
    match reply.result {
        QueryResult::Tombstones(t) => {
            let tombstones = t.iter().map(view::TombstoneView::from).collect();
            Ok(Json(view::Tombstones { revision: reply.revision, tombstones }))
        }
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
