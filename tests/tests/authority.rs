//! The hostile-client suite: every caller holds only what it needs, and peers prove they
//! are peers. Real binaries; each refusal is checked for its message and for the effect
//! that did not happen.

use roster_kernel::codec::{decode_frame, encode_frame};
use roster_real::net::wire::{Auth, Channel, Hello, HelloReply, PeerProof};
use roster_tests::{TestCluster, eventually, json, ok};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

const FRAME: usize = 4 << 20;

/// `roster ARGS` with `token` as the only credential (no token file).
fn as_token(c: &TestCluster, token: &str, args: &[&str]) -> Output {
    c.command(args)
        .env_remove("ROSTER_TOKEN_FILE")
        .env("ROSTER_TOKEN", token)
        .args(["--timeout-ms", "5000"])
        .output()
        .expect("run roster")
}

fn refused(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} was allowed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("forbidden"), "{what}: the refusal does not say forbidden: {stderr}");
}

fn create_token(c: &TestCluster, args: &[&str]) -> String {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    let out = c.roster(&full);
    ok(&out).trim().to_string()
}

fn voters(c: &TestCluster) -> usize {
    json(&c.roster(&["status", "--json"]))["voters"].as_array().expect("voters").len()
}

/// One raw handshake: sends `hello`, answers a peer challenge with `proof`, and returns
/// the final reply.
fn raw_hello(addr: &str, hello: &Hello, proof: Option<[u8; 32]>) -> HelloReply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(&encode_frame(hello, FRAME).expect("encode")).expect("send hello");
    let reply = read_reply(&mut s);
    match (reply, proof) {
        (HelloReply::Challenge { .. }, Some(proof)) => {
            s.write_all(&encode_frame(&PeerProof { proof }, FRAME).expect("encode")).expect("send proof");
            read_reply(&mut s)
        }
        (reply, _) => reply,
    }
}

