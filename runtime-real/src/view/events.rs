//! Departures and change events: `roster tombstones`, `roster watch --json` and
//! `GET /v1/events` print the same shapes.

use super::members::{MemberView, ProcessView, ServerView};
use super::tokens::TokenView;
use roster_client::describe::describe;
use roster_kernel::{Departure, Event, EventKind, MemberId, Tombstone};
use serde::{Deserialize, Serialize};

/// How a member left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DepartureView {
    /// Left on its own, with its program's exit status when known.
    Deregistered { exit_status: Option<i32> },
    /// Removed by the leader after its heartbeats stopped.
    Expired { silent_for_ms: u64 },
    /// Removed by an operator.
    Deleted,
}

impl From<&Departure> for DepartureView {
    fn from(d: &Departure) -> Self {
        match d {
            Departure::Deregistered { exit_status } => DepartureView::Deregistered { exit_status: *exit_status },
            Departure::Expired { silent_for_ms } => DepartureView::Expired { silent_for_ms: *silent_for_ms },
            Departure::Deleted => DepartureView::Deleted,
        }
    }
}

/// A departed member as it last was, how and when it left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneView {
    pub member: MemberView,
    pub departure: DepartureView,
    /// The leader's clock when it proposed the removal.
    pub left_at_unix_ms: u64,
    pub left_rev: u64,
}

impl From<&Tombstone> for TombstoneView {
    fn from(t: &Tombstone) -> Self {
        TombstoneView {
            member: MemberView::from(&t.subject),
            departure: DepartureView::from(&t.departure),
            left_at_unix_ms: t.left_at_unix_ms,
            left_rev: t.left_rev,
        }
    }
}

/// An admin action in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// The credential's name.
    pub by: String,
    pub role: String,
    /// What it did, in words.
    pub action: String,
}

/// What changed: `"type"` names it, `"data"` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ChangeView {
    ServerRegistered(ServerView),
    ServerUpdated(ServerView),
    ProcessRegistered(ProcessView),
    ProcessUpdated(ProcessView),
    /// Deregistered, expired or deleted: the tombstone names the member and says how.
    Departed(TombstoneView),
    KvPut {
        key: String,
        value: String,
    },
    KvDeleted {
        key: String,
    },
    TokenCreated(TokenView),
    /// Revoked, or dropped with its member.
    TokenRevoked {
        id: u64,
        name: String,
    },
    Audit(AuditView),
}

impl From<&EventKind> for ChangeView {
    fn from(k: &EventKind) -> Self {
        match k {
            EventKind::ServerRegistered(e) => ChangeView::ServerRegistered(e.into()),
            EventKind::ServerUpdated(e) => ChangeView::ServerUpdated(e.into()),
            EventKind::ProcessRegistered(e) => ChangeView::ProcessRegistered(e.into()),
            EventKind::ProcessUpdated(e) => ChangeView::ProcessUpdated(e.into()),
            EventKind::Departed { member, tombstone } => {
                // The tombstone names the member the event is about (the kernel makes both
                // from one entry); a mismatch would be a bug there.
                debug_assert_eq!(*member, subject_id(tombstone), "a departure's member is its tombstone's");
                ChangeView::Departed(tombstone.into())
            }
            EventKind::KvPut { key, value } => ChangeView::KvPut { key: key.clone(), value: value.clone() },
            EventKind::KvDeleted { key } => ChangeView::KvDeleted { key: key.clone() },
            EventKind::TokenCreated(t) => ChangeView::TokenCreated(t.into()),
            EventKind::TokenRevoked { id, name } => ChangeView::TokenRevoked { id: id.0, name: name.clone() },
            EventKind::Audit(a) => {
                ChangeView::Audit(AuditView { by: a.by.clone(), role: a.role.clone(), action: a.action.clone() })
            }
        }
    }
}

fn subject_id(t: &Tombstone) -> MemberId {
    match &t.subject {
        roster_kernel::TombstoneSubject::Server(s) => MemberId::Server(s.id),
        roster_kernel::TombstoneSubject::Process(p) => MemberId::Process(p.id),
    }
}

/// One change event: `{"revision", "type", "data", "text"}`, where `text` is the line
/// `roster watch` prints for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub revision: u64,
    #[serde(flatten)]
    pub change: ChangeView,
    pub text: String,
}

impl EventView {
    /// `name` names a server by id for the text (`on dev-1`), as `roster watch` does.
    pub fn new(event: &Event, name: impl Fn(roster_kernel::ServerId) -> Option<String>) -> Self {
        EventView { revision: event.revision, change: ChangeView::from(&event.kind), text: describe(event, name) }
    }
}

/// The event stream's line that says every event up to `revision` was sent (sent while
/// the stream is caught up, every few seconds): `{"progress": {"revision": R}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressLine {
    pub progress: Progress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub revision: u64,
}
