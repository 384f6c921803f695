//! Every HTTP error is `{"error": {"kind": ..., "message": ...}}` with a status code that
//! says who must act: 4xx the caller (fix the request), 503 retry later, 504 the outcome
//! is unknown. `kind` is stable for scripts; `message` is the one-line text the CLI prints.

use crate::net::wire::RequestError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roster_client::ClientError;
use roster_kernel::CommandError;

#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Extra fields beside kind and message (e.g. `oldest_available` for a compacted watch).
    pub details: Option<serde_json::Value>,
}

impl HttpError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, kind, message: message.into(), details: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `{"error": {"kind", "message", ...details}}` (`view::ErrorView`, as the CLI's `--json`
    /// prints its errors).
    pub fn view(&self) -> crate::view::ErrorView {
        let view = crate::view::ErrorView::new(self.kind, self.message.clone());
        match &self.details {
            Some(details) => view.with_details(details.clone()),
            None => view,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let retry_later = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (self.status, axum::Json(self.view())).into_response();
        if retry_later {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Bytes of a plain-text error body read to be wrapped as JSON: axum's rejections (a path
/// id that is not a number, a method not allowed) are one short line.
const PLAIN_ERROR_BODY_BYTES: usize = 4096;

/// A plain-text error response (axum's own rejections of a request it could not extract,
/// such as `/v1/processes/abc`) in the stable shape every other error has, with the same
/// status. Other responses pass as they are.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let kind = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "node_failed",
    };
    let message = match axum::body::to_bytes(response.into_body(), PLAIN_ERROR_BODY_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(e) => format!("the request was refused ({status}); its reason could not be read: {e}"),
    };
    let message = if message.is_empty() { format!("the request was refused ({status})") } else { message };
    HttpError::new(status, kind, message).into_response()
}

impl From<ClientError> for HttpError {
    fn from(e: ClientError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        let (status, kind) = match &e {
            ClientError::Refused(c) => return HttpError::from_command(c, message),
            ClientError::Server(r) => return HttpError::from_request(r, message),
            ClientError::UnknownMember(_) => (S::NOT_FOUND, "unknown_member"),
            ClientError::NoLeader { .. } => (S::SERVICE_UNAVAILABLE, "no_leader"),
            ClientError::Unreachable { .. }
            | ClientError::Connect { .. }
            | ClientError::ConnectRefused { .. }
            | ClientError::ConnectionLost { .. } => (S::SERVICE_UNAVAILABLE, "unreachable"),
            ClientError::Busy { .. } | ClientError::QueueFull { .. } => (S::SERVICE_UNAVAILABLE, "busy"),
            ClientError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "timeout"),
            // The write may or may not have happened: never a 5xx that invites a blind retry.
            ClientError::Ambiguous { .. } => (S::GATEWAY_TIMEOUT, "ambiguous"),
            ClientError::WatchCompacted { .. } => (S::GONE, "compacted"),
            ClientError::NotSent(_) => (S::PAYLOAD_TOO_LARGE, "too_large"),
            ClientError::Rejected { .. }
            | ClientError::Tls { .. }
            | ClientError::NoEndpoints
            | ClientError::InvalidOption { .. }
            | ClientError::RetryConfig(_)
            | ClientError::TooManyEndpoints { .. }
            | ClientError::Protocol(_)
            | ClientError::Closed(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        HttpError::new(status, kind, message)
    }
}

impl From<RequestError> for HttpError {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        HttpError::from_request(&e, message)
    }
}

impl HttpError {
    fn from_command(e: &CommandError, message: String) -> Self {
        use StatusCode as S;
        let (status, kind) = match e {
            CommandError::UnknownMember(_) => (S::NOT_FOUND, "unknown_member"),
            CommandError::UnknownSession(_) => (S::NOT_FOUND, "unknown_session"),
            // It may be a retry of a command that applied: the outcome is unknown.
            CommandError::SessionExpired(_) => (S::GATEWAY_TIMEOUT, "ambiguous"),
            CommandError::SequenceReused { .. } => (S::CONFLICT, "sequence_reused"),
            CommandError::StaleSequence { .. } => (S::CONFLICT, "stale_sequence"),
            CommandError::SequenceGap { .. } => (S::CONFLICT, "sequence_gap"),
            CommandError::UnknownServer(_) => (S::UNPROCESSABLE_ENTITY, "unknown_server"),
            CommandError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "too_large"),
            CommandError::TableFull { .. } => (S::INSUFFICIENT_STORAGE, "table_full"),
            CommandError::OverBudget { .. } => (S::INSUFFICIENT_STORAGE, "over_budget"),
            CommandError::InvalidField { .. } => (S::BAD_REQUEST, "invalid_field"),
            CommandError::UnknownToken(_) => (S::NOT_FOUND, "unknown_token"),
            CommandError::DuplicateToken => (S::CONFLICT, "duplicate_token"),
            CommandError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            CommandError::NotYourSession(_) => (S::FORBIDDEN, "not_your_session"),
            CommandError::Unauthenticated { .. } => (S::UNAUTHORIZED, "unauthorized"),
        };
        let error = HttpError::new(status, kind, message);
        match e {
            // The figures the message names, for a caller that acts on them.
            CommandError::OverBudget { budget_bytes, used, needed_bytes } => error.with_details(
                serde_json::json!({ "budget_bytes": budget_bytes, "used": used, "needed_bytes": needed_bytes }),
            ),
            _ => error,
        }
    }

    fn from_request(e: &RequestError, message: String) -> Self {
        use StatusCode as S;
        let (status, kind) = match e {
            RequestError::NotAVoter { .. } | RequestError::UnknownNode { .. } => (S::NOT_FOUND, "unknown_node"),
            RequestError::TransferTimedOut { .. }
            | RequestError::CatchUpTimedOut { .. }
            | RequestError::RegisterTimeout { .. }
            | RequestError::ForwardTimeout { .. } => (S::GATEWAY_TIMEOUT, "timeout"),
            RequestError::Placement { .. } => (S::CONFLICT, "no_placement"),
            RequestError::NotAllowed { .. } => (S::FORBIDDEN, "not_allowed"),
            RequestError::Forbidden { .. } => (S::FORBIDDEN, "forbidden"),
            RequestError::Unauthenticated { .. } => (S::UNAUTHORIZED, "unauthorized"),
            RequestError::BadFrame { .. } => (S::BAD_REQUEST, "bad_request"),
            RequestError::AnswerTooLarge { .. } => (S::UNPROCESSABLE_ENTITY, "answer_too_large"),
            RequestError::TooManyStreams { .. } | RequestError::SnapshotsBusy { .. } => {
                (S::SERVICE_UNAVAILABLE, "busy")
            }
            RequestError::UnknownProcess { .. } => (S::NOT_FOUND, "not_found"),
            RequestError::NotLaunched { .. } => (S::UNPROCESSABLE_ENTITY, "not_launched"),
            RequestError::OutputUnreadable { .. } => (S::INTERNAL_SERVER_ERROR, "node_failed"),
            // Refusals: the request cannot succeed as it is.
            RequestError::LastVoter { .. }
            | RequestError::TransferTargetNotVoter { .. }
            | RequestError::NoOtherVoter
            | RequestError::ReplaceLeader { .. }
            | RequestError::Unsupported { .. }
            | RequestError::LaunchUnavailable { .. } => (S::UNPROCESSABLE_ENTITY, "refused"),
            // The launched program's own failure: the node did its part.
            RequestError::LaunchFailed { .. } => (S::UNPROCESSABLE_ENTITY, "launch_failed"),
            // The node or another node it needed failed: not the caller's request.
            RequestError::WriteFailed { .. }
            | RequestError::NoReply
            | RequestError::SnapshotFailed { .. }
            | RequestError::AnswerUnencodable { .. }
            | RequestError::MembershipChange { .. }
            | RequestError::AddLearner { .. }
            | RequestError::ReadmitFailed { .. }
            | RequestError::NoAddress { .. } => (S::INTERNAL_SERVER_ERROR, "node_failed"),
            RequestError::ForwardFailed { .. } => (S::BAD_GATEWAY, "forward_failed"),
        };
        HttpError::new(status, kind, message)
    }
}

/// A JSON body, whatever its `Content-Type` says (`curl -d` sends a form type); a body
/// that does not parse is named with serde's reason (field and position).
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, HttpError> {
    let bytes = body.map_err(bad_body)?;
    serde_json::from_slice(&bytes).map_err(|e| HttpError::bad_request(format!("request body: {e}")))
}

/// A body that could not be read: over the limit (413) or broken.
pub fn bad_body(e: axum::extract::rejection::BytesRejection) -> HttpError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is over the limit of {} bytes", super::MAX_BODY_BYTES),
        )
    } else {
        HttpError::bad_request(format!("cannot read the request body: {}", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::{MemberId, ProcessId};

    #[test]
    fn statuses_say_who_must_act() {
        let unknown = HttpError::from(ClientError::UnknownMember(MemberId::Process(ProcessId(7))));
        assert_eq!((unknown.status, unknown.kind), (StatusCode::NOT_FOUND, "unknown_member"));
        let gap = HttpError::from(ClientError::Refused(CommandError::SequenceGap {
            session: roster_kernel::SessionId(1),
            seq: 5,
            last: 2,
        }));
        assert_eq!(gap.status, StatusCode::CONFLICT);
        assert!(gap.message.contains("sequence 5"), "{}", gap.message);
        let ambiguous = HttpError::from(ClientError::Ambiguous { addr: "a:1".into(), reason: "lost".into() });
        assert_eq!(ambiguous.status, StatusCode::GATEWAY_TIMEOUT);
        let no_leader = HttpError::from(ClientError::NoLeader {
            endpoints: vec!["a:1".into()],
            waited_ms: 5,
            last_error: "x".into(),
        });
        assert_eq!(no_leader.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_body_carries_kind_message_and_details() {
        let e = HttpError::new(StatusCode::GONE, "compacted", "too old")
            .with_details(serde_json::json!({ "oldest_available": 40 }));
        assert_eq!(
            serde_json::to_value(e.view()).unwrap(),
            serde_json::json!({ "error": { "kind": "compacted", "message": "too old", "oldest_available": 40 } })
        );
    }
}
