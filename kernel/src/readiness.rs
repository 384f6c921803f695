//! Readiness: whether a node should take traffic (`/readyz`, `roster health`).

/// Ready only while the applied index trails the commit index by at most this many
/// entries: a node further behind answers stale reads with old data.
pub const READY_LAG_ENTRIES: u64 = 64;

/// Why a node is not ready.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// Its vote gate is closed (it lost its disk, or waits to be added): the reason.
    #[error("{0}")]
    Waiting(String),
    #[error("no known leader: the cluster is electing or this node is cut off")]
    NoLeader,
    #[error("applied index trails the commit index by {lag} entries (at most {READY_LAG_ENTRIES}): catching up")]
    Behind { lag: u64 },
}

/// What a node knows of itself, as far as readiness goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub leader: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    /// Why its vote gate is closed, if it is.
    pub waiting: Option<String>,
}

/// Ready with a known leader, in good standing and caught up; otherwise why not, in
/// that order.
pub fn readiness(view: &NodeView) -> Result<(), NotReady> {
    if let Some(reason) = &view.waiting {
        return Err(NotReady::Waiting(reason.clone()));
    }
    if view.leader.is_none() {
        return Err(NotReady::NoLeader);
    }
    let lag = view.committed.unwrap_or(0).saturating_sub(view.applied.unwrap_or(0));
    if lag > READY_LAG_ENTRIES {
        return Err(NotReady::Behind { lag });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_good_standing_a_leader_and_a_small_lag() {
        let ok =
            NodeView { leader: Some(1), committed: Some(100), applied: Some(100 - READY_LAG_ENTRIES), waiting: None };
        assert_eq!(readiness(&ok), Ok(()));
        let behind = NodeView { applied: Some(100 - READY_LAG_ENTRIES - 1), ..ok.clone() };
        assert_eq!(readiness(&behind), Err(NotReady::Behind { lag: READY_LAG_ENTRIES + 1 }));
        assert_eq!(readiness(&NodeView { leader: None, ..ok.clone() }), Err(NotReady::NoLeader));
        // Waiting comes first: it says what to do.
        let waiting = NodeView { leader: None, waiting: Some("lost its disk".into()), ..ok };
        assert_eq!(readiness(&waiting), Err(NotReady::Waiting("lost its disk".into())));
        assert_eq!(readiness(&NodeView::default()), Err(NotReady::NoLeader));
    }
}
