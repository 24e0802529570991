//! The stop bell: how a plugin thread blocked in a host call learns, at
//! once, that the job began shutting down — without polling.
//!
//! Owns: [`Waitable`] (a mutex and its condvar, shared so the bell can
//! reach whoever waits on it), [`Parked`] (a waiter's registration, for as
//! long as it may wait) and [`ring`] (wakes every registered waiter).
//!
//! Why: every blocking call of the C ABI (`audio_stream_read`,
//! `audio_source_capture`, `next_data`, `next_stream`, `next_invocation`,
//! …) must return within 100 ms of shutdown beginning. They used to re-check
//! shutdown every 40 ms; an echo job has four or five plugin threads
//! waiting in such calls, and those timed wake-ups (an hrtimer armed and
//! cancelled per slice, a context switch each) were 30 % of its CPU
//! (`perf`, docs/performance.md). Now a waiter sleeps until it is notified,
//! its deadline, or [`SAFETY_NET`].
//!
//! Correctness (no lost wake-up): a waiter registers while holding its
//! mutex, then checks `stop()`, then waits (which releases the mutex). The
//! ringer sets the stop condition first, snapshots the registrations, and
//! takes each waiter's mutex before notifying. A waiter registered before
//! the snapshot is either already waiting (so the notify reaches it) or
//! not yet past its check (it cannot be: it holds the mutex the ringer
//! takes); one registered after the snapshot sees the condition set. Lock
//! order: a waiter takes its mutex, then the registry; the ringer never
//! holds the registry while taking a waiter's mutex.
//!
//! Must not touch: what `stop` means (the caller's predicate; the plugin
//! layer rings the bell from `JobContext::on_shutdown_began`) or the
//! waiters' state.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The longest a waiter sleeps without re-checking `stop()`: only a net
/// for a wake-up lost to a bug. The 100 ms the header promises come from
/// [`ring`].
pub(crate) const SAFETY_NET: Duration = Duration::from_secs(1);

/// Something whose waiters the bell can wake.
trait Wake: Send + Sync {
    fn wake_waiters(&self);
}

/// A mutex-protected state and the condvar its waiters sleep on, held in an
/// `Arc` so the bell can hold a `Weak` to it while someone waits.
pub(crate) struct Waitable<S> {
    state: Mutex<S>,
    changed: Condvar,
}

impl<S: Send + 'static> Waitable<S> {
    pub(crate) fn new(state: S) -> Arc<Waitable<S>> {
        Arc::new(Waitable {
            state: Mutex::new(state),
            changed: Condvar::new(),
        })
    }

    /// The state (a poisoned lock is taken as is: the state stays valid).
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify_one(&self) {
        self.changed.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.changed.notify_all();
    }

    /// Registers this waitable with the bell for as long as the returned
    /// guard lives. Call it with the state locked, before checking `stop()`.
    pub(crate) fn park(self: &Arc<Self>) -> Parked {
        let weak: Weak<dyn Wake> = Arc::downgrade(self) as Weak<dyn Wake>;
        let mut reg = registry();
        let slot = match reg.free.pop() {
            Some(i) => {
                reg.slots[i] = Some(weak);
                i
            }
            None => {
                reg.slots.push(Some(weak));
                reg.slots.len() - 1
            }
        };
        Parked { slot }
    }

    /// One step of a waiting loop: the first call registers with the bell
    /// (`parked` is `None`) and returns at once, so the caller re-checks its
    /// condition and `stop()` with the registration in place; later calls
    /// [`Self::wait`]. Call it with the state locked, after the checks.
    pub(crate) fn park_or_wait<'a>(
        self: &'a Arc<Self>,
        guard: MutexGuard<'a, S>,
        deadline: Instant,
        parked: &mut Option<Parked>,
    ) -> MutexGuard<'a, S> {
        if parked.is_none() {
            *parked = Some(self.park());
            return guard;
        }
        self.wait(guard, deadline)
    }

    /// Sleeps (releasing `guard`) until notified, rung, `deadline`, or
    /// [`SAFETY_NET`], whichever is first; the caller re-checks everything.
    pub(crate) fn wait<'a>(
        &'a self,
        guard: MutexGuard<'a, S>,
        deadline: Instant,
    ) -> MutexGuard<'a, S> {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(SAFETY_NET);
        self.changed
            .wait_timeout(guard, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

impl<S: Send> Wake for Waitable<S> {
    fn wake_waiters(&self) {
        // Taking the mutex waits out a waiter between its check and its
        // wait (see the module doc).
        drop(self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }
}

/// A waiter's registration with the bell; dropping it deregisters.
pub(crate) struct Parked {
    slot: usize,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let mut reg = registry();
        reg.slots[self.slot] = None;
        reg.free.push(self.slot);
    }
}

struct Registry {
    slots: Vec<Option<Weak<dyn Wake>>>,
    free: Vec<usize>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    slots: Vec::new(),
    free: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes every waiter registered now. Call it after making their `stop()`
/// true. Never blocks for longer than a waiter holds its own mutex.
pub(crate) fn ring() {
    let parked: Vec<Arc<dyn Wake>> = registry()
        .slots
        .iter()
        .flatten()
        .filter_map(Weak::upgrade)
        .collect();
    for w in parked {
        w.wake_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A waiter with a far deadline returns promptly when rung — over many
    /// rounds, with the ring racing the waiter's check (no lost wake-up).
    #[test]
    fn ringing_wakes_a_waiter_at_once_in_every_race() {
        for round in 0..200 {
            let w = Waitable::new(());
            let stop = Arc::new(AtomicBool::new(false));
            let (w2, s2) = (w.clone(), stop.clone());
            let waiter = std::thread::spawn(move || {
                let mut g = w2.lock();
                let _parked = w2.park();
                let began = Instant::now();
                while !s2.load(Ordering::Acquire) {
                    g = w2.wait(g, Instant::now() + Duration::from_secs(30));
                }
                began.elapsed()
            });
            if round % 2 == 0 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Ordering::Release);
            ring();
            let took = waiter.join().unwrap();
            assert!(took < Duration::from_millis(500), "round {round}: {took:?}");
        }
    }

    #[test]
    fn registrations_are_given_back() {
        let w = Waitable::new(0u8);
        for _ in 0..1000 {
            let _g = w.lock();
            let _p = w.park();
        }
        let reg = registry();
        // Other tests may hold a few at the same time.
        assert!(reg.slots.len() < 64, "{} slots", reg.slots.len());
    }
}
