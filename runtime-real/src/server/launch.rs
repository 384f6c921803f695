//! Remote launch: the leader places a new worker on the server with the most headroom and
//! forwards the request there; that node registers the process, mints a `member` token
//! for it alone, and starts the program under `roster run --attach`, which heartbeats and
//! deregisters with its exit status. The job and its wrapper hold that member token and
//! nothing else: never the node's token file, peer key or TLS key. Off unless the
//! program is on the node's allow-list.

use crate::config::NodeConfig;
use crate::net::wire::{ClientRequest, ClientResponse, LaunchRequest, RequestError};
use crate::server::{Raft, leadership};
use crate::storage::SharedState;
use roster_kernel::placement::{self, Requirements};
use roster_kernel::{Command, MemberId, ProcessId, ProcessInfo, Reply, ResourceAverage, ServerId, TokenRole};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long registering a launched program and minting its token may take.
const REGISTER_TIMEOUT_MS: u64 = 15_000;
const FORWARD_TIMEOUT_MS: u64 = REGISTER_TIMEOUT_MS + 5_000;
/// How long a launch waits for this node to apply the job's new token before starting it.
const TOKEN_APPLIED_WAIT_MS: u64 = 2_000;
/// Variables a launched job never inherits from the node: its credentials and key paths.
pub const SECRET_VARS: [&str; 8] = [
    "ROSTER_TOKEN",
    "ROSTER_TOKEN_FILE",
    "ROSTER_PEER_KEY",
    "ROSTER_PEER_KEY_FILE",
    "ROSTER_TLS_CERT",
    "ROSTER_TLS_KEY",
    "ROSTER_CONFIG",
    "ROSTER_MEMBER_ID",
];

pub struct Launcher {
    node: u64,
    raft: Raft,
    shared: Arc<SharedState>,
    /// This node's credential (the peer key) for forwarding a launch to the chosen node.
    credential: roster_client::Credential,
    allow: Vec<String>,
    log_dir: PathBuf,
    /// How a forwarded launch reaches the chosen node.
    connector: crate::net::transport::Connector,
    /// Counts the launches this node started or could place nowhere (`roster_launches_total`).
    metrics: Arc<crate::metrics::Metrics>,
    /// This node's own client (the peer key): registers launched processes and mints
    /// their member tokens.
    client: crate::client::Client,
    /// `--tls-ca` for a launched wrapper: the CA is public; the node's key is not passed.
    tls_ca: Option<PathBuf>,
    /// The user (uid, gid) launched jobs run as (`launch_user`), when the node runs as root.
    run_as: Option<(u32, u32)>,
    self_addr: String,
    heartbeat_interval_ms: u64,
    /// The resource window a launched wrapper averages its job's use over (the node's).
    resource_window_ms: u64,
    next: AtomicU64,
    /// Reads the launched jobs' output back (`output.rs`).
    output: crate::server::output::OutputSource,
}

