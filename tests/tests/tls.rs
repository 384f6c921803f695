//! TLS on real nodes: a cluster forms over mutual TLS and serves the CLI and HTTPS;
//! certificates from another CA, expired ones and plaintext clients are refused with one
//! line naming the problem; a certificate reloaded on SIGHUP serves the next connections.

use roster_real::tls::throwaway::{Ca, Issued, validity};
use roster_tests::{TempDir, TestCluster, eventually, ok};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// A CA and files it issued, in a directory of the test's own.
struct Pki {
    dir: TempDir,
    ca: Ca,
    ca_file: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = Ca::new(&format!("{tag} CA")).expect("make a CA");
        let ca_file = dir.0.join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write the CA");
        Pki { dir, ca, ca_file }
    }

    /// `NAME.pem` and `NAME.key` for 127.0.0.1, valid over `valid`.
    fn issue(&self, name: &str, valid: (time::OffsetDateTime, time::OffsetDateTime)) -> (PathBuf, PathBuf) {
        let issued: Issued = self.ca.issue(name, &["127.0.0.1", "localhost"], valid).expect("issue");
        issued.write(&self.dir.0, name).expect("write the certificate")
    }

    /// `roster node` flags for a node with `NAME`'s files and `ca`.
    fn node_args(&self, name: &str, ca: &Path) -> Vec<String> {
        let (cert, key) = self.issue(name, validity(YEAR));
        vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            ca.display().to_string(),
        ]
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `roster ARGS --tls-ca CA` against `endpoints`.
fn tls_roster(c: &TestCluster, endpoints: &str, ca: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let ca = ca.display().to_string();
    all.extend(["--tls-ca", &ca]);
    c.roster_at(endpoints, &all)
}

/// `status --json` over TLS until it names a leader.
fn wait_tls_leader(c: &TestCluster, endpoints: &str, ca: &Path) -> Value {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let out = tls_roster(c, endpoints, ca, &["status", "--json"]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
            if v["leader"].is_u64() {
                return v;
            }
        }
        last = stderr(&out);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no leader over TLS; last: {last}\n{}", c.logs());
}

/// One HTTPS GET, verified against `ca`: the status line, the body and the certificate the
/// node presented.
fn https_get(addr: &str, path: &str, token: &str, ca: &Path) -> Result<(String, String, Vec<u8>), String> {
    let files = roster_real::client::TlsFiles { ca: ca.to_path_buf(), cert: None, key: None };
    let config: Arc<rustls::ClientConfig> =
        roster_real::client::tls::client_config(&files).map_err(|e| e.to_string())?;
    let host = addr.rsplit_once(':').expect("HOST:PORT").0.to_string();
    let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let presented = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string(), presented))
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem_file).expect("a certificate").to_vec()
}

fn token(c: &TestCluster) -> String {
    std::fs::read_to_string(&c.token_file).expect("token").trim().to_string()
}

fn http_port() -> String {
    format!("127.0.0.1:{}", roster_tests::free_port())
}

