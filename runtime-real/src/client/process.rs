//! `ProcessHandle`: a registered process, kept alive by heartbeats to the leader until it
//! deregisters.
//!
//! When the cluster answers a heartbeat with `UnknownMember` (the leader expired the
//! process, or an operator deleted it), heartbeats stop and the handle reports it through
//! `lost()`. It does not re-register by itself: that would give the process a new id
//! behind its owner's back. The owner decides (`roster run` ends the program, or
//! registers again).

use crate::client::api::Client;
use crate::client::error::ClientError;
use crate::client::pool::Cluster;
use crate::net::wire::{ClientRequest, ClientResponse};
use roster_kernel::{Command, CommandError, MemberId, ProcessId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub struct ProcessHandle {
    id: ProcessId,
    client: Client,
    /// Dropping it stops the heartbeat task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    lost_rx: Option<oneshot::Receiver<ClientError>>,
    lost: Arc<AtomicBool>,
}

impl ProcessHandle {
    /// Starts heartbeating for `id` every `interval_ms`; the first goes at once.
    pub(crate) fn start(client: Client, id: ProcessId, interval_ms: u64) -> ProcessHandle {
        let (stop, stop_rx) = oneshot::channel();
        let (lost_tx, lost_rx) = oneshot::channel();
        let lost = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(heartbeat_loop(
            client.cluster().clone(),
            MemberId::Process(id),
            interval_ms,
            stop_rx,
            lost_tx,
            lost.clone(),
        ));
        ProcessHandle { id, client, stop: Some(stop), task: Some(task), lost_rx: Some(lost_rx), lost }
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
            return; // closed
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

async fn heartbeat_loop(
    cluster: Cluster,
    member: MemberId,
    interval_ms: u64,
    mut stop: oneshot::Receiver<()>,
    lost_tx: oneshot::Sender<ClientError>,
    lost: Arc<AtomicBool>,
) {
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
        let request = ClientRequest::Heartbeat { member, resources: None };
        let answer = tokio::select! {
            biased;
            _ = &mut stop => return,
            answer = cluster.call_leader_within(request, interval_ms.max(1)) => answer,
        };
        match answer {
            Ok(ClientResponse::HeartbeatOk) => {}
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