impl Launcher {
    pub fn new(config: &NodeConfig, node: &crate::server::Handles) -> Result<Self, LauncherError> {
        let (raft, shared) = (node.raft.clone(), node.shared.clone());
        let (peer, connector) = (node.peer.clone(), node.connector.clone());
        let run_as = config.launch_user.as_deref().map(user_ids).transpose()?;
        let mut endpoints = vec![config.advertise_addr().to_string()];
        endpoints.extend(config.peers.values().filter(|a| a.as_str() != config.advertise_addr()).cloned());
        let options = crate::client::ClientOptions {
            endpoints,
            token: String::new(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: REGISTER_TIMEOUT_MS,
        };
        let cluster = crate::client::Cluster::for_node(options, connector.clone(), peer.clone())?;
        let seed = u64::from_le_bytes(crate::rt::random_bytes()[..8].try_into().expect("8 bytes"));
        let client = crate::client::Client::with_cluster(cluster, crate::client::RetryConfig::default(), seed)?;
        let log_dir = config.data_dir.join("launched");
        let output = crate::server::output::OutputSource::new(
            config.id,
            raft.clone(),
            shared.clone(),
            log_dir.clone(),
            roster_client::Credential::Peer(peer.clone()),
            connector.clone(),
        );
        Ok(Launcher {
            node: config.id,
            raft,
            shared,
            credential: roster_client::Credential::Peer(peer),
            allow: config.launch_allow.clone(),
            log_dir,
            connector,
            metrics: node.metrics.clone(),
            client,
            tls_ca: config.tls_ca.clone(),
            run_as,
            self_addr: config.advertise_addr().to_string(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            resource_window_ms: config.resource_window_ms,
            next: AtomicU64::new(1),
            output,
        })
    }

    /// Where reads of the launched jobs' output go.
    pub fn output(&self) -> &crate::server::output::OutputSource {
        &self.output
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
            Err(error) => {
                // No node will start it: counted here, the one place it ended.
                self.metrics.count_launch(crate::metrics::LaunchResult::NoPlacement);
                return ClientResponse::Error(RequestError::Placement { name: req.name, error });
            }
        };
        tracing::info!(name = %req.name, %server, "launch placed");
        if server.0 == self.node {
            return self.start_local(req).await;
        }
        let Some(addr) = leadership::node_addr(&self.raft, server.0) else {
            return ClientResponse::Error(RequestError::NoAddress { server });
        };
        crate::server::relay::forward(
            &addr,
            &self.credential,
            &self.connector,
            ClientRequest::StartLocal(req),
            FORWARD_TIMEOUT_MS,
        )
        .await
    }

    /// On the chosen node: register the process, mint its member token, and start the
    /// program under `roster run --attach` with that token as its only credential. Each
    /// try is counted here, on the node that was to run it, by how it ended.
    pub async fn start_local(self: Arc<Self>, req: LaunchRequest) -> ClientResponse {
        let metrics = self.metrics.clone();
        let response = self.start_here(req).await;
        if let Some(result) = launch_result(&response) {
            metrics.count_launch(result);
        }
        response
    }

    async fn start_here(self: Arc<Self>, req: LaunchRequest) -> ClientResponse {
        if !allowed(&self.allow, &req.program) {
            tracing::warn!(program = %req.program, "launch refused: not on the allow-list");
            return ClientResponse::Error(RequestError::NotAllowed { program: req.program, node: self.node });
        }
        let launch_id =
            format!("{}-{}-{}", self.node, crate::rt::clock::unix_ms(), self.next.fetch_add(1, Ordering::Relaxed));
        let exe = match std::env::current_exe() {
            Ok(p) => p,
            Err(source) => return launch_failed(StartError::Binary(source)),
        };
        let (log_path, log) = match self.open_log(&req.name, &launch_id) {
            Ok(opened) => opened,
            Err(e) => return launch_failed(e),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(REGISTER_TIMEOUT_MS);
        let registered = crate::rt::Timeout::new(self.register(&req, &launch_id), deadline).await;
        let (process, secret) = match registered {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return launch_failed(e),
            Err(_) => {
                return ClientResponse::Error(RequestError::RegisterTimeout {
                    name: req.name,
                    timeout_ms: REGISTER_TIMEOUT_MS,
                    log: log_path.display().to_string(),
                });
            }
        };
        // The wrapper connects here with the new token at once: wait (bounded) until this
        // node has applied it, or the first connection is refused as unknown.
        self.token_applied(&secret).await;
        let mut cmd = self.wrapper(exe, &req, process, &secret, log);
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(name = %req.name, %process, log = %log_path.display(), "launched");
                // The wrapper lives on by itself; reap it when it ends.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                ClientResponse::LaunchStarted {
                    server: ServerId(self.node),
                    process,
                    output_file: log_path.display().to_string(),
                }
            }
            Err(e) => {
                let command = Command::DeregisterProcess { id: process, exit_status: Some(127) };
                if let Err(error) = self.client.execute(command).await {
                    tracing::warn!(%process, %error, "a launch that did not start stays registered until it expires");
                }
                launch_failed(StartError::Spawn(e))
            }
        }
    }

    /// The job's output file, created empty, as stdout and stderr for the wrapper.
    fn open_log(&self, name: &str, launch_id: &str) -> Result<(std::path::PathBuf, Output), StartError> {
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|source| StartError::Create { path: self.log_dir.clone(), source })?;
        let path = self.log_dir.join(format!("{}-{launch_id}.log", sanitize(name)));
        let files = std::fs::File::create(&path).and_then(|f| f.try_clone().map(|g| (f, g)));
        let (stdout, stderr) = files.map_err(|source| StartError::Create { path: path.clone(), source })?;
        Ok((path, Output { stdout, stderr }))
    }

    /// `roster run --attach` for the registered `process`, holding its own member token
    /// (`secret`) and nothing else of this node's, with the job's command line after `--`.
    fn wrapper(
        &self,
        exe: std::path::PathBuf,
        req: &LaunchRequest,
        process: ProcessId,
        secret: &str,
        log: Output,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("run")
            .args(["--attach", &process.0.to_string(), "--name", &req.name, "--endpoints", &self.self_addr])
            .args(["--heartbeat-interval-ms", &self.heartbeat_interval_ms.to_string()])
            .args(["--resource-window-ms", &self.resource_window_ms.to_string()]);
        if let Some(ca) = &self.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        for var in SECRET_VARS {
            cmd.env_remove(var);
        }
        cmd.env("ROSTER_TOKEN", secret);
        // Options go before `--`: everything after it is the program's own command line.
        cmd.arg("--").arg(&req.program).args(&req.args);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(std::process::Stdio::null()).stdout(log.stdout).stderr(log.stderr).kill_on_drop(false);
        cmd
    }

    /// Returns once this node's applied state holds the token of `secret`, or after
    /// `TOKEN_APPLIED_WAIT_MS` (the wrapper then retries its connection by itself).
    async fn token_applied(&self, secret: &str) {
        let hash = roster_client::token_hash(secret);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(TOKEN_APPLIED_WAIT_MS);
        while !crate::storage::with_kernel(&self.shared, |sm| sm.token_by_hash(&hash).is_some()) {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Registers the launched process on this server and mints its member token; the
    /// token's secret never leaves this node except to the job.
    async fn register(&self, req: &LaunchRequest, launch_id: &str) -> Result<(ProcessId, String), StartError> {
        let mut labels = req.labels.clone();
        labels.insert(crate::server::output::LAUNCH_LABEL.to_string(), launch_id.to_string());
        let info = ProcessInfo {
            name: req.name.clone(),
            server: ServerId(self.node),
            service_host: String::new(),
            service_port: None,
            started_at_unix_ms: crate::rt::clock::unix_ms(),
            labels,
            reserved: ResourceAverage {
                cpu_percent_avg: req.require_cpu_percent.unwrap_or(0),
                mem_bytes_used_avg: req.require_mem_bytes.unwrap_or(0),
            },
        };
        let process = match self.client.execute(Command::RegisterProcess { info }).await {
            Ok(Reply::ProcessRegistered { id, .. }) => id,
            Ok(other) => {
                return Err(StartError::UnexpectedReply { name: req.name.clone(), reply: format!("{other:?}") });
            }
            Err(source) => return Err(StartError::Register { name: req.name.clone(), source }),
        };
        let secret = new_secret();
        let role = TokenRole::Member(MemberId::Process(process));
        let name = format!("launch {}", req.name);
        match self.client.create_token(&secret, name, role, None).await {
            Ok(_) => Ok((process, secret)),
            Err(source) => {
                let _ = self.client.execute(Command::DeregisterProcess { id: process, exit_status: None }).await;
                Err(StartError::Token { process, source })
            }
        }
    }
}

/// Where a launched job's output goes: one file, opened twice.
struct Output {
    stdout: std::fs::File,
    stderr: std::fs::File,
}

/// Why a placed launch did not start on this node; its text goes back to the caller.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The wrapper is this very binary: without its path there is nothing to run.
    #[error("cannot find the roster binary: {0}")]
    Binary(std::io::Error),
    /// The job's output file (or its directory) could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Create { path: std::path::PathBuf, source: std::io::Error },
    /// The cluster did not take the process's registration.
    #[error("registering {name:?}: {source}")]
    Register { name: String, source: roster_client::ClientError },
    /// The cluster answered the registration with something else (a bug or another version).
    #[error("registering {name:?}: unexpected reply {reply}")]
    UnexpectedReply { name: String, reply: String },
    /// The member token was not minted: the process is deregistered again.
    #[error("minting the member token of {process}: {source}")]
    Token { process: ProcessId, source: roster_client::ClientError },
    /// The wrapper did not start.
    #[error("{0}")]
    Spawn(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("launch_user {0:?} is not a user on this machine")]
    UnknownUser(String),
    #[error("the launcher's client: {0}")]
    Client(#[from] roster_client::ClientError),
}

/// The uid and gid of user `name`.
fn user_ids(name: &str) -> Result<(u32, u32), LauncherError> {
    let unknown = || LauncherError::UnknownUser(name.to_string());
    let c_name = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: getpwnam reads the NUL-terminated name; the record it returns is read at
    // once, before any other call could overwrite it (the node calls it once, at start).
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        return Err(unknown());
    }
    // SAFETY: non-null, so it points at a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok((uid, gid))
}

