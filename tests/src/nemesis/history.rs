//! The one clock and the one record of a run. Every time in the trace is milliseconds on
//! one monotonic clock since the run began; the Unix time at that instant is the trace's
//! origin, so Unix times the nodes put in the record (an expiry's decision) line up with
//! it (nodes and harness share the machine's clock).

use roster_sim::trace::Trace;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub struct Recorder {
    start: Instant,
    trace: Mutex<Trace>,
}

pub type SharedRecorder = Arc<Recorder>;

impl Recorder {
    pub fn new() -> SharedRecorder {
        let start = Instant::now();
        let mut trace = Trace::new();
        trace.record_origin(roster_real::rt::clock::unix_ms());
        Arc::new(Recorder { start, trace: Mutex::new(trace) })
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Milliseconds on the run's clock of a tokio instant (the client's observer hooks
    /// hand those out).
    pub fn ms_of(&self, at: tokio::time::Instant) -> u64 {
        at.into_std().saturating_duration_since(self.start).as_millis() as u64
    }

    pub fn trace(&self) -> MutexGuard<'_, Trace> {
        self.trace.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fault(&self, what: impl Into<String>) {
        let at = self.now_ms();
        let what = what.into();
        println!("{:>8.1} s  {what}", at as f64 / 1000.0);
        self.trace().record_fault(at, what);
    }
}
