//! What one simulated run recorded, in the order it happened, and its trace hash.
//!
//! Every `record_*` call appends to the trace and mixes a canonical encoding of the
//! record (a tag, its fields, its simulated time) into a running FNV-1a hash, so two runs
//! with the same hash saw the same events at the same simulated milliseconds. The
//! recording order is itself part of the hash: a scheduling difference that reorders two
//! records at the same millisecond changes it.
//!
//! Times are simulated milliseconds since the world started.

use roster_kernel::MemberId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running FNV-1a 64 hash over a canonical byte encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_OFFSET)
    }
}

impl Fnv {
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    pub fn opt_str(&mut self, s: &Option<String>) -> &mut Self {
        match s {
            None => self.u64(0),
            Some(s) => self.u64(1).str(s),
        }
    }

    pub fn member(&mut self, m: MemberId) -> &mut Self {
        match m {
            MemberId::Server(s) => self.u64(1).u64(s.0),
            MemberId::Process(p) => self.u64(2).u64(p.0),
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of a byte string.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv::default().bytes(bytes).finish()
}

/// Who issued an operation: one client incarnation (a worker restarted with a new client
/// is a new id).
pub type ClientId = u64;

/// A key/value call, as the workload issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCall {
    Put { value: String },
    Get,
    Cas { expected: Option<String>, new: Option<String> },
    Delete,
}

/// The cluster's answer to a key/value call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    Done,
    Value(Option<String>),
    Cas { swapped: bool, current: Option<String> },
}

/// How a recorded operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpEnd {
    /// No answer (yet): at the end of the run it may or may not have taken effect.
    Pending,
    Returned {
        at_ms: u64,
        output: KvOutput,
    },
    /// The cluster refused the command with a typed error: it took no effect.
    Refused {
        at_ms: u64,
        reason: String,
    },
    /// The client gave up (a read that found no leader, a closed session): a command may
    /// or may not have taken effect; a read constrains nothing.
    Failed {
        at_ms: u64,
        reason: String,
    },
}

/// How the answer to a key/value command ends its recorded operation, and what the key
/// holds after it when the answer says (`Some(value)`, `Some(None)`: absent), for a
/// worker's next compare-and-set. Shared by the simulator's workers and the nemesis
/// workload, which record the same history.
pub fn kv_op_end<R: std::fmt::Display, E: std::fmt::Display>(
    call: &KvCall,
    answer: Result<Result<roster_kernel::Reply, R>, E>,
    at_ms: u64,
) -> (OpEnd, Option<Option<String>>) {
    use roster_kernel::Reply;
    match answer {
        Ok(Ok(Reply::Done { .. })) => {
            let written = match call {
                KvCall::Put { value } => Some(value.clone()),
                _ => None,
            };
            (OpEnd::Returned { at_ms, output: KvOutput::Done }, Some(written))
        }
        Ok(Ok(Reply::Cas { swapped, current, .. })) => {
            let now_holds = match (call, swapped) {
                (KvCall::Cas { new, .. }, true) => new.clone(),
                _ => current.clone(),
            };
            (OpEnd::Returned { at_ms, output: KvOutput::Cas { swapped, current } }, Some(now_holds))
        }
        Ok(Ok(other)) => (OpEnd::Failed { at_ms, reason: format!("unexpected reply {other:?}") }, None),
        Ok(Err(refusal)) => (OpEnd::Refused { at_ms, reason: refusal.to_string() }, None),
        Err(e) => (OpEnd::Failed { at_ms, reason: e.to_string() }, None),
    }
}

/// One key/value operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOp {
    pub client: ClientId,
    /// Commands only: the client's command counter (1, 2, …, in submission order).
    pub command_seq: Option<u64>,
    /// Commands only: the session queue's sequence number (`Pending::seq`).
    pub queue_seq: Option<u64>,
    pub key: String,
    pub call: KvCall,
    pub invoked_at_ms: u64,
    pub end: OpEnd,
}

