//! The server node's own membership: register at start, heartbeat to the leader with
//! averaged resources, deregister on a graceful stop. It uses the same client library as
//! any worker, so the node is judged by the same rules as everyone else.

use crate::client::{Client, ClientOptions};
use crate::config::NodeConfig;
use crate::probe::Probe;
use crate::rt::clock::Clock;
use roster_kernel::resource_window::ResourceWindow;
use roster_kernel::{Command, MemberId, ServerId, ServerInfo};
use std::time::Duration;
use tokio::sync::oneshot;

/// Resource samples are taken this often.
const SAMPLE_EVERY_MS: u64 = 1_000;
/// A graceful leave waits at most this long for the deregistration to commit.
const LEAVE_TIMEOUT_MS: u64 = 5_000;

pub struct ServerAgent {
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl ServerAgent {
    pub fn start(
        config: &NodeConfig,
        peer: roster_client::PeerAuth,
        connector: crate::net::transport::Connector,
        probe: Box<dyn Probe>,
        clock: Clock,
    ) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel();
        let mut endpoints = vec![config.advertise_addr().to_string()];
        endpoints.extend(config.peers.values().filter(|a| a.as_str() != config.advertise_addr()).cloned());
        let capacity = probe.capacity();
        let info = ServerInfo {
            name: config.name.clone().unwrap_or_else(|| format!("node-{}", config.id)),
            raft_addr: config.advertise_addr().to_string(),
            api_addr: config.advertise_addr().to_string(),
            started_at_unix_ms: crate::rt::clock::unix_ms(),
            cpu_capacity_percent: capacity.cpu_capacity_percent,
            mem_capacity_bytes: capacity.mem_capacity_bytes,
        };
        // The token is not sent: the agent's connections prove the peer key.
        let options =
            ClientOptions { endpoints, token: String::new(), connect_timeout_ms: 1_000, request_timeout_ms: 2_000 };
        let agent = Agent {
            id: ServerId(config.id),
            info,
            options,
            peer,
            connector,
            interval_ms: config.heartbeat_interval_ms,
            window_ms: config.resource_window_ms,
            probe,
            clock,
        };
        tokio::spawn(agent.run(stop_rx));
        ServerAgent { stop: Some(stop_tx) }
    }

    /// Deregisters this server (bounded wait) and stops heartbeating.
    pub async fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = crate::rt::Timeout::new(
                    done_rx,
                    tokio::time::Instant::now() + Duration::from_millis(LEAVE_TIMEOUT_MS + 500),
                )
                .await;
            }
        }
    }
}

struct Agent {
    id: ServerId,
    info: ServerInfo,
    options: ClientOptions,
    peer: roster_client::PeerAuth,
    connector: crate::net::transport::Connector,
    interval_ms: u64,
    window_ms: u64,
    probe: Box<dyn Probe>,
    clock: Clock,
}

impl Agent {
    async fn run(mut self, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut window = match ResourceWindow::new(self.window_ms, SAMPLE_EVERY_MS.min(self.window_ms)) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "resource window refused its config; resources will not be reported");
                return;
            }
        };
        let seed = self.id.0 ^ crate::rt::clock::unix_ms();
        let client = loop {
            let cluster =
                crate::client::Cluster::for_node(self.options.clone(), self.connector.clone(), self.peer.clone());
            match cluster.and_then(|c| Client::with_cluster(c, crate::client::RetryConfig::default(), seed)) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::debug!(error = %e, "server agent: cluster not reachable yet");
                    if let Ok(done) = stop.try_recv() {
                        let _ = done.send(());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut registered = false;
        let mut next_sample_ms = 0u64;
        let mut next_beat_ms = 0u64;
        loop {
            let now_ms = self.clock.now_ms();
            if now_ms >= next_sample_ms {
                let s = self.probe.sample();
                if let Err(e) = window.handle_sample(now_ms, s.cpu_percent, s.mem_bytes_used) {
                    tracing::debug!(error = %e, "resource sample rejected");
                }
                next_sample_ms = now_ms + SAMPLE_EVERY_MS;
            }
            if !registered {
                match client.execute(Command::RegisterServer { id: self.id, info: self.info.clone() }).await {
                    Ok(_) => {
                        tracing::info!(server = %self.id, "server registered");
                        registered = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "server registration not committed yet"),
                }
            }
            if registered && now_ms >= next_beat_ms {
                match client.heartbeat(MemberId::Server(self.id), window.average(now_ms)).await {
                    Ok(()) => {}
                    Err(crate::client::ClientError::UnknownMember(_)) => {
                        tracing::warn!(server = %self.id, "the cluster removed this server (missed heartbeats); registering again");
                        registered = false;
                    }
                    Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
                }
                next_beat_ms = now_ms + self.interval_ms;
            }
            let wake = next_sample_ms.min(next_beat_ms).max(self.clock.now_ms() + 1);
            tokio::select! {
                biased;
                done = &mut stop => {
                    self.leave(&client).await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                _ = self.clock.sleep_until_ms(wake) => {}
            }
        }
    }

    async fn leave(&self, client: &Client) {
        let deregister = client.execute(Command::DeregisterServer { id: self.id });
        let deadline = tokio::time::Instant::now() + Duration::from_millis(LEAVE_TIMEOUT_MS);
        match crate::rt::Timeout::new(deregister, deadline).await {
            Ok(Ok(_)) => tracing::info!(server = %self.id, "server deregistered"),
            Ok(Err(e)) => tracing::warn!(server = %self.id, error = %e, "deregistration refused"),
            Err(_) => {
                tracing::warn!(server = %self.id, "deregistration not committed within {LEAVE_TIMEOUT_MS} ms; the leader will expire this server")
            }
        }
    }
}
