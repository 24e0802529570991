//! Blocking a plugin thread on a future, with a deadline, without a runtime.
//!
//! Owns: [`until`], a minimal executor that polls one future on the calling
//! thread and parks the thread between wake-ups, giving up at a deadline.
//!
//! Why not `tokio::runtime::Handle::block_on`: plugin threads call host
//! functions at any time, including after the job ended and the runtime shut
//! down (a thread the plugin started and never joined). The futures waited on
//! here (`broadcast::Receiver::recv`, `Mutex::lock`, `CancellationToken::
//! cancelled`) only need a waker, never a runtime driver, so waiting on them
//! stays sound for the life of the process. The deadline is measured with the
//! thread's own clock (`park_timeout`), not tokio's timer, for the same reason.
//!
//! Also [`run_on_room`] (room work spawned on the job's runtime, waited
//! for on the plugin thread) and [`lock_within`] (one caller at a time,
//! each within its own deadline).
//!
//! Must not touch: anything the futures do; it only polls them.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it completes (`Some`) or `deadline`
/// passes (`None`). Polls at least once, so a ready future wins even with a
/// deadline in the past. Blocks only this thread; never panics.
pub(crate) fn until<F: Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // A wake-up between the poll and the park leaves the token set, so
        // park returns at once: no wake-up is lost.
        std::thread::park_timeout(deadline - now);
    }
}

pub(crate) enum Ran<T> {
    Done(T),
    Timeout,
    ShuttingDown,
}

/// Runs `fut` on the job's runtime and waits for it on this (plugin)
/// thread until `deadline` or shutdown, whichever is first. Without a
/// runtime (the job is over) it reports shutting down.
///
/// The work is never aborted half-way (a request may already be on the
/// wire): when the caller gives up first, it runs to its end and
/// `unclaimed` gets its result (e.g. to unpublish a track nobody holds).
pub(crate) fn run_on_room<T: Send + 'static>(
    rt: Option<&tokio::runtime::Handle>,
    ctx: &crate::job::JobContext,
    deadline: Instant,
    fut: impl Future<Output = T> + Send + 'static,
    unclaimed: impl FnOnce(T) + Send + 'static,
) -> Ran<T> {
    let Some(rt) = rt else {
        return Ran::ShuttingDown;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.spawn(async move {
        if let Err(result) = tx.send(fut.await) {
            unclaimed(result);
        }
    });
    let waited = until(deadline, async {
        tokio::select! {
            biased;
            r = rx => r.ok(),
            _ = ctx.cancelled() => None,
        }
    });
    match waited {
        Some(Some(v)) => Ran::Done(v),
        Some(None) => Ran::ShuttingDown,
        None => Ran::Timeout,
    }
}

/// Takes `lock` for one caller at a time (a stream's reader, the data
/// reader): a second caller waits for the first no longer than its own
/// `deadline`, and not at all once `stop()` says the job is shutting down.
/// Polled with `try_lock`, so a waiting plugin thread never holds up the
/// one inside. Errs with `LK_SHUTTING_DOWN` or `LK_TIMEOUT`.
pub(crate) fn lock_within<'a, T>(
    lock: &'a Mutex<T>,
    deadline: Instant,
    stop: &dyn Fn() -> bool,
) -> Result<std::sync::MutexGuard<'a, T>, i32> {
    loop {
        match lock.try_lock() {
            Ok(g) => return Ok(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                if stop() {
                    return Err(lk_plugin_api::abi::LK_SHUTTING_DOWN);
                }
                if Instant::now() >= deadline {
                    return Err(lk_plugin_api::abi::LK_TIMEOUT);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// For results nobody waits for any more.
pub(crate) fn ignore<T>(_: T) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_future_wins_over_a_past_deadline() {
        assert_eq!(until(Instant::now(), async { 7 }), Some(7));
    }

    #[test]
    fn pending_future_gives_up_at_the_deadline() {
        let started = Instant::now();
        let got = until(
            started + Duration::from_millis(50),
            std::future::pending::<()>(),
        );
        assert_eq!(got, None);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn wakes_when_another_thread_completes_the_future() {
        let token = tokio_util::sync::CancellationToken::new();
        let t2 = token.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            t2.cancel();
        });
        let started = Instant::now();
        let got = until(started + Duration::from_secs(10), token.cancelled());
        h.join().unwrap();
        assert!(got.is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
