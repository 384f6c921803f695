//! Answers to reads.

use crate::model::{ProcessEntry, ServerEntry, Tombstone};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    Server(Option<ServerEntry>),
    Process(Option<ProcessEntry>),
    Members { servers: Vec<ServerEntry>, processes: Vec<ProcessEntry> },
    KvValue(Option<String>),
    KvItems(Vec<(String, String)>),
    Tombstones(Vec<Tombstone>),
    Tokens(Vec<crate::command::TokenInfo>),
}

/// A query's answer with the revision it was read at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    pub revision: u64,
    pub result: QueryResult,
}
