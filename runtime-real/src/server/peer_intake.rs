//! Peer requests reach the Raft core only while the node is not stopping. A clean stop
//! closes the intake, waits for the requests already in the core to be answered, and only
//! then stops the core: openraft logs a request sent to a stopped core, and one caught in
//! it as it stops, as ERRORs, though nothing failed.

use tokio::sync::{RwLock, RwLockReadGuard};

pub struct PeerIntake {
    /// True while requests may enter. Readers are requests in the core; the writer is the stop.
    open: RwLock<bool>,
}

/// Held while one request is in the Raft core.
pub struct Pass<'a>(#[allow(dead_code)] RwLockReadGuard<'a, bool>);

impl Default for PeerIntake {
    fn default() -> Self {
        PeerIntake { open: RwLock::new(true) }
    }
}

impl PeerIntake {
    /// A pass for one request, to hold while the core handles it; `None` once stopping.
    pub async fn enter(&self) -> Option<Pass<'_>> {
        let open = self.open.read().await;
        if *open { Some(Pass(open)) } else { None }
    }

    /// Refuses every later request and returns once those in the core were answered
    /// (tokio's lock is fair: a waiting stop holds back new requests).
    pub async fn close(&self) {
        *self.open.write().await = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_waits_for_the_requests_inside_and_refuses_later_ones() {
        let intake = std::sync::Arc::new(PeerIntake::default());
        let pass = intake.enter().await.expect("open");
        let closing = tokio::spawn({
            let intake = intake.clone();
            async move { intake.close().await }
        });
        tokio::task::yield_now().await;
        assert!(!closing.is_finished(), "the close waits for the request inside");
        drop(pass);
        closing.await.expect("close");
        assert!(intake.enter().await.is_none(), "closed: refused");
    }
}
