use super::*;
use crate::command::{ProcessPatch, ServerPatch, TokenHash, TokenId};
use crate::ids::ProcessId;
use crate::model::{ProcessInfo, ResourceAverage, ServerInfo};
use proptest::prelude::*;

fn server_info() -> ServerInfo {
    ServerInfo {
        name: "s".into(),
        raft_addr: "a:1".into(),
        api_addr: "a:1".into(),
        started_at_unix_ms: 0,
        cpu_capacity_percent: 100,
        mem_capacity_bytes: 1,
    }
}

fn process_info(server: u64) -> ProcessInfo {
    ProcessInfo {
        name: "p".into(),
        server: ServerId(server),
        service_host: String::new(),
        service_port: None,
        started_at_unix_ms: 0,
        labels: Default::default(),
        reserved: ResourceAverage::default(),
    }
}

/// Every command kind, naming server `s` or process `p`.
fn commands(s: u64, p: u64) -> Vec<Command> {
    let status = ProcessPatch { status: Some(crate::model::MemberStatus::Draining), ..Default::default() };
    let port = ProcessPatch { service_port: Some(Some(80)), ..Default::default() };
    vec![
        Command::RegisterServer { id: ServerId(s), info: server_info() },
        Command::DeregisterServer { id: ServerId(s) },
        Command::RegisterProcess { info: process_info(s) },
        Command::DeregisterProcess { id: ProcessId(p), exit_status: None },
        Command::PutServer { id: ServerId(s), patch: ServerPatch::default(), create: None },
        Command::PutProcess { id: ProcessId(p), patch: port },
        Command::PutProcess { id: ProcessId(p), patch: status },
        Command::Delete { member: MemberId::Process(ProcessId(p)) },
        Command::Delete { member: MemberId::Server(ServerId(s)) },
        Command::KvPut { key: "k".into(), value: "v".into() },
        Command::KvDelete { key: "k".into() },
        Command::KvCas { key: "k".into(), expected: None, new: None },
        Command::Noop,
        Command::SetDrained { id: ServerId(s), drained: true },
        Command::CreateToken {
            hash: TokenHash([1; 32]),
            name: "t".into(),
            role: TokenRole::Admin,
            expires_at_unix_ms: None,
        },
        Command::CreateToken {
            hash: TokenHash([2; 32]),
            name: "t".into(),
            role: TokenRole::Member(MemberId::Process(ProcessId(p))),
            expires_at_unix_ms: None,
        },
        Command::RevokeToken { id: TokenId(1) },
    ]
}

/// The server that hosts process `p` in these tests: `p`'s host is `host`.
fn check(caller: Principal, command: &Command, host: Option<ServerId>) -> bool {
    authorize(caller, &Action::Command { command, host }).is_ok()
}

#[test]
fn a_member_may_heartbeat_update_and_deregister_itself_only() {
    let me = MemberId::Process(ProcessId(7));
    let caller = Principal::Member(me);
    let own_port = Command::PutProcess {
        id: ProcessId(7),
        patch: ProcessPatch { service_port: Some(Some(8080)), ..Default::default() },
    };
    assert!(check(caller, &own_port, Some(ServerId(1))));
    assert!(check(caller, &Command::DeregisterProcess { id: ProcessId(7), exit_status: Some(0) }, None));
    assert!(authorize(caller, &Action::Heartbeat { member: me, host: Some(ServerId(1)) }).is_ok());
    assert!(authorize(caller, &Action::Read).is_ok());
    let other = MemberId::Process(ProcessId(8));
    assert!(authorize(caller, &Action::Heartbeat { member: other, host: Some(ServerId(1)) }).is_err());
    assert!(!check(caller, &Command::DeregisterProcess { id: ProcessId(8), exit_status: None }, Some(ServerId(1))));
    assert!(!check(caller, &Command::Delete { member: other }, None));
    assert!(!check(caller, &Command::Delete { member: me }, None));
    for action in [
        Action::NodeMembership,
        Action::Snapshot,
        Action::Launch,
        Action::ReadOutput,
        Action::ListTokens,
        Action::NodeOnly,
    ] {
        assert!(authorize(caller, &action).is_err(), "{action:?}");
    }
}

#[test]
fn a_member_may_not_set_its_own_status() {
    let caller = Principal::Member(MemberId::Process(ProcessId(7)));
    let patch = ProcessPatch { status: Some(crate::model::MemberStatus::Draining), ..Default::default() };
    let refusal =
        authorize(caller, &Action::Command { command: &Command::PutProcess { id: ProcessId(7), patch }, host: None })
            .unwrap_err();
    assert_eq!(refusal.role, "member process-7");
    assert!(refusal.to_string().contains("may not set the status of process-7"), "{refusal}");
}

