//! The workers: each runs on its own simulated machine with the real client library.
//!
//! - A key/value worker issues puts (every value unique: `c<client>-<n>`), linearizable
//!   gets, compare-and-sets and deletes on a few shared keys, one at a time, and records
//!   each as an invocation and an end for the linearizability and client checkers.
//! - A process worker registers a process, heartbeats for it (recording the heartbeats
//!   the leader answered), and, when its configured life ends, leaves or crashes (stops
//!   heartbeating without a word, recorded for the crash-removal checker).
//!
//! When its machine restarts, a worker comes back as a new client (a new id).

use crate::trace::{CrashRec, HEARTBEAT_PRECISION_MS, HeartbeatRec, KvCall, KvOp, KvOutput, OpEnd};
use crate::world::{SharedTrace, SimClock, TOKEN, WorldConfig};
use madsim::rand::{Rng, thread_rng};
use roster_kernel::{
    Command, CommandError, Labels, MemberId, ProcessId, ProcessInfo, Reply, ResourceAverage, ServerId,
};
use roster_real::client::{Client, ClientError, ClientOptions};
use roster_real::net::wire::Consistency;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    Kv,
    Process,
}

/// Everything a worker machine's init needs; cloned for every (re)start.
#[derive(Clone)]
pub struct WorkerCtx {
    pub index: u64,
    pub kind: WorkerKind,
    pub endpoints: Vec<String>,
    pub clock: SimClock,
    pub trace: SharedTrace,
    pub quiet: Arc<AtomicBool>,
    pub member: Arc<Mutex<Option<ProcessId>>>,
    pub config: WorldConfig,
    pub incarnation: Arc<AtomicU64>,
}

/// Client ids: worker index times this, plus the incarnation.
const CLIENT_ID_STRIDE: u64 = 1_000;

/// A worker machine's init future; never returns (a madsim node ends when it does).
pub async fn run(ctx: WorkerCtx) {
    let incarnation = ctx.incarnation.fetch_add(1, Ordering::Relaxed);
    let client_id = ctx.index * CLIENT_ID_STRIDE + incarnation;
    let options = ClientOptions {
        endpoints: ctx.endpoints.clone(),
        token: TOKEN.into(),
        connect_timeout_ms: 500,
        request_timeout_ms: 1_000,
    };
    let seed = 0x5eed_0000_0000 ^ client_id;
    match Client::connect(options, seed).await {
        Ok(client) => match ctx.kind {
            WorkerKind::Kv => kv_loop(&ctx, client_id, &client).await,
            WorkerKind::Process => process_loop(&ctx, &client).await,
        },
        Err(e) => {
            let now = ctx.clock.now_ms();
            ctx.trace.lock().record_fault(now, format!("worker {} could not make a client: {e}", ctx.index));
        }
    }
    std::future::pending::<()>().await;
}

async fn sleep_ms(ms: u64) {
    madsim::time::sleep(Duration::from_millis(ms)).await;
}

