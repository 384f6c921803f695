//! Remote launch: the leader places a new worker on the server with the most headroom and
//! forwards the request there; that node starts the program under `roster run`, so it is
//! registered, heartbeats, and deregisters with its exit status. Off unless the program is
//! on the node's allow-list.

use crate::config::NodeConfig;
use crate::net::wire::{
    ClientEnvelope, ClientRequest, ClientResponse, ClientResponseEnvelope, Hello, LaunchRequest, RequestError, Role,
};
use crate::server::{Raft, leadership};
use crate::storage::SharedState;
use roster_kernel::ServerId;
use roster_kernel::placement::{self, Requirements};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Label that ties a registered process to the launch that started it.
pub const LAUNCH_LABEL: &str = "roster.launch-id";
/// How long a launched program has to start and register.
const REGISTER_TIMEOUT_MS: u64 = 15_000;
const FORWARD_TIMEOUT_MS: u64 = REGISTER_TIMEOUT_MS + 5_000;

pub struct Launcher {
    node: u64,
    raft: Raft,
    shared: Arc<SharedState>,
    /// The token this node checks, passed on to a launched wrapper when the config
    /// names none of its own.
    cluster_token: String,
    allow: Vec<String>,
    log_dir: PathBuf,
    token: Option<String>,
    token_file: Option<PathBuf>,
    /// How a forwarded launch reaches the chosen node.
    connector: crate::net::transport::Connector,
    /// `--tls-ca`, `--tls-cert`, `--tls-key` for a launched wrapper: this node's own files.
    tls_args: Vec<(&'static str, PathBuf)>,
    self_addr: String,
    heartbeat_interval_ms: u64,
    next: AtomicU64,
}

impl Launcher {
    pub fn new(
        config: &NodeConfig,
        raft: Raft,
        shared: Arc<SharedState>,
        cluster_token: String,
        connector: crate::net::transport::Connector,
    ) -> Self {
        let tls_args = [("--tls-ca", &config.tls_ca), ("--tls-cert", &config.tls_cert), ("--tls-key", &config.tls_key)]
            .into_iter()
            .filter_map(|(flag, file)| file.clone().map(|f| (flag, f)))
            .collect();
        Launcher {
            node: config.id,
            raft,
            shared,
            cluster_token,
            allow: config.launch_allow.clone(),
            log_dir: config.data_dir.join("launched"),
            token: config.token.clone(),
            token_file: config.token_file.clone(),
            connector,
            tls_args,
            self_addr: config.advertise_addr().to_string(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            next: AtomicU64::new(1),
        }
    }

    /// On the leader: place, then start here or forward to the chosen node.
    pub async fn launch(self: Arc<Self>, req: LaunchRequest) -> ClientResponse {
        if !self.raft.is_leader() {
            return leadership::not_leader(&self.raft, self.node).await;
        }
        let need =
            Requirements { min_free_mem_bytes: req.require_mem_bytes, min_free_cpu_percent: req.require_cpu_percent };
        let chosen = crate::storage::with_kernel(&self.shared, |sm| {
            placement::place(sm.servers(), &placement::reservations(sm.processes()), &need)
        });
        let server = match chosen {
            Ok(s) => s,
            Err(error) => return ClientResponse::Error(RequestError::Placement { name: req.name, error }),
        };
        tracing::info!(name = %req.name, %server, "launch placed");
        if server.0 == self.node {
            return self.start_local(req).await;
        }
        let Some(addr) = leadership::node_addr(&self.raft, server.0) else {
            return ClientResponse::Error(RequestError::NoAddress { server });
        };
        forward(&addr, &self.cluster_token, &self.connector, req).await
    }

    /// On the chosen node: start the program under `roster run` and wait until it registers.
    pub async fn start_local(self: Arc<Self>, req: LaunchRequest) -> ClientResponse {
        if !self.allow.iter().any(|a| a == &req.program) {
            tracing::warn!(program = %req.program, "launch refused: not on the allow-list");
            return ClientResponse::Error(RequestError::NotAllowed { program: req.program, node: self.node });
        }
        let launch_id =
            format!("{}-{}-{}", self.node, crate::rt::clock::unix_ms(), self.next.fetch_add(1, Ordering::Relaxed));
        let exe = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => return launch_failed(format!("cannot find the roster binary: {e}")),
        };
        if let Err(e) = std::fs::create_dir_all(&self.log_dir) {
            return launch_failed(format!("cannot create {}: {e}", self.log_dir.display()));
        }
        let log_path = self.log_dir.join(format!("{}-{launch_id}.log", sanitize(&req.name)));
        let log = match std::fs::File::create(&log_path) {
            Ok(f) => f,
            Err(e) => {
                return launch_failed(format!("cannot create {}: {e}", log_path.display()));
            }
        };
        let log_err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => return launch_failed(e.to_string()),
        };
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("run")
            .args(["--name", &req.name, "--server-id", &self.node.to_string(), "--endpoints", &self.self_addr])
            .args(["--heartbeat-interval-ms", &self.heartbeat_interval_ms.to_string()])
            .arg("--label")
            .arg(format!("{LAUNCH_LABEL}={launch_id}"));
        for (k, v) in &req.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        if let Some(m) = req.require_mem_bytes {
            cmd.args(["--reserve-mem", &m.to_string()]);
        }
        if let Some(c) = req.require_cpu_percent {
            cmd.args(["--reserve-cpu", &c.to_string()]);
        }
        // Options go before `--`: everything after it is the program's own command line.
        match (&self.token, &self.token_file) {
            (Some(t), _) => {
                cmd.env("ROSTER_TOKEN", t);
            }
            (None, Some(f)) => {
                cmd.arg("--token-file").arg(f);
            }
            (None, None) => {
                cmd.env("ROSTER_TOKEN", &self.cluster_token);
            }
        }
        for (flag, file) in &self.tls_args {
            cmd.arg(flag).arg(file);
        }
        cmd.arg("--").arg(&req.program).args(&req.args);
        cmd.stdin(std::process::Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return launch_failed(e.to_string()),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(REGISTER_TIMEOUT_MS);
        loop {
            let found = crate::storage::with_kernel(&self.shared, |sm| {
                sm.processes().find(|p| p.info.labels.get(LAUNCH_LABEL) == Some(&launch_id)).map(|p| p.id)
            });
            if let Some(process) = found {
                tracing::info!(name = %req.name, %process, log = %log_path.display(), "launched");
                // The wrapper lives on by itself; reap it when it ends.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return ClientResponse::Launched { server: ServerId(self.node), process };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let tail = last_line(&log_path);
                return ClientResponse::Error(RequestError::ExitedBeforeRegistering {
                    status: status.to_string(),
                    last_line: tail,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.start_kill();
                return ClientResponse::Error(RequestError::RegisterTimeout {
                    name: req.name,
                    timeout_ms: REGISTER_TIMEOUT_MS,
                    log: log_path.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Sends a `StartLocal` to the chosen node and relays its answer.
async fn forward(
    addr: &str,
    token: &str,
    connector: &crate::net::transport::Connector,
    req: LaunchRequest,
) -> ClientResponse {
    let hello = Hello { token: token.to_string(), role: Role::Client };
    let exchange = async {
        let (mut r, mut w) =
            crate::net::transport::connect(addr, &hello, crate::net::wire::MAX_CLIENT_FRAME_BYTES, 2_000, connector)
                .await?;
        w.send(&ClientEnvelope { id: 1, request: ClientRequest::StartLocal(req) }).await?;
        r.recv::<ClientResponseEnvelope>().await
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(FORWARD_TIMEOUT_MS);
    match crate::rt::Timeout::new(exchange, deadline).await {
        Ok(Ok(env)) => env.response,
        Ok(Err(e)) => {
            ClientResponse::Error(RequestError::ForwardFailed { addr: addr.to_string(), reason: e.to_string() })
        }
        Err(_) => ClientResponse::Error(RequestError::ForwardTimeout { addr: addr.to_string() }),
    }
}

fn launch_failed(reason: String) -> ClientResponse {
    ClientResponse::Error(RequestError::LaunchFailed { reason })
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect()
}

fn last_line(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string))
        .unwrap_or_else(|| "(no output)".into())
}
