//! Which part of the API serves a request: writes go to the proposer, which answers
//! through the connection's slot itself (no task per write); every other kind is served in
//! a task of its own, and its type says which.

use crate::net::wire::{ClientRequest, Consistency, LaunchRequest, OutputRequest, RequestError};
use crate::raft::NodeId;
use roster_kernel::{MemberId, ProposalBody, Query, ResourceAverage, SessionOwner};

/// A request, routed.
#[derive(Debug)]
pub enum Routed {
    Write(ProposalBody),
    Serve(Served),
}

/// A request served in a task of its own: every kind but the writes.
#[derive(Debug)]
pub enum Served {
    Query { query: Query, consistency: Consistency },
    Heartbeat { member: MemberId, resources: Option<ResourceAverage> },
    Watch { after_revision: u64 },
    Status,
    Snapshot,
    Membership(MembershipRequest),
    Launch(LaunchRequest),
    StartLocal(LaunchRequest),
    Output(OutputRequest),
    LocalOutput(OutputRequest),
}

/// A change of the Raft membership, or of who leads it (see `membership.rs`).
#[derive(Debug)]
pub enum MembershipRequest {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
    Replace { id: NodeId },
    Readmit { leader: NodeId, last_log_index: u64, cluster: Option<u64> },
    TransferLeader { to: Option<NodeId> },
}

/// Routes a request made with credential `owner` (which the sessions it opens, uses or
/// closes are bound to). A node's request on a caller's behalf is routed as that caller's;
/// only session requests can be passed on so.
pub fn route(request: ClientRequest, owner: SessionOwner) -> Result<Routed, RequestError> {
    use MembershipRequest as M;
    Ok(Routed::Serve(match request {
        ClientRequest::OpenSession => return Ok(Routed::Write(ProposalBody::OpenSession { owner })),
        ClientRequest::Submit(request) => return Ok(Routed::Write(ProposalBody::Client { request, by: owner })),
        ClientRequest::CloseSession { session } => {
            return Ok(Routed::Write(ProposalBody::CloseSession { session, by: owner }));
        }
        ClientRequest::OnBehalf { owner, request } => {
            return match *request {
                request @ (ClientRequest::OpenSession
                | ClientRequest::Submit(_)
                | ClientRequest::CloseSession { .. }) => route(request, owner),
                other => Err(RequestError::Unsupported { request: format!("{other:?} on a caller's behalf") }),
            };
        }
        ClientRequest::Query { query, consistency } => Served::Query { query, consistency },
        ClientRequest::Heartbeat { member, resources } => Served::Heartbeat { member, resources },
        ClientRequest::Watch { after_revision } => Served::Watch { after_revision },
        ClientRequest::Status => Served::Status,
        ClientRequest::Snapshot => Served::Snapshot,
        ClientRequest::AddNode { id, addr } => Served::Membership(M::Add { id, addr }),
        ClientRequest::RemoveNode { id } => Served::Membership(M::Remove { id }),
        ClientRequest::ReplaceNode { id } => Served::Membership(M::Replace { id }),
        ClientRequest::Readmit { leader, last_log_index, cluster } => {
            Served::Membership(M::Readmit { leader, last_log_index, cluster })
        }
        ClientRequest::TransferLeader { to } => Served::Membership(M::TransferLeader { to }),
        ClientRequest::Launch(req) => Served::Launch(req),
        ClientRequest::StartLocal(req) => Served::StartLocal(req),
        ClientRequest::Output(req) => Served::Output(req),
        ClientRequest::LocalOutput(req) => Served::LocalOutput(req),
    }))
}

impl Served {
    /// Answered by a stream of responses for as long as the client wants them.
    pub fn is_stream(&self) -> bool {
        matches!(self, Served::Watch { .. } | Served::Snapshot)
    }

    /// Its one answer may be large (up to a frame): it waits for a bulk place.
    pub fn is_bulk_read(&self) -> bool {
        matches!(self, Served::Query { .. } | Served::Status)
    }

    /// The `op` label of its duration (writes are timed by the proposer, as `submit`).
    pub fn op_name(&self) -> &'static str {
        match self {
            Served::Query { consistency: Consistency::Linearizable, .. } => "query",
            Served::Query { consistency: Consistency::Stale, .. } => "query_stale",
            Served::Heartbeat { .. } => "heartbeat",
            Served::Watch { .. } => "watch",
            Served::Status => "status",
            Served::Membership(_) => "membership",
            Served::Launch(_) => "launch",
            Served::StartLocal(_) => "start_local",
            Served::Snapshot => "snapshot",
            Served::Output(_) | Served::LocalOutput(_) => "output",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Routed, Served, route};
    use crate::net::wire::{ClientRequest, Consistency, RequestError};
    use roster_kernel::{Command, ProposalBody, Request, SessionId, SessionOwner, TokenId};

    const NODE: SessionOwner = SessionOwner::Node;

    #[test]
    fn writes_go_to_the_proposer_and_nothing_else_does() {
        assert!(matches!(route(ClientRequest::OpenSession, NODE), Ok(Routed::Write(_))));
        let Ok(Routed::Serve(served)) = route(ClientRequest::Status, NODE) else { panic!("status is not a write") };
        assert!(served.is_bulk_read() && !served.is_stream());
        let Ok(Routed::Serve(watch)) = route(ClientRequest::Watch { after_revision: 0 }, NODE) else {
            panic!("a watch")
        };
        assert!(watch.is_stream() && !watch.is_bulk_read());
        let query =
            Served::Query { query: roster_kernel::Query::KvGet { key: "k".into() }, consistency: Consistency::Stale };
        assert_eq!(query.op_name(), "query_stale");
    }

    #[test]
    fn session_requests_carry_the_callers_credential_or_the_one_a_node_passes_on() {
        let caller = SessionOwner::Token(TokenId(7));
        let submit = ClientRequest::Submit(Request { session: SessionId(2), seq: 1, command: Command::Noop });
        let Ok(Routed::Write(ProposalBody::Client { by, .. })) = route(submit.clone(), caller) else { panic!() };
        assert_eq!(by, caller);
        let close = ClientRequest::CloseSession { session: SessionId(2) };
        let Ok(Routed::Write(ProposalBody::CloseSession { by, .. })) = route(close, caller) else { panic!() };
        assert_eq!(by, caller);
        // A node passing on an HTTP caller's request: the session is the caller's.
        let passed = ClientRequest::OnBehalf { owner: caller, request: Box::new(submit) };
        let Ok(Routed::Write(ProposalBody::Client { by, .. })) = route(passed, NODE) else { panic!() };
        assert_eq!(by, caller);
        let passed = ClientRequest::OnBehalf { owner: caller, request: Box::new(ClientRequest::OpenSession) };
        let Ok(Routed::Write(ProposalBody::OpenSession { owner })) = route(passed, NODE) else { panic!() };
        assert_eq!(owner, caller);
        // Only session requests are passed on, once.
        for inner in [
            ClientRequest::Status,
            ClientRequest::OnBehalf { owner: caller, request: Box::new(ClientRequest::OpenSession) },
        ] {
            let passed = ClientRequest::OnBehalf { owner: caller, request: Box::new(inner) };
            assert!(matches!(route(passed, NODE), Err(RequestError::Unsupported { .. })));
        }
    }
}
