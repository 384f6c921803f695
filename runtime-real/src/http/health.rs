//! `/livez` and `/readyz` for supervisors and load balancers; no token needed.

use super::HttpState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use openraft_rt::WatchReceiver;
use serde_json::{Value, json};

/// Ready only while the applied index trails the commit index by at most this many
/// entries: a node further behind answers stale reads with old data.
pub const READY_LAG_ENTRIES: u64 = 64;

/// `GET /livez`: the process serves HTTP.
pub async fn livez() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 with a known leader, in good standing (not waiting to be readmitted
/// after a lost disk) and caught up; else 503 naming why.
pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let api = state.api();
    let m = api.raft().metrics().borrow_watched().clone();
    let applied = m.last_applied.map(|l| l.index);
    let committed = m.cluster_committed.map(|l| l.index);
    let facts = json!({ "node": api.node_id(), "leader": m.current_leader, "term": m.current_term,
                        "commit_index": committed, "applied_index": applied });
    let reason = readiness(m.current_leader, committed, applied, api.vote_gate().waiting(applied));
    match reason {
        None => (StatusCode::OK, Json(json!({ "ready": true, "status": facts }))),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": reason, "status": facts })))
        }
    }
}

/// Why a node is not ready, or `None` when it is.
fn readiness(
    leader: Option<u64>,
    committed: Option<u64>,
    applied: Option<u64>,
    waiting: Option<String>,
) -> Option<String> {
    if let Some(w) = waiting {
        return Some(w);
    }
    if leader.is_none() {
        return Some("no known leader: the cluster is electing or this node is cut off".into());
    }
    let lag = committed.unwrap_or(0).saturating_sub(applied.unwrap_or(0));
    (lag > READY_LAG_ENTRIES).then(|| {
        format!("applied index trails the commit index by {lag} entries (at most {READY_LAG_ENTRIES}): catching up")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_leader_good_standing_and_a_small_lag() {
        assert_eq!(readiness(Some(1), Some(100), Some(100), None), None);
        assert_eq!(readiness(Some(1), Some(100), Some(100 - READY_LAG_ENTRIES), None), None);
        assert!(readiness(Some(1), Some(100), Some(10), None).unwrap().contains("90 entries"));
        assert!(readiness(None, Some(5), Some(5), None).unwrap().contains("no known leader"));
        assert_eq!(readiness(Some(1), None, None, Some("waiting".into())).as_deref(), Some("waiting"));
    }
}
