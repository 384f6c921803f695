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
    // The state budget's alarm is shown, not counted against readiness: every node holds
    // the same state, so all would turn unready at once, and the deletes that clear the
    // alarm could reach none of them.
    let alarms = state_alarms(&api.state_usage());
    match readiness(&view) {
        Ok(()) => (StatusCode::OK, Json(json!({ "ready": true, "alarms": alarms, "status": facts }))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason.to_string(), "alarms": alarms, "status": facts })),
        ),
    }
}

/// The alarms `/readyz` lists: the state budget's, naming its use.
fn state_alarms(usage: &roster_kernel::StateUsage) -> Vec<Value> {
    if !usage.alarm {
        return Vec::new();
    }
    vec![json!({
        "kind": "state_budget",
        "message": format!(
            "the replicated state uses {} of its {}-byte budget ({}): writes may be refused; delete keys, labels or processes, or raise state_budget_bytes",
            usage.used.total(), usage.budget_bytes, usage.used
        ),
        "budget_bytes": usage.budget_bytes,
        "used": usage.used,
    })]
}
