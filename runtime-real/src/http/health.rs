//! `/livez` and `/readyz` for supervisors and load balancers; no token needed.

use super::HttpState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use openraft_rt::WatchReceiver;
use roster_kernel::readiness::{NodeView, readiness};
use serde_json::{Value, json};

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
    let view = NodeView { leader: m.current_leader, committed, applied, waiting: api.vote_gate().waiting(applied) };
    match readiness(&view) {
        Ok(()) => (StatusCode::OK, Json(json!({ "ready": true, "status": facts }))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason.to_string(), "status": facts })),
        ),
    }
}
