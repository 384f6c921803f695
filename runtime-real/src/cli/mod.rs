//! Command-line interface. Exit codes: 0 ok, 1 error (one line naming the problem),
//! 2 usage.

/// `println!` for command output: a closed stdout pipe ends the process quietly with
/// status 0 instead of panicking (every command prints through this or `out!`).
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*), true) };
}

/// `print!` for command output, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*), false) };
}

mod backup_file;
mod bench;
mod client_cmds;
mod dev;
mod failure;
mod health_cmd;
mod launch_cmd;
mod logs_cmd;
mod lookup;
mod node_cmd;
mod run_cmd;
mod secret_file;
mod server_cmd;
mod snapshot_cmd;
mod stdout_closed;
mod token_cmd;
mod tree_probe;
mod value_input;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "roster",
    version,
    about = "Roster: a Raft-replicated cluster manager",
    after_help = "Client options (--endpoints, --token-file, --tls-ca, --tls-cert, --tls-key, --timeout-ms, --json) go \
                  before or after the command."
)]
struct Cli {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server node.
    // Boxed: its flags outweigh every other command's.
    Node(Box<node_cmd::NodeArgs>),
    /// Run a local 3-node cluster on loopback (data in ./roster-data) until ctrl-c.
    Dev(dev::DevArgs),
    /// Leader, term, commit index, every server and process (exit 1 when no leader is known).
    Status,
    /// Each endpoint's health: answers in time, knows a leader (exit 1 when any is unhealthy).
    Health,
    /// One server or process: by id (`server-ID`, `process-ID`; or `server:ID`) or by name.
    Get(client_cmds::GetArgs),
    /// List servers and processes, with filters.
    Ls(client_cmds::LsArgs),
    /// Members that left: how (deregistered, expired, deleted) and when, newest first.
    Tombstones(client_cmds::TombstonesArgs),
    /// Merge fields into a server or process entry.
    Put(client_cmds::PutArgs),
    /// Remove a server or process entry (leaves a tombstone).
    Del(client_cmds::DelArgs),
    /// Small key/value namespace: get, put, del, cas.
    Kv(client_cmds::KvArgs),
    /// Follow change events, one line each (resource reports hidden unless --resources).
    Watch(client_cmds::WatchArgs),
    /// Add, remove or replace a server node, or hand leadership over.
    Member(client_cmds::MemberArgs),
    /// Drain a server (placement stops picking it) or undrain it.
    Server(server_cmd::ServerArgs),
    /// Save a consistent snapshot of the cluster to a file, or seed a new cluster from one.
    Snapshot(snapshot_cmd::SnapshotArgs),
    /// Benchmarks against a running cluster.
    Bench(bench::BenchArgs),
    /// Run a program as a cluster member: register, heartbeat, deregister with its exit status.
    Run(run_cmd::RunArgs),
    /// Start a program on the idlest server that fits.
    Launch(launch_cmd::LaunchArgs),
    /// The output of a launched process, from the node that runs it.
    Logs(logs_cmd::LogsArgs),
    /// Credentials with roles: create, ls, revoke (and new-key for a key file).
    Token(token_cmd::TokenArgs),
}

// The options every client command takes, accepted before or after the command
// (`global`). No doc comment here: on a flattened struct it would become the about text.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Cluster endpoints, HOST:PORT,...
    #[arg(
        long,
        global = true,
        help_heading = CLIENT_OPTIONS,
        env = "ROSTER_ENDPOINTS",
        hide_env_values = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"
    )]
    pub endpoints: Vec<String>,
    /// File holding the cluster token [env: ROSTER_TOKEN_FILE] (or set ROSTER_TOKEN).
    // The variable is read in `token()`, not by clap: `roster node --token-file` shares
    // this option, and a client's environment must not pick a node's token file.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub token_file: Option<std::path::PathBuf>,
    /// CA file (PEM) to verify the nodes' TLS certificates: TLS is on when given [env: ROSTER_TLS_CA].
    // The TLS variables are read in `connector()`, not by clap, as the token file's:
    // `roster node --tls-ca` and the others share these options.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Certificate (PEM) this client presents over TLS, with --tls-key [env: ROSTER_TLS_CERT].
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert [env: ROSTER_TLS_KEY].
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub tls_key: Option<std::path::PathBuf>,
    /// Give up after this long.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// Print machine-readable JSON (fields documented in docs/json.md).
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    pub json: bool,
}

