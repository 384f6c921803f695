//! The session table: exactly-once application of client commands (Raft dissertation,
//! section 6.3).
//!
//! Each session remembers the sequence number, a digest and the reply of its last applied
//! command, and the credential that opened it: only requests made with that credential
//! may use the session (another caller is refused `NotYourSession` before anything of the
//! session is looked at). Clients are stop-and-wait (one command in flight per session),
//! so one remembered reply is enough to answer any retry; the digest makes sure it is a
//! retry of the same command (another command under a reused pair is refused, never
//! answered with the first one's reply). The table is bounded; opening a session when it
//! is full evicts the least recently used one: the smallest revision of a last applied
//! command, ties by session id. A session unused for `session_idle_ms` is dropped too, and
//! its owner can close it. A request on a session that existed and is gone is answered
//! `SessionExpired` (it may be a retry of a command that applied), not `UnknownSession`.
//! All of it is replicated values, so it is the same on every replica.

use crate::command::{CommandError, CommandResult, Request, SessionOwner, command_digest};
use crate::ids::SessionId;
use crate::state_machine::limits::SEQ;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// The credential that opened it; the only one that may use or close it.
    pub(crate) owner: SessionOwner,
    /// Sequence of the last applied command; 0 until the first one.
    pub(crate) last_seq: u64,
    /// Revision of the last applied command (of the opening, until the first one).
    pub(crate) last_rev: u64,
    /// Reply to the last applied command; `None` until the first one.
    pub(crate) last_reply: Option<CommandResult>,
    /// `command_digest` of the last applied command; 0 until the first one.
    pub(crate) last_digest: u64,
    /// Proposal time (Unix ms) of the last use: the opening, then each applied command.
    pub(crate) last_used_ms: u64,
}

