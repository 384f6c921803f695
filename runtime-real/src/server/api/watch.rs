//! What a watcher gets next, and in which frames: shared by the binary protocol's `Watch`
//! and the HTTP event stream. Pure functions of the applied state.

use crate::net::wire::ClientResponse;
use crate::storage::SharedState;

/// Most events read for a watcher in one step, and about the most bytes: a step stops at
/// the first revision boundary past either (a revision is never cut when read).
const WATCH_BATCH: usize = 512;
const WATCH_BATCH_BYTES: usize = 1 << 20;
/// Most bytes of events in one `Events` (or `EventsPart`) frame: well under the 4 MiB
/// frame, so a burst of large values (64 KiB each) never makes an answer that cannot be
/// sent.
pub const WATCH_FRAME_BYTES: usize = 1 << 20;

/// What a watcher that has seen every event up to `seen` gets next from this node's
/// applied state. Shared by the binary protocol's `Watch` and the HTTP event stream.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchStep {
    /// The next events, whole revisions only (at most about `WATCH_BATCH`), read through
    /// revision `through` (the events a caller may not see are left out: `events` may be
    /// empty while `through` moves on).
    Events { events: Vec<roster_kernel::Event>, through: u64 },
    /// Nothing after `seen`: the watcher has every event up to `revision`, the state's
    /// current revision, read under the same lock (a progress notice may say so).
    Current { revision: u64 },
    /// `seen` is older than the history this node keeps.
    Compacted { oldest_available: u64 },
}

/// `sees_credentials`: whether token and audit events are for this watcher (admins and
/// nodes, as `token ls`); others get the members and keys only.
pub fn watch_step(shared: &SharedState, seen: u64, sees_credentials: bool) -> WatchStep {
    crate::storage::with_kernel(shared, |sm| match sm.events_after(seen) {
        Ok(events) => {
            let mut events = whole_revisions(events, WATCH_BATCH, WATCH_BATCH_BYTES);
            let Some(through) = events.last().map(|e| e.revision) else {
                return WatchStep::Current { revision: sm.revision() };
            };
            if !sees_credentials {
                events.retain(|e| !is_credential_event(e));
            }
            WatchStep::Events { events, through }
        }
        Err(c) => WatchStep::Compacted { oldest_available: c.oldest_available },
    })
}

/// A token's creation or revocation, or an audit record.
fn is_credential_event(event: &roster_kernel::Event) -> bool {
    use roster_kernel::EventKind;
    matches!(event.kind, EventKind::TokenCreated(_) | EventKind::TokenRevoked { .. } | EventKind::Audit(_))
}

/// At least `max` events or `max_bytes` of them (when there are that many), never
/// splitting a revision: one batched leader command (an expiry of many members) shares
/// one revision, and a watcher resumes after the last revision it saw.
fn whole_revisions(
    events: impl Iterator<Item = roster_kernel::Event>,
    max: usize,
    max_bytes: usize,
) -> Vec<roster_kernel::Event> {
    let mut out: Vec<roster_kernel::Event> = Vec::new();
    let mut bytes = 0usize;
    for e in events {
        if (out.len() >= max || bytes >= max_bytes) && out.last().is_some_and(|last| last.revision != e.revision) {
            break;
        }
        bytes = bytes.saturating_add(roster_kernel::encoded_bytes(&e));
        out.push(e);
    }
    out
}

