//! A server node: storage, Raft, the listener, leader duties and the node's own
//! membership agent, wired together.

use crate::config::NodeConfig;
use crate::net::peer::PeerNetwork;
use crate::raft::NodeAddr;
use crate::rt::clock::Clock;
use crate::server::Raft;
use crate::server::api::Api;
use crate::storage::{self, Disk};
use openraft_rt::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot start the HTTP listener on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    /// The HTTP API forwards through a client of its own; its options did not hold.
    #[error("the HTTP API's client: {0}")]
    HttpClient(roster_client::ClientError),
    #[error("raft: {0}")]
    Raft(#[from] RaftStartError),
    #[error("launch: {0}")]
    Launcher(#[from] crate::server::launch::LauncherError),
    #[error(transparent)]
    Identity(#[from] crate::server::cluster_id::IdentityError),
    #[error(transparent)]
    Security(#[from] crate::tls::SecurityError),
}

/// Why openraft did not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    /// The timings make no valid openraft configuration (config validation should have
    /// caught it first).
    #[error("configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("start: {0}")]
    Start(openraft::error::Fatal<crate::raft::TypeConfig>),
    /// The core stopped while it was asked whether the log holds a membership.
    #[error("reading the initial state: {0}")]
    Read(openraft::error::Fatal<crate::raft::TypeConfig>),
    #[error("initialising the cluster failed: {0}")]
    Initialize(
        openraft::error::RaftError<crate::raft::TypeConfig, openraft::error::InitializeError<crate::raft::TypeConfig>>,
    ),
}

/// A running node. Dropping it does not stop it; call `shutdown`.
pub struct Node {
    pub config: NodeConfig,
    pub raft: Raft,
    pub api: Arc<Api>,
    pub local_addr: std::net::SocketAddr,
    /// Where the HTTP API listens, when `http_listen` is set.
    pub http_addr: Option<std::net::SocketAddr>,
    /// The applied state (for observers such as the simulator's checkers).
    pub shared: Arc<storage::SharedState>,
    /// A read-only view of the Raft log (for observers such as the simulator's checkers).
    pub log_reader: storage::LogReader,
    agent: Option<crate::server::agent::ServerAgent>,
}

impl Node {
    /// Opens the data, starts Raft and the listener, forms the cluster on first start
    /// and registers this server. `disk` is the real filesystem or the simulator's disk.
    pub async fn start(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        probe: Box<dyn crate::probe::Probe>,
    ) -> Result<Node, NodeError> {
        // Every node starts from the same limits, whatever its config: the budget arrives
        // through the log (its leader proposes `state_budget_bytes`), so a replay, or a
        // node configured otherwise, never refuses other writes than the rest.
        let options = storage::StorageOptions::for_fs(roster_kernel::Limits::default());
        Node::start_with_storage(config, disk, probe, options).await
    }

    /// `start` with explicit storage options: `StorageOptions::for_mem` for a `MemDisk`
    /// (the simulator), `for_fs` for a real directory.
    pub async fn start_with_storage(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        probe: Box<dyn crate::probe::Probe>,
        storage_options: storage::StorageOptions,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let token = config.resolve_token()?;
        let vote_gate = Arc::new(crate::server::vote_gate::VoteGate::open(disk.clone())?);
        let identity = Arc::new(crate::server::cluster_id::Identity::open(disk.clone())?);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (mut log_store, sm_store) = storage::open(disk, storage_options, metrics.clone()).await?;
        let log_reader = openraft::storage::RaftLogStorage::get_log_reader(&mut log_store).await;
        let shared = sm_store.shared();
        let no_log = log_is_empty(&mut log_store).await?;
        let security = crate::tls::Security::from_config(&config)?;
        let connector = security.connector.clone();
        let peer = peer_auth(&config, identity.clone())?;
        let network = PeerNetwork {
            self_id: config.id,
            peer: peer.clone(),
            connector: connector.clone(),
            metrics: metrics.clone(),
        };
        let raft = Raft::new(config.id, raft_config(&config)?, network, log_store, sm_store)
            .await
            .map_err(|e| NodeError::Raft(RaftStartError::Start(e)))?;
        let (fresh, formation) = first_start(&raft, &config, no_log, &vote_gate).await?;
        let (listener, local_addr) = bind(&config.listen).await?;
        let clock = Clock::start();
        let handles = crate::server::Handles {
            id: config.id,
            raft: raft.clone(),
            shared: shared.clone(),
            vote_gate: vote_gate.clone(),
            metrics: metrics.clone(),
            peer: peer.clone(),
            connector: connector.clone(),
        };
        let launcher = crate::server::launch::Launcher::new(&config, &handles)?;
        let services = crate::server::api::Services {
            bootstrap_token: token,
            leader: start_leader_driver(&config, &handles, clock, &identity)?,
            launcher,
            identity: identity.clone(),
            formation: formation.clone(),
            hand_off_timeout_ms: config.hand_off_timeout_ms(),
        };
        let api = Arc::new(Api::new(handles, services));
        tokio::spawn(count_leader_changes(raft.clone(), metrics));
        tokio::spawn(crate::server::cluster_id::adopt_when_sealed(raft.clone(), shared.clone(), identity));
        let cap = crate::server::dispatch::connection_cap(raise_open_files_limit(), HTTP_CONNECTIONS);
        tokio::spawn(crate::server::dispatch::serve(listener, api.clone(), security.acceptor.clone(), cap));
        security.reload_on_sighup();
        tokio::spawn(crate::server::compaction::run(raft.clone(), log_reader.clone(), config.snapshot_log_bytes));

        if fresh {
            let credential = roster_client::Credential::Peer(peer.clone());
            decide_bootstrap(&raft, &config, &credential, &connector, &vote_gate, &formation).await?;
        }
        if vote_gate.is_closed() {
            hold_votes_until_caught_up(&raft, config.id, vote_gate.clone());
        }
        let http_addr = start_http(&config, &api, &peer, &security).await?;
        let tls = security.acceptor.is_tls();
        tracing::info!(node = config.id, listen = %local_addr, http = ?http_addr, tls, "node started");

        let agent = crate::server::agent::ServerAgent::start(&config, peer, connector, probe, clock);
        Ok(Node { config, raft, api, local_addr, http_addr, shared, log_reader, agent: Some(agent) })
    }

    /// If this node leads, hands leadership to the most up-to-date voter first (bounded),
    /// so a node that is asked to stop costs its clients no election timeout.
    pub async fn hand_off(&self) {
        if !self.raft.is_leader() {
            return;
        }
        let timeout_ms = self.config.hand_off_timeout_ms();
        match crate::server::leadership::hand_off(&self.raft, self.config.id, None, timeout_ms).await {
            Ok(_) => {}
            Err(crate::net::wire::RequestError::NoOtherVoter) => {}
            Err(e) => tracing::warn!(error = %e, "leadership hand-off before stopping failed; stopping anyway"),
        }
    }

    /// Deregisters this server (awaited, bounded) and stops its heartbeats; Raft keeps
    /// running so the other nodes still have a quorum for their own leave.
    pub async fn leave(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.leave().await;
        }
    }

    /// Graceful stop: deregister this server (awaited, bounded), then stop Raft.
    pub async fn shutdown(mut self) {
        self.leave().await;
        self.api.peer_intake().close().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        tracing::info!(node = self.config.id, "node stopped");
    }
}

/// openraft's configuration from the node's timings.
fn raft_config(config: &NodeConfig) -> Result<Arc<openraft::Config>, NodeError> {
    let raft_config = openraft::Config {
        cluster_name: "roster".into(),
        heartbeat_interval: config.raft_heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        // A reconnecting node must not depose a healthy leader (DESIGN: term ~90 in 60 s without).
        enable_pre_vote: Some(true),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    Ok(Arc::new(raft_config.validate().map_err(|e| NodeError::Raft(RaftStartError::Config(e)))?))
}

/// What this node proves to its peers: the cluster's peer key, its id and the cluster
/// it belongs to (known once sealed).
fn peer_auth(
    config: &NodeConfig,
    identity: Arc<crate::server::cluster_id::Identity>,
) -> Result<roster_client::PeerAuth, NodeError> {
    Ok(roster_client::PeerAuth {
        key: config.resolve_peer_key()?,
        from: config.id,
        cluster: Arc::new(move || identity.get().map(|id| id.0)),
        nonces: Arc::new(crate::rt::random_bytes),
    })
}

/// Whether this start is the node's first (`fresh`), and what it knows of the formation.
///
/// A node that holds no vote, no log entry (not even a purged one) and no membership (a
/// restored snapshot has one) is new, or lost its disk: the two look alike, so it decides
/// whether to bootstrap before it may vote. Judged from what storage read back, not from
/// the directory listing, so a start that crashed before the cluster was formed decides
/// again and a stray file changes nothing. Decided before the listener opens: no peer
/// reaches it meanwhile. A node already waiting (its marker) waits on.
async fn first_start(
    raft: &Raft,
    config: &NodeConfig,
    no_log: bool,
    vote_gate: &crate::server::vote_gate::VoteGate,
) -> Result<(bool, Arc<crate::server::formation::Formation>), NodeError> {
    let initialized = raft.is_initialized().await.map_err(|e| NodeError::Raft(RaftStartError::Read(e)))?;
    let fresh = no_log && !initialized && !vote_gate.is_closed();
    if fresh {
        vote_gate.close_provisionally("started with an empty data directory: deciding whether to bootstrap".into());
    }
    let deciding = fresh && config.bootstrap && !config.peers.is_empty();
    let formation =
        Arc::new(crate::server::formation::Formation::new(crate::server::formation::new_incarnation(), deciding));
    Ok((fresh, formation))
}

/// The leader driver, sole owner of the kernel's `LeaderDuties` on this node.
fn start_leader_driver(
    config: &NodeConfig,
    handles: &crate::server::Handles,
    clock: Clock,
    identity: &crate::server::cluster_id::Identity,
) -> Result<crate::server::leader::LeaderHandle, NodeError> {
    let driver = crate::server::leader::Driver {
        node: config.id,
        raft: handles.raft.clone(),
        shared: handles.shared.clone(),
        clock,
        // No other leader can be elected sooner: a follower waits its election timeout
        // plus openraft's leader lease (= the maximum) after the last contact.
        lease_ms: config.election_timeout_max_ms,
        counters: handles.metrics.clone(),
        cluster_id_offer: crate::server::cluster_id::offer(identity),
        state_budget_offer: config.state_budget_bytes,
    };
    let leader = crate::server::leader::start(driver, roster_kernel::DutiesConfig::new(config.liveness()))
        .map_err(crate::config::ConfigError::from_duties)?;
    Ok(leader)
}

/// The binary protocol's listener, and the address it got.
async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), NodeError> {
    let failed = |source| NodeError::Listen { addr: listen.to_string(), source };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(failed)?;
    let local_addr = listener.local_addr().map_err(failed)?;
    Ok((listener, local_addr))
}

/// A node whose vote gate is closed neither votes nor campaigns until it has caught up.
fn hold_votes_until_caught_up(raft: &Raft, node: u64, vote_gate: Arc<crate::server::vote_gate::VoteGate>) {
    tracing::warn!(
        node,
        reason = vote_gate.waiting(None).unwrap_or_default(),
        "this node does not vote, campaign or serve stale reads until it has caught up"
    );
    raft.runtime_config().elect(false);
    tokio::spawn(lift_when_caught_up(raft.clone(), vote_gate));
}

/// Connections the HTTP listener serves at once (its own cap).
#[cfg(not(madsim))]
const HTTP_CONNECTIONS: u64 = crate::http::MAX_CONNECTIONS as u64;
#[cfg(madsim)]
const HTTP_CONNECTIONS: u64 = 0;

/// Raises the soft open-files limit to the hard one and returns it, so that a flood of
/// connections meets the connection cap before the WAL meets EMFILE (a fail-stop).
#[cfg(not(madsim))]
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    tracing::debug!(open_files = limit.rlim_cur, "open-files limit");
    limit.rlim_cur
}

