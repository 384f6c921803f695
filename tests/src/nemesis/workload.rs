//! The workload, on the real client library, recorded as the simulator's workers record
//! theirs (`runtime-sim/src/workload.rs`), so the same analysis reads both:
//!
//! - key/value sessions: puts (every value unique, `c<client>-<seq>`), linearizable gets,
//!   compare-and-sets and deletes on a few keys of the current round, one at a time each;
//! - process members: register, heartbeat through the shipped `ProcessHandle` (its
//!   observer hook records the heartbeats the leader answered), and after a seeded life
//!   leave (deregister) or crash (abandon the handle: heartbeats stop without a word).
//!
//! Keys change with every fault round (`k/<round>/<i>`): an operation whose outcome is
//! unknown stays possible forever, and confining it to its round's keys keeps the
//! linearizability search small.

use super::history::SharedRecorder;
use super::rng::SplitMix;
use roster_kernel::{Command, Labels, MemberId, ProcessInfo, Reply, ResourceAverage, ServerId};
use roster_real::client::wire::Consistency;
use roster_real::client::{Client, ClientOptions, ProcessHandle};
use roster_sim::trace::{CrashRec, HEARTBEAT_PRECISION_MS, HeartbeatRec, KvCall, KvOp, KvOutput, OpEnd};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Keys per round; few, so sessions contend on them.
pub const KEYS_PER_ROUND: u64 = 3;
/// Pause between two operations of one session.
const THINK_MS: (u64, u64) = (5, 40);
/// How long a member lives before it leaves or crashes.
const MEMBER_LIFE_MS: (u64, u64) = (4_000, 15_000);
/// Key/value keys of the workload start with this; the final state is read under it.
pub const KEY_PREFIX: &str = "k/";
/// The first key after every workload key (`'/' + 1 == '0'`).
pub const KEY_END: &str = "k0";

/// What the workload shares with the run: the stop flag, the round (for keys), counters.
pub struct Shared {
    pub recorder: SharedRecorder,
    pub stop: AtomicBool,
    pub round: AtomicU64,
    pub members_registered: AtomicU64,
    pub members_left: AtomicU64,
    pub members_crashed: AtomicU64,
    pub members_lost: AtomicU64,
    pub endpoints: Vec<String>,
    pub servers: u64,
    pub heartbeat_interval_ms: u64,
}

pub fn client_options(endpoints: &[String]) -> ClientOptions {
    ClientOptions {
        endpoints: endpoints.to_vec(),
        token: super::nodes::TOKEN.into(),
        connect_timeout_ms: 500,
        request_timeout_ms: 1_000,
    }
}

fn key(shared: &Shared, rng: &mut SplitMix) -> String {
    format!("{KEY_PREFIX}{:04}/{}", shared.round.load(Ordering::Relaxed), rng.range(0, KEYS_PER_ROUND))
}

