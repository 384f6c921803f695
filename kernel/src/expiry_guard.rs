//! The guard against mass false expiry: how much longer than `timeout_ms` the leader
//! waits before it expires a silent member, and when it raises the brake alarm.
//!
//! A leader that is itself overloaded cannot tell a dead member from a heartbeat that
//! still waits in its own queue. Two rules, in one place:
//!
//! 1. **Lateness grace** (as Consul's Lifeguard). The driver reports how late the leader
//!    got round to its work ([`ExpiryGuard::handle_lateness`]: its timer firing after the
//!    instant it was set for, or the oldest heartbeat of a batch having waited in its
//!    inbound queue). A member is expired only once silent for longer than `timeout_ms`
//!    plus the largest lateness reported within the last timeout window, capped at one
//!    `timeout_ms`. Lateness up to [`LATENESS_TOLERANCE_MS`] is the timer's granularity,
//!    not overload, and counts as on time: a leader that is not late expires exactly as
//!    it would without this guard. The window is kept in eighths of the timeout, so a
//!    report counts for at least `timeout_ms` and at most nine eighths of it: after one
//!    timeout of punctual work every live member has been heard afresh.
//! 2. **The brake** (as Kubernetes' node lifecycle controller per zone). When expiring
//!    is due and, of at least `brake_min_members` members (those tracked plus those
//!    expired within the last timeout window), more than `brake_share_permille` ‰ are
//!    *suspects* (silent for longer than `timeout_ms - interval_ms`, so due within one
//!    heartbeat interval, or pending removal, or expired within the window), the
//!    brake holds: every expiry waits `brake_hold_ms` more, and the alarm
//!    ([`ExpiryGuard::brake`]) is on until a reading finds the share believable again and
//!    a hold has passed since one last found it unbelievable (so the members it held, whose
//!    heartbeats arrive just after the silence ends, are not expired the moment the share
//!    drops).
//!    The hold is at most [`MAX_BRAKE_HOLD_MS`] (1 s), so a real mass crash is still
//!    removed within `timeout_ms` + 1 s by a leader that is not late. The brake is read
//!    afresh whenever an expiry is about to be proposed, and every
//!    [`BRAKE_READING_MS`] while it holds.
//!
//! Why a hold and not a rate limit: Kubernetes slows evictions to a trickle (0.01 node/s
//! in a large unhealthy zone), which would keep a real mass crash of 100,000 members in
//! the record for hours. Roster promises removal within timeout + 1 s, so the brake can
//! only delay, and the one delay that helps is the one that lets queued heartbeats
//! through before anyone is judged.
//!
//! Sans-IO and deterministic: time is the caller's `now_ms`, the windows are ordered
//! queues, nothing is hashed.
//!
//! Call order (by `LeaderDuties`): `handle_lateness` per driver report; `handle_expired`
//! when an expired member's removal is applied; `prune(now)` before reading;
//! `lateness_grace_ms(now)`, then `judge(now, ..)` when an expiry is due or
//! `needs_reading(now)`; `hold_ms()` for the brake's part; `poll_timeout()` for when a
//! reading may change.

use std::collections::VecDeque;

/// Lateness up to this is a timer's granularity (tokio's is 1 ms; a loop iteration adds
/// a few), not overload: it gives no grace.
pub const LATENESS_TOLERANCE_MS: u64 = 10;
/// The brake may hold expiry at most this long: the promise is removal within
/// `timeout_ms` + 1 s of a real mass crash.
pub const MAX_BRAKE_HOLD_MS: u64 = 1_000;
/// While the brake holds, it is read again this often, so the alarm falls soon after the
/// silence ends.
pub const BRAKE_READING_MS: u64 = 100;
/// The windows are kept in this many buckets per timeout (plus the current one).
const BUCKETS_PER_TIMEOUT: u64 = 8;

/// The brake's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryGuardConfig {
    /// The brake holds when more than this share (per mille) of the members are suspects...
    pub brake_share_permille: u32,
    /// ...of at least this many members (a few members going at once is believable).
    pub brake_min_members: u64,
    /// How much longer every expiry waits while the brake holds.
    pub brake_hold_ms: u64,
}

