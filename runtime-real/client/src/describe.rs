//! Change events in words: one readable line per event, for `roster watch`, the HTTP API
//! and the cluster page, and the two questions a reader of the stream asks before it
//! prints one (what is it about, and is it only a periodic resource report).
//!
//! Everything here is pure: a reader keeps what it knows of the servers in a
//! [`KnownServers`] and passes it in.

use roster_kernel::{
    Departure, Event, EventKind, MemberStatus, ProcessEntry, ProcessId, ServerEntry, ServerId, Tombstone,
    TombstoneSubject,
};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A key/value value longer than this is cut in the line (the event keeps it whole).
pub const MAX_SHOWN_VALUE_CHARS: usize = 120;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectKind {
    Server,
    Process,
    Kv,
    Token,
    /// An admin action (`roster watch --kind audit`).
    Audit,
}

/// The kind of member or key an event is about, and its name (a server's or process's
/// name, or the key), for filtering a stream by `--kind` and `--name`.
pub fn subject(event: &Event) -> (SubjectKind, &str) {
    match &event.kind {
        EventKind::ServerRegistered(s) | EventKind::ServerUpdated(s) => (SubjectKind::Server, &s.info.name),
        EventKind::ProcessRegistered(p) | EventKind::ProcessUpdated(p) => (SubjectKind::Process, &p.info.name),
        EventKind::Departed { tombstone, .. } => match &tombstone.subject {
            TombstoneSubject::Server(s) => (SubjectKind::Server, &s.info.name),
            TombstoneSubject::Process(p) => (SubjectKind::Process, &p.info.name),
        },
        EventKind::KvPut { key, .. } | EventKind::KvDeleted { key } => (SubjectKind::Kv, key),
        EventKind::TokenCreated(info) => (SubjectKind::Token, &info.name),
        EventKind::TokenRevoked { name, .. } => (SubjectKind::Token, name),
        EventKind::Audit(record) => (SubjectKind::Audit, &record.by),
    }
}

/// Whether `updated` differs from `previous` in its averaged resources alone (the leader
/// writes those every few seconds; a reader usually wants everything else).
pub fn is_resources_only(previous: &ServerEntry, updated: &ServerEntry) -> bool {
    previous.id == updated.id
        && previous.info == updated.info
        && previous.status == updated.status
        && previous.drained == updated.drained
        && previous.registered_rev == updated.registered_rev
        && previous.resources != updated.resources
}

/// Whether `updated` differs from `previous` in its averaged resources alone.
pub fn is_process_resources_only(previous: &ProcessEntry, updated: &ProcessEntry) -> bool {
    previous.id == updated.id
        && previous.info == updated.info
        && previous.status == updated.status
        && previous.registered_rev == updated.registered_rev
        && previous.resources != updated.resources
}

/// The members a reader of an event stream knows of, as of the last event it observed:
/// servers' names (to say where a process runs) and last entries of servers and processes
/// (to tell a resources-only update). Holds one entry per live member, so it is bounded by
/// the cluster's member limits.
#[derive(Clone, Debug, Default)]
pub struct KnownServers {
    servers: BTreeMap<ServerId, ServerEntry>,
    processes: BTreeMap<ProcessId, ProcessEntry>,
}

impl KnownServers {
    /// Starts from the servers in the record now (e.g. from a status answer).
    pub fn new(current: impl IntoIterator<Item = ServerEntry>) -> Self {
        KnownServers { servers: current.into_iter().map(|s| (s.id, s)).collect(), processes: BTreeMap::new() }
    }

    /// Also knows these processes now (e.g. from a status answer), so that a first
    /// resources-only update of one is told as such.
    pub fn with_processes(mut self, current: impl IntoIterator<Item = ProcessEntry>) -> Self {
        self.processes = current.into_iter().map(|p| (p.id, p)).collect();
        self
    }

    pub fn name(&self, id: ServerId) -> Option<String> {
        self.servers.get(&id).map(|s| s.info.name.clone())
    }

    /// Whether `event` is a `ServerUpdated` that changes only the averaged resources of a
    /// server known here. An update of an unknown server is not: nothing says what changed.
    pub fn is_resources_only(&self, event: &Event) -> bool {
        match &event.kind {
            EventKind::ServerUpdated(updated) => {
                self.servers.get(&updated.id).is_some_and(|previous| is_resources_only(previous, updated))
            }
            EventKind::ProcessUpdated(updated) => {
                self.processes.get(&updated.id).is_some_and(|previous| is_process_resources_only(previous, updated))
            }
            _ => false,
        }
    }