const CLIENT_OPTIONS: &str = "Client options";

impl ClientArgs {
    /// Token from ROSTER_TOKEN, --token-file, ROSTER_TOKEN_FILE, or `./roster-data/token`
    /// left by `roster dev`.
    pub fn token(&self) -> Result<String, roster_real::config::ConfigError> {
        let dev_token = std::path::Path::new(dev::DEFAULT_DATA_DIR).join("token");
        let from_env = || std::env::var_os("ROSTER_TOKEN_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let file = self.token_file.clone().or_else(from_env).or_else(|| dev_token.exists().then_some(dev_token));
        roster_real::config::resolve_token(None, file.as_deref())
    }

    /// Plain TCP, or TLS when a CA is given (--tls-ca, else ROSTER_TLS_CA); the client's
    /// own certificate and key likewise. A file that does not load is named.
    pub fn connector(&self) -> Result<roster_real::client::Connector, failure::CliError> {
        let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let pick = |flag: &Option<std::path::PathBuf>, env: &str| flag.clone().or_else(|| from_env(env));
        let ca = pick(&self.tls_ca, "ROSTER_TLS_CA");
        let (cert, key) = (pick(&self.tls_cert, "ROSTER_TLS_CERT"), pick(&self.tls_key, "ROSTER_TLS_KEY"));
        let Some(ca) = ca else {
            if cert.is_some() || key.is_some() {
                return Err(failure::CliError::Usage(
                    "--tls-cert / --tls-key given without --tls-ca: TLS needs the cluster's CA to verify the nodes"
                        .into(),
                ));
            }
            return Ok(roster_real::client::Connector::Plain);
        };
        let tls = roster_real::client::ClientTls::load(roster_real::client::TlsFiles { ca, cert, key })?;
        Ok(roster_real::client::Connector::Tls(tls))
    }

    /// The CA file TLS verifies the nodes with, if TLS is on (public: a worker may hold it).
    pub fn tls_ca_path(&self) -> Option<std::path::PathBuf> {
        self.tls_ca.clone().or_else(|| std::env::var_os("ROSTER_TLS_CA").filter(|v| !v.is_empty()).map(Into::into))
    }

    pub async fn connect(&self) -> Result<roster_real::client::Client, failure::CliError> {
        let options = roster_real::client::ClientOptions {
            endpoints: self.endpoints.clone(),
            token: self.token()?,
            connect_timeout_ms: self.timeout_ms.min(2_000),
            request_timeout_ms: self.timeout_ms,
        };
        let cluster = roster_real::client::Cluster::with_connector(options, self.connector()?)?;
        Ok(roster_real::client::Client::with_cluster(cluster, Default::default(), rand::random())?)
    }
}

/// The log's default filter (`RUST_LOG` replaces it). openraft's own WARNs report every
/// failed RPC to a peer that is down or not listening yet (for a heartbeat, 25 a second
/// per peer), which every restart and every stop of a member causes. Its heartbeat worker
/// and its handle (`raft_inner`) report a stopped Raft core as ERRORs whenever a call was
/// on its way as the core stopped, which a clean stop cannot always avoid; a core that
/// stops for a fault is reported by Roster itself (`server::raft_stopped`: the node exits
/// naming the cause). Roster says what an operator acts on (a fail-stopped log, a peer of
/// another cluster, a refused vote); openraft's other errors still show.
const DEFAULT_LOG_FILTER: &str = "info,openraft=error,openraft::core::heartbeat=off,openraft::raft::raft_inner=off";

pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let colour = log_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).try_init();
}