/// A node saw itself as leader of `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderSeen {
    pub node: u64,
    pub term: u64,
    pub at_ms: u64,
    /// How long ago a quorum last acknowledged it (`None`: never). A cut-off or paused
    /// leader still calls itself leader; this tells whether it can act as one.
    pub quorum_ack_age_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitSeen {
    /// The node's own commit index covers `index`, which holds an entry of `term` whose
    /// payload hashes to `entry_hash`.
    Committed { index: u64, term: u64, entry_hash: u64 },
    /// The node was killed; its next report comes from a new incarnation.
    Restarted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitRec {
    pub node: u64,
    pub at_ms: u64,
    pub event: CommitSeen,
}

/// A node's state machine at an applied index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedRec {
    pub node: u64,
    pub at_ms: u64,
    pub applied_index: u64,
    pub state_hash: u64,
}

/// A change the state machine applied, as far as the checkers care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliedEvent {
    KvPut {
        key: String,
        value: String,
    },
    KvDeleted {
        key: String,
    },
    /// The leader expired the member (not a deregistration or delete); it decided so when
    /// its (simulated) Unix clock read `decided_unix_ms`.
    Expired {
        member: MemberId,
        decided_unix_ms: u64,
    },
    Other,
}

/// Where an applied event was first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEvent {
    pub event: AppliedEvent,
    pub node: u64,
    pub at_ms: u64,
}

/// A heartbeat the leader answered `HeartbeatOk`, so it reached the leader no earlier
/// than `at_ms - HEARTBEAT_PRECISION_MS` and no later than `at_ms` (slower calls are not
/// recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatRec {
    pub member: MemberId,
    pub at_ms: u64,
}

/// Heartbeats that took longer than this round trip are not recorded.
pub const HEARTBEAT_PRECISION_MS: u64 = 200;

/// A member that stopped heartbeating at `at_ms` (crashed, or paused for longer than the
/// timeout) and came back at `revived_at_ms` (a resumed pause), if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashRec {
    pub member: MemberId,
    pub at_ms: u64,
    pub revived_at_ms: Option<u64>,
}

/// A member that was silent (paused) from `from_ms` to `until_ms` for less than the
/// heartbeat timeout: it must not be expired for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortSilence {
    pub member: MemberId,
    pub from_ms: u64,
    pub until_ms: u64,
}

/// Everything one run recorded.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub kv_ops: Vec<KvOp>,
    pub leaders: Vec<LeaderSeen>,
    pub commits: Vec<CommitRec>,
    pub applied: Vec<AppliedRec>,
    /// The applied stream by (kernel revision, position among that revision's events),
    /// merged from every node's event history. One proposal (a batched expiry) can make
    /// several events at one revision.
    pub events: BTreeMap<(u64, u32), SeenEvent>,
    /// Two nodes applied different events at one revision.
    pub event_conflicts: Vec<String>,
    pub heartbeats: Vec<HeartbeatRec>,
    pub crashes: Vec<CrashRec>,
    pub short_silences: Vec<ShortSilence>,
    /// Faults injected and healed, in words, for the report and `--trace`.
    pub faults: Vec<(u64, String)>,
    /// When every fault was healed.
    pub heals_ms: Vec<u64>,
    /// When some node's commit index first passed a new highest value.
    pub commit_times_ms: Vec<u64>,
    /// Nodes that failed to start or restart.
    pub start_failures: Vec<String>,
    /// The key/value contents of the most advanced node at the end, and its applied index.
    pub final_kv: BTreeMap<String, String>,
    pub final_applied_index: u64,
    pub end_ms: u64,
    /// The simulated Unix time (ms) at the world's start: Unix times in the record minus
    /// this are simulated ms since the start.
    pub origin_unix_ms: u64,
    hash: Fnv,
}

impl Trace {
    pub fn new() -> Self {
        Trace::default()
    }

    pub fn record_origin(&mut self, origin_unix_ms: u64) {
        self.hash.u64(16).u64(origin_unix_ms);
        self.origin_unix_ms = origin_unix_ms;
    }

    /// The trace hash so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// Records an operation's invocation; returns its index for `record_op_end`.
    pub fn record_op_invoked(&mut self, op: KvOp) -> usize {
        let h = &mut self.hash;
        h.u64(1).u64(op.client).u64(op.command_seq.unwrap_or(0)).u64(op.queue_seq.unwrap_or(0));
        h.str(&op.key).u64(op.invoked_at_ms);
        match &op.call {
            KvCall::Put { value } => h.u64(1).str(value),
            KvCall::Get => h.u64(2),
            KvCall::Cas { expected, new } => h.u64(3).opt_str(expected).opt_str(new),
            KvCall::Delete => h.u64(4),
        };
        self.kv_ops.push(op);
        self.kv_ops.len() - 1
    }

