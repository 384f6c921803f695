//! The expiry brake (docs/operations.md, "Mass expiry"): more than a third of the members
//! falling silent at once raises the leader's alarm in `roster status` (text and JSON),
//! `/metrics` and `/readyz`; their expiry is held back, then every one of them goes, and
//! the alarm falls.

use roster_tests::{TestCluster, eventually, free_port, json};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789";
/// Processes registered and never heard: with the server itself, 61 members.
const SILENT: u64 = 60;

fn get(agent: &ureq::Agent, url: &str) -> String {
    let mut response = agent
        .get(url)
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    response.body_mut().read_to_string().expect("body")
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The expiry brake's entry in `/readyz`'s alarms, if listed.
fn brake_alarm(agent: &ureq::Agent, base: &str) -> Option<Value> {
    let ready: Value = serde_json::from_str(&get(agent, &format!("{base}/readyz"))).expect("readyz JSON");
    ready["alarms"].as_array()?.iter().find(|a| a["kind"] == "expiry_brake").cloned()
}

#[test]
fn a_mass_silence_raises_the_brake_alarm_everywhere_then_all_go() {
    let port = free_port();
    let c = TestCluster::start("expiry-brake", 1, |_| vec!["--http-listen".into(), format!("127.0.0.1:{port}")]);
    c.wait_leader(Duration::from_secs(20));
    let base = format!("http://127.0.0.1:{port}");
    let agent = roster_tests::http_agent();
    for i in 0..SILENT {
        let body = json!({ "name": format!("quiet-{i}"), "server": 1 }).to_string();
        let mut response = agent
            .post(&format!("{base}/v1/processes"))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .send(&body)
            .expect("register");
        assert_eq!(response.status().as_u16(), 201, "{}", response.body_mut().read_to_string().unwrap_or_default());
    }

    let alarm = eventually(Duration::from_secs(20), "the expiry brake in /readyz", || brake_alarm(&agent, &base));
    assert!(alarm["suspects"].as_u64().is_some_and(|n| n >= SILENT), "{alarm}");
    assert_eq!(alarm["hold_ms"], 750, "{alarm}");
    assert!(alarm["message"].as_str().is_some_and(|m| m.contains("too many to believe")), "{alarm}");
    eventually(Duration::from_secs(10), "roster_members_expiry_brake 1", || {
        (metric(&get(&agent, &format!("{base}/metrics")), "roster_members_expiry_brake") == Some(1.0)).then_some(())
    });
    let brake = eventually(Duration::from_secs(10), "the brake in status --json", || {
        let status = json(&c.roster(&["status", "--json"]));
        (!status["expiry"]["brake"].is_null()).then(|| status["expiry"]["brake"].clone())
    });
    assert!(brake["members"].as_u64().is_some_and(|n| n > SILENT), "{brake}");
    eventually(Duration::from_secs(10), "the alarm in roster status", || {
        let out = c.roster(&["status"]);
        String::from_utf8_lossy(&out.stdout).contains("ALARM expiry brake").then_some(())
    });

    // Held, not spared: every silent process goes, and the alarm falls once the window
    // of their expiry has passed.
    eventually(Duration::from_secs(30), "every silent process expired", || {
        let status = json(&c.roster(&["status", "--json"]));
        (status["processes"]["total"] == 0).then_some(())
    });
    eventually(Duration::from_secs(30), "the alarm to fall", || {
        let metrics = get(&agent, &format!("{base}/metrics"));
        let fallen =
            metric(&metrics, "roster_members_expiry_brake") == Some(0.0) && brake_alarm(&agent, &base).is_none();
        fallen.then_some(())
    });
    let metrics = get(&agent, &format!("{base}/metrics"));
    assert_eq!(metric(&metrics, "roster_members_expired_total"), Some(SILENT as f64), "{metrics}");
}
