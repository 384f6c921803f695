//! Who is calling, and whether it may: a connection's credential is resolved once at its
//! hello, and every request on it is checked again against the kernel's rule
//! (`roster_kernel::authorize`), so a revoked or expired token is refused from its next
//! request on, on every node that applied the revocation.

use crate::net::wire::{ClientRequest, RequestError};
use crate::raft::NodeId;
use crate::storage::SharedState;
use roster_kernel::{Action, AuditRecord, Command, MemberId, Principal, Query, SessionOwner, TokenHash};
use std::sync::Arc;

/// The name the token file's credential carries in the audit trail.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

/// A connection's caller, as its hello proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Another node, by the peer key.
    Node(NodeId),
    /// The token file: the bootstrap admin.
    Bootstrap,
    /// A token the cluster knows, looked up again at every request.
    Token(TokenHash),
}

/// A caller's standing for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub principal: Principal,
    /// The credential's name, for the audit trail.
    pub name: String,
    /// The credential itself, as the sessions it opens are bound to it.
    pub owner: SessionOwner,
}

/// The credentials a node knows: the bootstrap token, and the tokens in the record.
pub struct Credentials {
    bootstrap: String,
    shared: Arc<SharedState>,
}

/// Why a token is not let in; its text goes to the caller (the hello's refusal, HTTP's 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token of that hash is in the record: never created, or revoked since.
    #[error("unknown or revoked token: check --token-file / ROSTER_TOKEN")]
    UnknownToken,
    /// Its expiry has passed: the holder needs a new one.
    #[error("{id} {name:?} expired: ask an admin for a new one")]
    Expired { id: roster_kernel::TokenId, name: String },
}

impl Credentials {
    pub fn new(bootstrap: String, shared: Arc<SharedState>) -> Self {
        Credentials { bootstrap, shared }
    }

    /// The caller a token's hello names; `Err` says why it is refused.
    pub fn authenticate(&self, token: &str, now_unix_ms: u64) -> Result<(Caller, Standing), Refusal> {
        if tokens_match(&self.bootstrap, token) {
            return Ok((Caller::Bootstrap, bootstrap_standing()));
        }
        let caller = Caller::Token(roster_client::token_hash(token));
        let standing = self.standing(&caller, now_unix_ms)?;
        Ok((caller, standing))
    }

    /// What `caller` may do now: a token revoked or expired since the hello is refused.
    pub fn standing(&self, caller: &Caller, now_unix_ms: u64) -> Result<Standing, Refusal> {
        match caller {
            Caller::Node(_) => {
                Ok(Standing { principal: Principal::Node, name: "node".into(), owner: SessionOwner::Node })
            }
            Caller::Bootstrap => Ok(bootstrap_standing()),
            Caller::Token(hash) => {
                let info = crate::storage::with_kernel(&self.shared, |sm| sm.token_by_hash(hash).cloned());
                let Some(info) = info else {
                    return Err(Refusal::UnknownToken);
                };
                if info.expires_at_unix_ms.is_some_and(|at| at <= now_unix_ms) {
                    return Err(Refusal::Expired { id: info.id, name: info.name });
                }
                Ok(Standing {
                    principal: Principal::of_token(info.role),
                    name: info.name,
                    owner: SessionOwner::Token(info.id),
                })
            }
        }
    }

    /// Whether `standing` may send `request`: `Ok` with the audit record to write when
    /// the request is an admin action, or the refusal.
    pub fn check(&self, standing: &Standing, request: &ClientRequest) -> Result<Option<AuditRecord>, RequestError> {
        let (command, heartbeat) = match request {
            ClientRequest::Submit(req) => (Some(&req.command), None),
            ClientRequest::Heartbeat { member, .. } => (None, Some(*member)),
            _ => (None, None),
        };
        // Only an agent is judged by a process's host: look it up for agents alone.
        let host = match standing.principal {
            Principal::Agent(_) => roster_kernel::authority::named_process(command, heartbeat).and_then(|id| {
                crate::storage::with_kernel(&self.shared, |sm| sm.get_process(id).map(|p| p.info.server))
            }),
            _ => None,
        };
        let action = action_of(request, host);
        roster_kernel::authorize(standing.principal, &action)?;
        Ok(audited(standing, request, command).map(|action| AuditRecord {
            by: standing.name.clone(),
            role: standing.principal.role_name().to_string(),
            action,
        }))
    }
}

