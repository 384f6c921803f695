//! The JSON schema: what the CLI's `--json` prints and what HTTP answers, as one set of
//! types both build from the kernel's, so the two cannot drift. `docs/json.md` shows an
//! example of each; a test here parses those examples into these types.
//!
//! The habits, everywhere: snake_case names; an enum is an object with `"type"` beside
//! its fields (`{"type": "expired", "silent_for_ms": 4000}`) or, for change events,
//! `"type"` and `"data"`; status words as the filters take them (`online`, `draining`);
//! the same thing at the same path (a server's name is `.info.name` in `status`, `ls`,
//! `get`, tombstones and events); units last in names (`_ms`, `_bytes`, `_percent`).
//!
//! These types are for JSON alone: the binary protocol and the snapshots carry the
//! kernel's own types (postcard), which may change shape without changing these.

mod errors;
mod events;
mod kv;
mod launch;
mod lists;
mod members;
mod status;
mod tokens;

pub use errors::{ErrorBody, ErrorView};
pub use events::{AuditView, ChangeView, DepartureView, EventView, Progress, ProgressLine, TombstoneView};
pub use kv::{KvItem, KvItems, KvValue, WriteReply};
pub use launch::Launched;
pub use lists::{MemberList, OneProcess, OneServer, ProcessPage, ServerPage, Tombstones};
pub use members::{MemberView, ProcessInfoView, ProcessView, Resources, ServerInfoView, ServerView, Status};
pub use status::{Incarnation, ProcessCountsView, RaftMember, ServerStatusView, StateBytesView, StateView, StatusView};
pub use tokens::{TokenList, TokenView};

#[cfg(test)]
mod tests;
