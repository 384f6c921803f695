//! `roster`: run a node, a local dev cluster, or talk to a cluster.

#[cfg(not(madsim))]
mod cli;

/// mimalloc instead of glibc malloc: a node under write load allocates per request, and
/// glibc's free lists (consolidation, unlinking) cost about a fifth of its CPU.
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// Under `--cfg madsim` the node runs inside the simulator (`roster-sim`); a real
/// process, signals and a terminal make no sense there.
#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    eprintln!("error: this roster binary was built with --cfg madsim; use roster-sim to run the simulator");
    std::process::ExitCode::from(2)
}
