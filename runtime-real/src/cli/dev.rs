//! `roster dev`: a local 3-node cluster on loopback, data under ./roster-data, live
//! status until ctrl-c. A restart reuses the data (and the token, and with `--tls` the
//! throwaway CA and certificates).

use super::failure::CliError;
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
    /// TLS between the nodes, for clients and on HTTP: a throwaway CA and node
    /// certificates are made under DATA_DIR/tls (kept for a restart).
    #[arg(long)]
    tls: bool,
    /// Programs `roster launch` may start on the dev nodes: absolute paths, taken as their
    /// canonical form (symlinks resolved), e.g. `--launch-allow /usr/bin/sleep /usr/bin/python3`.
    #[arg(long, num_args = 1.., value_name = "PROGRAM")]
    launch_allow: Vec<PathBuf>,
}

/// A `--launch-allow` program the dev cluster cannot allow.
#[derive(Debug, thiserror::Error)]
pub enum LaunchAllowError {
    #[error(
        "--launch-allow {given}: not an absolute path; a launch names its program exactly, so give the full path \
         (e.g. `$(command -v {given})`)"
    )]
    NotAbsolute { given: String },
    #[error("--launch-allow {given}: {source}; give the path of an existing program")]
    Unresolvable { given: String, source: std::io::Error },
    #[error("--launch-allow {given}: {canonical} is not a file")]
    NotAFile { given: String, canonical: String },
}

/// The canonical paths of the programs to allow: each absolute, existing, a file.
fn canonical_programs(given: &[PathBuf]) -> Result<Vec<String>, LaunchAllowError> {
    given
        .iter()
        .map(|path| {
            let shown = path.display().to_string();
            if !path.is_absolute() {
                return Err(LaunchAllowError::NotAbsolute { given: shown });
            }
            let canonical = std::fs::canonicalize(path)
                .map_err(|source| LaunchAllowError::Unresolvable { given: shown.clone(), source })?;
            if !canonical.is_file() {
                return Err(LaunchAllowError::NotAFile { given: shown, canonical: canonical.display().to_string() });
            }
            Ok(canonical.display().to_string())
        })
        .collect()
}

/// The dev cluster's TLS files: the CA, and each node's certificate and key.
struct DevTls {
    ca: PathBuf,
    nodes: Vec<(PathBuf, PathBuf)>,
}

pub async fn run(args: DevArgs) -> Result<ExitCode, CliError> {
    super::init_logging();
    create_dir(&args.data_dir)?;
    let token_file = ensure_token(&args.data_dir)?;
    let launch_allow = canonical_programs(&args.launch_allow)?;
    let tls = if args.tls { Some(ensure_tls(&args.data_dir, args.nodes)?) } else { None };
    let configs = node_configs(&args, &token_file, &launch_allow, tls.as_ref());
    // Started together, so that their bootstrap checks see each other deciding and they
    // form the cluster together (one by one, the first would form it alone).
    let mut nodes: Vec<roster_real::node::Node> =
        futures::future::try_join_all(configs.into_iter().map(super::node_cmd::start_node)).await?;
    let endpoints: Vec<String> = (1..=args.nodes).map(|n| args.addr(n)).collect();
    print_welcome(&args, &endpoints, &token_file, &launch_allow, tls.as_ref());
    let client_args = super::ClientArgs {
        endpoints,
        token_file: Some(token_file),
        tls_ca: tls.as_ref().map(|t| t.ca.clone()),
        tls_cert: None,
        tls_key: None,
        timeout_ms: 2_000,
        json: false,
    };
    tokio::select! {
        biased;
        _ = super::node_cmd::wait_for_signal() => {}
        _ = print_status_every(args.status_every_s, &client_args) => {}
    }
    outln!("stopping: every node deregisters, then stops");
    // All leave first, together, while a quorum still runs to commit their deregistrations.
    futures::future::join_all(nodes.iter_mut().map(|n| n.leave())).await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

impl DevArgs {
    /// Node `n`'s binary-protocol address.
    fn addr(&self, n: u64) -> String {
        format!("127.0.0.1:{}", self.base_port as u64 + n - 1)
    }

    /// Node `n`'s HTTP address.
    fn http_addr(&self, n: u64) -> String {
        format!("127.0.0.1:{}", self.http_base_port as u64 + n - 1)
    }
}

/// Every dev node's settings: all bootstrap together, with one token file.
fn node_configs(args: &DevArgs, token_file: &Path, launch_allow: &[String], tls: Option<&DevTls>) -> Vec<NodeConfig> {
    let peers: std::collections::BTreeMap<u64, String> = (1..=args.nodes).map(|n| (n, args.addr(n))).collect();
    let mut configs = Vec::new();
    for n in 1..=args.nodes {
        let mut config = NodeConfig::new(n, args.addr(n), args.data_dir.join(format!("node-{n}")));
        config.peers = peers.clone();
        config.bootstrap = true;
        config.token_file = Some(token_file.to_path_buf());
        config.name = Some(format!("dev-{n}"));
        config.http_listen = Some(args.http_addr(n));
        config.launch_allow = launch_allow.to_vec();
        if let Some(tls) = tls {
            let (cert, key) = tls.nodes[n as usize - 1].clone();
            (config.tls_cert, config.tls_key, config.tls_ca) = (Some(cert), Some(key), Some(tls.ca.clone()));
        }
        configs.push(config);
    }
    configs
}

/// What runs where, and the first commands to try.
fn print_welcome(
    args: &DevArgs,
    endpoints: &[String],
    token_file: &Path,
    launch_allow: &[String],
    tls: Option<&DevTls>,
) {
    outln!("roster dev: {} nodes on {}", args.nodes, endpoints.join(", "));
    outln!("data: {}   token file: {}", args.data_dir.display(), token_file.display());
    let scheme = if tls.is_some() { "https" } else { "http" };
    outln!("web:  {scheme}://{}/   (the cluster page; it asks for the token once)", args.http_addr(1));
    match tls {
        None => {
            outln!("try:  roster status --endpoints {}", endpoints.join(","));
            outln!(
                "      curl -H \"Authorization: Bearer $(cat {})\" http://{}/v1/status",
                token_file.display(),
                args.http_addr(1)
            );
        }
        Some(tls) => {
            outln!("tls:  CA {} (throwaway; clients verify the nodes with it)", tls.ca.display());
            outln!("try:  roster status --endpoints {} --tls-ca {}", endpoints.join(","), tls.ca.display());
            outln!("      (or export ROSTER_TLS_CA={})", tls.ca.display());
            outln!(
                "      curl --cacert {} -H \"Authorization: Bearer $(cat {})\" https://{}/v1/status",
                tls.ca.display(),
                token_file.display(),
                args.http_addr(1)
            );
        }
    }
    if launch_allow.is_empty() {
        outln!("launch: off (allow programs with --launch-allow /ABSOLUTE/PATH ...)");
    } else {
        outln!("launch: {} (roster launch --name job -- PROGRAM ARGS)", launch_allow.join(" "));
    }
    outln!("stop: ctrl-c");
}

/// A status line every `every_s` seconds (never, with 0).
async fn print_status_every(every_s: u64, client_args: &super::ClientArgs) {
    if every_s == 0 {
        return std::future::pending::<()>().await;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(every_s)).await;
        match super::client_cmds::fetch_status(client_args).await {
            Ok(s) => outln!("{}", super::client_cmds::render_status(&s)),
            Err(e) => outln!("status: {e}"),
        }
    }
}