impl Default for ExpiryGuardConfig {
    /// More than a third of at least 50 members; a hold of 750 ms. A third: the largest
    /// share one failure domain plausibly holds in a cluster of three servers (one host,
    /// one rack, one zone of three). 50: Kubernetes' `largeClusterSizeThreshold`; below
    /// it one host going down can be a third. 750 ms: within the 1 s promise with room for
    /// the expiry's own commit.
    fn default() -> Self {
        ExpiryGuardConfig { brake_share_permille: 333, brake_min_members: 50, brake_hold_ms: 750 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryGuardConfigError {
    #[error(
        "brake hold {hold_ms} ms is over {MAX_BRAKE_HOLD_MS} ms: a real mass crash must be removed within the timeout + 1 s; lower brake_hold_ms"
    )]
    HoldTooLong { hold_ms: u64 },
    #[error("brake share {share_permille} ‰ is out of range: choose 1 to 999 (default 333, a third)")]
    ShareOutOfRange { share_permille: u32 },
}

impl ExpiryGuardConfig {
    pub fn validate(&self) -> Result<(), ExpiryGuardConfigError> {
        if self.brake_hold_ms > MAX_BRAKE_HOLD_MS {
            return Err(ExpiryGuardConfigError::HoldTooLong { hold_ms: self.brake_hold_ms });
        }
        if !(1..=999).contains(&self.brake_share_permille) {
            return Err(ExpiryGuardConfigError::ShareOutOfRange { share_permille: self.brake_share_permille });
        }
        Ok(())
    }
}

/// The brake's alarm: what the last reading found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrakeAlarm {
    /// When the brake began to hold.
    pub since_ms: u64,
    /// Suspects at the last reading: silent for longer than timeout − interval, pending
    /// removal, or expired within the last timeout window.
    pub suspects: u64,
    /// Members at the last reading: tracked, plus expired within the window.
    pub members: u64,
    /// How much longer every expiry waits.
    pub hold_ms: u64,
}

/// What status shows of the guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpiryGuardStatus {
    /// The grace the leader's own lateness adds to the timeout now.
    pub lateness_grace_ms: u64,
    /// On while the brake holds.
    pub brake: Option<BrakeAlarm>,
}

/// The guard's memory: lateness and expiries over the last timeout window, and the brake.
#[derive(Clone, Debug)]
pub struct ExpiryGuard {
    config: ExpiryGuardConfig,
    timeout_ms: u64,
    /// A member silent for longer than this is a suspect (timeout − interval).
    suspect_after_ms: u64,
    /// `ceil(timeout_ms / 8)`: eight buckets cover at least one timeout.
    bucket_ms: u64,
    /// `(bucket, largest lateness reported in it)`, oldest first; at most nine.
    lateness: VecDeque<(u64, u64)>,
    /// `(bucket, members whose expiry was applied in it)`, oldest first; at most nine.
    expired: VecDeque<(u64, u64)>,
    brake: Option<BrakeAlarm>,
    /// When the brake was last read.
    read_at_ms: Option<u64>,
    /// When a reading last found the share unbelievable.
    unbelievable_at_ms: Option<u64>,
}

impl ExpiryGuard {
    /// `timeout_ms` and `interval_ms` are the liveness config's (already validated).
    pub fn new(config: ExpiryGuardConfig, timeout_ms: u64, interval_ms: u64) -> Result<Self, ExpiryGuardConfigError> {
        config.validate()?;
        assert!(timeout_ms > interval_ms, "expiry guard: the timeout covers several intervals");
        Ok(ExpiryGuard {
            config,
            timeout_ms,
            suspect_after_ms: timeout_ms - interval_ms,
            bucket_ms: timeout_ms.div_ceil(BUCKETS_PER_TIMEOUT).max(1),
            lateness: VecDeque::new(),
            expired: VecDeque::new(),
            brake: None,
            read_at_ms: None,
            unbelievable_at_ms: None,
        })
    }

    pub fn config(&self) -> &ExpiryGuardConfig {
        &self.config
    }

    /// How long a member must be silent to count as a suspect.
    pub fn suspect_after_ms(&self) -> u64 {
        self.suspect_after_ms
    }

    /// The leader was `late_ms` behind its schedule at `now_ms`.
    pub fn handle_lateness(&mut self, now_ms: u64, late_ms: u64) {
        if late_ms <= LATENESS_TOLERANCE_MS {
            return;
        }
        let bucket = now_ms / self.bucket_ms;
        match self.lateness.back_mut() {
            Some((b, late)) if *b == bucket => *late = (*late).max(late_ms),
            // A clock that stepped back files into the newest bucket: never lost.
            Some((b, late)) if *b > bucket => *late = (*late).max(late_ms),
            _ => self.lateness.push_back((bucket, late_ms)),
        }
        self.prune(now_ms);
    }

    /// `count` members this leader had proposed for expiry left the record at `now_ms`.
    pub fn handle_expired(&mut self, now_ms: u64, count: u64) {
        if count == 0 {
            return;
        }
        let bucket = now_ms / self.bucket_ms;
        match self.expired.back_mut() {
            Some((b, n)) if *b >= bucket => *n = n.saturating_add(count),
            _ => self.expired.push_back((bucket, count)),
        }
        self.prune(now_ms);
    }

