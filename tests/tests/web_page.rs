//! The cluster web page in a real browser: headless Chromium driven through chromedriver
//! (WebDriver) with fantoccini. The page is loaded once and the token entered once (after
//! a wrong one, which must say so); from then on every change reaches it through the event
//! stream, without a reload: 3 server cards, a process started with `roster run`, and that
//! process's expiry after its wrapper is killed with SIGKILL. Last, the node that served
//! the page restarts, and the page resumes its stream where it broke off.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them
//! the test fails and says so; `ROSTER_SKIP_BROWSER=1` skips it.

use fantoccini::{Client, ClientBuilder, Locator};
use roster_tests::{ChildGuard, TestCluster, child_pids, free_port, kill_pid, which};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";
const SKIP_ENV: &str = "ROSTER_SKIP_BROWSER";
/// Longest wait for anything the page should show: the cluster's heartbeat timeout is
/// 1.5 s and the stream delivers within milliseconds, so this is slack for a loaded CI box.
const SHOW_WITHIN: Duration = Duration::from_secs(20);
/// Longest wait for chromedriver to listen and for Chromium to start a session.
const BROWSER_START_WITHIN: Duration = Duration::from_secs(30);
/// Longest any single WebDriver command may take.
const COMMAND_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn the_page_shows_servers_then_a_run_process_then_its_expiry_without_a_reload() {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("web page browser test skipped: {SKIP_ENV}=1");
        return;
    }
    let browser = Browser::find();
    let http_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut c = TestCluster::start("web-page", 3, |id| {
        let http = format!("127.0.0.1:{}", http_ports[id as usize - 1]);
        ["--http-listen", &http, "--heartbeat-interval-ms", "500", "--heartbeat-timeout-ms", "1500"]
            .map(String::from)
            .to_vec()
    });
    let leader = c.leader();
    c.wait_servers(3, Duration::from_secs(20));
    let driver = browser.start_driver(&c.dir.0);
    let page_url = format!("http://127.0.0.1:{}/", http_ports[0]);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let client = browser.session(&driver).await;
        let result = drive(&client, &mut c, &page_url, leader).await;
        let _ = tokio::time::timeout(COMMAND_WITHIN, client.close()).await;
        if let Err(e) = result {
            panic!("{e}\n--- chromedriver log (tail) ---\n{}\n{}", tail(&driver.log, 20), c.logs());
        }
    });
}