/// The frames of a watch stream for `events` (whole revisions, in order): `Events` of
/// whole revisions, each at most `max_bytes` when its revisions fit; a revision larger
/// than that alone goes as `EventsPart`s closed by an `Events` with its last events (a
/// client counts a revision as received only when it is closed, so a stream that breaks
/// inside one resumes before it). Every frame holds at least one event.
pub fn watch_frames(events: Vec<roster_kernel::Event>, max_bytes: usize) -> Vec<ClientResponse> {
    let mut frames = Vec::new();
    let mut whole: Vec<roster_kernel::Event> = Vec::new();
    let mut whole_bytes = 0usize;
    let mut events = events.into_iter().peekable();
    while let Some(first) = events.next() {
        // One revision's events, with their sizes.
        let revision = first.revision;
        let mut group = vec![(roster_kernel::encoded_bytes(&first), first)];
        while let Some(e) = events.next_if(|e| e.revision == revision) {
            group.push((roster_kernel::encoded_bytes(&e), e));
        }
        let group_bytes: usize = group.iter().map(|(b, _)| *b).sum();
        if whole_bytes.saturating_add(group_bytes) <= max_bytes {
            whole.extend(group.into_iter().map(|(_, e)| e));
            whole_bytes += group_bytes;
            continue;
        }
        if !whole.is_empty() {
            frames.push(ClientResponse::Events(std::mem::take(&mut whole)));
            whole_bytes = 0;
        }
        if group_bytes <= max_bytes {
            whole.extend(group.into_iter().map(|(_, e)| e));
            whole_bytes = group_bytes;
            continue;
        }
        let mut part = Vec::new();
        let mut part_bytes = 0usize;
        for (bytes, e) in group {
            if !part.is_empty() && part_bytes.saturating_add(bytes) > max_bytes {
                frames.push(ClientResponse::EventsPart(std::mem::take(&mut part)));
                part_bytes = 0;
            }
            part.push(e);
            part_bytes += bytes;
        }
        frames.push(ClientResponse::Events(part));
    }
    if !whole.is_empty() {
        frames.push(ClientResponse::Events(whole));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::{WATCH_FRAME_BYTES, watch_frames, whole_revisions};
    use crate::net::wire::{ClientResponse, MAX_CLIENT_FRAME_BYTES};

    use roster_kernel::{Event, EventKind};

    fn ev(revision: u64) -> Event {
        Event { revision, kind: EventKind::KvDeleted { key: revision.to_string() } }
    }

    #[test]
    fn batches_never_split_a_revision() {
        let events = vec![ev(1), ev(2), ev(2), ev(2), ev(3)];
        let got = whole_revisions(events.clone().into_iter(), 2, usize::MAX);
        assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1, 2, 2, 2]);
        assert_eq!(whole_revisions(events.clone().into_iter(), 10, usize::MAX).len(), 5);
        let by_bytes = whole_revisions(events.into_iter(), 10, 1);
        assert_eq!(by_bytes.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1], "stops at the byte bound");
    }

    fn put(revision: u64, value_bytes: usize) -> Event {
        Event { revision, kind: EventKind::KvPut { key: format!("k{revision}"), value: "v".repeat(value_bytes) } }
    }

    fn revisions(frame: &ClientResponse) -> (bool, Vec<u64>) {
        match frame {
            ClientResponse::Events(events) => (true, events.iter().map(|e| e.revision).collect()),
            ClientResponse::EventsPart(events) => (false, events.iter().map(|e| e.revision).collect()),
            other => panic!("not events: {other:?}"),
        }
    }

    #[test]
    fn watch_frames_split_by_bytes_at_revision_boundaries() {
        // 200 values of 64 KiB (the burst that once stopped every watcher behind it).
        let events: Vec<Event> = (1..=200).map(|r| put(r, 64 << 10)).collect();
        let frames = watch_frames(events, WATCH_FRAME_BYTES);
        let mut seen = Vec::new();
        for frame in &frames {
            let encoded = roster_kernel::codec::encode_frame(frame, MAX_CLIENT_FRAME_BYTES).expect("fits a frame");
            assert!(encoded.len() <= WATCH_FRAME_BYTES + 64, "{} bytes", encoded.len());
            let (whole, revs) = revisions(frame);
            assert!(whole && !revs.is_empty());
            seen.extend(revs);
        }
        assert_eq!(seen, (1..=200).collect::<Vec<_>>());
        assert!(frames.len() >= 13, "{} frames", frames.len());
        // Small events still go together.
        let small = watch_frames(vec![ev(1), ev(2), ev(2)], WATCH_FRAME_BYTES);
        assert_eq!(small.iter().map(revisions).collect::<Vec<_>>(), vec![(true, vec![1, 2, 2])]);
    }

    #[test]
    fn a_revision_over_the_frame_bound_goes_in_parts_closed_by_events() {
        let events = vec![put(1, 10), put(2, 600), put(2, 600), put(2, 600), put(3, 10)];
        let frames: Vec<_> = watch_frames(events, 1_000).iter().map(revisions).collect();
        assert_eq!(
            frames,
            vec![(true, vec![1]), (false, vec![2]), (false, vec![2]), (true, vec![2]), (true, vec![3])],
            "revision 2 alone is over the bound"
        );
    }
}
