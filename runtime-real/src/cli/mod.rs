//! Command-line interface. Exit codes: 0 ok, 1 error (one line naming the problem),
//! 2 usage.

mod bench;
mod client_cmds;
mod dev;
mod launch_cmd;
mod node_cmd;
mod run_cmd;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "roster", version, about = "Roster: a Raft-replicated cluster manager")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server node.
    Node(node_cmd::NodeArgs),
    /// Run a local 3-node cluster on loopback (data in ./roster-data) until ctrl-c.
    Dev(dev::DevArgs),
    /// Leader, term, commit index, every server and process.
    Status(ClientArgs),
    /// One server or process: `server:ID` or `process:ID`.
    Get(client_cmds::GetArgs),
    /// List servers and processes, with filters.
    Ls(client_cmds::LsArgs),
    /// Merge fields into a server or process entry.
    Put(client_cmds::PutArgs),
    /// Remove a server or process entry (leaves a tombstone).
    Del(client_cmds::DelArgs),
    /// Small key/value namespace.
    Kv(client_cmds::KvArgs),
    /// Stream change events.
    Watch(client_cmds::WatchArgs),
    /// Add or remove a server node.
    Member(client_cmds::MemberArgs),
    /// Benchmarks against a running cluster.
    Bench(bench::BenchArgs),
    /// Run a program as a cluster member: register, heartbeat, deregister with its exit status.
    Run(run_cmd::RunArgs),
    /// Start a program on the idlest server that fits.
    Launch(launch_cmd::LaunchArgs),
}

/// Options every client command takes.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Cluster endpoints, HOST:PORT,...
    #[arg(
        long,
        env = "ROSTER_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
    )]
    pub endpoints: Vec<String>,
    /// File holding the cluster token (or set ROSTER_TOKEN).
    #[arg(long, env = "ROSTER_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Give up after this long.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// Print machine-readable JSON (fields documented in README).
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    /// Token from ROSTER_TOKEN, --token-file, or `./roster-data/token` left by `roster dev`.
    pub fn token(&self) -> Result<String, String> {
        let dev_token = std::path::Path::new(dev::DEFAULT_DATA_DIR).join("token");
        let file = self.token_file.clone().or_else(|| dev_token.exists().then_some(dev_token));
        roster_real::config::resolve_token(None, file.as_deref()).map_err(|e| e.to_string())
    }

    pub async fn connect(&self) -> Result<roster_real::client::Client, String> {
        let options = roster_real::client::ClientOptions {
            endpoints: self.endpoints.clone(),
            token: self.token()?,
            connect_timeout_ms: self.timeout_ms.min(2_000),
            request_timeout_ms: self.timeout_ms,
        };
        roster_real::client::Client::connect(options, rand::random()).await.map_err(|e| e.to_string())
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark's load generator shares the machine with the cluster it measures: one
    // thread and no cross-thread wake-ups cost it about a quarter less CPU per request.
    let mut builder = match cli.command {
        Command::Bench(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: Result<ExitCode, String> = rt.block_on(async move {
        match cli.command {
            Command::Node(a) => node_cmd::run(a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Status(a) => client_cmds::status(a).await,
            Command::Get(a) => client_cmds::get(a).await,
            Command::Ls(a) => client_cmds::ls(a).await,
            Command::Put(a) => client_cmds::put(a).await,
            Command::Del(a) => client_cmds::del(a).await,
            Command::Kv(a) => client_cmds::kv(a).await,
            Command::Watch(a) => client_cmds::watch(a).await,
            Command::Member(a) => client_cmds::member(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Run(a) => run_cmd::run(a).await,
            Command::Launch(a) => launch_cmd::run(a).await,
        }
    });
    // Background tasks (connections, heartbeats) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}
