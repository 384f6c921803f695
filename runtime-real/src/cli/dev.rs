//! `roster dev`: a local 3-node cluster on loopback, data under ./roster-data, live
//! status until ctrl-c. A restart reuses the data (and the token).

use clap::Args;
use roster_real::config::NodeConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const DEFAULT_DATA_DIR: &str = "roster-data";

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the nodes keep their data and the cluster token; a restart reuses both.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Node N listens on 127.0.0.1:(base-port + N - 1).
    #[arg(long, default_value_t = 7401)]
    base_port: u16,
    /// Node N serves HTTP (API, web page, /metrics) on 127.0.0.1:(http-base-port + N - 1).
    #[arg(long, default_value_t = 7501)]
    http_base_port: u16,
    /// How many nodes (1 to 7) form the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
    nodes: u64,
    /// Seconds between status prints (0: none).
    #[arg(long, default_value_t = 2)]
    status_every_s: u64,
}

pub async fn run(args: DevArgs) -> Result<ExitCode, String> {
    super::init_logging();
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let token_file = ensure_token(&args.data_dir)?;
    let addr = |n: u64| format!("127.0.0.1:{}", args.base_port as u64 + n - 1);
    let http_addr = |n: u64| format!("127.0.0.1:{}", args.http_base_port as u64 + n - 1);
    let peers: std::collections::BTreeMap<u64, String> = (1..=args.nodes).map(|n| (n, addr(n))).collect();
    let mut nodes: Vec<roster_real::node::Node> = Vec::new();
    for n in 1..=args.nodes {
        let mut config = NodeConfig::new(n, addr(n), args.data_dir.join(format!("node-{n}")));
        config.peers = peers.clone();
        config.bootstrap = true;
        config.token_file = Some(token_file.clone());
        config.name = Some(format!("dev-{n}"));
        config.http_listen = Some(http_addr(n));
        nodes.push(super::node_cmd::start_node(config).await?);
    }
    let endpoints: Vec<String> = (1..=args.nodes).map(addr).collect();
    outln!("roster dev: {} nodes on {}", args.nodes, endpoints.join(", "));
    outln!("data: {}   token file: {}", args.data_dir.display(), token_file.display());
    outln!("web:  http://{}/   (the cluster page; it asks for the token once)", http_addr(1));
    outln!("try:  roster status --endpoints {}", endpoints.join(","));
    outln!("      curl -H \"Authorization: Bearer $(cat {})\" http://{}/v1/status", token_file.display(), http_addr(1));
    outln!("stop: ctrl-c");

    let status_loop = async {
        if args.status_every_s == 0 {
            return std::future::pending::<()>().await;
        }
        let client_args = super::ClientArgs {
            endpoints: endpoints.clone(),
            token_file: Some(token_file.clone()),
            timeout_ms: 2_000,
            json: false,
        };
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(args.status_every_s)).await;
            match super::client_cmds::fetch_status(&client_args).await {
                Ok(s) => outln!("{}", super::client_cmds::render_status(&s)),
                Err(e) => outln!("status: {e}"),
            }
        }
    };
    tokio::select! {
        biased;
        _ = super::node_cmd::wait_for_signal() => {}
        _ = status_loop => {}
    }
    outln!("stopping: every node deregisters, then stops");
    // All leave first, together, while a quorum still runs to commit their deregistrations.
    futures::future::join_all(nodes.iter_mut().map(|n| n.leave())).await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The dev cluster's token: made once, random, kept beside the data.
fn ensure_token(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("token");
    if !path.exists() {
        let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        std::fs::write(&path, token).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(path)
}
