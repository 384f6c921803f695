//! Where to start a new worker process: the online, undrained server with the most
//! headroom.
//!
//! A server is *eligible* when it is [`MemberStatus::Online`] (a `Draining` one is
//! leaving) and not drained by an operator (`ServerEntry::drained`). Placement never
//! chooses any other. When no eligible server fits but a drained one would, the refusal
//! says so ([`PlacementError::OnlyDrainedFit`]): undraining is the fix, not asking for less.
//!
//! For each eligible server:
//!
//! ```text
//! free_cpu_percent = cpu_capacity_percent − cpu_percent_avg − reserved cpu   (saturating at 0)
//! free_mem_bytes   = mem_capacity_bytes   − mem_bytes_used_avg − reserved mem (saturating at 0)
//! ```
//!
//! where the averages are the server's last report (a server without a report counts as
//! idle) and `reserved` sums what live processes on it were promised at launch, so a burst
//! of launches does not all land on one server before its averages catch up.
//!
//! A server is a candidate when its free CPU and free memory both meet the
//! [`Requirements`]. Its **score** is its *bottleneck headroom*:
//!
//! ```text
//! score = min(free_cpu_percent / cpu_capacity_percent, free_mem_bytes / mem_capacity_bytes)
//! ```
//!
//! the fraction of capacity still free on whichever resource is scarcer, so a server with
//! idle CPU but full memory (or the reverse) scores low (Zeppelin looked at memory only).
//! The highest score wins; ties go to the larger *sum* of the two fractions, then to the
//! lower [`ServerId`].
//!
//! Fractions are computed in integers, floored to parts per billion
//! ([`HEADROOM_SCALE`]): no floating point, so every node and the simulator choose the
//! same server. Two fractions that agree to a billionth count as equal. A server with a
//! zero capacity has no headroom on that resource.

use crate::ids::ServerId;
use crate::model::{MemberStatus, ProcessEntry, ResourceAverage, ServerEntry};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;

/// Headroom fractions are in parts per billion: 1_000_000_000 is all free.
pub const HEADROOM_SCALE: u64 = 1_000_000_000;

/// What a new process needs free on its host; `None` asks for nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirements {
    pub min_free_mem_bytes: Option<u64>,
    pub min_free_cpu_percent: Option<u32>,
}

impl fmt::Display for Requirements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min_free_mem_bytes, self.min_free_cpu_percent) {
            (None, None) => write!(f, "no free resources"),
            (Some(mem), None) => write!(f, "{mem} bytes of free memory"),
            (None, Some(cpu)) => write!(f, "{cpu}% of free CPU"),
            (Some(mem), Some(cpu)) => {
                write!(f, "{mem} bytes of free memory and {cpu}% of free CPU")
            }
        }
    }
}

/// Most drained servers an [`PlacementError::OnlyDrainedFit`] names; the count is exact.
pub const DRAINED_NAMED_MAX: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PlacementError {
    #[error("no server is online: start a server (or end its draining), then retry")]
    NoServerOnline,
    /// The best values are each the largest over all online servers (drained ones too,
    /// since none of them fits either), possibly from two different servers.
    #[error(
        "none of the {considered} online servers has {required}: the most free memory on one is \
         {best_free_mem_bytes} bytes and the most free CPU {best_free_cpu_percent}%; ask for less or add servers"
    )]
    NoneFits { considered: usize, required: Requirements, best_free_mem_bytes: u64, best_free_cpu_percent: u32 },
    /// No eligible server fits, but these drained ones would (the first
    /// [`DRAINED_NAMED_MAX`] by id; `count` is how many in all).
    #[error(
        "only drained servers have {required}: {count} drained ({names}) would fit, and placement never picks a \
         drained server; undrain one (`roster server undrain ID`) or add servers",
        names = drained_names(servers)
    )]
    OnlyDrainedFit { required: Requirements, count: usize, servers: Vec<ServerId> },
}

fn drained_names(servers: &[ServerId]) -> String {
    servers.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
}