    /// Takes in what `event` changes. Call it after the questions about the event itself.
    pub fn observe(&mut self, event: &Event) {
        match &event.kind {
            EventKind::ServerRegistered(s) | EventKind::ServerUpdated(s) => {
                self.servers.insert(s.id, s.clone());
            }
            EventKind::Departed { tombstone: Tombstone { subject: TombstoneSubject::Server(s), .. }, .. } => {
                self.servers.remove(&s.id);
            }
            EventKind::ProcessRegistered(p) | EventKind::ProcessUpdated(p) => {
                self.processes.insert(p.id, p.clone());
            }
            EventKind::Departed { tombstone: Tombstone { subject: TombstoneSubject::Process(p), .. }, .. } => {
                self.processes.remove(&p.id);
            }
            _ => {}
        }
    }
}

/// One line, e.g. `rev 13  process web (process-1) registered on dev-1, port 8080, team=a`.
///
/// `server_name` names the server a process runs on (`KnownServers::name`); without a name
/// the server's id stands in. Names, keys and values from the record are printed with
/// control characters escaped, so the line stays one line.
pub fn describe(event: &Event, server_name: impl Fn(ServerId) -> Option<String>) -> String {
    let host = |id: ServerId| server_name(id).map(|n| one_line(&n).into_owned()).unwrap_or_else(|| id.to_string());
    let what = match &event.kind {
        EventKind::ServerRegistered(s) => format!(
            "server {} registered at {}, capacity cpu {}%, mem {} MiB",
            server_title(s),
            one_line(&s.info.api_addr),
            s.info.cpu_capacity_percent,
            s.info.mem_capacity_bytes >> 20
        ),
        EventKind::ServerUpdated(s) => {
            format!(
                "server {} updated: {}{}, at {}, {}",
                server_title(s),
                status_word(s.status),
                if s.drained { " (drained)" } else { "" },
                one_line(&s.info.api_addr),
                resources(s)
            )
        }
        EventKind::ProcessRegistered(p) => {
            format!("process {} registered on {}{}", process_title(p), host(p.info.server), process_details(p))
        }
        EventKind::ProcessUpdated(p) => format!(
            "process {} updated: {}, on {}{}",
            process_title(p),
            status_word(p.status),
            host(p.info.server),
            process_details(p)
        ),
        EventKind::Departed { tombstone, .. } => {
            let who = match &tombstone.subject {
                TombstoneSubject::Server(s) => format!("server {}", server_title(s)),
                TombstoneSubject::Process(p) => format!("process {} on {}", process_title(p), host(p.info.server)),
            };
            format!("{who} {}", departure(&tombstone.departure))
        }
        EventKind::KvPut { key, value } => format!("kv put {} = {}", one_line(key), shown_value(value)),
        EventKind::KvDeleted { key } => format!("kv del {}", one_line(key)),
        EventKind::TokenCreated(info) => format!(
            "token {} {} created: {}{}",
            info.id,
            one_line(&info.name),
            info.role.describe(),
            info.expires_at_unix_ms.map(|at| format!(", expires at {at} (Unix ms)")).unwrap_or_default()
        ),
        EventKind::TokenRevoked { id, name } => format!("token {id} {} revoked", one_line(name)),
        EventKind::Audit(record) => {
            format!("audit: {} ({}) {}", one_line(&record.by), one_line(&record.role), one_line(&record.action))
        }
    };
    format!("rev {}  {what}", event.revision)
}

fn server_title(s: &ServerEntry) -> String {
    format!("{} ({})", one_line(&s.info.name), s.id)
}

fn process_title(p: &ProcessEntry) -> String {
    format!("{} ({})", one_line(&p.info.name), p.id)
}

fn status_word(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Online => "online",
        MemberStatus::Draining => "draining",
    }
}

fn resources(s: &ServerEntry) -> String {
    match s.resources {
        Some(r) => format!(
            "cpu {}% of {}%, mem {} of {} MiB",
            r.cpu_percent_avg,
            s.info.cpu_capacity_percent,
            r.mem_bytes_used_avg >> 20,
            s.info.mem_capacity_bytes >> 20
        ),
        None => "no resource report yet".to_string(),
    }
}

