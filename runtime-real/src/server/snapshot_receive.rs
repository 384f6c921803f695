//! A snapshot arriving from the leader in chunks on a peer connection, checked before a
//! byte of it is kept: the sender's vote must be at least this node's (a deposed leader's
//! snapshot is refused, as openraft itself would refuse it at the end), the chunks must
//! come in order and belong to one snapshot, and the whole stays under a byte bound.
//! Any refusal drops what was buffered: the leader starts over from offset 0.

/// Most bytes of one snapshot a node takes from a peer. Far above any state a node of
/// this size holds in memory (the whole record is held in memory, and a snapshot is its
/// encoding): a peer that streams more is refused instead of growing the node until it
/// is killed.
pub const MAX_PEER_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Why a chunk was refused; the buffer is dropped with it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefused {
    #[error("snapshot from a stale leader: its vote {vote} is older than this node's vote {current}")]
    StaleVote { vote: String, current: String },
    #[error("snapshot of {bytes} bytes or more is over the bound of {max_bytes} bytes (MAX_PEER_SNAPSHOT_BYTES)")]
    TooLarge { bytes: u64, max_bytes: u64 },
    #[error("snapshot chunk at offset {offset}, expected {expected}: send it again from offset 0")]
    OutOfOrder { offset: u64, expected: u64 },
    #[error("snapshot chunk of snapshot {got} while receiving {expected}: send it again from offset 0")]
    OtherSnapshot { got: String, expected: String },
}

/// What a chunk that was taken amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkTaken {
    /// More chunks must follow.
    Buffered,
    /// The last chunk: the whole snapshot, ready to install.
    Complete(Vec<u8>),
}

/// One peer connection's snapshot in progress.
#[derive(Debug)]
pub struct SnapshotReceiver {
    buf: Vec<u8>,
    /// The snapshot being received (its id), once its first chunk came.
    receiving: Option<String>,
    max_bytes: u64,
}

impl SnapshotReceiver {
    pub fn new(max_bytes: u64) -> Self {
        SnapshotReceiver { buf: Vec::new(), receiving: None, max_bytes }
    }

    /// Bytes held now.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Takes one chunk of snapshot `snapshot_id` from a sender voting `vote`, where this
    /// node's vote is `current`. Every check comes before the chunk is buffered.
    pub fn take<V: PartialOrd + std::fmt::Display>(
        &mut self,
        vote: &V,
        current: &V,
        snapshot_id: &str,
        offset: u64,
        data: &[u8],
        last: bool,
    ) -> Result<ChunkTaken, ChunkRefused> {
        let refused = self.check(vote, current, snapshot_id, offset, data.len());
        if let Err(e) = refused {
            self.drop_buffer();
            return Err(e);
        }
        if offset == 0 {
            self.buf.clear();
            self.receiving = Some(snapshot_id.to_string());
        }
        self.buf.extend_from_slice(data);
        if last {
            self.receiving = None;
            return Ok(ChunkTaken::Complete(std::mem::take(&mut self.buf)));
        }
        Ok(ChunkTaken::Buffered)
    }

    fn check<V: PartialOrd + std::fmt::Display>(
        &self,
        vote: &V,
        current: &V,
        snapshot_id: &str,
        offset: u64,
        len: usize,
    ) -> Result<(), ChunkRefused> {
        // Not `vote < current`: two votes of one term for different candidates are
        // incomparable, and neither may overrule this node's.
        if vote.partial_cmp(current).is_none_or(|o| o == std::cmp::Ordering::Less) {
            return Err(ChunkRefused::StaleVote { vote: vote.to_string(), current: current.to_string() });
        }
        let held = if offset == 0 { 0 } else { self.buf.len() as u64 };
        if offset != 0 {
            match &self.receiving {
                Some(id) if id == snapshot_id => {}
                Some(id) => {
                    return Err(ChunkRefused::OtherSnapshot { got: snapshot_id.to_string(), expected: id.clone() });
                }
                None => return Err(ChunkRefused::OutOfOrder { offset, expected: 0 }),
            }
            if offset != held {
                return Err(ChunkRefused::OutOfOrder { offset, expected: held });
            }
        }
        let bytes = held.saturating_add(len as u64);
        if bytes > self.max_bytes {
            return Err(ChunkRefused::TooLarge { bytes, max_bytes: self.max_bytes });
        }
        Ok(())
    }

