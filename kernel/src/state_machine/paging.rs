//! Lists of the record, one page at a time (see `query.rs` for the page bound).

use super::ClusterStateMachine;
use crate::command::{ListFilter, MemberKind, TokenId, TokenInfo};
use crate::ids::{MemberId, ProcessId, ServerId};
use crate::model::{MemberStatus, ProcessEntry, ServerEntry, Tombstone};
use crate::query::{MAX_PAGE_BYTES, encoded_bytes, take_page};
use std::ops::Bound;

/// One listed member.
enum Listed<'a> {
    Server(&'a ServerEntry),
    Process(&'a ProcessEntry),
}

impl Listed<'_> {
    fn id(&self) -> MemberId {
        match self {
            Listed::Server(s) => MemberId::Server(s.id),
            Listed::Process(p) => MemberId::Process(p.id),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Listed::Server(s) => encoded_bytes(*s),
            Listed::Process(p) => encoded_bytes(*p),
        }
    }
}

/// One page of members: servers, processes, and the cursor of the next page.
pub type MemberPage<'a> = (Vec<&'a ServerEntry>, Vec<&'a ProcessEntry>, Option<MemberId>);

impl ClusterStateMachine {
    /// Every member `filter` matches, servers first, each kind in id order (one page of
    /// them is `list_page`).
    pub fn list(&self, filter: &ListFilter) -> (Vec<&ServerEntry>, Vec<&ProcessEntry>) {
        let (servers, processes, next) = self.list_page(filter, None, u32::MAX, usize::MAX);
        debug_assert!(next.is_none());
        (servers, processes)
    }

    /// The members `filter` matches after `after` (servers sort before processes), at
    /// most `limit` (a limit of 0 is taken as 1) and `max_bytes` of them, and the cursor
    /// of the next page when more may follow.
    pub fn list_page(
        &self,
        filter: &ListFilter,
        after: Option<MemberId>,
        limit: u32,
        max_bytes: usize,
    ) -> MemberPage<'_> {
        let status_ok = |status: MemberStatus| filter.status.is_none_or(|want| want == status);
        let servers_listed = filter.kind != Some(MemberKind::Process) && filter.labels.is_empty();
        let server_floor = match after {
            None => Bound::Unbounded,
            Some(MemberId::Server(id)) => Bound::Excluded(id),
            // Past every server already.
            Some(MemberId::Process(_)) => Bound::Excluded(ServerId(u64::MAX)),
        };
        let servers = servers_listed
            .then(|| {
                let upper = match filter.server {
                    Some(id) => Bound::Included(id),
                    None => Bound::Unbounded,
                };
                let lower = match (filter.server, server_floor) {
                    (Some(id), Bound::Unbounded) => Bound::Included(id),
                    (Some(id), Bound::Excluded(floor)) if floor < id => Bound::Included(id),
                    (_, floor) => floor,
                };
                in_range(&self.servers, lower, upper)
            })
            .into_iter()
            .flatten()
            .filter(move |entry| status_ok(entry.status))
            .map(Listed::Server);
        let process_floor = match after {
            Some(MemberId::Process(id)) => Bound::Excluded(id),
            _ => Bound::Unbounded,
        };
        let processes = (filter.kind != Some(MemberKind::Server))
            .then(|| in_range(&self.processes, process_floor, Bound::<ProcessId>::Unbounded))
            .into_iter()
            .flatten()
            .filter(move |entry| {
                filter.server.is_none_or(|id| entry.info.server == id)
                    && status_ok(entry.status)
                    && filter.labels.iter().all(|(key, value)| entry.info.labels.get(key) == Some(value))
            })
            .map(Listed::Process);
        let (page, more) = take_page(servers.chain(processes), limit.max(1), max_bytes, Listed::bytes);
        let next = if more { page.last().map(Listed::id) } else { None };
        let mut out_servers = Vec::new();
        let mut out_processes = Vec::new();
        for listed in page {
            match listed {
                Listed::Server(s) => out_servers.push(s),
                Listed::Process(p) => out_processes.push(p),
            }
        }
        (out_servers, out_processes, next)
    }

    /// Keys in `[start, end)` (`end = None`: to the last key; an inverted range is
    /// empty), at most `limit` and `max_bytes` of them, and the first key left out when
    /// the range goes on.
    pub fn kv_page(
        &self,
        start: &str,
        end: Option<&str>,
        limit: u32,
        max_bytes: usize,
    ) -> (Vec<(String, String)>, Option<String>) {
        let items = self.kv_range(start, end, u32::MAX);
        let (page, more) = take_page(items, limit, max_bytes, encoded_bytes);
        let next = if more {
            let after = page.last().map_or(Bound::Included(start), |(key, _)| Bound::Excluded(*key));
            let upper = match end {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            };
            // `more` says a key is left in range, so the inverted range cannot be hit here.
            self.kv.range::<str, _>((after, upper)).next().map(|(key, _)| key.clone())
        } else {
            None
        };
        (page.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), next)
    }

    /// Tokens in id order after `after`, at most `limit` (0 is taken as 1) and `max_bytes`
    /// of them, and the cursor of the next page when more may follow.
    pub fn token_page(
        &self,
        after: Option<TokenId>,
        limit: u32,
        max_bytes: usize,
    ) -> (Vec<TokenInfo>, Option<TokenId>) {
        let records = self.tokens.records().map(|record| &record.info).filter(|info| after.is_none_or(|a| info.id > a));
        let (page, more) = take_page(records, limit.max(1), max_bytes, |info| encoded_bytes(*info));
        let next = if more { page.last().map(|info| info.id) } else { None };
        (page.into_iter().cloned().collect(), next)
    }

    /// The newest tombstones, at most `limit` and one page of bytes.
    pub fn tombstone_page(&self, limit: u32) -> Vec<Tombstone> {
        take_page(self.tombstones(), limit, MAX_PAGE_BYTES, encoded_bytes).0
    }
}

/// `map`'s entries between the bounds; empty when they cross (`BTreeMap::range` panics then).
fn in_range<K: Ord + Copy, V: std::ops::Deref>(
    map: &std::collections::BTreeMap<K, V>,
    lower: Bound<K>,
    upper: Bound<K>,
) -> impl Iterator<Item = &V::Target> {
    let empty = match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Excluded(l), Bound::Included(u)) | (Bound::Included(l), Bound::Excluded(u)) => l >= u,
        (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
        _ => false,
    };
    let range = if empty { None } else { Some(map.range((lower, upper))) };
    range.into_iter().flatten().map(|(_, v)| &**v)
}
