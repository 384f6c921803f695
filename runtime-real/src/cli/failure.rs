//! How a client command failed: one line on stderr, and with `--json` also the error
//! HTTP answers, `{"error": {"kind", "message", ...}}` (`view::ErrorView`), on stdout.
//! A failure of the cluster keeps the kind HTTP gives it; the command's own failures (a
//! bad argument, a file, this machine) are `failed`.

use super::backup_file::BackupFileError;
use super::dev::LaunchAllowError;
use super::lookup::LookupError;
use super::secret_file::SecretFileError;
use super::snapshot_cmd::{RestoreError, SaveError};
use super::value_input::ValueInputError;
use roster_real::client::{ClientError, TlsError};
use roster_real::config::ConfigError;
use roster_real::node::NodeError;
use roster_real::probe::ProbeSpecError;
use roster_real::storage::StorageError;
use roster_real::view::ErrorView;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The cluster's or the client library's answer: its kind is the one HTTP gives it.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// What was asked for is not there (kind `not_found`); `details` says more (the
    /// revision the absence was read at).
    #[error("{message}")]
    NotFound { message: String, details: serde_json::Value },
    /// A member named on the command line that could not be found: `not_found`, or
    /// `ambiguous` for a name several members hold.
    #[error("{0}")]
    Lookup(#[from] LookupError),
    /// The command line asks for what cannot be (a bad value, a flag missing or one that
    /// does not fit the others): the caller fixes the command.
    #[error("{0}")]
    Usage(String),
    /// A request the cluster turned down, with what the command was doing: the kind is
    /// the cluster's, the message says which step failed.
    #[error("{doing}: {source}")]
    Step { doing: String, source: ClientError },
    /// A file or directory the command needs: what it was doing, where, and the OS's reason.
    #[error("cannot {action} {}: {source}", path.display())]
    File { action: &'static str, path: PathBuf, source: std::io::Error },
    /// Something the command needs from this machine (its own binary, a signal handler,
    /// the program it runs) failed.
    #[error("cannot {what}: {source}")]
    System { what: String, source: std::io::Error },
    /// The cluster answered a request with the answer to another: a bug, or a node of
    /// another version.
    #[error("protocol error: {asked} answered with {got}")]
    UnexpectedAnswer { asked: &'static str, got: String },
    /// The value to store could not be read (`kv put`).
    #[error(transparent)]
    Value(#[from] ValueInputError),
    /// A secret file could not be written (`token new-key --out`, `roster dev`).
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    /// A backup file that cannot be read, or does not hold what its header says.
    #[error(transparent)]
    Backup(#[from] BackupFileError),
    /// A snapshot that did not arrive whole (`snapshot save`).
    #[error(transparent)]
    Save(#[from] SaveError),
    /// A restore that would not give a node a clean start (`snapshot restore`).
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A `--launch-allow` program the dev cluster cannot allow.
    #[error(transparent)]
    LaunchAllow(#[from] LaunchAllowError),
    /// A token role that cannot be (`token create`).
    #[error(transparent)]
    Role(#[from] roster_real::server::authority::RoleError),
    /// A node's configuration, a token file or an address that does not hold.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The client's TLS files did not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A node did not start (`roster node`, `roster dev`).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Storage refused a snapshot or could not seed a data directory with it.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// `--probe` names no probe this build has.
    #[error(transparent)]
    Probe(#[from] ProbeSpecError),
    /// The resource window of `roster run` cannot be built from its flags.
    #[error("--resource-window-ms: {0}")]
    ResourceWindow(#[from] roster_kernel::resource_window::WindowConfigError),
    /// The dev cluster's throwaway TLS certificates could not be made.
    #[error("cannot make the dev TLS certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// The node's Raft core stopped for a fault: the node exits so the cluster moves on.
    #[error("Raft stopped: {why}. The node exits; fix the cause, then restart it: it recovers from what is durable")]
    RaftStopped { why: String },
    /// `roster run` could not learn which server it runs on.
    #[error("server node {node} has not registered itself within {waited_ms} ms; give --server-id")]
    NoLocalServer { node: u64, waited_ms: u64 },
    /// `roster watch` found no node to follow within `--outage-timeout-s`.
    #[error("no node took the watch for {waited_s} s (--outage-timeout-s): {source}")]
    WatchOutage { waited_s: u64, source: ClientError },
    /// A benchmark that did not reach its goal (the members it waited for are still there).
    #[error("{left} of {initial} members still present after {waited_s} s")]
    NotExpired { left: usize, initial: usize, waited_s: u64 },
    /// A value the command prints could not be encoded (a bug: every view serializes).
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A worker task of a concurrent command (`bench`) panicked or was cancelled.
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CliError {
    /// The cluster answered `asked` with `got`.
    pub fn unexpected(asked: &'static str, got: &impl std::fmt::Debug) -> Self {
        CliError::UnexpectedAnswer { asked, got: format!("{got:?}") }
    }

    /// The JSON `--json` prints for it.
    pub fn view(&self) -> ErrorView {
        match self {
            CliError::Client(e) => roster_real::http::client_error_view(e.clone()),
            CliError::NotFound { message, details } => {
                ErrorView::new("not_found", message).with_details(details.clone())
            }
            CliError::Lookup(e) => {
                let message = e.to_string();
                match e {
                    LookupError::NotFound { .. } => ErrorView::new("not_found", message),
                    LookupError::Ambiguous { .. } => ErrorView::new("ambiguous", message),
                    LookupError::Client { source, .. } => {
                        let mut view = roster_real::http::client_error_view(source.clone());
                        view.error.message = message;
                        view
                    }
                    LookupError::UnexpectedAnswer { .. } => ErrorView::new("failed", message),
                }
            }
            CliError::Step { source, .. } => {
                let mut view = roster_real::http::client_error_view(source.clone());
                view.error.message = self.to_string();
                view
            }
            CliError::Usage(_)
            | CliError::File { .. }
            | CliError::System { .. }
            | CliError::UnexpectedAnswer { .. }
            | CliError::Value(_)
            | CliError::SecretFile(_)
            | CliError::Backup(_)
            | CliError::Save(_)
            | CliError::Restore(_)
            | CliError::LaunchAllow(_)
            | CliError::Role(_)
            | CliError::Config(_)
            | CliError::Tls(_)
            | CliError::Node(_)
            | CliError::Storage(_)
            | CliError::Probe(_)
            | CliError::ResourceWindow(_)
            | CliError::Certificates(_)
            | CliError::RaftStopped { .. }
            | CliError::NoLocalServer { .. }
            | CliError::WatchOutage { .. }
            | CliError::NotExpired { .. }
            | CliError::Json(_)
            | CliError::Task(_) => ErrorView::new("failed", self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failure_prints_the_kind_http_gives_it() {
        let no_leader = CliError::from(ClientError::NoLeader {
            endpoints: vec!["a:1".into()],
            waited_ms: 5,
            last_error: "x".into(),
        });
        let view = no_leader.view();
        assert_eq!(view.error.kind, "no_leader");
        assert_eq!(view.error.message, no_leader.to_string(), "the JSON says what stderr says");

        let absent = CliError::NotFound { message: "key \"k\" is not set".into(), details: json!({ "revision": 9 }) };
        assert_eq!(
            serde_json::to_value(absent.view()).unwrap(),
            json!({ "error": { "kind": "not_found", "message": "key \"k\" is not set", "revision": 9 } })
        );
        let ambiguous = CliError::from(LookupError::Ambiguous { name: "web".into(), ids: vec!["process-1".into()] });
        assert_eq!(ambiguous.view().error.kind, "ambiguous");
        assert_eq!(CliError::Usage("bad --kind".into()).view().error.kind, "failed");
        let step = CliError::Step {
            doing: "registering \"web\"".into(),
            source: ClientError::NoLeader { endpoints: vec!["a:1".into()], waited_ms: 5, last_error: "x".into() },
        };
        assert_eq!(step.view().error.kind, "no_leader", "the cluster's kind, whatever step it failed");
        assert!(step.view().error.message.starts_with("registering \"web\": "), "{}", step.view().error.message);
    }
}
