//! Answers to reads, and how a long answer is cut into pages.
//!
//! Every list (`List`, `KvRange`, `Tombstones`) answers one page: at most the caller's
//! `limit` entries and at most [`MAX_PAGE_BYTES`] of them, so an answer always fits a
//! frame whatever the record holds. A page that stops before the end names where the next
//! one starts (`next`); callers page until it is `None`.

use crate::ids::MemberId;
use crate::model::{ProcessEntry, ServerEntry, Tombstone};
use serde::{Deserialize, Serialize};

/// Most bytes of entries (their postcard encoding) in one page. A page travels in one
/// frame (4 MiB) with room to spare, and a node holds a few pages per connection at
/// most. A page holds at least one entry when any is left: one entry is bounded by the
/// record's limits (a process with 64 labels of 256 + 256 bytes is about 33 KiB, a key
/// and its value about 64 KiB).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    Server(Option<ServerEntry>),
    Process(Option<ProcessEntry>),
    /// One page of members, servers first, each kind in id order. `next`: more may
    /// follow; pass it as `after` for the next page.
    Members {
        servers: Vec<ServerEntry>,
        processes: Vec<ProcessEntry>,
        next: Option<MemberId>,
    },
    KvValue(Option<String>),
    /// One page of keys in order. `next`: the first key not in this page (start the next
    /// page there); `None` when the range ends here.
    KvItems {
        items: Vec<(String, String)>,
        next: Option<String>,
    },
    /// Newest first, at most the limit asked and at most one page of bytes.
    Tombstones(Vec<Tombstone>),
    /// One page of tokens in id order; `next`: pass it as `after` for the next page.
    Tokens {
        tokens: Vec<crate::command::TokenInfo>,
        next: Option<crate::command::TokenId>,
    },
}

/// A query's answer with the revision it was read at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    pub revision: u64,
    pub result: QueryResult,
}

/// Bytes an entry takes in a page (its postcard encoding).
pub fn encoded_bytes<T: Serialize + ?Sized>(value: &T) -> usize {
    // Encoding into a counter fails only for types postcard cannot express (a sequence of
    // unknown length), which the record's types never are.
    postcard::experimental::serialized_size(value).expect("record types encode in postcard")
}

/// Takes entries from `items` while the page has room: at most `limit` entries and
/// `max_bytes` of them, but always the first one (an entry alone is bounded by the
/// record's limits). Returns the page and whether entries were left.
pub fn take_page<T, I>(items: I, limit: u32, max_bytes: usize, size: impl Fn(&T) -> usize) -> (Vec<T>, bool)
where
    I: IntoIterator<Item = T>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut page = Vec::new();
    let mut bytes = 0usize;
    let mut items = items.into_iter().peekable();
    while let Some(item) = items.peek() {
        let item_bytes = size(item);
        if page.len() >= limit || (!page.is_empty() && bytes.saturating_add(item_bytes) > max_bytes) {
            return (page, true);
        }
        bytes = bytes.saturating_add(item_bytes);
        page.push(items.next().expect("peeked"));
    }
    (page, false)
}

#[cfg(test)]
mod tests {
    use super::take_page;

    #[test]
    fn a_page_stops_at_the_limit_or_the_bytes_but_holds_at_least_one_entry() {
        let sizes = [10usize, 10, 10, 10];
        let page = |limit, max_bytes| take_page(sizes.iter().copied(), limit, max_bytes, |s| *s);
        assert_eq!(page(2, 1_000), (vec![10, 10], true));
        assert_eq!(page(10, 25), (vec![10, 10], true));
        assert_eq!(page(10, 40), (vec![10, 10, 10, 10], false));
        assert_eq!(page(10, 1), (vec![10], true), "one entry over the bytes still goes alone");
        assert_eq!(page(0, 1_000), (vec![], true));
        assert_eq!(take_page(std::iter::empty::<usize>(), 0, 1, |s| *s), (vec![], false));
    }
}
