//! Node configuration: TOML file and command-line flags are equivalent; flags win.
//! Every bad value is refused at start with an error naming the field and the value.

use crate::raft::NodeId;
use roster_kernel::LivenessConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid {field} = {value:?}: {reason}")]
    Invalid { field: &'static str, value: String, reason: String },
    #[error("missing {field}: {hint}")]
    Missing { field: &'static str, hint: &'static str },
    #[error("cannot read token file {path}: {source}")]
    TokenFile { path: String, source: std::io::Error },
}

/// Everything a node needs to start. Field names are the TOML keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: NodeId,
    /// `HOST:PORT` to listen on, for peers and clients.
    pub listen: String,
    /// `HOST:PORT` others reach this node at; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// `HOST:PORT` of the HTTP/JSON API, `/metrics`, `/livez`, `/readyz` and the web page;
    /// none by default (`roster dev` turns it on).
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Initial voters, `id -> HOST:PORT`, including this node. Used once, to form the cluster.
    #[serde(default)]
    pub peers: BTreeMap<NodeId, String>,
    /// With an empty data directory, form a new cluster of `peers` (unless a peer reports
    /// one already running). Without it, a node with an empty data directory waits to be
    /// added or replaced, and does not vote until it has caught up.
    #[serde(default)]
    pub bootstrap: bool,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The key peers prove to each other (never sent; no client holds it). Default: the
    /// file `peer-key` beside `token_file`, or `ROSTER_PEER_KEY`.
    #[serde(default)]
    pub peer_key: Option<String>,
    #[serde(default)]
    pub peer_key_file: Option<PathBuf>,
    /// When the node runs as root: the user that launched programs run as (their own
    /// user, so a job cannot read the node's files).
    #[serde(default)]
    pub launch_user: Option<String>,
    /// Display name of this server; defaults to `node-<id>`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "defaults::heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "defaults::heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
    #[serde(default = "defaults::resource_window_ms")]
    pub resource_window_ms: u64,
    /// Raft's own leader heartbeat and election timeouts. openraft adds its leader lease
    /// (= `election_timeout_max_ms`) to the sampled timeout, so a follower that stops
    /// hearing from the leader starts an election after `min + max` to `2 × max` ms
    /// (300–400 ms at the defaults), and a leader refuses writes when no quorum
    /// acknowledged it within `election_timeout_max_ms`.
    #[serde(default = "defaults::raft_heartbeat_ms")]
    pub raft_heartbeat_ms: u64,
    #[serde(default = "defaults::election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "defaults::election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many applied entries.
    #[serde(default = "defaults::snapshot_every_entries")]
    pub snapshot_every_entries: u64,
    /// ... or after this many bytes of log (an entry carries a batch of writes), whichever
    /// comes first: the log since the last snapshot is held in memory.
    #[serde(default = "defaults::snapshot_log_bytes")]
    pub snapshot_log_bytes: u64,
    /// Bytes the replicated state may hold (keys and values, labels, event history,
    /// stored replies); a write past it is refused, deletes always pass. The leader
    /// proposes its own value into the record; give every server the same one (see
    /// docs/budget.md).
    #[serde(default = "defaults::state_budget_bytes")]
    pub state_budget_bytes: u64,
    /// Programs this node may start on a launch request (exact program names or paths).
    /// Empty: launching is refused.
    #[serde(default)]
    pub launch_allow: Vec<String>,
    /// `system` (sysinfo) or `fixed:cpu=PCT,mem=BYTES` (pinned synthetic values).
    #[serde(default = "defaults::probe")]
    pub probe: String,
    /// TLS, off unless all three are given: this node's certificate chain and key (PEM),
    /// served to peers and clients on `listen` and `http_listen`, and presented to peers
    /// (mutual TLS); and the CA (PEM) every peer's and client's certificate is checked
    /// against. Re-read on SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

/// Below this, snapshots (each a copy of the whole state) would come too often to pay.
pub const MIN_SNAPSHOT_LOG_BYTES: u64 = 16 << 10;
/// Longest election timeout accepted (a minute); it also bounds the waits derived from it.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 60_000;