    fn drop_buffer(&mut self) {
        self.buf = Vec::new();
        self.receiving = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{ChunkRefused, ChunkTaken, SnapshotReceiver};

    #[test]
    fn chunks_in_order_make_the_snapshot() {
        let mut r = SnapshotReceiver::new(100);
        assert_eq!(r.take(&3, &3, "s1", 0, b"abc", false), Ok(ChunkTaken::Buffered));
        assert_eq!(r.take(&4, &3, "s1", 3, b"de", false), Ok(ChunkTaken::Buffered));
        assert_eq!(r.take(&4, &4, "s1", 5, b"f", true), Ok(ChunkTaken::Complete(b"abcdef".to_vec())));
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn a_stale_vote_is_refused_before_anything_is_buffered() {
        let mut r = SnapshotReceiver::new(100);
        let refused = r.take(&2, &3, "s1", 0, b"abc", false);
        assert_eq!(refused, Err(ChunkRefused::StaleVote { vote: "2".into(), current: "3".into() }));
        assert_eq!(r.buffered_bytes(), 0);
        // Mid-stream, the node's vote moved on: what was held is dropped.
        assert_eq!(r.take(&3, &3, "s1", 0, b"abc", false), Ok(ChunkTaken::Buffered));
        assert!(matches!(r.take(&3, &5, "s1", 3, b"d", false), Err(ChunkRefused::StaleVote { .. })));
        assert_eq!(r.buffered_bytes(), 0);
        // Incomparable votes (NaN stands in for two candidates of one term) are refused too.
        assert!(matches!(r.take(&f64::NAN, &1.0, "s1", 0, b"a", false), Err(ChunkRefused::StaleVote { .. })));
    }

    #[test]
    fn a_snapshot_over_the_byte_bound_is_refused_and_dropped() {
        let mut r = SnapshotReceiver::new(10);
        assert_eq!(r.take(&1, &1, "s1", 0, &[0; 6], false), Ok(ChunkTaken::Buffered));
        let refused = r.take(&1, &1, "s1", 6, &[0; 5], false);
        assert_eq!(refused, Err(ChunkRefused::TooLarge { bytes: 11, max_bytes: 10 }));
        assert_eq!(r.buffered_bytes(), 0);
        assert!(matches!(r.take(&1, &1, "s1", 0, &[0; 11], true), Err(ChunkRefused::TooLarge { .. })));
        assert_eq!(r.take(&1, &1, "s1", 0, &[0; 10], true), Ok(ChunkTaken::Complete(vec![0; 10])));
    }

    #[test]
    fn chunks_out_of_order_or_of_another_snapshot_are_refused() {
        let mut r = SnapshotReceiver::new(100);
        assert_eq!(r.take(&1, &1, "s1", 4, b"x", false), Err(ChunkRefused::OutOfOrder { offset: 4, expected: 0 }));
        assert_eq!(r.take(&1, &1, "s1", 0, b"ab", false), Ok(ChunkTaken::Buffered));
        assert_eq!(r.take(&1, &1, "s1", 3, b"x", false), Err(ChunkRefused::OutOfOrder { offset: 3, expected: 2 }));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.take(&1, &1, "s1", 0, b"ab", false), Ok(ChunkTaken::Buffered));
        let other = r.take(&1, &1, "s2", 2, b"cd", false);
        assert_eq!(other, Err(ChunkRefused::OtherSnapshot { got: "s2".into(), expected: "s1".into() }));
        // A new snapshot from offset 0 replaces one in progress.
        assert_eq!(r.take(&1, &1, "s1", 0, b"ab", false), Ok(ChunkTaken::Buffered));
        assert_eq!(r.take(&1, &1, "s2", 0, b"z", true), Ok(ChunkTaken::Complete(b"z".to_vec())));
    }
}
