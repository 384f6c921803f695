//! `roster run`: wraps any program as a cluster member. The program is started first (so
//! a bad path fails before anything is registered), then registered; the wrapper
//! heartbeats while it lives, forwards SIGINT/SIGTERM to it, and when it exits
//! deregisters with its exit status and exits with the same status.

use super::ClientArgs;
use clap::Args;
use roster_kernel::{ProcessInfo, ResourceAverage, ServerId};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Name of the process member it registers as.
    #[arg(long)]
    name: String,
    /// A label `k=v` of the process (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The port the program serves on, if any.
    #[arg(long)]
    port: Option<u16>,
    /// The host the program serves on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The server hosting it (default: the node first reached).
    #[arg(long)]
    server_id: Option<u64>,
    /// How often it heartbeats while the program lives.
    #[arg(long, default_value_t = 1_000)]
    heartbeat_interval_ms: u64,
    /// Memory (bytes) to set aside for it in placement.
    #[arg(long)]
    reserve_mem: Option<u64>,
    /// CPU (% of one core) to set aside for it in placement.
    #[arg(long)]
    reserve_cpu: Option<u32>,
    /// After the program ends, how long to try to deregister before giving up.
    #[arg(long, default_value_t = 10_000)]
    leave_timeout_ms: u64,
    /// The program and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: RunArgs, client_args: ClientArgs) -> Result<ExitCode, String> {
    super::init_logging();
    let labels = args.labels.iter().map(|l| super::client_cmds::parse_label(l)).collect::<Result<_, _>>()?;
    let (program, program_args) = args.command.split_first().ok_or("nothing to run: give -- CMD ARGS")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(program_args).kill_on_drop(false);
    // If the wrapper dies (even by SIGKILL) the cluster will expire the member; the
    // program must not live on unwatched, so the kernel sends it SIGTERM.
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start {program:?}: {e}");
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied { 126 } else { 127 };
            return Ok(ExitCode::from(code));
        }
    };
    let pid = child.id();
    let client = client_args.connect().await?;
    let server = match args.server_id {
        Some(s) => ServerId(s),
        None => local_server(&client, client_args.timeout_ms).await?,
    };
    let info = ProcessInfo {
        name: args.name.clone(),
        server,
        service_host: args.host.clone(),
        service_port: args.port,
        started_at_unix_ms: roster_real::rt::clock::unix_ms(),
        labels,
        reserved: ResourceAverage {
            cpu_percent_avg: args.reserve_cpu.unwrap_or(0),
            mem_bytes_used_avg: args.reserve_mem.unwrap_or(0),
        },
    };
    // Registration retries through the client's queue while the program already runs.
    let register = client.register_process(info, args.heartbeat_interval_ms);
    tokio::pin!(register);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut handle = None;
    let status = loop {
        tokio::select! {
            biased;
            status = child.wait() => break status.map_err(|e| format!("waiting for {program:?}: {e}"))?,
            _ = term.recv() => forward(pid, libc::SIGTERM),
            _ = int.recv() => forward(pid, libc::SIGINT),
            h = &mut register, if handle.is_none() => {
                let h = h.map_err(|e| format!("registering {:?}: {e}", args.name))?;
                tracing::info!(process = %h.id(), name = %args.name, "registered");
                handle = Some(h);
            }
        }
    };
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    match handle {
        Some(h) => {
            let id = h.id();
            // Bounded: with the cluster unreachable the wrapper must still end (with the
            // program's status); the leader then expires the member instead.
            let leave =
                tokio::time::timeout(std::time::Duration::from_millis(args.leave_timeout_ms), h.close(Some(code)));
            match leave.await {
                Ok(Ok(())) => tracing::info!(process = %id, exit_status = code, "deregistered"),
                Ok(Err(e)) => eprintln!("warning: deregistering {id} failed: {e}; the cluster will expire it"),
                Err(_) => eprintln!(
                    "warning: {id} not deregistered within {} ms (cluster unreachable?); the cluster will expire it",
                    args.leave_timeout_ms
                ),
            }
        }
        None => tracing::warn!("program ended before its registration committed"),
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn forward(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// The server node this wrapper reached, once that server's own registration is in the
/// record (right after a start it may not be yet, and a process must name a known host).
async fn local_server(client: &roster_real::client::Client, timeout_ms: u64) -> Result<ServerId, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    loop {
        let status = client.status().await.map_err(|e| e.to_string())?;
        if status.servers.iter().any(|s| s.entry.id.0 == status.node) {
            return Ok(ServerId(status.node));
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "server node {} has not registered itself within {timeout_ms} ms; give --server-id",
                status.node
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