/// The simulator has no descriptors to run out of.
#[cfg(madsim)]
fn raise_open_files_limit() -> u64 {
    u64::MAX
}

/// The HTTP listener, when configured. Its client reaches this node first, then the
/// initial peers; leader hints bring the rest.
#[cfg(not(madsim))]
async fn start_http(
    config: &NodeConfig,
    api: &Arc<Api>,
    peer: &roster_client::PeerAuth,
    security: &crate::tls::Security,
) -> Result<Option<std::net::SocketAddr>, NodeError> {
    let Some(addr) = &config.http_listen else { return Ok(None) };
    let mut endpoints = vec![config.advertise_addr().to_string()];
    endpoints.extend(config.peers.values().filter(|a| a.as_str() != config.advertise_addr()).cloned());
    let state = crate::http::HttpState::new(api.clone(), endpoints, peer.clone(), security.connector.clone())
        .map_err(NodeError::HttpClient)?;
    let local = crate::http::start(addr, state, security.acceptor.clone())
        .await
        .map_err(|source| NodeError::Http { addr: addr.clone(), source })?;
    Ok(Some(local))
}

/// The simulator has no HTTP listener (`http_listen` is never set there).
#[cfg(madsim)]
async fn start_http(
    _: &NodeConfig,
    _: &Arc<Api>,
    _: &roster_client::PeerAuth,
    _: &crate::tls::Security,
) -> Result<Option<std::net::SocketAddr>, NodeError> {
    Ok(None)
}