pub mod defaults {
    pub fn heartbeat_interval_ms() -> u64 {
        1_000
    }
    pub fn heartbeat_timeout_ms() -> u64 {
        3_000
    }
    pub fn resource_window_ms() -> u64 {
        60_000
    }
    pub fn raft_heartbeat_ms() -> u64 {
        40
    }
    pub fn election_timeout_min_ms() -> u64 {
        100
    }
    pub fn election_timeout_max_ms() -> u64 {
        200
    }
    pub fn snapshot_every_entries() -> u64 {
        20_000
    }
    pub fn snapshot_log_bytes() -> u64 {
        64 << 20
    }
    pub fn state_budget_bytes() -> u64 {
        roster_kernel::DEFAULT_STATE_BUDGET_BYTES
    }
    pub fn probe() -> String {
        "system".into()
    }
}

impl ConfigError {
    pub fn from_duties(e: roster_kernel::DutiesConfigError) -> Self {
        ConfigError::Invalid { field: "heartbeat_timeout_ms", value: String::new(), reason: e.to_string() }
    }
}

impl NodeConfig {
    /// A config with every optional field at its default.
    pub fn new(id: NodeId, listen: String, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            listen,
            advertise: None,
            http_listen: None,
            peers: BTreeMap::new(),
            bootstrap: false,
            data_dir,
            token: None,
            token_file: None,
            peer_key: None,
            peer_key_file: None,
            launch_user: None,
            name: None,
            heartbeat_interval_ms: defaults::heartbeat_interval_ms(),
            heartbeat_timeout_ms: defaults::heartbeat_timeout_ms(),
            resource_window_ms: defaults::resource_window_ms(),
            raft_heartbeat_ms: defaults::raft_heartbeat_ms(),
            election_timeout_min_ms: defaults::election_timeout_min_ms(),
            election_timeout_max_ms: defaults::election_timeout_max_ms(),
            snapshot_every_entries: defaults::snapshot_every_entries(),
            snapshot_log_bytes: defaults::snapshot_log_bytes(),
            state_budget_bytes: defaults::state_budget_bytes(),
            launch_allow: Vec::new(),
            probe: defaults::probe(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }

    /// Whether TLS is on (`validate` checks the three files come together).
    pub fn tls_on(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Reads a TOML file; unknown keys are errors so a typo never goes unnoticed.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })
    }

    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// How long a leadership hand-off may take: the target elects itself at once, so a
    /// few round trips, but a loaded machine may take longer than the election timeouts.
    pub fn hand_off_timeout_ms(&self) -> u64 {
        (4 * self.election_timeout_max_ms).max(2_000)
    }

    /// The state machine's limits with this node's budget, as its leaders would propose
    /// it (checked at start: a budget the limits cannot run with is refused here).
    pub fn limits(&self) -> roster_kernel::Limits {
        roster_kernel::Limits { state_budget_bytes: self.state_budget_bytes, ..roster_kernel::Limits::default() }
    }

    pub fn liveness(&self) -> LivenessConfig {
        LivenessConfig { interval_ms: self.heartbeat_interval_ms, timeout_ms: self.heartbeat_timeout_ms }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addrs()?;
        self.validate_launch_allow()?;
        self.validate_members()?;
        self.validate_timings()?;
        self.validate_storage()?;
        crate::probe::ProbeSpec::parse(&self.probe).map_err(|e| ConfigError::Invalid {
            field: "probe",
            value: e.value,
            reason: e.reason,
        })?;
        self.validate_tls()
    }

    fn validate_addrs(&self) -> Result<(), ConfigError> {
        check_addr("listen", &self.listen)?;
        if let Some(a) = &self.advertise {
            check_addr("advertise", a)?;
        }
        if let Some(a) = &self.http_listen {
            check_addr("http_listen", a)?;
            if a == &self.listen {
                return Err(ConfigError::Invalid {
                    field: "http_listen",
                    value: a.clone(),
                    reason: "must differ from listen: the binary protocol and HTTP need a port each".into(),
                });
            }
        }
        for (id, addr) in &self.peers {
            check_addr("peers", addr).map_err(|_| ConfigError::Invalid {
                field: "peers",
                value: format!("{id}={addr}"),
                reason: "expected ID=HOST:PORT".into(),
            })?;
        }
        Ok(())
    }

    /// Programs a launch may start: exact canonical absolute paths.
    fn validate_launch_allow(&self) -> Result<(), ConfigError> {
        for program in &self.launch_allow {
            let path = std::path::Path::new(program);
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    field: "launch_allow",
                    value: program.clone(),
                    reason: "must be an absolute path (a bare name would be looked up in PATH at each launch)".into(),
                });
            }
            if std::fs::canonicalize(path).is_ok_and(|c| c != path) {
                return Err(ConfigError::Invalid {
                    field: "launch_allow",
                    value: program.clone(),
                    reason: format!(
                        "must be the canonical path {} (no symlinks, `..` or `.`): a launch names it exactly",
                        std::fs::canonicalize(path).map(|c| c.display().to_string()).unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The initial members and `bootstrap`.
    fn validate_members(&self) -> Result<(), ConfigError> {
        if self.bootstrap && self.peers.is_empty() {
            return Err(ConfigError::Invalid {
                field: "bootstrap",
                value: "true".into(),
                reason: "a new cluster needs its initial members: give peers (ID=HOST:PORT,...) with this node among \
                         them"
                    .into(),
            });
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&self.id) {
            return Err(ConfigError::Invalid {
                field: "peers",
                value: self.peers.keys().map(|k| k.to_string()).collect::<Vec<_>>().join(","),
                reason: format!("the initial members must include this node's id {}", self.id),
            });
        }
        Ok(())
    }

    /// Heartbeats, the resource window and Raft's timings, each against the others.
    fn validate_timings(&self) -> Result<(), ConfigError> {
        self.liveness().validate().map_err(|e| ConfigError::Invalid {
            field: "heartbeat_timeout_ms",
            value: self.heartbeat_timeout_ms.to_string(),
            reason: e.to_string(),
        })?;
        if self.resource_window_ms < self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid {
                field: "resource_window_ms",
                value: self.resource_window_ms.to_string(),
                reason: format!("must be at least heartbeat_interval_ms ({})", self.heartbeat_interval_ms),
            });
        }
        if self.raft_heartbeat_ms == 0 || self.election_timeout_min_ms <= self.raft_heartbeat_ms * 2 {
            return Err(ConfigError::Invalid {
                field: "election_timeout_min_ms",
                value: self.election_timeout_min_ms.to_string(),
                reason: format!("must exceed twice raft_heartbeat_ms ({})", self.raft_heartbeat_ms),
            });
        }
        if self.election_timeout_max_ms > MAX_ELECTION_TIMEOUT_MS {
            return Err(ConfigError::Invalid {
                field: "election_timeout_max_ms",
                value: self.election_timeout_max_ms.to_string(),
                reason: format!("must be at most {MAX_ELECTION_TIMEOUT_MS} (a leader lost for longer is no lease)"),
            });
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(ConfigError::Invalid {
                field: "election_timeout_max_ms",
                value: self.election_timeout_max_ms.to_string(),
                reason: format!("must exceed election_timeout_min_ms ({})", self.election_timeout_min_ms),
            });
        }
        Ok(())
    }

    /// When the log is compacted into a snapshot.
    fn validate_storage(&self) -> Result<(), ConfigError> {
        if self.snapshot_every_entries == 0 {
            return Err(ConfigError::Invalid {
                field: "snapshot_every_entries",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.snapshot_log_bytes < MIN_SNAPSHOT_LOG_BYTES {
            return Err(ConfigError::Invalid {
                field: "snapshot_log_bytes",
                value: self.snapshot_log_bytes.to_string(),
                reason: format!("must be at least {MIN_SNAPSHOT_LOG_BYTES}"),
            });
        }
        self.limits().check().map_err(|reason| ConfigError::Invalid {
            field: "state_budget_bytes",
            value: self.state_budget_bytes.to_string(),
            reason,
        })
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let files = [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key), ("tls_ca", &self.tls_ca)];
        let given: Vec<&str> = files.iter().filter(|(_, f)| f.is_some()).map(|(name, _)| *name).collect();
        if given.is_empty() {
            return Ok(());
        }
        if let Some((missing, _)) = files.iter().find(|(_, f)| f.is_none()) {
            return Err(ConfigError::Invalid {
                field: missing,
                value: String::new(),
                reason: format!(
                    "TLS needs tls_cert, tls_key and tls_ca together; {} given without it",
                    given.join(" and ")
                ),
            });
        }
        if cfg!(madsim) {
            return Err(ConfigError::Invalid {
                field: "tls_cert",
                value: String::new(),
                reason: "the simulator build has no TLS".into(),
            });
        }
        Ok(())
    }

    /// The cluster token: config value, else `ROSTER_TOKEN`, else the token file.
    pub fn resolve_token(&self) -> Result<String, ConfigError> {
        resolve_token(self.token.clone(), self.token_file.as_deref())
    }

    /// The peer key: config value, else `ROSTER_PEER_KEY`, else `peer_key_file`, else the
    /// file `peer-key` beside the token file. A key file others can read is warned about.
    pub fn resolve_peer_key(&self) -> Result<roster_client::PeerKey, ConfigError> {
        let beside_token = self.token_file.as_ref().and_then(|t| t.parent()).map(|dir| dir.join(PEER_KEY_FILE));
        let file = self.peer_key_file.clone().or(beside_token);
        let text = if let Some(k) = self.peer_key.clone() {
            k
        } else if let Some(k) = std::env::var("ROSTER_PEER_KEY").ok().filter(|k| !k.is_empty()) {
            k
        } else if let Some(path) = file.filter(|p| self.peer_key_file.is_some() || p.exists()) {
            warn_if_readable_by_others(&path);
            std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::TokenFile { path: path.display().to_string(), source })?
        } else {
            return Err(ConfigError::Missing {
                field: "peer_key",
                hint: "give --peer-key-file FILE (or a file `peer-key` beside --token-file), set ROSTER_PEER_KEY, or \
                       put peer_key = \"...\" in the config; make one with `roster token new-key --out peer-key` and \
                       give every node the same one",
            });
        };
        roster_client::PeerKey::parse(&text).map_err(|e| ConfigError::Invalid {
            field: "peer_key",
            value: "<hidden>".into(),
            reason: e.to_string(),
        })
    }
}

/// The peer key's file name beside the token file (`roster dev` writes both).
pub const PEER_KEY_FILE: &str = "peer-key";

/// Logs a warning when a secret's file can be read by users other than its owner.
pub fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "a secret's file is readable by other users: chmod 600 it"
        );
    }
}

