//! `roster health`: each endpoint's health, in the manner of `etcdctl endpoint health`.
//! An endpoint is healthy when it answers a status request in time, knows a leader, and
//! is in good standing (not waiting after a lost disk). Exit 1 when any is unhealthy.

use super::ClientArgs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One endpoint's answer.
struct Check {
    endpoint: String,
    took: Duration,
    /// Why it is unhealthy; `None` when healthy.
    error: Option<String>,
}

pub async fn run(c: ClientArgs) -> Result<ExitCode, super::failure::CliError> {
    let client = c.connect().await?;
    let count = client.cluster().endpoint_count();
    // Every endpoint at once, each within the request timeout: one dead node costs one
    // timeout, not one per node.
    let checks = (0..count).map(|i| {
        let client = &client;
        async move {
            let start = Instant::now();
            let answer = client.status_of(i).await;
            let took = start.elapsed();
            let endpoint = client.cluster().endpoint_addr(i).unwrap_or_else(|| format!("endpoint {i}"));
            let error = match answer {
                Err(e) => Some(e.to_string()),
                Ok(s) => match (s.leader, s.waiting) {
                    (_, Some(why)) => Some(format!("node {} is waiting: {why}", s.node)),
                    (None, None) => Some(format!("node {} knows no leader", s.node)),
                    (Some(_), None) => None,
                },
            };
            Check { endpoint, took, error }
        }
    });
    let checks = futures::future::join_all(checks).await;
    if c.json {
        let list: Vec<_> = checks
            .iter()
            .map(|k| {
                serde_json::json!({
                    "endpoint": k.endpoint,
                    "health": k.error.is_none(),
                    "took_ms": k.took.as_secs_f64() * 1000.0,
                    "error": k.error,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for k in &checks {
            let took_ms = k.took.as_secs_f64() * 1000.0;
            match &k.error {
                None => outln!("{} is healthy: took {took_ms:.1} ms", k.endpoint),
                Some(e) => outln!("{} is unhealthy: took {took_ms:.1} ms, error: {e}", k.endpoint),
            }
        }
    }
    let unhealthy = checks.iter().filter(|k| k.error.is_some()).count();
    if unhealthy > 0 {
        eprintln!("error: {unhealthy} of {} endpoints unhealthy", checks.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
