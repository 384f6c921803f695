use super::*;
use roster_kernel::{
    Departure, Event, EventKind, Labels, MemberId, MemberStatus, ProcessEntry, ProcessId, ProcessInfo, ResourceAverage,
    ServerEntry, ServerId, ServerInfo, Tombstone, TombstoneSubject,
};
use serde_json::{Value, json};

fn server(id: u64, name: &str) -> ServerEntry {
    ServerEntry {
        id: ServerId(id),
        info: ServerInfo {
            name: name.to_string(),
            raft_addr: format!("127.0.0.1:740{id}"),
            api_addr: format!("127.0.0.1:740{id}"),
            started_at_unix_ms: 1_796_170_242_299,
            cpu_capacity_percent: 800,
            mem_capacity_bytes: 16 << 30,
        },
        status: MemberStatus::Draining,
        drained: true,
        resources: Some(ResourceAverage { cpu_percent_avg: 12, mem_bytes_used_avg: 3 << 20 }),
        registered_rev: 2,
        updated_rev: 9,
    }
}

fn process(id: u64, name: &str) -> ProcessEntry {
    ProcessEntry {
        id: ProcessId(id),
        info: ProcessInfo {
            name: name.to_string(),
            server: ServerId(1),
            service_host: "10.0.0.5".into(),
            service_port: Some(8080),
            started_at_unix_ms: 1_796_170_242_299,
            labels: Labels::from([("tier".to_string(), "front".to_string())]),
            reserved: ResourceAverage::default(),
        },
        status: MemberStatus::Online,
        resources: None,
        registered_rev: 4,
        updated_rev: 4,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("encodes")
}

/// Serializes `v`, reads it back as `T` and checks it is the same value and JSON.
fn round_trip<T>(v: &T) -> Value
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let j = to_json(v);
    let back: T = serde_json::from_value(j.clone()).unwrap_or_else(|e| panic!("{j} does not read back: {e}"));
    assert_eq!(&back, v, "{j}");
    j
}

#[test]
fn status_words_are_the_filters_words() {
    let j = round_trip(&ServerView::from(&server(1, "a")));
    assert_eq!(j["status"], "draining");
    assert_eq!(round_trip(&ProcessView::from(&process(5, "web")))["status"], "online");
}

#[test]
fn a_server_has_its_name_at_one_path_in_status_ls_and_get() {
    let entry = server(2, "dev-2");
    let status = round_trip(&ServerStatusView { server: ServerView::from(&entry), heartbeat_age_ms: Some(120) });
    let listed = round_trip(&ServerPage { revision: 9, servers: vec![ServerView::from(&entry)], next: None });
    let got = round_trip(&OneServer { revision: 9, server: ServerView::from(&entry) });
    assert_eq!(status["info"]["name"], "dev-2");
    assert_eq!(listed["servers"][0]["info"]["name"], "dev-2");
    assert_eq!(got["server"]["info"]["name"], "dev-2");
    assert_eq!(status["heartbeat_age_ms"], 120);
    // Status's entry is ls's entry plus the heartbeat age, nothing renamed.
    let mut without_age = status.clone();
    without_age.as_object_mut().unwrap().remove("heartbeat_age_ms");
    assert_eq!(without_age, listed["servers"][0]);
}

#[test]
fn a_tombstone_tags_its_member_and_departure_with_type() {
    let cases = [
        (Departure::Deleted, json!({ "type": "deleted" })),
        (Departure::Expired { silent_for_ms: 4_000 }, json!({ "type": "expired", "silent_for_ms": 4_000 })),
        (Departure::Deregistered { exit_status: Some(3) }, json!({ "type": "deregistered", "exit_status": 3 })),
    ];
    for (departure, expected) in cases {
        let t = Tombstone {
            subject: TombstoneSubject::Process(process(5, "web")),
            departure,
            left_at_unix_ms: 7,
            left_rev: 30,
        };
        let j = round_trip(&TombstoneView::from(&t));
        assert_eq!(j["departure"], expected);
        assert_eq!(j["member"]["type"], "process");
        assert_eq!(j["member"]["id"], 5);
        assert_eq!(j["member"]["info"]["name"], "web");
    }
    let t = Tombstone {
        subject: TombstoneSubject::Server(server(3, "dev-3")),
        departure: Departure::Deleted,
        left_at_unix_ms: 7,
        left_rev: 30,
    };
    assert_eq!(round_trip(&TombstoneView::from(&t))["member"]["type"], "server");
}