/// A node that started with an empty data directory: it forms a new cluster only when told
/// to (`bootstrap`) and none of its peers knows a running one; otherwise it waits, its vote
/// gate closed for good, to be added (`member add`) or replaced (`member replace`).
async fn decide_bootstrap(
    raft: &Raft,
    config: &NodeConfig,
    credential: &roster_client::Credential,
    connector: &crate::net::transport::Connector,
    gate: &crate::server::vote_gate::VoteGate,
    formation: &crate::server::formation::Formation,
) -> Result<(), NodeError> {
    use roster_kernel::formation::{Decision, Start};
    let id = config.id;
    let reason = if !config.bootstrap || config.peers.is_empty() {
        format!(
            "node {id} started with an empty data directory and without --bootstrap: waiting to be added \
             (`roster member add {id} ADDR`), or replaced if it lost its data (`roster member replace {id}`)"
        )
    } else {
        let me = Start { node: id, incarnation: formation.incarnation() };
        match crate::server::rejoin::check_peers(&config.peers, me, credential, connector).await {
            Decision::Form { formed_with } => {
                return form_having_decided(raft, config, gate, formation, &formed_with).await;
            }
            Decision::Join { by, formed_with } => {
                tracing::info!(node = id, "node {by} formed the cluster while this node was deciding: forming it too");
                return form_having_decided(raft, config, gate, formation, &formed_with).await;
            }
            Decision::Wait { running } => format!(
                "node {id} started with an empty data directory and --bootstrap, but a cluster already runs \
                 (node {} reports {} in term {}, commit index {}): not bootstrapping; if this node lost its data, \
                 run `roster member replace {id}`",
                running.peer,
                running.leader.map_or("no leader yet".to_string(), |l| format!("leader {l}")),
                running.term,
                running.commit_index.map_or("-".to_string(), |c| c.to_string())
            ),
        }
    };
    formation.decided(Vec::new());
    tracing::warn!(node = id, "{reason}");
    gate.close(reason)?;
    gate.settled().await;
    Ok(())
}