/// Colour in the log only on a terminal, and not there either when `NO_COLOR` is set to
/// anything but the empty string (no-color.org): escape codes in a log file or a pipe
/// are noise to `grep` and to a log collector.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some((name, options)) = misplaced_client_options(&cli.command, &matches) {
        let msg = format!("`roster {name}` does not take {options}: only client commands do");
        command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit();
    }
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
    let c = cli.client;
    let json = c.json;
    let result: Result<ExitCode, failure::CliError> = rt.block_on(async move {
        match cli.command {
            Command::Node(a) => node_cmd::run(*a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Status => client_cmds::status(c).await,
            Command::Health => health_cmd::run(c).await,
            Command::Get(a) => client_cmds::get(a, c).await,
            Command::Ls(a) => client_cmds::ls(a, c).await,
            Command::Tombstones(a) => client_cmds::tombstones(a, c).await,
            Command::Put(a) => client_cmds::put(a, c).await,
            Command::Del(a) => client_cmds::del(a, c).await,
            Command::Kv(a) => client_cmds::kv(a, c).await,
            Command::Watch(a) => client_cmds::watch(a, c).await,
            Command::Member(a) => client_cmds::member(a, c).await,
            Command::Server(a) => server_cmd::run(a, c).await,
            Command::Snapshot(a) => snapshot_cmd::run(a, c).await,
            Command::Bench(a) => bench::run(a, c).await,
            Command::Run(a) => run_cmd::run(a, c).await,
            Command::Launch(a) => launch_cmd::run(a, c).await,
            Command::Logs(a) => logs_cmd::run(a, c).await,
            Command::Token(a) => token_cmd::run(a, c).await,
        }
    });
    // Background tasks (connections, heartbeats) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            // With --json, a script reads the error as HTTP gives it; a person reads stderr.
            if json {
                match serde_json::to_string_pretty(&e.view()) {
                    Ok(line) => outln!("{line}"),
                    Err(encode) => eprintln!("error: cannot encode the error as JSON: {encode}"),
                }
            }
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The command line's grammar. The client options are global, so clap would list them
/// under `node` and `dev` too, which take none of them. There each gets a hidden stand-in
/// of the same id and value type instead (clap propagates a global option only where its
/// id is free), so the help leaves them out and `misplaced_client_options` names them.
fn command() -> clap::Command {
    let stand_ins = |ids: &'static [&'static str]| {
        move |sc: clap::Command| ids.iter().fold(sc, |sc, id| sc.arg(hidden_stand_in(id)))
    };
    Cli::command()
        .mut_subcommand("node", stand_ins(NODE_FOREIGN_OPTIONS))
        .mut_subcommand("dev", stand_ins(DEV_FOREIGN_OPTIONS))
}

fn hidden_stand_in(id: &'static str) -> clap::Arg {
    let arg = clap::Arg::new(id).hide(true);
    match id {
        "json" => arg.long("json").action(clap::ArgAction::SetTrue),
        "timeout_ms" => arg.long("timeout-ms").value_parser(clap::value_parser!(u64)),
        "token_file" => arg.long("token-file").value_parser(clap::value_parser!(std::path::PathBuf)),
        "tls_ca" => arg.long("tls-ca").value_parser(clap::value_parser!(std::path::PathBuf)),
        "tls_cert" => arg.long("tls-cert").value_parser(clap::value_parser!(std::path::PathBuf)),
        "tls_key" => arg.long("tls-key").value_parser(clap::value_parser!(std::path::PathBuf)),
        "endpoints" => arg.long("endpoints").value_delimiter(',').action(clap::ArgAction::Append),
        other => unreachable!("no stand-in for client option {other}"),
    }
}

/// Client options `roster node` does not take (its `--token-file` and TLS files are its own).
const NODE_FOREIGN_OPTIONS: &[&str] = &["endpoints", "timeout_ms", "json"];
/// Client options `roster dev` does not take.
const DEV_FOREIGN_OPTIONS: &[&str] =
    &["endpoints", "token_file", "tls_ca", "tls_cert", "tls_key", "timeout_ms", "json"];

/// The client options given on the command line of a command that is not a client (a
/// node or the dev cluster), e.g. `roster node --endpoints ...`: they would be ignored.
/// A node's `--token-file` and TLS files are its own.
fn misplaced_client_options(command: &Command, matches: &clap::ArgMatches) -> Option<(&'static str, String)> {
    let (name, ids): (&str, &[&str]) = match command {
        Command::Node(_) => ("node", NODE_FOREIGN_OPTIONS),
        Command::Dev(_) => ("dev", DEV_FOREIGN_OPTIONS),
        _ => return None,
    };
    let given: Vec<String> = ids
        .iter()
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    (!given.is_empty()).then(|| (name, given.join(", ")))
}

/// Writes to stdout; see [`outln!`].
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // The reader has what it wanted (`head`, `grep -q`) and closed the pipe: done, as
        // the tools of a pipeline expect, without a panic or an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_colour;
    use std::ffi::OsStr;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some(OsStr::new(""))));
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None));
    }
}