/// The dev cluster's throwaway CA and a certificate for each node (for `localhost` and
/// `127.0.0.1`), made once under `DIR/tls`; made again if any file is missing.
fn ensure_tls(dir: &Path, nodes: u64) -> Result<DevTls, CliError> {
    let tls_dir = dir.join("tls");
    let ca = tls_dir.join("ca.pem");
    let node_files = |n: u64| (tls_dir.join(format!("node-{n}.pem")), tls_dir.join(format!("node-{n}.key")));
    let tls = DevTls { ca: ca.clone(), nodes: (1..=nodes).map(node_files).collect() };
    if ca.exists() && tls.nodes.iter().all(|(c, k)| c.exists() && k.exists()) {
        return Ok(tls);
    }
    create_dir(&tls_dir)?;
    let authority = roster_real::tls::throwaway::Ca::new("roster dev CA")?;
    let validity = roster_real::tls::throwaway::validity(std::time::Duration::from_secs(365 * 86_400));
    for n in 1..=nodes {
        let issued = authority.issue(&format!("roster dev node {n}"), &["localhost", "127.0.0.1"], validity);
        issued?.write(&tls_dir, &format!("node-{n}")).map_err(|source| CliError::File {
            action: "write the TLS files of a node in",
            path: tls_dir.clone(),
            source,
        })?;
    }
    std::fs::write(&ca, authority.cert_pem()).map_err(|source| CliError::File {
        action: "write",
        path: ca.clone(),
        source,
    })?;
    Ok(tls)
}

/// The dev cluster's token (its bootstrap admin credential) and peer key: made once,
/// random, kept beside the data, readable by their owner only.
fn ensure_token(dir: &Path) -> Result<PathBuf, CliError> {
    let path = dir.join("token");
    write_secret_once(&path)?;
    write_secret_once(&dir.join(roster_real::config::PEER_KEY_FILE))?;
    Ok(path)
}

/// Writes a fresh secret to `path` with mode 0600, unless it exists.
fn write_secret_once(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        return Ok(());
    }
    Ok(super::secret_file::write_new(path, &roster_real::server::launch::new_secret())?)
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::File { action: "create", path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_allow_takes_absolute_existing_files_in_their_canonical_form() {
        let dir = std::env::temp_dir().join(format!("roster-dev-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let program = dir.join("job.sh");
        std::fs::write(&program, "#!/bin/sh\n").expect("write");
        let link = dir.join("link.sh");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&program, &link).expect("symlink");
        let canonical = std::fs::canonicalize(&program).expect("canonical").display().to_string();
        assert_eq!(canonical_programs(std::slice::from_ref(&link)).expect("allowed"), vec![canonical]);
        let relative = canonical_programs(&[PathBuf::from("sleep")]).expect_err("relative");
        assert!(matches!(relative, LaunchAllowError::NotAbsolute { .. }), "{relative}");
        assert!(relative.to_string().contains("command -v sleep"), "{relative}");
        let missing = canonical_programs(&[dir.join("nothing")]).expect_err("missing");
        assert!(matches!(missing, LaunchAllowError::Unresolvable { .. }), "{missing}");
        assert!(matches!(canonical_programs(std::slice::from_ref(&dir)), Err(LaunchAllowError::NotAFile { .. })));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
