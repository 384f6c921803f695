//! `roster run`: wraps any program as a cluster member.
//!
//! 1. With the credential it was given (admin, or the agent of the server), the wrapper
//!    registers the process and mints a `member` token bound to it alone.
//! 2. It then replaces itself (exec) with `roster run --attach ID`, whose environment holds
//!    that member token and nothing else of the cluster's: no admin token, token file,
//!    peer key or TLS key. So neither the wrapper nor the program can do more than speak
//!    for this one member.
//! 3. Attached, it starts the program with `ROSTER_MEMBER_ID` and the member token in its
//!    environment, heartbeats while it lives, forwards SIGINT/SIGTERM to it, and when it
//!    exits deregisters with its exit status and exits with the same status.
//!
//! A program that cannot be found fails before anything is registered.

use super::ClientArgs;
use super::failure::CliError;
use clap::Args;
use roster_kernel::{Command, MemberId, ProcessId, ProcessInfo, Reply, ResourceAverage, ServerId, TokenRole};
use std::os::unix::process::{CommandExt, ExitStatusExt};
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
    /// Watch process ID, registered already, with its member token in ROSTER_TOKEN (what
    /// the wrapper runs as after registering; launched jobs start so too).
    #[arg(long)]
    attach: Option<u64>,
    /// The program's CPU and memory (its whole process tree, sampled every second) are
    /// averaged over this window and sent with its heartbeats.
    #[arg(long, default_value_t = roster_kernel::resource_window::DEFAULT_WINDOW_MS)]
    resource_window_ms: u64,
    /// The program and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: RunArgs, client_args: ClientArgs) -> Result<ExitCode, CliError> {
    super::init_logging();
    let (program, _) = args.command.split_first().ok_or_else(nothing_to_run)?;
    if let Err(e) = find_program(program) {
        eprintln!("error: cannot start {program:?}: {e}");
        return Ok(ExitCode::from(if e.kind() == std::io::ErrorKind::PermissionDenied { 126 } else { 127 }));
    }
    match args.attach {
        Some(id) => attached(args, client_args, ProcessId(id)).await,
        None => register_then_attach(args, client_args).await,
    }
}

/// Step 1 and 2: register with the given credential, mint the member token, exec attached.
async fn register_then_attach(args: RunArgs, client_args: ClientArgs) -> Result<ExitCode, CliError> {
    let labels = args.labels.iter().map(|l| super::client_cmds::parse_label(l)).collect::<Result<_, _>>()?;
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
    let registering = |source| CliError::Step { doing: format!("registering {:?}", args.name), source };
    let id = match client.execute(Command::RegisterProcess { info }).await.map_err(registering)? {
        Reply::ProcessRegistered { id, .. } => id,
        other => return Err(CliError::unexpected("registering a process", &other)),
    };
    let secret = roster_real::server::launch::new_secret();
    let role = TokenRole::Member(MemberId::Process(id));
    if let Err(source) = client.create_token(&secret, format!("run {}", args.name), role, None).await {
        let _ = client.execute(Command::DeregisterProcess { id, exit_status: None }).await;
        return Err(CliError::Step { doing: format!("minting the member token of {id}"), source });
    }
    tracing::info!(process = %id, name = %args.name, "registered");
    let exe = std::env::current_exe().map_err(|source| system("find the roster binary", source))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run")
        .args(["--attach", &id.0.to_string(), "--name", &args.name])
        .args(["--heartbeat-interval-ms", &args.heartbeat_interval_ms.to_string()])
        .args(["--leave-timeout-ms", &args.leave_timeout_ms.to_string()])
        .args(["--resource-window-ms", &args.resource_window_ms.to_string()])
        .args(["--endpoints", &client_args.endpoints.join(",")])
        .args(["--timeout-ms", &client_args.timeout_ms.to_string()]);
    if let Some(ca) = client_args.tls_ca_path() {
        cmd.arg("--tls-ca").arg(ca);
    }
    for var in roster_real::server::launch::SECRET_VARS {
        cmd.env_remove(var);
    }
    cmd.env("ROSTER_TOKEN", &secret);
    cmd.arg("--").args(&args.command);
    // Only returns if the exec failed; the registration is then undone.
    let error = cmd.exec();
    let _ = client.execute(Command::DeregisterProcess { id, exit_status: Some(127) }).await;
    Err(system("run the attached wrapper", error))
}