/// Whether placement may choose `server`: online, and not drained by an operator.
pub fn eligible(server: &ServerEntry) -> bool {
    server.status == MemberStatus::Online && !server.drained
}

/// A server's headroom, as placement sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub free_cpu_percent: u32,
    pub free_mem_bytes: u64,
    /// `free_cpu_percent / cpu_capacity_percent` in parts per billion.
    pub cpu_headroom_ppb: u64,
    /// `free_mem_bytes / mem_capacity_bytes` in parts per billion.
    pub mem_headroom_ppb: u64,
}

impl Score {
    /// The score proper: headroom of the scarcer resource.
    pub fn bottleneck_ppb(&self) -> u64 {
        self.cpu_headroom_ppb.min(self.mem_headroom_ppb)
    }

    /// The first tie-break.
    pub fn sum_ppb(&self) -> u64 {
        self.cpu_headroom_ppb + self.mem_headroom_ppb
    }

    pub fn fits(&self, req: &Requirements) -> bool {
        req.min_free_cpu_percent.is_none_or(|cpu| self.free_cpu_percent >= cpu)
            && req.min_free_mem_bytes.is_none_or(|mem| self.free_mem_bytes >= mem)
    }

    /// Placement chooses the server with the greatest key.
    pub fn rank_key(&self, id: ServerId) -> (u64, u64, Reverse<ServerId>) {
        (self.bottleneck_ppb(), self.sum_ppb(), Reverse(id))
    }
}

/// What the live processes on each server were promised at launch (`ProcessInfo::reserved`),
/// summed per server (saturating): the `reserved` argument of [`place`]. Servers without
/// processes are absent.
pub fn reservations<'a>(processes: impl IntoIterator<Item = &'a ProcessEntry>) -> BTreeMap<ServerId, ResourceAverage> {
    let mut reserved: BTreeMap<ServerId, ResourceAverage> = BTreeMap::new();
    for p in processes {
        let r = reserved.entry(p.info.server).or_default();
        r.cpu_percent_avg = r.cpu_percent_avg.saturating_add(p.info.reserved.cpu_percent_avg);
        r.mem_bytes_used_avg = r.mem_bytes_used_avg.saturating_add(p.info.reserved.mem_bytes_used_avg);
    }
    reserved
}

/// The headroom of `server`, counting the reservations in `reserved` for it. Ignores its
/// status: see [`place`] for who is eligible.
pub fn score(server: &ServerEntry, reserved: &BTreeMap<ServerId, ResourceAverage>) -> Score {
    let used = server.resources.unwrap_or_default();
    let held = reserved.get(&server.id).copied().unwrap_or_default();
    let cpu_capacity = server.info.cpu_capacity_percent;
    let mem_capacity = server.info.mem_capacity_bytes;
    let free_cpu_percent = cpu_capacity.saturating_sub(used.cpu_percent_avg).saturating_sub(held.cpu_percent_avg);
    let free_mem_bytes = mem_capacity.saturating_sub(used.mem_bytes_used_avg).saturating_sub(held.mem_bytes_used_avg);
    Score {
        free_cpu_percent,
        free_mem_bytes,
        cpu_headroom_ppb: headroom_ppb(u64::from(free_cpu_percent), u64::from(cpu_capacity)),
        mem_headroom_ppb: headroom_ppb(free_mem_bytes, mem_capacity),
    }
}

/// Every eligible server (online, undrained) that meets `req`, best first, with its
/// score: what [`place`] chooses from, for display.
pub fn rank<'a>(
    servers: impl IntoIterator<Item = &'a ServerEntry>,
    reserved: &BTreeMap<ServerId, ResourceAverage>,
    req: &Requirements,
) -> Vec<(ServerId, Score)> {
    let mut ranked: Vec<(ServerId, Score)> = servers
        .into_iter()
        .filter(|s| eligible(s))
        .map(|s| (s.id, score(s, reserved)))
        .filter(|(_, sc)| sc.fits(req))
        .collect();
    ranked.sort_by_key(|(id, sc)| Reverse(sc.rank_key(*id)));
    ranked
}

