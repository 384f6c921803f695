//! `roster`: run a node, a local dev cluster, or talk to a cluster.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