/// `, port 8080, team=a`: where it serves (the host only when it is not this machine's
/// loopback) and its labels.
fn process_details(p: &ProcessEntry) -> String {
    let mut out = String::new();
    if let Some(port) = p.info.service_port {
        let host = p.info.service_host.as_str();
        if matches!(host, "127.0.0.1" | "localhost" | "::1" | "") {
            out.push_str(&format!(", port {port}"));
        } else {
            out.push_str(&format!(", at {}:{port}", one_line(host)));
        }
    }
    if !p.info.labels.is_empty() {
        let labels: Vec<String> =
            p.info.labels.iter().map(|(k, v)| format!("{}={}", one_line(k), one_line(v))).collect();
        out.push_str(&format!(", {}", labels.join(",")));
    }
    if let Some(r) = p.resources {
        out.push_str(&format!(", cpu {}%, mem {} MiB", r.cpu_percent_avg, r.mem_bytes_used_avg >> 20));
    }
    out
}

fn departure(d: &Departure) -> String {
    match d {
        Departure::Deregistered { exit_status: Some(code) } => format!("deregistered, exit status {code}"),
        Departure::Deregistered { exit_status: None } => "deregistered".to_string(),
        Departure::Expired { silent_for_ms } => format!("expired after {silent_for_ms} ms silent"),
        Departure::Deleted => "deleted".to_string(),
    }
}

fn shown_value(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= MAX_SHOWN_VALUE_CHARS {
        return one_line(value).into_owned();
    }
    let head: String = value.chars().take(MAX_SHOWN_VALUE_CHARS).collect();
    format!("{}… ({} bytes)", one_line(&head), value.len())
}