/// Token from an explicit value, the `ROSTER_TOKEN` environment variable, or a file.
pub fn resolve_token(explicit: Option<String>, file: Option<&std::path::Path>) -> Result<String, ConfigError> {
    let token = if let Some(t) = explicit {
        t
    } else if let Ok(t) = std::env::var("ROSTER_TOKEN") {
        t
    } else if let Some(path) = file {
        warn_if_readable_by_others(path);
        std::fs::read_to_string(path)
            .map_err(|source| ConfigError::TokenFile { path: path.display().to_string(), source })?
            .trim()
            .to_string()
    } else {
        return Err(ConfigError::Missing {
            field: "token",
            hint: "give --token-file FILE, set ROSTER_TOKEN, or put token = \"...\" in the config",
        });
    };
    if token.is_empty() || token.len() > 1024 {
        return Err(ConfigError::Invalid {
            field: "token",
            value: format!("<{} bytes>", token.len()),
            reason: "must be 1 to 1024 bytes".into(),
        });
    }
    Ok(token)
}

/// `HOST:PORT` with a numeric port.
pub fn check_addr(field: &'static str, addr: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Invalid { field, value: addr.to_string(), reason: reason.to_string() };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT"))?;
    if host.is_empty() {
        return Err(bad("host is empty"));
    }
    port.parse::<u16>().map_err(|_| bad("port must be a number 0-65535"))?;
    Ok(())
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad =
            || ConfigError::Invalid { field: "peers", value: part.to_string(), reason: "expected ID=HOST:PORT".into() };
        let (id, addr) = part.split_once('=').ok_or_else(bad)?;
        let id: NodeId = id.trim().parse().map_err(|_| bad())?;
        check_addr("peers", addr.trim()).map_err(|_| bad())?;
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(ConfigError::Invalid {
                field: "peers",
                value: s.to_string(),
                reason: format!("node id {id} appears twice"),
            });
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NodeConfig {
        toml::from_str(
            "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/x\"\npeers = { 1 = \"127.0.0.1:7001\" }\n",
        )
        .expect("minimal config parses")
    }

    #[test]
    fn minimal_config_is_valid() {
        base().validate().expect("valid");
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let err = toml::from_str::<NodeConfig>("id = 1\nlisten = \"a:1\"\ndata_dir = \"d\"\nheartbeat_ms = 5\n")
            .expect_err("unknown field");
        assert!(err.to_string().contains("heartbeat_ms"), "{err}");
    }

    #[test]
    fn bootstrap_needs_peers_and_election_timeouts_are_bounded() {
        let mut c = base();
        c.bootstrap = true;
        c.validate().expect("bootstrap with peers");
        c.peers.clear();
        let msg = c.validate().expect_err("bootstrap without peers").to_string();
        assert!(msg.contains("bootstrap") && msg.contains("peers"), "{msg}");
        let mut c = base();
        c.election_timeout_max_ms = MAX_ELECTION_TIMEOUT_MS + 1;
        let msg = c.validate().expect_err("too long").to_string();
        assert!(msg.contains("election_timeout_max_ms") && msg.contains("60000"), "{msg}");
    }

    #[test]
    fn short_timeout_names_both_values() {
        let mut c = base();
        c.heartbeat_interval_ms = 1000;
        c.heartbeat_timeout_ms = 2000;
        let msg = c.validate().expect_err("refused").to_string();
        assert!(msg.contains("2000") && msg.contains("1000"), "{msg}");
    }

    #[test]
    fn snapshot_bounds_are_checked_by_name() {
        let mut c = base();
        c.snapshot_log_bytes = 1000;
        let msg = c.validate().expect_err("refused").to_string();
        assert!(msg.contains("snapshot_log_bytes") && msg.contains("1000"), "{msg}");
        let c: NodeConfig = toml::from_str(
            "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/x\"\npeers = { 1 = \"127.0.0.1:7001\" }\nsnapshot_log_bytes = 2097152\n",
        )
        .expect("parses");
        assert_eq!(c.snapshot_log_bytes, 2 << 20);
        c.validate().expect("valid");
    }

    #[test]
    fn a_state_budget_too_small_for_the_largest_write_is_refused_by_name() {
        let mut c = base();
        assert_eq!(c.state_budget_bytes, roster_kernel::DEFAULT_STATE_BUDGET_BYTES);
        let min = c.limits().min_state_budget_bytes();
        c.state_budget_bytes = min - 1;
        let msg = c.validate().expect_err("refused").to_string();
        assert!(msg.contains("state_budget_bytes") && msg.contains(&format!("at least {min}")), "{msg}");
        c.state_budget_bytes = min;
        c.validate().expect("valid");
    }

    #[test]
    fn tls_files_come_all_three_or_none() {
        let mut c = base();
        c.tls_cert = Some("node.pem".into());
        c.tls_key = Some("node.key".into());
        let msg = c.validate().expect_err("refused").to_string();
        assert!(msg.contains("tls_ca") && msg.contains("tls_cert and tls_key given"), "{msg}");
        c.tls_ca = Some("ca.pem".into());
        c.validate().expect("all three");
        assert!(c.tls_on());
        let c: NodeConfig = toml::from_str(
            "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/x\"\ntls_cert = \"n.pem\"\ntls_key = \"n.key\"\ntls_ca = \"ca.pem\"\n",
        )
        .expect("parses");
        assert_eq!(c.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    }

    #[test]
    fn bad_addresses_and_peers() {
        assert!(check_addr("listen", "nohost").is_err());
        assert!(check_addr("listen", "h:99999").is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert_eq!(parse_peers("1=a:1, 2=b:2").expect("ok").len(), 2);
        let mut c = base();
        c.peers = parse_peers("2=127.0.0.1:7002").expect("ok");
        assert!(c.validate().expect_err("self missing").to_string().contains("this node"));
    }
}
