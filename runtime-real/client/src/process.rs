//! `ProcessHandle`: a registered process, kept alive by heartbeats to the leader until it
//! deregisters.
//!
//! When the cluster answers a heartbeat with `UnknownMember` (the leader expired the
//! process, or an operator deleted it), heartbeats stop and the handle reports it through
//! `lost()`. It does not re-register by itself: that would give the process a new id
//! behind its owner's back. The owner decides (`roster run` ends the program, or
//! registers again).
//!
//! An observer can learn of every heartbeat the leader acknowledges through the callback
//! given to [`ProcessHandle::start_observed`]; the simulator records them this way, so it
//! checks the very loop `roster run` runs. Without one, the loop does nothing extra.

use crate::api::{Client, unexpected_reply};
use crate::error::ClientError;
use crate::pool::Cluster;
use crate::wire::{ClientRequest, ClientResponse};
use roster_kernel::{Command, CommandError, MemberId, ProcessId, ProcessInfo, Reply, ResourceAverage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Told of each heartbeat the leader acknowledged: the member, when the heartbeat was sent,
/// and when its acknowledgement came back.
type AckObserver = Box<dyn FnMut(MemberId, Instant, Instant) + Send>;

pub struct ProcessHandle {
    id: ProcessId,
    client: Client,
    /// Dropping it stops the heartbeat task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    lost_rx: Option<oneshot::Receiver<ClientError>>,
    lost: Arc<AtomicBool>,
    /// The averages the next heartbeats carry (`report_resources`); none until set.
    resources: Arc<Mutex<Option<ResourceAverage>>>,
}

impl ProcessHandle {
    /// Registers a process and keeps it alive with a heartbeat every
    /// `heartbeat_interval_ms` until the handle is closed (or dropped).
    pub async fn register(
        client: &Client,
        info: ProcessInfo,
        heartbeat_interval_ms: u64,
    ) -> Result<ProcessHandle, ClientError> {
        if heartbeat_interval_ms == 0 {
            return Err(ClientError::InvalidOption {
                field: "heartbeat_interval_ms",
                value: "0".into(),
                reason: "set it to at least 1 (default 1000)".into(),
            });
        }
        match client.execute(Command::RegisterProcess { info }).await? {
            Reply::ProcessRegistered { id, .. } => Ok(ProcessHandle::start(client.clone(), id, heartbeat_interval_ms)),
            other => Err(unexpected_reply("ProcessRegistered", &other)),
        }
    }

    /// Starts heartbeating for `id` every `interval_ms`; the first goes at once.
    pub fn start(client: Client, id: ProcessId, interval_ms: u64) -> ProcessHandle {
        ProcessHandle::spawn(client, id, interval_ms, None)
    }

    /// Starts heartbeating, as `ProcessHandle::register` does, for `id`, a process already
    /// registered (`Command::RegisterProcess`), and calls `on_ack(member, sent_at,
    /// acked_at)` for every heartbeat the leader acknowledges, on the heartbeat task right
    /// when the acknowledgement arrives (so `acked_at` is the present). It runs between two
    /// heartbeats: keep it short and never block in it.
    pub fn start_observed(
        client: Client,
        id: ProcessId,
        interval_ms: u64,
        on_ack: impl FnMut(MemberId, Instant, Instant) + Send + 'static,
    ) -> ProcessHandle {
        ProcessHandle::spawn(client, id, interval_ms, Some(Box::new(on_ack)))
    }

    fn spawn(client: Client, id: ProcessId, interval_ms: u64, on_ack: Option<AckObserver>) -> ProcessHandle {
        let (stop, stop_rx) = oneshot::channel();
        let (lost_tx, lost_rx) = oneshot::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let resources = Arc::new(Mutex::new(None));
        let task = tokio::spawn(heartbeat_loop(
            client.cluster().clone(),
            MemberId::Process(id),
            interval_ms,
            on_ack,
            stop_rx,
            lost_tx,
            Shared { lost: lost.clone(), resources: resources.clone() },
        ));
        ProcessHandle { id, client, stop: Some(stop), task: Some(task), lost_rx: Some(lost_rx), lost, resources }
    }

    /// The process's averaged resources, sent with every heartbeat from now on (the
    /// leader records them at its bounded write rate); `None` sends none.
    pub fn report_resources(&self, averages: Option<ResourceAverage>) {
        *self.resources.lock().unwrap_or_else(|e| e.into_inner()) = averages;
    }

    pub fn id(&self) -> ProcessId {
        self.id
    }

    pub fn member(&self) -> MemberId {
        MemberId::Process(self.id)
    }

    /// Whether the cluster has said the process is no longer a member.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Waits until the cluster says the process is no longer a member (expired or
    /// deleted); heartbeats have stopped by then. Returns the error at once if already lost.
    pub async fn lost(&mut self) -> ClientError {
        let Some(rx) = self.lost_rx.as_mut() else {
            return ClientError::UnknownMember(self.member());
        };
        let error =
            rx.await.unwrap_or_else(|_| ClientError::Closed("the heartbeat task stopped without a verdict".into()));
        self.lost_rx = None;
        error
    }

    /// Stops heartbeating and deregisters with the program's exit status, waiting for the
    /// cluster to apply it. A process the cluster already removed counts as deregistered.
    pub async fn close(mut self, exit_status: Option<i32>) -> Result<(), ClientError> {
        self.stop_heartbeats().await;
        let command = Command::DeregisterProcess { id: self.id, exit_status };
        match self.client.execute(command).await {
            Ok(_) => Ok(()),
            Err(ClientError::Refused(CommandError::UnknownMember(member))) => {
                tracing::warn!(%member, ?exit_status, "process was already removed from the cluster; exit status not recorded");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Stops heartbeating WITHOUT deregistering: to the cluster the process falls silent
    /// as a crashed one does, and the leader expires it after the heartbeat timeout. Once
    /// it returns no heartbeat is sent and no acknowledgement observed. Only for modelling
    /// a crash (the simulator's crashing workers); a process that ends calls `close`, and
    /// a dropped handle still deregisters.
    pub async fn abandon(mut self) {
        self.stop_heartbeats().await;
        // Drop now finds the task gone and leaves the registration alone.
    }

    async fn stop_heartbeats(&mut self) {
        self.stop.take();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "heartbeat task failed");
        }
    }
}

impl Drop for ProcessHandle {
    /// Best effort: stops heartbeats and queues the deregistration on the client's
    /// session, which keeps delivering it after the handle is gone (see `Session`).
    fn drop(&mut self) {
        if self.task.is_none() {
            return; // closed or abandoned
        }
        self.stop.take();
        if self.is_lost() {
            return;
        }
        let command = Command::DeregisterProcess { id: self.id, exit_status: None };
        if let Err(e) = self.client.submit_now(command) {
            tracing::warn!(process = %self.id, error = %e, "could not queue the deregistration of a dropped process handle");
        }
    }
}

/// What the heartbeat task shares with its handle.
struct Shared {
    /// Set once the cluster said the process is no longer a member.
    lost: Arc<AtomicBool>,
    /// The averages the next heartbeats carry.
    resources: Arc<Mutex<Option<ResourceAverage>>>,
}

async fn heartbeat_loop(
    cluster: Cluster,
    member: MemberId,
    interval_ms: u64,
    mut on_ack: Option<AckObserver>,
    mut stop: oneshot::Receiver<()>,
    lost_tx: oneshot::Sender<ClientError>,
    shared: Shared,
) {
    let Shared { lost, resources } = shared;
    let interval = Duration::from_millis(interval_ms.max(1));
    let mut next_at = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(next_at) => {}
        }
        next_at += interval;
        // A heartbeat older than one interval is worth less than the next one: bound
        // each by the interval.
        let resources = *resources.lock().unwrap_or_else(|e| e.into_inner());
        let request = ClientRequest::Heartbeat { member, resources };
        let sent_at = Instant::now();
        let answer = tokio::select! {
            biased;
            _ = &mut stop => return,
            answer = cluster.call_leader_within(request, interval_ms.max(1)) => answer,
        };
        match answer {
            Ok(ClientResponse::HeartbeatOk) => {
                if let Some(on_ack) = on_ack.as_mut() {
                    on_ack(member, sent_at, Instant::now());
                }
            }
            Ok(ClientResponse::UnknownMember(m)) => {
                tracing::warn!(member = %m, "the cluster no longer knows this member (expired or deleted); heartbeats stop");
                lost.store(true, Ordering::Release);
                let _ = lost_tx.send(ClientError::UnknownMember(m));
                return;
            }
            Ok(ClientResponse::Error(e)) => tracing::warn!(%member, error = %e, "heartbeat refused; retrying"),
            Ok(other) => tracing::warn!(%member, answer = ?other, "unexpected answer to a heartbeat; retrying"),
            Err(e) => tracing::warn!(%member, error = %e, "heartbeat not delivered; retrying"),
        }
        // Late by more than an interval (a slow call): beat again now rather than
        // bursting to catch up.
        let now = Instant::now();
        if next_at < now {
            next_at = now;
        }
    }
}
