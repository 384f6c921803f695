//! The node's metrics, served at `/metrics` in the Prometheus text format.
//!
//! Names follow etcd's where the meaning is the same (`roster_server_has_leader` is
//! etcd's `etcd_server_has_leader`), so dashboards and alerts carry over.
//!
//! Cheap on the hot paths: a counter is one atomic add, a histogram one short lock; no
//! metric allocates per event. Values that the node already knows (leader, term, indexes,
//! members, sessions) are not tracked as they change: they are read at scrape time
//! (`Scrape`), which costs nothing between scrapes. One `Metrics` per node (the simulator
//! runs several nodes in one process), handed to each part that counts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// What a client request was, for `roster_client_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

/// The peer an RPC went to; etcd calls the label `To`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
pub struct PeerLabel {
    pub To: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// A part of the replicated state's bytes (`roster_state_bytes`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabel {
    pub part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabel {
    pub kind: &'static str,
    pub status: &'static str,
}

/// The values read at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scrape {
    pub has_leader: bool,
    pub is_leader: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub servers_online: u64,
    pub servers_draining: u64,
    pub processes_online: u64,
    pub processes_draining: u64,
    pub sessions: u64,
    /// The state budget, its use by part, and its alarm.
    pub state: roster_kernel::StateUsage,
    /// The leader's guard against mass false expiry.
    pub expiry: roster_kernel::ExpiryGuardStatus,
    /// Processes whose averaged resources the record holds, and the sums of those
    /// averages: aggregates only, as a per-process series would be one per member.
    pub processes_reporting: u64,
    pub processes_cpu_percent_sum: u64,
    pub processes_mem_bytes_sum: u64,
}

pub struct Metrics {
    registry: Registry,
    pub leader_changes: Counter,
    pub proposals_committed: Counter,
    pub proposals_failed: Counter,
    pub proposals_pending: Gauge,
    pub wal_fsync: Histogram,
    pub apply: Histogram,
    pub peer_rtt: Family<PeerLabel, Histogram>,
    pub requests: Family<OpLabel, Histogram>,
    /// Heartbeats this node answered as leader, by verdict.
    pub heartbeats: Family<ResultLabel, Counter>,
    /// Members the leader expired (each member once).
    pub expirations: Counter,
    pub launches: Family<ResultLabel, Counter>,
    /// Requests refused for the caller's role (binary protocol and HTTP).
    pub forbidden: Counter,
    pub watchers: Gauge,
    pub client_connections: Gauge,
    has_leader: Gauge,
    is_leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    members: Family<MemberLabel, Gauge>,
    sessions: Gauge,
    state_bytes: Family<PartLabel, Gauge>,
    state_budget_bytes: Gauge,
    state_alarm: Gauge,
    expiry_brake: Gauge,
    expiry_lateness_grace: Gauge<f64, AtomicU64>,
    processes_reporting: Gauge,
    processes_cpu_percent: Gauge,
    processes_memory_bytes: Gauge,
}