/// Everything the test does in the browser; `Err` carries what the page showed instead.
async fn drive(client: &Client, c: &mut TestCluster, page_url: &str, leader: u64) -> Result<(), String> {
    bounded("open the page", client.goto(page_url)).await?;
    // A mark that lives only as long as this document: a reload would erase it.
    bounded("mark the document", client.execute("window.rosterTestMark = 'loaded once'; return true;", vec![])).await?;

    // A wrong token is refused with a clear message, and the form stays.
    enter_token(client, "not-the-token").await?;
    let message = until(
        client,
        "the wrong-token message",
        "
        const m = document.getElementById('login-message');
        const login = document.getElementById('login');
        return !login.hidden && m.textContent.includes('Wrong token') ? m.textContent : null;",
    )
    .await?;
    eprintln!("wrong token: {message}");
    enter_token(client, TOKEN).await?;

    // Three server cards, live, the leader's badged.
    let cards = until(
        client,
        "3 server cards with the stream live",
        "
        const cards = [...document.querySelectorAll('#servers [data-server-id]')];
        const live = document.getElementById('connection').dataset.state === 'live';
        return cards.length === 3 && live ? cards.map((c) => ({
            id: Number(c.dataset.serverId), leader: c.dataset.leader === 'true',
            bars: c.querySelectorAll('.bar').length, started: c.textContent.includes('started'),
        })) : null;",
    )
    .await?;
    let badged: Vec<u64> = cards
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["leader"] == true)
        .filter_map(|c| c["id"].as_u64())
        .collect();
    check(badged == vec![leader], format!("the leader badge should be on server {leader} only: {cards}"))?;
    check(
        cards.as_array().is_some_and(|a| a.iter().all(|c| c["bars"] == 2 && c["started"] == true)),
        format!("every card should have a CPU and a memory bar and a start time: {cards}"),
    )?;
    let header = compact(&page_text(client, "#summary").await?);
    check(
        header.contains(&format!("(node{leader})")),
        format!("the header should name leader node {leader}: {header}"),
    )?;

    // A process that stays, so the page has one to show at the end, and one to kill.
    let sleep = which("sleep");
    let _keeper = c.spawn_client(&[
        "run",
        "--name",
        "notebook",
        "--port",
        "8890",
        "--label",
        "team=data",
        "--heartbeat-interval-ms",
        "500",
        "--",
        &sleep,
        "120",
    ]);
    let mut victim = c.spawn_client(&[
        "run",
        "--name",
        "victim",
        "--port",
        "8080",
        "--label",
        "team=web",
        "--heartbeat-interval-ms",
        "500",
        "--",
        &sleep,
        "120",
    ]);
    let shown = until(
        client,
        "process victim on a server card",
        "
        const row = document.querySelector('#servers [data-process-name=\"victim\"]');
        if (!row) return null;
        return { id: Number(row.dataset.processId), server: Number(row.closest('[data-server-id]').dataset.serverId),
                 text: row.textContent, status: row.dataset.status };",
    )
    .await
    .map_err(|e| format!("{e}\nroster run victim: {}", victim.kill_and_output()))?;
    let id = shown["id"].as_u64().ok_or_else(|| format!("no process id in {shown}"))?;
    let text = shown["text"].as_str().unwrap_or_default();
    check(
        text.contains("8080") && text.contains("team=web") && shown["status"] == "online",
        format!("the process row should show its port, labels and status: {shown}"),
    )?;
    until(
        client,
        "the registration in the event feed",
        &format!(
            "return [...document.querySelectorAll('#events [data-type=\"process_registered\"]')]
            .some((e) => e.textContent.includes('(process-{id})')) || null;"
        ),
    )
    .await?;
    // Let the notebook's row appear too, for the screenshot.
    until(
        client,
        "process notebook on a server card",
        "
        return document.querySelector('#servers [data-process-name=\"notebook\"]') ? true : null;",
    )
    .await?;

    // SIGKILL the wrapper: no goodbye, so the leader expires it after the heartbeat timeout.
    let orphans = child_pids(victim.id());
    victim.kill9();
    for pid in orphans {
        kill_pid(pid);
    }
    let killed = Instant::now();
    let departed = until(
        client,
        "victim among departed members and off its card",
        &format!(
            "
        const gone = !document.querySelector('[data-process-id=\"{id}\"]');
        const item = document.querySelector('#departed [data-member=\"process-{id}\"]');
        return gone && item ? {{ how: item.dataset.departure, text: item.textContent }} : null;"
        ),
    )
    .await?;
    eprintln!("victim (process-{id}) shown as departed {:?} after SIGKILL: {departed}", killed.elapsed());
    check(departed["how"] == "expired", format!("the departure should say expired: {departed}"))?;
    check(
        departed["text"].as_str().is_some_and(|t| t.contains("expired after") && t.contains("silent")),
        format!("the departed entry should say how long it was silent: {departed}"),
    )?;
    until(
        client,
        "the expiry in the event feed",
        &format!(
            "return [...document.querySelectorAll('#events [data-type=\"departed\"]')]
            .some((e) => e.textContent.includes('(process-{id})')) || null;"
        ),
    )
    .await?;
    let counts = compact(&page_text(client, "#summary").await?);
    check(counts.contains("servers3") && counts.contains("processes1"), format!("header counts: {counts}"))?;

    let mark = bounded("read the mark", client.execute("return window.rosterTestMark || null;", vec![])).await?;
    check(mark == json!("loaded once"), format!("the page was reloaded (mark {mark})"))?;
    let token_kept =
        bounded("read sessionStorage", client.execute("return sessionStorage.getItem('roster-token');", vec![]))
            .await?;
    check(token_kept == json!(TOKEN), format!("the token should be kept in sessionStorage: {token_kept}"))?;

    let png = bounded("take a screenshot", client.screenshot()).await?;
    let path = artifact_path("web-page.png");
    std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("screenshot: {}", path.display());

    resumes_after_its_node_restarts(client, c).await?;
    let mark = bounded("read the mark", client.execute("return window.rosterTestMark || null;", vec![])).await?;
    check(mark == json!("loaded once"), format!("the page was reloaded (mark {mark})"))
}

/// The node that served the page restarts: the broken stream is resumed after the last
/// revision seen, so later events arrive and none arrives twice.
async fn resumes_after_its_node_restarts(client: &Client, c: &mut TestCluster) -> Result<(), String> {
    c.kill9(1);
    until(
        client,
        "the stream broken",
        "
        return document.getElementById('connection').dataset.state !== 'live' || null;",
    )
    .await?;
    c.spawn(1);
    until(
        client,
        "the stream live again",
        "
        return document.getElementById('connection').dataset.state === 'live' || null;",
    )
    .await?;
    let put = (0..50)
        .map(|_| {
            let out = c.roster(&["kv", "put", "web-page-probe", "after-restart"]);
            if !out.status.success() {
                std::thread::sleep(Duration::from_millis(200));
            }
            out
        })
        .find(|out| out.status.success());
    check(put.is_some(), "kv put after the restart kept failing".into())?;
    until(
        client,
        "the kv put after the restart in the event feed",
        "
        return [...document.querySelectorAll('#events [data-type=\"kv_put\"]')]
            .some((e) => e.textContent.includes('web-page-probe')) || null;",
    )
    .await?;
    let revisions = bounded(
        "read the feed's revisions",
        client.execute(
            "return [...document.querySelectorAll('#events [data-revision]')].map((e) => Number(e.dataset.revision));",
            vec![],
        ),
    )
    .await?;
    let mut seen: Vec<u64> = revisions.as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    let shown = seen.len();
    seen.sort_unstable();
    seen.dedup();
    check(seen.len() == shown, format!("an event was shown twice after the resume: {revisions}"))
}

