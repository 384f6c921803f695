//! Writes, exactly once over HTTP too.
//!
//! - With `Roster-Session: N` and `Roster-Seq: M`, the write is command `M` of session
//!   `N` (from `POST /v1/sessions`). Send one command at a time per session, numbered
//!   from 1. After a timeout or a lost answer, send the same request with the same pair
//!   again: the cluster answers from the reply it stored and applies nothing twice.
//! - Without them, the node runs the write on one of its own sessions. Its own retries
//!   (across a leader change) apply it once; a caller that repeats the request makes a
//!   new command.

use super::HttpState;
use super::error::HttpError;
use axum::http::HeaderMap;
use roster_kernel::{Command, Reply, SessionId, SessionOwner};

pub const SESSION_HEADER: &str = "roster-session";
pub const SEQ_HEADER: &str = "roster-seq";

/// Runs `command` under the caller's session, or this node's, once the caller may.
pub async fn write(
    state: &HttpState,
    auth: &super::auth::Authorized,
    headers: &HeaderMap,
    command: Command,
) -> Result<Reply, HttpError> {
    let request = roster_kernel::Request { session: SessionId(0), seq: 0, command };
    let request = crate::net::wire::ClientRequest::Submit(request);
    let owner = auth.may(state, &request).await?;
    let crate::net::wire::ClientRequest::Submit(roster_kernel::Request { command, .. }) = request else {
        unreachable!("built as a Submit above")
    };
    match caller_session(headers)? {
        // The caller's own session: only the credential that opened it may use it.
        Some((session, seq)) => Ok(state.client().execute_in(session, seq, command, Some(owner)).await?),
        None => {
            // The node's session retries until the cluster answers; the caller gets an
            // answer in time even so. The command stays queued and may still apply.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(super::REQUEST_TIMEOUT_MS);
            match crate::rt::Timeout::new(state.session_client().execute(command), deadline).await {
                Ok(reply) => Ok(reply?),
                Err(_) => Err(roster_client::ClientError::Ambiguous {
                    addr: "the cluster".to_string(),
                    reason: format!("no reply within {} ms", super::REQUEST_TIMEOUT_MS),
                }
                .into()),
            }
        }
    }
}

/// `POST /v1/sessions`: a session of `owner`'s, the caller's credential.
pub async fn open_session(state: &HttpState, owner: SessionOwner) -> Result<serde_json::Value, HttpError> {
    let session = state.client().open_session_for(owner).await?;
    serde_json::to_value(crate::view::WriteReply::SessionOpened { session: session.0 }).map_err(super::reads::internal)
}

/// `DELETE /v1/sessions/{id}`: ends a session of `owner`'s.
pub async fn close_session(state: &HttpState, owner: SessionOwner, session: u64) -> Result<u64, HttpError> {
    Ok(state.client().close_session(SessionId(session), Some(owner)).await?)
}

fn caller_session(headers: &HeaderMap) -> Result<Option<(SessionId, u64)>, HttpError> {
    let number = |name: &str| -> Result<Option<u64>, HttpError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| HttpError::bad_request(format!("header {name}: expected a number, got {v:?}")))
            })
            .transpose()
    };
    match (number(SESSION_HEADER)?, number(SEQ_HEADER)?) {
        (None, None) => Ok(None),
        (Some(session), Some(seq)) => Ok(Some((SessionId(session), seq))),
        (Some(_), None) => {
            Err(HttpError::bad_request("Roster-Session without Roster-Seq: number each command of a session from 1"))
        }
        (None, Some(_)) => {
            Err(HttpError::bad_request("Roster-Seq without Roster-Session: open a session with POST /v1/sessions"))
        }
    }
}

/// A reply as the JSON body of a write: its fields, without the variant's wrapper
/// (`view::WriteReply`, as the CLI prints it).
pub fn reply_json(reply: &Reply) -> serde_json::Value {
    serde_json::to_value(crate::view::WriteReply::from(reply)).unwrap_or_else(|e| {
        // Plain numbers and strings always encode; were one not to, the caller still learns.
        serde_json::json!({ "error": { "kind": "internal", "message": format!("cannot encode the reply: {e}") } })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_session_needs_both_headers_as_numbers() {
        let mut h = HeaderMap::new();
        assert_eq!(caller_session(&h).unwrap(), None);
        h.insert(SESSION_HEADER, HeaderValue::from_static("7"));
        assert!(caller_session(&h).unwrap_err().message.contains("Roster-Seq"));
        h.insert(SEQ_HEADER, HeaderValue::from_static("3"));
        assert_eq!(caller_session(&h).unwrap(), Some((SessionId(7), 3)));
        h.insert(SEQ_HEADER, HeaderValue::from_static("three"));
        assert!(caller_session(&h).unwrap_err().message.contains("expected a number"));
    }
}
