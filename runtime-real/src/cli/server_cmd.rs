//! `roster server drain ID` / `roster server undrain ID`: an operator's drain, a
//! replicated flag on the server's entry (`Command::SetDrained`). Placement never picks a
//! drained server; it still heartbeats and stays a member.

use super::ClientArgs;
use clap::{Args, Subcommand};
use roster_kernel::ServerId;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(subcommand)]
    op: ServerOp,
}

#[derive(Subcommand, Debug)]
enum ServerOp {
    /// Stop placing new processes on server ID (what runs there keeps running).
    Drain {
        /// The server's id.
        id: u64,
    },
    /// Let placement pick server ID again.
    Undrain {
        /// The server's id.
        id: u64,
    },
}

pub async fn run(args: ServerArgs, c: ClientArgs) -> Result<ExitCode, super::failure::CliError> {
    let (id, drained) = match args.op {
        ServerOp::Drain { id } => (id, true),
        ServerOp::Undrain { id } => (id, false),
    };
    let client = c.connect().await?;
    let revision = client.set_drained(ServerId(id), drained).await?;
    if c.json {
        let v = serde_json::json!({ "server": id, "drained": drained, "revision": revision });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if drained {
        outln!("server {id} drained: placement no longer picks it (revision {revision})");
    } else {
        outln!("server {id} undrained: placement may pick it again (revision {revision})");
    }
    Ok(ExitCode::SUCCESS)
}
