//! What `ls`, `get` and `tombstones` print, and the matching HTTP reads: each a
//! `revision` (the state the answer was read at) beside what was asked for.

use super::events::TombstoneView;
use super::members::{ProcessView, ServerView};
use serde::{Deserialize, Serialize};

/// `GET /v1/servers` (one page) and `roster ls --kind servers --json` (every page;
/// `revision` is the first page's, `next` is `null`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPage {
    pub revision: u64,
    pub servers: Vec<ServerView>,
    /// `?after=` for the next page; `null` at the end.
    pub next: Option<u64>,
}

/// `GET /v1/processes` and `roster ls --kind processes --json`, as [`ServerPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPage {
    pub revision: u64,
    pub processes: Vec<ProcessView>,
    pub next: Option<u64>,
}

/// `roster ls --json` without `--kind`: both lists, every page, at the first page's revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    pub revision: u64,
    pub servers: Vec<ServerView>,
    pub processes: Vec<ProcessView>,
}

/// `GET /v1/servers/{id}` and `roster get server-ID --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneServer {
    pub revision: u64,
    pub server: ServerView,
}

/// `GET /v1/processes/{id}` and `roster get process-ID --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneProcess {
    pub revision: u64,
    pub process: ProcessView,
}

/// `GET /v1/tombstones` and `roster tombstones --json`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstones {
    pub revision: u64,
    pub tombstones: Vec<TombstoneView>,
}
