//! Keys and values, and what a write answers.

use roster_kernel::Reply;
use serde::{Deserialize, Serialize};

/// `roster kv get KEY --json` and `GET /v1/kv/{key}` with `Accept: application/json`.
/// An absent key is an error (`not_found`), not a `null` value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvValue {
    pub key: String,
    pub value: String,
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvItem {
    pub key: String,
    pub value: String,
}

/// `roster kv ls --json` and `GET /v1/kv?start=&end=&limit=`: keys in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvItems {
    pub revision: u64,
    pub items: Vec<KvItem>,
    /// The key the rest of the range starts at (`?start=`); `null` when nothing is left.
    pub next: Option<String>,
}

/// What a write answers (`kv put`, `kv del`, `put`, `del`, `kv cas` and their HTTP
/// forms): the reply's fields, no wrapper; every one has `revision`, the state after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WriteReply {
    /// A compare-and-set: whether it swapped, and the value it found.
    Cas { swapped: bool, current: Option<String>, revision: u64 },
    /// A registration (`id` of the process) or a new token (`id` of the token).
    Created { id: u64, revision: u64 },
    /// A leader command: how many members it touched.
    Applied { count: u32, revision: u64 },
    /// Anything else.
    Done { revision: u64 },
    /// `POST /v1/sessions`.
    SessionOpened { session: u64 },
}

impl From<&Reply> for WriteReply {
    fn from(r: &Reply) -> Self {
        match r {
            Reply::SessionOpened { session } => WriteReply::SessionOpened { session: session.0 },
            Reply::Done { revision } => WriteReply::Done { revision: *revision },
            Reply::ProcessRegistered { id, revision } => WriteReply::Created { id: id.0, revision: *revision },
            Reply::TokenCreated { id, revision } => WriteReply::Created { id: id.0, revision: *revision },
            Reply::Cas { swapped, current, revision } => {
                WriteReply::Cas { swapped: *swapped, current: current.clone(), revision: *revision }
            }
            Reply::Applied { count, revision } => WriteReply::Applied { count: *count, revision: *revision },
        }
    }
}