async fn enter_token(client: &Client, token: &str) -> Result<(), String> {
    let input =
        bounded("find the token field", client.wait().at_most(SHOW_WITHIN).for_element(Locator::Css("#token-input")))
            .await?;
    until(client, "the token form shown", "return document.getElementById('login').hidden ? null : true;").await?;
    bounded("clear the token field", input.clear()).await?;
    bounded("type the token", input.send_keys(token)).await?;
    let submit = bounded("find the connect button", client.find(Locator::Css("#token-submit"))).await?;
    bounded("press connect", submit.click()).await?;
    Ok(())
}

/// Runs `script` (a function body) until it returns something other than null, false or
/// undefined, at most `SHOW_WITHIN`; the error says what the page showed instead.
async fn until(client: &Client, what: &str, script: &str) -> Result<Value, String> {
    let deadline = Instant::now() + SHOW_WITHIN;
    loop {
        let v = bounded(what, client.execute(script, vec![])).await?;
        if !v.is_null() && v != json!(false) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            let shown = page_text(client, "body").await.unwrap_or_else(|e| e);
            let connection = bounded(
                "read the connection state",
                client.execute(
                    "const c = document.getElementById('connection'); return c.dataset.state + ': ' + c.title;",
                    vec![],
                ),
            )
            .await
            .unwrap_or_else(|e| json!(e));
            return Err(format!(
                "the page did not show {what} within {SHOW_WITHIN:?}\nconnection: {connection}\npage text:\n{shown}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn page_text(client: &Client, selector: &str) -> Result<String, String> {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';";
    let v = bounded("read the page text", client.execute(script, vec![json!(selector)])).await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

/// Text without whitespace, so `servers\n3` compares as `servers3`.
fn compact(text: &str) -> String {
    text.split_whitespace().collect()
}

/// One WebDriver command, bounded by `COMMAND_WITHIN`.
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_WITHIN, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer from chromedriver within {COMMAND_WITHIN:?}")),
    }
}

fn check(ok: bool, message: String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(message) }
}

/// `target/test-artifacts/NAME` (under `CARGO_TARGET_DIR` when set).
fn artifact_path(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir.join(name)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Chromium and chromedriver, found on PATH.
struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// A running chromedriver in its own process group: dropping it kills the group, so the
/// Chromium it started goes too, even when the test panics before closing the session.
struct Driver {
    guard: ChildGuard,
    port: u16,
    log: PathBuf,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(c) = self.guard.0.as_ref() {
            // SAFETY: kill(2) on the process group this test created for chromedriver.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
        }
        self.guard.kill9();
    }
}

impl Browser {
    fn find() -> Browser {
        let chromium = ["chromium", "chromium-browser", "google-chrome"].into_iter().find_map(on_path);
        let chromedriver = on_path("chromedriver");
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Browser { chromium, chromedriver },
            (chromium, chromedriver) => panic!(
                "the web page test needs Chromium and chromedriver (found chromium: {}, chromedriver: {}): \
                 run .ci/run, which installs them, or `apt-get install -y chromium chromium-driver`; \
                 set {SKIP_ENV}=1 to skip this test",
                chromium.map_or("no".into(), |p| p.display().to_string()),
                chromedriver.map_or("no".into(), |p| p.display().to_string()),
            ),
        }
    }

    fn start_driver(&self, dir: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).expect("create chromedriver log");
        let child = Command::new(&self.chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.chromedriver.display()));
        let driver = Driver { guard: ChildGuard(Some(child)), port, log, profile: dir.join("chromium-profile") };
        let deadline = Instant::now() + BROWSER_START_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {BROWSER_START_WITHIN:?}:\n{}",
                tail(&driver.log, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn session(&self, driver: &Driver) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--window-size=1440,1000", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", driver.profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{}", driver.port);
        match tokio::time::timeout(BROWSER_START_WITHIN, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("chromedriver could not start Chromium: {e}\n{}", tail(&driver.log, 30)),
            Err(_) => panic!("no browser session within {BROWSER_START_WITHIN:?}\n{}", tail(&driver.log, 30)),
        }
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
