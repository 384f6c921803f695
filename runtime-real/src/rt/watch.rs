//! A watch channel that wakes its waiters in the order they started waiting.
//!
//! openraft's stock watch wraps `tokio::sync::watch`, which parks waiters in `Notify`
//! slots chosen by tokio's thread-local RNG. That RNG is seeded from a process-global
//! counter, so when one send wakes several waiters the wake order differs between two
//! runs of the same seed and the simulator diverges (see DESIGN.md, "Determinism under
//! faults"). Here waiters sit in a `BTreeMap` keyed by a registration number: no
//! randomness, the same order every run.

use openraft_rt::watch::{RecvError, SendError};
use openraft_rt::{OptionalSend, OptionalSync, Watch, WatchReceiver, WatchSender};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::task::{Poll, Waker};

pub struct OrderedWatch;

struct Shared<T> {
    value: RwLock<Slot<T>>,
    wait: Mutex<Waiters>,
}

struct Slot<T> {
    value: T,
    /// Bumped on every change; a receiver has seen a change when its copy is behind.
    version: u64,
}

#[derive(Default)]
struct Waiters {
    next_ticket: u64,
    parked: BTreeMap<u64, Waker>,
    senders: usize,
    receivers: usize,
}

impl<T> Shared<T> {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave `Waiters` inconsistent (each
        // update is a single insert/remove/counter change), so poisoning is ignored.
        self.wait.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self) -> RwLockReadGuard<'_, Slot<T>> {
        self.value.read().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_all(&self) {
        let parked = std::mem::take(&mut self.waiters().parked);
        // BTreeMap order = registration order: deterministic.
        for (_, waker) in parked {
            waker.wake();
        }
    }
}

/// A receiver's place among the parked waiters, given up when its wait ends or is dropped.
struct Parked<'a, T> {
    shared: &'a Shared<T>,
    ticket: Option<u64>,
}

impl<T> Drop for Parked<'_, T> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.shared.waiters().parked.remove(&ticket);
        }
    }
}

pub struct OrderedSender<T> {
    shared: Arc<Shared<T>>,
}

pub struct OrderedReceiver<T> {
    shared: Arc<Shared<T>>,
    seen_version: u64,
}

/// Borrowed view of the current value.
pub struct WatchRef<'a, T> {
    guard: RwLockReadGuard<'a, Slot<T>>,
}

impl<T> Deref for WatchRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard.value
    }
}

impl Watch for OrderedWatch {
    type Sender<T: OptionalSend + OptionalSync> = OrderedSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = OrderedReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = WatchRef<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (OrderedSender<T>, OrderedReceiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(Slot { value: init, version: 0 }),
            wait: Mutex::new(Waiters { senders: 1, receivers: 1, ..Waiters::default() }),
        });
        (OrderedSender { shared: shared.clone() }, OrderedReceiver { shared, seen_version: 0 })
    }
}

