//! The Raft log payload: a batch of the kernel's proposals, applied in order as one entry.
//!
//! openraft spends a fixed amount of work per log entry (a log record, a responder, a
//! place in replication and apply). Under load the node gathers the client commands that
//! arrived together into one entry (see `proposer`), so that work is shared among them.
//! Each proposal still applies on its own, with its own revision and reply.
//!
//! The log, replication and apply each hold entries, so the proposals are shared, not
//! copied, when an entry is cloned.

use roster_kernel::{CommandResult, Proposal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// Proposals applied in order as one Raft log entry; never empty.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch(Arc<Vec<Proposal>>);

/// The replies of a batch's proposals, in the batch's order.
pub type BatchReplies = Vec<CommandResult>;

/// Why a batch could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a batch needs at least one proposal")]
pub struct EmptyBatch;

impl Batch {
    /// A batch of one proposal.
    pub fn one(proposal: Proposal) -> Batch {
        Batch(Arc::new(vec![proposal]))
    }

    pub fn new(proposals: Vec<Proposal>) -> Result<Batch, EmptyBatch> {
        if proposals.is_empty() {
            return Err(EmptyBatch);
        }
        // `Arc::new` keeps the vector's buffer (`Arc<[_]>` would copy every proposal).
        Ok(Batch(Arc::new(proposals)))
    }

    pub fn proposals(&self) -> &[Proposal] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a batch is never empty (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            [first, ..] => write!(f, "batch of {}, first {first}", self.0.len()),
            [] => write!(f, "empty batch"),
        }
    }
}

/// On the wire and in the log: a sequence of proposals.
impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Batch, D::Error> {
        let proposals = Vec::<Proposal>::deserialize(d)?;
        Batch::new(proposals).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_kernel::ProposalBody;

    fn open(at: u64) -> Proposal {
        Proposal { at_unix_ms: at, body: ProposalBody::OpenSession { owner: roster_kernel::SessionOwner::Node } }
    }

    #[test]
    fn round_trips_in_order() {
        let batch = Batch::new(vec![open(1), open(2), open(3)]).unwrap();
        let bytes = postcard::to_allocvec(&batch).unwrap();
        let back: Batch = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.proposals().iter().map(|p| p.at_unix_ms).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn an_empty_batch_is_refused_when_made_and_when_decoded() {
        assert_eq!(Batch::new(Vec::new()), Err(EmptyBatch));
        let bytes = postcard::to_allocvec(&Vec::<Proposal>::new()).unwrap();
        let err = postcard::from_bytes::<Batch>(&bytes).unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn clones_share_the_proposals() {
        let batch = Batch::one(open(7));
        let copy = batch.clone();
        assert!(std::ptr::eq(batch.proposals().as_ptr(), copy.proposals().as_ptr()));
    }
}
