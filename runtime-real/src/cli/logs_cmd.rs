//! `roster logs PROCESS [--follow] [--tail N]`: the output of a launched process, read on
//! the node that runs it (see `server/output.rs`).

use super::ClientArgs;
use super::failure::CliError;
use clap::Args;
use roster_kernel::MemberId;
use roster_real::net::wire::{Consistency, OutputFrom, OutputRequest};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The launched process: `process-ID` (or `process:ID`) or its name (also of one that
    /// ended recently).
    process: String,
    /// Only the last N lines (within the 256 KiB one read returns).
    #[arg(long, value_name = "N")]
    tail: Option<u32>,
    /// Keep printing the output as it grows, until the process has left (or ctrl-c).
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Pause between reads while following: the output is a file, read again as it grows.
const FOLLOW_POLL_MS: u64 = 500;

pub async fn run(args: LogsArgs, c: ClientArgs) -> Result<ExitCode, CliError> {
    let client = c.connect().await?;
    let process = match super::lookup::resolve_with_departed(&client, &args.process, Consistency::Linearizable).await? {
        MemberId::Process(id) => id,
        MemberId::Server(id) => {
            return Err(CliError::Usage(format!("{id} is a server: `roster logs` reads a launched process's output")));
        }
    };
    let stdout_closed = super::stdout_closed::wait();
    tokio::pin!(stdout_closed);
    let mut from = match args.tail {
        Some(lines) => OutputFrom::TailLines(lines),
        None => OutputFrom::Offset(0),
    };
    loop {
        let chunk = client.output(OutputRequest { process, from }).await?;
        write_raw(&chunk.data);
        let next = chunk.offset + chunk.data.len() as u64;
        from = OutputFrom::Offset(next);
        let more_now = next < chunk.size_bytes;
        if more_now && args.tail.is_none() {
            continue;
        }
        if !args.follow || (chunk.process_left && !more_now) {
            return Ok(ExitCode::SUCCESS);
        }
        if !more_now {
            tokio::select! {
                biased;
                () = &mut stdout_closed => return Ok(ExitCode::SUCCESS),
                () = tokio::time::sleep(std::time::Duration::from_millis(FOLLOW_POLL_MS)) => {}
            }
        }
    }
}

/// The output's bytes as they are (it need not be UTF-8); a closed pipe ends quietly.
fn write_raw(data: &[u8]) {
    use std::io::Write;
    if data.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}
