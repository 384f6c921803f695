//! The simulated world: server machines running `roster_real::node::Node` on a `MemDisk`
//! that outlives their crashes, worker machines running the real client library, the
//! fault injector, and the sampler that watches every node for the checkers.
//!
//! Every machine is a madsim node with its own IP. All randomness (fault choices, what a
//! crash keeps of unsynced writes, workload choices) comes from madsim's seeded RNG, so a
//! run is a function of its seed. Build and call it inside a madsim `Runtime::block_on`.

use crate::disk_model::{FailOn, FaultSwitch, SimDiskModel};
use crate::probe::SimProbe;
pub use crate::setup::{PEER_KEY, SERVER_PORT, SimClock, TOKEN, WorldConfig, server_addr, server_ip};
pub use crate::trace::SharedTrace;
use crate::trace::{
    AppliedEvent, AppliedRec, CommitRec, CommitSeen, CrashRec, LeaderSeen, MassSilence, ShortSilence, Trace, fnv1a,
};
use crate::workload::{self, WorkerCtx, WorkerKind};
use madsim::net::NetSim;
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::{Handle, NodeHandle};
use openraft::ServerState;
use openraft::storage::RaftLogReader;
use openraft_rt::WatchReceiver;
use roster_kernel::{Departure, EventKind, Limits, MemberId, ProcessId};
use roster_real::config::NodeConfig;
use roster_real::node::Node;
use roster_real::server::Raft;
use roster_real::storage::{LogReader, MemDisk, SharedState, StorageOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A commit seen by a sampler whose previous sample is this far behind is hashed only for
/// its last this-many entries (a restarted node replays thousands at once).
const MAX_BACKFILL_ENTRIES: u64 = 256;

fn worker_ip(index: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (index / 250) as u8, (index % 250) as u8 + 1))
}

/// What the sampler reads of a running server.
#[derive(Clone)]
struct NodeView {
    incarnation: u64,
    /// For the leader's expiry brake (`Api::expiry_status`).
    api: Arc<roster_real::server::api::Api>,
    raft: Raft,
    shared: Arc<SharedState>,
    log_reader: LogReader,
}

type Views = Arc<Mutex<BTreeMap<u64, NodeView>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct ServerSlot {
    handle: NodeHandle,
    disk: MemDisk,
    /// The disk's fault switches (stalls, EIO).
    faults: FaultSwitch,
    /// Set by the node's machine when its Raft stopped on a fatal error (a fail-stop on a
    /// failed write or fsync); the world then powers the machine off (`reap_stopped`).
    stopped: Arc<AtomicBool>,
    incarnation: Arc<AtomicU64>,
    up: bool,
    paused: bool,
}

/// A membership change asked of the cluster by the admin machine.
#[derive(Clone, Copy, Debug)]
enum AdminOp {
    Add,
    Remove,
    Replace,
}

/// A worker's machine and what the world needs to know of it.
struct WorkerSlot {
    handle: NodeHandle,
    kind: WorkerKind,
    /// The process a process worker is registered as right now.
    member: Arc<Mutex<Option<ProcessId>>>,
    paused_at_ms: Option<u64>,
}

/// Per-node memory of the sampler.
#[derive(Default)]
struct SamplerNode {
    incarnation: u64,
    last_hashed_index: Option<u64>,
    seen_revision: u64,
    last_state_hash_ms: Option<u64>,
    last_state_hash_index: Option<u64>,
}

pub struct World {
    pub config: WorldConfig,
    handle: Handle,
    clock: SimClock,
    trace: SharedTrace,
    views: Views,
    servers: Vec<ServerSlot>,
    workers: Vec<WorkerSlot>,
    /// A machine with an address for the world's own admin calls (the supervisor has none).
    admin: NodeHandle,
    /// Workers stop starting operations once set (the quiet phase).
    quiet: Arc<AtomicBool>,
    clogged_links: BTreeSet<(u64, u64)>,
    clogged_nodes: BTreeSet<u64>,
    /// Workers cut off from everyone (`clog_workers`), by index.
    clogged_workers: BTreeSet<usize>,
    paused_workers: BTreeSet<usize>,
    sampler: Option<madsim::task::JoinHandle<()>>,
}