/// A token secret: 256 random bits as hex.
pub fn new_secret() -> String {
    crate::rt::random_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `program` is on the allow-list: as it is, or, for an absolute path, through
/// its canonical form (the list holds canonical paths: `/usr/bin/python3` is allowed when
/// the list names `/usr/bin/python3.11` it links to). It runs under the name given, which
/// a multi-call binary dispatches on.
fn allowed(allow: &[String], program: &str) -> bool {
    if allow.iter().any(|a| a == program) {
        return true;
    }
    let path = std::path::Path::new(program);
    path.is_absolute() && std::fs::canonicalize(path).is_ok_and(|c| allow.iter().any(|a| std::path::Path::new(a) == c))
}

/// How a start on this node ended, for `roster_launches_total` (`None`: it did not get to
/// try, e.g. a redirect).
fn launch_result(response: &ClientResponse) -> Option<crate::metrics::LaunchResult> {
    use crate::metrics::LaunchResult;
    match response {
        ClientResponse::Launched { .. } | ClientResponse::LaunchStarted { .. } => Some(LaunchResult::Started),
        ClientResponse::Error(RequestError::NotAllowed { .. }) => Some(LaunchResult::NotAllowed),
        ClientResponse::Error(_) => Some(LaunchResult::Failed),
        _ => None,
    }
}

fn launch_failed(error: StartError) -> ClientResponse {
    ClientResponse::Error(RequestError::LaunchFailed { reason: error.to_string() })
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn a_program_is_allowed_as_listed_or_through_its_canonical_path_only() {
        let dir = std::env::temp_dir().join(format!("roster-launch-allowed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let real = dir.join("python3.11");
        std::fs::write(&real, "").expect("write");
        let link = dir.join("python3");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let allow = vec![std::fs::canonicalize(&real).expect("canonical").display().to_string()];
        assert!(allowed(&allow, &allow[0]));
        assert!(allowed(&allow, &link.display().to_string()), "a link to an allowed program");
        assert!(!allowed(&allow, "python3"), "a bare name is never resolved");
        assert!(!allowed(&allow, &dir.join("other").display().to_string()));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