fn bootstrap_standing() -> Standing {
    Standing { principal: Principal::Admin, name: BOOTSTRAP_NAME.into(), owner: SessionOwner::Bootstrap }
}

/// What `request` asks to do, as far as authority goes.
pub fn action_of(request: &ClientRequest, host: Option<roster_kernel::ServerId>) -> Action<'_> {
    match request {
        ClientRequest::OpenSession | ClientRequest::CloseSession { .. } => Action::Session,
        ClientRequest::Submit(req) => Action::Command { command: &req.command, host },
        ClientRequest::Query { query: Query::Tokens { .. }, .. } => Action::ListTokens,
        ClientRequest::Query { .. } | ClientRequest::Watch { .. } | ClientRequest::Status => Action::Read,
        ClientRequest::Heartbeat { member, .. } => Action::Heartbeat { member: *member, host },
        ClientRequest::AddNode { .. }
        | ClientRequest::RemoveNode { .. }
        | ClientRequest::ReplaceNode { .. }
        | ClientRequest::TransferLeader { .. } => Action::NodeMembership,
        ClientRequest::Readmit { .. }
        | ClientRequest::StartLocal(_)
        | ClientRequest::LocalOutput(_)
        | ClientRequest::OnBehalf { .. } => Action::NodeOnly,
        ClientRequest::Launch(_) => Action::Launch,
        ClientRequest::Output(_) => Action::ReadOutput,
        ClientRequest::Snapshot => Action::Snapshot,
    }
}

/// The audit trail's words for an admin action, or `None` for everyday traffic. A node's
/// own requests (forwarded launches, readmissions) are not audited: the client's request
/// that caused them was.
fn audited(standing: &Standing, request: &ClientRequest, command: Option<&Command>) -> Option<String> {
    if standing.principal == Principal::Node {
        return None;
    }
    match request {
        ClientRequest::Submit(_) => command.filter(|c| c.is_audited()).map(Command::describe),
        ClientRequest::AddNode { id, addr } => Some(format!("add node {id} at {addr}")),
        ClientRequest::RemoveNode { id } => Some(format!("remove node {id}")),
        ClientRequest::ReplaceNode { id } => Some(format!("replace node {id}")),
        ClientRequest::TransferLeader { to: Some(to) } => Some(format!("hand leadership to node {to}")),
        ClientRequest::TransferLeader { to: None } => Some("hand leadership over".into()),
        ClientRequest::Snapshot => Some("save a snapshot".into()),
        ClientRequest::Launch(launch) => Some(format!("launch {:?} ({})", launch.name, launch.program)),
        _ => None,
    }
}

/// A token role that cannot be: the CLI and HTTP both say which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// `admin`, `read` and `launch` act on the whole cluster: there is nothing to bind to.
    #[error("a {role} token is bound to nothing: drop server/member")]
    Unbound { role: &'static str },
    /// An agent acts for one server, so it must be named.
    #[error("an agent token is bound to one server: give its id (--server N, \"server\": N)")]
    AgentWithoutServer,
    /// A member token acts for one member, so it must be named.
    #[error("a member token is bound to one member: give it (--member process:N)")]
    MemberWithoutMember,
    /// The member is spelled neither `process:N` nor `server:N`.
    #[error("{given:?} is not a member: expected process:N or server:N")]
    NotAMember { given: String },
    /// The member's id is not a number.
    #[error("{given:?}: {id:?} is not a number")]
    BadId { given: String, id: String },
    /// No role has that name.
    #[error("unknown role {given:?}: expected admin, read, launch, agent or member")]
    Unknown { given: String },
}

/// A role as the CLI and HTTP name it: `admin`, `read`, `launch`, `agent` (with its
/// server) or `member` (with its member, `process:N` or `server:N`).
pub fn parse_role(
    role: &str,
    server: Option<u64>,
    member: Option<&str>,
) -> Result<roster_kernel::TokenRole, RoleError> {
    use roster_kernel::TokenRole;
    let unbound = |r: TokenRole, name: &'static str| match (server, member) {
        (None, None) => Ok(r),
        _ => Err(RoleError::Unbound { role: name }),
    };
    match role {
        "admin" => unbound(TokenRole::Admin, "admin"),
        "read" => unbound(TokenRole::Read, "read"),
        "launch" => unbound(TokenRole::Launch, "launch"),
        "agent" => match (server, member) {
            (Some(s), None) => Ok(TokenRole::Agent(roster_kernel::ServerId(s))),
            _ => Err(RoleError::AgentWithoutServer),
        },
        "member" => match (member, server) {
            (Some(m), None) => parse_member(m).map(TokenRole::Member),
            _ => Err(RoleError::MemberWithoutMember),
        },
        other => Err(RoleError::Unknown { given: other.to_string() }),
    }
}