#[test]
fn a_tls_cluster_forms_and_serves_the_cli_and_https() {
    let pki = Pki::new("tls-forms");
    let http = http_port();
    let args: Vec<Vec<String>> = (1..=3).map(|id| pki.node_args(&format!("node-{id}"), &pki.ca_file)).collect();
    let c = TestCluster::start("tls-forms", 3, |id| {
        let mut a = args[id as usize - 1].clone();
        if id == 1 {
            a.extend(["--http-listen".into(), http.clone()]);
        }
        a
    });
    let eps = c.endpoints();
    wait_tls_leader(&c, &eps, &pki.ca_file);
    // Every node's own client registered it over TLS too.
    eventually(Duration::from_secs(20), "3 servers registered over TLS", || {
        let out = tls_roster(&c, &eps, &pki.ca_file, &["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["servers"].as_array()?.len() == 3).then_some(())
    });
    ok(&tls_roster(&c, &eps, &pki.ca_file, &["kv", "put", "greeting", "over-tls"]));
    let got = ok(&tls_roster(&c, &eps, &pki.ca_file, &["kv", "get", "greeting"]));
    assert!(got.contains("over-tls"), "{got}");

    let (status, body, _) = https_get(&http, "/v1/kv/greeting", &token(&c), &pki.ca_file).expect("HTTPS GET");
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("over-tls"), "{body}");
    let (status, body, _) = https_get(&http, "/readyz", &token(&c), &pki.ca_file).expect("HTTPS readyz");
    assert!(status.contains("200"), "{status} {body}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_by_peers_and_clients() {
    let pki = Pki::new("tls-other-ca");
    let rogue = Pki::new("tls-rogue");
    // Node 3 trusts the cluster's CA, but its own certificate comes from another one.
    let args: Vec<Vec<String>> = vec![
        pki.node_args("node-1", &pki.ca_file),
        pki.node_args("node-2", &pki.ca_file),
        rogue.node_args("node-3", &pki.ca_file),
    ];
    let c = TestCluster::start("tls-other-ca", 3, |id| args[id as usize - 1].clone());
    let good = c.endpoints_of(&[1, 2]);
    wait_tls_leader(&c, &good, &pki.ca_file);

    // Peers: nodes 1 and 2 refuse node 3's certificate when it calls them, and name why.
    eventually(Duration::from_secs(20), "a peer refusing node 3's certificate", || {
        let logs = c.log_of(1) + &c.log_of(2);
        logs.lines()
            .find(|l| l.contains("refused connection") && l.contains("its certificate is not signed by the CA"))
            .map(|l| assert!(l.contains("unknown CA"), "{l}"))
    });
    // Its status says so too: the quorum runs without it.
    let status = wait_tls_leader(&c, &good, &pki.ca_file);
    assert_ne!(status["leader"].as_u64(), Some(3), "{status}");

    // A client that trusts the rogue CA refuses the cluster's nodes.
    let out = c.roster_at(&good, &["status", "--timeout-ms", "1500", "--tls-ca", &rogue.ca_file.display().to_string()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("the node's certificate is not signed by the CA in") && e.contains("unknown CA"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    // A client presenting a certificate from the rogue CA is refused by the node.
    let (cert, key) = rogue.issue("client", validity(YEAR));
    let out = c.roster_at(
        &c.endpoints_of(&[1]),
        &[
            "status",
            "--timeout-ms",
            "1500",
            "--tls-ca",
            &pki.ca_file.display().to_string(),
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("the node refused this client's certificate") && e.contains("client.pem"), "{e}");
    assert!(e.contains("not signed by the node's CA"), "{e}");
    // The same client with the cluster's certificate of its own is let in.
    let (cert, key) = pki.issue("client", validity(YEAR));
    let out = c.roster_at(
        &c.endpoints_of(&[1]),
        &[
            "status",
            "--tls-ca",
            &pki.ca_file.display().to_string(),
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    ok(&out);
}

#[test]
fn an_expired_certificate_is_refused_naming_which_one() {
    let pki = Pki::new("tls-expired");
    let long_ago = (rcgen::date_time_ymd(2001, 1, 1), rcgen::date_time_ymd(2002, 1, 1));

    // A node given an expired certificate does not start, and names the file.
    let (cert, key) = pki.issue("stale-node", long_ago);
    let dir = TempDir::new("tls-expired-node");
    let out = Command::new(roster_tests::roster_bin())
        .args(["node", "--id", "1", "--listen", "127.0.0.1:0", "--peers", "1=127.0.0.1:1", "--bootstrap"])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .env("ROSTER_TOKEN", "t")
        .env("ROSTER_PEER_KEY", roster_tests::TEST_PEER_KEY)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tls-ca")
        .arg(&pki.ca_file)
        .output()
        .expect("run roster node");
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("stale-node.pem") && e.contains("has expired") && e.contains("2002-01-01"), "{e}");

    // A node whose certificate expires while it runs: the next client names the node's
    // certificate as expired.
    // Long enough for a debug build to start and elect on a busy machine.
    let brief = validity(Duration::from_secs(20));
    let (cert, key) = pki.issue("brief-node", brief);
    let node_args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--tls-ca".into(),
        pki.ca_file.display().to_string(),
    ];
    let c = TestCluster::start("tls-expired", 1, |_| node_args.clone());
    let eps = c.endpoints();
    wait_tls_leader(&c, &eps, &pki.ca_file);
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(brief.1.unix_timestamp() as u64);
    if let Ok(left) = expires.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(1_500));
    }
    let out = tls_roster(&c, &eps, &pki.ca_file, &["status", "--timeout-ms", "1500"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("the node's certificate has expired: it was valid until"), "{e}");

    // A client given an expired certificate of its own names it, before connecting.
    let (cert, key) = pki.issue("stale-client", long_ago);
    let out = c.roster_at(
        &eps,
        &[
            "status",
            "--tls-ca",
            &pki.ca_file.display().to_string(),
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("stale-client.pem has expired"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

#[test]
fn a_plaintext_client_against_a_tls_node_gets_a_clear_error_not_a_hang() {
    let pki = Pki::new("tls-plain");
    let http = http_port();
    let mut args = pki.node_args("node-1", &pki.ca_file);
    args.extend(["--http-listen".into(), http.clone()]);
    let c = TestCluster::start("tls-plain", 1, |_| args.clone());
    let eps = c.endpoints();
    wait_tls_leader(&c, &eps, &pki.ca_file);

    let before = c.log_of(1).matches("refused a plaintext connection").count();
    let out = c.roster_at(&eps, &["status"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("this node requires TLS") && e.contains("--tls-ca"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let lines = eventually(Duration::from_secs(5), "the node's log line", || {
        let n = c.log_of(1).matches("refused a plaintext connection").count() - before;
        (n > 0).then_some(n)
    });
    assert_eq!(lines, 1, "one connection, one line:\n{}", c.log_of(1));

    // Plain HTTP on the HTTPS listener: an answer that says so, not a hang.
    let mut s = std::net::TcpStream::connect(&http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("HTTPS only"), "{answer}");

    // And the other way: a TLS client against a node with TLS off.
    let plain = TestCluster::start("tls-plain-node", 1, |_| Vec::new());
    plain.leader();
    let out = tls_roster(&plain, &plain.endpoints(), &pki.ca_file, &["status", "--timeout-ms", "1500"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("is TLS off there"), "{e}");
    let log = eventually(Duration::from_secs(5), "the plain node's log line", || {
        let log = plain.log_of(1);
        log.contains("got a TLS handshake, but TLS is off on this node").then_some(log)
    });
    drop(log);
}

#[test]
fn a_certificate_reloaded_on_sighup_serves_the_next_connections() {
    let pki = Pki::new("tls-reload");
    let http = http_port();
    let (cert, key) = pki.issue("node-1", validity(YEAR));
    let args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--tls-ca".into(),
        pki.ca_file.display().to_string(),
        "--http-listen".into(),
        http.clone(),
    ];
    let c = TestCluster::start("tls-reload", 1, |_| args.clone());
    let eps = c.endpoints();
    wait_tls_leader(&c, &eps, &pki.ca_file);
    let first = der_of(&cert);
    let (_, _, presented) = https_get(&http, "/livez", "", &pki.ca_file).expect("HTTPS");
    assert_eq!(presented, first);

    // New files in place, then SIGHUP: the next connections get the new certificate.
    let (cert2, key2) = pki.issue("node-1-renewed", validity(YEAR));
    std::fs::copy(&cert2, &cert).expect("replace the certificate");
    std::fs::copy(&key2, &key).expect("replace the key");
    let second = der_of(&cert);
    assert_ne!(first, second);
    let pid = c.nodes[&1].child.as_ref().expect("running").id();
    hangup(pid);
    eventually(Duration::from_secs(10), "the reloaded certificate on HTTPS", || {
        let (_, _, presented) = https_get(&http, "/livez", "", &pki.ca_file).ok()?;
        (presented == second).then_some(())
    });
    ok(&tls_roster(&c, &eps, &pki.ca_file, &["kv", "put", "after-reload", "yes"]));
    assert!(c.log_of(1).contains("SIGHUP: TLS certificates reloaded"), "{}", c.log_of(1));

    // A bad file is refused with a logged error naming it, and the previous one stays.
    std::fs::write(&cert, "not a certificate").expect("break the certificate");
    hangup(pid);
    let line = eventually(Duration::from_secs(10), "the refused reload in the log", || {
        c.log_of(1).lines().find(|l| l.contains("TLS reload refused")).map(str::to_owned)
    });
    assert!(line.contains("node-1.pem") && line.contains("holds no CERTIFICATE"), "{line}");
    let (_, _, presented) = https_get(&http, "/livez", "", &pki.ca_file).expect("HTTPS after a bad reload");
    assert_eq!(presented, second);
    ok(&tls_roster(&c, &eps, &pki.ca_file, &["kv", "get", "after-reload"]));
}

fn hangup(pid: u32) {
    // SAFETY: plain kill(2) on a pid we own.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP to {pid}");
}
