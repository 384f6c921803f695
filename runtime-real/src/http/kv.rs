//! The key/value namespace. Values travel as raw bytes in both directions (they must be
//! UTF-8: the cluster stores text): `PUT` takes the body as the value, `GET` answers it
//! as `text/plain` with the revision in `Roster-Revision`, or as JSON with
//! `Accept: application/json`. Compare-and-set: `?cas=EXPECTED` or `?absent`; a swap
//! that did not happen is 409 with the value found.

use super::HttpState;
use super::auth::Authorized;
use super::error::{HttpError, bad_body};
use super::query::Params;
use super::reads::unexpected;
use super::writes::{reply_json, write};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roster_kernel::{Command, Query, QueryResult, Reply};
use serde_json::json;

/// Most items one range read returns.
const MAX_RANGE_ITEMS: u32 = 10_000;

/// `GET /v1/kv/{key}[?stale]`.
pub async fn get(
    _: Authorized,
    State(state): State<HttpState>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["stale"])?;
    let reply = state.client().query(Query::KvGet { key: key.clone() }, params.consistency()?).await?;
    let value = match reply.result {
        QueryResult::KvValue(Some(v)) => v,
        QueryResult::KvValue(None) => {
            return Err(HttpError::not_found(format!("key {key:?} is not set"))
                .with_details(json!({ "revision": reply.revision })));
        }
        other => return Err(unexpected(&other)),
    };
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    let mut response = if wants_json {
        Json(crate::view::KvValue { key, value, revision: reply.revision }).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], value).into_response()
    };
    response.headers_mut().insert("roster-revision", HeaderValue::from(reply.revision));
    Ok(response)
}

/// `GET /v1/kv?start=A&end=B&limit=N[&stale]`: keys in `[start, end)`, in order, one page
/// (at most `limit` and at most 1 MiB of them); `next` is the key the next page starts at
/// (`?start=NEXT`), `null` at the end of the range.
pub async fn range(
    _: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Result<Json<crate::view::KvItems>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["start", "end", "limit", "stale"])?;
    let limit = params.number::<u32>("limit")?.unwrap_or(1_000);
    if limit > MAX_RANGE_ITEMS {
        return Err(HttpError::bad_request(format!("?limit={limit} is over the most, {MAX_RANGE_ITEMS}")));
    }
    let query = Query::KvRange {
        start: params.get("start").unwrap_or("").to_string(),
        end: params.get("end").map(str::to_string),
        limit,
    };
    let reply = state.client().query(query, params.consistency()?).await?;
    match reply.result {
        QueryResult::KvItems { items, next } => {
            let items = items.into_iter().map(|(key, value)| crate::view::KvItem { key, value }).collect();
            Ok(Json(crate::view::KvItems { revision: reply.revision, items, next }))
        }
        other => Err(unexpected(&other)),
    }
}

/// `PUT /v1/kv/{key}[?cas=EXPECTED|?absent]`, the body is the value.
pub async fn put(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["cas", "absent"])?;
    let value = String::from_utf8(body.map_err(bad_body)?.to_vec())
        .map_err(|e| HttpError::bad_request(format!("the value is not UTF-8 text ({e}); the cluster stores text")))?;
    let command = match expected(&params)? {
        Some(expected) => Command::KvCas { key, expected, new: Some(value) },
        None => Command::KvPut { key, value },
    };
    answer(write(&state, &auth, &headers, command).await?)
}

/// `DELETE /v1/kv/{key}[?cas=EXPECTED]`.
pub async fn delete(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["cas", "absent"])?;
    let command = match expected(&params)? {
        Some(expected) => Command::KvCas { key, expected, new: None },
        None => Command::KvDelete { key },
    };
    answer(write(&state, &auth, &headers, command).await?)
}

/// `Some(expected)` for a compare-and-set: `?cas=V` expects `V`, `?absent` no value.
fn expected(params: &Params) -> Result<Option<Option<String>>, HttpError> {
    match (params.get("cas"), params.flag("absent")?) {
        (Some(_), true) => Err(HttpError::bad_request("give ?cas=EXPECTED or ?absent, not both")),
        (Some(v), false) => Ok(Some(Some(v.to_string()))),
        (None, true) => Ok(Some(None)),
        (None, false) => Ok(None),
    }
}

fn answer(reply: Reply) -> Result<Response, HttpError> {
    if let Reply::Cas { swapped: false, current, revision } = &reply {
        let found = current.as_deref().map_or("no value".to_string(), |v| format!("{v:?}"));
        return Err(HttpError::new(StatusCode::CONFLICT, "cas_failed", format!("not swapped: the key holds {found}"))
            .with_details(json!({ "current": current, "revision": revision })));
    }
    Ok(Json(reply_json(&reply)).into_response())
}