/// `process:N`, `process-N`, `server:N` or `server-N`.
pub fn parse_member(text: &str) -> Result<MemberId, RoleError> {
    let not_a_member = || RoleError::NotAMember { given: text.to_string() };
    let (kind, id) = text.split_once([':', '-']).ok_or_else(not_a_member)?;
    let number: u64 = id.parse().map_err(|_| RoleError::BadId { given: text.to_string(), id: id.to_string() })?;
    match kind {
        "process" => Ok(MemberId::Process(roster_kernel::ProcessId(number))),
        "server" => Ok(MemberId::Server(roster_kernel::ServerId(number))),
        _ => Err(not_a_member()),
    }
}

/// Compares without returning early, so timing does not reveal how much matched. Any
/// length difference fails (casting `len ^ len` to a byte would let a multiple of 256
/// extra bytes through).
pub fn tokens_match(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{RoleError, action_of, parse_member, parse_role, tokens_match};
    use crate::net::wire::ClientRequest;
    use roster_kernel::{MemberId, Principal, ProcessId, ServerId, SessionId, SessionOwner, TokenId, TokenRole};

    #[test]
    fn only_a_node_passes_a_session_request_on_and_anyone_may_close_a_session() {
        let passed = ClientRequest::OnBehalf {
            owner: SessionOwner::Token(TokenId(3)),
            request: Box::new(ClientRequest::OpenSession),
        };
        let close = ClientRequest::CloseSession { session: SessionId(3) };
        let roles = [
            Principal::Admin,
            Principal::Read,
            Principal::Launch,
            Principal::Agent(ServerId(1)),
            Principal::Member(MemberId::Process(ProcessId(3))),
        ];
        for role in roles {
            assert!(roster_kernel::authorize(role, &action_of(&passed, None)).is_err(), "{role} passed one on");
            // Whose session it is, the state machine decides.
            assert!(roster_kernel::authorize(role, &action_of(&close, None)).is_ok(), "{role} may not close");
        }
        assert!(roster_kernel::authorize(Principal::Node, &action_of(&passed, None)).is_ok());
    }

    #[test]
    fn a_role_names_what_is_wrong_with_it() {
        assert_eq!(parse_role("admin", None, None), Ok(TokenRole::Admin));
        assert_eq!(parse_role("agent", Some(2), None), Ok(TokenRole::Agent(ServerId(2))));
        let member = parse_role("member", None, Some("process-7"));
        assert_eq!(member, Ok(TokenRole::Member(MemberId::Process(ProcessId(7)))));
        assert_eq!(parse_role("read", Some(1), None), Err(RoleError::Unbound { role: "read" }));
        assert_eq!(parse_role("agent", None, None), Err(RoleError::AgentWithoutServer));
        assert_eq!(parse_role("member", Some(1), Some("server:1")), Err(RoleError::MemberWithoutMember));
        assert_eq!(parse_role("root", None, None), Err(RoleError::Unknown { given: "root".into() }));
        assert_eq!(parse_member("server:x"), Err(RoleError::BadId { given: "server:x".into(), id: "x".into() }));
        assert_eq!(parse_member("node:1"), Err(RoleError::NotAMember { given: "node:1".into() }));
        assert_eq!(parse_member("process"), Err(RoleError::NotAMember { given: "process".into() }));
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = "s3cret-token";
        assert!(tokens_match(token, token));
        assert!(!tokens_match(token, ""));
        assert!(!tokens_match(token, "s3cret-tokeN"));
        assert!(!tokens_match(token, "s3cret-toke"));
        // Extra bytes after the token fail, whatever their count (256 would wrap a byte).
        for extra in [1, 255, 256, 512] {
            let longer = format!("{token}{}", "x".repeat(extra));
            assert!(!tokens_match(token, &longer), "{extra} extra bytes matched");
        }
    }
}