    /// A new tenure (or none): expiries and the brake were this tenure's. Lateness is the
    /// process's own and stays.
    pub fn handle_new_tenure(&mut self) {
        self.expired.clear();
        self.brake = None;
        self.read_at_ms = None;
        self.unbelievable_at_ms = None;
    }

    /// Forgets what has left the window at `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        let oldest = self.oldest_bucket(now_ms);
        while self.lateness.front().is_some_and(|(b, _)| *b < oldest) {
            self.lateness.pop_front();
        }
        while self.expired.front().is_some_and(|(b, _)| *b < oldest) {
            self.expired.pop_front();
        }
        let most = BUCKETS_PER_TIMEOUT as usize + 1;
        assert!(self.lateness.len() <= most && self.expired.len() <= most, "expiry guard: window over its bound");
    }

    /// The grace the leader's lateness adds at `now_ms`: the largest lateness reported in
    /// the window, at most one timeout.
    pub fn lateness_grace_ms(&self, now_ms: u64) -> u64 {
        let oldest = self.oldest_bucket(now_ms);
        let late = self.lateness.iter().filter(|(b, _)| *b >= oldest).map(|(_, l)| *l).max().unwrap_or(0);
        late.min(self.timeout_ms)
    }

    /// Members whose expiry was applied within the window at `now_ms`.
    pub fn expired_recently(&self, now_ms: u64) -> u64 {
        let oldest = self.oldest_bucket(now_ms);
        self.expired.iter().filter(|(b, _)| *b >= oldest).map(|(_, n)| *n).sum()
    }

    /// Reads the brake at `now_ms` given `tracked` members of which `silent` are silent
    /// for longer than [`ExpiryGuard::suspect_after_ms`] or pending removal. Returns
    /// whether it holds: the share is unbelievable now, or was within the last hold.
    pub fn judge(&mut self, now_ms: u64, tracked: u64, silent: u64) -> bool {
        assert!(silent <= tracked, "expiry guard: more silent members than tracked");
        let recent = self.expired_recently(now_ms);
        let members = tracked.saturating_add(recent);
        let suspects = silent.saturating_add(recent);
        let unbelievable = members >= self.config.brake_min_members
            && u128::from(suspects) * 1_000 > u128::from(self.config.brake_share_permille) * u128::from(members);
        if unbelievable {
            self.unbelievable_at_ms = Some(now_ms);
        }
        let holds = self.unbelievable_at_ms.is_some_and(|at| now_ms < at.saturating_add(self.config.brake_hold_ms))
            || unbelievable;
        self.brake = holds.then(|| BrakeAlarm {
            since_ms: self.brake.map_or(now_ms, |b| b.since_ms),
            suspects,
            members,
            hold_ms: self.config.brake_hold_ms,
        });
        self.read_at_ms = Some(now_ms);
        holds
    }

    /// Whether the brake holds and its reading is due again.
    pub fn needs_reading(&self, now_ms: u64) -> bool {
        self.brake.is_some() && self.read_at_ms.is_none_or(|at| at.saturating_add(BRAKE_READING_MS) <= now_ms)
    }

    /// The alarm, while the brake holds.
    pub fn brake(&self) -> Option<BrakeAlarm> {
        self.brake
    }

    /// How much longer every expiry waits now for the brake.
    pub fn hold_ms(&self) -> u64 {
        if self.brake.is_some() { self.config.brake_hold_ms } else { 0 }
    }

    pub fn status(&self, now_ms: u64) -> ExpiryGuardStatus {
        ExpiryGuardStatus { lateness_grace_ms: self.lateness_grace_ms(now_ms), brake: self.brake }
    }

    /// The largest grace any kept report may still give (for a deadline that must not be
    /// too early; `poll_timeout` says when it may shrink).
    pub fn kept_grace_ms(&self) -> u64 {
        self.lateness.iter().map(|(_, l)| *l).max().unwrap_or(0).min(self.timeout_ms)
    }

    /// When a reading may change: the oldest lateness report leaves the window, or the
    /// brake is due to be read again.
    pub fn poll_timeout(&self) -> Option<u64> {
        let leaves = self.lateness.front().map(|(b, _)| (b + BUCKETS_PER_TIMEOUT + 1).saturating_mul(self.bucket_ms));
        let reading = match (self.brake, self.read_at_ms) {
            (Some(_), Some(at)) => Some(at.saturating_add(BRAKE_READING_MS)),
            _ => None,
        };
        [leaves, reading].into_iter().flatten().min()
    }

    /// The oldest bucket still in the window at `now_ms`: the current one and eight before.
    fn oldest_bucket(&self, now_ms: u64) -> u64 {
        (now_ms / self.bucket_ms).saturating_sub(BUCKETS_PER_TIMEOUT)
    }
}

#[cfg(test)]
mod tests;