    pub fn record_op_end(&mut self, index: usize, end: OpEnd) {
        let h = &mut self.hash;
        h.u64(2).u64(index as u64);
        match &end {
            OpEnd::Pending => h.u64(0),
            OpEnd::Returned { at_ms, output } => {
                h.u64(1).u64(*at_ms);
                match output {
                    KvOutput::Done => h.u64(1),
                    KvOutput::Value(v) => h.u64(2).opt_str(v),
                    KvOutput::Cas { swapped, current } => h.u64(3).u64(u64::from(*swapped)).opt_str(current),
                }
            }
            OpEnd::Refused { at_ms, reason } => h.u64(2).u64(*at_ms).str(reason),
            OpEnd::Failed { at_ms, reason } => h.u64(3).u64(*at_ms).str(reason),
        };
        self.kv_ops[index].end = end;
    }

    pub fn record_leader(&mut self, seen: LeaderSeen) {
        self.hash.u64(3).u64(seen.node).u64(seen.term).u64(seen.at_ms).u64(seen.quorum_ack_age_ms.unwrap_or(u64::MAX));
        self.leaders.push(seen);
    }

    pub fn record_commit(&mut self, rec: CommitRec) {
        self.hash.u64(4).u64(rec.node).u64(rec.at_ms);
        match rec.event {
            CommitSeen::Committed { index, term, entry_hash } => self.hash.u64(1).u64(index).u64(term).u64(entry_hash),
            CommitSeen::Restarted => self.hash.u64(2),
        };
        self.commits.push(rec);
    }

    pub fn record_commit_time(&mut self, at_ms: u64) {
        self.hash.u64(5).u64(at_ms);
        self.commit_times_ms.push(at_ms);
    }

    pub fn record_applied(&mut self, rec: AppliedRec) {
        self.hash.u64(6).u64(rec.node).u64(rec.at_ms).u64(rec.applied_index).u64(rec.state_hash);
        self.applied.push(rec);
    }

    /// Records the `position`-th event applied at `revision` as seen on `node`; a different
    /// event already seen there is a conflict.
    pub fn record_event(&mut self, revision: u64, position: u32, event: AppliedEvent, node: u64, at_ms: u64) {
        match self.events.get(&(revision, position)) {
            Some(first) if first.event == event => {}
            Some(first) => {
                let conflict = format!(
                    "revision {revision} (event {position}): {:?} on node {} at {} ms vs {:?} on node {node} at {at_ms} ms",
                    first.event, first.node, first.at_ms, event
                );
                self.hash.u64(7).str(&conflict);
                self.event_conflicts.push(conflict);
            }
            None => {
                let h = &mut self.hash;
                h.u64(8).u64(revision).u64(u64::from(position)).u64(node).u64(at_ms);
                match &event {
                    AppliedEvent::KvPut { key, value } => h.u64(1).str(key).str(value),
                    AppliedEvent::KvDeleted { key } => h.u64(2).str(key),
                    AppliedEvent::Expired { member, decided_unix_ms } => h.u64(3).member(*member).u64(*decided_unix_ms),
                    AppliedEvent::Other => h.u64(4),
                };
                self.events.insert((revision, position), SeenEvent { event, node, at_ms });
            }
        }
    }

    pub fn record_heartbeat(&mut self, rec: HeartbeatRec) {
        self.hash.u64(9).member(rec.member).u64(rec.at_ms);
        self.heartbeats.push(rec);
    }

    pub fn record_crash(&mut self, rec: CrashRec) {
        self.hash.u64(10).member(rec.member).u64(rec.at_ms).u64(rec.revived_at_ms.unwrap_or(u64::MAX));
        self.crashes.push(rec);
    }

    pub fn record_short_silence(&mut self, rec: ShortSilence) {
        self.hash.u64(11).member(rec.member).u64(rec.from_ms).u64(rec.until_ms);
        self.short_silences.push(rec);
    }