fn read_reply(s: &mut TcpStream) -> HelloReply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((reply, _)) = decode_frame::<HelloReply>(&buf, FRAME).expect("a hello reply") {
            return reply;
        }
        let n = s.read(&mut chunk).expect("read a hello reply");
        assert!(n > 0, "closed without a reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn refusal(reply: HelloReply) -> String {
    match reply {
        HelloReply::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_role_does_what_it_may_and_is_refused_the_rest() {
    let c = TestCluster::start("authority-roles", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let read = create_token(&c, &["--role", "read", "--name", "dashboard"]);
    let launch = create_token(&c, &["--role", "launch", "--name", "zeppelin"]);
    let agent = create_token(&c, &["--role", "agent", "--server", "2", "--name", "host-2"]);
    ok(&c.roster(&["kv", "put", "k", "v0"]));

    for (role, token) in [("read", &read), ("launch", &launch), ("agent", &agent)] {
        // Reads are open to every role.
        ok(&as_token(&c, token, &["status"]));
        assert_eq!(ok(&as_token(&c, token, &["kv", "get", "k"])).trim(), "v0", "{role} reads");
        // Writes, membership, drains, deletes, backups and tokens are not.
        refused(&as_token(&c, token, &["kv", "put", "k", role]), &format!("{role}: kv put"));
        refused(&as_token(&c, token, &["member", "remove", "3"]), &format!("{role}: member remove"));
        refused(&as_token(&c, token, &["server", "drain", "1"]), &format!("{role}: drain"));
        refused(&as_token(&c, token, &["del", "server:1"]), &format!("{role}: del"));
        refused(&as_token(&c, token, &["token", "create", "--role", "admin"]), &format!("{role}: token create"));
        refused(&as_token(&c, token, &["token", "ls"]), &format!("{role}: token ls"));
        let backup = c.dir.0.join(format!("{role}.backup"));
        refused(
            &as_token(&c, token, &["snapshot", "save", backup.to_str().expect("utf8")]),
            &format!("{role}: snapshot save"),
        );
    }
    // Nothing of it applied.
    assert_eq!(c.kv_get_at(&c.endpoints(), "k", false).as_deref(), Some("v0"));
    assert_eq!(voters(&c), 3, "a refused member remove removed a voter");
    let servers = json(&c.roster(&["ls", "--kind", "servers", "--json"]));
    assert!(servers.to_string().contains("\"drained\":false"), "a refused drain applied: {servers}");
    let tokens = ok(&c.roster(&["token", "ls"]));
    assert_eq!(tokens.lines().count(), 3, "a refused token create made one: {tokens}");

    // An agent registers processes on its own server only.
    let on_2 = as_token(&c, &agent, &["put", "server:2", "--name", "renamed-2"]);
    ok(&on_2);
    refused(&as_token(&c, &agent, &["put", "server:1", "--name", "stolen"]), "agent: another server");
    // The admin audit trail names who did what.
    let mut watch = c.spawn_client(&["watch", "--after", "0", "--kind", "audit", "--count", "1"]);
    let events = watch.wait_output(Duration::from_secs(10));
    let trail = String::from_utf8_lossy(&events.stdout);
    assert!(trail.contains("bootstrap") && trail.contains("create read token"), "no audit of the token: {trail}");
    // A read credential's stream leaves the credentials' events out, as `token ls` is refused it.
    let mut hidden = c.command(&["watch", "--after", "0", "--kind", "audit"]);
    hidden.env_remove("ROSTER_TOKEN_FILE").env("ROSTER_TOKEN", &read).stdout(std::process::Stdio::piped());
    let mut hidden = roster_tests::ChildGuard(Some(hidden.spawn().expect("watch")));
    std::thread::sleep(Duration::from_secs(2));
    let seen = hidden.kill_and_output();
    let stdout = seen.split("stderr:").next().unwrap_or_default();
    assert!(!stdout.contains("audit:"), "a read credential saw the audit trail: {seen}");
}

#[test]
fn a_worker_holds_its_own_credential_and_nothing_else() {
    let c = TestCluster::start("authority-worker", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let admin = std::fs::read_to_string(&c.token_file).expect("token file");
    // The program prints its environment, then tries everything with what it holds.
    let script = "env; echo ---; \
                  roster member remove 3; echo rm=$?; \
                  roster kv put stolen yes; echo put=$?; \
                  roster del server:1; echo del=$?; \
                  roster server drain 1; echo drain=$?; \
                  roster token create --role admin; echo token=$?; \
                  roster launch --name x -- /bin/true; echo launch=$?; \
                  roster snapshot save /tmp/roster-worker.backup; echo snap=$?";
    let bin_dir = roster_tests::roster_bin().parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out =
        c.command(&["run", "--name", "worker", "--", "sh", "-c", script]).env("PATH", path).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (env, results) = stdout.split_once("---").expect("the program ran");
    assert!(!env.contains(admin.trim()), "the program was handed the admin token:\n{env}");
    for var in ["ROSTER_TOKEN_FILE=", "ROSTER_PEER_KEY", "ROSTER_TLS_KEY="] {
        assert!(!env.contains(var), "the program was handed {var}:\n{env}");
    }
    assert!(env.contains("ROSTER_MEMBER_ID=process-"), "no member id:\n{env}");
    assert!(env.contains("ROSTER_TOKEN="), "no member token:\n{env}");
    for what in ["rm", "put", "del", "drain", "token", "launch", "snap"] {
        assert!(results.contains(&format!("{what}=1")), "{what} was not refused:\n{results}");
    }
    assert!(out.status.success(), "the wrapper failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(voters(&c), 3);
    assert_eq!(c.kv_get_at(&c.endpoints(), "stolen", false), None);
    // It deregistered itself with its member token: the tombstone says so.
    let tombstones = ok(&c.roster(&["tombstones", "--json"]));
    assert!(tombstones.contains("worker") && tombstones.contains("\"deregistered\""), "{tombstones}");
}

#[test]
fn a_session_serves_only_the_credential_that_opened_it() {
    use roster_kernel::{Command, CommandError};
    use roster_real::client::{Client, ClientError, ClientOptions};
    let c = TestCluster::start("authority-session", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let admin = std::fs::read_to_string(&c.token_file).expect("token file");
    let other = create_token(&c, &["--role", "admin", "--name", "other"]);
    let endpoints: Vec<String> = c.endpoints().split(',').map(str::to_owned).collect();
    let options = |token: &str| ClientOptions {
        endpoints: endpoints.clone(),
        token: token.trim().to_owned(),
        connect_timeout_ms: 1_000,
        request_timeout_ms: 10_000,
    };
    let put = |value: &str| Command::KvPut { key: "owned".into(), value: value.into() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let owner = Client::connect(options(&admin), 1).await.expect("owner connects");
        let stranger = Client::connect(options(&other), 2).await.expect("stranger connects");
        let session = owner.open_session().await.expect("open");
        let first = owner.execute_in(session, 1, put("mine"), None).await.expect("the owner writes");
        // The same pair, or the next one, from another credential: refused, and the
        // stored reply is not shown.
        for seq in [1, 2] {
            let stolen = stranger.execute_in(session, seq, put("stolen"), None).await;
            assert!(
                matches!(stolen, Err(ClientError::Refused(CommandError::NotYourSession(s))) if s == session),
                "{stolen:?}"
            );
        }
        let close = stranger.close_session(session, None).await;
        assert!(matches!(close, Err(ClientError::Refused(CommandError::NotYourSession(_)))), "{close:?}");
        assert_eq!(owner.execute_in(session, 1, put("mine"), None).await.expect("a retry"), first);
        owner.close_session(session, None).await.expect("the owner closes it");
        let after = owner.execute_in(session, 2, put("again"), None).await;
        assert!(matches!(after, Err(ClientError::Refused(CommandError::SessionExpired(_)))), "{after:?}");
    });
    assert_eq!(c.kv_get_at(&c.endpoints(), "owned", false).as_deref(), Some("mine"));
}

#[test]
fn a_revoked_token_is_refused_on_every_node() {
    let c = TestCluster::start("authority-revoke", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let read = create_token(&c, &["--role", "read", "--name", "soon-gone"]);
    for id in 1..=3 {
        let addr = c.nodes[&id].addr.clone();
        ok(&as_token(&c, &read, &["status", "--endpoints", &addr]));
    }
    let listed = ok(&c.roster(&["token", "ls", "--json"]));
    let id = serde_json::from_str::<serde_json::Value>(&listed).expect("json")["tokens"][0]["id"]
        .as_u64()
        .expect("token id");
    ok(&c.roster(&["token", "revoke", &id.to_string()]));
    for n in 1..=3 {
        let addr = c.nodes[&n].addr.clone();
        let out = eventually(Duration::from_secs(10), &format!("node {n} to refuse the revoked token"), || {
            let out = as_token(&c, &read, &["status", "--endpoints", &addr]);
            (!out.status.success()).then_some(out)
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("revoked"), "node {n}: {stderr}");
    }
}

#[test]
fn no_client_credential_opens_a_peer_connection_and_a_forged_term_never_lands() {
    let c = TestCluster::start("authority-peer", 3, |_| vec![]);
    let term_before = c.wait_leader(Duration::from_secs(20))["term"].as_u64().expect("term");
    let admin = std::fs::read_to_string(&c.token_file).expect("token file").trim().to_string();
    let member = {
        let out = c.run_to_end(&["run", "--name", "m", "--", "sh", "-c", "echo $ROSTER_TOKEN"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(member.len(), 64, "no member token seen");
    for id in 1..=3 {
        let addr = c.nodes[&id].addr.clone();
        for (what, token) in [("admin", &admin), ("member", &member)] {
            let hello = Hello { auth: Auth::Token(token.clone()), channel: Channel::Raft };
            let reason = refusal(raw_hello(&addr, &hello, None));
            assert!(reason.contains("never opens a peer"), "{what} token on the Raft channel: {reason}");
        }
        // Claiming to be a peer without the key: the challenge cannot be answered.
        let hello = Hello { auth: Auth::Peer { from: 99, cluster: None, nonce: [7; 32] }, channel: Channel::Raft };
        let reason = refusal(raw_hello(&addr, &hello, Some([0; 32])));
        assert!(reason.contains("peer key"), "a forged peer: {reason}");
        // Nor as a node on the client channel (Readmit, StartLocal).
        let hello = Hello { auth: Auth::Peer { from: 1, cluster: None, nonce: [8; 32] }, channel: Channel::Client };
        refusal(raw_hello(&addr, &hello, Some([1; 32])));
    }
    let status = c.wait_leader(Duration::from_secs(10));
    let term = status["term"].as_u64().expect("term");
    assert!(term < 1_000 && term >= term_before, "the term moved to {term}");
    assert!(status["leader"].as_u64().is_some_and(|l| (1..=3).contains(&l)), "{status}");
}

#[test]
fn an_idle_connection_flood_meets_the_cap_and_the_node_serves_again_after_it() {
    let c = TestCluster::start("authority-flood", 3, |_| vec![]);
    // A follower is flooded: the others keep the cluster writable meanwhile.
    let leader = c.leader();
    let flooded = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != flooded).collect();
    let addr = c.nodes[&flooded].addr.clone();
    // Above the node's cap (4096): connections that said hello and then idle hold their
    // slots (one that never says hello is closed after 5 s); past the cap each new one is
    // refused at once, by name.
    let admin = std::fs::read_to_string(&c.token_file).expect("token file").trim().to_string();
    let hello = encode_frame(&Hello { auth: Auth::Token(admin), channel: Channel::Client }, FRAME).expect("hello");
    let (mut flood, mut busy) = (Vec::new(), 0);
    for _ in 0..4_300 {
        let Ok(mut s) = TcpStream::connect(&addr) else { continue };
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(&hello).expect("send hello");
        match read_reply(&mut s) {
            HelloReply::Welcome { .. } => flood.push(s),
            HelloReply::Refused { reason } if reason.contains("node busy") => busy += 1,
            other => panic!("unexpected answer during the flood: {other:?}"),
        }
    }
    assert!(flood.len() >= 4_000 && flood.len() <= 4_096, "{} connections held", flood.len());
    assert!(busy >= 200, "past the cap only {busy} connections were refused as busy");
    // The rest of the cluster serves meanwhile, and its WAL is fine.
    ok(&c.roster_at(&c.endpoints_of(&others), &["kv", "put", "during", "flood"]));
    drop(flood);
    // Served again once the flood ends.
    eventually(Duration::from_secs(15), "the flooded node to serve after the flood", || c.status_at(&addr));
    assert_eq!(c.kv_get_at(&addr, "during", true).as_deref(), Some("flood"), "it replicated meanwhile");
    assert!(
        !c.log_of(flooded).contains("Too many open files"),
        "the node ran out of descriptors:\n{}",
        c.log_of(flooded)
    );
}

#[test]
fn a_node_running_as_root_starts_launched_jobs_as_its_launch_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: launch_user needs the node to run as root (CI does)");
        return;
    }
    let id = std::fs::canonicalize(roster_tests::which("id")).expect("id").to_string_lossy().into_owned();
    let c = TestCluster::start("authority-launch-user", 3, |_| {
        vec!["--launch-allow".into(), id.clone(), "--launch-user".into(), "nobody".into()]
    });
    c.wait_leader(Duration::from_secs(20));
    ok(&c.run_to_end(&["launch", "--name", "who", "--", &id, "-u"]));
    let uid = eventually(Duration::from_secs(15), "the launched job's output", || {
        (1..=3).find_map(|n| {
            let dir = c.data_dir(n).join("launched");
            std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
                let text = std::fs::read_to_string(entry.path()).ok()?;
                text.lines().find(|l| l.trim().parse::<u32>().is_ok()).map(|l| l.trim().to_string())
            })
        })
    });
    assert_eq!(uid, "65534", "the job did not run as nobody");
}