impl World {
    /// Creates every machine and starts the sampler. Call inside `Runtime::block_on`.
    pub fn start(config: WorldConfig) -> World {
        let handle = Handle::current();
        let clock = SimClock::start();
        let trace = SharedTrace::default();
        trace.lock().record_origin(roster_real::rt::clock::unix_ms());
        let views: Views = Arc::default();
        let quiet = Arc::new(AtomicBool::new(false));
        let base = config.base_latency_ms.clone();
        NetSim::current().update_config(|c| {
            c.packet_loss_rate = 0.0;
            c.send_latency = Duration::from_millis(base.start)..Duration::from_millis(base.end);
        });
        let peers: BTreeMap<u64, String> = (1..=config.servers).map(|id| (id, server_addr(id))).collect();
        let mut servers = Vec::new();
        for id in 1..=config.servers + config.spare_servers {
            let initial = if id <= config.servers { peers.clone() } else { BTreeMap::new() };
            servers.push(start_server(&handle, &config, id, initial, clock, &trace, &views));
        }
        let endpoints: Vec<String> = (1..=config.servers).map(server_addr).collect();
        let mut workers = Vec::new();
        let kinds = (0..config.kv_workers)
            .map(|_| WorkerKind::Kv)
            .chain((0..config.process_workers).map(|_| WorkerKind::Process));
        for (index, kind) in kinds.enumerate() {
            let member = Arc::new(Mutex::new(None));
            let ctx = WorkerCtx {
                index: index as u64,
                kind,
                endpoints: endpoints.clone(),
                clock,
                trace: trace.clone(),
                quiet: quiet.clone(),
                member: member.clone(),
                config: config.clone(),
                incarnation: Arc::new(AtomicU64::new(0)),
            };
            let node = handle
                .create_node()
                .name(format!("worker-{index}"))
                .ip(worker_ip(index as u64))
                .init(move || workload::run(ctx.clone()))
                .build();
            workers.push(WorkerSlot { handle: node, kind, member, paused_at_ms: None });
        }
        let admin = handle.create_node().name("admin").ip(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))).build();
        let sampler = madsim::task::spawn(sample_loop(
            views.clone(),
            trace.clone(),
            clock,
            config.sample_every_ms,
            config.state_hash_every_ms,
        ));
        World {
            config,
            handle,
            clock,
            trace,
            views,
            servers,
            workers,
            admin,
            quiet,
            clogged_links: BTreeSet::new(),
            clogged_nodes: BTreeSet::new(),
            clogged_workers: BTreeSet::new(),
            paused_workers: BTreeSet::new(),
            sampler: Some(sampler),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn trace(&self) -> &SharedTrace {
        &self.trace
    }

    /// Sleeps `ms` of simulated time.
    pub async fn sleep_ms(&self, ms: u64) {
        madsim::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Ids of the initial voters.
    pub fn voter_ids(&self) -> Vec<u64> {
        (1..=self.config.servers).collect()
    }

    pub fn process_worker_indexes(&self) -> Vec<usize> {
        (0..self.workers.len()).filter(|i| self.workers[*i].kind == WorkerKind::Process).collect()
    }

    fn note(&self, what: String) {
        let now = self.now_ms();
        self.trace.lock().record_fault(now, what);
    }

    /// The server that leads the highest term seen right now, if any.
    pub fn leader(&self) -> Option<u64> {
        let views = lock(&self.views);
        views
            .iter()
            .filter(|(id, _)| self.slot(**id).is_some_and(|s| s.up && !s.paused))
            .filter_map(|(id, v)| {
                let m = v.raft.metrics();
                let m = m.borrow_watched();
                (m.state == ServerState::Leader).then_some((m.current_term, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// A uniformly random voter id.
    pub fn random_voter(&self) -> u64 {
        thread_rng().gen_range(1..=self.config.servers)
    }

    /// The leader, or a random voter when none is known.
    pub fn leader_or_random(&self) -> u64 {
        self.leader().unwrap_or_else(|| self.random_voter())
    }

    fn slot(&self, id: u64) -> Option<&ServerSlot> {
        self.servers.get((id as usize).checked_sub(1)?)
    }

    fn slot_mut(&mut self, id: u64) -> &mut ServerSlot {
        &mut self.servers[id as usize - 1]
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.slot(id).is_some_and(|s| s.up)
    }

    /// Whether server `id`'s node has finished starting (its storage opened and, if it
    /// started empty with `--bootstrap`, its decision whether to form the cluster made) and
    /// has not stopped since.
    pub fn has_started(&self, id: u64) -> bool {
        self.is_up(id) && lock(&self.views).contains_key(&id)
    }

    // ---- network faults ----

    /// Cuts the links between servers `a` and `b` (both ways unless `one_way`: then only
    /// `a -> b`).
    pub fn cut(&mut self, a: u64, b: u64, one_way: bool) {
        self.clog_links(a, b, one_way);
        self.note(format!("cut {a} {} {b}", if one_way { "->" } else { "<->" }));
    }

    fn clog_links(&mut self, a: u64, b: u64, one_way: bool) {
        let net = NetSim::current();
        let (na, nb) = (self.slot(a).expect("server").handle.id(), self.slot(b).expect("server").handle.id());
        net.clog_link(na, nb);
        self.clogged_links.insert((a, b));
        if !one_way {
            net.clog_link(nb, na);
            self.clogged_links.insert((b, a));
        }
    }

    /// Splits the servers into `side` and the rest (`one_way`: only `side -> rest`).
    pub fn partition(&mut self, side: &[u64], one_way: bool) {
        let rest: Vec<u64> = (1..=self.servers.len() as u64).filter(|id| !side.contains(id)).collect();
        for &a in side {
            for &b in &rest {
                self.clog_links(a, b, one_way);
            }
        }
        self.note(format!(
            "partition {side:?} | {rest:?}{}",
            if one_way { " (one-way: first side cannot send)" } else { "" }
        ));
    }

    /// Clogs a server's every link, clients included.
    pub fn clog_server(&mut self, id: u64) {
        let node = self.slot(id).expect("server").handle.id();
        NetSim::current().clog_node(node);
        self.clogged_nodes.insert(id);
        self.note(format!("clog server {id}"));
    }

    /// Cuts the workers at `indexes` off from everyone (a partition of a share of the
    /// members): their processes fall silent at the leader while they go on running.
    pub fn clog_workers(&mut self, indexes: &[usize]) {
        let net = NetSim::current();
        for &i in indexes {
            net.clog_node(self.workers[i].handle.id());
            self.clogged_workers.insert(i);
        }
        self.note(format!("clog workers {indexes:?}"));
    }

    /// Reconnects the workers at `indexes`.
    pub fn unclog_workers(&mut self, indexes: &[usize]) {
        let net = NetSim::current();
        for &i in indexes {
            if self.clogged_workers.remove(&i) {
                net.unclog_node(self.workers[i].handle.id());
            }
        }
        self.note(format!("unclog workers {indexes:?}"));
    }

    /// Sets latency and packet loss for every link.
    pub fn set_network(&mut self, latency_ms: Range<u64>, loss_rate: f64) {
        NetSim::current().update_config(|c| {
            c.packet_loss_rate = loss_rate;
            c.send_latency = Duration::from_millis(latency_ms.start)..Duration::from_millis(latency_ms.end);
        });
        self.note(format!("network latency {latency_ms:?} ms, loss {:.1}%", loss_rate * 100.0));
    }

    /// Restores every link and the base network, and records it; dead, paused and
    /// stopped servers stay as they are (`heal_all` undoes those too).
    pub fn reconnect_all(&mut self) {
        self.heal_network();
        self.note("heal the network only".into());
    }

    /// Restores every link and the base network.
    pub fn heal_network(&mut self) {
        let net = NetSim::current();
        for &(a, b) in &self.clogged_links {
            net.unclog_link(self.servers[a as usize - 1].handle.id(), self.servers[b as usize - 1].handle.id());
        }
        for &id in &self.clogged_nodes {
            net.unclog_node(self.servers[id as usize - 1].handle.id());
        }
        for &i in &self.clogged_workers {
            net.unclog_node(self.workers[i].handle.id());
        }
        self.clogged_workers.clear();
        self.clogged_links.clear();
        self.clogged_nodes.clear();
        let base = self.config.base_latency_ms.clone();
        net.update_config(|c| {
            c.packet_loss_rate = 0.0;
            c.send_latency = Duration::from_millis(base.start)..Duration::from_millis(base.end);
        });
    }

    // ---- machine faults ----

    pub fn pause_server(&mut self, id: u64) {
        let slot = self.slot_mut(id);
        if !slot.up || slot.paused {
            return;
        }
        slot.paused = true;
        Handle::current().pause(slot.handle.id());
        self.note(format!("pause server {id}"));
    }

    pub fn resume_server(&mut self, id: u64) {
        let slot = self.slot_mut(id);
        if !slot.paused {
            return;
        }
        slot.paused = false;
        Handle::current().resume(slot.handle.id());
        self.note(format!("resume server {id}"));
    }

    /// Kills a server (power loss): its disk keeps what was synced, and of what was not,
    /// what a page cache might have written back (`MemDisk::power_loss`: any subset of
    /// pages, each at any version since the last sync, torn between 512-byte sectors; any
    /// prefix of the name changes), drawn from the run's seed.
    pub fn kill_server(&mut self, id: u64) {
        if !self.is_up(id) {
            return;
        }
        lock(&self.views).remove(&id);
        let now = self.now_ms();
        let slot = self.slot_mut(id);
        slot.up = false;
        slot.paused = false;
        Handle::current().kill(slot.handle.id());
        let loss = slot.disk.power_loss(thread_rng().r#gen::<u64>());
        let mut trace = self.trace.lock();
        trace.record_commit(CommitRec { node: id, at_ms: now, event: CommitSeen::Restarted });
        trace.record_fault(
            now,
            format!(
                "kill server {id} (power loss: {} unsynced name changes lost; of {} unsynced pages in {} files, {} lost, {} torn; {} file lengths lost)",
                loss.dir_ops_lost,
                loss.pages_unsynced,
                loss.files_unsynced,
                loss.pages_lost,
                loss.pages_torn,
                loss.lengths_lost
            ),
        );
    }

    // ---- disk faults ----

    /// Server `id`'s fsyncs stall for 0.2–3 s now and then (`disk_model`) until healed.
    pub fn slow_disk(&mut self, id: u64) {
        self.slot_mut(id).faults.lock().slow = true;
        self.note(format!("slow disk on server {id}"));
    }

    /// Server `id`'s next write (or next fsync) fails with EIO; its log must fail-stop.
    pub fn fail_disk(&mut self, id: u64, on: FailOn) {
        {
            let mut f = self.slot_mut(id).faults.lock();
            f.fail = Some(on);
            f.failed_op = None;
        }
        self.note(format!("disk of server {id} fails its {on:?}"));
    }

    /// Every disk back to its normal latency, no EIO armed.
    pub fn heal_disks(&mut self) {
        for slot in &self.servers {
            let mut f = slot.faults.lock();
            f.slow = false;
            f.fail = None;
        }
    }

    /// Whether server `id`'s node stopped itself (fail-stop) and awaits `reap_stopped`.
    pub fn is_stopped(&self, id: u64) -> bool {
        self.slot(id).is_some_and(|s| s.stopped.load(Ordering::Relaxed))
    }

    /// Powers off every server whose node fail-stopped (an operator, or a supervisor,
    /// reboots a machine whose disk returned EIO): what its disk keeps is what a power
    /// loss keeps. `heal_all` (or `restart_server`) brings it back.
    pub fn reap_stopped(&mut self) {
        for id in 1..=self.servers.len() as u64 {
            if self.is_stopped(id) && self.is_up(id) {
                let op = self.slot(id).and_then(|s| s.faults.lock().failed_op.take());
                self.note(format!("server {id} fail-stopped (EIO on {op:?}): power-cycle it"));
                self.kill_server(id);
            }
            self.slot(id).expect("server").stopped.store(false, Ordering::Relaxed);
        }
    }

    /// Waits (up to `max_wait_ms`) for the first moment server `id`'s disk has had an fsync
    /// in flight for at least `min_age_ms` (0: any fsync in flight), so that a power loss
    /// then lands between "written" and "durable". While no fsync is in flight it polls every
    /// 100 µs (an fsync takes 0.2–2 ms at the median; a stall, seconds); once one is, it
    /// sleeps until that one is old enough. Returns whether it found one.
    pub async fn await_fsync_in_flight(&mut self, id: u64, min_age_ms: u64, max_wait_ms: u64) -> bool {
        let until = self.now_ms() + max_wait_ms;
        let min_age = Duration::from_millis(min_age_ms);
        let age = |w: &World| if w.is_up(id) { w.slot(id).and_then(|s| s.disk.fsync_in_flight_for()) } else { None };
        while self.is_up(id) && self.now_ms() < until {
            // An fsync in flight but younger than wanted: sleep until it would be old
            // enough (it may complete meanwhile); none: look again shortly.
            let step = match age(self) {
                Some(a) if a >= min_age => break,
                Some(a) => min_age - a,
                None => Duration::from_micros(100),
            };
            madsim::time::sleep(step).await;
        }
        let hit = age(self).is_some_and(|a| a >= min_age);
        if hit {
            self.note(format!("server {id} has an fsync in flight"));
        }
        hit
    }

    /// Kills server `id` (as `kill_server`) at the first moment within `max_wait_ms` that
    /// its disk has an fsync in flight; at the end of the wait if none comes.
    pub async fn kill_server_mid_fsync(&mut self, id: u64, max_wait_ms: u64) {
        self.await_fsync_in_flight(id, 0, max_wait_ms).await;
        self.kill_server(id);
    }

    pub fn restart_server(&mut self, id: u64) {
        let slot = self.slot_mut(id);
        if slot.up {
            return;
        }
        slot.up = true;
        slot.incarnation.fetch_add(1, Ordering::Relaxed);
        Handle::current().restart(slot.handle.id());
        self.note(format!("restart server {id}"));
    }

    /// Pauses a worker's machine; its registered process falls silent.
    pub fn pause_worker(&mut self, index: usize) {
        let now = self.now_ms();
        let w = &mut self.workers[index];
        if w.paused_at_ms.is_some() {
            return;
        }
        w.paused_at_ms = Some(now);
        Handle::current().pause(w.handle.id());
        self.paused_workers.insert(index);
        let member = *lock(&w.member);
        self.note(format!("pause worker {index} (process {member:?})"));
    }

    /// Resumes a paused worker and records what its silence was: shorter than the
    /// heartbeat timeout minus one interval (it must not be expired) or longer than
    /// timeout plus two intervals (it must be, as if crashed). Pauses in between prove
    /// nothing either way and are recorded as neither.
    pub fn resume_worker(&mut self, index: usize) {
        let now = self.now_ms();
        let (interval, timeout) = (self.config.heartbeat_interval_ms, self.config.heartbeat_timeout_ms);
        let w = &mut self.workers[index];
        let Some(from) = w.paused_at_ms.take() else { return };
        Handle::current().resume(w.handle.id());
        self.paused_workers.remove(&index);
        let member = *lock(&w.member);
        if let Some(p) = member {
            let member = MemberId::Process(p);
            let silent = now - from;
            let mut trace = self.trace.lock();
            if silent + interval < timeout {
                trace.record_short_silence(ShortSilence { member, from_ms: from, until_ms: now });
            } else if silent > timeout + 2 * interval {
                trace.record_crash(CrashRec { member, at_ms: from, revived_at_ms: Some(now) });
            }
        }
        self.note(format!("resume worker {index}"));
    }

    /// Records that the workers at `indexes` were silent together from `from_ms` to now
    /// (cut off, and reconnected already) as a mass silence the expiry brake must cover.
    pub fn record_mass_silence(&mut self, indexes: &[usize], from_ms: u64) {
        let now = self.now_ms();
        let members = indexes.iter().filter_map(|i| *lock(&self.workers[*i].member)).map(MemberId::Process).collect();
        self.trace.lock().record_mass_silence(MassSilence { members, from_ms, until_ms: now });
    }

    /// Undoes every fault: links, network, pauses, dead servers. Records the heal.
    pub fn heal_all(&mut self) {
        self.heal_network();
        self.heal_disks();
        self.reap_stopped();
        for id in 1..=self.servers.len() as u64 {
            self.resume_server(id);
            let spare = id > self.config.servers;
            if !spare || self.slot(id).is_some_and(|s| s.incarnation.load(Ordering::Relaxed) > 0) {
                self.restart_server(id);
            }
        }
        for index in self.paused_workers.clone() {
            self.resume_worker(index);
        }
        let now = self.now_ms();
        let mut trace = self.trace.lock();
        trace.record_fault(now, "heal everything".into());
        trace.record_heal(now);
    }

    /// Asks the cluster (through a fresh client on the admin machine) to add spare server
    /// `id` as a voter.
    pub async fn add_voter(&mut self, id: u64) -> Result<(), String> {
        let r = self.admin_call(id, true).await;
        self.note(format!("add node {id} as voter: {r:?}"));
        r
    }

    pub async fn remove_voter(&mut self, id: u64) -> Result<(), String> {
        let r = self.admin_call(id, false).await;
        self.note(format!("remove voter {id}: {r:?}"));
        r
    }

    /// Asks the cluster to bring back voter `id` after its disk was wiped (`member replace`).
    pub async fn replace_voter(&mut self, id: u64) -> Result<(), String> {
        let r = self.admin(id, AdminOp::Replace).await;
        self.note(format!("replace voter {id}: {r:?}"));
        r
    }

    /// Empties the disk of server `id`, which must be down: a disk lost or replaced.
    pub fn wipe_disk(&mut self, id: u64) {
        use roster_real::storage::Disk;
        assert!(!self.is_up(id), "wipe the disk of a server that is down");
        let now = self.now_ms();
        let disk = &self.slot_mut(id).disk;
        let names = disk.list().expect("list a simulated disk");
        for name in &names {
            disk.remove(name).expect("remove from a simulated disk");
        }
        disk.sync_dir().expect("sync a simulated disk");
        disk.complete_in_flight();
        self.trace.lock().record_fault(now, format!("wipe the disk of server {id} ({} files)", names.len()));
    }

    async fn admin_call(&self, id: u64, add: bool) -> Result<(), String> {
        self.admin(id, if add { AdminOp::Add } else { AdminOp::Remove }).await
    }

    async fn admin(&self, id: u64, op: AdminOp) -> Result<(), String> {
        let endpoints = (1..=self.config.servers).map(server_addr).collect();
        let options = roster_real::client::ClientOptions {
            endpoints,
            token: TOKEN.into(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
        };
        let call = async move {
            let client =
                roster_real::client::Client::connect(options, 0xad41_0000 ^ id).await.map_err(|e| e.to_string())?;
            let r = match op {
                AdminOp::Add => client.add_node(id, server_addr(id)).await,
                AdminOp::Remove => client.remove_node(id).await,
                AdminOp::Replace => client.replace_node(id).await,
            };
            r.map_err(|e| e.to_string())
        };
        match self.admin.spawn(call).await {
            Ok(r) => r,
            Err(e) => Err(format!("admin task failed: {e}")),
        }
    }

    /// Stops the workload: no new operations; in-flight ones finish or stay pending.
    pub fn quiet(&self) {
        self.quiet.store(true, Ordering::Relaxed);
        self.note("workload quiet".into());
    }

    /// Ends the run: stops the sampler, records the final state of the most advanced live
    /// node, and returns the trace.
    pub fn finish(mut self) -> Trace {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        let now = self.now_ms();
        let (kv, applied) = {
            let views = lock(&self.views);
            let best = views.values().max_by_key(|v| v.shared.read().last_applied.map_or(0, |l| l.index));
            match best {
                Some(v) => {
                    let st = v.shared.read();
                    let kv =
                        st.kernel.kv_range("", None, u32::MAX).map(|(k, v)| (k.to_string(), v.to_string())).collect();
                    (kv, st.last_applied.map_or(0, |l| l.index))
                }
                None => (BTreeMap::new(), 0),
            }
        };
        for w in &self.workers {
            self.handle.kill(w.handle.id());
        }
        for s in &self.servers {
            if s.up {
                self.handle.kill(s.handle.id());
            }
        }
        lock(&self.views).clear();
        let mut trace = self.trace.lock();
        trace.record_end(now, kv, applied);
        std::mem::take(&mut *trace)
    }
}

fn start_server(
    handle: &Handle,
    world: &WorldConfig,
    id: u64,
    peers: BTreeMap<u64, String>,
    clock: SimClock,
    trace: &SharedTrace,
    views: &Views,
) -> ServerSlot {
    let config = node_config(world, id, peers);
    let disk = MemDisk::new();
    let faults = FaultSwitch::default();
    if world.disk_model {
        disk.set_model(Box::new(SimDiskModel::new(thread_rng().r#gen::<u64>(), faults.clone())));
    }
    let stopped = Arc::new(AtomicBool::new(false));
    let incarnation = Arc::new(AtomicU64::new(0));
    let machine =
        Machine { id, disk: disk.clone(), clock, trace: trace.clone(), views: views.clone(), stopped: stopped.clone() };
    let inc = incarnation.clone();
    let spare = config.peers.is_empty();
    let node = handle
        .create_node()
        .name(format!("server-{id}"))
        .ip(server_ip(id))
        .init(move || run_server(machine.clone(), config.clone(), inc.load(Ordering::Relaxed)))
        .build();
    if spare {
        // A spare waits, powered off, until a scenario starts it.
        handle.kill(node.id());
    }
    ServerSlot { handle: node, disk, faults, stopped, incarnation, up: !spare, paused: false }
}

/// A simulated server's settings: the world's timings, the shipped defaults elsewhere.
fn node_config(world: &WorldConfig, id: u64, peers: BTreeMap<u64, String>) -> NodeConfig {
    NodeConfig {
        id,
        listen: server_addr(id),
        advertise: None,
        // HTTP is not in the simulator build; its handlers call code the simulator runs.
        http_listen: None,
        // The initial servers form the cluster; a spare (no peers) waits to be added.
        bootstrap: !peers.is_empty(),
        peers,
        data_dir: format!("/sim/node-{id}").into(),
        token: Some(TOKEN.into()),
        token_file: None,
        peer_key: Some(PEER_KEY.into()),
        peer_key_file: None,
        launch_user: None,
        name: Some(format!("server-{id}")),
        heartbeat_interval_ms: world.heartbeat_interval_ms,
        heartbeat_timeout_ms: world.heartbeat_timeout_ms,
        resource_window_ms: 10_000,
        raft_heartbeat_ms: world.raft_heartbeat_ms,
        election_timeout_min_ms: world.election_timeout_min_ms,
        election_timeout_max_ms: world.election_timeout_max_ms,
        snapshot_every_entries: world.snapshot_every_entries,
        // The smallest bound, so that a run's log (a few hundred KiB) asks for snapshots.
        snapshot_log_bytes: roster_real::config::MIN_SNAPSHOT_LOG_BYTES,
        state_budget_bytes: roster_kernel::DEFAULT_STATE_BUDGET_BYTES,
        launch_allow: Vec::new(),
        probe: "fixed:cpu=0,mem=0".into(),
        // TLS is not in the simulator build.
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
    }
}

/// What one simulated server machine keeps across power cycles.
#[derive(Clone)]
struct Machine {
    id: u64,
    disk: MemDisk,
    clock: SimClock,
    trace: SharedTrace,
    views: Views,
    stopped: Arc<AtomicBool>,
}

/// One power-on of a machine: the shipped node on its disk, watched until Raft stops on a
/// fatal error; then (or after a failed start) the machine idles until the world kills it.
async fn run_server(machine: Machine, config: NodeConfig, incarnation: u64) {
    let Machine { id, disk, clock, trace, views, stopped } = machine;
    let probe = Box::new(SimProbe::for_server(id - 1));
    // The shipped layout: 8 MiB segments, zero-filled and synced before use, so a
    // zeroed record header marks the end of the log.
    let options = StorageOptions::for_fs(Limits::default());
    match Node::start_with_storage(config, Arc::new(disk), probe, options).await {
        Ok(node) => {
            let view = NodeView {
                incarnation,
                api: node.api.clone(),
                raft: node.raft.clone(),
                shared: node.shared.clone(),
                log_reader: node.log_reader.clone(),
            };
            lock(&views).insert(id, view);
            // Raft stops on a fatal error (the log fail-stopped on EIO): the
            // node is out of the cluster until the world power-cycles it.
            let mut metrics = node.raft.metrics();
            let fatal = loop {
                if let Err(fatal) = &metrics.borrow_watched().running_state {
                    break fatal.to_string();
                }
                if metrics.changed().await.is_err() {
                    break "Raft's metrics channel closed".to_string();
                }
            };
            let now = clock.now_ms();
            trace.lock().record_fault(now, format!("server {id} stopped: {fatal}"));
            lock(&views).remove(&id);
            stopped.store(true, Ordering::Relaxed);
            // A madsim node ends when its init future returns: keep it (and
            // the node) alive until the world kills the machine.
            std::future::pending::<()>().await;
            drop(node);
        }
        Err(e) => {
            let now = clock.now_ms();
            trace.lock().record_start_failure(now, format!("server {id} failed to start: {e}"));
            std::future::pending::<()>().await;
        }
    }
}

/// Every `every_ms`: leader observations, newly committed entries (index, term, payload
/// hash), state hashes at applied indexes, and the applied event stream, of every live
/// node.
async fn sample_loop(views: Views, trace: SharedTrace, clock: SimClock, every_ms: u64, hash_every_ms: u64) {
    let mut nodes: BTreeMap<u64, SamplerNode> = BTreeMap::new();
    let mut highest_commit: Option<u64> = None;
    loop {
        madsim::time::sleep(Duration::from_millis(every_ms)).await;
        let now = clock.now_ms();
        let snapshot: Vec<(u64, NodeView)> = lock(&views).iter().map(|(id, v)| (*id, v.clone())).collect();
        for (id, view) in snapshot {
            let state = nodes.entry(id).or_default();
            if state.incarnation != view.incarnation {
                *state = SamplerNode { incarnation: view.incarnation, ..SamplerNode::default() };
            }
            let (is_leader, term, committed, quorum_ack_age_ms) = {
                let m = view.raft.metrics();
                let m = m.borrow_watched();
                let age = m.last_quorum_acked.as_ref().map(|at| openraft::Instant::elapsed(&**at).as_millis() as u64);
                (m.state == ServerState::Leader, m.current_term, m.local_committed, age)
            };
            let records = match committed {
                Some(c) => newly_committed(id, &view, state, c.index, now).await,
                None => Vec::new(),
            };
            let braking = is_leader && view.api.expiry_status().brake.is_some();
            let mut trace = trace.lock();
            if is_leader {
                trace.record_leader(LeaderSeen { node: id, term, at_ms: now, quorum_ack_age_ms });
            }
            if braking {
                trace.record_brake_seen(now);
            }
            for r in records {
                trace.record_commit(r);
            }
            if let Some(c) = committed
                && highest_commit.is_none_or(|h| c.index > h)
            {
                highest_commit = Some(c.index);
                trace.record_commit_time(now);
            }
            sample_applied(id, &view, state, &mut trace, now, hash_every_ms);
        }
    }
}

/// The entries node `id` committed since the sampler last looked (at most the last
/// `MAX_BACKFILL_ENTRIES`), each with its payload's hash.
async fn newly_committed(id: u64, view: &NodeView, state: &mut SamplerNode, commit: u64, now: u64) -> Vec<CommitRec> {
    let mut records = Vec::new();
    let from = match state.last_hashed_index {
        Some(i) => i + 1,
        None => commit.saturating_sub(MAX_BACKFILL_ENTRIES - 1),
    }
    .max(commit.saturating_sub(MAX_BACKFILL_ENTRIES - 1));
    if from <= commit {
        let mut reader = view.log_reader.clone();
        if let Ok(entries) = reader.try_get_log_entries(from..=commit).await {
            for e in entries {
                let bytes = postcard::to_allocvec(&e.payload).unwrap_or_default();
                records.push(CommitRec {
                    node: id,
                    at_ms: now,
                    event: CommitSeen::Committed {
                        index: e.log_id.index,
                        term: e.log_id.leader_id.term,
                        entry_hash: fnv1a(&bytes),
                    },
                });
            }
        }
        state.last_hashed_index = Some(commit);
    }
    records
}

/// Node `id`'s applied state: its hash at a new applied index (at most every
/// `hash_every_ms`), and the events applied since the sampler last looked.
fn sample_applied(id: u64, view: &NodeView, state: &mut SamplerNode, trace: &mut Trace, now: u64, hash_every_ms: u64) {
    let st = view.shared.read();
    let applied_index = st.last_applied.map(|l| l.index);
    if let Some(index) = applied_index
        && state.last_state_hash_index != Some(index)
        && state.last_state_hash_ms.is_none_or(|at| now >= at + hash_every_ms)
    {
        let hash = fnv1a(&st.kernel.snapshot());
        trace.record_applied(AppliedRec { node: id, at_ms: now, applied_index: index, state_hash: hash });
        state.last_state_hash_index = Some(index);
        state.last_state_hash_ms = Some(now);
    }
    match st.kernel.events_after(state.seen_revision) {
        Ok(events) => {
            let mut position = 0u32;
            for e in events {
                position = if e.revision == state.seen_revision { position + 1 } else { 0 };
                state.seen_revision = e.revision;
                trace.record_event(e.revision, position, applied_event(&e.kind), id, now);
            }
        }
        Err(_) => state.seen_revision = st.kernel.revision(),
    }
}

fn applied_event(kind: &EventKind) -> AppliedEvent {
    match kind {
        EventKind::KvPut { key, value } => AppliedEvent::KvPut { key: key.clone(), value: value.clone() },
        EventKind::KvDeleted { key } => AppliedEvent::KvDeleted { key: key.clone() },
        EventKind::Departed { member, tombstone } if matches!(tombstone.departure, Departure::Expired { .. }) => {
            AppliedEvent::Expired { member: *member, decided_unix_ms: tombstone.left_at_unix_ms }
        }
        _ => AppliedEvent::Other,
    }
}
