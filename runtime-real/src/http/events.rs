//! `GET /v1/events?after=REV`: change events as they are applied on this node, one JSON
//! object per line (NDJSON), or as server-sent events with `Accept: text/event-stream`.
//!
//! - An event line: `{"revision": 13, "type": "process_registered", "data": {...},
//!   "text": "rev 13  process web (process-1) registered on dev-1, ..."}`.
//! - A progress line every `PROGRESS_MS`, sent when the stream has caught up:
//!   `{"progress": {"revision": R}}` says every event up to `R` was sent, so a watcher
//!   knows it is current even when nothing it cares about changes (etcd's progress
//!   notify). Resume with `?after=` the last revision seen.
//! - Without `after`, the stream starts at the current revision (new events only).
//! - A revision older than the node keeps is 410 with `oldest_available`; when a slow
//!   reader falls that far behind mid-stream, an error line ends the stream.
//!
//! The next batch comes from `api::watch::watch_step`, which the binary protocol's watch uses.

use super::HttpState;
use super::auth::Authorized;
use super::error::HttpError;
use super::query::Params;
use crate::server::api::watch::{WatchStep, watch_step};
use crate::storage::{AppliedReceiver, SharedState};
use crate::view::{EventView, Progress, ProgressLine};
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use openraft_rt::WatchReceiver;
use roster_client::describe::KnownServers;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often a caught-up stream says how far it is current.
pub const PROGRESS_MS: u64 = 5_000;

pub async fn events(
    auth: Authorized,
    State(state): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let params = Params::parse(q.as_deref());
    params.only(&["after"])?;
    let sees_credentials = auth.sees_credentials(&state).await?;
    let shared = state.api().applied().clone();
    let after = match params.number::<u64>("after")? {
        Some(r) => r,
        None => crate::storage::with_kernel(&shared, |sm| sm.revision()),
    };
    if let WatchStep::Compacted { oldest_available } = watch_step(&shared, after, sees_credentials) {
        return Err(compacted(after, oldest_available));
    }
    let sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    let servers = crate::storage::with_kernel(&shared, |sm| {
        KnownServers::new(sm.servers().cloned()).with_processes(sm.processes().cloned())
    });
    let changes = shared.subscribe();
    let open = crate::metrics::Open::new(&state.api().metrics().watchers);
    let next_progress = tokio::time::Instant::now() + Duration::from_millis(PROGRESS_MS);
    let stream = Stream {
        shared,
        seen: after,
        sees_credentials,
        changes,
        servers,
        sse,
        ended: false,
        next_progress,
        _open: open,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), s))
    }));
    let content_type = if sse { "text/event-stream" } else { "application/x-ndjson" };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn compacted(requested: u64, oldest_available: u64) -> HttpError {
    HttpError::new(
        StatusCode::GONE,
        "compacted",
        format!(
            "cannot stream from revision {requested}: the oldest this node keeps is {oldest_available}; \
             list again and stream from the list's revision"
        ),
    )
    .with_details(json!({ "oldest_available": oldest_available }))
}

/// One open stream: what it sent, and how to write lines.
struct Stream {
    shared: Arc<SharedState>,
    /// Every event up to this revision was sent.
    seen: u64,
    /// Token and audit events are sent too (an admin's stream).
    sees_credentials: bool,
    changes: AppliedReceiver,
    servers: KnownServers,
    sse: bool,
    ended: bool,
    /// When the next progress line is due.
    next_progress: tokio::time::Instant,
    /// Counts this stream among the node's watchers until the client goes.
    _open: crate::metrics::Open,
}

impl Stream {
    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            match watch_step(&self.shared, self.seen, self.sees_credentials) {
                WatchStep::Events { events, through } => {
                    self.seen = through;
                    if events.is_empty() {
                        continue;
                    }
                    let mut out = String::new();
                    for e in &events {
                        let line = EventView::new(e, |id| self.servers.name(id));
                        self.servers.observe(e);
                        out.push_str(&self.frame("change", &line));
                    }
                    return Some(Bytes::from(out));
                }
                WatchStep::Current { revision } => {
                    let now = tokio::time::Instant::now();
                    if now >= self.next_progress {
                        self.next_progress = now + Duration::from_millis(PROGRESS_MS);
                        let line = ProgressLine { progress: Progress { revision } };
                        return Some(Bytes::from(self.frame("progress", &line)));
                    }
                    match tokio::time::timeout_at(self.next_progress, self.changes.changed()).await {
                        Ok(Ok(())) | Err(_) => continue,
                        // The node is stopping.
                        Ok(Err(_)) => return None,
                    }
                }
                WatchStep::Compacted { oldest_available } => {
                    self.ended = true;
                    let line = compacted(self.seen, oldest_available).view();
                    return Some(Bytes::from(self.frame("error", &line)));
                }
            }
        }
    }

    /// One line (NDJSON) or one server-sent event of `line`'s JSON.
    fn frame(&self, event: &str, line: &impl serde::Serialize) -> String {
        let line = serde_json::to_string(line).unwrap_or_else(|e| {
            // Plain fields always encode; were one not to, the reader learns of it.
            serde_json::to_string(&crate::view::ErrorView::new("internal", format!("cannot encode a line: {e}")))
                .unwrap_or_default()
        });
        if self.sse { format!("event: {event}\ndata: {line}\n\n") } else { format!("{line}\n") }
    }
}
