//! `roster node`: one server node until SIGTERM / ctrl-c, then a graceful leave.

use super::failure::CliError;
use clap::Args;
use roster_real::config::{NodeConfig, parse_peers};
use roster_real::node::Node;
use roster_real::storage::FsDisk;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// TOML config file; flags given here override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id, unique in the cluster (its Raft node id and server id).
    #[arg(long)]
    id: Option<u64>,
    /// HOST:PORT for peers and clients.
    #[arg(long)]
    listen: Option<String>,
    /// HOST:PORT others use to reach this node (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// HOST:PORT for the HTTP/JSON API, /metrics, /livez, /readyz and the web page (default: off).
    #[arg(long)]
    http_listen: Option<String>,
    /// Initial members: 1=HOST:PORT,2=HOST:PORT,... (omit on a node that will be added later).
    #[arg(long)]
    peers: Option<String>,
    /// With an empty data directory, form a new cluster of --peers (refused if a peer
    /// reports one running). Without it, an empty node waits to be added or replaced.
    #[arg(long)]
    bootstrap: bool,
    /// Directory for the Raft log, vote and snapshots (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the cluster token (or set ROSTER_TOKEN).
    // Shares its id with the client option of the same name, so it may also come before
    // `node` (`roster --token-file F node ...`); the two have one type.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the peer key that nodes prove to each other (default: `peer-key`
    /// beside --token-file; or set ROSTER_PEER_KEY).
    #[arg(long)]
    peer_key_file: Option<PathBuf>,
    /// When run as root: the user launched programs run as.
    #[arg(long)]
    launch_user: Option<String>,
    /// Name of this server in the record (default: `node-ID`).
    #[arg(long)]
    name: Option<String>,
    /// How often members heartbeat to the leader (default 1000).
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
    /// Silence after which the leader expires a member (default 3000, at least 3 intervals).
    #[arg(long)]
    heartbeat_timeout_ms: Option<u64>,
    /// Window over which CPU and memory use are averaged (default 60000).
    #[arg(long)]
    resource_window_ms: Option<u64>,
    /// `system` or `fixed:cpu=PCT,mem=BYTES`.
    #[arg(long)]
    probe: Option<String>,
    /// A program this node may start on a launch request (repeatable).
    #[arg(long = "launch-allow")]
    launch_allow: Vec<String>,
    /// TLS: this node's certificate chain (PEM), for peers, clients and HTTPS; with
    /// --tls-key and --tls-ca (default: TLS off). Re-read on SIGHUP.
    // These three share their ids with the client options of the same names, as
    // --token-file does.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key (PEM) of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// TLS: the CA (PEM) that signs every node's certificate; peers must present one
    /// (mutual TLS), clients may.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl NodeArgs {
    fn into_config(self) -> Result<NodeConfig, CliError> {
        let mut table = match &self.config {
            Some(path) => NodeConfig::from_toml_file(path)?,
            None => {
                let missing = |f: &str| CliError::Usage(format!("missing --{f} (or give --config FILE)"));
                NodeConfig::new(
                    self.id.ok_or_else(|| missing("id"))?,
                    self.listen.clone().ok_or_else(|| missing("listen"))?,
                    self.data_dir.clone().ok_or_else(|| missing("data-dir"))?,
                )
            }
        };
        // A flag given overrides the file's value.
        set(&mut table.id, self.id);
        set(&mut table.listen, self.listen);
        set_some(&mut table.advertise, self.advertise);
        set_some(&mut table.http_listen, self.http_listen);
        if let Some(v) = self.peers {
            table.peers = parse_peers(&v)?;
        }
        table.bootstrap |= self.bootstrap;
        set(&mut table.data_dir, self.data_dir);
        set_some(&mut table.token_file, self.token_file);
        set_some(&mut table.peer_key_file, self.peer_key_file);
        set_some(&mut table.launch_user, self.launch_user);
        set_some(&mut table.name, self.name);
        set(&mut table.heartbeat_interval_ms, self.heartbeat_interval_ms);
        set(&mut table.heartbeat_timeout_ms, self.heartbeat_timeout_ms);
        set(&mut table.resource_window_ms, self.resource_window_ms);
        set(&mut table.probe, self.probe);
        if !self.launch_allow.is_empty() {
            table.launch_allow = self.launch_allow;
        }
        set_some(&mut table.tls_cert, self.tls_cert);
        set_some(&mut table.tls_key, self.tls_key);
        set_some(&mut table.tls_ca, self.tls_ca);
        table.validate()?;
        Ok(table)
    }
}

/// `slot` takes the flag's value, if the flag was given.
fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *slot = value;
    }
}

/// `slot` (optional in the file too) takes the flag's value, if the flag was given.
fn set_some<T>(slot: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *slot = flag;
    }
}

pub async fn run(args: NodeArgs) -> Result<ExitCode, CliError> {
    super::init_logging();
    let config = args.into_config()?;
    let node = start_node(config).await?;
    let stopped = tokio::select! {
        biased;
        () = wait_for_signal() => None,
        why = roster_real::server::raft_stopped::raft_stopped(&node.raft) => Some(why),
    };
    if let Some(why) = stopped {
        // A stopped core would go on calling itself leader (its metrics freeze): leave,
        // so clients, members and peers turn to the node the others elect.
        tracing::error!(error = %why, "Raft stopped; exiting so the cluster moves on without this node");
        return Err(CliError::RaftStopped { why });
    }
    tracing::info!("signal received: handing leadership over if leading, then leaving the cluster");
    node.hand_off().await;
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn start_node(config: NodeConfig) -> Result<Node, CliError> {
    let in_data_dir = |action| {
        let path = config.data_dir.clone();
        move |source| CliError::File { action, path, source }
    };
    std::fs::create_dir_all(&config.data_dir).map_err(in_data_dir("create the data directory"))?;
    let disk = Arc::new(FsDisk::open(&config.data_dir).map_err(in_data_dir("open the data directory"))?);
    let probe = roster_real::probe::ProbeSpec::parse(&config.probe)?.build();
    Ok(Node::start(config, disk, probe).await?)
}

/// SIGTERM or ctrl-c.
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        biased;
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
