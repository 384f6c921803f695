//! `roster launch`: ask the cluster to start a program on the idlest server that fits.

use super::ClientArgs;
use super::failure::CliError;
use clap::Args;
use roster_real::net::wire::LaunchRequest;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Name of the process member it registers as.
    #[arg(long)]
    name: String,
    /// Only servers with at least this much free memory (bytes).
    #[arg(long)]
    require_mem: Option<u64>,
    /// Only servers with at least this much free CPU (% of one core).
    #[arg(long)]
    require_cpu: Option<u32>,
    /// A label `k=v` of the process (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The program and its arguments (after `--`; the chosen node must allow the program).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: LaunchArgs, client: ClientArgs) -> Result<ExitCode, CliError> {
    let labels = args.labels.iter().map(|l| super::client_cmds::parse_label(l)).collect::<Result<_, _>>()?;
    let (program, rest) =
        args.command.split_first().ok_or_else(|| CliError::Usage("nothing to launch: give -- CMD ARGS".into()))?;
    let req = LaunchRequest {
        name: args.name.clone(),
        program: program.clone(),
        args: rest.to_vec(),
        labels,
        require_mem_bytes: args.require_mem,
        require_cpu_percent: args.require_cpu,
    };
    let json = client.json;
    let client = client.connect().await?;
    let started = client.launch_started(req).await?;
    let (server, process) = (started.server, started.process);
    if json {
        outln!("{}", serde_json::to_string(&roster_real::view::Launched::from(&started))?);
    } else {
        outln!("launched {:?} as {process} on {server}", args.name);
        outln!("output: {} on {server} (`roster logs {process} --follow` reads it from anywhere)", started.output_file);
    }
    Ok(ExitCode::SUCCESS)
}