/// One key/value session until the stop flag; `client_id` names its values.
pub async fn kv_session(shared: Arc<Shared>, client_id: u64, seed: u64) {
    let client = match Client::connect(client_options(&shared.endpoints), seed).await {
        Ok(c) => c,
        Err(e) => {
            shared.recorder.fault(format!("kv session {client_id} could not make a client: {e}"));
            return;
        }
    };
    let rec = &shared.recorder;
    let mut rng = SplitMix::new(seed);
    let mut commands = 0u64;
    // The last value this session saw per key: what its compare-and-sets expect.
    let mut last_seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.range(THINK_MS.0, THINK_MS.1))).await;
        let roll = rng.range(0, 100);
        let key = key(&shared, &mut rng);
        if roll < 35 {
            let index = rec.trace().record_op_invoked(KvOp {
                client: client_id,
                command_seq: None,
                queue_seq: None,
                key: key.clone(),
                call: KvCall::Get,
                invoked_at_ms: rec.now_ms(),
                end: OpEnd::Pending,
            });
            let result = client.kv_get(key.clone(), Consistency::Linearizable).await;
            let at_ms = rec.now_ms();
            let end = match result {
                Ok(v) => {
                    last_seen.insert(key, v.clone());
                    OpEnd::Returned { at_ms, output: KvOutput::Value(v) }
                }
                Err(e) => OpEnd::Failed { at_ms, reason: e.to_string() },
            };
            rec.trace().record_op_end(index, end);
            continue;
        }
        let seq = commands + 1;
        let value = format!("c{client_id}-{seq}");
        let (command, call) = if roll < 75 {
            (Command::KvPut { key: key.clone(), value: value.clone() }, KvCall::Put { value: value.clone() })
        } else if roll < 93 {
            let expected = last_seen.get(&key).cloned().flatten();
            let new = if roll < 91 { Some(value.clone()) } else { None };
            (
                Command::KvCas { key: key.clone(), expected: expected.clone(), new: new.clone() },
                KvCall::Cas { expected, new },
            )
        } else {
            (Command::KvDelete { key: key.clone() }, KvCall::Delete)
        };
        let invoked = rec.now_ms();
        let pending = match client.submit(command).await {
            Ok(p) => p,
            Err(e) => {
                // Not queued: it cannot take effect (left out of the history).
                let at_ms = rec.now_ms();
                {
                    let mut trace = rec.trace();
                    let index = trace.record_op_invoked(KvOp {
                        client: client_id,
                        command_seq: None,
                        queue_seq: None,
                        key,
                        call,
                        invoked_at_ms: invoked,
                        end: OpEnd::Pending,
                    });
                    trace.record_op_end(index, OpEnd::Refused { at_ms, reason: format!("not queued: {e}") });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        commands = seq;
        let index = rec.trace().record_op_invoked(KvOp {
            client: client_id,
            command_seq: Some(seq),
            queue_seq: Some(pending.seq()),
            key: key.clone(),
            call: call.clone(),
            invoked_at_ms: invoked,
            end: OpEnd::Pending,
        });
        let answer = pending.await;
        let at_ms = rec.now_ms();
        let (end, now_holds) = roster_sim::trace::kv_op_end(&call, answer, at_ms);
        if let Some(value) = now_holds {
            last_seen.insert(key, value);
        }
        rec.trace().record_op_end(index, end);
    }
}

/// One member slot until the stop flag: registration after registration, each living a
/// seeded while, then leaving or crashing. At the stop a live member leaves.
pub async fn member_slot(shared: Arc<Shared>, index: u64, seed: u64) {
    let client = match Client::connect(client_options(&shared.endpoints), seed).await {
        Ok(c) => c,
        Err(e) => {
            shared.recorder.fault(format!("member slot {index} could not make a client: {e}"));
            return;
        }
    };
    let mut rng = SplitMix::new(seed);
    let host = ServerId(index % shared.servers + 1);
    let interval_ms = shared.heartbeat_interval_ms;
    let mut lives = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        lives += 1;
        let info = ProcessInfo {
            name: format!("member-{index}-{lives}"),
            server: host,
            service_host: String::new(),
            service_port: None,
            started_at_unix_ms: roster_real::rt::clock::unix_ms(),
            labels: Labels::default(),
            reserved: ResourceAverage::default(),
        };
        let id = match client.execute(Command::RegisterProcess { info }).await {
            Ok(Reply::ProcessRegistered { id, .. }) => id,
            Ok(_) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        shared.members_registered.fetch_add(1, Ordering::Relaxed);
        let mut handle = ProcessHandle::start_observed(client.clone(), id, interval_ms, recorder(&shared));
        let life = Duration::from_millis(rng.range(MEMBER_LIFE_MS.0, MEMBER_LIFE_MS.1));
        let ends_at = tokio::time::Instant::now() + life;
        let lost = loop {
            if shared.stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= ends_at {
                break false;
            }
            tokio::select! {
                biased;
                _ = handle.lost() => break true,
                () = tokio::time::sleep(Duration::from_millis(interval_ms)) => {}
            }
        };
        if lost {
            // Expired or removed: a false expiry, if it was heartbeating, is the
            // checker's to find. Register anew.
            shared.members_lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !shared.stop.load(Ordering::Relaxed) && rng.chance(50) {
            let member = handle.member();
            handle.abandon().await;
            let at_ms = shared.recorder.now_ms();
            shared.recorder.trace().record_crash(CrashRec { member, at_ms, revived_at_ms: None });
            shared.members_crashed.fetch_add(1, Ordering::Relaxed);
        } else {
            match handle.close(Some(0)).await {
                Ok(()) => {
                    shared.members_left.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => shared.recorder.fault(format!("process {id} could not deregister: {e}")),
            }
        }
    }
}

/// Records each heartbeat the leader acknowledged within `HEARTBEAT_PRECISION_MS` of its
/// sending, at the acknowledgement.
fn recorder(shared: &Arc<Shared>) -> impl FnMut(MemberId, tokio::time::Instant, tokio::time::Instant) + Send + 'static {
    let rec = shared.recorder.clone();
    let precision = Duration::from_millis(HEARTBEAT_PRECISION_MS);
    move |member, sent_at, acked_at| {
        if acked_at.saturating_duration_since(sent_at) <= precision {
            let at_ms = rec.ms_of(acked_at);
            rec.trace().record_heartbeat(HeartbeatRec { member, at_ms });
        }
    }
}
