//! The one error type of the client library. Every message is one line that names the
//! problem and what to do about it.

use roster_kernel::{CommandError, MemberId};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("no Roster node address given: pass at least one HOST:PORT endpoint")]
    NoEndpoints,
    #[error("invalid client option {field} = {value}: {reason}")]
    InvalidOption { field: &'static str, value: String, reason: String },
    #[error("cannot reach any Roster node (tried {}): {last_error}; check that the nodes run and the addresses are right", endpoints.join(", "))]
    Unreachable { endpoints: Vec<String>, last_error: String },
    #[error("no leader answered within {waited_ms} ms (tried {}; last: {last_error}): the cluster may be electing or have lost its quorum; retry, or check `roster status`", endpoints.join(", "))]
    NoLeader { endpoints: Vec<String>, waited_ms: u64, last_error: String },
    #[error("{0}")]
    RetryConfig(roster_kernel::retry_queue::RetryConfigError),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// Nothing listens at `addr` (the connection was refused at once: ECONNREFUSED). Not a
    /// timeout: when every node refuses so, a call fails fast (the kernel's
    /// `leader_search::REFUSED_GIVE_UP_MS`).
    #[error("cannot connect to {addr}: {reason}")]
    ConnectRefused { addr: String, reason: String },
    #[error("{addr} refused the connection: {reason}")]
    Rejected { addr: String, reason: String },
    /// A certificate or TLS setting that does not fit: the same on every try, so the
    /// client says so at once instead of retrying until its timeout.
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("connection to {addr} lost: {reason}; it is reopened on the next request")]
    ConnectionLost { addr: String, reason: String },
    #[error(
        "no answer from {addr} within {timeout_ms} ms: the node may be overloaded or cut off; retry, or raise request_timeout_ms"
    )]
    Timeout { addr: String, timeout_ms: u64 },
    #[error(
        "no answer from {addr} ({reason}): the request may or may not have taken effect; check (e.g. `roster status`) before repeating it"
    )]
    Ambiguous { addr: String, reason: String },
    #[error("request not sent: {0}")]
    NotSent(String),
    #[error("{in_flight} requests already wait on the connection to {addr}: wait for some answers before sending more")]
    Busy { addr: String, in_flight: usize },
    #[error(
        "the client knows {max} node addresses already, its limit: a leader hint for {addr} was not followed; pass the leader's address as an endpoint"
    )]
    TooManyEndpoints { addr: String, max: usize },
    #[error(
        "the client's command queue is full ({max} commands waiting): wait for some to finish, or raise max_queued"
    )]
    QueueFull { max: usize },
    #[error("the cluster refused the command: {0}")]
    Refused(CommandError),
    #[error("{0} is not in the cluster (expired, deregistered or never registered): register it again")]
    UnknownMember(MemberId),
    #[error("the node refused the request: {0}")]
    Server(crate::wire::RequestError),
    #[error("unexpected answer from the node: {0}; client and node may run different Roster versions")]
    Protocol(String),
    #[error(
        "cannot watch from revision {requested}: the oldest revision the node keeps is {oldest_available}; list again and watch from the list's revision"
    )]
    WatchCompacted { requested: u64, oldest_available: u64 },
    #[error("the client session is closed: {0}; open a new client")]
    Closed(String),
}

impl ClientError {
    /// Whether the failure is of the path to a node (so another node, or the same one
    /// later, may answer), as opposed to an answer.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::ConnectRefused { .. }
                | ClientError::Rejected { .. }
                | ClientError::ConnectionLost { .. }
                | ClientError::Timeout { .. }
                | ClientError::Busy { .. }
        )
    }
}

pub(crate) fn from_transport(addr: &str, e: crate::transport::TransportError) -> ClientError {
    use crate::transport::TransportError as T;
    match e {
        T::Connect { addr, source } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            ClientError::ConnectRefused { addr, reason: source.to_string() }
        }
        T::Connect { addr, source } => ClientError::Connect { addr, reason: source.to_string() },
        T::Timeout { addr, timeout_ms } => ClientError::Connect {
            addr,
            reason: format!("no handshake within {timeout_ms} ms (raise connect_timeout_ms if the network is slow)"),
        },
        T::Refused { addr, reason } => ClientError::Rejected { addr, reason },
        T::Tls { addr, reason } => ClientError::Tls { addr, reason },
        other => ClientError::Connect { addr: addr.to_string(), reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::{ProcessId, SessionId};

    fn every_variant() -> Vec<ClientError> {
        vec![
            ClientError::NoEndpoints,
            ClientError::InvalidOption {
                field: "request_timeout_ms",
                value: "0".into(),
                reason: "must be at least 1".into(),
            },
            ClientError::Unreachable {
                endpoints: vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()],
                last_error: "cannot connect to 10.0.0.2:7000: connection refused".into(),
            },
            ClientError::NoLeader {
                endpoints: vec!["a:1".into()],
                waited_ms: 5000,
                last_error: "a:1 knows no leader".into(),
            },
            ClientError::RetryConfig(roster_kernel::retry_queue::RetryConfigError::ZeroCapacity),
            ClientError::Connect { addr: "a:1".into(), reason: "no route to host".into() },
            ClientError::ConnectRefused { addr: "a:1".into(), reason: "Connection refused (os error 111)".into() },
            ClientError::Rejected { addr: "a:1".into(), reason: "wrong cluster token".into() },
            ClientError::Tls { addr: "a:1".into(), reason: "the node's certificate has expired".into() },
            ClientError::ConnectionLost { addr: "a:1".into(), reason: "closed by the other side".into() },
            ClientError::Timeout { addr: "a:1".into(), timeout_ms: 2000 },
            ClientError::Ambiguous { addr: "a:1".into(), reason: "connection lost".into() },
            ClientError::NotSent("frame of 5000000 bytes is over the limit of 4194304".into()),
            ClientError::Busy { addr: "a:1".into(), in_flight: 1024 },
            ClientError::TooManyEndpoints { addr: "z:9".into(), max: 64 },
            ClientError::QueueFull { max: 10 },
            ClientError::Refused(CommandError::UnknownSession(SessionId(3))),
            ClientError::UnknownMember(MemberId::Process(ProcessId(9))),
            ClientError::Server(crate::wire::RequestError::WriteFailed { reason: "storage error".into() }),
            ClientError::Protocol("expected SessionOpened, got HeartbeatOk".into()),
            ClientError::WatchCompacted { requested: 5, oldest_available: 100 },
            ClientError::Closed("closed by the application".into()),
        ]
    }

    #[test]
    fn messages_are_one_line_and_name_the_value() {
        for e in every_variant() {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
            assert!(!m.is_empty());
        }
        let m = every_variant()[2].to_string();
        assert!(m.contains("10.0.0.1:7000, 10.0.0.2:7000"), "{m}");
        assert!(m.contains("connection refused"), "{m}");
        assert!(ClientError::QueueFull { max: 10 }.to_string().contains("(10 commands"));
        assert!(ClientError::WatchCompacted { requested: 5, oldest_available: 100 }.to_string().contains("revision 5"));
    }

    #[test]
    fn transport_errors_are_told_apart_from_answers() {
        assert!(ClientError::Timeout { addr: "a:1".into(), timeout_ms: 1 }.is_transport());
        assert!(ClientError::ConnectionLost { addr: "a:1".into(), reason: "x".into() }.is_transport());
        assert!(!ClientError::Server(crate::wire::RequestError::NoReply).is_transport());
        assert!(!ClientError::QueueFull { max: 1 }.is_transport());
    }
}
