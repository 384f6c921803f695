//! The one `AsyncRuntime` openraft runs on, in production and in the simulator.
//!
//! Everything goes through `tokio`, which is the `madsim-tokio` package: real tokio in a
//! normal build, madsim's simulated runtime under `RUSTFLAGS="--cfg madsim"`. The parts
//! that would draw hidden randomness are replaced: the watch channel (see `watch.rs`)
//! and the RNG (seeded from madsim's deterministic RNG in simulation).

mod channels;
pub mod clock;
mod instant;
mod watch;

pub use channels::{RtMpsc, RtMutex, RtOneshot};
pub use instant::RtInstant;
pub use roster_client::{Elapsed, Timeout};
pub use watch::OrderedWatch;

use openraft_rt::OptionalSend;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::future::Future;
use std::time::Duration;

pub struct RosterRuntime {
    #[cfg(not(madsim))]
    rt: tokio::runtime::Runtime,
    #[cfg(madsim)]
    rt: madsim::runtime::Runtime,
}

impl std::fmt::Debug for RosterRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RosterRuntime")
    }
}

/// A seed for a fresh RNG: from madsim's seeded RNG in simulation, from the OS otherwise.
pub(crate) fn rng_seed() -> u64 {
    #[cfg(madsim)]
    {
        madsim::rand::random::<u64>()
    }
    #[cfg(not(madsim))]
    {
        rand::random::<u64>()
    }
}

/// A fresh 256-bit nonce (peer handshakes, token secrets): seeded in simulation.
pub fn random_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng_seed().to_le_bytes());
    }
    out
}

impl openraft_rt::AsyncRuntime for RosterRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = RtInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: RtInstant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.0)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Timeout<F> {
        Timeout::new(future, tokio::time::Instant::now() + duration)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: RtInstant, future: F) -> Timeout<F> {
        Timeout::new(future, deadline.0)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> SmallRng {
        SmallRng::seed_from_u64(rng_seed())
    }

    type Mpsc = RtMpsc;
    type Watch = OrderedWatch;
    type Oneshot = RtOneshot;
    type Mutex<T: OptionalSend + 'static> = RtMutex<T>;

    fn new(threads: usize) -> Self {
        #[cfg(not(madsim))]
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .expect("the OS refused to create tokio's worker threads");
        #[cfg(madsim)]
        let rt = {
            let _ = threads;
            madsim::runtime::Runtime::new()
        };
        RosterRuntime { rt }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.rt.block_on(future)
    }
}