impl<T> Clone for OrderedSender<T> {
    fn clone(&self) -> Self {
        self.shared.waiters().senders += 1;
        OrderedSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for OrderedSender<T> {
    fn drop(&mut self) {
        let last = {
            let mut w = self.shared.waiters();
            w.senders -= 1;
            w.senders == 0
        };
        if last {
            // Receivers waiting for a change must learn that none will come.
            self.shared.wake_all();
        }
    }
}

impl<T> Clone for OrderedReceiver<T> {
    fn clone(&self) -> Self {
        self.shared.waiters().receivers += 1;
        OrderedReceiver { shared: self.shared.clone(), seen_version: self.seen_version }
    }
}

impl<T> Drop for OrderedReceiver<T> {
    fn drop(&mut self) {
        self.shared.waiters().receivers -= 1;
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<OrderedWatch, T> for OrderedSender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        // Like tokio's watch: a send with nobody listening fails and stores nothing.
        if self.shared.waiters().receivers == 0 {
            return Err(SendError(value));
        }
        self.send_if_modified(|current| {
            *current = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut slot = self.shared.value.write().unwrap_or_else(|e| e.into_inner());
            let modified = modify(&mut slot.value);
            if modified {
                slot.version += 1;
            }
            modified
        };
        if modified {
            self.shared.wake_all();
        }
        modified
    }

    fn borrow_watched(&self) -> WatchRef<'_, T> {
        WatchRef { guard: self.shared.slot() }
    }

    fn subscribe(&self) -> OrderedReceiver<T> {
        self.shared.waiters().receivers += 1;
        let seen_version = self.shared.slot().version;
        OrderedReceiver { shared: self.shared.clone(), seen_version }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<OrderedWatch, T> for OrderedReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        let shared = self.shared.clone();
        let seen = self.seen_version;
        // Takes this wait's waker out however the wait ends: openraft's replication drops a
        // pending `changed` in a select on every response, and a waker left parked stays
        // until the next send, which on a quiet channel may never come (a leader grew by
        // about 1 GiB an hour so).
        let mut parked = Parked { shared: &shared, ticket: None };
        let result = poll_fn(|cx| {
            let version = shared.slot().version;
            if version != seen {
                return Poll::Ready(Ok(version));
            }
            let mut w = shared.waiters();
            if w.senders == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            // Keep the first ticket across polls so a re-poll does not jump the queue.
            let t = *parked.ticket.get_or_insert_with(|| {
                w.next_ticket += 1;
                w.next_ticket
            });
            w.parked.insert(t, cx.waker().clone());
            Poll::Pending
        })
        .await;
        drop(parked);
        let version = result?;
        self.seen_version = version;
        Ok(())
    }

    fn borrow_watched(&self) -> WatchRef<'_, T> {
        WatchRef { guard: self.shared.slot() }
    }

    fn borrow_and_update(&mut self) -> WatchRef<'_, T> {
        let guard = self.shared.slot();
        self.seen_version = guard.version;
        WatchRef { guard }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_on_change_and_reports_closed() {
        let (tx, mut rx) = OrderedWatch::channel(1u32);
        let waiter = tokio::spawn(async move {
            rx.changed().await.expect("a change");
            let v = *rx.borrow_and_update();
            let closed = rx.changed().await;
            (v, closed.is_err())
        });
        tokio::task::yield_now().await;
        tx.send(7).expect("a receiver exists");
        tokio::task::yield_now().await;
        drop(tx);
        let (v, closed) = waiter.await.expect("task ends");
        assert_eq!(v, 7);
        assert!(closed);
    }

    #[tokio::test]
    async fn a_wait_given_up_leaves_no_waker_behind() {
        let (tx, mut rx) = OrderedWatch::channel(1u32);
        let parked = |rx: &OrderedReceiver<u32>| rx.shared.waiters().parked.len();
        for _ in 0..100 {
            // A wait that something else wins, as in openraft's replication selects.
            tokio::select! {
                biased;
                _ = rx.changed() => panic!("nothing was sent"),
                _ = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(parked(&rx), 0, "every dropped wait took its waker out");
        let waiter = tokio::spawn(async move {
            rx.changed().await.expect("a change");
            rx
        });
        tokio::task::yield_now().await;
        tx.send(2).expect("a receiver exists");
        let rx = waiter.await.expect("task ends");
        assert_eq!(parked(&rx), 0);
    }

    #[test]
    fn send_without_receivers_fails_and_keeps_value() {
        let (tx, rx) = OrderedWatch::channel(1u32);
        drop(rx);
        assert!(tx.send(2).is_err());
        assert_eq!(*tx.borrow_watched(), 1);
    }

    #[test]
    fn send_if_modified_false_does_not_bump() {
        let (tx, rx) = OrderedWatch::channel(1u32);
        assert!(!tx.send_if_greater(0));
        assert!(tx.send_if_greater(5));
        assert_eq!(*rx.borrow_watched(), 5);
    }
}