async fn kv_loop(ctx: &WorkerCtx, client_id: u64, client: &Client) {
    let mut commands = 0u64;
    // The last value this client saw per key: what its compare-and-sets expect.
    let mut last_seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    loop {
        let think = thread_rng().gen_range(ctx.config.kv_think_ms.clone());
        sleep_ms(think).await;
        if ctx.quiet.load(Ordering::Relaxed) {
            return;
        }
        let (roll, key) = {
            let mut rng = thread_rng();
            (rng.gen_range(0..100u32), format!("k{}", rng.gen_range(0..ctx.config.keys)))
        };
        if roll < 35 {
            let invoked = ctx.clock.now_ms();
            let index = ctx.trace.lock().record_op_invoked(KvOp {
                client: client_id,
                command_seq: None,
                queue_seq: None,
                key: key.clone(),
                call: KvCall::Get,
                invoked_at_ms: invoked,
                end: OpEnd::Pending,
            });
            let result = client.kv_get(key.clone(), Consistency::Linearizable).await;
            let at_ms = ctx.clock.now_ms();
            let end = match result {
                Ok(v) => {
                    last_seen.insert(key, v.clone());
                    OpEnd::Returned { at_ms, output: KvOutput::Value(v) }
                }
                Err(e) => OpEnd::Failed { at_ms, reason: e.to_string() },
            };
            ctx.trace.lock().record_op_end(index, end);
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
        let invoked = ctx.clock.now_ms();
        let pending = match client.submit(command).await {
            Ok(p) => p,
            Err(e) => {
                // Not queued: it cannot take effect. Recorded as refused (left out of the
                // history), with the reason in the trace.
                let at_ms = ctx.clock.now_ms();
                {
                    let mut trace = ctx.trace.lock();
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
                sleep_ms(100).await;
                continue;
            }
        };
        commands = seq;
        let index = ctx.trace.lock().record_op_invoked(KvOp {
            client: client_id,
            command_seq: Some(seq),
            queue_seq: Some(pending.seq()),
            key: key.clone(),
            call: call.clone(),
            invoked_at_ms: invoked,
            end: OpEnd::Pending,
        });
        let answer = pending.await;
        let at_ms = ctx.clock.now_ms();
        let end = match answer {
            Ok(Ok(Reply::Done { .. })) => {
                let written = match &call {
                    KvCall::Put { value } => Some(value.clone()),
                    _ => None,
                };
                last_seen.insert(key, written);
                OpEnd::Returned { at_ms, output: KvOutput::Done }
            }
            Ok(Ok(Reply::Cas { swapped, current, .. })) => {
                let now_holds = match (&call, swapped) {
                    (KvCall::Cas { new, .. }, true) => new.clone(),
                    _ => current.clone(),
                };
                last_seen.insert(key, now_holds);
                OpEnd::Returned { at_ms, output: KvOutput::Cas { swapped, current } }
            }
            Ok(Ok(other)) => OpEnd::Failed { at_ms, reason: format!("unexpected reply {other:?}") },
            Ok(Err(refusal)) => OpEnd::Refused { at_ms, reason: refusal.to_string() },
            Err(e) => OpEnd::Failed { at_ms, reason: e.to_string() },
        };
        ctx.trace.lock().record_op_end(index, end);
    }
}

async fn process_loop(ctx: &WorkerCtx, client: &Client) {
    let host = ServerId(ctx.index % ctx.config.servers + 1);
    let interval_ms = ctx.config.heartbeat_interval_ms;
    let mut lives = 0u64;
    loop {
        if ctx.quiet.load(Ordering::Relaxed) {
            return;
        }
        lives += 1;
        let info = ProcessInfo {
            name: format!("worker-{}-{lives}", ctx.index),
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
                // Host not registered yet, or no leader: try again a little later.
                sleep_ms(300).await;
                continue;
            }
        };
        *ctx.member.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        let member = MemberId::Process(id);
        let life_ms = ctx.config.process_life_ms.clone().map(|r| thread_rng().gen_range(r));
        let born = ctx.clock.now_ms();
        let mut next_beat = born;
        let lost = loop {
            let now = ctx.clock.now_ms();
            if next_beat > now {
                sleep_ms(next_beat - now).await;
            }
            next_beat += interval_ms;
            let now = ctx.clock.now_ms();
            if ctx.quiet.load(Ordering::Relaxed) || life_ms.is_some_and(|l| now >= born + l) {
                break false;
            }
            let beat = client.heartbeat(member, None);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(interval_ms);
            match roster_real::rt::Timeout::new(beat, deadline).await {
                Ok(Ok(())) => {
                    let at_ms = ctx.clock.now_ms();
                    if at_ms - now <= HEARTBEAT_PRECISION_MS {
                        ctx.trace.lock().record_heartbeat(HeartbeatRec { member, at_ms });
                    }
                }
                Ok(Err(ClientError::UnknownMember(_))) => break true,
                Ok(Err(_)) | Err(_) => {}
            }
            let now = ctx.clock.now_ms();
            if next_beat < now {
                next_beat = now;
            }
        };
        *ctx.member.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if lost {
            continue;
        }
        if ctx.quiet.load(Ordering::Relaxed) {
            // Stays registered and silent: the quiet phase judges its expiry as a crash.
            let at_ms = ctx.clock.now_ms();
            ctx.trace.lock().record_crash(CrashRec { member, at_ms, revived_at_ms: None });
            return;
        }
        if thread_rng().gen_bool(0.5) {
            let at_ms = ctx.clock.now_ms();
            ctx.trace.lock().record_crash(CrashRec { member, at_ms, revived_at_ms: None });
        } else {
            match client.execute(Command::DeregisterProcess { id, exit_status: Some(0) }).await {
                Ok(_) | Err(ClientError::Refused(CommandError::UnknownMember(_))) => {}
                Err(e) => {
                    let now = ctx.clock.now_ms();
                    ctx.trace.lock().record_fault(now, format!("process {id} could not deregister: {e}"));
                }
            }
        }
    }
}
