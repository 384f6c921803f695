//! `GET /v1/processes/{id}/logs[?tail=N|?offset=O]`: the output of a launched process,
//! read on the node that runs it (as `roster logs`), at most 256 KiB per request. The body
//! is the output's bytes as they are; headers say where they sit in the file, so a caller
//! pages or follows on with `?offset=` the `Roster-Output-Next` it got. Needs the `launch`
//! role (or `admin`): a job's output may hold secrets.

use super::HttpState;
use super::auth::Authorized;
use super::error::HttpError;
use super::query::Params;
use crate::net::wire::{ClientRequest, OutputFrom, OutputRequest};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use roster_kernel::ProcessId;

pub async fn logs(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["tail", "offset"])?;
    let from = match (params.number::<u32>("tail")?, params.number::<u64>("offset")?) {
        (Some(_), Some(_)) => return Err(HttpError::bad_request("give ?tail=N or ?offset=O, not both")),
        (Some(lines), None) => OutputFrom::TailLines(lines),
        (None, offset) => OutputFrom::Offset(offset.unwrap_or(0)),
    };
    let request = OutputRequest { process: ProcessId(id), from };
    auth.may(&state, &ClientRequest::Output(request.clone())).await?;
    let chunk = state.client().output(request).await?;
    let next = chunk.offset + chunk.data.len() as u64;
    let headers = [
        ("roster-output-offset", chunk.offset.to_string()),
        ("roster-output-next", next.to_string()),
        ("roster-output-size", chunk.size_bytes.to_string()),
        ("roster-process-left", chunk.process_left.to_string()),
        ("roster-server", chunk.server.0.to_string()),
    ];
    let mut response = chunk.data.into_response();
    let map = response.headers_mut();
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}