/// Chooses the host for a new process: the eligible server (online, undrained) meeting
/// `req` with the highest [`score`] (see the module documentation for the rule and its
/// tie-breaks). A refusal names drained servers that would have fitted.
pub fn place<'a>(
    servers: impl IntoIterator<Item = &'a ServerEntry>,
    reserved: &BTreeMap<ServerId, ResourceAverage>,
    req: &Requirements,
) -> Result<ServerId, PlacementError> {
    let mut considered = 0usize;
    let mut best_free_mem_bytes = 0u64;
    let mut best_free_cpu_percent = 0u32;
    let mut best: Option<(ServerId, Score)> = None;
    let mut drained_fit: Vec<ServerId> = Vec::new();
    let mut drained_fit_count = 0usize;
    for server in servers.into_iter().filter(|s| s.status == MemberStatus::Online) {
        considered += 1;
        let sc = score(server, reserved);
        best_free_mem_bytes = best_free_mem_bytes.max(sc.free_mem_bytes);
        best_free_cpu_percent = best_free_cpu_percent.max(sc.free_cpu_percent);
        if !sc.fits(req) {
            continue;
        }
        if server.drained {
            drained_fit_count += 1;
            drained_fit.push(server.id);
            continue;
        }
        let better = match &best {
            None => true,
            Some((best_id, best_sc)) => sc.rank_key(server.id) > best_sc.rank_key(*best_id),
        };
        if better {
            best = Some((server.id, sc));
        }
    }
    match best {
        Some((id, _)) => Ok(id),
        None if considered == 0 => Err(PlacementError::NoServerOnline),
        None if drained_fit_count > 0 => {
            // Named in id order whatever order the caller iterates in, and bounded.
            drained_fit.sort_unstable();
            drained_fit.truncate(DRAINED_NAMED_MAX);
            Err(PlacementError::OnlyDrainedFit { required: *req, count: drained_fit_count, servers: drained_fit })
        }
        None => {
            Err(PlacementError::NoneFits { considered, required: *req, best_free_mem_bytes, best_free_cpu_percent })
        }
    }
}