#[test]
fn an_agent_speaks_for_its_server_and_the_processes_it_hosts() {
    let caller = Principal::Agent(ServerId(2));
    assert!(check(caller, &Command::RegisterServer { id: ServerId(2), info: server_info() }, None));
    assert!(!check(caller, &Command::RegisterServer { id: ServerId(3), info: server_info() }, None));
    assert!(check(caller, &Command::RegisterProcess { info: process_info(2) }, None));
    assert!(!check(caller, &Command::RegisterProcess { info: process_info(3) }, None));
    let dereg = Command::DeregisterProcess { id: ProcessId(5), exit_status: None };
    assert!(check(caller, &dereg, Some(ServerId(2))));
    assert!(!check(caller, &dereg, Some(ServerId(3))));
    assert!(!check(caller, &dereg, None), "an unknown process has no host an agent could claim");
    let own = MemberId::Process(ProcessId(5));
    assert!(authorize(caller, &Action::Heartbeat { member: own, host: Some(ServerId(2)) }).is_ok());
    assert!(authorize(caller, &Action::Heartbeat { member: own, host: Some(ServerId(1)) }).is_err());
    assert!(!check(caller, &Command::SetDrained { id: ServerId(2), drained: true }, None));
}

#[test]
fn read_and_launch_roles_write_nothing() {
    for caller in [Principal::Read, Principal::Launch] {
        for command in commands(1, 1) {
            let allowed = check(caller, &command, Some(ServerId(1)));
            assert_eq!(allowed, command == Command::Noop, "{caller} {command:?}");
        }
        assert!(authorize(caller, &Action::Read).is_ok());
        assert!(authorize(caller, &Action::NodeMembership).is_err());
    }
    assert!(authorize(Principal::Launch, &Action::Launch).is_ok());
    assert!(authorize(Principal::Read, &Action::Launch).is_err());
}

#[test]
fn a_launched_jobs_output_is_for_those_who_may_launch() {
    assert!(authorize(Principal::Admin, &Action::ReadOutput).is_ok());
    assert!(authorize(Principal::Launch, &Action::ReadOutput).is_ok());
    let refused = authorize(Principal::Read, &Action::ReadOutput).expect_err("read may not");
    assert_eq!(refused.to_string(), "forbidden: a read credential may not read a launched process's output");
    assert!(authorize(Principal::Agent(ServerId(1)), &Action::ReadOutput).is_err());
    assert!(authorize(Principal::Member(MemberId::Process(ProcessId(1))), &Action::ReadOutput).is_err());
}

#[test]
fn only_nodes_send_node_requests_and_admin_does_the_rest() {
    for caller in [Principal::Admin, Principal::Read, Principal::Launch, Principal::Agent(ServerId(1))] {
        assert!(authorize(caller, &Action::NodeOnly).is_err(), "{caller}");
    }
    assert!(authorize(Principal::Node, &Action::NodeOnly).is_ok());
    for command in commands(4, 9) {
        assert!(check(Principal::Admin, &command, None), "{command:?}");
    }
}

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        Just(Principal::Read),
        Just(Principal::Launch),
        (1u64..4).prop_map(|s| Principal::Agent(ServerId(s))),
        (1u64..4).prop_map(|p| Principal::Member(MemberId::Process(ProcessId(p)))),
        (1u64..4).prop_map(|s| Principal::Member(MemberId::Server(ServerId(s)))),
    ]
}

proptest! {
    /// No member or agent credential ever authorises an action on another member, on
    /// the node membership, or on tokens; read and launch credentials change nothing.
    #[test]
    fn no_worker_credential_reaches_beyond_itself(
        caller in principal(),
        s in 1u64..4,
        p in 1u64..4,
        host in proptest::option::of(1u64..4),
    ) {
        let host = host.map(ServerId);
        // What the caller may speak for: itself, and for an agent the processes it hosts.
        let speaks_for = |member: MemberId| match (caller, member) {
            (Principal::Member(me), m) => me == m,
            (Principal::Agent(server), MemberId::Server(id)) => id == server,
            (Principal::Agent(server), MemberId::Process(_)) => host == Some(server),
            _ => false,
        };
        for command in commands(s, p) {
            if !check(caller, &command, host) {
                continue;
            }
            match &command {
                Command::RegisterServer { id, .. } | Command::DeregisterServer { id } | Command::PutServer { id, .. } => {
                    prop_assert!(speaks_for(MemberId::Server(*id)), "{caller} {command:?}");
                }
                Command::RegisterProcess { info } => {
                    prop_assert_eq!(caller, Principal::Agent(info.server), "{:?}", command);
                }
                Command::DeregisterProcess { id, .. } | Command::PutProcess { id, .. } => {
                    prop_assert!(speaks_for(MemberId::Process(*id)), "{caller} {command:?}");
                }
                Command::CreateToken { role: TokenRole::Member(member), .. } => {
                    prop_assert!(matches!(caller, Principal::Agent(_)) && speaks_for(*member), "{caller} {command:?}");
                }
                Command::Noop => {}
                other => prop_assert!(false, "{caller} may {other:?}"),
            }
        }
        let heartbeat = MemberId::Process(ProcessId(p));
        if authorize(caller, &Action::Heartbeat { member: heartbeat, host }).is_ok() {
            prop_assert!(speaks_for(heartbeat));
        }
        for action in [Action::NodeMembership, Action::ListTokens, Action::Snapshot, Action::NodeOnly] {
            prop_assert!(authorize(caller, &action).is_err(), "{caller} {action:?}");
        }
    }
}