    pub fn record_fault(&mut self, at_ms: u64, what: String) {
        self.hash.u64(12).u64(at_ms).str(&what);
        self.faults.push((at_ms, what));
    }

    pub fn record_heal(&mut self, at_ms: u64) {
        self.hash.u64(13).u64(at_ms);
        self.heals_ms.push(at_ms);
    }

    pub fn record_start_failure(&mut self, at_ms: u64, what: String) {
        self.hash.u64(14).u64(at_ms).str(&what);
        self.start_failures.push(format!("{what} (at {at_ms} ms)"));
    }

    /// Closes the trace: the final state and the end time enter the hash.
    pub fn record_end(&mut self, end_ms: u64, final_kv: BTreeMap<String, String>, final_applied_index: u64) {
        self.hash.u64(15).u64(end_ms).u64(final_applied_index).u64(final_kv.len() as u64);
        for (k, v) in &final_kv {
            self.hash.str(k).str(v);
        }
        self.end_ms = end_ms;
        self.final_kv = final_kv;
        self.final_applied_index = final_applied_index;
    }

    /// The trace as text, one record per line, for `--trace`.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (at, what) in &self.faults {
            let _ = writeln!(out, "{at:>8} ms  fault  {what}");
        }
        for s in &self.leaders {
            let _ = writeln!(
                out,
                "{:>8} ms  leader node {} term {} (quorum ack {:?} ms ago)",
                s.at_ms, s.node, s.term, s.quorum_ack_age_ms
            );
        }
        for (i, op) in self.kv_ops.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>8} ms  op #{i} client {} {:?} {:?} -> {:?}",
                op.invoked_at_ms, op.client, op.key, op.call, op.end
            );
        }
        for ((rev, pos), e) in &self.events {
            let _ = writeln!(out, "{:>8} ms  applied rev {rev}.{pos} on node {}: {:?}", e.at_ms, e.node, e.event);
        }
        for c in &self.crashes {
            let _ = writeln!(out, "{:>8} ms  crash {} (revived {:?})", c.at_ms, c.member, c.revived_at_ms);
        }
        out
    }
}

/// The trace, shared by every machine of the world (one thread runs them all).
#[derive(Clone, Default)]
pub struct SharedTrace(Arc<Mutex<Trace>>);

impl SharedTrace {
    pub fn lock(&self) -> MutexGuard<'_, Trace> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, at: u64) -> KvOp {
        KvOp {
            client,
            command_seq: Some(1),
            queue_seq: Some(1),
            key: "k".into(),
            call: KvCall::Put { value: "v".into() },
            invoked_at_ms: at,
            end: OpEnd::Pending,
        }
    }

    #[test]
    fn the_hash_covers_content_time_and_order() {
        let build = |first: u64, second: u64, at: u64| {
            let mut t = Trace::new();
            t.record_op_invoked(op(first, at));
            t.record_op_invoked(op(second, at));
            t.hash()
        };
        assert_eq!(build(1, 2, 5), build(1, 2, 5));
        assert_ne!(build(1, 2, 5), build(2, 1, 5), "order");
        assert_ne!(build(1, 2, 5), build(1, 2, 6), "time");
        assert_ne!(build(1, 2, 5), build(1, 3, 5), "content");
        assert_ne!(Fnv::default().str("ab").str("c").finish(), Fnv::default().str("a").str("bc").finish());
    }

    #[test]
    fn a_different_event_at_one_revision_is_a_conflict() {
        let mut t = Trace::new();
        let put = |v: &str| AppliedEvent::KvPut { key: "k".into(), value: v.into() };
        t.record_event(3, 0, put("a"), 1, 10);
        t.record_event(3, 0, put("a"), 2, 12);
        t.record_event(3, 1, put("b"), 2, 12);
        assert!(t.event_conflicts.is_empty());
        t.record_event(3, 0, put("b"), 3, 15);
        assert_eq!(t.event_conflicts.len(), 1);
        assert!(t.event_conflicts[0].contains("node 3"), "{}", t.event_conflicts[0]);
        assert_eq!(t.events[&(3, 0)].node, 1);
    }
}