/// `free / capacity` floored to parts per billion; 0 for a zero capacity.
fn headroom_ppb(free: u64, capacity: u64) -> u64 {
    if capacity == 0 {
        return 0;
    }
    assert!(free <= capacity, "placement: free {free} over capacity {capacity}");
    let ppb = u128::from(free) * u128::from(HEADROOM_SCALE) / u128::from(capacity);
    u64::try_from(ppb).expect("free <= capacity, so ppb <= HEADROOM_SCALE")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServerInfo;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn server(id: u64, cpu_cap: u32, mem_cap: u64, used: Option<(u32, u64)>, status: MemberStatus) -> ServerEntry {
        ServerEntry {
            id: ServerId(id),
            info: ServerInfo {
                name: format!("s{id}"),
                raft_addr: "127.0.0.1:1".to_string(),
                api_addr: "127.0.0.1:2".to_string(),
                started_at_unix_ms: 0,
                cpu_capacity_percent: cpu_cap,
                mem_capacity_bytes: mem_cap,
            },
            status,
            drained: false,
            resources: used.map(|(cpu, mem)| ResourceAverage { cpu_percent_avg: cpu, mem_bytes_used_avg: mem }),
            registered_rev: 1,
            updated_rev: 1,
        }
    }

    fn online(id: u64, cpu_cap: u32, mem_cap: u64, used: Option<(u32, u64)>) -> ServerEntry {
        server(id, cpu_cap, mem_cap, used, MemberStatus::Online)
    }

    const ANY: Requirements = Requirements { min_free_mem_bytes: None, min_free_cpu_percent: None };

    #[test]
    fn no_server_online() {
        let none: Vec<ServerEntry> = Vec::new();
        assert_eq!(place(&none, &BTreeMap::new(), &ANY), Err(PlacementError::NoServerOnline));
        let draining = [server(1, 400, GIB, None, MemberStatus::Draining)];
        let err = place(&draining, &BTreeMap::new(), &ANY).unwrap_err();
        assert_eq!(err, PlacementError::NoServerOnline);
        assert!(err.to_string().contains("no server is online"));
    }

    #[test]
    fn none_fits_reports_the_best_on_offer() {
        let servers = [online(1, 400, 8 * GIB, Some((100, 7 * GIB))), online(2, 800, 4 * GIB, Some((700, GIB)))];
        let req = Requirements { min_free_mem_bytes: Some(2 * GIB), min_free_cpu_percent: Some(200) };
        let err = place(&servers, &BTreeMap::new(), &req).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NoneFits {
                considered: 2,
                required: req,
                best_free_mem_bytes: 3 * GIB,
                best_free_cpu_percent: 300
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("2147483648 bytes of free memory and 200% of free CPU"), "{msg}");
        assert!(msg.contains("3221225472") && msg.contains("300%"), "{msg}");
    }

    #[test]
    fn bottleneck_beats_memory_alone() {
        // Server 1 has the most free memory but its CPU is nearly saturated.
        let servers = [online(1, 400, 16 * GIB, Some((390, GIB))), online(2, 400, 8 * GIB, Some((100, 4 * GIB)))];
        assert_eq!(place(&servers, &BTreeMap::new(), &ANY), Ok(ServerId(2)));
        let s1 = score(&servers[0], &BTreeMap::new());
        assert_eq!(s1.cpu_headroom_ppb, 25_000_000);
        assert_eq!(s1.bottleneck_ppb(), 25_000_000);
        assert_eq!(s1.mem_headroom_ppb, 937_500_000);
    }

    #[test]
    fn unreported_is_idle_and_reservations_count() {
        let servers = [online(1, 400, 8 * GIB, None), online(2, 400, 8 * GIB, Some((40, GIB)))];
        assert_eq!(place(&servers, &BTreeMap::new(), &ANY), Ok(ServerId(1)));
        let reserved =
            BTreeMap::from([(ServerId(1), ResourceAverage { cpu_percent_avg: 200, mem_bytes_used_avg: GIB })]);
        assert_eq!(place(&servers, &reserved, &ANY), Ok(ServerId(2)));
        // Over-reservation saturates at zero free.
        let reserved =
            BTreeMap::from([(ServerId(1), ResourceAverage { cpu_percent_avg: 999, mem_bytes_used_avg: u64::MAX })]);
        let sc = score(&servers[0], &reserved);
        assert_eq!((sc.free_cpu_percent, sc.free_mem_bytes, sc.bottleneck_ppb()), (0, 0, 0));
    }

    #[test]
    fn requirements_filter_candidates() {
        let servers = [online(1, 400, 8 * GIB, None), online(2, 1600, 2 * GIB, None)];
        let req = Requirements { min_free_mem_bytes: Some(4 * GIB), min_free_cpu_percent: None };
        assert_eq!(place(&servers, &BTreeMap::new(), &req), Ok(ServerId(1)));
        let req = Requirements { min_free_mem_bytes: None, min_free_cpu_percent: Some(800) };
        assert_eq!(place(&servers, &BTreeMap::new(), &req), Ok(ServerId(2)));
        assert_eq!(req.to_string(), "800% of free CPU");
        assert_eq!(Requirements { min_free_mem_bytes: Some(1), ..ANY }.to_string(), "1 bytes of free memory");
        assert_eq!(ANY.to_string(), "no free resources");
    }

    #[test]
    fn ties_go_to_larger_sum_then_lower_id() {
        // Equal bottleneck (50%); server 3 has more CPU headroom.
        let servers = [
            online(5, 400, 8 * GIB, Some((200, 4 * GIB))),
            online(3, 400, 8 * GIB, Some((100, 4 * GIB))),
            online(4, 400, 8 * GIB, Some((100, 4 * GIB))),
        ];
        assert_eq!(place(&servers, &BTreeMap::new(), &ANY), Ok(ServerId(3)));
        let ranked = rank(&servers, &BTreeMap::new(), &ANY);
        let ids: Vec<_> = ranked.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![3, 4, 5]);
    }

    #[test]
    fn zero_capacity_has_no_headroom() {
        let servers = [online(1, 0, 8 * GIB, None), online(2, 100, 0, None), online(3, 100, 1, Some((99, 0)))];
        assert_eq!(place(&servers, &BTreeMap::new(), &ANY), Ok(ServerId(3)));
        assert_eq!(score(&servers[0], &BTreeMap::new()).bottleneck_ppb(), 0);
    }

    fn drained(server: ServerEntry) -> ServerEntry {
        ServerEntry { drained: true, ..server }
    }

    #[test]
    fn a_drained_server_is_never_chosen_even_when_idlest() {
        let servers = [drained(online(1, 1600, 64 * GIB, None)), online(2, 400, 8 * GIB, Some((300, 6 * GIB)))];
        assert_eq!(place(&servers, &BTreeMap::new(), &ANY), Ok(ServerId(2)));
        let ranked: Vec<_> = rank(&servers, &BTreeMap::new(), &ANY).iter().map(|(id, _)| id.0).collect();
        assert_eq!(ranked, vec![2]);
        assert!(!eligible(&servers[0]) && eligible(&servers[1]));
    }

    #[test]
    fn a_launch_only_a_drained_server_could_take_is_refused_naming_it() {
        let servers = [drained(online(3, 1600, 64 * GIB, None)), online(2, 400, 8 * GIB, None)];
        let req = Requirements { min_free_mem_bytes: Some(32 * GIB), min_free_cpu_percent: None };
        let err = place(&servers, &BTreeMap::new(), &req).unwrap_err();
        assert_eq!(err, PlacementError::OnlyDrainedFit { required: req, count: 1, servers: vec![ServerId(3)] });
        let msg = err.to_string();
        assert!(msg.contains("only drained servers have 34359738368 bytes of free memory"), "{msg}");
        assert!(msg.contains("1 drained (server-3) would fit"), "{msg}");
        assert!(msg.contains("roster server undrain"), "{msg}");
        // Every online server drained: the same refusal, not "no server is online".
        let all = [drained(online(1, 400, GIB, None)), drained(online(2, 400, GIB, None))];
        let err = place(&all, &BTreeMap::new(), &ANY).unwrap_err();
        assert_eq!(
            err,
            PlacementError::OnlyDrainedFit { required: ANY, count: 2, servers: vec![ServerId(1), ServerId(2)] }
        );
        // A drained server that would not fit either leaves the usual refusal.
        let req = Requirements { min_free_mem_bytes: Some(128 * GIB), min_free_cpu_percent: None };
        assert!(matches!(place(&servers, &BTreeMap::new(), &req), Err(PlacementError::NoneFits { considered: 2, .. })));
    }

    fn arb_server(id: u64) -> impl Strategy<Value = ServerEntry> {
        (
            prop_oneof![Just(0u32), 1u32..3_200],
            prop_oneof![Just(0u64), 1u64..64, 1u64..(1 << 40)],
            proptest::option::of((0u32..4_000, 0u64..(1 << 41))),
            prop_oneof![4 => Just(MemberStatus::Online), 1 => Just(MemberStatus::Draining)],
            proptest::bool::weighted(0.3),
        )
            .prop_map(move |(cpu, mem, used, status, drained)| ServerEntry {
                drained,
                ..server(id, cpu, mem, used, status)
            })
    }

    fn arb_servers() -> impl Strategy<Value = Vec<ServerEntry>> {
        proptest::collection::btree_set(0u64..40, 0..10)
            .prop_flat_map(|ids| ids.into_iter().map(arb_server).collect::<Vec<_>>().prop_shuffle())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Brute force: no eligible server beats the one chosen by the documented rule,
        /// computed here independently of `score`.
        #[test]
        fn picks_the_best_by_its_score(servers in arb_servers(),
                                       reserved in proptest::collection::btree_map(0u64..40, (0u32..2_000, 0u64..(1 << 40)), 0..6),
                                       min_mem in proptest::option::of(0u64..(1 << 40)),
                                       min_cpu in proptest::option::of(0u32..2_000)) {
            let reserved: BTreeMap<ServerId, ResourceAverage> = reserved.into_iter()
                .map(|(id, (cpu, mem))| (ServerId(id), ResourceAverage { cpu_percent_avg: cpu, mem_bytes_used_avg: mem }))
                .collect();
            let req = Requirements { min_free_mem_bytes: min_mem, min_free_cpu_percent: min_cpu };
            let frac = |free: u64, cap: u64| if cap == 0 { 0u128 } else { u128::from(free) * 1_000_000_000 / u128::from(cap) };
            let mut eligible = Vec::new();
            for s in &servers {
                if s.status != MemberStatus::Online || s.drained { continue; }
                let used = s.resources.unwrap_or_default();
                let held = reserved.get(&s.id).copied().unwrap_or_default();
                let free_cpu = i128::from(s.info.cpu_capacity_percent) - i128::from(used.cpu_percent_avg) - i128::from(held.cpu_percent_avg);
                let free_mem = i128::from(s.info.mem_capacity_bytes) - i128::from(used.mem_bytes_used_avg) - i128::from(held.mem_bytes_used_avg);
                let free_cpu = free_cpu.max(0) as u64;
                let free_mem = free_mem.max(0) as u64;
                if min_cpu.is_some_and(|c| free_cpu < u64::from(c)) || min_mem.is_some_and(|m| free_mem < m) { continue; }
                let fc = frac(free_cpu, u64::from(s.info.cpu_capacity_percent));
                let fm = frac(free_mem, s.info.mem_capacity_bytes);
                eligible.push((fc.min(fm), fc + fm, s.id));
            }
            let got = place(&servers, &reserved, &req);
            let online = servers.iter().filter(|s| s.status == MemberStatus::Online).count();
            if eligible.is_empty() {
                if online == 0 {
                    prop_assert_eq!(got, Err(PlacementError::NoServerOnline));
                } else {
                    // Which of the two refusals is `drain_is_never_chosen`'s to check.
                    let refused = matches!(got, Err(PlacementError::NoneFits { considered, .. }) if considered == online)
                        || matches!(got, Err(PlacementError::OnlyDrainedFit { .. }));
                    prop_assert!(refused, "{:?}", got);
                }
            } else {
                let chosen = got.unwrap();
                let (b, s, _) = eligible.iter().copied().find(|e| e.2 == chosen).unwrap();
                for (b2, s2, id2) in &eligible {
                    prop_assert!(b > *b2 || (b == *b2 && (s > *s2 || (s == *s2 && chosen <= *id2))),
                        "{:?} chosen over better {:?}", chosen, id2);
                }
                let ranked = rank(&servers, &reserved, &req);
                prop_assert_eq!(ranked.len(), eligible.len());
                prop_assert_eq!(ranked[0].0, chosen);
            }
        }

        /// Drain, against a naive model: placement among all servers is placement among the
        /// undrained ones alone; a refusal is `OnlyDrainedFit` exactly when undraining
        /// everyone would have placed the process, and it names the drained servers that
        /// fit (computed here by brute force); any other refusal is the one given with no
        /// server drained.
        #[test]
        fn drain_is_never_chosen(servers in arb_servers(),
                                 reserved in proptest::collection::btree_map(0u64..40, (0u32..2_000, 0u64..(1 << 40)), 0..6),
                                 min_mem in proptest::option::of(0u64..(1 << 40)),
                                 min_cpu in proptest::option::of(0u32..2_000)) {
            let reserved: BTreeMap<ServerId, ResourceAverage> = reserved.into_iter()
                .map(|(id, (cpu, mem))| (ServerId(id), ResourceAverage { cpu_percent_avg: cpu, mem_bytes_used_avg: mem }))
                .collect();
            let req = Requirements { min_free_mem_bytes: min_mem, min_free_cpu_percent: min_cpu };
            let got = place(&servers, &reserved, &req);
            let undrained: Vec<ServerEntry> = servers.iter().filter(|s| !s.drained).cloned().collect();
            let none_drained: Vec<ServerEntry> =
                servers.iter().map(|s| ServerEntry { drained: false, ..s.clone() }).collect();
            let mut drained_fit: Vec<ServerId> = servers
                .iter()
                .filter(|s| s.status == MemberStatus::Online && s.drained && score(s, &reserved).fits(&req))
                .map(|s| s.id)
                .collect();
            drained_fit.sort();
            match &got {
                Ok(id) => {
                    let host = servers.iter().find(|s| s.id == *id).unwrap();
                    prop_assert!(!host.drained && host.status == MemberStatus::Online);
                    prop_assert_eq!(place(&undrained, &reserved, &req), Ok(*id));
                    prop_assert!(rank(&servers, &reserved, &req).iter().all(|(id, _)| !drained_fit.contains(id)));
                }
                Err(PlacementError::OnlyDrainedFit { required, count, servers: named }) => {
                    prop_assert_eq!(required, &req);
                    prop_assert!(place(&undrained, &reserved, &req).is_err());
                    prop_assert_eq!(*count, drained_fit.len());
                    prop_assert!(*count > 0);
                    let first: Vec<ServerId> = drained_fit.iter().copied().take(DRAINED_NAMED_MAX).collect();
                    prop_assert_eq!(named, &first);
                    let undrained_choice = place(&none_drained, &reserved, &req).unwrap();
                    prop_assert!(drained_fit.contains(&undrained_choice));
                    prop_assert!(rank(&servers, &reserved, &req).is_empty());
                }
                Err(other) => {
                    prop_assert!(drained_fit.is_empty());
                    prop_assert_eq!(place(&none_drained, &reserved, &req), Err(other.clone()));
                }
            }
        }

        /// Reservations equal the plain sum over the processes placed on each server, and
        /// no server without processes has one.
        #[test]
        fn reservations_are_the_sum_per_server(
            procs in proptest::collection::vec((1u64..5, 0u32..300, 0u64..(4 * GIB)), 0..40),
        ) {
            let entries: Vec<ProcessEntry> = procs
                .iter()
                .enumerate()
                .map(|(i, &(server, cpu, mem))| ProcessEntry {
                    id: crate::ids::ProcessId(i as u64 + 1),
                    resources: None,
                    info: crate::model::ProcessInfo {
                        name: format!("p{i}"),
                        server: ServerId(server),
                        service_host: String::new(),
                        service_port: None,
                        started_at_unix_ms: 0,
                        labels: Default::default(),
                        reserved: ResourceAverage { cpu_percent_avg: cpu, mem_bytes_used_avg: mem },
                    },
                    status: MemberStatus::Online,
                    registered_rev: 1,
                    updated_rev: 1,
                })
                .collect();
            let got = reservations(&entries);
            for server in 1u64..5 {
                let on: Vec<_> = procs.iter().filter(|p| p.0 == server).collect();
                let want_cpu: u64 = on.iter().map(|p| u64::from(p.1)).sum();
                let want_mem: u64 = on.iter().map(|p| p.2).sum();
                match got.get(&ServerId(server)) {
                    None => prop_assert!(on.is_empty()),
                    Some(r) => {
                        prop_assert!(!on.is_empty());
                        prop_assert_eq!(u64::from(r.cpu_percent_avg), want_cpu);
                        prop_assert_eq!(r.mem_bytes_used_avg, want_mem);
                    }
                }
            }
        }
    }
}