/// `s` with control characters (newlines, escapes) written as escapes.
fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::{MemberId, ProcessInfo, ResourceAverage, ServerInfo};

    fn server(id: u64, name: &str) -> ServerEntry {
        ServerEntry {
            id: ServerId(id),
            info: ServerInfo {
                name: name.to_string(),
                raft_addr: format!("127.0.0.1:740{id}"),
                api_addr: format!("127.0.0.1:740{id}"),
                started_at_unix_ms: 1,
                cpu_capacity_percent: 800,
                mem_capacity_bytes: 16 << 30,
            },
            status: MemberStatus::Online,
            drained: false,
            resources: None,
            registered_rev: 2,
            updated_rev: 2,
        }
    }

    fn process(id: u64, name: &str, on: u64) -> ProcessEntry {
        ProcessEntry {
            id: ProcessId(id),
            resources: None,
            info: ProcessInfo {
                name: name.to_string(),
                server: ServerId(on),
                service_host: "127.0.0.1".to_string(),
                service_port: Some(8080),
                started_at_unix_ms: 1,
                labels: [("team".to_string(), "a".to_string())].into(),
                reserved: ResourceAverage::default(),
            },
            status: MemberStatus::Online,
            registered_rev: 13,
            updated_rev: 13,
        }
    }

    fn ev(revision: u64, kind: EventKind) -> Event {
        Event { revision, kind }
    }

    fn departed(p: ProcessEntry, departure: Departure) -> EventKind {
        EventKind::Departed {
            member: MemberId::Process(p.id),
            tombstone: Tombstone { subject: TombstoneSubject::Process(p), departure, left_at_unix_ms: 5, left_rev: 20 },
        }
    }

    fn dev1(id: ServerId) -> Option<String> {
        (id == ServerId(1)).then(|| "dev-1".to_string())
    }

    #[test]
    fn a_registration_names_the_process_its_host_port_and_labels() {
        let line = describe(&ev(13, EventKind::ProcessRegistered(process(1, "web", 1))), dev1);
        assert_eq!(line, "rev 13  process web (process-1) registered on dev-1, port 8080, team=a");
    }

    #[test]
    fn an_unknown_host_is_named_by_its_id_and_a_remote_host_is_shown() {
        let mut p = process(1, "web", 7);
        p.info.service_host = "10.0.0.5".to_string();
        p.info.labels.clear();
        let line = describe(&ev(13, EventKind::ProcessRegistered(p)), dev1);
        assert_eq!(line, "rev 13  process web (process-1) registered on server-7, at 10.0.0.5:8080");
    }

    #[test]
    fn departures_say_how_the_member_left() {
        let p = || process(2, "finisher", 1);
        let cases = [
            (Departure::Deregistered { exit_status: Some(3) }, "deregistered, exit status 3"),
            (Departure::Deregistered { exit_status: None }, "deregistered"),
            (Departure::Expired { silent_for_ms: 1520 }, "expired after 1520 ms silent"),
            (Departure::Deleted, "deleted"),
        ];
        for (departure, how) in cases {
            let line = describe(&ev(20, departed(p(), departure)), dev1);
            assert_eq!(line, format!("rev 20  process finisher (process-2) on dev-1 {how}"));
        }
        let s = server(2, "dev-2");
        let kind = EventKind::Departed {
            member: MemberId::Server(s.id),
            tombstone: Tombstone {
                subject: TombstoneSubject::Server(s),
                departure: Departure::Expired { silent_for_ms: 3000 },
                left_at_unix_ms: 5,
                left_rev: 21,
            },
        };
        assert_eq!(describe(&ev(21, kind), dev1), "rev 21  server dev-2 (server-2) expired after 3000 ms silent");
    }

    #[test]
    fn servers_show_address_capacity_status_and_resources() {
        let s = server(1, "dev-1");
        assert_eq!(
            describe(&ev(2, EventKind::ServerRegistered(s.clone())), dev1),
            "rev 2  server dev-1 (server-1) registered at 127.0.0.1:7401, capacity cpu 800%, mem 16384 MiB"
        );
        let mut updated = s;
        updated.status = MemberStatus::Draining;
        updated.resources = Some(ResourceAverage { cpu_percent_avg: 12, mem_bytes_used_avg: 512 << 20 });
        assert_eq!(
            describe(&ev(9, EventKind::ServerUpdated(updated)), dev1),
            "rev 9  server dev-1 (server-1) updated: draining, at 127.0.0.1:7401, cpu 12% of 800%, mem 512 of 16384 MiB"
        );
    }

    #[test]
    fn kv_changes_are_one_line_each_even_with_newlines_and_long_values() {
        let put = EventKind::KvPut { key: "greeting".into(), value: "hello\nworld".into() };
        assert_eq!(describe(&ev(4, put), dev1), "rev 4  kv put greeting = hello\\nworld");
        assert_eq!(describe(&ev(5, EventKind::KvDeleted { key: "greeting".into() }), dev1), "rev 5  kv del greeting");
        let long = EventKind::KvPut { key: "k".into(), value: "x".repeat(500) };
        let line = describe(&ev(6, long), dev1);
        assert!(line.ends_with("… (500 bytes)"), "{line}");
        assert!(line.len() < 200, "{line}");
    }

    #[test]
    fn no_line_has_a_line_break_whatever_the_names() {
        let mut p = process(1, "evil\nname", 1);
        p.info.labels.insert("k\r".into(), "v\n".into());
        let line = describe(&ev(1, EventKind::ProcessRegistered(p)), |_| Some("host\n".into()));
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    }

    #[test]
    fn only_a_change_of_resources_alone_is_resources_only() {
        let before = server(1, "dev-1");
        let mut reported = before.clone();
        reported.resources = Some(ResourceAverage { cpu_percent_avg: 5, mem_bytes_used_avg: 1 });
        reported.updated_rev = 9;
        assert!(is_resources_only(&before, &reported));
        let mut drained = reported.clone();
        drained.status = MemberStatus::Draining;
        assert!(!is_resources_only(&before, &drained));
        let mut restarted = reported.clone();
        restarted.info.started_at_unix_ms = 99;
        assert!(!is_resources_only(&before, &restarted));
        assert!(!is_resources_only(&before, &before), "no change at all is not a resource report");
    }

    #[test]
    fn known_servers_follow_the_stream() {
        let mut known = KnownServers::new([server(1, "dev-1")]);
        let mut reported = server(1, "dev-1");
        reported.resources = Some(ResourceAverage { cpu_percent_avg: 5, mem_bytes_used_avg: 1 });
        let report = ev(9, EventKind::ServerUpdated(reported.clone()));
        assert!(known.is_resources_only(&report));
        known.observe(&report);
        // The same report again changes nothing: not a resources-only update either.
        assert!(!known.is_resources_only(&report));
        let mut again = reported.clone();
        again.resources = Some(ResourceAverage { cpu_percent_avg: 6, mem_bytes_used_avg: 1 });
        assert!(known.is_resources_only(&ev(10, EventKind::ServerUpdated(again))));
        // A server first seen in an update: nothing says what changed, so it is shown.
        let stranger = ev(11, EventKind::ServerUpdated(server(3, "dev-3")));
        assert!(!known.is_resources_only(&stranger));
        known.observe(&stranger);
        assert_eq!(known.name(ServerId(3)).as_deref(), Some("dev-3"));
        assert_eq!(subject(&stranger), (SubjectKind::Server, "dev-3"));
    }

    #[test]
    fn subjects_name_the_member_or_key() {
        assert_eq!(subject(&ev(1, EventKind::ProcessRegistered(process(1, "web", 1)))), (SubjectKind::Process, "web"));
        let gone = ev(2, departed(process(1, "web", 1), Departure::Deleted));
        assert_eq!(subject(&gone), (SubjectKind::Process, "web"));
        assert_eq!(subject(&ev(3, EventKind::KvDeleted { key: "k".into() })), (SubjectKind::Kv, "k"));
    }
}
