//! Change events, one per visible change, for watch streams.

use crate::ids::MemberId;
use crate::model::{ProcessEntry, ServerEntry, Tombstone};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Revision of the state right after the command that made this change. Never
    /// decreases; the changes of one command (a batched expiry) share one revision.
    pub revision: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    ServerRegistered(ServerEntry),
    ServerUpdated(ServerEntry),
    ProcessRegistered(ProcessEntry),
    ProcessUpdated(ProcessEntry),
    /// Left: deregistered, expired or deleted; the tombstone says which.
    Departed {
        member: MemberId,
        tombstone: Tombstone,
    },
    KvPut {
        key: String,
        value: String,
    },
    KvDeleted {
        key: String,
    },
    TokenCreated(crate::command::TokenInfo),
    /// Revoked, or dropped with its member.
    TokenRevoked {
        id: crate::command::TokenId,
        name: String,
    },
    /// An admin action (see `ProposalBody::Audit`).
    Audit(crate::command::AuditRecord),
}
