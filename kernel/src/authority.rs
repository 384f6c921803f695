//! Who may do what: the roles a credential can carry, and the one rule that decides every
//! request (`authorize`).
//!
//! Rules, in one place (Kubernetes' NodeRestriction is the model: a kubelet may change only
//! its own Node and Lease):
//! - `Node`: another node of the cluster, proven by the peer key (never by a token). It
//!   does what nodes do for each other: everything, including the requests only nodes
//!   send (a readmission, a local start of a launched program).
//! - `Admin`: every request a client can send. The token file is the bootstrap admin.
//! - `Read`: status, lists, gets, key/value reads, watch. Enough for the web page and
//!   dashboards. It can open a session (a session only numbers commands) but write nothing.
//! - `Launch`: `Read`, plus launching programs on the cluster (what a Zeppelin-like server
//!   holds to start interpreters) and reading their output (which `Read` may not: it
//!   may hold secrets).
//! - `Agent(server)`: registers, updates, heartbeats and deregisters that one server, and
//!   registers, updates, heartbeats, deregisters and mints member tokens for processes
//!   hosted on it; plus `Read`.
//! - `Member(member)`: heartbeats that one member, updates its own labels, host and port
//!   (never its status), deregisters itself; plus `Read`.
//! - Nobody but `Admin` (and `Node`) touches the node membership, tokens, the key/value
//!   store, drains, deletes or snapshots.
//! - A process named by a command is judged by the server that hosts it (`host`), which
//!   the caller looks up in the applied record; a process's host never changes, so the
//!   answer cannot go stale. An unknown process has no host: only `Admin` may name it
//!   (and the state machine then refuses it as unknown).

use crate::command::{Command, Forbidden, TokenRole};
use crate::ids::{MemberId, ServerId};
use serde::{Deserialize, Serialize};

/// A verified caller: what its credential lets it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// Another node of the cluster (the peer key).
    Node,
    Admin,
    Read,
    Launch,
    Agent(ServerId),
    Member(MemberId),
}

impl Principal {
    /// The role's name, as the docs, `token ls` and a refusal say it.
    pub fn role_name(&self) -> &'static str {
        match self {
            Principal::Node => "node",
            Principal::Admin => "admin",
            Principal::Read => "read",
            Principal::Launch => "launch",
            Principal::Agent(_) => "agent",
            Principal::Member(_) => "member",
        }
    }

    /// The principal a token of `role` bound as given carries.
    pub fn of_token(role: TokenRole) -> Principal {
        match role {
            TokenRole::Admin => Principal::Admin,
            TokenRole::Read => Principal::Read,
            TokenRole::Launch => Principal::Launch,
            TokenRole::Agent(server) => Principal::Agent(server),
            TokenRole::Member(member) => Principal::Member(member),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Agent(server) => write!(f, "agent of {server}"),
            Principal::Member(member) => write!(f, "member {member}"),
            other => f.write_str(other.role_name()),
        }
    }
}

/// What a request asks to do, as far as authority goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Status, lists, gets, key/value reads, tombstones, watch.
    Read,
    /// Opens or closes a session of the caller's own (sessions number later commands;
    /// changes nothing else).
    Session,
    /// A replicated command; `host` is the server hosting the process it names, if it
    /// names a process that the record holds.
    Command {
        command: &'a Command,
        host: Option<ServerId>,
    },
    /// "Alive" for `member`; `host` as for commands.
    Heartbeat {
        member: MemberId,
        host: Option<ServerId>,
    },
    Launch,
    /// Read a launched process's output. It may hold secrets (a password a job printed, a
    /// token in a stack trace), so it takes the role that may start jobs, not `Read`.
    ReadOutput,
    /// Add, remove or replace a node, or hand leadership over.
    NodeMembership,
    /// A backup of the whole state.
    Snapshot,
    /// List the tokens (ids, names, roles; never secrets).
    ListTokens,
    /// Requests only nodes send each other (a readmission, a local start).
    NodeOnly,
}

impl Action<'_> {
    /// A short name for refusals and the audit trail.
    pub fn name(&self) -> String {
        match self {
            Action::Read => "read".into(),
            Action::Session => "open or close a session".into(),
            Action::Command { command, .. } => command.describe(),
            Action::Heartbeat { member, .. } => format!("heartbeat {member}"),
            Action::Launch => "launch".into(),
            Action::ReadOutput => "read a launched process's output".into(),
            Action::NodeMembership => "change the node membership".into(),
            Action::Snapshot => "save a snapshot".into(),
            Action::ListTokens => "list tokens".into(),
            Action::NodeOnly => "a request only nodes send".into(),
        }
    }
}

/// Whether `caller` may do `action`. Pure, O(1): one match per request.
pub fn authorize(caller: Principal, action: &Action<'_>) -> Result<(), Forbidden> {
    if allowed(caller, action) { Ok(()) } else { Err(Forbidden { role: caller.to_string(), action: action.name() }) }
}

fn allowed(caller: Principal, action: &Action<'_>) -> bool {
    use Principal::*;
    match (caller, action) {
        (Node, _) => true,
        (_, Action::NodeOnly) => false,
        (Admin, _) => true,
        (_, Action::Read | Action::Session) => true,
        // Advances the caller's own session; changes nothing else.
        (_, Action::Command { command: Command::Noop, .. }) => true,
        (Launch, Action::Launch | Action::ReadOutput) => true,
        (Agent(server), Action::Heartbeat { member, host }) => on_server(server, *member, *host),
        (Member(me), Action::Heartbeat { member, .. }) => me == *member,
        (Agent(server), Action::Command { command, host }) => agent_may(server, command, *host),
        (Member(me), Action::Command { command, .. }) => member_may(me, command),
        _ => false,
    }
}

/// `member` is `server` itself, or a process that `server` hosts.
fn on_server(server: ServerId, member: MemberId, host: Option<ServerId>) -> bool {
    match member {
        MemberId::Server(id) => id == server,
        MemberId::Process(_) => host == Some(server),
    }
}

fn agent_may(server: ServerId, command: &Command, host: Option<ServerId>) -> bool {
    match command {
        Command::RegisterServer { id, .. } | Command::DeregisterServer { id } | Command::PutServer { id, .. } => {
            *id == server
        }
        Command::RegisterProcess { info } => info.server == server,
        Command::DeregisterProcess { .. } | Command::PutProcess { .. } => host == Some(server),
        Command::CreateToken { role: TokenRole::Member(member), .. } => on_server(server, *member, host),
        _ => false,
    }
}

fn member_may(me: MemberId, command: &Command) -> bool {
    match command {
        Command::DeregisterProcess { id, .. } => me == MemberId::Process(*id),
        // Its own labels, host and port; never its status (a draining flag is the
        // operator's or its agent's to set).
        Command::PutProcess { id, patch } => me == MemberId::Process(*id) && patch.status.is_none(),
        Command::DeregisterServer { id } => me == MemberId::Server(*id),
        _ => false,
    }
}

/// The process an action names, whose host the caller looks up for `authorize`.
pub fn named_process(command: Option<&Command>, heartbeat: Option<MemberId>) -> Option<crate::ProcessId> {
    match (command, heartbeat) {
        (Some(Command::DeregisterProcess { id, .. } | Command::PutProcess { id, .. }), _) => Some(*id),
        (Some(Command::CreateToken { role: TokenRole::Member(MemberId::Process(id)), .. }), _) => Some(*id),
        (_, Some(MemberId::Process(id))) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