#[test]
fn an_event_is_revision_type_data_and_text() {
    let put = Event { revision: 9, kind: EventKind::KvPut { key: "a".into(), value: "1".into() } };
    let j = round_trip(&EventView::new(&put, |_| None));
    assert_eq!(j["revision"], 9);
    assert_eq!(j["type"], "kv_put");
    assert_eq!(j["data"], json!({ "key": "a", "value": "1" }));
    assert!(j["text"].as_str().unwrap().contains("rev 9"), "{j}");
    assert_eq!(j.as_object().unwrap().len(), 4, "{j}");

    let registered = Event { revision: 10, kind: EventKind::ProcessRegistered(process(5, "web")) };
    let j = round_trip(&EventView::new(&registered, |id| (id == ServerId(1)).then(|| "dev-1".to_string())));
    assert_eq!(j["type"], "process_registered");
    assert_eq!(j["data"], to_json(&ProcessView::from(&process(5, "web"))));
    assert!(j["text"].as_str().unwrap().contains("dev-1"), "{j}");

    let tombstone = Tombstone {
        subject: TombstoneSubject::Process(process(5, "web")),
        departure: Departure::Expired { silent_for_ms: 4_000 },
        left_at_unix_ms: 7,
        left_rev: 11,
    };
    let departed = Event {
        revision: 11,
        kind: EventKind::Departed { member: MemberId::Process(ProcessId(5)), tombstone: tombstone.clone() },
    };
    let j = round_trip(&EventView::new(&departed, |_| None));
    assert_eq!(j["type"], "departed");
    assert_eq!(j["data"], to_json(&TombstoneView::from(&tombstone)), "the data is the tombstone as listed");
    let deleted = Event { revision: 12, kind: EventKind::KvDeleted { key: "a".into() } };
    assert_eq!(round_trip(&EventView::new(&deleted, |_| None))["type"], "kv_deleted");
}

#[test]
fn a_write_reply_is_its_fields_alone() {
    use roster_kernel::Reply;
    let cases = [
        (Reply::Done { revision: 7 }, json!({ "revision": 7 })),
        (Reply::ProcessRegistered { id: ProcessId(5), revision: 8 }, json!({ "id": 5, "revision": 8 })),
        (
            Reply::Cas { swapped: false, current: Some("x".into()), revision: 9 },
            json!({ "swapped": false, "current": "x", "revision": 9 }),
        ),
        (
            Reply::Cas { swapped: true, current: None, revision: 9 },
            json!({ "swapped": true, "current": null, "revision": 9 }),
        ),
        (Reply::Applied { count: 2, revision: 10 }, json!({ "count": 2, "revision": 10 })),
        (Reply::SessionOpened { session: roster_kernel::SessionId(3) }, json!({ "session": 3 })),
    ];
    for (reply, expected) in cases {
        assert_eq!(round_trip(&WriteReply::from(&reply)), expected);
    }
}

#[test]
fn an_error_carries_its_details_beside_kind_and_message() {
    let e = ErrorView::new("compacted", "too old").with_details(json!({ "oldest_available": 40 }));
    assert_eq!(
        round_trip(&e),
        json!({ "error": { "kind": "compacted", "message": "too old", "oldest_available": 40 } })
    );
}

/// Every example in docs/json.md, under a `<!-- shape: NAME -->` line, reads as that
/// type and writes back as the very same JSON (so the example shows every field and no
/// field the type lacks); every shape has an example.
#[test]
fn every_example_in_the_docs_reads_back_as_its_type() {
    let doc = include_str!("../../../docs/json.md");
    let mut shown = std::collections::BTreeSet::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("<!-- shape: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```json"), "shape {name}: expected a ```json block next, found {fence:?}");
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        let text = body.join("\n");
        // A stream's example is one JSON document per line.
        let docs: Vec<Value> = if name.ends_with("Line") {
            body.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {l}: {e}"))).collect()
        } else {
            vec![serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))]
        };
        for v in docs {
            let back = reads_back(name, &v).unwrap_or_else(|e| panic!("{name}: {e}\n{v}"));
            assert_eq!(back, v, "{name}: the example has fields the type does not, or lacks some");
        }
        shown.insert(name.to_string());
    }
    let missing: Vec<&&str> = SHAPES.iter().filter(|s| !shown.contains(**s)).collect();
    assert!(missing.is_empty(), "docs/json.md has no example of {missing:?}");
}

const SHAPES: &[&str] = &[
    "StatusView",
    "MemberList",
    "ServerPage",
    "ProcessPage",
    "OneServer",
    "OneProcess",
    "Tombstones",
    "KvValue",
    "KvItems",
    "WriteReply",
    "EventLine",
    "ErrorView",
    "TokenList",
    "Launched",
];

fn reads_back(name: &str, v: &Value) -> Result<Value, String> {
    fn again<T: serde::Serialize + serde::de::DeserializeOwned>(v: &Value) -> Result<Value, String> {
        let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(t).map_err(|e| e.to_string())
    }
    match name {
        "StatusView" => again::<StatusView>(v),
        "MemberList" => again::<MemberList>(v),
        "ServerPage" => again::<ServerPage>(v),
        "ProcessPage" => again::<ProcessPage>(v),
        "OneServer" => again::<OneServer>(v),
        "OneProcess" => again::<OneProcess>(v),
        "Tombstones" => again::<Tombstones>(v),
        "KvValue" => again::<KvValue>(v),
        "KvItems" => again::<KvItems>(v),
        "WriteReply" => again::<WriteReply>(v),
        "ErrorView" => again::<ErrorView>(v),
        "TokenList" => again::<TokenList>(v),
        "Launched" => again::<Launched>(v),
        // A line of the event stream: an event, a progress line or an error.
        "EventLine" if v.get("error").is_some() => again::<ErrorView>(v),
        "EventLine" if v.get("progress").is_some() => again::<ProgressLine>(v),
        "EventLine" => again::<EventView>(v),
        other => Err(format!("no shape named {other}")),
    }
}
