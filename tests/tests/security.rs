//! A wrong token is refused and changes nothing; malformed and oversized frames close
//! their connection without hurting the node.

use roster_tests::{TestCluster, eventually, ok, roster_bin};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// The wire protocol version these hand-made frames speak (`roster_kernel::codec::WIRE_VERSION`;
/// written out, as a client in another language would).
const WIRE_VERSION: u8 = 10;

/// A frame: u32 BE length (version byte + body), the version byte, the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(WIRE_VERSION);
    f.extend_from_slice(body);
    f
}

/// postcard of `Hello { token, role: Role::Client }`.
fn client_hello(token: &str) -> Vec<u8> {
    assert!(token.len() < 128, "one-byte varint length");
    let mut b = vec![0, token.len() as u8]; // Auth::Token
    b.extend_from_slice(token.as_bytes());
    b.push(1); // Channel::Client
    b
}

/// Reads until the peer closes the connection (EOF or reset), failing if it is still
/// open after `within`. Returns whatever the node sent before closing.
fn expect_closed(mut s: TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: connection still open after {within:?} (received {} bytes)", got.len());
        s.set_read_timeout(Some(left)).expect("set read timeout");
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: connection still open after {within:?} (received {} bytes)", got.len())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return got, // reset: closed too
        }
    }
}

fn connect(c: &TestCluster, addr: &str) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}\n{}", c.logs()));
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("set write timeout");
    s
}

fn still_serving(c: &TestCluster, addr: &str, key: &str) {
    ok(&c.roster(&["kv", "put", key, "still-here"]));
    assert_eq!(
        c.kv_get_at(addr, key, false).as_deref(),
        Some("still-here"),
        "node {addr} no longer serves\n{}",
        c.logs()
    );
}

#[test]
fn wrong_token_is_refused_and_applies_nothing() {
    let c = TestCluster::start("security-token", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let bad = c.dir.0.join("bad-token");
    std::fs::write(&bad, "not-the-cluster-token-xyz").expect("write bad token");

    let started = Instant::now();
    let out = Command::new(roster_bin())
        .args(["kv", "put", "intruder", "was-here", "--timeout-ms", "3000", "--endpoints", &c.endpoints()])
        .arg("--token-file")
        .arg(&bad)
        .env_remove("ROSTER_TOKEN")
        .output()
        .expect("run roster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a put with the wrong token succeeded: {stderr}");
    assert!(stderr.to_lowercase().contains("token"), "the error does not mention the token: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "refusal took {:?}", started.elapsed());

    // Nothing applied: read with the right token, linearizably.
    let out = c.roster(&["kv", "get", "intruder", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (out.status.code(), v["error"]["kind"].as_str()),
        (Some(1), Some("not_found")),
        "the refused put was applied: {v}"
    );

    // A raw client Hello with a wrong token is answered (refused) and the connection closed.
    let addr = c.nodes[&1].addr.clone();
    eventually(Duration::from_secs(10), "node 1 to answer on its own", || c.status_at(&addr));
    let mut s = connect(&c, &addr);
    s.write_all(&frame(&client_hello("wrong-token"))).expect("send hello");
    let reply = expect_closed(s, Duration::from_secs(5), "hello with a wrong token");
    assert!(reply.len() >= 6 && reply[4] == WIRE_VERSION, "no reply frame before closing: {reply:?}");
    assert_eq!(reply[5], 2, "expected HelloReply::Refused, got {reply:?}");

    still_serving(&c, &addr, "after-bad-token");
}

#[test]
fn malformed_and_oversized_frames_close_the_connection() {
    let c = TestCluster::start("security-frames", 3, |_| vec![]);
    c.wait_leader(Duration::from_secs(20));
    let addr = c.nodes[&1].addr.clone();
    let token = std::fs::read_to_string(&c.token_file).expect("token");
    eventually(Duration::from_secs(10), "node 1 to answer on its own", || c.status_at(&addr));

    // Garbage body with a valid length as the first frame.
    let mut s = connect(&c, &addr);
    s.write_all(&frame(&[0xFF, 0xFE, 0xFD, 0xFC, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7F])).expect("send garbage");
    expect_closed(s, Duration::from_secs(5), "garbage first frame");
    still_serving(&c, &addr, "after-garbage");

    // A wrong protocol version byte.
    let mut s = connect(&c, &addr);
    let mut f = frame(&client_hello(&token));
    f[4] = WIRE_VERSION + 7;
    s.write_all(&f).expect("send bad version");
    let reply = expect_closed(s, Duration::from_secs(5), "bad version byte");
    // An old or newer client is told both versions, in a frame it can at least read as text.
    let text = String::from_utf8_lossy(&reply);
    let (theirs, ours) = (format!("wire version {}", WIRE_VERSION + 7), format!("speaks {WIRE_VERSION}"));
    assert!(text.contains(&theirs) && text.contains(&ours), "the refusal should name both versions: {text:?}");

    // An oversized length header (no body follows): refused at once, not waited on.
    let mut s = connect(&c, &addr);
    s.write_all(&0xFFFF_FFF0u32.to_be_bytes()).expect("send header");
    expect_closed(s, Duration::from_secs(5), "oversized frame header");
    still_serving(&c, &addr, "after-oversized");

    // The same after a successful handshake.
    let mut s = connect(&c, &addr);
    s.write_all(&frame(&client_hello(&token))).expect("send hello");
    let mut head = [0u8; 6];
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.read_exact(&mut head).expect("hello reply");
    assert_eq!(head[5], 0, "expected HelloReply::Welcome, got {head:?}");
    let rest = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 2;
    let mut body = vec![0u8; rest];
    s.read_exact(&mut body).expect("hello reply body");
    s.write_all(&frame(&[0xFF; 12])).expect("send garbage request");
    expect_closed(s, Duration::from_secs(5), "garbage request after the handshake");

    let mut s = connect(&c, &addr);
    s.write_all(&frame(&client_hello(&token))).expect("send hello");
    s.write_all(&0xFFFF_FFF0u32.to_be_bytes()).expect("send header");
    expect_closed(s, Duration::from_secs(5), "oversized request after the handshake");

    still_serving(&c, &addr, "after-all");
    // The other nodes are fine too.
    for id in 2..=3 {
        let ep = c.nodes[&id].addr.clone();
        eventually(Duration::from_secs(10), &format!("node {id} to serve after-all"), || {
            (c.kv_get_at(&ep, "after-all", true).as_deref() == Some("still-here")).then_some(())
        });
    }
}