/// Step 3: start the program with its member credential, heartbeat, deregister at its end.
async fn attached(args: RunArgs, client_args: ClientArgs, id: ProcessId) -> Result<ExitCode, CliError> {
    let (program, program_args) = args.command.split_first().ok_or_else(nothing_to_run)?;
    let client = client_args.connect().await?;
    let token = client_args.token()?;
    let mut child = match program_command(program, program_args, id, &token).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start {program:?}: {e}");
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied { 126 } else { 127 };
            let _ = client.execute(Command::DeregisterProcess { id, exit_status: Some(code) }).await;
            return Ok(ExitCode::from(code as u8));
        }
    };
    let pid = child.id();
    let handle = roster_real::client::ProcessHandle::start(client, id, args.heartbeat_interval_ms);
    let window = roster_kernel::resource_window::ResourceWindow::new(
        args.resource_window_ms,
        super::tree_probe::SAMPLE_EVERY_MS.min(args.resource_window_ms),
    )?;
    let mut tree = pid.map(|pid| super::tree_probe::TreeWindow::new(pid, window));
    let started = tokio::time::Instant::now();
    let mut sample_every = tokio::time::interval(std::time::Duration::from_millis(super::tree_probe::SAMPLE_EVERY_MS));
    let watch = |kind, what: &str| {
        tokio::signal::unix::signal(kind).map_err(|source| system(&format!("watch for {what}"), source))
    };
    let mut term = watch(tokio::signal::unix::SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(tokio::signal::unix::SignalKind::interrupt(), "SIGINT")?;
    let status = loop {
        tokio::select! {
            biased;
            status = child.wait() => break status.map_err(|source| system(&format!("wait for {program:?}"), source))?,
            _ = term.recv() => forward(pid, libc::SIGTERM),
            _ = int.recv() => forward(pid, libc::SIGINT),
            // The program's tree, averaged over the window, rides on the next heartbeats.
            _ = sample_every.tick(), if tree.is_some() => {
                let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if let Some(tree) = tree.as_mut() {
                    handle.report_resources(tree.sample(now_ms));
                }
            }
        }
    };
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    // Bounded: with the cluster unreachable the wrapper must still end (with the
    // program's status); the leader then expires the member instead.
    let leave = tokio::time::timeout(std::time::Duration::from_millis(args.leave_timeout_ms), handle.close(Some(code)));
    match leave.await {
        Ok(Ok(())) => tracing::info!(process = %id, exit_status = code, "deregistered"),
        Ok(Err(e)) => eprintln!("warning: deregistering {id} failed: {e}; the cluster will expire it"),
        Err(_) => eprintln!(
            "warning: {id} not deregistered within {} ms (cluster unreachable?); the cluster will expire it",
            args.leave_timeout_ms
        ),
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// The program to run as member `id`: its own credential in the environment and none of
/// the wrapper's, and it dies with the wrapper.
fn program_command(program: &str, program_args: &[String], id: ProcessId, token: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(program_args).kill_on_drop(false);
    for var in roster_real::server::launch::SECRET_VARS {
        cmd.env_remove(var);
    }
    cmd.env("ROSTER_MEMBER_ID", MemberId::Process(id).to_string()).env("ROSTER_TOKEN", token);
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
    cmd
}

/// Where `program` is: a path as given, or the first executable of that name in PATH.
fn find_program(program: &str) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| -> std::io::Result<()> {
        let meta = std::fs::metadata(p)?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            Ok(())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "not an executable file"))
        }
    };
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return executable(&path).map(|()| path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH"))
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
async fn local_server(client: &roster_real::client::Client, timeout_ms: u64) -> Result<ServerId, CliError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    loop {
        let status = client.status().await?;
        if status.servers.iter().any(|s| s.entry.id.0 == status.node) {
            return Ok(ServerId(status.node));
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::NoLocalServer { node: status.node, waited_ms: timeout_ms });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn nothing_to_run() -> CliError {
    CliError::Usage("nothing to run: give -- CMD ARGS".into())
}

fn system(what: &str, source: std::io::Error) -> CliError {
    CliError::System { what: what.to_string(), source }
}
