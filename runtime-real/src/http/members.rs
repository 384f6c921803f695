//! Membership for any language: register a process, heartbeat it, deregister it; patch
//! or delete entries; launch a program on the idlest server.

use super::HttpState;
use super::auth::Authorized;
use super::error::{HttpError, json_body};
use super::query::Params;
use super::writes::{reply_json, write};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use roster_kernel::{
    Command, Labels, MemberId, MemberStatus, ProcessId, ProcessInfo, ProcessPatch, ResourceAverage, ServerId,
    ServerPatch,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `POST /v1/processes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub name: String,
    /// The server that hosts it.
    pub server: u64,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub labels: Labels,
    /// Defaults to now.
    #[serde(default)]
    pub started_at_unix_ms: Option<u64>,
    /// Also mint a `member` token for the new process alone and answer its secret
    /// (`"token"`): what the process should hold from then on, instead of the caller's.
    #[serde(default)]
    pub member_token: bool,
}

pub async fn register(
    auth: Authorized,
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let r: Register = json_body(body)?;
    let info = ProcessInfo {
        name: r.name,
        server: ServerId(r.server),
        service_host: r.host,
        service_port: r.port,
        started_at_unix_ms: r.started_at_unix_ms.unwrap_or_else(unix_ms_now),
        labels: r.labels,
        reserved: ResourceAverage::default(),
    };
    let reply = write(&state, &auth, &headers, Command::RegisterProcess { info }).await?;
    let mut body = reply_json(&reply);
    if let (true, roster_kernel::Reply::ProcessRegistered { id, .. }) = (r.member_token, &reply) {
        let secret = crate::server::launch::new_secret();
        let command = Command::CreateToken {
            hash: roster_client::token_hash(&secret),
            name: format!("http {}", id),
            role: roster_kernel::TokenRole::Member(MemberId::Process(*id)),
            expires_at_unix_ms: None,
        };
        // Under this node's own session: the caller's (if any) numbered one command only.
        write(&state, &auth, &HeaderMap::new(), command).await?;
        body["token"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// `PUT /v1/processes/{id}/heartbeat`, body optional: `{"cpu_percent": N, "mem_bytes": N}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beat {
    pub cpu_percent: u32,
    pub mem_bytes: u64,
}

pub async fn heartbeat(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let body = body.map_err(super::error::bad_body)?;
    let resources = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let beat: Beat = serde_json::from_slice(&body).map_err(|e| {
            HttpError::bad_request(format!(
                "heartbeat body: {e}; expected {{\"cpu_percent\": N, \"mem_bytes\": N}} or nothing"
            ))
        })?;
        Some(ResourceAverage { cpu_percent_avg: beat.cpu_percent, mem_bytes_used_avg: beat.mem_bytes })
    };
    let member = MemberId::Process(ProcessId(id));
    auth.may(&state, &crate::net::wire::ClientRequest::Heartbeat { member, resources }).await?;
    state.client().heartbeat(member, resources).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `DELETE /v1/processes/{id}?exit=N` deregisters (the process leaves, with its exit
/// status); `?delete` removes it as an operator would (`roster del`).
pub async fn deregister(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["exit", "delete"])?;
    let id = ProcessId(id);
    let command = if params.flag("delete")? {
        if params.get("exit").is_some() {
            return Err(HttpError::bad_request("?delete removes the entry as an operator: it takes no ?exit"));
        }
        Command::Delete { member: MemberId::Process(id) }
    } else {
        Command::DeregisterProcess { id, exit_status: params.number::<i32>("exit")? }
    };
    Ok(Json(reply_json(&write(&state, &auth, &headers, command).await?)))
}

/// `PATCH /v1/processes/{id}`: `{"name", "host", "port" (null clears), "status",
/// "labels": {"k": "v" | null}}`, every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchProcess {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub port: Option<Option<u16>>,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub labels: BTreeMap<String, Option<String>>,
}

pub async fn patch_process(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let p: PatchProcess = json_body(body)?;
    let patch = ProcessPatch {
        name: p.name,
        service_host: p.host,
        service_port: p.port,
        status: p.status.map(Status::into_kernel),
        labels: p.labels,
    };
    let reply = write(&state, &auth, &headers, Command::PutProcess { id: ProcessId(id), patch }).await?;
    Ok(Json(reply_json(&reply)))
}

/// `PATCH /v1/servers/{id}`: `{"name", "cpu_capacity_percent", "mem_capacity_bytes",
/// "status"}`, every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchServer {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cpu_capacity_percent: Option<u32>,
    #[serde(default)]
    pub mem_capacity_bytes: Option<u64>,
    #[serde(default)]
    pub status: Option<Status>,
}

pub async fn patch_server(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let p: PatchServer = json_body(body)?;
    let patch = ServerPatch {
        name: p.name,
        cpu_capacity_percent: p.cpu_capacity_percent,
        mem_capacity_bytes: p.mem_capacity_bytes,
        status: p.status.map(Status::into_kernel),
        ..ServerPatch::default()
    };
    let reply = write(&state, &auth, &headers, Command::PutServer { id: ServerId(id), patch, create: None }).await?;
    Ok(Json(reply_json(&reply)))
}

/// `DELETE /v1/servers/{id}`: an operator's removal (`roster del server:ID`).
pub async fn delete_server(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let reply = write(&state, &auth, &headers, Command::Delete { member: MemberId::Server(ServerId(id)) }).await?;
    Ok(Json(reply_json(&reply)))
}

/// `POST /v1/servers/{id}/drain`: placement stops picking the server (`roster server
/// drain`); it keeps running, heartbeating and its processes. Answers `{"revision": N}`;
/// the entry's `drained` field shows the flag.
pub async fn drain_server(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let reply = write(&state, &auth, &headers, Command::SetDrained { id: ServerId(id), drained: true }).await?;
    Ok(Json(reply_json(&reply)))
}

/// `POST /v1/servers/{id}/undrain`: placement may pick the server again.
pub async fn undrain_server(
    auth: Authorized,
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let reply = write(&state, &auth, &headers, Command::SetDrained { id: ServerId(id), drained: false }).await?;
    Ok(Json(reply_json(&reply)))
}

/// `POST /v1/launch`: `{"name", "program", "args", "labels", "require_mem_bytes",
/// "require_cpu_percent"}`; answers where it started.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub name: String,
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub require_mem_bytes: Option<u64>,
    #[serde(default)]
    pub require_cpu_percent: Option<u32>,
}

pub async fn launch(
    auth: Authorized,
    State(state): State<HttpState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<crate::view::Launched>), HttpError> {
    let l: Launch = json_body(body)?;
    let request = crate::net::wire::LaunchRequest {
        name: l.name,
        program: l.program,
        args: l.args,
        labels: l.labels,
        require_mem_bytes: l.require_mem_bytes,
        require_cpu_percent: l.require_cpu_percent,
    };
    let request = crate::net::wire::ClientRequest::Launch(request);
    auth.may(&state, &request).await?;
    let crate::net::wire::ClientRequest::Launch(request) = request else { unreachable!("built as a Launch above") };
    let started = state.client().launch_started(request).await?;
    Ok((StatusCode::CREATED, Json(crate::view::Launched::from(&started))))
}

/// `online` or `draining` in JSON bodies.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Draining,
}

impl Status {
    fn into_kernel(self) -> MemberStatus {
        match self {
            Status::Online => MemberStatus::Online,
            Status::Draining => MemberStatus::Draining,
        }
    }
}

/// A field that is present (even as `null`) is `Some`, so `"port": null` clears it.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u16>>, D::Error> {
    Option::<u16>::deserialize(d).map(Some)
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