/// Forms the cluster once the check allowed it. `formed_with` (the peers seen deciding) is
/// remembered before the cluster exists, so every peer that sees it formed also sees
/// whom it was formed with.
async fn form_having_decided(
    raft: &Raft,
    config: &NodeConfig,
    gate: &crate::server::vote_gate::VoteGate,
    formation: &crate::server::formation::Formation,
    formed_with: &[roster_kernel::formation::Start],
) -> Result<(), NodeError> {
    formation.decided(formed_with.iter().map(|s| (s.node, s.incarnation)).collect());
    gate.open_provisional();
    form_cluster(raft, config).await
}

/// True if the log holds no vote and no entry, not even a purged one.
async fn log_is_empty(log: &mut storage::LogStore) -> Result<bool, NodeError> {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    let io = |source| storage::StorageError::Io { file: "the Raft log".into(), source };
    let state = log.get_log_state().await.map_err(io)?;
    let vote = log.read_vote().await.map_err(io)?;
    Ok(state.last_log_id.is_none() && state.last_purged_log_id.is_none() && vote.is_none())
}

/// Counts every change of the leader this node sees (`roster_server_leader_changes_seen`).
async fn count_leader_changes(raft: Raft, metrics: Arc<crate::metrics::Metrics>) {
    let mut watch = raft.metrics();
    let mut leader = watch.borrow_watched().current_leader;
    while watch.changed().await.is_ok() {
        let now = watch.borrow_watched().current_leader;
        if now != leader && now.is_some() {
            metrics.leader_changes.inc();
        }
        leader = now;
    }
}

/// Lifts the vote gate once the node has applied up to its readmission target, and lets
/// it campaign again.
async fn lift_when_caught_up(raft: Raft, gate: Arc<crate::server::vote_gate::VoteGate>) {
    let mut metrics = raft.metrics();
    loop {
        let applied = metrics.borrow_watched().last_applied.map(|l| l.index);
        match gate.lift_if_caught_up(applied) {
            Ok(true) => {
                gate.settled().await;
                tracing::info!(applied = ?applied, "caught up with the cluster: this node votes again");
                raft.runtime_config().elect(true);
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot lift the vote gate; trying again on the next apply"),
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Initialises Raft with the static initial members, once. Every initial member may
/// try: openraft refuses a second initialisation (`NotAllowed`), which is the success
/// case here, and identical first configurations from several nodes agree. The cluster
/// id comes later, sealed by the first leader (`server::cluster_id`).
async fn form_cluster(raft: &Raft, config: &NodeConfig) -> Result<(), NodeError> {
    if config.peers.is_empty() {
        // A node started to be added later (`roster member add`): it waits to be contacted.
        return Ok(());
    }
    let initialized = raft.is_initialized().await.map_err(|e| NodeError::Raft(RaftStartError::Read(e)))?;
    if initialized {
        return Ok(());
    }
    let members: BTreeMap<u64, NodeAddr> =
        config.peers.iter().map(|(id, addr)| (*id, NodeAddr { addr: addr.clone() })).collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(node = config.id, members = ?config.peers.keys().collect::<Vec<_>>(), "cluster initialised");
            Ok(())
        }
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(NodeError::Raft(RaftStartError::Initialize(e))),
    }
}
