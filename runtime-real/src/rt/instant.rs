//! openraft's `Instant` over tokio's clock (madsim's simulated clock under `cfg(madsim)`).

use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RtInstant(pub(crate) tokio::time::Instant);

impl Add<Duration> for RtInstant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        RtInstant(self.0 + rhs)
    }
}

impl AddAssign<Duration> for RtInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for RtInstant {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        RtInstant(self.0 - rhs)
    }
}

impl Sub<RtInstant> for RtInstant {
    type Output = Duration;
    fn sub(self, rhs: RtInstant) -> Duration {
        self.0.saturating_duration_since(rhs.0)
    }
}

impl SubAssign<Duration> for RtInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs;
    }
}

impl openraft_rt::Instant for RtInstant {
    fn now() -> Self {
        RtInstant(tokio::time::Instant::now())
    }
}