/// What to do with a client request, decided by its session alone.
#[derive(Debug)]
pub(crate) enum Gate<'a> {
    /// The next command of the session: apply it, then `record` its reply.
    Apply,
    /// A retry of the last applied command: answer with its stored reply, apply nothing.
    Duplicate(&'a CommandResult),
    /// Refused without applying anything.
    Refuse(CommandError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionTable {
    records: BTreeMap<SessionId, SessionRecord>,
    /// `(last_rev, id)` of every record: the first is the least recently used.
    lru: BTreeSet<(u64, SessionId)>,
    /// Id of the next session to open; ids are never reused.
    next_id: u64,
    /// What the stored replies count against the budget (`budget::reply_bytes`).
    reply_bytes: u64,
}

impl SessionTable {
    pub(crate) fn new() -> Self {
        SessionTable { records: BTreeMap::new(), lru: BTreeSet::new(), next_id: 1, reply_bytes: 0 }
    }

    /// Rebuilds a table from snapshot parts; `Err` names what is inconsistent.
    pub(crate) fn from_parts(
        next_id: u64,
        records: impl IntoIterator<Item = (SessionId, SessionRecord)>,
    ) -> Result<Self, String> {
        let mut table = SessionTable { records: BTreeMap::new(), lru: BTreeSet::new(), next_id, reply_bytes: 0 };
        for (id, record) in records {
            if id.0 == 0 || id.0 >= next_id {
                return Err(format!("{id} is outside the issued range 1..{next_id}"));
            }
            if record.last_seq == 0 && record.last_reply.is_some() {
                return Err(format!("{id} has a reply but no applied command"));
            }
            if record.last_seq > 0 && record.last_reply.is_none() {
                return Err(format!("{id} has applied commands but no reply"));
            }
            table.reply_bytes += stored_bytes(&record);
            table.lru.insert((record.last_rev, id));
            if table.records.insert(id, record).is_some() {
                return Err(format!("{id} appears twice"));
            }
        }
        Ok(table)
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// What the stored replies count against the budget.
    pub(crate) fn reply_bytes(&self) -> u64 {
        self.reply_bytes
    }

    /// The stored replies' bytes recounted from the records: the running count must equal it.
    pub(crate) fn recount_reply_bytes(&self) -> u64 {
        self.records.values().map(stored_bytes).sum()
    }

    /// Drops the least recently used session.
    fn evict_oldest(&mut self) -> SessionId {
        let (_, oldest) = self.lru.pop_first().expect("lru holds every record");
        let record = self.records.remove(&oldest).expect("lru and records agree");
        self.reply_bytes -= stored_bytes(&record);
        oldest
    }

    /// Drops the least recently used sessions until the stored replies hold at most
    /// `max_reply_bytes` (a smaller budget).
    pub(crate) fn trim(&mut self, max_reply_bytes: u64) {
        while self.reply_bytes > max_reply_bytes {
            self.evict_oldest();
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = (&SessionId, &SessionRecord)> {
        self.records.iter()
    }

    pub(crate) fn get(&self, id: SessionId) -> Option<&SessionRecord> {
        self.records.get(&id)
    }

    /// Opens a session for `owner` at `revision`, first evicting the least recently used
    /// one if the table holds `max_sessions` already. Returns the new id and the evicted one.
    pub(crate) fn open(
        &mut self,
        owner: SessionOwner,
        revision: u64,
        now_ms: u64,
        max_sessions: usize,
    ) -> (SessionId, Option<SessionId>) {
        assert!(max_sessions >= 1, "limits were checked at construction");
        let mut evicted = None;
        while self.records.len() >= max_sessions {
            evicted = Some(self.evict_oldest());
        }
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let record = SessionRecord {
            owner,
            last_seq: 0,
            last_rev: revision,
            last_reply: None,
            last_digest: 0,
            last_used_ms: now_ms,
        };
        self.lru.insert((revision, id));
        let previous = self.records.insert(id, record);
        assert!(previous.is_none(), "session ids are never reused");
        debug_assert_eq!(self.lru.len(), self.records.len());
        (id, evicted)
    }

    /// Drops the sessions unused since before `now_ms - idle_ms`. The least recently used
    /// come first in the LRU index (revisions and proposal times grow together), so this
    /// looks at one more record than it drops.
    pub(crate) fn expire_idle(&mut self, now_ms: u64, idle_ms: u64) {
        while let Some(&(rev, id)) = self.lru.first() {
            let record = self.records.get(&id).expect("lru and records agree");
            if now_ms.saturating_sub(record.last_used_ms) <= idle_ms {
                return;
            }
            self.lru.remove(&(rev, id));
            let record = self.records.remove(&id).expect("lru and records agree");
            self.reply_bytes -= stored_bytes(&record);
        }
    }

    /// The session `by` may use, or why not: never issued, gone (expired, evicted or
    /// closed), or another credential's.
    fn owned(&self, session: SessionId, by: SessionOwner) -> Result<&SessionRecord, CommandError> {
        let Some(record) = self.records.get(&session) else {
            // Ids are issued in order and never reused: one below the next was issued.
            if session.0 >= 1 && session.0 < self.next_id {
                return Err(CommandError::SessionExpired(session));
            }
            return Err(CommandError::UnknownSession(session));
        };
        if record.owner != by {
            return Err(CommandError::NotYourSession(session));
        }
        Ok(record)
    }

    /// Decides a request made with credential `by`, by its session's owner, its sequence
    /// number and the digest of its command.
    pub(crate) fn gate(&self, request: &Request, by: SessionOwner) -> Gate<'_> {
        let session = request.session;
        let seq = request.seq;
        if seq == 0 {
            return Gate::Refuse(CommandError::InvalidField {
                field: SEQ.to_string(),
                reason: "sequence numbers start at 1".to_string(),
            });
        }
        let record = match self.owned(session, by) {
            Ok(record) => record,
            Err(refusal) => return Gate::Refuse(refusal),
        };
        let last = record.last_seq;
        if seq == last + 1 {
            Gate::Apply
        } else if seq == last {
            if command_digest(&request.command) != record.last_digest {
                return Gate::Refuse(CommandError::SequenceReused { session, seq });
            }
            // seq >= 1 here, so a command was applied and its reply stored.
            Gate::Duplicate(record.last_reply.as_ref().expect("applied command has a reply"))
        } else if seq < last {
            Gate::Refuse(CommandError::StaleSequence { session, seq, last })
        } else {
            Gate::Refuse(CommandError::SequenceGap { session, seq, last })
        }
    }

    /// Ends `session` for good, if `by` owns it: its id is never issued again, so a later
    /// request on it is told it expired.
    pub(crate) fn close(&mut self, session: SessionId, by: SessionOwner) -> Result<(), CommandError> {
        let last_rev = self.owned(session, by)?.last_rev;
        let removed = self.lru.remove(&(last_rev, session));
        debug_assert!(removed, "lru holds every record");
        let record = self.records.remove(&session).expect("owned found it");
        self.reply_bytes -= stored_bytes(&record);
        Ok(())
    }

    /// Records the reply of the command `gate` allowed; `revision` is the one it ran at.
    /// Then, while the stored replies hold more than `max_reply_bytes`, drops the least
    /// recently used sessions (never this one: it is the most recent, and its reply fits,
    /// as `Limits::check` made sure).
    pub(crate) fn record(
        &mut self,
        request: &Request,
        revision: u64,
        now_ms: u64,
        reply: CommandResult,
        max_reply_bytes: u64,
    ) {
        let record = self.records.get_mut(&request.session).expect("gate found the session");
        self.reply_bytes -= stored_bytes(record);
        debug_assert_eq!(record.last_seq + 1, request.seq, "only gated commands are recorded");
        debug_assert!(record.last_rev < revision, "revisions only grow");
        let removed = self.lru.remove(&(record.last_rev, request.session));
        debug_assert!(removed, "lru holds every record");
        self.lru.insert((revision, request.session));
        record.last_seq = request.seq;
        record.last_rev = revision;
        record.last_reply = Some(reply);
        record.last_digest = command_digest(&request.command);
        record.last_used_ms = now_ms;
        self.reply_bytes += stored_bytes(record);
        while self.reply_bytes > max_reply_bytes {
            let evicted = self.evict_oldest();
            assert_ne!(evicted, request.session, "the newest reply fits its cap alone");
        }
    }

    /// Checks that the LRU index matches the records and that nothing is newer than
    /// `revision`.
    pub(crate) fn check(&self, revision: u64, max_sessions: usize) -> Result<(), String> {
        if self.records.len() > max_sessions {
            return Err(format!("{} sessions exceed the limit {max_sessions}", self.records.len()));
        }
        if self.reply_bytes != self.recount_reply_bytes() {
            return Err(format!(
                "stored replies count {} bytes, a recount finds {}",
                self.reply_bytes,
                self.recount_reply_bytes()
            ));
        }
        if self.lru.len() != self.records.len() {
            return Err("session LRU index and records differ in size".to_string());
        }
        for (id, record) in &self.records {
            if !self.lru.contains(&(record.last_rev, *id)) {
                return Err(format!("{id} is missing from the LRU index"));
            }
            if record.last_rev > revision {
                return Err(format!("{id} was used at a revision after {revision}"));
            }
            if id.0 == 0 || id.0 >= self.next_id {
                return Err(format!("{id} is outside the issued range"));
            }
        }
        Ok(())
    }
}

/// What a record's stored reply counts against the budget (nothing before the first).
fn stored_bytes(record: &SessionRecord) -> u64 {
    record.last_reply.as_ref().map_or(0, crate::state_machine::budget::reply_bytes)
}