/// Latency buckets from 50 µs to about 3.3 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("roster");
        let m = Metrics {
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_pending: Gauge::default(),
            wal_fsync: latency(),
            apply: latency(),
            peer_rtt: Family::new_with_constructor(latency),
            requests: Family::new_with_constructor(latency),
            heartbeats: Family::default(),
            expirations: Counter::default(),
            launches: Family::default(),
            forbidden: Counter::default(),
            watchers: Gauge::default(),
            client_connections: Gauge::default(),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            members: Family::default(),
            sessions: Gauge::default(),
            state_bytes: Family::default(),
            state_budget_bytes: Gauge::default(),
            state_alarm: Gauge::default(),
            expiry_brake: Gauge::default(),
            expiry_lateness_grace: Gauge::default(),
            processes_reporting: Gauge::default(),
            processes_cpu_percent: Gauge::default(),
            processes_memory_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let server = r.sub_registry_with_prefix("server");
        server.register("has_leader", "Whether a leader is known (1) or not (0)", m.has_leader.clone());
        server.register("is_leader", "Whether this node is the leader", m.is_leader.clone());
        server.register("leader_changes_seen", "Leader changes this node has seen", m.leader_changes.clone());
        server.register("term", "The Raft term", m.term.clone());
        server.register("commit_index", "The cluster's commit index as this node knows it", m.commit_index.clone());
        server.register("applied_index", "The last log index this node applied", m.applied_index.clone());
        server.register("proposals_committed", "Proposals committed and applied", m.proposals_committed.clone());
        server.register(
            "proposals_failed",
            "Proposals that failed (leader lost, Raft refused)",
            m.proposals_failed.clone(),
        );
        server.register("proposals_pending", "Proposals queued or in flight", m.proposals_pending.clone());
        server.register("apply_duration_seconds", "Time to apply one committed entry", m.apply.clone());
        r.sub_registry_with_prefix("disk").register(
            "wal_fsync_duration_seconds",
            "Time of one fsync of the Raft log",
            m.wal_fsync.clone(),
        );
        r.sub_registry_with_prefix("network").register(
            "peer_round_trip_time_seconds",
            "Round trip of one Raft RPC to a peer",
            m.peer_rtt.clone(),
        );
        let client = r.sub_registry_with_prefix("client");
        client.register("request_duration_seconds", "Time to answer one client request", m.requests.clone());
        client.register("connections", "Open client connections", m.client_connections.clone());
        client.register("watchers", "Open watch streams (binary protocol and HTTP)", m.watchers.clone());
        client.register("sessions", "Client sessions the cluster keeps", m.sessions.clone());
        client.register("forbidden", "Requests refused for the caller's role", m.forbidden.clone());
        let members = r.sub_registry_with_prefix("members");
        members.register("count", "Members in the record, by kind and status", m.members.clone());
        members.register("heartbeats", "Heartbeats answered by this node as leader, by result", m.heartbeats.clone());
        members.register("expired", "Members this node expired as leader", m.expirations.clone());
        members.register(
            "expiry_brake",
            "1 while the leader holds expiries back: too many members went silent at once to believe",
            m.expiry_brake.clone(),
        );
        members.register(
            "expiry_lateness_grace_seconds",
            "What the leader's own lateness adds to the heartbeat timeout now",
            m.expiry_lateness_grace.clone(),
        );
        members.register(
            "processes_reporting",
            "Processes whose averaged resources the record holds",
            m.processes_reporting.clone(),
        );
        members.register(
            "processes_cpu_percent",
            "Sum of the processes' averaged CPU, in percent of one core",
            m.processes_cpu_percent.clone(),
        );
        members.register(
            "processes_memory_bytes",
            "Sum of the processes' averaged memory in use",
            m.processes_memory_bytes.clone(),
        );
        r.register(
            "launches",
            "Launches by result: started, not_allowed or failed on the node that was to run the program, \
             no_placement on the leader that found no server for it",
            m.launches.clone(),
        );
        // Every result from the start, at 0: a series that appears only after the first
        // launch looks missing to a dashboard and makes its first increase invisible.
        for result in LaunchResult::ALL {
            drop(m.launches.get_or_create(&ResultLabel { result: result.label() }));
        }
        let state = r.sub_registry_with_prefix("state");
        state.register("bytes", "Bytes of the replicated state, by part (state_budget_bytes)", m.state_bytes.clone());
        state.register("budget_bytes", "The replicated state's byte budget", m.state_budget_bytes.clone());
        state.register(
            "alarm",
            "1 while the largest write would be refused for the state budget: delete, or raise the budget",
            m.state_alarm.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn observe_request(&self, op: &'static str, took: Duration) {
        self.requests.get_or_create(&OpLabel { op }).observe(took.as_secs_f64());
    }

    pub fn observe_peer_rtt(&self, to: u64, took: Duration) {
        self.peer_rtt.get_or_create(&PeerLabel { To: to.to_string() }).observe(took.as_secs_f64());
    }

    pub fn count_heartbeat(&self, result: &'static str) {
        self.heartbeats.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn count_forbidden(&self) {
        self.forbidden.inc();
    }

    pub fn count_launch(&self, result: LaunchResult) {
        self.launches.get_or_create(&ResultLabel { result: result.label() }).inc();
    }

    /// The text a scrape returns, with the scrape-time values set first.
    pub fn encode(&self, s: &Scrape) -> String {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.has_leader, s.has_leader.into());
        set(&self.is_leader, s.is_leader.into());
        set(&self.term, s.term);
        set(&self.commit_index, s.commit_index);
        set(&self.applied_index, s.applied_index);
        set(&self.sessions, s.sessions);
        let used = &s.state.used;
        for (part, bytes) in
            [("kv", used.kv), ("events", used.events), ("replies", used.replies), ("labels", used.labels)]
        {
            set(&self.state_bytes.get_or_create(&PartLabel { part }), bytes);
        }
        set(&self.state_budget_bytes, s.state.budget_bytes);
        set(&self.state_alarm, s.state.alarm.into());
        set(&self.expiry_brake, s.expiry.brake.is_some().into());
        self.expiry_lateness_grace.set(s.expiry.lateness_grace_ms as f64 / 1_000.0);
        set(&self.processes_reporting, s.processes_reporting);
        set(&self.processes_cpu_percent, s.processes_cpu_percent_sum);
        set(&self.processes_memory_bytes, s.processes_mem_bytes_sum);
        for (kind, status, v) in [
            ("server", "online", s.servers_online),
            ("server", "draining", s.servers_draining),
            ("process", "online", s.processes_online),
            ("process", "draining", s.processes_draining),
        ] {
            set(&self.members.get_or_create(&MemberLabel { kind, status }), v);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// How one launch ended, the `result` label of `roster_launches_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchResult {
    /// The program runs on this node.
    Started,
    /// The program is not on this node's `launch_allow` list.
    NotAllowed,
    /// Registering it or starting the program failed on this node.
    Failed,
    /// The leader found no server with room for it.
    NoPlacement,
}

impl LaunchResult {
    pub const ALL: [LaunchResult; 4] =
        [LaunchResult::Started, LaunchResult::NotAllowed, LaunchResult::Failed, LaunchResult::NoPlacement];

    pub fn label(self) -> &'static str {
        match self {
            LaunchResult::Started => "started",
            LaunchResult::NotAllowed => "not_allowed",
            LaunchResult::Failed => "failed",
            LaunchResult::NoPlacement => "no_placement",
        }
    }
}

/// Counts one open thing (a connection, a watch) in a gauge for as long as it lives.
pub struct Open(Gauge);

impl Open {
    pub fn new(gauge: &Gauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `Content-Type` of `encode`'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn scrape_values_and_counters_appear_under_etcd_like_names() {
        let m = Metrics::new();
        m.leader_changes.inc();
        m.proposals_committed.inc_by(5);
        m.count_heartbeat("accepted");
        m.observe_request("submit", Duration::from_micros(300));
        m.observe_peer_rtt(2, Duration::from_millis(1));
        let s = Scrape {
            has_leader: true,
            term: 4,
            commit_index: 10,
            processes_online: 3,
            processes_reporting: 2,
            processes_cpu_percent_sum: 150,
            processes_mem_bytes_sum: 1 << 30,
            ..Scrape::default()
        };
        let text = m.encode(&s);
        assert_eq!(value(&text, "roster_server_has_leader"), Some(1.0), "{text}");
        assert_eq!(value(&text, "roster_server_is_leader"), Some(0.0));
        assert_eq!(value(&text, "roster_server_term"), Some(4.0));
        assert_eq!(value(&text, "roster_server_leader_changes_seen_total"), Some(1.0));
        assert_eq!(value(&text, "roster_server_proposals_committed_total"), Some(5.0));
        assert_eq!(value(&text, "roster_members_count{kind=\"process\",status=\"online\"}"), Some(3.0));
        assert_eq!(value(&text, "roster_members_heartbeats_total{result=\"accepted\"}"), Some(1.0));
        assert_eq!(value(&text, "roster_members_processes_reporting"), Some(2.0));
        assert_eq!(value(&text, "roster_members_processes_cpu_percent"), Some(150.0));
        assert_eq!(value(&text, "roster_members_processes_memory_bytes"), Some(1_073_741_824.0));
        assert_eq!(value(&text, "roster_client_request_duration_seconds_count{op=\"submit\"}"), Some(1.0));
        assert_eq!(value(&text, "roster_network_peer_round_trip_time_seconds_count{To=\"2\"}"), Some(1.0));
        assert!(text.contains("# TYPE roster_disk_wal_fsync_duration_seconds histogram"), "{text}");
        // A later scrape reflects the new values.
        let text = m.encode(&Scrape { is_leader: true, has_leader: true, ..Scrape::default() });
        assert_eq!(value(&text, "roster_server_is_leader"), Some(1.0));
    }

    #[test]
    fn the_expiry_brake_and_the_lateness_grace_are_gauges() {
        let m = Metrics::new();
        let text = m.encode(&Scrape::default());
        assert_eq!(value(&text, "roster_members_expiry_brake"), Some(0.0), "{text}");
        assert_eq!(value(&text, "roster_members_expiry_lateness_grace_seconds"), Some(0.0));
        let brake = roster_kernel::BrakeAlarm { since_ms: 5, suspects: 40, members: 100, hold_ms: 750 };
        let expiry = roster_kernel::ExpiryGuardStatus { lateness_grace_ms: 250, brake: Some(brake) };
        let text = m.encode(&Scrape { expiry, ..Scrape::default() });
        assert_eq!(value(&text, "roster_members_expiry_brake"), Some(1.0), "{text}");
        assert_eq!(value(&text, "roster_members_expiry_lateness_grace_seconds"), Some(0.25));
    }

    #[test]
    fn launches_are_exported_by_result_from_the_start() {
        let m = Metrics::new();
        let text = m.encode(&Scrape::default());
        for result in LaunchResult::ALL {
            let series = format!("roster_launches_total{{result=\"{}\"}}", result.label());
            assert_eq!(value(&text, &series), Some(0.0), "{series} before any launch:\n{text}");
        }
        m.count_launch(LaunchResult::Started);
        m.count_launch(LaunchResult::Started);
        m.count_launch(LaunchResult::NoPlacement);
        let text = m.encode(&Scrape::default());
        assert_eq!(value(&text, "roster_launches_total{result=\"started\"}"), Some(2.0), "{text}");
        assert_eq!(value(&text, "roster_launches_total{result=\"no_placement\"}"), Some(1.0));
        assert_eq!(value(&text, "roster_launches_total{result=\"failed\"}"), Some(0.0));
    }
}
