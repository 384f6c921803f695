//! The workers: each runs on its own simulated machine with the real client library.
//!
//! - A key/value worker issues puts (every value unique: `c<client>-<n>`), linearizable
//!   gets, compare-and-sets and deletes on a few shared keys, one at a time, and records
//!   each as an invocation and an end for the linearizability and client checkers.
//! - A process worker registers a process and heartbeats for it with the shipped
//!   `ProcessHandle` (recording, through its observer hook, the heartbeats the leader
//!   answered), and, when its configured life ends, leaves or crashes (abandons the
//!   handle: heartbeats stop without a word, recorded for the crash-removal checker).
//!
//! When its machine restarts, a worker comes back as a new client (a new id).

use crate::setup::{SimClock, TOKEN, WorldConfig};
use crate::trace::SharedTrace;
use crate::trace::{CrashRec, HEARTBEAT_PRECISION_MS, HeartbeatRec, KvCall, KvOp, KvOutput, OpEnd};
use madsim::rand::{Rng, thread_rng};
use roster_kernel::{Command, Labels, MemberId, ProcessId, ProcessInfo, Reply, ResourceAverage, ServerId};
use roster_real::client::{Client, ClientOptions, ProcessHandle};
use roster_real::net::wire::Consistency;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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
            kv_read(ctx, client_id, client, key, &mut last_seen).await;
            continue;
        }
        let seq = commands + 1;
        let (command, call) = kv_write(roll, &key, format!("c{client_id}-{seq}"), &last_seen);
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
        let (end, now_holds) = crate::trace::kv_op_end(&call, answer, at_ms);
        if let Some(value) = now_holds {
            last_seen.insert(key, value);
        }
        ctx.trace.lock().record_op_end(index, end);
    }
}

/// A linearizable read of `key`, recorded in the history; what it saw is what this
/// client's next compare-and-set on the key expects.
async fn kv_read(
    ctx: &WorkerCtx,
    client_id: u64,
    client: &Client,
    key: String,
    last_seen: &mut BTreeMap<String, Option<String>>,
) {
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
}

/// The write a `roll` of 35..100 picks: a put (40 %), a compare-and-set against the last
/// value seen that swaps (16 %) or deletes (2 %), or a delete (7 %).
fn kv_write(roll: u32, key: &str, value: String, last_seen: &BTreeMap<String, Option<String>>) -> (Command, KvCall) {
    if roll < 75 {
        (Command::KvPut { key: key.to_string(), value: value.clone() }, KvCall::Put { value })
    } else if roll < 93 {
        let expected = last_seen.get(key).cloned().flatten();
        let new = if roll < 91 { Some(value) } else { None };
        (
            Command::KvCas { key: key.to_string(), expected: expected.clone(), new: new.clone() },
            KvCall::Cas { expected, new },
        )
    } else {
        (Command::KvDelete { key: key.to_string() }, KvCall::Delete)
    }
}

/// Why one registration of a process worker ended.
enum LifeEnd {
    /// The cluster no longer knows the process (expired, or removed): register anew.
    Lost,
    /// The workload went quiet: the process stays registered and falls silent.
    Quiet,
    /// Its configured life is over: it leaves or crashes.
    Over,
}

/// Each registration runs the shipped `ProcessHandle` (the heartbeat loop of `roster run`),
/// whose acknowledged heartbeats are recorded through its observer hook.
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
        let life_ms = ctx.config.process_life_ms.clone().map(|r| thread_rng().gen_range(r));
        let born = ctx.clock.now_ms();
        let mut handle = ProcessHandle::start_observed(client.clone(), id, interval_ms, heartbeat_recorder(ctx));
        let end = live(ctx, &mut handle, life_ms.map(|l| born + l), interval_ms).await;
        *ctx.member.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match end {
            // Heartbeats have stopped, and a lost handle deregisters nothing when dropped.
            LifeEnd::Lost => continue,
            LifeEnd::Quiet => {
                // Stays registered and silent: the quiet phase judges its expiry as a crash.
                crash(ctx, handle).await;
                return;
            }
            LifeEnd::Over => {
                let crashes = thread_rng().gen_bool(0.5);
                if crashes { crash(ctx, handle).await } else { leave(ctx, handle).await }
            }
        }
    }
}

/// Records every heartbeat the leader acknowledged within `HEARTBEAT_PRECISION_MS` of its
/// sending, at the moment of the acknowledgement (the observer runs right then), so it
/// reached the leader in `[at_ms - HEARTBEAT_PRECISION_MS, at_ms]`.
fn heartbeat_recorder(ctx: &WorkerCtx) -> impl FnMut(MemberId, Instant, Instant) + Send + 'static {
    let (clock, trace) = (ctx.clock, ctx.trace.clone());
    let precision = Duration::from_millis(HEARTBEAT_PRECISION_MS);
    move |member, sent_at, acked_at| {
        if acked_at.saturating_duration_since(sent_at) <= precision {
            trace.lock().record_heartbeat(HeartbeatRec { member, at_ms: clock.now_ms() });
        }
    }
}

/// Waits, while the handle heartbeats, for the cluster to forget the process, the quiet
/// phase, or `dies_at_ms`. The world sets the quiet flag without a wake-up: it is looked
/// at every `poll_ms` (the heartbeat interval, so a process falls silent within one).
async fn live(ctx: &WorkerCtx, handle: &mut ProcessHandle, dies_at_ms: Option<u64>, poll_ms: u64) -> LifeEnd {
    loop {
        if ctx.quiet.load(Ordering::Relaxed) {
            return LifeEnd::Quiet;
        }
        let now = ctx.clock.now_ms();
        let wait_ms = match dies_at_ms {
            Some(at) if at <= now => return LifeEnd::Over,
            Some(at) => (at - now).min(poll_ms),
            None => poll_ms,
        };
        tokio::select! {
            biased;
            _ = handle.lost() => return LifeEnd::Lost,
            () = sleep_ms(wait_ms) => {}
        }
    }
}

/// Stops heartbeating and deregisters, as `roster run` does when its program exits 0.
async fn leave(ctx: &WorkerCtx, handle: ProcessHandle) {
    let id = handle.id();
    if let Err(e) = handle.close(Some(0)).await {
        let now = ctx.clock.now_ms();
        ctx.trace.lock().record_fault(now, format!("process {id} could not deregister: {e}"));
    }
}

/// Stops heartbeating without a word (no deregistration) and records the crash once the
/// heartbeats have stopped.
async fn crash(ctx: &WorkerCtx, handle: ProcessHandle) {
    let member = handle.member();
    handle.abandon().await;
    let at_ms = ctx.clock.now_ms();
    ctx.trace.lock().record_crash(CrashRec { member, at_ms, revived_at_ms: None });
}
